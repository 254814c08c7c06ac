"""The kazoo recipe + job as one real process: the rival of a `zkleader run` daemon in
the benchmark's real-process figures (bench/processes.py).

    python -m bench.kazoo_daemon CONFIG.json

CONFIG: {"hosts", "election", "name", "session_timeout", "stop_timeout", "job_argv",
"job_env"}. One KazooClient, kazoo's Election, and a leader function that Popens the
job and stops it on SIGTERM, SUSPENDED or LOST (bench/kazoo_design.py). SIGTERM: the
job is stopped, the Lock deletes the node, the session is closed, exit 0. Milestones
go to stdout as JSON lines {"event", "t"} (CLOCK_MONOTONIC), written by a flusher
thread 20 ms later, so that no write sits on the leader function's path.
"""

from __future__ import annotations

import json
import logging
import os
import signal
import sys
import threading
import time

from .counting import Counters, instrument_kazoo
from .kazoo_design import KazooLeader, client_for

_stamps: list[tuple[str, float]] = []
_pending = threading.Event()


def stamp(name: str) -> None:
    _stamps.append((name, time.monotonic()))
    _pending.set()


def _flusher() -> None:
    """Writes the milestones 20 ms after the first of a burst (idle: never wakes)."""
    while True:
        _pending.wait()
        time.sleep(0.02)
        _pending.clear()
        flush()


def flush() -> None:
    global _stamps
    stamps, _stamps = _stamps, []
    for name, t in stamps:
        sys.stdout.write(json.dumps({"event": name, "t": t, "pid": os.getpid()}) + "\n")
    if stamps:
        sys.stdout.flush()


def main(argv: list[str]) -> int:
    logging.getLogger("kazoo").setLevel(logging.CRITICAL)
    with open(argv[1]) as handle:
        config = json.load(handle)
    client = client_for(config["hosts"], config["session_timeout"])
    joined = threading.Event()

    def created() -> None:
        if not joined.is_set():
            joined.set()
            stamp("joined")

    instrument_kazoo(client, Counters(), on_created=created, on_notification=lambda: stamp("notified"))
    leader = KazooLeader(client, config["election"], config["name"], config["job_argv"],
                         {**os.environ, **config["job_env"]}, config["stop_timeout"], stamp=stamp)
    signal.signal(signal.SIGTERM, lambda *_: leader.request_stop())
    signal.signal(signal.SIGINT, lambda *_: leader.request_stop())
    threading.Thread(target=_flusher, name="flusher", daemon=True).start()
    client.start(timeout=60)
    runner = threading.Thread(target=leader.run, name="election", daemon=True)
    runner.start()
    runner.join()  # interrupted by the signal handlers, which run here in the main thread
    client.stop()
    client.close()
    stamp("left")
    flush()
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
