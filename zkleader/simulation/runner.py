"""Running schedules: one (``run_schedule``) or many, possibly in parallel (``explore``)."""

from __future__ import annotations

import itertools
import multiprocessing
import multiprocessing.pool
import time
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field, replace

from .config import Bug, CoreFactory
from .faults import DEFAULT, Profile, ScheduleSpec, random_spec, schedule
from .invariants import Violation
from .world import World


@dataclass
class Finding:
    """A violation, in a form that survives pickling between processes."""

    kind: str
    message: str
    time: float
    seed: int
    spec: str
    timeline: str
    safety: bool

    def report(self) -> str:
        return (
            f"VIOLATION [{self.kind}] at t={self.time:.4f} (seed {self.seed})\n  {self.message}\n"
            f"  schedule: {self.spec}\n\ntimeline (virtual seconds, host, what):\n{self.timeline}"
        )


@dataclass
class Result:
    seed: int
    profile: str
    finding: Finding | None
    sim_time: float
    steps: int
    faults: dict[str, int]
    leaderships: int
    spins: int
    wall: float
    #: World.stats: sessions expired, closed and released, the guardian's own stops...
    stats: dict[str, int] = field(default_factory=dict)


def settle(world: World) -> None:
    """Stops the faults and checks liveness: within ``quiet_bound()`` exactly one job,
    every daemon with exactly one node, nobody waiting on a gone node; and it stays so
    for one more session timeout. The run ends as soon as that is shown."""
    world.heal_all()
    healed = world.now
    bound = world.quiet_bound()
    T = world.cfg.session_timeout
    step = T / 4
    # Packets sent into a slow network before the heal still arrive late: start after them.
    t = max(healed, world.in_flight_until())
    while t < healed + bound:
        t = min(t + step, healed + bound)
        world.run_until(t)
        if world.checker.settled():
            break
    world.checker.quiesced(bound)
    world.run_until(world.now + T)
    world.checker.final()


def run_schedule(
    seed: int,
    profile: Profile | str = DEFAULT,
    core_factory: CoreFactory | None = None,
    spec: ScheduleSpec | None = None,
    trace_limit: int | None = 3000,
    timeline_lines: int | None = 250,
    spin_is_violation: bool = True,
    bugs: frozenset[Bug] = frozenset(),
) -> Result:
    """Runs one schedule: faults, then heal everything and check liveness. ``bugs``
    switches deliberate bugs on in the model's shells."""
    spec = spec or random_spec(seed, profile)
    config = replace(spec.config, trace_limit=trace_limit, spin_is_violation=spin_is_violation, bugs=bugs)
    world = World(config, seed, core_factory)
    started = time.perf_counter()
    finding = None
    try:
        world.start()
        schedule(world, spec)
        world.run_until(spec.duration)
        settle(world)
    except Violation as v:
        finding = Finding(
            v.kind, v.message, v.time, seed, spec.describe(), world.timeline.format(last=timeline_lines), v.safety
        )
    return Result(
        seed=seed,
        profile=spec.profile,
        finding=finding,
        sim_time=world.now,
        steps=world.steps,
        faults=dict(world.faults),
        leaderships=world.checker.leaderships,
        spins=len(world.checker.spins),
        wall=time.perf_counter() - started,
        stats=dict(world.stats),
    )


@dataclass
class Summary:
    schedules: int = 0
    sim_seconds: float = 0.0
    steps: int = 0
    faults: dict[str, int] = field(default_factory=dict)
    findings: list[Finding] = field(default_factory=list)
    leader_changes: int = 0
    spins: int = 0
    wall: float = 0.0
    first_finding_after: int | None = None
    stats: dict[str, int] = field(default_factory=dict)

    def add(self, r: Result) -> None:
        self.schedules += 1
        self.sim_seconds += r.sim_time
        self.steps += r.steps
        for k, n in r.faults.items():
            self.faults[k] = self.faults.get(k, 0) + n
        for k, n in r.stats.items():
            self.stats[k] = self.stats.get(k, 0) + n
        self.leader_changes += max(0, r.leaderships - 1)
        self.spins += 1 if r.spins else 0
        if r.finding is not None:
            self.findings.append(r.finding)
            if self.first_finding_after is None:
                self.first_finding_after = self.schedules

    def stat(self, key: str) -> int:
        return self.stats.get(key, 0)

    def text(self) -> str:
        rate = self.schedules / self.wall if self.wall else 0.0
        faults = ", ".join(f"{k} {n}" for k, n in sorted(self.faults.items(), key=lambda kv: -kv[1]))
        kinds: dict[str, int] = {}
        for f in self.findings:
            kinds[f.kind] = kinds.get(f.kind, 0) + 1
        lines = [
            f"schedules explored   {self.schedules}",
            f"simulated time       {self.sim_seconds / 3600:.2f} h ({self.sim_seconds:.0f} s)",
            f"steps (events)       {self.steps}",
            f"faults injected      {sum(self.faults.values())}: {faults}",
            f"violations found     {len(self.findings)}"
            + (f" ({', '.join(f'{k} {n}' for k, n in kinds.items())})" if kinds else ""),
            f"leader changes       {self.leader_changes}",
            (f"guardian             {self.stat('guardian_stops')} stops on its own lease "
             f"({self.stat('guardian_stops_stalled')} with its daemon paused), "
             f"{self.stat('guardian_kills')} SIGKILLs on its own"),
            (f"sessions             {self.stat('sessions_expired')} expired, "
             f"{self.stat('sessions_closed')} closed by their daemon, "
             f"{self.stat('sessions_released')} released by a dead daemon's guardian "
             f"(releases too late {self.stat('release_too_late')}, given up {self.stat('release_gave_up')})"),
            f"wall time            {self.wall:.2f} s ({rate:.0f} schedules/s, "
            f"{self.sim_seconds / max(self.wall, 1e-9):.0f}x real time)",
        ]
        return "\n".join(lines)


def _run_many(args: tuple[list[int], Profile | str, CoreFactory | None, bool, frozenset[Bug]]) -> list[Result]:
    seeds, profile, factory, spin, bugs = args
    return [run_schedule(seed, profile, factory, spin_is_violation=spin, bugs=bugs) for seed in seeds]


def explore(
    seeds: Iterable[int],
    profile: Profile | str = DEFAULT,
    core_factory: CoreFactory | None = None,
    workers: int = 1,
    stop_at_first: bool = False,
    wall_limit: float | None = None,
    sim_hours: float | None = None,
    chunk: int = 50,
    spin_is_violation: bool = True,
    bugs: frozenset[Bug] = frozenset(),
) -> Summary:
    """Runs schedules for the given seeds (an endless iterator is fine with a limit)."""
    summary = Summary()
    started = time.perf_counter()

    def done() -> bool:
        if stop_at_first and summary.findings:
            return True
        if wall_limit is not None and time.perf_counter() - started >= wall_limit:
            return True
        return sim_hours is not None and summary.sim_seconds >= sim_hours * 3600

    chunks = _chunks(iter(seeds), chunk)
    if workers <= 1:
        for seeds_chunk in chunks:
            for seed in seeds_chunk:
                summary.add(run_schedule(seed, profile, core_factory, spin_is_violation=spin_is_violation, bugs=bugs))
                if done():
                    break
            if done():
                break
    else:
        ctx = multiprocessing.get_context("fork")
        with ctx.Pool(workers) as pool:
            pending: list[multiprocessing.pool.AsyncResult[list[Result]]] = []
            exhausted = False
            while True:
                while not exhausted and len(pending) < 2 * workers and not done():
                    try:
                        batch = next(chunks)
                    except StopIteration:
                        exhausted = True
                        break
                    args = (batch, profile, core_factory, spin_is_violation, bugs)
                    pending.append(pool.apply_async(_run_many, (args,)))
                if not pending:
                    break
                for r in pending.pop(0).get():
                    summary.add(r)
                if done():
                    break
            pool.terminate()
    summary.wall = time.perf_counter() - started
    return summary


def _chunks(seeds: Iterator[int], size: int) -> Iterator[list[int]]:
    while True:
        batch = list(itertools.islice(seeds, size))
        if not batch:
            return
        yield batch
