"""The decision core's one entry point: who this host is in the election and whether
its job may run.

Pure by design: it never reads a clock, calls kazoo or touches a process. The daemon
feeds it events with the time it handles them at (``handle``, raft's ``Step``) and
executes the actions it returns (the step's ``Outbox``, raft's ``Ready``); the
simulation does the same against a model world. One instance per daemon; not
thread-safe (the daemon's single loop is the only caller).

``Leadership`` holds the parts, each with one concern: the session and its lease
(lease.py), this daemon's place in the queue (candidacy.py), the job's lifecycle
(jobcontrol.py), the health gate (healthgate.py), and the outbox. What an event means
is decided by a step function per concern: session.py (connection events), follow.py
(joining and following), lead.py (heartbeats, the lease and the job), leave.py
(leaving in order). The parts are the core's own; everything outside the core reads
``snapshot()``.

The safety rule (timing.py): the job may run only while this host's node is the
lowest, confirmed owned by the current session, and the lease leaves room to stop it.
Every handled event ends in ``lead.enforce``, which stops or kills the job the moment
that stops being true, so no path through the handlers can forget it.
"""

from __future__ import annotations

from collections.abc import Callable

from . import actions as act
from . import claim, drain, follow, hooks, lead, leave, preference, session
from . import events as ev
from .candidacy import Candidacy
from .healthgate import HealthGate, Verdict
from .jobcontrol import JobControl, JobPhase
from .lease import Lease
from .outbox import Outbox, Purpose
from .settings import Identity, Settings
from .snapshot import Phase, Snapshot


class Leadership:
    def __init__(self, settings: Settings, identity: Identity, new_candidacy_id: Callable[[], str]) -> None:
        self.settings = settings
        self.identity = identity
        self.now = 0.0
        self.out = Outbox()
        self.lease = Lease(settings)
        self.me = Candidacy(new_candidacy_id, settings.priority)
        self.job = JobControl(self.out)
        self.health = HealthGate(settings.health, self.out)
        #: An operator drained this host (drain.py): the last answer about its marker.
        self.drained = False
        #: The freeze and handover markers as last read (preference.py); None until
        #: read for the confirmation in progress.
        self.control: preference.Control | None = None
        #: The freeze as this daemon last learned it (leading, or holding).
        self.frozen: preference.Marker | None = None
        #: Our node is lowest but the election is frozen: waiting for the thaw.
        self.holding = False
        #: This session's leader claim (claim.py): a job runs only under it.
        self.claim = claim.Claim.NONE
        #: The confirming heartbeat's answer, while the takeover waits for the marker
        #: read behind it (lead.decide); None otherwise.
        self.confirmed: lead.Confirmed | None = None
        self.preempt = preference.Preemption()
        self.phase = Phase.CONNECTING
        self.leave: leave.Leave | None = None
        self.retry_at: float | None = None
        self.transitions = hooks.Transitions()

    def handle(self, event: ev.Event, now: float) -> list[act.Action]:
        """Feeds one event; returns what to do, in order (the job's stop first)."""
        self.now = max(self.now, now)
        if self.phase is not Phase.STOPPED:
            self._step(event)
        if self.phase is not Phase.STOPPED:
            lead.enforce(self)
        return self.out.take()

    def budget_problem(self) -> str | None:
        """Why the lease in force cannot keep the ride-through minimum (a watchdog too
        long, a negotiated timeout too short), or None."""
        return self.lease.budget.problem()

    def next_deadline(self) -> float | None:
        """The next instant at which a Tick may produce actions."""
        candidates = [self.retry_at, self.job.restart_at, self.health.due, self.job.kill_due, self.lease.stall_deadline,
                      preference.preempt_due(self)]
        if self.job.alive:
            candidates.append(self.lease.stop_at())
        if lead.wants_heartbeat(self):
            candidates.append(self.lease.heartbeat_due)
        if self.leave is not None:
            candidates.append(self.leave.deadline)
        # Whatever was due has had its turn in the handle() that just ran; a deadline
        # left in the past (a restart the lease does not allow yet) must not spin the loop.
        future = [c for c in candidates if c is not None and c > self.now]
        return min(future) if future else None

    def snapshot(self) -> Snapshot:
        lease, me, job = self.lease, self.me, self.job
        return Snapshot(
            now=self.now, phase=self.phase, election_path=self.settings.election_path,
            session_id=lease.session_id, connected=lease.connected, writable=lease.writable,
            attempt=lease.attempt, attempt_host=lease.attempt_host, t_ok=lease.t_ok, budget=lease.budget,
            candidacy_id=me.id, node=me.node, position=me.position, predecessor=me.predecessor,
            leader_node=me.leader_node, leader=me.leader, token=me.token, leading_since=me.leading_since,
            withdrawn=self.health.withdrawn, drained=self.drained, priority=me.priority,
            frozen=None if self.frozen is None else (self.frozen.by, self.frozen.at), holding=self.holding,
            waiting_on_claim=self.claim is claim.Claim.WAITING,
            preempt_at=preference.preempt_due(self), job=job.phase, job_pid=job.pid, restart_at=job.restart_at,
            retry_at=self.retry_at, leaving=None if self.leave is None else self.leave.reason,
            exiting=self.leave is not None and self.leave.kind is leave.LeaveKind.EXIT,
        )

    # ------------------------------------------------------------------ step

    def _step(self, event: ev.Event) -> None:
        match event:
            case ev.Connected():
                session.on_connected(self, event)
            case ev.Suspended():
                session.on_suspended(self)
            case ev.SessionLost():
                session.on_session_lost(self, event.reason)
            case ev.AuthFailed():
                self.out.log("auth_failed", "error", reason="ZooKeeper rejected the credentials")
                leave.refused(self, "authentication failed")
            case ev.ConnectionAttempt():
                session.on_attempt(self, event)
            case ev.Created() | ev.ChildrenListed() | ev.NodeChecked() | ev.NodesRead() | ev.DataSet() | ev.Deleted() \
                    | ev.RequestFailed():
                self._on_reply(event)
            case ev.WatchFired():
                follow.on_watch(self, event)
            case ev.JobStarted():
                self.job.started(event.pid)
                hooks.job_started(self)
            case ev.JobExited():
                lead.on_job_exited(self, event)
            case ev.ShutdownRequested():
                leave.on_shutdown(self, event.signal_name)
            case ev.ResignRequested():
                leave.on_resign(self)
            case ev.HealthChecked():
                self._on_health(event)
            case ev.Reconfigured():
                self._on_reconfigured(event)
            case ev.ReopenRequested():
                leave.on_reopen(self, event.reason)
            case ev.BeforeLeadChecked():
                veto = hooks.on_before_lead_checked(self, event)
                if veto is not None:
                    leave.begin(self, leave.LeaveKind.REJOIN, veto)
            case ev.Tick():
                pass

    def _on_reply(self, reply: ev.Reply) -> None:
        purpose = self.out.answered(reply.request_id)
        if purpose is None:
            if isinstance(reply, ev.Created) and reply.name.startswith(self.settings.election_path.rstrip("/") + "/"):
                # A create we stopped waiting for (the session changed under it) still
                # landed, possibly in the new session: a ghost that would head the queue.
                # (A marker beside the election is left alone: by now it may be another
                # session's.)
                self.out.request(Purpose.DELETE_EXTRA, lambda rid: act.DeleteNode(rid, reply.name))
            return
        if isinstance(reply, ev.RequestFailed) and reply.failure is ev.Failure.NO_AUTH:
            leave.on_refused(self, purpose, reply.detail)
            return
        match purpose:
            case Purpose.CREATE:
                follow.on_create_reply(self, reply)
            case Purpose.LIST | Purpose.RECOVER:
                follow.on_list_reply(self, reply)
            case Purpose.WATCH_OWN:
                follow.on_own_watch_reply(self, reply)
            case Purpose.CHECK_PREDECESSOR:
                follow.on_predecessor_reply(self, reply)
            case Purpose.CHECK_OWN:
                lead.on_heartbeat_reply(self, reply)
            case Purpose.DELETE_OWN:
                leave.on_delete_reply(self, reply)
            case Purpose.PUBLISH:
                lead.on_publish_reply(self, reply)
            case Purpose.CHECK_DRAIN:
                drain.on_reply(self, reply)
            case Purpose.READ_CONTROL:
                preference.on_read(self, reply)
            case Purpose.WATCH_CONTROL:
                preference.on_watch_reply(self, reply)
            case Purpose.POKE:
                preference.on_poke_reply(self, reply)
            case Purpose.CLAIM:
                claim.on_create_reply(self, reply)
            case Purpose.CHECK_CLAIM:
                claim.on_check_reply(self, reply)
            case Purpose.RELEASE_CLAIM:
                claim.on_release_reply(self, reply)
            case Purpose.DELETE_EXTRA | Purpose.EVICT | Purpose.CLEAR_HANDOVER:
                pass

    def _on_health(self, event: ev.HealthChecked) -> None:
        match self.health.result(event, self.now, self.settings.health):
            case Verdict.WITHDRAW:
                if self.me.leader and self.frozen is not None:
                    self.out.log("health_failing_frozen", "warning", by=self.frozen.by)
                elif self.leave is None and (self.me.node is not None or self.me.create_unknown
                                           or self.out.awaiting(Purpose.CREATE)):
                    leave.begin(self, leave.LeaveKind.REJOIN, "health check failed")
            case Verdict.ADMIT:
                if self.leave is None and self.me.node is None and not self.out.awaiting(Purpose.CREATE):
                    follow.join(self)
            case Verdict.NONE:
                pass

    def _on_reconfigured(self, event: ev.Reconfigured) -> None:
        settings = event.settings
        old_health = self.settings.health
        self.settings = settings
        self.lease.update_budget(settings)
        if self.health.reconfigured(old_health, settings.health, self.now):
            if self.leave is None and self.me.node is None:
                follow.join(self)
        self.out.log("reconfigured", restart_job=event.restart_job and self.job.phase is not JobPhase.NONE)
        if event.restart_job and self.job.alive:
            lead.stop_job(self, "configuration reloaded")

    # ------------------------------------------------------------- candidacy

    def forget_candidacy(self) -> None:
        """Our node is gone: the next candidacy gets a fresh id (and so a fresh node)."""
        if self.me.leader:
            hooks.lost(self, self.leave.reason if self.leave is not None else "candidacy ended")
        self.me.forget()
        self.control, self.frozen, self.holding, self.confirmed = None, None, False, None
        self.preempt = preference.Preemption()
        self.lease.forget_heartbeats()
        self.job.restart_at = None
        # The drain marker's check and the claim are the host's session's, not the
        # candidacy's: their answers still count.
        self.out.stop_awaiting(Purpose.DELETE_EXTRA, Purpose.CHECK_DRAIN, Purpose.CLAIM, Purpose.CHECK_CLAIM,
                               Purpose.RELEASE_CLAIM)
        if self.phase is not Phase.STOPPED:
            self.phase = Phase.JOINING if self.lease.session_id is not None else Phase.CONNECTING

    def path(self, name: str) -> str:
        return f"{self.settings.election_path}/{name}"

    def node_data(self) -> dict[str, object]:
        """What our znode says about us, for `status` and operators."""
        return {
            "candidate": self.settings.candidate,
            "host": self.identity.host,
            "pid": self.identity.pid,
            "version": self.identity.version,
            "started_at": self.identity.started_at,
        }

