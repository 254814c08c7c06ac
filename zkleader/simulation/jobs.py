"""The leader-only job under its guardian, and the daemon's job runner.

A job is alive from StartJob until its last process is dead. Its guardian (guardian.py)
holds the lease's deadlines and kills it when the daemon dies. The guardian can die
first: the job's main process dies with it (PDEATHSIG), any workers it forked live on
as orphans of the daemon (a subreaper), which sweeps them before it reports the job
gone (zkleader/children.py) and starts a fresh guardian.
"""

from __future__ import annotations

import itertools
import signal
from typing import TYPE_CHECKING

from ..core import events as ev
from .config import INF, Bug

if TYPE_CHECKING:
    from .daemon import Daemon
    from .world import Host, World


class Job:
    __slots__ = ("id", "host", "daemon", "token", "znode", "session_id", "started_at", "dead_at", "death_at",
                 "returncode", "signalled", "started_post_at", "excused_until", "excuses", "sigkilled",
                 "guardian_dead", "exit_error", "reported", "stopped_by_guardian")
    _ids = itertools.count(1)

    def __init__(self, daemon: Daemon, token: int, znode: str, now: float) -> None:
        self.id = next(Job._ids)
        self.host = daemon.host
        self.daemon = daemon
        self.token = token
        self.znode = znode
        self.session_id = daemon.client.session_id
        self.started_at = now
        self.dead_at: float | None = None
        self.death_at: float | None = None
        self.returncode: int | None = None
        self.signalled = False
        self.started_post_at = now
        self.excused_until = -INF
        #: reason ("operator", "suspended") -> until when
        self.excuses: dict[str, float] = {}
        #: SIGKILL is on its way (KillJob, the guardian, the sweep of a dead guardian's orphans).
        self.sigkilled = False
        #: Its guardian died first: nobody relays signals to it any more, and the job
        #: runner reports JobExited(None, exit_error) instead of the status.
        self.guardian_dead = False
        self.exit_error: str | None = None
        #: JobExited was posted (Bug.EARLY_EXIT_REPORT posts it before the death).
        self.reported = False
        #: The guardian sent the stop signal on its own (its lease ran out): the exit is
        #: reported with by_guardian, as guardian.py appends " lease" to "exited".
        self.stopped_by_guardian = False

    def describe(self) -> str:
        return f"job#{self.id} of {self.daemon.label} (token {self.token}, {self.znode.rsplit('/', 1)[-1]})"


class Jobs:
    """Every job of the world, and what happens to them: started, signalled, killed by
    their daemon, their guardian or a crash."""

    def __init__(self, world: World) -> None:
        self.world = world

    def kill_delay(self) -> float:
        """How long a SIGKILL takes to end a job's processes."""
        rng = self.world.rng
        return rng.uniform(0.0, 0.05) if rng.random() > 0.02 else rng.uniform(0.05, 0.2)

    def start_job(self, daemon: Daemon, token: int, znode: str) -> None:
        for other in self.world.checker.alive:
            if other.daemon is daemon:
                self.world.checker.violate(
                    "double_start", f"{daemon.label} started a job while {other.describe()} is still alive"
                )
        job = Job(daemon, token, znode, self.world.now)
        host = daemon.host
        if host.fail_next_start:
            host.fail_next_start = False
            self.world.record(host, "!!", "the job cannot start (exec failed)")
            self.world.at(self.world.now + self.world.rng.uniform(0.0005, 0.005), self._post_job_event, daemon,
                    ev.JobExited(None, "cannot start: No such file or directory"))
            return
        self.world.checker.on_start(job)
        job.started_post_at = self.world.now + self.world.rng.uniform(0.001, 0.03)
        self.world.at(job.started_post_at, self._post_job_event, daemon, ev.JobStarted(pid=40000 + job.id))

    def _post_job_event(self, daemon: Daemon, event: ev.Event) -> None:
        daemon.post("job", event, delay=0.0)

    def job_of(self, daemon: Daemon) -> Job | None:
        """The daemon's job as far as its guardian can reach it: none once the guardian died."""
        for job in self.world.checker.alive:
            if job.daemon is daemon and not job.guardian_dead:
                return job
        return None

    def signal_job(self, daemon: Daemon) -> None:
        job = self.job_of(daemon)
        if job is None or job.signalled:
            return
        job.signalled = True
        rng = self.world.rng
        stop = self.world.cfg.stop_timeout
        ignores = self.world.cfg.ignore_stop
        r = rng.random()
        if r < ignores:
            return  # ignores the stop signal: only SIGKILL ends it
        r = (r - ignores) / (1.0 - ignores)
        if r < 0.72:
            delay = rng.uniform(0.0, 0.5) * stop
        elif r < 0.93:
            delay = rng.uniform(0.5, 1.0) * stop
        else:
            delay = rng.uniform(1.0, 1.6) * stop
        self._schedule_death(job, self.world.now + 0.0005 + delay, -signal.SIGTERM if rng.random() < 0.5 else 0)

    def kill_job(self, daemon: Daemon) -> None:
        job = self.job_of(daemon)
        if job is not None:
            self._schedule_death(job, self.world.now + self.kill_delay(), -signal.SIGKILL)

    def crash_job(self, host: Host) -> bool:
        for job in self.world.checker.alive:
            if job.host is host and not job.guardian_dead:
                self.world.record(host, "!!", f"{job.describe()} crashes")
                self.world.jobs_crashed += 1
                self._schedule_death(job, self.world.now, 1 if self.world.rng.random() < 0.7 else -signal.SIGSEGV)
                return True
        return False

    def _schedule_death(self, job: Job, t: float, returncode: int) -> None:
        if returncode == -signal.SIGKILL:
            job.sigkilled = True  # dead by t at the latest, whatever else was scheduled
        if job.dead_at is not None or (job.death_at is not None and job.death_at <= t):
            return
        job.death_at = t
        self.world.at(t, self._die, job, returncode, t)

    def _die(self, job: Job, returncode: int, t: float) -> None:
        if job.dead_at is not None or job.death_at != t:
            return
        if job.host.suspended_at is not None:
            # Nothing runs on a sleeping host, a SIGKILL's delivery included.
            job.host.on_wake.append((self._die, (job, returncode, t)))
            return
        job.dead_at = self.world.now
        job.returncode = returncode
        self.world.checker.on_death(job)
        self.world.record(job.host, "job", f"{job.describe()} is dead (status {returncode})")
        if not job.reported:
            error = job.exit_error
            exited = ev.JobExited(returncode, by_guardian=job.stopped_by_guardian)
            self._report_exit(job, exited if error is None else ev.JobExited(None, error))
        job.daemon.guardian.reaped()

    def _report_exit(self, job: Job, event: ev.JobExited) -> None:
        """The job runner posts JobExited a moment later (never before JobStarted); after
        a guardian's death it has swept the orphans by then, and starts a fresh one."""
        job.reported = True
        if job.guardian_dead:
            job.daemon.guardian.respawned()
        report = max(self.world.now + self.world.rng.uniform(0.0005, 0.01), job.started_post_at + 1e-6)
        self.world.at(report, self._post_job_event, job.daemon, event)

    def guardian_dies(self, host: Host, orphans: bool) -> bool:
        """The job's guardian is killed (kill -9, the OOM killer, the job killing its
        parent). The job's main process dies with it (PR_SET_PDEATHSIG); ``orphans``:
        workers it forked live on, and the daemon, a subreaper, inherits them: its job
        runner sweeps them (SIGKILL, reap) and only then posts JobExited.
        Bug.EARLY_EXIT_REPORT reports the job gone at once and leaves the orphans to
        finish on their own."""
        job = next((j for j in self.world.checker.alive if j.host is host and not j.guardian_dead), None)
        if job is None or host.suspended_at is not None:
            return False
        job.guardian_dead = True
        job.daemon.guardian.died()
        rng = self.world.rng
        self.world.record(host, "!!", f"the guardian of {job.describe()} is killed"
                                + (" while the job's workers live" if orphans else ""))
        now = self.world.now
        if not orphans:
            job.exit_error = "guardian died by signal 9 (SIGKILL) before the job ended; 0 leftover process(es) killed"
            self._schedule_death(job, now, -signal.SIGKILL)
        elif Bug.EARLY_EXIT_REPORT in self.world.cfg.bugs:
            self._report_exit(job, ev.JobExited(None, "guardian ended unexpectedly (status -9)"))
            self._schedule_death(job, now + rng.uniform(0.5, 3.0) * self.world.cfg.session_timeout, 0)
        else:
            job.exit_error = "guardian died by signal 9 (SIGKILL) before the job ended; 2 leftover process(es) killed"
            self._schedule_death(job, now + rng.uniform(0.0005, 0.005) + self.kill_delay(), -signal.SIGKILL)
        return True


class JobRunner:
    """One daemon's job runner as the shared loop sees it (loop.Job; job.JobRunner in
    production): it starts and signals the daemon's job in the world's job model, and
    hands the lease's deadlines to the daemon's guardian, which takes each command in
    a turn of its own loop."""

    def __init__(self, jobs: Jobs, daemon: Daemon) -> None:
        self._jobs = jobs
        self._daemon = daemon

    def start(self, token: int, znode: str, stop_at: float, kill_at: float) -> None:
        self._jobs.start_job(self._daemon, token, znode)
        self._daemon.guardian.hold(stop_at, kill_at)

    def guard(self, stop_at: float, kill_at: float) -> None:
        self._daemon.guardian.hold(stop_at, kill_at)

    def signal(self, signum: signal.Signals) -> None:
        """The job's reaction to the stop signal is drawn by the model, whichever it is,
        and only once: after the guardian's own stop, the daemon's is not repeated."""
        self._jobs.signal_job(self._daemon)
        self._daemon.guardian.turn()

    def kill(self) -> None:
        self._jobs.world.stats_count("daemon_kills")
        self._jobs.kill_job(self._daemon)
        self._daemon.guardian.turn()
