"""kazoo's client as far as the core can tell: KazooClient and its ConnectionHandler.

A ping goes out read_timeout/2 minus 10..400 ms jitter after the last *send*; an
unanswered ping at the next deadline drops the connection, so requests postpone
detection (``chatty_until`` models a process whose other requests keep postponing it).
On a drop: pending and queued requests fail with ConnectionLoss, SUSPENDED, every watch
fires once with type NONE and is forgotten. Reconnects with backoff; same session if the
server still has it, else LOST and a new session. Requests made while connecting are
queued. Like production's connection.PacketLog it notes when each packet was written and
when its answer was read; a synced answer carries the lease anchor
timing.relayed_anchor derives from that. ``Client.execute`` is the daemon's ZooKeeper
shell (zookeeper.ZooKeeperShell in production) as the shared loop sees it.
"""

from __future__ import annotations

import bisect
import itertools
from collections import deque
from collections.abc import Callable
from operator import itemgetter
from typing import TYPE_CHECKING, Any

from ..core import actions as act
from ..core import events as ev
from ..core import timing
from .config import Bug
from .server import Conn, Request

if TYPE_CHECKING:
    from .daemon import Daemon
    from .world import Host, World

#: kazoo: connection_retry={"delay": 0.1, "backoff": 2, "max_delay": ...}
RETRY_DELAY = 0.1
#: The session timeout at which kazoo's ping jitter (10..400 ms) is taken as it is.
PING_JITTER_AT = 10.0
#: Answered-packet records a client keeps before collapsing the ones no sync can still
#: tell apart (``Client._collapse``).
ANSWERED_KEEP = 8


class _Req:
    __slots__ = ("action", "sent_at", "written")

    def __init__(self, action: Request, sent_at: float) -> None:
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
        self.anchor_bug = next(
            (b for b in (Bug.WRITTEN_ANCHOR, Bug.SYNC_SENT_ANCHOR, Bug.ETCD_ANSWER_ANCHOR) if b in bugs), None)
        #: An etcd shell (WorldConfig.backend): a keep-alive every T/3 whatever else goes
        #: out, and the heartbeat anchored at its keep-alive's send time.
        self.etcd = world.cfg.on_etcd
        #: When the last keep-alive (a ping) went out: the etcd shell's T/3 period counts from it.
        self.last_keepalive = 0.0
        #: Bug.WRITTEN_ANCHOR only: every write as (started, finished), like the old log.
        self.writes: list[tuple[float, float]] = []
        self.frozen = False
        self.deferred: list[tuple[Callable[..., None], tuple[Any, ...]]] = []
        #: Paths of nodes this client was asked to delete (giving those up is no loss).
        self.deleted: set[str] = set()

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
            match kind:
                case "connected":
                    self._on_connected(conn, pkt[1], pkt[2])
                case "expired":
                    self._on_expired(conn)
                case _:
                    conn.client_open = False
                    self._attempt_failed()
            return
        if conn is not self.conn:
            return
        match kind:
            case "reply":
                self._on_reply(pkt[1], pkt[2])
            case "pong":
                self.ping_out = False
                self._answered(self.ping_written)
            case "bgreply":
                self._answered(self.bg_written.popleft())
            case "watch":
                path = pkt[1]
                if path in self.watchers:
                    del self.watchers[path]
                    self.daemon.post("watch", ev.WatchFired(path, pkt[2]))
            case "rst":
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
        # The shell's session listener (zookeeper.py), on kazoo's thread: the guardian
        # learns the session it would release at once, whatever the loop is doing.
        self.daemon.guardian.session(sid)
        self.timeout = timeout
        self.read_timeout = timeout * 2 / 3
        self.retry_delay = RETRY_DELAY
        self.last_send = self.last_keepalive = self.world.now
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
        self.daemon.guardian.session(None)
        self.watchers.clear()
        self.retry_delay = RETRY_DELAY
        self.world.at(self.world.now, self._attempt)

    def _on_reply(self, xid: int, result: tuple[str, Any]) -> None:
        req = self.pending.pop(xid, None)
        if req is None:
            return
        a = req.action
        rid = a.request_id
        status, value = result
        event: ev.Event
        if status == "err":
            event = ev.RequestFailed(rid, req.sent_at, value, value.value)
        else:
            match a:
                case act.CheckNode(path=path, watch=watch, sync=sync):
                    if watch:
                        self.watchers[path] = None
                    if sync:
                        # One linearizable server: a sync always goes through "the leader"; what
                        # it proves is the production rule applied to this session's packet record.
                        relayed = self._anchor(req.sent_at)
                        if relayed is not None:
                            self.world.checker.on_anchor(self, relayed)
                        event = ev.NodeChecked(rid, req.sent_at, value, synced=True, relayed_at=relayed)
                    else:
                        event = ev.NodeChecked(rid, req.sent_at, value)
                case act.ListChildren():
                    event = ev.ChildrenListed(rid, req.sent_at, value)
                case act.CreateNode():
                    event = ev.Created(rid, req.sent_at, value)
                case act.ReadNodes():
                    event = ev.NodesRead(rid, req.sent_at, value)
                case act.DeleteNode():
                    event = ev.Deleted(rid, req.sent_at)
                case act.PublishLeadership():
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
                ev.RequestFailed(req.action.request_id, req.sent_at, ev.Failure.CONNECTION, why),
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

    def execute(self, action: act.Action) -> None:
        """The daemon's ZooKeeper shell (loop.ZooKeeper): a request is stamped with the
        host's clock as it is handed to kazoo, as zookeeper.ZooKeeperShell does."""
        match action:
            case act.CloseSession():
                self.close()
            case act.DropConnection():
                self._drop("a heartbeat went unanswered")
            case act.CheckNode() | act.ListChildren() | act.ReadNodes() | act.CreateNode() | act.PublishLeadership() \
                    | act.DeleteNode():
                if isinstance(action, act.DeleteNode):
                    self.deleted.add(action.path)
                self._submit(action, self.host.local(self.world.now))
            case _:
                raise TypeError(f"not a ZooKeeper action: {action!r}")

    def _submit(self, action: Request, sent_at: float) -> None:
        req = _Req(action, sent_at)
        if self.state == "connected":
            self._send(req)
        elif self.state == "connecting":
            self.queue.append(req)
        else:
            self.daemon.post(
                "completion",
                ev.RequestFailed(action.request_id, sent_at, ev.Failure.CONNECTION, "ConnectionClosedError"),
            )

    def _send(self, req: _Req) -> None:
        conn = self.conn
        assert conn is not None, "requests are sent only while connected"
        self.xid += 1
        self.pending[self.xid] = req
        req.written = self._write()
        self.world.send_c2s(conn, ("req", self.xid, req.action))
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
        """relayed_at for a sync queued at ``sync_queued_at`` and answered now. On etcd,
        the heartbeat's keep-alive went out no sooner than it was queued, and the etcd
        leader renewed the lease on receiving it: its send time (zkleader/etcd.py)."""
        tick = self.world.cfg.tick_time
        if self.etcd:
            if self.anchor_bug is Bug.ETCD_ANSWER_ANCHOR:
                return self.host.local(self.world.now)
            return sync_queued_at
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
        since = self.last_keepalive if self.etcd else self.last_send
        self._deadline = since + self.read_timeout / 2.0 - jitter
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
        if self.last_send != self._armed_send and not self.etcd:
            self._arm()  # a request went out: kazoo recomputes the deadline from it
            return
        if now < self.chatty_until and not self.etcd:
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
        if not background:
            self.last_keepalive = world.now
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
        """CloseSession: kazoo stop() + close(); the server deletes our ephemerals. The
        guardian is told "nosession" first: nothing is left for it to release."""
        self.daemon.guardian.session(None)
        if self.state == "connected" and self.conn is not None:
            self.world.send_c2s(self.conn, ("close", "closed"))
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
