"""Random schedules: a world configuration and a fault plan drawn from one seed.

A schedule has a faulty phase (faults arrive as a Poisson process, ``rate`` per
session timeout) followed by a quiet phase: everything heals, every daemon runs, and
the liveness invariants must come true within ``World.quiet_bound()``.

Fault kinds (what they model):

=============== ===================================================================
partition       a host's link is cut both ways for short / ~T / several T
asym            only one direction is cut (the server hears us but we do not hear
                it, or the reverse)
flap            several short cuts in a row
chatty          a cut during which other requests keep postponing kazoo's ping
                detection, possibly until after the server expired the session
server_restart  the server restarts: every connection resets, sessions survive
lost_reply      a request (usually a create) is applied, then the connection dies
                before the reply leaves
slow            latency grows to a good fraction of T for a while
pause           the daemon stops (SIGSTOP: kazoo too; or only its loop blocks); its
                guardian runs on and stops the job when the lease runs out
kill9           the daemon is killed on a healthy host (its socket closes, no
                closeSession); its guardian kills and reaps the job, then releases
                the session; systemd restarts the daemon
sigterm         the daemon is asked to shut down; systemd restarts it
resign          an operator asks the leader to step down (SIGUSR1)
job_crash       the leader's job exits on its own (on_exit: restart, resign, exit)
start_failure   the leader's next job start fails (exec error)
operator_delete an operator deletes the leader's znode
operator_delete_any  ... or any candidate's znode (profile "operator" only)
lost_relay      the server a host talks to loses the ZooKeeper leader right after
                forwarding (and answering) the host's next sync, so the touches it
                heard since its last relay are lost, and the host is cut off with it
guardian_death  the leader job's guardian is killed, usually while workers the job
                forked live on
log_stall       the daemon's log stream stalls (production only queues log lines)
drain           an operator drains a host (`zkleader drain`: its marker node appears)
                and undrains it later (profile "drain" only)
suspend         the whole host sleeps (daemon, kazoo, guardian and job frozen) while
                ZooKeeper's clock runs on; briefly, or long enough to expire the session
freeze          an operator freezes the election (`zkleader freeze`) and thaws it
                later (profile "control" only)
handover        an operator asks the leader to hand over to a named host's candidate
                (`zkleader resign --to`; profile "control" only)
=============== ===================================================================
"""

from __future__ import annotations

import random
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from typing import Any

from ..core import events as ev
from ..core import timing
from ..core.settings import OnExit
from .config import ELECTION, INF, WorldConfig
from .world import Host, World


def max_stop(T: float, watchdog: float = 0.0, tick: float = 0.2) -> float:
    return timing.max_stop_timeout(T, watchdog, tick)


def min_timeout(stop: float, watchdog: float = 0.0, tick: float = 0.2) -> float:
    return timing.min_session_timeout(stop, watchdog, tick)


KINDS = (
    "partition",
    "asym",
    "flap",
    "chatty",
    "server_restart",
    "lost_reply",
    "slow",
    "pause",
    "kill9",
    "sigterm",
    "resign",
    "job_crash",
    "start_failure",
    "operator_delete",
    "operator_delete_any",
    "lost_relay",
    "guardian_death",
    "log_stall",
    "suspend",
    "drain",
    "freeze",
    "handover",
)

#: Faults that end a job on their own: at most Profile.max_crashes per schedule, as the
#: restart backoff they cause stretches the quiet phase.
CRASHES = ("job_crash", "start_failure", "guardian_death")

_DEFAULT_WEIGHTS = {
    "partition": 3.0,
    "asym": 1.0,
    "flap": 2.0,
    "chatty": 1.5,
    "server_restart": 1.5,
    "lost_reply": 2.0,
    "slow": 1.0,
    "pause": 1.0,
    "kill9": 1.5,
    "sigterm": 1.5,
    "resign": 0.7,
    "job_crash": 1.5,
    "start_failure": 0.3,
    "operator_delete": 0.7,
    "lost_relay": 1.0,
    "guardian_death": 0.7,
    "log_stall": 0.7,
    "suspend": 0.7,
}


@dataclass(frozen=True)
class Profile:
    name: str
    weights: Mapping[str, float] = field(default_factory=lambda: dict(_DEFAULT_WEIGHTS))
    #: Faults per session timeout during the faulty phase.
    rate: float = 0.7
    #: Length of the faulty phase, in session timeouts.
    duration: tuple[float, float] = (3.0, 10.0)
    hosts: tuple[int, ...] = (2, 3, 3, 3, 4, 5)
    timeouts: tuple[float, ...] = (1.0, 2.0, 4.0)
    #: Probability that a schedule's restarted daemons repeat candidacy ids.
    reuse_ids: float = 0.0
    #: Probability that the election parent's sequence counter starts near 2**31.
    wrap: float = 0.0
    #: Probability that the server grants a shorter session timeout than configured.
    reduced_timeout: float = 0.1
    #: Probability that systemd's watchdog is on (WatchdogSec between 5% and 25% of T).
    watchdog: float = 0.5
    drift: float = 0.005
    #: stop_timeout as a fraction of the largest the budget allows.
    stop_fraction: tuple[float, float] = (0.02, 1.0)
    on_exit: tuple[OnExit, ...] = (OnExit.RESTART, OnExit.RESTART, OnExit.RESIGN, OnExit.EXIT)
    #: At most this many job crashes / start failures per schedule (restart backoff).
    max_crashes: int = 3
    #: The share of jobs that ignore the stop signal.
    ignore_stop: float = 0.03
    #: Each host's election.priority is drawn from these (empty: all 0).
    priorities: tuple[int, ...] = ()
    #: Probability that election.preempt_after is set (to 0.2..2 session timeouts).
    preempt: float = 0.0
    #: The coordination service modelled (WorldConfig.backend).
    backend: str = "zookeeper"

    def without(self, *kinds: str, name: str | None = None) -> Profile:
        weights = {k: (0.0 if k in kinds else w) for k, w in self.weights.items()}
        return Profile(**{**self.__dict__, "weights": weights, "name": name or f"{self.name}-{'-'.join(kinds)}"})

    def only(self, name: str, **weights: float) -> Profile:
        return Profile(**{**self.__dict__, "weights": {k: weights.get(k, 0.0) for k in KINDS}, "name": name})


DEFAULT = Profile("default")
PROFILES: dict[str, Profile] = {
    "default": DEFAULT,
    #: The CI budget: the default faults in short schedules (2..6 session timeouts).
    "ci": Profile("ci", duration=(2.0, 6.0)),
    #: No pauses, suspends or operator deletions: no job is ever excused.
    "strict": DEFAULT.without("pause", "suspend", "operator_delete", name="strict"),
    "network": DEFAULT.only(
        "network", partition=3, asym=1, flap=2, chatty=1.5, server_restart=1.5, lost_reply=2, slow=1
    ),
    "chatty": DEFAULT.only("chatty", chatty=3, partition=1, server_restart=0.5, lost_reply=0.5),
    "crashes": DEFAULT.only(
        "crashes", kill9=2, sigterm=2, job_crash=2, start_failure=0.5, lost_reply=2, partition=1, flap=1
    ),
    #: Restarted daemons repeat their predecessor's candidacy ids (a cloned host, a
    #: broken RNG): only the ephemeralOwner check keeps a daemon off a dead one's node.
    "collide": Profile(
        "collide",
        weights={**{k: 0.0 for k in _DEFAULT_WEIGHTS}, "kill9": 3.0, "lost_reply": 3.0, "partition": 1.0, "flap": 1.0},
        reuse_ids=1.0,
        rate=1.2,
    ),
    #: Operators also delete followers' znodes.
    "operator": DEFAULT.only("operator", operator_delete_any=2, operator_delete=1, partition=1, kill9=1),
    #: Drains and undrains (core/drain.py) among the faults a drained leader's handover meets.
    "drain": DEFAULT.only("drain", drain=3, resign=1, kill9=1, sigterm=1, partition=1, lost_reply=1, operator_delete=1),
    #: The election parent's cversion starts just below 2**31: sequence numbers wrap.
    "wrap": Profile("wrap", wrap=1.0),
    #: What the lease anchor rests on: relays lost with a sync, and takeovers by a
    #: follower whose stalled stream delivers its buffered packets together with its first
    #: sync (small groups: a follower is often next in line).
    "relay": replace(DEFAULT.only("relay", lost_relay=3, chatty=3, operator_delete=2, kill9=1), rate=1.5, hosts=(2, 3)),
    #: Stalled log streams while the leader must stop a job that only SIGKILL ends, without
    #: a watchdog (which would kill a stuck loop, job included).
    "logs": replace(DEFAULT.only("logs", log_stall=2, partition=2, chatty=1), watchdog=0.0, ignore_stop=0.5),
    #: Daemons that stall (SIGSTOP, a stuck loop) with no watchdog, often as leaders, and
    #: die (kill -9): only the guardian stops a stalled leader's job in time, and only its
    #: release frees a dead one's node before the session expires.
    "stalls": replace(DEFAULT.only("stalls", pause=3, partition=1, chatty=1, kill9=1), watchdog=0.0),
    #: Who leads (core/preference.py): hosts of several priorities, often preempting,
    #: freezes and handovers to a named host among the faults a takeover meets.
    "control": replace(
        DEFAULT.only("control", freeze=2, handover=2, kill9=1, sigterm=1, resign=1, partition=1, lost_reply=1,
                     drain=0.5, operator_delete=0.5),
        priorities=(0, 0, 1, 2), preempt=0.6, hosts=(2, 3, 4, 5)),
    #: The CI batch against the etcd model: leases renewed by keep-alives alone, at once,
    #: expiring exactly TTL after the last one; the core on tick_time 0.
    "etcd": Profile("etcd", duration=(2.0, 6.0), backend="etcd"),
}


@dataclass(frozen=True)
class ScheduleSpec:
    seed: int
    profile: str
    config: WorldConfig
    #: Length of the faulty phase in virtual seconds.
    duration: float
    #: (virtual time, kind, parameters)
    plan: tuple[tuple[float, str, dict[str, Any]], ...]

    def describe(self) -> str:
        c = self.config
        kinds: dict[str, int] = {}
        for _, kind, _ in self.plan:
            kinds[kind] = kinds.get(kind, 0) + 1
        return (
            f"seed {self.seed} profile {self.profile}: {c.hosts} hosts on {c.backend}, T={c.session_timeout:g}s "
            f"(tick {c.tick_time:g}s, max {c.max_session_timeout}), stop_timeout={c.stop_timeout:.3f}s, "
            f"on_exit={c.on_exit.value}, restart_delay={c.restart_delay:g}s, reuse_ids={c.reuse_ids}, "
            f"sequence_start={c.sequence_start}, watchdog={c.watchdog:g}s"
            + (f", priorities={c.priorities}, preempt_after={c.preempt_after}" if c.priorities else "")
            + f"; faults for {self.duration:.2f}s: "
            + ", ".join(f"{k}x{n}" for k, n in sorted(kinds.items()))
        )


def random_spec(seed: int, profile: Profile | str = DEFAULT) -> ScheduleSpec:
    if isinstance(profile, str):
        profile = PROFILES[profile]
    rng = random.Random(f"zkleader-sim-spec-{seed}")
    T = rng.choice(profile.timeouts)
    watchdog = round(rng.uniform(0.05, 0.25) * T, 3) if rng.random() < profile.watchdog else 0.0
    tick = T / rng.choice((2, 4, 5, 10, 20))
    # tickTime within [T/20, T/2] (ZooKeeper's bounds), coarse enough to matter but such
    # that the core's budget leaves some room to stop a job.
    while max_stop(T, watchdog, tick) < 0.02 and tick > T / 20:
        tick = max(T / 20, tick / 2)
    if max_stop(T, watchdog, tick) < 0.02:
        watchdog = 0.0
    lo, hi = profile.stop_fraction
    stop = max(0.01, max_stop(T, watchdog, tick) * rng.uniform(lo, hi))
    max_timeout = None
    if rng.random() < profile.reduced_timeout:
        floor = max(min_timeout(stop, watchdog, tick), 2 * tick)
        if floor < T:
            max_timeout = round(rng.uniform(floor, T), 3)
    sequence_start = 0
    if rng.random() < profile.wrap:
        sequence_start = 2**31 - rng.randint(1, 12)
    elif rng.random() < 0.3:
        sequence_start = rng.randint(1, 10**9)
    config = WorldConfig(
        hosts=rng.choice(profile.hosts),
        session_timeout=T,
        stop_timeout=round(stop, 4),
        on_exit=rng.choice(profile.on_exit),
        restart_delay=rng.choice((0.05, 0.1, 0.3)),
        tick_time=tick,
        max_session_timeout=max_timeout,
        clock_drift=profile.drift,
        restart_sec=rng.choice((0.2, 0.5, 1.0)),
        reuse_ids=rng.random() < profile.reuse_ids,
        sequence_start=sequence_start,
        watchdog=watchdog,
        ignore_stop=profile.ignore_stop,
    )
    duration = rng.uniform(*profile.duration) * T
    kinds = [k for k in KINDS if profile.weights.get(k, 0.0) > 0]
    weights = [profile.weights[k] for k in kinds]
    plan = []
    crashes = 0
    t = rng.uniform(0.3, 1.5) * T  # let a first leader settle (or not)
    while kinds:
        kind = rng.choices(kinds, weights)[0]
        if kind in CRASHES:
            crashes += 1
            if crashes > profile.max_crashes:
                kind = "partition"
        plan.append((round(t, 6), kind, _params(rng, kind, T, config.hosts)))
        t += rng.expovariate(profile.rate / T)
        if t >= duration:
            break
    if profile.backend != "zookeeper":
        config = replace(config, backend=profile.backend)
    if profile.priorities:  # drawn last: the other profiles' schedules stay as they were
        config = replace(config, priorities=tuple(rng.choice(profile.priorities) for _ in range(config.hosts)),
                         preempt_after=round(rng.uniform(0.2, 2.0) * T, 3) if rng.random() < profile.preempt else None)
    return ScheduleSpec(seed, profile.name, config, duration, tuple(plan))


def _target(rng: random.Random, hosts: int, leader_bias: float) -> int | str:
    return "leader" if rng.random() < leader_bias else rng.randrange(hosts)


def _span(rng: random.Random, T: float) -> float:
    r = rng.random()
    if r < 0.35:
        return rng.uniform(0.05, 0.5) * T
    if r < 0.7:
        return rng.uniform(0.5, 1.5) * T
    return rng.uniform(1.5, 4.0) * T


def _params(rng: random.Random, kind: str, T: float, hosts: int) -> dict[str, Any]:
    match kind:
        case "partition":
            return {"target": _target(rng, hosts, 0.6), "duration": _span(rng, T)}
        case "asym":
            return {"target": _target(rng, hosts, 0.6), "duration": _span(rng, T),
                    "direction": rng.choice(("c2s", "s2c"))}
        case "flap":
            cycles = [(rng.uniform(0.02, 0.5) * T, rng.uniform(0.02, 0.5) * T) for _ in range(rng.randint(2, 6))]
            return {"target": _target(rng, hosts, 0.5), "cycles": cycles}
        case "chatty":
            duration = rng.uniform(0.5, 4.0) * T
            postpone = INF if rng.random() < 0.5 else rng.uniform(0.3, 3.0) * T
            return {"target": _target(rng, hosts, 0.7), "duration": duration, "postpone": postpone,
                    "direction": "both" if rng.random() < 0.8 else "c2s"}
        case "server_restart":
            down = rng.uniform(0.005, 0.3) * T if rng.random() < 0.75 else rng.uniform(0.3, 1.5) * T
            return {"downtime": down}
        case "lost_reply":
            return {"target": _target(rng, hosts, 0.3), "what": "create" if rng.random() < 0.6 else "any"}
        case "slow":
            return {"target": _target(rng, hosts, 0.5), "extra": rng.uniform(0.05, 0.8) * T,
                    "duration": rng.uniform(0.3, 3.0) * T}
        case "pause":
            duration = rng.uniform(0.01, 0.4) * T if rng.random() < 0.5 else rng.uniform(0.5, 3.0) * T
            return {"target": _target(rng, hosts, 0.6), "duration": duration,
                    "how": "process" if rng.random() < 0.6 else "loop"}
        case "resign" | "job_crash" | "start_failure":
            return {"target": "leader"}
        case "guardian_death":
            # Usually the job forked workers (a shell script, a server with workers).
            return {"target": "leader", "orphans": rng.random() < 0.7}
        case "kill9" | "sigterm":
            return {"target": _target(rng, hosts, 0.6)}
        case "drain":
            return {"target": _target(rng, hosts, 0.6), "duration": rng.uniform(0.1, 3.0) * T}
        case "freeze":
            return {"duration": rng.uniform(0.2, 3.0) * T}
        case "handover":
            return {"target": rng.randrange(hosts)}
        case "operator_delete":
            return {"which": "leader"}
        case "operator_delete_any":
            return {"which": "random"}
        case "lost_relay":
            return {"target": _target(rng, hosts, 0.5), "duration": _span(rng, T)}
        case "log_stall":
            return {"target": _target(rng, hosts, 0.7), "duration": rng.uniform(0.3, 3.0) * T}
        case "suspend":
            duration = rng.uniform(0.05, 0.5) * T if rng.random() < 0.4 else rng.uniform(1.0, 3.0) * T
            return {"target": _target(rng, hosts, 0.6), "duration": duration}
    raise ValueError(kind)


# ------------------------------------------------------------------------- applying


def pick(world: World, target: int | str) -> Host:
    if target == "leader":
        host = world.leader_host()
        if host is not None:
            return host
        return world.rng.choice(world.hosts)
    return world.hosts[int(target) % len(world.hosts)]


def inject(world: World, kind: str, params: dict[str, Any]) -> None:
    """Applies one planned fault now (targets are chosen from the current state)."""
    if world.quiet:
        return
    now = world.now
    match kind:
        case "server_restart":
            if world.server.up:
                world.fault(kind, None, f"ZooKeeper server restarts (down {params['downtime']:.3f}s)")
                world.server.restart(params["downtime"])
            return
        case "operator_delete" | "operator_delete_any":
            children = world.server.election_children()
            if not children:
                return
            path = world.server.lowest() if params["which"] == "leader" else world.rng.choice(children).path
            assert path is not None
            world.fault(kind, None, f"operator deletes {path.rsplit('/', 1)[-1]}")
            world.operator_delete(path)
            return
        case "freeze":
            world.fault(kind, None, f"operator freezes the election for {params['duration']:.3f}s")
            world.freeze()
            world.at(now + params["duration"], world.thaw)
            return
    host = pick(world, params["target"])
    match kind:
        case "partition":
            world.fault(kind, host, f"partition {host.name} for {params['duration']:.3f}s")
            world.partition(host)
            world.at(now + params["duration"], world.heal, host)
        case "asym":
            direction = params["direction"]
            world.fault(kind, host, f"cut {host.name}'s {direction} direction for {params['duration']:.3f}s")
            world.partition(host, c2s=direction == "c2s", s2c=direction == "s2c")
            world.at(now + params["duration"], world.heal, host)
        case "flap":
            world.fault(kind, host, f"{host.name}'s link flaps {len(params['cycles'])} times")
            t = now
            for down, up in params["cycles"]:
                world.at(t, world.partition, host)
                world.at(t + down, world.heal, host)
                t += down + up
        case "chatty":
            postpone = params["postpone"]
            world.fault(
                kind, host,
                f"partition {host.name} for {params['duration']:.3f}s while requests postpone kazoo's ping "
                f"detection {'until the link heals' if postpone == INF else f'for {postpone:.3f}s'}",
            )
            world.partition(host, c2s=True, s2c=params["direction"] == "both")
            world.chatty(host, now + postpone)
            world.at(now + params["duration"], world.heal, host)
            world.at(now + params["duration"], _stop_chatty, world, host, now + postpone)
        case "lost_reply":
            world.fault(kind, host, f"{host.name}'s next {params['what']} reply will be lost")
            host.lose_next = params["what"]
        case "slow":
            world.fault(kind, host, f"{host.name}'s network slows by up to {params['extra']:.3f}s "
                                    f"for {params['duration']:.3f}s")
            world.slow(host, params["extra"], now + params["duration"])
        case "pause":
            if world.pause(host, params["how"]):
                world.fault(kind, host, f"pause {host.name} ({params['how']}) for {params['duration']:.3f}s")
                world.at(now + params["duration"], world.resume, host)
        case "kill9":
            if world.kill9(host):
                world.faults[kind] = world.faults.get(kind, 0) + 1
        case "drain":
            world.fault(kind, host, f"operator drains {host.name} for {params['duration']:.3f}s")
            world.drain(host)
            world.at(now + params["duration"], world.undrain, host)
        case "handover":
            if world.hand_over(host):
                world.fault(kind, host, f"operator asks the leader to hand over to {host.name}")
        case "sigterm":
            if world.sigterm(host):
                world.fault(kind, host, f"SIGTERM to {host.name}'s daemon")
        case "resign":
            daemon = host.live_daemon
            if daemon is not None:
                world.fault(kind, host, f"operator asks {daemon.label} to resign")
                daemon.post("signal", ev.ResignRequested())
        case "job_crash":
            if world.jobs.crash_job(host):
                world.faults[kind] = world.faults.get(kind, 0) + 1
        case "start_failure":
            world.fault(kind, host, f"{host.name}'s next job start will fail")
            host.fail_next_start = True
            world.jobs_crashed += 1
        case "lost_relay":
            world.fault(kind, host, f"the server {host.name} talks to will lose the ZooKeeper leader right after "
                                    f"forwarding {host.name}'s next sync ({host.name} cut off "
                                    f"{params['duration']:.3f}s with it)")
            host.lose_relay_next = params["duration"]
        case "guardian_death":
            if world.jobs.guardian_dies(host, params["orphans"]):
                world.faults[kind] = world.faults.get(kind, 0) + 1
                world.jobs_crashed += 1
        case "log_stall":
            world.fault(kind, host, f"{host.name}'s log stream stalls for {params['duration']:.3f}s")
            world.stall_logs(host, now + params["duration"])
        case "suspend":
            if world.suspend(host):
                world.fault(kind, host, f"{host.name} suspends for {params['duration']:.3f}s")
                world.at(now + params["duration"], world.wake, host)
        case _:
            raise ValueError(kind)


def _stop_chatty(world: World, host: Host, until: float) -> None:
    daemon = host.live_daemon
    if daemon is not None and until == INF:
        # The link healed: whatever kept the client busy no longer postpones anything.
        daemon.client.chatty_until = 0.0


def schedule(world: World, spec: ScheduleSpec) -> None:
    for t, kind, params in spec.plan:
        world.at(t, inject, world, kind, params)


__all__ = ["DEFAULT", "ELECTION", "KINDS", "PROFILES", "Profile", "ScheduleSpec", "inject", "random_spec", "schedule"]
