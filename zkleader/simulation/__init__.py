"""Deterministic simulation of the leadership core (issue 8).

The simulator drives the production decision core (``zkleader.leadership.Leadership``)
with events at virtual times and executes the actions it returns against a model of
the world: a ZooKeeper server (sessions, tick-bucketed expiry, ephemeral sequential
znodes, one-shot exists watches), kazoo's client behaviour (ping-based drop detection,
CONNECTION watch events, failed pending requests, automatic reconnects), per-host
network links that can partition, flap or slow down, daemons that pause, crash or shut
down, their guardians (which hold the lease's deadlines and release a dead daemon's
session once its job is reaped), and jobs that start, stop, ignore signals or crash. A virtual clock jumps from
event to event, so a simulated hour takes well under a second of wall time per host.

After every step the invariants in :mod:`.invariants` are checked; a failure raises
:class:`Violation` carrying the timeline of what led to it.

Entry points: :func:`run_schedule` (one seeded schedule), :func:`explore` (many),
``python -m zkleader.simulation`` (open-ended search).
"""

from .config import Bug, WorldConfig
from .faults import PROFILES, Profile, ScheduleSpec, random_spec
from .invariants import Violation
from .runner import Finding, Result, Summary, explore, run_schedule, settle
from .world import World

__all__ = [
    "PROFILES",
    "Bug",
    "Finding",
    "Profile",
    "Result",
    "ScheduleSpec",
    "Summary",
    "Violation",
    "World",
    "WorldConfig",
    "explore",
    "random_spec",
    "run_schedule",
    "settle",
]
