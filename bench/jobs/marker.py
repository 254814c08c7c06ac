"""The benchmark's leader-only job in Python (bench/jobs/marker.c is the default: its
first instruction is the measurement; here an interpreter start comes first).

It reads CLOCK_MONOTONIC first (one clock for every process on the machine), appends
one JSON line "start" with its candidate and that time, then takes a non-blocking
exclusive flock(2) on one shared file (the test suite's overlap detector, minus its
polling loop; a second leader job finds it taken, records "overlap" and waits for the
lock), and sleeps
until a signal ends it. SIGTERM keeps its default action, so a stop takes effect at
once and the stop path of the handover is measured, not a job's own grace.

Run as ``python -I -S marker.py`` (no site-packages): what is measured is the
interpreter start, not an import storm.
"""

import time

STARTED = time.monotonic()

import fcntl  # noqa: E402
import json  # noqa: E402
import os  # noqa: E402
import signal  # noqa: E402


def record(kind: str, at: float) -> None:
    line = json.dumps({"kind": kind, "candidate": os.environ.get("ZKLEADER_CANDIDATE"),
                       "token": os.environ.get("ZKLEADER_FENCING_TOKEN"), "pid": os.getpid(), "t": at})
    fd = os.open(os.environ["BENCH_RECORD"], os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    try:
        os.write(fd, (line + "\n").encode())
    finally:
        os.close(fd)


def main() -> int:
    record("start", STARTED)
    lock = os.open(os.environ["BENCH_LOCK"], os.O_RDWR | os.O_CREAT, 0o644)
    try:
        fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        record("overlap", time.monotonic())
        fcntl.flock(lock, fcntl.LOCK_EX)  # held once the other job is gone: the next overlap is seen too
    while True:
        signal.pause()


if __name__ == "__main__":
    raise SystemExit(main())
