"""The daemon's loop: the one place where events meet the decision core.

Every event, whichever thread produced it (kazoo's connection and callback threads,
the job watcher, the health checker, signal handlers), goes through one queue and is
handled here in order, stamped with CLOCK_BOOTTIME (clock.py: it keeps counting
through a system suspend, as the ZooKeeper servers do). What a step does and when the
loop wakes is loop.Loop, which the simulation runs too; this module adds what only a
real process has: the blocking wait on the queue, signals, SIGHUP's reload and the real
shells. The loop sleeps until the next event, the core's next deadline or the next
watchdog ping, whichever comes first (and while a job exists never longer than
loop.MAX_SLEEP), so a lease deadline is never missed because nothing else happened;
and the watchdog is fed only by
this loop, so systemd kills a daemon whose loop is stuck. Nothing the loop does may
block: logging only queues (logs.py), notifications are sent without waiting (notify.py).
"""

from __future__ import annotations

import datetime
import os
import queue
import signal
import socket
import sys
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import structlog

from . import __version__, clock, config, fdstore, logs, notify
from .config import Config
from .core import actions as act
from .core import events as ev
from .core import exitcodes
from .core.leadership import Leadership
from .core.settings import HealthPolicy, Identity, Settings
from .health import HealthRunner
from .hooks import HookRunner
from .job import JobRunner
from .loop import Loop, NoHealthCheck
from .post import Post
from .zookeeper import ZooKeeperShell

if TYPE_CHECKING:
    from .etcd import EtcdShell


def settings_from(loaded: Config, watchdog: float = 0.0) -> Settings:
    health = loaded.health
    return Settings(
        election_path=loaded.election.path,
        candidate=loaded.election.candidate_name,
        session_timeout=loaded.lease_timing[0],
        stop_signal=loaded.job.stop_signal,
        stop_timeout=loaded.job.stop_timeout,
        reap_allowance=loaded.job.reap_allowance,
        on_exit=loaded.job.on_exit,
        restart_delay=loaded.job.restart_delay,
        health=HealthPolicy(health.interval, health.failures, health.successes) if health else None,
        watchdog=watchdog,
        tick_time=loaded.lease_timing[1],
        hooks=loaded.hooks.kinds if loaded.hooks else frozenset(),
        hook_timeout=loaded.hooks.timeout if loaded.hooks else config.HooksConfig.timeout,
        priority=loaded.election.priority,
        preempt_after=loaded.election.preempt_after,
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


@dataclass(frozen=True)
class _Probe:
    """http.py's /healthz asking an idle loop whether it is alive: answered between steps."""

    answer: Callable[[], None]


class Daemon:
    def __init__(self, loaded: Config, clock: Callable[[], float] = clock.now) -> None:
        self.config = loaded
        self._clock = clock
        self._queue: queue.SimpleQueue[Any] = queue.SimpleQueue()
        self._log = structlog.get_logger()
        self._generation = 0
        self._watchdog = notify.watchdog_interval()
        self._pending_config: Config | None = None
        self._metrics: Any = None
        self._http: Any = None
        self._loop: Loop | None = None
        self.core: Leadership
        self._zookeeper: ZooKeeperShell | EtcdShell
        self._job: JobRunner
        self._post: Post = self._queue.put
        self._sessions = fdstore.SessionStore()
        self._hooks: HookRunner | None = None

    # ------------------------------------------------------------------ loop

    def run(self) -> int:
        self._install_signal_handlers()
        try:
            self._listen()
        except OSError as err:
            # A port in use (often the previous instance, still going): one line and a
            # status systemd restarts after, not a traceback.
            metrics, http = self.config.metrics, self.config.http
            self._log.error("listen_failed", error=err.strerror or str(err),
                            metrics=None if metrics is None else "{}:{}".format(*metrics.listen),
                            http=None if http is None else "{}:{}".format(*http.listen))
            return exitcodes.UNAVAILABLE
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
            if isinstance(item, _Probe):
                item.answer()
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

    def _listen(self) -> None:
        """The optional listeners (metrics.listen, http.listen), bound before joining."""
        if self.config.metrics is not None:
            from .metrics import Metrics  # prometheus-client only when asked for

            self._metrics = Metrics(self.config.metrics, self._clock)
        if self.config.http is not None:
            from .http import Endpoints  # one listener for load balancers (http.py)

            self._http = Endpoints(self.config.http, self._clock, ask_loop=lambda answer: self._queue.put(_Probe(answer)),
                                   registry=getattr(self._metrics, "registry", None),
                                   candidate=self.config.election.candidate, pid=os.getpid())

    def _next_item(self) -> Any:
        """The next event, or a Tick when the loop's wait runs out (loop.Loop.timeout);
        the blocking wait is the one part of the loop only a real process has."""
        loop = self._running()
        try:
            item = self._queue.get(timeout=loop.timeout())
        except queue.Empty:
            item = ev.Tick()
        loop.feed_watchdog()
        return item

    def _step(self, event: ev.Event) -> int | None:
        match self._running().step(event):
            case act.Exit(code=code):
                if code != exitcodes.UNREAPED:
                    # The session is closed and the job reaped: nothing for the guardian
                    # to do. Unreaped, it stays and keeps the job's tree under its kill.
                    self._job.close()
                if self._hooks is not None:
                    self._hooks.close()  # on_stop and the hooks before it, each within hooks.timeout
                return code
            case act.Reopen():
                assert self._pending_config is not None
                self.config, self._pending_config = self._pending_config, None
                logs.configure(self.config.logging.level, self.config.logging.format, logs.context(self.config))
                self._open(self.config)
        return None

    def _running(self) -> Loop:
        assert self._loop is not None, "the loop runs only after _open"
        return self._loop

    def _write_log(self, line: act.Log) -> None:
        """A Log action: queued by structlog's handler (logs.py), never written here. The
        event is forwarded by name: the core's call sites are where it is registered."""
        name, level, fields = line.event, line.level, line.fields
        getattr(self._log, level)(name, **fields)

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
        if self._loop is None:
            # Warm from the start (guardian.py): started once, it outlives reopens.
            self._job = JobRunner(loaded.job, loaded.election.path, loaded.election.candidate_name, post,
                                  release_argv=[sys.executable, "-m", "zkleader.release", os.path.abspath(loaded.source)])
        else:
            self._job.rebind(loaded.job, loaded.election.path, loaded.election.candidate_name, post)
        self._zookeeper = self._election_shell(loaded, post)
        health = self._health_shell(loaded)
        if self._loop is None:
            self._loop = Loop(self.core, self._zookeeper, self._job, health, notify, self._write_log, self._clock,
                              watchdog=self._watchdog, observer=self._observer())
        else:  # a reopen: what systemd was told (READY, status, pings) carries over
            self._loop.core, self._loop.zookeeper, self._loop.job, self._loop.health = (
                self.core, self._zookeeper, self._job, health)
        self._hooks_shell(loaded)
        if loaded.etcd is not None:
            self._log.info("starting", version=__version__, etcd=loaded.etcd.endpoint_string,
                           session_timeout=loaded.etcd.lease_ttl, watchdog=self._watchdog)
        else:
            self._log.info("starting", version=__version__, zookeeper=loaded.zookeeper.connection_string,
                           session_timeout=loaded.zookeeper.session_timeout, watchdog=self._watchdog)
        self._zookeeper.start()

    def _election_shell(self, loaded: Config, post: Post) -> ZooKeeperShell | EtcdShell:
        """The shell of the configured backend. Its session (a ZooKeeper session, or an
        etcd lease) goes to the guardian, which releases it if the daemon dies
        (release.py), and to systemd's fd store, from which the daemon systemd restarts
        after a crash of the whole unit releases it (fdstore.py)."""
        on_session = self._sessions.listener(loaded.servers, self._job.session)
        if loaded.etcd is not None:
            from .etcd import EtcdShell  # grpc and pyetcd only for an etcd election

            return EtcdShell(loaded.etcd, post, self._clock, on_session=on_session)
        return ZooKeeperShell(loaded.zookeeper, post, self._clock, on_session=on_session)

    def _reload(self) -> None:
        """SIGHUP: an invalid file is reported and the running configuration kept; new
        coordination servers (ZooKeeper or etcd, or a move between them) or a new
        election mean leaving cleanly and joining again; any
        other change applies in place (a changed job restarts it)."""
        notify.reloading("reloading configuration")
        try:
            new = config.load(self.config.source)
        except config.ConfigError as err:
            self._log.error("reload_failed", problems=[str(p) for p in err.problems], kept=self.config.source)
            notify.ready("reload failed, running configuration kept; " + self.core.snapshot().status_line())
            return
        old = self.config
        if new.zookeeper != old.zookeeper or new.etcd != old.etcd or new.election != old.election:
            self._pending_config = new
            self._step(ev.ReopenRequested("zookeeper, etcd or election settings changed"))
        else:
            self.config = new
            if new.logging != old.logging:
                logs.configure(new.logging.level, new.logging.format, logs.context(new))
            if new.metrics != old.metrics:
                self._log.warning("reload_partial", reason="metrics settings apply at the next restart")
            if new.http != old.http:
                self._log.warning("reload_partial", reason="http settings apply at the next restart")
            self._job.config = new.job
            self._running().health = self._health_shell(new)
            self._hooks_shell(new)
            self._step(ev.Reconfigured(settings_from(new, self._watchdog or 0.0), restart_job=new.job != old.job))
        self._log.info("reloaded", source=new.source)
        notify.ready(self.core.snapshot().status_line())

    def _observer(self) -> Any:
        if self._http is None:
            return self._metrics
        from .http import Tee

        return Tee(self._http, self._metrics)

    def _hooks_shell(self, loaded: Config) -> None:
        """One hook runner (and FIFO) for the process: hooks queued before a reload or
        reopen still run, in order, with the commands configured when each runs."""
        if self._hooks is None and loaded.hooks is not None:
            self._hooks = HookRunner(loaded.hooks, clock=self._clock, post=lambda event: self._post(event))
        elif self._hooks is not None:
            self._hooks.config = loaded.hooks or config.HooksConfig()
        self._running().hooks = self._hooks

    def _health_shell(self, loaded: Config) -> HealthRunner | NoHealthCheck:
        return HealthRunner(loaded.health, self._post) if loaded.health else NoHealthCheck(self._post)

    # ---------------------------------------------------------------- systemd

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
