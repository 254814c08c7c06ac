"""kazoo's client and connection handler, subclassed for the lease.

The lease anchor (``timing.relayed_anchor``) needs to know, for every packet of the
session, kazoo's own pings included, when it was written and when its answer was
read, and when the answered connect request was written. kazoo keeps all of that to
itself, so ``Connection`` overrides the points of kazoo 2.11's private
ConnectionHandler every packet passes through (pinned by tests/test_connection.py
against a real server):

- ``_submit``: every packet (requests, the connect request, auth, pings) is written
  here; the time before the write is kept by xid until the answer comes.
- ``_read_header``: every answer with a header (replies, pongs, auth replies) is read
  here; its xid names the packet it answers (kazoo numbers requests from 1 on each
  connection; pings and auth packets have fixed xids, one outstanding at a time).
- ``_invoke``: the connect reply is read here, before kazoo tells its listeners about
  the new state, so the negotiated timeout and the confirmation are known by the time
  the shell posts ``Connected``.
- ``_connect``: one attempt to reach one server: counted for the logs, a fresh xid
  table (the old connection's packets will never be answered), and a TLS handshake
  refused by every server in a row ends the client (``TlsRefusals``).

``Client`` is a KazooClient that builds this handler instead of kazoo's own, and
``client_options`` turns zookeeper.auth, zookeeper.acl and zookeeper.tls into the
rest of its arguments (auth_data, default_acl, the TLS options).
"""

from __future__ import annotations

import collections
import ssl
import threading
from collections.abc import Callable
from typing import Any

from kazoo.client import KazooClient
from kazoo.exceptions import AuthFailedError
from kazoo.protocol.connection import _CONNECTION_DROP, ConnectionHandler
from kazoo.protocol.serialization import Connect
from kazoo.security import ACL, Id

from . import security
from .config import ZooKeeperConfig
from .core import timing

#: Answered packets kept per session. Only the newest one answered early enough
#: matters (``relayed_anchor``), and a healthy daemon sends a few packets per
#: heartbeat, so this spans many heartbeat intervals. Dropping old entries can only
#: make the anchor older, never later: the bound costs liveness under a flood, never
#: safety.
PACKET_LOG_SIZE = 1024


class PacketLog:
    """For each answered packet of the current session, (when it was written, when its
    answer was read); and when the session's latest answered connect request was
    written. Written by kazoo's connection thread, read by its callback thread: every
    access holds the lock."""

    def __init__(self, capacity: int = PACKET_LOG_SIZE) -> None:
        self._lock = threading.Lock()
        self._answered: collections.deque[tuple[float, float]] = collections.deque(maxlen=capacity)
        self._session_id: int | None = None
        self._confirmed_at: float | None = None

    def answered(self, written: float, answer_read: float) -> None:
        with self._lock:
            self._answered.append((written, answer_read))

    def confirmed(self, written: float, session_id: int) -> None:
        """A connect request written at ``written`` was answered for ``session_id`` by a
        server in the quorum: a new session is created by the ZooKeeper leader, an
        existing one is revalidated with it (which touches the session there) before a
        follower answers. A different session than before drops the old session's
        entries: they never touched this one."""
        with self._lock:
            if session_id != self._session_id:
                self._answered.clear()
                self._session_id = session_id
            self._confirmed_at = written

    @property
    def confirmed_at(self) -> float | None:
        with self._lock:
            return self._confirmed_at

    def entries(self) -> list[tuple[float, float]]:
        """A snapshot in answer order: (time before the write, time the answer was read)."""
        with self._lock:
            return list(self._answered)

    def anchor(self, sync_queued_at: float, tick_time: float) -> float | None:
        """What an answered sync queued at ``sync_queued_at`` proves (timing.relayed_anchor)."""
        with self._lock:
            answered, confirmed_at = list(self._answered), self._confirmed_at
        return timing.relayed_anchor(answered, sync_queued_at, tick_time, confirmed_at)


class Connection(ConnectionHandler):
    """kazoo's ConnectionHandler that times every packet and its answer on ``clock``
    into ``packets``, keeps the negotiated session timeout (the server may grant less than
    asked, and the lease must use what was granted), counts connection attempts
    (``on_attempt(host:port, n)``, n from 1 after each successful connect) and applies
    ``tls`` to failed attempts."""

    def __init__(
        self,
        client: KazooClient,
        retry_sleeper: Any,
        *,
        clock: Callable[[], float],
        on_attempt: Callable[[str, int], None] | None = None,
        tls: TlsRefusals | None = None,
        logger: Any = None,
        sasl_options: Any = None,
    ) -> None:
        super().__init__(client, retry_sleeper, logger=logger, sasl_options=sasl_options)
        self.packets = PacketLog()
        self.negotiated_timeout: float | None = None
        #: (host, port) of the server that answered the latest connect request.
        self.server: tuple[str, int] | None = None
        self._target: tuple[str, int] | None = None
        self.attempts = 0
        self._clock = clock
        self._on_attempt = on_attempt
        self._tls = tls
        self._connect_written: float | None = None
        #: xid -> when the packet was written, until its answer is read.
        self._unanswered: dict[int, float] = {}

    def _connect(self, host: str, hostip: str, port: int) -> Any:
        self.attempts += 1
        self._target = (host, port)
        self._unanswered.clear()
        if self._on_attempt is not None:
            self._on_attempt(f"{host}:{port}", self.attempts)
        try:
            answer = super()._connect(host, hostip, port)
        except Exception as err:
            if self._tls is not None:
                self._tls.failed(err, f"{host}:{port}")  # raises AuthFailedError on the last refusal
            raise
        if self._tls is not None:
            self._tls.succeeded()
        self.attempts = 0
        return answer

    def _submit(self, request: Any, timeout: float, xid: int | None = None) -> None:
        written = self._clock()
        if isinstance(request, Connect):
            self._connect_written = written
        elif xid is not None:
            self._unanswered[xid] = written
        super()._submit(request, timeout, xid)

    def _read_header(self, timeout: float) -> Any:
        answer = super()._read_header(timeout)
        written = self._unanswered.pop(answer[0].xid, None)
        if written is not None:
            self.packets.answered(written, self._clock())
        return answer

    def _invoke(self, timeout: float, request: Any, xid: int | None = None) -> Any:
        answer = super()._invoke(timeout, request, xid)
        if isinstance(request, Connect):
            result = answer[0]
            # time_out <= 0: the session expired (kazoo raises right after this). A
            # read-only server answers without any leader: it confirms nothing.
            if result.time_out > 0:
                self.negotiated_timeout = result.time_out / 1000
                self.server = self._target
                if not result.read_only and self._connect_written is not None:
                    self.packets.confirmed(self._connect_written, result.session_id)
        return answer


class Client(KazooClient):
    """A KazooClient whose connection handler is ``Connection``. KazooClient builds
    its handler in ``__init__`` and starts it only in ``start()``, so the handler
    built there is replaced before it ever ran."""

    def __init__(
        self,
        *,
        clock: Callable[[], float],
        on_attempt: Callable[[str, int], None] | None = None,
        tls: TlsRefusals | None = None,
        **options: Any,
    ) -> None:
        super().__init__(**options)
        self._connection: Connection = Connection(
            self,
            self._conn_retry.copy(),
            clock=clock,
            on_attempt=on_attempt,
            tls=tls,
            logger=self.logger,
            sasl_options=self._connection.sasl_options,
        )

    @property
    def packets(self) -> PacketLog:
        return self._connection.packets

    @property
    def negotiated_timeout(self) -> float | None:
        """The session timeout the server granted on the latest connect, in seconds."""
        return self._connection.negotiated_timeout

    @property
    def server(self) -> tuple[str, int] | None:
        """(host, port) of the server that answered the latest connect request."""
        return self._connection.server

    def drop_connection(self) -> None:
        """Drops the current connection; kazoo reconnects, same session, to the next
        server of its list at once (the core asks when a heartbeat went unanswered for a
        whole interval). The drop goes through kazoo's own request queue as the
        sentinel its test harness uses for the same purpose (kazoo.testing), so the
        connection thread raises ConnectionDropped itself, in order, and fails what was
        pending as on any connection loss."""
        self._call(_CONNECTION_DROP, self.handler.async_result())


def tls_rejection(err: BaseException) -> str | None:
    """The reason when a connection attempt failed because TLS refused it (our check of
    the server's certificate, or the server's check of ours); None for other failures."""
    for cause in (err, err.__cause__, err.__context__):
        if isinstance(cause, ssl.SSLCertVerificationError):
            return f"the server's certificate was refused: {cause.verify_message or cause.reason}"
        if isinstance(cause, ssl.SSLError):
            reason = str(cause.reason or "")
            if "CERTIFICATE" in reason or "UNKNOWN_CA" in reason or "HANDSHAKE_FAILURE" in reason:
                return f"the TLS handshake failed: {reason.lower()} (does the server trust our client certificate?)"
    return None


class TlsRefusals:
    """Ends a client whose TLS handshake every server refused, one after the other,
    instead of a retry loop that would never succeed. ``on_rejected(reason, final)`` is
    called for each refusal; final is True on the one that gives up. Used by
    ``Connection._connect`` on each failed attempt."""

    def __init__(self, hosts: int, on_rejected: Callable[[str, bool], None]) -> None:
        self._hosts = hosts
        self._on_rejected = on_rejected
        self._in_a_row = 0

    def succeeded(self) -> None:
        self._in_a_row = 0

    def failed(self, err: BaseException, where: str) -> None:
        """Returns when ``err`` is no TLS refusal or not yet the last one (the caller
        re-raises it); raises AuthFailedError from ``err`` on the last."""
        reason = tls_rejection(err)
        if reason is None:
            return
        self._in_a_row += 1
        final = self._in_a_row >= self._hosts
        self._on_rejected(f"{where}: {reason}", final)
        if final:
            raise AuthFailedError(reason) from err


def client_options(config: ZooKeeperConfig) -> dict[str, Any]:
    """KazooClient keyword arguments for zookeeper.auth, zookeeper.acl and zookeeper.tls,
    for the daemon's shell and for `zkleader status` alike."""
    options: dict[str, Any] = {}
    if config.auth is not None:
        if config.auth.password is None:
            raise ValueError("zookeeper.auth without its password: the configuration comes from config.parse, "
                             "which reads no file; use config.load")
        options["auth_data"] = [(config.auth.scheme, f"{config.auth.username}:{config.auth.password.reveal()}")]
    acl = kazoo_acl(config)
    if acl is not None:
        options["default_acl"] = acl
    if config.tls is not None:
        options.update(
            use_ssl=True,
            ca=config.tls.ca,
            certfile=config.tls.cert,
            keyfile=config.tls.key,
            verify_certs=True,
            check_hostname=config.tls.verify_hostname,
        )
    return options


def kazoo_acl(config: ZooKeeperConfig) -> list[ACL] | None:
    """The ACL for every node the daemon creates; None is kazoo's open ACL."""
    if config.acl == "open":
        return None
    entries = config.acl if isinstance(config.acl, tuple) else security.creator_acl()
    return [ACL(entry.perms, Id(entry.scheme, entry.id)) for entry in entries]
