"""Issue 6, hostile input: arbitrary configuration files, junk in the election path,
and leader jobs that misbehave (floods of binary output, ignoring SIGTERM, double
forking into the background, new sessions). Real daemons, a real ZooKeeper, and
the flock overlap detector's rule: every process of a job holds the lock."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
import uuid
from pathlib import Path

import pytest
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from zkleader import config
from zkleader.core import exitcodes
from zkleader.testing.daemons import process_running, wait_for

T = 2.0

# ----------------------------------------------------------------- the config loader

SETTINGS = settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture,
                                                                            HealthCheck.too_slow])

scalars = (st.none() | st.booleans() | st.integers(min_value=-(2**70), max_value=2**70)
           | st.floats(allow_nan=True, allow_infinity=True) | st.text(max_size=40)
           | st.sampled_from(["", "/", "/etc/passwd", "/dev/zero", "/proc/self/mem", "digest", "sasl", "creator",
                              "open", "world:anyone:r", "auth::cdrwa", "10s", "-1", "SIGTERM", "127.0.0.1:2181",
                              "~", "null", "true", "\x00", "\n", "a" * 300]))
values = st.recursive(scalars, lambda inner: st.lists(inner, max_size=4)
                      | st.dictionaries(st.text(max_size=12) | st.sampled_from(["scheme", "id", "perms"]), inner,
                                        max_size=4), max_leaves=12)

KEYS = [
    "zookeeper", "zookeeper.hosts", "zookeeper.session_timeout", "zookeeper.auth", "zookeeper.auth.scheme",
    "zookeeper.auth.username", "zookeeper.auth.password_file", "zookeeper.auth.password", "zookeeper.acl",
    "zookeeper.acl.0", "zookeeper.acl.0.perms", "zookeeper.acl.0.id", "zookeeper.tls", "zookeeper.tls.ca",
    "zookeeper.tls.cert", "zookeeper.tls.key", "zookeeper.tls.verify_hostname", "election", "election.path",
    "election.candidate", "job", "job.command", "job.stop_signal", "job.stop_timeout", "job.on_exit",
    "job.restart_delay", "job.environment", "job.working_directory", "logging", "logging.level", "logging.format",
    "health", "health.command", "health.interval", "metrics", "metrics.listen", "unknown_section",
]


@pytest.fixture(scope="module")
def valid_document(pki, tmp_path_factory) -> dict:
    """A configuration using every key, valid as it stands."""
    secret = tmp_path_factory.mktemp("secret") / "zk.secret"
    secret.write_text("correct horse battery staple\n")
    secret.chmod(0o600)
    return {
        "zookeeper": {
            "hosts": ["localhost:2281"], "session_timeout": "10s",
            "auth": {"scheme": "digest", "username": "zkleader", "password_file": str(secret)},
            "acl": [{"scheme": "auth", "id": "", "perms": "all"}, "world:anyone:r"],
            "tls": {"ca": pki.ca, "cert": pki.client_cert, "key": pki.client_key, "verify_hostname": True},
        },
        "election": {"path": "/zkleader/hostile", "candidate": "h1"},
        "job": {"command": ["/bin/true"], "stop_signal": "SIGTERM", "stop_timeout": 1, "on_exit": "restart",
                "restart_delay": "500ms", "environment": {"A": "1"}, "working_directory": "/"},
        "logging": {"level": "info", "format": "json"},
        "health": {"command": "true", "interval": 5},
        "metrics": {"listen": "127.0.0.1:9108"},
    }


def replace(document: dict, dotted: str, value: object) -> dict:
    """A deep copy of document with the value at dotted (list indices as digits) replaced."""
    copy = json.loads(json.dumps(document))
    parts = dotted.split(".")
    node = copy
    for part in parts[:-1]:
        node = node[int(part)] if isinstance(node, list) else node.setdefault(part, {})
    last = parts[-1]
    if isinstance(node, list):
        node[int(last)] = value
    else:
        node[last] = value
    return copy


def check_outcome(text: str, source: str = "fuzz.yaml") -> config.Config | None:
    """The loader's contract: a Config, or a ConfigError of one-line problems naming the file."""
    try:
        return config.parse(text, source)
    except config.ConfigError as err:
        assert err.problems, "a ConfigError without problems"
        lines = str(err).split("\n")
        assert len(lines) == len(err.problems)
        for line in lines:
            assert line.startswith(source) and line.isprintable(), repr(line)
        return None


def test_the_valid_document_is_valid(valid_document) -> None:
    loaded = check_outcome(yaml.safe_dump(valid_document))
    assert loaded is not None and loaded.zookeeper.tls is not None and loaded.zookeeper.auth is not None


@SETTINGS
@given(key=st.sampled_from(KEYS), value=values)
def test_any_value_for_any_key_is_a_config_or_one_line_errors(valid_document, key, value) -> None:
    check_outcome(yaml.safe_dump(replace(valid_document, key, value), allow_unicode=True))


@SETTINGS
@given(document=values)
def test_any_yaml_document_is_a_config_or_one_line_errors(document) -> None:
    check_outcome(yaml.safe_dump(document, allow_unicode=True))


YAMLISH = st.lists(st.sampled_from(list(":-[]{}#&*!|>'\"%@`,? \n\t\\") + [
    "zookeeper", "auth", "acl", "tls", "job", "command", "election", "path", "&a", "*a", "!!binary",
    "!!python/object", "<<", "0x1F", "1e400", ".nan", "\ufeff", "\x00", "\x85", "  ", "- ", ": "]),
    max_size=40).map("".join)


@SETTINGS
@given(text=YAMLISH | st.text(max_size=200))
def test_any_text_is_a_config_or_one_line_errors(text) -> None:
    check_outcome(text)


@settings(max_examples=6, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(key=st.sampled_from(KEYS), value=values)
def test_validate_end_to_end_on_generated_files(valid_document, tmp_path_factory, key, value) -> None:
    path = tmp_path_factory.mktemp("validate") / "generated.yaml"
    path.write_text(yaml.safe_dump(replace(valid_document, key, value), allow_unicode=True))
    done = subprocess.run([sys.executable, "-m", "zkleader", "validate", "-c", str(path)],
                          capture_output=True, text=True, timeout=60)
    assert done.returncode in (exitcodes.OK, exitcodes.CONFIG), done.stderr
    assert "Traceback" not in done.stderr
    if done.returncode == exitcodes.CONFIG:
        for line in done.stderr.splitlines():
            assert line.startswith(f"zkleader: {path}"), line
    else:
        assert done.stdout.startswith(f"{path}: valid")


# "Billion laughs": 9^9 strings if anything walked it; every key gets it.
BOMB = "".join(f"{n}: &{n} [{', '.join([f'*{p}'] * 9)}]\n" for p, n in zip("abcdefgh", "bcdefghi"))
BOMB = "a: &a [lol, lol, lol, lol, lol, lol, lol, lol, lol]\n" + BOMB + """\
logging: {level: *i, format: *i}
job: {command: *i, environment: {A: *i}, stop_signal: *i, on_exit: *i, stop_timeout: *i}
health: {command: *i, failures: *i}
election: {path: *i, candidate: *i}
zookeeper: {hosts: *i, acl: *i, auth: {username: *i, password_file: *i, scheme: *i}, tls: {ca: *i}}
metrics: {listen: *i}
"""


def test_validate_on_binary_and_deeply_nested_files(tmp_path) -> None:
    cases = {
        "binary.yaml": os.urandom(4096),
        "nested.yaml": ("[" * 5000 + "]" * 5000).encode(),
        "aliases.yaml": b"a: &a [x, x, x]\nb: &b [*a, *a, *a]\nc: &c [*b, *b, *b]\nd: [*c, *c, *c]\n",
        "huge.yaml": b"job: {command: '" + b"x" * 5_000_000 + b"'}\n",
        "bomb.yaml": BOMB.encode(),
    }
    for name, data in cases.items():
        path = tmp_path / name
        path.write_bytes(data)
        started = time.monotonic()
        done = subprocess.run([sys.executable, "-m", "zkleader", "validate", "-c", str(path)],
                              capture_output=True, text=True, timeout=60)
        assert time.monotonic() - started < 30, name
        assert done.returncode == exitcodes.CONFIG, (name, done.stderr[-2000:])
        assert "Traceback" not in done.stderr and all(line.startswith("zkleader: ") for line in
                                                     done.stderr.splitlines()), (name, done.stderr[-2000:])


# ------------------------------------------------------------- junk in the election path


def status(cfg: Path, *flags: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "zkleader", "status", "-c", str(cfg), *flags],
                          capture_output=True, text=True, timeout=60)


def mimic(prefix: str) -> str:
    """A name of zkleader's shape with a fresh id: prefix + "zkl-<32 hex>-"."""
    return f"{prefix}/zkl-{uuid.uuid4().hex}-"


HUGE = 1_000_000  # ZooKeeper's default jute.maxbuffer is 1 MiB - 1 for a whole packet
MIMIC_DATA = [
    b"{not json",
    os.urandom(512),
    b"",
    b"[1, 2, 3]",
    json.dumps({"candidate": "\x1b[2J\x1b[31mpwned\nline", "host": 7, "pid": True, "version": ["x"],
                "started_at": {"a": 1}}).encode(),
    json.dumps({"candidate": "big", "host": "h" * (HUGE - 100)}).encode(),
]


@pytest.mark.zookeeper
def test_junk_and_mimics_in_the_election_path_are_tolerated(
    healthy_zk_server, election_path, daemon_group, kazoo_client
) -> None:
    outsider = kazoo_client(healthy_zk_server.hosts)
    outsider.ensure_path(election_path)
    junk = {
        "junk": b"x",
        "zkl-notours": b"{}",
        f"zkl-{'g' * 32}-0000000001": b"{}",
        "lock-0000000001": b"",
        "huge": os.urandom(HUGE),
        "binary": bytes(range(256)),
        "zkl-" + "A" * 32 + "-0000000002": b"\xff\xfe",
        "\u00e9t\u00e9-\u2603": b"unicode name",
    }
    for name, data in junk.items():
        outsider.create(f"{election_path}/{name}", data)
    outsider.create(f"{election_path}/junk/child", b"nested")

    group = daemon_group(healthy_zk_server.hosts, election_path)
    for name in ("a", "b", "c"):
        group.add(name).wait_event("joined", 30)
    (first,) = group.wait_starts(1, 30)
    assert first["candidate"] == "a"

    # Mimics: right name shape, other sessions, every kind of bad data, queued behind the daemons.
    intruder = kazoo_client(healthy_zk_server.hosts)
    mimics = [intruder.create(mimic(election_path), data, ephemeral=True, sequence=True) for data in MIMIC_DATA]
    outsider.create(f"{election_path}/late-junk", os.urandom(HUGE))
    outsider.create(f"{election_path}/zkl-{uuid.uuid4().hex}", b"no sequence")
    time.sleep(T)

    assert len(group.records("start")) == 1 and group.leaders() == ["a"]
    assert all(d.alive() for d in group.daemons.values())
    assert any(d.events("foreign_children") for d in group.daemons.values())
    cfg = group.daemons["b"].config_path
    text, document = status(cfg), status(cfg, "--json")
    assert text.returncode == 0 and document.returncode == 0, text.stderr + document.stderr
    assert "leader    a on" in text.stdout and "\x1b" not in text.stdout
    assert all(line.isprintable() for line in text.stdout.splitlines())
    parsed = json.loads(document.stdout)
    names = [c["node"] for c in parsed["queue"]]
    assert [c["candidate"] for c in parsed["queue"][:3]] == ["a", "b", "c"]
    assert names[3:] == [m.rsplit("/", 1)[1] for m in mimics]
    assert "huge" in parsed["ignored"] and "junk" in parsed["ignored"]
    weird = parsed["queue"][3 + 4]
    assert weird["pid"] is None and weird["host"] is None and weird["candidate"].startswith("\x1b[2J")

    # Handover still works through the junk; the mimics stay behind the daemons.
    group.signal("a", signal.SIGTERM)
    assert group.wait_exit("a") == exitcodes.OK
    assert group.wait_starts(2, 10)[1]["candidate"] == "b"
    intruder.stop()  # the mimics vanish with their session: nothing changes
    time.sleep(T)
    assert len(group.records("start")) == 2 and group.leaders() == ["b"]
    assert all(group.daemons[n].alive() for n in ("b", "c"))
    assert group.overlaps() == []


def _lower_persistent_mimic(kazoo_client, server, election_path: str):
    """Bumps the path's sequence counter, so that a hand-made name can sort first."""
    outsider = kazoo_client(server.hosts)
    outsider.ensure_path(election_path)
    for _ in range(3):
        outsider.delete(outsider.create(f"{election_path}/bump-", sequence=True))
    return outsider, f"{election_path}/zkl-{uuid.uuid4().hex}-0000000000"


@pytest.mark.zookeeper
def test_a_persistent_mimic_with_a_lower_sequence_is_skipped_and_status_flags_it(
    healthy_zk_server, election_path, daemon_group, kazoo_client
) -> None:
    """A hand-made persistent node named like ours that sorts first: no session can
    ever remove it, so the daemons skip it (not_a_candidate) instead of waiting behind
    it forever; the running leader is untouched, status flags it and never calls it
    the leader, and no two jobs ever run."""
    outsider, fake = _lower_persistent_mimic(kazoo_client, healthy_zk_server, election_path)
    group = daemon_group(healthy_zk_server.hosts, election_path)
    for name in ("a", "b"):
        group.add(name).wait_event("joined", 30)
    group.wait_starts(1, 30)
    outsider.create(fake, json.dumps({"candidate": "fake", "host": "nowhere", "pid": 1}).encode())
    time.sleep(T)
    assert group.leaders() == ["a"] and len(group.records("start")) == 1

    cfg = group.daemons["b"].config_path
    text, document = status(cfg), status(cfg, "--json")
    assert text.returncode == 0 and document.returncode == 0, text.stderr + document.stderr
    parsed = json.loads(document.stdout)
    queue = parsed["queue"]
    assert queue[0]["candidate"] == "fake" and queue[0]["ephemeral"] is False and queue[0]["session"] == "0x0"
    assert parsed["leader"]["candidate"] == "a"
    assert "leader    a on" in text.stdout and "no session owns" in text.stdout and "<- persistent" in text.stdout

    # a resigns: b was next in line in its listing, which held every node a daemon can
    # create below its own, so it confirms at once without reading the queue again (a
    # node named below ours can only be made by hand, like this one).
    group.add("c").wait_event("joined", 30)
    group.signal("a", signal.SIGUSR1)
    assert group.wait_starts(2, 15)[1]["candidate"] == "b"
    # b resigns: c, third in its listing, reads the queue again and meets the mimic first.
    group.signal("b", signal.SIGUSR1)
    assert group.wait_starts(3, 15)[2]["candidate"] == "c"
    skipped = group.daemons["c"].events("not_a_candidate")
    assert skipped and skipped[0]["node"] == fake.rsplit("/", 1)[1]
    assert all(d.alive() for d in group.daemons.values())
    assert group.overlaps() == []


# ------------------------------------------------------------------- hostile jobs

HOSTILE_JOB = r'''
import fcntl, json, os, signal, sys, time

mode = sys.argv[1]
pids = os.environ["HOSTILE_PIDS"]


def record(kind, **fields):
    line = json.dumps({"kind": kind, "candidate": os.environ.get("ZKLEADER_CANDIDATE"),
                       "token": int(os.environ.get("ZKLEADER_FENCING_TOKEN", "0")), "pid": os.getpid(),
                       "t": time.monotonic(), "mode": mode, **fields})
    fd = os.open(os.environ["DETECTOR_RECORD"], os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    os.write(fd, (line + "\n").encode())
    os.close(fd)


def note_pid(role):
    fd = os.open(pids, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    os.write(fd, f"{os.getpid()} {role} {os.environ.get('ZKLEADER_CANDIDATE')}\n".encode())
    os.close(fd)


def forever():
    while True:
        time.sleep(1)


# Every process of this job inherits the locked descriptor: the lock lives while any does.
lock = os.open(os.environ["DETECTOR_LOCK"], os.O_RDWR | os.O_CREAT, 0o644)
try:
    fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
except BlockingIOError:
    record("overlap")
    sys.exit(99)
record("start")
note_pid("main")


def daemonize(role):
    """The classic double fork: setsid, fork again, chdir /, stdio to /dev/null."""
    if os.fork() != 0:
        os.wait()
        return
    os.setsid()
    if os.fork() != 0:
        os._exit(0)
    os.chdir("/")
    os.umask(0)
    null = os.open("/dev/null", os.O_RDWR)
    for fd in (0, 1, 2):
        os.dup2(null, fd)
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    signal.signal(signal.SIGHUP, signal.SIG_IGN)
    note_pid(role)
    forever()


stopping = False


def on_term(signum, frame):
    global stopping
    stopping = True


signal.signal(signal.SIGTERM, on_term)
if mode == "output":
    chunk = os.urandom(1 << 20)
    for _ in range(8):
        os.write(1, chunk)
        os.write(2, chunk)
    os.write(1, b"L" * (4 << 20))  # one 4 MiB line, no newline
elif mode == "ignore-term":
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    if os.fork() == 0:
        note_pid("child")
        forever()
elif mode == "daemonize":
    daemonize("daemon")
elif mode == "daemonize-and-exit":
    daemonize("daemon")
    sys.exit(0)  # like a classic daemon's parent: the job's main process is gone at once
elif mode == "setsid":
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    if os.fork() == 0:
        os.setsid()  # its own session and process group: killpg(job) misses it
        note_pid("session-leader")
        if os.fork() == 0:
            os.setpgid(0, 0)  # and yet another process group
            note_pid("group-leader")
        forever()
while not stopping:
    time.sleep(0.02)
record("stop")
'''


def pids_of(path: Path, candidate: str | None = None) -> list[int]:
    if not path.exists():
        return []
    rows = [line.split() for line in path.read_text().splitlines() if line.strip()]
    return [int(pid) for pid, _, who in rows if candidate is None or who == candidate]


EXPECTED_PROCESSES = {"output": 1, "ignore-term": 2, "daemonize": 2, "daemonize-and-exit": 2, "setsid": 3}


@pytest.mark.zookeeper
@pytest.mark.parametrize("mode", list(EXPECTED_PROCESSES))
def test_a_hostile_job_tree_is_gone_before_the_successor_starts(
    healthy_zk_server, election_path, daemon_group, tmp_path, mode
) -> None:
    script = tmp_path / "hostile_job.py"
    script.write_text(HOSTILE_JOB)
    pid_file = tmp_path / "pids"
    group = daemon_group(healthy_zk_server.hosts, election_path, stop_timeout=0.5)
    command = [sys.executable, "-I", "-S", str(script), mode]
    environment = {"DETECTOR_LOCK": str(group.lock_path), "DETECTOR_RECORD": str(group.record_path),
                   "HOSTILE_PIDS": str(pid_file)}
    group.add("a", command=command, environment=environment)
    group.wait_starts(1, 30)
    group.add("b", command=command, environment=environment).wait_event("joined", 30)
    wait_for(lambda: len(pids_of(pid_file, "a")) >= EXPECTED_PROCESSES[mode], 20, f"{mode}: the job's processes")
    if mode == "daemonize-and-exit":
        # The main process exits at once; what it left behind is killed and the job restarts.
        # Each restart takes the lock, so each earlier generation was gone by then.
        wait_for(lambda: len(group.records("start")) >= 3, 30, "three restarts")
    else:
        time.sleep(1.0)
        assert len(group.records("start")) == 1
    a_pids = pids_of(pid_file, "a")
    sent = group.signal("a", signal.SIGTERM)
    assert group.wait_exit("a", timeout=30) == exitcodes.OK
    successor = wait_for(lambda: [r for r in group.records("start") if r["candidate"] == "b"], 15, "b's job")[0]
    assert successor["t"] > sent
    survivors = [pid for pid in a_pids if process_running(pid)]
    assert survivors == [], f"{mode}: processes of a's job survived: {survivors}"
    assert group.overlaps() == []
    assert b'"stopped"' in group.daemons["a"].log_path.read_bytes()
    if mode in ("ignore-term", "setsid"):
        # Something ignored SIGTERM, so only SIGKILL after stop_timeout ended it.
        assert successor["t"] - sent >= group.stop_timeout
    group.signal("b", signal.SIGTERM)
    assert group.wait_exit("b", timeout=30) == exitcodes.OK
    wait_for(lambda: not any(process_running(pid) for pid in pids_of(pid_file)), 10, "every job process gone")
    assert group.lock_is_free()
