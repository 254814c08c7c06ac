"""The benchmark: zkleader against kazoo's Election recipe + a Popen'd job (a careful
kazoo user's leader), the classic herd and etcd's lease design, on a loopback 3-node
ensemble and a standalone server, for growing numbers of candidates (in-process
cells, bench/worker.py), and real daemon processes of zkleader and the kazoo design
side by side (bench/processes.py: footprint, SIGTERM, kill -9, SIGSTOP). Run it through
scripts/bench; see README.md ("Benchmark") and results/bench.md for what each figure
means.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import platform
import queue
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from zkleader.testing.daemons import JsonLinesTail
from zkleader.testing.zkserver import Ensemble, ZooKeeperServer

from . import etcd

REPO = Path(__file__).resolve().parent.parent

MARKER = REPO / "bench" / "jobs" / "marker.py"
MARKER_C = REPO / "bench" / "jobs" / "marker.c"
ZK_DESIGNS = ("zkleader", "kazoo", "herd")
#: The designs a cell runs against etcd: the seed-style lease script, and zkleader's etcd backend.
ETCD_DESIGNS = ("etcd", "zkleader-etcd")


def log(text: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {text}", flush=True)


def percentile(values: list[float], q: float) -> float | None:
    """Nearest-rank percentile (p99 of 20 samples is the largest: no interpolation
    flatters a small sample)."""
    if not values:
        return None
    ordered = sorted(values)
    rank = max(1, math.ceil(q / 100 * len(ordered)))
    return ordered[rank - 1]


# ------------------------------------------------------------------ plumbing


class Records:
    """The marker jobs' shared JSON-lines file: who started a job when, overlaps."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._tail = JsonLinesTail(path)
        self.rows: list[dict[str, Any]] = []

    def poll(self) -> list[dict[str, Any]]:
        new = self._tail.read()
        self.rows.extend(new)
        return new

    def wait_start(self, after: float, exclude: str | None, timeout: float) -> dict[str, Any] | None:
        deadline = time.monotonic() + timeout
        while True:
            for row in self.rows + self.poll():
                if row["kind"] == "start" and row["t"] > after and row["candidate"] != exclude:
                    return row
            if time.monotonic() > deadline:
                return None
            time.sleep(0.002)

    def overlaps(self, until: float) -> int:
        self.poll()
        return sum(1 for r in self.rows if r["kind"] == "overlap" and r["t"] <= until)


class Workers:
    """The candidate processes of one cell and their event streams."""

    def __init__(self, settings: dict[str, Any], count: int, code: Path = REPO, nice: int = 0) -> None:
        """``nice``: the workers' (and so their guardians' and jobs') niceness. On one
        small machine the candidates, which in production run on hosts of their own,
        otherwise starve the servers: etcd's raft heartbeats miss, its leader changes,
        and every candidate's requests fail at once."""
        self.events: queue.Queue[dict[str, Any]] = queue.Queue()
        self.procs: list[subprocess.Popen[str]] = []
        self.owner: dict[int, int] = {}
        self.history: list[dict[str, Any]] = []
        self._seq = 0
        env = {**os.environ, "PYTHONUNBUFFERED": "1"}
        for index in range(count):
            niced = ["nice", "-n", str(nice)] if nice else []
            proc = subprocess.Popen([*niced, sys.executable, "-m", "bench.worker"], cwd=code, env=env, text=True,
                                    stdin=subprocess.PIPE, stdout=subprocess.PIPE, bufsize=1)
            assert proc.stdin is not None
            proc.stdin.write(json.dumps(settings) + "\n")
            proc.stdin.flush()
            self.procs.append(proc)
            threading.Thread(target=self._read, args=(index, proc), daemon=True).start()
        self.wait(lambda e: e["ev"] == "ready", count, 60)

    def _read(self, index: int, proc: subprocess.Popen[str]) -> None:
        assert proc.stdout is not None
        for line in proc.stdout:
            event = json.loads(line)
            event["worker"] = index
            self.events.put(event)

    def send(self, index: int, command: dict[str, Any]) -> None:
        stdin = self.procs[index].stdin
        assert stdin is not None
        stdin.write(json.dumps(command) + "\n")
        stdin.flush()

    def add(self, ids: list[int], index: int | None = None) -> None:
        """Round-robin over the workers unless one is given."""
        slices: dict[int, list[int]] = {}
        for n, ident in enumerate(ids):
            w = index if index is not None else n % len(self.procs)
            self.owner[ident] = w
            slices.setdefault(w, []).append(ident)
        for w, chunk in slices.items():
            self.send(w, {"op": "add", "ids": chunk})

    def drain(self) -> None:
        while True:
            try:
                event = self.events.get_nowait()
            except queue.Empty:
                return
            self._note(event)

    def _note(self, event: dict[str, Any]) -> None:
        self.history.append(event)
        if event["ev"] == "error":
            log(f"    candidate c{event['id']}: {event.get('detail')}")

    def wait(self, match: Callable[[dict[str, Any]], bool], count: int, timeout: float) -> list[dict[str, Any]]:
        """Waits until `count` events (from now or already seen) match."""
        found = [e for e in self.history if match(e)]
        deadline = time.monotonic() + timeout
        while len(found) < count:
            left = deadline - time.monotonic()
            if left <= 0:
                raise TimeoutError(f"{len(found)} of {count} events after {timeout:g}s")
            try:
                event = self.events.get(timeout=left)
            except queue.Empty:
                continue
            self._note(event)
            if match(event):
                found.append(event)
        return found

    def counters(self) -> dict[str, Any]:
        self._seq += 1
        seq = self._seq
        for w in range(len(self.procs)):
            self.send(w, {"op": "counters", "seq": seq})
        replies = self.wait(lambda e: e["ev"] == "counters" and e.get("seq") == seq, len(self.procs), 30)
        total: dict[str, Any] = {"requests": 0, "by_kind": {}, "periodic": 0, "pings": 0, "notifications": 0,
                                 "per": {}, "threads": 0, "armed": 0, "suspended": 0, "sessions_lost": 0}
        for r in replies:
            for kind, count in r["requests"].items():
                total["by_kind"][kind] = total["by_kind"].get(kind, 0) + count
                total["requests"] += count
            for key in ("periodic", "pings", "notifications", "threads", "armed", "suspended", "sessions_lost"):
                total[key] += r[key]
            total["per"].update(r["per"])
        return total

    def rss_cpu(self) -> tuple[int, float]:
        """Summed RSS (bytes) and CPU seconds of the worker processes."""
        rss = 0
        cpu = 0.0
        tick = os.sysconf("SC_CLK_TCK")
        for proc in self.procs:
            try:
                status = Path(f"/proc/{proc.pid}/status").read_text()
                rss += int(next(line for line in status.splitlines() if line.startswith("VmRSS:")).split()[1]) * 1024
                fields = Path(f"/proc/{proc.pid}/stat").read_text().rsplit(")", 1)[1].split()
                cpu += (int(fields[11]) + int(fields[12])) / tick
            except (OSError, StopIteration):
                pass
        return rss, cpu

    def pss(self) -> dict[str, float]:
        """PSS (MB) of the worker processes and, apart, of all their descendants (zkleader:
        each candidate's guardian, which a real daemon has too; the others: the leader's
        job), from smaps_rollup: shared pages are split among the processes that map them,
        so the sum is what the candidates cost the machine."""
        from zkleader.guardian import children_of

        from .processes import memory

        tree = children_of()
        workers = [proc.pid for proc in self.procs]
        descendants: list[int] = []
        todo = list(workers)
        while todo:
            kids = [pid for pid, _ in tree.get(todo.pop(), [])]
            descendants.extend(kids)
            todo.extend(kids)

        def total(pids: list[int]) -> float:
            mb = 0.0
            for pid in pids:
                try:
                    mb += memory(pid)["pss_mb"]
                except OSError:
                    pass  # gone meanwhile
            return mb

        return {"workers_mb": total(workers), "descendants_mb": total(descendants),
                "descendants": float(len(descendants))}

    def close(self) -> None:
        for w, proc in enumerate(self.procs):
            if proc.poll() is None:
                try:
                    self.send(w, {"op": "quit"})
                except (BrokenPipeError, ValueError):
                    pass
        deadline = time.monotonic() + 15
        for proc in self.procs:
            try:
                proc.wait(max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()


# --------------------------------------------------------------------- servers


class Backend:
    """The servers one design runs against, with the server-side counters."""

    def __init__(self, kind: str, topology: str, workdir: Path, tick_ms: int, etcd_raft_ms: tuple[int, int]) -> None:
        self.kind = kind
        self.topology = topology
        self.zk: Ensemble | ZooKeeperServer | None = None
        self.etcd: etcd.EtcdCluster | None = None
        size = 3 if topology == "ensemble" else 1
        if kind == "zookeeper":
            if topology == "ensemble":
                self.zk = Ensemble(workdir / "zk", size=3, tick_time=tick_ms, max_session_timeout=60000)
            else:
                self.zk = ZooKeeperServer(workdir / "zk", name="zk", tick_time=tick_ms, max_session_timeout=60000)
            self.zk.start(timeout=120)
        else:
            self.etcd = etcd.EtcdCluster(workdir / "etcd", size=size, heartbeat_ms=etcd_raft_ms[0],
                                         election_ms=etcd_raft_ms[1])
            self.etcd.start()

    @property
    def hosts(self) -> str:
        assert self.zk is not None
        return self.zk.hosts

    def servers(self) -> list[ZooKeeperServer]:
        if isinstance(self.zk, Ensemble):
            return list(self.zk.servers)
        return [self.zk] if self.zk is not None else []

    def server_counters(self) -> dict[str, float]:
        """ZooKeeper: watches fired (mntr's node_*_watch_count sums), packets received
        and watches set (wchs), summed over the servers. etcd: watch events sent."""
        if self.etcd is not None:
            return {"notifications": self.etcd.metric("etcd_debugging_mvcc_events_total"),
                    "watches": self.etcd.metric("etcd_debugging_mvcc_watcher_total")}
        total = {"notifications": 0.0, "packets_received": 0.0, "watches": 0.0}
        for server in self.servers():
            for line in server.four_letter("mntr").splitlines():
                parts = line.split("\t")
                if len(parts) != 2:
                    continue
                key, value = parts
                if key.startswith("zk_sum_node_") and key.endswith("_watch_count"):
                    total["notifications"] += float(value)
                elif key == "zk_packets_received":
                    total["packets_received"] += float(value)
            wchs = server.four_letter("wchs")
            for line in wchs.splitlines():
                if line.startswith("Total watches:"):
                    total["watches"] += float(line.split(":")[1])
        return total

    def keys(self, prefix: str) -> int:
        """etcd: how many keys lie under ``prefix`` (a linearizable count)."""
        assert self.etcd is not None
        return self.etcd.count(prefix)

    def close(self) -> None:
        if self.zk is not None:
            self.zk.close()
        if self.etcd is not None:
            self.etcd.close()


# ------------------------------------------------------------------------ a cell


#: The milestones of a leadership change, in the order a handover passes them; each is
#: seconds after the trigger (None: not seen). The leaver's: reaped (its job's whole
#: tree gone), handed (its delete answered: the node is gone). The successor's:
#: notified (kazoo's connection thread read the deletion's notification), watch (its
#: loop took the WatchFired), relisted/listed (it listed the queue again, its listing
#: being older than the last departures below it, and took the answer), checked (its loop took
#: the answer of the confirming sync + exists), elected (StartJob left the core; kazoo:
#: the leader function was entered), spawned (the guardian reported the job's pid;
#: kazoo: Popen returned). "latency" is the job's first instruction.
LEAVER_MILESTONES = ("reaped", "handed")
SUCCESSOR_MILESTONES = ("notified", "watch", "relisted", "listed", "checked", "elected", "spawned")


@dataclass
class Change:
    kind: str  # "stop" | "crash"
    leader: int
    successor: int | None = None
    latency: float | None = None  # trigger -> successor's job running (its first instruction), s
    milestones: dict[str, float] = field(default_factory=dict)
    requests: int = 0
    by_kind: dict[str, int] = field(default_factory=dict)
    notifications: int = 0
    notifications_to_leaver: int = 0
    pings: int = 0
    suspended: int = 0  # connections lost during the change, all candidates
    sessions_lost: int = 0
    server: dict[str, float] = field(default_factory=dict)


def worker_count(n: int, per_worker: int) -> int:
    """At least three worker processes (N = 3: one candidate each), and at most
    per_worker candidates in one. Candidates are dealt round-robin in join order, so a
    leader and its successor (neighbours in the queue) sit in different processes, as
    on different hosts, and do not share a GIL during the handover."""
    return max(min(n, 3), math.ceil(n / per_worker))


class Cell:
    def __init__(self, design: str, topology: str, n: int, backend: Backend, args: argparse.Namespace,
                 workdir: Path) -> None:
        self.design = design
        self.topology = topology
        self.n = n
        self.backend = backend
        self.args = args
        self.timeout = args.lease_ttl if design in ETCD_DESIGNS else args.session_timeout
        self.dir = workdir / f"{design}-{topology}-{n}"
        self.dir.mkdir(parents=True)
        self.records = Records(self.dir / "records.jsonl")
        self.election = f"/bench/{design}-{topology}-{n}-{uuid.uuid4().hex[:8]}"
        self.next_id = 0
        self.alive: set[int] = set()
        self.result: dict[str, Any] = {"design": design, "topology": topology, "n": n, "timeout": self.timeout}

    def settings(self) -> dict[str, Any]:
        return {
            "design": self.design,
            "hosts": self.backend.hosts if self.backend.zk is not None else "",
            "etcd": self.backend.etcd.endpoints if self.backend.etcd is not None else [],
            "election": self.election,
            "session_timeout": self.args.session_timeout,
            "lease_ttl": self.args.lease_ttl,
            "tick_ms": self.args.tick_ms,
            "stop_timeout": self.args.stop_timeout,
            "job_argv": self.args.job_argv,
            "job_env": {"BENCH_RECORD": str(self.records.path), "BENCH_LOCK": str(self.dir / "job.lock")},
            "config_dir": str(self.dir),
        }

    def new_ids(self, count: int) -> list[int]:
        ids = list(range(self.next_id, self.next_id + count))
        self.next_id += count
        return ids

    def run(self, planned: int, crashes: int, idle: float) -> dict[str, Any]:
        workers = Workers(self.settings(), worker_count(self.n, self.args.per_worker), self.args.code_dir,
                          self.args.nice)
        self.workers = workers
        try:
            self._run(workers, planned, crashes, idle)
        except Exception as err:  # a cell that fails is reported, and the run goes on
            log(f"    FAILED: {type(err).__name__}: {err}")
            self.result["error"] = f"{type(err).__name__}: {err}"
            try:  # what a failed join was made of: the storm's connections and sessions lost
                counts = workers.counters()
                self.result["armed_at_failure"] = counts["armed"]
                self.result["suspended_at_failure"] = counts["suspended"]
                self.result["sessions_lost_at_failure"] = counts["sessions_lost"]
                log(f"    then: {counts['armed']} armed; {counts['suspended']} connections and "
                    f"{counts['sessions_lost']} sessions lost since the first start")
            except TimeoutError:
                pass
        finally:
            self.result["overlaps"] = self.records.overlaps(until=time.monotonic())
            workers.drain()
            errors = [e.get("detail", "") for e in workers.history if e["ev"] == "error"]
            self.result["candidate_errors"] = len(errors)
            if errors:
                self.result["candidate_error_example"] = max(set(errors), key=errors.count)
            workers.close()
        return self.result

    def _leader(self) -> int:
        """The candidate whose job runs now (the latest job start)."""
        self.records.poll()
        starts = [r for r in self.records.rows if r["kind"] == "start"]
        return int(starts[-1]["candidate"][1:])

    def _run(self, workers: Workers, planned: int, crashes: int, idle: float) -> None:
        ids = self.new_ids(self.n)
        self.result["load_before"] = round(os.getloadavg()[0], 1)
        rss0, _ = workers.rss_cpu()
        t0 = time.monotonic()
        wave = self.args.join_wave
        for first in range(0, self.n, wave):
            workers.add(ids[first:first + wave])
            joined = workers.wait(lambda e: e["ev"] == "joined", min(self.n, first + wave), self.args.join_timeout)
            keys = self._wait_armed(workers, min(self.n, first + wave))
            if self.n > wave:
                log(f"      {min(self.n, first + wave)} armed after {time.monotonic() - t0:.1f}s")
        self.result["join_s"] = max(e["t"] for e in joined) - t0
        self.result["join_wave"] = wave
        self.result["armed_s"] = time.monotonic() - t0
        self.result["keys"] = keys
        counts = workers.counters()
        self.result["join_suspended"] = counts["suspended"]
        self.result["join_sessions_lost"] = counts["sessions_lost"]
        if self.backend.etcd is not None:
            self.result["server_watchers"] = self.backend.server_counters()["watches"]
        log(f"    all {self.n} armed {self.result['armed_s']:.1f}s after the first start"
            + (f"; {keys} keys" if keys is not None else "")
            + (f"; etcd holds {self.result['server_watchers']:.0f} watchers" if "server_watchers" in self.result else "")
            + f"; {counts['suspended']} connections and {counts['sessions_lost']} sessions lost meanwhile")
        self.alive = set(ids)
        if self.records.wait_start(0, None, 30) is None:
            raise TimeoutError("no job started after the join")
        time.sleep(1.0)
        workers.drain()
        rss1, cpu1 = workers.rss_cpu()
        time.sleep(idle)
        rss2, cpu2 = workers.rss_cpu()
        pss = workers.pss()
        self.result["pss_mb_per_candidate"] = (pss["workers_mb"] + pss["descendants_mb"]) / self.n
        self.result["pss"] = pss
        self.result["worker_rss_mb_per_candidate"] = (rss2 - rss0) / self.n / 2**20
        self.result["worker_rss_mb"] = rss2 / 2**20
        self.result["workers"] = len(workers.procs)
        self.result["idle_cpu_pct_per_candidate"] = (cpu2 - cpu1) / idle * 100 / self.n
        counts = workers.counters()
        self.result["threads_per_candidate"] = counts["threads"] / self.n
        self.result["watches"] = self.backend.server_counters().get("watches")
        log(f"    joined in {self.result['join_s']:.2f}s; {self.result['worker_rss_mb_per_candidate']:.2f} MB and "
            f"{self.result['idle_cpu_pct_per_candidate']:.3f}% CPU per candidate in-process; "
            f"{self.result['threads_per_candidate']:.1f} threads each; PSS {self.result['pss_mb_per_candidate']:.2f} MB "
            f"per candidate with its guardian or job")
        changes: list[Change] = []
        for kind, count in (("stop", planned), ("crash", crashes)):
            for _ in range(count):
                change = self._change(workers, kind)
                changes.append(change)
                if change.latency is None:
                    raise TimeoutError(f"no successor after a {kind}")
        self.result["changes"] = [change.__dict__ for change in changes]
        self.result["load_after"] = round(os.getloadavg()[0], 1)

    def _wait_armed(self, workers: Workers, count: int) -> int | None:
        """Until ``count`` candidates lead or follow with their watch in place (zkleader
        logs "following", its join, before it sends the get + watch of its predecessor)
        and, on etcd, every zkleader candidate's key exists; the etcd key count is
        returned (None for the other designs). The next join wave waits for this, so
        the join's rate is what the machine absorbs, and no change is measured while
        the join's tail still runs."""
        keys_wanted = count if self.design == "zkleader-etcd" else None
        deadline = time.monotonic() + self.args.join_timeout
        while True:
            armed = workers.counters()["armed"]
            keys = self.backend.keys(self.election + "/") if keys_wanted is not None else None
            if armed >= count and keys == keys_wanted:
                return keys
            if time.monotonic() > deadline:
                raise TimeoutError(f"{armed} of {count} candidates armed, {keys} keys, "
                                   f"{self.args.join_timeout:g}s after their join")
            time.sleep(0.25)

    def _change(self, workers: Workers, kind: str) -> Change:
        leader = self._leader()
        change = Change(kind, leader)
        workers.drain()
        before = workers.counters()
        server_before = self.backend.server_counters()
        workers.send(workers.owner[leader], {"op": kind, "id": leader})
        trigger = workers.wait(lambda e: e["ev"] == "trigger" and e["id"] == leader, 1, 10)[-1]["t"]
        wait = self.timeout + 60 if kind == "crash" else 60
        started = self.records.wait_start(trigger, f"c{leader}", wait)
        if started is None:
            return change
        successor = int(started["candidate"][1:])
        change.successor = successor
        change.latency = started["t"] - trigger
        after = self._settled(workers)  # the counters calls also bring the milestones in
        workers.drain()
        for who, names in ((successor, SUCCESSOR_MILESTONES), (leader, LEAVER_MILESTONES)):
            for name in names:
                seen = [e["t"] for e in workers.history if e["ev"] == name and e["id"] == who and e["t"] > trigger]
                if seen:
                    change.milestones[name] = min(seen) - trigger
        change.requests = after["requests"] - before["requests"]
        change.by_kind = {k: v - before["by_kind"].get(k, 0) for k, v in after["by_kind"].items()
                          if v - before["by_kind"].get(k, 0)}
        change.notifications = after["notifications"] - before["notifications"]
        change.notifications_to_leaver = after["per"].get(str(leader), 0) - before["per"].get(str(leader), 0)
        change.pings = after["pings"] - before["pings"]
        change.suspended = after["suspended"] - before["suspended"]
        change.sessions_lost = after["sessions_lost"] - before["sessions_lost"]
        server_after = self.backend.server_counters()
        change.server = {k: server_after[k] - server_before.get(k, 0) for k in server_after}
        self.alive.discard(leader)
        if kind == "stop":
            workers.wait(lambda e: e["ev"] == "left" and e["id"] == leader, 1, 15)
        (fresh,) = self.new_ids(1)
        workers.add([fresh], workers.owner[leader])
        workers.wait(lambda e: e["ev"] == "joined" and e["id"] == fresh, 1, 30)
        self.alive.add(fresh)
        time.sleep(0.2)
        m = change.milestones
        path = " ".join(f"{name} {m[name] * 1000:.1f}" for name in LEAVER_MILESTONES + SUCCESSOR_MILESTONES
                        if name in m)
        log(f"    {kind:5} c{leader} -> c{successor}: {change.latency * 1000:7.1f} ms; {path}; "
            f"{change.notifications} notifications ({change.notifications_to_leaver} to the leaver), "
            f"{change.requests} requests"
            + (f"; {change.suspended} connections, {change.sessions_lost} sessions lost meanwhile"
               if change.suspended or change.sessions_lost else ""))
        return change

    def _settled(self, workers: Workers) -> dict[str, Any]:
        """Counters once the change has rippled through: unchanged over 150 ms."""
        previous = workers.counters()
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            time.sleep(0.15)
            current = workers.counters()
            if (current["requests"], current["notifications"]) == (previous["requests"], previous["notifications"]):
                return current
            previous = current
        return previous


# ------------------------------------------------------------------ main


#: The handover's phases, each between two milestones (ms, per change, then p50/p99
#: over the changes). "deleted" is the first moment either side heard that the leaver's
#: node was gone: the leaver's delete answered (handed) or the successor's connection
#: thread read the notification (notified), whichever came first.
PHASES = (
    ("sigterm_to_reaped", "trigger", "reaped"),
    ("reaped_to_deleted", "reaped", "deleted"),
    ("deleted_to_notified", "deleted", "notified"),
    ("notified_to_watch", "notified", "watch"),
    ("watch_to_checked", "watch", "checked"),
    ("checked_to_startjob", "checked", "elected"),
    ("deleted_to_startjob", "deleted", "elected"),
    ("startjob_to_spawned", "elected", "spawned"),
    ("spawned_to_running", "spawned", "running"),
    ("startjob_to_running", "elected", "running"),
)


def phase_values(change: dict[str, Any]) -> dict[str, float]:
    m = dict(change.get("milestones") or {})
    m["trigger"] = 0.0
    if change.get("latency") is not None:
        m["running"] = change["latency"]
    heard = [m[k] for k in ("handed", "notified") if k in m]
    if heard:
        m["deleted"] = min(heard)
    return {name: (m[b] - m[a]) * 1000 for name, a, b in PHASES if a in m and b in m}


def summarise(cell: dict[str, Any]) -> dict[str, Any]:
    """The figures of one cell, as the report shows them."""
    out = {k: cell.get(k) for k in ("design", "topology", "n", "timeout", "join_s", "worker_rss_mb_per_candidate",
                                    "idle_cpu_pct_per_candidate", "threads_per_candidate", "overlaps", "error",
                                    "watches", "workers", "load_before", "load_after", "candidate_errors",
                                    "candidate_error_example", "armed_s", "keys", "server_watchers",
                                    "pss_mb_per_candidate", "join_suspended", "join_sessions_lost")}
    changes = cell.get("changes", [])
    for kind in ("stop", "crash"):
        mine = [c for c in changes if c["kind"] == kind and c["latency"] is not None]
        lat = [c["latency"] * 1000 for c in mine]
        out[f"{kind}_count"] = len(mine)
        out[f"{kind}_p50_ms"] = percentile(lat, 50)
        out[f"{kind}_p99_ms"] = percentile(lat, 99)
        out[f"{kind}_max_ms"] = max(lat) if lat else None
        for part in LEAVER_MILESTONES + SUCCESSOR_MILESTONES:
            values = [c["milestones"][part] * 1000 for c in mine if part in (c.get("milestones") or {})]
            out[f"{kind}_{part}_p50_ms"] = percentile(values, 50)
        out[f"{kind}_relisted"] = sum(1 for c in mine if "relisted" in (c.get("milestones") or {}))
        phases = [phase_values(c) for c in mine]
        for name, _, _ in PHASES:
            values = [p[name] for p in phases if name in p]
            out[f"{kind}_{name}_p50_ms"] = percentile(values, 50)
            out[f"{kind}_{name}_p99_ms"] = percentile(values, 99)
        for key in ("notifications", "notifications_to_leaver", "requests", "suspended", "sessions_lost"):
            values = [c.get(key, 0) for c in mine]
            out[f"{kind}_{key}"] = sum(values) / len(values) if values else None
            out[f"{kind}_{key}_max"] = max(values) if values else None
        server = [c["server"].get("notifications") for c in mine if c["server"].get("notifications") is not None]
        out[f"{kind}_server_notifications"] = sum(server) / len(server) if server else None
    return out


def build_marker(workdir: Path, kind: str) -> tuple[list[str], str]:
    """The job's argv: bench/jobs/marker.c built with the system's cc (its first
    instruction reads the clock), or the Python marker (an interpreter start first)."""
    if kind == "c":
        cc = shutil.which("cc") or shutil.which("gcc")
        if cc is not None:
            binary = workdir / "marker"
            done = subprocess.run([cc, "-O2", "-o", str(binary), str(MARKER_C)], capture_output=True, text=True)
            if done.returncode == 0:
                return [str(binary)], "C (bench/jobs/marker.c; its first instruction reads CLOCK_MONOTONIC)"
            log(f"cc failed ({done.stderr.strip()[:200]}); the Python marker job is used")
        else:
            log("no C compiler: the Python marker job is used")
    return ([sys.executable, "-I", "-S", str(MARKER)],
            "Python (bench/jobs/marker.py, python -I -S: an interpreter start before its first line)")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="scripts/bench", description=__doc__)
    parser.add_argument("--quick", action="store_true",
                        help="zkleader and the kazoo recipe only, N = 3 and 100, fewer trials (about 12 minutes)")
    parser.add_argument("--n", type=int, nargs="+", help="candidate counts (default: 3 10 100 1000; quick: 3 100)")
    parser.add_argument("--designs", nargs="+", choices=[*ZK_DESIGNS, *ETCD_DESIGNS],
                        help="designs of the in-process cells (default: all five; quick: zkleader kazoo)")
    parser.add_argument("--topologies", nargs="+", default=["ensemble", "standalone"], choices=["ensemble", "standalone"])
    parser.add_argument("--handovers", type=int, help="planned handovers per cell (default 20)")
    parser.add_argument("--crashes", type=int, help="in-process crash failovers per cell (default 5; quick 0: the "
                        "real daemons' kill -9 covers the target)")
    parser.add_argument("--session-timeout", type=float, default=4.0,
                        help="ZooKeeper session timeout of the in-process cells, s (default 4)")
    parser.add_argument("--real-session-timeout", type=float, default=10.0,
                        help="session timeout T of the real daemons (kill -9, SIGSTOP, footprint), s (default 10)")
    parser.add_argument("--lease-ttl", type=int, default=5, help="etcd lease TTL, s (default 5)")
    parser.add_argument("--etcd-heartbeat-ms", type=int, default=100,
                        help="etcd's raft heartbeat interval, ms (default 100)")
    parser.add_argument("--etcd-election-ms", type=int, default=1000,
                        help="etcd's raft election timeout, ms (default 1000; etcd raises a lease TTL below 1.5 times it)")
    parser.add_argument("--stop-timeout", type=float, default=1.0, help="job.stop_timeout, s (default 1)")
    parser.add_argument("--tick-ms", type=int, default=200, help="ZooKeeper tickTime, ms (default 200, as the tests)")
    parser.add_argument("--per-worker", type=int, default=50,
                        help="candidates per worker process at most (default 50; at least 3 workers)")
    parser.add_argument("--join-wave", type=int, default=100,
                        help="candidates started at once; the next wave starts when these have joined and armed their "
                        "watches (default 100)")
    parser.add_argument("--nice", type=int, default=0,
                        help="niceness of the candidates' worker processes, so that they do not starve the servers "
                        "they would not share a machine with in production (default 0; N = 1000 on etcd on 2 cores: 10)")
    parser.add_argument("--join-timeout", type=float, default=120.0,
                        help="seconds a join wave may take, and then every candidate's watch (default 120)")
    parser.add_argument("--idle", type=float, help="idle seconds measured per cell (default 10; quick 5)")
    parser.add_argument("--daemon-idle", type=float, default=60.0,
                        help="idle seconds for the real daemons' footprint (default 60)")
    parser.add_argument("--real-handovers", type=int, help="SIGTERM handovers of real daemons per design (default 20)")
    parser.add_argument("--kill-trials", type=int, help="kill -9 trials of real daemons, zkleader (default 20)")
    parser.add_argument("--kazoo-kill-trials", type=int,
                        help="kill -9 trials of the kazoo design (each waits a session timeout; default 20, quick 10)")
    parser.add_argument("--stop-trials", type=int, help="SIGSTOP trials of zkleader (default 20)")
    parser.add_argument("--kazoo-stop-trials", type=int, help="SIGSTOP trials of the kazoo design (default 20; quick 10)")
    parser.add_argument("--stop-groups", type=int, default=4,
                        help="at most this many groups of 3 daemons per design run the SIGSTOP trials in parallel, "
                        "about 5 trials each (default 4)")
    parser.add_argument("--job", choices=["c", "python"], default="c",
                        help="the marker job: C (default; its first instruction is the measurement) or Python")
    parser.add_argument("--skip-cells", action="store_true", help="skip the in-process cells")
    parser.add_argument("--control-n", type=int, default=20,
                        help="candidates of the resign --to trials (real daemons; default 20)")
    parser.add_argument("--control-trials", type=int, help="resign --to / resign trials (default 10; quick 5)")
    parser.add_argument("--skip-control", action="store_true", help="skip the resign --to trials")
    parser.add_argument("--skip-daemons", "--no-footprint", action="store_true",
                        help="skip the real-daemon part (footprint, SIGTERM, kill -9, SIGSTOP)")
    parser.add_argument("--skip-footprint", action="store_true", help="real daemons: skip the idle footprint")
    parser.add_argument("--out", type=Path, default=REPO / "results", help="where bench.md, bench.json and the PNGs go")
    parser.add_argument("--keep", action="store_true", help="keep the work directory (server logs, job records)")
    parser.add_argument("--merge-into", type=Path, metavar="JSON",
                        help="put this run's cells into an earlier bench.json (replacing the same design, servers and "
                        "N) and write the report from the merged figures")
    args = parser.parse_args(argv)
    sizes = args.n or ([3, 100] if args.quick else [3, 10, 100, 1000])
    designs = args.designs or (["zkleader", "kazoo"] if args.quick else [*ZK_DESIGNS, *ETCD_DESIGNS])
    planned = args.handovers if args.handovers is not None else 20
    crashes = args.crashes if args.crashes is not None else (0 if args.quick else 5)
    idle = args.idle if args.idle is not None else (5.0 if args.quick else 10.0)
    args.real_designs = ["zkleader", "kazoo"]
    args.real_handovers = args.real_handovers if args.real_handovers is not None else 20
    args.kill_trials = {"zkleader": args.kill_trials if args.kill_trials is not None else 20,
                        "kazoo": args.kazoo_kill_trials if args.kazoo_kill_trials is not None
                        else (10 if args.quick else 20)}
    args.stop_trials = {"zkleader": args.stop_trials if args.stop_trials is not None else 20,
                        "kazoo": args.kazoo_stop_trials if args.kazoo_stop_trials is not None
                        else (10 if args.quick else 20)}
    # Groups of one design run their SIGSTOP trials in parallel, about 5 trials each.
    args.stop_groups = {design: max(1, min(args.stop_groups, math.ceil(args.stop_trials[design] / 5)))
                        for design in args.real_designs}
    from . import control, processes, report

    # Read before the first cell is saved: --merge-into is usually results/bench.json itself.
    base = json.loads(args.merge_into.read_text()) if args.merge_into is not None else None
    workdir = Path(tempfile.mkdtemp(prefix="zkleader-bench-"))
    started = time.time()
    args.code_dir = snapshot(workdir / "code")
    args.job_argv, job_kind = build_marker(workdir, args.job)
    results: dict[str, Any] = {
        "mode": "quick" if args.quick else "full",
        "argv": sys.argv[1:] if argv is None else argv,
        "settings": {"session_timeout": args.session_timeout, "lease_ttl": args.lease_ttl,
                     "etcd_heartbeat_ms": args.etcd_heartbeat_ms, "etcd_election_ms": args.etcd_election_ms,
                     "stop_timeout": args.stop_timeout, "tick_ms": args.tick_ms, "per_worker": args.per_worker,
                     "join_wave": args.join_wave, "join_timeout": args.join_timeout, "nice": args.nice, "job": job_kind,
                     "handovers": planned, "crashes": crashes, "idle_s": idle,
                     "real_session_timeout": args.real_session_timeout, "daemon_idle_s": args.daemon_idle,
                     "real_handovers": args.real_handovers, "kill_trials": args.kill_trials,
                     "stop_trials": args.stop_trials, "stop_groups": args.stop_groups,
                     "sizes": sizes, "designs": designs},
        "machine": machine(),
        "cells": [],
        "etcd": None,
    }
    if set(designs) & set(ETCD_DESIGNS):
        why = etcd.available()
        if why:
            designs = [d for d in designs if d not in ETCD_DESIGNS]
            results["etcd"] = why
            log(f"etcd left out: {why}")
        else:
            results["etcd"] = subprocess.run([etcd.ETCD, "--version"], capture_output=True, text=True).stdout.split("\n")[0]
    log(f"work directory {workdir}; job: {job_kind}")
    try:
        if not args.skip_daemons:
            log(f"real daemons (zkleader run / the kazoo recipe as a process), 3 per group, 3-node ensemble, "
                f"T = {args.real_session_timeout:g} s")
            results["daemons"] = processes.measure(workdir / "daemons", args, )
            save(results, args.out)
        if not args.skip_control:
            trials = args.control_trials or (5 if args.quick else 10)
            log(f"resign --to the last of {args.control_n} real daemons vs resign to the next in line, {trials} each")
            results["control"] = control.measure(workdir / "control", args.control_n, trials, args.tick_ms)
            save(results, args.out)
        for topology in ([] if args.skip_cells else args.topologies):
            for kind in ("zookeeper", "etcd"):
                mine = [d for d in designs if (d in ETCD_DESIGNS) == (kind == "etcd")]
                if not mine:
                    continue
                log(f"starting {kind} ({topology})")
                backend = Backend(kind, topology, workdir / f"{kind}-{topology}", args.tick_ms,
                                  (args.etcd_heartbeat_ms, args.etcd_election_ms))
                try:
                    for design in mine:
                        for n in sizes:
                            log(f"  {design} on {kind} {topology}, N={n}")
                            cell = Cell(design, topology, n, backend, args, workdir)
                            results["cells"].append(cell.run(planned, crashes, idle))
                            save(results, args.out)
                finally:
                    backend.close()
    except KeyboardInterrupt:
        log("interrupted: writing what was measured")
    finally:
        results["elapsed_s"] = time.time() - started
        results["machine"]["load_at_end"] = [round(x, 1) for x in os.getloadavg()]
        if base is not None:
            results = merge(base, results)
        results["summary"] = [summarise(c) for c in results["cells"]]
        if results.get("daemons"):
            results["daemons"]["summary"] = processes.summary(results["daemons"])
        save(results, args.out)
        report.write(results, args.out)
        print(report.console_table(results), flush=True)
        if not args.keep:
            shutil.rmtree(workdir, ignore_errors=True)
        else:
            log(f"kept {workdir}")
    return 0


def merge(base: dict[str, Any], extra: dict[str, Any]) -> dict[str, Any]:
    """base with extra's cells in place of its cells of the same design, servers and N."""
    key = lambda cell: (cell["design"], cell["topology"], cell["n"])  # noqa: E731
    replaced = {key(cell): cell for cell in extra["cells"]}
    cells = [replaced.pop(key(cell), cell) for cell in base["cells"]] + list(replaced.values())
    reruns = base.get("reruns", []) + [{"argv": extra["argv"], "cells": sorted(f"{d} {t} N={n}" for d, t, n in
                                                                          map(key, extra["cells"])),
                                        "code": extra["machine"].get("code"),
                                        "load_at_start": extra["machine"].get("load_at_start")}]
    if extra.get("daemons"):
        base["daemons"] = extra["daemons"]
    return {**base, "cells": cells, "reruns": reruns}


def snapshot(code: Path) -> Path:
    """The code every worker and daemon of this run imports: a copy taken at the start,
    so that edits to the working tree during a long run do not mix versions."""
    ignore = shutil.ignore_patterns("__pycache__", "*.pyc")
    shutil.copytree(REPO / "zkleader", code / "zkleader", ignore=ignore)
    shutil.copytree(REPO / "bench", code / "bench", ignore=ignore)  # zkleader/testing came with zkleader
    return code


def machine() -> dict[str, Any]:
    cpu = next((line.split(":", 1)[1].strip() for line in Path("/proc/cpuinfo").read_text().splitlines()
                if line.startswith("model name")), "?")
    mem = int(Path("/proc/meminfo").read_text().split()[1]) // 1024
    java = subprocess.run(["java", "-version"], capture_output=True, text=True).stderr.split("\n")[0]
    import kazoo

    head = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True, cwd=REPO).stdout.strip()
    dirty = subprocess.run(["git", "status", "--porcelain", "--", "zkleader"], capture_output=True, text=True,
                           cwd=REPO).stdout.split("\n")
    changed = sorted(line[3:] for line in dirty if line.strip())
    load = os.getloadavg()
    return {"code": head + (f" + uncommitted changes in {', '.join(changed)}" if changed else ""),
            "load_at_start": [round(x, 1) for x in load],
            "cpu": cpu, "cores": os.cpu_count(), "memory_mb": mem, "kernel": platform.release(),
            "python": platform.python_version(), "kazoo": kazoo.__version__,
            "java": java}


def save(results: dict[str, Any], out: Path) -> None:
    out.mkdir(parents=True, exist_ok=True)
    (out / "bench.json").write_text(json.dumps(results, indent=1, default=str))


if __name__ == "__main__":
    signal.signal(signal.SIGTERM, lambda *_: (_ for _ in ()).throw(KeyboardInterrupt()))
    sys.exit(main())
