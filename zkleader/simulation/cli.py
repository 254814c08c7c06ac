"""``python -m zkleader.simulation``: explore random schedules against the real core.

Examples::

    python -m zkleader.simulation --seeds 10000                 # a fixed batch
    python -m zkleader.simulation --seed 123456 --hours 50      # open-ended, from seed 123456
    python -m zkleader.simulation --wall 600 --profile chatty   # ten minutes of one profile
    python -m zkleader.simulation --trace 158                   # one schedule's full timeline
    python -m zkleader.simulation --seeds 50 --bug stopping-clock --stop   # a deliberate bug, caught

Exit status: 0 without violations, 1 with (their timelines are printed).
"""

from __future__ import annotations

import argparse
import itertools
import os
import sys

from .config import Bug
from .faults import PROFILES
from .runner import explore, run_schedule


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m zkleader.simulation", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seeds", type=int, default=None,
                        help="number of schedules (default: unlimited with --hours/--wall, else 1000)")
    parser.add_argument("--seed", type=int, default=0, help="first seed (default 0)")
    parser.add_argument("--hours", type=float, default=None, help="stop after this much simulated time")
    parser.add_argument("--wall", type=float, default=None, help="stop after this many wall-clock seconds")
    parser.add_argument("--profile", choices=sorted(PROFILES), default="default", help="fault profile")
    parser.add_argument("--workers", type=int, default=os.cpu_count() or 1, help="processes (default: all CPUs)")
    parser.add_argument("--stop", action="store_true", help="stop at the first violation")
    parser.add_argument("--show", type=int, default=3, help="print the timelines of this many violations")
    parser.add_argument("--lenient-spin", action="store_true",
                        help="count a busy-looping core (next deadline in the past) instead of failing on it")
    parser.add_argument("--trace", type=int, metavar="SEED", help="run one schedule and print its whole timeline")
    parser.add_argument("--bug", action="append", default=[], choices=[b.value for b in Bug],
                        help="switch on a deliberate bug of the model's shells (repeatable): it must be caught")
    args = parser.parse_args(argv)
    bugs = frozenset(Bug(name) for name in args.bug)

    if args.trace is not None:
        result = run_schedule(args.trace, args.profile, trace_limit=None, timeline_lines=None,
                              spin_is_violation=not args.lenient_spin, bugs=bugs)
        if result.finding is not None:
            print(result.finding.report())
            return 1
        from .faults import random_spec

        print(random_spec(args.trace, args.profile).describe())
        print(f"no violation: {result.sim_time:.1f} simulated seconds, {result.steps} steps, "
              f"faults {result.faults}, leaderships {result.leaderships}")
        return 0

    count = args.seeds
    if count is None and args.hours is None and args.wall is None:
        count = 1000
    seeds = range(args.seed, args.seed + count) if count is not None else itertools.count(args.seed)
    print(f"exploring profile {args.profile!r} from seed {args.seed} with {args.workers} worker(s)"
          + (f", {count} schedules" if count is not None else "")
          + (f", up to {args.hours:g} simulated hours" if args.hours else "")
          + (f", up to {args.wall:g}s" if args.wall else ""), flush=True)
    summary = explore(seeds, args.profile, workers=args.workers, stop_at_first=args.stop, wall_limit=args.wall,
                      sim_hours=args.hours, spin_is_violation=not args.lenient_spin, bugs=bugs)
    for finding in summary.findings[: args.show]:
        print()
        print(finding.report())
    print()
    print(summary.text())
    if summary.spins:
        print(f"busy-looping cores   in {summary.spins} schedules (counted, not failed: --lenient-spin)")
    return 1 if summary.findings else 0


if __name__ == "__main__":
    sys.exit(main())
