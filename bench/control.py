"""Control over who leads, timed on real daemons (`python -m zkleader run`, the flock
detector as the job) on the loopback 3-node ensemble, N candidates in one group:

* **resign --to the last**: the handover request (the marker `zkleader resign --to`
  writes, written here the same way) names the candidate at the back of the queue ->
  that candidate's job running. The leader stops its job, deletes the N-2 nodes
  between and its own; those candidates rejoin at the back.
* **resign (next in line)**: SIGUSR1 to the leader's daemon -> the next in line's job
  running: the plain handover it is compared with, in the same run.

Both are timed from the request (the marker's create answered / the signal sent) on
CLOCK_MONOTONIC, which the detector's start record shares; the CLI's own start-up
(a Python process, about 0.2 s) is left out of both.
"""

from __future__ import annotations

import json
import signal
import time
from pathlib import Path
from typing import Any

from kazoo.client import KazooClient

from zkleader.core import preference
from zkleader.testing.daemons import DaemonGroup, wait_for
from zkleader.testing.zkserver import Ensemble

from .run import log, percentile


def measure(workdir: Path, n: int, trials: int, tick_ms: int) -> dict[str, Any]:
    workdir.mkdir(parents=True, exist_ok=True)
    ensemble = Ensemble(workdir / "zk", size=3, tick_time=tick_ms)
    ensemble.start(timeout=90)
    client = KazooClient(hosts=ensemble.hosts, timeout=10.0)
    client.start(timeout=30)
    group = DaemonGroup(workdir / "group", ensemble.hosts, "/bench/control", session_timeout=4.0)
    (workdir / "group").mkdir(exist_ok=True)
    try:
        for i in range(n):
            group.add(f"c{i:03}").wait_event("joined", 60)
        group.wait_starts(1, 30)
        named, plain = [], []
        for trial in range(trials):
            named.append(_named(group, client, n))
            plain.append(_plain(group, n))
            log(f"    trial {trial + 1}/{trials}: resign --to the last {named[-1] * 1000:.0f} ms, "
                f"resign {plain[-1] * 1000:.0f} ms")
        return {"n": n, "trials": trials, "resign_to_last_ms": _stats(named), "resign_next_ms": _stats(plain),
                "overlaps": len(group.overlaps())}
    finally:
        group.close()
        client.stop()
        client.close()
        ensemble.close()


def _queue(client: KazooClient) -> list[tuple[str, str]]:
    """(node, candidate) in queue order."""
    names = sorted(client.get_children("/bench/control"), key=lambda name: int(name.rsplit("-", 1)[1]))
    return [(name, client.get(f"/bench/control/{name}")[0].decode()) for name in names]


def _settled(client: KazooClient, group: DaemonGroup, n: int) -> list[tuple[str, str]]:
    wait_for(lambda: len(_queue(client)) == n and len(group.leaders()) == 1, 30, "all queued, one leader")
    time.sleep(0.3)
    return _queue(client)


def _candidate(data: str) -> str:
    return str(json.loads(data)["candidate"])


def _named(group: DaemonGroup, client: KazooClient, n: int) -> float:
    queue = _settled(client, group, n)
    node, data = queue[-1]
    target = _candidate(data)
    before = len(group.records("start"))
    asked = time.monotonic()
    client.create(preference.handover_path("/bench/control"), preference.handover_data(node, "bench", "resign --to"))
    start = group.wait_starts(before + 1, 30)[-1]
    assert start["candidate"] == target, (start, target)
    return start["t"] - asked


def _plain(group: DaemonGroup, n: int) -> float:
    before = len(group.records("start"))
    (leader,) = group.leaders()
    asked = group.signal(leader, signal.SIGUSR1)
    return group.wait_starts(before + 1, 30)[-1]["t"] - asked


def _stats(values: list[float]) -> dict[str, float | None]:
    ms = [v * 1000 for v in values]
    return {"p50": percentile(ms, 50), "p99": percentile(ms, 99), "max": max(ms) if ms else None}
