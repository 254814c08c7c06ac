"""`zkleader run` with the benchmark's tap: the real daemon (zkleader.daemon.Daemon,
its signals, logging, guardian and release), plus an observer on its loop (where
production's metrics sit) that times each milestone of a handover on CLOCK_MONOTONIC.

    BENCH_STAMPS=STAMPS.jsonl python -m bench.tapped run -c CONFIG

It is `zkleader run` itself (zkleader.cli.main, with every check and hook of the real
start-up), with the Daemon class swapped for TappedDaemon. The milestones (names as in bench/candidates.py: shutdown, signalled, reaped,
delete_sent, handed, notified, watch, relisted, listed, checked, elected, spawned) are
kept in memory and appended to STAMPS 20 ms after the first of a burst, by a thread
that sleeps otherwise, so that no write sits on a handover's path.
"""

from __future__ import annotations

import json
import os
import sys
import threading
import time
from typing import Any

from zkleader import cli, config
from zkleader.core import actions as act
from zkleader.core import events as ev
from zkleader.daemon import Daemon

from .counting import Counters, instrument_kazoo

_stamps: list[tuple[str, float]] = []
_pending = threading.Event()


def stamp(name: str) -> None:
    _stamps.append((name, time.monotonic()))
    _pending.set()


def _flusher(path: str) -> None:
    while True:
        _pending.wait()
        time.sleep(0.02)
        _pending.clear()
        flush(path)


def flush(path: str) -> None:
    global _stamps
    stamps, _stamps = _stamps, []
    if stamps:
        with open(path, "a") as out:
            for name, t in stamps:
                out.write(json.dumps({"event": name, "t": t, "pid": os.getpid()}) + "\n")


class _Tap:
    def observe(self, event: ev.Event, actions: list[Any], core: Any, now: float) -> None:
        for action in actions:
            if isinstance(action, act.StartJob):
                stamp("elected")
            elif isinstance(action, act.ListChildren) and isinstance(event, ev.WatchFired):
                stamp("relisted")
            elif isinstance(action, act.SignalJob):
                stamp("signalled")
            elif isinstance(action, act.DeleteNode):
                stamp("delete_sent")
            elif isinstance(action, act.Log) and action.event == "handover":
                stamp("handed")

    def close(self) -> None:
        pass


class TappedDaemon(Daemon):
    def __init__(self, loaded: config.Config) -> None:
        super().__init__(loaded)
        self._metrics = _Tap()

    def _open(self, loaded: config.Config) -> None:
        super()._open(loaded)
        instrument_kazoo(self._zookeeper.client, Counters(), on_notification=lambda: stamp("notified"))

    def _step(self, event: ev.Event) -> int | None:
        if isinstance(event, ev.WatchFired) and event.kind is ev.WatchKind.DELETED:
            stamp("watch")
        elif isinstance(event, ev.NodeChecked):
            stamp("checked")
        elif isinstance(event, ev.ChildrenListed):
            stamp("listed")
        elif isinstance(event, ev.JobStarted):
            stamp("spawned")
        elif isinstance(event, ev.JobExited):
            stamp("reaped")
        elif isinstance(event, ev.ShutdownRequested):
            stamp("shutdown")
        return super()._step(event)


def main(argv: list[str]) -> int:
    from zkleader import daemon

    path = os.environ["BENCH_STAMPS"]
    threading.Thread(target=_flusher, args=(path,), name="stamps", daemon=True).start()
    daemon.Daemon = TappedDaemon  # type: ignore[misc]  # cli._run imports it by name when it runs
    try:
        return cli.main(argv[1:])
    finally:
        flush(path)


if __name__ == "__main__":
    sys.exit(main(sys.argv))
