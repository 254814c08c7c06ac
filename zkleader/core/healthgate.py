"""Health-gated candidacy: with a check configured, a host joins only after a pass,
and withdraws after ``failures`` failures in a row."""

from __future__ import annotations

import enum

from . import actions as act
from . import events as ev
from .outbox import Outbox
from .settings import HealthPolicy


class Verdict(enum.Enum):
    """What a check result changes for the candidacy."""

    NONE = "none"
    WITHDRAW = "withdraw"
    ADMIT = "admit"


class HealthGate:
    def __init__(self, policy: HealthPolicy | None, out: Outbox) -> None:
        self._out = out
        self.withdrawn = policy is not None
        self._withdrawn_at: float | None = None
        self._due: float | None = 0.0 if policy else None
        self._inflight = False
        self._passes = 0
        self._failures = 0

    @property
    def due(self) -> float | None:
        """When the next check runs (None while one runs)."""
        return None if self._inflight else self._due

    def poll(self, now: float) -> None:
        if self._due is not None and now >= self._due and not self._inflight:
            self._inflight = True
            self._due = None
            self._out.emit(act.RunHealthCheck())

    def result(self, event: ev.HealthChecked, now: float, policy: HealthPolicy | None) -> Verdict:
        self._inflight = False
        if policy is None:
            return Verdict.NONE
        self._due = now + policy.interval
        if event.ok:
            self._passes += 1
            self._failures = 0
        else:
            self._failures += 1
            self._passes = 0
        if not self.withdrawn and self._failures >= policy.failures:
            self.withdrawn = True
            self._withdrawn_at = now
            self._out.log("health_withdrawn", "warning", failures=self._failures, detail=event.detail)
            return Verdict.WITHDRAW
        if self.withdrawn and event.ok and self._admits(policy, now):
            self.withdrawn = False
            self._out.log("health_passed" if self._withdrawn_at is None else "health_restored", passes=self._passes)
            return Verdict.ADMIT
        if not event.ok:
            self._out.log("health_failed", "warning", failures=self._failures, detail=event.detail)
        return Verdict.NONE

    def reconfigured(self, old: HealthPolicy | None, new: HealthPolicy | None, now: float) -> bool:
        """Returns True when dropping the check re-admits a withdrawn host."""
        if new is None and self.withdrawn:
            self.withdrawn = False
            return True
        if new is not None and old is None:
            self._due = now
        return False

    def _admits(self, policy: HealthPolicy, now: float) -> bool:
        """The first pass admits a starting host; a withdrawn one needs `successes` passes
        in a row and at least one interval out, so a flapping check cannot flap leadership."""
        if self._withdrawn_at is None:
            return True
        return self._passes >= policy.successes and now - self._withdrawn_at >= policy.interval
