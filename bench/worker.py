"""One benchmark worker process: hosts a slice of the candidates of one design.

The orchestrator (bench/run.py) writes JSON commands on stdin, one per line:
  {"op": "add", "ids": [..]}   start candidates (each its own session)
  {"op": "stop", "id": i}      planned: the in-process SIGTERM (ShutdownRequested)
  {"op": "crash", "id": i}     the in-process kill -9 (zkleader: the guardian's lifeline
                               closes, so it kills the job and releases the session)
  {"op": "counters", "seq": n} snapshot of the counters, and how many candidates are
                               armed (leading, or following with their watch in place)
  {"op": "quit"}
and reads JSON events on stdout: ready, joined, left, trigger, counters, error, and
the milestones each candidate timed (notified, watch, relisted, listed, checked,
elected, spawned, reaped, handed: see bench/candidates.py), written out with each
counters reply; each with the candidate id and CLOCK_MONOTONIC time "t".
The first stdin line is the design's settings.
"""

from __future__ import annotations

import json
import os
import sys
import threading
import time
from typing import Any

# Many threads per process (kazoo: connection + 2 callback workers per session, the
# daemon loop): small stacks keep the address space, not the RSS, in check.
threading.stack_size(512 * 1024)

from .candidates import DESIGNS, Candidate, EtcdCandidate, Keepalive, Settings  # noqa: E402

_out = threading.Lock()


def emit(kind: str, ident: int | None = None, **fields: Any) -> None:
    line = json.dumps({"ev": kind, "id": ident, "t": time.monotonic(), **fields})
    with _out:
        sys.stdout.write(line + "\n")
        sys.stdout.flush()


def main() -> int:
    import structlog
    import logging

    # The in-process daemons log nothing (a real daemon's log cost is in the footprint figures).
    structlog.configure(wrapper_class=structlog.make_filtering_bound_logger(logging.CRITICAL))
    logging.getLogger("kazoo").setLevel(logging.CRITICAL)
    settings = Settings(json.loads(sys.stdin.readline()))
    design = DESIGNS[settings.design]
    if design is EtcdCandidate:
        EtcdCandidate.keepalive = Keepalive(settings)
    candidates: dict[int, Candidate] = {}
    emit("ready", pid=os.getpid())
    for line in sys.stdin:
        command = json.loads(line)
        op = command["op"]
        if op == "add":
            for ident in command["ids"]:
                candidate = design(ident, settings, emit)
                candidates[ident] = candidate
                candidate.start()
        elif op == "stop":
            emit("trigger", command["id"], how="stop")
            candidates[command["id"]].stop()
        elif op == "crash":
            emit("trigger", command["id"], how="crash")
            candidates[command["id"]].crash()
        elif op == "counters":
            for candidate in candidates.values():
                candidate.flush()  # the milestones timed since the last call
            requests: dict[str, int] = {}
            periodic = pings = notifications = suspended = sessions_lost = 0
            per: dict[str, int] = {}
            for candidate in candidates.values():
                c = candidate.counters
                for kind, count in c.requests.items():
                    requests[kind] = requests.get(kind, 0) + count
                periodic += c.periodic
                pings += c.pings
                notifications += c.notifications
                suspended += c.suspended
                sessions_lost += c.sessions_lost
                if c.notifications:
                    per[str(candidate.id)] = c.notifications
            armed = sum(1 for candidate in candidates.values() if candidate.armed())
            emit("counters", seq=command["seq"], requests=requests, periodic=periodic, pings=pings,
                 notifications=notifications, per=per, threads=threading.active_count(), armed=armed,
                 suspended=suspended, sessions_lost=sessions_lost)
        elif op == "quit":
            break
    # Teardown: nothing acts any more, every job dies (its lifeline closes), then the
    # sessions are closed so the servers start the next round clean.
    for candidate in candidates.values():
        candidate.teardown()
    closers = []
    for candidate in candidates.values():
        client = candidate.client() if callable(getattr(candidate, "client", None)) else getattr(candidate, "client", None)
        if client is not None:
            closer = threading.Thread(target=_close, args=(client,), daemon=True)
            closer.start()
            closers.append(closer)
    deadline = time.monotonic() + 5
    for closer in closers:
        closer.join(max(0.0, deadline - time.monotonic()))
    # A Popen'd job (kazoo, herd, etcd) is our child and would outlive us: while our
    # sessions closed, a contender of another worker may have been elected and one of
    # ours may have slipped a start in. Kill and reap every child but the guardians
    # (which exit with their lifeline and take their jobs with them).
    for candidate in candidates.values():
        candidate.teardown()
    _reap_children()
    emit("bye")
    os._exit(0)


def _reap_children() -> None:
    import signal

    from zkleader.guardian import children_of

    for pid, _ in children_of().get(os.getpid(), []):
        try:
            with open(f"/proc/{pid}/cmdline", "rb") as handle:
                if b"guardian.py" in handle.read():
                    continue
            os.kill(pid, signal.SIGKILL)
            os.waitpid(pid, 0)
        except (OSError, ChildProcessError):
            pass


def _close(client: Any) -> None:
    try:
        client.stop()
    except Exception:
        pass


if __name__ == "__main__":
    sys.exit(main())
