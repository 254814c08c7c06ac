"""The test bed itself: real ZooKeeper servers, the ensemble, the fault proxy.

Timing assertions use generous slack (the machine is a noisy 2-core box); the
bounds they check are the ones the daemon's safety argument relies on, see
/work/shared/notes/safety-timing.md.
"""

from __future__ import annotations

import os
import threading
import time

import pytest
from kazoo.client import KazooState
from kazoo.exceptions import ConnectionLoss
from kazoo.protocol.states import EventType

from zkleader.testing.faultproxy import CREATE_OPS, OP_CREATE, OP_CREATE2
from zkleader.testing.zkserver import ZooKeeperServer, four_letter, wait_until, zookeeper_classpath

pytestmark = [pytest.mark.zookeeper, pytest.mark.timeout(120)]

SLACK = 1.5  # seconds of scheduling noise we tolerate on top of protocol bounds


class States:
    """Records kazoo state changes with their time.monotonic()."""

    def __init__(self, client) -> None:
        self.events: list[tuple[float, str]] = []
        self._cond = threading.Condition()
        client.add_listener(self._listener)

    def _listener(self, state) -> None:  # runs in kazoo's thread: never block
        with self._cond:
            self.events.append((time.monotonic(), str(state)))
            self._cond.notify_all()

    def wait_for(self, state: str, after: float = 0.0, timeout: float = 20.0) -> float:
        """Time of the first `state` event at or after `after`."""
        deadline = time.monotonic() + timeout
        with self._cond:
            while True:
                for t, s in self.events:
                    if s == state and t >= after:
                        return t
                left = deadline - time.monotonic()
                if left <= 0:
                    raise AssertionError(f"no {state} after {after:.3f} within {timeout}s: {self.events}")
                self._cond.wait(left)

    def names(self, after: float = 0.0) -> list[str]:
        with self._cond:
            return [s for t, s in self.events if t >= after]


def _create_ephemeral(client, base: str) -> str:
    client.ensure_path(base)
    return client.create(f"{base}/n-", b"x", ephemeral=True, sequence=True)


def _deleted_event(client, path: str) -> threading.Event:
    """An Event set (with .at = monotonic time) when `path` is deleted."""
    ev = threading.Event()

    def watch(event) -> None:
        if event.type == EventType.DELETED:
            ev.at = time.monotonic()  # type: ignore[attr-defined]
            ev.set()

    assert client.exists(path, watch=watch) is not None
    return ev


# --------------------------------------------------------------------------
# servers
# --------------------------------------------------------------------------


def test_classpath_comes_from_debian_jars():
    cp = zookeeper_classpath().split(":")
    names = [p.rsplit("/", 1)[-1] for p in cp]
    assert "zookeeper.jar" in names and "zookeeper-jute.jar" in names and "slf4j-api.jar" in names
    assert all(p.startswith("/usr/share/java/") for p in cp)


def test_standalone_serves_and_wchc_shows_watch(healthy_zk_server, kazoo_client, election_path):
    zk = healthy_zk_server
    assert zk.four_letter("ruok") == "imok"
    assert "Mode: standalone" in zk.four_letter("srvr")
    assert zk.pid and zk.host == "127.0.0.1"
    conf = zk.four_letter("conf")
    assert "tickTime=200" in conf and "maxSessionTimeout=10000" in conf and "minSessionTimeout=400" in conf

    client = kazoo_client(zk.hosts, timeout=2.0)
    client.ensure_path(election_path)
    client.get(election_path, watch=lambda event: None)
    sid = client.client_id[0]

    wchc = zk.four_letter("wchc")  # session -> paths
    assert f"0x{sid:x}" in wchc and election_path in wchc, wchc
    wchp = zk.four_letter("wchp")  # path -> sessions
    assert election_path in wchp and f"0x{sid:x}" in wchp, wchp
    assert sid in zk.sessions()
    assert "zk_server_state\tstandalone" in zk.four_letter("mntr")


def test_server_restart_keeps_port_and_data(tmp_path, kazoo_client):
    with ZooKeeperServer(tmp_path / "zk", tick_time=100) as zk:
        client = kazoo_client(zk.hosts, timeout=2.0)
        client.create("/persist", b"v1")
        client.stop()
        old_pid, port = zk.pid, zk.port
        zk.restart(kill=True)
        assert zk.pid != old_pid and zk.port == port
        client2 = kazoo_client(zk.hosts, timeout=2.0)
        assert client2.get("/persist")[0] == b"v1"
        pid = zk.pid
    # close() killed exactly the JVM it started
    assert not zk.running
    with pytest.raises(ProcessLookupError):
        os.kill(pid, 0)


def test_startup_failure_raises_with_log_tail(tmp_path):
    # An invalid configuration: the JVM exits and the error carries its log.
    zk = ZooKeeperServer(tmp_path / "bad", extra_config={"tickTime": "not-a-number"})
    try:
        with pytest.raises(Exception) as info:
            zk.start(timeout=30)
        text = str(info.value)
        assert "exited with status" in text and "last lines of" in text
        assert "not-a-number" in text or "NumberFormatException" in text
    finally:
        zk.close()
    assert not zk.running


def test_session_expiry_within_bound(healthy_zk_server, fault_proxy, kazoo_client, election_path):
    """A silent client's session expires no earlier than T after the server last
    heard from it, and not much later (T + one tick + scheduling slack)."""
    zk = healthy_zk_server
    timeout = 1.0
    proxy = fault_proxy(zk)
    victim = kazoo_client(proxy.hosts, timeout=timeout)
    observer = kazoo_client(zk.hosts, timeout=4.0)
    node = _create_ephemeral(victim, election_path)
    gone = _deleted_event(observer, node)
    assert f"to={int(timeout * 1000)}" in zk.four_letter("cons")  # negotiated T

    proxy.partition()
    t_partition = time.monotonic()
    last_heard = proxy.stats(0)["last_sent_upstream"]  # the server heard nothing after this
    assert gone.wait(timeout + 5), "session did not expire"
    since_heard = gone.at - last_heard
    since_partition = gone.at - t_partition
    print(f"expiry {since_heard:.3f}s after the last byte reached the server, {since_partition:.3f}s after the partition")
    assert since_heard >= timeout - 0.02, "session expired early"
    assert since_heard <= timeout + zk.tick_time / 1000 + SLACK


# --------------------------------------------------------------------------
# ensemble
# --------------------------------------------------------------------------


@pytest.mark.parametrize("target", ["connected", "leader"])
def test_ensemble_survives_one_server_killed(healthy_ensemble, fault_proxy, kazoo_client, election_path, target):
    ens = healthy_ensemble
    assert sorted(ens.modes()) == ["follower", "follower", "leader"]
    proxy = fault_proxy(ens)  # one proxy port per server: we can see where the client is
    client = kazoo_client(proxy.hosts, timeout=8.0)
    states = States(client)
    sid = client.client_id[0]
    node = _create_ephemeral(client, election_path)

    connected = proxy.active_upstreams()
    assert len(connected) == 1
    assert ens.server_of_session(sid) == connected[0]  # 'cons' agrees with the proxy
    victim = connected[0] if target == "connected" else ens.leader()

    t_kill = time.monotonic()
    ens.stop_server(victim, kill=True)
    ens.wait_ready(timeout=30)  # the two others serve, one of them leads
    if target == "connected":
        states.wait_for("SUSPENDED", after=t_kill, timeout=10)
    # kazoo moves to another server (or stays) and keeps its session
    wait_until(lambda: client.state == KazooState.CONNECTED, 20, message="reconnect")
    client.set(node, b"still mine")
    assert client.client_id[0] == sid
    assert "LOST" not in states.names()
    assert client.exists(node).ephemeralOwner == sid
    now_on = ens.server_of_session(sid)
    assert now_on is not None and now_on != victim
    print(f"kill {target} (server {victim}): states {states.names()}, now on server {now_on}, "
          f"{time.monotonic() - t_kill:.2f}s")


def test_ensemble_loses_quorum_and_recovers(healthy_ensemble, kazoo_client, election_path):
    ens = healthy_ensemble
    client = kazoo_client(ens.hosts, timeout=10.0)
    states = States(client)
    sid = client.client_id[0]
    node = _create_ephemeral(client, election_path)
    survivor = ens.server_of_session(sid)
    assert survivor is not None
    victims = [i for i in range(3) if i != survivor]

    t_kill = time.monotonic()
    for i in victims:
        ens.stop_server(i, kill=True)
    ens.wait_no_quorum(timeout=15)
    assert ens.servers[survivor].running
    assert "not currently serving" in ens.four_letter("srvr", survivor)
    states.wait_for("SUSPENDED", after=t_kill, timeout=10)

    t_restart = time.monotonic()
    for i in victims:
        ens.start_server(i)
    ens.wait_ready(timeout=30)
    t_ready = time.monotonic()
    wait_until(lambda: client.state == KazooState.CONNECTED, 20, message="reconnect after quorum is back")
    # The new leader gives every known session a fresh timeout: ours survives.
    assert client.client_id[0] == sid
    assert client.exists(node).ephemeralOwner == sid
    assert "LOST" not in states.names()
    print(f"quorum back {t_ready - t_restart:.2f}s after restart; client reconnected "
          f"{time.monotonic() - t_ready:.2f}s later; states {states.names()}")


# --------------------------------------------------------------------------
# fault proxy
# --------------------------------------------------------------------------


def test_partition_suspends_then_heal_keeps_session(healthy_zk_server, fault_proxy, kazoo_client, election_path):
    zk = healthy_zk_server
    timeout = 6.0
    proxy = fault_proxy(zk)
    client = kazoo_client(proxy.hosts, timeout=timeout)
    states = States(client)
    sid = client.client_id[0]
    node = _create_ephemeral(client, election_path)
    observer = kazoo_client(zk.hosts, timeout=4.0)
    gone = _deleted_event(observer, node)

    proxy.partition()
    t_partition = time.monotonic()
    t_suspended = states.wait_for("SUSPENDED", after=t_partition, timeout=timeout + 5)
    detect = t_suspended - t_partition
    # kazoo: ping after ~T/3 idle, connection dropped when it is unanswered ~T/3 later
    assert detect <= 2 * timeout / 3 + SLACK, detect
    proxy.heal()
    t_heal = time.monotonic()
    t_connected = states.wait_for("CONNECTED", after=t_heal, timeout=timeout + 5)
    print(f"SUSPENDED {detect:.2f}s after partition (T={timeout}), CONNECTED {t_connected - t_heal:.2f}s after heal")
    assert client.client_id[0] == sid
    assert "LOST" not in states.names()
    assert not gone.is_set()
    assert client.exists(node).ephemeralOwner == sid


def test_partition_longer_than_session_timeout_gives_lost(healthy_zk_server, fault_proxy, kazoo_client, election_path):
    zk = healthy_zk_server
    timeout = 2.0
    proxy = fault_proxy(zk)
    client = kazoo_client(proxy.hosts, timeout=timeout)
    states = States(client)
    sid = client.client_id[0]
    node = _create_ephemeral(client, election_path)
    observer = kazoo_client(zk.hosts, timeout=4.0)
    gone = _deleted_event(observer, node)

    proxy.partition()
    t_partition = time.monotonic()
    states.wait_for("SUSPENDED", after=t_partition, timeout=timeout + 5)
    assert gone.wait(timeout + 5), "the server did not expire the session"
    # While the partition lasts kazoo never says LOST: it cannot know.
    time.sleep(0.3)
    assert "LOST" not in states.names()
    proxy.heal()
    t_heal = time.monotonic()
    t_lost = states.wait_for("LOST", after=t_heal, timeout=timeout + 10)
    print(f"LOST {t_lost - t_heal:.2f}s after heal; expiry {gone.at - t_partition:.2f}s after partition")
    # kazoo then starts a new session by itself
    wait_until(lambda: client.state == KazooState.CONNECTED, 15, message="new session")
    assert client.client_id[0] != sid
    assert observer.exists(node) is None


@pytest.mark.parametrize("include_data, opcode", [(False, OP_CREATE), (True, OP_CREATE2)])
def test_lose_reply_to_create_leaves_ghost_node(healthy_zk_server, fault_proxy, kazoo_client, election_path, include_data, opcode):
    zk = healthy_zk_server
    proxy = fault_proxy(zk)
    client = kazoo_client(proxy.hosts, timeout=4.0)
    states = States(client)
    sid = client.client_id[0]
    client.ensure_path(election_path)

    rule = proxy.lose_reply_to(CREATE_OPS)
    with pytest.raises(ConnectionLoss):
        client.create(f"{election_path}/n-", b"x", ephemeral=True, sequence=True, include_data=include_data)
    assert rule.wait(5)
    assert rule.opcode == opcode  # kazoo 2.11: create() -> 1, create(include_data=True) -> 15
    assert rule.reply_err == 0  # the server created it
    assert rule.path == f"{election_path}/n-"

    wait_until(lambda: client.state == KazooState.CONNECTED, 10, message="reconnect")
    assert client.client_id[0] == sid  # same session: the node is a ghost of our own
    children = client.get_children(election_path)
    assert len(children) == 1, children
    stat = client.exists(f"{election_path}/{children[0]}")
    assert stat.ephemeralOwner == sid
    assert proxy.stats(0)["lost_replies"] == 1
    assert "LOST" not in states.names()


def test_reset_drops_connection_and_session_survives(healthy_zk_server, fault_proxy, kazoo_client, election_path):
    zk = healthy_zk_server
    proxy = fault_proxy(zk)
    client = kazoo_client(proxy.hosts, timeout=4.0)
    states = States(client)
    sid = client.client_id[0]
    client.ensure_path(election_path)

    t_reset = time.monotonic()
    assert proxy.reset() == 1
    states.wait_for("SUSPENDED", after=t_reset, timeout=5)
    t_conn = states.wait_for("CONNECTED", after=t_reset, timeout=10)
    assert t_conn - t_reset < 3.0
    assert client.client_id[0] == sid
    assert proxy.stats(0)["resets"] == 1 and proxy.stats(0)["accepted"] == 2


def test_flap_and_partition_of_one_ensemble_server(healthy_ensemble, fault_proxy, kazoo_client, election_path):
    ens = healthy_ensemble
    proxy = fault_proxy(ens)
    client = kazoo_client(proxy.hosts, timeout=6.0)
    states = States(client)
    sid = client.client_id[0]
    client.ensure_path(election_path)

    # Short flaps (well below 2/3 T) are ridden through without losing the session.
    flapper = proxy.flap(period=0.4, duration=2.0)
    flapper.join(10)
    assert flapper.cycles >= 3 and not proxy.is_partitioned()
    client.set(election_path, b"after flap")
    assert client.client_id[0] == sid

    # Partition only the server we are on: kazoo moves to another one.
    (on,) = proxy.active_upstreams()
    proxy.partition(on)
    t0 = time.monotonic()
    states.wait_for("SUSPENDED", after=t0, timeout=10)
    states.wait_for("CONNECTED", after=t0, timeout=15)
    assert client.client_id[0] == sid
    (now_on,) = proxy.active_upstreams(include_partitioned=False)
    assert now_on != on and sid in ens.servers[now_on].sessions()
    proxy.heal()
    assert "LOST" not in states.names()


def test_four_letter_helper_reports_unreachable():
    from zkleader.testing.zkserver import free_port

    with pytest.raises(OSError):
        four_letter("127.0.0.1", free_port(), "ruok", timeout=1.0)
