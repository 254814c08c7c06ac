"""Real etcd members for tests, started from Debian's ``/usr/bin/etcd`` (etcd-server).

``EtcdCluster`` runs 1 or 3 (any N) members on 127.0.0.1, each on two free ports below
the kernel's ephemeral range (``zkserver.free_port``: no outgoing connection can grab a
stopped member's port before it restarts), with a short raft heartbeat (50 ms) and
election timeout (500 ms) so that leader changes and lease expiry tests run in
seconds. etcd's smallest lease TTL follows from those: ``ceil(1.5 x election
timeout)`` = 1 s (``EtcdCluster.min_ttl``); a shorter TTL is raised to it by the server.

Every member lives in its own directory under the work directory you give it:

    <dir>/<name>/data/        --data-dir (kept across restarts: same member)
    <dir>/<name>/etcd.log     stdout+stderr (zap JSON lines), appended across
                              restarts; ``log_tail()`` returns its end

Only processes started here are ever signalled, by their pid. Each etcd is started
through ``setpriv --pdeathsig KILL`` when the caller is the main thread, so a test run
that is itself SIGKILLed does not leave members behind.

Clients reach the members directly (``endpoints``) or through a ``FaultProxy``
(``proxy()``), which forwards bytes and knows nothing of gRPC: its silent partition,
heal and reset work for etcd's HTTP/2 streams as they do for ZooKeeper's; its
opcode-based rules (``lose_reply_to``, ``on_reply``) parse ZooKeeper frames and do not
apply here.

With ``peer_links=True`` every member's advertised peer URL is a byte-forwarding proxy
in front of its real peer port (a peer link), so that ``isolate(i)`` can cut member i
off from the others silently while its client port still answers (fault 8 of
tests/test_etcd_faults.py; ``isolatable_ensemble`` in tests/test_faults.py does the
same for ZooKeeper). The URLs must be the same for every member (etcd derives member
ids from them), so one proxy cannot be given per pair of members: a member's link
instead tells the connections it accepts apart by the process that opened them (the
peer's pid owns the client socket, found in /proc), and cuts only those of the
isolated member.
"""

from __future__ import annotations

import atexit
import dataclasses
import functools
import itertools
import json
import math
import os
import shutil
import signal
import socket
import ssl
import subprocess
import threading
import time
import urllib.error
import urllib.request
import weakref
from pathlib import Path
from typing import Any, Callable, Sequence

from .faultproxy import FaultProxy
from .zkserver import LOOPBACK, _tail, free_port, wait_until

__all__ = ["ClientTls", "EtcdCluster", "EtcdMember", "EtcdStartError", "ETCD_BINARY"]

ETCD_BINARY = os.environ.get("ZKLEADER_ETCD", "/usr/bin/etcd")


@dataclasses.dataclass(frozen=True)
class ClientTls:
    """TLS on the members' client port, client certificates required: PEM files of the
    CA that signed both sides, and the server's certificate and key (valid for the name
    ``localhost``, which the endpoints then use; ``zksecure.make_pki`` makes such a
    set). ``client_cert``/``client_key`` are what the test bed's own probes present."""

    ca: str
    server_cert: str
    server_key: str
    client_cert: str
    client_key: str

    def context(self) -> ssl.SSLContext:
        context = ssl.create_default_context(cafile=self.ca)
        context.load_cert_chain(self.client_cert, self.client_key)
        return context


class EtcdStartError(RuntimeError):
    """A member did not come up; the message carries its log tail."""


# Everything started by this module, so that an interpreter exit kills leftovers.
_live: "weakref.WeakSet[EtcdMember]" = weakref.WeakSet()


@atexit.register
def _kill_leftovers() -> None:
    for member in list(_live):
        try:
            member.stop(kill=True)
        except Exception:
            pass


class EtcdMember:
    """One etcd member of an ``EtcdCluster``: start, stop(kill), kill, pause/resume
    (SIGSTOP/SIGCONT: it keeps its sockets and answers nothing), restart (same ports,
    same data, same member id)."""

    def __init__(self, cluster: "EtcdCluster", index: int, workdir: Path) -> None:
        self._cluster_ref = weakref.ref(cluster)
        self.index = index
        self.name = f"etcd{index + 1}"
        self.dir = workdir
        self.dir.mkdir(parents=True, exist_ok=True)
        self.data_dir = self.dir / "data"
        self.log_path = self.dir / "etcd.log"
        # A TLS member is reached by the one name its certificate carries.
        self.host = "localhost" if cluster.tls is not None else LOOPBACK
        self.client_port = free_port()
        self.peer_port = free_port()
        self._proc: subprocess.Popen[bytes] | None = None
        self._lock = threading.RLock()

    @property
    def endpoint(self) -> str:
        """``host:port`` of the client URL (the form ``etcd.endpoints`` takes)."""
        return f"{self.host}:{self.client_port}"

    @property
    def address(self) -> tuple[str, int]:
        return (self.host, self.client_port)

    @property
    def peer_url(self) -> str:
        """Where this member listens for its peers."""
        return f"http://{LOOPBACK}:{self.peer_port}"

    @property
    def advertised_peer_url(self) -> str:
        """Where its peers reach it: its peer link's port when the cluster has them."""
        cluster = self._cluster_ref()
        assert cluster is not None
        if cluster.links:
            return f"http://{LOOPBACK}:{cluster.links[self.index].port}"
        return self.peer_url

    @property
    def pid(self) -> int | None:
        proc = self._proc
        return proc.pid if proc is not None and proc.poll() is None else None

    @property
    def running(self) -> bool:
        return self.pid is not None

    def command(self) -> list[str]:
        cluster = self._cluster_ref()
        assert cluster is not None
        tls = cluster.tls
        client_url = f"{'https' if tls else 'http'}://{self.endpoint}"
        listen_url = f"{'https' if tls else 'http'}://{LOOPBACK}:{self.client_port}"
        secure = ["--cert-file", tls.server_cert, "--key-file", tls.server_key, "--client-cert-auth",
                  "--trusted-ca-file", tls.ca] if tls else []
        return [
            ETCD_BINARY,
            "--name", self.name,
            "--data-dir", str(self.data_dir),
            "--listen-client-urls", listen_url,
            "--advertise-client-urls", client_url,
            "--listen-peer-urls", self.peer_url,
            "--initial-advertise-peer-urls", self.advertised_peer_url,
            "--initial-cluster", cluster.initial_cluster,
            "--initial-cluster-state", "new",
            "--initial-cluster-token", cluster.token,
            "--heartbeat-interval", str(cluster.heartbeat_ms),
            "--election-timeout", str(cluster.election_ms),
            "--logger", "zap",
            "--log-outputs", "stderr",
            *secure,
            *cluster.extra_args,
        ]

    def _spawn(self) -> None:
        cmd = self.command()
        if threading.current_thread() is threading.main_thread() and shutil.which("setpriv"):
            # The member dies with the test process even if that is SIGKILLed.
            # (PDEATHSIG follows the *thread* that forked, hence main thread only.)
            cmd = ["setpriv", "--pdeathsig", "KILL", "--", *cmd]
        with open(self.log_path, "ab") as log:
            log.write(f"\n===== {time.strftime('%H:%M:%S')} etcdcluster: starting {self.name} "
                      f"on {self.endpoint} =====\n".encode())
            log.flush()
            self._proc = subprocess.Popen(
                cmd, stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT, cwd=str(self.dir),
                start_new_session=True,  # a Ctrl-C in the terminal goes to pytest, which cleans up
                close_fds=True)
        _live.add(self)

    def start(self) -> "EtcdMember":
        """Starts the process (no-op if running); readiness is the cluster's to judge:
        a member of a 3-member cluster serves only once a quorum has a leader."""
        with self._lock:
            if not self.running:
                if shutil.which(ETCD_BINARY) is None:
                    raise EtcdStartError(f"{ETCD_BINARY} not found (install Debian's etcd-server)")
                self._spawn()
        return self

    def stop(self, kill: bool = False, timeout: float = 10.0) -> None:
        """SIGTERM (or SIGKILL with ``kill``) to the pid started here, and reap it; a
        member that ignores SIGTERM for ``timeout`` seconds gets SIGKILL."""
        with self._lock:
            proc = self._proc
            if proc is None or proc.poll() is not None:
                return
            try:
                if not kill:
                    os.kill(proc.pid, signal.SIGCONT)  # a paused member must run to act on SIGTERM
                proc.send_signal(signal.SIGKILL if kill else signal.SIGTERM)
            except ProcessLookupError:
                pass
            try:
                proc.wait(timeout)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(10)

    def kill(self) -> None:
        """SIGKILL (a crash)."""
        self.stop(kill=True)

    def pause(self) -> None:
        pid = self.pid
        if pid:
            os.kill(pid, signal.SIGSTOP)

    def resume(self) -> None:
        pid = self.pid
        if pid:
            os.kill(pid, signal.SIGCONT)

    def restart(self, kill: bool = False) -> "EtcdMember":
        self.stop(kill=kill)
        return self.start()

    def healthy(self, timeout: float = 1.0) -> bool:
        """etcd's own probe (``GET /health``): true once this member has a leader and
        a quorum read went through."""
        if not self.running:
            return False
        try:
            with _open(self, "/health", None, timeout) as answer:
                return json.loads(answer.read()).get("health") == "true"
        except (OSError, ValueError):
            return False

    def log_tail(self, lines: int = 60) -> str:
        return _tail(self.log_path, lines)

    def __repr__(self) -> str:
        return f"<EtcdMember {self.name} {self.endpoint} pid={self.pid}>"


def _open(member: EtcdMember, path: str, body: bytes | None, timeout: float) -> Any:
    """An HTTP(S) request to the member's client port (POST with a body): etcd's own
    probe endpoints, for the test bed's readiness checks."""
    cluster = member._cluster_ref()
    tls = cluster.tls if cluster is not None else None
    url = f"{'https' if tls else 'http'}://{member.endpoint}{path}"
    request = urllib.request.Request(url, data=body, method="POST" if body is not None else "GET")
    return urllib.request.urlopen(request, timeout=timeout, context=tls.context() if tls else None)


def _socket_owner(sock: socket.socket, pids: dict[int, int]) -> int | None:
    """The key in ``pids`` (member index -> pid) of the process holding the other end of
    an accepted loopback connection: /proc/net/tcp gives the inode of the socket whose
    local address is our peer's, and that process has it among its fds. None when no
    member holds it (it closed meanwhile, or someone else connected)."""
    try:
        here, there = sock.getsockname()[1], sock.getpeername()[1]
    except OSError:
        return None
    local, remote = f"0100007F:{there:04X}", f"0100007F:{here:04X}"
    inode = None
    with open("/proc/net/tcp") as table:
        for line in itertools.islice(table, 1, None):
            fields = line.split()
            if fields[1] == local and fields[2] == remote:
                inode = fields[9]
                break
    if inode is None:
        return None
    wanted = f"socket:[{inode}]"
    for index, pid in pids.items():
        try:
            fds = os.listdir(f"/proc/{pid}/fd")
        except OSError:
            continue
        for fd in fds:
            try:
                if os.readlink(f"/proc/{pid}/fd/{fd}") == wanted:
                    return index
            except OSError:
                continue
    return None


@functools.cache
def _peer_link_class() -> type:
    """PeerLink, a chaos.RawFaultProxy (imported only when a cluster has peer links:
    chaos imports the ZooKeeper test bed)."""
    from .chaos import RawFaultProxy

    class PeerLink(RawFaultProxy):  # type: ignore[misc, valid-type]
        """The way to one member's peer port for its n peers: FaultProxy upstreams
        0..n-1 and n all lead to that port. Its peers dial ``port`` (listener n); each
        connection accepted there is moved to the index of the member that opened it,
        so ``partition([i])`` silently cuts member i's connections to this member and
        nobody else's; one whose opener is not found stays on n, cut by ``partition()``
        (every index) only."""

        def __init__(self, member: EtcdMember, pids: Callable[[], dict[int, int]], size: int) -> None:
            super().__init__([(LOOPBACK, member.peer_port)] * (size + 1), name=f"{member.name}-peer-link")
            self.unknown = size
            self._pids = pids

        @property
        def port(self) -> int:
            return self.ports[self.unknown]

        def _accept(self, idx: int) -> None:
            before = set(self._pairs)
            super()._accept(idx)
            for pair in self._pairs - before:
                source = _socket_owner(pair.client, self._pids())
                if source is None:
                    self._log(f"a peer connection from a process that is no member (listener {idx})")
                else:
                    pair.idx = source

    return PeerLink


class EtcdCluster:
    """``size`` etcd members on 127.0.0.1 (3 by default), a fresh cluster per instance.

    ``heartbeat_ms``/``election_ms`` are etcd's ``--heartbeat-interval`` and
    ``--election-timeout``; ``extra_args`` go to every member; ``tls`` puts the client
    port behind TLS with client certificates required; ``peer_links`` puts a proxy on
    every member's peer port (``isolate``/``heal_peers``). Use as a context
    manager or call ``close()``: it SIGKILLs only the pids it started.
    """

    def __init__(self, workdir: str | os.PathLike[str], size: int = 3, *, heartbeat_ms: int = 50,
                 election_ms: int = 500, extra_args: Sequence[str] = (), tls: ClientTls | None = None,
                 peer_links: bool = False) -> None:
        if size < 1:
            raise ValueError("size must be >= 1")
        self.dir = Path(workdir)
        self.heartbeat_ms = heartbeat_ms
        self.election_ms = election_ms
        self.extra_args = tuple(extra_args)
        self.tls = tls
        self.token = f"zkleader-{os.getpid()}-{id(self):x}"
        self.members = [EtcdMember(self, i, self.dir / f"etcd{i + 1}") for i in range(size)]
        self.links: list[Any] = []
        if peer_links:
            link = _peer_link_class()
            self.links = [link(m, self._pids, size) for m in self.members]

    @property
    def initial_cluster(self) -> str:
        return ",".join(f"{m.name}={m.advertised_peer_url}" for m in self.members)

    @property
    def endpoints(self) -> list[str]:
        """``host:port`` of every member, in member order."""
        return [m.endpoint for m in self.members]

    @property
    def addresses(self) -> list[tuple[str, int]]:
        """(host, port) of every member: what ``FaultProxy`` takes as upstreams."""
        return [m.address for m in self.members]

    @property
    def election_timeout(self) -> float:
        return self.election_ms / 1000

    @property
    def min_ttl(self) -> int:
        """The smallest lease TTL the members grant (etcd's minLeaseTTL:
        ceil(1.5 x election timeout) in whole seconds); a shorter request is raised."""
        return math.ceil(1.5 * self.election_ms / 1000)

    def __getitem__(self, index: int) -> EtcdMember:
        return self.members[index]

    def __len__(self) -> int:
        return len(self.members)

    def start(self, timeout: float = 30.0) -> "EtcdCluster":
        """Starts every member and waits until all of them are healthy."""
        for m in self.members:
            m.start()
        self.wait_healthy(timeout)
        return self

    def wait_healthy(self, timeout: float = 30.0, members: Sequence[int] | None = None) -> None:
        """Until every running member (or those named) answers ``/health`` true."""
        chosen = [self.members[i] for i in members] if members is not None else [m for m in self.members if m.running]

        def ready() -> bool:
            for m in chosen:
                if not m.running:
                    raise EtcdStartError(f"{m.name} exited ({m._proc.returncode if m._proc else None})\n"
                                         f"--- {m.log_path} ---\n{m.log_tail(30)}")
            return all(m.healthy() for m in chosen)

        try:
            wait_until(ready, timeout, interval=0.05, message="etcd members healthy")
        except TimeoutError as err:
            tails = "\n".join(f"--- {m.name} ---\n{m.log_tail(15)}" for m in chosen)
            raise EtcdStartError(f"{err}\n{tails}") from None

    def leader(self) -> int | None:
        """Index of the member that says it is the raft leader (its own id is the leader
        id it reports), the highest term winning over a deposed leader that has not
        heard yet; None when no member leads."""
        best: tuple[int, int] | None = None
        for m in self.members:
            status = self.status(m.index)
            if status is not None and status.get("leader") == status["header"]["member_id"]:
                term = int(status.get("raftTerm", 0))
                if best is None or term > best[0]:
                    best = (term, m.index)
        return None if best is None else best[1]

    def status(self, index: int, timeout: float = 1.0) -> dict[str, Any] | None:
        """The member's Maintenance.Status as JSON (its member id, the leader's id, raft
        term and index), through the gateway etcd 3.4 serves at /v3/; None when it does
        not answer. Test bed only: the daemon talks gRPC."""
        m = self.members[index]
        if not m.running:
            return None
        try:
            with _open(m, "/v3/maintenance/status", b"{}", timeout) as answer:
                value: dict[str, Any] = json.loads(answer.read())
                return value
        except (OSError, ValueError):
            return None

    def raft_term(self) -> int:
        """The highest raft term any running member reports (grows with each election)."""
        terms = [int(s.get("raftTerm", 0)) for i in range(len(self)) if (s := self.status(i)) is not None]
        return max(terms, default=0)

    def wait_leader(self, timeout: float = 15.0, exclude: int | None = None) -> int:
        """Until a member other than ``exclude`` leads; returns its index."""
        def other_leader() -> int | None:
            index = self.leader()
            return None if index is None or index == exclude else index + 1  # 0 would read as false

        return int(wait_until(other_leader, timeout, interval=0.05, message="an etcd leader")) - 1  # type: ignore[call-overload]

    def proxy(self, name: str = "etcdproxy") -> FaultProxy:
        """A FaultProxy with one loopback port per member (``proxy.server_hosts``):
        partition, heal and reset the path of a client to any member. Close it.

        It forwards the bytes unparsed (chaos.RawFaultProxy): FaultProxy's ZooKeeper
        frame parser reads gRPC's HTTP/2 bytes as ZooKeeper frames and its loop thread
        dies (struct.error) on a "frame" shorter than a request header, after which every
        connection through it hangs (seen in tests/test_etcd_faults.py: every daemon's
        connects timed out for the rest of a test)."""
        from .chaos import RawFaultProxy  # chaos imports the ZooKeeper bed: only when used

        return RawFaultProxy(self.addresses, name=name)

    def transfer_leader(self, to: int, timeout: float = 15.0) -> None:
        """Until member ``to`` is the raft leader: etcd's MoveLeader (through the gateway
        etcd 3.4 serves at /v3/), asked of whoever leads, again while another leads. For
        tests that need a given member to lead (or not) when the fault hits: on a loaded
        machine the leadership moves by itself, and a test cannot wait for the one it
        wants."""
        target = int(str(wait_until(lambda: (self.status(to) or {}).get("header", {}).get("member_id"), timeout,
                                interval=0.1, message=f"{self.members[to].name}'s member id")))

        def leads() -> bool:
            leader = self.leader()
            if leader == to:
                return True
            if leader is not None:
                body = json.dumps({"targetID": target}).encode()
                try:
                    with _open(self.members[leader], "/v3/maintenance/transfer-leadership", body, 5.0):
                        pass
                except OSError:  # deposed meanwhile, or the transfer timed out: ask again
                    pass
            return False

        wait_until(leads, timeout, interval=0.2, message=f"{self.members[to].name} to lead")

    def _pids(self) -> dict[int, int]:
        return {m.index: pid for m in self.members if (pid := m.pid) is not None}

    def isolate(self, index: int) -> None:
        """Cuts member ``index`` off from every other member, silently (nothing is closed,
        bytes wait undelivered, new connections hang): no connection to its peer link
        passes, nor any it opened to the others'; its client port still answers, and
        the other members still reach each other. Needs ``peer_links``."""
        if not self.links:
            raise RuntimeError("isolate() needs EtcdCluster(peer_links=True)")
        for link in self.links:
            if link is self.links[index]:
                link.partition()
            else:
                link.partition([index])

    def heal_peers(self) -> None:
        """Undoes ``isolate``: every peer link forwards again, what was held first."""
        for link in self.links:
            link.heal()

    def close(self) -> None:
        """SIGKILLs every member started here and closes the peer links. Idempotent."""
        for m in self.members:
            m.stop(kill=True)
            _live.discard(m)
        for link in self.links:
            link.close()

    def __enter__(self) -> "EtcdCluster":
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"<EtcdCluster {','.join(self.endpoints)}>"
