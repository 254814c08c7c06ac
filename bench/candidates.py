"""The candidates the benchmark runs, many per process, each with its own session.

zkleader   the real daemon loop (zkleader.daemon.Daemon) with the real core, kazoo
           shell and job runner (its warm guardian, started with the candidate), one
           thread per candidate; only signal handling is left out (a process has one
           set) and logs go nowhere.
kazoo      kazoo.recipe.election.Election (kazoo's Lock: sequential nodes, each
           contender watches its predecessor with get()), with the job started the
           way a careful kazoo user starts it (bench/kazoo_design.py): a plain
           subprocess.Popen from the leader function, stopped on the stop request,
           SUSPENDED or LOST.
herd       the classic herd: one ephemeral leader key; every follower puts an exists
           watch on it and, when it goes, all of them try to create it.
etcd       the lease design: a key put-if-absent with the candidate's 5 s lease, every
           follower watching the key.

Only zkleader runs its job under zkleader's guardian; the others Popen it when they
win, so each design is measured with the job start its users would have.

Milestones are time-stamped where they happen (CLOCK_MONOTONIC) into the candidate's
buffer and written out only when the orchestrator asks for counters, so that no pipe
write sits on a handover's critical path.
"""

from __future__ import annotations

import http.client
import json
import os
import threading
import time
from collections.abc import Callable
from pathlib import Path
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
from zkleader.core import events as ev
from zkleader.core.actions import CheckNode, ListChildren, Log, StartJob
from zkleader.daemon import Daemon

from . import etcd
from .counting import Counters, cut_kazoo_session, instrument_kazoo
from .kazoo_design import KazooLeader, PopenJob, client_for

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
        self.config_dir = Path(raw.get("config_dir", "/tmp"))

    def job_env_for(self, name: str, token: int) -> dict[str, str]:
        return {**os.environ, **self.job_env, "ZKLEADER_CANDIDATE": name, "ZKLEADER_FENCING_TOKEN": str(token)}


class Candidate:
    def __init__(self, ident: int, settings: Settings, emit: Emit) -> None:
        self.id = ident
        self.name = f"c{ident}"
        self.settings = settings
        self.emit = emit
        self.counters = Counters()
        self.dead = False
        self._joined = False
        self._stamps: list[tuple[str, float]] = []

    def _left(self) -> None:
        """A kazoo-based candidate whose thread ended on its own: close its client and
        say it left (a crashed one says nothing)."""
        if self.dead:
            return
        try:
            self.client.stop()
            self.client.close()
        except Exception:
            pass
        self.emit("left", self.id, code=0)

    def stamp(self, name: str) -> None:
        """A milestone, timed now; written out later (flush). list.append is atomic."""
        self._stamps.append((name, time.monotonic()))

    def flush(self) -> None:
        stamps, self._stamps = self._stamps, []
        for name, t in stamps:
            self.emit(name, self.id, t=t)

    def joined(self) -> None:
        if not self._joined:
            self._joined = True
            self.emit("joined", self.id)

    def armed(self) -> bool:
        """Whether this candidate is ready to be measured: leading, or following with
        its watch in place. Where a design's "joined" comes only after its watch was
        created (kazoo's, the herd's and the etcd script's), joined is armed."""
        return self._joined and not self.dead

    def start(self) -> None:
        raise NotImplementedError

    def stop(self) -> None:
        """Planned: stop the job, give up leadership, close the session."""
        raise NotImplementedError

    def crash(self) -> None:
        """kill -9: nothing more is sent, the job dies (zkleader: its guardian sees the
        lifeline close; the others: as systemd's KillMode would kill it), the session
        is left for the server to expire (or, zkleader, for the guardian to release)."""
        raise NotImplementedError

    def teardown(self) -> None:
        """The worker is quitting: the job dies, nothing is released."""


# ------------------------------------------------------------------- zkleader


class _Died(Exception):
    pass


_DIE = object()


class _Tap:
    """Sees every step of the daemon's loop (its observer, where production's metrics
    sit) and times the benchmark's milestones as the core decides them."""

    def __init__(self, owner: "ZkleaderCandidate") -> None:
        self.owner = owner

    def observe(self, event: ev.Event, actions: list[Any], core: Any, now: float) -> None:
        if getattr(self.owner.daemon, "_count_at_shell", False):
            for action in actions:
                if not hasattr(action, "request_id"):
                    continue
                if isinstance(action, CheckNode) and action.sync and core.leader:
                    self.owner.counters.tick_periodic()
                else:
                    self.owner.counters.request(type(action).__name__)
        for action in actions:
            if isinstance(action, StartJob):
                self.owner.stamp("elected")  # StartJob leaves the core
            elif isinstance(action, ListChildren) and isinstance(event, ev.WatchFired):
                self.owner.stamp("relisted")  # the successor lists the queue again after the watch
            elif isinstance(action, Log) and action.event in ("following", "leader_acquired"):
                self.owner.joined()
            elif isinstance(action, Log) and action.event == "handover":
                self.owner.stamp("handed")  # the leaver's delete was answered

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
        #: On etcd there is no kazoo to wrap: requests and notifications are counted where
        #: the loop hands actions to the shell and takes its watch events (``_perform``,
        #: ``_step``), one per request the shell sends (a heartbeat's keep-alive and read
        #: count as one periodic request).
        self._count_at_shell = loaded.etcd is not None
        if not self._count_at_shell:
            instrument_kazoo(self._zookeeper.client, self.owner.counters, periodic=self._is_heartbeat,
                             on_notification=lambda: self.owner.stamp("notified"))

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
        inner = event
        if self._count_at_shell and isinstance(inner, ev.WatchFired) and inner.kind is not ev.WatchKind.CONNECTION:
            self.owner.counters.notification()
        if isinstance(inner, (ev.Suspended, ev.SessionLost)):
            self.owner.counters.lost(session=isinstance(inner, ev.SessionLost))
        if isinstance(inner, ev.WatchFired) and inner.kind is ev.WatchKind.DELETED:
            self.owner.stamp("watch")  # the loop takes the deletion event
        elif isinstance(inner, ev.NodeChecked):
            self.owner.stamp("checked")
        elif isinstance(inner, ev.ChildrenListed):
            self.owner.stamp("listed")
        elif isinstance(inner, ev.JobStarted):
            self.owner.stamp("spawned")
        elif isinstance(inner, ev.JobExited):
            self.owner.stamp("reaped")
        return super()._step(event)


class ZkleaderCandidate(Candidate):
    def coordination(self) -> dict[str, Any]:
        s = self.settings
        return {"zookeeper": {"hosts": s.hosts, "session_timeout": s.session_timeout,
                              "tick_time": s.tick_ms / 1000}}  # the servers' tickTime (expiry granularity)

    def start(self) -> None:
        s = self.settings
        raw = {
            **self.coordination(),
            "election": {"path": s.election, "candidate": self.name},
            "job": {"command": s.job_argv, "stop_timeout": s.stop_timeout, "restart_delay": 0.2,
                    "environment": s.job_env},
            "logging": {"level": "error", "format": "json"},
        }
        # A real file: a crashed candidate's guardian releases the session with it.
        path = s.config_dir / f"{self.name}.yaml"
        path.write_text(yaml.safe_dump(raw))
        loaded = zconfig.load(str(path))
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
        job = getattr(self.daemon, "_job", None)
        guardian = getattr(job, "_guardian", None)
        if guardian is not None and guardian.stdin is not None:
            try:
                guardian.stdin.close()  # the lifeline: the guardian kills the job, then releases the session
            except OSError:
                pass
        self.cut_session()
        self.daemon._queue.put(_DIE)

    def cut_session(self) -> None:
        """What the dead process's socket closing does: no closeSession goes out."""
        cut_kazoo_session(self.daemon._zookeeper.client)

    def teardown(self) -> None:
        self.dead = True
        job = getattr(self.daemon, "_job", None)
        if job is not None:
            job.close()  # "nosession", then the lifeline: the job dies, no session is released

    def client(self) -> Any:
        shell = getattr(self.daemon, "_zookeeper", None)
        return shell.client if shell is not None else None


# ------------------------------------------------------------------- kazoo


def _kazoo_client(settings: Settings) -> KazooClient:
    return client_for(settings.hosts, settings.session_timeout)


class KazooElectionCandidate(Candidate):
    """kazoo's Election recipe + a Popen'd job (bench/kazoo_design.py)."""

    def start(self) -> None:
        s = self.settings
        self.client = _kazoo_client(s)
        instrument_kazoo(self.client, self.counters, on_created=self.joined,
                         on_notification=lambda: self.stamp("notified"))
        self.leader = KazooLeader(self.client, s.election, self.name, s.job_argv,
                                  {**os.environ, **s.job_env}, s.stop_timeout, stamp=self._stamp)
        self.thread = threading.Thread(target=self._guarded, name=self.name, daemon=True)
        self.thread.start()

    def _stamp(self, name: str) -> None:
        if not self.dead:
            self.stamp(name)

    def _guarded(self) -> None:
        try:
            self.client.start(timeout=60)
            # kazoo's Lock creates its node, lists the children and then either leads or
            # waits on its predecessor: the create's answer is "joined" (on_created).
            self.leader.run()
        except Exception as err:
            if not self.dead:
                self.emit("error", self.id, detail=f"{type(err).__name__}: {err}")
            return
        self._left()

    def stop(self) -> None:
        self.leader.request_stop()

    def crash(self) -> None:
        self.dead = True
        self.leader.freeze()
        self.leader.kill_job()  # systemd's KillMode: the job goes with its daemon
        cut_kazoo_session(self.client)

    def teardown(self) -> None:
        self.dead = True
        self.leader.freeze()
        self.leader.kill_job()


# ------------------------------------------------------- herd (kazoo, no recipe)


class HerdCandidate(Candidate):
    def start(self) -> None:
        self.stop_requested = threading.Event()
        self.job: PopenJob | None = None
        self.client = _kazoo_client(self.settings)
        instrument_kazoo(self.client, self.counters, on_notification=lambda: self.stamp("notified"))
        self.thread = threading.Thread(target=self._guarded, name=self.name, daemon=True)
        self.thread.start()

    def _guarded(self) -> None:
        try:
            self._run()
        except Exception as err:  # a crashed candidate's thread dies here, quietly
            if not self.dead:
                self.emit("error", self.id, detail=f"{type(err).__name__}: {err}")
            return
        self._left()

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
            _lead_with_popen(self, self.stop_requested, 0)
            try:
                self.client.delete(key)
            except NoNodeError:
                pass
            self.stamp("handed")
            return

    def stop(self) -> None:
        self.stop_requested.set()

    def crash(self) -> None:
        self.dead = True
        _kill(self.job)
        cut_kazoo_session(self.client)

    def teardown(self) -> None:
        self.dead = True
        _kill(self.job)


def _lead_with_popen(candidate: Any, stop_requested: threading.Event, token: int) -> None:
    """The herd's and etcd's leader: Popen the job, wait for the stop, stop the job."""
    if candidate.dead:
        threading.Event().wait()  # torn down while waiting: never start a job
    candidate.stamp("elected")
    candidate.job = PopenJob(candidate.settings.job_argv, candidate.settings.job_env_for(candidate.name, token),
                             lambda: None)
    candidate.stamp("spawned")
    stop_requested.wait()
    if candidate.dead:
        threading.Event().wait()  # a dead process does nothing more, ever
    candidate.job.stop(candidate.settings.stop_timeout)
    candidate.stamp("reaped")


def _kill(job: PopenJob | None) -> None:
    if job is not None:
        try:
            job.proc.kill()
        except OSError:
            pass


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
        self.job: PopenJob | None = None
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
        _lead_with_popen(self, self.stop_requested, self.lease)
        assert self.keepalive is not None
        self.keepalive.remove(self)
        self._call("/v3/lease/revoke", {"ID": str(self.lease)})  # deletes the key at once
        self.stamp("handed")
        if self.watch is not None:
            self.watch.close()

    def stop(self) -> None:
        self.stop_requested.set()

    def crash(self) -> None:
        self.dead = True
        _kill(self.job)
        if self.keepalive is not None:
            self.keepalive.remove(self)
        if self.watch is not None:
            self.watch.close()
        try:
            self.conn.close()
        except OSError:
            pass
        self.stop_requested.set()

    def teardown(self) -> None:
        self.dead = True
        _kill(self.job)


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


class ZkleaderEtcdCandidate(ZkleaderCandidate):
    """The same daemon elected on etcd (an ``etcd:`` section; zkleader/etcd.py), beside
    the seed-style etcd script (EtcdCandidate): one key per candidate, each follower
    watching only its predecessor's."""

    def coordination(self) -> dict[str, Any]:
        s = self.settings
        return {"etcd": {"endpoints": [f"{h}:{p}" for h, p in s.etcd], "lease_ttl": s.lease_ttl}}

    def cut_session(self) -> None:
        """A dead process's keep-alives stop: the shell is closed (the guardian, whose
        lifeline just closed, revokes the lease once the job is reaped)."""
        self.daemon._zookeeper.close(timeout=0.5)

    def client(self) -> Any:
        return None

    def armed(self) -> bool:
        """Leading, or following with the watch on its predecessor's key created on
        etcd: the core logs "following" before it sends that get + watch, so joined is
        not enough. pyetcd returns a watch id only once etcd answered the watch's
        create, so an armed watch with an id is one the server holds."""
        core = getattr(self.daemon, "core", None)  # built on the candidate's thread
        shell = getattr(self.daemon, "_zookeeper", None)
        if self.dead or core is None or shell is None:
            return False
        view = core.snapshot()
        if view.leader:
            return True
        if view.predecessor is None:
            return False
        path = f"{view.election_path}/{view.predecessor}"
        with shell._lock:
            return any(armed.path == path and armed.watch_id is not None for armed in shell._watches)


DESIGNS: dict[str, type[Candidate]] = {
    "zkleader": ZkleaderCandidate,
    "zkleader-etcd": ZkleaderEtcdCandidate,
    "kazoo": KazooElectionCandidate,
    "herd": HerdCandidate,
    "etcd": EtcdCandidate,
}

__all__ = ["DESIGNS", "Candidate", "Keepalive", "Settings", "KazooException"]
