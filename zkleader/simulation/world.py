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
  The ZooKeeper leader touches a session only when the server (a follower) relays
  what it heard, at its next ping from the leader (every tickTime/2); a server that
  loses the leader right after forwarding a sync loses what it had not relayed yet
  and closes its connections.
* ``Conn`` and the per-host link: two FIFO directions, each can be cut. Packets sent
  into a cut direction wait in the sender's kernel and go out when it heals (TCP),
  unless the other end has closed the connection by then.
* ``Client``: kazoo 2.11's connection loop. A ping goes out read_timeout/2 minus
  10..400 ms jitter after the last *send*; an unanswered ping at the next deadline
  drops the connection, so requests postpone detection (``chatty_until`` models a
  process whose other requests keep postponing it). On a drop: pending and queued
  requests fail with ConnectionLoss, SUSPENDED, every watch fires once with type NONE
  and is forgotten. Reconnects with backoff; same session if the server still has it,
  else LOST and a new session. Requests made while connecting are queued. Like
  production's connection.PacketLog it notes when each packet was written and when its
  answer was read; a synced answer carries the lease anchor timing.relayed_anchor
  derives from that.
* ``Daemon``: one incarnation of the daemon's loop around the production core. Events
  reach it through kazoo's separate threads (state, completion, watch) and the job
  watcher, each FIFO but not ordered against each other. It can pause (SIGSTOP: kazoo
  freezes too; or only the loop blocks), be killed (-9) or exit; systemd restarts it.
  Its loop waits at most LOOP_MAX_SLEEP at a time, on a clock that stops in a suspend.
* ``Job``: the leader-only job under its guardian. Alive from StartJob until its last
  process is dead; the guardian kills it within a small delay when the daemon dies.
  The guardian can die first: the job's main process dies with it (PDEATHSIG), any
  workers it forked live on as orphans of the daemon (a subreaper), which sweeps them
  before it reports the job gone (zkleader/children.py).
* ``Host``: a clock (CLOCK_BOOTTIME, drifting), the link, the log stream (it can stall;
  the daemon only queues log lines, zkleader/logs.py) and a suspend: the daemon, kazoo,
  the guardian and the job freeze while the server's clock runs on.

``Bug`` names deliberate bugs of these shells, switched on per world
(``WorldConfig.bugs``) to show that the invariants catch them; the core's own
deliberate bugs are test-only subclasses of ``Leadership`` (tests/test_simulation.py).
"""

from __future__ import annotations

import bisect
import enum
import heapq
import itertools
import random
import signal
from collections import deque
from dataclasses import dataclass, field, replace
from operator import itemgetter
from typing import Any, Callable

from ..core import actions as act
from ..core import events as ev
from ..core import timing
from ..core.settings import OnExit
from ..core.jobcontrol import MAX_RESTART_DELAY
from ..core.leadership import Leadership
from ..core.leave import LEAVE_GRACE
from ..core.settings import Identity, Settings
from .invariants import Checker, Violation
from .timeline import Timeline

INF = float("inf")
ELECTION = "/zkleader/sim"
#: kazoo: connection_retry={"delay": 0.1, "backoff": 2, "max_delay": ...}
RETRY_DELAY = 0.1
#: The session timeout at which kazoo's ping jitter (10..400 ms) is taken as it is.
PING_JITTER_AT = 10.0

#: zkleader.daemon.MAX_SLEEP: the loop's longest wait. The wait runs on CLOCK_MONOTONIC,
#: which stops during a system suspend, so after a resume the loop first sleeps out what
#: was left of its current wait, at most this long.
LOOP_MAX_SLEEP = 0.5
#: Answered-packet records a client keeps before collapsing the ones no sync can still
#: tell apart (``Client._collapse``).
ANSWERED_KEEP = 8

CoreFactory = Callable[[Settings, Identity, Callable[[], str]], Leadership]


class Bug(enum.Enum):
    """Deliberate bugs in the model's shells, each reproducing a rule or a shell that
    production used to have; the simulation must catch every one of them."""

    #: The lease anchor counts every packet whose *write* finished tickTime/2 before the
    #: sync (commit e94b8c8): a stalled stream delivers such writes together with the sync.
    WRITTEN_ANCHOR = "written-anchor"
    #: The first rule: t_ok is the sync's own send time and the ZooKeeper leader's last
    #: touch is assumed at most T/6 + tickTime/2 older (deadlines shortened by that).
    SYNC_SENT_ANCHOR = "sync-sent-anchor"
    #: The job runner reports the job gone when its guardian dies, while the workers the
    #: job forked live on (the daemon was no subreaper and swept nothing).
    EARLY_EXIT_REPORT = "early-exit-report"
    #: The loop writes its log lines itself and blocks while the stream is stalled.
    BLOCKING_LOGS = "blocking-logs"
    #: The daemon's clock stops during a system suspend (CLOCK_MONOTONIC, not BOOTTIME).
    STOPPING_CLOCK = "stopping-clock"


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
    #: The share of jobs that ignore the stop signal (only SIGKILL ends them); of the
    #: others, 7% outlast stop_timeout.
    ignore_stop: float = 0.03
    #: Deliberate bugs switched on in the model's shells (tests only).
    bugs: frozenset[Bug] = field(default_factory=frozenset)

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
        due = s.relay_due
        if due is not None:
            if due > now:
                return  # the pending relay carries this packet too
            if due > s.last_heard:  # heard(), inline: this runs for every packet
                s.last_heard = due
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

    def _follower_fails(self, s: Session, cut: float) -> None:
        """The server the host talks to loses the ZooKeeper leader right after forwarding
        (and answering) a sync of the session, taking the host's link with it (one rack
        behind one switch): the touches it heard since its last relay, the sync's among
        them, never reach the leader; it closes its client connections, as a server that
        leaves the quorum does (a server that rejoins starts with no touches and no
        connections), and the host reaches no other server for ``cut``."""
        host = s.host
        host.lose_relay_next = None
        world = self.world
        world.record(host, "!!", f"the server {host.name} talks to loses the ZooKeeper leader right after "
                                 f"forwarding its sync; {host.name} is cut off for {cut:.3f}s")
        self.lose_relay(s)
        world.partition(host)
        world.at(world.now + cut, world.heal, host)
        if s.conn is not None and s.conn.server_open:
            self.close_conn(s.conn, rst=True)

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
            self.world.checker.on_expired(s)
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
        if host.lose_relay_next is not None and t is act.CheckNode and a.sync:  # type: ignore[union-attr]
            self._follower_fails(s, host.lose_relay_next)

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
    __slots__ = ("action", "sent_at", "written")

    def __init__(self, action: act.Action, sent_at: float) -> None:
        self.action = action
        self.sent_at = sent_at
        #: When kazoo wrote it (host clock); 0.0 while it waits for a connection.
        self.written = 0.0


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
        #: (written, answer read) on the host's clock for every answered packet of the
        #: session in answer order, kazoo's pings and other callers' requests included, as
        #: production's connection.PacketLog records them; old entries are collapsed.
        self.answered: list[tuple[float, float]] = []
        #: When the session's latest answered connect request was written (host clock).
        self.confirmed_at: float | None = None
        #: When the outstanding ping, and each unanswered request of another caller, was written.
        self.ping_written = 0.0
        self.bg_written: deque[float] = deque()
        bugs = world.cfg.bugs
        #: The rule a synced answer's relayed_at comes from: None is production's.
        self.anchor_bug = next((b for b in (Bug.WRITTEN_ANCHOR, Bug.SYNC_SENT_ANCHOR) if b in bugs), None)
        #: Bug.WRITTEN_ANCHOR only: every write as (started, finished), like the old log.
        self.writes: list[tuple[float, float]] = []
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
            self._answered(self.ping_written)
        elif kind == "bgreply":
            self._answered(self.bg_written.popleft())
        elif kind == "watch":
            path = pkt[1]
            if path in self.watchers:
                del self.watchers[path]
                self.daemon.post("watch", ev.WatchFired(path, pkt[2]))
        elif kind == "rst":
            self._drop("connection reset")

    def _on_connected(self, conn: Conn, sid: int, timeout: float) -> None:
        if sid != self.session_id:
            # A new session: the old one's packets never touched it.
            self.answered = []
            self.writes = [w for w in self.writes if w[0] >= conn.connect_sent]
        self.confirmed_at = conn.connect_sent
        self.bg_written.clear()
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
                relayed = self._anchor(req.sent_at)
                if relayed is not None:
                    self.world.checker.on_anchor(self, relayed)
                event = ev.NodeChecked(rid, req.sent_at, value, synced=True, relayed_at=relayed)
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
        # After the anchor: its own answer never qualifies, and a collapse now would no
        # longer see the request pending.
        self._answered(req.written)
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
        req.written = self._write()
        self.world.send_c2s(self.conn, ("req", self.xid, req.action))  # type: ignore[arg-type]
        self.last_send = self.world.now

    def _write(self) -> float:
        """The host-clock time of one packet write (instant: the kernel takes it; if the
        link is cut it waits in the send buffer, which only its answer can tell)."""
        t = self.host.local(self.world.now)
        if self.anchor_bug is Bug.WRITTEN_ANCHOR:
            self.writes.append((t, t))
            if len(self.writes) > ANSWERED_KEEP:
                self._collapse(self.writes)
        return t

    def _answered(self, written: float) -> None:
        """The answer to a packet written at ``written`` was read now."""
        answered = self.answered
        answered.append((written, self.host.local(self.world.now)))
        if len(answered) > ANSWERED_KEEP:
            self._collapse(answered)

    def _collapse(self, records: list[tuple[float, float]]) -> None:
        """Keeps a record short without changing any anchor a sync can still ask for: no
        sync is queued before the oldest pending request (or now), so the records whose
        second time is at or before that cut-off all qualify together, or none of them
        does, and one entry (their latest first time) stands for them all."""
        queued = min((r.sent_at for r in itertools.chain(self.pending.values(), self.queue)),
                     default=self.host.local(self.world.now))
        k = bisect.bisect_right(records, queued - self.world.cfg.tick_time / 2, key=itemgetter(1))
        if k > 1:
            records[:k] = [(max(first for first, _ in records[:k]), records[k - 1][1])]

    def _anchor(self, sync_queued_at: float) -> float | None:
        """relayed_at for a sync queued at ``sync_queued_at`` and answered now."""
        tick = self.world.cfg.tick_time
        match self.anchor_bug:
            case Bug.WRITTEN_ANCHOR:
                return timing.relayed_anchor(self.writes, sync_queued_at, tick, self.confirmed_at)
            case Bug.SYNC_SENT_ANCHOR:
                session_timeout = min(self.world.cfg.session_timeout, self.timeout)
                return sync_queued_at - (session_timeout / timing.HEARTBEATS_PER_SESSION + tick / 2)
            case _:
                return timing.relayed_anchor(self.answered, sync_queued_at, tick, self.confirmed_at)

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
        written = self._write()
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
            self._answered(written)
        elif background:
            self.bg_written.append(written)
            world.send_c2s(conn, ("bg",))  # its answer goes to its own caller, not to the core
        else:
            self.ping_out = True
            self.ping_written = written
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
        #: Why the loop does not run: "process" (SIGSTOP, kazoo frozen too), "loop" (the
        #: loop alone is stuck), "logs" (the loop blocks in a log write, Bug.BLOCKING_LOGS)
        #: or "suspend" (the whole host sleeps).
        self.paused: str | None = None
        self.tick_gen = 0
        #: The core deadline the pending wake-up (generation tick_gen) is for, if any.
        self.tick_deadline: float | None = None
        self.exit_code: int | None = None
        self.pause_serial = 0
        #: World time of the loop's last pass and of its next timed wake-up (INF: none).
        self.last_pass = 0.0
        self.wake_at = INF
        #: What is left of the loop's wait when the host wakes from a suspend.
        self.wait_left = 0.0
        #: The rest of a step whose log write blocked: (actions, the step's local time).
        self.blocked_step: tuple[list[act.Action], float] | None = None
        self.blocking_logs = Bug.BLOCKING_LOGS in world.cfg.bugs
        #: Paths of nodes this incarnation asked to delete (giving those up is no loss).
        self.deleted: set[str] = set()

    def start(self) -> None:
        self.world.record(self.host, "!!", f"daemon {self.label} starts (candidacy {self.core.snapshot().candidacy_id[:8]}..)")
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
            if not self.alive or self.paused is not None:  # dead, or blocked in a log write
                return
        if handled:
            self._schedule_tick()

    def _handle(self, event: ev.Event) -> None:
        world = self.world
        host = self.host
        local = host.local(world.now)
        self.last_pass = world.now
        world.trace((world.now, self.label, "<-", event, local))
        stood_on = self.core.snapshot().node
        try:
            out = self.core.handle(event, local)
        except Exception as exc:  # a crash of the core is a bug like any other
            world.checker.violate("core_exception", f"{self.label}: core raised {exc!r} handling {event!r}")
            raise
        self._run(out, local)
        if stood_on is not None and self.alive and self.core.snapshot().node != stood_on:
            self._check_node_really_gone(stood_on)
        if host.thawing:
            host.thawing = False
            world.checker.on_first_pass(self)

    def _run(self, actions: list[act.Action], local: float) -> None:
        """Executes one step's actions in order, until the daemon dies or (only with
        Bug.BLOCKING_LOGS) a log write blocks the loop, which then finishes the step
        once the stream drains."""
        world = self.world
        trace = world.trace
        blocked: list[act.Action] | None = None
        if self.blocking_logs and self.host.log_stall_until > world.now:
            first_log = next((i for i, a in enumerate(actions) if type(a) is act.Log), None)
            if first_log is not None:
                actions, blocked = actions[:first_log], actions[first_log:]
        for a in actions:
            trace((world.now, self.label, "->", a, local))
            self._execute(a, local)
            if not self.alive:
                return
        if blocked is not None:
            world.block_on_logs(self, blocked, local)

    def _check_node_really_gone(self, name: str) -> None:
        """Giving up a node that still exists in the daemon's live session, other than by
        deleting it, throws away a healthy leadership (and leaves a ghost at the head of
        the queue until noticed)."""
        view = self.core.snapshot()
        path = f"{view.election_path}/{name}"
        node = self.world.server.nodes.get(path)
        if node is not None and node.owner == view.session_id and path not in self.deleted:
            self.world.checker.violate("false_loss", f"{self.label} gave up {name}, which still exists in its live session")

    def _execute(self, a: act.Action, local: float) -> None:
        t = type(a)
        if t is act.Log or t is act.AnnounceStopping:
            return  # no log reader and no service manager in the model
        if t is act.DeleteNode:
            self.deleted.add(a.path)  # type: ignore[union-attr]
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
        if deadline is not None and deadline == self.tick_deadline:
            return  # the pending wake-up is for this very deadline
        self.tick_gen += 1
        self.tick_deadline = deadline
        if deadline is None:
            self.wake_at = INF
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
        self.wake_at = t
        world.at(t, self._tick, self.tick_gen)

    def _tick(self, gen: int) -> None:
        if gen != self.tick_gen:
            return
        self.tick_deadline = None
        if not self.alive or self.paused is not None:
            return
        self._handle(ev.Tick())
        if self.alive and self.paused is None:
            self._schedule_tick()

    # ------------------------------------------------------------ lifecycle

    def pause(self, kind: str) -> None:
        self.paused = kind
        if kind == "process":
            self.client.freeze()

    def resume(self) -> None:
        """The loop runs again after a pause or a blocked log write: the rest of a
        blocked step first, then the backlog, each event stamped with the current time."""
        kind = self.paused
        if kind is None:
            return
        self.paused = None
        if self.blocked_step is not None:
            (actions, local), self.blocked_step = self.blocked_step, None
            self._run(actions, local)
        inbox = self.inbox
        now = self.world.now
        while inbox and inbox[0][0] <= now and self.alive and self.paused is None:
            self._handle(heapq.heappop(inbox)[2])
        if self.alive and self.paused is None:
            self._handle(ev.Tick())
        if self.alive and self.paused is None:
            self._schedule_tick()
            for ready, _, _ in inbox:
                self.world.at(ready, self._wake)
        if kind == "process":
            self.client.unfreeze()

    def suspend(self) -> None:
        """The host suspends: the loop and kazoo freeze mid-wait. The loop's wait runs on
        CLOCK_MONOTONIC and lasts at most LOOP_MAX_SLEEP; what is left of it when the host
        wakes is what is left of it now (the clock stops)."""
        now = self.world.now
        self.paused = "suspend"
        self.pause_serial += 1
        self.client.freeze()
        self.wait_left = max(0.0, min(self.wake_at - now, LOOP_MAX_SLEEP - (now - self.last_pass) % LOOP_MAX_SLEEP))

    def wake(self) -> None:
        """The host resumed: kazoo reads what arrived meanwhile, and the loop's first pass
        comes with the first event or when its wait runs out."""
        world = self.world
        now = world.now
        self.paused = None
        self.tick_gen += 1
        self.tick_deadline = None
        self.wake_at = now + self.wait_left
        world.at(self.wake_at, self._tick, self.tick_gen)
        for ready, _, _ in self.inbox:
            world.at(max(ready, now), self._wake)
        self.client.unfreeze()

    def die(self) -> None:
        self.alive = False
        self.paused = None
        self.blocked_step = None
        self.host.thawing = False
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
        #: The server it talks to loses the ZooKeeper leader right after forwarding its
        #: next sync, and the host is cut off for this long (None: not armed).
        self.lose_relay_next: float | None = None
        self.fail_next_start = False
        self.restart_pending = False
        #: The daemon's log stream takes nothing until then.
        self.log_stall_until = 0.0
        #: When the current suspend began (None: awake), and what the host does the moment
        #: it wakes (deaths of job processes that were due while everything was frozen).
        self.suspended_at: float | None = None
        self.on_wake: list[tuple[Callable[..., None], tuple[Any, ...]]] = []
        #: Woken, and the daemon's loop has not made its first pass since.
        self.thawing = False
        #: Suspended time the daemon's clock did not count (Bug.STOPPING_CLOCK only).
        self.stopped = 0.0

    def local(self, t: float) -> float:
        """The daemon's clock (CLOCK_BOOTTIME: it counts a suspend, unless Bug.STOPPING_CLOCK)."""
        return self.offset + (t - self.stopped) * self.rate

    def world_time(self, local: float) -> float:
        return (local - self.offset) / self.rate + self.stopped

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
                 "returncode", "signalled", "started_post_at", "excused_until", "excuses", "sigkilled",
                 "guardian_dead", "exit_error", "reported")
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
        #: reason ("paused", "operator", "suspended") -> until when
        self.excuses: dict[str, float] = {}
        #: SIGKILL is on its way (KillJob, the guardian, the sweep of a dead guardian's orphans).
        self.sigkilled = False
        #: Its guardian died first: nobody relays signals to it any more, and the job
        #: runner reports JobExited(None, exit_error) instead of the status.
        self.guardian_dead = False
        self.exit_error: str | None = None
        #: JobExited was posted (Bug.EARLY_EXIT_REPORT posts it before the death).
        self.reported = False

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
        #: Timeline.record without the call: (time, who, kind, what, host-local time).
        self.trace = self.timeline.entries.append
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
        checker = self.checker
        check = checker.after_step
        pop = heapq.heappop
        steps = 0
        try:
            while heap and heap[0][0] <= t_end:
                t, _, fn, args = pop(heap)
                self.now = t
                fn(*args)
                steps += 1
                if checker.dirty:  # after_step has nothing to check otherwise
                    check()
        finally:
            self.steps += steps
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

    def kill9(self, host: Host) -> bool:
        daemon = host.live_daemon
        if daemon is None or host.suspended_at is not None:
            return False
        self.record(host, "!!", f"kill -9 daemon {daemon.label}")
        if daemon.paused is not None:
            self.checker.on_resume(daemon)
        daemon.die()
        self.guardian_kill(daemon)
        self.schedule_restart(host)
        return True

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
        """The daemon's job as far as its guardian can reach it: none once the guardian died."""
        for job in self.checker.alive:
            if job.daemon is daemon and not job.guardian_dead:
                return job
        return None

    def signal_job(self, daemon: Daemon) -> None:
        job = self._job_of(daemon)
        if job is None or job.signalled:
            return
        job.signalled = True
        rng = self.rng
        stop = self.cfg.stop_timeout
        ignores = self.cfg.ignore_stop
        r = rng.random()
        if r < ignores:
            return  # ignores the stop signal: only SIGKILL ends it
        r = (r - ignores) / (1.0 - ignores)
        if r < 0.72:
            delay = rng.uniform(0.0, 0.5) * stop
        elif r < 0.93:
            delay = rng.uniform(0.5, 1.0) * stop
        else:
            delay = rng.uniform(1.0, 1.6) * stop
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
            if job.host is host and not job.guardian_dead:
                self.record(host, "!!", f"{job.describe()} crashes")
                self.jobs_crashed += 1
                self._schedule_death(job, self.now, 1 if self.rng.random() < 0.7 else -signal.SIGSEGV)
                return True
        return False

    def _schedule_death(self, job: Job, t: float, returncode: int) -> None:
        if returncode == -signal.SIGKILL:
            job.sigkilled = True  # dead by t at the latest, whatever else was scheduled
        if job.dead_at is not None or (job.death_at is not None and job.death_at <= t):
            return
        job.death_at = t
        self.at(t, self._die, job, returncode, t)

    def _die(self, job: Job, returncode: int, t: float) -> None:
        if job.dead_at is not None or job.death_at != t:
            return
        if job.host.suspended_at is not None:
            # Nothing runs on a sleeping host, a SIGKILL's delivery included.
            job.host.on_wake.append((self._die, (job, returncode, t)))
            return
        job.dead_at = self.now
        job.returncode = returncode
        self.checker.on_death(job)
        self.record(job.host, "job", f"{job.describe()} is dead (status {returncode})")
        if not job.reported:
            error = job.exit_error
            self._report_exit(job, ev.JobExited(returncode) if error is None else ev.JobExited(None, error))

    def _report_exit(self, job: Job, event: ev.JobExited) -> None:
        """The job runner posts JobExited a moment later (never before JobStarted)."""
        job.reported = True
        report = max(self.now + self.rng.uniform(0.0005, 0.01), job.started_post_at + 1e-6)
        self.at(report, self._post_job_event, job.daemon, event)

    def guardian_dies(self, host: Host, orphans: bool) -> bool:
        """The job's guardian is killed (kill -9, the OOM killer, the job killing its
        parent). The job's main process dies with it (PR_SET_PDEATHSIG); ``orphans``:
        workers it forked live on, and the daemon, a subreaper, inherits them: its job
        runner sweeps them (SIGKILL, reap) and only then posts JobExited.
        Bug.EARLY_EXIT_REPORT reports the job gone at once and leaves the orphans to
        finish on their own."""
        job = next((j for j in self.checker.alive if j.host is host and not j.guardian_dead), None)
        if job is None or host.suspended_at is not None:
            return False
        job.guardian_dead = True
        rng = self.rng
        self.record(host, "!!", f"the guardian of {job.describe()} is killed"
                                + (" while the job's workers live" if orphans else ""))
        now = self.now
        if not orphans:
            job.exit_error = "guardian died by signal 9 (SIGKILL) before the job ended; 0 leftover process(es) killed"
            self._schedule_death(job, now, -signal.SIGKILL)
        elif Bug.EARLY_EXIT_REPORT in self.cfg.bugs:
            self._report_exit(job, ev.JobExited(None, "guardian ended unexpectedly (status -9)"))
            self._schedule_death(job, now + rng.uniform(0.5, 3.0) * self.cfg.session_timeout, 0)
        else:
            job.exit_error = "guardian died by signal 9 (SIGKILL) before the job ended; 2 leftover process(es) killed"
            self._schedule_death(job, now + rng.uniform(0.0005, 0.005) + self.kill_delay(), -signal.SIGKILL)
        return True

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
        if not self._arm_watchdog(daemon):
            self.checker.on_pause(daemon)
        return True

    def _arm_watchdog(self, daemon: Daemon) -> bool:
        """The loop just stopped: with a watchdog, systemd kills the unit one interval after
        the loop's last WATCHDOG=1, sent at most interval/2 before it stopped (often just
        before). False without a watchdog."""
        watchdog = self.cfg.watchdog
        if not watchdog:
            return False
        last_ping = self.now - (0.0 if self.rng.random() < 0.5 else self.rng.uniform(0.0, watchdog / 2))
        daemon.pause_serial += 1
        self.at(max(self.now, last_ping + watchdog), self._watchdog_fires, daemon, daemon.pause_serial)
        return True

    def _watchdog_fires(self, daemon: Daemon, serial: int) -> None:
        # systemd sleeps through a suspend like everything else: only a stuck loop counts.
        if not daemon.alive or daemon.paused not in ("process", "loop", "logs") or daemon.pause_serial != serial:
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
        """The end of a pause fault (SIGCONT, or the loop unstuck)."""
        daemon = host.live_daemon
        if daemon is None or daemon.paused not in ("process", "loop"):
            return
        self.record(host, "!!", f"daemon {daemon.label} resumes")
        self.checker.on_resume(daemon)
        daemon.resume()

    def stall_logs(self, host: Host, until: float) -> None:
        """The daemon's log stream takes nothing until ``until`` (a blocking container log
        driver, a full pipe to a log shipper, a terminal paused with Ctrl-S). Production
        queues log lines off the loop and drops them when the queue is full, so only
        Bug.BLOCKING_LOGS lets this reach the loop (``block_on_logs``)."""
        host.log_stall_until = max(host.log_stall_until, until)

    def block_on_logs(self, daemon: Daemon, rest: list[act.Action], local: float) -> None:
        """Bug.BLOCKING_LOGS: the loop's log write blocks until the stream drains; the rest
        of the step (``rest``, the blocked line first) waits with it. kazoo runs on."""
        self.record(daemon.host, "!!", f"{daemon.label}'s loop blocks writing a log line")
        daemon.blocked_step = (rest, local)
        daemon.pause("logs")
        self._arm_watchdog(daemon)
        self.at(daemon.host.log_stall_until, self._logs_drained, daemon)

    def _logs_drained(self, daemon: Daemon) -> None:
        if not daemon.alive or daemon.paused != "logs":
            return
        until = daemon.host.log_stall_until
        if until > self.now:  # stalled again meanwhile
            self.at(until, self._logs_drained, daemon)
            return
        self.record(daemon.host, "!!", f"{daemon.label}'s log write completes")
        daemon.resume()

    def suspend(self, host: Host) -> bool:
        """The whole host suspends (a laptop lid, a VM suspended by its hypervisor): the
        daemon, kazoo, the guardian and the job freeze; the ZooKeeper servers do not, and
        expire the session T after they last heard of it. The overlap while it sleeps is
        the documented limit (only fencing tokens cover a frozen host): the invariants
        excuse it from the session's expiry to the loop's first pass after the wake-up,
        which must kill the job at once (the lease clock, CLOCK_BOOTTIME, counted the sleep)."""
        daemon = host.live_daemon
        if self.quiet or daemon is None or daemon.paused is not None or host.suspended_at is not None:
            return False
        host.suspended_at = self.now
        daemon.suspend()
        return True

    def wake(self, host: Host) -> None:
        if host.suspended_at is None:
            return
        slept = self.now - host.suspended_at
        host.suspended_at = None
        if Bug.STOPPING_CLOCK in self.cfg.bugs:
            host.stopped += slept
        self.record(host, "!!", f"{host.name} wakes after {slept:.3f}s asleep")
        thawed, host.on_wake = host.on_wake, []
        for fn, args in thawed:
            fn(*args)
        daemon = host.live_daemon
        if daemon is not None and daemon.paused == "suspend":
            host.thawing = True
            daemon.wake()

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
            host.lose_relay_next = None
            host.fail_next_start = False
            host.slow_until = 0.0
            host.log_stall_until = 0.0
            self.heal(host)
            self.wake(host)
            daemon = host.live_daemon
            if daemon is not None:
                daemon.client.chatty_until = 0.0
                if daemon.paused == "logs":
                    daemon.resume()
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


__all__ = ["ELECTION", "INF", "Bug", "Violation", "World", "WorldConfig", "replace"]
