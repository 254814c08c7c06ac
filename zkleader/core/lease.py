"""The session and its lease: what ZooKeeper granted, ``t_ok``, and when to heartbeat.

``t_ok`` is a moment at or before the ZooKeeper leader's last touch of our session
(timing.py); the job may run until ``budget.stop_at(t_ok)``. Only the leader's
heartbeats renew it, one at a time (see ``Lease.may_heartbeat``).
"""

from __future__ import annotations

from . import timing
from .settings import Settings


def budget_for(settings: Settings, session_timeout: float) -> timing.LeaseBudget:
    return timing.LeaseBudget(
        session_timeout, settings.stop_timeout, settings.watchdog, settings.tick_time, settings.reap_allowance
    )


class Lease:
    def __init__(self, settings: Settings) -> None:
        self.budget = budget_for(settings, settings.session_timeout)
        self.session_id: int | None = None
        self.connected = False
        self.writable = False
        self.negotiated_timeout: float | None = None
        self.t_ok: float | None = None
        self.heartbeat_due: float | None = None
        self.heartbeat_inflight = False
        self._heartbeat_sent_at = 0.0
        self._drop_asked = False
        #: The latest connection attempt, for status only.
        self.attempt = 0
        self.attempt_host = ""

    def update_budget(self, settings: Settings) -> float:
        """The lease uses the shorter of the configured and the negotiated timeout."""
        effective = settings.session_timeout
        if self.negotiated_timeout is not None:
            effective = min(effective, self.negotiated_timeout)
        self.budget = budget_for(settings, effective)
        return effective

    def valid_at(self, now: float) -> bool:
        return self.t_ok is not None and now < self.budget.stop_at(self.t_ok)

    def outlasts_renewal(self, now: float) -> bool:
        """Valid beyond the next heartbeat's earliest answer: a job started on a lease
        that runs out before a renewal can arrive (a new leader's first, old anchor)
        would be stopped and restarted at once; it waits for that renewal instead."""
        return self.valid_at(now + self.budget.first_renewal)

    def kill_by(self) -> float | None:
        """The last moment SIGKILL may go out, while a session holds the lease."""
        if self.t_ok is None or self.session_id is None:
            return None
        return self.budget.kill_by(self.t_ok)

    def deadlines(self) -> tuple[float, float] | None:
        """(stop_at, kill_by) of the lease in force, which the guardian holds too; None
        without one (never while the job may run: that needs a valid lease)."""
        stop_at, kill_by = self.stop_at(), self.kill_by()
        return None if stop_at is None or kill_by is None else (stop_at, kill_by)

    def stop_at(self) -> float | None:
        return None if self.t_ok is None else self.budget.stop_at(self.t_ok)

    def left(self, now: float) -> float | None:
        """Seconds until the job must stop, for logs."""
        stop_at = self.stop_at()
        return None if stop_at is None else round(stop_at - now, 3)

    def renew(self, relayed_at: float) -> None:
        self.t_ok = relayed_at if self.t_ok is None else max(self.t_ok, relayed_at)

    def may_heartbeat(self) -> bool:
        """One heartbeat at a time: an unanswered one leaves the connection silent, so
        kazoo's own ping goes out and finds a dead server (a steady stream of requests
        would postpone that forever); the lease never depended on it."""
        return self.connected and not self.heartbeat_inflight

    def heartbeat_sent(self, now: float) -> None:
        self.heartbeat_inflight = True
        self.heartbeat_due = now + self.budget.heartbeat_interval
        self._heartbeat_sent_at = now
        self._drop_asked = False

    @property
    def stall_deadline(self) -> float | None:
        """When an unanswered heartbeat means the server went silent: one heartbeat
        interval after it was sent (None: none in flight, or the drop already asked)."""
        if not self.heartbeat_inflight or self._drop_asked or not self.connected:
            return None
        return self._heartbeat_sent_at + self.budget.heartbeat_interval

    def drop_asked(self) -> None:
        self._drop_asked = True

    def heartbeat_answered(self, now: float) -> float:
        """This answer anchors the lease of a sync queued tickTime/2 from now at the
        earliest (timing.relayed_anchor): the next heartbeat waits that long. Returns
        that instant."""
        self.heartbeat_inflight = False
        renewal = now + self.budget.first_renewal
        self.heartbeat_due = renewal if self.heartbeat_due is None else max(self.heartbeat_due, renewal)
        return renewal

    def suspended(self) -> None:
        self.connected = False
        self.heartbeat_inflight = False

    def lost(self) -> None:
        self.session_id = None
        self.connected = False
        self.t_ok = None

    def forget_heartbeats(self) -> None:
        self.heartbeat_inflight = False
        self.heartbeat_due = None
