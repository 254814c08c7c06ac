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
import time
from collections.abc import Callable
from typing import Any

import structlog
from kazoo.client import KazooClient, KazooState
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

from . import actions as act
from . import events as ev
from . import security
from .config import ZooKeeperConfig

Post = Callable[[ev.Event], None]

#: Reconnect backoff cap: a leader riding through an outage must get back well inside
#: its lease, so the cap is a small fraction of the session timeout.
RECONNECT_CAP_FRACTION = 0.2


class ZooKeeperShell:
    def __init__(self, config: ZooKeeperConfig, post: Post, clock: Callable[[], float] = time.monotonic) -> None:
        self._post = post
        self._clock = clock
        self._attempts = 0
        self._negotiated: float | None = None
        self._config = config
        self._log = structlog.get_logger()
        self._acl_checked = config.acl == "open"
        self._auth_failed = False
        max_delay = max(0.2, min(2.0, config.session_timeout * RECONNECT_CAP_FRACTION))
        self.client = KazooClient(
            hosts=config.connection_string,
            timeout=config.session_timeout,
            connection_retry={"max_tries": -1, "delay": 0.1, "backoff": 2, "max_delay": max_delay},
            logger=logging.getLogger("kazoo"),
            **security.client_options(config),
        )
        self.client.add_listener(self._on_state)
        if config.tls is not None:
            security.guard_tls(self.client._connection, len(config.hosts), self._on_tls_rejected)
        self._instrument_connection()
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
            case act.CreateNode(request_id=rid, path_prefix=prefix, data=data):
                self._check_election_acl(prefix.rsplit("/", 1)[0] or "/")
                result = self.client.create_async(prefix, data, ephemeral=True, sequence=True, makepath=True)
                self._reply(result, rid, sent_at, lambda path: ev.Created(rid, sent_at, path), prefix)
            case act.ListChildren(request_id=rid, path=path):
                result = self.client.get_children_async(path)
                self._reply(result, rid, sent_at, lambda children: ev.ChildrenListed(rid, sent_at, tuple(children)), path)
            case act.CheckNode(request_id=rid, path=path, watch=watch, sync=sync):
                # Pipelined: ZooKeeper answers one session's requests in order, and a
                # read after a sync waits for it, so the exists reply comes last.
                synced = self.client.sync_async(path) if sync else None
                result = self.client.exists_async(path, watch=self._on_watch if watch else None)
                self._reply(result, rid, sent_at, lambda stat: ev.NodeChecked(rid, sent_at, _stat(stat), sync), path,
                            prerequisite=synced)
            case act.PublishLeadership(request_id=rid, path=path, data=data):
                stamped = {**data, "leader_since": _wall_clock()}
                result = self.client.set_async(path, json.dumps(stamped, separators=(",", ":")).encode())
                self._reply(result, rid, sent_at, lambda _: ev.DataSet(rid, sent_at), path)
            case act.DeleteNode(request_id=rid, path=path):
                result = self.client.delete_async(path)
                self._reply(result, rid, sent_at, lambda _: ev.Deleted(rid, sent_at), path)
            case act.CloseSession():
                self.close()
            case _:
                raise TypeError(f"not a ZooKeeper action: {action!r}")

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
            self._attempts = 0
            timeout = self._negotiated if self._negotiated is not None else self.client._session_timeout / 1000
            self._post(
                ev.Connected(
                    session_id=self.client._session_id or 0,
                    negotiated_timeout=timeout,
                    read_only=self.client.client_state == KeeperState.CONNECTED_RO,
                )
            )
        elif state == KazooState.SUSPENDED:
            self._post(ev.Suspended())
        elif self.client.client_state == KeeperState.AUTH_FAILED:
            self._post_auth_failed()
        else:
            self._post(ev.SessionLost(reason=str(self.client.client_state).lower()))

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
        configured = security.kazoo_acl(self._config) or []
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
                self._log.warning("election_acl_open", path=path, acl=security.describe_acl(acls),
                                  configured=security.describe_acl(configured),
                                  problem="the election path existed with a more open ACL than zookeeper.acl, "
                                          "and zkleader never changes an existing node's ACL: anyone can delete "
                                          "or insert election nodes; fix it with setAcl or recreate the path")

        self.client.get_acls_async(path).rawlink(done)

    def _instrument_connection(self) -> None:
        """kazoo keeps the negotiated session timeout to itself. The server may grant a
        shorter one than we asked for (maxSessionTimeout), and the lease must use what
        was granted, so read it from the connect reply as it passes. Also count attempts
        for the logs. Pinned to kazoo 2.11's private ConnectionHandler (tested)."""
        connection = self.client._connection
        original_connect = connection._connect
        original_invoke = connection._invoke

        def connect(host: str, hostip: str, port: int) -> Any:
            self._attempts += 1
            self._post(ev.ConnectionAttempt(f"{host}:{port}", self._attempts))
            return original_connect(host, hostip, port)

        def invoke(timeout: float, request: Any, xid: int | None = None) -> Any:
            answer = original_invoke(timeout, request, xid)
            connect_result = answer[0] if isinstance(answer, tuple) else None
            if connect_result is not None and hasattr(connect_result, "time_out"):
                self._negotiated = connect_result.time_out / 1000
            return answer

        connection._connect = connect
        connection._invoke = invoke

    def _stop_and_close(self) -> None:
        try:
            self.client.stop()
            self.client.close()
        except Exception:  # closing is best effort: the session expires on its own
            logging.getLogger("kazoo").debug("close failed", exc_info=True)


def _wall_clock() -> str:
    return datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="milliseconds")


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
    if isinstance(exc, NoAuthError):
        return ev.Failure.NO_AUTH, detail
    if isinstance(exc, ZookeeperError):
        return ev.Failure.SERVER_ERROR, detail
    return ev.Failure.CONNECTION, detail
