"""The health-check shell: runs the configured command when the core asks and
reports pass or fail. The core decides when to run it and what the results mean
(health-gated candidacy, leadership.py)."""

from __future__ import annotations

import os
import signal
import subprocess
import threading

from . import children
from .config import HealthConfig
from .core import events as ev
from .post import Post


class HealthRunner:
    def __init__(self, config: HealthConfig, post: Post) -> None:
        self.config = config
        self._post = post

    def run_once(self) -> None:
        """In a thread: a slow check must never hold up the daemon's loop."""
        threading.Thread(target=self._check, name="health-check", daemon=True).start()

    def _check(self) -> None:
        """Runs one check; spawned through children.py so that the daemon's sweep for a
        dead guardian's orphans never takes the check for one of them."""
        try:
            process = children.spawn(
                self.config.argv, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                start_new_session=True,  # so a timeout can kill everything the check started
            )
        except OSError as err:
            self._post(ev.HealthChecked(False, f"cannot run: {err.strerror or err}"))
            return
        try:
            self._finish(process)
        finally:
            children.forget(process.pid)
            children.reap_zombies()

    def _finish(self, process: subprocess.Popen[bytes]) -> None:
        try:
            output, _ = process.communicate(timeout=self.config.timeout)
        except subprocess.TimeoutExpired:
            try:
                os.killpg(process.pid, signal.SIGKILL)
            except OSError:
                pass
            process.communicate()
            self._post(ev.HealthChecked(False, f"timed out after {self.config.timeout:g}s"))
            return
        last_line = (output.decode(errors="replace").strip().splitlines() or [""])[-1][:200]
        detail = f"exit {process.returncode}" + (f": {last_line}" if last_line else "")
        self._post(ev.HealthChecked(process.returncode == 0, detail))
