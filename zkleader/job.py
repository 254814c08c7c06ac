"""The job shell: keeps a warm guardian (guardian.py), runs the job through it and
reports on it.

One guardian and at most one job at a time. The core decides when to start, signal
and kill, and which lease deadlines the guardian holds; this module only says so on
the guardian's stdin and posts JobStarted/JobExited. JobExited is posted once the
guardian reports the job's whole tree gone, or, if the guardian itself died first,
only after the daemon has swept up its orphans (children.py); a fresh guardian then
takes its place. The guardian is also told the ZooKeeper session, so that it can end
the session once the job is reaped if the daemon dies.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
from collections.abc import Mapping, Sequence
from pathlib import Path

import structlog

from . import children
from .config import JobConfig
from .core import events as ev
from .post import Post

GUARDIAN = str(Path(__file__).with_name("guardian.py"))

#: systemd's per-service variables belong to the daemon; a job that inherited
#: NOTIFY_SOCKET could report READY or feed the watchdog on the daemon's behalf.
_PRIVATE_VARIABLES = ("NOTIFY_SOCKET", "WATCHDOG_USEC", "WATCHDOG_PID", "LISTEN_FDS", "LISTEN_PID", "LISTEN_FDNAMES")


def job_environment(
    base: Mapping[str, str], job: JobConfig, election: str, candidate: str, znode: str, token: int
) -> dict[str, str]:
    environment = without_private(base)
    environment.update(job.environment)
    environment.update(
        ZKLEADER_ELECTION=election,
        ZKLEADER_CANDIDATE=candidate,
        ZKLEADER_ZNODE=znode,
        ZKLEADER_FENCING_TOKEN=str(token),
    )
    return environment


def without_private(base: Mapping[str, str]) -> dict[str, str]:
    return {k: v for k, v in base.items() if k not in _PRIVATE_VARIABLES}


def guardian_argv(status_fd: int, release_argv: Sequence[str] = ()) -> list[str]:
    """How the guardian is started: the standard library only (-I -S), its report
    pipe, and what it replaces itself with to release a dead daemon's session (empty:
    never)."""
    return [sys.executable, "-I", "-S", GUARDIAN, str(status_fd), *release_argv]


class JobRunner:
    """The daemon's side of its guardian. Called from the loop thread, except
    ``session``, which kazoo's connection thread calls: writes are serialised."""

    def __init__(self, job: JobConfig, election: str, candidate: str, post: Post,
                 release_argv: Sequence[str] = ()) -> None:
        self.config = job
        self._election = election
        self._candidate = candidate
        self._post = post
        self._release_argv = list(release_argv)
        self._log = structlog.get_logger()
        self._lock = threading.Lock()
        self._guardian: subprocess.Popen[bytes] | None = None
        #: A job was handed to the guardian and its end not yet reported.
        self._job_running = False
        self._session_line = "nosession"
        self._closing = False
        self._spawn_guardian()

    def rebind(self, job: JobConfig, election: str, candidate: str, post: Post) -> None:
        """A reopen: the same warm guardian serves the new configuration."""
        self.config, self._election, self._candidate, self._post = job, election, candidate, post

    # ------------------------------------------------------------ the loop's

    def start(self, token: int, znode: str, stop_at: float, kill_at: float) -> None:
        if self._guardian is None:
            self._spawn_guardian()
        spec = {
            "argv": list(self.config.argv),
            "env": job_environment(os.environ, self.config, self._election, self._candidate, znode, token),
            "cwd": self.config.working_directory,
            "stop_signal": int(self.config.stop_signal),
            "stop_at": stop_at,
            "kill_at": kill_at,
        }
        self._job_running = True  # before the line: the guardian may answer at once
        if not self._command_now("start " + json.dumps(spec, separators=(",", ":"))):
            self._job_running = False
            self._post(ev.JobExited(None, "cannot start: no guardian process"))

    def guard(self, stop_at: float, kill_at: float) -> None:
        self._write(f"lease {stop_at!r} {kill_at!r}")

    def signal(self, signum: signal.Signals) -> None:
        self._command_now(f"signal {int(signum)}")

    def kill(self) -> None:
        self._command_now("kill")

    def _command_now(self, line: str) -> bool:
        """A start or a stop must be carried out even if someone SIGSTOPped the guardian
        (a stop for safety, a start for a leadership that would hold no job): SIGCONT
        it with the command (it is our child, unreaped, so its pid is still its own).
        A guardian killed instead is seen at once (its status pipe closes)."""
        written = self._write(line)
        guardian = self._guardian
        if guardian is not None:
            try:
                os.kill(guardian.pid, signal.SIGCONT)
            except OSError:
                pass
        return written

    # ---------------------------------------------------------- the session's

    def session(self, session_id: int | None, password: bytes = b"") -> None:
        """The session the guardian ends if the daemon dies (None: none to end, the
        daemon closed it itself or has none)."""
        line = "nosession" if session_id is None else f"session {session_id:x} {password.hex()}"
        with self._lock:
            self._session_line = line
        self._write(line)

    def close(self) -> None:
        """The daemon is exiting in order: its session is closed and the job reaped, so
        the guardian has nothing to release and simply exits with its lifeline."""
        self._closing = True
        self.session(None)
        guardian = self._guardian
        if guardian is not None and guardian.stdin is not None:
            with self._lock:
                guardian.stdin.close()

    # ------------------------------------------------------------- internals

    def _write(self, line: str) -> bool:
        with self._lock:
            guardian = self._guardian
            if guardian is None or guardian.stdin is None or guardian.stdin.closed:
                return False
            try:
                guardian.stdin.write(line.encode() + b"\n")
                guardian.stdin.flush()
            except (BrokenPipeError, ValueError):
                return False  # the guardian is on its way out; its death is reported anyway
        return True

    def _spawn_guardian(self) -> None:
        status_r, status_w = os.pipe()
        try:
            guardian = children.spawn(guardian_argv(status_w, self._release_argv), stdin=subprocess.PIPE,
                                      env=without_private(os.environ), pass_fds=(status_w,))
        except OSError as err:
            os.close(status_r)
            self._log.error("guardian_failed", error=f"{err.strerror or err} ({err.filename or ''})")
            return
        finally:
            os.close(status_w)
        with self._lock:
            self._guardian = guardian
            if self._session_line != "nosession" and guardian.stdin is not None:
                guardian.stdin.write(self._session_line.encode() + b"\n")
        threading.Thread(target=self._watch, args=(guardian, status_r), name="guardian-watch", daemon=True).start()

    def _watch(self, guardian: subprocess.Popen[bytes], status_r: int) -> None:
        with os.fdopen(status_r, "rb") as status:
            for raw in status:
                word, _, rest = raw.decode(errors="replace").strip().partition(" ")
                if word == "started":
                    self._post(ev.JobStarted(int(rest)))
                elif word == "exited":
                    code, _, how = rest.partition(" ")
                    self._job_running = False
                    self._post(ev.JobExited(int(code), by_guardian=how == "lease"))
                elif word == "failed":
                    self._job_running = False
                    self._post(ev.JobExited(None, f"cannot start: {rest}"))
        self._guardian_gone(guardian)

    def _guardian_gone(self, guardian: subprocess.Popen[bytes]) -> None:
        """The status pipe closed: the guardian exited or died. Its orphans are the
        daemon's now, and a job it ran is not gone until they are."""
        code = guardian.wait()
        children.forget(guardian.pid)
        with self._lock:
            if guardian.stdin is not None and not guardian.stdin.closed:
                guardian.stdin.close()
            self._guardian = None
        if self._closing:
            return
        leftovers = children.sweep()
        self._log.warning("guardian_died", how=_death(code), leftovers=leftovers)
        if self._job_running:
            self._job_running = False
            self._post(ev.JobExited(None, f"guardian {_death(code)} before the job ended; "
                                          f"{leftovers} leftover process(es) killed"))
        self._spawn_guardian()


def _death(code: int) -> str:
    """How the guardian ended, in the words an operator reads in job_exited."""
    if code < 0:
        try:
            return f"died by signal {-code} ({signal.Signals(-code).name})"
        except ValueError:
            return f"died by signal {-code}"
    return f"exited with status {code}"

