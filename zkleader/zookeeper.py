"""The ZooKeeper shell: executes the core's requests with kazoo and turns kazoo's
callbacks into events.

kazoo calls listeners on its connection thread and completion callbacks on its
callback thread; neither may block, so everything here only stamps the time and
posts an event to the daemon's queue. Every request is sent with the *_async API:
since kazoo 2.7 a call made while reconnecting is queued, and a synchronous call
could stall the daemon's loop for a whole session timeout.
"""

from __future__ import annotations

import datetime
import json
import logging
import threading
from collections.abc import Callable, Iterable
from typing import Any

import structlog
from kazoo.client import KazooState
from kazoo.exceptions import (
    AuthFailedError,
    ConnectionLoss,
    InvalidACLError,
    NoAuthError,
    NodeExistsError,
    NoNodeError,
    OperationTimeoutError,
    SessionExpiredError,
    ZookeeperError,
)
from kazoo.protocol.states import EventType, KeeperState, WatchedEvent, ZnodeStat
from kazoo.security import ACL

from . import clock
from .config import ZooKeeperConfig
from .connection import Client, TlsRefusals, client_options, kazoo_acl
from .core import actions as act
from .core import events as ev
from .core import timing
from .post import Post
from .security import AclEntry


#: Told the session's id and password on each connect, and None when the session ends
#: or is closed: the guardian releases a dead daemon's session with them (job.py).
SessionListener = Callable[[int | None, bytes], None]


class ZooKeeperShell:
    def __init__(self, config: ZooKeeperConfig, post: Post, clock: Callable[[], float] = clock.now,
                 on_session: SessionListener | None = None) -> None:
        self._post = post
        self._on_session = on_session
        self._clock = clock
        self._config = config
        self._log = structlog.get_logger()
        self._acl_checked = config.acl == "open"
        self._auth_failed = False
        self._checked_servers: set[tuple[str, int]] = set()
        self.client = Client(
            clock=clock,
            on_attempt=lambda where, attempt: self._post(ev.ConnectionAttempt(where, attempt)),
            tls=TlsRefusals(len(config.hosts), self._on_tls_rejected) if config.tls is not None else None,
            hosts=config.connection_string,
            timeout=config.session_timeout,
            connection_retry={"max_tries": -1, "delay": 0.1, "backoff": 2,
                              "max_delay": timing.reconnect_max_delay(config.session_timeout)},
            logger=logging.getLogger("kazoo"),
            **client_options(config),
        )
        self.client.add_listener(self._on_state)
        if config.auth is not None and config.auth.warning:
            self._log.warning("secret_file_exposed", problem=config.auth.warning)

    def start(self) -> None:
        """Connects in the background; kazoo retries forever and we log each attempt."""
        self.client.start_async()

    def close(self, timeout: float = 2.0) -> None:
        """Closes the session (deleting our ephemeral nodes at once when connected).
        Bounded: a partitioned client would otherwise wait for its read timeout."""
        closer = threading.Thread(target=self._stop_and_close, name="zk-close", daemon=True)
        closer.start()
        closer.join(timeout)

    def execute(self, action: act.Action) -> None:
        sent_at = self._clock()
        match action:
            case act.CreateNode(request_id=rid, path_prefix=prefix, data=data, sequential=sequential,
                                ephemeral=ephemeral):
                if sequential:
                    self._check_election_acl(prefix.rsplit("/", 1)[0] or "/")
                result = self.client.create_async(prefix, data, ephemeral=ephemeral, sequence=sequential,
                                                  makepath=True)
                self._reply(result, rid, sent_at, lambda path: ev.Created(rid, sent_at, path), prefix)
            case act.ReadNodes(request_id=rid, paths=paths, sync=sync):
                # One reply for all: ZooKeeper answers in order, so when the last read's
                # callback runs the others are set; a node that does not exist is None.
                synced = self.client.sync_async(paths[0]) if sync else None
                reads = [self.client.get_async(path) for path in paths]
                self._reply_reads(reads, rid, sent_at, paths, synced)
            case act.ListChildren(request_id=rid, path=path, sync=sync):
                # Pipelined like CheckNode's: the listing waits for the sync.
                synced = self.client.sync_async(path) if sync else None
                result = self.client.get_children_async(path)
                self._reply(result, rid, sent_at, lambda children: ev.ChildrenListed(rid, sent_at, tuple(children)), path,
                            prerequisite=synced)
            case act.CheckNode(request_id=rid, path=path, watch=watch, sync=sync):
                # Pipelined: ZooKeeper answers one session's requests in order, and a
                # read after a sync waits for it, so the exists reply comes last.
                synced = self.client.sync_async(path) if sync else None
                result = self.client.exists_async(path, watch=self._on_watch if watch else None)
                self._reply(result, rid, sent_at, lambda stat: self._checked(rid, sent_at, stat, sync), path,
                            prerequisite=synced)
            case act.PublishLeadership(request_id=rid, path=path, data=data):
                stamped = {**data, "leader_since": _wall_clock()}
                result = self.client.set_async(path, json.dumps(stamped, separators=(",", ":")).encode())
                self._reply(result, rid, sent_at, lambda _: ev.DataSet(rid, sent_at), path)
            case act.DeleteNode(request_id=rid, path=path):
                result = self.client.delete_async(path)
                self._reply(result, rid, sent_at, lambda _: ev.Deleted(rid, sent_at), path)
            case act.CloseSession():
                self._tell_session(None)
                self.close()
            case act.DropConnection():
                self.client.drop_connection()
            case _:
                raise TypeError(f"not a ZooKeeper action: {action!r}")

    def _checked(self, request_id: int, sent_at: float, stat: ZnodeStat | None, synced: bool) -> ev.NodeChecked:
        """An answered exists; after an answered sync, with the lease anchor that sync
        proves (computed now, on the callback thread: every write it can name is long done)."""
        relayed_at = self.client.packets.anchor(sent_at, self._config.tick_time) if synced else None
        return ev.NodeChecked(request_id, sent_at, _stat(stat), synced, relayed_at)

    # ------------------------------------------------------------ callbacks

    def _reply(
        self,
        result: Any,
        request_id: int,
        sent_at: float,
        success: Callable[[Any], ev.Event],
        path: str = "",
        prerequisite: Any = None,
    ) -> None:
        """Posts the outcome of `result`; a failed prerequisite (the sync before a
        heartbeat) makes the whole request fail."""

        def done(finished: Any) -> None:
            failed = finished
            if prerequisite is not None and not (prerequisite.ready() and prerequisite.successful()):
                failed = prerequisite
            if failed.successful():
                self._post(success(finished.value))
            else:
                failure, detail = _failure(failed.exception if failed.ready() else None, path, self._identity())
                self._post(ev.RequestFailed(request_id, sent_at, failure, detail))

        result.rawlink(done)

    def _reply_reads(self, reads: list[Any], request_id: int, sent_at: float, paths: tuple[str, ...],
                     synced: Any) -> None:
        """Posts one NodesRead for a ReadNodes: each get's data, None for a node that
        does not exist; any other failure (of a get, or of the sync) fails the whole."""

        def done(_: Any) -> None:
            for read, path in ((synced, paths[0]), *zip(reads, paths)):
                if read is None or read.successful() or isinstance(read.exception, NoNodeError):
                    continue
                failure, detail = _failure(read.exception if read.ready() else None, path, self._identity())
                self._post(ev.RequestFailed(request_id, sent_at, failure, detail))
                return
            data = tuple(read.value[0] if read.successful() else None for read in reads)
            self._post(ev.NodesRead(request_id, sent_at, data))

        reads[-1].rawlink(done)

    def _on_watch(self, event: WatchedEvent) -> None:
        if event.type == EventType.NONE:
            kind = ev.WatchKind.CONNECTION
        elif event.type == EventType.DELETED:
            kind = ev.WatchKind.DELETED
        else:
            kind = ev.WatchKind.CHANGED
        self._post(ev.WatchFired(event.path, kind))

    def _on_state(self, state: str) -> None:
        if state == KazooState.CONNECTED:
            session_id, password = self.client.client_id or (None, b"")
            self._tell_session(session_id, password)
            negotiated = self.client.negotiated_timeout
            timeout = negotiated if negotiated is not None else self._config.session_timeout
            self._post(
                ev.Connected(
                    session_id=self.client._session_id or 0,
                    negotiated_timeout=timeout,
                    read_only=self.client.client_state == KeeperState.CONNECTED_RO,
                )
            )
            self._check_tick_time(timeout)
        elif state == KazooState.SUSPENDED:
            self._post(ev.Suspended())
        elif self.client.client_state == KeeperState.AUTH_FAILED:
            self._post_auth_failed()
        else:
            self._tell_session(None)
            self._post(ev.SessionLost(reason=str(self.client.client_state).lower()))

    def _tell_session(self, session_id: int | None, password: bytes = b"") -> None:
        if self._on_session is not None:
            self._on_session(session_id, password)

    def _check_tick_time(self, negotiated: float) -> None:
        """The lease rule trusts zookeeper.tick_time (a packet written tickTime/2 before
        an answered sync was relayed to the ZooKeeper leader) and one relay hop. Neither
        can be verified in general; say so where the server gives it away. Warnings
        only: a server may hide its configuration, and refusing would turn a hint into
        an outage. Called on kazoo's connection thread: the 4lw look-up runs on its own."""
        requested = self._config.session_timeout
        if abs(negotiated - requested) > 0.0005:
            # With the default bounds a granted timeout is clamped to 2..20 x tickTime.
            bound, factor = ("maxSessionTimeout", 20) if negotiated < requested else ("minSessionTimeout", 2)
            implied = negotiated / factor
            if implied > self._config.tick_time + 0.0005:
                self._log.warning(
                    "tick_time_suspect", requested=requested, granted=negotiated, implied_tick_time=implied,
                    configured_tick_time=self._config.tick_time,
                    problem=f"the server granted a session timeout of {negotiated:g}s instead of {requested:g}s: "
                            f"if its {bound} is the default ({factor} x tickTime), its tickTime is {implied:g}s, "
                            f"more than zookeeper.tick_time {self._config.tick_time:g}s, and the lease would "
                            "count packets the ZooKeeper leader may not have heard of; set zookeeper.tick_time "
                            "to the servers' tickTime")
        server = self.client.server
        if server is not None and server not in self._checked_servers:
            self._checked_servers.add(server)
            threading.Thread(target=self._ask_server, args=(server,), name="zk-4lw", daemon=True).start()

    def _ask_server(self, server: tuple[str, int]) -> None:
        """The server's tickTime from ``conf`` and its role from ``srvr``, where its
        4lw.commands.whitelist allows them (Debian's default allows only srvr)."""
        where = f"{server[0]}:{server[1]}"
        conf = self._four_letter(b"conf")
        tick_ms = _conf_value(conf, "tickTime") if conf is not None else None
        if tick_ms is not None and abs(tick_ms / 1000 - self._config.tick_time) > 0.0005:
            tick = tick_ms / 1000
            danger = tick > self._config.tick_time
            self._log.warning(
                "tick_time_mismatch", server=where, server_tick_time=tick, configured_tick_time=self._config.tick_time,
                problem=f"{where} runs with tickTime {tick:g}s but zookeeper.tick_time is "
                        f"{self._config.tick_time:g}s: "
                        + ("the lease would count packets the ZooKeeper leader may not have heard of"
                           if danger else "the lease is shorter than it could be")
                        + f"; set zookeeper.tick_time to {tick:g}")
        srvr = self._four_letter(b"srvr")
        if srvr is not None and _srvr_mode(srvr) == "observer":
            self._log.warning(
                "observer_server", server=where,
                problem=f"{where} is an observer: if it follows a ZooKeeper follower (observerMasterPort) "
                        "rather than the leader, our session touches take a second hop to the leader and "
                        "the lease rule's tickTime/2 does not cover it; connect zkleader to participants only")

    def _four_letter(self, word: bytes) -> str | None:
        """kazoo's command() on a connection of its own; None when the server refused
        or did not answer (a whitelist without the word, a reconnect meanwhile)."""
        try:
            answer = self.client.command(word)
        except Exception as err:  # anything: this is a hint, never a failure
            self._log.debug("four_letter_failed", word=word.decode(), error=f"{type(err).__name__}: {err}")
            return None
        if "not in the whitelist" in answer or "not executed" in answer:
            self._log.debug("four_letter_refused", word=word.decode())
            return None
        return answer

    def _identity(self) -> str:
        auth = self._config.auth
        who = f"user {auth.username} ({auth.scheme})" if auth is not None else "an unauthenticated client"
        if self._config.tls is not None and self._config.tls.cert is not None:
            who += " with the client certificate " + self._config.tls.cert
        return who

    def _post_auth_failed(self) -> None:
        if not self._auth_failed:
            self._auth_failed = True
            self._post(ev.AuthFailed())

    def _on_tls_rejected(self, reason: str, final: bool) -> None:
        """Called on kazoo's connection thread: logs, and on the final refusal tells the
        core directly. (kazoo reports AUTH_FAILED to listeners as a change to LOST, and a
        client that never connected is LOST already, so no listener would hear it.)"""
        if final:
            self._log.error("tls_failed", reason=reason,
                            problem="every ZooKeeper server refused TLS; check zookeeper.tls (ca, cert, key) "
                                    "and the servers' certificates")
            self._post_auth_failed()
        else:
            self._log.warning("tls_refused", reason=reason)

    def _check_election_acl(self, path: str) -> None:
        """Once per shell, with an ACL configured: an election path that existed before
        keeps its own ACL (zkleader never changes the ACL of an existing node), so say
        so loudly when it lets the world do more than the configured ACL does."""
        if self._acl_checked:
            return
        self._acl_checked = True
        configured = kazoo_acl(self._config) or []
        allowed = 0
        for acl in configured:
            if acl.id.scheme == "world":
                allowed |= acl.perms

        def done(finished: Any) -> None:
            if not finished.successful():
                return  # usually NoNode: the daemon creates it with the configured ACL
            acls, _ = finished.value
            world = 0
            for acl in acls:
                if acl.id.scheme == "world":
                    world |= acl.perms
            if world & ~allowed:
                self._log.warning("election_acl_open", path=path, acl=_describe_acl(acls),
                                  configured=_describe_acl(configured),
                                  problem="the election path existed with a more open ACL than zookeeper.acl, "
                                          "and zkleader never changes an existing node's ACL: anyone can delete "
                                          "or insert election nodes; fix it with setAcl or recreate the path")

        self.client.get_acls_async(path).rawlink(done)

    def _stop_and_close(self) -> None:
        try:
            self.client.stop()
            self.client.close()
        except Exception:  # closing is best effort: the session expires on its own
            logging.getLogger("kazoo").debug("close failed", exc_info=True)


def _wall_clock() -> str:
    return datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="milliseconds")


def _describe_acl(acls: Iterable[ACL]) -> list[str]:
    """kazoo ACLs as "scheme:id:letters" strings, for logs."""
    return [str(AclEntry(acl.id.scheme, acl.id.id, acl.perms)) for acl in acls]


def _conf_value(conf: str, key: str) -> int | None:
    """An integer ``key=value`` line of the ``conf`` four-letter word's answer."""
    for line in conf.splitlines():
        name, sep, value = line.partition("=")
        if sep and name.strip() == key:
            try:
                return int(value.strip())
            except ValueError:
                return None
    return None


def _srvr_mode(srvr: str) -> str | None:
    """The ``Mode:`` line of the ``srvr`` four-letter word's answer (leader, follower,
    observer, standalone, read-only)."""
    for line in srvr.splitlines():
        if line.startswith("Mode:"):
            return line.split(":", 1)[1].strip()
    return None


def _stat(stat: ZnodeStat | None) -> ev.NodeStat | None:
    return None if stat is None else ev.NodeStat(czxid=stat.czxid, ephemeral_owner=stat.ephemeralOwner)


def _failure(exc: BaseException | None, path: str = "", identity: str = "") -> tuple[ev.Failure, str]:
    """Only an error code the server sent counts as an answer (it refreshes the lease)."""
    detail = f"{type(exc).__name__}: {exc}" if exc is not None else "unknown"
    if isinstance(exc, NoAuthError):
        return ev.Failure.NO_AUTH, (
            f"ZooKeeper refused {identity or 'this client'} on {path or 'the election path'} (NoAuth): a wrong "
            "password is a different identity; check zookeeper.auth and the ACL of the election path")
    if isinstance(exc, InvalidACLError):
        # Permanent: retrying the create every second would only hammer the server.
        return ev.Failure.NO_AUTH, (
            f"ZooKeeper refused the ACL configured in zookeeper.acl for {path or 'the election path'} "
            f"(InvalidACL) for {identity or 'this client'}: the server does not see the identity it names")
    if isinstance(exc, (ConnectionLoss, SessionExpiredError, OperationTimeoutError, AuthFailedError)):
        return ev.Failure.CONNECTION, detail
    if isinstance(exc, NoNodeError):
        return ev.Failure.NO_NODE, detail
    if isinstance(exc, NodeExistsError):
        return ev.Failure.NODE_EXISTS, detail
    if isinstance(exc, ZookeeperError):
        return ev.Failure.SERVER_ERROR, detail
    return ev.Failure.CONNECTION, detail
