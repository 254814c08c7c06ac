"""The daemon's own child processes: the ones it started, and the strays it inherits.

Why: the guardian owns the job's tree, but the guardian itself can die (kill -9 by an
operator, the OOM killer, the job killing its parent). PR_SET_PDEATHSIG then takes
only the job's main process; its children would live on, with the job's locks and
ports, while the daemon reports the job gone and a second job starts. So the daemon
is a child subreaper too (``supervision_problem`` at start-up): a dead guardian's
orphans become the daemon's children, and ``sweep`` kills them before the job is
reported gone.

Any child the daemon did not start through ``spawn`` is such a stray. Every
subprocess of the daemon is started through ``spawn`` under one lock, which
``sweep`` also holds, so a health check or guardian that was just forked is never
mistaken for a stray. Strays are reaped by pid, never with waitpid(-1), which
would steal the exit status of the subprocess module's children.
"""

from __future__ import annotations

import os
import signal
import subprocess
import threading
from collections.abc import Callable, Sequence
from typing import Any

from .guardian import PR_SET_CHILD_SUBREAPER, children_of, prctl

_lock = threading.Lock()
_known: set[int] = set()


def supervision_problem(proc: str = "/proc", set_subreaper: Callable[[int, int], None] = prctl) -> str | None:
    """Makes this process a child subreaper; returns why it cannot supervise jobs, or
    None. Checked before the daemon connects: without a subreaper or a procfs of our
    own pid namespace, neither the guardian nor the daemon could find and kill a
    job's orphans, so running would break "never two leader jobs"."""
    try:
        with open(f"{proc}/self/stat", "rb") as handle:
            own_pid = int(handle.read().split(b" ", 1)[0])
    except (OSError, ValueError):
        return f"{proc} is not mounted (a procfs is needed to find the job's processes)"
    if own_pid != os.getpid():
        return f"{proc} belongs to another pid namespace (it says we are pid {own_pid}, not {os.getpid()})"
    try:
        set_subreaper(PR_SET_CHILD_SUBREAPER, 1)
    except OSError as err:
        return f"prctl(PR_SET_CHILD_SUBREAPER) failed: {err.strerror or err}"
    return None


def spawn(argv: Sequence[str], **options: Any) -> subprocess.Popen[bytes]:
    """subprocess.Popen, with the child recorded as ours (not a stray) until ``forget``."""
    with _lock:
        process = subprocess.Popen(argv, **options)
        _known.add(process.pid)
    return process


def forget(pid: int) -> None:
    """Once Popen has reaped the child: its pid may be recycled from now on."""
    with _lock:
        _known.discard(pid)


def sweep(proc: str = "/proc") -> int:
    """SIGKILLs and reaps every stray child until none is left; returns how many were
    still alive. Each kill hands the victim's own children to us, hence the rescans;
    already dead strays (zombies) are reaped too."""
    killed = 0
    me = os.getpid()
    with _lock:
        while True:
            strays = [(pid, state) for pid, state in children_of(proc).get(me, []) if pid not in _known]
            if not strays:
                return killed
            for pid, state in strays:
                if state != "Z":
                    killed += 1
                    os.kill(pid, signal.SIGKILL)  # our unreaped child: the pid cannot be recycled
            for pid, _ in strays:
                os.waitpid(pid, 0)


def reap_zombies(proc: str = "/proc") -> None:
    """Reaps strays that have already ended, leaving live ones alone. A subreaper
    inherits whatever a health check left running; once such a process ends it
    would stay a zombie of ours, holding its pid, until the next sweep."""
    me = os.getpid()
    with _lock:
        for pid, state in children_of(proc).get(me, []):
            if state == "Z" and pid not in _known:
                os.waitpid(pid, 0)
