"""The kazoo subclasses (zkleader/connection.py) and the ZooKeeper shell's use of them,
against a real ZooKeeper server: every answered packet is logged on the daemon's clock
(written, answer read; kazoo's idle pings included), a synced CheckNode carries the
anchor its sync proves (a packet answered tickTime/2 before it, not one merely written),
a synced ListChildren fails as a whole when its sync fails, and what the shell can
tell about a wrong zookeeper.tick_time is said (issue 11)."""

from __future__ import annotations

import queue
import time
from collections.abc import Callable, Iterator

import pytest
import structlog

from zkleader.config import ZooKeeperConfig
from zkleader.connection import PacketLog
from zkleader.core import actions as act
from zkleader.core import events as ev
from zkleader.testing.zkserver import ZooKeeperServer, wait_until
from zkleader.zookeeper import ZooKeeperShell

pytestmark = pytest.mark.zookeeper

TICK = 0.2  # the test servers' tickTime (zkleader/testing/zkserver.py)


class Shell:
    """A ZooKeeperShell and the events it posted."""

    def __init__(self, hosts: str, session_timeout: float, tick_time: float = TICK) -> None:
        self.events: queue.Queue[ev.Event] = queue.Queue()
        self.posted: list[ev.Event] = []
        config = ZooKeeperConfig(hosts=tuple(hosts.split(",")), session_timeout=session_timeout, tick_time=tick_time)
        self.zk = ZooKeeperShell(config, self._post, clock=time.monotonic)
        self._next_id = 0

    def _post(self, event: ev.Event) -> None:
        self.posted.append(event)
        self.events.put(event)

    def wait(self, kind: type, timeout: float = 15.0, request_id: int | None = None) -> ev.Event:
        deadline = time.monotonic() + timeout
        while True:
            event = self.events.get(timeout=max(0.0, deadline - time.monotonic()))
            if isinstance(event, kind) and (request_id is None or getattr(event, "request_id", None) == request_id):
                return event

    def connect(self) -> ev.Connected:
        self.zk.start()
        event = self.wait(ev.Connected)
        assert isinstance(event, ev.Connected)
        return event

    def request(self, make: Callable[[int], act.Action]) -> ev.Reply:
        self._next_id += 1
        rid = self._next_id
        self.zk.execute(make(rid))
        reply = self.wait(object, request_id=rid)
        return reply  # type: ignore[return-value]


@pytest.fixture
def shells() -> Iterator[Callable[..., Shell]]:
    made: list[Shell] = []

    def make(hosts: str, session_timeout: float, tick_time: float = TICK) -> Shell:
        made.append(Shell(hosts, session_timeout, tick_time))
        return made[-1]

    yield make
    for shell in made:
        shell.zk.close()


def answered(shell: Shell, count: int, timeout: float = 5.0) -> tuple[float, float]:
    """The entry that made the log ``count`` long: (written, answer read)."""
    packets = shell.zk.client.packets
    wait_until(lambda: len(packets.entries()) >= count, timeout, 0.005, message=f"{count} answered packets")
    return packets.entries()[count - 1]


def exists(shell: Shell) -> tuple[float, float]:
    """An exists of kazoo's own (not the core's): one more answered packet."""
    count = len(shell.zk.client.packets.entries())
    shell.zk.client.exists_async("/")
    return answered(shell, count + 1)


# ------------------------------------------------------------------ the log


def test_the_log_is_bounded_and_a_new_session_drops_the_old_sessions_entries() -> None:
    log = PacketLog(capacity=3)
    for t in range(5):
        log.answered(float(t), t + 0.5)
    assert log.entries() == [(2.0, 2.5), (3.0, 3.5), (4.0, 4.5)]
    log.confirmed(4.8, session_id=7)
    assert log.entries() == [] and log.confirmed_at == 4.8
    log.answered(5.0, 5.5)
    log.confirmed(5.6, session_id=7)  # a reconnect of the same session keeps everything
    assert log.entries() == [(5.0, 5.5)] and log.confirmed_at == 5.6
    assert log.anchor(sync_queued_at=5.7, tick_time=0.2) == 5.6  # the confirmation beats every packet
    log.answered(6.0, 6.1)
    # The half-tick is stretched by the clock slack: 0.2 s x 1.1 (timing.relay_window).
    assert log.anchor(sync_queued_at=6.33, tick_time=0.4) == 6.0
    assert log.anchor(sync_queued_at=6.31, tick_time=0.4) == 5.6  # answered 6.1 > 6.31 - 0.22: not relayed for sure


def test_every_answered_packet_is_logged_kazoos_idle_pings_included(healthy_zk_server, shells) -> None:
    t = 1.2  # kazoo pings after ~T/3 of silence: ~0.4 s here
    shell = shells(healthy_zk_server.hosts, session_timeout=t)
    before = time.monotonic()
    shell.connect()
    packets = shell.zk.client.packets
    assert before <= packets.confirmed_at <= time.monotonic(), "the connect request's write, on the shell's clock"
    time.sleep(2.0)  # idle: only pings go out
    entries = packets.entries()
    gaps = [b[0] - a[0] for a, b in zip(entries, entries[1:])]
    assert len(entries) >= 3, f"idle pings were not logged: {entries}"
    assert all(packets.confirmed_at < written <= read for written, read in entries)
    assert all(gap <= t / 3 + 0.3 for gap in gaps), f"a silence longer than kazoo's ping gap: {gaps}"


def test_a_new_session_starts_a_new_log(healthy_zk_server, shells) -> None:
    shell = shells(healthy_zk_server.hosts, session_timeout=4.0)
    first = shell.connect()
    exists(shell)
    shell.zk.client.stop()  # closes the session; the next start creates a new one
    shell.zk.client.start()
    second = shell.wait(ev.Connected)
    assert isinstance(second, ev.Connected) and second.session_id != first.session_id
    packets = shell.zk.client.packets
    assert all(written > packets.confirmed_at for written, _ in packets.entries()), packets.entries()


# ------------------------------------------------------ what a sync proves


def test_a_synced_check_carries_the_write_time_of_the_latest_packet_answered_tick_over_2_before_the_sync(
        healthy_zk_server, fault_proxy, shells) -> None:
    # T = 10 s: kazoo's next ping is ~3 s away, so only our own requests go out.
    proxy = fault_proxy(healthy_zk_server, name="shell")
    shell = shells(proxy.hosts, session_timeout=10.0)
    shell.connect()
    packets = shell.zk.client.packets

    # Right after connecting, the only packet that qualifies is the connect request itself.
    reply = shell.request(lambda rid: act.CheckNode(rid, "/", watch=False, sync=True))
    assert isinstance(reply, ev.NodeChecked) and reply.synced
    assert reply.relayed_at == packets.confirmed_at

    relayed = exists(shell)
    time.sleep(3 * TICK)  # answered longer than tickTime/2 before the sync
    too_recent = exists(shell)
    reply = shell.request(lambda rid: act.CheckNode(rid, "/", watch=True, sync=True))
    assert isinstance(reply, ev.NodeChecked) and reply.synced and reply.stat is not None
    assert too_recent[1] > reply.sent_at - TICK / 2, "the test's own premise"
    assert reply.relayed_at == relayed[0], (
        f"anchor {reply.relayed_at}, wanted the exists written at {relayed[0]} (not the one at {too_recent[0]})")

    # A stalled stream: written long before the sync, answered only just before it.
    # Its write proves nothing (it may reach the server together with the sync).
    relayed = exists(shell)
    time.sleep(3 * TICK)
    proxy.partition()
    count = len(packets.entries())
    shell.zk.client.exists_async("/")
    time.sleep(3 * TICK)
    proxy.heal()
    stalled = answered(shell, count + 1)
    reply = shell.request(lambda rid: act.CheckNode(rid, "/", watch=False, sync=True))
    assert isinstance(reply, ev.NodeChecked) and reply.synced
    assert stalled[0] < reply.sent_at - TICK / 2 < stalled[1], "the test's own premise"
    assert reply.relayed_at == relayed[0], (
        f"anchor {reply.relayed_at}: the stalled exists written at {stalled[0]} was answered only at {stalled[1]}")

    unsynced = shell.request(lambda rid: act.CheckNode(rid, "/", watch=False))
    assert isinstance(unsynced, ev.NodeChecked) and not unsynced.synced and unsynced.relayed_at is None


def test_a_synced_listing_pipelines_a_sync_and_fails_with_it(healthy_zk_server, fault_proxy, shells) -> None:
    from zkleader.testing.faultproxy import OP_SYNC

    proxy = fault_proxy(healthy_zk_server, name="shell")
    shell = shells(proxy.hosts, session_timeout=4.0)
    shell.connect()
    listed = shell.request(lambda rid: act.ListChildren(rid, "/", sync=True))
    assert isinstance(listed, ev.ChildrenListed) and "zookeeper" in listed.children
    requests = proxy.stats(0)["requests"]
    assert requests.get("sync") == 1 and requests.get("getchildren") == 1, requests

    lost = proxy.lose_reply_to(OP_SYNC)  # the sync's reply never comes: the listing must fail too
    failed = shell.request(lambda rid: act.ListChildren(rid, "/", sync=True))
    assert lost.wait(5)
    assert isinstance(failed, ev.RequestFailed) and failed.failure is ev.Failure.CONNECTION
    plain = shell.request(lambda rid: act.ListChildren(rid, "/"))  # after the reconnect: no sync
    assert isinstance(plain, ev.ChildrenListed)
    assert proxy.stats(0)["requests"].get("sync") == 2


def test_the_granted_timeout_and_each_connection_attempt_are_reported(healthy_zk_server, shells) -> None:
    from zkleader.testing.zkserver import free_port

    dead = f"127.0.0.1:{free_port()}"  # nothing listens: refused at once
    shell = shells(f"{dead},{healthy_zk_server.hosts}", session_timeout=30.0)  # the server allows 10 s at most
    shell.zk.client.randomize_hosts = False
    connected = shell.connect()
    assert connected.negotiated_timeout == healthy_zk_server.max_session_timeout / 1000
    attempts = [(e.host, e.attempt) for e in shell.posted if isinstance(e, ev.ConnectionAttempt)]
    assert attempts == [(dead, 1), (healthy_zk_server.hosts, 2)]
    assert shell.zk.client.server == healthy_zk_server.address


# ------------------------------------------------- a wrong tick_time (11)


@pytest.fixture
def whitelist_server(tmp_path_factory):
    """Factory: a standalone server (tickTime 200 ms) with this 4lw whitelist and
    session timeout bounds; closed at teardown."""
    made: list[ZooKeeperServer] = []

    def make(whitelist: str, max_ms: int = 10000) -> ZooKeeperServer:
        server = ZooKeeperServer(tmp_path_factory.mktemp("zk-4lw"), name=f"zk-4lw-{len(made)}",
                                 max_session_timeout=max_ms, extra_config={"4lw.commands.whitelist": whitelist})
        made.append(server)
        server.start(timeout=60)
        return server

    yield make
    for server in made:
        server.close()


def warned(shells, hosts: str, session_timeout: float, tick_time: float) -> dict[str, list[dict]]:
    """The warnings a shell with these settings logs once connected, by event name
    (after its 4lw look-up had time to finish)."""
    with structlog.testing.capture_logs() as logs:
        shell = shells(hosts, session_timeout=session_timeout, tick_time=tick_time)
        shell.connect()
        time.sleep(1.0)
        shell.zk.close()
    out: dict[str, list[dict]] = {}
    for entry in logs:
        if entry["log_level"] == "warning":
            out.setdefault(entry["event"], []).append(entry)
    return out


def test_a_tick_time_unlike_the_servers_is_warned_about_where_conf_is_allowed(whitelist_server, shells) -> None:
    server = whitelist_server("srvr,conf")
    too_short = warned(shells, server.hosts, 4.0, tick_time=TICK / 2)
    (mismatch,) = too_short["tick_time_mismatch"]
    assert mismatch["server_tick_time"] == TICK and mismatch["configured_tick_time"] == TICK / 2
    assert "may not have heard" in mismatch["problem"]
    assert warned(shells, server.hosts, 4.0, tick_time=TICK) == {}, "a right tick_time is not warned about"
    assert "observer_server" not in too_short  # a standalone server is no observer


def test_where_only_srvr_is_allowed_a_clamped_session_timeout_still_gives_the_tick_time_away(
        whitelist_server, shells) -> None:
    # Debian's default whitelist; the default bounds 2..20 x tickTime (0.4..4 s).
    server = whitelist_server("srvr", max_ms=20 * int(TICK * 1000))
    capped = warned(shells, server.hosts, 8.0, tick_time=TICK / 2)
    assert "tick_time_mismatch" not in capped, "conf is not allowed: nothing to compare"
    (suspect,) = capped["tick_time_suspect"]
    assert suspect["granted"] == 4.0 and suspect["implied_tick_time"] == TICK
    raised = warned(shells, server.hosts, 0.3, tick_time=TICK / 2)  # below minSessionTimeout 0.4 s
    assert raised["tick_time_suspect"][0]["implied_tick_time"] == TICK
    assert warned(shells, server.hosts, 8.0, tick_time=TICK) == {}, "a clamp that fits tick_time is no hint"
    assert warned(shells, server.hosts, 2.0, tick_time=TICK / 2) == {}, "an unclamped timeout tells nothing"


def test_an_observer_is_warned_about_and_a_follower_is_not(tmp_path_factory, shells) -> None:
    """Observers may follow a ZooKeeper follower (observerMasterPort) instead of the
    leader: a second relay hop the rule does not cover. srvr (allowed by default)
    tells an observer apart; nothing tells whether it has a master port."""
    from zkleader.testing.zkserver import Ensemble

    ensemble = Ensemble(tmp_path_factory.mktemp("zk-observer"), size=4)
    observer = ensemble.servers[3]
    ensemble.extra_config[f"server.{observer.myid}"] = (
        f"{observer.host}:{observer.quorum_port}:{observer.election_port}:observer")
    observer.extra_config["peerType"] = "observer"
    try:
        ensemble.start(timeout=90)
        assert observer.mode() == "observer", ensemble.modes()
        on_observer = warned(shells, observer.hosts, 4.0, tick_time=TICK)
        (warning,) = on_observer["observer_server"]
        assert warning["server"] == observer.hosts
        participant = next(s for s in ensemble.servers[:3] if s.mode() == "follower")
        assert warned(shells, participant.hosts, 4.0, tick_time=TICK) == {}
    finally:
        ensemble.close()
