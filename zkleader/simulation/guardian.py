"""The job's warm guardian (zkleader/guardian.py), as the simulated world runs it.

It **holds the lease.** StartJob and GuardLease hand it the lease's deadlines on the
host's clock (CLOCK_BOOTTIME, drifting with the host, as the daemon's). It is a process
of its own, so a paused or blocked daemon does not stop it: when the clock reaches
stop_at with the job running and no stop signal sent, it sends the stop signal itself
(the job reacts as to any stop); at kill_at it SIGKILLs the tree; the exit goes to the
daemon as JobExited(by_guardian=True), read when its loop runs again. It cannot tell a
stalled daemon from a healthy one: at a lease's end both wake for the same instant, and
either may be first, as in production. Its wait runs on CLOCK_MONOTONIC with no cap, so
a suspend delays its wake-up by the sleep. When the daemon dies it kills the tree.

``Bug.GUARDIAN_IGNORES_LEASE`` (config.py) switches the lease off.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from .config import Bug

if TYPE_CHECKING:
    from .daemon import Daemon
    from .world import World


class Guardian:
    """One daemon incarnation's guardian, as its job runner talks to it."""

    def __init__(self, world: World, daemon: Daemon) -> None:
        self.world = world
        self.daemon = daemon
        self.host = daemon.host
        #: The process exists: False from its death until the job runner replaces it
        #: (after sweeping its orphans).
        self.alive = True
        #: Open until the daemon dies or exits.
        self.lifeline_open = True
        #: The current job's lease deadlines, on the host's clock.
        self.stop_at: float | None = None
        self.kill_at: float | None = None
        #: Generation of the pending wake-up: a new turn supersedes the old one.
        self._turn = 0
        self._ignores_lease = Bug.GUARDIAN_IGNORES_LEASE in world.cfg.bugs

    # ----------------------------------------------------- the job runner's

    def hold(self, stop_at: float, kill_at: float) -> None:
        """``start``'s deadlines, or a ``lease`` line: the lease in force now. A line
        written to a guardian that died is lost with it."""
        if not self.alive:
            return
        self.stop_at, self.kill_at = stop_at, kill_at
        self.turn()

    def turn(self) -> None:
        """One pass of the guardian's loop (after a command or a wake-up): the lease's
        deadlines against the host clock, then a wait for the next one."""
        self._turn += 1
        job = self.world.jobs.job_of(self.daemon)
        if job is None or job.sigkilled or not self.alive or not self.lifeline_open or self._ignores_lease:
            return
        world, host = self.world, self.host
        now = host.local(world.now)
        if self.kill_at is not None and now >= self.kill_at:
            world.stats_count("guardian_kills")
            world.record(host, "job", f"the guardian SIGKILLs {job.describe()}: its lease's kill deadline came")
            world.jobs.kill_job(self.daemon)
            return
        if self.stop_at is not None and now >= self.stop_at and not job.signalled:
            world.stats_count("guardian_stops")
            if self.daemon.paused is not None:
                world.stats_count("guardian_stops_stalled")
            job.stopped_by_guardian = True
            world.record(host, "job", f"the guardian stops {job.describe()} itself: its lease ran out"
                                      + (f" (daemon {self.daemon.paused}-paused)" if self.daemon.paused else ""))
            world.jobs.signal_job(self.daemon)
        due = [d for d in (None if job.signalled else self.stop_at, self.kill_at) if d is not None]
        if due:
            t = max(world.now, host.world_time(min(due)) + world.loop_jitter())
            world.at(t, self._wake, self._turn)

    def _wake(self, turn: int) -> None:
        if turn != self._turn:
            return
        host = self.host
        if host.suspended_at is not None:
            # CLOCK_MONOTONIC stopped with the host: what was left of the wait is left on waking.
            host.on_wake.append((self._sleep_out, (turn, self.world.now - host.suspended_at)))
            return
        self.turn()

    def _sleep_out(self, turn: int, left: float) -> None:
        self.world.at(self.world.now + left, self._wake, turn)

    # ------------------------------------------------------ its own end

    def died(self) -> None:
        """Killed (the guardian_death fault): the job runner replaces it once the daemon
        has swept its orphans (``respawned``)."""
        self.alive = False
        self._turn += 1
        self.stop_at = self.kill_at = None

    def respawned(self) -> None:
        """A fresh guardian; none for a dead daemon."""
        if self.daemon.alive:
            self.alive = True

    def lifeline_closed(self) -> None:
        """The daemon is gone (killed, or exited): the tree goes, SIGKILLed at once."""
        self.lifeline_open = False
        self._turn += 1
        if self.alive:
            self.world.jobs.kill_job(self.daemon)
