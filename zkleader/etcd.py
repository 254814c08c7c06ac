"""The etcd shell: executes the core's requests against etcd v3 with etcd-sdk-python
(gRPC) and turns the answers, the watches and the lease's keep-alives into the very
events ``ZooKeeperShell`` posts, so that the core cannot tell the two apart.

The mapping (README, "How it elects", for ZooKeeper):

* **session = lease.** The shell grants one lease of ``lease_ttl`` seconds (T) when it
  first connects; ``Connected.session_id`` is the lease id and
  ``negotiated_timeout`` the TTL the server granted (etcd raises a TTL below its
  minimum, ceil(1.5 x election timeout), as ZooKeeper clamps a session timeout). A
  keep-alive goes out every T/3 of the connection's life, as kazoo pings after T/3 of
  silence; unlike a ZooKeeper session, plain requests do not keep a lease alive. A
  keep-alive answered with TTL 0 means the lease is gone: ``SessionLost``, then a new
  lease (kazoo likewise opens a new session after LOST).
* **node = key.** ``CreateNode(prefix)`` puts the key ``prefix`` (the candidacy id is
  fresh, so the key is unique) in one transaction: if its create revision is 0 (it does
  not exist), put it with the lease; else read it. ZooKeeper's sequence number is the
  key's **create revision**, which etcd assigns at the put: the shell names the node
  ``<key's last segment><create revision, %010d>`` (ten digits, more past 9999999999), the shape
  ``core/candidacy.py`` parses, and maps such a name back to its key (a name whose
  revision is not the key's create revision names a node that no longer exists).
  Create revisions are unique and grow with every write of the whole cluster, so the
  lowest one is the oldest candidate, as with sequence numbers. A create whose reply
  was lost and that is sent again finds its key in the failure branch, owned by our
  lease, and answers ``Created`` for it: no ghost.
* **children = a range** over ``<path>/`` (direct children only), serializable unless
  the core asks for sync, then linearizable (a read through the raft leader's quorum
  plays the role of ZooKeeper's sync).
* **exists + watch** = a get of the key, then a watch on that one key from the
  revision after the get's (no event between the two can be missed), fired once and
  cancelled like ZooKeeper's one-shot watch: DELETED for a delete, CHANGED for a put.
  Never a watch on the prefix: one leader change wakes one daemon.
* **NodeStat**: ``czxid`` is the key's create revision (the fencing token: it grows
  with every new leadership), ``ephemeral_owner`` its lease id (0 for a key without a
  lease), compared with the lease id that ``Connected`` reported.
* **connection loss**: a request that fails for want of an answer (UNAVAILABLE,
  DEADLINE_EXCEEDED, a broken stream) suspends the connection: ``Suspended``, every
  armed watch fires once with ``WatchKind.CONNECTION`` and is forgotten (as kazoo
  does), and the shell reconnects to the next endpoint, keeping the lease if a
  keep-alive finds it alive (``Connected`` with the same id) or reporting
  ``SessionLost``.

**The heartbeat (the lease clock's anchor).** ``CheckNode(sync=True)`` sends a lease
keep-alive, waits for its answer, then reads the key linearizably, over the same
connection. Only the etcd leader's lessor renews a lease (a follower forwards the
keep-alive to it) and it sets the expiry to *its* now + TTL, so an answered keep-alive
sent at ``s`` means the lease lasts at least until ``s + TTL`` on that leader's clock.
A leader that was deposed but has not yet noticed may still renew; etcd covers that by
extending every lease by one election timeout when a new leader takes over
(etcd-io/etcd#4778; measured: tests/test_etcd_shell.py, tests/etcd-timing.md).
The linearizable read sent after the keep-alive's answer must succeed for the
heartbeat to count: it needs the member's leader to confirm its leadership with a
quorum after the renewal, so a renewal by a leader cut off from its quorum (etcd <
3.4.28 lets a stalled old leader renew, etcd-io/etcd#15247) is never counted. So
``NodeChecked.relayed_at`` is the keep-alive's send time. ZooKeeper needs the
``tickTime/2`` relay allowance (timing.relayed_anchor) because a follower reports
session touches to its leader late; an etcd keep-alive is answered only after the
leader renewed, so no allowance applies.

Requests run one at a time, in the order the core sent them, on one worker thread:
ZooKeeper answers one session's requests in order and the core relies on that (a
listing's answer before the heartbeat pipelined behind it). Every call carries a
deadline of T/3, so a silent server holds the worker no longer than kazoo's own ping
deadline would. Callbacks only stamp the time and post events; nothing here blocks the
daemon's loop.
"""

from __future__ import annotations

import dataclasses
import datetime
import json
import queue
import random
import re
import threading
import time
from collections.abc import Callable
from typing import Any

import grpc  # type: ignore[import-untyped]
import pyetcd  # type: ignore[import-untyped]
import structlog
from pyetcd import exceptions as etcd_errors  # type: ignore[import-untyped]

from . import clock
from .config import EtcdConfig
from .core import actions as act
from .core import events as ev
from .post import Post

#: Told the lease id on each connect, and None when the lease ends or is closed
#: (the same listener ZooKeeperShell takes; the password is always empty here).
SessionListener = Callable[[int | None, bytes], None]

#: A node path: the key (it ends with "-"), then its create revision as %010d prints
#: it (ten digits, up to nineteen for a 64-bit revision), the shape core/candidacy.py parses.
_NODE_PATH = re.compile(r"^(.*-)(\d{10}|[1-9]\d{10,18})$")


@dataclasses.dataclass(eq=False)
class _Armed:
    """One watch: fired at most once, by its first event or by the connection's loss."""

    path: str
    watch_id: int | None = None


class _Gone(Exception):
    """The lease no longer exists on the server (a keep-alive answered TTL 0)."""


class EtcdShell:
    def __init__(self, config: EtcdConfig, post: Post, clock: Callable[[], float] = clock.now,
                 on_session: SessionListener | None = None) -> None:
        self._config = config
        self._post = post
        self._clock = clock
        self._on_session = on_session
        self._log = structlog.get_logger()
        self._timeout = config.lease_ttl / 3
        self._work: queue.Queue[Callable[[], None] | None] = queue.Queue()
        self._lock = threading.Lock()
        self._client: Any = None  # pyetcd.Etcd3Client while connected
        self._lease: int | None = None
        self._ttl: int = config.lease_ttl
        # A random first endpoint, as kazoo shuffles its hosts: daemons spread over members.
        self._next_endpoint = random.randrange(len(config.endpoints))
        self._endpoint: str | None = None
        self._checked_endpoints: set[str] = set()
        self._attempt = 0
        self._closed = threading.Event()
        self._connected = threading.Event()
        #: Every watch armed on the current connection and not fired yet.
        self._watches: set[_Armed] = set()
        self._worker = threading.Thread(target=self._run, name="etcd-worker", daemon=True)
        self._pinger = threading.Thread(target=self._keep_alive_loop, name="etcd-keepalive", daemon=True)

    # ------------------------------------------------------------ the shell's surface

    def start(self) -> None:
        """Connects in the background, retrying forever (each attempt is posted)."""
        self._work.put(self._connect)
        self._worker.start()
        self._pinger.start()

    def close(self, timeout: float = 2.0) -> None:
        """Revokes the lease (its keys go at once) and closes the connection. Bounded:
        a partitioned client gives up after ``timeout`` and the lease expires on its own."""
        closer = threading.Thread(target=self._revoke_and_close, name="etcd-close", daemon=True)
        closer.start()
        closer.join(timeout)
        self._closed.set()
        self._work.put(None)

    @property
    def endpoint(self) -> str | None:
        """The endpoint of the current connection (None while disconnected)."""
        with self._lock:
            return self._endpoint if self._client is not None else None

    def execute(self, action: act.Action) -> None:
        sent_at = self._clock()
        match action:
            case act.CreateNode(request_id=rid, path_prefix=prefix, data=payload, sequential=True):
                self._submit(rid, sent_at, prefix, lambda client: self._create(client, rid, sent_at, prefix, payload))
            case act.CreateNode(request_id=rid, path_prefix=path, data=payload, ephemeral=ephemeral):
                self._submit(rid, sent_at, path,
                             lambda client: self._create_marker(client, rid, sent_at, path, payload, ephemeral))
            case act.ReadNodes(request_id=rid, paths=paths):
                # Always linearizable: an unsynced read counts on the sync ahead of it on the
                # same connection (preference.confirm), and a reconnect between the two can
                # move this one to another member, which may lag behind.
                self._submit(rid, sent_at, paths[0], lambda client: self._read(client, rid, sent_at, paths))
            case act.ListChildren(request_id=rid, path=path, sync=sync):
                self._submit(rid, sent_at, path, lambda client: self._list(client, rid, sent_at, path, sync))
            case act.CheckNode(request_id=rid, path=path, watch=watch, sync=sync):
                self._submit(rid, sent_at, path, lambda client: self._check(client, rid, sent_at, path, watch, sync))
            case act.PublishLeadership(request_id=rid, path=path, data=data):
                stamped = json.dumps({**data, "leader_since": _wall_clock()}, separators=(",", ":")).encode()
                self._submit(rid, sent_at, path, lambda client: self._publish(client, rid, sent_at, path, stamped))
            case act.DeleteNode(request_id=rid, path=path):
                self._submit(rid, sent_at, path, lambda client: self._delete(client, rid, sent_at, path))
            case act.CloseSession():
                self._tell_session(None)
                self.close()
            case act.DropConnection():
                # Closed here, as kazoo closes its socket: a request stuck on the silent
                # server fails now instead of at its deadline; the worker reconnects.
                with self._lock:
                    client = self._client
                if client is not None:
                    client.close()
                    self._work.put(lambda: self._connection_failed(client, "dropped on request"))
            case _:
                raise TypeError(f"not an etcd action: {action!r}")

    # ------------------------------------------------------------ requests (worker thread)

    def _submit(self, request_id: int, sent_at: float, path: str, call: Callable[[Any], ev.Event]) -> None:
        """Queues ``call`` for the worker; while no connection stands it waits there, as
        kazoo queues requests made while connecting."""

        def run() -> None:
            self._connected.wait()
            with self._lock:
                client = self._client
            if client is None:  # lost again meanwhile, or closed
                self._post(ev.RequestFailed(request_id, sent_at, ev.Failure.CONNECTION, "not connected"))
                return
            try:
                self._post(call(client))
            except _Gone:
                self._post(ev.RequestFailed(request_id, sent_at, ev.Failure.CONNECTION, "the lease expired"))
                self._lease_gone(client)
            except Exception as err:  # every failure becomes an event; none may kill the worker
                failure, detail = _failure(err, path)
                self._post(ev.RequestFailed(request_id, sent_at, failure, detail))
                if failure is ev.Failure.CONNECTION:
                    self._connection_failed(client, detail)

        self._work.put(run)

    def _create(self, client: Any, rid: int, sent_at: float, prefix: str, data: bytes) -> ev.Event:
        txn = client.transactions
        created, answers = client.transaction(
            compare=[txn.create(prefix) == 0],
            success=[txn.put(prefix, data, self._lease)],
            failure=[txn.get(prefix)])
        if created:
            revision = answers[0].response_put.header.revision
        else:
            (_value, meta), = answers[0]
            if meta.lease_id != self._lease:
                return ev.RequestFailed(rid, sent_at, ev.Failure.NODE_EXISTS,
                                        f"{prefix} exists and belongs to lease {meta.lease_id:x}")
            revision = meta.create_revision  # our own create, whose reply was lost
        return ev.Created(rid, sent_at, node_path(prefix, revision))

    def _create_marker(self, client: Any, rid: int, sent_at: float, path: str, data: bytes,
                       ephemeral: bool) -> ev.Event:
        """A marker (core/preference.py, core/drain.py) at ``path`` itself: with our lease
        when ephemeral (it goes with the session, as an ephemeral znode), else with no
        lease at all (it outlives every session). One transaction, so that of two
        daemons poking at once exactly one creates it and the other hears NODE_EXISTS,
        as from ZooKeeper. No lost-reply check as for a candidacy key: where it matters
        whose a marker is (the leader's claim, core/claim.py), the core reads its owner
        (``ephemeral_owner``, the key's lease) itself."""
        txn = client.transactions
        put = txn.put(path, data, self._lease) if ephemeral else txn.put(path, data)
        created, _ = client.transaction(compare=[txn.create(path) == 0], success=[put], failure=[])
        if not created:
            return ev.RequestFailed(rid, sent_at, ev.Failure.NODE_EXISTS, f"{path} exists")
        return ev.Created(rid, sent_at, path)

    def _read(self, client: Any, rid: int, sent_at: float, paths: tuple[str, ...]) -> ev.Event:
        """Each key's value, None where it does not exist. Every get is linearizable
        (etcd's counterpart of a sync before ZooKeeper's reads): the answer is at least
        as new as every write committed before the read was sent."""
        data = []
        for path in paths:
            answer = client.get_response(path, serializable=False)
            data.append(bytes(answer.kvs[0].value) if answer.kvs else None)
        return ev.NodesRead(rid, sent_at, tuple(data))

    def _list(self, client: Any, rid: int, sent_at: float, path: str, sync: bool) -> ev.Event:
        parent = path.rstrip("/") + "/"
        answer = client.get_prefix_response(parent, serializable=not sync, keys_only=True,
                                            sort_target="create", sort_order="ascend")
        children = []
        for kv in answer.kvs:
            rest = kv.key.decode("utf-8", "replace")[len(parent):]
            if "/" not in rest:  # ZooKeeper lists direct children only
                children.append(rest + sequence(kv.create_revision))
        return ev.ChildrenListed(rid, sent_at, tuple(children))

    def _check(self, client: Any, rid: int, sent_at: float, path: str, watch: bool, sync: bool) -> ev.Event:
        key, revision = node_key(path)
        relayed_at = None
        if sync:
            relayed_at = self._clock()
            if self._keep_alive(client) <= 0:
                raise _Gone()
        answer = client.get_response(key, serializable=not sync)
        kv = answer.kvs[0] if answer.kvs else None
        stat = None
        if kv is not None and (revision is None or kv.create_revision == revision):
            stat = ev.NodeStat(czxid=kv.create_revision, ephemeral_owner=kv.lease)
        if watch:
            self._watch(client, path, key, answer.header.revision + 1)
        return ev.NodeChecked(rid, sent_at, stat, sync, relayed_at)

    def _publish(self, client: Any, rid: int, sent_at: float, path: str, data: bytes) -> ev.Event:
        client.put(path, data)
        return ev.DataSet(rid, sent_at)

    def _delete(self, client: Any, rid: int, sent_at: float, path: str) -> ev.Event:
        key, revision = node_key(path)
        txn = client.transactions
        compare = [txn.create(key) == revision] if revision is not None else [txn.create(key) > 0]
        deleted, _ = client.transaction(compare=compare, success=[txn.delete(key)], failure=[])
        if not deleted:
            return ev.RequestFailed(rid, sent_at, ev.Failure.NO_NODE, f"{path} does not exist")
        return ev.Deleted(rid, sent_at)

    # ------------------------------------------------------------ watches

    def _watch(self, client: Any, path: str, key: str, start_revision: int) -> None:
        """One-shot: the first event on ``key`` at or after ``start_revision`` fires it,
        then the watch is cancelled. A watch on a key that did not exist fires on its
        creation, as ZooKeeper's exists watch does. Armed before the server confirms it,
        so that a connection lost meanwhile fires it too."""
        armed = _Armed(path)
        with self._lock:
            self._watches.add(armed)

        def on_event(response: Any) -> None:
            """pyetcd's watch thread: a response with events, or the error (or None)
            that ended the stream."""
            if response is None or isinstance(response, Exception):
                with self._lock:
                    current = self._client is client
                if current:
                    self._work.put(lambda: self._connection_failed(client, f"watch stream ended: {response!r}"))
                return
            if not response.events:
                return
            with self._lock:
                first = armed in self._watches
                self._watches.discard(armed)
            if first:
                deleted = isinstance(response.events[0], pyetcd.events.DeleteEvent)
                self._post(ev.WatchFired(path, ev.WatchKind.DELETED if deleted else ev.WatchKind.CHANGED))
                if armed.watch_id is not None:
                    try:
                        client.cancel_watch(armed.watch_id)
                    except Exception:  # noqa: BLE001
                        # pyetcd marked this client failed ("Trying to use a failed
                        # node"): its streams die with it, and the shell replaces it on
                        # the failure it is reporting anyway. Seen in join storms of
                        # 1,000 candidates (bench), logged by pyetcd as a traceback.
                        pass

        try:
            armed.watch_id = client.add_watch_callback(key, on_event, start_revision=start_revision)
        except Exception:
            with self._lock:
                self._watches.discard(armed)
            raise

    # ------------------------------------------------------------ the lease and the connection

    def _keep_alive(self, client: Any) -> int:
        """One keep-alive of our lease: the TTL the etcd leader answered (0: gone)."""
        answers = list(client.refresh_lease(self._lease))
        return int(answers[0].TTL) if answers else 0

    def _connect(self) -> None:
        """Worker thread: tries the endpoints in turn, with kazoo's backoff (0.1 s,
        doubling, at most T/3) after each full round, until one answers; then keeps or
        replaces the lease and posts Connected."""
        delay = 0.1
        while not self._closed.is_set():
            for _ in self._config.endpoints:
                endpoint = self._config.endpoints[self._next_endpoint % len(self._config.endpoints)]
                self._next_endpoint += 1
                self._attempt += 1
                self._post(ev.ConnectionAttempt(endpoint, self._attempt))
                if self._connect_to(endpoint):
                    return
            self._closed.wait(delay)
            delay = min(delay * 2, self._timeout)

    def _connect_to(self, endpoint: str) -> bool:
        client = None
        try:
            client = connect(self._config, endpoint, self._timeout)
            if self._lease is not None and self._keep_alive(client) <= 0:
                lost = self._lease
                self._lease = None
                self._tell_session(None)
                self._post(ev.SessionLost(reason=f"lease {lost:x} expired"))
            if self._lease is None:
                lease = client.lease(self._config.lease_ttl)
                self._lease, self._ttl = lease.id, int(lease.ttl)
            if endpoint not in self._checked_endpoints:
                self._check_version(endpoint, client.status().version)
                self._checked_endpoints.add(endpoint)
        except Exception as err:  # any failure: try the next endpoint
            failure, detail = _failure(err)
            if failure is ev.Failure.NO_AUTH:
                self._log.error("etcd_auth_failed", endpoint=endpoint, detail=detail)
                self._post(ev.AuthFailed())
                self._closed.set()
            else:
                self._log.debug("etcd_connect_failed", endpoint=endpoint, detail=detail)
            if client is not None:
                client.close()
            return self._closed.is_set()
        with self._lock:
            self._client, self._endpoint = client, endpoint
        self._connected.set()
        self._tell_session(self._lease)
        self._post(ev.Connected(session_id=self._lease, negotiated_timeout=float(self._ttl)))
        return True

    def _check_version(self, endpoint: str, version: str) -> None:
        """Once per endpoint, as the ZooKeeper shell checks tickTime: a warning, never a
        refusal (the server may be upgraded under us, and refusing would be an outage)."""
        if revokes_live_leases(version):
            self._log.warning(
                "etcd_revokes_live_leases", endpoint=endpoint, version=version,
                problem=f"etcd {version} at {endpoint} lets a leader that stalled (slow disk, CPU starvation, "
                        "a paused VM) for longer than the lease TTL revoke, once it runs again, leases that the "
                        "new leader kept alive (etcd-io/etcd#15247): the leader's key can vanish while its job "
                        "runs; upgrade etcd to 3.4.30, 3.5.13 or later")

    def _connection_failed(self, client: Any, detail: str) -> None:
        """Worker thread: the connection ``client`` stopped answering. Once per
        connection: Suspended, every armed watch fired with CONNECTION, then reconnect."""
        with self._lock:
            if self._client is not client:
                return
            self._client = None
            self._connected.clear()
            watches, self._watches = [armed.path for armed in self._watches], set()
        self._log.info("etcd_connection_lost", detail=detail)
        self._post(ev.Suspended())
        for path in watches:
            self._post(ev.WatchFired(path, ev.WatchKind.CONNECTION))
        client.close()
        self._connect()

    def _lease_gone(self, client: Any) -> None:
        """A keep-alive found the lease gone: tell the core, then start over on a new
        lease through the same reconnect path (kazoo's LOST, then a new session)."""
        self._connection_failed(client, "the lease expired")

    def _keep_alive_loop(self) -> None:
        """Every T/3: a keep-alive over the current connection (kazoo pings after T/3 of
        silence). A failure hands the connection to the worker to replace; TTL 0 too."""
        while not self._closed.wait(self._config.lease_ttl / 3):
            with self._lock:
                client = self._client
            if client is None:
                continue
            try:
                alive = self._keep_alive(client) > 0
                detail = "the lease expired"
            except Exception as err:
                alive, detail = False, _failure(err)[1]
            if not alive:
                self._work.put(lambda c=client, d=detail: self._connection_failed(c, d))  # type: ignore[misc]

    def _run(self) -> None:
        while (item := self._work.get()) is not None:
            if not self._closed.is_set():
                item()

    def _revoke_and_close(self) -> None:
        with self._lock:
            client, self._client = self._client, None
            self._connected.set()  # release queued requests: they fail as not connected
        lease, self._lease = self._lease, None
        if client is None:
            return
        try:
            if lease is not None:
                client.revoke_lease(lease)
        except Exception as err:  # best effort: the lease expires on its own
            self._log.debug("etcd_revoke_failed", detail=_failure(err)[1])
        finally:
            client.close()
        if lease is not None:
            self._post(ev.SessionLost(reason="closed"))

    def _tell_session(self, lease: int | None) -> None:
        if self._on_session is not None:
            self._on_session(lease, LEASE_PASSWORD)


#: The first release of each line with the fix for etcd-io/etcd#15247 (etcd-io/etcd#16822,
#: backported to 3.4 by #17465 and to 3.5); 3.6 was released with it.
_FIXED_LEASE_REVOKE: dict[tuple[int, ...], tuple[int, ...]] = {(3, 4): (3, 4, 30), (3, 5): (3, 5, 13)}


#: The "password" of a lease, passed with its id to the session listener: the guardian's
#: protocol (``session ID PASSWORD``, guardian.py) and systemd's fd store (fdstore.py)
#: carry one, and a lease has none. release.py revokes a lease by its id alone.
LEASE_PASSWORD = b"lease"


def connect(config: EtcdConfig, endpoint: str, timeout: float) -> Any:
    """A new pyetcd client for ``endpoint`` ("host:port") with the section's TLS and
    user (authenticated here, in the constructor): one per connection, since pyetcd
    marks a client failed for 300 s after its first connection error."""
    host, _, port = endpoint.rpartition(":")
    tls, auth = config.tls, config.auth
    return pyetcd.client(
        host=host, port=int(port), timeout=timeout,
        ca_cert=tls.ca if tls else None, cert_key=tls.key if tls else None, cert_cert=tls.cert if tls else None,
        user=auth.username if auth else None, password=auth.password.reveal() if auth and auth.password else None)


def revoke(config: EtcdConfig, lease: int, within: float) -> bool:
    """Revokes ``lease`` through the first endpoint that answers, trying them in turn
    for at most ``within`` seconds (release.py: a dead daemon's lease, whose keys then
    go at once). True when the lease is gone, revoked now or already expired."""
    deadline = time.monotonic() + within
    while True:
        for endpoint in config.endpoints:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                return False
            client = None
            try:
                client = connect(config, endpoint, min(remaining, max(config.lease_ttl / 3, 0.5)))
                client.revoke_lease(lease)
                return True
            except grpc.RpcError as err:
                if err.code() is grpc.StatusCode.NOT_FOUND:  # type: ignore[attr-defined]
                    return True  # expired already: nothing left to release
            except Exception:  # this endpoint does not answer: the next one
                pass
            finally:
                if client is not None:
                    client.close()
        time.sleep(min(0.1, max(0.0, deadline - time.monotonic())))


def revokes_live_leases(version: str) -> bool:
    """Whether etcd ``version`` (as Status reports it, "3.4.23") has the stalled-leader
    lease revocation: measured on Debian 12's 3.4.23 (tests/etcd-timing.md)."""
    numbers = tuple(int(n) for n in re.findall(r"\d+", version)[:3])
    if len(numbers) < 3:
        return False
    fixed = _FIXED_LEASE_REVOKE.get(numbers[:2])
    return numbers[:2] < (3, 4) or (fixed is not None and numbers < fixed)


def node_path(prefix: str, create_revision: int) -> str:
    """The node's name as the core knows it: the key, then its create revision."""
    return prefix + sequence(create_revision)


def sequence(create_revision: int) -> str:
    """A create revision as the sequence suffix core/candidacy.py parses (%010d: ten
    digits or more; the core reads a non-negative sequence whole, 64 bits)."""
    return f"{create_revision:010d}"


def node_key(path: str) -> tuple[str, int | None]:
    """The key of a node path, and the create revision its name carries (None for a
    path that is not a node's, such as the election path's own key)."""
    match = _NODE_PATH.match(path)
    if match:
        return match.group(1), int(match.group(2))
    return path, None


def _wall_clock() -> str:
    return datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="milliseconds")


def _failure(exc: BaseException, path: str = "") -> tuple[ev.Failure, str]:
    """Only an error etcd itself sent counts as an answer. pyetcd turns UNAVAILABLE and
    DEADLINE_EXCEEDED into its own exceptions and lets other gRPC errors through."""
    detail = f"{type(exc).__name__}: {exc}"
    if isinstance(exc, (etcd_errors.ConnectionFailedError, etcd_errors.ConnectionTimeoutError,
                        etcd_errors.WatchTimedOut, etcd_errors.NoServerAvailableError)):
        return ev.Failure.CONNECTION, detail
    if isinstance(exc, grpc.RpcError):
        code, message = exc.code(), exc.details() or ""  # type: ignore[attr-defined]
        detail = f"{code.name}: {message}"
        if code is grpc.StatusCode.PERMISSION_DENIED or "authentication failed" in message:
            return ev.Failure.NO_AUTH, (
                f"etcd refused {path or 'the request'} ({message}): check etcd.username, the password "
                "file and the user's role on the election prefix")
        if code in (grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.DEADLINE_EXCEEDED, grpc.StatusCode.CANCELLED,
                    grpc.StatusCode.UNAUTHENTICATED):  # an expired auth token: a reconnect authenticates again
            return ev.Failure.CONNECTION, detail
        return ev.Failure.SERVER_ERROR, detail
    if isinstance(exc, etcd_errors.Etcd3Exception):
        return ev.Failure.SERVER_ERROR, detail
    return ev.Failure.CONNECTION, detail
