"""Issue 13: a daemon that dies on a healthy host (kill -9, the OOM killer, an
uncaught error) no longer holds up its successor for a session timeout. Its warm
guardian sees the lifeline close, kills and reaps the job's whole tree, and only
then closes the daemon's session (zkleader.release), so the next candidate's watch
fires at once. Real daemons, a real ZooKeeper, and the flock overlap detector as the
job: a successor that started while any process of the old job lived would record
an overlap.

Also: when no server can be reached the release fails and the successor waits for
the expiry, with the job long gone; and the session's password, which the guardian
holds for the release, shows up neither in the job's environment nor in argv nor in
any log line (a proxy reads it from the server's ConnectResponse, so the test knows
exactly what to look for).
"""

from __future__ import annotations

import base64
import re
import signal
import threading
import time

import pytest

from zkleader.testing.daemons import DaemonGroup, guardian_of, process_running, wait_for
from zkleader.testing.faultproxy import SessionRecordingProxy

pytestmark = pytest.mark.zookeeper

#: Long enough that expiry cannot be what hands over within the bound below.
SESSION_TIMEOUT = 10.0
#: The cut-off case waits for the expiry itself: a shorter session keeps it fast.
CUT_OFF_TIMEOUT = 4.0


def successor_or_overlap(group: DaemonGroup, timeout: float) -> dict:
    """The second job start; fails if any job found the lock taken first."""
    wait_for(lambda: group.overlaps() or len(group.records("start")) >= 2, timeout,
             "the successor's job or an overlap")
    assert group.overlaps() == [], "the successor's job started while the old job's processes lived"
    return group.records("start")[1]


@pytest.mark.parametrize("servers", ["standalone", "ensemble"])
def test_kill_9_of_the_leader_daemon_hands_over_well_before_its_session_could_expire(
    servers, request, election_path, daemon_group
) -> None:
    zookeeper = request.getfixturevalue("healthy_zk_server" if servers == "standalone" else "healthy_ensemble")
    group = daemon_group(zookeeper.hosts, election_path, session_timeout=SESSION_TIMEOUT)
    a = group.add("a")
    (first,) = group.wait_starts(1, 30)
    group.add("b").wait_event("joined", 30)
    killed_at = time.monotonic()
    a.process.send_signal(signal.SIGKILL)
    second = successor_or_overlap(group, SESSION_TIMEOUT + 10)
    assert second["candidate"] == "b"
    assert not process_running(first["pid"])
    # Without the release the successor waits the whole session timeout (and more:
    # the server notices expiry on its next tick). Half of it leaves room for a slow machine.
    took = second["t"] - killed_at
    assert took < SESSION_TIMEOUT / 2, f"the successor started {took:.2f}s after the kill"
    (released,) = a.events("session_released")
    assert released["session"] == a.events("connected")[-1]["session"]
    print(f"kill -9 of the leader's daemon ({servers}) -> successor's job running: {took * 1000:.0f} ms")


def test_kill_9_of_a_leader_daemon_cut_off_from_zookeeper_leaves_its_session_to_expire(
    healthy_zk_server, fault_proxy, election_path, daemon_group
) -> None:
    """The daemon is cut off (silently: its proxy holds every byte) and then killed.
    The guardian still kills the job's tree at once; its release cannot reach a server
    and gives up after a session timeout (session_release_failed), so the successor
    starts on the session's expiry, no earlier than the server's last byte from the
    daemon + T, and without an overlap."""
    t = CUT_OFF_TIMEOUT
    proxy = fault_proxy(healthy_zk_server)
    group = daemon_group(healthy_zk_server.hosts, election_path, session_timeout=t)
    a = group.add("a", hosts=proxy.hosts)
    (first,) = group.wait_starts(1, 30)
    group.add("b").wait_event("joined", 30)
    proxy.partition()
    killed_at = time.monotonic()
    a.process.send_signal(signal.SIGKILL)
    try:
        wait_for(lambda: not process_running(first["pid"]), 1.0, "the old job to die with its daemon")
        job_gone = time.monotonic() - killed_at
        failed = a.wait_event("session_release_failed", t + 10)
        second = successor_or_overlap(group, t + 10)
        heard = proxy.stats(0)["last_sent_upstream"]
    finally:
        proxy.heal()
    assert second["candidate"] == "b"
    assert a.events("session_released") == []
    assert failed["session"] == a.events("connected")[-1]["session"]
    # ZooKeeper never expires a session early (expiry is rounded up to its tick).
    assert second["t"] >= heard + t - 0.05, f"the successor started {second['t'] - heard:.2f}s after the last byte"
    print(f"kill -9 of a cut-off leader's daemon: job gone after {job_gone * 1000:.0f} ms, successor's job "
          f"{second['t'] - killed_at:.2f}s after the kill ({second['t'] - heard:.2f}s after the last byte, T = {t:g}s)")


#: Every way a 16-byte password could be written down by mistake.
def secret_forms(password: bytes) -> dict[str, bytes]:
    return {
        "raw": password,
        "hex": password.hex().encode(),
        "HEX": password.hex().upper().encode(),
        "base64": base64.b64encode(password).rstrip(b"="),
        "urlsafe base64": base64.urlsafe_b64encode(password).rstrip(b"="),
        "repr": repr(password)[2:-1].encode(),
    }


def read_bytes(path: str) -> bytes:
    try:
        with open(path, "rb") as handle:
            return handle.read()
    except OSError:
        return b""


#: The variables zkleader itself gives the job.
JOB_VARIABLES = {"ZKLEADER_ELECTION", "ZKLEADER_CANDIDATE", "ZKLEADER_ZNODE", "ZKLEADER_FENCING_TOKEN"}
_HEX32 = re.compile(rb"(?<![0-9a-fA-F])[0-9a-fA-F]{32}(?![0-9a-fA-F])")
_NODE_ID = re.compile(rb"zkl-([0-9a-f]{32})-\d{10}")


def test_the_session_password_reaches_neither_the_job_nor_argv_nor_the_logs(
    healthy_zk_server, election_path, daemon_group
) -> None:
    proxy = SessionRecordingProxy(healthy_zk_server, name="session-recorder")
    try:
        group = daemon_group(healthy_zk_server.hosts, election_path, session_timeout=SESSION_TIMEOUT)
        a = group.add("a", hosts=proxy.hosts)  # logging.level: debug (DaemonGroup's default)
        (first,) = group.wait_starts(1, 30)
        session = int(a.wait_event("connected", 10)["session"], 16)
        password = wait_for(lambda: proxy.sessions.get(session), 5, "the server's ConnectResponse")
        forms = secret_forms(password)
        guardian = wait_for(lambda: guardian_of(a.pid), 10, "a's guardian")
        job = first["pid"]
        places = {
            "the job's environment": read_bytes(f"/proc/{job}/environ"),
            "the job's argv": read_bytes(f"/proc/{job}/cmdline"),
            "the guardian's environment": read_bytes(f"/proc/{guardian.pid}/environ"),
            "the guardian's argv": read_bytes(f"/proc/{guardian.pid}/cmdline"),
        }
        assert places["the job's environment"], "cannot read the job's environment"
        names = {entry.split(b"=", 1)[0].decode() for entry in places["the job's environment"].split(b"\0") if entry}
        assert {name for name in names if name.startswith("ZKLEADER_")} == JOB_VARIABLES
        assert [name for name in names if re.search("SESSION|PASSW|SECRET|ZK_?AUTH", name, re.I)] == []

        # kill -9: the guardian reaps the job and execs the release (same pid), which
        # gets the password on a pipe. Watch that process's argv and environment.
        seen: list[tuple[bytes, bytes]] = []
        done = threading.Event()

        def watch_release() -> None:
            while not done.is_set() and guardian.alive():
                seen.append((read_bytes(f"/proc/{guardian.pid}/cmdline"), read_bytes(f"/proc/{guardian.pid}/environ")))
                time.sleep(0.002)

        watcher = threading.Thread(target=watch_release, daemon=True)
        watcher.start()
        group.add("b").wait_event("joined", 30)
        a.process.send_signal(signal.SIGKILL)
        a.wait_event("session_released", SESSION_TIMEOUT)
        done.set()
        watcher.join(5)
        releases = [(argv, env) for argv, env in seen if b"zkleader.release" in argv]
        assert releases, f"never saw the release's argv (saw {sorted({argv for argv, _ in seen})})"
        places["the release's argv"] = b"\n".join(argv for argv, _ in releases)
        places["the release's environment"] = b"\n".join(env for _, env in releases)
        log = a.log_path.read_bytes()
        places["the daemon's log (daemon, guardian and release)"] = log
        leaks = [f"{form} form in {where}" for where, text in places.items()
                 for form, value in forms.items() if value in text]
        assert leaks == [], f"the session password of 0x{session:x} leaked: {leaks}"
        # And in no other encoding a 32-hex-digit field could carry: the only ones in
        # the log are candidacy ids inside node names.
        ids = set(_NODE_ID.findall(log))
        strangers = sorted({m for m in _HEX32.findall(log) if m.lower() not in ids})
        assert strangers == [], f"32-hex-digit fields in the log that are no candidacy id: {strangers}"
    finally:
        proxy.close()
