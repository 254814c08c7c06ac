"""EtcdShell against a real 3-member etcd cluster (Debian's etcd-server, 3.4), and the
facts about etcd's leases that the lease rule for etcd rests on
(tests/etcd-timing.md).

The cluster runs with a 50 ms raft heartbeat and a 500 ms election timeout (ET); leases
of 2 s. Timing assertions are the ones etcd's own rules guarantee (a lease renewed at r
expires no earlier than r + TTL; a new leader gives every lease TTL + ET from its
promotion), with slack only on the side of "late", which a loaded 2-core machine can
stretch.
"""

from __future__ import annotations

import os
import queue
import signal
import subprocess
import sys
import textwrap
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, TypeVar

import pyetcd  # type: ignore[import-untyped]
import pytest
import structlog

from zkleader.core import actions as act
from zkleader.core import events as ev
from zkleader.core import candidacy
from zkleader.config import EtcdConfig
from zkleader.etcd import EtcdShell, node_key, node_path, revoke, revokes_live_leases
from zkleader.testing.etcdcluster import EtcdCluster

pytestmark = pytest.mark.etcd

TTL = 2
#: How late, beyond theory, an etcd answer or our own thread may come on a loaded machine.
SLACK = 1.5
E = TypeVar("E")


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[EtcdCluster]:
    with EtcdCluster(tmp_path_factory.mktemp("etcd"), 3) as started:
        yield started


@pytest.fixture
def etcd(cluster: EtcdCluster) -> EtcdCluster:
    """The module's cluster with every member running and healthy (a test may have
    killed one)."""
    for member in cluster.members:
        member.start()
    cluster.wait_healthy(30)
    cluster.wait_leader()
    return cluster


class Events:
    """What one shell posted, in order, waited for by type."""

    def __init__(self) -> None:
        self.queue: queue.Queue[ev.Event] = queue.Queue()
        self.seen: list[ev.Event] = []

    def post(self, event: ev.Event) -> None:
        self.queue.put(event)

    def next(self, kind: type[E], timeout: float = 10.0, where: Callable[[E], bool] = lambda _: True) -> E:
        """The next event of ``kind`` matching ``where``; others are kept in ``seen``."""
        deadline = time.monotonic() + timeout
        while True:
            try:
                event = self.queue.get(timeout=max(0.0, deadline - time.monotonic()))
            except queue.Empty:
                raise AssertionError(f"no {kind.__name__} within {timeout}s; seen: {self.seen[-10:]}") from None
            self.seen.append(event)
            if isinstance(event, kind) and where(event):
                return event

    def drain(self, wait: float = 0.0) -> list[ev.Event]:
        time.sleep(wait)
        drained = []
        while not self.queue.empty():
            drained.append(self.queue.get())
        self.seen.extend(drained)
        return drained


@pytest.fixture
def shell(etcd: EtcdCluster) -> Iterator[Callable[..., tuple[EtcdShell, Events]]]:
    """Started shells on the cluster (or the endpoints given), closed after the test."""
    made: list[EtcdShell] = []

    def make(endpoints: list[str] | None = None, ttl: int = TTL) -> tuple[EtcdShell, Events]:
        events = Events()
        started = EtcdShell(EtcdConfig(endpoints=tuple(endpoints or etcd.endpoints), lease_ttl=ttl), events.post)
        made.append(started)
        started.start()
        events.next(ev.Connected)
        return started, events

    yield make
    for s in made:
        s.close()


@pytest.fixture
def election(request: pytest.FixtureRequest) -> str:
    return f"/zkleader-test/{request.node.name}-{os.getpid()}-{time.monotonic_ns() % 10**9}"


def prefix(election: str, letter: str) -> str:
    return f"{election}/zkl-{letter * 32}-"


def create(s: EtcdShell, events: Events, election: str, letter: str, rid: int = 1) -> str:
    s.execute(act.CreateNode(rid, prefix(election, letter), b"{}"))
    return events.next(ev.Created).name


def admin(etcd: EtcdCluster, index: int = 0) -> Any:
    host, port = etcd.addresses[index]
    return pyetcd.client(host=host, port=port, timeout=5)


def test_each_action_answers_with_the_zookeeper_shells_events(shell, election: str, etcd: EtcdCluster) -> None:
    a, a_events = shell()
    connected = next(e for e in a_events.seen if isinstance(e, ev.Connected))
    assert connected.negotiated_timeout == TTL
    name = create(a, a_events, election, "a")
    key, revision = name[:-10], int(name[-10:])
    assert key == prefix(election, "a")
    value, meta = admin(etcd).get(key)
    assert (value, meta.create_revision, meta.lease_id) == (b"{}", revision, connected.session_id)

    # A create sent again (its reply lost) finds its own key: the same node, no ghost.
    a.execute(act.CreateNode(2, prefix(election, "a"), b"{}"))
    assert a_events.next(ev.Created).name == name
    # A key of another lease is refused as existing.
    b, b_events = shell()
    b.execute(act.CreateNode(3, prefix(election, "a"), b"{}"))
    assert b_events.next(ev.RequestFailed).failure is ev.Failure.NODE_EXISTS

    b_name = create(b, b_events, election, "b", rid=4)
    admin(etcd).put(f"{election}/nested/deeper", b"not a child")
    for sync in (False, True):
        a.execute(act.ListChildren(5, election, sync=sync))
        listed = a_events.next(ev.ChildrenListed)
        assert listed.children == (name.rsplit("/", 1)[1], b_name.rsplit("/", 1)[1])

    a.execute(act.CheckNode(6, name, watch=False, sync=True))
    checked = a_events.next(ev.NodeChecked)
    assert checked.stat == ev.NodeStat(czxid=revision, ephemeral_owner=connected.session_id)
    assert checked.synced and checked.relayed_at is not None and checked.sent_at <= checked.relayed_at
    a.execute(act.CheckNode(7, name[:-10] + "9" * 10, watch=False))  # the name of a node long gone
    assert a_events.next(ev.NodeChecked).stat is None

    a.execute(act.PublishLeadership(8, election, {"candidate": "a"}))
    assert a_events.next(ev.DataSet).request_id == 8
    assert b'"candidate":"a"' in admin(etcd).get(election)[0]

    a.execute(act.DeleteNode(9, name))
    assert a_events.next(ev.Deleted).request_id == 9
    a.execute(act.DeleteNode(10, name))
    assert a_events.next(ev.RequestFailed).failure is ev.Failure.NO_NODE
    assert admin(etcd).get(key) == (None, None)


def test_markers_reads_and_exists_watches_answer_as_from_zookeeper(shell, election: str, etcd: EtcdCluster) -> None:
    """The preference and drain markers (core/preference.py, core/drain.py): created at
    their path itself, with the lease (ephemeral) or without any; a second create is
    NODE_EXISTS; ReadNodes answers every path, None where absent; an exists watch on a
    marker that does not exist yet fires on its creation, then on its deletion."""
    a, a_events = shell()
    b, b_events = shell()
    lease = next(e for e in a_events.seen if isinstance(e, ev.Connected)).session_id
    frozen, preempt, drained = f"{election}-frozen", f"{election}-preempt", f"{election}-drained/host-1"

    b.execute(act.CheckNode(1, frozen, watch=True))
    assert b_events.next(ev.NodeChecked).stat is None
    a.execute(act.CreateNode(2, frozen, b"by a", sequential=False, ephemeral=False))
    assert a_events.next(ev.Created).name == frozen
    assert b_events.next(ev.WatchFired, timeout=5) == ev.WatchFired(frozen, ev.WatchKind.CHANGED)
    assert admin(etcd).get(frozen)[1].lease_id == 0  # outlives every session
    b.execute(act.CreateNode(3, frozen, b"by b", sequential=False, ephemeral=False))
    assert b_events.next(ev.RequestFailed).failure is ev.Failure.NODE_EXISTS
    assert admin(etcd).get(frozen)[0] == b"by a"

    a.execute(act.CreateNode(4, preempt, b"", sequential=False, ephemeral=True))
    assert a_events.next(ev.Created).name == preempt
    a.execute(act.CheckNode(5, preempt, watch=False, sync=True))
    assert a_events.next(ev.NodeChecked).stat.ephemeral_owner == lease  # type: ignore[union-attr]
    admin(etcd).put(drained, b"drained")

    for sync in (False, True):
        b.execute(act.ReadNodes(6, (frozen, f"{election}-handover", drained), sync=sync))
        assert b_events.next(ev.NodesRead).data == (b"by a", None, b"drained")

    b.execute(act.CheckNode(7, frozen, watch=True))
    assert b_events.next(ev.NodeChecked).stat is not None
    a.execute(act.DeleteNode(8, frozen))
    a_events.next(ev.Deleted)
    assert b_events.next(ev.WatchFired, timeout=5) == ev.WatchFired(frozen, ev.WatchKind.DELETED)
    a.close()  # the ephemeral marker goes with the lease; the other one stays
    assert admin(etcd).get(preempt) == (None, None)
    assert admin(etcd).get(drained)[0] == b"drained"


def test_a_follower_hears_its_predecessors_deletion_once_and_nobody_elses(shell, election: str) -> None:
    shells = [shell() for _ in range(3)]
    names = [create(s, e, election, letter) for (s, e), letter in zip(shells, "abc")]
    assert names == sorted(names, key=lambda n: int(n[-10:]))  # create revisions order the queue
    (a, a_events), (b, b_events), (c, c_events) = shells
    c.execute(act.CheckNode(1, names[1], watch=True))
    assert c_events.next(ev.NodeChecked).stat is not None

    a.execute(act.DeleteNode(2, names[0]))  # the leader goes: only b's business
    a_events.next(ev.Deleted)
    b.execute(act.PublishLeadership(3, election, {"candidate": "b"}))  # the election key itself
    b_events.next(ev.DataSet)
    assert [e for e in c_events.drain(wait=0.5) if isinstance(e, ev.WatchFired)] == []

    b.execute(act.DeleteNode(4, names[1]))
    assert c_events.next(ev.WatchFired, timeout=5) == ev.WatchFired(names[1], ev.WatchKind.DELETED)
    create(b, b_events, election, "b", rid=5)  # the same key again: the watch is spent
    assert [e for e in c_events.drain(wait=0.5) if isinstance(e, ev.WatchFired)] == []


def test_an_operator_revoking_the_lease_ends_the_session_and_a_new_lease_follows(shell, election: str,
                                                                                  etcd: EtcdCluster) -> None:
    a, events = shell()
    first = next(e for e in events.seen if isinstance(e, ev.Connected)).session_id
    name = create(a, events, election, "a")
    a.execute(act.CheckNode(1, name, watch=True))
    events.next(ev.NodeChecked)
    admin(etcd).revoke_lease(first)
    # The node goes with the lease (the watch says so), then the next keep-alive (T/3)
    # finds the lease gone.
    assert events.next(ev.WatchFired, timeout=5).kind is ev.WatchKind.DELETED
    assert events.next(ev.SessionLost, timeout=TTL + SLACK).reason.startswith("lease")
    again = events.next(ev.Connected, timeout=5)
    assert again.session_id != first


def test_the_lease_of_a_client_killed_with_sigkill_expires_within_ttl(shell, election: str,
                                                                     etcd: EtcdCluster) -> None:
    script = textwrap.dedent(f"""
        import sys, time
        from zkleader.etcd import EtcdConfig, EtcdShell
        from zkleader.core import actions as act, events as ev
        def post(event):
            if isinstance(event, ev.Created):
                print("created", event.name, flush=True)
        shell = EtcdShell(EtcdConfig(endpoints={tuple(etcd.endpoints)!r}, lease_ttl={TTL}), post)
        shell.start()
        shell.execute(act.CreateNode(1, {prefix(election, "k")!r}, b"{{}}"))
        time.sleep(60)
    """)
    child = subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE, text=True)
    try:
        assert child.stdout is not None
        # structlog's default logger prints to stdout too (the version warning).
        name = next(line.split()[1] for line in child.stdout if line.startswith("created "))
        assert name.startswith(prefix(election, "k"))
        watcher, events = shell()
        watcher.execute(act.CheckNode(1, name, watch=True))
        assert events.next(ev.NodeChecked).stat is not None
        time.sleep(TTL)  # the child's keep-alives (every T/3) have kept it alive past one TTL
        watcher.execute(act.CheckNode(2, name, watch=False, sync=True))
        assert events.next(ev.NodeChecked).stat is not None
        killed = time.monotonic()
        os.kill(child.pid, signal.SIGKILL)
        events.next(ev.WatchFired, timeout=TTL + SLACK + 1, where=lambda e: e.kind is ev.WatchKind.DELETED)
        gone = time.monotonic() - killed
        # The last renewal came before the kill, so expiry <= kill + TTL; etcd's leader
        # revokes expired leases every 500 ms, then commits the revoke through raft.
        assert gone <= TTL + 0.5 + SLACK, gone
    finally:
        child.kill()
        child.wait()


def test_a_killed_member_costs_a_reconnect_not_the_lease(shell, election: str, etcd: EtcdCluster) -> None:
    a, events = shell()
    first = next(e for e in events.seen if isinstance(e, ev.Connected)).session_id
    name = create(a, events, election, "a")
    a.execute(act.CheckNode(1, name, watch=True))
    events.next(ev.NodeChecked)
    member = etcd.endpoints.index(a.endpoint)
    etcd[member].kill()
    # Noticed by the next keep-alive (T/3), or the next request: Suspended, the armed
    # watch fires as a connection event (kazoo's NONE), the same lease on another member.
    events.next(ev.Suspended, timeout=TTL)
    assert events.next(ev.WatchFired).kind is ev.WatchKind.CONNECTION
    assert events.next(ev.Connected, timeout=5).session_id == first
    assert a.endpoint != etcd.endpoints[member]
    a.execute(act.CheckNode(2, name, watch=False, sync=True))
    assert events.next(ev.NodeChecked).stat == ev.NodeStat(int(name[-10:]), first)


def test_a_dropped_connection_reconnects_to_another_member_with_the_same_lease(shell, election: str,
                                                                               etcd: EtcdCluster) -> None:
    """DropConnection (a heartbeat unanswered for a whole interval): at once, not at a
    deadline, even with a request stuck on a silent member. A 6 s lease puts that
    deadline (T/3) at 2 s."""
    proxy = etcd.proxy()
    try:
        a, events = shell(endpoints=proxy.server_hosts, ttl=6)
        first = next(e for e in events.seen if isinstance(e, ev.Connected)).session_id
        name = create(a, events, election, "a")
        a.execute(act.CheckNode(1, name, watch=True))
        events.next(ev.NodeChecked)
        through = proxy.server_hosts.index(a.endpoint)
        proxy.partition(servers=[through])
        a.execute(act.CheckNode(2, name, watch=False, sync=True))  # stuck on the silent member
        dropped = time.monotonic()
        a.execute(act.DropConnection())
        assert events.next(ev.RequestFailed).failure is ev.Failure.CONNECTION
        events.next(ev.Suspended)
        assert time.monotonic() - dropped < 1.0  # the request's own deadline is 2 s away
        assert events.next(ev.WatchFired).kind is ev.WatchKind.CONNECTION
        assert events.next(ev.Connected, timeout=TTL + SLACK).session_id == first
        assert a.endpoint != proxy.server_hosts[through]
    finally:
        proxy.close()


def test_a_silent_partition_moves_the_client_to_another_member(shell, election: str, etcd: EtcdCluster) -> None:
    proxy = etcd.proxy()
    try:
        a, events = shell(endpoints=proxy.server_hosts)
        first = next(e for e in events.seen if isinstance(e, ev.Connected)).session_id
        name = create(a, events, election, "a")
        through = proxy.server_hosts.index(a.endpoint)
        proxy.partition(servers=[through])
        # No reset, no FIN: only the deadline (T/3) of a keep-alive or request shows it.
        events.next(ev.Suspended, timeout=TTL)
        assert events.next(ev.Connected, timeout=TTL + SLACK).session_id == first
        assert a.endpoint != proxy.server_hosts[through]
        a.execute(act.CheckNode(1, name, watch=False, sync=True))
        assert events.next(ev.NodeChecked).stat is not None
    finally:
        proxy.close()


def test_a_lease_outlives_a_quorum_loss_longer_than_its_ttl(shell, election: str, etcd: EtcdCluster) -> None:
    """No leader, no expiry: a lease's countdown runs only on a leader, and the leader
    elected when the quorum returns gives it TTL + ET. The daemon's own lease clock has
    stopped the job long before (it hears no keep-alive answer)."""
    a, events = shell(endpoints=[etcd.endpoints[0]])
    first = next(e for e in events.seen if isinstance(e, ev.Connected)).session_id
    name = create(a, events, election, "a")
    etcd[1].kill()
    etcd[2].kill()
    # If etcd[0] led, it renews leases until it notices the lost quorum (CheckQuorum,
    # up to 2 x ET); then a keep-alive misses its T/3 deadline.
    events.next(ev.Suspended, timeout=2 * etcd.election_timeout + 2 * TTL / 3 + SLACK)
    time.sleep(TTL + 1)
    assert not [e for e in events.drain() if isinstance(e, (ev.Connected, ev.SessionLost))]
    etcd[1].start()
    etcd[2].start()
    assert events.next(ev.Connected, timeout=15).session_id == first
    a.execute(act.CheckNode(1, name, watch=False, sync=True))
    assert events.next(ev.NodeChecked).stat == ev.NodeStat(int(name[-10:]), first)


def test_a_server_whose_stalled_leader_revokes_live_leases_is_warned_about(etcd: EtcdCluster) -> None:
    with structlog.testing.capture_logs() as logs:
        events = Events()
        s = EtcdShell(EtcdConfig(endpoints=(etcd.endpoints[0],), lease_ttl=TTL), events.post)
        s.start()
        events.next(ev.Connected)
        s.close()
    (warning,) = [entry for entry in logs if entry["event"] == "etcd_revokes_live_leases"]
    assert warning["version"] == "3.4.23" and "15247" in warning["problem"]  # Debian 12's etcd-server


@pytest.mark.parametrize(("version", "affected"), [
    ("3.3.27", True), ("3.4.23", True), ("3.4.30", False), ("3.5.12", True), ("3.5.13", False), ("3.6.0", False),
    ("unknown", False),
])
def test_which_etcd_versions_revoke_live_leases(version: str, affected: bool) -> None:
    assert revokes_live_leases(version) is affected


@pytest.mark.parametrize("revision", [1, 42, 2**31, 2**32 - 1, 2**32, 2**32 + 5, 10**10, 2**63 - 1])
def test_a_create_revision_names_a_node_the_core_orders_by_it(revision: int) -> None:
    path = node_path(f"/e/zkl-{'a' * 32}-", revision)
    assert node_key(path) == (f"/e/zkl-{'a' * 32}-", revision)
    entry = candidacy.parse(path.rsplit("/", 1)[1])
    assert entry is not None and entry.sequence == revision


def test_a_revision_past_32_bits_sorts_after_older_candidates() -> None:
    """2**32 + 5 has ten digits, as ZooKeeper's sequences do: read modulo 2**32 it
    would sort before every older candidate and two daemons could lead."""
    older, newer = (node_path(f"/e/zkl-{c * 32}-", r).rsplit("/", 1)[1] for c, r in (("a", 2**32 - 1), ("b", 2**32 + 5)))
    queue = candidacy.Queue.from_children((newer, older))
    assert [e.name for e in queue.entries] == [older, newer]


def test_a_marker_path_is_no_node() -> None:
    assert node_key("/e-frozen") == ("/e-frozen", None)
    assert node_key("/e-drained/host-12") == ("/e-drained/host-12", None)


# ---------------------------------------------------------------- etcd's lease facts


def _watch_deletion(client: Any, key: str) -> tuple[threading.Event, list[float]]:
    """When ``key`` is deleted, on this process's monotonic clock (etcd's clock too:
    the members run on this host)."""
    done, at = threading.Event(), []

    def on_event(response: Any) -> None:
        if not isinstance(response, Exception) and response is not None and any(
                isinstance(e, pyetcd.events.DeleteEvent) for e in response.events):
            at.append(time.monotonic())
            done.set()

    client.add_watch_callback(key, on_event)
    return done, at


def test_fact_a_lease_outlives_its_last_keepalive_by_ttl(etcd: EtcdCluster, election: str) -> None:
    """Renewed at r >= s (its send time), a lease expires at r + TTL: never before s + TTL."""
    follower = next(i for i in range(3) if i != etcd.leader())
    client, observer = admin(etcd, follower), admin(etcd, (follower + 1) % 3)
    lease = client.lease(TTL)
    client.put(f"{election}/k", b"", lease=lease.id)
    done, at = _watch_deletion(observer, f"{election}/k")
    sent = time.monotonic()
    assert list(client.refresh_lease(lease.id))[0].TTL == TTL
    assert done.wait(TTL + 0.5 + SLACK + 1)
    lived = at[0] - sent
    assert TTL <= lived <= TTL + 0.5 + SLACK, lived


def test_fact_a_new_etcd_leader_gives_every_lease_ttl_plus_an_election_timeout(etcd: EtcdCluster,
                                                                               election: str) -> None:
    """etcd's lessor.Promote(electionTimeout): the new leader restarts every lease's
    countdown at TTL + ET from its promotion, so the lease outlives the old leader's
    death by more than TTL + ET (without the extension it would die TTL after its last
    renewal, before that)."""
    leader = etcd.leader()
    assert leader is not None
    follower = next(i for i in range(3) if i != leader)
    client, observer = admin(etcd, follower), admin(etcd, follower)
    lease = client.lease(TTL)
    client.put(f"{election}/k", b"", lease=lease.id)
    done, at = _watch_deletion(observer, f"{election}/k")
    assert list(client.refresh_lease(lease.id))[0].TTL == TTL
    assert etcd.leader() == leader  # still the leader when killed: its death forces an election
    etcd[leader].kill()
    killed = time.monotonic()
    etcd.wait_leader(exclude=leader)
    elected = time.monotonic()  # the new leader's promotion came before this
    assert done.wait(TTL + etcd.election_timeout + SLACK + 2)
    lived = at[0] - killed
    assert lived >= TTL + etcd.election_timeout, lived
    # From its promotion, TTL + ET, then the next expiry sweep (every 500 ms).
    assert at[0] - elected <= TTL + etcd.election_timeout + 0.5 + SLACK, (lived, elected - killed)


def test_the_shells_lease_survives_an_etcd_leader_change(shell, election: str, etcd: EtcdCluster) -> None:
    leader = etcd.leader()
    assert leader is not None
    follower = next(i for i in range(3) if i != leader)
    a, events = shell(endpoints=[etcd.endpoints[follower]])
    first = next(e for e in events.seen if isinstance(e, ev.Connected)).session_id
    name = create(a, events, election, "a")
    term = etcd.raft_term()
    etcd[leader].kill()
    etcd.wait_leader(exclude=leader)
    assert etcd.raft_term() > term
    time.sleep(TTL + etcd.election_timeout)  # past any lease that was not kept alive
    a.execute(act.CheckNode(1, name, watch=False, sync=True))
    checked = events.next(ev.NodeChecked)
    assert checked.stat == ev.NodeStat(int(name[-10:]), first) and checked.relayed_at is not None
    # A keep-alive that the follower forwarded to the dead leader may time out: that
    # costs a reconnect (Suspended, Connected), never the lease.
    assert not [e for e in events.seen if isinstance(e, ev.SessionLost)]
    assert {e.session_id for e in events.seen if isinstance(e, ev.Connected)} == {first}


def test_revoke_releases_a_dead_daemons_lease_by_its_id(election: str, etcd: EtcdCluster) -> None:
    """release.py's etcd half: the keys go at once; a lease already gone counts as
    released; no member answering is False once ``within`` has passed, not a hang."""
    lease = admin(etcd).lease(60)
    admin(etcd).put(f"{election}/zkl-{'a' * 32}-", b"{}", lease)
    config = EtcdConfig(endpoints=("127.0.0.1:1", *etcd.endpoints), lease_ttl=TTL)  # a dead endpoint first
    assert revoke(config, lease.id, within=5)
    assert admin(etcd).get(f"{election}/zkl-{'a' * 32}-") == (None, None)
    assert revoke(config, lease.id, within=5)  # gone already
    started = time.monotonic()
    assert not revoke(EtcdConfig(endpoints=("127.0.0.1:1",), lease_ttl=TTL), lease.id, within=1)
    assert time.monotonic() - started < 1 + SLACK


def test_fact_etcd_raises_a_ttl_below_its_minimum_and_the_shell_says_so(tmp_path: Path) -> None:
    """etcd grants at least ceil(1.5 x ET) (here 3 s for ET 2 s), as ZooKeeper clamps a
    session timeout: the shell reports the granted TTL as the negotiated timeout, and
    the lease clock counts with the configured one, the smaller (timing.py)."""
    with EtcdCluster(tmp_path / "slow", 1, heartbeat_ms=200, election_ms=2000) as one:
        events = Events()
        s = EtcdShell(EtcdConfig(endpoints=(one.endpoints[0],), lease_ttl=1), events.post)
        s.start()
        try:
            assert events.next(ev.Connected).negotiated_timeout == 3
        finally:
            s.close()
