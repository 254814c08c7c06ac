"""The decision core: who this host is in the election and whether its job may run.

Pure by design: it never reads a clock, calls kazoo or touches a process. The daemon
feeds it events with the monotonic time it handles them at and executes the actions
it returns; the simulation does the same against a model world. One instance per
daemon; not thread-safe (the daemon's single loop is the only caller).

The safety rule (see timing.py): the job may run only while this host's node is the
lowest, confirmed owned by the current session, and the lease ``t_ok + T`` leaves room
to stop it. Every handled event ends in ``_enforce``, which stops or kills the job
the moment that stops being true, so no path through the handlers can forget it.
"""

from __future__ import annotations

import enum
import json
import signal
from collections.abc import Callable
from dataclasses import dataclass

from . import actions as act
from . import candidacy, exitcodes, timing
from . import events as ev
from .settings import HealthPolicy, Identity, OnExit, Settings

#: A job that ran at least this long is not a "quick exit" and resets the backoff.
QUICK_EXIT = 10.0
#: Restart delays double on consecutive quick exits, up to this many seconds.
MAX_RESTART_DELAY = 60.0
#: After a request fails for a reason other than the connection, wait this long.
RETRY_DELAY = 1.0
#: How long a leaving daemon waits for its node's deletion before it exits anyway.
LEAVE_GRACE = 2.0


class Phase(enum.Enum):
    CONNECTING = "connecting"
    JOINING = "joining"
    FOLLOWING = "following"
    CONFIRMING = "confirming"
    LEADING = "leading"
    LEAVING = "leaving"
    STOPPED = "stopped"


class JobPhase(enum.Enum):
    NONE = "none"
    STARTING = "starting"
    RUNNING = "running"
    STOPPING = "stopping"


class Purpose(enum.Enum):
    """Why a request was sent: decides what its reply means."""

    CREATE = "create"
    LIST = "list"
    RECOVER = "recover"  # a synced listing after a create whose reply was lost
    CHECK_PREDECESSOR = "check_predecessor"
    CHECK_OWN = "check_own"  # the heartbeat: sync + exists with a watch
    WATCH_OWN = "watch_own"  # a follower's exists watch on its own node
    PUBLISH = "publish"
    DELETE_OWN = "delete_own"
    DELETE_EXTRA = "delete_extra"


class LeaveKind(enum.Enum):
    """What follows once the job is reaped and the node deleted."""

    REJOIN = "rejoin"  # queue again at the back (resign, on_exit: resign, health)
    EXIT = "exit"  # close the session and exit the daemon
    REOPEN = "reopen"  # close the session; the daemon starts over with a new configuration


@dataclass
class _Leave:
    kind: LeaveKind
    reason: str
    exit_code: int = exitcodes.OK
    deadline: float | None = None


class Leadership:
    def __init__(self, settings: Settings, identity: Identity, new_candidacy_id: Callable[[], str]) -> None:
        self.settings = settings
        self.identity = identity
        self._new_candidacy_id = new_candidacy_id
        self._budget = _budget(settings, settings.session_timeout)
        self._next_request = 0
        self._pending: dict[int, Purpose] = {}
        self._out: list[act.Action] = []
        self.now = 0.0
        # Session
        self.session_id: int | None = None
        self.connected = False
        self.writable = False
        self.t_ok: float | None = None
        self._attempts_logged = 0
        # Candidacy
        self.candidacy_id = new_candidacy_id()
        self.node: str | None = None
        self._create_unknown = False
        self._retry_at: float | None = None
        self.predecessor: str | None = None
        self.position: int | None = None
        self.leader = False
        self.token: int | None = None
        self._heartbeat_due: float | None = None
        self._heartbeat_inflight = False
        #: A watch on our own node is armed on the server (kazoo forgets watches on every
        #: disconnect): a follower must hear at once when its node is deleted.
        self._own_watched = False
        # Job
        self.job = JobPhase.NONE
        self.job_pid: int | None = None
        self._job_started_at = 0.0
        self._job_token: int | None = None
        self._kill_at: float | None = None
        self._killed = False
        self._restart_at: float | None = None
        self._quick_exits = 0
        self._leave: _Leave | None = None
        self.phase = Phase.CONNECTING
        self._negotiated_timeout: float | None = None
        self._attempt = 0
        self._attempt_host = ""
        self._leader_node: str | None = None
        self._not_candidates: set[str] = set()
        #: Candidacy ids this process gave up: a node of theirs that shows up in a listing
        #: is a ghost (a create that landed late) and is deleted.
        self._abandoned: tuple[str, ...] = ()
        self._leading_since = 0.0
        # Health-gated candidacy: with a check configured, the host joins only after a pass.
        self.withdrawn = settings.health is not None
        self._withdrawn_at: float | None = None
        self._health_due: float | None = 0.0 if settings.health else None
        self._health_inflight = False
        self._health_passes = 0
        self._health_failures = 0

    # ------------------------------------------------------------------ public

    @property
    def budget(self) -> timing.LeaseBudget:
        return self._budget

    def handle(self, event: ev.Event, now: float) -> list[act.Action]:
        """Feeds one event; returns what to do, in order. Stopping the job comes first
        (a stable sort): the shells may take their time over the rest, logging
        included, but never while a job that must stop still runs."""
        self.now = max(self.now, now)
        self._out = []
        if self.phase is not Phase.STOPPED:
            self._dispatch(event)
        if self.phase is not Phase.STOPPED:
            self._enforce()
        out, self._out = self._out, []
        out.sort(key=lambda action: not isinstance(action, (act.SignalJob, act.KillJob)))
        return out

    def budget_problem(self) -> str | None:
        """Why the lease in force cannot keep the ride-through minimum (a watchdog too
        long, a negotiated timeout too short), or None."""
        return self._budget.problem()

    def next_deadline(self) -> float | None:
        """The next instant at which a Tick may produce actions."""
        candidates = [self._retry_at, self._restart_at]
        if not self._health_inflight:
            candidates.append(self._health_due)
        if self.job in (JobPhase.STARTING, JobPhase.RUNNING) and self.t_ok is not None:
            candidates.append(self._budget.stop_at(self.t_ok))
        if self.job is JobPhase.STOPPING and not self._killed:
            candidates.append(self._kill_at)
        if self._wants_heartbeat():
            candidates.append(self._heartbeat_due)
        if self._leave is not None:
            candidates.append(self._leave.deadline)
        # Whatever was due has had its turn in the handle() that just ran; a deadline
        # left in the past (a restart the lease does not allow yet) must not spin the loop.
        future = [c for c in candidates if c is not None and c > self.now]
        return min(future) if future else None

    def status_line(self) -> str:
        """One line for systemd's STATUS= (`systemctl status`): what this host is doing
        and, when it knows, which node leads, so the lines of all hosts can be compared."""
        if self.phase is Phase.STOPPED:
            return "stopped"
        if self._leave is not None and self._leave.kind is LeaveKind.EXIT:
            return f"stopping: {self._leave.reason}"
        if self.session_id is None:
            where = f" (attempt {self._attempt}, {self._attempt_host})" if self._attempt else ""
            return f"connecting to ZooKeeper{where}"
        if not self.connected:
            if self.t_ok is not None and self.job in (JobPhase.STARTING, JobPhase.RUNNING):
                left = max(0.0, self._budget.stop_at(self.t_ok) - self.now)
                return f"suspended: connection lost; the job stops in {left:.1f}s unless ZooKeeper answers"
            return "suspended: connection lost, reconnecting"
        if self.withdrawn:
            return "withdrawn: health check failing"
        if self.phase is Phase.LEADING:
            job = f"job pid {self.job_pid}" if self.job_pid else f"job {self.job.value}"
            since = self.now - self._leading_since
            return f"leading {self.settings.election_path} as {self.node} for {since:.0f}s (token {self.token}, {job})"
        if self.phase is Phase.FOLLOWING:
            return f"following {self.predecessor} (position {self.position}); leader {self._leader_node}"
        return f"{self.phase.value} {self.settings.election_path}"

    # ---------------------------------------------------------------- dispatch

    def _dispatch(self, event: ev.Event) -> None:
        match event:
            case ev.Connected():
                self._on_connected(event)
            case ev.Suspended():
                self._on_suspended()
            case ev.SessionLost():
                self._on_session_lost(event.reason)
            case ev.AuthFailed():
                self._log("auth_failed", "error", reason="ZooKeeper rejected the credentials")
                self._leave_refused("authentication failed")
            case ev.ConnectionAttempt():
                self._on_connection_attempt(event)
            case ev.Created() | ev.ChildrenListed() | ev.NodeChecked() | ev.DataSet() | ev.Deleted() | ev.RequestFailed():
                self._on_reply(event)
            case ev.WatchFired():
                self._on_watch(event)
            case ev.JobStarted():
                self._on_job_started(event.pid)
            case ev.JobExited():
                self._on_job_exited(event)
            case ev.ShutdownRequested():
                self._on_shutdown(event.signal_name)
            case ev.ResignRequested():
                self._on_resign()
            case ev.HealthChecked():
                self._on_health(event)
            case ev.Reconfigured():
                self._on_reconfigured(event)
            case ev.ReopenRequested():
                if self._leave is None or self._leave.kind is LeaveKind.REJOIN:
                    self._log("leaving_to_reconfigure", reason=event.reason)
                    self._begin_leave(LeaveKind.REOPEN, event.reason)
            case ev.Tick():
                pass

    # ----------------------------------------------------------------- session

    def _on_connection_attempt(self, event: ev.ConnectionAttempt) -> None:
        self._attempt, self._attempt_host = event.attempt, event.host
        # Powers of two: the first attempts are visible, a long outage does not flood the log.
        if event.attempt & (event.attempt - 1) == 0:
            self._log("connecting", "info" if event.attempt == 1 else "warning", host=event.host, attempt=event.attempt)

    def _on_connected(self, event: ev.Connected) -> None:
        if self.session_id is not None and event.session_id != self.session_id:
            self._on_session_lost("session replaced")
        same_session = self.session_id == event.session_id
        self.session_id = event.session_id
        self.connected = True
        self.writable = not event.read_only
        self._negotiated_timeout = event.negotiated_timeout
        effective = self._update_budget()
        if event.negotiated_timeout < self.settings.session_timeout:
            self._log(
                "session_timeout_reduced",
                "warning",
                configured=self.settings.session_timeout,
                negotiated=event.negotiated_timeout,
                problem=self._budget.problem(),
            )
        if event.read_only:
            self._log("read_only", "warning", reason="connected to a read-only server; cannot lead")
            if self.leader:
                self._lose("read-only connection")
            return
        if same_session:
            self._log("reconnected", session=_hex(event.session_id), lease_left=self._lease_left())
            self._resync()
        else:
            self._log("connected", session=_hex(event.session_id), timeout=effective)
            self._join()

    def _on_suspended(self) -> None:
        if not self.connected:
            return
        self.connected = False
        self._own_watched = False
        self._heartbeat_inflight = False
        fields = {"lease_left": self._lease_left()} if self.job is not JobPhase.NONE else {}
        self._log("suspended", "warning", **fields)

    def _on_session_lost(self, reason: str) -> None:
        if self.session_id is None:
            return
        self._log("session_lost", "error" if self.job is not JobPhase.NONE else "warning", reason=reason)
        if self.job is not JobPhase.NONE:
            # The lease should have stopped the job already (e.g. the daemon was paused): no grace now.
            self._kill_now("session lost while the job was alive")
        self.session_id = None
        self.connected = False
        self._own_watched = False
        self.t_ok = None
        self._pending.clear()
        self._forget_candidacy()
        if self._leave is not None and self._leave.kind is LeaveKind.REJOIN:
            self._leave = None  # rejoining happens with the next session anyway

    def _resync(self) -> None:
        """After a reconnect with the same session: kazoo forgot every watch, re-arm them."""
        if self._leave is not None:
            return
        if self.leader:
            self._heartbeat()
        elif self._create_unknown:
            self._recover()
        elif self.node is not None:
            self._request(Purpose.LIST, lambda rid: act.ListChildren(rid, self.settings.election_path))
        elif not self._is_pending(Purpose.CREATE):
            self._join()

    # ----------------------------------------------------------------- replies

    def _on_reply(self, reply: ev.Reply) -> None:
        purpose = self._pending.pop(reply.request_id, None)
        if purpose is None:
            if isinstance(reply, ev.Created):
                # A create we stopped waiting for (the session changed under it) still
                # landed, possibly in the new session: a ghost that would head the queue.
                self._request(Purpose.DELETE_EXTRA, lambda rid: act.DeleteNode(rid, reply.name))
            return
        if isinstance(reply, ev.RequestFailed) and reply.failure is ev.Failure.NO_AUTH:
            self._on_refused(purpose, reply.detail)
            return
        handler = {
            Purpose.CREATE: self._on_create_reply,
            Purpose.LIST: self._on_list_reply,
            Purpose.RECOVER: self._on_list_reply,
            Purpose.WATCH_OWN: self._on_own_watch_reply,
            Purpose.CHECK_PREDECESSOR: self._on_predecessor_reply,
            Purpose.CHECK_OWN: self._on_own_reply,
            Purpose.DELETE_OWN: self._on_delete_reply,
            Purpose.DELETE_EXTRA: lambda r: None,
            Purpose.PUBLISH: self._on_publish_reply,
        }[purpose]
        handler(reply)

    def _on_create_reply(self, reply: ev.Reply) -> None:
        if isinstance(reply, ev.Created):
            self.node = reply.name.rsplit("/", 1)[-1]
            self._create_unknown = False
            if self._withdraw_if_unhealthy():
                return
            self._request(Purpose.LIST, lambda rid: act.ListChildren(rid, self.settings.election_path))
        elif isinstance(reply, ev.RequestFailed) and reply.failure is ev.Failure.CONNECTION:
            # The server may have created the node while the reply was lost: look before creating again.
            self._create_unknown = True
            if self.connected:
                self._recover()
        else:
            self._log("create_failed", "error", detail=getattr(reply, "detail", ""))
            self._retry_at = self.now + RETRY_DELAY

    def _on_list_reply(self, reply: ev.Reply) -> None:
        if isinstance(reply, ev.RequestFailed):
            if reply.failure is ev.Failure.NO_NODE:
                self._rejoin("the election path was deleted")
            elif reply.failure is ev.Failure.CONNECTION:
                self._resync_if_connected()
            else:
                self._retry_at = self.now + RETRY_DELAY
            return
        assert isinstance(reply, ev.ChildrenListed)
        queue = candidacy.Queue.from_children(tuple(c for c in reply.children if c not in self._not_candidates))
        if queue.ignored:
            self._log("foreign_children", "warning", ignored=list(queue.ignored[:5]), count=len(queue.ignored))
        for stale in (e for e in queue.entries if e.candidacy_id in self._abandoned):
            self._request(Purpose.DELETE_EXTRA, lambda rid, n=stale.name: act.DeleteNode(rid, self._path(n)))
        mine = queue.mine(self.candidacy_id)
        if self._create_unknown:
            self._create_unknown = False
            if not mine:
                self._create()
                return
            self.node = mine[0].name
            self._log("create_recovered", node=self.node)
        # A create can land twice (a reply lost, the recovery listing served before the
        # first create was visible there): keep the node this daemon stands on, which
        # its watches and heartbeats name, and delete the other.
        for extra in (e for e in mine if e.name != self.node):
            self._request(Purpose.DELETE_EXTRA, lambda rid, n=extra.name: act.DeleteNode(rid, self._path(n)))
        if self.node is not None and self._withdraw_if_unhealthy():
            return
        if self.node is None:
            return
        entry = queue.named(self.node)
        if entry is None:
            self._rejoin("own node deleted")
            return
        position = queue.position(entry)
        predecessor = queue.predecessor(entry)
        if self.position is None:
            self._log("joined", node=self.node, position=position)
        self.position = position
        if predecessor is None:
            self.predecessor = None
            if not self.leader:
                self.phase = Phase.CONFIRMING
                self._heartbeat()
            return
        if self.leader:
            # Someone sits before our node (impossible unless sequence numbers wrapped):
            # never lead from behind another candidate.
            self._lose("a lower node appeared")
        self.phase = Phase.FOLLOWING
        self._watch_own()
        self._leader_node = queue.entries[0].name
        if predecessor.name != self.predecessor:
            self.predecessor = predecessor.name
            self._log("following", predecessor=predecessor.name, position=position, leader=queue.entries[0].name)
        self._request(
            Purpose.CHECK_PREDECESSOR, lambda rid: act.CheckNode(rid, self._path(predecessor.name), watch=True)
        )

    def _on_predecessor_reply(self, reply: ev.Reply) -> None:
        if isinstance(reply, ev.NodeChecked) and reply.stat is None:
            # Gone before the watch was set: the watch would never fire, so look again now.
            self._relist()
        elif isinstance(reply, ev.NodeChecked) and reply.stat.ephemeral_owner == 0 and self.predecessor:
            # A persistent node shaped like ours is no candidate (no session can lose it):
            # every daemon that meets it skips it, so they all agree on the order.
            self._log("not_a_candidate", "warning", node=self.predecessor, reason="persistent node")
            self._not_candidates.add(self.predecessor)
            self._relist()
        elif isinstance(reply, ev.RequestFailed):
            if reply.failure is ev.Failure.CONNECTION:
                self._resync_if_connected()
            else:
                self._retry_at = self.now + RETRY_DELAY

    def _on_own_reply(self, reply: ev.Reply) -> None:
        """A heartbeat's answer. Only a heartbeat that went through the ZooKeeper leader
        (sync, then exists) proves the session is kept alive, and only from the moment
        its relayed_at names (timing.py): a follower server cut off from the leader
        still answers plain reads."""
        self._heartbeat_inflight = False
        # This answer anchors the lease of a sync queued tickTime/2 from now at the
        # earliest (timing.relayed_anchor): the next heartbeat waits that long.
        renewal = self.now + self._budget.first_renewal
        self._heartbeat_due = renewal if self._heartbeat_due is None else max(self._heartbeat_due, renewal)
        if isinstance(reply, ev.RequestFailed):
            if reply.failure is ev.Failure.CONNECTION:
                self._resync_if_connected()
            return  # any other failure: the next heartbeat on the cadence tries again
        assert isinstance(reply, ev.NodeChecked)
        if not self._own_node_holds(reply):
            return
        self._own_watched = True
        if reply.synced and reply.relayed_at is not None:
            self.t_ok = reply.relayed_at if self.t_ok is None else max(self.t_ok, reply.relayed_at)
        if not self.leader and self._leave is None and not self.withdrawn:
            # The first heartbeat rarely anchors a lease of its own (only kazoo's pings
            # were answered before it); the next one, tickTime/2 after this answer,
            # does (timing.LeaseBudget.first_renewal).
            self._heartbeat_due = renewal
            self.leader = True
            self.token = reply.stat.czxid
            self.phase = Phase.LEADING
            self._leading_since = self.now
            self._restart_at = None
            self._quick_exits = 0
            self._log("leader_acquired", node=self.node, token=self.token)
            data = {**self._node_data(), "node": self.node, "token": self.token}
            self._request(Purpose.PUBLISH, lambda rid: act.PublishLeadership(rid, self.settings.election_path, data))

    def _on_own_watch_reply(self, reply: ev.Reply) -> None:
        if isinstance(reply, ev.RequestFailed):
            if reply.failure is ev.Failure.CONNECTION:
                self._resync_if_connected()
            else:
                self._retry_at = self.now + RETRY_DELAY
            return
        assert isinstance(reply, ev.NodeChecked)
        if self._own_node_holds(reply):
            self._own_watched = True

    def _own_node_holds(self, reply: ev.NodeChecked) -> bool:
        """Our node exists and belongs to this session; otherwise leave it behind and
        join again (an operator deleted it, or a session that reused its name owns it)."""
        if reply.stat is None:
            self._rejoin("own node deleted")
            return False
        if reply.stat.ephemeral_owner != self.session_id:
            self._log("node_not_ours", "error", node=self.node, owner=_hex(reply.stat.ephemeral_owner))
            self._rejoin("own node is owned by another session")
            return False
        return True

    def _on_publish_reply(self, reply: ev.Reply) -> None:
        """Only informative: a failure is logged; the heartbeat decides about the node."""
        if isinstance(reply, ev.RequestFailed) and reply.failure is not ev.Failure.CONNECTION:
            self._log("publish_failed", "warning", detail=reply.detail)

    def _on_delete_reply(self, reply: ev.Reply) -> None:
        if isinstance(reply, ev.RequestFailed) and reply.failure is ev.Failure.CONNECTION:
            if self._leave is not None and self._leave.kind is not LeaveKind.REJOIN:
                self._finish_exit()
            return  # rejoining: retried on reconnect
        if self._leave is not None:
            self._log("handover" if self.leader else "withdrawn", node=self.node, reason=self._leave.reason)
        self._forget_candidacy()

    # ----------------------------------------------------------------- watches

    def _on_watch(self, event: ev.WatchFired) -> None:
        if event.kind is ev.WatchKind.CONNECTION:
            return  # a connection loss, not a deletion; watches are re-armed on reconnect
        if self.node is not None and event.path == self._path(self.node):
            self._own_watched = False
            if event.kind is ev.WatchKind.DELETED and not self._is_pending(Purpose.DELETE_OWN):
                self._rejoin("own node deleted")
            elif not self.leader:
                self._watch_own()  # data changed: a follower re-arms; a leader's heartbeat does
            return
        if self.predecessor is not None and event.path == self._path(self.predecessor):
            if event.kind is ev.WatchKind.DELETED:
                self._relist()
            else:
                self._request(Purpose.CHECK_PREDECESSOR, lambda rid: act.CheckNode(rid, event.path, watch=True))

    # --------------------------------------------------------------------- job

    def _on_job_started(self, pid: int) -> None:
        self.job_pid = pid
        if self.job is JobPhase.STARTING:
            self.job = JobPhase.RUNNING
        # The token the job was started with: leadership may already be gone by now.
        self._log("job_started", pid=pid, token=self._job_token)

    def _on_job_exited(self, event: ev.JobExited) -> None:
        stopped_by_us = self.job is JobPhase.STOPPING
        ran = self.now - self._job_started_at
        if stopped_by_us:
            cause = "killed" if self._killed else "stopped"
        else:
            cause = "failed_to_start" if event.error and self.job_pid is None else "exited"
        fields = _exit_fields(event)
        self._log("job_exited", "info" if stopped_by_us else "warning", pid=self.job_pid, ran=round(ran, 3),
                  cause=cause, **fields)
        self.job = JobPhase.NONE
        self.job_pid = None
        self._kill_at = None
        self._killed = False
        if stopped_by_us or not self.leader or self._leave is not None:
            return
        policy = self.settings.on_exit
        if policy is OnExit.RESTART:
            self._quick_exits = self._quick_exits + 1 if ran < QUICK_EXIT else 1
            doubled = self.settings.restart_delay * 2 ** min(self._quick_exits - 1, 32)
            delay = min(doubled, max(MAX_RESTART_DELAY, self.settings.restart_delay))
            self._restart_at = self.now + delay
            self._log("job_restart_scheduled", "warning", delay=delay, restarts=self._quick_exits)
        elif policy is OnExit.RESIGN:
            self._log("resigned", "warning", reason="job exited and job.on_exit is resign")
            self._begin_leave(LeaveKind.REJOIN, "job exited (on_exit: resign)")
        else:
            self._begin_leave(LeaveKind.EXIT, "job exited (on_exit: exit)", exitcodes.JOB_EXITED)

    def _on_resign(self) -> None:
        if not self.leader or self._leave is not None:
            self._log("resign_ignored", reason="not the leader", position=self.position)
            return
        self._log("resigning", token=self.token)
        self._begin_leave(LeaveKind.REJOIN, "resign requested")

    def _on_health(self, event: ev.HealthChecked) -> None:
        policy = self.settings.health
        self._health_inflight = False
        if policy is None:
            return
        self._health_due = self.now + policy.interval
        if event.ok:
            self._health_passes += 1
            self._health_failures = 0
        else:
            self._health_failures += 1
            self._health_passes = 0
        if not self.withdrawn and self._health_failures >= policy.failures:
            self.withdrawn = True
            self._withdrawn_at = self.now
            self._log("health_withdrawn", "warning", failures=self._health_failures, detail=event.detail)
            if self._leave is None and (self.node is not None or self._create_unknown or self._is_pending(Purpose.CREATE)):
                self._begin_leave(LeaveKind.REJOIN, "health check failed")
        elif self.withdrawn and event.ok and self._health_admits(policy):
            self.withdrawn = False
            self._log("health_passed" if self._withdrawn_at is None else "health_restored", passes=self._health_passes)
            if self._leave is None and self.node is None and not self._is_pending(Purpose.CREATE):
                self._join()
        elif not event.ok:
            self._log("health_failed", "warning", failures=self._health_failures, detail=event.detail)

    def _health_admits(self, policy: HealthPolicy) -> bool:
        """The first pass admits a starting host; a withdrawn one needs `successes` passes
        in a row and at least one interval out, so a flapping check cannot flap leadership."""
        if self._withdrawn_at is None:
            return True
        return self._health_passes >= policy.successes and self.now - self._withdrawn_at >= policy.interval

    def _on_reconfigured(self, event: ev.Reconfigured) -> None:
        settings = event.settings
        assert isinstance(settings, Settings)
        old_health = self.settings.health
        self.settings = settings
        self._update_budget()
        if settings.health is None and self.withdrawn:
            self.withdrawn = False
            if self._leave is None and self.node is None:
                self._join()
        elif settings.health is not None and old_health is None:
            self._health_due = self.now
        self._log("reconfigured", restart_job=event.restart_job and self.job is not JobPhase.NONE)
        if event.restart_job and self.job in (JobPhase.STARTING, JobPhase.RUNNING):
            self._stop_job("configuration reloaded")

    def _update_budget(self) -> float:
        """The lease uses the shorter of the configured and the negotiated timeout."""
        effective = self.settings.session_timeout
        if self._negotiated_timeout is not None:
            effective = min(effective, self._negotiated_timeout)
        self._budget = _budget(self.settings, effective)
        return effective

    def _on_shutdown(self, signal_name: str) -> None:
        if self._leave is not None and self._leave.kind is LeaveKind.EXIT:
            return
        self._log("shutting_down", signal=signal_name, leader=self.leader)
        self._begin_leave(LeaveKind.EXIT, f"shutdown ({signal_name})")

    # ------------------------------------------------------------- enforcement

    def _enforce(self) -> None:
        """The safety rule and every deadline, checked after each event."""
        if self.job in (JobPhase.STARTING, JobPhase.RUNNING) and not self._may_run():
            self._stop_job(self._why_not_running())
        if self.job is JobPhase.STOPPING and not self._killed and self._kill_at is not None and self.now >= self._kill_at:
            self._kill_now("stop_timeout elapsed or the lease ran out")
        if self._health_due is not None and self.now >= self._health_due and not self._health_inflight:
            self._health_inflight = True
            self._health_due = None
            self._out.append(act.RunHealthCheck())
        if self._retry_at is not None and self.now >= self._retry_at:
            self._retry_at = None
            self._retry()
        if self._wants_heartbeat() and self._heartbeat_due is not None and self.now >= self._heartbeat_due:
            self._heartbeat()
        if self._leave is not None:
            self._progress_leave()
        elif self.leader and self.job is JobPhase.NONE and self._may_run():
            if self._restart_at is None or self.now >= self._restart_at:
                self._start_job()

    def _may_run(self) -> bool:
        return (
            self.leader
            and self._leave is None
            and self.writable
            and self.t_ok is not None
            and self.now < self._budget.stop_at(self.t_ok)
        )

    def _why_not_running(self) -> str:
        if self._leave is not None:
            return self._leave.reason
        if not self.leader:
            return "leadership lost"
        if not self.writable:
            return "read-only connection"
        return "lease expired: no answer from ZooKeeper in time"

    def _start_job(self) -> None:
        assert self.node is not None and self.token is not None
        self.job = JobPhase.STARTING
        self._job_token = self.token
        self._job_started_at = self.now
        self._restart_at = None
        self._out.append(act.StartJob(token=self.token, znode=self._path(self.node)))

    def _stop_job(self, reason: str) -> None:
        self.job = JobPhase.STOPPING
        self._killed = False
        kill_at = self.now + self.settings.stop_timeout
        if self.t_ok is not None and self.session_id is not None:
            kill_at = min(kill_at, self._budget.kill_by(self.t_ok))
        self._kill_at = kill_at
        if reason.startswith("lease expired"):
            self._log("lease_expired", "error", reason=reason, lease_left=self._lease_left())
        self._log("job_stopping", signal=self.settings.stop_signal.name, reason=reason, pid=self.job_pid)
        self._out.append(act.SignalJob(self.settings.stop_signal))
        if kill_at <= self.now:
            self._kill_now(reason)

    def _kill_now(self, reason: str) -> None:
        if self.job is JobPhase.NONE or self._killed:
            return
        self.job = JobPhase.STOPPING
        self._killed = True
        self._kill_at = self.now
        self._log("job_killed", "warning", reason=reason, pid=self.job_pid)
        self._out.append(act.KillJob())

    # ------------------------------------------------------------- candidacy

    def _join(self) -> None:
        if self.session_id is None or not self.connected or self._leave is not None or self.withdrawn:
            return
        self.phase = Phase.JOINING
        self._create()

    def _node_data(self) -> dict[str, object]:
        return {
            "candidate": self.settings.candidate,
            "host": self.identity.host,
            "pid": self.identity.pid,
            "version": self.identity.version,
            "started_at": self.identity.started_at,
        }

    def _create(self) -> None:
        data = json.dumps(self._node_data(), separators=(",", ":")).encode()
        prefix = candidacy.node_prefix(self.settings.election_path, self.candidacy_id)
        self._request(Purpose.CREATE, lambda rid: act.CreateNode(rid, prefix, data))

    def _relist(self) -> None:
        if not self._is_pending(Purpose.LIST):
            self._request(Purpose.LIST, lambda rid: act.ListChildren(rid, self.settings.election_path))

    def _retry(self) -> None:
        if not self.connected or self._leave is not None:
            return
        if self.node is None and not self._create_unknown and not self._is_pending(Purpose.CREATE):
            self._join()
        else:
            self._relist()

    def _heartbeat(self) -> None:
        """sync + exists() on our own node, with a watch: refreshes the lease, re-checks
        ownership and keeps the deletion watch armed (kazoo drops watches on every
        disconnect). One at a time: an unanswered heartbeat leaves the connection
        silent, so kazoo's own ping goes out and finds a dead server (a steady stream
        of requests would postpone that forever); the lease never depended on it."""
        if self.node is None or not self.connected or self._heartbeat_inflight:
            return
        self._heartbeat_inflight = True
        self._heartbeat_due = self.now + self._budget.heartbeat_interval
        self._request(
            Purpose.CHECK_OWN, lambda rid: act.CheckNode(rid, self._path(self.node or ""), watch=True, sync=True)
        )

    def _wants_heartbeat(self) -> bool:
        return self.leader and self.connected and not self._heartbeat_inflight and self.node is not None

    def _watch_own(self) -> None:
        """A follower's exists watch on its own node (one per daemon, so still no herd):
        without it, a follower whose node an operator or a lost-reply recovery deleted
        would wait forever, believing itself queued."""
        if self._own_watched or self.node is None or self._is_pending(Purpose.WATCH_OWN):
            return
        self._request(Purpose.WATCH_OWN, lambda rid: act.CheckNode(rid, self._path(self.node or ""), watch=True))

    def _recover(self) -> None:
        """After a create whose reply was lost: list the queue, synced first, so a server
        lagging behind the ZooKeeper leader cannot hide a create that already landed."""
        if not self._is_pending(Purpose.RECOVER):
            self._request(Purpose.RECOVER, lambda rid: act.ListChildren(rid, self.settings.election_path, sync=True))

    def _on_refused(self, purpose: Purpose, detail: str) -> None:
        """NoAuth: the election path's ACL refuses this client. The published leader
        record is only informative, so a refused publish is a warning (otherwise every
        successor would refuse to lead in turn and no host would lead at all).
        Anything else: leave in order, job reaped before the node or session goes."""
        if purpose is Purpose.PUBLISH:
            self._log("publish_failed", "warning", detail=detail)
            return
        self._log("not_authorized", "error", purpose=purpose.value, detail=detail)
        if purpose is Purpose.DELETE_OWN:
            self.node = None  # closing the session deletes it as well
        self._leave_refused("not authorized on the election path")

    def _leave_refused(self, reason: str) -> None:
        """Exit with AUTH_FAILED, after the job is reaped (retrying would not help)."""
        if self._leave is not None and self._leave.kind is LeaveKind.EXIT:
            self._leave.exit_code = exitcodes.AUTH_FAILED
            return
        self._begin_leave(LeaveKind.EXIT, reason, exitcodes.AUTH_FAILED)

    def _withdraw_if_unhealthy(self) -> bool:
        """A create that was in flight when the health check failed still lands: take
        that node out of the queue again instead of letting it lead."""
        if not self.withdrawn or self._leave is not None:
            return False
        self._begin_leave(LeaveKind.REJOIN, "health check failed")
        return True

    def _rejoin(self, reason: str) -> None:
        """Our node is gone while the session lives: stop leading, join again at the back.
        A new node while the old job is still stopping is safe: no job starts until it is reaped."""
        self._log("node_vanished", "warning", node=self.node, reason=reason)
        # Whoever is next saw the same deletion and may start its job within
        # milliseconds: no graceful stop while leadership is already gone.
        self._kill_now(reason)
        self._lose(reason)
        self._forget_candidacy()
        self._join()

    def _resync_if_connected(self) -> None:
        """A request died with the connection, possibly after the reconnect was already
        handled (replies and state changes come from different kazoo threads)."""
        if self.connected:
            self._resync()

    def _lose(self, reason: str) -> None:
        """Leadership is gone (or never to be trusted again in this candidacy)."""
        if self.leader:
            self._log("leadership_lost", "warning", reason=reason, token=self.token)
        self.leader = False
        if self._leave is None and self.phase is Phase.LEADING:
            self.phase = Phase.JOINING
        if self.job in (JobPhase.STARTING, JobPhase.RUNNING):
            self._stop_job(reason)

    def _forget_candidacy(self) -> None:
        """Our node is gone: the next candidacy gets a fresh id (and so a fresh node)."""
        self.leader = False
        self.token = None
        self.node = None
        self.predecessor = None
        self.position = None
        self._create_unknown = False
        self._own_watched = False
        self._heartbeat_inflight = False
        self._heartbeat_due = None
        self._restart_at = None
        self._abandoned = (*self._abandoned[-15:], self.candidacy_id)
        self.candidacy_id = self._new_candidacy_id()
        self._pending = {rid: p for rid, p in self._pending.items() if p is Purpose.DELETE_EXTRA}
        if self.phase is not Phase.STOPPED:
            self.phase = Phase.JOINING if self.session_id is not None else Phase.CONNECTING

    def _begin_leave(self, kind: LeaveKind, reason: str, exit_code: int = exitcodes.OK) -> None:
        deadline = None
        if kind is not LeaveKind.REJOIN:
            deadline = self.now + self.settings.stop_timeout + LEAVE_GRACE
        self._leave = _Leave(kind, reason, exit_code, deadline)
        self.phase = Phase.LEAVING
        if self.job in (JobPhase.STARTING, JobPhase.RUNNING):
            self._stop_job(reason)

    def _progress_leave(self) -> None:
        """Once the job is reaped: delete the node (the successor leads at once), then
        exit or rejoin at the back of the queue."""
        leave = self._leave
        assert leave is not None
        if self.job is not JobPhase.NONE:
            if leave.deadline is not None and self.now >= leave.deadline and self._killed:
                self._finish_exit()  # without closing the session: see _finish_exit
            return
        if self.node is not None and self.connected and self.session_id is not None:
            if not self._is_pending(Purpose.DELETE_OWN):
                self._request(Purpose.DELETE_OWN, lambda rid: act.DeleteNode(rid, self._path(self.node or "")))
            if leave.deadline is not None and self.now >= leave.deadline:
                self._finish_exit()
            return
        if leave.kind is not LeaveKind.REJOIN:
            self._finish_exit()  # no node left to delete, or no connection to delete it with
            return
        if self.node is None:
            self._leave = None
            self._join()

    def _finish_exit(self) -> None:
        """Close the session and exit (or reopen). Never while a process of the job may
        live: SIGKILL went out but the job was not reaped (a stopped guardian, a process
        in uninterruptible sleep on a hung mount). Closing the session would delete our
        node and start the successor at once; instead the daemon exits with the session
        open, so ZooKeeper expires it no earlier than the lease allows, and a reopen is
        refused the same way (a new job runner beside a live old tree)."""
        leave = self._leave
        assert leave is not None
        self.phase = Phase.STOPPED
        if self.job is not JobPhase.NONE:
            self._log("job_not_reaped", "error", pid=self.job_pid, reason=leave.reason,
                      problem="the job's processes survived SIGKILL; exiting without closing the session, "
                              "which ZooKeeper expires after the session timeout")
            self._out.append(act.Exit(exitcodes.UNREAPED))
            return
        if leave.kind is LeaveKind.REOPEN:
            self._log("reopening", reason=leave.reason)
            self._out.extend([act.CloseSession(), act.Reopen()])
            return
        self._log("stopped", exit_code=leave.exit_code, reason=leave.reason)
        self._out.extend([act.CloseSession(), act.Exit(leave.exit_code)])

    # ---------------------------------------------------------------- helpers

    def _request(self, purpose: Purpose, build: Callable[[int], act.Action]) -> None:
        self._next_request += 1
        self._pending[self._next_request] = purpose
        self._out.append(build(self._next_request))

    def _is_pending(self, purpose: Purpose) -> bool:
        return purpose in self._pending.values()

    def _path(self, name: str) -> str:
        return f"{self.settings.election_path}/{name}"

    def _lease_left(self) -> float | None:
        if self.t_ok is None:
            return None
        return round(self._budget.stop_at(self.t_ok) - self.now, 3)

    def _log(self, event: str, level: str = "info", **fields: object) -> None:
        self._out.append(act.Log(event, level, fields))


def _budget(settings: Settings, session_timeout: float) -> timing.LeaseBudget:
    return timing.LeaseBudget(
        session_timeout, settings.stop_timeout, settings.watchdog, settings.tick_time, settings.reap_allowance
    )


def _hex(session_id: int) -> str:
    return f"0x{session_id:x}"


def _signal_name(number: int) -> str:
    try:
        return signal.Signals(number).name
    except ValueError:
        return str(number)


def _exit_fields(event: ev.JobExited) -> dict[str, object]:
    if event.error:
        return {"error": event.error}
    if event.returncode is not None and event.returncode < 0:
        return {"signal": _signal_name(-event.returncode)}
    return {"code": event.returncode}
