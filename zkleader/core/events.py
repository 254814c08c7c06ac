"""What the outside world tells the decision core.

Every event is a plain immutable value. The shells (ZooKeeper, the job, signals)
produce them; the core consumes them together with the monotonic time at which the
daemon's loop handles them. Replies carry the time their request was *sent*, because
that, not the arrival time, is what bounds the server's view of our session.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass

from .settings import Settings


@dataclass(frozen=True)
class Connected:
    """The client has a live, writable or read-only, connection for this session."""

    session_id: int
    negotiated_timeout: float
    read_only: bool = False


@dataclass(frozen=True)
class Suspended:
    """The connection dropped; the session may still be alive on the server."""


@dataclass(frozen=True)
class SessionLost:
    """The server expired the session (or it was closed): its ephemeral nodes are gone."""

    reason: str


@dataclass(frozen=True)
class AuthFailed:
    """The server refused our credentials; retrying would only hammer it."""


@dataclass(frozen=True)
class ConnectionAttempt:
    """The client is trying one server; used for logs and status only."""

    host: str
    attempt: int


@dataclass(frozen=True)
class NodeStat:
    """The part of a znode's Stat the core needs."""

    czxid: int
    ephemeral_owner: int


class Failure(enum.Enum):
    """Why a request failed. CONNECTION means no answer came from the server (lost,
    timed out, session gone, or any local error); every other member is an error code
    the server sent, which proves the server heard us when the request was sent."""

    CONNECTION = "connection"
    NO_NODE = "no_node"
    NODE_EXISTS = "node_exists"
    NO_AUTH = "no_auth"
    SERVER_ERROR = "server_error"


@dataclass(frozen=True)
class Created:
    request_id: int
    sent_at: float
    name: str


@dataclass(frozen=True)
class ChildrenListed:
    request_id: int
    sent_at: float
    children: tuple[str, ...]


@dataclass(frozen=True)
class NodeChecked:
    """An exists() answer: stat is None when the node does not exist. synced: a sync
    sent at sent_at went through the ZooKeeper leader first. relayed_at (synced answers
    only): the lease anchor that sync proves, ``timing.relayed_anchor`` over the write
    and answer-read times of every packet of this session (kazoo's pings included);
    None when no packet qualifies yet. Only this value feeds the lease."""

    request_id: int
    sent_at: float
    stat: NodeStat | None
    synced: bool = False
    relayed_at: float | None = None


@dataclass(frozen=True)
class NodesRead:
    """A ``ReadNodes`` answer: each path's data, None where the node does not exist."""

    request_id: int
    sent_at: float
    data: tuple[bytes | None, ...]


@dataclass(frozen=True)
class DataSet:
    request_id: int
    sent_at: float


@dataclass(frozen=True)
class Deleted:
    request_id: int
    sent_at: float


@dataclass(frozen=True)
class RequestFailed:
    request_id: int
    sent_at: float
    failure: Failure
    detail: str = ""


Reply = Created | ChildrenListed | NodeChecked | NodesRead | DataSet | Deleted | RequestFailed


class WatchKind(enum.Enum):
    DELETED = "deleted"
    CHANGED = "changed"
    #: kazoo fires every watch once with type NONE when the connection drops and
    #: forgets it: not evidence that anything happened to the node.
    CONNECTION = "connection"


@dataclass(frozen=True)
class WatchFired:
    path: str
    kind: WatchKind


@dataclass(frozen=True)
class JobStarted:
    pid: int


@dataclass(frozen=True)
class JobExited:
    """The job and every process it left behind are gone (reaped). ``by_guardian``: the
    guardian stopped it on its own, the lease having run out with no word from the
    daemon (a stalled daemon; guardian.py)."""

    returncode: int | None
    error: str = ""
    by_guardian: bool = False


@dataclass(frozen=True)
class ShutdownRequested:
    signal_name: str


@dataclass(frozen=True)
class ResignRequested:
    """An operator asked this host to step down (SIGUSR1 or `zkleader resign`)."""


@dataclass(frozen=True)
class HealthChecked:
    ok: bool
    detail: str = ""


@dataclass(frozen=True)
class Reconfigured:
    """A reloaded configuration that keeps the same session and election; restart_job
    when the job's definition changed."""

    settings: Settings
    restart_job: bool


@dataclass(frozen=True)
class ReopenRequested:
    """The ZooKeeper connection or the election changed: leave cleanly, then the daemon
    starts over with the new configuration."""

    reason: str


@dataclass(frozen=True)
class BeforeLeadChecked:
    """The before_lead hook's verdict for the leadership with fencing token ``token``
    (core/hooks.py): ok lets the job start; anything else (non-zero exit, timed out,
    could not run) makes this host step back to the end of the queue."""

    token: int
    ok: bool
    detail: str = ""


@dataclass(frozen=True)
class Tick:
    """Time passed; the core checks its deadlines."""


Event = (
    Connected
    | Suspended
    | SessionLost
    | AuthFailed
    | ConnectionAttempt
    | Created
    | ChildrenListed
    | NodeChecked
    | NodesRead
    | DataSet
    | Deleted
    | RequestFailed
    | WatchFired
    | JobStarted
    | JobExited
    | ShutdownRequested
    | ResignRequested
    | HealthChecked
    | Reconfigured
    | ReopenRequested
    | BeforeLeadChecked
    | Tick
)
