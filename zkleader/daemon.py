"""The daemon's loop: the one place where events meet the decision core.

Every event, whichever thread produced it (kazoo's connection and callback threads,
the job watcher, the health checker, signal handlers), goes through one queue and is
handled here in order, stamped with CLOCK_BOOTTIME (clock.py: it keeps counting
through a system suspend, as the ZooKeeper servers do). The loop sleeps until the
next event, the core's next deadline or the next watchdog ping, whichever comes
first (and never longer than MAX_SLEEP), so a lease deadline is never missed because
nothing else happened; and the watchdog is fed only by this loop, so systemd kills a
daemon whose loop is stuck. Nothing the loop does may block: logging only queues
(logs.py), notifications are sent without waiting (notify.py).
"""

from __future__ import annotations

import datetime
import os
import queue
import signal
import socket
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import structlog

from . import __version__, clock, config, logs, notify
from .config import Config
from .core import actions as act
from .core import events as ev
from .core import exitcodes
from .core.leadership import Leadership
from .core.snapshot import Phase
from .core.settings import HealthPolicy, Identity, Settings
from .health import HealthRunner
from .job import JobRunner
from .post import Post
from .zookeeper import ZooKeeperShell

#: The longest the loop sleeps without an event. Its timed wait runs on CLOCK_MONOTONIC
#: (Python's locks), which stops during a system suspend: after a resume the loop would
#: otherwise sleep out the rest of a wait computed before the suspend, with the lease
#: already over on CLOCK_BOOTTIME and the job running. This bounds that delay.
MAX_SLEEP = 0.5


def settings_from(loaded: Config, watchdog: float = 0.0) -> Settings:
    health = loaded.health
    return Settings(
        election_path=loaded.election.path,
        candidate=loaded.election.candidate,
        session_timeout=loaded.zookeeper.session_timeout,
        stop_signal=loaded.job.stop_signal,
        stop_timeout=loaded.job.stop_timeout,
        reap_allowance=loaded.job.reap_allowance,
        on_exit=loaded.job.on_exit,
        restart_delay=loaded.job.restart_delay,
        health=HealthPolicy(health.interval, health.failures, health.successes) if health else None,
        watchdog=watchdog,
        tick_time=loaded.zookeeper.tick_time,
    )


@dataclass(frozen=True)
class _Generation:
    """Events from the shells of one configuration; a reload that reopens the session
    bumps the number so late callbacks of the old kazoo client are dropped."""

    number: int
    event: ev.Event


@dataclass(frozen=True)
class _ReloadRequested:
    """SIGHUP: handled by the loop itself (reading files is not the core's business)."""


class Daemon:
    def __init__(self, loaded: Config, clock: Callable[[], float] = clock.now) -> None:
        self.config = loaded
        self._clock = clock
        self._queue: queue.SimpleQueue[Any] = queue.SimpleQueue()
        self._log = structlog.get_logger()
        self._generation = 0
        self._watchdog = notify.watchdog_interval()
        self._next_ping = 0.0
        self._ready_sent = False
        self._status = ""
        self._pending_config: Config | None = None
        self._metrics: Any = None
        self.core: Leadership
        self._zookeeper: ZooKeeperShell
        self._job: JobRunner
        self._health: HealthRunner | None = None
        self._post: Post = self._queue.put

    # ------------------------------------------------------------------ loop

    def run(self) -> int:
        self._install_signal_handlers()
        if self.config.metrics is not None:
            from .metrics import Metrics  # prometheus-client only when asked for

            self._metrics = Metrics(self.config.metrics, self._clock)
        self._open(self.config)
        if self.core.snapshot().budget.ride_through <= 0:
            # systemd's watchdog interval is only known now: with it, the job would be
            # stopped before the next heartbeat could ever renew the lease.
            self._log.error("lease_budget_impossible", watchdog=self._watchdog, problem=self.core.budget_problem())
            return exitcodes.CONFIG
        self._warn_about_watchdog()
        while True:
            item = self._next_item()
            if isinstance(item, _ReloadRequested):
                self._reload()
                continue
            if isinstance(item, _Generation):
                if item.number != self._generation:
                    continue
                event = item.event
            else:
                event = item
            outcome = self._step(event)
            if isinstance(outcome, int):
                return outcome

    def _next_item(self) -> Any:
        now = self._clock()
        wake = [d for d in (self.core.next_deadline(), self._next_ping if self._watchdog else None) if d is not None]
        timeout = min(max(0.0, min(wake) - now), MAX_SLEEP) if wake else MAX_SLEEP
        try:
            item = self._queue.get(timeout=timeout)
        except queue.Empty:
            item = ev.Tick()
        self._feed_watchdog()
        return item

    def _step(self, event: ev.Event) -> int | None:
        now = self._clock()
        actions = self.core.handle(event, now)
        if self._metrics is not None:
            self._metrics.observe(event, actions, self.core.snapshot(), now)
        for action in actions:
            match action:
                case act.Exit(code=code):
                    notify.stopping("stopped")
                    if self._metrics is not None:
                        self._metrics.close()
                    return code
                case act.Reopen():
                    assert self._pending_config is not None
                    self.config, self._pending_config = self._pending_config, None
                    logs.configure(self.config.logging.level, self.config.logging.format, log_context(self.config))
                    self._open(self.config)
                    return None
                case _:
                    self._execute(action)
        self._report_status()
        return None

    def _execute(self, action: act.Action) -> None:
        match action:
            case act.Log(event=name, level=level, fields=fields):
                getattr(self._log, level)(name, **fields)
            case act.AnnounceStopping():
                notify.stopping("stopping: " + self.core.snapshot().status_line())
            case act.StartJob(token=token, znode=znode):
                self._job.start(token, znode)
            case act.SignalJob(signal=signum):
                self._job.signal(signum)
            case act.KillJob():
                self._job.kill()
            case act.RunHealthCheck():
                if self._health is not None:
                    self._health.run_once()
                else:
                    self._post(ev.HealthChecked(True, "no health check configured"))
            case _:
                self._zookeeper.execute(action)

    # ------------------------------------------------------------ lifecycle

    def _open(self, loaded: Config) -> None:
        """Builds the core and the shells for one configuration and connects."""
        self._generation += 1
        identity = Identity(
            host=socket.gethostname(),
            pid=os.getpid(),
            version=__version__,
            started_at=datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        )
        self.core = Leadership(settings_from(loaded, self._watchdog or 0.0), identity,
                               new_candidacy_id=lambda: uuid.uuid4().hex)
        generation = self._generation

        def post(event: ev.Event) -> None:
            self._queue.put(_Generation(generation, event))

        self._post = post
        self._job = JobRunner(loaded.job, loaded.election.path, loaded.election.candidate, post)
        self._health = HealthRunner(loaded.health, post) if loaded.health else None
        self._zookeeper = ZooKeeperShell(loaded.zookeeper, post, self._clock)
        self._log.info("starting", version=__version__, zookeeper=loaded.zookeeper.connection_string,
                       session_timeout=loaded.zookeeper.session_timeout, watchdog=self._watchdog)
        self._zookeeper.start()

    def _reload(self) -> None:
        """SIGHUP: an invalid file is reported and the running configuration kept; a new
        ZooKeeper connection or election means leaving cleanly and joining again; any
        other change applies in place (a changed job restarts it)."""
        notify.reloading("reloading configuration")
        try:
            new = config.load(self.config.source)
        except config.ConfigError as err:
            self._log.error("reload_failed", problems=[str(p) for p in err.problems], kept=self.config.source)
            notify.ready("reload failed, running configuration kept; " + self.core.snapshot().status_line())
            return
        old = self.config
        if new.zookeeper != old.zookeeper or new.election != old.election:
            self._pending_config = new
            self._step(ev.ReopenRequested("zookeeper or election settings changed"))
        else:
            self.config = new
            if new.logging != old.logging:
                logs.configure(new.logging.level, new.logging.format, log_context(new))
            if new.metrics != old.metrics:
                self._log.warning("reload_partial", reason="metrics settings apply at the next restart")
            self._job.config = new.job
            self._health = HealthRunner(new.health, self._post) if new.health else None
            self._step(ev.Reconfigured(settings_from(new, self._watchdog or 0.0), restart_job=new.job != old.job))
        self._log.info("reloaded", source=new.source)
        notify.ready(self.core.snapshot().status_line())

    # ---------------------------------------------------------------- systemd

    def _report_status(self) -> None:
        snapshot = self.core.snapshot()
        line = snapshot.status_line()
        if not self._ready_sent and snapshot.node is not None:
            self._ready_sent = notify.ready(line) or True  # joined: `systemctl start` may return
        elif line != self._status:
            notify.status(line)
        self._status = line

    def _feed_watchdog(self) -> None:
        if self._watchdog is None or self.core.snapshot().phase is Phase.STOPPED:
            return
        now = self._clock()
        if now >= self._next_ping:
            notify.watchdog()
            self._next_ping = now + self._watchdog / 2

    def _warn_about_watchdog(self) -> None:
        problem = self.core.budget_problem()
        if problem:
            self._log.warning("watchdog_too_long", watchdog=self._watchdog, problem=problem)

    def _install_signal_handlers(self) -> None:
        """SimpleQueue.put is reentrant, so the handlers hand signals to the loop
        directly, with no signal mask that the job would inherit."""
        def shutdown(signum: int, frame: object) -> None:
            self._post(ev.ShutdownRequested(signal.Signals(signum).name))

        signal.signal(signal.SIGTERM, shutdown)
        signal.signal(signal.SIGINT, shutdown)
        signal.signal(signal.SIGUSR1, lambda signum, frame: self._post(ev.ResignRequested()))
        signal.signal(signal.SIGHUP, lambda signum, frame: self._queue.put(_ReloadRequested()))


def log_context(loaded: Config) -> dict[str, Any]:
    """The fields every log line of the daemon carries."""
    return {"election": loaded.election.path, "candidate": loaded.election.candidate}
