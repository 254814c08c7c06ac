"""The lease and every deadline run on CLOCK_BOOTTIME (zkleader/clock.py).

What these tests can check: the daemon and the ZooKeeper shell take clock.now by
default, and clock.now reads CLOCK_BOOTTIME. What they cannot: that the lease then
runs out across a system suspend, because CLOCK_BOOTTIME and CLOCK_MONOTONIC differ
only by time spent suspended, and a test cannot suspend this machine. The
deterministic simulation models a suspended host instead.
"""

from __future__ import annotations

import inspect
import time

from zkleader import clock
from zkleader.daemon import Daemon
from zkleader.zookeeper import ZooKeeperShell


def test_the_daemon_and_the_zookeeper_shell_keep_time_on_clock_now() -> None:
    assert inspect.signature(Daemon).parameters["clock"].default is clock.now
    assert inspect.signature(ZooKeeperShell).parameters["clock"].default is clock.now


def test_clock_now_reads_clock_boottime(monkeypatch) -> None:
    before = time.clock_gettime(time.CLOCK_BOOTTIME)
    now = clock.now()
    after = time.clock_gettime(time.CLOCK_BOOTTIME)
    assert before <= now <= after
    # On a machine never suspended since boot both clocks read the same: ask which one.
    asked: list[int] = []
    monkeypatch.setattr(time, "clock_gettime", lambda clock_id: asked.append(clock_id) or 42.0)
    assert clock.now() == 42.0
    assert asked == [time.CLOCK_BOOTTIME]
