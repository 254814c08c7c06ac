"""What the decision core asks the shells to do.

Actions are values so that production executes them against kazoo and a real child
process while the simulation executes the very same list against a model.
Requests carry an id; their replies come back as events with that id, and the core
ignores replies to requests it no longer cares about.
"""

from __future__ import annotations

import signal
from dataclasses import dataclass, field
from typing import Any


@dataclass(frozen=True)
class CreateNode:
    """Create an ephemeral sequential znode named prefix + sequence, making parents.
    A marker (``sequential=False, ephemeral=False``: a handover request,
    preference.py) is created at ``path_prefix`` itself and outlives the session."""

    request_id: int
    path_prefix: str
    data: bytes
    sequential: bool = True
    ephemeral: bool = True


@dataclass(frozen=True)
class ListChildren:
    """getChildren(path); with sync, preceded by a sync, so a server that lags behind
    the ZooKeeper leader cannot hide a create of ours that already landed."""

    request_id: int
    path: str
    sync: bool = False


@dataclass(frozen=True)
class CheckNode:
    """exists(path), optionally leaving a watch on it; with sync, preceded by a sync so
    the answer reflects the ZooKeeper leader's state, not a possibly cut-off follower's."""

    request_id: int
    path: str
    watch: bool
    sync: bool = False


@dataclass(frozen=True)
class ReadNodes:
    """getData of each path (None for a path that does not exist), answered as one
    ``NodesRead``; with sync, preceded by a sync, so the answer is at least as new as
    every write the ZooKeeper leader had applied when the sync reached it. Without,
    the core sends it right behind a heartbeat's sync on the same connection, which
    ZooKeeper serves in order (preference.confirm); the etcd shell makes every such
    read linearizable, since its requests may outlive a connection."""

    request_id: int
    paths: tuple[str, ...]
    sync: bool = False


@dataclass(frozen=True)
class PublishLeadership:
    """Record who leads since when in the election path's own data, for `zkleader
    status`. No daemon watches that node's data, so publishing wakes nobody (one
    leader change still wakes exactly one daemon). The shell adds the wall-clock
    time, which the core never reads."""

    request_id: int
    path: str
    data: dict[str, object]


@dataclass(frozen=True)
class DeleteNode:
    request_id: int
    path: str


@dataclass(frozen=True)
class StartJob:
    """Start the job under the guardian, which holds the lease's deadlines from the
    start (``GuardLease``)."""

    token: int
    znode: str
    stop_at: float
    kill_at: float


@dataclass(frozen=True)
class GuardLease:
    """The lease's deadlines changed while a job exists: tell the guardian, which runs
    the stop schedule itself (stop signal at ``stop_at``, SIGKILL at ``kill_at``, on the
    daemon's clock) if the daemon stalls and no later deadline reaches it."""

    stop_at: float
    kill_at: float


@dataclass(frozen=True)
class SignalJob:
    """The graceful stop: the configured signal to the job's whole process tree."""

    signal: signal.Signals


@dataclass(frozen=True)
class KillJob:
    """SIGKILL to the job's whole process tree."""


@dataclass(frozen=True)
class Log:
    """One log event; the core decides what is worth saying, the shell how."""

    event: str
    level: str = "info"
    fields: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class CloseSession:
    """Close the ZooKeeper session (its ephemeral nodes go at once)."""


@dataclass(frozen=True)
class DropConnection:
    """The server stopped answering (a heartbeat unanswered for a whole heartbeat
    interval): drop the connection so the client reconnects, same session, to another
    server at once. kazoo's own ping deadline (2/3 T after the last send) comes after
    the lease would have stopped the job, and only a reconnect lets a leader whose
    server alone went silent learn that its node is still its own, or that it is gone."""


@dataclass(frozen=True)
class AnnounceStopping:
    """The daemon was asked to shut down: tell the service manager (systemd's
    STOPPING=1) before the job's graceful stop, which may take its stop_timeout."""


@dataclass(frozen=True)
class RunHealthCheck:
    """Run the health command once; its outcome comes back as HealthChecked."""


@dataclass(frozen=True)
class RunHook:
    """Queue the transition hook ``kind`` (core/hooks.py) with ``fields`` (the shell
    passes them as ZKLEADER_<FIELD> environment variables). Queued, never awaited:
    the shell runs hooks one at a time on a thread of their own, so no hook can delay
    the step's safety actions.

    deadline (before_lead only): the instant, on the daemon's clock, by which the
    hook's whole tree is SIGKILLed: never later than the lease in force allows the
    job's SIGKILL. Its verdict comes back as ``BeforeLeadChecked``."""

    kind: str
    fields: dict[str, str] = field(default_factory=dict)
    deadline: float | None = None


@dataclass(frozen=True)
class Exit:
    code: int


@dataclass(frozen=True)
class Reopen:
    """The session is closed and the job reaped: start over with the new configuration."""


Action = (
    CreateNode | ListChildren | CheckNode | ReadNodes | PublishLeadership | DeleteNode | StartJob | SignalJob | KillJob | Log | CloseSession
    | GuardLease | DropConnection | AnnounceStopping | RunHealthCheck | RunHook | Exit | Reopen
)
