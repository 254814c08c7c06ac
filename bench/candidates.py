"""The candidates the benchmark runs, many per process, each with its own session.

zkleader   the real daemon loop (zkleader.daemon.Daemon) with the real core, kazoo
           shell and job runner, one thread per candidate; only signal handling is
           left out (a process has one set) and logs go nowhere.
kazoo      kazoo.recipe.election.Election (kazoo's Lock: sequential nodes, each
           contender watches its predecessor with get()).
herd       the classic herd: one ephemeral leader key; every follower puts an exists
           watch on it and, when it goes, all of them try to create it.
etcd       the lease design: a key put-if-absent with the candidate's 5 s lease, every
           follower watching the key.

Every design starts the same job the same way (zkleader's JobRunner: the guardian,
then bench/jobs/marker.py), so the figures compare elections, not job launchers.
"""

from __future__ import annotations

import http.client
import json
import signal
import threading
import time
from collections.abc import Callable
from typing import Any

import yaml
from kazoo.client import KazooClient
from kazoo.exceptions import (
    ConnectionLoss,
    KazooException,
    NodeExistsError,
    NoNodeError,
)

from zkleader import config as zconfig
from zkleader.config import JobConfig
from zkleader.core import events as ev
from zkleader.core.actions import Log, StartJob
from zkleader.daemon import Daemon
from zkleader.job import JobRunner

from . import etcd
from .counting import Counters, cut_kazoo_session, instrument_kazoo

Emit = Callable[..., None]


class Settings:
    def __init__(self, raw: dict[str, Any]) -> None:
        self.design: str = raw["design"]
        self.hosts: str = raw.get("hosts", "")
        self.election: str = raw["election"]
        self.session_timeout: float = raw["session_timeout"]
        self.stop_timeout: float = raw["stop_timeout"]
        self.job_argv: list[str] = raw["job_argv"]
        self.job_env: dict[str, str] = raw["job_env"]
        self.etcd: list[tuple[str, int]] = [tuple(e) for e in raw.get("etcd", [])]  # type: ignore[misc]
        self.lease_ttl: int = raw.get("lease_ttl", 5)
        self.tick_ms: int = raw.get("tick_ms", 200)

    def job_config(self) -> JobConfig:
        return JobConfig(command=tuple(self.job_argv), stop_timeout=self.stop_timeout,
                         environment=dict(self.job_env), restart_delay=0.2)


class Candidate:
    def __init__(self, ident: int, settings: Settings, emit: Emit) -> None:
        self.id = ident
        self.name = f"c{ident}"
        self.settings = settings
        self.emit = emit
        self.counters = Counters()
        self.dead = False
        self._joined = False

    def joined(self) -> None:
        if not self._joined:
            self._joined = True
            self.emit("joined", self.id)

    def start(self) -> None:
        raise NotImplementedError

    def stop(self) -> None:
        """Planned: stop the job, give up leadership, close the session."""
        raise NotImplementedError

    def crash(self) -> None:
        """kill -9: nothing more is sent, the job dies with the process (its guardian
        sees the lifeline close), the session is left for the server to expire."""
        raise NotImplementedError


def _lifeline_cut(runner: JobRunner | None) -> None:
    guardian = getattr(runner, "_guardian", None)
    if guardian is not None and guardian.stdin is not None:
        try:
            guardian.stdin.close()
        except OSError:
            pass


# ------------------------------------------------------------------- zkleader


class _Died(Exception):
    pass


_DIE = object()


class _Tap:
    """Sees every step of the daemon's loop (its observer, where production's metrics
    sit) and reports the benchmark's milestones as the core decides them."""

    def __init__(self, owner: "ZkleaderCandidate") -> None:
        self.owner = owner

    def observe(self, event: ev.Event, actions: list[Any], core: Any, now: float) -> None:
        for action in actions:
            if isinstance(action, StartJob):
                self.owner.emit("elected", self.owner.id)
            elif isinstance(action, Log) and action.event in ("following", "leader_acquired"):
                self.owner.joined()
            elif isinstance(action, Log) and action.event == "handover":
                self.owner.emit("handed", self.owner.id)  # the leaver's node is deleted

    def close(self) -> None:
        pass


class BenchDaemon(Daemon):
    """The real daemon loop, with taps for the benchmark."""

    def __init__(self, loaded: zconfig.Config, owner: "ZkleaderCandidate") -> None:
        super().__init__(loaded)
        self.owner = owner
        self._metrics = _Tap(owner)  # the loop's observer (the bench configures no metrics)

    def _install_signal_handlers(self) -> None:
        pass  # many daemons share this process; the harness posts ShutdownRequested itself

    def _open(self, loaded: zconfig.Config) -> None:
        super()._open(loaded)
        instrument_kazoo(self._zookeeper.client, self.owner.counters, periodic=self._is_heartbeat)

    def _is_heartbeat(self, request: Any) -> bool:
        """The leader's timer-driven exists() on its own node, and the sync() before it
        when the core asks for one (not the successor's confirming pair)."""
        view = self.core.snapshot()
        return (type(request).__name__ in ("Exists", "Sync") and view.leader and view.node is not None
                and request.path == f"{view.election_path}/{view.node}")

    def _next_item(self) -> Any:
        item = super()._next_item()
        if item is _DIE:
            raise _Died()
        return item

    def _step(self, event: ev.Event) -> int | None:
        if self.owner.dead:
            return None
        if isinstance(event, ev.JobStarted):
            self.owner.emit("spawned", self.owner.id)
        elif isinstance(event, ev.JobExited):
            self.owner.emit("reaped", self.owner.id)
        return super()._step(event)


class ZkleaderCandidate(Candidate):
    def start(self) -> None:
        s = self.settings
        raw = {
            "zookeeper": {"hosts": s.hosts, "session_timeout": s.session_timeout,
                          "tick_time": s.tick_ms / 1000},  # the servers' tickTime (expiry granularity)
            "election": {"path": s.election, "candidate": self.name},
            "job": {"command": s.job_argv, "stop_timeout": s.stop_timeout, "restart_delay": 0.2,
                    "environment": s.job_env},
            "logging": {"level": "error", "format": "json"},
        }
        loaded = zconfig.parse(yaml.safe_dump(raw), f"<bench {self.name}>")
        self.daemon = BenchDaemon(loaded, self)
        self.thread = threading.Thread(target=self._run, name=self.name, daemon=True)
        self.thread.start()

    def _run(self) -> None:
        try:
            code = self.daemon.run()
        except _Died:
            return
        self.emit("left", self.id, code=code)

    def stop(self) -> None:
        self.daemon._post(ev.ShutdownRequested("SIGTERM"))

    def crash(self) -> None:
        self.dead = True
        _lifeline_cut(self.daemon._job)
        cut_kazoo_session(self.daemon._zookeeper.client)
        self.daemon._queue.put(_DIE)


# ------------------------------------------------------- shared by the others


class _JobHolder:
    """Runs the job through zkleader's JobRunner and waits for it to be reaped."""

    def __init__(self, candidate: Candidate) -> None:
        self.candidate = candidate
        self.exited = threading.Event()
        self.runner = JobRunner(candidate.settings.job_config(), candidate.settings.election, candidate.name,
                                self._post)

    def _post(self, event: ev.Event) -> None:
        if isinstance(event, ev.JobStarted):
            self.candidate.emit("spawned", self.candidate.id)
        elif isinstance(event, ev.JobExited):
            self.candidate.emit("reaped", self.candidate.id)
            self.exited.set()

    def start(self, token: int) -> None:
        self.candidate.emit("elected", self.candidate.id)
        self.runner.start(token, "")

    def stop(self) -> None:
        self.runner.signal(signal.SIGTERM)
        if not self.exited.wait(self.candidate.settings.stop_timeout):
            self.runner.kill()
            self.exited.wait(5)


def _kazoo_client(settings: Settings) -> KazooClient:
    return KazooClient(hosts=settings.hosts, timeout=settings.session_timeout,
                       connection_retry={"max_tries": -1, "delay": 0.1, "backoff": 2, "max_delay": 0.8})


class _KazooBased(Candidate):
    def start(self) -> None:
        self.stop_requested = threading.Event()
        self.job: _JobHolder | None = None
        self.client = _kazoo_client(self.settings)
        self._instrument()
        self.thread = threading.Thread(target=self._guarded, name=self.name, daemon=True)
        self.thread.start()

    def _instrument(self) -> None:
        instrument_kazoo(self.client, self.counters)

    def _guarded(self) -> None:
        try:
            self._run()
        except Exception as err:  # a crashed candidate's thread dies here, quietly
            if not self.dead:
                self.emit("error", self.id, detail=f"{type(err).__name__}: {err}")
            return
        if not self.dead:
            try:
                self.client.stop()
                self.client.close()
            except Exception:
                pass
            self.emit("left", self.id, code=0)

    def _run(self) -> None:
        raise NotImplementedError

    def _lead(self, token: int = 0) -> None:
        self.job = _JobHolder(self)
        self.job.start(token)
        self.stop_requested.wait()
        if self.dead:
            threading.Event().wait()  # a dead process does nothing more, ever
        self.job.stop()

    def stop(self) -> None:
        self.stop_requested.set()

    def crash(self) -> None:
        self.dead = True
        _lifeline_cut(self.job.runner if self.job else None)
        cut_kazoo_session(self.client)
        self.stop_requested.set()


class KazooElectionCandidate(_KazooBased):
    def _instrument(self) -> None:
        instrument_kazoo(self.client, self.counters, on_created=self._created)

    def _created(self) -> None:
        # kazoo's Lock creates its node, lists the children and then either leads or
        # waits on its predecessor: close enough to "joined" for a join-time figure.
        self.joined()

    def _run(self) -> None:
        self.client.start(timeout=60)
        election = self.client.Election(self.settings.election, self.name)
        election.run(self._lead)


class HerdCandidate(_KazooBased):
    def _run(self) -> None:
        self.client.start(timeout=60)
        key = self.settings.election + "/leader"
        self.client.ensure_path(self.settings.election)
        while not self.stop_requested.is_set():
            try:
                self.client.create(key, self.name.encode(), ephemeral=True)
            except NodeExistsError:
                woke = threading.Event()
                try:
                    stat = self.client.exists(key, watch=lambda event: woke.set())
                except ConnectionLoss:
                    time.sleep(0.1)
                    continue
                if stat is None:
                    continue
                if stat.ephemeralOwner != self.client.client_id[0]:
                    self.joined()
                    woke.wait()
                    continue
                # Our own create landed although its reply was lost: we lead.
            except ConnectionLoss:
                # The herd's burst of requests starves a busy machine and connections drop;
                # a real client retries (and checks who owns the key, above).
                self.counters.request("retry-after-connection-loss")
                time.sleep(0.1)
                continue
            self.joined()
            self._lead()
            try:
                self.client.delete(key)
            except NoNodeError:
                pass
            return


# ------------------------------------------------------------------------ etcd


class EtcdCandidate(Candidate):
    """Put-if-absent with a lease; every follower watches the key (DELETE events)."""

    keepalive: "Keepalive | None" = None

    def start(self) -> None:
        endpoints = self.settings.etcd
        self.endpoint = endpoints[self.id % len(endpoints)]
        self.key = self.settings.election + "/leader"
        self.conn = http.client.HTTPConnection(*self.endpoint, timeout=30)
        self.stop_requested = threading.Event()
        self.job: _JobHolder | None = None
        self.watch: etcd.Watch | None = None
        self.lease = 0
        self.thread = threading.Thread(target=self._guarded, name=self.name, daemon=True)
        self.thread.start()

    def _call(self, path: str, body: dict[str, Any]) -> dict[str, Any]:
        self.counters.request(path.rsplit("/", 1)[-1])
        return etcd.call(self.conn, path, body)

    def _guarded(self) -> None:
        try:
            self._run()
        except Exception as err:
            if not self.dead:
                self.emit("error", self.id, detail=f"{type(err).__name__}: {err}")
            return
        if not self.dead:
            self.emit("left", self.id, code=0)

    def _attempt(self) -> tuple[bool, int]:
        k = etcd.b64(self.key)
        body = lambda: {  # noqa: E731
            "compare": [{"target": "CREATE", "key": k, "create_revision": "0"}],
            "success": [{"request_put": {"key": k, "value": etcd.b64(self.name), "lease": str(self.lease)}}],
            "failure": [],
        }
        try:
            answer = self._call("/v3/kv/txn", body())
        except (OSError, http.client.HTTPException) as err:
            if "lease not found" not in str(err):
                self.counters.request("retry-after-connection-loss")
                self.conn.close()
                self.conn = http.client.HTTPConnection(*self.endpoint, timeout=30)
                time.sleep(0.1)
                return self._attempt()
            # Our lease expired (keepalives late on a starved machine): a client makes a
            # new session and tries again, as etcd's own concurrency package does.
            self.counters.request("lease-regrant")
            self.lease = int(self._call("/v3/lease/grant", {"TTL": self.settings.lease_ttl})["ID"])
            answer = self._call("/v3/kv/txn", body())
        return bool(answer.get("succeeded")), int(answer["header"]["revision"])

    def _run(self) -> None:
        self.lease = int(self._call("/v3/lease/grant", {"TTL": self.settings.lease_ttl})["ID"])
        assert self.keepalive is not None
        self.keepalive.add(self)
        self.counters.request("watch")
        self.watch = etcd.Watch(self.endpoint, self.key)
        while not self.stop_requested.is_set():
            won, _ = self._attempt()
            self.joined()
            if won:
                self._lead()
                return
            while True:  # wait for the key to go
                result = self.watch.next()
                events = result.get("events", [])
                if events:
                    self.counters.notification(len(events))
                if any(e.get("type") == "DELETE" for e in events):
                    break

    def _lead(self) -> None:
        self.job = _JobHolder(self)
        self.job.start(self.lease)
        self.stop_requested.wait()
        if self.dead:
            threading.Event().wait()
        self.job.stop()
        assert self.keepalive is not None
        self.keepalive.remove(self)
        self._call("/v3/lease/revoke", {"ID": str(self.lease)})  # deletes the key at once
        if self.watch is not None:
            self.watch.close()

    def stop(self) -> None:
        self.stop_requested.set()

    def crash(self) -> None:
        self.dead = True
        _lifeline_cut(self.job.runner if self.job else None)
        if self.keepalive is not None:
            self.keepalive.remove(self)
        if self.watch is not None:
            self.watch.close()
        try:
            self.conn.close()
        except OSError:
            pass
        self.stop_requested.set()


class Keepalive:
    """One thread per process renews every live lease each TTL/3 (like a client's
    keepalive loop); counted as periodic requests."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.members: dict[int, EtcdCandidate] = {}
        self.lock = threading.Lock()
        self.conns: dict[tuple[str, int], http.client.HTTPConnection] = {}
        threading.Thread(target=self._loop, name="keepalive", daemon=True).start()

    def add(self, candidate: EtcdCandidate) -> None:
        with self.lock:
            self.members[candidate.id] = candidate

    def remove(self, candidate: EtcdCandidate) -> None:
        with self.lock:
            self.members.pop(candidate.id, None)

    def _loop(self) -> None:
        period = self.settings.lease_ttl / 3
        while True:
            started = time.monotonic()
            with self.lock:
                members = list(self.members.values())
            for candidate in members:
                if candidate.dead or candidate.id not in self.members:
                    continue
                conn = self.conns.get(candidate.endpoint)
                if conn is None:
                    conn = self.conns[candidate.endpoint] = http.client.HTTPConnection(*candidate.endpoint, timeout=10)
                try:
                    candidate.counters.tick_periodic()
                    etcd.call(conn, "/v3/lease/keepalive", {"ID": str(candidate.lease)})
                except (OSError, http.client.HTTPException, json.JSONDecodeError):
                    conn.close()
                    self.conns.pop(candidate.endpoint, None)
            time.sleep(max(0.05, period - (time.monotonic() - started)))


DESIGNS: dict[str, type[Candidate]] = {
    "zkleader": ZkleaderCandidate,
    "kazoo": KazooElectionCandidate,
    "herd": HerdCandidate,
    "etcd": EtcdCandidate,
}

__all__ = ["DESIGNS", "Candidate", "Keepalive", "Settings", "KazooException"]
