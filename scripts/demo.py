"""The local demo: a 3-node ZooKeeper ensemble on loopback, three zkleader daemons
sharing config/demo.yaml, a planned handover and a crash failover, with the times
measured. Run through scripts/demo (which installs what it needs first).

Ctrl-C at any point, or the end, stops every process the demo started.
"""

from __future__ import annotations

import argparse
import json
import os
import queue
import signal
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import yaml

from zkleader.guardian import children_of
from zkleader.testing.zkserver import Ensemble, ZooKeeperServer  # the test bed's server launcher

REPO = Path(__file__).resolve().parent.parent

HOSTS = ("host-1", "host-2", "host-3")
COLOURS = {"host-1": "\033[36m", "host-2": "\033[35m", "host-3": "\033[33m"}
SHOWN = {
    "connected", "joined", "following", "leader_acquired", "leadership_lost", "job_started", "job_exited",
    "handover", "suspended", "session_lost", "lease_expired", "shutting_down", "stopped", "job_killed",
    "session_released",
}


def _is_guardian(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as handle:
            return b"guardian.py" in handle.read()
    except OSError:
        return False


class Host:
    def __init__(self, name: str, config: Path, lines: queue.Queue[tuple[str, str]]) -> None:
        self.name = name
        self.config = config
        self.lines = lines
        self.process: subprocess.Popen[str] | None = None

    def start(self) -> None:
        self.process = subprocess.Popen(
            [sys.executable, "-m", "zkleader", "run", "-c", str(self.config)],
            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, text=True, cwd=REPO,
        )
        threading.Thread(target=self._read, args=(self.process,), daemon=True).start()

    def _read(self, process: subprocess.Popen[str]) -> None:
        assert process.stdout is not None
        for line in process.stdout:
            self.lines.put((self.name, line.rstrip("\n")))

    def signal(self, signum: int) -> float:
        assert self.process is not None
        sent = time.monotonic()
        self.process.send_signal(signum)
        return sent

    def kill_host(self) -> float:
        """kill -9 of the daemon and its guardian at once, as a host's death would end
        both (the job dies with the guardian: PR_SET_PDEATHSIG)."""
        assert self.process is not None
        guardians = [pid for pid, _ in children_of().get(self.process.pid, []) if _is_guardian(pid)]
        sent = time.monotonic()
        for pid in [*guardians, self.process.pid]:
            os.kill(pid, signal.SIGKILL)
        return sent

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(5)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()


class Demo:
    def __init__(self, workdir: Path, zk_hosts: str, colour: bool) -> None:
        self.lines: queue.Queue[tuple[str, str]] = queue.Queue()
        self.colour = colour
        self.leader: str | None = None
        self.job_started_at: dict[str, float] = {}
        base = yaml.safe_load((REPO / "config" / "demo.yaml").read_text())
        self.hosts: dict[str, Host] = {}
        for name in HOSTS:
            config = json.loads(json.dumps(base))
            config["zookeeper"]["hosts"] = zk_hosts
            config["election"]["candidate"] = name
            config["logging"]["format"] = "json"  # rendered below, one line per event
            path = workdir / f"{name}.yaml"
            path.write_text(yaml.safe_dump(config))
            self.hosts[name] = Host(name, path, self.lines)
        self.session_timeout = float(str(base["zookeeper"]["session_timeout"]).rstrip("s"))

    def say(self, text: str) -> None:
        print(f"\033[1m==> {text}\033[0m" if self.colour else f"==> {text}", flush=True)

    def pump(self, seconds: float, until: str | None = None, exclude: str | None = None) -> tuple[str, float] | None:
        """Prints what the hosts say for a while; returns (host, time) of the first `until` event."""
        deadline = time.monotonic() + seconds
        while time.monotonic() < deadline:
            try:
                name, line = self.lines.get(timeout=max(0.0, deadline - time.monotonic()))
            except queue.Empty:
                break
            now = time.monotonic()
            event = self.render(name, line)
            if event == "leader_acquired":
                self.leader = name
            if event == "job_started":
                self.job_started_at[name] = now
            if until is not None and event == until and name != exclude:
                return name, now
        return None

    def render(self, name: str, line: str) -> str | None:
        prefix = f"{COLOURS[name]}{name}\033[0m" if self.colour else name
        if not line.startswith("{"):
            print(f"{prefix} | {line}", flush=True)
            return None
        try:
            event = json.loads(line)
        except ValueError:
            print(f"{prefix} | {line}", flush=True)
            return None
        kind = event.get("event", "")
        if kind in SHOWN or event.get("level") in ("warning", "error"):
            skip = {"timestamp", "level", "event", "election", "candidate"}
            details = " ".join(f"{k}={v}" for k, v in event.items() if k not in skip)
            print(f"{prefix} | {event.get('timestamp', '')[11:23]} {kind} {details}", flush=True)
        return kind

    def run(self) -> dict[str, float]:
        figures: dict[str, float] = {}
        self.say("starting three zkleader daemons (host-1, host-2, host-3) on one election")
        for host in self.hosts.values():
            host.start()
            time.sleep(0.3)
        if self.pump(30, until="job_started") is None:
            raise SystemExit("demo: no leader within 30 s; is ZooKeeper up?")
        self.pump(4)
        old = self.leader
        assert old is not None
        self.say(f"{old} leads. Planned handover: systemctl stop on {old} (SIGTERM)")
        sent = self.hosts[old].signal(signal.SIGTERM)
        started = self.pump(10, until="job_started", exclude=old)
        if started:
            figures["planned handover (SIGTERM -> successor job started), ms"] = (started[1] - sent) * 1000
            self.say(f"{started[0]} took over {figures['planned handover (SIGTERM -> successor job started), ms']:.0f} ms after the SIGTERM")
        self.pump(2)
        self.say(f"{old} starts again and queues at the back")
        self.hosts[old].start()
        self.pump(4)
        crashed = self.leader
        assert crashed is not None
        self.say(f"Daemon crash: kill -9 of {crashed}'s daemon alone (its guardian kills and reaps the job, "
                 "then closes the dead daemon's session)")
        sent = self.hosts[crashed].signal(signal.SIGKILL)
        started = self.pump(self.session_timeout + 10, until="job_started", exclude=crashed)
        if started:
            figures["daemon crash (kill -9 -> successor job started), s"] = started[1] - sent
            self.say(f"{started[0]} took over {started[1] - sent:.2f} s after the crash "
                     f"(session timeout {self.session_timeout:g} s)")
        self.pump(2)
        self.say(f"{crashed} starts again and queues at the back")
        self.hosts[crashed].start()
        self.pump(4)
        dead = self.leader
        assert dead is not None
        self.say(f"Host crash: kill -9 of {dead}'s daemon and guardian together (nobody is left to close "
                 "the session: it must expire)")
        sent = self.hosts[dead].kill_host()
        started = self.pump(self.session_timeout + 10, until="job_started", exclude=dead)
        if started:
            failover = started[1] - sent
            figures["host crash (kill -9 of all -> successor job started), s"] = failover
            figures["  of which beyond the session timeout, s"] = failover - self.session_timeout
            self.say(f"{started[0]} took over {failover:.2f} s after the crash (session timeout {self.session_timeout:g} s)")
        self.pump(3)
        return figures

    def close(self) -> None:
        for host in self.hosts.values():
            host.stop()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--standalone", action="store_true", help="one ZooKeeper server instead of a 3-node ensemble")
    args = parser.parse_args()
    colour = sys.stdout.isatty()
    with tempfile.TemporaryDirectory(prefix="zkleader-demo-") as tmp:
        workdir = Path(tmp)
        print("==> starting ZooKeeper on loopback" + (" (standalone)" if args.standalone else " (3-node ensemble)"), flush=True)
        server: ZooKeeperServer | Ensemble
        server = ZooKeeperServer(workdir / "zk", name="zk") if args.standalone else Ensemble(workdir / "zk", size=3)
        demo: Demo | None = None
        try:
            server.start(timeout=90)
            demo = Demo(workdir, server.hosts, colour)
            figures = demo.run()
            print("\n==> summary")
            for name, value in figures.items():
                print(f"    {name:<58} {value:8.2f}")
            return 0
        except KeyboardInterrupt:
            print("\n==> interrupted; stopping everything", flush=True)
            return 130
        finally:
            if demo is not None:
                demo.close()
            server.close()


if __name__ == "__main__":
    os.environ.setdefault("PYTHONUNBUFFERED", "1")
    sys.exit(main())
