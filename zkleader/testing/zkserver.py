"""Real ZooKeeper servers for tests, started from Debian's jars.

``ZooKeeperServer`` runs one standalone server (ZooKeeperServerMain);
``Ensemble`` runs N quorum peers (QuorumPeerMain, 3 by default).  Everything
listens on 127.0.0.1 only, on ports below the kernel's ephemeral range (so that
no outgoing connection can grab a stopped server's port before it restarts),
with a small tickTime so that session expiry tests run in seconds.

Every server lives in its own directory under the work directory you give it:

    <dir>/zoo.cfg          the configuration
    <dir>/data/            dataDir (+ myid for ensemble members)
    <dir>/zookeeper.log    stdout+stderr of the JVM (slf4j-simple), appended
                           across restarts; ``log_tail()`` returns its end

Only processes started here are ever signalled, by their pid.  Each JVM is
started through ``setpriv --pdeathsig KILL`` when the caller is the main thread,
so a test run that is itself SIGKILLed does not leave servers behind.
"""

from __future__ import annotations

import atexit
import glob
import os
import random
import re
import shutil
import signal
import socket
import subprocess
import threading
import time
import weakref
from pathlib import Path
from typing import BinaryIO, Callable, Iterable, Sequence

__all__ = [
    "ZooKeeperServer",
    "EnsembleMember",
    "Ensemble",
    "ZooKeeperStartError",
    "zookeeper_classpath",
    "four_letter",
    "free_port",
    "unique_znode_path",
    "wait_until",
]

LOOPBACK = "127.0.0.1"
JAVA_DIR = os.environ.get("ZK_JAVA_DIR", "/usr/share/java")

# Jars ZooKeeper 3.8 needs at runtime for a plain NIO server with the admin
# server disabled.  Debian's zookeeper.jar carries a Class-Path manifest with
# most of these (zkEnv.sh puts only zookeeper.jar on the classpath); we list
# them explicitly so that the classpath does not depend on the manifest.
_REQUIRED_JARS = ("zookeeper", "zookeeper-jute", "slf4j-api")
_OPTIONAL_JARS = (
    "netty-buffer",
    "netty-codec",
    "netty-common",
    "netty-handler",
    "netty-resolver",
    "netty-transport",
    "netty-transport-native-epoll",
    "netty-transport-native-unix-common",
    "metrics-core",
    "snappy-java",
    "commons-cli",
    "commons-io",
)
# One slf4j binding, so that the server log goes to stdout/stderr (our file).
_LOG_BINDINGS = (("slf4j-simple",), ("slf4j-log4j12", "log4j-1.2"))

DEFAULT_JVM_FLAGS = (
    "-Xmx256m",
    "-Xms32m",
    "-Xss512k",
    "-XX:+UseSerialGC",
    "-XX:TieredStopAtLevel=1",  # C1 only: much faster start, plenty for tests
    "-XX:-UsePerfData",  # no /tmp/hsperfdata_* files
    "-XX:+IgnoreUnrecognizedVMOptions",
    "-Xshare:auto",
    "-Djava.net.preferIPv4Stack=true",
    "-Djava.awt.headless=true",
    "-Dzookeeper.admin.enableServer=false",
    "-Dzookeeper.jmx.log4j.disable=true",
    "-Dzookeeper.forceSync=no",  # no fsync per txn: tests, not durability
    "-Dzookeeper.preAllocSize=1024",  # 1 MiB txn log preallocation, not 64
    "-Dzookeeper.snapCount=100000",
    # Leader election: cap the notification back-off (default 60 s) so that a
    # quorum that was lost comes back within a second or two of a restart.
    "-Dzookeeper.fastleader.minNotificationInterval=200",
    "-Dzookeeper.fastleader.maxNotificationInterval=1000",
    "-Dzookeeper.cnxTimeout=1000",
    "-Dorg.slf4j.simpleLogger.defaultLogLevel=info",
    "-Dorg.slf4j.simpleLogger.showDateTime=true",
    "-Dorg.slf4j.simpleLogger.dateTimeFormat=HH:mm:ss.SSS",
    "-Dorg.slf4j.simpleLogger.showShortLogName=true",
)


class ZooKeeperStartError(RuntimeError):
    """A server did not come up; the message carries its log tail."""


# --------------------------------------------------------------------------
# classpath, ports, four-letter words, small helpers
# --------------------------------------------------------------------------

_classpath_cache: str | None = None


def _find_jar(name: str, java_dir: str) -> str | None:
    plain = os.path.join(java_dir, name + ".jar")
    if os.path.exists(plain):
        return plain
    versioned = sorted(
        p
        for p in glob.glob(os.path.join(java_dir, name + "-[0-9]*.jar"))
        if re.fullmatch(re.escape(name) + r"-[0-9][0-9A-Za-z.\-]*\.jar", os.path.basename(p))
    )
    return versioned[-1] if versioned else None


def zookeeper_classpath(java_dir: str = JAVA_DIR) -> str:
    """The classpath for Debian's ZooKeeper 3.8 server (override: $ZK_CLASSPATH)."""
    global _classpath_cache
    if os.environ.get("ZK_CLASSPATH"):
        return os.environ["ZK_CLASSPATH"]
    if _classpath_cache is not None and java_dir == JAVA_DIR:
        return _classpath_cache
    jars: list[str] = []
    missing = []
    for name in _REQUIRED_JARS:
        jar = _find_jar(name, java_dir)
        if jar is None:
            missing.append(name)
        else:
            jars.append(jar)
    if missing:
        raise ZooKeeperStartError(
            f"ZooKeeper jars not found in {java_dir}: {', '.join(missing)} "
            "(install Debian's 'zookeeper' package, or set ZK_CLASSPATH)"
        )
    for name in _OPTIONAL_JARS:
        jar = _find_jar(name, java_dir)
        if jar:
            jars.append(jar)
    for binding in _LOG_BINDINGS:
        found = [_find_jar(n, java_dir) for n in binding]
        if all(found):
            jars.extend(found)  # type: ignore[arg-type]
            break
    cp = ":".join(jars)
    if java_dir == JAVA_DIR:
        _classpath_cache = cp
    return cp


def _java() -> str:
    java = os.environ.get("ZK_JAVA") or shutil.which("java")
    if not java:
        raise ZooKeeperStartError("no 'java' found on PATH (install default-jre-headless)")
    return java


_ports_lock = threading.Lock()
_ports_handed_out: set[int] = set()


def _port_range() -> tuple[int, int]:
    """Ports below the ephemeral range: bind(0) and connect() never pick them."""
    try:
        low = int(Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split()[0])
    except (OSError, ValueError, IndexError):
        low = 32768
    hi = max(low - 1, 12000)
    return (max(10000, hi - 12000), hi)


def free_port(host: str = LOOPBACK) -> int:
    """A currently free TCP port on ``host`` that this process has not handed out
    before, chosen at random below the ephemeral port range."""
    lo, hi = _port_range()
    rng = random.SystemRandom()
    for _ in range(2000):
        port = rng.randint(lo, hi)
        with _ports_lock:
            if port in _ports_handed_out:
                continue
        s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        try:
            s.bind((host, port))
        except OSError:
            continue
        finally:
            s.close()
        with _ports_lock:
            if port in _ports_handed_out:
                continue
            _ports_handed_out.add(port)
        return port
    raise RuntimeError(f"no free port found in {lo}..{hi}")


def four_letter(host: str, port: int, word: str, timeout: float = 3.0) -> str:
    """Send a four-letter word and return the whole answer.  Raises OSError
    (e.g. ConnectionRefusedError, socket.timeout) when the server does not answer."""
    with socket.create_connection((host, port), timeout=timeout) as s:
        s.settimeout(timeout)
        s.sendall(word.encode("ascii"))
        chunks = []
        while True:
            try:
                data = s.recv(65536)
            except ConnectionResetError:
                break
            if not data:
                break
            chunks.append(data)
    return b"".join(chunks).decode("utf-8", "replace")


def wait_until(
    predicate: Callable[[], object],
    timeout: float,
    interval: float = 0.05,
    message: str | Callable[[], str] = "condition",
) -> object:
    """Poll ``predicate`` until it returns something truthy; return that value.
    Raises TimeoutError(message) after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() >= deadline:
            msg = message() if callable(message) else message
            raise TimeoutError(f"timed out after {timeout:.1f}s waiting for {msg}")
        time.sleep(interval)


def unique_znode_path(nodeid: str, prefix: str = "/zkleader-test") -> str:
    """A znode path unique to one test (from its pytest node id) and to this call."""
    name = re.sub(r"[^A-Za-z0-9_.-]+", "_", nodeid).strip("_.")[-80:] or "test"
    return f"{prefix}/{name}-{os.getpid()}-{random.SystemRandom().randrange(16**6):06x}"


def _tail(path: Path, lines: int) -> str:
    try:
        with open(path, "rb") as f:
            f.seek(0, os.SEEK_END)
            size = f.tell()
            f.seek(max(0, size - 200 * lines))
            data = f.read().decode("utf-8", "replace")
    except OSError as e:
        return f"<no log: {e}>"
    return "\n".join(data.splitlines()[-lines:])


# Everything started by this module, so that an interpreter exit kills leftovers.
_live: "weakref.WeakSet[ZooKeeperServer]" = weakref.WeakSet()


@atexit.register
def _kill_leftovers() -> None:
    for server in list(_live):
        try:
            server.stop(kill=True)
        except Exception:
            pass


# --------------------------------------------------------------------------
# one JVM
# --------------------------------------------------------------------------


class ZooKeeperServer:
    """One standalone ZooKeeper server (ZooKeeperServerMain) on 127.0.0.1.

    Parameters: ``workdir`` (created; holds zoo.cfg, data/, zookeeper.log),
    ``tick_time`` in ms (default 200), ``min_session_timeout`` (default
    2*tick_time) and ``max_session_timeout`` (default 10000) in ms,
    ``client_port`` (default: a free port), ``extra_config`` (more zoo.cfg
    lines), ``jvm_flags`` (appended to DEFAULT_JVM_FLAGS).

    Use as a context manager or call ``close()``: stops (SIGKILL) only the pid
    it started.
    """

    main_class = "org.apache.zookeeper.server.ZooKeeperServerMain"

    def __init__(
        self,
        workdir: str | os.PathLike,
        *,
        tick_time: int = 200,
        min_session_timeout: int | None = None,
        max_session_timeout: int = 10000,
        client_port: int | None = None,
        extra_config: dict[str, object] | None = None,
        jvm_flags: Sequence[str] = (),
        name: str = "zk",
    ) -> None:
        self.name = name
        self.dir = Path(workdir)
        self.dir.mkdir(parents=True, exist_ok=True)
        self.data_dir = self.dir / "data"
        self.cfg_path = self.dir / "zoo.cfg"
        self.log_path = self.dir / "zookeeper.log"
        self.tick_time = int(tick_time)
        self.min_session_timeout = int(
            min_session_timeout if min_session_timeout is not None else 2 * self.tick_time
        )
        self.max_session_timeout = int(max_session_timeout)
        if not self.min_session_timeout <= self.max_session_timeout:
            raise ValueError("min_session_timeout > max_session_timeout")
        self.host = LOOPBACK
        self.port = client_port or free_port()
        self._fixed_port = client_port is not None
        self.extra_config = dict(extra_config or {})
        self.jvm_flags = list(jvm_flags)
        self._proc: subprocess.Popen | None = None
        self._log_file: BinaryIO | None = None
        self._ever_ready = False
        self._ready_since_spawn = False
        self._stopped_by_us = False
        self._spawned_at = 0.0
        self._lock = threading.RLock()
        self.last_start_seconds: float | None = None  # time from spawn to serving

    # ----- addresses -----

    @property
    def hosts(self) -> str:
        """kazoo connection string for this server."""
        return f"{self.host}:{self.port}"

    @property
    def server_hosts(self) -> list[str]:
        """Per-server connection strings (one element for a standalone server)."""
        return [self.hosts]

    @property
    def address(self) -> tuple[str, int]:
        return (self.host, self.port)

    # ----- process -----

    @property
    def pid(self) -> int | None:
        """pid of the running JVM, None when not running."""
        proc = self._proc
        if proc is None or proc.poll() is not None:
            return None
        return proc.pid

    @property
    def running(self) -> bool:
        return self.pid is not None

    @property
    def returncode(self) -> int | None:
        return None if self._proc is None else self._proc.poll()

    @property
    def crashed(self) -> bool:
        """The JVM exited although nobody here stopped it."""
        return self._proc is not None and self._proc.poll() is not None and not self._stopped_by_us

    def _config_lines(self) -> dict[str, object]:
        cfg: dict[str, object] = {
            "tickTime": self.tick_time,
            "minSessionTimeout": self.min_session_timeout,
            "maxSessionTimeout": self.max_session_timeout,
            "dataDir": str(self.data_dir),
            "clientPort": self.port,
            "clientPortAddress": self.host,
            "maxClientCnxns": 0,
            "4lw.commands.whitelist": "*",
            "admin.enableServer": "false",
            "autopurge.purgeInterval": 0,
        }
        cfg.update(self.extra_config)
        return cfg

    def write_config(self) -> None:
        self.data_dir.mkdir(parents=True, exist_ok=True)
        text = "".join(f"{k}={v}\n" for k, v in self._config_lines().items())
        self.cfg_path.write_text(text)

    def command(self) -> list[str]:
        cmd = [
            _java(),
            *DEFAULT_JVM_FLAGS,
            *self.jvm_flags,
            "-cp",
            zookeeper_classpath(),
            self.main_class,
            str(self.cfg_path),
        ]
        return cmd

    def _spawn(self) -> None:
        self.write_config()
        cmd = self.command()
        if threading.current_thread() is threading.main_thread() and shutil.which("setpriv"):
            # The JVM dies with the test process even if that is SIGKILLed.
            # (PDEATHSIG follows the *thread* that forked, hence main thread only.)
            cmd = ["setpriv", "--pdeathsig", "KILL", "--", *cmd]
        log = open(self.log_path, "ab")
        log.write(f"\n===== {time.strftime('%H:%M:%S')} zkserver: starting {self.name} on {self.hosts} =====\n".encode())
        log.flush()
        self._log_file = log
        self._proc = subprocess.Popen(
            cmd,
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
            cwd=str(self.dir),
            start_new_session=True,  # a Ctrl-C in the terminal goes to pytest, which cleans up
            close_fds=True,
        )
        self._spawned_at = time.monotonic()
        self._ready_since_spawn = False
        self._stopped_by_us = False
        _live.add(self)

    def start(self, wait: bool = True, timeout: float = 30.0) -> "ZooKeeperServer":
        """Start the JVM (no-op if running); with ``wait``, block until it serves."""
        with self._lock:
            if self.running:
                if wait:
                    self.wait_ready(timeout)
                return self
            self._close_log()
            self._spawn()
        if wait:
            # On the very first start, a port taken meanwhile by someone else
            # makes us retry on a fresh port (not for a fixed or known port).
            retries = 0 if (self._ever_ready or self._fixed_port) else 2
            while True:
                try:
                    self.wait_ready(timeout)
                    break
                except ZooKeeperStartError:
                    self.stop(kill=True)
                    if retries and self._port_conflict():
                        retries -= 1
                        self._reallocate_ports()
                        with self._lock:
                            self._spawn()
                        continue
                    raise
        return self

    def _reallocate_ports(self) -> None:
        self.port = free_port()

    def stop(self, kill: bool = False, timeout: float = 10.0) -> None:
        """Stop the JVM: SIGTERM (or SIGKILL with ``kill=True``) and reap it.
        A server that ignores SIGTERM for ``timeout`` seconds gets SIGKILL."""
        with self._lock:
            proc = self._proc
            if proc is None:
                return
            self._stopped_by_us = True
            if proc.poll() is None:
                try:
                    # A SIGSTOPped JVM must be continued to act on SIGTERM.
                    if not kill:
                        os.kill(proc.pid, signal.SIGCONT)
                    proc.send_signal(signal.SIGKILL if kill else signal.SIGTERM)
                except ProcessLookupError:
                    pass
                try:
                    proc.wait(timeout)
                except subprocess.TimeoutExpired:
                    proc.kill()
                    proc.wait(10)
            self._close_log()

    def kill(self) -> None:
        """SIGKILL (a crash)."""
        self.stop(kill=True)

    def pause(self) -> None:
        """SIGSTOP the JVM: it keeps its sockets but answers nothing."""
        pid = self.pid
        if pid:
            os.kill(pid, signal.SIGSTOP)

    def resume(self) -> None:
        """SIGCONT after pause()."""
        pid = self.pid
        if pid:
            os.kill(pid, signal.SIGCONT)

    def restart(self, kill: bool = False, wait: bool = True, timeout: float = 30.0) -> "ZooKeeperServer":
        """stop(kill) then start(wait): same ports, same data."""
        self.stop(kill=kill)
        return self.start(wait=wait, timeout=timeout)

    def _close_log(self) -> None:
        if self._log_file is not None:
            try:
                self._log_file.close()
            except OSError:
                pass
            self._log_file = None

    def close(self) -> None:
        """Kill the JVM this object started (if any).  Idempotent."""
        self.stop(kill=True)
        _live.discard(self)

    def __enter__(self) -> "ZooKeeperServer":
        if not self.running:
            self.start()
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def __del__(self) -> None:  # last resort; close() is the real API
        try:
            proc = self._proc
            if proc is not None and proc.poll() is None:
                proc.kill()
        except Exception:
            pass

    def __repr__(self) -> str:
        return f"<{type(self).__name__} {self.name} {self.hosts} pid={self.pid}>"

    # ----- health -----

    def four_letter(self, word: str, timeout: float = 3.0) -> str:
        """Answer to a four-letter word (ruok, srvr, stat, mntr, cons, wchc,
        wchp, wchs, dump, conf, envi, ...).  Raises OSError if unreachable."""
        return four_letter(self.host, self.port, word, timeout)

    def try_four_letter(self, word: str, timeout: float = 2.0) -> str | None:
        """four_letter(), or None when the server does not answer."""
        try:
            return self.four_letter(word, timeout)
        except OSError:
            return None

    def mode(self) -> str | None:
        """'standalone', 'leader', 'follower', 'observer', or None when the
        server is down or not serving (e.g. an ensemble member without quorum)."""
        if not self.running:
            return None
        out = self.try_four_letter("srvr")
        if not out:
            return None
        m = re.search(r"^Mode: (\S+)", out, re.M)
        return m.group(1) if m else None

    def is_serving(self) -> bool:
        return self.mode() is not None

    def sessions(self) -> set[int]:
        """Session ids with a connection to this server (from 'cons')."""
        out = self.try_four_letter("cons") or ""
        return {int(s, 16) for s in re.findall(r"sid=0x([0-9a-f]+)", out)}

    def log_tail(self, lines: int = 60) -> str:
        return _tail(self.log_path, lines)

    def _start_failure(self, why: str) -> ZooKeeperStartError:
        return ZooKeeperStartError(
            f"ZooKeeper {self.name} ({self.hosts}) {why}\n"
            f"command: {' '.join(self.command())}\n"
            f"--- last lines of {self.log_path} ---\n{self.log_tail(40)}"
        )

    def _check_alive(self) -> None:
        proc = self._proc
        if proc is None:
            raise self._start_failure("was never started")
        if proc.poll() is not None:
            raise self._start_failure(f"exited with status {proc.returncode}")

    def wait_ready(self, timeout: float = 30.0) -> None:
        """Block until 'srvr' shows a Mode (i.e. the server serves clients; srvr
        alone, so that a server with Debian's default 4lw whitelist, srvr only,
        works too).  Raises ZooKeeperStartError with the log tail if the JVM
        exits or the timeout passes."""
        deadline = time.monotonic() + timeout
        while True:
            self._check_alive()
            if self.mode() is not None:
                if not self._ready_since_spawn:
                    self.last_start_seconds = time.monotonic() - self._spawned_at
                self._ready_since_spawn = self._ever_ready = True
                return
            if time.monotonic() >= deadline:
                raise self._start_failure(f"not serving after {timeout:.1f}s")
            time.sleep(0.05)

    def _port_conflict(self) -> bool:
        text = self.log_tail(200)
        return "Address already in use" in text or "BindException" in text


# --------------------------------------------------------------------------
# ensemble
# --------------------------------------------------------------------------


class EnsembleMember(ZooKeeperServer):
    """One quorum peer of an Ensemble (QuorumPeerMain).  ``myid`` is 1-based;
    ``index`` (0-based) is its position in Ensemble.servers."""

    main_class = "org.apache.zookeeper.server.quorum.QuorumPeerMain"

    def __init__(self, ensemble: "Ensemble", myid: int, workdir: Path, **kw) -> None:
        super().__init__(workdir, name=f"zk{myid}", **kw)
        self._ensemble_ref = weakref.ref(ensemble)
        self.myid = myid
        self.quorum_port = free_port()
        self.election_port = free_port()

    @property
    def index(self) -> int:
        return self.myid - 1

    def _config_lines(self) -> dict[str, object]:
        cfg = super()._config_lines()
        ens = self._ensemble_ref()
        assert ens is not None
        cfg.update(
            {
                "initLimit": ens.init_limit,
                "syncLimit": ens.sync_limit,
                "standaloneEnabled": "false",
                "reconfigEnabled": "false",
                "quorumListenOnAllIPs": "false",
                "electionPortBindRetry": 10,
            }
        )
        for m in ens.servers:
            cfg[f"server.{m.myid}"] = f"{m.host}:{m.quorum_port}:{m.election_port}:participant"
        cfg.update(ens.extra_config)
        cfg.update(self.extra_config)
        return cfg

    def write_config(self) -> None:
        super().write_config()
        (self.data_dir / "myid").write_text(f"{self.myid}\n")

    def _reallocate_ports(self) -> None:
        self.port = free_port()
        self.quorum_port = free_port()
        self.election_port = free_port()


class Ensemble:
    """``size`` ZooKeeper quorum peers on 127.0.0.1 (3 by default).

    ``servers[i]`` is an EnsembleMember (same API as ZooKeeperServer: start,
    stop(kill), restart, pause/resume, four_letter, mode, pid, hosts, ...).
    ``hosts`` is the connection string for all of them.  Tick/session-timeout
    parameters as for ZooKeeperServer; ``init_limit``/``sync_limit`` in ticks.
    """

    def __init__(
        self,
        workdir: str | os.PathLike,
        size: int = 3,
        *,
        tick_time: int = 200,
        min_session_timeout: int | None = None,
        max_session_timeout: int = 10000,
        init_limit: int = 10,
        sync_limit: int = 5,
        extra_config: dict[str, object] | None = None,
        jvm_flags: Sequence[str] = (),
    ) -> None:
        if size < 1:
            raise ValueError("size must be >= 1")
        self.dir = Path(workdir)
        self.dir.mkdir(parents=True, exist_ok=True)
        self.size = size
        self.tick_time = tick_time
        self.init_limit = init_limit
        self.sync_limit = sync_limit
        self.extra_config = dict(extra_config or {})
        self.servers: list[EnsembleMember] = []
        for myid in range(1, size + 1):
            self.servers.append(
                EnsembleMember(
                    self,
                    myid,
                    self.dir / f"zk{myid}",
                    tick_time=tick_time,
                    min_session_timeout=min_session_timeout,
                    max_session_timeout=max_session_timeout,
                    jvm_flags=jvm_flags,
                )
            )
        self._ever_ready = False
        self.last_start_seconds: float | None = None

    # ----- addresses -----

    @property
    def hosts(self) -> str:
        """kazoo connection string with every server."""
        return ",".join(s.hosts for s in self.servers)

    @property
    def server_hosts(self) -> list[str]:
        """Connection string of each server, by index."""
        return [s.hosts for s in self.servers]

    @property
    def addresses(self) -> list[tuple[str, int]]:
        return [s.address for s in self.servers]

    @property
    def pids(self) -> list[int | None]:
        return [s.pid for s in self.servers]

    def pid(self, index: int) -> int | None:
        return self.servers[index].pid

    @property
    def quorum_size(self) -> int:
        return self.size // 2 + 1

    def __getitem__(self, index: int) -> EnsembleMember:
        return self.servers[index]

    def __len__(self) -> int:
        return self.size

    def __iter__(self):
        return iter(self.servers)

    def running_indices(self) -> list[int]:
        return [i for i, s in enumerate(self.servers) if s.running]

    # ----- lifecycle -----

    def start(self, wait: bool = True, timeout: float = 60.0) -> "Ensemble":
        """Start every server that is not running; with ``wait``, wait_ready().
        On the very first start a port clash makes it retry on fresh ports."""
        t0 = time.monotonic()
        attempts = 1 if self._ever_ready else 3
        for attempt in range(attempts):
            for s in self.servers:
                if not s.running:
                    s.start(wait=False)
            if not wait:
                return self
            try:
                self.wait_ready(timeout)
            except ZooKeeperStartError:
                clash = any(s._port_conflict() for s in self.servers)
                if attempt + 1 < attempts and clash:
                    for s in self.servers:
                        s.stop(kill=True)
                        shutil.rmtree(s.data_dir, ignore_errors=True)
                    for s in self.servers:
                        s._reallocate_ports()
                    continue
                raise
            if not self._ever_ready:
                self.last_start_seconds = time.monotonic() - t0
            self._ever_ready = True
            return self
        raise AssertionError("unreachable")

    def stop(self, kill: bool = False) -> None:
        """Stop every server (SIGTERM, or SIGKILL with ``kill``)."""
        for s in self.servers:
            s.stop(kill=kill)

    def stop_server(self, index: int, kill: bool = False) -> None:
        self.servers[index].stop(kill=kill)

    def start_server(self, index: int, wait: bool = False, timeout: float = 30.0) -> None:
        """Start one server.  With ``wait``, wait until it serves (which needs a quorum)."""
        self.servers[index].start(wait=wait, timeout=timeout)

    def restart(self, index: int | None = None, kill: bool = False, wait: bool = True, timeout: float = 60.0) -> None:
        """Restart one server (``index``) or all of them, then (``wait``) wait_ready()."""
        targets = self.servers if index is None else [self.servers[index]]
        for s in targets:
            s.stop(kill=kill)
        for s in targets:
            s.start(wait=False)
        if wait:
            self.wait_ready(timeout)

    def ensure_running(self, timeout: float = 60.0) -> None:
        """Resume paused servers, start stopped ones, and wait until all serve."""
        for s in self.servers:
            if s.running:
                s.resume()
        self.start(wait=True, timeout=timeout)

    def close(self) -> None:
        """Kill every JVM this ensemble started.  Idempotent."""
        for s in self.servers:
            s.close()

    def __enter__(self) -> "Ensemble":
        if not all(s.running for s in self.servers):
            self.start()
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"<Ensemble {self.hosts} pids={self.pids}>"

    # ----- health -----

    def four_letter(self, word: str, index: int = 0, timeout: float = 3.0) -> str:
        """four_letter(word) on servers[index]."""
        return self.servers[index].four_letter(word, timeout)

    def modes(self) -> list[str | None]:
        return [s.mode() for s in self.servers]

    def leader(self) -> int | None:
        """Index of the server that reports Mode: leader, or None."""
        for i, mode in enumerate(self.modes()):
            if mode == "leader":
                return i
        return None

    def server_of_session(self, session_id: int) -> int | None:
        """Index of the (first) server whose 'cons' lists a connection of this
        session.  A server can keep listing a connection the client already gave
        up (e.g. one held by a partitioned proxy): see servers_of_session()."""
        found = self.servers_of_session(session_id)
        return found[0] if found else None

    def servers_of_session(self, session_id: int) -> list[int]:
        """Indices of all servers whose 'cons' lists a connection of this session."""
        return [i for i, s in enumerate(self.servers) if s.running and session_id in s.sessions()]

    def wait_ready(self, timeout: float = 60.0) -> None:
        """Wait until a leader is elected and every running server serves.
        Raises ZooKeeperStartError (with log tails) when a JVM exits, fewer
        than a quorum run, or the timeout passes."""
        deadline = time.monotonic() + timeout
        while True:
            running = [s for s in self.servers if s.running]
            for s in self.servers:
                if s.crashed:
                    raise self._failure(f"{s.name} exited with status {s.returncode}")
            if len(running) < self.quorum_size:
                raise self._failure(
                    f"only {len(running)} of {self.size} servers running, a quorum needs {self.quorum_size}"
                )
            modes = [s.mode() for s in running]
            if all(modes) and modes.count("leader") == 1:
                return
            if time.monotonic() >= deadline:
                raise self._failure(f"not ready after {timeout:.1f}s (modes {self.modes()})")
            time.sleep(0.1)

    def wait_no_quorum(self, timeout: float = 30.0) -> None:
        """Wait until no running server serves clients (quorum lost)."""
        wait_until(
            lambda: not any(s.is_serving() for s in self.servers if s.running),
            timeout,
            message=lambda: f"quorum loss (modes {self.modes()})",
        )

    def log_tail(self, index: int, lines: int = 60) -> str:
        return self.servers[index].log_tail(lines)

    def _failure(self, why: str) -> ZooKeeperStartError:
        parts = [f"ZooKeeper ensemble {self.hosts}: {why}"]
        for s in self.servers:
            parts.append(
                f"--- {s.name} pid={s.pid} rc={s.returncode} {s.log_path} ---\n{s.log_tail(25)}"
            )
        return ZooKeeperStartError("\n".join(parts))
