"""The benchmark's leader-only job: as small as a real job can be.

It takes a non-blocking exclusive flock(2) on one shared file (the test suite's
overlap detector, minus its polling loop), appends one JSON line with its candidate
and its CLOCK_MONOTONIC start time (one clock for every process on the machine), and
then sleeps until a signal ends it. SIGTERM keeps its default action, so a stop takes
effect at once and the stop path of the handover is measured, not a job's own grace.

Run as ``python -I -S marker.py`` (no site-packages): what is measured is the
interpreter start, not an import storm.
"""

import fcntl
import json
import os
import signal
import time


def record(kind: str) -> None:
    line = json.dumps({"kind": kind, "candidate": os.environ.get("ZKLEADER_CANDIDATE"),
                       "token": os.environ.get("ZKLEADER_FENCING_TOKEN"), "pid": os.getpid(),
                       "t": time.monotonic()})
    fd = os.open(os.environ["BENCH_RECORD"], os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    try:
        os.write(fd, (line + "\n").encode())
    finally:
        os.close(fd)


def main() -> int:
    lock = os.open(os.environ["BENCH_LOCK"], os.O_RDWR | os.O_CREAT, 0o644)
    try:
        fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        record("overlap")
        return 99
    record("start")
    while True:
        signal.pause()


if __name__ == "__main__":
    raise SystemExit(main())
