"""The transition-hook shell: runs the commands of the ``hooks`` section when the core
asks (``RunHook``, core/hooks.py decides when).

Why a FIFO and one worker thread: hooks must run one at a time and in the order the
transitions happened (keepalived's notify scripts, run concurrently, could see
"backup" after "master" for one transition sequence). ``run`` only queues, so the
loop never waits for a hook and no hook delays stopping or killing the job or
leaving the queue. Each hook has ``hooks.timeout``; then its whole process tree is
killed (its process group, and every descendant found under it that left the
group), so a hung hook cannot hold up the hooks behind it for longer than that.

Hooks are spawned through children.py, like the health check, so that the daemon's
sweep for a dead guardian's orphans never takes a hook for one of them.
"""

from __future__ import annotations

import os
import queue
import signal
import subprocess
import threading
from collections.abc import Callable, Mapping
from typing import Any

import structlog

from . import children
from . import clock as daemon_clock
from .config import HooksConfig
from .core import events as ev
from .core.hooks import BEFORE_LEAD
from .guardian import children_of
from .post import Post

#: Hooks queued beyond this are dropped (and logged): a burst of transitions larger
#: than this means the hooks run far slower than leadership changes.
MAX_QUEUED = 64

#: The worker's end marker, queued by ``close`` behind the hooks still to run.
_STOP = object()


def environment(fields: Mapping[str, str], base: Mapping[str, str] | None = None) -> dict[str, str]:
    """The hook's environment: the daemon's own, plus ZKLEADER_<FIELD> per field."""
    env = dict(os.environ if base is None else base)
    for key, value in fields.items():
        env["ZKLEADER_" + key.upper()] = value
    return env


def kill_tree(root: int, proc: str = "/proc") -> int:
    """SIGKILLs ``root``'s process group and every descendant of ``root``, including
    those that left the group with setsid. Why SIGSTOP first: a descendant whose
    parent dies is reparented out of ``root``'s tree (to init, or to a subreaper)
    and a scan after the kill would miss it; stopped, no process of the tree can
    fork, exit or be reparented, so one scan after the tree stops growing finds
    all of it. Returns how many descendants were found."""
    found: set[int] = set()
    try:
        os.killpg(root, signal.SIGSTOP)
    except OSError:
        pass
    for _ in range(100):
        tree = children_of(proc)
        frontier, seen = [root], []
        while frontier:
            for pid, state in tree.get(frontier.pop(), []):
                frontier.append(pid)
                if state != "Z":
                    seen.append(pid)
        new = [pid for pid in seen if pid not in found]
        if not new:
            break
        for pid in new:
            found.add(pid)
            _signal(pid, signal.SIGSTOP)
    for target in (root, *found):
        _signal(target, signal.SIGKILL)
    try:
        os.killpg(root, signal.SIGKILL)
    except OSError:
        pass
    return len(found)


def _signal(pid: int, signum: int) -> None:
    try:
        os.kill(pid, signum)
    except OSError:
        pass  # gone already


class HookRunner:
    """One FIFO of hooks and the one thread that runs them."""

    def __init__(self, config: HooksConfig, log: Any = None, clock: Callable[[], float] = daemon_clock.now,
                 post: Post | None = None) -> None:
        self.config = config
        self._log = log if log is not None else structlog.get_logger()
        #: The daemon's clock: before_lead's deadline is on it.
        self._clock = clock
        #: Where before_lead's verdict goes (the daemon's queue).
        self._post = post
        self._queue: queue.Queue[Any] = queue.Queue(maxsize=MAX_QUEUED)
        #: Counters, for status and metrics: runs, failures (non-zero exit, could not
        #: start, timed out), timeouts, dropped (queue full).
        self.counts = {"ran": 0, "failed": 0, "timed_out": 0, "dropped": 0}
        self._closed = False
        self._thread = threading.Thread(target=self._work, name="hooks", daemon=True)
        self._thread.start()

    def run(self, kind: str, fields: Mapping[str, str], deadline: float | None = None) -> None:
        """Queues hook ``kind`` (never blocks); unconfigured kinds are ignored.
        deadline: before_lead's latest kill instant, on the daemon's clock."""
        if self._closed or self.config.argv(kind) is None:
            self._verdict(kind, fields, True, "not configured")
            return
        try:
            self._queue.put_nowait((kind, dict(fields), deadline))
        except queue.Full:
            self.counts["dropped"] += 1
            self._log.warning("hook_dropped", hook=kind, queued=MAX_QUEUED)
            self._verdict(kind, fields, False, "dropped: too many hooks queued")

    def close(self, grace: float | None = None) -> bool:
        """No more hooks; waits until the queued ones ran, at most ``grace`` seconds
        (default: one timeout per queued hook plus one). True when all ran."""
        if not self._closed:
            self._closed = True
            if grace is None:
                grace = (self._queue.qsize() + 1) * self.config.timeout + 1.0
            try:
                self._queue.put((_STOP, {}, None), timeout=grace)
            except queue.Full:
                return False
        self._thread.join(grace)
        return not self._thread.is_alive()

    # ------------------------------------------------------------ the worker

    def _work(self) -> None:
        while True:
            kind, fields, deadline = self._queue.get()
            if kind is _STOP:
                return
            try:
                ok, detail = self._run_one(kind, fields, deadline)
            except Exception as err:  # noqa: BLE001 - a broken hook must not end the worker
                self.counts["failed"] += 1
                ok, detail = False, f"{type(err).__name__}: {err}"
                self._log.error("hook_failed", hook=kind, error=detail)
            self._verdict(kind, fields, ok, detail)

    def _verdict(self, kind: str, fields: Mapping[str, str], ok: bool, detail: str) -> None:
        """before_lead only: its outcome goes to the core, which waits for it."""
        if kind == BEFORE_LEAD and self._post is not None and "fencing_token" in fields:
            self._post(ev.BeforeLeadChecked(int(fields["fencing_token"]), ok, detail))

    def _run_one(self, kind: str, fields: dict[str, str], deadline: float | None) -> tuple[bool, str]:
        """Runs one hook to its end or its timeout; returns (passed, what happened)."""
        argv = self.config.argv(kind)
        if argv is None:
            return True, "removed by a reload"
        started = self._clock()
        timeout = self.config.timeout if deadline is None else min(self.config.timeout, deadline - started)
        if timeout <= 0:
            self.counts["failed"] += 1
            self.counts["timed_out"] += 1
            error = "no time left on the lease when its turn came"
            self._log.warning("hook_failed", hook=kind, reason=fields.get("reason"), error=error)
            return False, error
        try:
            process = children.spawn(
                argv, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                env=environment(fields), start_new_session=True,  # its own group: killable as a whole
            )
        except OSError as err:
            self.counts["failed"] += 1
            error = f"cannot run: {err.strerror or err}"
            self._log.warning("hook_failed", hook=kind, reason=fields.get("reason"), error=error)
            return False, error
        try:
            try:
                output, _ = process.communicate(timeout=timeout)
            except subprocess.TimeoutExpired:
                kill_tree(process.pid)
                process.communicate()
                self.counts["failed"] += 1
                self.counts["timed_out"] += 1
                error = f"timed out after {timeout:.3g}s; its process tree was killed"
                self._log.warning("hook_failed", hook=kind, reason=fields.get("reason"), error=error)
                return False, error
        finally:
            children.forget(process.pid)
            children.reap_zombies()
        self.counts["ran"] += 1
        took = round(self._clock() - started, 3)
        last_line = (output.decode(errors="replace").strip().splitlines() or [""])[-1][:200]
        if process.returncode != 0:
            self.counts["failed"] += 1
            code = process.returncode
            error = (f"killed by signal {-code}" if code < 0 else f"exit {code}") + (f": {last_line}" if last_line else "")
            self._log.warning("hook_failed", hook=kind, reason=fields.get("reason"), error=error)
            return False, error
        self._log.info("hook_ran", hook=kind, took=took)
        return True, "exit 0"
