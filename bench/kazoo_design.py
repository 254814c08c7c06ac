"""The kazoo recipe + job, as a careful kazoo user writes it: the benchmark's rival.

kazoo's ``Election`` (its ``Lock``: sequential ephemeral nodes, each contender
watching its predecessor) runs a leader function, and the leader function starts the
job with a plain ``subprocess.Popen`` and stops it (SIGTERM, then SIGKILL after
``stop_timeout``) when

* the process is asked to stop (SIGTERM in a real process, the bench's stop command
  in a worker): the function returns and the Lock deletes the node;
* the connection is SUSPENDED: kazoo's hint that the session may be lost; the job
  starts again if the same session comes back (CONNECTED), and
* the session is LOST: the function returns and the contender queues again with the
  new session kazoo makes.

A job that exits on its own while leading is started again after ``restart_delay``.
Nothing here is zkleader's: no guardian, no lease clock, no warm process (the job is
fork/exec'd by Popen when leadership comes). Used by bench/candidates.py (many
contenders per worker process) and bench/kazoo_daemon.py (one per real process).
"""

from __future__ import annotations

import subprocess
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from typing import Any

from kazoo.client import KazooClient, KazooState

Stamp = Callable[[str], None]


class PopenJob:
    """One run of the job: Popen, a thread that waits for its exit, and a stop that
    sends SIGTERM and SIGKILL after stop_timeout (what ``proc.terminate();
    proc.wait(timeout)`` does, without wait's polling)."""

    def __init__(self, argv: Sequence[str], env: Mapping[str, str], on_exit: Callable[[], None]) -> None:
        self.proc = subprocess.Popen(list(argv), env=dict(env), stdin=subprocess.DEVNULL)
        self.exited = threading.Event()
        self._on_exit = on_exit
        threading.Thread(target=self._wait, name="job-wait", daemon=True).start()

    def _wait(self) -> None:
        self.proc.wait()
        self.exited.set()
        self._on_exit()

    def stop(self, stop_timeout: float) -> None:
        if self.exited.is_set():
            return
        try:
            self.proc.terminate()
        except OSError:
            pass
        if not self.exited.wait(stop_timeout):
            try:
                self.proc.kill()
            except OSError:
                pass
            self.exited.wait(30)


class KazooLeader:
    """One contender: a KazooClient, a listener, the Election and the leader function.

    ``stamp(name)`` is called at the milestones the benchmark times: "elected" (the
    leader function is entered), "spawned" (Popen returned), "reaped" (the job's exit
    seen), "handed" (Election.run returned after a stop: the Lock deleted the node)."""

    def __init__(self, client: KazooClient, election: str, name: str, argv: Sequence[str],
                 env: Mapping[str, str], stop_timeout: float, restart_delay: float = 0.2,
                 stamp: Stamp = lambda name: None) -> None:
        self.client = client
        self.election_path = election
        self.name = name
        self.argv = list(argv)
        self.env = dict(env)
        self.stop_timeout = stop_timeout
        self.restart_delay = restart_delay
        self.stamp = stamp
        self.stopping = threading.Event()
        #: Set whenever something the leader function waits for may have changed.
        self._wake = threading.Event()
        self._state = KazooState.CONNECTED
        self._lost = False
        #: The in-process kill -9 (freeze): nothing of this contender acts any more.
        self.frozen = False
        self.election: Any = None
        self.job: PopenJob | None = None
        #: kazoo's recipe gives no fencing token (the job sees 0).
        self.token = 0
        client.add_listener(self._listener)

    # kazoo's connection thread: must not block
    def _listener(self, state: str) -> None:
        if self.frozen:
            return
        self._state = state
        if state == KazooState.LOST:
            self._lost = True
        self._wake.set()

    def freeze(self) -> None:
        self.frozen = True
        self._wake.set()

    def _halt_if_frozen(self) -> None:
        if self.frozen:
            threading.Event().wait()  # a dead process does nothing more, ever

    def request_stop(self) -> None:
        self.stopping.set()
        self._wake.set()
        election = self.election
        if election is not None:
            election.cancel()  # a contender still waiting in the queue leaves it

    def run(self) -> None:
        """Contends until asked to stop; each LOST starts a new contention."""
        while not self.stopping.is_set():
            self._wait_connected()
            if self.stopping.is_set():
                break
            self._lost = False
            self.election = self.client.Election(self.election_path, self.name)
            try:
                self.election.run(self._lead)
            except Exception:  # a lost session or connection during acquire/release: contend again
                self._halt_if_frozen()
                time.sleep(0.1)
                continue
            self._halt_if_frozen()
            if self.stopping.is_set():
                self.stamp("handed")

    def _wait_connected(self) -> None:
        while not self.stopping.is_set() and self.client.state != KazooState.CONNECTED:
            self._wake.wait(0.1)
            self._wake.clear()

    def _lead(self) -> None:
        self._halt_if_frozen()  # torn down while waiting in the queue: never start a job
        self.stamp("elected")
        while True:
            if self.stopping.is_set() or self._lost:
                return
            if self._state == KazooState.SUSPENDED:
                self._wake.wait(0.1)  # same session back (CONNECTED) or LOST
                self._wake.clear()
                continue
            self._wake.clear()
            env = {**self.env, "ZKLEADER_CANDIDATE": self.name, "ZKLEADER_FENCING_TOKEN": str(self.token)}
            job = self.job = PopenJob(self.argv, env, self._wake.set)
            if self.frozen:  # frozen during the Popen: the kill_job of the teardown may have missed it
                self.kill_job()
                self._halt_if_frozen()
            self.stamp("spawned")
            while not (self.stopping.is_set() or self._lost or self._state == KazooState.SUSPENDED
                       or job.exited.is_set()):
                self._wake.wait()
                self._wake.clear()
            self._halt_if_frozen()
            if not job.exited.is_set():
                job.stop(self.stop_timeout)
                self.stamp("reaped")
            elif not self.stopping.is_set():
                time.sleep(self.restart_delay)  # the job exited on its own: start it again
            self.job = None

    def kill_job(self) -> None:
        """What systemd's KillMode does when the daemon is kill -9ed: the job goes too
        (a plain Popen child outlives its parent)."""
        job = self.job
        if job is not None:
            try:
                job.proc.kill()
            except OSError:
                pass


def client_for(hosts: str, session_timeout: float) -> KazooClient:
    return KazooClient(hosts=hosts, timeout=session_timeout,
                       connection_retry={"max_tries": -1, "delay": 0.1, "backoff": 2, "max_delay": 0.8})


