"""Deterministic simulation of the leadership core (issue 8).

The simulator (zkleader/simulation) drives the production ``Leadership`` through a
model of ZooKeeper, kazoo, the network, the daemon's loop, systemd and the job, on a
virtual clock; invariants are checked after every step. This file:

* checks a few properties of the model itself (so that "no violation" means something);
* sweeps 10,000 seeded random schedules in CI (two processes), then smaller batches of
  the other fault profiles;
* proves the simulator has teeth: fourteen deliberate bugs, six in the core (test-only
  subclasses of ``Leadership``) and eight in the shells the model plays (``Bug``: the
  lease anchor's earlier rules, a job runner that reports a job gone with its guardian,
  a loop that blocks on its logs while its guardian ignores the lease, a lease clock
  that stops during a suspend, a guardian that ignores the lease, a guardian that
  releases a dead daemon's session before the job is reaped, an etcd heartbeat
  anchored at its keep-alive's answer), are caught within a fixed budget of schedules,
  and the real core and shells pass the same schedules;
* runs a hypothesis RuleBasedStateMachine over the same world, so a failure shrinks to
  a short readable trace;
* pins the bugs the simulator found in the real core as strict xfails (a fix turns
  them into XPASS, which fails the run: then delete the marker and the allowance in
  ``KNOWN_CORE_BUGS``).
"""

from __future__ import annotations

import dataclasses
import io
import math
import os
import re
from collections.abc import Callable
from contextlib import redirect_stdout

import pytest
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, initialize, rule, run_state_machine_as_test

from zkleader.core import actions as act
from zkleader.core import events as ev
from zkleader.core.jobcontrol import JobPhase
from zkleader.core.claim import Claim
from zkleader.core.leadership import Leadership
from zkleader.core.lease import Lease
from zkleader.core.outbox import Purpose
from zkleader.core.settings import Identity, OnExit, Settings
from zkleader.core.snapshot import Phase
from zkleader.simulation import PROFILES, Bug, World, WorldConfig, explore, run_schedule, settle
from zkleader.simulation.cli import main as cli_main
from zkleader.simulation.config import ELECTION
from zkleader.simulation.faults import max_stop
from zkleader.simulation.invariants import Violation
from zkleader.simulation.jobs import Job
from zkleader.simulation.runner import Finding
from zkleader.simulation.server import Session
from zkleader.simulation.world import Host

INF = float("inf")
WORKERS = max(1, min(2, os.cpu_count() or 1))

# ---------------------------------------------------------------------------- known core bugs

#: Findings that a known, reported core bug explains (see the xfail tests at the end).
#: Safety violations are never on this list.
KNOWN_CORE_BUGS: dict[str, Callable[[Finding], bool]] = {}


def unexplained(findings: list[Finding]) -> list[Finding]:
    return [f for f in findings if not any(match(f) for match in KNOWN_CORE_BUGS.values())]


def reports(findings: list[Finding], limit: int = 2) -> str:
    return "\n\n".join(f.report() for f in findings[:limit])


# ---------------------------------------------------------------------------- the world model


def boot(seed: int = 1, run: float = 1.0, **overrides: object) -> World:
    config = WorldConfig(**{"hosts": 2, "session_timeout": 2.0, "stop_timeout": 0.3, "trace_limit": None, **overrides})
    world = World(config, seed)
    world.start()
    world.run_until(run)
    return world


def test_a_leader_emerges_and_the_queue_is_clean() -> None:
    world = boot(hosts=3, run=0.0)
    settle(world)
    leader = world.leader_host()
    assert leader is not None and leader.daemon.core.snapshot().leader
    assert [j.host for j in world.checker.alive] == [leader]


def test_the_same_seed_replays_exactly() -> None:
    a = run_schedule(4242, trace_limit=None, timeline_lines=None, spin_is_violation=False)
    b = run_schedule(4242, trace_limit=None, timeline_lines=None, spin_is_violation=False)
    assert (a.steps, a.sim_time, a.faults, a.leaderships) == (b.steps, b.sim_time, b.faults, b.leaderships)


def test_session_expiry_is_never_early_and_rounded_up_to_a_tick() -> None:
    world = boot(session_timeout=2.0, tick_time=0.3)
    server = world.server
    session = next(s for s in server.sessions.values() if s.host is world.hosts[0])
    world.partition(world.hosts[0])
    cut = world.now
    heard = session.last_heard
    world.run_for(5.0)
    ended_at, cause = session.ended
    assert cause == "expired"
    assert ended_at >= heard + 2.0  # never early
    assert math.isclose(ended_at / 0.3, round(ended_at / 0.3), abs_tol=1e-6)  # a bucket boundary
    assert ended_at - cut < 2.0 + 0.3 + 1e-6


def test_on_etcd_only_keepalives_renew_a_lease_which_expires_exactly_ttl_after_the_last() -> None:
    """The etcd model (WorldConfig.backend, tests/etcd-timing.md E1): no tick buckets,
    no relay; a plain request renews nothing; the core counts with tick_time 0."""
    world = boot(backend="etcd", session_timeout=2.0, tick_time=0.3)
    assert world.settings.tick_time == 0.0
    server = world.server
    session = next(s for s in server.sessions.values() if s.host is world.hosts[0])
    before = session.last_heard
    world.run_for(0.05)
    server.touch(session)  # what every packet does on ZooKeeper
    assert session.last_heard == before
    server.keep_alive(session)
    assert session.last_heard == world.now
    world.partition(world.hosts[0])
    heard = session.last_heard
    world.run_for(5.0)
    ended_at, cause = session.ended
    assert cause == "expired"
    assert heard + 2.0 <= ended_at < heard + 2.0 + 1e-6


def test_kazoo_notices_a_silent_partition_after_about_two_thirds_of_the_timeout() -> None:
    world = boot(session_timeout=3.0)
    host = world.hosts[1]
    world.partition(host)
    cut = world.now
    world.run_for(3.0)
    dropped = [t for t, who, kind, obj, _ in world.timeline.entries
               if who == host.name and kind == "zk" and "dropped" in str(obj) and t > cut]
    assert dropped, "kazoo never noticed"
    # ping at read_timeout/2 - jitter after the last send (up to T/3 before the cut),
    # dropped at the next deadline; jitter is at most 12 ms x T (scaled from kazoo's 400 ms at T = 10 s)
    assert 2.0 - 1.0 - 2 * 0.12 - 0.01 <= dropped[0] - cut <= 2.0 + 0.05


def test_requests_can_postpone_detection_past_the_session_expiry() -> None:
    """kazoo's own weakness, on a follower (a leader drops a connection whose heartbeat
    goes unanswered for a whole interval: DropConnection)."""
    world = boot(session_timeout=2.0)
    host = next(h for h in world.hosts if h is not world.leader_host())
    world.chatty(host, INF)
    world.partition(host)
    world.run_for(6.0)
    assert host.daemon.client.state == "connected"  # kazoo still believes it is connected
    assert not any(s.alive for s in world.server.sessions.values() if s.host is host)  # but the session is gone
    world.heal(host)
    world.run_for(2.0)
    seen = [type(obj).__name__ for t, who, kind, obj, _ in world.timeline.entries if who.startswith(host.name) and kind == "<-"]
    tail = seen[len(seen) - seen[::-1].index("Suspended") - 1:]
    assert tail.index("SessionLost") < tail.index("Connected")


def test_a_connection_drop_fires_watches_with_connection_kind_and_fails_pending_requests() -> None:
    world = boot(session_timeout=2.0)
    follower = next(h for h in world.hosts if not h.daemon.core.snapshot().leader)
    world.server.restart(0.05)
    world.run_for(0.5)
    handled = [obj for t, who, kind, obj, _ in world.timeline.entries if who == follower.name and kind == "<-"]
    watches = [e for e in handled if isinstance(e, ev.WatchFired)]
    assert watches and watches[-1].kind is ev.WatchKind.CONNECTION
    connected = [e for e in handled if isinstance(e, ev.Connected)]
    assert len({c.session_id for c in connected}) == 1  # the session survived the restart


def test_a_lost_create_reply_still_applies_and_the_core_finds_its_node_by_id() -> None:
    world = boot(run=0.0, hosts=2)
    world.hosts[0].lose_next = "create"
    world.run_for(1.0)
    settle(world)
    lost = [obj for _, who, kind, obj, _ in world.timeline.entries if kind == "!!" and "lost" in str(obj)]
    assert lost
    recovered = [obj for _, _, kind, obj, _ in world.timeline.entries
                 if kind == "->" and isinstance(obj, act.Log) and obj.event == "create_recovered"]
    assert recovered


def test_the_watchdog_kills_a_paused_daemon_and_its_job() -> None:
    world = boot(session_timeout=4.0, stop_timeout=0.3, watchdog=0.6)
    leader = world.leader_host()
    world.pause(leader, "process")
    world.run_for(2.0)
    assert world.stats.get("watchdog_kills") == 1
    assert not any(j.host is leader for j in world.checker.alive)
    settle(world)


def test_a_sync_whose_relay_is_lost_anchors_the_lease_no_later_than_the_last_relay() -> None:
    """The server the leader talks to loses the ZooKeeper leader right after forwarding
    the leader's sync, and the leader is cut off with it: the touches it had not relayed
    yet, the sync's own among them, are lost, and the session expires T after the relay
    before. The lease counts only packets answered tickTime/2 before the sync (checked
    at once by the lease_anchor invariant), so the job is gone before a successor starts."""
    world = boot(hosts=2, session_timeout=2.0, tick_time=0.5)
    leader = world.leader_host()
    leader.lose_relay_next = 6.0
    world.run_for(1.0)
    lost = [obj for _, _, kind, obj, _ in world.timeline.entries if kind == "zk" and "not yet relayed" in str(obj)]
    assert lost, "no sync went out"
    world.run_for(4.0)
    assert world.stats.get("sessions_expired") == 1
    assert [j.host for j in world.checker.alive] == [h for h in world.hosts if h is not leader]
    settle(world)


@pytest.mark.parametrize("orphans", [False, True], ids=["alone", "with-workers"])
def test_a_job_whose_guardian_dies_is_reported_gone_only_once_every_process_is(orphans: bool) -> None:
    world = boot(hosts=2)
    leader = world.leader_host()
    (job,) = world.checker.alive
    assert world.jobs.guardian_dies(leader, orphans)
    world.run_for(1.0)
    exited = [(t, obj) for t, who, kind, obj, _ in world.timeline.entries
              if who == leader.name and kind == "<-" and isinstance(obj, ev.JobExited)]
    assert job.dead_at is not None and exited and exited[0][0] > job.dead_at
    assert exited[0][1].returncode is None and "guardian died" in exited[0][1].error
    settle(world)


def test_a_job_reported_gone_with_its_guardian_while_its_workers_live_is_caught() -> None:
    world = boot(hosts=2, bugs=frozenset({Bug.EARLY_EXIT_REPORT}))  # on_exit: restart
    assert world.jobs.guardian_dies(world.leader_host(), orphans=True)
    with pytest.raises(Violation) as info:
        world.run_for(1.0)
    assert info.value.kind == "double_start"


@pytest.mark.parametrize("bugs", [
    frozenset(),
    frozenset({Bug.BLOCKING_LOGS}),
    frozenset({Bug.BLOCKING_LOGS, Bug.GUARDIAN_IGNORES_LEASE}),
], ids=["queued", "blocking", "blocking-and-no-guardian"])
def test_a_stalled_log_stream_never_holds_up_the_kill(bugs: frozenset[Bug]) -> None:
    """tests/test_log_stall.py in the model: the leader's log stream stalls, the leader is
    partitioned, and its job ignores SIGTERM, so only a SIGKILL ends it. Logs queued off
    the loop (production) leave the loop free to send it. A loop that blocks in a log
    write (Bug.BLOCKING_LOGS) sends the stop signal first (it comes before the step's
    logs) but never the SIGKILL: the guardian sends it at the lease's kill deadline, and
    only a guardian that ignores the lease as well lets the job outlive the session."""
    world = boot(hosts=2, ignore_stop=1.0, bugs=bugs)
    leader = world.leader_host()
    world.stall_logs(leader, INF)
    world.partition(leader)
    if Bug.GUARDIAN_IGNORES_LEASE in bugs:
        with pytest.raises(Violation) as info:
            world.run_for(5.0)
        assert info.value.kind in ("overlap", "legitimacy")
        return
    world.run_for(5.0)
    assert [j.host for j in world.checker.alive] == [h for h in world.hosts if h is not leader]
    # A queued log leaves the loop free to send SIGKILL at the kill instant (the guardian
    # may send its own at that same instant); a blocking one leaves it to the guardian.
    assert world.stats.get("daemon_kills", 0) == (0 if bugs else 1)
    assert world.stats.get("guardian_kills", 0) == 1 or not bugs
    settle(world)


def _stop_point(world: World, job: Job) -> float:
    """The world time of the guardian's stop deadline for ``job`` (its host's clock)."""
    guardian = job.daemon.guardian
    assert guardian.stop_at is not None
    return job.host.world_time(guardian.stop_at)


@pytest.mark.parametrize("how", ["process", "loop"])
def test_a_paused_leaders_guardian_stops_its_job_before_the_session_can_expire(how: str) -> None:
    """No watchdog: the leader's daemon stops (SIGSTOP, or only its loop) for three
    session timeouts. Its guardian runs the lease's schedule itself, so the job is gone
    before the session could expire (with kazoo stopped too, it does expire, and the
    next host leads), and the daemon reads JobExited(by_guardian=True) when it resumes."""
    world = boot(hosts=2, session_timeout=2.0, ignore_stop=0.0)
    leader = world.leader_host()
    (job,) = world.checker.alive
    assert world.pause(leader, how)
    world.run_for(6.0)
    assert job.stopped_by_guardian and job.dead_at is not None
    assert job.dead_at < _stop_point(world, job) + world.cfg.stop_timeout + 0.25
    assert world.stats.get("guardian_stops_stalled") == 1
    session = world.server.sessions[job.session_id]
    assert (session.ended is not None and job.dead_at < session.ended[0]) == (how == "process")
    world.resume(leader)
    world.run_for(0.1)
    exits = [obj for _, who, kind, obj, _ in world.timeline.entries
             if who == leader.name and kind == "<-" and isinstance(obj, ev.JobExited)]
    assert [e.by_guardian for e in exits] == [True]
    settle(world)


def test_a_paused_leaders_job_outlives_its_session_when_the_guardian_ignores_the_lease() -> None:
    world = boot(hosts=2, session_timeout=2.0, bugs=frozenset({Bug.GUARDIAN_IGNORES_LEASE}))
    assert world.pause(world.leader_host(), "process")
    with pytest.raises(Violation) as info:
        world.run_for(6.0)
    assert info.value.kind in ("overlap", "legitimacy")


def test_the_daemons_stop_after_the_guardians_own_is_not_repeated() -> None:
    """The guardian stopped the job while the loop was stuck; the loop comes back before
    the job has ended and stops it too (its lease is over): the job hears one stop signal
    (its reaction is not drawn again) and its exit still says by_guardian."""
    world = boot(hosts=2, session_timeout=2.0, stop_timeout=0.3, ignore_stop=0.0)
    leader = world.leader_host()
    (job,) = world.checker.alive
    assert world.pause(leader, "loop")
    world.run_until(_stop_point(world, job) - 0.01)
    while not job.signalled:
        world.run_for(0.0005)
    assert job.stopped_by_guardian and job.dead_at is None
    death = job.death_at
    world.resume(leader)  # the loop's first pass finds the lease over: SignalJob
    stops = [obj for _, who, kind, obj, _ in world.timeline.entries
             if who == leader.name and kind == "->" and isinstance(obj, act.SignalJob)]
    assert len(stops) == 1 and job.death_at == death
    world.run_for(1.0)
    assert world.stats.get("guardian_stops") == 1
    exits = [obj for _, who, kind, obj, _ in world.timeline.entries
             if who == leader.name and kind == "<-" and isinstance(obj, ev.JobExited)]
    assert [e.by_guardian for e in exits] == [True]
    settle(world)


def _kill_the_leader(world: World) -> tuple[Host, Job, Session]:
    leader = world.leader_host()
    (job,) = world.checker.alive
    session = world.server.sessions[job.session_id]
    assert world.kill9(leader)
    return leader, job, session


def test_a_killed_leaders_guardian_reaps_the_job_then_releases_the_session() -> None:
    """kill -9 of the leader's daemon on a healthy host: its guardian SIGKILLs and reaps
    the job, and only then closes the session (a release attaches to it, which touches
    it, and sends closeSession). The node goes at that moment, so the next host leads
    well before the session could have expired; systemd restarts the dead daemon."""
    world = boot(hosts=2, session_timeout=4.0)
    _, job, session = _kill_the_leader(world)
    killed = world.now
    world.run_for(1.5)
    assert session.ended is not None and session.ended[1] == "released by its guardian"
    assert job.dead_at is not None and job.dead_at < session.ended[0] < killed + 1.0
    (successor,) = world.checker.alive
    assert successor.host is not job.host and successor.started_at < killed + 1.5
    assert world.stats.get("sessions_released") == 1
    settle(world)


def test_a_release_that_reaches_no_server_leaves_the_session_to_expire() -> None:
    world = boot(hosts=2, session_timeout=2.0)
    leader, _, session = _kill_the_leader(world)
    world.partition(leader)
    world.run_for(3.0)
    assert session.ended is not None and session.ended[1] == "expired"
    assert world.stats.get("release_gave_up") == 1 and not world.stats.get("sessions_released")
    world.heal(leader)
    settle(world)


def test_a_release_before_the_job_is_reaped_is_caught() -> None:
    """Bug.RELEASE_BEFORE_REAP: the session closes while the job lives (close_before_reap,
    at the close); without that check, the job outlives its node (legitimacy): the next
    host may start at once."""
    world = boot(hosts=2, session_timeout=4.0, bugs=frozenset({Bug.RELEASE_BEFORE_REAP}))
    _kill_the_leader(world)
    with pytest.raises(Violation) as info:
        world.run_for(1.5)
    assert info.value.kind == "close_before_reap"


def test_a_release_before_the_job_is_reaped_lets_the_old_job_overlap(monkeypatch: pytest.MonkeyPatch) -> None:
    world = boot(hosts=2, session_timeout=4.0, bugs=frozenset({Bug.RELEASE_BEFORE_REAP}))
    monkeypatch.setattr(world.checker, "on_closed", lambda session: None)
    _kill_the_leader(world)
    with pytest.raises(Violation) as info:
        world.run_for(1.5)
    assert info.value.kind in ("overlap", "legitimacy")


def test_a_host_that_slept_through_its_session_kills_its_job_in_its_first_loop_pass() -> None:
    """While the whole host sleeps nothing on it can act: the overlap with the successor
    is the documented limit, excused from the session's expiry on, not before. The loop's
    first pass after the wake-up kills the job (the lease clock, CLOCK_BOOTTIME, counted
    the sleep), and the excuse ends with the job."""
    world = boot(hosts=2, session_timeout=2.0)
    leader = world.leader_host()
    (old,) = world.checker.alive
    assert world.suspend(leader)
    world.run_for(1.0)
    assert not old.excuses  # the session has not expired yet: nothing is excused
    world.run_for(2.0)
    assert "suspended" in old.excuses and len(world.checker.alive) == 2  # the successor runs
    world.wake(leader)
    world.run_for(0.6)  # the first pass comes within loop.MAX_SLEEP at the latest
    assert old.sigkilled and old.dead_at is not None
    settle(world)


def _suspend_the_leader_past_its_session(seed: int, bugs: frozenset[Bug]) -> Violation | None:
    world = boot(seed=seed, hosts=2, session_timeout=2.0, bugs=bugs)
    leader = world.leader_host()
    assert world.suspend(leader)
    world.run_for(3.0)
    world.wake(leader)
    try:
        world.run_for(0.6)
    except Violation as violation:
        return violation
    return None


def test_a_lease_clock_that_stops_while_the_host_sleeps_is_caught() -> None:
    """Whether the held deletion notification or the connection's reset reaches the
    woken daemon first depends on the schedule; only in the second case does the lease
    clock decide. Over a few seeds the stopping clock is caught, BOOTTIME never."""
    seeds = range(1, 31)
    caught = [_suspend_the_leader_past_its_session(seed, frozenset({Bug.STOPPING_CLOCK})) for seed in seeds]
    assert {v.kind for v in caught if v is not None} == {"suspend"}
    assert [_suspend_the_leader_past_its_session(seed, frozenset()) for seed in seeds] == [None] * len(seeds)


def test_a_short_sleep_excuses_nothing() -> None:
    world = boot(hosts=2, session_timeout=2.0)
    leader = world.leader_host()
    (job,) = world.checker.alive
    assert world.suspend(leader)
    world.run_for(0.3)
    world.wake(leader)
    world.run_for(2.0)
    assert not job.excuses
    settle(world)


# ---------------------------------------------------------------------------- CI sweep

#: Schedules in the default run: short ones (a few session timeouts of faults, then a
#: quiet phase that ends as soon as the group has provably settled).
CI_SCHEDULES = 10_000


def test_ci_sweep_of_random_schedules() -> None:
    summary = explore(range(CI_SCHEDULES), "ci", workers=WORKERS, spin_is_violation=False)
    print("\n" + summary.text())
    assert summary.schedules == CI_SCHEDULES
    safety = [f for f in summary.findings if f.safety]
    assert not safety, reports(safety)
    other = unexplained(summary.findings)
    assert not other, reports(other)
    assert sum(summary.faults.values()) > 2 * CI_SCHEDULES  # ~3 per schedule
    assert summary.leader_changes > CI_SCHEDULES // 2  # ~0.9 per schedule


@pytest.mark.parametrize("profile", ["strict", "network", "chatty", "crashes", "control", "etcd"])
def test_other_profiles(profile: str) -> None:
    summary = explore(range(10**6, 10**6 + 300), profile, spin_is_violation=False)
    assert not unexplained(summary.findings), reports(unexplained(summary.findings))


@pytest.mark.slow
@pytest.mark.parametrize("profile", ["default", "strict", "network", "chatty", "crashes"])
def test_long_sweep(profile: str) -> None:
    summary = explore(range(2 * 10**6, 2 * 10**6 + 50_000), profile, workers=WORKERS, spin_is_violation=False)
    print("\n" + summary.text())
    assert not unexplained(summary.findings), reports(unexplained(summary.findings))


# ---------------------------------------------------------------------------- deliberate bugs


class IgnoresLease(Leadership):
    """(1) The job keeps running while disconnected: the lease deadline is ignored."""

    def __init__(self, settings: Settings, identity: Identity, new_id: Callable[[], str]) -> None:
        super().__init__(settings, identity, new_id)
        self.lease = _EndlessLease(settings)


class _EndlessLease(Lease):
    def valid_at(self, now: float) -> bool:
        return self.t_ok is not None


class ConnectionWatchIsDeletion(Leadership):
    """(2) A NONE/CONNECTION watch event is taken for a deletion."""

    def handle(self, event: ev.Event, now: float) -> list[act.Action]:
        if isinstance(event, ev.WatchFired) and event.kind is ev.WatchKind.CONNECTION:
            event = ev.WatchFired(event.path, ev.WatchKind.DELETED)
        return super().handle(event, now)


class DeletesBeforeReaped(Leadership):
    """(3) On shutdown or resign the node is deleted before the job is reaped."""

    def handle(self, event: ev.Event, now: float) -> list[act.Action]:
        out = super().handle(event, now)
        node = self.snapshot().node
        if (self.leave is not None and self.job.phase is not JobPhase.NONE and node is not None
                and self.lease.connected and not self.out.awaiting(Purpose.DELETE_OWN)):
            self.out.request(Purpose.DELETE_OWN, lambda rid: act.DeleteNode(rid, self.path(node)))
            out += self.out.take()
        return out


class SuspendedIsTheClock(Leadership):
    """(4) No lease of its own: the job stops only on Suspended / SessionLost, and the
    stop is not bounded by the lease."""

    def __init__(self, settings: Settings, identity: Identity, new_id: Callable[[], str]) -> None:
        super().__init__(settings, identity, new_id)
        self.lease = _ConnectionLease(settings)


class _ConnectionLease(Lease):
    """Trusts the connection state alone: no lease, and no heartbeat stall of its own
    (only kazoo's detection, which requests can postpone, brings SUSPENDED)."""

    def valid_at(self, now: float) -> bool:
        return self.connected

    def kill_by(self) -> float | None:
        return None

    def deadlines(self) -> tuple[float, float] | None:
        """No lease for the guardian to hold either."""
        return (math.inf, math.inf)

    @property
    def stall_deadline(self) -> float | None:
        return None


class SkipsOwnerCheck(Leadership):
    """(5) The ephemeralOwner of our node is not compared with the session."""

    def handle(self, event: ev.Event, now: float) -> list[act.Action]:
        session = self.snapshot().session_id
        if isinstance(event, ev.NodeChecked) and event.stat is not None and event.stat.ephemeral_owner and session:
            event = dataclasses.replace(event, stat=ev.NodeStat(event.stat.czxid, session))
        return super().handle(event, now)


class IgnoresFreeze(Leadership):
    """(13) The takeover reads the freeze marker and leads all the same (the marker's
    data never reaches the rules: the decision is taken in the step that reads it)."""

    def handle(self, event: ev.Event, now: float) -> list[act.Action]:
        if isinstance(event, ev.NodesRead) and event.data and event.data[0] is not None:
            event = dataclasses.replace(event, data=(None, *event.data[1:]))
        return super().handle(event, now)


class IgnoresClaim(Leadership):
    """(15) The takeover leads without the leader's claim (core/claim.py): the successor
    of a leader whose node an operator deleted starts beside its job."""

    def handle(self, event: ev.Event, now: float) -> list[act.Action]:
        if self.phase is Phase.CONFIRMING:
            self.claim = Claim.HELD
        return super().handle(event, now)


@dataclasses.dataclass(frozen=True)
class BugCase:
    factory: type[Leadership] | None
    profile: str
    kinds: frozenset[str]
    budget: int = 200
    #: Deliberate bugs of the model's shells (with factory None: the production core).
    bugs: frozenset[Bug] = frozenset()


SAFETY = frozenset({"overlap", "legitimacy", "fencing"})
BUG_CASES = {
    "1-ignores-lease": BugCase(IgnoresLease, "default", SAFETY),
    "2-connection-watch-is-deletion": BugCase(
        ConnectionWatchIsDeletion, "default", frozenset({"false_loss", "liveness", "nodes", "stuck"})
    ),
    "3-deletes-before-reaped": BugCase(DeletesBeforeReaped, "default", SAFETY),
    "4-suspended-is-the-clock": BugCase(SuspendedIsTheClock, "default", SAFETY),
    # Only a repeated candidacy id puts a daemon on a node of another session.
    "5-skips-owner-check": BugCase(SkipsOwnerCheck, "collide", SAFETY),
    # The lease rule of commit e94b8c8: writes count, answered or not. Only a follower's
    # first sync after a stalled stream can count the packets stalled with it.
    "6-written-anchor": BugCase(None, "relay", SAFETY | {"lease_anchor"}, bugs=frozenset({Bug.WRITTEN_ANCHOR})),
    # The first rule: the sync's own send time, less T/6 + tickTime/2.
    "7-sync-sent-anchor": BugCase(None, "relay", SAFETY | {"lease_anchor"}, bugs=frozenset({Bug.SYNC_SENT_ANCHOR})),
    "8-early-exit-report": BugCase(
        None, "default", SAFETY | {"double_start"}, bugs=frozenset({Bug.EARLY_EXIT_REPORT})
    ),
    # A blocked loop still sends the stop signal of its step (SignalJob comes before the
    # step's logs), but never the SIGKILL that must follow: jobs that ignore SIGTERM. The
    # guardian sends that SIGKILL at the lease's kill deadline (the profile finds nothing
    # with this bug alone), so it shows only with a guardian that ignores the lease too.
    "9-blocking-logs": BugCase(
        None, "logs", SAFETY, bugs=frozenset({Bug.BLOCKING_LOGS, Bug.GUARDIAN_IGNORES_LEASE})
    ),
    "10-stopping-clock": BugCase(
        None, "default", SAFETY | {"suspend", "lease_anchor"}, bugs=frozenset({Bug.STOPPING_CLOCK})
    ),
    # Daemons that stall with no watchdog: only the guardian stops a stalled leader's job.
    "11-guardian-ignores-lease": BugCase(
        None, "stalls", SAFETY, budget=40, bugs=frozenset({Bug.GUARDIAN_IGNORES_LEASE})
    ),
    # A takeover that ignores a freeze: caught at the job's start.
    "13-ignores-freeze": BugCase(IgnoresFreeze, "control", frozenset({"frozen"}), budget=100),
    # A dead daemon's session closed before its job is reaped: caught at the close.
    "12-release-before-reap": BugCase(
        None, "crashes", SAFETY | {"close_before_reap"}, budget=40, bugs=frozenset({Bug.RELEASE_BEFORE_REAP})
    ),
    # A takeover that does not wait for the previous leader's claim: an operator's
    # delete no longer excuses the overlap (invariants.py).
    "15-ignores-claim": BugCase(IgnoresClaim, "operator", frozenset({"overlap"}), budget=40),
    # On etcd, the heartbeat anchored when the keep-alive's answer arrives: later than
    # the etcd leader's renewal by the answer's trip back.
    "14-etcd-answer-anchor": BugCase(
        None, "etcd", SAFETY | {"lease_anchor"}, budget=40, bugs=frozenset({Bug.ETCD_ANSWER_ANCHOR})
    ),
}


@pytest.mark.parametrize("name", sorted(BUG_CASES, key=lambda n: int(n.split("-")[0])))
def test_deliberate_bug_is_caught_and_the_real_core_is_not(name: str) -> None:
    case = BUG_CASES[name]
    caught = None
    for seed in range(case.budget):
        result = run_schedule(seed, case.profile, case.factory, spin_is_violation=False, bugs=case.bugs)
        if result.finding is not None and result.finding.kind in case.kinds:
            caught = result
            break
    assert caught is not None, f"{name}: no {sorted(case.kinds)} violation in {case.budget} schedules"
    print(f"\n{name}: caught after {caught.seed + 1} schedule(s)\n{caught.finding.report()}")
    # The same schedules with the production core and shells: none of these violations.
    clean = explore(range(caught.seed + 1), case.profile, spin_is_violation=False)
    assert not [f for f in clean.findings if f.kind in case.kinds], reports(clean.findings)


def test_bug_4_needs_requests_that_postpone_kazoos_detection() -> None:
    """With a small stop_timeout and T >= 2s, kazoo's own ~2/3 T detection happens to be
    fast enough; only the 'requests postpone ping detection' fault exposes bug (4)."""
    options = {"stop_fraction": (0.02, 0.3), "timeouts": (2.0, 4.0)}
    small = dataclasses.replace(PROFILES["network"].without("chatty", name="network-no-chatty"), **options)
    without = explore(range(150), small, SuspendedIsTheClock, spin_is_violation=False)
    assert not [f for f in without.findings if f.safety], reports(without.findings)
    chatty = dataclasses.replace(PROFILES["chatty"], **options)
    with_it = explore(range(50), chatty, SuspendedIsTheClock, stop_at_first=True, spin_is_violation=False)
    assert with_it.findings and with_it.findings[0].safety


# ---------------------------------------------------------------------------- hypothesis


class SimulationFailure(AssertionError):
    def __init__(self, violation: Violation, steps: list[str], timeline: str) -> None:
        self.violation = violation
        self.steps = steps
        super().__init__(
            f"{violation}\n\nrules ({len(steps)}):\n  " + "\n  ".join(steps) + f"\n\ntimeline:\n{timeline}"
        )


#: -1: the current leader (the host owning the first node), else a host by index.
HOST = st.one_of(st.just(-1), st.integers(0, 4))


class Cluster(RuleBasedStateMachine):
    """Faults as rules; a failure shrinks to the fewest rules that still break an invariant.
    Subclasses made by ``cluster()`` choose the core and the configurations drawn."""

    core_factory: type[Leadership] | None = None
    timeouts: tuple[float, ...] = (1.0, 2.0, 4.0)
    max_hosts = 4

    def __init__(self) -> None:
        super().__init__()
        self.world: World | None = None
        self.steps: list[str] = []
        self.failed = False

    @property
    def T(self) -> float:
        assert self.world is not None
        return self.world.cfg.session_timeout

    def _host(self, index: int):  # type: ignore[no-untyped-def]
        assert self.world is not None
        if index < 0:
            leader = self.world.leader_host()
            if leader is not None:
                return leader
            index = 0
        return self.world.hosts[index % len(self.world.hosts)]

    def _do(self, text: str, fn, *args) -> None:  # type: ignore[no-untyped-def]
        world = self.world
        assert world is not None
        self.steps.append(f"t={world.now:8.3f}  {text}")
        world.record(None, ">>", f"rule: {text}")
        try:
            fn(*args)
        except Violation as v:
            self.failed = True
            raise SimulationFailure(v, self.steps, world.timeline.format(last=80)) from None

    @initialize(
        seed=st.integers(0, 2**20),
        hosts=st.integers(2, 4),
        timeout_index=st.integers(0, 2),
        stop=st.floats(0.05, 1.0),
        on_exit=st.sampled_from(list(OnExit)),
        watchdog=st.booleans(),
    )
    def boot(self, seed: int, hosts: int, timeout_index: int, stop: float, on_exit: OnExit, watchdog: bool) -> None:
        hosts = min(hosts, self.max_hosts)
        timeout = self.timeouts[timeout_index % len(self.timeouts)]
        tick = timeout / 20
        wd = round(0.15 * timeout, 3) if watchdog else 0.0
        if max_stop(timeout, wd, tick) < 0.02:
            wd = 0.0
        budget = max_stop(timeout, wd, tick)
        config = WorldConfig(hosts=hosts, session_timeout=timeout, stop_timeout=max(0.01, round(stop * budget, 3)),
                             tick_time=tick, on_exit=on_exit, watchdog=wd, trace_limit=5000, spin_is_violation=False)
        self.world = World(config, seed, self.core_factory)
        self.steps.append(f"boot: {hosts} hosts, T={timeout:g}s, stop_timeout={config.stop_timeout:g}s, "
                          f"on_exit={on_exit.value}, watchdog={wd:g}s, seed={seed}")
        self.world.start()
        self._do("run one session timeout", self.world.run_for, timeout)

    @rule(fraction=st.floats(0.05, 3.0))
    def wait(self, fraction: float) -> None:
        self._do(f"wait {fraction * self.T:.3f}s", self.world.run_for, fraction * self.T)

    @rule(host=HOST, direction=st.sampled_from(["both", "c2s", "s2c"]), fraction=st.floats(0.05, 4.0))
    def partition(self, host: int, direction: str, fraction: float) -> None:
        h, d = self._host(host), fraction * self.T
        self._do(f"cut {h.name} ({direction}) for {d:.3f}s", self._partition, h, direction, d)

    def _partition(self, h, direction: str, d: float) -> None:  # type: ignore[no-untyped-def]
        w = self.world
        w.partition(h, c2s=direction != "s2c", s2c=direction != "c2s")
        w.at(w.now + d, w.heal, h)

    @rule(host=HOST, fraction=st.floats(0.3, 4.0), until_heal=st.booleans())
    def chatty_partition(self, host: int, fraction: float, until_heal: bool) -> None:
        h, d = self._host(host), fraction * self.T
        self._do(f"cut {h.name} for {d:.3f}s; requests postpone kazoo's detection "
                 f"{'until it heals' if until_heal else 'for half of it'}", self._chatty, h, d, until_heal)

    def _chatty(self, h, d: float, until_heal: bool) -> None:  # type: ignore[no-untyped-def]
        w = self.world
        w.chatty(h, w.now + (d if until_heal else d / 2))
        w.partition(h)
        w.at(w.now + d, w.heal, h)

    @rule(host=HOST)
    def heal(self, host: int) -> None:
        self._do(f"heal {self._host(host).name}", self.world.heal, self._host(host))

    @rule(fraction=st.floats(0.0, 1.5))
    def server_restart(self, fraction: float) -> None:
        if self.world.server.up:
            self._do(f"ZooKeeper restarts, down {fraction * self.T:.3f}s", self.world.server.restart, fraction * self.T)

    @rule(host=HOST, what=st.sampled_from(["create", "any"]))
    def lose_next_reply(self, host: int, what: str) -> None:
        h = self._host(host)
        self._do(f"{h.name}'s next {what} reply is lost", setattr, h, "lose_next", what)

    @rule(host=HOST, how=st.sampled_from(["process", "loop"]), fraction=st.floats(0.01, 3.0))
    def pause(self, host: int, how: str, fraction: float) -> None:
        h, d = self._host(host), fraction * self.T
        self._do(f"pause {h.name} ({how}) for {d:.3f}s", self._pause, h, how, d)

    def _pause(self, h, how: str, d: float) -> None:  # type: ignore[no-untyped-def]
        w = self.world
        if w.pause(h, how):
            w.at(w.now + d, w.resume, h)

    @rule(host=HOST)
    def kill9(self, host: int) -> None:
        self._do(f"kill -9 {self._host(host).name}", self.world.kill9, self._host(host))

    @rule(host=HOST)
    def sigterm(self, host: int) -> None:
        self._do(f"SIGTERM {self._host(host).name}", self.world.sigterm, self._host(host))

    @rule()
    def crash_leader_job(self) -> None:
        leader = self.world.leader_host()
        if leader is not None:
            self._do(f"{leader.name}'s job crashes", self.world.jobs.crash_job, leader)

    @rule(host=HOST, fraction=st.floats(0.05, 3.0))
    def suspend(self, host: int, fraction: float) -> None:
        h, d = self._host(host), fraction * self.T
        self._do(f"suspend {h.name} for {d:.3f}s", self._suspend, h, d)

    def _suspend(self, h, d: float) -> None:  # type: ignore[no-untyped-def]
        w = self.world
        if w.suspend(h):
            w.at(w.now + d, w.wake, h)

    @rule(host=HOST, fraction=st.floats(0.05, 3.0))
    def lose_next_relay(self, host: int, fraction: float) -> None:
        h = self._host(host)
        self._do(f"{h.name}'s server loses the ZooKeeper leader after its next sync ({h.name} cut off "
                 f"{fraction * self.T:.3f}s)", setattr, h, "lose_relay_next", fraction * self.T)

    @rule(orphans=st.booleans())
    def guardian_dies(self, orphans: bool) -> None:
        leader = self.world.leader_host()
        if leader is not None:
            self._do(f"{leader.name}'s guardian dies" + (" (workers live on)" if orphans else ""),
                     self.world.jobs.guardian_dies, leader, orphans)

    @rule(host=HOST, fraction=st.floats(0.05, 3.0))
    def stall_logs(self, host: int, fraction: float) -> None:
        h, d = self._host(host), fraction * self.T
        self._do(f"{h.name}'s log stream stalls for {d:.3f}s", self.world.stall_logs, h, self.world.now + d)

    @rule()
    def operator_deletes_leader_node(self) -> None:
        low = self.world.server.lowest()
        if low is not None:
            self._do(f"operator deletes {low.rsplit('/', 1)[-1][:12]}..", self.world.operator_delete, low)

    def teardown(self) -> None:
        if self.world is not None and not self.failed:
            self._do("faults stop: heal everything, check liveness", settle, self.world)


def cluster(core_factory: type[Leadership] | None = None, **options: object) -> type[Cluster]:
    name = f"Cluster_{core_factory.__name__}" if core_factory else "Cluster"
    return type(name, (Cluster,), {"core_factory": core_factory, **options})


STATEFUL = settings(
    max_examples=40,
    stateful_step_count=20,
    deadline=None,
    derandomize=True,
    database=None,
    suppress_health_check=list(HealthCheck),
)


def test_stateful_exploration_of_the_real_core() -> None:
    try:
        run_state_machine_as_test(cluster(), settings=STATEFUL)
    except SimulationFailure as failure:
        finding = Finding(failure.violation.kind, failure.violation.message, 0.0, -1, "", "", failure.violation.safety)
        if unexplained([finding]):
            raise


def test_stateful_shrinks_a_deliberate_bug_to_a_short_trace() -> None:
    buggy = cluster(IgnoresLease, timeouts=(1.0,), max_hosts=2)
    with pytest.raises(SimulationFailure) as info, redirect_stdout(io.StringIO()):
        run_state_machine_as_test(buggy, settings=settings(STATEFUL, max_examples=400))
    failure = info.value
    print(f"\nshrunk to {len(failure.steps)} rules:\n  " + "\n  ".join(failure.steps))
    # A job kept past its lease: as an overlap after a cut, or as a job that outlives its
    # host's wake-up when the session expired in its sleep (which example hypothesis
    # meets first depends on the schedule; both are this bug).
    assert failure.violation.kind in SAFETY | {"suspend"}
    # boot, run, a cut or a suspend of the leader, a wait, ... Hypothesis's shrinker is
    # not the same in every process (its passes depend on PYTHONHASHSEED): with some
    # seeds it keeps a run of one repeated rule it could not drop one at a time (eleven
    # "h1's job crashes" at the same instant, seen with PYTHONHASHSEED=0 before and
    # after), so a repeated rule counts once.
    distinct = [step for i, step in enumerate(failure.steps) if i == 0 or step != failure.steps[i - 1]]
    assert len(distinct) <= 6, distinct


# ---------------------------------------------------------------------------- bugs found in the core


def leader_and_followers(world: World):  # type: ignore[no-untyped-def]
    order = sorted(world.server.election_children(), key=lambda n: n.czxid)
    return [world.server.sessions[n.owner].host for n in order]


def test_sequence_wrap_keeps_the_queue_order() -> None:
    """Found by the simulator: the signed 32-bit sequence wrapped to a negative number that sorted first."""
    config = WorldConfig(hosts=2, session_timeout=2.0, stop_timeout=0.3, sequence_start=2**31 - 1, trace_limit=None)
    world = World(config, 1)
    world.start_daemon(world.hosts[0])  # h1 leads from zkl-...-2147483647 and starts its job
    world.run_until(1.0)
    world.start_daemon(world.hosts[1])  # h2's node is zkl-...--2147483648: "lowest", so it leads too
    try:
        world.run_until(2.0)
    except Violation as v:
        assert v.kind == "overlap", v
        raise
    settle(world)


def test_a_create_that_lands_in_the_new_session_is_not_left_as_a_ghost() -> None:
    """Found by the simulator: a create issued for the old session ran in the new one and its node headed the queue forever."""
    world = boot(hosts=2)
    leader = world.leader_host()
    T = world.cfg.session_timeout
    world.pause(leader, "loop")  # the loop lags behind kazoo (a stall, a GC, a slow handler)
    world.chatty(leader, INF)  # other requests keep kazoo from noticing the cut
    world.partition(leader, c2s=True, s2c=False)  # the server stops hearing the leader
    world.run_for(2 * T)  # expiry: kazoo gets DELETED for its own node, then the reset
    world.heal(leader)
    world.run_for(1.0)  # kazoo: reconnect, session expired (LOST), new session
    world.resume(leader)  # the loop handles DELETED first: _rejoin -> CreateNode ...
    settle(world)


def test_no_busy_loop_on_a_restart_deadline_without_lease() -> None:
    """Found by the simulator: a restart deadline in the past, with no lease to start on, spun the loop."""
    world = boot(hosts=2, session_timeout=1.0, stop_timeout=0.1, restart_delay=1.0, spin_is_violation=True)
    leader = world.leader_host()
    world.jobs.crash_job(leader)
    world.partition(leader)
    world.run_for(3.0)


def test_a_follower_whose_node_is_deleted_rejoins() -> None:
    """Found by the simulator: a follower did not watch its own node, and kept 'following'
    without a node until its predecessor changed. It watches its own node now."""
    world = boot(hosts=2)
    follower = leader_and_followers(world)[1]
    world.operator_delete(f"{ELECTION}/{follower.daemon.core.snapshot().node}")
    world.run_for(1.0)
    settle(world)


def test_a_repeated_candidacy_id_keeps_its_own_new_node() -> None:
    """Found by the simulator (only with colliding candidacy ids): _on_list_reply kept the
    first node with its id and deleted the rest, including the node it had just created.
    It keeps the node it stands on now."""
    world = boot(hosts=3, reuse_ids=True, restart_sec=0.2)
    first_follower = leader_and_followers(world)[1]
    world.kill9(first_follower)
    world.run_for(3.0)
    settle(world)


# ---------------------------------------------------------------------------- CLI


def test_cli_prints_the_figures() -> None:
    out = io.StringIO()
    with redirect_stdout(out):
        code = cli_main(["--seeds", "30", "--seed", "7", "--workers", "1", "--lenient-spin"])
    text = out.getvalue()
    assert code == 0, text
    for label in ("schedules explored   30", "simulated time", "faults injected", "violations found     0",
                  "leader changes", "wall time"):
        assert label in text
    assert re.search(r"\d+ schedules/s", text)


def test_cli_switches_a_deliberate_bug_on() -> None:
    out = io.StringIO()
    with redirect_stdout(out):
        code = cli_main(["--seeds", "20", "--workers", "1", "--lenient-spin", "--stop", "--profile", "stalls",
                         "--bug", "guardian-ignores-lease"])
    assert code == 1, out.getvalue()
    assert "VIOLATION" in out.getvalue()
