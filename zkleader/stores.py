"""The store the operator commands (status.py) read and write: ZooKeeper through kazoo,
or etcd through etcd-sdk-python, behind one small interface (in the spirit of
Patroni's AbstractDCS).

The commands never speak a store's protocol themselves: they ask for the election's
candidates, a node's data with its fencing token and owner, the leader record and the
markers, and create or delete a marker. Each implementation addresses these exactly as
its daemon's shell does (zookeeper.py, etcd.py), so that what `zkleader drain` creates
is what the daemon watches and what `status` lists is what the daemons' listing sees.
``connect`` picks the implementation from the configuration's section.
"""

from __future__ import annotations

import abc
import contextlib
import logging
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

from kazoo.client import KazooClient  # type: ignore[import-untyped]
from kazoo.exceptions import NoAuthError, NodeExistsError, NoNodeError  # type: ignore[import-untyped]

from .config import Config, EtcdConfig
from .connection import Client, TlsRefusals, client_options


class Unreachable(Exception):
    """The store did not answer in time."""


class Refused(Unreachable):
    """The store answered but refused us: TLS, the credentials or the election path's
    ACL (ZooKeeper) or the user's role (etcd). The message says which and never
    contains a secret."""


@dataclass(frozen=True)
class Node:
    """A node (ZooKeeper) or key (etcd) as the commands need it."""

    data: bytes
    #: The fencing token: the creating transaction's zxid (ZooKeeper) or the key's create
    #: revision (etcd); the daemon whose node this is leads with this token.
    token: int
    #: The session (ZooKeeper) or lease (etcd) that owns it; 0 when none does (a
    #: persistent node or a key without a lease: made by hand, not by a daemon).
    owner: int
    #: When it was created, in seconds since the epoch by the store's clock. None where
    #: the store does not keep it (etcd keeps no time for a key, only revisions).
    created: float | None


class Store(abc.ABC):
    """What `status`, `resign`, `drain` and `freeze` need from a store. Paths are
    ZooKeeper paths; an implementation maps them as its daemon's shell does. Every
    method raises Unreachable when the store stops answering and Refused when it
    refuses us."""

    #: The store's name for messages ("ZooKeeper", "etcd").
    kind: str
    #: The servers as configured, for messages and `status`.
    address: str

    @abc.abstractmethod
    def candidates(self, path: str) -> tuple[str, ...]:
        """The names of the election's children as the daemons' listing shows them
        (core/candidacy.py parses them); () when the election does not exist yet."""

    @abc.abstractmethod
    def candidate(self, path: str, name: str) -> Node | None:
        """The election child ``name`` (one of ``candidates``); None once it is gone."""

    @abc.abstractmethod
    def get(self, path: str) -> Node | None:
        """A node that is not a candidate (the election's own, a marker); None if absent."""

    @abc.abstractmethod
    def markers(self, path: str) -> tuple[str, ...]:
        """The names of the markers under ``path`` (the drained candidates), sorted."""

    @abc.abstractmethod
    def create(self, path: str, data: bytes) -> bool:
        """Create the persistent marker ``path`` (it outlives every session, as a drain
        or a freeze must); False when it exists already. Atomic: of two commands at
        once, one creates it."""

    @abc.abstractmethod
    def delete(self, path: str) -> bool:
        """Delete the marker ``path``; False when it did not exist."""


@contextlib.contextmanager
def connect(config: Config, timeout: float, path: str, creates: bool) -> Iterator[Store]:
    """A store connected with the daemon's credentials and TLS settings, closed on exit.
    ``path`` and ``creates`` only word a refusal (and, on ZooKeeper, keep zookeeper.acl
    for what the command creates, so that a marker carries the daemons' ACL)."""
    if config.etcd is not None:
        with _etcd(config, timeout, path, creates) as store:
            yield store
    else:
        with _zookeeper(config, timeout, path, creates) as store:
            yield store


# ---------------------------------------------------------------------- ZooKeeper


def _quiet_logger() -> logging.Logger:
    """kazoo's retry chatter would bury the one-line answer of a command."""
    logger = logging.getLogger("zkleader.command.kazoo")
    logger.propagate = False
    if not logger.handlers:
        logger.addHandler(logging.NullHandler())
    return logger


class ZooKeeperStore(Store):
    """The election's znodes through a connected kazoo client."""

    kind = "ZooKeeper"

    def __init__(self, client: KazooClient, address: str) -> None:
        self._client = client
        self.address = address

    def candidates(self, path: str) -> tuple[str, ...]:
        try:
            return tuple(self._client.get_children(path))
        except NoNodeError:
            return ()

    def candidate(self, path: str, name: str) -> Node | None:
        return self.get(f"{path}/{name}")

    def get(self, path: str) -> Node | None:
        try:
            data, stat = self._client.get(path)
        except NoNodeError:
            return None
        return Node(data, stat.czxid, stat.ephemeralOwner, stat.ctime / 1000)

    def markers(self, path: str) -> tuple[str, ...]:
        return tuple(sorted(self.candidates(path)))

    def create(self, path: str, data: bytes) -> bool:
        try:
            self._client.create(path, data, makepath=True)
        except NodeExistsError:
            return False
        return True

    def delete(self, path: str) -> bool:
        try:
            self._client.delete(path)
        except NoNodeError:
            return False
        return True


@contextlib.contextmanager
def _zookeeper(config: Config, timeout: float, path: str, creates: bool) -> Iterator[Store]:
    zookeeper = config.zookeeper
    options = client_options(zookeeper)
    if not creates:
        options.pop("default_acl", None)
    refused: list[str] = []
    gave_up = threading.Event()

    def on_rejected(reason: str, final: bool) -> None:
        refused.append(reason)
        if final:
            gave_up.set()

    tls = TlsRefusals(len(zookeeper.hosts), on_rejected) if zookeeper.tls is not None else None
    client = Client(clock=time.monotonic, tls=tls, hosts=zookeeper.connection_string,
                    timeout=max(zookeeper.session_timeout, 4.0), logger=_quiet_logger(), **options)
    connected = client.start_async()
    deadline = time.monotonic() + timeout
    while not connected.is_set() and not gave_up.is_set() and time.monotonic() < deadline:
        connected.wait(0.05)
    if not client.connected:
        client.stop()
        client.close()
        if refused:
            raise Refused(f"ZooKeeper at {zookeeper.connection_string} refused TLS: {refused[-1]}")
        raise Unreachable(f"ZooKeeper at {zookeeper.connection_string} did not answer within {timeout:g}s") from None
    try:
        yield ZooKeeperStore(client, zookeeper.connection_string)
    except NoAuthError:
        who = f"user {zookeeper.auth.username}" if zookeeper.auth else "an unauthenticated client"
        doing = "writing" if creates else "reading"
        raise Refused(f"ZooKeeper refused {who} {doing} {path} (NoAuth): "
                      "check zookeeper.auth and the ACL of the election path") from None
    finally:
        client.stop()
        client.close()


# ---------------------------------------------------------------------- etcd


class EtcdStore(Store):
    """The election's keys through one etcd-sdk-python client, laid out as EtcdShell
    lays them (etcd.py): a candidate is the key ``<path>/<prefix>`` whose name carries
    its create revision; the leader record and the markers are keys at their paths.
    Every read is linearizable (through the raft leader's quorum): a command must not
    answer from a member that fell behind."""

    kind = "etcd"

    def __init__(self, client: Any, address: str) -> None:
        self._client = client
        self.address = address

    def _children(self, path: str) -> list[tuple[str, Any]]:
        """The direct children of ``path`` (keys only) with their names, oldest first,
        as the shell lists them (ZooKeeper lists direct children only)."""
        parent = path.rstrip("/") + "/"
        answer = self._client.get_prefix_response(parent, keys_only=True, sort_target="create",
                                                  sort_order="ascend")
        named = [(kv.key.decode("utf-8", "replace")[len(parent):], kv) for kv in answer.kvs]
        return [(name, kv) for name, kv in named if "/" not in name]

    def candidates(self, path: str) -> tuple[str, ...]:
        from .etcd import sequence

        return tuple(name + sequence(kv.create_revision) for name, kv in self._children(path))

    def candidate(self, path: str, name: str) -> Node | None:
        from .etcd import node_key

        key, revision = node_key(f"{path}/{name}")
        node = self.get(key)
        # A name whose revision is not the key's: that node went (the shell's rule).
        return node if node is not None and (revision is None or node.token == revision) else None

    def get(self, path: str) -> Node | None:
        answer = self._client.get_response(path)
        if not answer.kvs:
            return None
        kv = answer.kvs[0]
        return Node(bytes(kv.value), kv.create_revision, kv.lease, None)

    def markers(self, path: str) -> tuple[str, ...]:
        return tuple(sorted(name for name, _ in self._children(path)))

    def create(self, path: str, data: bytes) -> bool:
        txn = self._client.transactions
        created, _ = self._client.transaction(compare=[txn.create(path) == 0], success=[txn.put(path, data)],
                                              failure=[])
        return bool(created)

    def delete(self, path: str) -> bool:
        txn = self._client.transactions
        deleted, _ = self._client.transaction(compare=[txn.create(path) > 0], success=[txn.delete(path)],
                                              failure=[])
        return bool(deleted)


def _etcd_refusal(err: Exception) -> str | None:
    """The refusal ``err`` states (a wrong password, a role without this prefix), or
    None for any other failure."""
    import grpc  # type: ignore[import-untyped]

    if isinstance(err, grpc.RpcError):
        code, message = err.code(), err.details() or ""  # type: ignore[attr-defined]
        if code is grpc.StatusCode.PERMISSION_DENIED or "authentication failed" in message:
            return message or code.name
    return None


def _etcd_failure(err: Exception) -> bool:
    """Whether ``err`` is etcd's or gRPC's (no answer, or an error answer), as opposed
    to the command's own (a Refusal), which must pass through unchanged."""
    import grpc  # type: ignore[import-untyped]
    from pyetcd import exceptions as etcd_errors  # type: ignore[import-untyped]

    return isinstance(err, (grpc.RpcError, etcd_errors.Etcd3Exception))


@contextlib.contextmanager
def _etcd(config: Config, timeout: float, path: str, creates: bool) -> Iterator[Store]:
    """Tries the endpoints in turn until one answers, within ``timeout`` in all. A fresh
    client per endpoint: etcd-sdk-python marks a client's endpoint failed for 300 s
    after one error (etcd.py). grpc and pyetcd are imported only here and in etcd.py:
    they are the optional ``etcd`` extra, which a ZooKeeper host need not install."""
    etcd = config.etcd
    assert etcd is not None
    who = f"user {etcd.auth.username}" if etcd.auth else "an unauthenticated client"
    client = _first_answering(etcd, who, time.monotonic() + timeout)
    if client is None:
        raise Unreachable(f"etcd at {etcd.endpoint_string} did not answer within {timeout:g}s")
    try:
        yield EtcdStore(client, etcd.endpoint_string)
    except Exception as err:
        if not _etcd_failure(err):
            raise
        refusal = _etcd_refusal(err)
        if refusal is not None:
            doing = "writing" if creates else "reading"
            raise Refused(f"etcd refused {who} {doing} {path} ({refusal}): "
                          "check etcd.auth and the user's role on the election prefix") from None
        raise Unreachable(f"etcd at {etcd.endpoint_string} failed: {type(err).__name__}: {err}"[:300]) from None
    finally:
        client.close()


def _first_answering(etcd: EtcdConfig, who: str, deadline: float) -> Any:
    """A client of the first endpoint whose Status answers before ``deadline``, or None.
    A refusal (a wrong password) is final: every member would say the same."""
    from .etcd import connect as make
    for left, endpoint in zip(range(len(etcd.endpoints), 0, -1), etcd.endpoints):
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            return None
        client = None
        try:
            # A share of what is left: one silent member must not use up the others' time.
            client = make(etcd, endpoint, remaining / left)  # authenticates, when etcd.auth is set
            client.status()
            return client
        except Exception as err:  # this endpoint does not answer or refuses
            if client is not None:
                client.close()
            refusal = _etcd_refusal(err)
            if refusal is not None:
                raise Refused(f"etcd at {endpoint} refused {who} ({refusal}): check etcd.auth") from None
    return None
