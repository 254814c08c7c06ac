"""The fault suite on etcd (issue 17): real `python -m zkleader run` daemons (3) on a real
3-member etcd (zkleader.testing.etcdcluster: 50 ms raft heartbeat, election timeout
ET = 500 ms), every fault applied to the election's leader or to its etcd member.

Each daemon reaches the members through its own FaultProxy (one proxy port per member,
the daemon's ``etcd.endpoints``), so one daemon can be cut off silently, or moved to
another member by a reset; the proxy forwards bytes and knows nothing of gRPC, so only
its partition / heal / reset are used here (see test_07 for the lost reply). Every job
is the flock overlap detector; a JobWatcher (zkleader.testing.chaos) polls /proc for
each job's observed end (an upper bound of the real one) on CLOCK_MONOTONIC, the clock
of the detector's records.

Lease TTL T = 4 s (the daemon's ``etcd.lease_ttl``), stop_timeout 0.5 s. What is
asserted is what the theory guarantees (/work/shared/notes/etcd-timing.md; README "Why
two leader jobs cannot overlap"), with slack only on the "late" side for a loaded
2-core machine:

* no overlap (the detector), and fencing tokens (the leader key's create revision)
  never go down, and grow with every new leader;
* a leader that can no longer renew stops its job before its lease can expire: the
  daemon's t_ok is the send time of an answered keep-alive followed by a successful
  linearizable read, so t_ok precedes the fault, and the job's observed end must come
  before ``fault + T`` and before the moment a test client saw the key deleted;
* a successor within a bound from T and etcd's timing: a lease lives at most
  T + the 500 ms expiry sweep after its last keep-alive (plus ET when a new etcd leader
  took over), so failover <= T + ET + 0.5 s + SLACK.

Fault 8 (a member cut off from its peers) runs on a cluster of its own whose peer
traffic goes through proxies (``isolatable_etcd``); the others see etcd undisturbed.

FAULT_TRIALS=N repeats the cycles of tests 01, 02 and 06 (default 1, 1, 3);
FAULT_RESULTS=FILE appends one JSON line per trial (zkleader.testing.chaos.record_result);
the figures are in tests/fault-results.md, section "etcd". Runtime about 2 minutes.
"""

from __future__ import annotations

import contextlib
import itertools
import os
import re
import signal
import threading
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from typing import Any

import pyetcd  # type: ignore[import-untyped]
import pytest

import zkleader.etcd as etcd_shell_module
from zkleader.config import EtcdConfig
from zkleader.core import actions as act
from zkleader.core import events as ev
from zkleader.etcd import EtcdShell, sequence
from zkleader.testing import lostreply
from zkleader.testing.chaos import LEAD_OFF, LEAD_ON, JobLife, JobWatcher, record_result
from zkleader.testing.daemons import DaemonGroup, wait_for
from zkleader.testing.etcdcluster import EtcdCluster
from zkleader.testing.faultproxy import FaultProxy

pytestmark = pytest.mark.etcd

T = 4  # the daemons' lease TTL (s)
ET = 0.5  # etcd's election timeout here (s)
SWEEP = 0.5  # etcd's leader looks for expired leases this often
STOP = 0.5  # job stop_timeout
#: How late, beyond theory, something may come on a loaded 2-core machine.
SLACK = 2.0
#: How long to wait for what must happen eventually (not a claim: claims are asserted
#: on the measured times).
WAIT = T + 20
#: FAULT_TRIALS=N repeats the cycles of the repeatable faults (tests 01, 02, 06).
TRIALS = int(os.environ.get("FAULT_TRIALS", "0"))
T_KILL = 10  # test_01's TTL


def trials(default: int) -> int:
    return TRIALS or default


@pytest.fixture
def healthy(etcd: EtcdCluster) -> EtcdCluster:
    """The module's cluster with every member running and healthy (a test may have
    killed some)."""
    for member in etcd.members:
        member.resume()
        member.start()
    etcd.wait_healthy(60)
    etcd.wait_leader()
    return etcd


def admin(etcd: EtcdCluster) -> Any:
    """A test client (the operator's etcdctl) on a running member."""
    index = next(m.index for m in etcd.members if m.running)
    host, port = etcd.addresses[index]
    return pyetcd.client(host=host, port=port, timeout=5)


class World:
    """Three daemons d0, d1, d2 on one election, each behind its own FaultProxy, jobs
    watched; d0 joins first, so it leads."""

    def __init__(self, etcd: EtcdCluster, group: DaemonGroup) -> None:
        self.etcd = etcd
        self.group = group
        self.election = group.election
        self.proxies: dict[str, FaultProxy] = {}
        self.watcher = JobWatcher(group.record_path)
        self.watcher.start()
        self.next = "d1"
        self._admin: tuple[int, Any] | None = None
        #: A member the test client must not use (one cut off from the others).
        self.avoid: int | None = None

    def add(self, name: str, members: Sequence[int] | None = None,
            launcher: tuple[str, ...] = ("-m", "zkleader")) -> None:
        """Daemon ``name`` behind its own proxy; its ``etcd.endpoints`` are the proxy's
        ports for ``members`` (default: every member). launcher: DaemonGroup.add's."""
        proxy = self.etcd.proxy(name=f"proxy-{name}")
        self.proxies[name] = proxy
        chosen = range(len(self.etcd)) if members is None else members
        self.group.add(name, hosts=",".join(proxy.server_hosts[i] for i in chosen), launcher=launcher)

    def start(self, members: Mapping[str, Sequence[int]] | None = None,
              launcher: tuple[str, ...] = ("-m", "zkleader")) -> None:
        """d0 first (it leads), then d1 and d2 at once (daemon start-up is seconds of
        imports on a loaded machine); ``self.next`` is whichever of them joined first.
        ``members``: the etcd members a daemon may talk to (default: all); launcher:
        what runs every daemon (DaemonGroup.add)."""
        members = members or {}
        self.add("d0", members.get("d0"), launcher)
        self.group.daemons["d0"].wait_event("joined", 60)
        self.add("d1", members.get("d1"), launcher)
        self.add("d2", members.get("d2"), launcher)
        for name in ("d1", "d2"):
            self.group.daemons[name].wait_event("joined", 60)
        assert self.wait_converged(30) == "d0"
        self.next = min(("d1", "d2"), key=self.own_revision)

    @property
    def admin(self) -> Any:
        """A test client (the operator's) on a running member other than ``avoid``,
        replaced when a test killed its member."""
        if self._admin is None or not self.etcd[self._admin[0]].running or self._admin[0] == self.avoid:
            if self._admin is not None:
                self._admin[1].close()
            index = next(m.index for m in self.etcd.members if m.running and m.index != self.avoid)
            host, port = self.etcd.addresses[index]
            self._admin = (index, pyetcd.client(host=host, port=port, timeout=5))
        return self._admin[1]

    def leading(self) -> list[str]:
        out = []
        for name, daemon in self.group.daemons.items():
            if not daemon.alive():
                continue
            # A restarted daemon appends to its log: "starting" ends what its predecessor logged.
            states = [e["event"] for e in daemon.events() if e["event"] in LEAD_ON | LEAD_OFF | {"starting"}]
            if states and states[-1] in LEAD_ON:
                out.append(name)
        return out

    def wait_converged(self, timeout: float) -> str:
        """Until exactly one daemon leads and exactly one job (its) runs; its name."""
        def one() -> str | None:
            leaders = self.leading()
            jobs = self.watcher.alive()
            if len(leaders) == 1 and len(jobs) == 1 and jobs[0].candidate == leaders[0]:
                return leaders[0]
            return None

        return wait_for(one, timeout, "exactly one leader running exactly one job")

    def only_job(self) -> JobLife:
        (job,) = self.watcher.alive()
        return job

    def server_of(self, name: str) -> int | None:
        active = self.proxies[name].active_upstreams(include_partitioned=False)
        return active[0] if len(active) == 1 else None

    def wait_server(self, name: str, timeout: float, other_than: int | None = None) -> int:
        def found() -> int | None:
            server = self.server_of(name)
            return None if server is None or server == other_than else server + 1

        return wait_for(found, timeout, f"{name} connected through its proxy (not to {other_than})") - 1

    def steer(self, name: str, want: Callable[[int], bool], tries: int = 8) -> int:
        """Moves a daemon's connection (RST through its proxy: the shell reconnects to
        its next endpoint at once, same lease) until want(member index) holds."""
        for _ in range(tries):
            server = self.wait_server(name, 10)
            if want(server):
                return server
            self.proxies[name].reset([server])
            self.wait_server(name, 10, other_than=server)
        raise AssertionError(f"could not steer {name} to a wanted member")

    def queue(self) -> list[tuple[int, int]]:
        """(create revision, lease) of every candidacy key, oldest first."""
        answer = self.admin.get_prefix_response(self.election + "/", keys_only=True)
        return sorted((kv.create_revision, kv.lease) for kv in answer.kvs
                      if "/" not in kv.key.decode()[len(self.election) + 1:])

    def own_revision(self, name: str) -> int:
        """The create revision of the daemon's latest candidacy key (its last ``joined``)."""
        node = self.group.daemons[name].events("joined")[-1]["node"]
        return int(re.search(r"(\d+)$", node).group(1))  # type: ignore[union-attr]

    def token_problems(self) -> list[str]:
        """Fencing tokens in start order: never lower, higher with every new leader."""
        problems = []
        lives = self.watcher.lives()
        for before, after in itertools.pairwise(lives):
            if after.token < before.token or (after.candidate != before.candidate and after.token == before.token):
                problems.append(f"{before.candidate}:{before.token} then {after.candidate}:{after.token}")
        return problems

    def close(self) -> None:
        self.watcher.stop()
        self.group.close()
        for name, proxy in self.proxies.items():
            print(f"--- {name}'s proxy: error {proxy._error!r}; last events:")
            print("\n".join(f"{t:.3f} {text}" for t, text in proxy.events()[-15:]))
            proxy.close()
        if self._admin is not None:
            self._admin[1].close()


def _worlds(cluster: EtcdCluster, daemon_group, request: pytest.FixtureRequest) -> Iterator[Callable[..., World]]:
    """A factory of Worlds on ``cluster`` (``make(ttl)``), each closed at teardown."""
    made: list[World] = []

    def make(ttl: int = T) -> World:
        election = f"/zkleader-faults/{request.node.name}-{os.getpid()}-{time.monotonic_ns() % 10**9}"
        group = daemon_group(",".join(cluster.endpoints), election, stop_timeout=STOP, etcd_lease_ttl=ttl)
        made.append(World(cluster, group))
        return made[-1]

    yield make
    for w in made:
        w.close()


@pytest.fixture
def world(healthy: EtcdCluster, daemon_group, request: pytest.FixtureRequest) -> Iterator[Callable[..., World]]:
    yield from _worlds(healthy, daemon_group, request)


@pytest.fixture(scope="module")
def isolatable_etcd(tmp_path_factory: pytest.TempPathFactory) -> Iterator[EtcdCluster]:
    """A 3-member etcd of its own whose members reach each other only through peer
    links (``EtcdCluster(peer_links=True)``), so that one member can be cut off from
    the others while its clients still reach it: fault 8. The module's ``etcd`` has
    no such proxies, so that the other faults see etcd's peer traffic undelayed."""
    with EtcdCluster(tmp_path_factory.mktemp("etcd-isolatable"), 3, peer_links=True) as cluster:
        yield cluster


@pytest.fixture
def isolatable_world(isolatable_etcd: EtcdCluster, daemon_group,
                     request: pytest.FixtureRequest) -> Iterator[Callable[..., World]]:
    """``world`` on ``isolatable_etcd``, its peer links healed and a leader elected."""
    isolatable_etcd.heal_peers()
    isolatable_etcd.wait_healthy(60)
    isolatable_etcd.wait_leader()
    yield from _worlds(isolatable_etcd, daemon_group, request)


class KeyGone:
    """Watches one key from a test client: the monotonic time its deletion was seen."""

    def __init__(self, client: Any, key: str) -> None:
        self.at: float | None = None
        self._seen = threading.Event()
        self._id = client.add_watch_callback(key, self._on)
        self._client = client

    def _on(self, response: Any) -> None:
        if response is None or isinstance(response, Exception):
            return
        if any(isinstance(e, pyetcd.events.DeleteEvent) for e in response.events) and self.at is None:
            self.at = time.monotonic()
            self._seen.set()

    def wait(self, timeout: float) -> float:
        assert self._seen.wait(timeout), "the leader's key was never deleted"
        assert self.at is not None
        return self.at

    def cancel(self) -> None:
        with contextlib.suppress(Exception):  # its member may be gone: the watch with it
            self._client.cancel_watch(self._id)


def leader_key(w: World) -> tuple[str, int]:
    """(key, lease) of the lowest candidacy key: the leader's."""
    answer = w.admin.get_prefix_response(w.election + "/")
    kv = min(answer.kvs, key=lambda kv: kv.create_revision)
    return kv.key.decode(), kv.lease


def wait_end_or_overlap(w: World, job: JobLife, timeout: float) -> float:
    """The job's observed end; fails at once, naming it, if a successor's job found the
    lock taken meanwhile."""
    def ended() -> float | None:
        overlaps = w.group.overlaps()
        assert overlaps == [], f"job pid {job.pid} ({job.candidate}) still alive when another started: {overlaps}"
        return w.watcher.jobs[job.pid].end

    return wait_for(ended, timeout, f"job pid {job.pid} ({job.candidate}) to end")


def cut_until_taken_over(w: World, old: JobLife, gone: KeyGone, cut: Callable[[], None],
                         heal: Callable[[], None]) -> tuple[float, float, float, JobLife]:
    """Cuts, then waits for the old job's end, etcd's deletion of the leader's key and a
    successor's start, and heals whatever happened: (cut at, end, deleted, successor)."""
    cut()
    t_cut = time.monotonic()
    try:
        end = wait_end_or_overlap(w, old, WAIT)
        deleted = gone.wait(WAIT)
        successor = w.watcher.wait_start_after(t_cut, WAIT, "a successor job")
    finally:
        gone.cancel()
        heal()
    return t_cut, end, deleted, successor


def wait_rejoined(w: World, name: str, old_lease: int) -> None:
    """Until the daemon's latest key is the last in the queue, on a lease other than
    ``old_lease``: it came back at the back with a new lease."""
    def back() -> bool:
        last = w.queue()[-1]
        return last[1] != old_lease and w.own_revision(name) == last[0]

    wait_for(back, WAIT, f"{name} to rejoin at the back with a new lease")


def mono_of_wall(event: dict[str, Any]) -> float:
    import datetime

    wall = datetime.datetime.fromisoformat(event["timestamp"].replace("Z", "+00:00")).timestamp()
    return wall - (time.time() - time.monotonic())


# --------------------------------------------------------------------------- 1


def test_01_kill9_of_the_leaders_daemon_its_guardian_revokes_the_lease(world) -> None:
    """The guardian kills the job's tree on EOF from its dead daemon, then revokes the
    lease by its id (release.py): the key goes at once, the successor starts well
    before the lease could have expired on its own (its last keep-alive was at most T/3
    before the kill, so not before T - T/3 after it). T = 10 s here: the release is a
    fresh Python process that imports grpc, seconds on this loaded 2-core machine (4.8 s
    once at load 30, when with T = 4 the lease expired first), and the claim is "by
    revoke, not by expiry", which only a TTL well above that start-up can show."""
    ttl = T_KILL
    w = world(ttl)
    w.start()
    leader = "d0"
    for trial in range(trials(1)):
        old = w.only_job()
        assert old.candidate == leader
        daemon = w.group.daemons[leader]
        releases = len(daemon.events("session_released"))
        t_kill = w.group.signal(leader, signal.SIGKILL)
        end = wait_end_or_overlap(w, old, 5)
        successor = w.watcher.wait_start_after(t_kill, WAIT, "a successor job")
        failover = successor.start - t_kill
        released = daemon.wait_event("session_released", 10, count=releases + 1)
        record_result("etcd: kill -9 of the leader's daemon", trial=trial, failover=failover, job_dead=end - t_kill,
                      overlaps=len(w.group.overlaps()), claim="guardian revokes the lease: successor < 2T/3")
        assert released["reason"] == "the daemon died; its job is reaped"
        assert end - t_kill < 1.0 + SLACK, f"job alive {end - t_kill:.2f}s after the kill"
        assert successor.start > end and successor.candidate != leader and successor.token > old.token
        assert failover < ttl * 2 / 3, f"successor {failover:.2f}s after the kill: the revoke did not work"
        assert w.wait_converged(WAIT) == successor.candidate
        assert w.group.overlaps() == []
        if trial + 1 < trials(1):  # back, at the end of the queue
            assert w.group.daemons[leader].process is not None
            w.group.daemons[leader].process.wait(10)
            joined = len(daemon.events("joined"))
            w.group.start(leader)
            daemon.wait_event("joined", 60, count=joined + 1)
        leader = successor.candidate
    assert w.token_problems() == []


# --------------------------------------------------------------------------- 2


def test_02_silent_partition_of_the_leader_stops_its_job_before_its_lease_can_expire(world) -> None:
    """d0's proxy stops forwarding to every member (nothing closed: bytes wait as
    undelivered packets). No keep-alive sent after the cut reaches etcd and no
    linearizable read succeeds, so the daemon's t_ok precedes the cut and its job is
    stopped before cut + T; etcd deletes the key no earlier than the last keep-alive
    that reached it + T. The successor starts only on that deletion, so after the old
    job's end; d0 rejoins at the back when healed (its lease is gone)."""
    w = world()
    w.start()
    leader = "d0"
    for trial in range(trials(1)):
        old = w.only_job()
        assert old.candidate == leader
        key, lease = leader_key(w)
        lost = len(w.group.daemons[leader].events("session_lost"))
        gone = KeyGone(w.admin, key)
        t_p, end, deleted, successor = cut_until_taken_over(w, old, gone, w.proxies[leader].partition,
                                                           w.proxies[leader].heal)
        failover = successor.start - t_p
        record_result("etcd: silent partition of the leader", trial=trial, failover=failover, reaped=end - t_p,
                      margin_to_expiry=deleted - end, key_deleted=deleted - t_p, overlaps=len(w.group.overlaps()),
                      claim="job gone < cut + T and < key deleted; successor after; <= T + ET + sweep + slack")
        assert end < t_p + T, f"job ended {end - t_p:.2f}s after the cut (T = {T})"
        assert end < deleted, f"job ended {end - deleted:.2f}s after its lease expired"
        assert successor.start > end and successor.candidate != leader and successor.token > old.token
        assert failover <= T + ET + SWEEP + SLACK, f"successor {failover:.2f}s after the cut"
        w.group.daemons[leader].wait_event("session_lost", WAIT, count=lost + 1)
        assert w.wait_converged(WAIT) == successor.candidate
        wait_rejoined(w, leader, lease)
        assert [j for j in w.watcher.lives() if j.candidate == leader and j.start > t_p] == []
        assert w.group.overlaps() == []
        leader = successor.candidate
    assert w.token_problems() == []


# --------------------------------------------------------------------------- 3


@pytest.mark.parametrize("which", ["etcd_follower", "etcd_leader"])
def test_03_killing_the_member_the_leader_uses_costs_a_reconnect_not_the_lease(world, which: str) -> None:
    """SIGKILL of the member d0's connection goes to: the socket closes, the shell's
    request or keep-alive fails at once, it reconnects to another member with the same
    lease. The leadership (d0, its token) stays. On an etcd follower the job rides
    through untouched; on the etcd leader the election (~ET to 2 ET) may hold the
    heartbeat long enough that the lease clock stops the job, which then restarts on the
    same leadership (allowed, and recorded)."""
    w = world()
    w.start()
    etcd = w.etcd
    raft_leader = etcd.wait_leader()
    want = (lambda s: s != raft_leader) if which == "etcd_follower" else (lambda s: s == raft_leader)
    server = w.steer("d0", want)
    time.sleep(0.5)
    job = w.only_job()
    key, lease = leader_key(w)
    t_kill = time.monotonic()
    etcd[server].kill()
    try:
        moved = w.wait_server("d0", 10, other_than=server)
        reconnected = time.monotonic() - t_kill
        time.sleep(T + 1)
        restarts = [j for j in w.watcher.lives() if j.start > t_kill]
        stops = [e for e in w.group.daemons["d0"].events()
                 if e["event"] in ("job_stopping", "lease_expired", "session_lost") and e["timestamp"] and
                 mono_of_wall(e) >= t_kill - 0.1]
        record_result(f"etcd: kill -9 of the member the leader uses ({which.replace('_', ' ')})", failover=None,
                      reconnected=reconnected, moved_to=moved, job_restarted=bool(restarts), overlaps=len(w.group.overlaps()),
                      claim="same lease, same leader and token; no restart on a follower")
        assert leader_key(w) == (key, lease), "the leader's key or lease changed"
        assert w.leading() == ["d0"]
        assert all(j.candidate == "d0" and j.token == job.token for j in restarts), "leadership changed"
        assert not [e for e in stops if e["event"] == "session_lost"], stops
        if which == "etcd_follower":
            assert job.alive and restarts == [], f"job restarted: {restarts}"
        assert w.group.overlaps() == []
    finally:
        etcd[server].start()
    etcd.wait_healthy(60)
    assert w.wait_converged(WAIT) == "d0"
    assert w.token_problems() == []


# --------------------------------------------------------------------------- 4


def test_04_quorum_loss_stops_the_job_within_the_lease_and_one_leader_follows_its_return(world) -> None:
    """The two members d0 does not use are SIGKILLed for T + 1 s, then restarted. No
    linearizable read can succeed without a quorum, so no keep-alive sent after the
    loss anchors t_ok (a stale etcd leader may still answer keep-alives until
    CheckQuorum, ~2 ET: they do not count), and the job is stopped before loss + T.
    etcd counts no lease down without a leader and gives every lease T + ET when one is
    elected, so d0 usually keeps its key and leads again with the same token; either
    way exactly one leader once the quorum is back, within T + 5 s."""
    w = world()
    w.start()
    etcd = w.etcd
    job = w.only_job()
    server = w.wait_server("d0", 10)
    victims = [i for i in range(3) if i != server]
    for v in victims:
        etcd[v].kill()
    t_q = time.monotonic()  # the quorum was lost no later than this
    try:
        end = wait_end_or_overlap(w, job, WAIT)
        time.sleep(max(0.0, t_q + T + 1 - time.monotonic()))
        assert w.watcher.alive() == [], "a job runs without a quorum"
    finally:
        t_restart = time.monotonic()
        for v in victims:
            etcd[v].start()
    etcd.wait_healthy(60)
    t_back = time.monotonic()
    restarted = w.watcher.wait_start_after(t_restart, t_back - t_restart + WAIT, "a leader job once the quorum is back")
    leader = w.wait_converged(WAIT)
    time.sleep(1.0)
    assert w.wait_converged(5) == leader and len(w.watcher.alive()) == 1
    record_result("etcd: quorum loss (2 of 3 members down for T + 1 s)", failover=restarted.start - t_restart,
                  quorum_back=t_back - t_restart, reaped=end - t_q, same_leader=(leader, restarted.token) == (
                      "d0", job.token), overlaps=len(w.group.overlaps()),
                  claim="job gone < loss + T; one leader <= T + 5 s after the quorum is back")
    assert end < t_q + T, f"job ended {end - t_q:.2f}s after the quorum was lost (T = {T})"
    assert restarted.start < t_back + T + 5
    assert w.group.overlaps() == []
    assert w.token_problems() == []


# --------------------------------------------------------------------------- 5


def test_05_sigstop_of_the_leaders_daemon_for_2T_its_guardian_stops_the_job_on_the_lease(world) -> None:
    """No watchdog: d0's daemon is SIGSTOPped for 2T, its guardian is not. The guardian
    holds the lease (stop_at / kill_at, sent with the start and every renewal), so when
    no renewal comes it stops the job itself before t_ok + T; d0's keep-alives stop too,
    so etcd deletes the key no earlier than its last keep-alive + T, and the successor
    starts on that. Once resumed, d0 logs job_exited cause=stopped_by_guardian, finds its
    lease gone and rejoins at the back (as ZooKeeper's fault 7)."""
    w = world()
    w.start()
    old = w.only_job()
    key, lease = leader_key(w)
    gone = KeyGone(w.admin, key)
    t_stop = w.group.signal("d0", signal.SIGSTOP)
    try:
        end = wait_end_or_overlap(w, old, WAIT)
        deleted = gone.wait(WAIT)
        successor = w.watcher.wait_start_after(t_stop, WAIT, "a successor job")
        time.sleep(max(0.0, t_stop + 2 * T - time.monotonic()))
        assert w.group.overlaps() == [], "the successor's job found the paused leader's job alive"
    finally:
        gone.cancel()
        t_cont = w.group.signal("d0", signal.SIGCONT)

    def exited_event() -> list[dict[str, Any]]:
        return [e for e in w.group.daemons["d0"].events("job_exited")
                if e.get("pid") == old.pid]

    exited = wait_for(exited_event, WAIT, "d0 to log its job's end once resumed")
    leader = w.wait_converged(WAIT)
    record_result("etcd: SIGSTOP of the leader's daemon for 2T (no watchdog)", overlaps=len(w.group.overlaps()),
                  failover=successor.start - t_stop, reaped=end - t_stop, margin_to_expiry=deleted - end,
                  key_deleted=deleted - t_stop, logged_after_cont=mono_of_wall(exited[0]) - t_cont,
                  claim="guardian stops the job < stop + T and < key deleted; successor after")
    assert end < t_stop + T, f"job ended {end - t_stop:.2f}s after the SIGSTOP (T = {T})"
    assert end < deleted, f"job ended {end - deleted:.2f}s after its lease expired"
    assert successor.start > end and successor.candidate != "d0" and successor.token > old.token
    assert successor.start - t_stop <= T + SWEEP + SLACK
    assert exited[0]["cause"] == "stopped_by_guardian", exited
    assert leader == successor.candidate
    wait_rejoined(w, "d0", lease)
    assert [j for j in w.watcher.lives() if j.candidate == "d0" and j.start > t_stop] == []
    assert w.group.overlaps() == []
    assert w.token_problems() == []


# --------------------------------------------------------------------------- 6


def test_06_an_operator_revokes_the_leaders_lease(world) -> None:
    """`etcdctl lease revoke` of the leader's lease (a test client does the same RPC):
    the key goes at once; d0's watch on its own key fires (node_vanished: SIGKILL of the
    job at once, no graceful stop), the next in line's watch on its predecessor fires
    from the same revision and it starts after a listing and a heartbeat. The two
    notifications race. The lease rule does not cover an operator's delete (neither
    does ZooKeeper's: its fault 14, "operator deletes the leader's znode", is an excused
    case in the simulation, and 14c overlaps with the leader descheduled 0.6 s), so
    zero overlaps is NOT asserted here: on etcd the old job's lead is thinner than on
    ZooKeeper (measured 19-83 ms over 20 trials, 0 overlaps, at load 5; ZooKeeper's 14:
    >= 80 ms), and a loaded machine can reverse it. What is asserted is what the daemon
    does guarantee: the old job is SIGKILLed as soon as d0 hears of the deletion (gone
    within 1 s + slack of the revoke), the successor holds a higher token, the old
    leader rejoins at the back on a new lease. Any overlap and its window (the old
    job's end minus the successor's failed flock) are recorded (FAULT_RESULTS) and
    printed."""
    w = world()
    w.start()
    leader = "d0"
    for trial in range(trials(3)):
        old = w.only_job()
        assert old.candidate == leader
        _key, lease = leader_key(w)
        before = len(w.group.overlaps())
        t_rev = time.monotonic()
        w.admin.revoke_lease(lease)
        end = w.watcher.wait_end(old, 5)
        successor = w.watcher.wait_start_after(t_rev, WAIT, "a successor job")
        new_leader = w.wait_converged(WAIT)
        overlaps = w.group.overlaps()[before:]
        windows = [end - o["t"] for o in overlaps]
        record_result("etcd: an operator revokes the leader's lease", trial=trial, failover=successor.start - t_rev,
                      reaped=end - t_rev, margin=successor.start - end, overlaps=len(overlaps),
                      overlap_windows=windows,
                      claim="old job SIGKILLed at once; lead over the successor recorded, not asserted")
        assert end - t_rev < 1.0 + SLACK, f"the old job lived {end - t_rev:.2f}s after its lease was revoked"
        assert successor.candidate != leader and successor.token > old.token and new_leader == successor.candidate
        assert w.group.daemons[leader].events("node_vanished")
        wait_rejoined(w, leader, lease)
        leader = new_leader
    assert w.token_problems() == []


def removed_while_paused(w: World, remove: Callable[[str, int], object]) -> tuple[float, float, JobLife]:
    """d0 leads; its daemon is SIGSTOPped, ``remove(key, lease)`` takes its key away,
    and 0.6 s later (far below T) the daemon resumes. Returns when the removal was
    made, when the old job ended and the successor's job, once one leads again."""
    w.start()
    old = w.only_job()
    key, lease = leader_key(w)
    w.group.signal("d0", signal.SIGSTOP)
    try:
        t_removed = time.monotonic()
        remove(key, lease)
        time.sleep(0.6)
    finally:
        w.group.signal("d0", signal.SIGCONT)
    end = w.watcher.wait_end(old, 5)
    successor = w.watcher.wait_start_after(t_removed, WAIT, "a successor job")
    w.wait_converged(WAIT)
    return t_removed, end, successor


@pytest.mark.xfail(strict=False, reason=(
    "known limit: the successor starts ~70 ms after an operator revokes the "
    "leader's lease (the leader's claim goes with the lease, unlike after a key delete: 06c), so a leader whose daemon is descheduled for longer (here SIGSTOP 0.6 s, far "
    "below T) overlaps; measured: 2 overlaps in one run (the successor's job found the lock taken, exited, was restarted 0.2 s later and found it again), windows 0.56 / 0.32 s. Not strict: on a machine loaded enough "
    "to delay the successor by 0.6 s as well, there is none"))
def test_06b_an_operator_revokes_the_lease_while_the_leaders_daemon_is_briefly_descheduled(world) -> None:
    w = world()
    t_rev, end, successor = removed_while_paused(w, lambda key, lease: w.admin.revoke_lease(lease))
    overlaps = w.group.overlaps()
    record_result("etcd: an operator revokes the lease while the leader's daemon is paused 0.6 s",
                  failover=successor.start - t_rev, reaped=end - t_rev, overlaps=len(overlaps),
                  overlap_windows=[end - o["t"] for o in overlaps], claim="xfail: overlap (known limit)")
    assert overlaps == []


def test_06c_an_operator_deletes_the_leaders_key_while_its_daemon_is_briefly_descheduled(world) -> None:
    """6b's pause with a key delete (`etcdctl del`) instead of the lease's revoke: the
    lease and the leader's claim (core/claim.py), a key on it, stay, so the successor
    waits until d0 has woken, SIGKILLed and reaped its job and released the claim."""
    w = world()
    t_del, end, successor = removed_while_paused(w, lambda key, lease: w.admin.delete(key))
    record_result("etcd: an operator deletes the leader's key while its daemon is paused 0.6 s",
                  failover=successor.start - t_del, reaped=end - t_del, margin=successor.start - end,
                  overlaps=len(w.group.overlaps()), claim="the successor waits on the old leader's claim")
    assert w.group.overlaps() == []
    assert successor.start > end
    assert w.group.daemons[successor.candidate].events("previous_leader_holds")


# --------------------------------------------------------------------------- 7


def test_07_a_lost_reply_to_the_create_leaves_one_key_and_the_retry_finds_it(healthy: EtcdCluster,
                                                                            monkeypatch: pytest.MonkeyPatch) -> None:
    """Shell level, not through the proxy: FaultProxy's lose_reply_to parses ZooKeeper
    frames (length-prefixed, one reply per request, in order). etcd speaks gRPC over
    HTTP/2: requests are multiplexed on streams, the keep-alive and the watch streams
    send frames of their own at any time, and HPACK's header table is shared state on
    the connection, so "drop the reply to the next request" would need an HTTP/2 frame
    parser that finds the stream id of the Txn call and its response HEADERS/DATA;
    cutting the connection after "the first response bytes following a request" would
    as often catch a keep-alive answer as the put's. So the reply is lost where the
    shell sees it (zkleader.testing.lostreply): the create's put goes to etcd and is
    applied, then the client's channel is closed and the call fails UNAVAILABLE. The
    shell must suspend, reconnect with the same lease, and the core's retry of the
    same CreateNode (same candidacy id, same key) finds its own key in the
    transaction's failure branch: the same node, no ghost, nothing else created."""
    fired: list[dict[str, Any]] = []
    real_connect = etcd_shell_module.connect

    def connect(config: EtcdConfig, endpoint: str, timeout: float) -> Any:
        client = real_connect(config, endpoint, timeout)
        return client if fired else lostreply.LoseCreateReply(client, fired)

    monkeypatch.setattr(etcd_shell_module, "connect", connect)
    election = f"/zkleader-faults/lost-reply-{os.getpid()}-{time.monotonic_ns() % 10**9}"
    posted: list[ev.Event] = []
    cond = threading.Condition()

    def post(event: ev.Event) -> None:
        with cond:
            posted.append(event)
            cond.notify_all()

    def wait(kind: type, after: int = 0, timeout: float = 10.0) -> Any:
        def found() -> Any:
            return next((e for e in posted[after:] if isinstance(e, kind)), None)
        with cond:
            assert cond.wait_for(found, timeout), f"no {kind.__name__}; posted: {posted[-10:]}"
            return found()

    shell = EtcdShell(EtcdConfig(endpoints=tuple(healthy.endpoints), lease_ttl=T), post)
    shell.start()
    client = admin(healthy)
    try:
        connected = wait(ev.Connected)
        prefix = f"{election}/zkl-{'a' * 32}-"
        shell.execute(act.CreateNode(1, prefix, b"{}"))
        failed = wait(ev.RequestFailed)
        assert failed.failure is ev.Failure.CONNECTION and fired, failed
        mark = len(posted)
        again = wait(ev.Connected, after=mark)
        assert again.session_id == connected.session_id, "the lease changed"
        _value, meta = client.get(prefix)
        assert meta is not None and meta.lease_id == connected.session_id, "the lost create was not applied"
        shell.execute(act.CreateNode(2, prefix, b"{}"))  # the core's retry
        created = wait(ev.Created, after=mark)
        assert created.name.endswith(f"{meta.create_revision:010d}"), (created.name, meta.create_revision)
        keys = client.get_prefix_response(election + "/", keys_only=True).kvs
        assert [kv.key.decode() for kv in keys] == [prefix], "a ghost key"
        record_result("etcd: lost reply to the create (shell level)", overlaps=0, failover=None,
                      claim="same lease after the reconnect; the retry finds its own key; one key")
    finally:
        shell.close()
        client.close()


def test_07b_lost_replies_to_every_daemons_create_leave_one_key_per_daemon(world) -> None:
    """Fault 7 at the daemon level, ZooKeeper's fault 11 on etcd: every daemon runs
    through zkleader.testing.lostreply, so the reply to its first candidacy put is lost
    after etcd applied it (the proxy cannot pick one gRPC reply: test_07). Each daemon's
    core must learn the create's outcome is unknown, list the queue once reconnected on
    the same lease, and stand on the key that put made (``create_recovered``), not put
    a second one nor wait behind its own ghost: one key per daemon, on its lease, one
    leader and one job, tokens growing, and a SIGTERM handover still works."""
    w = world()
    w.start(launcher=("-m", "zkleader.testing.lostreply"))
    own: dict[str, tuple[int, int]] = {}
    recovered_after = []
    for name, daemon in w.group.daemons.items():
        lost = daemon.events(lostreply.EVENT)
        assert len(lost) == 1 and lost[0]["created"], f"etcd did not apply {name}'s put (or twice): {lost}"
        node = lost[0]["key"].rsplit("/", 1)[-1] + sequence(lost[0]["revision"])
        recovered = daemon.events("create_recovered")
        assert [e["node"] for e in recovered] == [node], f"{name} did not find its own key {node}: {recovered}"
        assert daemon.events("joined")[0]["node"] == node
        assert daemon.events("session_lost") == [] and daemon.events("create_failed") == []
        own[name] = (lost[0]["revision"], lost[0]["lease"])
        recovered_after.append(mono_of_wall(recovered[0]) - lost[0]["t"])
    assert w.queue() == sorted(own.values()), "not one key per daemon on the lease its lost put used"
    old = w.only_job()
    assert old.candidate == "d0" and old.token == own["d0"][0]
    assert w.group.overlaps() == []

    t_term = w.group.signal("d0", signal.SIGTERM)
    assert w.group.wait_exit("d0") == 0
    successor = w.watcher.wait_start_after(t_term, WAIT, "a successor job")
    assert successor.candidate == w.next and successor.token == own[w.next][0] > old.token
    assert w.wait_converged(WAIT) == w.next
    record_result("etcd: lost reply to every daemon's create", overlaps=len(w.group.overlaps()), failover=None,
                  handover=successor.start - t_term, recovered_after=recovered_after,
                  claim="one key per daemon, on its lease; each found its own; one leader; handover after")
    assert w.group.overlaps() == []
    assert w.token_problems() == []


# --------------------------------------------------------------------------- 8


@pytest.mark.parametrize("which", ["etcd_follower", "etcd_leader"])
def test_08_the_leaders_member_cut_off_from_its_peers_stops_its_job_before_the_lease_can_expire(
        isolatable_world, which: str) -> None:
    """ZooKeeper's fault 16 on etcd. d0 leads and talks only to member m; d1 and d2 talk
    only to the other two. m's peer links go silent (EtcdCluster.isolate), its client
    port still answers d0.

    * m an etcd follower: it forwards d0's keep-alives to the leader over a peer link,
      so none sent after the cut renews the lease, and its linearizable reads need the
      leader too. The leader expires the lease T after the last keep-alive that
      reached it (before the cut): key deleted <= cut + T + sweep.
    * m the etcd leader: it may go on renewing d0's lease until CheckQuorum deposes it
      (etcd < 3.4.28 lets it, etcd-io/etcd#15247; Debian 12 ships 3.4.23), but the
      read after each keep-alive needs a quorum to confirm m's leadership, so no
      heartbeat after the cut counts. The other two elect a leader within 2 ET of
      the cut, which gives every lease T + ET from its election (Promote): key deleted
      <= cut + 3 ET + T + sweep.

    Either way d0's t_ok precedes the cut, so its lease clock stops the job before
    cut + T, before the key goes, before the successor starts. Once healed, d0's next
    keep-alive finds its lease gone: session_lost, back of the queue on a new lease."""
    w = isolatable_world()
    etcd = w.etcd
    raft_leader = etcd.wait_leader()
    cut = raft_leader if which == "etcd_leader" else next(i for i in range(len(etcd)) if i != raft_leader)
    others = [i for i in range(len(etcd)) if i != cut]
    w.avoid = cut
    w.start({"d0": [cut], "d1": others, "d2": others})
    key, lease = leader_key(w)
    daemon = w.group.daemons["d0"]
    lost = len(daemon.events("session_lost"))
    gone = KeyGone(w.admin, key)
    for _ in range(5):  # on a loaded machine the etcd leadership may have moved by itself
        if (etcd.leader() == cut) == (which == "etcd_leader"):
            break
        etcd.transfer_leader(cut if which == "etcd_leader" else others[0])
        w.wait_converged(WAIT)
    else:
        raise AssertionError(f"could not make the cut member {'the' if which == 'etcd_leader' else 'no'} etcd leader")
    old = w.only_job()
    t_cut, end, deleted, successor = cut_until_taken_over(w, old, gone, lambda: etcd.isolate(cut), etcd.heal_peers)
    t_heal = time.monotonic()
    etcd.wait_healthy(60)
    failover = successor.start - t_cut
    bound = T + SWEEP + SLACK if which == "etcd_follower" else T + 3 * ET + SWEEP + SLACK
    record_result(f"etcd: the leader's member cut off from its peers ({which.replace('_', ' ')})",
                  failover=failover, reaped=end - t_cut, key_deleted=deleted - t_cut,
                  margin_to_expiry=deleted - end, healthy_after_heal=time.monotonic() - t_heal,
                  overlaps=len(w.group.overlaps()),
                  claim="job gone < cut + T and < key deleted; successor after, higher token, <= bound")
    assert end < t_cut + T, f"job ended {end - t_cut:.2f}s after the cut (T = {T})"
    assert end < deleted, f"job ended {end - deleted:.2f}s after its lease expired"
    assert successor.start > end and successor.candidate != "d0" and successor.token > old.token
    assert failover <= bound, f"successor {failover:.2f}s after the cut (bound {bound:.2f}s)"
    daemon.wait_event("session_lost", WAIT, count=lost + 1)
    assert w.wait_converged(WAIT) == successor.candidate
    wait_rejoined(w, "d0", lease)
    assert [j for j in w.watcher.lives() if j.candidate == "d0" and j.start > t_cut] == []
    assert w.group.overlaps() == []
    assert w.token_problems() == []
