"""zkleader.pid1, the container's init (docker-compose.yml): the guardian outlives a
killed daemon, as it must to close the daemon's session. First with stand-ins (a
"daemon" whose child waits for its lifeline's EOF, then works a while), as PID 1 of a
fresh pid namespace (what a container is) and as a plain subreaper; then real daemons
on a real ZooKeeper, each in a pid namespace of its own under pid1, as in the compose
demo: kill -9 of the leader's daemon, and the successor's job runs well before the
session could expire, with no overlap."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from zkleader.guardian import children_of
from zkleader.testing.daemons import wait_for

REPO = Path(__file__).resolve().parents[1]

STANDIN = r"""
import os, signal, sys, time
work = sys.argv[1]
mode = sys.argv[2] if len(sys.argv) > 2 else "release"
r, w = os.pipe()
if os.fork() == 0:                       # the guardian
    os.close(w)
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    os.read(r, 1)                        # EOF: the daemon is gone
    if mode == "stuck":
        time.sleep(1000)
    time.sleep(0.5)                      # kill and reap the job, connect, close the session
    with open(f"{work}/released", "w") as f:
        f.write(str(time.time()))
    os._exit(0)
os.close(r)
def term(signum, frame):
    with open(f"{work}/terminated", "w") as f:
        f.write("yes")
    sys.exit(0)
signal.signal(signal.SIGTERM, term)
with open(f"{work}/ready", "w") as f:
    f.write("yes")
while True:
    time.sleep(1)
"""


def _in_namespace_available() -> str | None:
    if os.geteuid() != 0:
        return "needs root for a pid namespace"
    if shutil.which("unshare") is None:
        return "needs unshare(1)"
    return None


def _start(tmp_path: Path, *, namespace: bool, grace: float = 10.0, mode: str = "release") -> subprocess.Popen:
    script = tmp_path / "standin.py"
    script.write_text(STANDIN)
    command = [sys.executable, "-m", "zkleader.pid1", "--grace", str(grace), "--",
               sys.executable, str(script), str(tmp_path), mode]
    if namespace:
        command = ["unshare", "--pid", "--fork", "--kill-child", "--mount-proc", *command]
    process = subprocess.Popen(command, cwd=REPO, env={**os.environ, "PYTHONPATH": str(REPO)},
                               stdin=subprocess.DEVNULL)
    wait_for(lambda: (tmp_path / "ready").exists(), 10, "the stand-in daemon ready")
    return process


def _init_and_daemon(process: subprocess.Popen, namespace: bool) -> tuple[int, int]:
    """pid1's pid and the stand-in daemon's, as this (outer) pid namespace sees them."""
    init = process.pid
    if namespace:
        init = wait_for(lambda: [pid for pid, _ in children_of().get(process.pid, [])], 5, "pid1 forked")[0]
    daemon = wait_for(lambda: [pid for pid, _ in children_of().get(init, [])], 5, "the daemon started")[0]
    return init, daemon


@pytest.mark.parametrize("namespace", [True, False], ids=["as PID 1 of a pid namespace", "as a subreaper"])
def test_the_guardian_outlives_a_killed_daemon(tmp_path, namespace):
    if namespace and _in_namespace_available():
        pytest.skip(_in_namespace_available())
    process = _start(tmp_path, namespace=namespace)
    try:
        _, daemon = _init_and_daemon(process, namespace)
        killed = time.time()
        os.kill(daemon, signal.SIGKILL)
        code = process.wait(10)
        released = tmp_path / "released"
        assert released.exists(), "the guardian was killed before it could release the session"
        assert float(released.read_text()) >= killed + 0.5
        assert code == 128 + signal.SIGKILL  # the daemon's death, as a shell reports it
    finally:
        if process.poll() is None:
            process.kill()
            process.wait(10)


def test_sigterm_goes_to_the_daemon_and_the_exit_status_is_its_own(tmp_path):
    process = _start(tmp_path, namespace=False)
    try:
        _init_and_daemon(process, False)
        process.send_signal(signal.SIGTERM)
        assert process.wait(10) == 0
        assert (tmp_path / "terminated").exists()
        assert (tmp_path / "released").exists()  # its lifeline closed too
    finally:
        if process.poll() is None:
            process.kill()
            process.wait(10)


@pytest.mark.parametrize("namespace", [True, False], ids=["as PID 1 of a pid namespace", "as a subreaper"])
def test_a_guardian_that_never_ends_is_given_up_after_the_grace(tmp_path, namespace):
    if namespace and _in_namespace_available():
        pytest.skip(_in_namespace_available())
    process = _start(tmp_path, namespace=namespace, grace=0.5, mode="stuck")
    try:
        _, daemon = _init_and_daemon(process, namespace)
        guardian = children_of()[daemon][0][0]
        started = time.monotonic()
        os.kill(daemon, signal.SIGKILL)
        assert process.wait(10) == 128 + signal.SIGKILL
        assert 0.4 < time.monotonic() - started < 5
        assert wait_for(lambda: not os.path.exists(f"/proc/{guardian}"), 5, "the stuck guardian killed")
    finally:
        if process.poll() is None:
            process.kill()
            process.wait(10)


def test_usage_without_a_command():
    r = subprocess.run([sys.executable, "-m", "zkleader.pid1", "--"], capture_output=True, text=True, cwd=REPO, check=False)
    assert r.returncode == 2 and "no command given" in r.stderr


SESSION_TIMEOUT = 10.0


@pytest.mark.zookeeper
def test_in_a_container_kill_9_of_the_leader_daemon_hands_over_at_once(healthy_zk_server, election_path,
                                                                        daemon_group):
    """The compose demo's setup without Docker: each daemon in a pid namespace of its own
    with pid1 as PID 1 (and a /proc of its own, as in a container)."""
    if _in_namespace_available():
        pytest.skip(_in_namespace_available())
    group = daemon_group(healthy_zk_server.hosts, election_path, session_timeout=SESSION_TIMEOUT)

    def contained(name: str):
        daemon = group.add(name, start=False)
        with daemon.log_path.open("ab") as log:
            daemon.process = subprocess.Popen(
                ["unshare", "--pid", "--fork", "--kill-child", "--mount-proc",
                 sys.executable, "-m", "zkleader.pid1", "--",
                 sys.executable, "-m", "zkleader", "run", "-c", str(daemon.config_path)],
                stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, cwd=REPO,
                env={**os.environ, "PYTHONPATH": str(REPO)})
        return daemon

    a = contained("a")
    group.wait_starts(1, 30)
    contained("b").wait_event("joined", 30)
    assert a.process is not None
    _, daemon = _init_and_daemon(a.process, namespace=True)
    killed = time.monotonic()
    os.kill(daemon, signal.SIGKILL)
    wait_for(lambda: group.overlaps() or len(group.records("start")) >= 2, SESSION_TIMEOUT + 10,
             "the successor's job or an overlap")
    assert group.overlaps() == []
    second = group.records("start")[1]
    assert second["candidate"] == "b"
    took = second["t"] - killed
    print(f"in a pid namespace under pid1: kill -9 of the leader's daemon -> successor's job: {took * 1000:.0f} ms")
    assert took < SESSION_TIMEOUT / 2, f"the successor started {took:.2f}s after the kill\n{group.describe()}"
    assert a.process.wait(SESSION_TIMEOUT) == 128 + signal.SIGKILL  # the container exits once the guardian is done
    assert any(e["event"] == "session_released" for e in a.events()), group.describe()


def test_the_compose_demo_runs_each_daemon_under_pid1():
    """Not Docker's `init: true` (tini): it exits with the daemon, and the container's
    other processes, the guardian included, are killed with it. (Measured with tini
    0.19 in pid1's place in the test above: the successor waited 9.9 s, the session's
    expiry, instead of 0.5 s.)"""
    import yaml

    services = yaml.safe_load((REPO / "docker-compose.yml").read_text())["services"]
    daemons = {name: s for name, s in services.items() if name.startswith("host-")}
    assert len(daemons) == 3
    for name, service in daemons.items():
        assert service["entrypoint"] == ["python", "-m", "zkleader.pid1", "--", "zkleader"], name
        assert not service.get("init"), name
