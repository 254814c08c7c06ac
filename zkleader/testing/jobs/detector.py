"""The overlap detector: the leader-only job of every test.

It takes a non-blocking exclusive flock(2) on one shared file for as long as it
lives. The kernel drops the lock only when the last process holding it is gone, so if
a second leader job starts while any process of the first is alive, the flock fails
and this records an overlap. Exact on one machine, no clocks involved.

Records (JSON lines appended to $DETECTOR_RECORD, O_APPEND so writers never mix):
start/stop/overlap with candidate, fencing token, pid and CLOCK_MONOTONIC time (one
clock for every process on the machine).

Options: --exit-after SECONDS (exit on its own, code --exit-code), --ignore-term
(ignore SIGTERM: only SIGKILL stops it), --fork (leave a child process holding
the lock too, as a shell script's children would).
"""

from __future__ import annotations

import argparse
import fcntl
import json
import os
import signal
import sys
import time


def record(kind: str, **fields: object) -> None:
    line = json.dumps(
        {
            "kind": kind,
            "candidate": os.environ.get("ZKLEADER_CANDIDATE"),
            "token": int(os.environ.get("ZKLEADER_FENCING_TOKEN", "0")),
            "pid": os.getpid(),
            "t": time.monotonic(),
            **fields,
        }
    )
    fd = os.open(os.environ["DETECTOR_RECORD"], os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    try:
        os.write(fd, (line + "\n").encode())
    finally:
        os.close(fd)


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--exit-after", type=float)
    parser.add_argument("--exit-code", type=int, default=1)
    parser.add_argument("--ignore-term", action="store_true")
    parser.add_argument("--fork", action="store_true")
    args = parser.parse_args()
    lock = os.open(os.environ["DETECTOR_LOCK"], os.O_RDWR | os.O_CREAT, 0o644)
    try:
        fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        record("overlap")
        return 99
    record("start")
    stopping = False

    def on_term(signum: int, frame: object) -> None:
        nonlocal stopping
        stopping = True

    signal.signal(signal.SIGTERM, signal.SIG_IGN if args.ignore_term else on_term)
    if args.fork and os.fork() == 0:
        # The child inherits the locked descriptor: the lock lives while it does.
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
        while True:
            time.sleep(1)
    deadline = None if args.exit_after is None else time.monotonic() + args.exit_after
    while not stopping:
        if deadline is not None and time.monotonic() >= deadline:
            record("exit", code=args.exit_code)
            return args.exit_code
        time.sleep(0.02)
    record("stop")
    return 0


if __name__ == "__main__":
    sys.exit(main())
