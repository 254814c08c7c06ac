"""The lease arithmetic that keeps "never two leader jobs" true.

ZooKeeper cannot expire a session before ``T`` (the negotiated session timeout) has
passed since the server last heard from it. If a request sent at ``t_ok`` (our
monotonic clock) was answered, the server heard from us at or after ``t_ok``, so no
other host can see our node vanish before ``t_ok + T``. The leader's job must
therefore be reaped before that instant, with room for the stop signal, SIGKILL,
scheduling delays and a difference in clock rates. Both the configuration loader and
the decision core use these functions, so the rule that is validated is the rule that
runs.
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

#: At least this fraction of the session timeout must remain between the freshest
#: possible acknowledgement and the moment the stop begins, so that a connection
#: that comes back (a ZooKeeper server restart) rides through without a job restart.
MIN_RIDE_THROUGH = 0.5

#: Shortest session timeout accepted; ZooKeeper's own minimum is 2 x tickTime.
MIN_SESSION_TIMEOUT = 1.0


@dataclass(frozen=True)
class LeaseBudget:
    """Deadlines derived from one session timeout and one stop timeout.

    watchdog: systemd's watchdog interval, when there is one. A daemon that pauses
    (SIGSTOP, a frozen VM) cannot stop its job; systemd kills the unit, job included,
    at most one interval after the last ping. A pause can begin right before SIGKILL
    was due, so the kill deadline keeps at least that interval in reserve. The same
    reserve covers a loop that runs late for any other reason, so it replaces the
    clock slack when larger rather than adding to it."""

    session_timeout: float
    stop_timeout: float
    watchdog: float = 0.0

    @property
    def slack(self) -> float:
        return max(self.session_timeout * CLOCK_SLACK, self.watchdog)

    @property
    def kill_offset(self) -> float:
        """From t_ok to the last moment SIGKILL may be sent."""
        return self.session_timeout - self.slack - REAP_ALLOWANCE

    @property
    def stop_offset(self) -> float:
        """From t_ok to the moment the graceful stop must begin."""
        return self.kill_offset - self.stop_timeout

    @property
    def heartbeat_interval(self) -> float:
        return self.session_timeout / HEARTBEATS_PER_SESSION

    def stop_at(self, t_ok: float) -> float:
        return t_ok + self.stop_offset

    def kill_by(self, t_ok: float) -> float:
        return t_ok + self.kill_offset

    def expires_at(self, t_ok: float) -> float:
        """The earliest instant the server could expire the session."""
        return t_ok + self.session_timeout


def max_stop_timeout(session_timeout: float, watchdog: float = 0.0) -> float:
    """The largest stop_timeout that still leaves the minimum ride-through."""
    slack = LeaseBudget(session_timeout, 0.0, watchdog).slack
    return session_timeout * (1 - MIN_RIDE_THROUGH) - slack - REAP_ALLOWANCE


def min_session_timeout(stop_timeout: float, watchdog: float = 0.0) -> float:
    """The smallest session timeout that fits a given stop_timeout (and watchdog)."""
    by_slack = (stop_timeout + REAP_ALLOWANCE) / (1 - CLOCK_SLACK - MIN_RIDE_THROUGH)
    by_watchdog = (stop_timeout + REAP_ALLOWANCE + watchdog) / (1 - MIN_RIDE_THROUGH)
    return max(MIN_SESSION_TIMEOUT, by_slack, by_watchdog)


def budget_problem(session_timeout: float, stop_timeout: float, watchdog: float = 0.0) -> str | None:
    """Why these numbers cannot keep the safety rule, or None when they can."""
    limit = max_stop_timeout(session_timeout, watchdog)
    if stop_timeout <= limit:
        return None
    if watchdog > session_timeout * CLOCK_SLACK:
        return (
            f"the systemd watchdog interval {watchdog:g}s, job.stop_timeout {stop_timeout:g}s and "
            f"zookeeper.session_timeout {session_timeout:g}s leave less than half the session to ride "
            f"through a reconnect: lower WatchdogSec or job.stop_timeout, or raise zookeeper.session_timeout "
            f"to at least {min_session_timeout(stop_timeout, watchdog):.2f}s"
        )
    if limit <= 0:
        return (
            f"zookeeper.session_timeout {session_timeout:g}s is too short to stop any job safely; "
            f"raise it to at least {min_session_timeout(stop_timeout):.2f}s"
        )
    return (
        f"job.stop_timeout {stop_timeout:g}s does not fit zookeeper.session_timeout {session_timeout:g}s: "
        f"the job must be reaped well before the session can expire, so lower job.stop_timeout "
        f"to at most {limit:.2f}s or raise zookeeper.session_timeout to at least "
        f"{min_session_timeout(stop_timeout):.2f}s"
    )
