"""The lease arithmetic that keeps "never two leader jobs" true.

The ZooKeeper leader (the quorum's, not necessarily the server we talk to) expires a
session T seconds after it last *touched* it; only then does our node vanish and a
successor start. A follower server does not touch sessions at the leader directly:
it records the sessions it heard from and reports them in its replies to the
leader's pings, which the leader sends every tickTime/2. And a follower cut off from
the leader keeps answering local reads for syncLimit x tickTime, long after the
leader stopped hearing about us. So the lease counts only what we *know* reached the
leader:

- An answered ``sync``, queued at ``s``, went through the leader after every ping
  reply the follower had sent before it forwarded the sync (one TCP stream, in
  order). If an answer to a packet ``p`` of ours was *read* by ``s - tickTime/2``,
  then ``p`` (and every packet written before it: one ordered stream) had reached
  the follower by then, at least tickTime/2 before the sync could reach it. A leader
  ping arrives at the follower at least every tickTime/2, so one arrived in between,
  and the follower's reply to it reported our session before it forwarded the sync.
  A write alone proves nothing: a stalled stream holds written packets in the send
  buffer and delivers them together with the sync (the simulation found exactly
  that with an earlier version of this rule, which counted writes).
- An answered connect request: a new session is created by the ZooKeeper leader,
  and a follower revalidates an existing one with the leader before it answers.

Two ZooKeeper behaviours close the remaining gaps. A follower that loses its leader
(a ping reply that carried our touch may be lost with the link) shuts down its client
connections before it serves again, so no later sync on the same connection can count
a packet whose relay was lost; a new connection is confirmed by the leader afresh.
And the half-tick is measured on our clock, so it is stretched by the clock slack
(``relay_window``).

``t_ok`` is therefore the write time of the latest packet whose answer was read at
least tickTime/2 before an answered sync was queued (``relayed_anchor``), whatever it
was: a heartbeat, a request, or one of kazoo's own pings (its pong is the answer).
The daemon knows when it wrote and read every packet, so this adds no waiting. The
ZooKeeper leader's last touch of our session is at or after ``t_ok``; it cannot
expire the session before ``t_ok + T``, and the job must be reaped by then, with room
for the stop signal, SIGKILL, the reap itself, scheduling delays, clock rates and,
under systemd, a paused daemon.

How old ``t_ok`` can be is a liveness question, not a safety one. A leader sends its
next heartbeat (sync + exists on its own node) T/6 after the previous one, and never
sooner than tickTime/2 after the previous answer, so that answer anchors the next
lease; one heartbeat at a time, so that an unanswered one leaves the connection
silent and kazoo's ping finds a dead server. In steady state ``t_ok`` lags the latest
answer by at most T/6 + tickTime/2. A follower that just took over may have had only
kazoo's pings answered, which go out after at most T/3 of silence: its first ``t_ok``
can be up to T/3 + tickTime/2 old, so it sends its second heartbeat tickTime/2 after
the first answer, which makes the first one count. ``LeaseBudget.problem`` refuses
numbers that leave either case without room. Both the configuration loader and the
decision core use these functions, so the rule that is validated is the rule that runs.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

#: Default seconds allowed from SIGKILL to the job being reaped (the kernel tearing
#: down its memory, the guardian noticing, our loop noticing); ``job.reap_allowance``
#: overrides it for jobs with a large resident set.
DEFAULT_REAP_ALLOWANCE = 0.25

#: Fraction of the session timeout kept in reserve for clock-rate differences and
#: scheduling delays between the server's expiry and our local deadline.
CLOCK_SLACK = 0.1

#: The leader heartbeats this many times per session timeout.
HEARTBEATS_PER_SESSION = 6

#: kazoo pings after read_timeout/2 = (2/3 T)/2 of silence on its side: the longest
#: gap between two of our packets on an idle connection, as a fraction of T.
PING_GAP_FRACTION = 1 / 3

#: At least this fraction of the session timeout must remain between the stalest
#: acknowledgement a healthy leader can have (one heartbeat old) and the moment the
#: stop begins, so that a connection that comes back within it (kazoo moving to
#: another server after a ZooKeeper restart) rides through without a job restart.
MIN_RIDE_THROUGH = 0.1

#: Shortest session timeout accepted; ZooKeeper's own minimum is 2 x tickTime.
MIN_SESSION_TIMEOUT = 1.0

#: ZooKeeper's default tickTime (zoo.cfg); zookeeper.tick_time overrides it.
DEFAULT_TICK_TIME = 2.0


#: Reconnect backoff cap: a leader riding through an outage must get back well inside
#: its lease, so the cap is a small fraction of the session timeout.
RECONNECT_CAP_FRACTION = 0.2


def reconnect_max_delay(session_timeout: float) -> float:
    """The longest wait between two reconnect attempts: a fraction of the session
    timeout, within 0.2..2 s (the shell's kazoo retry and the simulation's model)."""
    return max(0.2, min(2.0, session_timeout * RECONNECT_CAP_FRACTION))


def relay_window(tick_time: float) -> float:
    """tickTime/2 as measured on our clock: the ZooKeeper leader's ping period runs on
    its clock, and ours may run up to CLOCK_SLACK faster, so our half-tick is stretched
    by that much to be sure a real half-tick has passed."""
    return tick_time / 2 * (1 + CLOCK_SLACK)


def relayed_anchor(
    answered: Iterable[tuple[float, float]], sync_queued_at: float, tick_time: float, confirmed_at: float | None = None
) -> float | None:
    """The lease anchor an answered sync proves: the latest ``written`` of a packet
    ``(written, answer_read)`` whose answer was read at least tickTime/2 before the
    sync was queued (queued, not written: the write comes later, so the cut-off errs
    early), or ``confirmed_at`` (when the session's answered connect request was
    written) when that is later. None when nothing qualifies."""
    cutoff = sync_queued_at - relay_window(tick_time)
    qualified = [written for written, answer_read in answered if answer_read <= cutoff]
    if confirmed_at is not None:
        qualified.append(confirmed_at)
    return max(qualified) if qualified else None


@dataclass(frozen=True)
class LeaseBudget:
    """Deadlines, as offsets from t_ok (``relayed_anchor``: a moment at or before the
    ZooKeeper leader's last touch of our session).

    watchdog: systemd's watchdog interval, when there is one. A daemon that pauses
    (SIGSTOP) cannot stop its job; systemd kills the unit, job included, at most one
    interval after the last ping. A pause can begin right before SIGKILL was due, so
    the kill deadline keeps that interval in reserve. The same reserve covers a loop
    that runs late for any other reason, so it replaces the clock slack when larger
    rather than adding to it. reap_allowance: from SIGKILL to the job reaped."""

    session_timeout: float
    stop_timeout: float
    watchdog: float = 0.0
    tick_time: float = DEFAULT_TICK_TIME
    reap_allowance: float = DEFAULT_REAP_ALLOWANCE

    @property
    def heartbeat_interval(self) -> float:
        return self.session_timeout / HEARTBEATS_PER_SESSION

    @property
    def steady_lag(self) -> float:
        """How much older than the latest answered heartbeat t_ok can be for a leader
        that heartbeats on its cadence (the previous heartbeat anchors it)."""
        return self.heartbeat_interval + relay_window(self.tick_time)

    @property
    def takeover_lag(self) -> float:
        """The same for a follower's first heartbeat, when only kazoo's pings (one per
        T/3 of silence) went before it. It equals steady_lag + one heartbeat interval,
        so the ride-through below also bounds the first lease."""
        return self.session_timeout * PING_GAP_FRACTION + relay_window(self.tick_time)

    @property
    def slack(self) -> float:
        return max(self.session_timeout * CLOCK_SLACK, self.watchdog)

    @property
    def kill_offset(self) -> float:
        """From t_ok to the last moment SIGKILL may be sent."""
        return self.session_timeout - self.slack - self.reap_allowance

    @property
    def stop_offset(self) -> float:
        """From t_ok to the moment the graceful stop must begin."""
        return self.kill_offset - self.stop_timeout

    @property
    def ride_through(self) -> float:
        """How long a healthy leader's job survives a silent ZooKeeper, at the least
        (its last answer can be one heartbeat old when the silence begins); also how
        long a new leader's first lease lasts, at the least."""
        return self.stop_offset - self.steady_lag - self.heartbeat_interval

    @property
    def first_renewal(self) -> float:
        """When a new leader sends its second heartbeat, after the first was answered:
        as soon as the first has been on the wire tickTime/2, so it anchors the lease."""
        return relay_window(self.tick_time)

    def stop_at(self, t_ok: float) -> float:
        return t_ok + self.stop_offset

    def kill_by(self, t_ok: float) -> float:
        return t_ok + self.kill_offset

    def expires_at(self, t_ok: float) -> float:
        """The earliest instant the ZooKeeper leader could expire the session."""
        return t_ok + self.session_timeout

    @property
    def least_ride_through(self) -> float:
        """What feasibility asks of the ride-through: MIN_RIDE_THROUGH x T, and at least
        the first renewal (a new leader's first lease must outlast it)."""
        return max(MIN_RIDE_THROUGH * self.session_timeout, self.first_renewal)

    @property
    def feasible(self) -> bool:
        """A ride-through of at least MIN_RIDE_THROUGH x T, and a first lease that
        outlasts the early second heartbeat (else a new leader's job would stop at once)."""
        return self.ride_through >= self.least_ride_through

    def problem(self) -> str | None:
        """Why these numbers cannot keep the safety rule with a usable ride-through."""
        if self.feasible:
            return None
        numbers = (
            f"zookeeper.session_timeout {self.session_timeout:g}s, zookeeper.tick_time {self.tick_time:g}s, "
            f"job.stop_timeout {self.stop_timeout:g}s"
            + (f", job.reap_allowance {self.reap_allowance:g}s" if self.reap_allowance != DEFAULT_REAP_ALLOWANCE else "")
            + (f" and the systemd watchdog {self.watchdog:g}s" if self.watchdog else "")
        )
        fits = max_stop_timeout(self.session_timeout, self.watchdog, self.tick_time, self.reap_allowance)
        lower = f"lower job.stop_timeout to at most {fits:.2f}s or " if fits > 0 else ""
        needed = min_session_timeout(self.stop_timeout, self.watchdog, self.tick_time, self.reap_allowance)
        return (
            f"{numbers} leave no room to stop the job before the session could expire: "
            f"{lower}raise zookeeper.session_timeout to at least {needed:.2f}s"
        )


def max_stop_timeout(
    session_timeout: float,
    watchdog: float = 0.0,
    tick_time: float = DEFAULT_TICK_TIME,
    reap_allowance: float = DEFAULT_REAP_ALLOWANCE,
) -> float:
    """The largest stop_timeout that still leaves the minimum ride-through."""
    budget = LeaseBudget(session_timeout, 0.0, watchdog, tick_time, reap_allowance)
    return budget.ride_through - budget.least_ride_through


def min_session_timeout(
    stop_timeout: float,
    watchdog: float = 0.0,
    tick_time: float = DEFAULT_TICK_TIME,
    reap_allowance: float = DEFAULT_REAP_ALLOWANCE,
) -> float:
    """The smallest session timeout that fits a given stop_timeout (feasibility only
    grows with the session timeout, so bisection finds it)."""
    low, high = MIN_SESSION_TIMEOUT, 3600.0
    if not LeaseBudget(high, stop_timeout, watchdog, tick_time, reap_allowance).feasible:
        return high
    while high - low > 0.005:
        middle = (low + high) / 2
        if not LeaseBudget(middle, stop_timeout, watchdog, tick_time, reap_allowance).feasible:
            low = middle
        else:
            high = middle
    return high


def budget_problem(
    session_timeout: float,
    stop_timeout: float,
    watchdog: float = 0.0,
    tick_time: float = DEFAULT_TICK_TIME,
    reap_allowance: float = DEFAULT_REAP_ALLOWANCE,
) -> str | None:
    """Why these numbers cannot keep the safety rule, or None when they can."""
    return LeaseBudget(session_timeout, stop_timeout, watchdog, tick_time, reap_allowance).problem()


def before_lead_window(
    session_timeout: float,
    tick_time: float = DEFAULT_TICK_TIME,
    reap_allowance: float = DEFAULT_REAP_ALLOWANCE,
    watchdog: float = 0.0,
) -> float:
    """The longest ``hooks.timeout`` a before_lead hook can be given: what a new leader's
    first lease leaves at the least, from leadership confirmed (its t_ok up to
    ``takeover_lag`` old) to the lease's SIGKILL instant. The hook runs before the job,
    as the only leader-side process, under the job's own rule: its tree is SIGKILLed
    by that instant (core/hooks.py caps its deadline there whatever the configuration)
    and reaped within reap_allowance, so before t_ok + T. It gets no graceful stop, so
    job.stop_timeout plays no part. 4.32 s with the defaults (T = 10 s, tickTime 2 s)."""
    budget = LeaseBudget(session_timeout, 0.0, watchdog, tick_time, reap_allowance)
    return budget.kill_offset - budget.takeover_lag
