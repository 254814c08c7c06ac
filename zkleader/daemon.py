"""The daemon's loop: the one place where events meet the decision core.

Every event, whichever thread produced it (kazoo's connection and callback threads,
the job watcher, the signal waiter), goes through one queue and is handled here in
order, stamped with the monotonic clock. The loop sleeps until the next event or the
core's next deadline, whichever comes first, so a lease deadline is never missed
because nothing else happened.
"""

from __future__ import annotations

import datetime
import os
import queue
import signal
import socket
import threading
import time
import uuid
from collections.abc import Callable

import structlog

from . import __version__
from . import actions as act
from . import events as ev
from .config import Config
from .job import JobRunner
from .leadership import Identity, Leadership, Settings
from .zookeeper import ZooKeeperShell

#: Signals handled by the loop rather than by Python's default handlers.
HANDLED_SIGNALS = (signal.SIGTERM, signal.SIGINT)


def settings_from(config: Config) -> Settings:
    return Settings(
        election_path=config.election.path,
        candidate=config.election.candidate,
        session_timeout=config.zookeeper.session_timeout,
        stop_signal=config.job.stop_signal,
        stop_timeout=config.job.stop_timeout,
        on_exit=config.job.on_exit,
        restart_delay=config.job.restart_delay,
    )


class Daemon:
    def __init__(self, config: Config, clock: Callable[[], float] = time.monotonic) -> None:
        self.config = config
        self._clock = clock
        self._events: queue.SimpleQueue[ev.Event] = queue.SimpleQueue()
        identity = Identity(
            host=socket.gethostname(),
            pid=os.getpid(),
            version=__version__,
            started_at=datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        )
        self.core = Leadership(settings_from(config), identity, new_candidacy_id=lambda: uuid.uuid4().hex)
        self._log = structlog.get_logger()
        self._zookeeper: ZooKeeperShell | None = None
        self._job = JobRunner(config.job, config.election.path, config.election.candidate, self._events.put)

    def run(self) -> int:
        # Blocked before any thread starts, so every thread inherits the mask and the
        # signals reach only the waiter below (the guardian clears the mask for the job).
        signal.pthread_sigmask(signal.SIG_BLOCK, HANDLED_SIGNALS)
        threading.Thread(target=self._wait_for_signals, name="signals", daemon=True).start()
        self._zookeeper = ZooKeeperShell(self.config.zookeeper, self._events.put, self._clock)
        self._log.info("starting", version=__version__, zookeeper=self.config.zookeeper.connection_string,
                       session_timeout=self.config.zookeeper.session_timeout)
        self._zookeeper.start()
        while True:
            deadline = self.core.next_deadline()
            timeout = None if deadline is None else max(0.0, deadline - self._clock())
            try:
                event: ev.Event = self._events.get(timeout=timeout)
            except queue.Empty:
                event = ev.Tick()
            for action in self.core.handle(event, self._clock()):
                code = self._execute(action)
                if code is not None:
                    return code

    def _execute(self, action: act.Action) -> int | None:
        assert self._zookeeper is not None
        match action:
            case act.Log(event=name, level=level, fields=fields):
                getattr(self._log, level)(name, **fields)
            case act.StartJob(token=token, znode=znode):
                self._job.start(token, znode)
            case act.SignalJob(signal=signum):
                self._job.signal(signum)
            case act.KillJob():
                self._job.kill()
            case act.Exit(code=code):
                return code
            case _:
                self._zookeeper.execute(action)
        return None

    def _wait_for_signals(self) -> None:
        while True:
            signum = signal.sigwait(HANDLED_SIGNALS)
            self._events.put(ev.ShutdownRequested(signal.Signals(signum).name))
