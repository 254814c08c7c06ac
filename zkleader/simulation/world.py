"""The model world the simulated daemons live in.

Everything here runs on one virtual clock (``World.now``, seconds) driven by a
priority queue of callbacks; nothing reads a real clock and every random choice comes
from one seeded ``random.Random``, so a seed replays exactly.

Parts, each modelled on the behaviour the safety rule depends on:

* ``Server``: one linearizable ZooKeeper state. Sessions with negotiated timeouts,
  expired only when no packet arrived for the timeout, rounded *up* to the next tick
  bucket (ZooKeeper's ExpiryQueue). Ephemeral sequential znodes (sequence = parent
  cversion, 32-bit, wraps), czxid from one global zxid counter, one-shot exists
  watches held per connection. A restart resets every connection and keeps sessions.
* ``Conn`` and the per-host link: two FIFO directions, each can be cut. Packets sent
  into a cut direction wait in the sender's kernel and go out when it heals (TCP),
  unless the other end has closed the connection by then.
* ``Client``: kazoo 2.11's connection loop. A ping goes out read_timeout/2 minus
  10..400 ms jitter after the last *send*; an unanswered ping at the next deadline
  drops the connection, so requests postpone detection (``chatty_until`` models a
  process whose other requests keep postponing it). On a drop: pending and queued
  requests fail with ConnectionLoss, SUSPENDED, every watch fires once with type NONE
  and is forgotten. Reconnects with backoff; same session if the server still has it,
  else LOST and a new session. Requests made while connecting are queued.
* ``Daemon``: one incarnation of the daemon's loop around the production core. Events
  reach it through kazoo's separate threads (state, completion, watch) and the job
  watcher, each FIFO but not ordered against each other. It can pause (SIGSTOP: kazoo
  freezes too; or only the loop blocks), be killed (-9) or exit; systemd restarts it.
* ``Job``: the leader-only job under its guardian. Alive from StartJob until truly
  dead; the guardian kills it within a small delay when the daemon dies.
"""

from __future__ import annotations

import bisect
import heapq
import itertools
import random
import signal
from dataclasses import dataclass, replace
from typing import Any, Callable

from .. import actions as act
from .. import events as ev
from .. import timing
from ..config import OnExit
from ..leadership import LEAVE_GRACE, MAX_RESTART_DELAY, Identity, Leadership, Settings
from .invariants import Checker, Violation
from .timeline import Timeline

INF = float("inf")
ELECTION = "/zkleader/sim"
#: kazoo: connection_retry={"delay": 0.1, "backoff": 2, "max_delay": ...}
RETRY_DELAY = 0.1
#: The session timeout at which kazoo's ping jitter (10..400 ms) is taken as it is.
PING_JITTER_AT = 10.0

CoreFactory = Callable[[Settings, Identity, Callable[[], str]], Leadership]


@dataclass(frozen=True)
class WorldConfig:
    hosts: int = 3
    session_timeout: float = 2.0
    stop_timeout: float = 0.3
    on_exit: OnExit = OnExit.RESTART
    restart_delay: float = 0.1
    #: ZooKeeper tickTime: expiry buckets; the server grants timeouts in [2, 20] ticks.
    tick_time: float = 0.2
    #: The server's maxSessionTimeout when it is below 20 ticks (a reduced grant).
    max_session_timeout: float | None = None
    #: Host clocks run at 1 +- up to this rate (monotonic clocks are not all equal).
    clock_drift: float = 0.005
    #: systemd RestartSec: a dead daemon comes back after up to this many seconds.
    restart_sec: float = 0.5
    #: A restarted daemon repeats its predecessor's candidacy ids (cloned host, bad RNG).
    reuse_ids: bool = False
    #: Initial cversion of the election parent; near 2**31 the sequence wraps.
    sequence_start: int = 0
    #: Servers in the connection string (kazoo's connect timeout is T / servers).
    servers: int = 3
    #: Timeline entries kept (None: all).
    trace_limit: int | None = 3000
    #: A core whose next deadline is already past (a busy loop) is a violation.
    spin_is_violation: bool = True
    #: systemd WatchdogSec (0: no watchdog). The loop feeds it every interval/2; a loop
    #: that stops (a pause) gets the whole unit SIGKILLed one interval after the last ping.
    watchdog: float = 0.0

    @property
    def retry_max_delay(self) -> float:
        # zkleader.zookeeper: max(0.2, min(2.0, T * RECONNECT_CAP_FRACTION))
        return max(0.2, min(2.0, self.session_timeout * 0.2))


def _wrap32(value: int) -> int:
    return ((value + 2**31) % 2**32) - 2**31


# ---------------------------------------------------------------------------- server


class Znode:
    __slots__ = ("path", "czxid", "owner", "cversion", "children")

    def __init__(self, path: str, czxid: int, owner: int, cversion: int = 0) -> None:
        self.path = path
        self.czxid = czxid
        self.owner = owner
        self.cversion = cversion
        self.children: dict[str, None] = {}


class Session:
    __slots__ = ("id", "timeout", "last_heard", "relay_due", "alive", "conn", "ephemerals", "check_at", "host", "ended")

    def __init__(self, sid: int, timeout: float, now: float, host: Host) -> None:
        self.id = sid
        self.timeout = timeout
        #: The ZooKeeper leader's last touch of the session: what expiry counts from.
        self.last_heard = now
        #: The leader ping that will relay the packets the follower heard since the last
        #: one (None: nothing waiting). Lost if the follower drops out before it.
        self.relay_due: float | None = None
        self.alive = True
        self.conn: Conn | None = None
        self.ephemerals: dict[str, None] = {}
        self.check_at: float | None = None
        self.host = host
        self.ended: tuple[float, str] | None = None


class Conn:
    """One TCP connection between a client and the server."""

    __slots__ = ("id", "host", "client", "session_id", "server_open", "client_open", "c2s_last", "s2c_last",
                 "watched", "rst_sent", "connect_sent")
    _ids = itertools.count(1)

    def __init__(self, host: Host, client: Client) -> None:
        self.id = next(Conn._ids)
        self.host = host
        self.client = client
        self.session_id: int | None = None
        self.server_open = False
        self.client_open = True
        self.c2s_last = 0.0
        self.s2c_last = 0.0
        self.watched: dict[str, None] = {}
        self.rst_sent = False
        #: The host-clock time its connect request was written.
        self.connect_sent = 0.0


class Server:
    def __init__(self, world: World) -> None:
        self.world = world
        cfg = world.cfg
        self.tick = cfg.tick_time
        self.min_timeout = 2 * self.tick
        self.max_timeout = cfg.max_session_timeout if cfg.max_session_timeout is not None else 20 * self.tick
        self.zxid = 0
        self.up = True
        self.nodes: dict[str, Znode] = {"/": Znode("/", 0, 0)}
        self.sessions: dict[int, Session] = {}
        self.watches: dict[str, dict[Conn, None]] = {}
        self._session_counter = 0
        self._lowest: str | None = None
        self._lowest_valid = False
        self.election_parent = ELECTION
        #: The ZooKeeper leader pings its followers every tickTime/2 (from this phase on);
        #: a follower's reply carries the sessions it heard from since the previous ping.
        self.relay_period = self.tick / 2
        self.relay_phase = world.rng.uniform(0.0, self.relay_period)
        #: path -> (time, cause) of every deleted election node, for messages.
        self.deleted: dict[str, tuple[float, str]] = {}
        self._ensure(ELECTION)
        self.nodes[ELECTION].cversion = cfg.sequence_start

    # --------------------------------------------------------------- sessions

    def _bucket(self, t: float) -> float:
        """ZooKeeper's roundToNextInterval: strictly after t, never early."""
        b = (int(t // self.tick) + 1) * self.tick
        return b if b > t else b + self.tick

    def _new_session(self, timeout: float, host: Host) -> Session:
        self._session_counter += 1
        sid = (0x1 << 56) | (self.world.seed_tag << 24) | self._session_counter
        s = Session(sid, timeout, self.world.now, host)
        self.sessions[sid] = s
        self._schedule_check(s, self._bucket(s.last_heard + timeout))
        return s

    def _schedule_check(self, s: Session, t: float) -> None:
        s.check_at = t
        self.world.at(t, self._check, s, t)

    def touch(self, s: Session) -> None:
        """The follower heard a packet of the session: the ZooKeeper leader touches it at
        its next ping of the follower (tickTime/2 apart), not now."""
        now = self.world.now
        self.heard(s)
        if s.relay_due is None:
            period = self.relay_period
            s.relay_due = self.relay_phase + -((self.relay_phase - now) // period) * period

    def revalidate(self, s: Session) -> None:
        """A connect request: the follower revalidates the session with the leader before
        answering, so the leader touches it now."""
        self.heard(s)
        if self.world.now > s.last_heard:
            s.last_heard = self.world.now

    def heard(self, s: Session) -> float:
        """The leader's last touch, once the relay that was due has happened."""
        due = s.relay_due
        if due is not None and due <= self.world.now:
            s.relay_due = None
            if due > s.last_heard:
                s.last_heard = due
        return s.last_heard

    def lose_relay(self, s: Session) -> None:
        """The follower drops out of the quorum: what it heard but did not relay yet is lost."""
        self.heard(s)
        if s.relay_due is not None:
            s.relay_due = None
            self.world.record(s.host, "zk", f"session 0x{s.id:x}: touches not yet relayed to the leader are lost")

    def _check(self, s: Session, t: float) -> None:
        if not s.alive or s.check_at != t:
            return
        if not self.up:
            s.check_at = None  # no expiry while the ensemble has no leader; restart re-arms
            return
        due = self._bucket(self.heard(s) + s.timeout)
        if due <= self.world.now + 1e-9:
            self.end_session(s, "expired")
        else:
            self._schedule_check(s, due)

    def end_session(self, s: Session, cause: str) -> None:
        s.alive = False
        self.world.checker.dirty = True
        s.ended = (self.world.now, cause)
        self.world.record(None, "zk", f"session 0x{s.id:x} ({s.host.name}) {cause}")
        if cause == "expired":
            self.world.stats_count("sessions_expired")
        for path in list(s.ephemerals):
            self.delete_node(path, f"session 0x{s.id:x} {cause}")
        conn = s.conn
        if conn is not None and conn.server_open:
            self.close_conn(conn, rst=True)

    def close_conn(self, conn: Conn, rst: bool) -> None:
        conn.server_open = False
        for path in conn.watched:
            holders = self.watches.get(path)
            if holders is not None:
                holders.pop(conn, None)
        conn.watched.clear()
        s = self.sessions.get(conn.session_id) if conn.session_id is not None else None
        if s is not None and s.conn is conn:
            s.conn = None
        if rst and not conn.rst_sent and conn.client_open:
            conn.rst_sent = True
            self.world.send_s2c(conn, ("rst",))

    def restart(self, downtime: float) -> None:
        self.up = False
        for s in self.sessions.values():
            if s.conn is not None and s.conn.server_open:
                self.close_conn(s.conn, rst=True)
        self.world.at(self.world.now + downtime, self._back)

    def _back(self) -> None:
        if self.up:
            return
        self.up = True
        now = self.world.now
        for s in self.sessions.values():
            if s.alive:
                # A new quorum leader renews every session with its full timeout.
                s.relay_due = None
                s.last_heard = max(s.last_heard, now)
                self._schedule_check(s, self._bucket(now + s.timeout))
        self.world.record(None, "zk", "server back")

    # -------------------------------------------------------------- packets

    def receive(self, conn: Conn, pkt: tuple[Any, ...]) -> None:
        kind = pkt[0]
        if kind == "connect":
            self._connect(conn, pkt[1], pkt[2])
            return
        if not self.up or not conn.server_open:
            if kind != "fin" and not conn.rst_sent and conn.client_open:
                conn.rst_sent = True
                self.world.send_s2c(conn, ("rst",))
            return
        s = self.sessions[conn.session_id]  # type: ignore[index]
        self.touch(s)
        if kind == "req":
            self._request(conn, s, pkt[1], pkt[2])
        elif kind == "ping":
            self.world.send_s2c(conn, ("pong",))
        elif kind == "bg":
            self.world.send_s2c(conn, ("bgreply",))
        elif kind == "close":
            self.close_conn(conn, rst=False)
            self.end_session(s, "closed")
        elif kind == "fin":
            self.close_conn(conn, rst=False)

    def ping_fast(self, conn: Conn) -> None:
        """A ping whose round trip completes at once (healthy link): the follower heard it."""
        self.touch(self.sessions[conn.session_id])  # type: ignore[index]

    def _connect(self, conn: Conn, sid: int | None, requested: float) -> None:
        world = self.world
        if not self.up:
            world.send_s2c(conn, ("refused",))
            return
        timeout = min(max(requested, self.min_timeout), self.max_timeout)
        if sid is None:
            s = self._new_session(timeout, conn.host)
        else:
            found = self.sessions.get(sid)
            if found is None or not found.alive:
                world.send_s2c(conn, ("expired",))
                return
            s = found
            if s.conn is not None and s.conn is not conn and s.conn.server_open:
                self.close_conn(s.conn, rst=True)
        conn.session_id = s.id
        conn.server_open = True
        s.conn = conn
        self.revalidate(s)
        world.send_s2c(conn, ("connected", s.id, s.timeout))

    def _request(self, conn: Conn, s: Session, xid: int, a: act.Action) -> None:
        t = type(a)
        if t is act.CheckNode:
            node = self.nodes.get(a.path)  # type: ignore[union-attr]
            if a.watch:  # type: ignore[union-attr]
                self.watches.setdefault(a.path, {})[conn] = None  # type: ignore[union-attr]
                conn.watched[a.path] = None  # type: ignore[union-attr]
            result: tuple[str, Any] = ("ok", None if node is None else ev.NodeStat(node.czxid, node.owner))
        elif t is act.ListChildren:
            node = self.nodes.get(a.path)  # type: ignore[union-attr]
            result = ("err", ev.Failure.NO_NODE) if node is None else ("ok", tuple(node.children))
        elif t is act.CreateNode:
            result = self._create(s, a.path_prefix)  # type: ignore[union-attr]
        elif t is act.PublishLeadership:
            node = self.nodes.get(a.path)  # type: ignore[union-attr]
            if node is None:
                result = ("err", ev.Failure.NO_NODE)
            else:
                self.zxid += 1
                self._fire(a.path, ev.WatchKind.CHANGED)  # type: ignore[union-attr]
                result = ("ok", None)
        elif t is act.DeleteNode:
            node = self.nodes.get(a.path)  # type: ignore[union-attr]
            if node is None:
                result = ("err", ev.Failure.NO_NODE)
            elif node.children:
                result = ("err", ev.Failure.SERVER_ERROR)
            else:
                self.delete_node(a.path, f"deleted by its owner 0x{s.id:x}")  # type: ignore[union-attr]
                result = ("ok", None)
        else:
            raise TypeError(f"not a request: {a!r}")
        host = conn.host
        lose = host.lose_next
        if lose is not None and (lose == "any" or t is act.CreateNode):
            # Applied, then the connection dies before the reply leaves: a lost reply.
            host.lose_next = None
            self.world.record(host, "!!", f"reply to {t.__name__} lost (connection reset after apply)")
            self.close_conn(conn, rst=True)
            return
        self.world.send_s2c(conn, ("reply", xid, result))

    # ---------------------------------------------------------------- znodes

    def _ensure(self, path: str) -> None:
        if path in self.nodes:
            return
        parent = path.rsplit("/", 1)[0] or "/"
        self._ensure(parent)
        self.zxid += 1
        self.nodes[path] = Znode(path, self.zxid, 0)
        p = self.nodes[parent]
        p.children[path.rsplit("/", 1)[1]] = None
        p.cversion = _wrap32(p.cversion + 1)

    def _create(self, s: Session, prefix: str) -> tuple[str, Any]:
        parent_path, base = prefix.rsplit("/", 1)
        self._ensure(parent_path)
        parent = self.nodes[parent_path]
        name = base + ("%010d" % parent.cversion)  # Java's String.format("%010d"): same digits
        path = f"{parent_path}/{name}"
        if path in self.nodes:
            return ("err", ev.Failure.NODE_EXISTS)
        self.zxid += 1
        self.nodes[path] = Znode(path, self.zxid, s.id)
        parent.children[name] = None
        parent.cversion = _wrap32(parent.cversion + 1)
        s.ephemerals[path] = None
        self._lowest_valid = False
        self.world.checker.dirty = True
        self.world.record(s.host, "zk", f"created {name} czxid={self.zxid} owner=0x{s.id:x}")
        self._fire(path, ev.WatchKind.CHANGED)
        return ("ok", path)

    def delete_node(self, path: str, cause: str) -> None:
        node = self.nodes.pop(path)
        parent_path, name = path.rsplit("/", 1)
        parent = self.nodes[parent_path]
        del parent.children[name]
        parent.cversion = _wrap32(parent.cversion + 1)
        self.zxid += 1
        if node.owner:
            owner = self.sessions.get(node.owner)
            if owner is not None:
                owner.ephemerals.pop(path, None)
        if parent_path == ELECTION:
            self._lowest_valid = False
            self.world.checker.dirty = True
            self.deleted[path] = (self.world.now, cause)
        self.world.record(None, "zk", f"deleted {name} ({cause})")
        self._fire(path, ev.WatchKind.DELETED)

    def _fire(self, path: str, kind: ev.WatchKind) -> None:
        holders = self.watches.pop(path, None)
        if not holders:
            return
        for conn in holders:
            conn.watched.pop(path, None)
            if conn.server_open:
                self.world.send_s2c(conn, ("watch", path, kind))

    def election_children(self) -> list[Znode]:
        parent = self.nodes.get(ELECTION)
        if parent is None:
            return []
        return [self.nodes[f"{ELECTION}/{name}"] for name in parent.children]

    def lowest(self) -> str | None:
        """The first candidate in line: the oldest election node (lowest czxid)."""
        if not self._lowest_valid:
            children = self.election_children()
            self._lowest = min(children, key=lambda n: n.czxid).path if children else None
            self._lowest_valid = True
        return self._lowest


# ---------------------------------------------------------------------------- client


class _Req:
    __slots__ = ("action", "sent_at")

    def __init__(self, action: act.Action, sent_at: float) -> None:
        self.action = action
        self.sent_at = sent_at


class Client:
    """kazoo's KazooClient + ConnectionHandler as far as the core can tell."""

    def __init__(self, world: World, host: Host, daemon: Daemon) -> None:
        self.world = world
        self.host = host
        self.daemon = daemon
        self.requested = world.cfg.session_timeout
        self.state = "connecting"  # connected | closed
        self.session_id: int | None = None
        self.timeout = self.requested
        self.read_timeout = self.requested * 2 / 3
        self.conn: Conn | None = None
        self.handshake: Conn | None = None
        self.xid = 0
        self.pending: dict[int, _Req] = {}
        self.queue: list[_Req] = []
        self.watchers: dict[str, None] = {}
        self.last_send = 0.0
        self.ping_out = False
        self.timer_gen = 0
        self._deadline = 0.0
        self._armed_send = 0.0
        self._timer_missed = False
        self.chatty_until = 0.0
        self.retry_delay = RETRY_DELAY
        self.attempts = 0
        #: Every packet this session wrote, as (started, finished) on the host's clock,
        #: the connect requests and kazoo's pings included (production records the same).
        self.writes: list[tuple[float, float]] = []
        #: When the session's latest answered connect request was sent (host clock).
        self.confirmed_at: float | None = None
        self.frozen = False
        self.deferred: list[tuple[Callable[..., None], tuple[Any, ...]]] = []

    # ------------------------------------------------------------ connecting

    def start(self) -> None:
        self.world.at(self.world.now, self._attempt)

    def _attempt(self) -> None:
        if self.state != "connecting" or self.handshake is not None:
            return
        if self.frozen:
            self.deferred.append((self._attempt, ()))
            return
        world = self.world
        self.attempts += 1
        servers = world.cfg.servers
        self.daemon.post("state", ev.ConnectionAttempt(f"zk{(self.attempts - 1) % servers + 1}:2181", self.attempts))
        host = self.host
        if host.c2s_up and host.s2c_up:
            conn = Conn(host, self)
            self.handshake = conn
            conn.connect_sent = self._write()
            world.send_c2s(conn, ("connect", self.session_id, self.requested))
            world.at(world.now + self.requested / servers, self._handshake_timeout, conn)
        else:
            # SYN unanswered: the socket's connect timeout runs out.
            world.at(world.now + min(self.requested, 1.0), self._attempt_failed)

    def _attempt_failed(self) -> None:
        if self.state != "connecting" or self.handshake is not None:
            return
        delay = self.retry_delay * self.world.rng.uniform(1.0, 1.4)
        self.retry_delay = min(self.retry_delay * 2, self.world.cfg.retry_max_delay)
        self.world.at(self.world.now + delay, self._attempt)

    def _handshake_timeout(self, conn: Conn) -> None:
        if self.handshake is conn:
            if self.frozen:
                self.deferred.append((self._handshake_timeout, (conn,)))
                return
            self.handshake = None
            conn.client_open = False
            self._attempt_failed()

    # --------------------------------------------------------------- packets

    def receive(self, conn: Conn, pkt: tuple[Any, ...]) -> None:
        if self.frozen:
            self.deferred.append((self.receive, (conn, pkt)))
            return
        if not conn.client_open or self.state == "closed":
            # The socket is gone: the kernel answers with a reset and the server forgets it.
            if conn.server_open:
                self.world.server.close_conn(conn, rst=False)
            return
        kind = pkt[0]
        if conn is self.handshake:
            self.handshake = None
            if kind == "connected":
                self._on_connected(conn, pkt[1], pkt[2])
            elif kind == "expired":
                self._on_expired(conn)
            else:
                conn.client_open = False
                self._attempt_failed()
            return
        if conn is not self.conn:
            return
        if kind == "reply":
            self._on_reply(pkt[1], pkt[2])
        elif kind == "pong":
            self.ping_out = False
        elif kind == "watch":
            path = pkt[1]
            if path in self.watchers:
                del self.watchers[path]
                self.daemon.post("watch", ev.WatchFired(path, pkt[2]))
        elif kind == "rst":
            self._drop("connection reset")

    def _on_connected(self, conn: Conn, sid: int, timeout: float) -> None:
        if sid != self.session_id:
            self.writes = [w for w in self.writes if w[0] >= conn.connect_sent]  # a new session's record
        self.confirmed_at = conn.connect_sent
        self.conn = conn
        self.state = "connected"
        self.session_id = sid
        self.timeout = timeout
        self.read_timeout = timeout * 2 / 3
        self.retry_delay = RETRY_DELAY
        self.last_send = self.world.now
        self.ping_out = False
        self._arm()
        self.daemon.post("state", ev.Connected(session_id=sid, negotiated_timeout=timeout))
        queued, self.queue = self.queue, []
        for req in queued:
            self._send(req)

    def _on_expired(self, conn: Conn) -> None:
        conn.client_open = False
        self.daemon.post("state", ev.SessionLost(reason="expired_session"))
        self._fail_all("SessionExpiredError")
        self.session_id = None
        self.watchers.clear()
        self.retry_delay = RETRY_DELAY
        self.world.at(self.world.now, self._attempt)

    def _on_reply(self, xid: int, result: tuple[str, Any]) -> None:
        req = self.pending.pop(xid, None)
        if req is None:
            return
        a = req.action
        rid = a.request_id  # type: ignore[union-attr]
        status, value = result
        t = type(a)
        event: ev.Event
        if status == "err":
            event = ev.RequestFailed(rid, req.sent_at, value, value.value)
        elif t is act.CheckNode:
            if a.watch:  # type: ignore[union-attr]
                self.watchers[a.path] = None  # type: ignore[union-attr]
            if a.sync:  # type: ignore[union-attr]
                # One linearizable server: a sync always goes through "the leader"; what it
                # proves is the production rule applied to this session's packet record.
                relayed = timing.relayed_anchor(self.writes, req.sent_at, self.world.cfg.tick_time, self.confirmed_at)
                event = ev.NodeChecked(rid, req.sent_at, value, synced=True, relayed_at=relayed)
                self._prune_writes()
            else:
                event = ev.NodeChecked(rid, req.sent_at, value)
        elif t is act.ListChildren:
            event = ev.ChildrenListed(rid, req.sent_at, value)
        elif t is act.CreateNode:
            event = ev.Created(rid, req.sent_at, value)
        elif t is act.DeleteNode:
            event = ev.Deleted(rid, req.sent_at)
        else:
            event = ev.DataSet(rid, req.sent_at)
        self.daemon.post("completion", event)

    def _fail_all(self, why: str) -> None:
        reqs = list(self.pending.values()) + self.queue
        self.pending = {}
        self.queue = []
        for req in reqs:
            self.daemon.post(
                "completion",
                ev.RequestFailed(req.action.request_id, req.sent_at, ev.Failure.CONNECTION, why),  # type: ignore[union-attr]
            )

    def _drop(self, reason: str) -> None:
        if self.state != "connected":
            return
        conn = self.conn
        assert conn is not None
        conn.client_open = False
        self.conn = None
        self.world.send_c2s(conn, ("fin",))
        self.state = "connecting"
        self.timer_gen += 1
        self.world.record(self.host, "zk", f"kazoo: connection dropped ({reason})")
        # kazoo's _session_callback(CONNECTING): fail pending, SUSPENDED, then NONE watches.
        self._fail_all("ConnectionLoss")
        self.daemon.post("state", ev.Suspended())
        watched, self.watchers = self.watchers, {}
        for path in watched:
            self.daemon.post("watch", ev.WatchFired(path, ev.WatchKind.CONNECTION))
        self.world.at(self.world.now + self.world.rng.uniform(0.0, 0.02), self._attempt)

    # -------------------------------------------------------------- requests

    def submit(self, action: act.Action, sent_at: float) -> None:
        req = _Req(action, sent_at)
        if self.state == "connected":
            self._send(req)
        elif self.state == "connecting":
            self.queue.append(req)
        else:
            self.daemon.post(
                "completion",
                ev.RequestFailed(action.request_id, sent_at, ev.Failure.CONNECTION, "ConnectionClosedError"),  # type: ignore[union-attr]
            )

    def _send(self, req: _Req) -> None:
        self.xid += 1
        self.pending[self.xid] = req
        self._write()
        self.world.send_c2s(self.conn, ("req", self.xid, req.action))  # type: ignore[arg-type]
        self.last_send = self.world.now

    def _write(self) -> float:
        """Records one packet write (instant: the kernel takes it; if the link is cut it
        waits in the send buffer, which the write record cannot tell)."""
        t = self.host.local(self.world.now)
        self.writes.append((t, t))
        return t

    def _prune_writes(self) -> None:
        """Only the latest write at or before the oldest pending sync's cut-off can still
        be the anchor; older ones are dropped so the record stays short."""
        if len(self.writes) < 64:
            return
        queued = [r.sent_at for r in self.pending.values()] + [r.sent_at for r in self.queue]
        cutoff = min(queued, default=self.host.local(self.world.now)) - self.world.cfg.tick_time / 2
        keep = bisect.bisect_right(self.writes, (cutoff, INF)) - 1
        if keep > 0:
            del self.writes[:keep]

    # ------------------------------------------------------------ ping loop

    def _arm(self) -> None:
        self.timer_gen += 1
        world = self.world
        # kazoo: random.randint(1, 40) / 100, i.e. 10..400 ms against read_timeout/2 = T/3;
        # scaled to the same share of T as at T = 10 s, so that small T keep their pings.
        jitter = (1 + int(world.rng.random() * 40)) / 100.0 * min(1.0, self.timeout / PING_JITTER_AT)
        self._deadline = self.last_send + self.read_timeout / 2.0 - jitter
        self._armed_send = self.last_send
        timeout = max(self._deadline - world.now, jitter)
        world.at(world.now + timeout, self._timer, self.timer_gen)

    def _timer(self, gen: int) -> None:
        if gen != self.timer_gen or self.state != "connected":
            return
        if self.frozen:
            self._timer_missed = True
            return
        now = self.world.now
        if self.last_send != self._armed_send:
            self._arm()  # a request went out: kazoo recomputes the deadline from it
            return
        if now < self.chatty_until:
            # Another user of the client sends a request (an implicit ping): detection is
            # postponed again, and the server hears it like any packet.
            self._ping(background=True)
            self._arm()
            return
        if self.ping_out:
            self._drop("outstanding heartbeat ping not received")
            return
        if now >= self._deadline - 1e-9:
            self._ping()
        self._arm()

    def _ping(self, background: bool = False) -> None:
        world = self.world
        self.last_send = world.now
        self._write()
        host = self.host
        conn = self.conn
        assert conn is not None
        if (
            host.c2s_up
            and host.s2c_up
            and world.server.up
            and conn.server_open
            and host.slow_until <= world.now
            and conn.c2s_last <= world.now
            and conn.s2c_last <= world.now
        ):
            world.server.ping_fast(conn)  # the pong is back long before the next deadline
        elif background:
            world.send_c2s(conn, ("bg",))  # its answer goes to its own caller, not to the core
        else:
            self.ping_out = True
            world.send_c2s(conn, ("ping",))

    # ------------------------------------------------------------ lifecycle

    def close(self) -> None:
        """CloseSession: kazoo stop() + close(); the server deletes our ephemerals."""
        if self.state == "connected" and self.conn is not None:
            self.world.send_c2s(self.conn, ("close",))
            self.conn.client_open = False
        elif self.handshake is not None:
            self.handshake.client_open = False
        self.handshake = None
        self.state = "closed"
        self.timer_gen += 1

    def kill(self) -> None:
        """The process died: the kernel closes the socket (the session lives on)."""
        for conn in (self.conn, self.handshake):
            if conn is not None and conn.client_open:
                conn.client_open = False
                self.world.send_c2s(conn, ("fin",))
        self.conn = None
        self.handshake = None
        self.state = "closed"
        self.timer_gen += 1
        self.frozen = False
        self.deferred = []

    def freeze(self) -> None:
        self.frozen = True

    def unfreeze(self) -> None:
        self.frozen = False
        deferred, self.deferred = self.deferred, []
        for fn, args in deferred:
            fn(*args)
        if self._timer_missed:
            self._timer_missed = False
            self._timer(self.timer_gen)


# ---------------------------------------------------------------------------- daemon


class Daemon:
    """One incarnation of the daemon process: the loop around the production core."""

    CHANNELS = ("state", "completion", "watch", "job", "signal", "health")

    def __init__(self, world: World, host: Host, incarnation: int) -> None:
        self.world = world
        self.host = host
        self.incarnation = incarnation
        self.label = host.name if incarnation == 1 else f"{host.name}#{incarnation}"
        ids = host.id_source(incarnation)
        identity = Identity(host=host.name, pid=1000 + incarnation, version="sim", started_at=f"{world.now:.3f}")
        self.core: Leadership = world.core_factory(world.settings, identity, ids)
        self.client = Client(world, host, self)
        self.inbox: list[tuple[float, int, ev.Event]] = []
        self.chan_last = dict.fromkeys(self.CHANNELS, 0.0)
        self.alive = True
        self.paused: str | None = None
        self.tick_gen = 0
        self.exit_code: int | None = None
        self.pause_serial = 0

    def start(self) -> None:
        self.world.record(self.host, "!!", f"daemon {self.label} starts (candidacy {self.core.candidacy_id[:8]}..)")
        self.client.start()

    # ---------------------------------------------------------------- events

    def post(self, channel: str, event: ev.Event, delay: float | None = None) -> None:
        if not self.alive:
            return
        world = self.world
        ready = world.now + (world.channel_jitter() if delay is None else delay)
        last = self.chan_last[channel]
        if ready < last:
            ready = last
        self.chan_last[channel] = ready
        heapq.heappush(self.inbox, (ready, next(world.seq), event))
        if self.paused is None:
            world.at(ready, self._wake)

    def _wake(self) -> None:
        if not self.alive or self.paused is not None:
            return
        inbox = self.inbox
        now = self.world.now
        handled = False
        while inbox and inbox[0][0] <= now:
            event = heapq.heappop(inbox)[2]
            self._handle(event)
            handled = True
            if not self.alive:
                return
        if handled:
            self._schedule_tick()

    def _handle(self, event: ev.Event) -> None:
        world = self.world
        host = self.host
        local = host.local(world.now)
        world.timeline.record(world.now, self.label, "<-", event, local)
        try:
            out = self.core.handle(event, local)
        except Exception as exc:  # a crash of the core is a bug like any other
            world.checker.violate("core_exception", f"{self.label}: core raised {exc!r} handling {event!r}")
            raise
        for a in out:
            world.timeline.record(world.now, self.label, "->", a, local)
            self._execute(a, local)
            if not self.alive:
                break

    def _check_node_really_gone(self, name: str) -> None:
        """Giving up a node that still exists in the daemon's live session throws away a
        healthy leadership (and leaves a ghost at the head of the queue until noticed)."""
        node = self.world.server.nodes.get(f"{self.core.settings.election_path}/{name}")
        if node is not None and node.owner == self.core.session_id:
            self.world.checker.violate("false_loss", f"{self.label} gave up {name}, which still exists in its live session")

    def _execute(self, a: act.Action, local: float) -> None:
        t = type(a)
        if t is act.Log:
            if a.event == "node_vanished" and a.fields.get("node"):  # type: ignore[union-attr]
                self._check_node_really_gone(str(a.fields["node"]))  # type: ignore[union-attr]
            return
        if t is act.CheckNode or t is act.ListChildren or t is act.CreateNode or t is act.DeleteNode or t is act.PublishLeadership:
            self.client.submit(a, local)
        elif t is act.StartJob:
            self.world.start_job(self, a.token, a.znode)  # type: ignore[union-attr]
        elif t is act.SignalJob:
            self.world.signal_job(self)
        elif t is act.KillJob:
            self.world.kill_job(self)
        elif t is act.CloseSession:
            self.client.close()
        elif t is act.Exit:
            self.world.daemon_exited(self, a.code)  # type: ignore[union-attr]
        elif t is act.RunHealthCheck:
            # No health command in the simulation: the daemon answers for it at once.
            self.post("health", ev.HealthChecked(True, "no health check configured"), delay=0.0)
        elif t is act.Reopen:
            self.world.reopen(self)
        else:
            raise TypeError(f"the simulation does not model the action {a!r}")

    def _schedule_tick(self) -> None:
        deadline = self.core.next_deadline()
        self.tick_gen += 1
        if deadline is None:
            return
        world = self.world
        host = self.host
        local_now = host.local(world.now)
        if deadline <= local_now:
            # The production loop would compute a timeout of 0 and spin at 100% CPU.
            world.checker.spin(self, deadline, local_now)
            t = world.now + 0.01
        else:
            t = host.world_time(deadline) + 1e-6 + world.loop_jitter()
            if t < world.now:
                t = world.now
        world.at(t, self._tick, self.tick_gen)

    def _tick(self, gen: int) -> None:
        if gen != self.tick_gen or not self.alive or self.paused is not None:
            return
        self._handle(ev.Tick())
        if self.alive:
            self._schedule_tick()

    # ------------------------------------------------------------ lifecycle

    def pause(self, kind: str) -> None:
        self.paused = kind
        if kind == "process":
            self.client.freeze()

    def resume(self) -> None:
        kind = self.paused
        if kind is None:
            return
        self.paused = None
        inbox = self.inbox
        now = self.world.now
        # The backlog is handled first, each event stamped with the current time.
        while inbox and inbox[0][0] <= now and self.alive:
            self._handle(heapq.heappop(inbox)[2])
        if self.alive:
            self._handle(ev.Tick())
        if self.alive:
            self._schedule_tick()
            for ready, _, _ in inbox:
                self.world.at(ready, self._wake)
        if kind == "process":
            self.client.unfreeze()

    def die(self) -> None:
        self.alive = False
        self.paused = None
        self.tick_gen += 1
        self.client.kill()


# ---------------------------------------------------------------------------- hosts and jobs


class Host:
    def __init__(self, world: World, index: int) -> None:
        self.world = world
        self.index = index
        self.name = f"h{index + 1}"
        self.c2s_up = True
        self.s2c_up = True
        self.c2s_buf: list[tuple[Conn, tuple[Any, ...]]] = []
        self.s2c_buf: list[tuple[Conn, tuple[Any, ...]]] = []
        self.slow_until = 0.0
        self.slow_extra = 0.0
        drift = world.cfg.clock_drift
        self.rate = 1.0 + world.rng.uniform(-drift, drift)
        self.offset = 1000.0 * (index + 1) + world.rng.uniform(0.0, 100.0)
        self.daemon: Daemon | None = None
        self.incarnations = 0
        self.lose_next: str | None = None
        self.fail_next_start = False
        self.restart_pending = False

    def local(self, t: float) -> float:
        return self.offset + t * self.rate

    def world_time(self, local: float) -> float:
        return (local - self.offset) / self.rate

    def id_source(self, incarnation: int) -> Callable[[], str]:
        generation = 0 if self.world.cfg.reuse_ids else incarnation
        counter = itertools.count()
        prefix = f"{self.index + 1:04x}{generation:08x}"
        return lambda: f"{prefix}{next(counter):020x}"

    @property
    def live_daemon(self) -> Daemon | None:
        d = self.daemon
        return d if d is not None and d.alive else None


class Job:
    __slots__ = ("id", "host", "daemon", "token", "znode", "session_id", "started_at", "dead_at", "death_at",
                 "returncode", "signalled", "started_post_at", "excused_until", "excuses")
    _ids = itertools.count(1)

    def __init__(self, daemon: Daemon, token: int, znode: str, now: float) -> None:
        self.id = next(Job._ids)
        self.host = daemon.host
        self.daemon = daemon
        self.token = token
        self.znode = znode
        self.session_id = daemon.client.session_id
        self.started_at = now
        self.dead_at: float | None = None
        self.death_at: float | None = None
        self.returncode: int | None = None
        self.signalled = False
        self.started_post_at = now
        self.excused_until = -INF
        #: reason ("paused", "operator") -> until when
        self.excuses: dict[str, float] = {}

    def describe(self) -> str:
        return f"job#{self.id} of {self.daemon.label} (token {self.token}, {self.znode.rsplit('/', 1)[-1]})"


# ---------------------------------------------------------------------------- world


class World:
    def __init__(self, config: WorldConfig, seed: int, core_factory: CoreFactory | None = None) -> None:
        self.cfg = config
        self.seed = seed
        self.seed_tag = seed & 0xFFFF
        self.rng = random.Random(seed)
        self.now = 0.0
        self._heap: list[tuple[float, int, Callable[..., None], tuple[Any, ...]]] = []
        self.seq = itertools.count()
        self.steps = 0
        self.core_factory: CoreFactory = core_factory or Leadership
        self.settings = Settings(
            election_path=ELECTION,
            candidate="sim",
            session_timeout=config.session_timeout,
            stop_signal=signal.SIGTERM,
            stop_timeout=config.stop_timeout,
            on_exit=config.on_exit,
            restart_delay=config.restart_delay,
            watchdog=config.watchdog,
            tick_time=config.tick_time,  # the core's lease bounds the session-touch relay with it
        )
        self.timeline = Timeline(config.trace_limit)
        self.stats: dict[str, int] = {}
        self.faults: dict[str, int] = {}
        self.jobs_crashed = 0
        self.healed_at: float | None = None
        #: Set when the faults stop: late fault callbacks (a flap's next cut) do nothing.
        self.quiet = False
        self.server = Server(self)
        self.hosts = [Host(self, i) for i in range(config.hosts)]
        self.checker = Checker(self)

    # ------------------------------------------------------------- scheduler

    def at(self, t: float, fn: Callable[..., None], *args: Any) -> None:
        heapq.heappush(self._heap, (t, next(self.seq), fn, args))

    def run_until(self, t_end: float) -> None:
        heap = self._heap
        check = self.checker.after_step
        pop = heapq.heappop
        while heap and heap[0][0] <= t_end:
            t, _, fn, args = pop(heap)
            self.now = t
            fn(*args)
            self.steps += 1
            check()
        if t_end > self.now:
            self.now = t_end

    def run_for(self, duration: float) -> None:
        self.run_until(self.now + duration)

    # ------------------------------------------------------------ randomness

    def latency(self, host: Host) -> float:
        r = self.rng.random()
        # 98%: 0.2..3 ms; 2%: a 10..120 ms spike (both from the one draw); no spikes once quiet
        base = 0.0002 + r * 0.00286 if r < 0.98 or self.quiet else 0.01 + (r - 0.98) * 5.5
        if host.slow_until > self.now:
            base += host.slow_extra * (0.5 + 0.5 * self.rng.random())
        return base

    def channel_jitter(self) -> float:
        """Delay between a kazoo thread posting an event and the loop seeing it."""
        r = self.rng.random()
        return 0.0 if r < 0.8 else (r - 0.8) * 0.015  # 20%: up to 3 ms

    def loop_jitter(self) -> float:
        """Scheduling delay of the daemon's loop waking up for a deadline."""
        r = self.rng.random()
        return r * 0.00202 if r < 0.99 else 0.002 + (r - 0.99) * 2.8  # 1%: 2..30 ms

    def kill_delay(self) -> float:
        rng = self.rng
        return rng.uniform(0.0, 0.05) if rng.random() > 0.02 else rng.uniform(0.05, 0.2)

    # ----------------------------------------------------------------- links

    def send_c2s(self, conn: Conn, pkt: tuple[Any, ...]) -> None:
        host = conn.host
        if host.c2s_up:
            t = self.now + self.latency(host)
            if t < conn.c2s_last:
                t = conn.c2s_last
            conn.c2s_last = t
            self.at(t, self.server.receive, conn, pkt)
        else:
            host.c2s_buf.append((conn, pkt))

    def send_s2c(self, conn: Conn, pkt: tuple[Any, ...]) -> None:
        host = conn.host
        if host.s2c_up:
            t = self.now + self.latency(host)
            if t < conn.s2c_last:
                t = conn.s2c_last
            conn.s2c_last = t
            self.at(t, conn.client.receive, conn, pkt)
        else:
            host.s2c_buf.append((conn, pkt))

    def set_link(self, host: Host, c2s: bool | None = None, s2c: bool | None = None) -> None:
        if c2s is not None and c2s != host.c2s_up:
            host.c2s_up = c2s
            if c2s:
                buf, host.c2s_buf = host.c2s_buf, []
                for conn, pkt in buf:
                    self.send_c2s(conn, pkt)
        if s2c is not None and s2c != host.s2c_up:
            host.s2c_up = s2c
            if s2c:
                buf, host.s2c_buf = host.s2c_buf, []
                for conn, pkt in buf:
                    self.send_s2c(conn, pkt)

    # ---------------------------------------------------------------- daemons

    def start(self) -> None:
        for host in self.hosts:
            self.at(self.rng.uniform(0.0, 0.1), self.start_daemon, host)

    def start_daemon(self, host: Host) -> None:
        host.restart_pending = False
        if host.live_daemon is not None:
            return
        host.incarnations += 1
        daemon = Daemon(self, host, host.incarnations)
        host.daemon = daemon
        daemon.start()

    def schedule_restart(self, host: Host) -> None:
        if host.restart_pending:
            return
        host.restart_pending = True
        self.at(self.now + self.rng.uniform(0.1, max(0.1, self.cfg.restart_sec)), self.start_daemon, host)

    def daemon_exited(self, daemon: Daemon, code: int) -> None:
        daemon.exit_code = code
        self.record(daemon.host, "!!", f"daemon {daemon.label} exited with status {code}")
        daemon.die()
        self.guardian_kill(daemon)
        self.schedule_restart(daemon.host)

    def kill9(self, host: Host) -> None:
        daemon = host.live_daemon
        if daemon is None:
            return
        self.record(host, "!!", f"kill -9 daemon {daemon.label}")
        if daemon.paused is not None:
            self.checker.on_resume(daemon)
        daemon.die()
        self.guardian_kill(daemon)
        self.schedule_restart(host)

    # ------------------------------------------------------------------- jobs

    def start_job(self, daemon: Daemon, token: int, znode: str) -> None:
        for other in self.checker.alive:
            if other.daemon is daemon:
                self.checker.violate(
                    "double_start", f"{daemon.label} started a job while {other.describe()} is still alive"
                )
        job = Job(daemon, token, znode, self.now)
        host = daemon.host
        if host.fail_next_start:
            host.fail_next_start = False
            self.record(host, "!!", "the job cannot start (exec failed)")
            self.at(self.now + self.rng.uniform(0.0005, 0.005), self._post_job_event, daemon,
                    ev.JobExited(None, "cannot start: No such file or directory"))
            return
        self.checker.on_start(job)
        job.started_post_at = self.now + self.rng.uniform(0.001, 0.03)
        self.at(job.started_post_at, self._post_job_event, daemon, ev.JobStarted(pid=40000 + job.id))

    def _post_job_event(self, daemon: Daemon, event: ev.Event) -> None:
        daemon.post("job", event, delay=0.0)

    def _job_of(self, daemon: Daemon) -> Job | None:
        for job in self.checker.alive:
            if job.daemon is daemon:
                return job
        return None

    def signal_job(self, daemon: Daemon) -> None:
        job = self._job_of(daemon)
        if job is None or job.signalled:
            return
        job.signalled = True
        rng = self.rng
        stop = self.cfg.stop_timeout
        r = rng.random()
        if r < 0.7:
            delay = rng.uniform(0.0, 0.5) * stop
        elif r < 0.9:
            delay = rng.uniform(0.5, 1.0) * stop
        elif r < 0.97:
            delay = rng.uniform(1.0, 1.6) * stop
        else:
            return  # ignores the stop signal: only SIGKILL ends it
        self._schedule_death(job, self.now + 0.0005 + delay, -signal.SIGTERM if rng.random() < 0.5 else 0)

    def kill_job(self, daemon: Daemon) -> None:
        job = self._job_of(daemon)
        if job is not None:
            self._schedule_death(job, self.now + self.kill_delay(), -signal.SIGKILL)

    def guardian_kill(self, daemon: Daemon) -> None:
        """The daemon is gone: its guardian takes the job's process group down."""
        job = self._job_of(daemon)
        if job is not None:
            self._schedule_death(job, self.now + self.kill_delay(), -signal.SIGKILL)

    def crash_job(self, host: Host) -> bool:
        for job in self.checker.alive:
            if job.host is host:
                self.record(host, "!!", f"{job.describe()} crashes")
                self.jobs_crashed += 1
                self._schedule_death(job, self.now, 1 if self.rng.random() < 0.7 else -signal.SIGSEGV)
                return True
        return False

    def _schedule_death(self, job: Job, t: float, returncode: int) -> None:
        if job.dead_at is not None or (job.death_at is not None and job.death_at <= t):
            return
        job.death_at = t
        self.at(t, self._die, job, returncode, t)

    def _die(self, job: Job, returncode: int, t: float) -> None:
        if job.dead_at is not None or job.death_at != t:
            return
        job.dead_at = self.now
        job.returncode = returncode
        self.checker.on_death(job)
        self.record(job.host, "job", f"{job.describe()} is dead (status {returncode})")
        report = max(self.now + self.rng.uniform(0.0005, 0.01), job.started_post_at + 1e-6)
        self.at(report, self._post_job_event, job.daemon, ev.JobExited(returncode))

    # ----------------------------------------------------------------- faults

    def fault(self, kind: str, host: Host | None, text: str) -> None:
        self.faults[kind] = self.faults.get(kind, 0) + 1
        self.record(host, "!!", text)

    def partition(self, host: Host, c2s: bool = True, s2c: bool = True) -> None:
        if self.quiet:
            return
        self.set_link(host, c2s=False if c2s else None, s2c=False if s2c else None)

    def heal(self, host: Host) -> None:
        if not (host.c2s_up and host.s2c_up):
            self.record(host, "!!", "link healed")
        self.set_link(host, c2s=True, s2c=True)

    def chatty(self, host: Host, until: float) -> None:
        daemon = host.live_daemon
        if daemon is not None:
            daemon.client.chatty_until = max(daemon.client.chatty_until, until)

    def slow(self, host: Host, extra: float, until: float) -> None:
        host.slow_extra = extra
        host.slow_until = max(host.slow_until, until)

    def pause(self, host: Host, kind: str) -> bool:
        daemon = host.live_daemon
        if self.quiet or daemon is None or daemon.paused is not None:
            return False
        daemon.pause(kind)
        watchdog = self.cfg.watchdog
        if watchdog:
            # The loop fed the watchdog at most interval/2 before it stopped (often just before).
            last_ping = self.now - (0.0 if self.rng.random() < 0.5 else self.rng.uniform(0.0, watchdog / 2))
            daemon.pause_serial += 1
            self.at(max(self.now, last_ping + watchdog), self._watchdog_fires, daemon, daemon.pause_serial)
        else:
            self.checker.on_pause(daemon)
        return True

    def _watchdog_fires(self, daemon: Daemon, serial: int) -> None:
        if not daemon.alive or daemon.paused is None or daemon.pause_serial != serial:
            return
        self.stats_count("watchdog_kills")
        self.record(daemon.host, "!!", f"systemd watchdog: no WATCHDOG=1 for {self.cfg.watchdog:g}s, "
                                       f"SIGKILL to the unit ({daemon.label} and its job)")
        daemon.die()
        self.guardian_kill(daemon)
        self.schedule_restart(daemon.host)

    def reopen(self, daemon: Daemon) -> None:
        """Action Reopen: the session is closed and the job reaped; start over in-process."""
        self.record(daemon.host, "!!", f"daemon {daemon.label} reopens")
        daemon.die()
        self.guardian_kill(daemon)
        self.start_daemon(daemon.host)

    def resume(self, host: Host) -> None:
        daemon = host.live_daemon
        if daemon is None or daemon.paused is None:
            return
        self.record(host, "!!", f"daemon {daemon.label} resumes")
        self.checker.on_resume(daemon)
        daemon.resume()

    def sigterm(self, host: Host) -> bool:
        daemon = host.live_daemon
        if daemon is None:
            return False
        daemon.post("signal", ev.ShutdownRequested("SIGTERM"))
        return True

    def operator_delete(self, path: str) -> None:
        self.checker.on_operator_delete(path)
        self.server.delete_node(path, "deleted by an operator")

    def leader_host(self) -> Host | None:
        """The host whose live session owns the first node in line, if any."""
        low = self.server.lowest()
        if low is None:
            return None
        owner = self.server.nodes[low].owner
        s = self.server.sessions.get(owner)
        return s.host if s is not None else None

    def heal_all(self) -> None:
        """The faults stop: every link heals, every daemon runs, nothing is armed."""
        self.healed_at = self.now
        self.quiet = True
        self.record(None, "!!", "faults stop: heal everything")
        if not self.server.up:
            self.server._back()
        for host in self.hosts:
            host.lose_next = None
            host.fail_next_start = False
            host.slow_until = 0.0
            self.heal(host)
            daemon = host.live_daemon
            if daemon is not None:
                daemon.client.chatty_until = 0.0
                if daemon.paused is not None:
                    self.resume(host)
        for host in self.hosts:
            if host.live_daemon is None:
                self.start_daemon(host)

    def in_flight_until(self) -> float:
        """When the last packet now on the wire arrives."""
        latest = self.now
        for host in self.hosts:
            daemon = host.daemon
            if daemon is None:
                continue
            for conn in (daemon.client.conn, daemon.client.handshake):
                if conn is not None:
                    latest = max(latest, conn.c2s_last, conn.s2c_last)
        return latest

    def quiet_bound(self) -> float:
        """How long after the faults stop exactly one leader job must be running."""
        cfg = self.cfg
        T = cfg.session_timeout
        reconnect = min(T, 1.0) + 1.4 * cfg.retry_max_delay + T / cfg.servers + 0.2
        backoff = 0.0
        if cfg.on_exit is OnExit.RESTART and self.jobs_crashed:
            backoff = min(cfg.restart_delay * 2 ** min(self.jobs_crashed, 16), max(MAX_RESTART_DELAY, cfg.restart_delay))
        return 2 * T + cfg.tick_time + cfg.stop_timeout + LEAVE_GRACE + reconnect + cfg.restart_sec + backoff + 1.0

    # ------------------------------------------------------------------ trace

    def record(self, host: Host | None, kind: str, text: str) -> None:
        self.timeline.record(self.now, host.name if host is not None else "world", kind, text, None)

    def stats_count(self, key: str) -> None:
        self.stats[key] = self.stats.get(key, 0) + 1


__all__ = ["ELECTION", "INF", "World", "WorldConfig", "Violation", "replace"]
