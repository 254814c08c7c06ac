"""The lease arithmetic that keeps "never two leader jobs" true.

The ZooKeeper leader (the quorum's, not necessarily the server we talk to) expires a
session T seconds after it last *touched* it; only then does our node vanish and a
successor start. A follower server does not touch sessions at the leader directly:
it collects the sessions it heard from and reports them in its replies to the
leader's pings, sent every tickTime/2. And a follower cut off from the leader keeps
answering local reads for syncLimit x tickTime, long after the leader stopped
hearing about us. So the lease counts only heartbeats that went through the leader:
a ``sync`` followed by ``exists`` on our own node. If that sync, sent at ``t_ok``, was
answered, the leader had processed every ping reply the follower sent before
forwarding it (one TCP stream, in order), and those carried our previous heartbeat,
sent at most one heartbeat interval plus tickTime/2 earlier. Hence

    the leader's last touch of our session >= t_ok - relay,   relay = T/6 + tickTime/2

and the job must be reaped before ``t_ok - relay + T``, with room for the stop signal,
SIGKILL, scheduling delays, clock rates and, under systemd, a paused daemon. Both
the configuration loader and the decision core use these functions, so the rule that
is validated is the rule that runs.
"""

from __future__ import annotations

from dataclasses import dataclass

#: Seconds allowed from SIGKILL to the job being reaped (kernel teardown, the
#: guardian noticing, our loop noticing). Generous for a loaded machine.
REAP_ALLOWANCE = 0.25

#: Fraction of the session timeout kept in reserve for clock-rate differences and
#: scheduling delays between the server's expiry and our local deadline.
CLOCK_SLACK = 0.1

#: The leader heartbeats this many times per session timeout.
HEARTBEATS_PER_SESSION = 6

#: At least this fraction of the session timeout must remain between the stalest
#: acknowledgement a healthy leader can have (one heartbeat old) and the moment the
#: stop begins, so that a connection that comes back within it (kazoo moving to
#: another server after a ZooKeeper restart) rides through without a job restart.
MIN_RIDE_THROUGH = 0.1

#: Shortest session timeout accepted; ZooKeeper's own minimum is 2 x tickTime.
MIN_SESSION_TIMEOUT = 1.0

#: ZooKeeper's default tickTime (zoo.cfg); zookeeper.tick_time overrides it.
DEFAULT_TICK_TIME = 2.0


@dataclass(frozen=True)
class LeaseBudget:
    """Deadlines, as offsets from t_ok (the send time of the latest answered sync).

    watchdog: systemd's watchdog interval, when there is one. A daemon that pauses
    (SIGSTOP, a frozen VM) cannot stop its job; systemd kills the unit, job included,
    at most one interval after the last ping. A pause can begin right before SIGKILL
    was due, so the kill deadline keeps that interval in reserve. The same reserve
    covers a loop that runs late for any other reason, so it replaces the clock slack
    when larger rather than adding to it."""

    session_timeout: float
    stop_timeout: float
    watchdog: float = 0.0
    tick_time: float = DEFAULT_TICK_TIME

    @property
    def heartbeat_interval(self) -> float:
        return self.session_timeout / HEARTBEATS_PER_SESSION

    @property
    def relay(self) -> float:
        """How much older than t_ok the ZooKeeper leader's last touch of our session can be."""
        return self.heartbeat_interval + self.tick_time / 2

    @property
    def slack(self) -> float:
        return max(self.session_timeout * CLOCK_SLACK, self.watchdog)

    @property
    def kill_offset(self) -> float:
        """From t_ok to the last moment SIGKILL may be sent."""
        return self.session_timeout - self.relay - self.slack - REAP_ALLOWANCE

    @property
    def stop_offset(self) -> float:
        """From t_ok to the moment the graceful stop must begin."""
        return self.kill_offset - self.stop_timeout

    @property
    def ride_through(self) -> float:
        """How long a healthy leader's job survives a silent ZooKeeper, at the least."""
        return self.stop_offset - self.heartbeat_interval

    def stop_at(self, t_ok: float) -> float:
        return t_ok + self.stop_offset

    def kill_by(self, t_ok: float) -> float:
        return t_ok + self.kill_offset

    def expires_at(self, t_ok: float) -> float:
        """The earliest instant the ZooKeeper leader could expire the session."""
        return t_ok - self.relay + self.session_timeout

    @property
    def feasible(self) -> bool:
        return self.ride_through >= MIN_RIDE_THROUGH * self.session_timeout

    def problem(self) -> str | None:
        """Why these numbers cannot keep the safety rule with a usable ride-through."""
        if self.feasible:
            return None
        numbers = (
            f"zookeeper.session_timeout {self.session_timeout:g}s, zookeeper.tick_time {self.tick_time:g}s, "
            f"job.stop_timeout {self.stop_timeout:g}s"
            + (f" and the systemd watchdog {self.watchdog:g}s" if self.watchdog else "")
        )
        fits = max_stop_timeout(self.session_timeout, self.watchdog, self.tick_time)
        lower = f"lower job.stop_timeout to at most {fits:.2f}s or " if fits > 0 else ""
        needed = min_session_timeout(self.stop_timeout, self.watchdog, self.tick_time)
        return (
            f"{numbers} leave no room to stop the job before the session could expire: "
            f"{lower}raise zookeeper.session_timeout to at least {needed:.2f}s"
        )


def max_stop_timeout(session_timeout: float, watchdog: float = 0.0, tick_time: float = DEFAULT_TICK_TIME) -> float:
    """The largest stop_timeout that still leaves the minimum ride-through."""
    budget = LeaseBudget(session_timeout, 0.0, watchdog, tick_time)
    return budget.ride_through - MIN_RIDE_THROUGH * session_timeout


def min_session_timeout(stop_timeout: float, watchdog: float = 0.0, tick_time: float = DEFAULT_TICK_TIME) -> float:
    """The smallest session timeout that fits a given stop_timeout (feasibility only
    grows with the session timeout, so bisection finds it)."""
    low, high = MIN_SESSION_TIMEOUT, 3600.0
    if not LeaseBudget(high, stop_timeout, watchdog, tick_time).feasible:
        return high
    while high - low > 0.005:
        middle = (low + high) / 2
        if not LeaseBudget(middle, stop_timeout, watchdog, tick_time).feasible:
            low = middle
        else:
            high = middle
    return high


def budget_problem(
    session_timeout: float, stop_timeout: float, watchdog: float = 0.0, tick_time: float = DEFAULT_TICK_TIME
) -> str | None:
    """Why these numbers cannot keep the safety rule, or None when they can."""
    return LeaseBudget(session_timeout, stop_timeout, watchdog, tick_time).problem()
