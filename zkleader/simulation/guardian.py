"""The job's warm guardian (zkleader/guardian.py) and the release it becomes when its
daemon dies (zkleader/release.py), as the simulated world runs them.

Modelled because safety and failover now rest on the guardian's two powers:

* **It holds the lease.** StartJob and GuardLease hand it the lease's deadlines on the
  host's clock (CLOCK_BOOTTIME, drifting with the host, as the daemon's). It is a
  process of its own, so a paused or blocked daemon does not stop it: when the clock
  reaches its own stop instant (guardian.own_stop_at: a moment after stop_at, so that
  a healthy daemon's stop comes first) with the job running and no stop signal sent,
  it sends the stop signal itself (the job reacts as to any stop); at kill_at it
  SIGKILLs the tree, where a healthy daemon's SIGKILL may come first or second, as in
  production; the exit goes to the daemon as JobExited(by_guardian=True), read when
  its loop runs again. Its wait (capped at 0.5 s in production) is not modelled
  across a suspend.
* **It releases a dead daemon's session.** When its lifeline closes (the daemon was
  killed), it SIGKILLs the tree, waits until every process is dead, and only then execs
  the release, which attaches to the session over the host's link and closes it: the
  server deletes the session's nodes at that moment and the successor's watch fires.
  If no server answers within the session timeout it gives up and expiry does the
  rest. A daemon that exits in order has said "nosession": nothing to release.

``Bug.GUARDIAN_IGNORES_LEASE`` and ``Bug.RELEASE_BEFORE_REAP`` (config.py) switch
either power into its broken form.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from ..guardian import own_stop_at
from .config import Bug
from .server import Conn

if TYPE_CHECKING:
    from .daemon import Daemon
    from .world import World

#: Seconds from the exec of ``python -m zkleader.release`` to its first connect: the
#: interpreter, kazoo and the configuration (0.15-0.25 s measured on the test machine).
RELEASE_STARTUP = (0.1, 0.4)
#: release.py's connection_retry: the first delay, doubling up to the cap.
RELEASE_RETRY = 0.05
RELEASE_RETRY_MAX = 1.0


class Guardian:
    """One daemon incarnation's guardian, as its job runner talks to it."""

    def __init__(self, world: World, daemon: Daemon) -> None:
        self.world = world
        self.daemon = daemon
        self.host = daemon.host
        #: The process exists: False from its death until the job runner replaces it
        #: (after sweeping its orphans), and once it has become the release.
        self.alive = True
        #: Open until the daemon dies or exits.
        self.lifeline_open = True
        #: The session the daemon's ZooKeeper shell last told it (None: "nosession").
        self.session_id: int | None = None
        #: The current job's lease deadlines, on the host's clock.
        self.stop_at: float | None = None
        self.kill_at: float | None = None
        #: Generation of the pending wake-up: a new turn supersedes the old one.
        self._turn = 0
        bugs = world.cfg.bugs
        self._ignores_lease = Bug.GUARDIAN_IGNORES_LEASE in bugs
        self._releases_first = Bug.RELEASE_BEFORE_REAP in bugs

    # ----------------------------------------------------- the job runner's

    def hold(self, stop_at: float, kill_at: float) -> None:
        """``start``'s deadlines, or a ``lease`` line: the lease in force now. A line
        written to a guardian that died is lost with it."""
        if not self.alive:
            return
        self.stop_at, self.kill_at = stop_at, kill_at
        self.turn()

    def session(self, session_id: int | None) -> None:
        """The ZooKeeper shell's session listener (on kazoo's thread, not the loop's)."""
        self.session_id = session_id

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
        own_stop = None if self.stop_at is None or self.kill_at is None else own_stop_at(self.stop_at, self.kill_at)
        if own_stop is not None and now >= own_stop and not job.signalled:
            world.stats_count("guardian_stops")
            if self.daemon.paused is not None:
                world.stats_count("guardian_stops_stalled")
            job.stopped_by_guardian = True
            world.record(host, "job", f"the guardian stops {job.describe()} itself: its lease ran out"
                                      + (f" (daemon {self.daemon.paused}-paused)" if self.daemon.paused else ""))
            world.jobs.signal_job(self.daemon)
        due = [d for d in (None if job.signalled else own_stop, self.kill_at) if d is not None]
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
        """A fresh guardian, told the session again; none for a dead daemon."""
        if self.daemon.alive:
            self.alive = True

    def close(self) -> None:
        """The daemon exits in order: "nosession" (its session is closed, the job reaped),
        then the lifeline closes."""
        self.session_id = None
        self.lifeline_closed()

    def lifeline_closed(self) -> None:
        """The daemon is gone: kill the tree, and once every process is dead, release
        the session (``reaped``)."""
        self.lifeline_open = False
        self._turn += 1
        if not self.alive:
            return  # killed before its daemon: nobody is left to release anything
        if self._releases_first:
            # Bug: exec the release at once. Nothing kills the tree meanwhile; the job's
            # main process dies by PR_SET_PDEATHSIG when the release exits.
            self._release(lambda: self.world.jobs.kill_job(self.daemon))
        elif self.world.jobs.job_of(self.daemon) is not None:
            self.world.jobs.kill_job(self.daemon)
        else:
            self.reaped()

    def reaped(self) -> None:
        """A process of the tree died; with the lifeline closed and nothing left, waitpid's
        ECHILD says the tree is gone: exec the release."""
        if not self.lifeline_open and self.alive and self.world.jobs.job_of(self.daemon) is None:
            self._release(None)

    def killed_with_unit(self) -> None:
        """systemd SIGKILLs the unit's whole cgroup (its watchdog): the guardian dies with
        the daemon and releases nothing; the job's processes die within the kill delay."""
        self.world.jobs.kill_job(self.daemon)
        self.lifeline_open = False
        self.died()

    def _release(self, on_exit: Callable[[], None] | None) -> None:
        self.alive = False  # exec: the guardian is the release now
        if self.session_id is None:
            if on_exit is not None:
                on_exit()
            return
        Release(self.world, self.daemon, self.session_id, on_exit)


class Release:
    """``python -m zkleader.release``: kazoo attaches to the session by its id and
    password and closes it; no server within the session timeout: give up. Its
    connections use the host's link, as the daemon's did."""

    def __init__(self, world: World, daemon: Daemon, session_id: int, on_exit: Callable[[], None] | None) -> None:
        self.world = world
        self.host = daemon.host
        self.label = daemon.label
        self.session_id = session_id
        self._on_exit = on_exit
        self.conn: Conn | None = None
        #: The server answered the connect on ``conn``: the closeSession is on its way.
        self.attached = False
        self.done = False
        self._retry_delay = RELEASE_RETRY
        startup = world.rng.uniform(*RELEASE_STARTUP)
        # client.start(timeout=session_timeout), counted from the first connect.
        self._give_up_at = world.now + startup + world.cfg.session_timeout
        world.record(self.host, "job", f"the guardian of {self.label} execs the release of session 0x{session_id:x}")
        self._at(world.now + startup, self._attempt)
        self._at(self._give_up_at, self._finish, "gave_up")

    def _at(self, t: float, fn: Callable[..., None], *args: Any) -> None:
        self.world.at(t, self._run, fn, args)

    def _run(self, fn: Callable[..., None], args: tuple[Any, ...]) -> None:
        if self.done:
            return
        if self.host.suspended_at is not None:
            self.host.on_wake.append((self._run, (fn, args)))  # frozen with the host
            return
        fn(*args)

    def _attempt(self) -> None:
        world, host = self.world, self.host
        if host.c2s_up and host.s2c_up:
            conn = Conn(host, self)
            self.conn = conn
            world.send_c2s(conn, ("connect", self.session_id, world.cfg.session_timeout))
            self._at(world.now + world.cfg.session_timeout / world.cfg.servers, self._timed_out, conn)
        else:
            # SYN unanswered: the socket's connect timeout runs out (as client.Client).
            self._at(world.now + min(world.cfg.session_timeout, 1.0), self._retry)

    def _timed_out(self, conn: Conn) -> None:
        if self.conn is conn and not self.attached:
            self._retry()

    def _retry(self) -> None:
        if self.conn is not None:
            self.conn.client_open = False
            self.conn = None
        self.attached = False
        self._at(self.world.now + self._retry_delay, self._attempt)
        self._retry_delay = min(2 * self._retry_delay, RELEASE_RETRY_MAX)

    def receive(self, conn: Conn, pkt: tuple[Any, ...]) -> None:
        """What the server sends (World.send_s2c calls every connection's client)."""
        if self.host.suspended_at is not None and not self.done:
            self.host.on_wake.append((self.receive, (conn, pkt)))
            return
        if self.done or conn is not self.conn:
            if conn.server_open:
                self.world.server.close_conn(conn, rst=False)  # the socket is gone
            return
        match pkt[0]:
            case "connected":
                self.attached = True
                self.world.record(self.host, "job", f"release: attached to session 0x{self.session_id:x}, closing it")
                self.world.send_c2s(conn, ("close", "released by its guardian"))
            case "closed":
                self._finish("done")
            case "expired":
                # kazoo is handed a new session, and closing that one is nothing to the election.
                self._finish("too_late")
            case _:  # refused by a server that is down, or reset
                self._retry()

    def _finish(self, outcome: str) -> None:
        self.done = True
        if self.conn is not None:
            self.conn.client_open = False
        self.world.stats_count(f"release_{outcome}")
        self.world.record(self.host, "job", f"release of session 0x{self.session_id:x}: {outcome.replace('_', ' ')}")
        if self._on_exit is not None:
            self._on_exit()
