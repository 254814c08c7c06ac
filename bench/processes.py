"""Real daemons, one process each, on a loopback 3-node ensemble with the production
default session timeout (T = 10 s): `python -m zkleader run` against the kazoo recipe
+ job as a process of its own (`python -m bench.kazoo_daemon`), three candidates per
group, side by side in the same run.

* **Footprint**: for every daemon (and a zkleader daemon's warm guardian) PSS, RSS and
  USS from /proc/PID/smaps_rollup, and CPU from /proc/PID/stat over an idle window.
  PSS splits a shared page among every process that maps it, so it shrinks with the
  number of Python processes on the machine (here: every daemon of both groups and
  this orchestrator); "alone" counts the distinct physical pages of daemon + guardian
  (/proc/PID/pagemap), which is their PSS on a host where nothing else maps them.
* **SIGTERM handover**: SIGTERM to the leader's daemon -> the successor's job runs.
* **kill -9**: SIGKILL to the leader's daemon alone on a healthy host -> the
  successor's job runs. zkleader's guardian sees its lifeline close, reaps the job and
  releases the session; the kazoo design's Popen'd job would outlive its parent, so the
  job is killed right after the daemon, as systemd's KillMode would, and the successor
  waits for the session to expire.
* **SIGSTOP**: the leader's daemon alone is stopped for 2T (no watchdog), then
  continued. Each trial records when the old job died (pidfd), the daemon's last
  packet before the stop (`ss`'s lastsnd on its ZooKeeper socket: the session cannot
  expire earlier than that + T), when the node went, and when the successor's job
  started: an overlap is a successor's job that started before the old job died (and
  the flock detector agrees). Groups run their trials in parallel, each on its own
  election, so that 20 trials of 2T fit a quick run.

Every trial's trigger and every job's start are read on CLOCK_MONOTONIC; the job is
bench/jobs/marker (its first instruction reads the clock).
"""

from __future__ import annotations

import argparse
import json
import os
import re
import select
import signal
import struct
import subprocess
import sys
import threading
import time
import uuid
from datetime import datetime
from pathlib import Path
from typing import Any

import yaml
from kazoo.client import KazooClient

from zkleader.testing.zkserver import Ensemble

from .run import REPO, Records, log, percentile

TICK = os.sysconf("SC_CLK_TCK")
PAGE = os.sysconf("SC_PAGE_SIZE")


# ------------------------------------------------------------------ /proc


def stat_of(pid: int) -> tuple[int, str, float, int]:
    """(ppid, state, CPU seconds of the whole thread group, threads)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return int(fields[1]), fields[0], (int(fields[11]) + int(fields[12])) / TICK, int(fields[17])


def children(pid: int) -> list[int]:
    found = []
    for name in os.listdir("/proc"):
        if name.isdigit():
            try:
                if stat_of(int(name))[0] == pid:
                    found.append(int(name))
            except (OSError, IndexError):
                pass
    return found


def cmdline(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
    except OSError:
        return ""


def _environ(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/environ").read_bytes().decode(errors="replace")
    except OSError:
        return ""


def memory(pid: int) -> dict[str, float]:
    """MB: rss, pss, uss (private clean + dirty), from smaps_rollup."""
    values: dict[str, int] = {}
    for line in Path(f"/proc/{pid}/smaps_rollup").read_text().splitlines():
        parts = line.split()
        if len(parts) >= 2 and parts[0].endswith(":") and parts[1].isdigit():
            values[parts[0][:-1]] = int(parts[1])
    return {"rss_mb": values.get("Rss", 0) / 1024, "pss_mb": values.get("Pss", 0) / 1024,
            "uss_mb": (values.get("Private_Clean", 0) + values.get("Private_Dirty", 0)) / 1024}


def pages(pid: int) -> set[int]:
    """The physical frames a process has mapped (root reads the PFNs in pagemap)."""
    frames: set[int] = set()
    with open(f"/proc/{pid}/maps") as maps, open(f"/proc/{pid}/pagemap", "rb") as pagemap:
        for line in maps:
            if "[vsyscall]" in line:
                continue
            start, end = (int(x, 16) for x in line.split()[0].split("-"))
            pagemap.seek(start // PAGE * 8)
            data = pagemap.read((end - start) // PAGE * 8)
            for (entry,) in struct.iter_unpack("<Q", data):
                if entry >> 63:
                    frames.add(entry & ((1 << 55) - 1))
    frames.discard(0)
    return frames


def alone_mb(pids: list[int]) -> float | None:
    try:
        union: set[int] = set()
        for pid in pids:
            union |= pages(pid)
    except OSError:
        return None
    return len(union) * PAGE / 2**20 if union else None


class DeathWatch:
    """When a process ends (pidfd: works for any process, child or not)."""

    def __init__(self, pid: int) -> None:
        self.pid = pid
        self.at: float | None = None
        self.done = threading.Event()
        try:
            self._fd = os.pidfd_open(pid)
        except OSError:  # already gone
            self.done.set()
            return
        threading.Thread(target=self._wait, daemon=True).start()

    def _wait(self) -> None:
        poller = select.poll()
        poller.register(self._fd, select.POLLIN)
        poller.poll()
        self.at = time.monotonic()
        os.close(self._fd)
        self.done.set()

    def wait(self, timeout: float) -> bool:
        return self.done.wait(timeout)


def reap(pid: int) -> None:
    """An orphan re-parented to us (we are a child subreaper here), once it has ended."""
    try:
        os.waitpid(pid, os.WNOHANG)
    except ChildProcessError:
        pass


def last_send_age(pid: int) -> float | None:
    """Seconds since the process last sent data on a TCP connection (ss's lastsnd):
    its ZooKeeper socket, the only one a daemon has."""
    started = time.monotonic()
    out = subprocess.run(["ss", "-tinpH", "state", "established"], capture_output=True, text=True).stdout
    middle = (started + time.monotonic()) / 2
    lines = out.splitlines()
    ages = []
    for i, line in enumerate(lines[:-1]):
        if f"pid={pid}," in line:
            match = re.search(r"lastsnd:(\d+)", lines[i + 1])
            if match:
                ages.append(int(match.group(1)) / 1000)
    return None if not ages else min(ages) + (time.monotonic() - middle)


def wall_to_monotonic(stamp: str) -> float:
    """A daemon's ISO UTC log time on CLOCK_MONOTONIC (same machine, same clocks)."""
    return datetime.fromisoformat(stamp.replace("Z", "+00:00")).timestamp() - (time.time() - time.monotonic())


# ------------------------------------------------------------------ a group


class Group:
    """Three daemons of one design on one election."""

    def __init__(self, design: str, label: str, root: Path, hosts: str, args: argparse.Namespace,
                 zk: KazooClient, size: int = 3, tapped: bool = True) -> None:
        self.design = design
        #: zkleader: `python -m bench.tapped run` (zkleader run + the loop's tap), else
        #: the plain `python -m zkleader run` (the footprint's daemons).
        self.tapped = tapped
        self.label = label
        self.dir = root / label
        self.dir.mkdir(parents=True)
        self.hosts = hosts
        self.args = args
        self.zk = zk
        self.size = size
        self.records = Records(self.dir / "records.jsonl")
        self.election = f"/bench/{label}-{uuid.uuid4().hex[:8]}"
        self.names = [f"{label}-{i}" for i in range(1, size + 1)]
        self.procs: dict[str, subprocess.Popen[bytes]] = {}
        self.logs: dict[str, list[Path]] = {}
        self.closed = False
        for name in self.names:
            self.start(name)

    def start(self, name: str) -> None:
        a = self.args
        env = {"BENCH_RECORD": str(self.records.path), "BENCH_LOCK": str(self.dir / "job.lock")}
        if self.design == "zkleader":
            config = {
                "zookeeper": {"hosts": self.hosts, "session_timeout": a.real_session_timeout,
                              "tick_time": a.tick_ms / 1000},
                "election": {"path": self.election, "candidate": name},
                "job": {"command": a.job_argv, "stop_timeout": a.stop_timeout, "restart_delay": 0.2,
                        "environment": env},
                "logging": {"level": "info", "format": "json"},
            }
            path = self.dir / f"{name}.yaml"
            path.write_text(yaml.safe_dump(config))
            argv = [sys.executable, "-m", "bench.tapped" if self.tapped else "zkleader", "run", "-c", str(path)]
        else:
            config = {"hosts": self.hosts, "election": self.election, "name": name,
                      "session_timeout": a.real_session_timeout, "stop_timeout": a.stop_timeout,
                      "job_argv": a.job_argv, "job_env": env}
            path = self.dir / f"{name}.json"
            path.write_text(json.dumps(config))
            argv = [sys.executable, "-m", "bench.kazoo_daemon", str(path)]
        logs = self.logs.setdefault(name, [])
        logs.append(self.dir / f"{name}-{len(logs)}.log")
        stamps = logs[-1].with_suffix(".stamps")
        with logs[-1].open("ab") as out:
            self.procs[name] = subprocess.Popen(argv, stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                                cwd=getattr(a, "code_dir", REPO),
                                                env={**os.environ, "BENCH_STAMPS": str(stamps)})

    def events(self, name: str, which: int = -1, stamps: bool = False) -> list[dict[str, Any]]:
        """The JSON lines of one of a daemon's logs (or its tap's stamps), each with "t"
        on CLOCK_MONOTONIC."""
        out = []
        path = self.logs[name][which]
        if stamps:
            path = path.with_suffix(".stamps")
            if not path.exists():
                return []
        for line in path.read_text(errors="replace").splitlines():
            if not line.startswith("{"):
                continue
            try:
                row = json.loads(line)
            except ValueError:
                continue
            if "t" not in row and "timestamp" in row:
                row["t"] = wall_to_monotonic(row["timestamp"])
            out.append(row)
        return out

    def joined(self, name: str) -> bool:
        return any(e.get("event") == "joined" for e in self.events(name))

    def wait_joined(self, name: str, timeout: float = 60) -> None:
        deadline = time.monotonic() + timeout
        while not self.joined(name):
            if time.monotonic() > deadline:
                raise TimeoutError(f"{name} did not join")
            time.sleep(0.05)

    def children(self) -> list[str]:
        try:
            return sorted(self.zk.get_children(self.election), key=lambda node: int(node[-10:]))
        except Exception:
            return []

    def leader(self) -> tuple[str, dict[str, Any]]:
        """The daemon whose job runs now (the latest start record) and that record."""
        self.records.poll()
        start = [r for r in self.records.rows if r["kind"] == "start"][-1]
        return start["candidate"], start

    def wait_settled(self, timeout: float = 60) -> tuple[str, dict[str, Any]]:
        """Every daemon queued, and the job of the lowest node's daemon running."""
        deadline = time.monotonic() + timeout
        while True:
            if len(self.children()) == self.size:
                self.records.poll()
                starts = [r for r in self.records.rows if r["kind"] == "start"]
                if starts and Path(f"/proc/{starts[-1]['pid']}").exists():
                    name, record = self.leader()
                    if self.procs[name].poll() is None:
                        return name, record
            if time.monotonic() > deadline:
                raise TimeoutError(f"{self.label}: not settled ({len(self.children())} of {self.size} queued)")
            time.sleep(0.05)

    def guardian(self, name: str) -> int | None:
        found = [pid for pid in children(self.procs[name].pid) if "guardian.py" in cmdline(pid)]
        return found[0] if found else None

    def close(self) -> None:
        if self.closed:
            return
        self.closed = True
        for proc in self.procs.values():
            if proc.poll() is None:
                try:
                    os.kill(proc.pid, signal.SIGCONT)
                    proc.terminate()
                except OSError:
                    pass
        deadline = time.monotonic() + 20
        for proc in self.procs.values():
            try:
                proc.wait(max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
        self.records.poll()
        for row in self.records.rows:  # no job outlives the bench (checked: still our marker, not a reused pid)
            if row["kind"] == "start" and str(self.records.path) in _environ(row["pid"]):
                try:
                    os.kill(row["pid"], signal.SIGKILL)
                except OSError:
                    pass


def reap_strays(root: Path, keep: set[int], timeout: float = 15) -> int:
    """Our children of this run (their command line names its work directory) that no
    Popen object owns: orphaned guardians and releasers, which a child subreaper
    inherits. Waited for, then killed. Returns how many were left."""
    deadline = time.monotonic() + timeout

    def mine() -> list[int]:
        return [pid for pid in children(os.getpid()) if pid not in keep and str(root) in cmdline(pid)]

    while True:
        for pid in children(os.getpid()):
            if pid not in keep:
                reap(pid)  # zombies: whatever they were
        strays = mine()
        if not strays:
            return 0
        if time.monotonic() > deadline:
            for pid in strays:
                log(f"    stray {pid} left: {cmdline(pid)[:160]}")
                try:
                    os.kill(pid, signal.SIGKILL)
                except OSError:
                    pass
            time.sleep(0.2)
            for pid in strays:
                reap(pid)
            return len(strays)
        time.sleep(0.1)


# ------------------------------------------------------------------ footprint


def footprint(groups: list[Group], idle: float) -> list[dict[str, Any]]:
    for group in groups:
        group.wait_settled()
    time.sleep(3)  # past start-up: imports done, first heartbeats sent
    processes: dict[tuple[str, str], dict[str, Any]] = {}
    for group in groups:
        leader, _ = group.leader()
        for name in group.names:
            daemon = group.procs[name].pid
            guardian = group.guardian(name) if group.design == "zkleader" else None
            processes[(group.label, name)] = {"group": group, "design": group.design, "name": name,
                                              "role": "leader" if name == leader else "follower",
                                              "daemon": daemon, "guardian": guardian}
    before = {key: _cpu(p) for key, p in processes.items()}
    time.sleep(idle)
    after = {key: _cpu(p) for key, p in processes.items()}
    rows = []
    for key, p in processes.items():
        row: dict[str, Any] = {"design": p["design"], "name": p["name"], "role": p["role"], "idle_s": idle}
        d_cpu = after[key][0] - before[key][0]
        g_cpu = after[key][1] - before[key][1]
        row["daemon_cpu_pct"] = d_cpu / idle * 100
        row["guardian_cpu_pct"] = g_cpu / idle * 100 if p["guardian"] else None
        row["cpu_pct"] = (d_cpu + g_cpu) / idle * 100
        row["daemon"] = memory(p["daemon"])
        row["threads"] = stat_of(p["daemon"])[3]
        pids = [p["daemon"]]
        if p["guardian"]:
            row["guardian"] = memory(p["guardian"])
            pids.append(p["guardian"])
        row["pss_mb"] = sum(memory(pid)["pss_mb"] for pid in pids)
        row["rss_mb"] = sum(memory(pid)["rss_mb"] for pid in pids)
        row["alone_mb"] = alone_mb(pids)
        jobs = children(p["guardian"] or p["daemon"])
        jobs = [pid for pid in jobs if "marker" in cmdline(pid)]
        row["job"] = memory(jobs[0]) if jobs else None
        rows.append(row)
        log(f"    {p['design']:8} {p['name']} ({p['role']}): daemon + guardian PSS {row['pss_mb']:.1f} MB "
            f"(alone {row['alone_mb'] or 0:.1f}, RSS {row['rss_mb']:.1f}), CPU {row['cpu_pct']:.3f}% of a core "
            f"over {idle:g} s (daemon {row['daemon_cpu_pct']:.3f}%)")
    return rows


def _cpu(p: dict[str, Any]) -> tuple[float, float]:
    daemon = stat_of(p["daemon"])[2]
    guardian = stat_of(p["guardian"])[2] if p["guardian"] else 0.0
    return daemon, guardian


# ------------------------------------------------------------------ SIGTERM


def sigterm_trial(group: Group) -> dict[str, Any]:
    name, record = group.wait_settled()
    proc = group.procs[name]
    sent = time.monotonic()
    os.kill(proc.pid, signal.SIGTERM)
    started = group.records.wait_start(sent, name, 30)
    if started is None:
        raise TimeoutError(f"{group.label}: no successor after SIGTERM")
    proc.wait(30)
    trial: dict[str, Any] = {"latency": started["t"] - sent, "leaver": name, "successor": started["candidate"]}
    time.sleep(0.1)  # the successor's log lines are written by its log thread
    trial["milestones"] = _milestones(group, name, started["candidate"], sent)
    group.start(name)  # back at the end of the queue, as an operator would restart it
    group.wait_joined(name)
    return trial


def _milestones(group: Group, leaver: str, successor: str, sent: float) -> dict[str, float]:
    """The leaver's and the successor's milestones after the trigger, from their taps
    (zkleader: bench/tapped.py) or stamps (the kazoo daemon's stdout)."""
    out: dict[str, float] = {}
    for who, which in ((leaver, -1), (successor, -1)):
        rows = group.events(who, which, stamps=group.design == "zkleader")
        mine = LEAVER if who == leaver else SUCCESSOR
        for row in rows:
            key = row.get("event", "")
            if key in mine and row["t"] > sent and key not in out:
                out[key] = row["t"] - sent
    return out


LEAVER = ("shutdown", "signalled", "reaped", "delete_sent", "handed")
SUCCESSOR = ("notified", "watch", "relisted", "listed", "checked", "elected", "spawned")


# ------------------------------------------------------------------ kill -9


def kill_trial(group: Group, timeout: float) -> dict[str, Any]:
    name, record = group.wait_settled()
    proc = group.procs[name]
    guardian = group.guardian(name) if group.design == "zkleader" else None
    job = DeathWatch(record["pid"])
    helper = DeathWatch(guardian) if guardian else None
    node = group.children()[0]
    deleted = _DeletionWatch(group.zk, f"{group.election}/{node}")
    sent = time.monotonic()
    os.kill(proc.pid, signal.SIGKILL)
    if group.design != "zkleader":
        try:
            os.kill(record["pid"], signal.SIGKILL)  # systemd's KillMode: the job goes with its daemon
        except OSError:
            pass
    started = group.records.wait_start(sent, name, timeout + 20)
    proc.wait(10)
    if started is None:
        raise TimeoutError(f"{group.label}: no successor after kill -9")
    trial: dict[str, Any] = {"latency": started["t"] - sent, "leaver": name, "successor": started["candidate"]}
    job.wait(10)
    trial["job_reaped"] = None if job.at is None else job.at - sent
    trial["node_deleted"] = None if deleted.at is None else deleted.at - sent
    if helper is not None:
        helper.wait(timeout + 10)  # the guardian, then zkleader.release in its place
        reap(helper.pid)
        trial["releaser_exited"] = None if helper.at is None else helper.at - sent
        released = [r["t"] for r in group.events(name) if r.get("event") == "session_released"]
        trial["session_released"] = released[0] - sent if released else None
    group.start(name)
    group.wait_joined(name)
    return trial


class _DeletionWatch:
    def __init__(self, zk: KazooClient, path: str) -> None:
        self.at: float | None = None

        def fired(event: Any) -> None:
            if event.type == "DELETED":
                self.at = time.monotonic()

        zk.exists(path, watch=fired)


# ------------------------------------------------------------------ SIGSTOP


def sigstop_trial(group: Group, session_timeout: float) -> dict[str, Any]:
    name, record = group.wait_settled(90)
    proc = group.procs[name]
    job = DeathWatch(record["pid"])
    node = group.children()[0]
    deleted = _DeletionWatch(group.zk, f"{group.election}/{node}")
    group.records.poll()
    overlaps_before = sum(1 for r in group.records.rows if r["kind"] == "overlap")
    stopped = time.monotonic()
    os.kill(proc.pid, signal.SIGSTOP)
    age = last_send_age(proc.pid)
    time.sleep(max(0.0, stopped + 2 * session_timeout - time.monotonic()))
    continued = time.monotonic()
    os.kill(proc.pid, signal.SIGCONT)
    job.wait(30)  # the kazoo design stops its job only now
    started = group.records.wait_start(stopped, name, 20)
    group.records.poll()
    flock = sum(1 for r in group.records.rows if r["kind"] == "overlap") - overlaps_before
    trial: dict[str, Any] = {"leaver": name, "continued": continued - stopped, "flock_overlaps": flock}
    trial["last_send_age"] = age
    trial["earliest_expiry"] = None if age is None else session_timeout - age  # after the stop
    trial["job_reaped"] = None if job.at is None else job.at - stopped
    trial["node_deleted"] = None if deleted.at is None else deleted.at - stopped
    trial["successor_started"] = None if started is None else started["t"] - stopped
    if trial["job_reaped"] is not None and trial["successor_started"] is not None:
        trial["overlap_s"] = max(0.0, trial["job_reaped"] - trial["successor_started"])
    else:
        trial["overlap_s"] = None
    trial["overlap"] = bool(flock) or bool(trial["overlap_s"])
    if trial["job_reaped"] is not None and trial["earliest_expiry"] is not None:
        trial["margin_s"] = trial["earliest_expiry"] - trial["job_reaped"]  # > 0: reaped before any expiry
    return trial


# ------------------------------------------------------------------ the job alone


def job_probe(workdir: Path, argv: list[str], trials: int) -> dict[str, Any]:
    """Starting and stopping the job alone, no election: zkleader's JobRunner (the warm
    guardian: a line on its pipe, then its fork/exec) against a plain Popen from a
    Python process (the kazoo design's way), each `trials` times in this process.
    start: the call -> the job's first instruction; stop: SIGTERM asked -> the exit
    seen (JobExited posted by the guardian's report / the waiting thread woken)."""
    import queue

    from zkleader.config import JobConfig
    from zkleader.core import events as ev
    from zkleader.job import JobRunner

    from .kazoo_design import PopenJob

    workdir.mkdir(parents=True, exist_ok=True)
    records = Records(workdir / "probe.jsonl")
    env = {"BENCH_RECORD": str(records.path), "BENCH_LOCK": str(workdir / "probe.lock"),
           "ZKLEADER_CANDIDATE": "probe"}
    out: dict[str, Any] = {"trials": trials}
    posted: queue.SimpleQueue[Any] = queue.SimpleQueue()
    runner = JobRunner(JobConfig(command=tuple(argv), environment=env), "/probe", "probe", posted.put)
    time.sleep(0.5)  # warm: the guardian is up before the first start, as in a daemon
    starts, stops = [], []
    try:
        for _ in range(trials):
            boot = time.clock_gettime(time.CLOCK_BOOTTIME)
            t0 = time.monotonic()
            runner.start(0, "/probe/n", boot + 100, boot + 101)
            while not isinstance(posted.get(timeout=10), ev.JobStarted):
                pass
            started = records.wait_start(t0, None, 10)
            if started is None:
                raise TimeoutError("the probe job did not start")
            starts.append((started["t"] - t0) * 1000)
            time.sleep(0.02)
            t1 = time.monotonic()
            runner.signal(signal.SIGTERM)
            while not isinstance(posted.get(timeout=10), ev.JobExited):
                pass
            stops.append((time.monotonic() - t1) * 1000)
            time.sleep(0.02)
    finally:
        runner.close()
    out["zkleader"] = _probe_summary(starts, stops)
    starts, stops = [], []
    for _ in range(trials):
        t0 = time.monotonic()
        job = PopenJob(argv, {**os.environ, **env}, lambda: None)
        started = records.wait_start(t0, None, 10)
        if started is None:
            raise TimeoutError("the probe job did not start")
        starts.append((started["t"] - t0) * 1000)
        time.sleep(0.02)
        t1 = time.monotonic()
        job.stop(5)
        stops.append((time.monotonic() - t1) * 1000)
        time.sleep(0.02)
    out["popen"] = _probe_summary(starts, stops)
    return out


def _probe_summary(starts: list[float], stops: list[float]) -> dict[str, Any]:
    return {"start_p50": percentile(starts, 50), "start_p99": percentile(starts, 99),
            "stop_p50": percentile(stops, 50), "stop_p99": percentile(stops, 99)}


# ------------------------------------------------------------------ the whole part


def measure(workdir: Path, args: argparse.Namespace) -> dict[str, Any]:
    from zkleader.guardian import PR_SET_CHILD_SUBREAPER, prctl

    workdir.mkdir(parents=True)
    T = args.real_session_timeout
    out: dict[str, Any] = {"session_timeout": T, "tick_ms": args.tick_ms, "stop_timeout": args.stop_timeout,
                           "servers": "ensemble of 3", "idle_s": args.daemon_idle}
    # Guardians (and the releasers they become) of kill -9ed daemons are re-parented to
    # us rather than to init, so that we can wait for them and reap them.
    prctl(PR_SET_CHILD_SUBREAPER, 1)
    try:
        out["job_probe"] = probe = job_probe(workdir / "probe", args.job_argv, 30)
        log(f"  the job alone, 30 starts and stops: zkleader's warm guardian start p50 "
            f"{probe['zkleader']['start_p50']:.2f} / p99 {probe['zkleader']['start_p99']:.2f} ms, stop p50 "
            f"{probe['zkleader']['stop_p50']:.2f} ms; Popen start p50 {probe['popen']['start_p50']:.2f} / p99 "
            f"{probe['popen']['start_p99']:.2f} ms, stop p50 {probe['popen']['stop_p50']:.2f} ms")
    except Exception as err:
        log(f"    job probe FAILED: {type(err).__name__}: {err}")
    ensemble = Ensemble(workdir / "zk", size=3, tick_time=args.tick_ms, max_session_timeout=60000)
    ensemble.start(timeout=120)
    zk = KazooClient(hosts=ensemble.hosts, timeout=10)
    zk.start(timeout=30)
    zk.ensure_path("/bench")
    groups: list[Group] = []
    try:
        if not args.skip_footprint:
            log(f"  footprint: {args.daemon_idle:g} s idle, both designs at once (T = {T:g} s; zkleader: the "
                f"plain `zkleader run`)")
            plain = [Group(design, f"{design}-fp", workdir, ensemble.hosts, args, zk, tapped=False)
                     for design in args.real_designs]
            groups += plain
            try:
                out["footprint"] = footprint(plain, args.daemon_idle)
            finally:
                for group in plain:
                    group.close()
        main = {design: Group(design, f"{design}-a", workdir, ensemble.hosts, args, zk) for design in args.real_designs}
        groups += main.values()
        for design, group in main.items():
            log(f"  SIGTERM to the leader's daemon: {design}, {args.real_handovers} handovers")
            trials = out.setdefault("sigterm", {})[design] = []
            for _ in range(args.real_handovers):
                trial = sigterm_trial(group)
                trials.append(trial)
                m = trial["milestones"]
                log(f"    {trial['leaver']} -> {trial['successor']}: {trial['latency'] * 1000:.1f} ms "
                    + " ".join(f"{k} {v * 1000:.1f}" for k, v in m.items()))
        for design, group in main.items():
            count = args.kill_trials[design]
            log(f"  kill -9 of the leader's daemon: {design}, {count} trials")
            trials = out.setdefault("kill9", {})[design] = []
            for _ in range(count):
                trial = kill_trial(group, T)
                trials.append(trial)
                log(f"    {trial['leaver']} -> {trial['successor']}: {trial['latency'] * 1000:.0f} ms (job reaped "
                    f"{_ms(trial.get('job_reaped'))}, session released {_ms(trial.get('session_released'))}, "
                    f"node deleted {_ms(trial.get('node_deleted'))} ms)")
        log(f"  SIGSTOP of the leader's daemon for 2T = {2 * T:g} s, no watchdog: "
            + ", ".join(f"{d} {args.stop_trials[d]} trials in {args.stop_groups[d]} parallel groups"
                        for d in args.real_designs))
        out["sigstop"] = _sigstop_all(workdir, ensemble.hosts, args, zk, main, groups)
    except Exception as err:
        log(f"    FAILED: {type(err).__name__}: {err}")
        out["error"] = f"{type(err).__name__}: {err}"
    finally:
        for group in groups:
            group.close()
        left = reap_strays(workdir, {pid for pid in ensemble.pids if pid is not None})
        if left:
            log(f"    {left} stray process(es) killed at the end")
        prctl(PR_SET_CHILD_SUBREAPER, 0)
        zk.stop()
        zk.close()
        ensemble.close()
    return out


def _sigstop_all(workdir: Path, hosts: str, args: argparse.Namespace, zk: KazooClient,
                 main: dict[str, Group], groups: list[Group]) -> dict[str, list[dict[str, Any]]]:
    T = args.real_session_timeout
    plan: list[tuple[Group, int]] = []
    for design in args.real_designs:
        count, parallel = args.stop_trials[design], max(1, args.stop_groups[design])
        mine = [main[design]] + [Group(design, f"{design}-s{i}", workdir, hosts, args, zk) for i in range(1, parallel)]
        groups += mine[1:]
        for i, group in enumerate(mine):
            share = count // parallel + (1 if i < count % parallel else 0)
            if share:
                plan.append((group, share))
    results: dict[str, list[dict[str, Any]]] = {d: [] for d in args.real_designs}
    errors: list[str] = []
    lock = threading.Lock()

    def run(group: Group, count: int) -> None:
        for _ in range(count):
            try:
                trial = sigstop_trial(group, T)
            except Exception as err:
                with lock:
                    errors.append(f"{group.label}: {type(err).__name__}: {err}")
                return
            with lock:
                results[group.design].append(trial)
                log(f"    {group.label}: job reaped {_ms(trial['job_reaped'])} ms after the stop, earliest expiry "
                    f"{_ms(trial['earliest_expiry'])}, node deleted {_ms(trial['node_deleted'])}, successor's job "
                    f"{_ms(trial['successor_started'])}; overlap {_ms(trial['overlap_s'])} ms"
                    f"{' (flock)' if trial['flock_overlaps'] else ''}")

    threads = [threading.Thread(target=run, args=pair, daemon=True) for pair in plan]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    for error in errors:
        log(f"    FAILED: {error}")
    if errors:
        results["errors"] = errors  # type: ignore[assignment]
    return results


def _ms(value: float | None) -> str:
    return "–" if value is None else f"{value * 1000:.0f}"


def summary(out: dict[str, Any]) -> dict[str, Any]:
    """The figures the report shows, per design."""
    s: dict[str, Any] = {}
    from .run import PHASES, phase_values

    for design, trials in (out.get("sigterm") or {}).items():
        lat = [t["latency"] * 1000 for t in trials]
        entry: dict[str, Any] = {"count": len(lat), "p50": percentile(lat, 50), "p99": percentile(lat, 99),
                                 "max": max(lat) if lat else None,
                                 "relisted": sum(1 for t in trials if "relisted" in t["milestones"])}
        phases = [phase_values(t) for t in trials]
        for name, _, _ in PHASES:
            values = [p[name] for p in phases if name in p]
            entry[f"{name}_p50"] = percentile(values, 50)
            entry[f"{name}_p99"] = percentile(values, 99)
        for key in LEAVER + SUCCESSOR:
            entry[f"{key}_p50"] = percentile([t["milestones"][key] * 1000 for t in trials if key in t["milestones"]], 50)
        s.setdefault(design, {})["sigterm"] = entry
    for design, trials in (out.get("kill9") or {}).items():
        lat = [t["latency"] * 1000 for t in trials]
        entry = {"count": len(lat), "p50": percentile(lat, 50), "p99": percentile(lat, 99),
                 "max": max(lat) if lat else None}
        for key in ("job_reaped", "session_released", "releaser_exited", "node_deleted"):
            values = [t[key] * 1000 for t in trials if t.get(key) is not None]
            entry[key] = percentile(values, 50)
        s.setdefault(design, {})["kill9"] = entry
    for design, trials in (out.get("sigstop") or {}).items():
        if design == "errors":
            continue
        entry = {"count": len(trials), "overlaps": sum(1 for t in trials if t["overlap"])}
        margins = [t["margin_s"] for t in trials if t.get("margin_s") is not None]
        entry["reaped_before_expiry"] = sum(1 for m in margins if m > 0)
        entry["margin_min_s"] = min(margins) if margins else None
        entry["margin_p50_s"] = percentile(margins, 50)
        overlap = [t["overlap_s"] for t in trials if t.get("overlap_s")]
        entry["overlap_p50_s"] = percentile(overlap, 50)
        entry["overlap_max_s"] = max(overlap) if overlap else None
        for key in ("job_reaped", "earliest_expiry", "node_deleted", "successor_started"):
            entry[f"{key}_p50_s"] = percentile([t[key] for t in trials if t.get(key) is not None], 50)
        s.setdefault(design, {})["sigstop"] = entry
    for row in out.get("footprint") or []:
        s.setdefault(row["design"], {}).setdefault("footprint", []).append(row)
    return s
