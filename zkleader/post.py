"""How a shell reports to the daemon's loop.

The daemon hands each shell (ZooKeeper, job, health check) one ``Post`` and every
shell calls it, from whatever thread it runs on, with the core's events; the
daemon's queue puts them in the one order the core sees (daemon.py).
"""

from __future__ import annotations

from collections.abc import Callable

from .core import events as ev

Post = Callable[[ev.Event], None]
