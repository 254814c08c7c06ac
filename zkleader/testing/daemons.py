"""Running real zkleader daemons in tests, and reading what they and their jobs did.

Each daemon is a real `python -m zkleader run` process with its own config and log
file (JSON lines). Every job is jobs/detector.py (``DETECTOR``), the flock overlap
detector, so every test can assert that no two leader jobs were ever alive at once.
The ``daemon_group`` fixture built on ``DaemonGroup`` is in tests/conftest.py.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from .zkserver import wait_until

#: The directory the zkleader package is in (the checkout): the daemons' working
#: directory, so ``python -m zkleader`` runs this code.
REPO = Path(__file__).resolve().parents[2]
DETECTOR = Path(__file__).resolve().parent / "jobs" / "detector.py"


def wait_for(predicate: Callable[[], Any], timeout: float, what: str, interval: float = 0.02) -> Any:
    """The test bed's polling loop, with the argument order the daemon tests use."""
    return wait_until(predicate, timeout, interval, message=what)


def process_running(pid: int) -> bool:
    """Alive and not a zombie (a zombie holds no lock, no memory, no port): the tests'
    check that a job's process is really gone."""
    try:
        with open(f"/proc/{pid}/stat") as handle:
            return handle.read().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False


def cmdline(pid: int) -> str:
    """A process's command line, arguments joined by spaces ("" once it is gone)."""
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as handle:
            return handle.read().replace(b"\0", b" ").decode(errors="replace")
    except OSError:
        return ""


def start_time(pid: int) -> str | None:
    """The process's start time (field 22 of /proc/PID/stat): with the pid, an identity
    that a recycled pid does not share. None once it is gone."""
    try:
        with open(f"/proc/{pid}/stat") as handle:
            return handle.read().rsplit(")", 1)[1].split()[19]
    except (OSError, IndexError):
        return None


@dataclass(frozen=True)
class Guardian:
    """A daemon's guardian process (zkleader/guardian.py), found by its pid and start
    time, so that a test never signals a recycled pid."""

    pid: int
    started: str

    def alive(self) -> bool:
        return start_time(self.pid) == self.started and process_running(self.pid)

    def signal(self, signum: int) -> bool:
        """Sends a signal if this is still the same process; False if it is gone."""
        if start_time(self.pid) != self.started:
            return False
        try:
            os.kill(self.pid, signum)
        except ProcessLookupError:
            return False
        return True

    def stopped(self) -> bool:
        """In the stopped state (T): a SIGSTOP took effect."""
        try:
            with open(f"/proc/{self.pid}/stat") as handle:
                return handle.read().rsplit(")", 1)[1].split()[0] == "T"
        except OSError:
            return False


def guardian_of(daemon_pid: int) -> Guardian | None:
    """The daemon's guardian: its child whose command line runs guardian.py (the
    daemon's other children are health checks). None when there is not exactly one
    (before the daemon spawned it, or while it replaces a dead one)."""
    found = []
    for name in os.listdir("/proc"):
        if not name.isdigit():
            continue
        try:
            with open(f"/proc/{name}/stat") as handle:
                fields = handle.read().rsplit(")", 1)[1].split()
        except (OSError, IndexError):
            continue
        if int(fields[1]) == daemon_pid and fields[0] != "Z" and "guardian.py" in cmdline(int(name)):
            found.append(Guardian(int(name), fields[19]))
    return found[0] if len(found) == 1 else None


@dataclass
class JsonLinesTail:
    """Reads the JSON objects appended to a file since the last call; lines that are not
    JSON objects (a job's own output in a daemon log) and a torn last line are skipped."""

    path: Path
    offset: int = 0

    def read(self) -> list[dict[str, Any]]:
        if not self.path.exists():
            return []
        with self.path.open("rb") as handle:
            handle.seek(self.offset)
            chunk = handle.read()
        complete = chunk.rfind(b"\n") + 1
        self.offset += complete
        rows = []
        for line in chunk[:complete].splitlines():
            if line.startswith(b"{"):
                try:
                    rows.append(json.loads(line))
                except ValueError:
                    pass
        return rows


@dataclass
class Daemon:
    name: str
    config_path: Path
    log_path: Path
    #: What runs ``run -c CONFIG`` (after ``sys.executable``): ``-m zkleader``, or a
    #: test's launcher module that installs a fault inside the daemon process first.
    launcher: tuple[str, ...] = ("-m", "zkleader")
    process: subprocess.Popen[bytes] | None = None
    _events: list[dict[str, Any]] = field(default_factory=list)
    _tail: JsonLinesTail | None = None

    @property
    def pid(self) -> int:
        assert self.process is not None
        return self.process.pid

    def alive(self) -> bool:
        return self.process is not None and self.process.poll() is None

    def events(self, name: str | None = None) -> list[dict[str, Any]]:
        """Every JSON log event so far (job output lines that are not JSON are skipped)."""
        if self._tail is None:
            self._tail = JsonLinesTail(self.log_path)
        self._events += self._tail.read()
        return [e for e in self._events if name is None or e.get("event") == name]

    def wait_event(self, name: str, timeout: float, count: int = 1) -> dict[str, Any]:
        return wait_for(lambda: len(self.events(name)) >= count and self.events(name)[count - 1], timeout,
                        f"{self.name}: event {name!r} #{count}")

    def log_text(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""


class DaemonGroup:
    """Several daemons on one election, with one overlap detector shared by their jobs."""

    def __init__(self, workdir: Path, hosts: str, election: str, session_timeout: float = 2.0,
                 stop_timeout: float = 0.5, job_args: tuple[str, ...] = (), job: dict[str, Any] | None = None,
                 etcd_lease_ttl: int | None = None) -> None:
        """etcd_lease_ttl: elect on etcd instead (an ``etcd:`` section: ``hosts`` are its
        endpoints, leases of this many seconds; session_timeout is then unused)."""
        self.workdir = workdir
        self.hosts = hosts
        self.election = election
        self.session_timeout = session_timeout
        self.stop_timeout = stop_timeout
        self.job_args = job_args
        self.job_overrides = job or {}
        self.etcd_lease_ttl = etcd_lease_ttl
        self.lock_path = workdir / "detector.lock"
        self.record_path = workdir / "detector.jsonl"
        self.daemons: dict[str, Daemon] = {}

    def config(self, name: str, hosts: str | None = None) -> dict[str, Any]:
        backend: dict[str, Any] = (
            {"etcd": {"endpoints": hosts or self.hosts, "lease_ttl": self.etcd_lease_ttl}}
            if self.etcd_lease_ttl is not None
            # The test servers run with tickTime 200 ms (zkserver.py).
            else {"zookeeper": {"hosts": hosts or self.hosts, "session_timeout": self.session_timeout,
                                "tick_time": 0.2}})
        return {
            **backend,
            "election": {"path": self.election, "candidate": name},
            "job": {
                "command": [sys.executable, "-I", "-S", str(DETECTOR), *self.job_args],
                "stop_timeout": self.stop_timeout,
                "restart_delay": 0.2,
                "environment": {"DETECTOR_LOCK": str(self.lock_path), "DETECTOR_RECORD": str(self.record_path)},
                **self.job_overrides,
            },
            "logging": {"level": "debug", "format": "json"},
        }

    def add(self, name: str, hosts: str | None = None, start: bool = True,
            sections: dict[str, Any] | None = None, launcher: tuple[str, ...] = ("-m", "zkleader"),
            **job: Any) -> Daemon:
        """sections: extra top-level config sections (health, metrics, ...); launcher:
        see ``Daemon.launcher`` (kept for restarts)."""
        config = self.config(name, hosts)
        config["job"].update(job)
        config.update(sections or {})
        path = self.workdir / f"{name}.yaml"
        path.write_text(yaml.safe_dump(config))
        daemon = Daemon(name, path, self.workdir / f"{name}.log", launcher)
        self.daemons[name] = daemon
        if start:
            self.start(name)
        return daemon

    def start(self, name: str) -> Daemon:
        daemon = self.daemons[name]
        assert not daemon.alive()
        with daemon.log_path.open("ab") as log:
            daemon.process = subprocess.Popen(
                [sys.executable, *daemon.launcher, "run", "-c", str(daemon.config_path)],
                stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, cwd=REPO,
            )
        return daemon

    def signal(self, name: str, signum: int) -> float:
        """Sends a signal; returns the monotonic time it was sent."""
        sent = time.monotonic()
        os.kill(self.daemons[name].pid, signum)
        return sent

    def wait_exit(self, name: str, timeout: float = 10.0) -> int:
        process = self.daemons[name].process
        assert process is not None
        return process.wait(timeout)

    # ---------------------------------------------------------- the detector

    def records(self, kind: str | None = None) -> list[dict[str, Any]]:
        if not self.record_path.exists():
            return []
        rows = [json.loads(line) for line in self.record_path.read_text().splitlines() if line.strip()]
        return [r for r in rows if kind is None or r["kind"] == kind]

    def overlaps(self) -> list[dict[str, Any]]:
        return self.records("overlap")

    def lock_is_free(self) -> bool:
        """True when no process of any leader job holds the lock (we can take it)."""
        import fcntl

        fd = os.open(self.lock_path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            return False
        finally:
            os.close(fd)  # closing drops our lock at once
        return True

    def wait_starts(self, count: int, timeout: float) -> list[dict[str, Any]]:
        return wait_for(lambda: len(self.records("start")) >= count and self.records("start"), timeout,
                        f"{count} job start(s)")

    def leaders(self) -> list[str]:
        """Daemons whose latest leadership event says they lead now."""
        leading = []
        for name, daemon in self.daemons.items():
            if not daemon.alive():
                continue
            states = [e["event"] for e in daemon.events()
                      if e["event"] in ("leader_acquired", "leadership_lost", "handover", "stopped")]
            if states and states[-1] == "leader_acquired":
                leading.append(name)
        return leading

    def close(self) -> None:
        for daemon in self.daemons.values():
            if daemon.alive():
                assert daemon.process is not None
                daemon.process.send_signal(signal.SIGKILL)
                daemon.process.wait(10)

    def describe(self) -> str:
        """Everything a failing test needs to explain itself."""
        parts = [f"records: {self.records()}"]
        for daemon in self.daemons.values():
            parts.append(f"--- {daemon.name} log tail:\n" + "\n".join(daemon.log_text().splitlines()[-25:]))
        return "\n".join(parts)

