"""The daemon's loop without its wait: one step per event, and when to wake next.

Production's Daemon (daemon.py) and the deterministic simulation (simulation/) both run
this class, each with its own shells behind the small protocols below: the Daemon with
kazoo, the guardian, the health command, sd_notify and Prometheus; the simulation with
its kazoo model, job model and recorders. So the simulation explores the loop itself
(the order actions run in, where a step stops, what systemd is told, when the loop
wakes), not a copy of it. What cannot be shared stays in the Daemon: the blocking wait
on its queue, signal handlers, reading the configuration on SIGHUP and building shells.

Nothing here blocks or reads a clock other than the one it is given (CLOCK_BOOTTIME in
production, a host's drifting clock in the simulation).
"""

from __future__ import annotations

import signal
from collections.abc import Callable
from typing import Protocol

from .core import actions as act
from .core import events as ev
from .core.leadership import Leadership
from .core.jobcontrol import JobPhase
from .core.snapshot import Phase, Snapshot
from .post import Post

#: The longest the loop sleeps without an event while a job exists. Its timed wait runs
#: on CLOCK_MONOTONIC (Python's locks), which stops during a system suspend: after a
#: resume the loop would otherwise sleep out the rest of a wait computed before the
#: suspend, with the lease already over on CLOCK_BOOTTIME and the job running. This
#: bounds that delay. Without a job nothing can outlive a lease, and an idle follower
#: sleeps until its next deadline or event (its wake-ups would be its only CPU cost).
MAX_SLEEP = 0.5


class ZooKeeper(Protocol):
    """Takes the core's ZooKeeper actions (requests, CloseSession); answers come back as
    events through the shell's Post."""

    def execute(self, action: act.Action) -> None: ...


class Job(Protocol):
    """Starts, signals and kills the leader-only job; its fate comes back as events."""

    def start(self, token: int, znode: str, stop_at: float, kill_at: float) -> None: ...

    def guard(self, stop_at: float, kill_at: float) -> None: ...

    def signal(self, signum: signal.Signals) -> None: ...

    def kill(self) -> None: ...


class Health(Protocol):
    """Runs the health check once; its verdict comes back as HealthChecked."""

    def run_once(self) -> None: ...


class Hooks(Protocol):
    """Queues a transition hook (hooks.py); must return at once: hooks run on a thread
    of their own, one at a time, so none can delay the loop's safety actions."""

    def run(self, kind: str, fields: dict[str, str], deadline: float | None = None) -> None: ...


class Notifier(Protocol):
    """The service manager's side (notify.py in production): every call must return at
    once, since the loop feeds the watchdog."""

    def ready(self, status: str) -> bool: ...

    def status(self, status: str) -> bool: ...

    def stopping(self, status: str) -> bool: ...

    def watchdog(self) -> bool: ...


class Observer(Protocol):
    """Sees every step after the core decided it (metrics.Metrics in production)."""

    def observe(self, event: ev.Event, actions: list[act.Action], core: Snapshot, now: float) -> None: ...

    def close(self) -> None: ...


class NoHealthCheck:
    """No health command configured: the answer is always healthy, posted like a real one
    so that the core sees it as the next event, never within the step that asked."""

    def __init__(self, post: Post) -> None:
        self._post = post

    def run_once(self) -> None:
        self._post(ev.HealthChecked(True, "no health check configured"))


#: What ends a step early and is the owner's business: leave the loop, or start over
#: with a new configuration (which only the owner can build).
Ending = act.Exit | act.Reopen


class Loop:
    """The pure loop logic around one core and its shells.

    A reopen replaces ``core`` and the shells, a reload in place replaces ``health``;
    what systemd has been told (READY sent, the last status, the next watchdog ping)
    belongs to the process and survives both.
    """

    def __init__(
        self,
        core: Leadership,
        zookeeper: ZooKeeper,
        job: Job,
        health: Health,
        notifier: Notifier,
        log: Callable[[act.Log], None],
        clock: Callable[[], float],
        watchdog: float | None = None,
        observer: Observer | None = None,
        hooks: Hooks | None = None,
    ) -> None:
        self.core = core
        self.zookeeper = zookeeper
        self.job = job
        self.health = health
        self._notifier = notifier
        self._log = log
        self._clock = clock
        self._watchdog = watchdog
        self._observer = observer
        #: None: no hooks configured (the core emits RunHook only for configured ones).
        self.hooks = hooks
        self._next_ping = 0.0
        self._ready_sent = False
        self._status = ""

    # ------------------------------------------------------------------ a step

    def step(self, event: ev.Event) -> Ending | None:
        """Handles one event: the core decides, every action runs in order, and systemd
        hears the new status. Returns the action that ended the step early, if any."""
        ending = self.perform(self.decide(event))
        if ending is None:
            self.report_status()
        return ending

    def decide(self, event: ev.Event) -> list[act.Action]:
        """The core's decision on one event at the current time, observed as it is made
        (the simulation runs ``perform`` itself so that a step can stop mid-way)."""
        now = self._clock()
        actions = self.core.handle(event, now)
        if self._observer is not None:
            self._observer.observe(event, actions, self.core.snapshot(), now)
        return actions

    def perform(self, actions: list[act.Action]) -> Ending | None:
        """Runs actions in order until one ends the step."""
        for action in actions:
            match action:
                case act.Exit():
                    self._notifier.stopping("stopped")
                    if self._observer is not None:
                        self._observer.close()
                    return action
                case act.Reopen():
                    return action
                case act.Log():
                    self._log(action)
                case act.AnnounceStopping():
                    self._notifier.stopping("stopping: " + self.core.snapshot().status_line())
                case act.StartJob(token=token, znode=znode, stop_at=stop_at, kill_at=kill_at):
                    self.job.start(token, znode, stop_at, kill_at)
                case act.GuardLease(stop_at=stop_at, kill_at=kill_at):
                    self.job.guard(stop_at, kill_at)
                case act.SignalJob(signal=signum):
                    self.job.signal(signum)
                case act.KillJob():
                    self.job.kill()
                case act.RunHealthCheck():
                    self.health.run_once()
                case act.RunHook(kind=kind, fields=fields, deadline=deadline):
                    if self.hooks is not None:
                        self.hooks.run(kind, fields, deadline)
                case _:
                    self.zookeeper.execute(action)
        return None

    def report_status(self) -> None:
        """READY=1 once the daemon has joined (`systemctl start` may return), then each
        change of the status line."""
        snapshot = self.core.snapshot()
        line = snapshot.status_line()
        if not self._ready_sent and snapshot.node is not None:
            self._notifier.ready(line)  # once, told or not: without a service manager nobody listens
            self._ready_sent = True
        elif line != self._status:
            self._notifier.status(line)
        self._status = line

    # ------------------------------------------------------------ waking up

    def wake_at(self) -> float | None:
        """The next instant the loop must run without an event: the core's next deadline
        or the next watchdog ping, whichever comes first (None: neither)."""
        deadline = self.core.next_deadline()
        if not self._watchdog:
            return deadline
        return self._next_ping if deadline is None else min(deadline, self._next_ping)

    def sleep_cap(self) -> float | None:
        """MAX_SLEEP while a job exists, else None (no cap)."""
        return None if self.core.snapshot().job is JobPhase.NONE else MAX_SLEEP

    def timeout(self) -> float | None:
        """How long the loop may wait for an event from now (None: until one comes)."""
        wake, cap = self.wake_at(), self.sleep_cap()
        left = None if wake is None else max(0.0, wake - self._clock())
        if cap is None:
            return left
        return cap if left is None else min(left, cap)

    def feed_watchdog(self) -> None:
        """WATCHDOG=1 every half interval, sent only from here so that systemd kills a
        daemon whose loop is stuck; none once the core has stopped."""
        if self._watchdog is None or self.core.snapshot().phase is Phase.STOPPED:
            return
        now = self._clock()
        if now >= self._next_ping:
            self._notifier.watchdog()
            self._next_ping = now + self._watchdog / 2
