"""The model world the simulated daemons live in.

Everything here runs on one virtual clock (``World.now``, seconds) driven by a
priority queue of callbacks; nothing reads a real clock and every random choice comes
from one seeded ``random.Random``, so a seed replays exactly.

Parts, each modelled on the behaviour the safety rule depends on, one module each:

* server.py: one linearizable ZooKeeper state and the connections to it;
* client.py: kazoo's connection loop, the daemon's ZooKeeper shell;
* daemon.py: one incarnation of the daemon process, running production's loop
  (zkleader/loop.py) with the model's shells;
* jobs.py: the leader-only job under its guardian, the daemon's job runner;
* guardian.py: the warm guardian, which holds the lease's deadlines and, when its daemon
  dies, kills and reaps the job and then releases the daemon's session;
* here, ``Host``: a clock (CLOCK_BOOTTIME, drifting), the link, the log stream (it can
  stall; the daemon only queues log lines, zkleader/logs.py) and a suspend: the daemon,
  kazoo, the guardian and the job freeze while the server's clock runs on; and
  ``World``: the scheduler, the links, systemd (restarts, the watchdog) and the faults.

``Bug`` (config.py) names deliberate bugs of these shells, switched on per world
(``WorldConfig.bugs``) to show that the invariants catch them; the core's own
deliberate bugs are test-only subclasses of ``Leadership`` (tests/test_simulation.py).
"""

from __future__ import annotations

import heapq
import itertools
import random
import signal
from collections.abc import Callable
from typing import Any

from ..core import actions as act
from ..core import drain, exitcodes, hooks, preference
from ..core import events as ev
from ..core.jobcontrol import MAX_RESTART_DELAY
from ..core.leadership import Leadership
from ..core.leave import LEAVE_GRACE
from ..core.settings import OnExit, Settings
from .config import ELECTION, Bug, CoreFactory, WorldConfig
from .daemon import Daemon
from .invariants import Checker
from .jobs import Jobs
from .server import Conn, Server
from .timeline import Timeline


class Host:
    def __init__(self, world: World, index: int) -> None:
        self.world = world
        self.index = index
        self.name = f"h{index + 1}"
        self.c2s_up = True
        self.s2c_up = True
        self.c2s_buf: list[tuple[Conn, tuple[Any, ...]]] = []
        self.s2c_buf: list[tuple[Conn, tuple[Any, ...]]] = []
        self.slow_until = 0.0
        self.slow_extra = 0.0
        drift = world.cfg.clock_drift
        self.rate = 1.0 + world.rng.uniform(-drift, drift)
        self.offset = 1000.0 * (index + 1) + world.rng.uniform(0.0, 100.0)
        self.daemon: Daemon | None = None
        self.incarnations = 0
        self.lose_next: str | None = None
        #: The server it talks to loses the ZooKeeper leader right after forwarding its
        #: next sync, and the host is cut off for this long (None: not armed).
        self.lose_relay_next: float | None = None
        self.fail_next_start = False
        self.restart_pending = False
        #: The daemon's log stream takes nothing until then.
        self.log_stall_until = 0.0
        #: When the current suspend began (None: awake), and what the host does the moment
        #: it wakes (deaths of job processes that were due while everything was frozen).
        self.suspended_at: float | None = None
        self.on_wake: list[tuple[Callable[..., None], tuple[Any, ...]]] = []
        #: Woken, and the daemon's loop has not made its first pass since.
        self.thawing = False
        #: Suspended time the daemon's clock did not count (Bug.STOPPING_CLOCK only).
        self.stopped = 0.0

    def local(self, t: float) -> float:
        """The daemon's clock (CLOCK_BOOTTIME: it counts a suspend, unless Bug.STOPPING_CLOCK)."""
        return self.offset + (t - self.stopped) * self.rate

    def world_time(self, local: float) -> float:
        return (local - self.offset) / self.rate + self.stopped

    def id_source(self, incarnation: int) -> Callable[[], str]:
        generation = 0 if self.world.cfg.reuse_ids else incarnation
        counter = itertools.count()
        prefix = f"{self.index + 1:04x}{generation:08x}"
        return lambda: f"{prefix}{next(counter):020x}"

    @property
    def live_daemon(self) -> Daemon | None:
        d = self.daemon
        return d if d is not None and d.alive else None


class World:
    def __init__(self, config: WorldConfig, seed: int, core_factory: CoreFactory | None = None) -> None:
        self.cfg = config
        self.seed = seed
        self.seed_tag = seed & 0xFFFF
        self.rng = random.Random(seed)
        self.now = 0.0
        self._heap: list[tuple[float, int, Callable[..., None], tuple[Any, ...]]] = []
        self.seq = itertools.count()
        self.steps = 0
        self.core_factory: CoreFactory = core_factory or Leadership
        self.settings = Settings(
            election_path=ELECTION,
            candidate="sim",
            session_timeout=config.session_timeout,
            stop_signal=signal.SIGTERM,
            stop_timeout=config.stop_timeout,
            on_exit=config.on_exit,
            restart_delay=config.restart_delay,
            watchdog=config.watchdog,
            # the core's lease bounds the session-touch relay with it; etcd has none
            tick_time=0.0 if config.on_etcd else config.tick_time,
            hooks=frozenset(hooks.KINDS),  # every transition hook is emitted; daemon.HookRecorder takes them
            preempt_after=config.preempt_after,
        )
        self.timeline = Timeline(config.trace_limit)
        #: Timeline.record without the call: (time, who, kind, what, host-local time).
        self.trace = self.timeline.entries.append
        self.stats: dict[str, int] = {}
        self.faults: dict[str, int] = {}
        self.jobs_crashed = 0
        self.healed_at: float | None = None
        #: Set when the faults stop: late fault callbacks (a flap's next cut) do nothing.
        self.quiet = False
        self.server = Server(self)
        self.jobs = Jobs(self)
        self.hosts = [Host(self, i) for i in range(config.hosts)]
        self.checker = Checker(self)

    # ------------------------------------------------------------- scheduler

    def at(self, t: float, fn: Callable[..., None], *args: Any) -> None:
        heapq.heappush(self._heap, (t, next(self.seq), fn, args))

    def run_until(self, t_end: float) -> None:
        heap = self._heap
        checker = self.checker
        check = checker.after_step
        pop = heapq.heappop
        steps = 0
        try:
            while heap and heap[0][0] <= t_end:
                t, _, fn, args = pop(heap)
                self.now = t
                fn(*args)
                steps += 1
                if checker.dirty:  # after_step has nothing to check otherwise
                    check()
        finally:
            self.steps += steps
        if t_end > self.now:
            self.now = t_end

    def run_for(self, duration: float) -> None:
        self.run_until(self.now + duration)

    # ------------------------------------------------------------ randomness

    def latency(self, host: Host) -> float:
        r = self.rng.random()
        # 98%: 0.2..3 ms; 2%: a 10..120 ms spike (both from the one draw); no spikes once quiet
        base = 0.0002 + r * 0.00286 if r < 0.98 or self.quiet else 0.01 + (r - 0.98) * 5.5
        if host.slow_until > self.now:
            base += host.slow_extra * (0.5 + 0.5 * self.rng.random())
        return base

    def channel_jitter(self) -> float:
        """Delay between a kazoo thread posting an event and the loop seeing it."""
        r = self.rng.random()
        return 0.0 if r < 0.8 else (r - 0.8) * 0.015  # 20%: up to 3 ms

    def loop_jitter(self) -> float:
        """Scheduling delay of the daemon's loop waking up for a deadline."""
        r = self.rng.random()
        return r * 0.00202 if r < 0.99 else 0.002 + (r - 0.99) * 2.8  # 1%: 2..30 ms

    # ----------------------------------------------------------------- links

    def send_c2s(self, conn: Conn, pkt: tuple[Any, ...]) -> None:
        host = conn.host
        if host.c2s_up:
            t = self.now + self.latency(host)
            if t < conn.c2s_last:
                t = conn.c2s_last
            conn.c2s_last = t
            self.at(t, self.server.receive, conn, pkt)
        else:
            host.c2s_buf.append((conn, pkt))

    def send_s2c(self, conn: Conn, pkt: tuple[Any, ...]) -> None:
        host = conn.host
        if host.s2c_up:
            t = self.now + self.latency(host)
            if t < conn.s2c_last:
                t = conn.s2c_last
            conn.s2c_last = t
            self.at(t, conn.client.receive, conn, pkt)
        else:
            host.s2c_buf.append((conn, pkt))

    def set_link(self, host: Host, c2s: bool | None = None, s2c: bool | None = None) -> None:
        if c2s is not None and c2s != host.c2s_up:
            host.c2s_up = c2s
            if c2s:
                buf, host.c2s_buf = host.c2s_buf, []
                for conn, pkt in buf:
                    self.send_c2s(conn, pkt)
        if s2c is not None and s2c != host.s2c_up:
            host.s2c_up = s2c
            if s2c:
                buf, host.s2c_buf = host.s2c_buf, []
                for conn, pkt in buf:
                    self.send_s2c(conn, pkt)

    # ---------------------------------------------------------------- daemons

    def start(self) -> None:
        for host in self.hosts:
            self.at(self.rng.uniform(0.0, 0.1), self.start_daemon, host)

    def start_daemon(self, host: Host) -> None:
        host.restart_pending = False
        if host.live_daemon is not None:
            return
        host.incarnations += 1
        daemon = Daemon(self, host, host.incarnations)
        host.daemon = daemon
        daemon.start()

    def schedule_restart(self, host: Host) -> None:
        if host.restart_pending:
            return
        host.restart_pending = True
        self.at(self.now + self.rng.uniform(0.1, max(0.1, self.cfg.restart_sec)), self.start_daemon, host)

    def daemon_exited(self, daemon: Daemon, code: int) -> None:
        """Action Exit. In order, the session is closed and the job reaped, and the
        guardian exits with nothing to release; exiting unreaped (71) leaves the session
        open and the guardian at the job's tree, to release the session once it is gone."""
        daemon.exit_code = code
        self.record(daemon.host, "!!", f"daemon {daemon.label} exited with status {code}")
        daemon.die()
        if code == exitcodes.UNREAPED:
            daemon.guardian.lifeline_closed()
        else:
            daemon.guardian.close()
        self.schedule_restart(daemon.host)

    def kill9(self, host: Host) -> bool:
        """The daemon is killed on a healthy host (kill -9, the OOM killer): its socket
        closes without a closeSession, its guardian kills and reaps the job and then
        releases the session."""
        daemon = host.live_daemon
        if daemon is None or host.suspended_at is not None:
            return False
        self.record(host, "!!", f"kill -9 daemon {daemon.label}")
        daemon.die()
        daemon.guardian.lifeline_closed()
        self.schedule_restart(host)
        return True

    # ----------------------------------------------------------------- faults

    def fault(self, kind: str, host: Host | None, text: str) -> None:
        self.faults[kind] = self.faults.get(kind, 0) + 1
        self.record(host, "!!", text)

    def partition(self, host: Host, c2s: bool = True, s2c: bool = True) -> None:
        if self.quiet:
            return
        self.set_link(host, c2s=False if c2s else None, s2c=False if s2c else None)

    def heal(self, host: Host) -> None:
        if not (host.c2s_up and host.s2c_up):
            self.record(host, "!!", "link healed")
        self.set_link(host, c2s=True, s2c=True)

    def chatty(self, host: Host, until: float) -> None:
        daemon = host.live_daemon
        if daemon is not None:
            daemon.client.chatty_until = max(daemon.client.chatty_until, until)

    def slow(self, host: Host, extra: float, until: float) -> None:
        host.slow_extra = extra
        host.slow_until = max(host.slow_until, until)

    def pause(self, host: Host, kind: str) -> bool:
        """The daemon stops (SIGSTOP) or its loop does. Nothing excuses its job: the
        guardian runs on and stops it by the lease, with or without systemd's watchdog."""
        daemon = host.live_daemon
        if self.quiet or daemon is None or daemon.paused is not None:
            return False
        daemon.pause(kind)
        self._arm_watchdog(daemon)
        return True

    def _arm_watchdog(self, daemon: Daemon) -> None:
        """The loop just stopped: with a watchdog, systemd kills the unit one interval after
        the loop's last WATCHDOG=1, sent at most interval/2 before it stopped (often just
        before)."""
        watchdog = self.cfg.watchdog
        if not watchdog:
            return
        last_ping = self.now - (0.0 if self.rng.random() < 0.5 else self.rng.uniform(0.0, watchdog / 2))
        daemon.pause_serial += 1
        self.at(max(self.now, last_ping + watchdog), self._watchdog_fires, daemon, daemon.pause_serial)

    def _watchdog_fires(self, daemon: Daemon, serial: int) -> None:
        # systemd sleeps through a suspend like everything else: only a stuck loop counts.
        if not daemon.alive or daemon.paused not in ("process", "loop", "logs") or daemon.pause_serial != serial:
            return
        self.stats_count("watchdog_kills")
        self.record(daemon.host, "!!", f"systemd watchdog: no WATCHDOG=1 for {self.cfg.watchdog:g}s, "
                                       f"SIGKILL to the unit ({daemon.label}, its guardian and its job)")
        daemon.die()
        daemon.guardian.killed_with_unit()
        self.schedule_restart(daemon.host)

    def reopen(self, daemon: Daemon) -> None:
        """Action Reopen: the session is closed and the job reaped; start over in-process."""
        self.record(daemon.host, "!!", f"daemon {daemon.label} reopens")
        daemon.die()
        daemon.guardian.close()
        self.start_daemon(daemon.host)

    def resume(self, host: Host) -> None:
        """The end of a pause fault (SIGCONT, or the loop unstuck)."""
        daemon = host.live_daemon
        if daemon is None or daemon.paused not in ("process", "loop"):
            return
        self.record(host, "!!", f"daemon {daemon.label} resumes")
        daemon.resume()

    def stall_logs(self, host: Host, until: float) -> None:
        """The daemon's log stream takes nothing until ``until`` (a blocking container log
        driver, a full pipe to a log shipper, a terminal paused with Ctrl-S). Production
        queues log lines off the loop and drops them when the queue is full, so only
        Bug.BLOCKING_LOGS lets this reach the loop (``block_on_logs``)."""
        host.log_stall_until = max(host.log_stall_until, until)

    def block_on_logs(self, daemon: Daemon, rest: list[act.Action]) -> None:
        """Bug.BLOCKING_LOGS: the loop's log write blocks until the stream drains; the rest
        of the step (``rest``, the blocked line first) waits with it. kazoo runs on."""
        self.record(daemon.host, "!!", f"{daemon.label}'s loop blocks writing a log line")
        daemon.blocked_step = rest
        daemon.pause("logs")
        self._arm_watchdog(daemon)
        self.at(daemon.host.log_stall_until, self._logs_drained, daemon)

    def _logs_drained(self, daemon: Daemon) -> None:
        if not daemon.alive or daemon.paused != "logs":
            return
        until = daemon.host.log_stall_until
        if until > self.now:  # stalled again meanwhile
            self.at(until, self._logs_drained, daemon)
            return
        self.record(daemon.host, "!!", f"{daemon.label}'s log write completes")
        daemon.resume()

    def suspend(self, host: Host) -> bool:
        """The whole host suspends (a laptop lid, a VM suspended by its hypervisor): the
        daemon, kazoo, the guardian and the job freeze; the ZooKeeper servers do not, and
        expire the session T after they last heard of it. The overlap while it sleeps is
        the documented limit (only fencing tokens cover a frozen host): the invariants
        excuse it from the session's expiry to the loop's first pass after the wake-up,
        which must kill the job at once (the lease clock, CLOCK_BOOTTIME, counted the sleep)."""
        daemon = host.live_daemon
        if self.quiet or daemon is None or daemon.paused is not None or host.suspended_at is not None:
            return False
        host.suspended_at = self.now
        daemon.suspend()
        return True

    def wake(self, host: Host) -> None:
        if host.suspended_at is None:
            return
        slept = self.now - host.suspended_at
        host.suspended_at = None
        if Bug.STOPPING_CLOCK in self.cfg.bugs:
            host.stopped += slept
        self.record(host, "!!", f"{host.name} wakes after {slept:.3f}s asleep")
        thawed, host.on_wake = host.on_wake, []
        for fn, args in thawed:
            fn(*args)
        daemon = host.live_daemon
        if daemon is not None and daemon.paused == "suspend":
            host.thawing = True
            daemon.wake()

    def sigterm(self, host: Host) -> bool:
        daemon = host.live_daemon
        if daemon is None:
            return False
        daemon.post("signal", ev.ShutdownRequested("SIGTERM"))
        return True

    def operator_delete(self, path: str) -> None:
        self.checker.on_operator_delete(path)
        self.server.delete_node(path, "deleted by an operator")

    def drain(self, host: Host) -> None:
        """``zkleader drain`` for host: its marker appears (core/drain.py)."""
        self.server.create_persistent(drain.marker_path(ELECTION, host.name), "zkleader drain")

    def undrain(self, host: Host) -> None:
        path = drain.marker_path(ELECTION, host.name)
        if path in self.server.nodes:
            self.server.delete_node(path, "zkleader undrain")

    def priority(self, host: Host) -> int:
        return self.cfg.priorities[host.index] if self.cfg.priorities else 0

    def freeze(self) -> None:
        """``zkleader freeze`` (core/preference.py): the marker appears; the checker
        notes which leaderships may go on running their job meanwhile."""
        path = preference.frozen_path(ELECTION)
        if path not in self.server.nodes:
            self.checker.on_freeze()
            self.server.create_persistent(path, "zkleader freeze", b'{"by":"operator"}')

    def thaw(self) -> None:
        path = preference.frozen_path(ELECTION)
        if path in self.server.nodes:
            self.server.delete_node(path, "zkleader thaw")

    def hand_over(self, host: Host) -> bool:
        """``zkleader resign --to`` naming host's current node, as the CLI does it:
        refused while frozen or while a request stands; a void one is replaced."""
        daemon = host.live_daemon
        node = daemon.core.snapshot().node if daemon is not None else None
        path = preference.handover_path(ELECTION)
        if node is None or f"{ELECTION}/{node}" not in self.server.nodes \
                or preference.frozen_path(ELECTION) in self.server.nodes:
            return False
        if path in self.server.nodes:
            self.server.delete_node(path, "void handover request replaced")
        self.server.create_persistent(path, "zkleader resign --to", preference.handover_data(node, "operator", "resign --to"))
        return True

    def leader_host(self) -> Host | None:
        """The host whose live session owns the first node in line, if any."""
        low = self.server.lowest()
        if low is None:
            return None
        owner = self.server.nodes[low].owner
        s = self.server.sessions.get(owner)
        return s.host if s is not None else None

    def heal_all(self) -> None:
        """The faults stop: every link heals, every daemon runs, nothing is armed."""
        self.healed_at = self.now
        self.quiet = True
        self.record(None, "!!", "faults stop: heal everything")
        if not self.server.up:
            self.server._back()
        for host in self.hosts:
            self.undrain(host)  # the operator undrains every host: one leader is due again
        self.thaw()
        handover = preference.handover_path(ELECTION)
        if handover in self.server.nodes:
            self.server.delete_node(handover, "operator clears the handover request")
        for host in self.hosts:
            host.lose_next = None
            host.lose_relay_next = None
            host.fail_next_start = False
            host.slow_until = 0.0
            host.log_stall_until = 0.0
            self.heal(host)
            self.wake(host)
            daemon = host.live_daemon
            if daemon is not None:
                daemon.client.chatty_until = 0.0
                if daemon.paused == "logs":
                    daemon.resume()
                self.resume(host)
        for host in self.hosts:
            if host.live_daemon is None:
                self.start_daemon(host)

    def in_flight_until(self) -> float:
        """When the last packet now on the wire arrives."""
        latest = self.now
        for host in self.hosts:
            daemon = host.daemon
            if daemon is None:
                continue
            for conn in (daemon.client.conn, daemon.client.handshake):
                if conn is not None:
                    latest = max(latest, conn.c2s_last, conn.s2c_last)
        return latest

    def quiet_bound(self) -> float:
        """How long after the faults stop exactly one leader job must be running."""
        cfg = self.cfg
        T = cfg.session_timeout
        reconnect = min(T, 1.0) + 1.4 * cfg.retry_max_delay + T / cfg.servers + 0.2
        backoff = 0.0
        if cfg.on_exit is OnExit.RESTART and self.jobs_crashed:
            backoff = min(cfg.restart_delay * 2 ** min(self.jobs_crashed, 16), max(MAX_RESTART_DELAY, cfg.restart_delay))
        # A preferred host that was not leading at the heal asks after preempt_after, and
        # the leader then stops its job and hands over.
        preempt = 0.0 if cfg.preempt_after is None else cfg.preempt_after + cfg.stop_timeout + T + 0.5
        return (2 * T + cfg.tick_time + cfg.stop_timeout + LEAVE_GRACE + reconnect + cfg.restart_sec + backoff + 1.0
                + preempt)

    # ------------------------------------------------------------------ trace

    def record(self, host: Host | None, kind: str, text: str) -> None:
        self.timeline.record(self.now, host.name if host is not None else "world", kind, text, None)

    def stats_count(self, key: str) -> None:
        self.stats[key] = self.stats.get(key, 0) + 1
