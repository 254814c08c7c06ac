"""The daemon process as the world runs it: production's loop with the model's shells.

Events reach the loop through kazoo's separate threads (state, completion, watch), the
job watcher, signals and the health check, each FIFO but not ordered against each other.
Each step is production's (loop.Loop: the core decides, the actions run in order, the
status is reported) and the loop wakes when production's would (loop.Loop.wake_at). The
process can pause (SIGSTOP: kazoo freezes too; or only the loop blocks), be killed (-9)
or exit; systemd restarts it. Its guardian (guardian.py), started with it, is a process
of its own and runs on meanwhile. While a job exists its loop waits at most
loop.MAX_SLEEP at a time (Loop.sleep_cap), on a clock that stops in a suspend.
"""

from __future__ import annotations

import heapq
from dataclasses import replace
from typing import TYPE_CHECKING

from ..core import actions as act
from ..core import events as ev
from ..core.leadership import Leadership
from ..core.settings import Identity
from ..loop import MAX_SLEEP, Loop, NoHealthCheck
from .client import Client
from .config import INF, Bug
from .guardian import Guardian
from .jobs import JobRunner

if TYPE_CHECKING:
    from .world import Host, World


class _NoServiceManager:
    """notify.py without NOTIFY_SOCKET: every message is dropped (loop.Notifier)."""

    def ready(self, status: str) -> bool:
        return False

    def status(self, status: str) -> bool:
        return False

    def stopping(self, status: str) -> bool:
        return False

    def watchdog(self) -> bool:
        return False


_NO_SERVICE_MANAGER = _NoServiceManager()


class HookRecorder:
    """The hook shell's model: the commands are the operator's, so the model only
    records each hook the loop hands on (timeline and stats, "hook on_leader", ...),
    which shows the simulated daemons run the core's RunHook actions through
    production's loop. It also checks the order a real host's hooks would run in:
    never on_leader twice without on_lost between, nothing after on_stop."""

    def __init__(self, world: World, host: Host) -> None:
        self._world = world
        self._host = host
        self._kinds: list[str] = []

    def run(self, kind: str, fields: dict[str, str], deadline: float | None = None) -> None:
        last_leadership = next((k for k in reversed(self._kinds) if k in ("on_leader", "on_lost")), None)
        out_of_order = ("on_stop" in self._kinds
                        or (kind == "on_leader" and last_leadership == "on_leader"))
        self._kinds.append(kind)
        self._world.record(self._host, "hk", f"hook {kind}: {fields.get('reason', '')}")
        self._world.stats_count(f"hook {kind}")
        if out_of_order:
            self._world.stats_count("hooks out of order")


def _drop_log(line: act.Log) -> None:
    """The model has no log reader; a stalled stream is modelled by Bug.BLOCKING_LOGS."""


class Daemon:
    """One incarnation of the daemon process: production's loop (loop.Loop) around the
    production core, with the model's shells, driven by the world's scheduler."""

    CHANNELS = ("state", "completion", "watch", "job", "signal", "health")

    def __init__(self, world: World, host: Host, incarnation: int) -> None:
        self.world = world
        self.host = host
        self.incarnation = incarnation
        self.label = host.name if incarnation == 1 else f"{host.name}#{incarnation}"
        ids = host.id_source(incarnation)
        identity = Identity(host=host.name, pid=1000 + incarnation, version="sim", started_at=f"{world.now:.3f}")
        # Each host its own candidate, as in production: a drain marker names one host.
        settings = replace(world.settings, candidate=host.name, priority=world.priority(host))
        self.core: Leadership = world.core_factory(settings, identity, ids)
        #: Warm: started with the daemon, before it could ever lead (zkleader/guardian.py).
        self.guardian = Guardian(world, self)
        self.client = Client(world, host, self)
        # No log reader and no service manager in the model: lines are dropped and
        # notify answers as it does without NOTIFY_SOCKET. systemd's watchdog is the
        # world's (World._arm_watchdog), so the loop keeps no ping schedule of its own.
        self.loop = Loop(self.core, self.client, JobRunner(world.jobs, self), NoHealthCheck(self._post_health),
                         _NO_SERVICE_MANAGER, _drop_log, clock=lambda: host.local(world.now),
                         hooks=HookRecorder(world, host))
        self.inbox: list[tuple[float, int, ev.Event]] = []
        self.chan_last = dict.fromkeys(self.CHANNELS, 0.0)
        self.alive = True
        #: Why the loop does not run: "process" (SIGSTOP, kazoo frozen too), "loop" (the
        #: loop alone is stuck), "logs" (the loop blocks in a log write, Bug.BLOCKING_LOGS)
        #: or "suspend" (the whole host sleeps).
        self.paused: str | None = None
        self.tick_gen = 0
        #: The core deadline the pending wake-up (generation tick_gen) is for, if any.
        self.tick_deadline: float | None = None
        self.exit_code: int | None = None
        self.pause_serial = 0
        #: World time of the loop's last pass and of its next timed wake-up (INF: none).
        self.last_pass = 0.0
        self.wake_at = INF
        #: What is left of the loop's wait when the host wakes from a suspend.
        self.wait_left = 0.0
        #: The rest of a step whose log write blocked, the blocked line first.
        self.blocked_step: list[act.Action] | None = None
        self.blocking_logs = Bug.BLOCKING_LOGS in world.cfg.bugs

    def start(self) -> None:
        self.world.record(self.host, "!!", f"daemon {self.label} starts (candidacy {self.core.snapshot().candidacy_id[:8]}..)")
        self.client.start()

    # ---------------------------------------------------------------- events

    def post(self, channel: str, event: ev.Event, delay: float | None = None) -> None:
        if not self.alive:
            return
        world = self.world
        ready = world.now + (world.channel_jitter() if delay is None else delay)
        last = self.chan_last[channel]
        if ready < last:
            ready = last
        self.chan_last[channel] = ready
        heapq.heappush(self.inbox, (ready, next(world.seq), event))
        if self.paused is None:
            world.at(ready, self._wake)

    def _wake(self) -> None:
        if not self.alive or self.paused is not None:
            return
        inbox = self.inbox
        now = self.world.now
        handled = False
        while inbox and inbox[0][0] <= now:
            event = heapq.heappop(inbox)[2]
            self._handle(event)
            handled = True
            if not self.alive or self.paused is not None:  # dead, or blocked in a log write
                return
        if handled:
            self._schedule_tick()

    def _post_health(self, event: ev.Event) -> None:
        """No health command in the simulation: the answer is there at once."""
        self.post("health", event, delay=0.0)

    def _handle(self, event: ev.Event) -> None:
        world = self.world
        host = self.host
        local = host.local(world.now)
        self.last_pass = world.now
        world.trace((world.now, self.label, "<-", event, local))
        stood_on = self.core.snapshot().node
        try:
            actions = self.loop.decide(event)
        except Exception as exc:  # a crash of the core is a bug like any other
            world.checker.violate("core_exception", f"{self.label}: core raised {exc!r} handling {event!r}")
            raise
        trace = world.trace
        for a in actions:
            trace((world.now, self.label, "->", a, local))
        self._perform(actions)
        if stood_on is not None and self.alive and self.core.snapshot().node != stood_on:
            self._check_node_really_gone(stood_on)
        if host.thawing:
            host.thawing = False
            world.checker.on_first_pass(self)

    def _perform(self, actions: list[act.Action]) -> None:
        """The rest of the loop's step (loop.Loop.perform, then the status), until the
        daemon exits or reopens or (only with Bug.BLOCKING_LOGS) a log write blocks the
        loop, which then finishes the step once the stream drains."""
        world = self.world
        blocked: list[act.Action] | None = None
        if self.blocking_logs and self.host.log_stall_until > world.now:
            first_log = next((i for i, a in enumerate(actions) if isinstance(a, act.Log)), None)
            if first_log is not None:
                actions, blocked = actions[:first_log], actions[first_log:]
        match self.loop.perform(actions):
            case act.Exit(code=code):
                world.daemon_exited(self, code)
            case act.Reopen():
                world.reopen(self)
            case None if blocked is not None:
                world.block_on_logs(self, blocked)
            case None:
                self.loop.report_status()

    def _check_node_really_gone(self, name: str) -> None:
        """Giving up a node that still exists in the daemon's live session, other than by
        deleting it, throws away a healthy leadership (and leaves a ghost at the head of
        the queue until noticed)."""
        view = self.core.snapshot()
        path = f"{view.election_path}/{name}"
        node = self.world.server.nodes.get(path)
        if node is not None and node.owner == view.session_id and path not in self.client.deleted:
            self.world.checker.violate("false_loss", f"{self.label} gave up {name}, which still exists in its live session")

    def _schedule_tick(self) -> None:
        """Arms the loop's timed wake-up (loop.Loop.wake_at). The loop's MAX_SLEEP wake-ups
        in between are left out: a Tick before the core's next deadline changes nothing,
        and the one place the cap matters, the wait a suspend interrupts, is modelled
        (``suspend``)."""
        deadline = self.loop.wake_at()
        if deadline is not None and deadline == self.tick_deadline:
            return  # the pending wake-up is for this very deadline
        self.tick_gen += 1
        self.tick_deadline = deadline
        if deadline is None:
            self.wake_at = INF
            return
        world = self.world
        host = self.host
        local_now = host.local(world.now)
        if deadline <= local_now:
            # The production loop would compute a timeout of 0 and spin at 100% CPU.
            world.checker.spin(self, deadline, local_now)
            t = world.now + 0.01
        else:
            t = host.world_time(deadline) + 1e-6 + world.loop_jitter()
            if t < world.now:
                t = world.now
        self.wake_at = t
        world.at(t, self._tick, self.tick_gen)

    def _tick(self, gen: int) -> None:
        if gen != self.tick_gen:
            return
        self.tick_deadline = None
        if not self.alive or self.paused is not None:
            return
        self._handle(ev.Tick())
        if self.alive and self.paused is None:
            self._schedule_tick()

    # ------------------------------------------------------------ lifecycle

    def pause(self, kind: str) -> None:
        self.paused = kind
        if kind == "process":
            self.client.freeze()

    def resume(self) -> None:
        """The loop runs again after a pause or a blocked log write: the rest of a
        blocked step first, then the backlog, each event stamped with the current time."""
        kind = self.paused
        if kind is None:
            return
        self.paused = None
        if self.blocked_step is not None:
            actions, self.blocked_step = self.blocked_step, None
            self._perform(actions)
        inbox = self.inbox
        now = self.world.now
        while inbox and inbox[0][0] <= now and self.alive and self.paused is None:
            self._handle(heapq.heappop(inbox)[2])
        if self.alive and self.paused is None:
            self._handle(ev.Tick())
        if self.alive and self.paused is None:
            self._schedule_tick()
            for ready, _, _ in inbox:
                self.world.at(ready, self._wake)
        if kind == "process":
            self.client.unfreeze()

    def suspend(self) -> None:
        """The host suspends: the loop and kazoo freeze mid-wait. The loop's wait runs on
        CLOCK_MONOTONIC and, while a job exists, lasts at most MAX_SLEEP; what is left of
        it when the host wakes is what is left of it now (the clock stops)."""
        now = self.world.now
        self.paused = "suspend"
        self.pause_serial += 1
        self.client.freeze()
        left = self.wake_at - now
        if self.loop.sleep_cap() is not None:
            left = min(left, MAX_SLEEP - (now - self.last_pass) % MAX_SLEEP)
        self.wait_left = max(0.0, left)

    def wake(self) -> None:
        """The host resumed: kazoo reads what arrived meanwhile, and the loop's first pass
        comes with the first event or when its wait runs out."""
        world = self.world
        now = world.now
        self.paused = None
        self.tick_gen += 1
        self.tick_deadline = None
        self.wake_at = now + self.wait_left
        world.at(self.wake_at, self._tick, self.tick_gen)
        for ready, _, _ in self.inbox:
            world.at(max(ready, now), self._wake)
        self.client.unfreeze()

    def die(self) -> None:
        self.alive = False
        self.paused = None
        self.blocked_step = None
        self.host.thawing = False
        self.tick_gen += 1
        self.client.kill()
