"""The ZooKeeper ensemble as one linearizable server, and the connections to it.

``Server``: sessions with negotiated timeouts, expired only when no packet arrived for
the timeout, rounded *up* to the next tick bucket (ZooKeeper's ExpiryQueue). Ephemeral
sequential znodes (sequence = parent cversion, 32-bit, wraps), czxid from one global
zxid counter, one-shot exists watches held per connection. A closeSession, from the
session's daemon or from the release its guardian runs after the daemon died (which
attaches to the session first, a connect that revalidates it), ends it at once and
deletes its nodes. A restart resets every connection and keeps sessions. The ZooKeeper
leader touches a session only when the server (a follower) relays what it heard, at its
next ping from the leader (every tickTime/2); a server that loses the leader right after
forwarding a sync loses what it had not relayed yet and closes its connections.

``Conn`` and the per-host link: two FIFO directions, each can be cut. Packets sent into
a cut direction wait in the sender's kernel and go out when it heals (TCP), unless the
other end has closed the connection by then (World.send_c2s, World.send_s2c).
"""

from __future__ import annotations

import itertools
from typing import TYPE_CHECKING, Any

from ..core import actions as act
from ..core import events as ev
from .config import ELECTION

if TYPE_CHECKING:
    from .client import Client
    from .guardian import Release
    from .world import Host, World

#: What a client sends as a request: the core's ZooKeeper actions that get an answer.
Request = act.CreateNode | act.ListChildren | act.CheckNode | act.ReadNodes | act.PublishLeadership | act.DeleteNode


def _wrap32(value: int) -> int:
    return ((value + 2**31) % 2**32) - 2**31


class Znode:
    __slots__ = ("path", "czxid", "owner", "cversion", "children", "data")

    def __init__(self, path: str, czxid: int, owner: int, cversion: int = 0, data: bytes = b"") -> None:
        self.path = path
        self.czxid = czxid
        self.owner = owner
        self.cversion = cversion
        self.children: dict[str, None] = {}
        self.data = data


class Session:
    __slots__ = ("id", "timeout", "last_heard", "relay_due", "alive", "conn", "ephemerals", "check_at", "host", "ended",
                 "control_read_at")

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
        #: When the server last answered this session's read of the freeze and handover
        #: markers (core/preference.py): the checker's "frozen" invariant.
        self.control_read_at: float | None = None


class Conn:
    """One TCP connection between a client and the server."""

    __slots__ = ("id", "host", "client", "session_id", "server_open", "client_open", "c2s_last", "s2c_last",
                 "watched", "rst_sent", "connect_sent")
    _ids = itertools.count(1)

    def __init__(self, host: Host, client: Client | Release) -> None:
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
        #: An etcd cluster (WorldConfig.backend): keep-alives renew at once, nothing else does.
        self.etcd = cfg.on_etcd
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
        """ZooKeeper's roundToNextInterval: strictly after t, never early. etcd: t
        itself (its lessor's sweep comes later still; the model takes the harshest)."""
        if self.etcd:
            return t
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
        its next ping of the follower (tickTime/2 apart), not now. On etcd a plain
        request renews nothing (keep_alive does)."""
        if self.etcd:
            return
        now = self.world.now
        due = s.relay_due
        if due is not None:
            if due > now:
                return  # the pending relay carries this packet too
            if due > s.last_heard:  # heard(), inline: this runs for every packet
                s.last_heard = due
        period = self.relay_period
        s.relay_due = self.relay_phase + -((self.relay_phase - now) // period) * period

    def keep_alive(self, s: Session) -> None:
        """On etcd, a keep-alive (the shell's every T/3, and the one leading each
        heartbeat): the etcd leader renews the lease now. On ZooKeeper ``touch`` did it."""
        if self.etcd and self.world.now > s.last_heard:
            s.last_heard = self.world.now

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
        self.world.stats_count(f"sessions_{cause.split()[0]}")  # expired, closed, released
        if cause == "expired":
            self.world.checker.on_expired(s)
        else:
            self.world.checker.on_closed(s)
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
        s = self._session_of(conn)
        self.touch(s)
        match kind:
            case "req":
                self._request(conn, s, pkt[1], pkt[2])
            case "ping":
                self.keep_alive(s)
                self.world.send_s2c(conn, ("pong",))
            case "bg":
                self.world.send_s2c(conn, ("bgreply",))
            case "close":
                # closeSession, from the daemon or from its guardian's release (pkt[1]
                # says which, for the trace); kazoo waits for the answer.
                self.world.send_s2c(conn, ("closed",))
                self.close_conn(conn, rst=False)
                self.end_session(s, pkt[1])
            case "fin":
                self.close_conn(conn, rst=False)

    def _session_of(self, conn: Conn) -> Session:
        """The session of an open connection (it has one once its connect was answered)."""
        sid = conn.session_id
        assert sid is not None, "an open connection has a session"
        return self.sessions[sid]

    def ping_fast(self, conn: Conn) -> None:
        """A ping whose round trip completes at once (healthy link): the follower heard it."""
        s = self._session_of(conn)
        self.touch(s)
        self.keep_alive(s)

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

    def _request(self, conn: Conn, s: Session, xid: int, a: Request) -> None:
        result: tuple[str, Any]
        match a:
            case act.CheckNode(path=path, watch=watch, sync=sync):
                if sync:
                    self.keep_alive(s)  # etcd: the heartbeat's keep-alive, then its read
                node = self.nodes.get(path)
                if watch:
                    self.watches.setdefault(path, {})[conn] = None
                    conn.watched[path] = None
                result = ("ok", None if node is None else ev.NodeStat(node.czxid, node.owner))
            case act.ListChildren(path=path):
                node = self.nodes.get(path)
                result = ("err", ev.Failure.NO_NODE) if node is None else ("ok", tuple(node.children))
            case act.CreateNode(path_prefix=prefix, sequential=True):
                result = self._create(s, prefix)
            case act.CreateNode(path_prefix=path, data=data, ephemeral=ephemeral):
                # A marker (a follower's poke of the leader, core/preference.py).
                if path in self.nodes:
                    result = ("err", ev.Failure.NODE_EXISTS)
                else:
                    self.create_persistent(path, f"by 0x{s.id:x}", data, owner=s if ephemeral else None)
                    result = ("ok", path)
            case act.ReadNodes(paths=paths):
                s.control_read_at = self.world.now
                result = ("ok", tuple(None if (node := self.nodes.get(p)) is None else node.data for p in paths))
            case act.PublishLeadership(path=path):
                if path not in self.nodes:
                    result = ("err", ev.Failure.NO_NODE)
                else:
                    self.zxid += 1
                    self._fire(path, ev.WatchKind.CHANGED)
                    result = ("ok", None)
            case act.DeleteNode(path=path):
                node = self.nodes.get(path)
                if node is None:
                    result = ("err", ev.Failure.NO_NODE)
                elif node.children:
                    result = ("err", ev.Failure.SERVER_ERROR)
                else:
                    self.delete_node(path, f"deleted by its owner 0x{s.id:x}")
                    result = ("ok", None)
            case _:
                raise TypeError(f"not a request: {a!r}")
        host = conn.host
        lose = host.lose_next
        if lose is not None and (lose == "any" or isinstance(a, act.CreateNode)):
            # Applied, then the connection dies before the reply leaves: a lost reply.
            host.lose_next = None
            self.world.record(host, "!!", f"reply to {type(a).__name__} lost (connection reset after apply)")
            self.close_conn(conn, rst=True)
            return
        self.world.send_s2c(conn, ("reply", xid, result))
        if host.lose_relay_next is not None and isinstance(a, act.CheckNode) and a.sync:
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

    def create_persistent(self, path: str, cause: str, data: bytes = b"", owner: Session | None = None) -> None:
        """A node outside the election (a drain marker, core/drain.py; a freeze,
        handover or preempt marker, core/preference.py), ephemeral when it has an
        owner: like ZooKeeper, its creation fires the exists watches left on its path."""
        if path in self.nodes:
            return
        parent_path, name = path.rsplit("/", 1)
        self._ensure(parent_path)
        parent = self.nodes[parent_path]
        self.zxid += 1
        self.nodes[path] = Znode(path, self.zxid, owner.id if owner is not None else 0, data=data)
        if owner is not None:
            owner.ephemerals[path] = None
        parent.children[name] = None
        parent.cversion = _wrap32(parent.cversion + 1)
        self.world.record(None, "zk", f"created {path} ({cause})")
        self._fire(path, ev.WatchKind.CHANGED)

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
