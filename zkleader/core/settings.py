"""What the core decides with: the settings it is given, and who this daemon is.

Plain values built by the shells (daemon.py from the configuration file, the
simulation from its model), so the core needs neither YAML nor the config loader.
"""

from __future__ import annotations

import enum
import signal
from dataclasses import dataclass

from . import timing


class OnExit(enum.Enum):
    """What the leader does when its job exits on its own."""

    RESTART = "restart"
    RESIGN = "resign"
    EXIT = "exit"


@dataclass(frozen=True)
class Settings:
    """The parts of the configuration the core decides with."""

    election_path: str
    candidate: str
    session_timeout: float
    stop_signal: signal.Signals
    stop_timeout: float
    on_exit: OnExit
    restart_delay: float
    health: HealthPolicy | None = None
    #: systemd's watchdog interval (0: none); the lease keeps it in reserve (timing.py).
    watchdog: float = 0.0
    #: The ZooKeeper servers' tickTime, which bounds the session-touch relay (timing.py).
    tick_time: float = timing.DEFAULT_TICK_TIME
    #: From SIGKILL to the job reaped (timing.py): large jobs take longer to tear down.
    reap_allowance: float = timing.DEFAULT_REAP_ALLOWANCE
    #: The transition hooks configured (core/hooks.py KINDS): only these are emitted.
    hooks: frozenset[str] = frozenset()
    #: hooks.timeout: the before_lead hook's own limit, within the lease's (core/hooks.py).
    hook_timeout: float = 10.0
    #: election.priority and election.preempt_after (preference.py).
    priority: int = 0
    preempt_after: float | None = None


@dataclass(frozen=True)
class HealthPolicy:
    """When the health check runs and how many results flip the host's candidacy."""

    interval: float
    failures: int
    successes: int


@dataclass(frozen=True)
class Identity:
    """Facts about this daemon written into its znode for `status` and operators."""

    host: str
    pid: int
    version: str
    started_at: str
