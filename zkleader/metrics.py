"""Prometheus metrics (optional: `metrics: {listen: "127.0.0.1:9108"}`).

A shell like the others: it only observes what the loop already has (each event,
the actions the core returned, the core's state) and serves the figures with
prometheus-client's own HTTP server thread. Nothing here feeds back into decisions.

Every duration is measured on the loop's clock (CLOCK_BOOTTIME in production), at the
moments the loop handles the events that bound it, so a figure is what this daemon
saw, queueing in its own loop included. What a new leader cannot know is not
guessed: its predecessor's last heartbeat (see ``Metrics.failover``).
"""

from __future__ import annotations

from collections.abc import Callable

from prometheus_client import (
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    start_http_server,
)
from prometheus_client import Enum as StateEnum

from .config import MetricsConfig
from .core import actions as act
from .core import events as ev
from .core.snapshot import Phase, Snapshot

#: Buckets in seconds. Failover: the bench's handover is ~10 ms, a takeover that waits
#: for a second heartbeat ~tickTime/2 more, and anything past a few seconds is a fault.
FAILOVER_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0)
#: Job stop: a reaped SIGTERM takes milliseconds; stop_timeout (2 s by default) then SIGKILL.
STOP_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.0, 3.0, 5.0, 10.0, 30.0)
#: Heartbeat: a sync + exists on a LAN is ~1 ms; past the heartbeat interval it is a stall.
HEARTBEAT_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0)

#: Why this host started leaving, by the event that made it leave (the core's reason
#: strings are for people; the event is the structured fact).
_LEAVE_REASONS: dict[type, str] = {
    ev.ShutdownRequested: "shutdown",
    ev.ResignRequested: "resigned",
    ev.ReopenRequested: "reconfigured",
    ev.HealthChecked: "health",
    ev.JobExited: "job_exited",
    ev.AuthFailed: "not_authorized",
    ev.RequestFailed: "not_authorized",  # only NoAuth begins a leave from a reply
}

#: Why leadership ended without a leave, by the log event the core said it with.
_LOSS_LOGS = (
    ("session_lost", "session_lost"),
    ("node_vanished", "node_deleted"),
    ("read_only", "read_only"),
    ("leadership_lost", "lower_node"),  # the one lose_leadership reason left: "a lower node appeared"
)


class Metrics:
    def __init__(self, config: MetricsConfig | None, clock: Callable[[], float]) -> None:
        """``config`` None: the registry only, no HTTP server (tests; or a listener
        elsewhere that serves ``registry``)."""
        self._clock = clock
        self.registry = CollectorRegistry()
        r = self.registry
        self.is_leader = Gauge("zkleader_is_leader", "1 while this host leads the election", registry=r)
        self.transitions = Counter(
            "zkleader_leader_transitions", "Leadership acquired or lost by this host", ["direction"], registry=r
        )
        self.changes = Counter(
            "zkleader_leadership_changes",
            "Leadership acquired or lost by this host, by reason", ["change", "reason"], registry=r,
        )
        self.job_starts = Counter("zkleader_job_starts", "Leader-only job starts", registry=r)
        self.job_exits = Counter(
            "zkleader_job_exits", "Job exits by cause (stopped, killed, exited, failed_to_start)", ["cause"], registry=r
        )
        self.job_restarts = Counter("zkleader_job_restarts", "Restarts scheduled by on_exit: restart", registry=r)
        self.state = StateEnum(
            "zkleader_zookeeper_state", "ZooKeeper connection state",
            states=["connecting", "connected", "suspended", "read_only"], registry=r,
        )
        self.position = Gauge("zkleader_queue_position", "0 for the leader, 1 next in line; -1 not queued", registry=r)
        self.failover_last = Gauge(
            "zkleader_last_failover_seconds",
            "From seeing the predecessor's node deleted to this host's job started, at the last takeover",
            registry=r,
        )
        self.failover = Histogram(
            "zkleader_failover_seconds",
            "Takeovers measured by this host as the new leader: from the notification that its predecessor's "
            "node was deleted to its job running (JobStarted)", registry=r, buckets=FAILOVER_BUCKETS,
        )
        self.job_stop = Histogram(
            "zkleader_job_stop_seconds",
            "From the daemon asking the job to stop (stop signal, or SIGKILL at once) to every process of it reaped",
            ["cause"], registry=r, buckets=STOP_BUCKETS,
        )
        self.heartbeat = Histogram(
            "zkleader_heartbeat_round_trip_seconds",
            "A leader's heartbeat (sync + exists on its own node): from sending it to handling its answer",
            registry=r, buckets=HEARTBEAT_BUCKETS,
        )
        self._last_change = clock()
        since = Gauge(
            "zkleader_seconds_since_leadership_change",
            "Seconds since this host last acquired or lost leadership (or started)", registry=r,
        )
        since.set_function(lambda: self._clock() - self._last_change)
        self._snapshot: Snapshot | None = None
        lease = Gauge(
            "zkleader_lease_remaining_seconds",
            "While this host leads: seconds until its lease makes it stop the job unless a heartbeat renews it "
            "(NaN otherwise)", registry=r,
        )
        lease.set_function(self._lease_remaining)
        timeout = Gauge(
            "zkleader_session_timeout_seconds",
            "The session timeout the lease uses (the shorter of the configured and the negotiated one)", registry=r,
        )
        timeout.set_function(lambda: self._snapshot.budget.session_timeout if self._snapshot else float("nan"))
        # Failover: the predecessor's deletion seen (its time), then the takeover it led to.
        self._deletion_seen: float | None = None
        self._takeover_from: float | None = None
        # Job stop: when the first stop signal or SIGKILL of the current job went out.
        self._stop_asked: float | None = None
        # Heartbeats in flight (request ids); the reply carries the time it was sent.
        self._heartbeats: set[int] = set()
        # Leadership changes: whether this host leads, why it is leaving, and whether
        # the lease ran out during this leadership without being renewed since.
        self._leading = False
        self._leave_reason: str | None = None
        self._lease_expired = False
        self.server = self.thread = None
        if config is not None:
            self.server, self.thread = start_http_server(config.port, addr=config.host, registry=r)

    def close(self) -> None:
        if self.server is not None:
            self.server.shutdown()

    def observe(self, event: ev.Event, actions: list[act.Action], core: Snapshot, now: float) -> None:
        previous, self._snapshot = self._snapshot, core
        logs = {a.event: a for a in actions if isinstance(a, act.Log)}
        self._failover_notice(event, previous, core, now)
        self._heartbeat_round_trip(event, actions, now)
        self._job_stop(event, actions, logs, now)
        self._leadership(event, logs, previous, core, now)
        for action in actions:
            if isinstance(action, act.Log):
                self._on_log(action, now)
        self.is_leader.set(1 if core.leader else 0)
        self.position.set(core.position if core.position is not None else -1)
        if core.session_id is None:
            self.state.state("connecting")
        elif not core.connected:
            self.state.state("suspended")
        else:
            self.state.state("connected" if core.writable else "read_only")

    # ------------------------------------------------------------- durations

    def _failover_notice(self, event: ev.Event, previous: Snapshot | None, core: Snapshot, now: float) -> None:
        """The start of a takeover: the deletion of the node this host was watching as its
        predecessor (as the previous step left it). Forgotten when this host moves on
        to another predecessor or another node, so a takeover found later by a listing
        (after a reconnect) is not timed from a stale deletion.

        Why not from the old leader's last heartbeat: nothing the new leader can read
        says when that was. An ephemeral node's mtime is its creation (heartbeats are
        reads), a deleted node has no stat at all, a watch event carries no time, and
        the old leader's clocks are not this host's. Publishing each heartbeat's time
        would be a write per heartbeat that wakes the successor's watch. For a crash,
        ZooKeeper deletes the node one session timeout after the old leader's last
        packet (up to a tickTime later), so that delay is about
        zkleader_session_timeout_seconds on top of this one (README, Metrics)."""
        if isinstance(event, ev.WatchFired) and event.kind is ev.WatchKind.DELETED and previous is not None \
                and previous.predecessor is not None and event.path == f"{previous.election_path}/{previous.predecessor}":
            self._deletion_seen = now
        elif core.predecessor is not None and previous is not None and core.predecessor != previous.predecessor:
            self._deletion_seen = None
        if previous is not None and core.node != previous.node:
            self._deletion_seen = None

    def _heartbeat_round_trip(self, event: ev.Event, actions: list[act.Action], now: float) -> None:
        """CheckNode with sync is the heartbeat (and the confirming check, the same
        request); its answer, NodeChecked, carries when the shell sent it."""
        if isinstance(event, ev.NodeChecked) and event.request_id in self._heartbeats:
            self._heartbeats.discard(event.request_id)
            self.heartbeat.observe(max(0.0, now - event.sent_at))
        elif isinstance(event, ev.RequestFailed):
            self._heartbeats.discard(event.request_id)
        elif isinstance(event, ev.SessionLost) or len(self._heartbeats) > 64:
            self._heartbeats.clear()  # answers that will never come
        self._heartbeats.update(a.request_id for a in actions if isinstance(a, act.CheckNode) and a.sync)

    def _job_stop(self, event: ev.Event, actions: list[act.Action], logs: dict[str, act.Log], now: float) -> None:
        """From the first stop signal or SIGKILL to JobExited; a job that exited on its
        own, or that the guardian stopped without a word from the daemon, is not timed."""
        if isinstance(event, ev.JobExited):
            exited = logs.get("job_exited")
            if self._stop_asked is not None and exited is not None:
                self.job_stop.labels(cause=str(exited.fields.get("cause", "stopped"))).observe(now - self._stop_asked)
            self._stop_asked = None
        if self._stop_asked is None and any(isinstance(a, (act.SignalJob, act.KillJob)) for a in actions):
            self._stop_asked = now
        if any(isinstance(a, act.StartJob) for a in actions):
            self._stop_asked = None

    # ---------------------------------------------------- leadership changes

    def _leadership(self, event: ev.Event, logs: dict[str, act.Log], previous: Snapshot | None, core: Snapshot,
                    now: float) -> None:
        """Counts each change of "this host leads" (acquired, or lost and why), found by
        comparing the core's state across steps so that no path that ends a leadership
        goes uncounted (a session loss or a handover ends it without a leadership_lost
        line)."""
        # A rejoin ends its leave in the step that ends the leadership: the reason is
        # the one the leave had until then.
        leave_reason = self._leave_reason
        if core.leaving is None:
            self._leave_reason = None
        elif previous is None or core.leaving != previous.leaving:
            # A leave begins (or a shutdown overrides a resign's): the event says why.
            # A create landing after the health check failed is withdrawn on a reply.
            self._leave_reason = _LEAVE_REASONS.get(type(event)) or (
                "drained" if core.drained else "health" if core.withdrawn else "other")
        if "lease_expired" in logs and self._leading:
            self._lease_expired = True
        elif self._lease_expired and core.t_ok is not None and core.budget.stop_at(core.t_ok) > now:
            self._lease_expired = False  # renewed: the leadership goes on
        leading = core.leader and core.phase is not Phase.STOPPED
        if leading and not self._leading:
            reason = "predecessor_deleted" if self._deletion_seen is not None else "listed_first"
            self._count("acquired", reason, now)
            self._takeover_from, self._deletion_seen = self._deletion_seen, None
        elif self._leading and not leading:
            self._count("lost", self._leave_reason or leave_reason or self._loss_reason(logs), now)
            self._takeover_from = None
            self._lease_expired = False
        self._leading = leading

    def _loss_reason(self, logs: dict[str, act.Log]) -> str:
        """Why a leadership ended while this host was not leaving."""
        if self._lease_expired:
            return "lease_expired"
        for log_event, reason in _LOSS_LOGS:
            if log_event in logs:
                return reason
        return "other"

    def _count(self, change: str, reason: str, now: float) -> None:
        self.changes.labels(change=change, reason=reason).inc()
        self.transitions.labels(direction=change).inc()
        self._last_change = now

    def _lease_remaining(self) -> float:
        """At scrape time, from the latest state and the clock: what the loop would
        compute now. NaN while this host holds no lease as leader."""
        s = self._snapshot
        if s is None or not s.leader or s.t_ok is None or s.phase is Phase.STOPPED:
            return float("nan")
        return s.budget.stop_at(s.t_ok) - self._clock()

    def _on_log(self, log: act.Log, now: float) -> None:
        if log.event == "job_started":
            self.job_starts.inc()
            if self._takeover_from is not None:
                self.failover.observe(now - self._takeover_from)
                self.failover_last.set(now - self._takeover_from)
                self._takeover_from = None
        elif log.event == "job_exited":
            self.job_exits.labels(cause=str(log.fields.get("cause", "exited"))).inc()
        elif log.event == "job_restart_scheduled":
            self.job_restarts.inc()
