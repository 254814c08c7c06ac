"""A TCP proxy between ZooKeeper clients and servers that tests can break.

One ``FaultProxy`` listens on one 127.0.0.1 port per upstream server, so a
3-server connection string becomes 3 proxy ports (``proxy.hosts``) and a test
can tell (``active_upstreams()``) and break (``servers=`` arguments) the
server a client is connected to.  A single background thread runs a selector
loop; control calls are executed inside that loop and return once in effect.

Faults:

``partition(servers=None)``
    Silent partition: stop reading and writing every proxied socket and stop
    accepting.  Nothing is closed or reset: bytes stay in the kernel buffers
    exactly like packets that are not delivered; new connections complete the
    TCP handshake in the kernel backlog but are never forwarded.
``heal(servers=None)``
    Resume: accept the waiting connections and forward everything held.
``reset(servers=None)``
    Close every current connection abruptly (RST on both sides).
``lose_reply_to(opcodes, servers=None)``
    Arm a one-shot rule: the next client request frame with one of these
    ZooKeeper opcodes is forwarded to the server, then nothing more flows on
    that connection in either direction; once the server's reply to it has
    arrived at the proxy (so the server has applied the request) the reply
    is dropped and the client's connection is reset.  The client gets
    ConnectionLoss; the server did the work.  Returns a ``LostReply`` handle.
``flap(period, duration, ...)``
    Partition and heal alternately in a background thread.
``on_reply(opcodes, callback, after=None, servers=None)``
    Arm a one-shot rule: when the proxy forwards to the client the reply to a
    request with one of these opcodes (and, with ``after``, whose previous
    request on that connection had that opcode), it hands the reply to the
    client socket and then calls ``callback()`` at once, on the proxy's
    thread: a fault that must land between two packets (e.g. cutting a
    ZooKeeper follower from its leader right after a sync passed, before the
    follower's next ping reply).  Returns an ``AnsweredReply`` handle.

Frames on the wire (after the first, connect, frame of a connection): 4-byte
big-endian length, then for requests xid:int32, type:int32, for replies
xid:int32, zxid:int64, err:int32.  kazoo 2.11 sends OP_CREATE (1) for
``create()`` (ephemeral/sequence are flags), OP_CREATE2 (15) only with
``include_data=True``, and OP_MULTI (14) for transactions.
"""

from __future__ import annotations

import collections
import errno
import os
import selectors
import socket
import struct
import threading
import time
from typing import Callable, Iterable

__all__ = [
    "FaultProxy",
    "LostReply",
    "AnsweredReply",
    "Flapper",
    "OP_CREATE",
    "OP_CREATE2",
    "OP_CREATE_CONTAINER",
    "OP_CREATE_TTL",
    "CREATE_OPS",
    "OP_NAMES",
]

OP_NOTIFICATION = 0
OP_CREATE = 1
OP_DELETE = 2
OP_EXISTS = 3
OP_GETDATA = 4
OP_SETDATA = 5
OP_GETACL = 6
OP_SETACL = 7
OP_GETCHILDREN = 8
OP_SYNC = 9
OP_PING = 11
OP_GETCHILDREN2 = 12
OP_CHECK = 13
OP_MULTI = 14
OP_CREATE2 = 15
OP_RECONFIG = 16
OP_CREATE_CONTAINER = 19
OP_CREATE_TTL = 21
OP_CLOSE = -11
OP_AUTH = 100
OP_SETWATCHES = 101
CREATE_OPS = frozenset({OP_CREATE, OP_CREATE2, OP_CREATE_CONTAINER, OP_CREATE_TTL})
OP_NAMES = {
    v: k[3:].lower() for k, v in globals().items() if k.startswith("OP_") and isinstance(v, int)
}

_LEN = struct.Struct(">i")
_REQ_HDR = struct.Struct(">iii")  # len, xid, type
_REP_HDR = struct.Struct(">iiqi")  # len, xid, zxid, err
_LINGER_RST = struct.pack("ii", 1, 0)
_RECV = 65536


class _Frames:
    """Streaming frame splitter for one direction of one connection."""

    __slots__ = ("hdr_size", "first", "hdr", "remaining", "frames", "capture", "captured", "cut_pending")

    def __init__(self, hdr_size: int) -> None:
        self.hdr_size = hdr_size
        self.first = True  # connect request / connect response: no xid header
        self.hdr = bytearray()
        self.remaining = 0  # bytes of the current frame still to come after its header
        self.frames = 0
        self.capture = False
        self.captured = bytearray()
        self.cut_pending = False

    def feed(self, data: bytes, on_header: Callable[[bytes, bool], bool]) -> int | None:
        """Walk ``data``.  ``on_header(hdr, first)`` is called once per frame when
        its header is complete; if it returns True, that frame's bytes are
        captured and, once the frame is complete (in this call or a later one),
        the call returns the offset just past its end (the rest of ``data`` is
        not walked).  Otherwise returns None."""
        pos, n = 0, len(data)
        while pos < n:
            if self.remaining:
                take = min(self.remaining, n - pos)
                if self.capture:
                    self.captured += data[pos : pos + take]
                pos += take
                self.remaining -= take
                if self.remaining == 0:
                    self.frames += 1
                    if self.cut_pending:
                        self.cut_pending = self.capture = False
                        return pos
                continue
            want = 4 if self.first else self.hdr_size
            if len(self.hdr) < 4:
                take = min(4 - len(self.hdr), n - pos)
                self.hdr += data[pos : pos + take]
                pos += take
                if len(self.hdr) < 4:
                    continue
            (length,) = _LEN.unpack_from(self.hdr)
            total = 4 + max(length, 0)
            want = min(want, total)
            if len(self.hdr) < want:
                take = min(want - len(self.hdr), n - pos)
                self.hdr += data[pos : pos + take]
                pos += take
                if len(self.hdr) < want:
                    continue
            hdr = bytes(self.hdr)
            first = self.first
            self.hdr.clear()
            self.first = False
            self.remaining = total - len(hdr)
            if on_header(hdr, first):
                self.cut_pending = self.capture = True
                self.captured = bytearray(hdr)
            if self.remaining == 0:
                self.frames += 1
                if self.cut_pending:
                    self.cut_pending = self.capture = False
                    return pos
        return None


class _Rule:
    """What every proxy rule's handle has: the requests it matches (opcodes, on which
    upstreams; None: all), whether it is still armed, and when it fired."""

    def __init__(self, opcodes: frozenset[int], servers: frozenset[int] | None) -> None:
        self.opcodes = opcodes
        self.servers = servers
        self.armed = True
        self.xid: int | None = None
        self.server: int | None = None
        self._done = threading.Event()

    @property
    def fired(self) -> bool:
        return self._done.is_set()

    def wait(self, timeout: float | None = None) -> bool:
        return self._done.wait(timeout)


class LostReply(_Rule):
    """Handle of a ``lose_reply_to`` rule.

    ``wait(timeout)`` -> bool: True once the rule has fired and the client's
    connection was cut.  After that: ``opcode``, ``xid``, ``path`` (for
    create-like requests), ``server`` (upstream index), ``reply_err`` (the
    server's error code for the request, 0 = success; None if the reply did
    not arrive within the proxy's ``lost_reply_wait``), ``reply_zxid``.
    """

    def __init__(self, opcodes: frozenset[int], servers: frozenset[int] | None) -> None:
        super().__init__(opcodes, servers)
        self.opcode: int | None = None
        self.path: str | None = None
        self.reply_err: int | None = None
        self.reply_zxid: int | None = None
        self.forwarded_at: float | None = None
        self.cut_at: float | None = None

    def __repr__(self) -> str:
        return (
            f"<LostReply opcodes={sorted(self.opcodes)} fired={self.fired} op={self.opcode} "
            f"xid={self.xid} path={self.path!r} err={self.reply_err}>"
        )


class AnsweredReply(_Rule):
    """Handle of an ``on_reply`` rule.  ``wait(timeout)`` -> bool: True once the
    callback ran.  After that: ``at`` (time.monotonic() right before the
    callback), ``xid``, ``server`` (upstream index), ``error`` (what the
    callback raised, if anything: the proxy keeps running)."""

    def __init__(self, opcodes: frozenset[int], after: int | None, callback: Callable[[], object],
                 servers: frozenset[int] | None) -> None:
        super().__init__(opcodes, servers)
        self.after = after
        self.callback = callback
        self.at: float | None = None
        self.error: BaseException | None = None

    def matches(self, sent: tuple[int, int | None], server: int) -> bool:
        op, previous = sent
        return (self.armed and op in self.opcodes and (self.after is None or previous == self.after)
                and (self.servers is None or server in self.servers))

    def __repr__(self) -> str:
        return f"<AnsweredReply opcodes={sorted(self.opcodes)} after={self.after} fired={self.fired} xid={self.xid}>"


class _Pair:
    """One proxied connection: client socket <-> upstream socket."""

    __slots__ = (
        "idx",
        "client",
        "upstream",
        "connecting",
        "c2s",
        "s2c",
        "client_eof",
        "upstream_eof",
        "req",
        "rep",
        "doomed",
        "doomed_deadline",
        "closed",
        "opened_at",
        "sent",
        "last_op",
    )

    def __init__(self, idx: int, client: socket.socket, upstream: socket.socket) -> None:
        self.idx = idx
        self.client = client
        self.upstream = upstream
        self.connecting = True
        self.c2s = bytearray()
        self.s2c = bytearray()
        self.client_eof = False
        self.upstream_eof = False
        self.req = _Frames(_REQ_HDR.size)
        self.rep = _Frames(_REP_HDR.size)
        self.doomed: LostReply | None = None
        self.doomed_deadline = 0.0
        self.closed = False
        self.opened_at = time.monotonic()
        # xid -> (opcode, opcode of the request before it) of requests not yet answered
        self.sent: dict[int, tuple[int, int | None]] = {}
        self.last_op: int | None = None


class _Stats:
    def __init__(self) -> None:
        self.accepted = 0
        self.closed = 0
        self.resets = 0
        self.upstream_failures = 0
        self.bytes_c2s = 0
        self.bytes_s2c = 0
        self.requests: collections.Counter[int] = collections.Counter()
        self.lost_replies = 0
        # time.monotonic() of the last byte handed to the server / to the client
        self.last_sent_upstream: float | None = None
        self.last_sent_client: float | None = None

    def as_dict(self) -> dict:
        return {
            "accepted": self.accepted,
            "closed": self.closed,
            "resets": self.resets,
            "upstream_failures": self.upstream_failures,
            "bytes_c2s": self.bytes_c2s,
            "bytes_s2c": self.bytes_s2c,
            "requests": {OP_NAMES.get(k, str(k)): v for k, v in sorted(self.requests.items())},
            "lost_replies": self.lost_replies,
            "last_sent_upstream": self.last_sent_upstream,
            "last_sent_client": self.last_sent_client,
        }


def _parse_upstreams(upstreams) -> list[tuple[str, int]]:
    if hasattr(upstreams, "addresses"):
        return list(upstreams.addresses)
    if hasattr(upstreams, "address"):
        return [upstreams.address]
    if isinstance(upstreams, str):
        upstreams = [h for h in upstreams.split("/")[0].split(",") if h]
    if isinstance(upstreams, tuple) and len(upstreams) == 2 and isinstance(upstreams[1], int):
        upstreams = [upstreams]
    out = []
    for u in upstreams:
        if isinstance(u, str):
            host, _, port = u.rpartition(":")
            out.append((host or "127.0.0.1", int(port)))
        else:
            out.append((str(u[0]), int(u[1])))
    if not out:
        raise ValueError("no upstream servers")
    return out


def _servers_set(servers, n: int) -> frozenset[int]:
    if servers is None:
        return frozenset(range(n))
    if isinstance(servers, int):
        servers = [servers]
    s = frozenset(servers)
    bad = [i for i in s if not 0 <= i < n]
    if bad:
        raise IndexError(f"no upstream server {bad} (have {n})")
    return s


class FaultProxy:
    """Proxy one or several ZooKeeper servers through 127.0.0.1 ports.

    ``upstreams``: a connection string ("h:p,h:p"), a list of "h:p" or (h, p),
    or an object with ``addresses`` (Ensemble) / ``address`` (ZooKeeperServer).
    Upstream i is reached through ``ports[i]``.  Starts at once; ``close()``
    (or the context manager) stops the thread and closes every socket.

    ``max_buffer`` bounds the bytes held per direction per connection (beyond
    it the proxy stops reading, i.e. TCP back-pressure).  ``lost_reply_wait``
    bounds how long a lose_reply_to rule waits for the server's reply.
    """

    def __init__(
        self,
        upstreams,
        *,
        host: str = "127.0.0.1",
        name: str = "faultproxy",
        max_buffer: int = 1 << 20,
        lost_reply_wait: float = 5.0,
    ) -> None:
        self.name = name
        self.upstreams = _parse_upstreams(upstreams)
        self.host = host
        self.max_buffer = max_buffer
        self.lost_reply_wait = lost_reply_wait
        self._n = len(self.upstreams)
        self._sel = selectors.DefaultSelector()
        self._listeners: list[socket.socket] = []
        for _ in self.upstreams:
            ls = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            ls.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            ls.bind((host, 0))
            ls.listen(128)
            ls.setblocking(False)
            self._listeners.append(ls)
        self.ports = [ls.getsockname()[1] for ls in self._listeners]
        self._wake_r, self._wake_w = socket.socketpair()
        self._wake_r.setblocking(False)
        self._wake_w.setblocking(False)
        self._sel.register(self._wake_r, selectors.EVENT_READ, ("wake", None))
        self._masks: dict[socket.socket, int] = {}
        self._pairs: set[_Pair] = set()
        self._partitioned: set[int] = set()
        self._rules: list[LostReply] = []
        self._reply_rules: list[AnsweredReply] = []
        self._commands: collections.deque = collections.deque()
        self._stats = [_Stats() for _ in self.upstreams]
        self._events: collections.deque = collections.deque(maxlen=500)
        self._stopping = False
        self._error: BaseException | None = None
        self._flappers: list[Flapper] = []
        self._thread = threading.Thread(target=self._run, name=f"{name}-loop", daemon=True)
        self._thread.start()

    # ------------------------------------------------------------------ API

    @property
    def hosts(self) -> str:
        """kazoo connection string through the proxy (one port per upstream)."""
        return ",".join(f"{self.host}:{p}" for p in self.ports)

    @property
    def server_hosts(self) -> list[str]:
        return [f"{self.host}:{p}" for p in self.ports]

    def port_for(self, index: int) -> int:
        return self.ports[index]

    def partition(self, servers=None) -> None:
        """Silently stop forwarding (both directions) and accepting for the given
        upstream indices (default: all).  Nothing is closed."""
        s = _servers_set(servers, self._n)
        self._call(lambda: self._partitioned.update(s), f"partition {sorted(s)}")

    def heal(self, servers=None) -> None:
        """Resume forwarding (default: all upstreams), delivering what was held."""
        s = _servers_set(servers, self._n)
        self._call(lambda: self._partitioned.difference_update(s), f"heal {sorted(s)}")

    def is_partitioned(self, index: int | None = None) -> bool:
        if index is None:
            return bool(self._partitioned)
        return index in self._partitioned

    def reset(self, servers=None) -> int:
        """Close every current connection to the given upstreams abruptly: RST to
        the client and to the server.  Returns how many connections were reset.
        (Connections still waiting in a partitioned listener's backlog are not
        touched.)"""
        s = _servers_set(servers, self._n)

        def do() -> int:
            victims = [p for p in self._pairs if p.idx in s]
            for p in victims:
                self._close_pair(p, rst_client=True, rst_upstream=True, why="reset")
            return len(victims)

        return self._call(do, f"reset {sorted(s)}")

    def lose_reply_to(self, opcodes=OP_CREATE, servers=None) -> LostReply:
        """Arm a one-shot rule (see module doc).  ``opcodes``: an int or a set
        of ints (e.g. CREATE_OPS).  Returns the LostReply handle."""
        ops = frozenset([opcodes] if isinstance(opcodes, int) else opcodes)
        rule = LostReply(ops, None if servers is None else _servers_set(servers, self._n))
        self._call(lambda: self._rules.append(rule), f"arm lose_reply_to {sorted(ops)}")
        return rule

    def on_reply(self, opcodes, callback: Callable[[], object], after: int | None = None,
                 servers=None) -> AnsweredReply:
        """Arm a one-shot rule (see module doc).  ``opcodes``: an int or a set of
        ints; ``after``: the opcode the request before it must have had."""
        ops = frozenset([opcodes] if isinstance(opcodes, int) else opcodes)
        rule = AnsweredReply(ops, after, callback, None if servers is None else _servers_set(servers, self._n))
        self._call(lambda: self._reply_rules.append(rule), f"arm on_reply {sorted(ops)} after {after}")
        return rule

    def cancel_rules(self) -> None:
        """Disarm every lose_reply_to and on_reply rule that has not fired."""

        def do() -> None:
            for r in self._rules:
                r.armed = False
            self._rules.clear()
            for a in self._reply_rules:
                a.armed = False
            self._reply_rules.clear()

        self._call(do, "cancel rules")

    def flap(self, period: float, duration: float, down_fraction: float = 0.5, servers=None) -> "Flapper":
        """Partition for ``period*down_fraction`` s, heal for the rest of
        ``period``, repeatedly, for ``duration`` s, in a background thread;
        always ends healed.  Returns a Flapper (``stop()``, ``join()``)."""
        f = Flapper(self, period, duration, down_fraction, servers)
        self._flappers.append(f)
        f.start()
        return f

    def connections(self, index: int | None = None) -> int:
        """Number of currently proxied connections (to upstream ``index``, or all)."""
        pairs = list(self._pairs)
        return sum(1 for p in pairs if index is None or p.idx == index)

    def active_upstreams(self, include_partitioned: bool = True) -> list[int]:
        """Indices of upstreams that currently have at least one proxied
        connection (optionally leaving out partitioned upstreams, whose held
        connections the client may already have given up)."""
        parts = set(self._partitioned)
        return sorted({p.idx for p in list(self._pairs) if include_partitioned or p.idx not in parts})

    def wait_connected(self, index: int | None = None, timeout: float = 10.0) -> list[int]:
        """Wait until some connection (to ``index``, or any) is proxied."""
        deadline = time.monotonic() + timeout
        while True:
            act = self.active_upstreams()
            if (index is None and act) or (index is not None and index in act):
                return act
            if time.monotonic() >= deadline:
                raise TimeoutError(f"{self.name}: no connection to {index} after {timeout}s")
            time.sleep(0.02)

    def stats(self, index: int | None = None) -> dict:
        """Counters (connections, bytes each way, requests per opcode, resets,
        lost replies), for one upstream or a list for all."""
        if index is not None:
            d = self._stats[index].as_dict()
            d["active"] = self.connections(index)
            d["partitioned"] = index in self._partitioned
            return d
        return {"upstreams": [self.stats(i) for i in range(self._n)]}

    def events(self) -> list[tuple[float, str]]:
        """Recent (monotonic time, text) log of what the proxy did."""
        return list(self._events)

    def close(self) -> None:
        """Stop flappers and the loop; close every socket.  Idempotent."""
        for f in self._flappers:
            f.stop()
        if self._thread.is_alive():
            self._stopping = True
            self._wake()
            self._thread.join(10)
        for p in list(self._pairs):
            self._close_pair(p, rst_client=False, rst_upstream=False, why="close")
        for ls in self._listeners:
            try:
                ls.close()
            except OSError:
                pass
        for s in (self._wake_r, self._wake_w):
            try:
                s.close()
            except OSError:
                pass
        try:
            self._sel.close()
        except Exception:
            pass

    def __enter__(self) -> "FaultProxy":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"<FaultProxy {self.name} {self.hosts} -> {self.upstreams} partitioned={sorted(self._partitioned)}>"

    # ------------------------------------------------------------ internals

    def _log(self, text: str) -> None:
        self._events.append((time.monotonic(), text))

    def _wake(self) -> None:
        try:
            self._wake_w.send(b"x")
        except (BlockingIOError, OSError):
            pass

    def _call(self, fn: Callable[[], object], what: str = ""):
        if self._error is not None:
            raise RuntimeError(f"{self.name} loop died") from self._error
        if not self._thread.is_alive():
            raise RuntimeError(f"{self.name} is closed")
        if threading.current_thread() is self._thread:
            return fn()
        done = threading.Event()
        box: list = []

        def run() -> None:
            try:
                box.append((True, fn()))
            except BaseException as e:  # pragma: no cover - re-raised below
                box.append((False, e))
            finally:
                if what:
                    self._log(what)
                done.set()

        self._commands.append(run)
        self._wake()
        if not done.wait(10):
            raise RuntimeError(f"{self.name}: loop did not run {what!r}")
        ok, value = box[0]
        if not ok:
            raise value
        return value

    def _run(self) -> None:
        try:
            while not self._stopping:
                while self._commands:
                    self._commands.popleft()()
                self._check_deadlines()
                self._update_interest()
                for key, mask in self._sel.select(timeout=0.1):
                    kind, obj = key.data
                    if kind == "wake":
                        try:
                            while self._wake_r.recv(4096):
                                pass
                        except (BlockingIOError, OSError):
                            pass
                    elif kind == "listen":
                        self._accept(obj)
                    elif kind == "client":
                        self._on_client(obj, mask)
                    elif kind == "upstream":
                        self._on_upstream(obj, mask)
        except BaseException as e:  # pragma: no cover - surfaced via _call
            self._error = e
            self._log(f"loop crashed: {e!r}")
            raise
        finally:
            while self._commands:  # release waiters
                try:
                    self._commands.popleft()()
                except Exception:
                    pass

    def _set_mask(self, sock: socket.socket, mask: int, data) -> None:
        old = self._masks.get(sock, 0)
        if mask == old:
            return
        if sock.fileno() < 0:
            self._masks.pop(sock, None)
            return
        if old == 0:
            self._sel.register(sock, mask, data)
        elif mask == 0:
            self._sel.unregister(sock)
        else:
            self._sel.modify(sock, mask, data)
        if mask:
            self._masks[sock] = mask
        else:
            self._masks.pop(sock, None)

    def _update_interest(self) -> None:
        R, W = selectors.EVENT_READ, selectors.EVENT_WRITE
        for i, ls in enumerate(self._listeners):
            self._set_mask(ls, 0 if i in self._partitioned else R, ("listen", i))
        for p in list(self._pairs):
            if p.closed:
                continue
            cut = p.idx in self._partitioned
            cm = um = 0
            if p.connecting:
                um = W  # finishing the TCP handshake moves no data
            elif not cut:
                # A doomed connection reads the client only to finish the target frame.
                reading = p.doomed is None or p.req.cut_pending
                if not p.client_eof and reading and len(p.c2s) < self.max_buffer:
                    cm |= R
                if p.s2c and p.doomed is None:
                    cm |= W
                if not p.upstream_eof and len(p.s2c) < self.max_buffer:
                    um |= R
                if p.c2s:
                    um |= W
            self._set_mask(p.client, cm, ("client", p))
            self._set_mask(p.upstream, um, ("upstream", p))

    def _accept(self, idx: int) -> None:
        ls = self._listeners[idx]
        for _ in range(64):
            try:
                client, _addr = ls.accept()
            except (BlockingIOError, InterruptedError):
                return
            except OSError as e:
                self._log(f"accept failed: {e!r}")
                return
            client.setblocking(False)
            client.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            up = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            up.setblocking(False)
            up.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            pair = _Pair(idx, client, up)
            self._pairs.add(pair)
            self._stats[idx].accepted += 1
            rc = up.connect_ex(self.upstreams[idx])
            if rc not in (0, errno.EINPROGRESS, errno.EWOULDBLOCK):
                self._upstream_failed(pair, rc)
            elif rc == 0:
                pair.connecting = False

    def _upstream_failed(self, p: _Pair, rc: int) -> None:
        self._stats[p.idx].upstream_failures += 1
        self._close_pair(p, rst_client=True, rst_upstream=False, why=f"upstream connect failed: {os.strerror(rc)}")

    def _close_pair(self, p: _Pair, rst_client: bool, rst_upstream: bool, why: str) -> None:
        if p.closed:
            return
        p.closed = True
        self._pairs.discard(p)
        st = self._stats[p.idx]
        st.closed += 1
        if rst_client or rst_upstream:
            st.resets += 1
        for sock, rst in ((p.client, rst_client), (p.upstream, rst_upstream)):
            if sock in self._masks:
                try:
                    self._sel.unregister(sock)
                except (KeyError, ValueError, OSError):
                    pass
                self._masks.pop(sock, None)
            try:
                if rst:
                    sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, _LINGER_RST)
                sock.close()
            except OSError:
                pass
        if p.doomed is not None and not p.doomed.fired:
            p.doomed.cut_at = time.monotonic()
            p.doomed._done.set()
        self._log(f"closed connection to upstream {p.idx} ({why})")

    def _check_deadlines(self) -> None:
        now = time.monotonic()
        for p in list(self._pairs):
            if p.doomed is not None and now >= p.doomed_deadline:
                self._log(f"lose_reply_to: no reply to xid {p.doomed.xid} within {self.lost_reply_wait}s")
                self._close_pair(p, rst_client=True, rst_upstream=False, why="lost reply (timeout)")

    def _receive(self, p: _Pair, side: str) -> bytes | None:
        """One recv from ``side`` ("client" or "upstream"): b"" at EOF, None when nothing
        was there or the read failed (then the pair is closed, the other side reset)."""
        sock = p.client if side == "client" else p.upstream
        try:
            return sock.recv(_RECV)
        except (BlockingIOError, InterruptedError):
            return None
        except OSError as e:
            reset_client = side == "upstream"
            self._close_pair(p, rst_client=reset_client, rst_upstream=not reset_client, why=f"{side} error {e!r}")
            return None

    # client -> proxy -> upstream
    def _on_client(self, p: _Pair, mask: int) -> None:
        if p.closed:
            return
        if mask & selectors.EVENT_READ:
            data = self._receive(p, "client")
            if p.closed:
                return
            if data is not None:
                if not data:
                    p.client_eof = True
                else:
                    self._from_client(p, data)
        if p.closed:
            return
        if mask & selectors.EVENT_WRITE and p.s2c and p.doomed is None:
            try:
                n = p.client.send(p.s2c)
                del p.s2c[:n]
                if n:
                    self._stats[p.idx].last_sent_client = time.monotonic()
            except (BlockingIOError, InterruptedError):
                pass
            except OSError as e:
                self._close_pair(p, rst_client=False, rst_upstream=True, why=f"client error {e!r}")
                return
        self._maybe_finish(p)

    def _from_client(self, p: _Pair, data: bytes) -> None:
        st = self._stats[p.idx]
        fired: list[LostReply] = []

        def on_header(hdr: bytes, first: bool) -> bool:
            if first:
                return False
            _len, xid, op = _REQ_HDR.unpack_from(hdr)
            st.requests[op] += 1
            p.sent[xid] = (op, p.last_op)
            p.last_op = op
            for rule in self._rules:
                if rule.armed and op in rule.opcodes and (rule.servers is None or p.idx in rule.servers):
                    rule.armed = False
                    self._rules.remove(rule)
                    rule.opcode, rule.xid, rule.server = op, xid, p.idx
                    fired.append(rule)
                    return True
            return False

        cut = p.req.feed(data, on_header)
        if cut is not None:
            data = data[:cut]  # the rest never reaches the server: the connection is cut
        p.c2s += data
        st.bytes_c2s += len(data)
        if fired:
            p.doomed = fired[0]
            p.doomed_deadline = time.monotonic() + self.lost_reply_wait
        if p.doomed is not None and cut is not None:
            # The whole target frame is queued for the server: send it now.
            rule = p.doomed
            rule.path = _request_path(bytes(p.req.captured))
            rule.forwarded_at = time.monotonic()
            self._log(f"lose_reply_to: forwarding {OP_NAMES.get(rule.opcode, rule.opcode) if rule.opcode is not None else None} xid={rule.xid} path={rule.path!r} to upstream {p.idx}; its reply will be lost")
            self._flush(p, "upstream")

    def _flush(self, p: _Pair, side: str) -> None:
        """Hand what is held for ``side`` ("client" or "upstream") to its socket now (an
        on_reply rule's callback must come after the reply left); a failed send closes
        the pair and resets the other side."""
        to_client = side == "client"
        if p.closed or p.idx in self._partitioned or (p.connecting and not to_client):
            return
        sock, held = (p.client, p.s2c) if to_client else (p.upstream, p.c2s)
        stats = self._stats[p.idx]
        try:
            while held:
                n = sock.send(held)
                del held[:n]
                if n and to_client:
                    stats.last_sent_client = time.monotonic()
                elif n:
                    stats.last_sent_upstream = time.monotonic()
        except (BlockingIOError, InterruptedError):
            pass
        except OSError as e:
            self._close_pair(p, rst_client=not to_client, rst_upstream=to_client, why=f"{side} error {e!r}")

    # upstream -> proxy -> client
    def _on_upstream(self, p: _Pair, mask: int) -> None:
        if p.closed:
            return
        if p.connecting:
            if not mask & selectors.EVENT_WRITE:
                return
            rc = p.upstream.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR)
            if rc:
                self._upstream_failed(p, rc)
                return
            p.connecting = False
            return
        if mask & selectors.EVENT_READ:
            data = self._receive(p, "upstream")
            if p.closed:
                return
            if data is not None:
                if not data:
                    p.upstream_eof = True
                    if p.doomed is not None:
                        self._close_pair(p, rst_client=True, rst_upstream=False, why="upstream closed before lost reply")
                        return
                else:
                    self._from_upstream(p, data)
                    if p.closed:
                        return
        if mask & selectors.EVENT_WRITE and p.c2s:
            self._flush(p, "upstream")
            if p.closed:
                return
        self._maybe_finish(p)

    def _from_upstream(self, p: _Pair, data: bytes) -> None:
        st = self._stats[p.idx]
        rule = p.doomed
        hit: list[tuple[int, int, int]] = []
        answered: list[AnsweredReply] = []

        def on_header(hdr: bytes, first: bool) -> bool:
            if first:
                return False
            _len, xid, zxid, err = _REP_HDR.unpack_from(hdr)
            sent = p.sent.pop(xid, None)
            if rule is None:
                if sent is not None:
                    for armed in [a for a in self._reply_rules if a.matches(sent, p.idx)]:
                        armed.armed = False
                        self._reply_rules.remove(armed)
                        armed.xid, armed.server = xid, p.idx
                        answered.append(armed)
                return False
            if xid == rule.xid:
                hit.append((xid, zxid, err))
            return False

        p.rep.feed(data, on_header)
        if rule is None:
            p.s2c += data
            st.bytes_s2c += len(data)
            if answered:
                self._flush(p, "client")
                for armed in answered:
                    self._run_reply_rule(armed)
            return
        # Doomed: nothing more reaches the client; wait for the reply, then cut.
        if hit:
            _xid, zxid, err = hit[0]
            rule.reply_err, rule.reply_zxid = err, zxid
            st.lost_replies += 1
            self._log(f"lose_reply_to: dropped reply xid={rule.xid} err={err}; resetting client connection")
            self._close_pair(p, rst_client=True, rst_upstream=False, why="lost reply")

    def _run_reply_rule(self, rule: AnsweredReply) -> None:
        rule.at = time.monotonic()
        try:
            rule.callback()
        except Exception as e:  # the proxy must survive a test's callback
            rule.error = e
        self._log(f"on_reply: reply to xid {rule.xid} forwarded; callback {'failed: ' + repr(rule.error) if rule.error else 'ran'}")
        rule._done.set()

    def _maybe_finish(self, p: _Pair) -> None:
        """Close a pair once one side has hung up and what it sent is delivered."""
        if p.closed:
            return
        if p.client_eof and not p.c2s:
            self._close_pair(p, rst_client=False, rst_upstream=False, why="client closed")
        elif p.upstream_eof and not p.s2c:
            self._close_pair(p, rst_client=False, rst_upstream=False, why="server closed")


def _request_path(frame: bytes) -> str | None:
    """The path of a request frame whose body starts with a ustring path
    (create, delete, exists, getData, setData, ...)."""
    try:
        (n,) = struct.unpack_from(">i", frame, 12)
        if 0 <= n <= len(frame) - 16:
            return frame[16 : 16 + n].decode("utf-8", "replace")
    except struct.error:
        pass
    return None


class Flapper(threading.Thread):
    """Background partition/heal cycles; see FaultProxy.flap()."""

    def __init__(self, proxy: FaultProxy, period: float, duration: float, down_fraction: float, servers) -> None:
        super().__init__(name=f"{proxy.name}-flap", daemon=True)
        if not 0 < down_fraction < 1 or period <= 0:
            raise ValueError("need period > 0 and 0 < down_fraction < 1")
        self.proxy = proxy
        self.period = period
        self.duration = duration
        self.down = period * down_fraction
        self.servers = servers
        self.cycles = 0
        self._stop_evt = threading.Event()

    def run(self) -> None:
        end = time.monotonic() + self.duration
        try:
            while not self._stop_evt.is_set() and time.monotonic() < end:
                self.proxy.partition(self.servers)
                self._stop_evt.wait(min(self.down, max(0.0, end - time.monotonic())))
                self.proxy.heal(self.servers)
                self.cycles += 1
                self._stop_evt.wait(min(self.period - self.down, max(0.0, end - time.monotonic())))
        except RuntimeError:
            return  # proxy closed under us
        finally:
            try:
                self.proxy.heal(self.servers)
            except RuntimeError:
                pass

    def stop(self) -> None:
        self._stop_evt.set()
        if self.is_alive() and threading.current_thread() is not self:
            self.join(10)


class SessionRecordingProxy(FaultProxy):
    """A FaultProxy that also reads the first frame every server sends on a connection,
    the ConnectResponse (protocolVersion:int32, timeOut:int32, sessionId:int64,
    passwd:buffer), and keeps each session's id and password: what the client was
    given and must keep to itself. The tests then look for that password where it must
    never be (the daemon's logs, the job's environment, argv). Overrides the private
    hook ``_from_upstream`` (as chaos.RawFaultProxy does); the bytes flow unchanged."""

    def __init__(self, *args, **kw) -> None:
        self.sessions: dict[int, bytes] = {}  # session id -> password
        self._greetings: dict[_Pair, bytearray] = {}
        self._greeted: set[_Pair] = set()
        super().__init__(*args, **kw)

    def _from_upstream(self, p: _Pair, data: bytes) -> None:
        if p not in self._greeted:
            buffer = self._greetings.setdefault(p, bytearray())
            buffer += data
            if len(buffer) >= 4:
                (length,) = _LEN.unpack_from(buffer)
                if len(buffer) >= 4 + length:
                    self._greeted.add(p)
                    del self._greetings[p]
                    self._read_greeting(bytes(buffer[4 : 4 + length]))
        super()._from_upstream(p, data)

    def _read_greeting(self, body: bytes) -> None:
        try:
            _version, timeout, session_id = struct.unpack_from(">iiq", body)
            (size,) = struct.unpack_from(">i", body, 16)
        except struct.error:
            return
        if timeout > 0 and 0 < size <= len(body) - 20:
            self.sessions[session_id] = body[20 : 20 + size]
            self._log(f"session 0x{session_id:x} given a {size}-byte password")
