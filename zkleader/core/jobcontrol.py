"""The job's lifecycle as the core sees it: started, stopping, killed, reaped, and the
restart backoff. The guardian (a shell) carries it out; JobExited means every process
of the job is gone."""

from __future__ import annotations

import enum
import signal

from . import actions as act
from . import events as ev
from .outbox import Outbox
from .settings import Settings

#: A job that ran at least this long is not a "quick exit" and resets the backoff.
QUICK_EXIT = 10.0
#: Restart delays double on consecutive quick exits, up to this many seconds.
MAX_RESTART_DELAY = 60.0


class JobPhase(enum.Enum):
    NONE = "none"
    STARTING = "starting"
    RUNNING = "running"
    STOPPING = "stopping"


class JobControl:
    def __init__(self, out: Outbox) -> None:
        self._out = out
        self.phase = JobPhase.NONE
        self.pid: int | None = None
        self.started_at = 0.0
        #: The fencing token the job was started with (leadership may be gone since).
        self.token: int | None = None
        self.kill_at: float | None = None
        self.killed = False
        self.restart_at: float | None = None
        self.quick_exits = 0
        #: The lease deadlines (stop, kill) the guardian holds for the current job.
        self.guarded: tuple[float, float] | None = None

    @property
    def alive(self) -> bool:
        """Started and not yet asked to stop."""
        return self.phase in (JobPhase.STARTING, JobPhase.RUNNING)

    @property
    def kill_due(self) -> float | None:
        """When SIGKILL follows a graceful stop still under way."""
        return self.kill_at if self.phase is JobPhase.STOPPING and not self.killed else None

    def start(self, now: float, token: int, znode: str, deadlines: tuple[float, float]) -> None:
        self.phase = JobPhase.STARTING
        self.token = token
        self.started_at = now
        self.restart_at = None
        self.guarded = deadlines
        self._out.emit(act.StartJob(token=token, znode=znode, stop_at=deadlines[0], kill_at=deadlines[1]))

    def guard(self, deadlines: tuple[float, float]) -> None:
        """Hands the lease's current deadlines to the guardian when they changed while
        the job may run. Never once it is stopping: the lease in force then may be a
        new session's, which does not protect the leadership the job was started
        under, so the guardian keeps the last deadlines of the lease that did."""
        if not self.alive or deadlines == self.guarded:
            return
        self.guarded = deadlines
        self._out.emit(act.GuardLease(stop_at=deadlines[0], kill_at=deadlines[1]))

    def stop(self, now: float, reason: str, settings: Settings, kill_by: float | None) -> None:
        """The graceful stop; SIGKILL follows at stop_timeout, or sooner when the lease
        (``kill_by``) says so."""
        self.phase = JobPhase.STOPPING
        self.killed = False
        kill_at = now + settings.stop_timeout
        if kill_by is not None:
            kill_at = min(kill_at, kill_by)
        self.kill_at = kill_at
        self._out.log("job_stopping", signal=settings.stop_signal.name, reason=reason, pid=self.pid)
        self._out.emit(act.SignalJob(settings.stop_signal))
        if kill_at <= now:
            self.kill_now(now, reason)

    def kill_now(self, now: float, reason: str) -> None:
        if self.phase is JobPhase.NONE or self.killed:
            return
        self.phase = JobPhase.STOPPING
        self.killed = True
        self.kill_at = now
        self._out.log("job_killed", "warning", reason=reason, pid=self.pid)
        self._out.emit(act.KillJob())

    def started(self, pid: int) -> None:
        self.pid = pid
        if self.phase is JobPhase.STARTING:
            self.phase = JobPhase.RUNNING
        # The token the job was started with: leadership may already be gone by now.
        self._out.log("job_started", pid=pid, token=self.token)

    def exited(self, event: ev.JobExited, now: float) -> tuple[bool, float]:
        """Every process of the job is gone. Returns (stopped by us, seconds it ran)."""
        stopped_by_us = self.phase is JobPhase.STOPPING or event.by_guardian
        ran = now - self.started_at
        if event.by_guardian:
            cause = "stopped_by_guardian"
        elif stopped_by_us:
            cause = "killed" if self.killed else "stopped"
        else:
            cause = "failed_to_start" if event.error and self.pid is None else "exited"
        self._out.log("job_exited", "info" if stopped_by_us and not event.by_guardian else "warning", pid=self.pid, ran=round(ran, 3),
                      cause=cause, **_exit_fields(event))
        self.phase = JobPhase.NONE
        self.pid = None
        self.kill_at = None
        self.killed = False
        self.guarded = None
        return stopped_by_us, ran

    def schedule_restart(self, now: float, ran: float, settings: Settings) -> None:
        """on_exit: restart, with a delay that doubles on quick exits, capped."""
        self.quick_exits = self.quick_exits + 1 if ran < QUICK_EXIT else 1
        doubled = settings.restart_delay * 2 ** min(self.quick_exits - 1, 32)
        delay = min(doubled, max(MAX_RESTART_DELAY, settings.restart_delay))
        self.restart_at = now + delay
        self._out.log("job_restart_scheduled", "warning", delay=delay, restarts=self.quick_exits)


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
