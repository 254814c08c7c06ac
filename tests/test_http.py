"""The HTTP endpoints (zkleader/http.py): real daemons behind real sockets, the
configuration, a slowloris and a hypothesis fuzz of raw bytes against the listener."""

from __future__ import annotations

import dataclasses
import json
import signal
import socket
import subprocess
import sys
import textwrap
import time
import urllib.error
import urllib.request
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from zkleader import config, http
from zkleader.config import HttpConfig
from zkleader.core import exitcodes
from zkleader.core.jobcontrol import JobPhase
from zkleader.core.leadership import Leadership
from zkleader.core.settings import Identity, OnExit, Settings
from zkleader.core.snapshot import Phase
from zkleader.testing.daemons import wait_for
from zkleader.testing.zkserver import free_port

REPO = Path(__file__).resolve().parent.parent


def get(port: int, path: str, method: str = "GET", timeout: float = 5.0) -> tuple[int, bytes, dict[str, str]]:
    request = urllib.request.Request(f"http://127.0.0.1:{port}{path}", method=method)
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response:
            return response.status, response.read(), dict(response.headers)
    except urllib.error.HTTPError as err:
        return err.code, err.read(), dict(err.headers)


def raw(port: int, data: bytes, timeout: float = 5.0) -> bytes:
    with socket.create_connection(("127.0.0.1", port), timeout=timeout) as sock:
        try:
            sock.sendall(data)
            sock.shutdown(socket.SHUT_WR)
        except OSError:
            pass
        answer = b""
        while True:
            try:
                chunk = sock.recv(65536)
            except ConnectionResetError:
                break
            if not chunk:
                break
            answer += chunk
        return answer


# ------------------------------------------------------------------ configuration


def write(tmp_path: Path, text: str) -> str:
    path = tmp_path / "zkleader.yaml"
    path.write_text(textwrap.dedent(text))
    return str(path)


def test_http_listen_is_parsed_and_off_by_default(tmp_path: Path) -> None:
    base = "election: {path: /e}\njob: {command: [/bin/true]}\n"
    assert config.load(write(tmp_path, base)).http is None
    loaded = config.load(write(tmp_path, base + 'http: {listen: "127.0.0.1:8008"}\n'))
    assert loaded.http == HttpConfig(("127.0.0.1", 8008))


@pytest.mark.parametrize("section, message", [
    ('http: {listen: "nowhere"}', 'http.listen: "nowhere" is not "host:port"'),
    ('http: {port: 8008}', "http.port: unknown key"),
    ('http: {}', "http.listen: required key is missing"),
    ('metrics: {listen: "127.0.0.1:9108"}\nhttp: {listen: "127.0.0.1:9108"}', "http.listen: is metrics.listen too"),
])
def test_http_config_errors_name_file_line_and_key(tmp_path: Path, section: str, message: str) -> None:
    path = write(tmp_path, "election: {path: /e}\njob: {command: [/bin/true]}\n" + section + "\n")
    with pytest.raises(config.ConfigError) as err:
        config.load(path)
    assert message in str(err.value)
    assert str(err.value).startswith(f"{path}:")


# ------------------------------------------------------ the listener on its own


def _snapshot(**changes):
    settings = Settings(election_path="/e", candidate="a", session_timeout=4.0, stop_signal=signal.SIGTERM,
                        stop_timeout=0.5, reap_allowance=0.25, on_exit=OnExit.RESTART, restart_delay=1.0, health=None, watchdog=0.0,
                        tick_time=0.2)
    core = Leadership(settings, Identity(host="h", pid=1, version="0", started_at="now"), new_candidacy_id=lambda: "c")
    return dataclasses.replace(core.snapshot(), **changes)


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def endpoints():
    made: list[http.Endpoints] = []

    def make(**kw) -> http.Endpoints:
        e = http.Endpoints(HttpConfig(("127.0.0.1", 0)), kw.pop("clock", time.monotonic), **kw)
        made.append(e)
        return e

    yield make
    for e in made:
        e.close()


def test_leader_answers_200_only_while_the_lease_is_valid_at_request_time(endpoints) -> None:
    clock = Clock()
    e = endpoints(clock=clock)
    port = e.address[1]
    assert get(port, "/leader")[0] == 503  # nothing published yet
    leading = _snapshot(phase=Phase.LEADING, leader=True, session_id=7, connected=True, writable=True, node="n",
                        position=0, token=42, job=JobPhase.RUNNING, job_pid=99, t_ok=clock.now, now=clock.now,
                        leading_since=clock.now)
    e.observe(None, [], leading, clock.now)  # type: ignore[arg-type]
    status, body, _ = get(port, "/leader")
    assert status == 200 and body.startswith(b"leader: leading /e")
    assert get(port, "/follower")[0] == 503
    stop_at = leading.budget.stop_at(leading.t_ok)
    clock.now = stop_at - 0.01
    assert get(port, "/leader")[0] == 200
    # ZooKeeper out of reach: the job runs on under the lease, the traffic stays.
    e.observe(None, [], dataclasses.replace(leading, connected=False), leading.now)  # type: ignore[arg-type]
    assert get(port, "/leader")[0] == 200
    e.observe(None, [], leading, leading.now)  # type: ignore[arg-type]
    clock.now = stop_at  # the loop published nothing since: the lease alone decides
    assert get(port, "/leader")[0] == 503
    document = json.loads(get(port, "/status")[1])
    assert document["role"] == "leader" and document["serving"] is False and document["lease_left_seconds"] == 0
    assert document["token"] == 42 and document["job_pid"] == 99 and document["session"] == "0x7"
    clock.now = 1000.0
    for job in (JobPhase.STARTING, JobPhase.STOPPING, JobPhase.NONE):
        e.observe(None, [], dataclasses.replace(leading, job=job), clock.now)  # type: ignore[arg-type]
        assert get(port, "/leader")[0] == 503, job
    following = _snapshot(phase=Phase.FOLLOWING, session_id=8, connected=True, writable=True, node="m", position=1,
                          leader_node="n", predecessor="n")
    e.observe(None, [], following, clock.now)  # type: ignore[arg-type]
    assert get(port, "/follower")[0] == 200 and get(port, "/leader")[0] == 503
    e.observe(None, [], dataclasses.replace(following, withdrawn=True), clock.now)  # type: ignore[arg-type]
    assert get(port, "/follower")[0] == 503


def test_healthz_asks_an_idle_loop_and_fails_when_it_does_not_answer(endpoints) -> None:
    clock = Clock()
    asked: list = []
    answering = [True]

    def ask(answer) -> None:
        asked.append(answer)
        if answering[0]:
            answer()

    e = endpoints(clock=clock, ask_loop=ask)
    port = e.address[1]
    assert get(port, "/healthz")[0] == 200 and asked == []  # just started: fresh
    clock.now += http.FRESH + 1
    assert get(port, "/healthz")[0] == 200 and len(asked) == 1
    assert get(port, "/healthz")[0] == 200 and len(asked) == 1  # the answer made it fresh
    clock.now += http.FRESH + 1
    answering[0] = False
    started = time.monotonic()
    assert get(port, "/healthz")[0] == 503
    assert time.monotonic() - started < http.PROBE_TIMEOUT + 1


def test_methods_paths_and_head(endpoints) -> None:
    e = endpoints()
    port = e.address[1]
    for method in ("POST", "PUT", "DELETE", "OPTIONS", "PATCH"):
        status, _, headers = get(port, "/leader", method=method)
        assert status == 405 and headers["Allow"] == "GET, HEAD"
    status, body, headers = get(port, "/status", method="HEAD")
    assert status == 200 and body == b"" and int(headers["Content-Length"]) > 0
    assert get(port, "/nope")[0] == 404
    assert get(port, "/metrics")[0] == 404  # no metrics configured
    assert raw(port, b"GET /status HTTP/1.1\r\nHost: x\r\n\r\n").startswith(b"HTTP/1.1 200 OK\r\n")
    assert raw(port, b"hello\r\n\r\n").startswith(b"HTTP/1.1 400 ")
    assert raw(port, b"GET /" + b"a" * 20000 + b" HTTP/1.1\r\n").startswith(b"HTTP/1.1 431 ")
    assert raw(port, b"GET /status HTTP/1.1\r\n" + b"X: y\r\n" * 2000).startswith(b"HTTP/1.1 431 ")


def test_slowloris_gets_its_threads_back(endpoints) -> None:
    e = endpoints()
    port = e.address[1]
    socks = [socket.create_connection(("127.0.0.1", port), timeout=10) for _ in range(http.MAX_CONNECTIONS + 8)]
    try:
        for s in socks:
            s.sendall(b"GET /leader HTTP/1.1\r\n")  # and never the end of the head
        started = time.monotonic()
        answers = []
        for s in socks:
            data = b""
            while chunk := s.recv(4096):
                data += chunk
            answers.append(data)
        waited = time.monotonic() - started
    finally:
        for s in socks:
            s.close()
    assert waited < http.HEAD_TIMEOUT + 2
    assert sum(a.startswith(b"HTTP/1.1 408 ") for a in answers) >= http.MAX_CONNECTIONS - 1
    assert all(a == b"" or a.startswith(b"HTTP/1.1 408 ") for a in answers)  # the surplus closed at accept
    assert get(port, "/status")[0] == 200


# ---------------------------------------------------------------- real daemons


def _answers(port: int, path: str) -> int:
    """The status, or 0 while nothing answers on the port (the daemon still starting)."""
    try:
        return get(port, path)[0]
    except OSError:
        return 0


def _http_group(daemon_group, server, election_path, names, metrics: bool = False):
    group = daemon_group(server.hosts, election_path)
    ports = {}
    for name in names:
        ports[name] = free_port()
        sections = {"http": {"listen": f"127.0.0.1:{ports[name]}"}}
        if metrics:
            sections["metrics"] = {"listen": f"127.0.0.1:{free_port()}"}
        group.add(name, sections=sections)
    return group, ports


@pytest.mark.zookeeper
def test_real_daemons_answer_leader_follower_status_healthz(healthy_zk_server, election_path, daemon_group) -> None:
    group, ports = _http_group(daemon_group, healthy_zk_server, election_path, ["a", "b"], metrics=True)
    group.wait_starts(1, 30)
    leader = wait_for(lambda: len(group.leaders()) == 1 and group.leaders()[0], 20, "one leader")
    follower = "b" if leader == "a" else "a"
    wait_for(lambda: _answers(ports[leader], "/leader") == 200, 10, "/leader 200 on the leader")
    wait_for(lambda: _answers(ports[follower], "/follower") == 200, 10,
             lambda: f"/follower 200 on the follower (alive: {group.daemons[follower].alive()}; listening: "
                     f"{subprocess.run(['ss', '-Hltnp', f'sport = :{ports[follower]}'], capture_output=True, text=True, check=False).stdout!r})")
    assert get(ports[follower], "/leader")[0] == 503 and get(ports[leader], "/follower")[0] == 503
    lead = json.loads(get(ports[leader], "/status")[1])
    follow = json.loads(get(ports[follower], "/status")[1])
    assert lead["role"] == "leader" and lead["serving"] and lead["job"] == "running" and lead["job_pid"] > 0
    assert 0 < lead["lease_left_seconds"] <= 2.0 and lead["position"] == 0 and lead["token"] > 0
    assert lead["candidate"] == leader and lead["pid"] == group.daemons[leader].pid
    assert follow["role"] == "follower" and follow["position"] == 1 and follow["leader_node"] == lead["node"]
    assert follow["lease_left_seconds"] is None and follow["job_pid"] is None
    # An idle follower may sleep long: /healthz asks its loop and gets an answer.
    time.sleep(http.FRESH + 0.5)
    for name in ("a", "b"):
        assert get(ports[name], "/healthz")[0] == 200
        assert get(ports[name], "/healthz", method="HEAD")[:2] == (200, b"")
    status, body, headers = get(ports[leader], "/metrics")
    assert status == 200 and b"zkleader_is_leader 1.0" in body and headers["Content-Type"].startswith("text/plain")
    assert group.overlaps() == []


@pytest.mark.zookeeper
def test_fuzzed_raw_bytes_never_disturb_the_loop(healthy_zk_server, election_path, daemon_group) -> None:
    group, ports = _http_group(daemon_group, healthy_zk_server, election_path, ["a"])
    group.wait_starts(1, 30)
    port = ports["a"]
    wait_for(lambda: get(port, "/leader")[0] == 200, 10, "/leader 200")
    pid_before = json.loads(get(port, "/status")[1])["job_pid"]
    statuses = set()

    lines = st.sampled_from([b"GET", b"HEAD", b"POST", b"get", b"G\x00T", b"", b"BREW"]).flatmap(
        lambda method: st.tuples(st.just(method), st.sampled_from([b"/leader", b"/status", b"/healthz", b"*", b"",
                                                                  b"/\xff\xfe", b"http://x/leader", b"/metrics?x"]),
                                 st.sampled_from([b" HTTP/1.1", b" HTTP/1.0", b" HTTP/2", b"", b" HTTP/1.1 x"])))

    @settings(max_examples=150, deadline=None, suppress_health_check=list(HealthCheck))
    @given(line=lines, junk=st.binary(max_size=600), tail=st.sampled_from([b"\r\n\r\n", b"\n\n", b"", b"\r\n"]))
    def one(line, junk, tail) -> None:
        method, target, version = line
        answer = raw(port, method + b" " + target + version + b"\r\n" + junk + tail)
        if answer:
            assert answer.startswith(b"HTTP/1.1 ")
            code = int(answer[9:12])
            assert code in (200, 400, 404, 405, 408, 431, 503)
            statuses.add(code)

    one()
    assert {200, 400, 405} <= statuses
    document = json.loads(get(port, "/status")[1])
    assert document["serving"] and document["job_pid"] == pid_before  # the job never noticed
    assert get(port, "/healthz")[0] == 200
    assert group.daemons["a"].alive() and group.overlaps() == []
    assert [e for e in group.daemons["a"].events() if e.get("level") in ("error", "critical")] == []


@pytest.mark.parametrize("section", ["metrics", "http"])
def test_a_port_in_use_is_one_line_and_status_69_not_a_traceback(tmp_path, section: str) -> None:
    """The listeners are bound before the daemon joins: a port taken (often by the
    previous instance, still going) ends it with listen_failed and 69, which systemd
    restarts after."""
    taken = socket.socket()
    taken.bind(("127.0.0.1", 0))
    taken.listen()
    port = taken.getsockname()[1]
    config = tmp_path / "c.yaml"
    config.write_text("zookeeper:\n  hosts: 127.0.0.1:1\n  session_timeout: 6\n  tick_time: 0.2\n"
                      "election:\n  path: /x\njob:\n  command: [sleep, '60']\nlogging:\n  format: json\n"
                      f"{section}:\n  listen: 127.0.0.1:{port}\n")
    try:
        done = subprocess.run([sys.executable, "-m", "zkleader", "run", "-c", str(config)],
                              capture_output=True, text=True, timeout=60, cwd=REPO)
    finally:
        taken.close()
    assert done.returncode == exitcodes.UNAVAILABLE, done.stderr
    assert "Traceback" not in done.stderr
    (failure,) = [json.loads(line) for line in done.stderr.splitlines() if '"listen_failed"' in line]
    assert failure[section] == f"127.0.0.1:{port}" and failure["error"] == "Address already in use"


def test_a_drained_host_says_so_and_is_no_follower(endpoints) -> None:
    clock = Clock()
    e = endpoints(clock=clock)
    port = e.address[1]
    drained = _snapshot(phase=Phase.JOINING, session_id=7, connected=True, writable=True, drained=True,
                        now=clock.now)
    e.observe(None, [], drained, clock.now)  # type: ignore[arg-type]
    document = json.loads(get(port, "/status")[1])
    assert document["role"] == "drained" and document["drained"] is True
    assert get(port, "/follower")[0] == 503 and get(port, "/leader")[0] == 503
