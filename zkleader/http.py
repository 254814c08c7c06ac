"""HTTP endpoints for load balancers and operators (optional: `http: {listen: "host:port"}`).

  GET /leader    200 while this host's job runs under a fresh lease, else 503
  GET /follower  200 while this host is a healthy follower (queued, connected, not
                 leading, not withdrawn, not leaving), else 503
  GET /status    this daemon's own view as JSON (role, node, position, token, the
                 leader's node as far as it knows, lease left, job pid)
  GET /healthz   200 while the daemon's loop is alive, else 503
  GET /metrics   the Prometheus registry of metrics.py, when `metrics` is configured

HEAD answers the same without a body; any other method is 405. A shell like metrics.py:
it is an Observer (loop.py), and the one thing the loop does for it is replace a
reference to an immutable view (the core's Snapshot and the instant of the step) after
each step. The listener's threads read only that view and never the core, never the
queue except to ask an idle loop whether it is alive (/healthz, below); nothing they do
can block or crash the loop.

Requests are bounded: the request head must arrive whole within HEAD_TIMEOUT seconds
and MAX_HEAD bytes (a slowloris client gets 408 and its thread back), a response must be
taken within SEND_TIMEOUT, bodies are never read, every connection is closed after one
answer, and at most MAX_CONNECTIONS are served at once (the next ones are closed at
accept).

/leader is judged at request time, not at the step: the view's lease (t_ok plus the
budget's stop offset, on the loop's clock) must still be valid *now*, so a daemon whose
loop stalls stops answering 200 when its lease runs out even if no step ever publishes
that.

/healthz: while a job exists the loop passes at least every loop.MAX_SLEEP, but an idle
follower may sleep until its next deadline. A pass within FRESH seconds is alive;
otherwise the listener asks the loop through its queue (one question at a time, shared
by concurrent requests) and waits up to PROBE_TIMEOUT for the answer. An idle daemon is
thus woken only by health checks that find it quiet, never on a timer of its own.
"""

from __future__ import annotations

import json
import re
import socket
import socketserver
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from .config import HttpConfig
from .core import actions as act
from .core import events as ev
from .core.jobcontrol import JobPhase
from .core.snapshot import Phase, Snapshot
from .loop import MAX_SLEEP

SCHEMA_VERSION = 1
MAX_HEAD = 8192
HEAD_TIMEOUT = 2.0
SEND_TIMEOUT = 2.0
MAX_CONNECTIONS = 32
FRESH = 2 * MAX_SLEEP
PROBE_TIMEOUT = 1.0
#: How often the idle listener thread wakes to see whether it must shut down (nobody
#: waits for that: close() returns at once, the process exits anyway).
POLL = 5.0

_REQUEST_LINE = re.compile(rb"^([A-Z]{1,16}) (\S{1,4096}) HTTP/1\.[01]$")
_REASONS = {200: "OK", 400: "Bad Request", 404: "Not Found", 405: "Method Not Allowed",
            408: "Request Timeout", 431: "Request Header Fields Too Large", 503: "Service Unavailable"}

#: Asks the loop to call ``answer`` between two steps (daemon.py puts it on its queue).
AskLoop = Callable[[Callable[[], None]], None]


@dataclass(frozen=True)
class View:
    """What the loop published after its latest step."""

    snapshot: Snapshot
    at: float


def role(s: Snapshot) -> str:
    if s.phase is Phase.STOPPED:
        return "stopped"
    if s.leaving is not None:
        return "leaving"
    if s.session_id is None:
        return "connecting"
    if not s.connected:
        return "suspended"
    if s.drained:
        return "drained"
    if s.withdrawn:
        return "withdrawn"
    if s.phase is Phase.LEADING:
        return "leader"
    if s.phase is Phase.FOLLOWING:
        return "follower"
    return s.phase.value


def lease_left(s: Snapshot, now: float) -> float | None:
    """Seconds until the job must be stopped (the lease's stop instant), at ``now``."""
    if s.t_ok is None:
        return None
    return s.budget.stop_at(s.t_ok) - now


def serving(s: Snapshot, now: float) -> bool:
    """/leader: leading, the job running, the lease valid at ``now``."""
    left = lease_left(s, now)
    # Not `connected`: while ZooKeeper is briefly out of reach the job runs on under the
    # lease and nobody else can lead before it ends, so the traffic stays here.
    return (s.phase is Phase.LEADING and s.leader and s.leaving is None
            and s.job is JobPhase.RUNNING and left is not None and left > 0)


def healthy_follower(s: Snapshot) -> bool:
    return (s.phase is Phase.FOLLOWING and s.node is not None and not s.leader and not s.withdrawn
            and s.leaving is None and s.connected and s.session_id is not None)


def status_document(view: View | None, now: float, candidate: str | None, host: str, pid: int) -> dict[str, Any]:
    document: dict[str, Any] = {"schema": SCHEMA_VERSION, "candidate": candidate, "host": host, "pid": pid}
    if view is None:
        return {**document, "role": "starting"}
    s = view.snapshot
    left = lease_left(s, now)
    return {
        **document,
        "role": role(s),
        "phase": s.phase.value,
        "status": s.status_line(),
        "election": s.election_path,
        "node": s.node,
        "position": s.position,
        "predecessor": s.predecessor,
        "leader_node": s.leader_node,
        "leader": s.leader,
        "serving": serving(s, now),
        "token": s.token,
        "session": None if s.session_id is None else f"0x{s.session_id:x}",
        "connected": s.connected,
        "writable": s.writable,
        "withdrawn": s.withdrawn,
        "drained": s.drained,
        "priority": s.priority,
        "frozen": None if s.frozen is None else {"by": s.frozen[0], "at": s.frozen[1]},
        "holding": s.holding,
        "waiting_on_claim": s.waiting_on_claim,
        "leaving": s.leaving,
        "job": s.job.value,
        "job_pid": s.job_pid,
        "lease_left_seconds": None if left is None else round(left, 3),
        "leading_seconds": round(now - s.leading_since, 3) if s.leader else None,
        "view_age_seconds": round(now - view.at, 3),
    }


class Endpoints:
    """The listener and the view it serves; an Observer of the loop (loop.py)."""

    def __init__(self, config: HttpConfig, clock: Callable[[], float], ask_loop: AskLoop | None = None,
                 registry: Any = None, candidate: str | None = None, host: str = "", pid: int = 0) -> None:
        self._clock = clock
        self._ask_loop = ask_loop
        self._registry = registry
        self.candidate, self.host, self.pid = candidate, host or socket.gethostname(), pid
        self._view: View | None = None
        self._last_pass = clock()
        self._probe_lock = threading.Lock()
        self.server = _Server(config.listen, self)
        bound_host, bound_port = self.server.server_address[:2]
        self.address: tuple[str, int] = (str(bound_host), int(bound_port))
        self.thread = threading.Thread(target=self.server.serve_forever, kwargs={"poll_interval": POLL},
                                       name="zkleader-http", daemon=True)
        self.thread.start()

    # -------------------------------------------------------------- the loop's side

    def observe(self, event: ev.Event, actions: list[act.Action], core: Snapshot, now: float) -> None:
        self._view = View(core, now)  # one reference replaced: the listener never sees half a view
        self._last_pass = now

    def close(self) -> None:
        """Called by the loop as it exits: must not wait for the listener's thread."""
        threading.Thread(target=self._shut, name="zkleader-http-close", daemon=True).start()

    def _shut(self) -> None:
        self.server.shutdown()
        self.server.server_close()

    # ---------------------------------------------------------- the listener's side

    def alive(self) -> bool:
        if self._clock() - self._last_pass <= FRESH:
            return True
        if self._ask_loop is None:
            return False
        with self._probe_lock:  # one question in flight; concurrent checks share its answer
            if self._clock() - self._last_pass <= FRESH:
                return True
            answered = threading.Event()

            def answer() -> None:
                self._last_pass = self._clock()
                answered.set()

            self._ask_loop(answer)
            return answered.wait(PROBE_TIMEOUT)

    def respond(self, method: str, target: str) -> tuple[int, str, bytes, dict[str, str]]:
        """(status, content type, body, extra headers) for one request."""
        text = "text/plain; charset=utf-8"
        if method not in ("GET", "HEAD"):
            return 405, text, b"method not allowed: GET or HEAD\n", {"Allow": "GET, HEAD"}
        path = target.split("?", 1)[0]
        view, now = self._view, self._clock()
        if path == "/leader" or path == "/follower":
            if view is None:
                return 503, text, b"starting\n", {}
            s = view.snapshot
            ok = serving(s, now) if path == "/leader" else healthy_follower(s)
            line = f"{role(s)}: {s.status_line()}\n".encode(errors="replace")
            return (200 if ok else 503), text, line, {}
        if path == "/status":
            document = status_document(view, now, self.candidate, self.host, self.pid)
            return 200, "application/json", (json.dumps(document, indent=2) + "\n").encode(), {}
        if path == "/healthz":
            return (200, text, b"ok\n", {}) if self.alive() else (503, text, b"loop not answering\n", {})
        if path == "/metrics" and self._registry is not None:
            from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

            return 200, CONTENT_TYPE_LATEST, generate_latest(self._registry), {}
        return 404, text, b"not found: /leader /follower /status /healthz" + (
            b" /metrics" if self._registry is not None else b"") + b"\n", {}


class _Server(socketserver.ThreadingTCPServer):
    daemon_threads = True
    allow_reuse_address = True
    block_on_close = False
    request_queue_size = 64

    def __init__(self, listen: tuple[str, int], endpoints: Endpoints) -> None:
        self.endpoints = endpoints
        self.slots = threading.BoundedSemaphore(MAX_CONNECTIONS)
        host = listen[0]
        self.address_family = socket.AF_INET6 if ":" in host else socket.AF_INET
        super().__init__(listen, _Handler)

    def process_request(self, request: Any, client_address: Any) -> None:
        if not self.slots.acquire(blocking=False):
            self.shutdown_request(request)  # full: closed at once, never queued behind slow clients
            return
        try:
            super().process_request(request, client_address)
        except BaseException:
            self.slots.release()
            raise

    def process_request_thread(self, request: Any, client_address: Any) -> None:
        try:
            super().process_request_thread(request, client_address)
        finally:
            self.slots.release()

    def handle_error(self, request: Any, client_address: Any) -> None:
        pass  # a client's misbehaviour is its own business; nothing to log per request


class _Handler(socketserver.BaseRequestHandler):
    request: socket.socket
    server: _Server

    def handle(self) -> None:
        sock = self.request
        deadline = time.monotonic() + HEAD_TIMEOUT
        head = b""
        while b"\r\n\r\n" not in head and b"\n\n" not in head:
            if len(head) > MAX_HEAD:
                self._send(431, "text/plain; charset=utf-8", b"request head too large\n", {}, head_only=False)
                return
            left = deadline - time.monotonic()
            if left <= 0:
                self._send(408, "text/plain; charset=utf-8", b"request head too slow\n", {}, head_only=False)
                return
            sock.settimeout(left)
            try:
                chunk = sock.recv(4096)
            except TimeoutError:
                continue
            except OSError:
                return
            if not chunk:
                return
            head += chunk
        line = head.split(b"\n", 1)[0].rstrip(b"\r")
        match = _REQUEST_LINE.match(line)
        if match is None:
            self._send(400, "text/plain; charset=utf-8", b"bad request\n", {}, head_only=False)
            return
        method, target = match.group(1).decode(), match.group(2).decode("latin-1")
        status, ctype, body, extra = self.server.endpoints.respond(method, target)
        self._send(status, ctype, body, extra, head_only=method == "HEAD")

    def _send(self, status: int, ctype: str, body: bytes, extra: dict[str, str], head_only: bool) -> None:
        headers = [f"HTTP/1.1 {status} {_REASONS.get(status, 'Unknown')}", f"Content-Type: {ctype}",
                   f"Content-Length: {len(body)}", "Cache-Control: no-store", "Connection: close"]
        headers += [f"{k}: {v}" for k, v in extra.items()]
        data = ("\r\n".join(headers) + "\r\n\r\n").encode("latin-1") + (b"" if head_only else body)
        sock = self.request
        try:
            sock.settimeout(SEND_TIMEOUT)
            sock.sendall(data)
            # Let the client read the answer before the close: unread request bytes
            # would otherwise turn the close into a reset that can discard it.
            sock.shutdown(socket.SHUT_WR)
            sock.settimeout(0.2)
            for _ in range(16):
                if not sock.recv(4096):
                    break
        except OSError:
            pass


class Tee:
    """Several observers as one (the loop takes one): each step goes to each in order."""

    def __init__(self, *observers: Any) -> None:
        self._observers = [o for o in observers if o is not None]

    def observe(self, event: ev.Event, actions: list[act.Action], core: Snapshot, now: float) -> None:
        for observer in self._observers:
            observer.observe(event, actions, core, now)

    def close(self) -> None:
        for observer in self._observers:
            observer.close()
