"""etcd for the benchmark: Debian's etcd-server (3.4) on loopback, standalone or a
3-member cluster, and a minimal v3 client over etcd's JSON gateway (no gRPC stack to
install: plain http.client, one connection per candidate and one per watch)."""

from __future__ import annotations

import base64
import http.client
import json
import os
import shutil
import signal
import subprocess
import time
from pathlib import Path
from typing import Any

from zkleader.testing.zkserver import free_port  # ports below the ephemeral range

ETCD = shutil.which("etcd") or "/usr/bin/etcd"


def available() -> str | None:
    """None when etcd can run here, else why not."""
    if not os.path.exists(ETCD):
        return "no etcd binary (Debian's etcd-server is not installed)"
    return None


class EtcdCluster:
    """size members on 127.0.0.1 (1: standalone). ``heartbeat_ms`` and ``election_ms``
    are raft's heartbeat interval and election timeout: etcd's tuning guide sizes them
    to the machine, and a machine that also runs a thousand candidates needs more than
    a quiet one (the members otherwise miss heartbeats and keep electing leaders)."""

    def __init__(self, workdir: Path, size: int = 3, heartbeat_ms: int = 100, election_ms: int = 1000) -> None:
        self.dir = workdir
        self.size = size
        self.heartbeat_ms = heartbeat_ms
        self.election_ms = election_ms
        self.members = [(f"e{i + 1}", free_port(), free_port()) for i in range(size)]
        self.procs: list[subprocess.Popen[bytes]] = []

    @property
    def endpoints(self) -> list[tuple[str, int]]:
        return [("127.0.0.1", client) for _, client, _ in self.members]

    def start(self, timeout: float = 30.0) -> None:
        cluster = ",".join(f"{name}=http://127.0.0.1:{peer}" for name, _, peer in self.members)
        for name, client, peer in self.members:
            data = self.dir / name
            shutil.rmtree(data, ignore_errors=True)
            data.mkdir(parents=True)
            log = open(self.dir / f"{name}.log", "ab")
            cmd = [
                ETCD, "--name", name, "--data-dir", str(data / "data"),
                "--listen-client-urls", f"http://127.0.0.1:{client}",
                "--advertise-client-urls", f"http://127.0.0.1:{client}",
                "--listen-peer-urls", f"http://127.0.0.1:{peer}",
                "--initial-advertise-peer-urls", f"http://127.0.0.1:{peer}",
                "--initial-cluster", cluster, "--initial-cluster-state", "new",
                "--initial-cluster-token", f"bench-{os.getpid()}",
                "--heartbeat-interval", str(self.heartbeat_ms), "--election-timeout", str(self.election_ms),
                "--unsafe-no-fsync", "--log-level", "warn", "--logger", "zap",
                "--max-concurrent-streams", "4294967295",
            ]
            self.procs.append(subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                               start_new_session=True))
            log.close()
        deadline = time.monotonic() + timeout
        for host, port in self.endpoints:
            while True:
                try:
                    status = request((host, port), "/v3/maintenance/status", {})
                    if status.get("leader"):
                        break
                except (OSError, ValueError, http.client.HTTPException):
                    pass
                if time.monotonic() > deadline:
                    raise RuntimeError(f"etcd on {host}:{port} not ready; see {self.dir}")
                time.sleep(0.1)

    def metric(self, name: str) -> float:
        """Sum of one Prometheus counter over the members."""
        total = 0.0
        for host, port in self.endpoints:
            conn = http.client.HTTPConnection(host, port, timeout=5)
            try:
                conn.request("GET", "/metrics")
                for line in conn.getresponse().read().decode().splitlines():
                    if line.startswith(name + " "):
                        total += float(line.split()[1])
            finally:
                conn.close()
        return total

    def count(self, prefix: str) -> int:
        """How many keys lie under ``prefix`` (a linearizable count, through the first member)."""
        end = prefix[:-1] + chr(ord(prefix[-1]) + 1)
        answer = request(self.endpoints[0], "/v3/kv/range",
                         {"key": b64(prefix), "range_end": b64(end), "count_only": True})
        return int(answer.get("count", 0))

    def close(self) -> None:
        for proc in self.procs:
            if proc.poll() is None:
                proc.send_signal(signal.SIGKILL)
                proc.wait()
        self.procs.clear()


def b64(text: str | bytes) -> str:
    raw = text.encode() if isinstance(text, str) else text
    return base64.b64encode(raw).decode()


def request(endpoint: tuple[str, int], path: str, body: dict[str, Any], timeout: float = 10.0) -> dict[str, Any]:
    conn = http.client.HTTPConnection(*endpoint, timeout=timeout)
    try:
        return call(conn, path, body)
    finally:
        conn.close()


def call(conn: http.client.HTTPConnection, path: str, body: dict[str, Any]) -> dict[str, Any]:
    conn.request("POST", path, json.dumps(body), {"Content-Type": "application/json"})
    response = conn.getresponse()
    data = response.read()
    if response.status != 200:
        raise OSError(f"etcd {path}: HTTP {response.status}: {data[:200]!r}")
    return json.loads(data)


class Watch:
    """One watch stream (one HTTP connection) on one key; yields its responses."""

    def __init__(self, endpoint: tuple[str, int], key: str, start_revision: int | None = None,
                 no_put: bool = True) -> None:
        self.conn = http.client.HTTPConnection(*endpoint, timeout=None)
        create: dict[str, Any] = {"key": b64(key)}
        if start_revision is not None:
            create["start_revision"] = str(start_revision)
        if no_put:
            create["filters"] = ["NOPUT"]
        self.conn.request("POST", "/v3/watch", json.dumps({"create_request": create}),
                          {"Content-Type": "application/json"})
        self.response = self.conn.getresponse()
        first = self.next()  # {"result": {"created": true}}
        if not first.get("created"):
            raise OSError(f"watch not created: {first}")

    def next(self) -> dict[str, Any]:
        line = self.response.readline()
        if not line:
            raise EOFError("watch stream closed")
        return json.loads(line).get("result", {})

    def close(self) -> None:
        try:
            if self.conn.sock is not None:
                import socket

                self.conn.sock.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass
        self.conn.close()
