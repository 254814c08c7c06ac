"""The job shell: starts the leader-only job under its guardian and reports on it.

One job at a time. The core decides when to start, signal and kill; this module only
does it and posts JobStarted/JobExited. JobExited is posted once the guardian has
exited, which it does only after the job's whole process tree is gone; if the
guardian itself died first, only after the daemon has swept up its orphans
(children.py).
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
from collections.abc import Mapping
from pathlib import Path

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
    environment = {k: v for k, v in base.items() if k not in _PRIVATE_VARIABLES}
    environment.update(job.environment)
    environment.update(
        ZKLEADER_ELECTION=election,
        ZKLEADER_CANDIDATE=candidate,
        ZKLEADER_ZNODE=znode,
        ZKLEADER_FENCING_TOKEN=str(token),
    )
    return environment


class JobRunner:
    def __init__(self, job: JobConfig, election: str, candidate: str, post: Post) -> None:
        self.config = job
        self._election = election
        self._candidate = candidate
        self._post = post
        self._guardian: subprocess.Popen[bytes] | None = None

    def start(self, token: int, znode: str) -> None:
        if self._guardian is not None:
            raise RuntimeError("a job is already running")
        environment = job_environment(os.environ, self.config, self._election, self._candidate, znode, token)
        status_r, status_w = os.pipe()
        try:
            guardian = children.spawn(
                [sys.executable, "-I", "-S", GUARDIAN, str(status_w), "--", *self.config.argv],
                stdin=subprocess.PIPE,
                env=environment,
                cwd=self.config.working_directory,
                pass_fds=(status_w,),
            )
        except OSError as err:
            os.close(status_r)
            self._post(ev.JobExited(None, f"cannot start: {err.strerror or err} ({err.filename or ''})".strip()))
            return
        finally:
            os.close(status_w)
        self._guardian = guardian
        threading.Thread(target=self._watch, args=(guardian, status_r), name="job-watch", daemon=True).start()

    def signal(self, signum: signal.Signals) -> None:
        self._command(f"signal {int(signum)}")

    def kill(self) -> None:
        self._command("kill")

    def _command(self, line: str) -> None:
        guardian = self._guardian
        if guardian is None or guardian.stdin is None:
            return
        try:
            guardian.stdin.write(line.encode() + b"\n")
            guardian.stdin.flush()
        except (BrokenPipeError, ValueError):
            pass  # the guardian is already on its way out; its exit is reported anyway

    def _watch(self, guardian: subprocess.Popen[bytes], status_r: int) -> None:
        returncode: int | None = None
        error = ""
        with os.fdopen(status_r, "rb") as status:
            for raw in status:
                word, _, rest = raw.decode(errors="replace").strip().partition(" ")
                if word == "started":
                    self._post(ev.JobStarted(int(rest)))
                elif word == "exited":
                    returncode = int(rest)
                elif word == "failed":
                    error = f"cannot start: {rest}"
        code = guardian.wait()
        children.forget(guardian.pid)
        if guardian.stdin is not None:
            guardian.stdin.close()
        if returncode is None:
            # The guardian died without reporting the job's end (kill -9, the OOM killer,
            # the job killing its parent): the job's orphans are the daemon's now, and
            # the job is not gone until they are.
            leftovers = children.sweep()
            if not error:
                error = f"guardian {_death(code)} before the job ended; {leftovers} leftover process(es) killed"
        self._guardian = None
        self._post(ev.JobExited(returncode, error))


def _death(code: int) -> str:
    """How the guardian ended, in the words an operator reads in job_exited."""
    if code < 0:
        try:
            return f"died by signal {-code} ({signal.Signals(-code).name})"
        except ValueError:
            return f"died by signal {-code}"
    return f"exited with status {code}"
