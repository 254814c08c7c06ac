"""Prometheus metrics (optional: `metrics: {listen: "127.0.0.1:9108"}`).

A shell like the others: it only observes what the loop already has (each event,
the actions the core returned, the core's state) and serves the figures with
prometheus-client's own HTTP server thread. Nothing here feeds back into decisions.
"""

from __future__ import annotations

from collections.abc import Callable

from prometheus_client import CollectorRegistry, Counter, Gauge, start_http_server
from prometheus_client import Enum as StateEnum

from .config import MetricsConfig
from .core import actions as act
from .core import events as ev
from .core.snapshot import Snapshot


class Metrics:
    def __init__(self, config: MetricsConfig, clock: Callable[[], float]) -> None:
        self._clock = clock
        self.registry = CollectorRegistry()
        r = self.registry
        self.is_leader = Gauge("zkleader_is_leader", "1 while this host leads the election", registry=r)
        self.transitions = Counter(
            "zkleader_leader_transitions", "Leadership acquired or lost by this host", ["direction"], registry=r
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
        self.failover = Gauge(
            "zkleader_last_failover_seconds",
            "From seeing the predecessor's node deleted to this host's job started, at the last takeover",
            registry=r,
        )
        self._last_change = clock()
        since = Gauge(
            "zkleader_seconds_since_leadership_change",
            "Seconds since this host last acquired or lost leadership (or started)", registry=r,
        )
        since.set_function(lambda: self._clock() - self._last_change)
        self._deletion_seen: float | None = None
        self._takeover_from: float | None = None
        self.server, self.thread = start_http_server(config.port, addr=config.host, registry=r)

    def close(self) -> None:
        self.server.shutdown()

    def observe(self, event: ev.Event, actions: list[act.Action], core: Snapshot, now: float) -> None:
        if isinstance(event, ev.WatchFired) and event.kind is ev.WatchKind.DELETED:
            self._deletion_seen = now
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

    def _on_log(self, log: act.Log, now: float) -> None:
        if log.event == "leader_acquired":
            self.transitions.labels(direction="acquired").inc()
            self._last_change = now
            self._takeover_from = self._deletion_seen
        elif log.event == "leadership_lost":
            self.transitions.labels(direction="lost").inc()
            self._last_change = now
        elif log.event == "job_started":
            self.job_starts.inc()
            if self._takeover_from is not None:
                self.failover.set(now - self._takeover_from)
                self._takeover_from = None
        elif log.event == "job_exited":
            self.job_exits.labels(cause=str(log.fields.get("cause", "exited"))).inc()
        elif log.event == "job_restart_scheduled":
            self.job_restarts.inc()
