"""Fault-injection harness and the randomized chaos run.

Used by tests/test_faults.py (one fault per test), tests/test_chaos.py and
tests/test_etcd_chaos.py (short seeded runs in CI) and as a CLI for long runs against
a fresh 3-node ensemble or 3-member etcd:

    .venv/bin/python -m zkleader.testing.chaos --seed 7 --duration 600 --daemons 4
    .venv/bin/python -m zkleader.testing.chaos --backend etcd --seed 7 --duration 300 --daemons 4
    .venv/bin/python -m zkleader.testing.chaos --table results.jsonl   # fault-suite table (FAULT_RESULTS)

The pieces:

``Store``        the seam between the harness and the service the daemons elect on:
                 its members (kill, restart, quorum), its queue (nodes, tokens,
                 owners), the operator's removal of a node, the watch check.
                 ``ZooKeeperStore`` (an ensemble and an observer kazoo client) and
                 ``EtcdStore`` (an etcdcluster.EtcdCluster and a pyetcd client); each
                 names the fault kinds that apply to it (FAULTS, FAULTS_ETCD). The
                 CLI's etcd has peer links (EtcdCluster(peer_links=True)), so that a
                 member can be cut off from its peers while its clients reach it.
``Cluster``      a store, N real daemons each behind its own FaultProxy
                 (one proxy port per member: a host can be cut off silently, or only
                 from the member it talks to; a RawFaultProxy for etcd's gRPC), and a
                 ``JobWatcher``.
``JobWatcher``.
``JobWatcher``   follows the overlap detector's records and polls /proc for every
                 job process it saw start, so each job has an observed end time: the
                 first poll that found it gone. The flock is released when the process
                 exits, so that end is an upper bound of "the lock was free". The test
                 never takes the detector's lock itself (that could fake an overlap).
``run_chaos``    random faults over a bounded time, then heal everything and check:
                 zero overlaps, exactly one leader,
                 fencing tokens strictly increasing across leaderships, every daemon
                 back in the queue. Returns a summary (printed by ``format_summary``).

Times are CLOCK_MONOTONIC everywhere (the detector records it too), so every bound
is a difference of two readings of one clock on one machine.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import math
import os
import random
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter, defaultdict
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

from .daemons import REPO, DaemonGroup, Guardian, JsonLinesTail, guardian_of, wait_for
from .faultproxy import CREATE_OPS, FaultProxy
from .zkserver import Ensemble

#: Events after which a daemon's own log says it leads / no longer leads.
LEAD_ON = {"leader_acquired"}
LEAD_OFF = {"leadership_lost", "session_lost", "node_vanished", "handover", "withdrawn", "stopped", "resigned"}

ProxyFactory = Callable[..., FaultProxy]


# --------------------------------------------------------------------------- jobs


@dataclass
class JobLife:
    """One leader job, from the detector's start record to its observed end."""

    pid: int
    candidate: str
    token: int
    start: float  # detector "start" record: the lock was taken
    stop: float | None = None  # detector "stop"/"exit" record: just before it exits
    stop_kind: str | None = None
    seen_alive: float | None = None  # last poll that found the process alive
    end: float | None = None  # first poll that found it gone (or a zombie): upper bound
    _starttime: str | None = None

    @property
    def alive(self) -> bool:
        return self.end is None

    def end_or(self, now: float) -> float:
        return self.end if self.end is not None else now


def _proc_state(pid: int) -> tuple[str, str] | None:
    """(state, starttime) of a process, or None when it does not exist."""
    try:
        with open(f"/proc/{pid}/stat") as handle:
            text = handle.read()
    except OSError:
        return None
    fields = text[text.rfind(")") + 2 :].split()
    return fields[0], fields[19]


class JobWatcher(threading.Thread):
    """Polls the detector records and /proc; keeps a JobLife per job process."""

    def __init__(self, record_path: Path, interval: float = 0.01) -> None:
        super().__init__(name="job-watcher", daemon=True)
        self.record_path = record_path
        self.interval = interval
        self.jobs: dict[int, JobLife] = {}
        self.overlaps: list[dict[str, Any]] = []
        self._records = JsonLinesTail(record_path)
        self._lock = threading.Lock()
        self._stopping = threading.Event()

    def run(self) -> None:
        while not self._stopping.is_set():
            self.poll()
            self._stopping.wait(self.interval)

    def stop(self) -> None:
        self._stopping.set()
        if self.is_alive():
            self.join(5)

    def poll(self) -> None:
        with self._lock:
            self._read_records()
            for life in self.jobs.values():
                if life.end is not None:
                    continue
                state = _proc_state(life.pid)
                now = time.monotonic()
                if state is None or state[0] in "ZX" or (life._starttime and state[1] != life._starttime):
                    life.end = now
                else:
                    life._starttime = life._starttime or state[1]
                    life.seen_alive = now

    def _read_records(self) -> None:
        for row in self._records.read():
            if row["kind"] == "start":
                self.jobs[row["pid"]] = JobLife(row["pid"], row["candidate"], row["token"], row["t"])
            elif row["kind"] in ("stop", "exit") and row["pid"] in self.jobs:
                self.jobs[row["pid"]].stop = row["t"]
                self.jobs[row["pid"]].stop_kind = row["kind"]
            elif row["kind"] == "overlap":
                self.overlaps.append(row)

    def lives(self) -> list[JobLife]:
        self.poll()
        with self._lock:
            return sorted(self.jobs.values(), key=lambda j: j.start)

    def alive(self) -> list[JobLife]:
        return [j for j in self.lives() if j.alive]

    def started_after(self, t: float) -> list[JobLife]:
        return [j for j in self.lives() if j.start > t]

    def wait_start_after(self, t: float, timeout: float, what: str = "a job start") -> JobLife:
        return wait_for(lambda: next(iter(self.started_after(t)), None), timeout, what)

    def wait_end(self, life: JobLife, timeout: float) -> float:
        return wait_for(lambda: self.jobs[life.pid].end, timeout, f"job pid {life.pid} ({life.candidate}) to end")

    def gaps(self, t0: float, t1: float) -> list[tuple[float, float]]:
        """Intervals inside [t0, t1] during which no job was alive."""
        lives = self.lives()
        spans = sorted((j.start, j.end_or(t1)) for j in lives if j.end_or(t1) > t0 and j.start < t1)
        out, cursor = [], t0
        for start, end in spans:
            if start > cursor:
                out.append((cursor, start))
            cursor = max(cursor, end)
        if cursor < t1:
            out.append((cursor, t1))
        return out


class RawFaultProxy(FaultProxy):
    """A FaultProxy for traffic that is not ZooKeeper's client protocol (the links between
    servers): bytes are forwarded unparsed. FaultProxy's frame parser assumes client
    frames and its loop thread dies on quorum traffic (struct.error in _from_client),
    so this overrides its two parsing hooks (private API of faultproxy.py).
    partition()/heal() work as for FaultProxy; lose_reply_to() does not."""

    def _from_client(self, p: Any, data: bytes) -> None:
        p.c2s += data
        self._stats[p.idx].bytes_c2s += len(data)

    def _from_upstream(self, p: Any, data: bytes) -> None:
        p.s2c += data
        self._stats[p.idx].bytes_s2c += len(data)


# --------------------------------------------------------------------------- daemons


CHATTER = '''\
"""Test-only instrumentation (zkleader.testing.chaos): this daemon's kazoo client sends an
exists() on its own every ZKL_CHATTER_INTERVAL seconds while kazoo thinks it is
connected. Requests count as pings for kazoo, so during a silent partition kazoo
never reports SUSPENDED: only the daemon's own lease clock can stop the job."""
import os, threading, time
_interval = float(os.environ.get("ZKL_CHATTER_INTERVAL", "0") or 0)
if _interval > 0:
    from kazoo.client import KazooClient, KazooState
    _original = KazooClient.start_async
    def start_async(self):
        answer = _original(self)
        def chatter():
            path = os.environ.get("ZKL_CHATTER_PATH", "/")
            while True:
                time.sleep(_interval)
                if self.state == KazooState.CONNECTED:
                    try:
                        self.exists_async(path)
                    except Exception:
                        pass
        threading.Thread(target=chatter, name="chatter", daemon=True).start()
        return answer
    KazooClient.start_async = start_async
'''


class FaultGroup(DaemonGroup):
    """A DaemonGroup whose daemons may each get extra environment variables, or an
    output that nobody reads."""

    def __init__(self, *args: Any, **kw: Any) -> None:
        super().__init__(*args, **kw)
        self.env: dict[str, dict[str, str]] = {}
        self._unread: set[str] = set()
        self._unread_pipes: dict[str, int] = {}  # name -> read end, held open, never read

    def start(self, name: str):  # type: ignore[override]
        daemon = self.daemons[name]
        assert not daemon.alive()
        environment = {**os.environ, **self.env.get(name, {})}
        pipe_in = None
        if name in self._unread:
            if name in self._unread_pipes:  # a restart: the old pipe has no writer left
                os.close(self._unread_pipes.pop(name))
            self._unread_pipes[name], pipe_in = os.pipe()
        with daemon.log_path.open("ab") as log:
            daemon.process = subprocess.Popen(
                [sys.executable, "-m", "zkleader", "run", "-c", str(daemon.config_path)],
                stdout=log if pipe_in is None else pipe_in, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                cwd=REPO, env=environment,
            )
        if pipe_in is not None:
            os.close(pipe_in)
        return daemon

    def stall_output(self, name: str) -> None:
        """From its next start, daemon ``name``'s stdout and stderr (its job's too) are a
        pipe that nothing reads: a stalled log reader. Its log file stays empty, so its
        state has to be read from ZooKeeper and the detector records."""
        self._unread.add(name)

    def fill_output(self, name: str) -> int:
        """Fills what is left of the unread pipe of ``name`` and returns how many bytes
        that took: from now on every write to it blocks. (A flood blocked on a pipe can
        leave room for short writes: the kernel fills a pipe in page-sized slots.) The
        bytes go through a descriptor of our own, non-blocking, so that the daemon's
        stays blocking."""
        fd = os.open(f"/proc/self/fd/{self._unread_pipes[name]}", os.O_WRONLY | os.O_NONBLOCK)
        written = 0
        try:
            while True:
                written += os.write(fd, b"\n")
        except BlockingIOError:
            return written
        finally:
            os.close(fd)

    def close(self) -> None:
        super().close()
        for fd in self._unread_pipes.values():
            os.close(fd)
        self._unread_pipes.clear()

    def chatter(self, name: str, interval: float, path: str = "/") -> None:
        """Make daemon ``name`` (from its next start) send extra requests, see CHATTER."""
        directory = self.workdir / "chatter"
        directory.mkdir(exist_ok=True)
        (directory / "sitecustomize.py").write_text(CHATTER)
        python_path = os.pathsep.join(p for p in (str(directory), os.environ.get("PYTHONPATH", "")) if p)
        self.env.setdefault(name, {}).update(
            PYTHONPATH=python_path, ZKL_CHATTER_INTERVAL=str(interval), ZKL_CHATTER_PATH=path
        )


@dataclass
class Node:
    """One candidacy in the queue, as the store shows it: ``sequence`` orders the queue,
    ``czxid`` is the fencing token (ZooKeeper's czxid, etcd's create revision) and
    ``owner`` the session (ZooKeeper's ephemeralOwner, etcd's lease id)."""

    name: str
    sequence: int
    candidate: str | None
    czxid: int
    owner: int


def _candidate(data: bytes) -> str | None:
    """The candidate a node's JSON names (None for a node that holds something else)."""
    try:
        return json.loads(data)["candidate"]
    except (ValueError, KeyError, TypeError):
        return None


class Store(Protocol):
    """The coordination service the daemons elect on, as the harness needs it: the
    only part of a chaos run that differs between ZooKeeper and etcd. Members are
    numbered 0..size-1 in the order the proxies forward to them."""

    #: The fault kinds that apply to this store, with their weights (see FAULTS).
    faults: dict[str, float]
    #: Members are named <prefix><index + 1> in fault targets: zk1, etcd2.
    member_prefix: str
    size: int

    @property
    def upstreams(self) -> Any:
        """What a proxy forwards to (one proxy port per member)."""

    def daemon_options(self, timeout: float) -> dict[str, Any]:
        """DaemonGroup keywords that put the daemons on this store."""

    def prepare(self, election: str) -> None:
        """Whatever must exist before the first daemon joins."""

    def queue(self, election: str) -> list[Node]:
        """The election's candidacies in queue order."""

    def watch_problems(self, election: str, queue: list[Node]) -> list[str]:
        """Daemons whose watch is not armed on the servers (see Cluster.watch_problems)."""

    def whole(self) -> bool:
        """Every member running and serving."""

    def leader(self) -> int | None:
        """The member that leads the store's own consensus, if one does."""

    def kill(self, index: int) -> None:
        """kill -9 of one member."""

    def start(self, index: int) -> None:
        """Starts a stopped member again (same data), without waiting for it."""

    def stop_all(self, kill: bool) -> None:
        """Stops every member: SIGKILL with ``kill``, else SIGTERM."""

    def start_all(self) -> None:
        """Starts every stopped member, without waiting."""

    def wait_quorum(self, timeout: float) -> float:
        """Until a quorum serves again; the monotonic time it did."""

    def ensure_all(self, timeout: float) -> None:
        """Until every member runs and serves (the end of a chaos run)."""

    def remove_node(self, election: str, node: Node) -> None:
        """What an operator does to take a candidate's node away by hand."""

    def close(self) -> None:
        """Closes the clients the store opened itself; the members are their owner's."""


class ZooKeeperStore:
    """A 3-node ensemble and an observer kazoo client talking to it directly."""

    member_prefix = "zk"

    def __init__(self, ensemble: Ensemble, admin: Any) -> None:
        self.ensemble = ensemble
        self.admin = admin
        self.faults = FAULTS
        self.size = len(ensemble.servers)

    @property
    def upstreams(self) -> Any:
        return self.ensemble

    def daemon_options(self, timeout: float) -> dict[str, Any]:
        return {}  # DaemonGroup's default is a zookeeper: section

    def prepare(self, election: str) -> None:
        self.admin.ensure_path(election)  # so that a daemon's first create is its own node

    def queue(self, election: str) -> list[Node]:
        out = []
        for child in self.admin.get_children(election):
            try:
                data, stat = self.admin.get(f"{election}/{child}")
            except Exception:  # deleted meanwhile
                continue
            out.append(Node(child, int(child.rsplit("-", 1)[1]), _candidate(data), stat.czxid, stat.ephemeralOwner))
        return sorted(out, key=lambda n: n.sequence)

    def watch_problems(self, election: str, queue: list[Node]) -> list[str]:
        """From 'wchc' of every running server: the paths each session watches."""
        watched: dict[int, set[str]] = defaultdict(set)
        for server in self.ensemble.servers:
            if not server.running:
                continue
            session = None
            for line in (server.try_four_letter("wchc") or "").splitlines():
                if line.startswith("0x"):
                    session = int(line.strip(), 16)
                elif line.strip().startswith("/") and session is not None:
                    watched[session].add(line.strip())
        problems = []
        for index, node in enumerate(queue):
            target = queue[index - 1] if index else node
            path = f"{election}/{target.name}"
            if path not in watched.get(node.owner, set()):
                problems.append(f"{node.candidate} (session 0x{node.owner:x}) does not watch {target.name}")
        return problems

    def whole(self) -> bool:
        return all(m is not None for m in self.ensemble.modes())

    def leader(self) -> int | None:
        return self.ensemble.leader()

    def kill(self, index: int) -> None:
        self.ensemble.stop_server(index, kill=True)

    def start(self, index: int) -> None:
        self.ensemble.start_server(index, wait=False)

    def stop_all(self, kill: bool) -> None:
        self.ensemble.stop(kill=kill)

    def start_all(self) -> None:
        self.ensemble.start(wait=False)

    def wait_quorum(self, timeout: float) -> float:
        deadline = time.monotonic() + timeout
        ensemble = self.ensemble
        while True:
            running = [s for s in ensemble.servers if s.running]
            if len(running) >= ensemble.quorum_size and sum(1 for s in running if s.mode()) >= ensemble.quorum_size:
                return time.monotonic()
            if time.monotonic() >= deadline:
                raise AssertionError(f"ensemble not serving after {timeout}s: {ensemble.modes()}")
            time.sleep(0.05)

    def ensure_all(self, timeout: float) -> None:
        self.ensemble.start(wait=True, timeout=timeout)

    def remove_node(self, election: str, node: Node) -> None:
        """Deletes the node (the fault suite's 14)."""
        self.admin.delete(f"{election}/{node.name}")

    def close(self) -> None:
        """The observer client is its creator's to close (a fixture's, or main's)."""


class EtcdStore:
    """A 3-member etcd (etcdcluster.EtcdCluster) and a test client of its own (the
    operator's etcdctl), always on a running member.

    What differs from ZooKeeper, and why (FAULTS_ETCD):

    * the operator's removal is a lease revoke (the fault suite's etcd 6): it deletes
      the key the way an expiry would, and ``etcdctl lease revoke`` is what an
      operator would type;
    * no lost create reply through the proxy: gRPC multiplexes the calls of one
      connection on HTTP/2 streams, so a byte proxy cannot drop one reply (the fault
      suite's etcd 7 loses it at shell level);
    * no chatty daemon: its kazoo instrumentation (CHATTER) shows that requests keep a
      ZooKeeper session alive while kazoo never notices the partition; a plain etcd
      request renews no lease, and the etcd shell gives every call a deadline;
    * no watch check: etcd lists no watchers (nothing like ZooKeeper's 'wchc'); its
      only figure, the gauge etcd_debugging_mvcc_watcher_total, counts a member's
      watchers without naming their keys or leases. What the daemons log (each follower
      follows its real predecessor, Cluster.convergence_problems) is checked instead;
    * a member cut off from its peers (the fault suite's etcd 8) only when the cluster
      has peer links (EtcdCluster(peer_links=True)): without them nothing stands
      between two members to cut, and the mix leaves the kind out.
    """

    member_prefix = "etcd"

    def __init__(self, etcd: Any) -> None:
        self.etcd = etcd
        self.faults = FAULTS_ETCD if etcd.links else {k: w for k, w in FAULTS_ETCD.items()
                                                      if not k.startswith("isolate_")}
        self.size = len(etcd)
        self._admin: tuple[int, Any] | None = None

    @property
    def admin(self) -> Any:
        """A pyetcd client on a running member, replaced once its member is down or once
        an error marked its endpoint failed: pyetcd then refuses every call for 300 s
        ("Trying to use a failed node"), after one "leader changed" as well."""
        import pyetcd  # type: ignore[import-untyped]  # the etcd extra: only when used

        if self._admin is not None and (not self.etcd[self._admin[0]].running
                                        or self._admin[1].endpoint_in_use.is_failed()):
            self._admin[1].close()
            self._admin = None
        if self._admin is None:
            index = next(m.index for m in self.etcd.members if m.running)
            host, port = self.etcd.addresses[index]
            self._admin = (index, pyetcd.client(host=host, port=port, timeout=3))
        return self._admin[1]

    @property
    def upstreams(self) -> Any:
        return self.etcd.addresses

    def daemon_options(self, timeout: float) -> dict[str, Any]:
        if timeout != int(timeout):
            raise ValueError(f"an etcd lease TTL is whole seconds, not {timeout}")
        return {"etcd_lease_ttl": int(timeout)}

    def prepare(self, election: str) -> None:
        """Nothing: etcd keys have no parents."""

    def queue(self, election: str) -> list[Node]:
        """A linearizable range over the election's direct children, named as the
        shell names them (key + create revision)."""
        from zkleader.etcd import sequence

        parent = election + "/"
        out = []
        for kv in self.admin.get_prefix_response(parent).kvs:
            rest = kv.key.decode("utf-8", "replace")[len(parent):]
            if "/" not in rest:
                out.append(Node(rest + sequence(kv.create_revision), kv.create_revision, _candidate(kv.value),
                                kv.create_revision, kv.lease))
        return sorted(out, key=lambda n: n.sequence)

    def watch_problems(self, election: str, queue: list[Node]) -> list[str]:
        """None found: not checkable on etcd (see the class docstring)."""
        return []

    def whole(self) -> bool:
        return all(m.healthy() for m in self.etcd.members)

    def leader(self) -> int | None:
        return self.etcd.leader()

    def kill(self, index: int) -> None:
        self.etcd[index].kill()

    def start(self, index: int) -> None:
        self.etcd[index].start()

    def stop_all(self, kill: bool) -> None:
        for member in self.etcd.members:
            member.stop(kill=kill)

    def start_all(self) -> None:
        for member in self.etcd.members:
            member.start()

    def wait_quorum(self, timeout: float) -> float:
        """Until every running member is healthy (etcd's /health: a leader, and a quorum
        read went through)."""
        try:
            self.etcd.wait_healthy(timeout)
        except Exception as err:  # EtcdStartError: the members' log tails
            raise AssertionError(f"etcd not serving after {timeout}s: {err}") from None
        return time.monotonic()

    def ensure_all(self, timeout: float) -> None:
        self.start_all()
        self.wait_quorum(timeout)

    def remove_node(self, election: str, node: Node) -> None:
        """Revokes the node's lease (``etcdctl lease revoke``)."""
        self.admin.revoke_lease(node.owner)

    def isolate(self, index: int) -> None:
        """Cuts member ``index`` off from the other two, silently; its client port still
        answers (EtcdCluster.isolate)."""
        self.etcd.isolate(index)

    def heal_peers(self) -> None:
        """Every peer link forwards again (EtcdCluster.heal_peers)."""
        self.etcd.heal_peers()

    def close(self) -> None:
        if self._admin is not None:
            self._admin[1].close()
            self._admin = None


class Cluster:
    """N daemons, each behind its own FaultProxy to the store, and what they did."""

    def __init__(self, store: Store | Ensemble, workdir: Path, make_proxy: ProxyFactory, admin: Any = None,
                 election: str = "", session_timeout: float = 2.0, stop_timeout: float = 0.5,
                 job_args: tuple[str, ...] = (), job: dict[str, Any] | None = None) -> None:
        """``store``: what the daemons elect on; an Ensemble with ``admin`` (a kazoo
        client on it) stands for ZooKeeperStore(ensemble, admin), the fault suite's
        form. ``session_timeout`` is T: the session timeout, or the lease TTL on etcd."""
        self.store: Store = ZooKeeperStore(store, admin) if isinstance(store, Ensemble) else store
        self.make_proxy = make_proxy
        self.election = election
        self.T = session_timeout
        self.group = FaultGroup(workdir, "", election, session_timeout=session_timeout,
                                stop_timeout=stop_timeout, job_args=job_args, job=job,
                                **self.store.daemon_options(session_timeout))
        self.proxies: dict[str, FaultProxy] = {}
        self.watcher = JobWatcher(self.group.record_path)
        self.watcher.start()
        self.store.prepare(election)

    @property
    def zookeeper(self) -> ZooKeeperStore:
        assert isinstance(self.store, ZooKeeperStore), "a ZooKeeper-only part of the test bed"
        return self.store

    @property
    def ensemble(self) -> Ensemble:
        """The ZooKeeper ensemble (the fault suite's faults on servers)."""
        return self.zookeeper.ensemble

    @property
    def admin(self) -> Any:
        """The observer kazoo client (the fault suite's operator)."""
        return self.zookeeper.admin

    # ------------------------------------------------------------ daemons

    def add(self, name: str, wait_joined: bool = True, timeout: float = 30, upstreams: Any = None, **job: Any):
        """Starts daemon ``name`` behind a new proxy to ``upstreams`` (default: every member)."""
        proxy = self.make_proxy(upstreams if upstreams is not None else self.store.upstreams, name=f"proxy-{name}")
        self.proxies[name] = proxy
        daemon = self.group.add(name, hosts=proxy.hosts, **job)
        if wait_joined:
            daemon.wait_event("joined", timeout)
        return daemon

    def daemon(self, name: str):
        return self.group.daemons[name]

    def names(self) -> list[str]:
        return list(self.group.daemons)

    def alive_names(self) -> list[str]:
        return [n for n, d in self.group.daemons.items() if d.alive()]

    def restart_daemon(self, name: str, wait_joined: bool = False) -> None:
        daemon = self.daemon(name)
        if daemon.alive():
            return
        joined = len(daemon.events("joined"))
        self.group.start(name)
        if wait_joined:
            daemon.wait_event("joined", 30, count=joined + 1)

    def kill9(self, name: str) -> float:
        sent = self.group.signal(name, signal.SIGKILL)
        self.daemon(name).process.wait(10)
        return sent

    def leading(self, name: str) -> bool:
        """What the daemon's own log says: it acquired leadership and has not lost it since."""
        daemon = self.daemon(name)
        if not daemon.alive():
            return False
        leading = False
        for e in daemon.events():  # the log file spans restarts: "starting" begins a new process
            if e["event"] in LEAD_ON:
                leading = True
            elif e["event"] in LEAD_OFF or e["event"] == "starting":
                leading = False
        return leading

    def log_leaders(self) -> list[str]:
        return [n for n in self.names() if self.leading(n)]

    def own_node(self, name: str) -> str | None:
        """The node the daemon last said it joined with (or recovered after a lost reply)."""
        found = [e["node"] for e in self.daemon(name).events() if e["event"] in ("joined", "create_recovered")]
        return found[-1] if found else None

    # ------------------------------------------------------------ the store's view

    def queue(self) -> list[Node]:
        """The election's nodes in queue order, each with its owner and candidate."""
        return self.store.queue(self.election)

    def zk_leader(self) -> Node | None:
        """The queue's head (on either store; the name is the fault suite's)."""
        queue = self.queue()
        return queue[0] if queue else None

    def job_holder(self) -> str | None:
        """The candidate whose job is alive, when exactly one is."""
        alive = self.watcher.alive()
        return alive[0].candidate if len(alive) == 1 else None

    def server_of(self, name: str) -> int | None:
        """The ensemble member the daemon's live connection goes to (via its proxy)."""
        active = self.proxies[name].active_upstreams(include_partitioned=False)
        return active[0] if len(active) == 1 else None

    def last_heard(self, name: str) -> float:
        """The last moment any byte from this daemon reached a server: no session of it
        can expire before this + T (the server never expires early)."""
        stats = self.proxies[name].stats()["upstreams"]
        return max((s["last_sent_upstream"] or 0.0) for s in stats)

    def last_answered(self, name: str) -> float:
        """The last moment a server's byte reached this daemon: an upper bound of its t_ok."""
        stats = self.proxies[name].stats()["upstreams"]
        return max((s["last_sent_client"] or 0.0) for s in stats)

    # ------------------------------------------------------------ convergence

    def convergence_problems(self, expect_alive: list[str] | None = None) -> list[str]:
        """Why the election is not (yet) settled: exactly one leader (ZooKeeper's lowest
        node, that daemon's log and the one live job agree, token == czxid), every live
        daemon has exactly one node, every follower follows its real predecessor."""
        problems = []
        names = expect_alive if expect_alive is not None else self.alive_names()
        dead = [n for n in names if not self.daemon(n).alive()]
        if dead:
            problems.append(f"daemons not running: {dead}")
        try:
            queue = self.queue()
        except Exception as err:  # e.g. the observer is reconnecting
            return problems + [f"cannot read the queue: {err!r}"]
        by_candidate = Counter(n.candidate for n in queue)
        for name in names:
            if by_candidate[name] != 1:
                problems.append(f"{name} has {by_candidate[name]} node(s)")
        strangers = [n.name for n in queue if n.candidate not in names]
        if strangers:
            problems.append(f"nodes of no running daemon: {strangers}")
        if not queue:
            return problems + ["empty queue"]
        head = queue[0]
        alive = self.watcher.alive()
        if [(j.candidate, j.token) for j in alive] != [(head.candidate, head.czxid)]:
            problems.append(f"live jobs {[(j.candidate, j.token, j.pid) for j in alive]} but the lowest node is "
                            f"{head.candidate}'s (czxid {head.czxid})")
        leaders = self.log_leaders()
        if leaders != [head.candidate]:
            problems.append(f"daemons leading by their logs: {leaders}, lowest node: {head.candidate}")
        for before, node in zip(queue, queue[1:]):
            if node.candidate in names:
                following = self.daemon(node.candidate).events("following")
                if not following or following[-1]["predecessor"] != before.name:
                    last = following[-1]["predecessor"] if following else None
                    problems.append(f"{node.candidate} follows {last}, its predecessor is {before.name}")
        return problems

    def watch_problems(self) -> list[str]:
        """Every daemon's watch is armed on the servers: a follower's on its predecessor's
        node, the leader's on its own node. A daemon that lost a watch would wait forever
        (a stuck state). Only ZooKeeper lists its watches (EtcdStore says why not etcd)."""
        return self.store.watch_problems(self.election, self.queue())

    def wait_converged(self, timeout: float, expect_alive: list[str] | None = None, watches: bool = False) -> str:
        """Waits until convergence_problems() (and, with ``watches``, watch_problems()) is
        empty; returns the leader's name."""
        deadline = time.monotonic() + timeout
        while True:
            problems = self.convergence_problems(expect_alive)
            if not problems and watches:
                problems = self.watch_problems()
            if not problems:
                leader = self.zk_leader()
                assert leader is not None and leader.candidate is not None
                return leader.candidate
            if time.monotonic() >= deadline:
                raise AssertionError(f"not converged after {timeout:g}s: {problems}")
            time.sleep(0.05)

    def token_problems(self) -> list[str]:
        """Fencing tokens only grow: in start order each job's token is at least the
        previous one, and a token belongs to one candidate (one leadership)."""
        problems = []
        owners: dict[int, str] = {}
        previous = None
        for life in self.watcher.lives():
            if owners.setdefault(life.token, life.candidate) != life.candidate:
                problems.append(f"token {life.token} used by {owners[life.token]} and {life.candidate}")
            if previous is not None and life.token < previous.token:
                problems.append(f"token went down: {previous.candidate} {previous.token} -> "
                                f"{life.candidate} {life.token} at t={life.start:.3f}")
            previous = life
        return problems

    def leaderships(self) -> list[tuple[str, int]]:
        seen: list[tuple[str, int]] = []
        for life in self.watcher.lives():
            if not seen or seen[-1] != (life.candidate, life.token):
                seen.append((life.candidate, life.token))
        return seen

    def heal_all(self) -> None:
        for proxy in self.proxies.values():
            proxy.cancel_rules()
            proxy.heal()

    def close(self) -> None:
        for daemon in self.group.daemons.values():
            if daemon.alive():
                try:
                    os.kill(daemon.pid, signal.SIGCONT)
                except ProcessLookupError:
                    pass
        self.group.close()
        self.watcher.stop()

    def describe(self) -> str:
        lines = [f"jobs: {[(j.candidate, j.token, j.pid, round(j.start, 3), j.end and round(j.end, 3)) for j in self.watcher.lives()]}",
                 f"overlaps: {self.group.overlaps()}"]
        return "\n".join(lines) + "\n" + self.group.describe()


# --------------------------------------------------------------------------- results


def percentile(values: list[float], q: float) -> float | None:
    """Nearest-rank percentile (q in 0..100); None for no values."""
    if not values:
        return None
    ordered = sorted(values)
    rank = max(1, math.ceil(q / 100 * len(ordered)))
    return ordered[rank - 1]


def record_result(fault: str, **fields: Any) -> None:
    """Appends one trial's result to $FAULT_RESULTS (JSON lines), when set."""
    path = os.environ.get("FAULT_RESULTS")
    line = json.dumps({"fault": fault, **fields})
    print(f"RESULT {line}")
    if path:
        with open(path, "a") as handle:
            handle.write(line + "\n")


def format_table(rows: list[dict[str, Any]]) -> str:
    """Markdown table per fault: trials, overlaps, failover p50/p99 (seconds)."""
    by_fault: dict[str, list[dict[str, Any]]] = defaultdict(list)
    for row in rows:
        by_fault[row["fault"]].append(row)
    out = ["| fault | trials | overlaps | failover p50 (s) | failover p99 (s) | claim |", "|---|---|---|---|---|---|"]
    for fault, trials in by_fault.items():
        failovers = [t["failover"] for t in trials if t.get("failover") is not None]
        overlaps = sum(t.get("overlaps", 0) for t in trials)
        p50, p99 = percentile(failovers, 50), percentile(failovers, 99)
        claim = trials[-1].get("claim", "")
        out.append(f"| {fault} | {len(trials)} | {overlaps} | {'' if p50 is None else f'{p50:.2f}'} | "
                   f"{'' if p99 is None else f'{p99:.2f}'} | {claim} |")
    return "\n".join(out)


# --------------------------------------------------------------------------- chaos


@dataclass
class Fault:
    kind: str
    target: str
    injected: float
    duration: float
    leader: str | None  # the job holder when the fault was injected
    restore: Callable[[], object] | None = None
    restored: float | None = None
    detail: dict[str, Any] = field(default_factory=dict)
    members: tuple[int, ...] = ()  # the store's members this fault stopped or cut off
    about: str = ""  # what the journal says of the target besides its name


FAULTS: dict[str, float] = {
    # kind: weight
    "kill9_leader": 2,
    "kill9_follower": 1,
    "sigterm_leader": 1,
    "partition_leader": 3,
    "partition_follower": 1,
    "partition_leader_link": 1,
    "chatty_partition_leader": 0,  # needs a chatter daemon; see run_chaos
    "flap_leader": 2,
    "kill_zk_server": 2,
    "quorum_loss": 1,
    "ensemble_restart": 0.5,
    "delete_leader_node": 1,
    # The same with the leader's daemon paused (fault suite 14c): the successor must
    # wait on the old leader's claim until its job is reaped (core/claim.py).
    "delete_paused_leader_node": 1,
    "lost_create_reply": 1,
    "job_crash": 1,
    # A daemon paused alone (no watchdog): its guardian holds the lease and stops the job.
    "sigstop_leader": 2,
    "sigstop_follower": 1,
    # The guardian paused alone (the daemon SIGCONTs it with every stop), or killed.
    # Never combined on one host with its daemon paused or killed: then nobody is left
    # to stop the job (a whole host frozen, the limit fencing tokens cover).
    "sigstop_guardian": 2,
    "kill9_guardian": 1,
    # The leader's guardian paused, then its daemon must stop the job (fault suite 19).
    "paused_guardian_sigterm_leader": 1,
    "paused_guardian_partition_leader": 1,
}

#: The chaos mix on etcd: the same daemon faults, the store's faults on etcd members
#: (quorum_loss keeps its name), the operator's lease revoke in place of the node
#: delete; no lost create reply and no chatty daemon (EtcdStore says why). The revoke
#: only ever hits a leader under no fault of its own: a revoke while the leader's
#: daemon is paused overlaps (etcd fault 6b: it takes the leader's claim with the
#: lease), and one while it is cut off waits in the partition (ZooKeeper's 18).
#: isolate_etcd_member cuts a member off from its peers, its clients still reaching it
#: (their daemons may reconnect to another member); isolate_leaders_etcd_member is the
#: fault suite's etcd 8a/8b, the leader's daemon reaching only that member. Both need
#: peer links (see EtcdStore).
FAULTS_ETCD: dict[str, float] = {
    **{k: w for k, w in FAULTS.items()
       if k not in ("kill_zk_server", "ensemble_restart", "delete_leader_node", "delete_paused_leader_node",
                    "lost_create_reply", "chatty_partition_leader")},
    "kill_etcd_member": 2,
    "etcd_restart": 0.5,
    "revoke_leader_lease": 1,
    "isolate_etcd_member": 2,
    "isolate_leaders_etcd_member": 2,
}


class Chaos:
    def __init__(self, cluster: Cluster, rng: random.Random, log: Callable[[str], None] = print,
                 kinds: list[str] | None = None):
        self.c = cluster
        self._journal = (cluster.group.workdir / "chaos.log").open("a")
        faults = cluster.store.faults
        unknown = sorted(set(kinds or ()) - set(faults))
        if unknown:
            raise ValueError(f"unknown fault kinds {unknown}; known here: {sorted(faults)}")
        self.weights = {k: w if kinds is None or k in kinds else 0 for k, w in faults.items()}
        if "chatty_partition_leader" in faults and (kinds is None or "chatty_partition_leader" in kinds) and any(
                "ZKL_CHATTER_INTERVAL" in env for env in cluster.group.env.values()):
            self.weights["chatty_partition_leader"] = 1
        self.rng = rng
        self.log = log
        self.faults: list[Fault] = []
        self.active: list[Fault] = []
        self.busy_daemons: set[str] = set()
        self.busy_servers: set[int] = set()
        #: Daemons whose guardian is SIGSTOPped now (see FAULTS).
        self.paused_guardians: set[str] = set()
        self.t0 = time.monotonic()

    @property
    def T(self) -> float:
        return self.c.T

    def say(self, text: str) -> None:
        """Progress to the caller's log and to <workdir>/chaos.log, with wall-clock time
        (the daemons' logs carry UTC wall-clock times) and monotonic time."""
        stamp = time.strftime("%H:%M:%S", time.gmtime()) + f".{int(time.time() * 1000) % 1000:03d}Z"
        self._journal.write(f"{stamp} mono={time.monotonic():.3f} {text}\n")
        self._journal.flush()
        self.log(text)

    # ---------------------------------------------------------- choosing

    def leader(self) -> str | None:
        holder = self.c.job_holder()
        if holder is not None:
            return holder
        leaders = self.c.log_leaders()
        return leaders[0] if len(leaders) == 1 else None

    def _free_daemons(self) -> list[str]:
        return [n for n in self.c.alive_names() if n not in self.busy_daemons]

    def _choose(self) -> Fault | None:
        kinds = [k for k, w in self.weights.items() if w > 0]
        weights = [self.weights[k] for k in kinds]
        for _ in range(10):
            kind = self.rng.choices(kinds, weights)[0]
            fault = getattr(self, f"_inject_{kind}")()
            if fault is not None:
                return fault
        return None

    def _new(self, kind: str, target: str, duration: float, **detail: Any) -> Fault:
        fault = Fault(kind, target, time.monotonic(), duration, self.leader(), detail=detail)
        return fault

    def _store_whole(self) -> bool:
        """No fault on a member pending and every member serving (a restarted member may
        still be starting: killing another one then would be a quorum loss)."""
        return not self.busy_servers and self.c.store.whole()

    def _member(self, index: int) -> str:
        return f"{self.c.store.member_prefix}{index + 1}"

    def _leader_target(self) -> str | None:
        leader = self.leader()
        return leader if leader is not None and leader in self._free_daemons() else None

    def _follower_target(self) -> str | None:
        leader = self.leader()
        choices = [n for n in self._free_daemons() if n != leader]
        return self.rng.choice(choices) if choices else None

    # ---------------------------------------------------------- faults

    def _kill(self, target: str | None, kind: str) -> Fault | None:
        if target is None or target in self.paused_guardians or len(self.c.alive_names()) < 3:
            return None
        fault = self._new(kind, target, self.rng.uniform(0.2, 1.5) * self.T)
        self.c.kill9(target)
        fault.restore = lambda: self.c.restart_daemon(target)
        self.busy_daemons.add(target)
        return fault

    def _inject_kill9_leader(self) -> Fault | None:
        return self._kill(self._leader_target(), "kill9_leader")

    def _inject_kill9_follower(self) -> Fault | None:
        return self._kill(self._follower_target(), "kill9_follower")

    def _await_exit(self, fault: Fault, target: str, why: str = "") -> None:
        """After a SIGTERM: the daemon's exit status into the fault, or kill -9 after 15 s."""
        try:
            fault.detail["exit_code"] = self.c.group.wait_exit(target, timeout=15)
        except subprocess.TimeoutExpired:
            fault.detail["exit_code"] = "none 15 s after SIGTERM"
            self.say(f"  {target} did not exit 15 s after SIGTERM{why}: kill -9")
            self.c.kill9(target)

    def _inject_sigterm_leader(self) -> Fault | None:
        target = self._leader_target()
        if target is None or len(self.c.alive_names()) < 3:
            return None
        fault = self._new("sigterm_leader", target, self.rng.uniform(0.2, 1.5) * self.T)
        self.c.group.signal(target, signal.SIGTERM)

        def restore() -> None:
            self._await_exit(fault, target)
            self.c.restart_daemon(target)

        fault.restore = restore
        self.busy_daemons.add(target)
        return fault

    def _partition(self, target: str | None, kind: str, servers: list[int] | None = None,
                   duration: float | None = None) -> Fault | None:
        if target is None:
            return None
        duration = duration if duration is not None else self.rng.uniform(0.2, 2.5) * self.T
        fault = self._new(kind, target, duration, servers=servers)
        proxy = self.c.proxies[target]
        proxy.partition(servers)
        fault.detail["heard"] = self.c.last_heard(target)
        fault.restore = lambda: proxy.heal(servers)
        self.busy_daemons.add(target)
        return fault

    def _inject_partition_leader(self) -> Fault | None:
        return self._partition(self._leader_target(), "partition_leader")

    def _inject_chatty_partition_leader(self) -> Fault | None:
        target = self._leader_target()
        if target is None or "ZKL_CHATTER_INTERVAL" not in self.c.group.env.get(target, {}):
            return None
        return self._partition(target, "chatty_partition_leader")

    def _inject_partition_follower(self) -> Fault | None:
        return self._partition(self._follower_target(), "partition_follower")

    def _inject_partition_leader_link(self) -> Fault | None:
        target = self._leader_target()
        if target is None:
            return None
        server = self.c.server_of(target)
        if server is None:
            return None
        return self._partition(target, "partition_leader_link", servers=[server],
                               duration=self.rng.uniform(0.5, 2.0) * self.T)

    def _inject_flap_leader(self) -> Fault | None:
        target = self._leader_target()
        if target is None:
            return None
        period = self.rng.uniform(0.15, 0.8) * self.T
        duration = self.rng.uniform(1.5, 3.0) * self.T
        fault = self._new("flap_leader", target, duration, period=round(period, 3))
        flapper = self.c.proxies[target].flap(period, duration, down_fraction=self.rng.uniform(0.3, 0.7))
        fault.restore = flapper.stop
        self.busy_daemons.add(target)
        return fault

    def _member_of(self, daemon: str | None) -> int:
        """The member ``daemon`` talks to, when it is known; else any member."""
        server = self.c.server_of(daemon) if daemon else None
        return server if server is not None else self.rng.randrange(self.c.store.size)

    def _kill_member(self, kind: str) -> Fault | None:
        """kill -9 of one member: the one the leader's daemon talks to, when known."""
        if not self._store_whole():
            return None
        store = self.c.store
        server = self._member_of(self._leader_target())
        fault = self._new(kind, self._member(server), self.rng.uniform(0.3, 2.0) * self.T,
                          store_leader=store.leader() == server)
        store.kill(server)
        fault.restore = lambda: store.start(server)
        fault.members = (server,)
        self.busy_servers.add(server)
        return fault

    def _inject_kill_zk_server(self) -> Fault | None:
        return self._kill_member("kill_zk_server")

    def _inject_kill_etcd_member(self) -> Fault | None:
        return self._kill_member("kill_etcd_member")

    def _isolate_member(self, kind: str, daemon: str | None, pin: bool = False) -> Fault | None:
        """The member ``daemon`` talks to (any member for None) cut off from its peers for
        as long as a partition; its clients still reach it, and it may be etcd's leader
        (8b: renewing leases until CheckQuorum deposes it). With ``pin`` the daemon's
        proxy cuts its paths to the other members too, so that it reaches only the cut
        member (the fault suite's etcd 8a/8b); without, it may reconnect elsewhere
        within its lease. The journal line says which member it was and who used it."""
        if not self._store_whole():
            return None
        store = self.c.store
        assert isinstance(store, EtcdStore), f"{kind} is in the etcd mix only"
        server = self._member_of(daemon)
        role = "etcd leader" if store.leader() == server else "etcd follower"
        clients = [n for n in self.c.alive_names() if self.c.server_of(n) == server]
        fault = self._new(kind, self._member(server), self.rng.uniform(0.2, 2.5) * self.T,
                          etcd_role=role, clients=clients)
        fault.about = f"[{role}; clients {', '.join(clients) or 'none'}]"
        others = [i for i in range(store.size) if i != server]
        pinned = daemon if pin else None
        if pinned is not None:
            self.c.proxies[pinned].partition(others)
            self.busy_daemons.add(pinned)
            fault.about += f" {pinned} reaches only {fault.target}"
        store.isolate(server)

        def restore() -> None:
            store.heal_peers()
            if pinned is not None:
                self.c.proxies[pinned].heal(others)
                self.busy_daemons.discard(pinned)

        fault.restore = restore
        fault.members = (server,)
        self.busy_servers.add(server)
        return fault

    def _inject_isolate_etcd_member(self) -> Fault | None:
        """Mostly the leader's member, sometimes a follower's, sometimes any."""
        roll = self.rng.random()
        return self._isolate_member("isolate_etcd_member", self._leader_target() if roll < 0.5 else
                                    self._follower_target() if roll < 0.75 else None)

    def _inject_isolate_leaders_etcd_member(self) -> Fault | None:
        """The fault suite's etcd 8: the leader's daemon can reach only its member, which
        is cut off from its peers, so its lease clock must stop the job."""
        leader = self._leader_target()
        if leader is None or self.c.server_of(leader) is None:
            return None
        return self._isolate_member("isolate_leaders_etcd_member", leader, pin=True)

    def _inject_quorum_loss(self) -> Fault | None:
        if not self._store_whole():
            return None
        store = self.c.store
        victims = self.rng.sample(range(store.size), store.size // 2 + 1)
        fault = self._new("quorum_loss", ",".join(self._member(v) for v in victims),
                          self.rng.uniform(0.3, 2.0) * self.T)
        for v in victims:
            store.kill(v)

        def restore() -> None:
            for v in victims:
                store.start(v)
            fault.detail["quorum_back"] = store.wait_quorum(60)

        fault.restore = restore
        fault.members = tuple(victims)
        self.busy_servers.update(victims)
        return fault

    def _restart_store(self, kind: str) -> Fault | None:
        """Every member stopped (SIGTERM or SIGKILL), then started again."""
        if not self._store_whole():
            return None
        store = self.c.store
        fault = self._new(kind, f"{store.member_prefix}*", self.rng.uniform(0.1, 1.0) * self.T)
        store.stop_all(kill=self.rng.random() < 0.5)

        def restore() -> None:
            store.start_all()
            fault.detail["quorum_back"] = store.wait_quorum(60)

        fault.restore = restore
        fault.members = tuple(range(store.size))
        self.busy_servers.update(fault.members)
        return fault

    def _inject_ensemble_restart(self) -> Fault | None:
        return self._restart_store("ensemble_restart")

    def _inject_etcd_restart(self) -> Fault | None:
        return self._restart_store("etcd_restart")

    def _remove_leader_node(self, kind: str) -> Fault | None:
        """The operator takes the leader's node away (ZooKeeperStore / EtcdStore
        .remove_node), only from a leader under no fault of its own, with every member
        up (see FAULTS_ETCD)."""
        target = self._leader_target()
        if target is None or self.busy_servers:
            return None
        try:
            head = self.c.zk_leader()
        except Exception as err:  # e.g. etcd's "leader changed" as a healed member's higher term deposes the leader
            self.say(f"  no {kind}: the queue could not be read ({err!r})")
            return None
        if head is None or head.candidate != target:
            return None
        fault = self._new(kind, target, 0.0, node=head.name, session=head.owner)
        try:
            self.c.store.remove_node(self.c.election, head)
        except Exception as err:
            fault.detail["error"] = repr(err)
        return fault

    def _inject_delete_leader_node(self) -> Fault | None:
        return self._remove_leader_node("delete_leader_node")

    def _inject_delete_paused_leader_node(self) -> Fault | None:
        """SIGSTOP of the leader's daemon alone (as sigstop_leader), then the operator's
        delete of its node: only the claim keeps the successor from starting beside
        the job, until the daemon wakes and reaps it (or its guardian stops it on the
        lease and the session expires)."""
        target = self._leader_target()
        if target is None or self.busy_servers:
            return None
        head = self.c.zk_leader()
        if head is None or head.candidate != target:
            return None
        fault = self._sigstop(target, "delete_paused_leader_node")
        if fault is None:
            return None
        fault.detail.update(node=head.name, session=head.owner)
        try:
            self.c.store.remove_node(self.c.election, head)
        except Exception as err:
            fault.detail["error"] = repr(err)
        return fault

    def _inject_revoke_leader_lease(self) -> Fault | None:
        return self._remove_leader_node("revoke_leader_lease")

    def _inject_lost_create_reply(self) -> Fault | None:
        target = self._follower_target()
        if target is None or self.busy_servers:
            return None
        node = next((n for n in self.c.queue() if n.candidate == target), None)
        if node is None:
            return None
        fault = self._new("lost_create_reply", target, 0.0, node=node.name)
        rule = self.c.proxies[target].lose_reply_to(CREATE_OPS)
        fault.detail["rule"] = rule
        try:
            self.c.store.remove_node(self.c.election, node)  # it rejoins: a create whose reply is lost
        except Exception as err:
            fault.detail["error"] = repr(err)
        return fault

    def _inject_job_crash(self) -> Fault | None:
        alive = self.c.watcher.alive()
        if len(alive) != 1 or alive[0].candidate in self.busy_daemons:
            return None
        fault = self._new("job_crash", alive[0].candidate, 0.0, pid=alive[0].pid)
        try:
            os.kill(alive[0].pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        return fault

    def _sigstop(self, target: str | None, kind: str) -> Fault | None:
        """The daemon alone is paused (no watchdog), longer than T at times: its
        guardian must stop the job on the lease it was given."""
        if target is None or target in self.paused_guardians:
            return None
        fault = self._new(kind, target, self.rng.uniform(0.3, 2.0) * self.T)
        self.c.group.signal(target, signal.SIGSTOP)
        fault.restore = lambda: self.c.group.signal(target, signal.SIGCONT)
        self.busy_daemons.add(target)
        return fault

    def _inject_sigstop_leader(self) -> Fault | None:
        return self._sigstop(self._leader_target(), "sigstop_leader")

    def _inject_sigstop_follower(self) -> Fault | None:
        return self._sigstop(self._follower_target(), "sigstop_follower")

    def _guardian_target(self) -> tuple[str, Guardian] | None:
        """Mostly the leader's guardian, sometimes a follower's (one that may become
        leader while paused). Never on a daemon under a fault of its own: a paused or
        killed daemon with a paused guardian is the frozen host (FAULTS); the faults
        injected later on the same daemon (partition, SIGTERM, ...) are what matter."""
        name = self._leader_target() if self.rng.random() < 0.7 else self._follower_target()
        if name is None or name in self.paused_guardians:
            return None
        guardian = guardian_of(self.c.daemon(name).pid)
        return None if guardian is None else (name, guardian)

    def _inject_sigstop_guardian(self) -> Fault | None:
        found = self._guardian_target()
        if found is None:
            return None
        name, guardian = found
        fault = self._new("sigstop_guardian", name, self.rng.uniform(0.3, 2.5) * self.T, guardian=guardian.pid)
        if not guardian.signal(signal.SIGSTOP):
            return None
        self.paused_guardians.add(name)

        def restore() -> None:
            guardian.signal(signal.SIGCONT)  # a no-op if it is gone (or the daemon resumed it)
            self.paused_guardians.discard(name)

        fault.restore = restore
        return fault

    def _pause_leaders_guardian(self, kind: str, duration: float) -> tuple[Fault, Guardian] | None:
        """Pauses the leader's guardian for a fault that then makes its daemon stop the job."""
        target = self._leader_target()
        if target is None or target in self.paused_guardians or len(self.c.alive_names()) < 3:
            return None
        guardian = guardian_of(self.c.daemon(target).pid)
        if guardian is None:
            return None
        fault = self._new(kind, target, duration, guardian=guardian.pid)
        if not guardian.signal(signal.SIGSTOP):
            return None
        self.paused_guardians.add(target)
        self.busy_daemons.add(target)
        return fault, guardian

    def _inject_paused_guardian_sigterm_leader(self) -> Fault | None:
        """Fault 19a: the daemon hands over while its guardian is paused."""
        paused = self._pause_leaders_guardian("paused_guardian_sigterm_leader", self.rng.uniform(0.5, 1.5) * self.T)
        if paused is None:
            return None
        fault, guardian = paused
        target = fault.target
        self.c.group.signal(target, signal.SIGTERM)

        def restore() -> None:
            self._await_exit(fault, target, " (its guardian paused)")
            guardian.signal(signal.SIGCONT)
            self.paused_guardians.discard(target)
            self.c.restart_daemon(target)

        fault.restore = restore
        return fault

    def _inject_paused_guardian_partition_leader(self) -> Fault | None:
        """Fault 19b: the leader is cut off while its guardian is paused; its daemon's
        lease runs out (when the cut lasts long enough) and it must stop the job."""
        paused = self._pause_leaders_guardian("paused_guardian_partition_leader", self.rng.uniform(0.5, 2.5) * self.T)
        if paused is None:
            return None
        fault, guardian = paused
        target = fault.target
        proxy = self.c.proxies[target]
        proxy.partition()
        fault.detail["heard"] = self.c.last_heard(target)

        def restore() -> None:
            proxy.heal()
            guardian.signal(signal.SIGCONT)
            self.paused_guardians.discard(target)

        fault.restore = restore
        return fault

    def _inject_kill9_guardian(self) -> Fault | None:
        found = self._guardian_target()
        if found is None:
            return None
        name, guardian = found
        fault = self._new("kill9_guardian", name, 0.0, guardian=guardian.pid)
        guardian.signal(signal.SIGKILL)  # the daemon sweeps its orphans and starts a new one
        return fault

    # ---------------------------------------------------------- running

    def _restore(self, fault: Fault) -> None:
        if fault.restore is not None:
            fault.restore()
        fault.restored = time.monotonic()
        if fault.kind not in ("sigstop_guardian", "kill9_guardian"):
            self.busy_daemons.discard(fault.target)
        self.busy_servers.difference_update(fault.members)
        self.active.remove(fault)
        self.say(f"  {fault.restored - self.t0:7.2f}s restored {fault.kind} {fault.target}")

    def run(self, duration: float, max_active: int = 2) -> None:
        end = self.t0 + duration
        while time.monotonic() < end:
            now = time.monotonic()
            for fault in sorted(self.active, key=lambda f: f.injected + f.duration):
                if now >= fault.injected + fault.duration:
                    self._restore(fault)
            if len(self.active) < max_active and (not self.active or self.rng.random() < 0.25):
                chosen = self._choose()
                if chosen is not None:
                    self.faults.append(chosen)
                    self.active.append(chosen)
                    self.say(f"  {chosen.injected - self.t0:7.2f}s {chosen.kind} {chosen.target} "
                             f"(leader {chosen.leader}, {chosen.duration:.2f}s) {chosen.about}".rstrip())
                    if chosen.restore is None:
                        self._restore(chosen)
            time.sleep(self.rng.uniform(0.3, 1.2) * self.T)
        for fault in list(self.active):
            self._restore(fault)


@dataclass
class ChaosResult:
    seed: int
    duration: float
    daemons: int
    faults: list[Fault]
    lives: list[JobLife]
    overlaps: list[dict[str, Any]]
    leaderships: list[tuple[str, int]]
    token_problems: list[str]
    final_leader: str
    max_gap: float
    gap_at: float
    gap_faults: list[str]
    load: tuple[float, float, float]
    recoveries: dict[str, list[float]]
    after_heal: dict[str, list[float]]
    interruptions: Counter
    settle: float
    t0: float

    def problems(self) -> list[str]:
        out = list(self.token_problems)
        if self.overlaps:
            out.append(f"{len(self.overlaps)} overlap(s): {self.overlaps}")
        # A SIGTERMed daemon hands over and exits 0; 71 means it left its job unreaped.
        unclean = [f"{f.kind} {f.target} @{f.injected - self.t0:.1f}s: exit {f.detail['exit_code']}"
                   for f in self.faults if "exit_code" in f.detail and f.detail["exit_code"] != 0]
        if unclean:
            out.append(f"SIGTERM without a clean exit: {unclean}")
        return out


def analyse(chaos: Chaos, seed: int, duration: float, final_leader: str, settle: float, t_end: float) -> ChaosResult:
    c = chaos.c
    lives = c.watcher.lives()
    gaps = c.watcher.gaps(lives[0].start if lives else chaos.t0, t_end)
    longest = max(gaps, key=lambda g: g[1] - g[0], default=(0.0, 0.0))
    gap_faults = [f"{f.kind} {f.target} @{f.injected - chaos.t0:.1f}s"
                  for f in chaos.faults
                  if f.injected <= longest[1] and (f.restored or f.injected) >= longest[0] - 2 * c.T]
    recoveries: dict[str, list[float]] = defaultdict(list)
    after_heal: dict[str, list[float]] = defaultdict(list)
    interruptions: Counter = Counter()
    for job in lives:
        if job.end is None:
            continue
        # The cause of a job's end: the latest fault injected while it ran (a job that
        # ended with no fault injected is a restart of the same leadership, e.g. after
        # a lease ran out during an earlier fault: it goes to that fault).
        causes = [f for f in chaos.faults if f.injected <= job.end + 0.05]
        if not causes:
            continue
        cause = causes[-1]
        alive_until = job.stop or job.seen_alive or job.start
        successor = next((j for j in lives if j.start > alive_until and j.pid != job.pid), None)
        interruptions[cause.kind] += 1
        if successor is None:
            continue
        recoveries[cause.kind].append(successor.start - cause.injected)
        if cause.restored is not None and cause.restored > cause.injected:
            after_heal[cause.kind].append(max(0.0, successor.start - cause.restored))
    return ChaosResult(
        seed=seed, duration=duration, daemons=len(c.names()), faults=chaos.faults, lives=lives,
        overlaps=c.group.overlaps(), leaderships=c.leaderships(), token_problems=c.token_problems(),
        final_leader=final_leader, max_gap=longest[1] - longest[0], gap_at=longest[0] - chaos.t0,
        gap_faults=gap_faults, load=os.getloadavg(),
        recoveries=dict(recoveries), after_heal=dict(after_heal), interruptions=interruptions, settle=settle, t0=chaos.t0,
    )


def format_summary(result: ChaosResult) -> str:
    counts = Counter(f.kind for f in result.faults)
    lines = [
        f"chaos seed={result.seed} duration={result.duration:g}s daemons={result.daemons}",
        f"faults injected: {len(result.faults)} ({', '.join(f'{k} {v}' for k, v in sorted(counts.items()))})",
        f"leader changes: {max(0, len(result.leaderships) - 1)} (leaderships {len(result.leaderships)}, "
        f"job starts {len(result.lives)})",
        f"overlaps: {len(result.overlaps)}",
        f"max time with no leader job: {result.max_gap:.2f}s (from t={result.gap_at:.1f}s; faults around it: "
        f"{', '.join(result.gap_faults) or 'none'})",
        f"settled after heal-all in {result.settle:.2f}s; final leader {result.final_leader}",
        f"fencing tokens: {'strictly increasing across leaderships' if not result.token_problems else result.token_problems}",
        "failover per fault type: a job that ended is charged to the latest fault injected before its end;",
        "failover = that fault -> the next job start; 'after heal' = the fault's end (heal, restart) -> next job start",
        "| fault | injected | jobs ended | failover p50 (s) | failover p99 (s) | after heal p50 (s) | after heal p99 (s) |",
        "|---|---|---|---|---|---|---|",
    ]
    fmt = lambda v: "" if v is None else f"{v:.2f}"  # noqa: E731
    for kind in sorted(counts):
        values = result.recoveries.get(kind, [])
        healed = result.after_heal.get(kind, [])
        lines.append(f"| {kind} | {counts[kind]} | {result.interruptions.get(kind, 0)} | {fmt(percentile(values, 50))} | "
                     f"{fmt(percentile(values, 99))} | {fmt(percentile(healed, 50))} | {fmt(percentile(healed, 99))} |")
    lines.append(f"load average at the end: {' '.join(f'{x:.1f}' for x in result.load)} ({os.cpu_count()} CPUs)")
    problems = result.problems()
    lines.append("verdict: " + ("OK" if not problems else "FAILED: " + "; ".join(problems)))
    return "\n".join(lines)


def run_chaos(cluster: Cluster, seed: int, duration: float, daemons: int,
              chatter: bool = True, settle_timeout: float = 60.0, log: Callable[[str], None] = print,
              kinds: list[str] | None = None) -> ChaosResult:
    """Starts ``daemons`` daemons on ``cluster``, injects random faults for ``duration``
    seconds, heals everything and waits for one leader; returns what happened.
    Safety checks are the caller's (result.problems())."""
    rng = random.Random(seed)
    names = [f"d{i}" for i in range(daemons)]
    chatter = chatter and "chatty_partition_leader" in cluster.store.faults
    for index, name in enumerate(names):
        if chatter and index == 0:
            cluster.group.chatter(name, 0.05, cluster.election)
        cluster.add(name)
    cluster.wait_converged(30, names)
    chaos = Chaos(cluster, rng, log=log, kinds=kinds)
    log(f"chaos: seed {seed}, {duration:g}s, {daemons} daemons, T={cluster.T:g}s")
    try:
        chaos.run(duration)
    finally:
        for fault in list(chaos.active):
            chaos._restore(fault)
    # Heal everything, bring every server and daemon back, and wait for one leader.
    t_heal = time.monotonic()
    cluster.heal_all()
    for name in names:
        if not cluster.daemon(name).alive():
            cluster.restart_daemon(name)
    cluster.store.ensure_all(60)
    leader = cluster.wait_converged(settle_timeout, names)
    settle = time.monotonic() - t_heal
    time.sleep(cluster.T)  # a second job, if any were to start, would have by now
    leader = cluster.wait_converged(settle_timeout, names, watches=True)
    return analyse(chaos, seed, duration, leader, settle, time.monotonic())


# --------------------------------------------------------------------------- CLI


@contextlib.contextmanager
def _fresh_store(backend: str, workdir: Path) -> Iterator[tuple[Store, ProxyFactory]]:
    """A fresh 3-member store of the chosen kind and a factory of proxies to it (a
    RawFaultProxy for etcd: its gRPC bytes are no ZooKeeper frames); etcd's members
    reach each other through peer links, for the isolate_* faults. Everything started
    here is closed on the way out."""
    proxies: list[FaultProxy] = []
    proxy_class = RawFaultProxy if backend == "etcd" else FaultProxy

    def make_proxy(upstreams: Any, **kw: Any) -> FaultProxy:
        proxy = proxy_class(upstreams, **kw)
        proxies.append(proxy)
        return proxy

    def close_proxies() -> None:
        for proxy in proxies:
            proxy.close()

    with contextlib.ExitStack() as stack:
        stack.callback(close_proxies)
        if backend == "etcd":
            from .etcdcluster import EtcdCluster

            etcd = stack.enter_context(EtcdCluster(workdir / "etcd", 3, peer_links=True))
            store: Store = EtcdStore(etcd)
        else:
            from kazoo.client import KazooClient

            ensemble = Ensemble(workdir / "zk", size=3)
            stack.callback(ensemble.close)
            ensemble.start(timeout=90)
            admin = KazooClient(hosts=ensemble.hosts, timeout=10.0,
                                connection_retry={"max_tries": -1, "delay": 0.05, "max_delay": 1.0})
            stack.callback(lambda: (admin.stop(), admin.close()))
            admin.start(timeout=30)
            store = ZooKeeperStore(ensemble, admin)
        stack.callback(store.close)
        yield store, make_proxy


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--backend", choices=("zookeeper", "etcd"), default="zookeeper",
                        help="the store the daemons elect on: a fresh 3-node ensemble or 3-member etcd")
    parser.add_argument("--seed", type=int, default=None, help="random seed (default: random, printed)")
    parser.add_argument("--duration", type=float, default=300.0, help="seconds of fault injection")
    parser.add_argument("--daemons", type=int, default=4)
    parser.add_argument("--session-timeout", type=float, default=None,
                        help="T: session timeout (default 2 s) or etcd lease TTL (whole seconds, default 4)")
    parser.add_argument("--stop-timeout", type=float, default=0.5)
    parser.add_argument("--faults", help="only these fault kinds, comma-separated (default: all; see FAULTS, "
                                         "FAULTS_ETCD)")
    parser.add_argument("--no-chatter", action="store_true", help="no daemon with extra kazoo requests")
    parser.add_argument("--workdir", type=Path, help="keep logs here (default: a temporary directory)")
    parser.add_argument("--table", type=Path, help="only print the fault-suite table of a FAULT_RESULTS file")
    args = parser.parse_args(argv)
    if args.table:
        rows = [json.loads(line) for line in args.table.read_text().splitlines() if line.strip()]
        print(format_table(rows))
        return 0
    seed = args.seed if args.seed is not None else random.SystemRandom().randrange(2**31)
    timeout = args.session_timeout or (4.0 if args.backend == "etcd" else 2.0)
    workdir = args.workdir or Path(tempfile.mkdtemp(prefix="zkleader-chaos-"))
    workdir.mkdir(parents=True, exist_ok=True)
    print(f"workdir {workdir} (daemon logs, detector records, {args.backend} logs)")
    cluster = None
    try:
        with _fresh_store(args.backend, workdir) as (store, make_proxy):
            groupdir = workdir / "daemons"
            groupdir.mkdir(exist_ok=True)
            cluster = Cluster(store, groupdir, make_proxy, election=f"/zkleader-chaos/seed-{seed}-{os.getpid()}",
                              session_timeout=timeout, stop_timeout=args.stop_timeout)
            try:
                started = time.monotonic()
                kinds = args.faults.split(",") if args.faults else None
                result = run_chaos(cluster, seed, args.duration, args.daemons, chatter=not args.no_chatter,
                                   kinds=kinds)
                print(format_summary(result))
                print(f"wall time {time.monotonic() - started:.1f}s; reproduce: .venv/bin/python -m "
                      f"zkleader.testing.chaos --backend {args.backend} --seed {seed} --duration {args.duration:g} "
                      f"--daemons {args.daemons}" + (f" --faults {args.faults}" if args.faults else ""))
                return 0 if not result.problems() else 1
            finally:
                cluster.close()
    except AssertionError as err:
        print(f"FAILED: {err}")
        if cluster is not None:
            print(cluster.describe())
        return 1


if __name__ == "__main__":
    sys.exit(main())
