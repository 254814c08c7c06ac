"""A read-only view of the core, for everything outside it: the daemon's STATUS= line,
the metrics, the simulation's invariants and the tests read this, never the core's
attributes, so the core can keep its state however its rules need."""

from __future__ import annotations

import enum
from dataclasses import dataclass

from . import timing
from .jobcontrol import JobPhase


class Phase(enum.Enum):
    CONNECTING = "connecting"
    JOINING = "joining"
    FOLLOWING = "following"
    CONFIRMING = "confirming"
    LEADING = "leading"
    LEAVING = "leaving"
    STOPPED = "stopped"


@dataclass(frozen=True)
class Snapshot:
    now: float
    phase: Phase
    election_path: str
    session_id: int | None
    connected: bool
    writable: bool
    attempt: int
    attempt_host: str
    t_ok: float | None
    budget: timing.LeaseBudget
    candidacy_id: str
    node: str | None
    position: int | None
    predecessor: str | None
    leader_node: str | None
    leader: bool
    token: int | None
    leading_since: float
    withdrawn: bool
    drained: bool
    #: election.priority, as our node's name carries it.
    priority: int
    #: (by, at) of the freeze this daemon knows of (it watches the marker only while
    #: leading or holding), else None.
    frozen: tuple[str, str] | None
    #: Our node is lowest, but the election is frozen: nobody leads until the thaw.
    holding: bool
    #: Our node is lowest, but the previous leader's session still holds the leader's
    #: claim (core/claim.py): we take over once it is released.
    waiting_on_claim: bool
    #: When this follower asks the leader to hand over to it (preemption), or None.
    preempt_at: float | None
    job: JobPhase
    job_pid: int | None
    restart_at: float | None
    retry_at: float | None
    #: Why the daemon is leaving and whether it then exits (None: not leaving).
    leaving: str | None
    exiting: bool

    def status_line(self) -> str:
        """One line for systemd's STATUS= (`systemctl status`): what this host is doing
        and, when it knows, which node leads, so the lines of all hosts can be compared."""
        if self.phase is Phase.STOPPED:
            return "stopped"
        if self.exiting:
            return f"stopping: {self.leaving}"
        if self.session_id is None:
            where = f" (attempt {self.attempt}, {self.attempt_host})" if self.attempt else ""
            return f"connecting to ZooKeeper{where}"
        if not self.connected:
            if self.t_ok is not None and self.job in (JobPhase.STARTING, JobPhase.RUNNING):
                left = max(0.0, self.budget.stop_at(self.t_ok) - self.now)
                return f"suspended: connection lost; the job stops in {left:.1f}s unless ZooKeeper answers"
            return "suspended: connection lost, reconnecting"
        if self.drained and self.node is None:
            return "drained: out of the queue until `zkleader undrain`"
        if self.withdrawn:
            return "withdrawn: health check failing"
        if self.phase is Phase.LEADING:
            job = f"job pid {self.job_pid}" if self.job_pid else f"job {self.job.value}"
            since = self.now - self.leading_since
            frozen = f", frozen by {self.frozen[0]}" if self.frozen else ""
            return f"leading {self.election_path} as {self.node} for {since:.0f}s (token {self.token}, {job}{frozen})"
        if self.holding:
            by = f" by {self.frozen[0]}" if self.frozen else ""
            return f"frozen{by}: next to lead {self.election_path} as {self.node}; nobody leads until `zkleader thaw`"
        if self.waiting_on_claim and self.phase is Phase.FOLLOWING:
            return (f"next to lead {self.election_path} as {self.node}: waiting for the previous leader's "
                    f"session to release its claim (its job may still run)")
        if self.phase is Phase.FOLLOWING:
            return f"following {self.predecessor} (position {self.position}); leader {self.leader_node}"
        return f"{self.phase.value} {self.election_path}"
