"""Real `zkleader run` daemons (one process each) on a loopback 3-node ensemble:
RSS and idle CPU read from /proc, then planned handovers (SIGTERM) and crash
failovers (kill -9) measured exactly as an operator would see them."""

from __future__ import annotations

import argparse
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import yaml

from zkleader.testing.zkserver import Ensemble

from .run import MARKER, REPO, Records, log, percentile

TICK = os.sysconf("SC_CLK_TCK")


def proc_stat(pid: int) -> dict[str, float]:
    status = Path(f"/proc/{pid}/status").read_text().splitlines()
    fields = {line.split(":")[0]: line.split(":", 1)[1].strip() for line in status}
    stat = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    try:
        pss = next(int(line.split()[1]) for line in Path(f"/proc/{pid}/smaps_rollup").read_text().splitlines()
                   if line.startswith("Pss:"))
    except (OSError, StopIteration):
        pss = 0
    return {
        "rss_mb": int(fields["VmRSS"].split()[0]) / 1024,
        "pss_mb": pss / 1024,
        "threads": int(fields["Threads"]),
        "cpu_s": (int(stat[11]) + int(stat[12])) / TICK,
    }


def children(pid: int) -> list[int]:
    found = []
    for task in os.listdir(f"/proc/{pid}/task"):
        try:
            found += [int(c) for c in Path(f"/proc/{pid}/task/{task}/children").read_text().split()]
        except OSError:
            pass
    return found


class Daemons:
    def __init__(self, workdir: Path, hosts: str, args: argparse.Namespace) -> None:
        self.dir = workdir
        self.hosts = hosts
        self.args = args
        self.records = Records(workdir / "records.jsonl")
        self.procs: dict[str, subprocess.Popen[bytes]] = {}
        self.logs: dict[str, Path] = {}
        self.election = f"/bench/daemons-{os.getpid()}"

    def start(self, name: str) -> None:
        config = {
            "zookeeper": {"hosts": self.hosts, "session_timeout": self.args.session_timeout},
            "election": {"path": self.election, "candidate": name},
            "job": {"command": [sys.executable, "-I", "-S", str(MARKER)], "stop_timeout": self.args.stop_timeout,
                    "restart_delay": 0.2,
                    "environment": {"BENCH_RECORD": str(self.records.path), "BENCH_LOCK": str(self.dir / "job.lock")}},
            "logging": {"level": "info", "format": "json"},
        }
        from zkleader import config as zconfig

        if "tick_time" in zconfig.ZooKeeperConfig.__dataclass_fields__:
            config["zookeeper"]["tick_time"] = self.args.tick_ms / 1000
        path = self.dir / f"{name}.yaml"
        path.write_text(yaml.safe_dump(config))
        self.logs[name] = self.dir / f"{name}-{sum(1 for _ in self.dir.glob(name + '-*.log'))}.log"
        with self.logs[name].open("ab") as out:
            self.procs[name] = subprocess.Popen([sys.executable, "-m", "zkleader", "run", "-c", str(path)],
                                                stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                                cwd=getattr(self.args, "code_dir", REPO))

    def joined(self, name: str) -> bool:
        text = self.logs[name].read_text(errors="replace")
        count = sum(1 for line in text.splitlines() if '"event": "joined"' in line or '"event":"joined"' in line)
        return count >= 1

    def wait_joined(self, name: str, timeout: float = 30) -> None:
        deadline = time.monotonic() + timeout
        while not self.joined(name):
            if time.monotonic() > deadline:
                raise TimeoutError(f"{name} did not join")
            time.sleep(0.02)

    def leader(self) -> str:
        self.records.poll()
        return [r for r in self.records.rows if r["kind"] == "start"][-1]["candidate"]

    def close(self) -> None:
        for proc in self.procs.values():
            if proc.poll() is None:
                proc.kill()
                proc.wait()


def measure(workdir: Path, args: argparse.Namespace, idle: float, planned: int, crashes: int) -> dict[str, Any]:
    workdir.mkdir(parents=True)
    ensemble = Ensemble(workdir / "zk", size=3, tick_time=args.tick_ms, max_session_timeout=60000)
    ensemble.start(timeout=120)
    group = Daemons(workdir, ensemble.hosts, args)
    out: dict[str, Any] = {"session_timeout": args.session_timeout}
    try:
        names = ["host-1", "host-2", "host-3"]
        for name in names:
            group.start(name)
            group.wait_joined(name)
        if group.records.wait_start(0, None, 30) is None:
            raise TimeoutError("no leader job")
        time.sleep(3)  # past start-up: imports done, first heartbeats sent
        leader = group.leader()
        before = {n: proc_stat(p.pid) for n, p in group.procs.items()}
        time.sleep(idle)
        after = {n: proc_stat(p.pid) for n, p in group.procs.items()}
        guardian = children(group.procs[leader].pid)
        job = children(guardian[0]) if guardian else []
        role = {n: ("leader" if n == leader else "follower") for n in names}
        out["daemons"] = [
            {"name": n, "role": role[n], "rss_mb": after[n]["rss_mb"], "pss_mb": after[n]["pss_mb"],
             "threads": after[n]["threads"], "idle_cpu_pct": (after[n]["cpu_s"] - before[n]["cpu_s"]) / idle * 100}
            for n in names
        ]
        out["guardian_rss_mb"] = proc_stat(guardian[0])["rss_mb"] if guardian else None
        out["job_rss_mb"] = proc_stat(job[0])["rss_mb"] if job else None
        out["idle_s"] = idle
        for d in out["daemons"]:
            log(f"    {d['name']} ({d['role']}): RSS {d['rss_mb']:.1f} MB (PSS {d['pss_mb']:.1f}), "
                f"{d['threads']} threads, idle CPU {d['idle_cpu_pct']:.3f}% of a core over {idle:g}s")
        log(f"    leader's guardian RSS {out['guardian_rss_mb']:.1f} MB, job RSS {out['job_rss_mb']:.1f} MB")
        out["changes"] = []
        for kind, count in (("stop", planned), ("crash", crashes)):
            for _ in range(count):
                old = group.leader()
                sent = time.monotonic()
                os.kill(group.procs[old].pid, signal.SIGTERM if kind == "stop" else signal.SIGKILL)
                started = group.records.wait_start(sent, old, args.session_timeout + 15)
                if started is None:
                    raise TimeoutError(f"no successor after {kind}")
                latency = started["t"] - sent
                out["changes"].append({"kind": kind, "latency": latency})
                group.procs[old].wait(15)
                beyond = latency - (args.session_timeout if kind == "crash" else 0)
                log(f"    {'SIGTERM' if kind == 'stop' else 'kill -9'} {old} -> {started['candidate']}: "
                    f"{beyond * 1000:.1f} ms{' beyond the session timeout' if kind == 'crash' else ''}")
                group.start(old)  # back at the end of the queue, as an operator would restart it
                time.sleep(0.3)
                group.wait_joined(old)
                time.sleep(0.3)
        out["overlaps"] = group.records.overlaps(until=time.monotonic())
        for kind in ("stop", "crash"):
            offset = args.session_timeout if kind == "crash" else 0
            lat = [(c["latency"] - offset) * 1000 for c in out["changes"] if c["kind"] == kind]
            out[f"{kind}_p50_ms"] = percentile(lat, 50)
            out[f"{kind}_p99_ms"] = percentile(lat, 99)
            out[f"{kind}_max_ms"] = max(lat) if lat else None
            out[f"{kind}_count"] = len(lat)
    except Exception as err:
        log(f"    FAILED: {type(err).__name__}: {err}")
        out["error"] = f"{type(err).__name__}: {err}"
    finally:
        group.close()
        ensemble.close()
    return out


if __name__ == "__main__":  # a quick look on its own: python -m bench.footprint
    ns = argparse.Namespace(session_timeout=4.0, stop_timeout=1.0, tick_ms=200)
    import tempfile

    print(json.dumps(measure(Path(tempfile.mkdtemp()) / "fp", ns, 5, 3, 1), indent=1))
