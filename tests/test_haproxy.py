"""zkleader behind a real load balancer: Debian's HAProxy in front of one backend per
candidate, health-checking each daemon's /leader (http.py).

Each daemon's job is zkleader/testing/jobs/backend.py, a tiny HTTP server answering its
candidate's name (and holding the overlap detector's flock). HAProxy sends traffic to
the job's port and checks the daemon's http.listen port (`check port`), every 100 ms,
`fall 1 rise 2`: the outgoing leader is marked down at its first failed check, the
incoming one up after two passing checks, so HAProxy never has two servers up at once.

A client sends requests through HAProxy all along; the assertions read HAProxy's own
request log (one line per request: accept time, server, status, total time) and its
stats socket (`show stat`, polled), plus the backends' start records.
"""

from __future__ import annotations

import csv
import io
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
from dataclasses import dataclass
from pathlib import Path

import pytest

from zkleader.testing.daemons import REPO, wait_for
from zkleader.testing.zkserver import free_port

pytestmark = [pytest.mark.zookeeper,
              pytest.mark.skipif(shutil.which("haproxy") is None, reason="haproxy is not installed (scripts/bootstrap)")]

BACKEND = REPO / "zkleader" / "testing" / "jobs" / "backend.py"
INTER = 0.1  # HAProxy's check interval (seconds)
RISE = 2

CONFIG = """\
global
    log stdout format raw local0
    stats socket {stats} mode 600 level admin
    maxconn 256

defaults
    mode http
    log global
    option dontlognull
    timeout connect 100ms
    timeout client 5s
    timeout server 2s
    timeout check 200ms
    retries 3
    option redispatch 1
    log-format "req %Ts.%ms %s %ST %Tt %rc"

frontend fe
    bind 127.0.0.1:{front}
    default_backend leader

backend leader
    option httpchk GET /leader
    http-check expect status 200
    default-server inter {inter}ms fall 1 rise {rise}
{servers}
"""


@dataclass
class Request:
    sent: float  # time.monotonic()
    done: float
    status: int
    body: str


class HAProxy:
    def __init__(self, workdir: Path, servers: dict[str, tuple[int, int]]) -> None:
        self.front = free_port()
        self.stats_path = workdir / "haproxy.stats"
        self.log_path = workdir / "haproxy.log"
        lines = "\n".join(f"    server {name} 127.0.0.1:{job} check port {http}"
                          for name, (job, http) in servers.items())
        self.config_path = workdir / "haproxy.cfg"
        self.config_path.write_text(CONFIG.format(stats=self.stats_path, front=self.front, inter=int(INTER * 1000),
                                                  rise=RISE, servers=lines))
        check = subprocess.run(["haproxy", "-c", "-f", str(self.config_path)], capture_output=True, text=True, check=False)
        assert check.returncode == 0, check.stdout + check.stderr
        with self.log_path.open("wb") as log:
            self.process = subprocess.Popen(["haproxy", "-db", "-f", str(self.config_path)], stdout=log,
                                            stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
        wait_for(lambda: self.stats_path.exists() and self._try_stat(), 10, "haproxy's stats socket")
        self.samples: list[tuple[float, frozenset[str]]] = []
        self._stop = threading.Event()
        self._poller = threading.Thread(target=self._poll, daemon=True)
        self._poller.start()

    def _try_stat(self) -> bool:
        try:
            self.up()
        except OSError:
            return False
        return True

    def up(self) -> frozenset[str]:
        """The servers HAProxy has UP now (stats socket, `show stat`)."""
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
            sock.settimeout(2)
            sock.connect(str(self.stats_path))
            sock.sendall(b"show stat\n")
            data = b""
            while chunk := sock.recv(65536):
                data += chunk
        rows = csv.reader(io.StringIO(data.decode().lstrip("# ")))
        header = next(rows)
        px, sv, status = header.index("pxname"), header.index("svname"), header.index("status")
        return frozenset(r[sv] for r in rows if len(r) > status and r[px] == "leader"
                         and r[sv] not in ("BACKEND", "FRONTEND") and r[status].startswith("UP"))

    def _poll(self) -> None:
        deadline = time.monotonic() + 300
        while not self._stop.is_set() and time.monotonic() < deadline:
            try:
                self.samples.append((time.monotonic(), self.up()))
            except OSError:
                pass
            time.sleep(0.01)

    def requests_log(self) -> list[tuple[float, str, int, float]]:
        """HAProxy's request log: (accept wall time, server, status, total seconds)."""
        rows = []
        for line in self.log_path.read_text(errors="replace").splitlines():
            parts = line.split()
            if len(parts) == 6 and parts[0] == "req":
                rows.append((float(parts[1]), parts[2], int(parts[3]), int(parts[4]) / 1000))
        return rows

    def close(self) -> None:
        self._stop.set()
        self._poller.join(5)
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(5)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(5)


class Client:
    """Requests through HAProxy, one connection each, every ~5 ms; bounded in time."""

    def __init__(self, port: int) -> None:
        self.port = port
        self.requests: list[Request] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _one(self) -> Request:
        sent = time.monotonic()
        try:
            with socket.create_connection(("127.0.0.1", self.port), timeout=3) as sock:
                sock.sendall(b"GET / HTTP/1.1\r\nHost: lb\r\nConnection: close\r\n\r\n")
                data = b""
                while chunk := sock.recv(65536):
                    data += chunk
        except OSError:
            return Request(sent, time.monotonic(), 0, "")
        head, _, body = data.partition(b"\r\n\r\n")
        status = int(head[9:12]) if head.startswith(b"HTTP/1.") else 0
        return Request(sent, time.monotonic(), status, body.decode(errors="replace").strip())

    def _run(self) -> None:
        deadline = time.monotonic() + 240
        while not self._stop.is_set() and time.monotonic() < deadline:
            self.requests.append(self._one())
            time.sleep(0.005)

    def served(self, since: float = 0.0) -> list[Request]:
        return [r for r in list(self.requests) if r.sent >= since and r.status == 200]

    def close(self) -> None:
        self._stop.set()
        self._thread.join(10)


@pytest.fixture
def haproxy(tmp_path: Path):
    made: list[HAProxy] = []

    def make(servers: dict[str, tuple[int, int]]) -> HAProxy:
        proxy = HAProxy(tmp_path, servers)
        made.append(proxy)
        return proxy

    yield make
    for proxy in made:
        proxy.close()
        print("--- haproxy log tail:\n" + "\n".join(proxy.log_path.read_text(errors="replace").splitlines()[-40:]))


def test_traffic_follows_the_leader_through_a_handover_and_a_kill_9(healthy_zk_server, election_path,
                                                                    daemon_group, haproxy) -> None:
    names = ["a", "b", "c"]
    ports = {name: (free_port(), free_port()) for name in names}  # (job, http)
    group = daemon_group(healthy_zk_server.hosts, election_path)
    for name in names:
        job_port, http_port = ports[name]
        daemon = group.add(name, sections={"http": {"listen": f"127.0.0.1:{http_port}"}},
                           command=[sys.executable, "-I", "-S", str(BACKEND), str(job_port)])
        daemon.wait_event("joined", 30)  # a leads, then b and c queue in that order
        if name == "a":
            group.wait_starts(1, 30)
    lb = haproxy(ports)
    # HAProxy starts its servers UP until their first check: from the first time it has
    # only a's up, the stats samples must never show two.
    wait_for(lambda: lb.up() == {"a"}, 10, "haproxy: a up")
    lb.samples.clear()
    client = Client(lb.front)
    try:
        wait_for(lambda: len(client.served()) >= 50, 20, "50 requests served")
        assert {r.body for r in client.served()} == {"a"}

        # Planned handover: SIGTERM to a's daemon; b takes over.
        handover = group.signal("a", signal.SIGTERM)
        wait_for(lambda: any(r.body == "b" for r in client.served(handover)), 20, "traffic on b")
        wait_for(lambda: len([r for r in client.served(handover) if r.body == "b"]) >= 50, 20, "50 on b")

        # Unplanned: kill -9 of b's daemon (its guardian kills the job, the releaser
        # closes the session); c takes over.
        killed = group.signal("b", signal.SIGKILL)
        wait_for(lambda: any(r.body == "c" for r in client.served(killed)), 30, "traffic on c")
        wait_for(lambda: len([r for r in client.served(killed) if r.body == "c"]) >= 50, 20, "50 on c")
    finally:
        client.close()
    time.sleep(0.2)  # HAProxy writes its log line when a request ends

    starts = {r["candidate"]: r["t"] for r in group.records("start")}
    served = client.served()
    figures = {}
    for label, sent, old, new in (("handover (SIGTERM)", handover, "a", "b"), ("kill -9", killed, "b", "c")):
        first_new = min(r.done for r in served if r.body == new)
        last_old = max(r.done for r in served if r.body == old)
        failed = [r for r in client.requests if sent <= r.sent <= first_new and r.status != 200]
        failover = starts[new] - sent  # signal -> the new leader's backend listening
        up = min(t for t, servers in lb.samples if t >= sent and new in servers) - sent  # -> HAProxy has it UP
        down = min(t for t, servers in lb.samples if t >= sent and old not in servers) - sent
        moved = first_new - sent       # signal -> first answer from it through HAProxy
        figures[label] = {"failover_ms": round(failover * 1000), "old_down_ms": round(down * 1000),
                          "new_up_ms": round(up * 1000), "moved_ms": round(moved * 1000),
                          "gap_ms": round((first_new - last_old) * 1000), "failed_requests": len(failed)}
        # HAProxy has the new leader up within the failover time plus RISE check
        # intervals (and one more for the phase of its checks against the start), and
        # the traffic follows within a connect retry (timeout connect); plus some
        # scheduling slack on a 2-core machine.
        assert up <= failover + (RISE + 1) * INTER + 0.15, (label, figures[label])
        assert moved <= up + 0.1 + 0.15, (label, figures[label])
        assert last_old < first_new
    print("figures:", figures)

    # Every request went to the leader of its time: in order, a..a b..b c..c.
    order = [r.body for r in served]
    switches = [order[i + 1] for i in range(len(order) - 1) if order[i] != order[i + 1]]
    assert order[0] == "a" and switches == ["b", "c"], switches

    # HAProxy's own log: 200s by one server at a time, never two at once.
    log = [row for row in lb.requests_log() if row[2] == 200]
    assert len(log) >= len(served) * 0.95
    servers = [row[1].split("/")[-1] for row in log]
    log_switches = [servers[i + 1] for i in range(len(servers) - 1) if servers[i] != servers[i + 1]]
    assert log_switches == ["b", "c"], log_switches
    for old, new in (("a", "b"), ("b", "c")):
        old_end = max(t + total for t, s, _, total in log if s.endswith(old))
        new_begin = min(t for t, s, _, _ in log if s.endswith(new))
        assert old_end <= new_begin + 0.001, (old, new, old_end, new_begin)  # ms resolution
    # Its stats socket: never two servers UP at once.
    assert lb.samples and max(len(up) for _, up in lb.samples) <= 1, [s for s in lb.samples if len(s[1]) > 1][:5]
    assert group.overlaps() == []
