"""End to end, as an operator runs it: three hosts (zk-host-1..3), each a real
systemd with the shipped zkleader.service and a configuration, one ZooKeeper on
the shared loopback. Everything is driven and observed through systemctl and
journalctl; the leader job is a flock overlap detector on a directory that all
three hosts share (/shared), so "never two leader jobs at once" is checked by
the kernel, without clocks.

Contract of the daemon used here: `zkleader run -c PATH` in the foreground,
Type=notify (READY=1, WATCHDOG=1 from its main loop), structured journal entries
(ZKLEADER_EVENT, ZKLEADER_TOKEN, ...) with logging.format auto under systemd,
exit status 78 on a bad configuration, and its ZooKeeper session kept in systemd's
file descriptor store, which the daemon restarted after a crash closes
(zkleader/fdstore.py).
"""

from __future__ import annotations

import json
import os
import secrets
import time
from pathlib import Path

import pytest

import harness

REPO = Path(__file__).resolve().parents[2]
HOSTS = ("zk-host-1", "zk-host-2", "zk-host-3")
SESSION_TIMEOUT = 6.0   # seconds; the unit's WatchdogSec=2s is kept in the lease margin
STOP_TIMEOUT = 1.0
UNIT = "zkleader.service"

# The leader job. flock(1) without -o: the lock is held by the job's last
# process; if any process of a previous leader job is alive, -n fails (99)
# and the overlap is recorded. Every start is recorded with the fencing token
# and the (machine-wide) realtime clock.
JOB = (
    "flock -n -E 99 /shared/lock /bin/sh -c "
    "'echo \"start $ZKLEADER_CANDIDATE $ZKLEADER_FENCING_TOKEN $(date +%s.%N)\" >> /shared/events; "
    "exec sleep infinity'; "
    "rc=$?; if [ $rc -eq 99 ]; then "
    "echo \"overlap $ZKLEADER_CANDIDATE $ZKLEADER_FENCING_TOKEN $(date +%s.%N)\" >> /shared/overlaps; fi; "
    "exit $rc"
)


def config_yaml(zk_hosts: str, election: str, candidate: str) -> str:
    return f"""\
zookeeper:
  hosts: [{zk_hosts}]
  session_timeout: {SESSION_TIMEOUT:g}s
  tick_time: 200ms   # the test server's tickTime (zkleader/testing/zkserver.py)
election:
  path: {election}
  candidate: {candidate}
job:
  command: ["/bin/sh", "-c", {_yaml_str(JOB)}]
  stop_signal: SIGTERM
  stop_timeout: {STOP_TIMEOUT:g}s
  on_exit: restart
logging:
  level: info
  format: auto
"""


def _yaml_str(text: str) -> str:
    """A double-quoted YAML scalar."""
    return '"' + text.replace("\\", "\\\\").replace('"', '\\"') + '"'


class Cluster:
    def __init__(self, hosts: list[harness.SystemdHost], shared: Path, election: str):
        self.hosts = {h.hostname: h for h in hosts}
        self.shared = shared
        self.election = election

    # -- what the job recorded --------------------------------------------
    def starts(self) -> list[tuple[str, int, float]]:
        path = self.shared / "events"
        if not path.exists():
            return []
        out = []
        for line in path.read_text().splitlines():
            kind, candidate, token, t = line.split()
            if kind == "start":
                out.append((candidate, int(token), float(t)))
        return out

    def overlaps(self) -> str:
        path = self.shared / "overlaps"
        return path.read_text() if path.exists() else ""

    # -- what systemd and the journal say ---------------------------------
    def leader_acquired(self, name: str) -> list[dict]:
        return self.hosts[name].journal_entries("-u", UNIT, "ZKLEADER_EVENT=leader_acquired")

    def state(self, name: str) -> dict[str, str]:
        return self.hosts[name].show(UNIT, "ActiveState", "SubState", "Result", "ExecMainStatus",
                                     "NRestarts", "MainPID", "StatusText")

    def job_running(self, name: str) -> bool:
        status = self.hosts[name].systemctl("status", UNIT, "--lines=0").stdout
        return "sleep infinity" in status

    def stored_sessions(self, name: str) -> list[dict]:
        """The sessions this host's systemd keeps in its fd store for zkleader."""
        return [json.loads(raw) for raw in self.hosts[name].fd_store("zkleader-session")]

    def assert_secret_kept(self, password: str) -> None:
        """The session password is in no host's journal, and in no argv, environment or
        open descriptor of any process of the unit, job and guardian included."""
        for name, h in self.hosts.items():
            # Binary fields (length-prefixed, not UTF-8) are decoded with replacement characters;
            # the hex password would still read as itself in them.
            journal = h.journalctl("-o", "export", errors="replace").stdout
            assert password not in journal, f"{name}'s journal holds the session password"
            for pid in h.unit_pids(UNIT):
                try:
                    argv = Path(f"/proc/{pid}/cmdline").read_bytes().decode(errors="replace")
                    environ = Path(f"/proc/{pid}/environ").read_bytes().decode(errors="replace")
                    links = [os.readlink(fd) for fd in Path(f"/proc/{pid}/fd").iterdir()]
                except OSError:
                    continue  # gone meanwhile
                assert password not in argv and password not in environ, (name, pid, argv)
                if not argv.startswith("/opt/zkleader/bin/python\0/opt/zkleader/bin/zkleader\0run\0"):
                    # only the daemon is handed systemd's descriptors (environ is as exec'd)
                    assert "LISTEN_FDS" not in environ, (name, pid, argv)
                assert not [link for link in links if "zkleader-session" in link], (name, pid, argv, links)

    def diagnostics(self) -> str:
        parts = []
        for name, h in self.hosts.items():
            parts.append(f"===== {name}: {self.state(name)}\n"
                         + h.journalctl("-u", UNIT, "-u", "zkleader@bad.service", "-n", "40",
                                        "-o", "short-precise").stdout)
        parts.append(f"===== /shared/events\n{(self.shared / 'events').read_text() if (self.shared / 'events').exists() else ''}")
        parts.append(f"===== /shared/overlaps\n{self.overlaps()}")
        return "\n".join(parts)

    def wait(self, pred, timeout: float, what: str, step: float = 0.05):
        deadline = time.monotonic() + timeout
        while True:
            value = pred()
            if value:
                return value
            if time.monotonic() > deadline:
                raise AssertionError(f"timed out after {timeout}s waiting for: {what}\n{self.diagnostics()}")
            time.sleep(step)

    def current_leader(self) -> str:
        """The host whose job recorded the latest start and still runs it."""
        starts = self.starts()
        assert starts, "no leader job ever started"
        name = starts[-1][0]
        assert self.job_running(name), f"{name} recorded the last start but its job is not running"
        return name


@pytest.fixture(scope="module")
def cluster(systemd_capable, zkleader_venv, tmp_path_factory):
    from zkleader.testing.zkserver import ZooKeeperServer

    shared = tmp_path_factory.mktemp("shared")
    shared.chmod(0o777)
    election = f"/zkleader-e2e/{secrets.token_hex(4)}"
    server = ZooKeeperServer(tmp_path_factory.mktemp("zk-e2e"), name="zk-e2e")
    hosts = [harness.SystemdHost(name, zkleader_venv=zkleader_venv,
                                 binds=[harness.Bind(str(shared), "/shared")]) for name in HOSTS]
    try:
        server.start(timeout=60)
        boot_times = harness.boot_all(hosts)
        print("\nboot times: " + ", ".join(f"{h.hostname} {t:.2f}s" for h, t in zip(hosts, boot_times)))
        for h in hosts:
            h.write_file(f"/etc/systemd/system/{UNIT}", (REPO / "systemd" / UNIT).read_text())
            h.write_file("/etc/systemd/system/zkleader@.service", (REPO / "systemd" / "zkleader@.service").read_text())
            h.write_file("/etc/zkleader/zkleader.yaml", config_yaml(server.hosts, election, h.hostname))
            h.systemctl("daemon-reload", check=True)
        c = Cluster(hosts, shared, election)
        yield c
        assert not c.overlaps(), f"two leader jobs overlapped:\n{c.diagnostics()}"
    finally:
        for h in hosts:
            try:
                h.close()
            except Exception as err:  # close all, then report
                print(f"closing {h.hostname}: {err}")
        server.close()


def test_start_on_all_three_elects_one_leader(cluster: Cluster):
    for name, h in cluster.hosts.items():
        r = h.systemctl("start", "--no-block", UNIT)
        assert r.returncode == 0, r.stderr
    for name in cluster.hosts:
        cluster.wait(lambda: cluster.state(name)["ActiveState"] == "active", 20,
                     f"{name}: {UNIT} active (the daemon sends READY=1)")
    cluster.wait(lambda: cluster.starts(), 15, "a leader job started")
    time.sleep(1.5)  # give a wrong second leader the time to show up
    starts = cluster.starts()
    assert len(starts) == 1, cluster.diagnostics()
    leader, token, _ = starts[0]
    acquired = {name: cluster.leader_acquired(name) for name in cluster.hosts}
    assert [n for n, e in acquired.items() if e] == [leader], cluster.diagnostics()
    assert acquired[leader][0]["ZKLEADER_TOKEN"] == str(token)
    assert acquired[leader][0]["ZKLEADER_ELECTION"] == cluster.election
    assert cluster.job_running(leader)
    for name in cluster.hosts:
        if name != leader:
            assert not cluster.job_running(name)
            assert cluster.state(name)["ActiveState"] == "active"
    # Every host's `systemctl status` line names the same leader node.
    node = acquired[leader][0]["ZKLEADER_NODE"]
    lines = {name: cluster.state(name)["StatusText"] for name in cluster.hosts}
    assert lines[leader].startswith(f"leading {cluster.election} as {node} "), lines
    for name in cluster.hosts:
        if name != leader:
            assert lines[name].startswith("following ") and lines[name].endswith(f"; leader {node}"), lines
    assert not cluster.overlaps()


def test_stop_on_the_leader_hands_over_within_a_second(cluster: Cluster):
    old = cluster.current_leader()
    before = len(cluster.starts())
    old_token = cluster.starts()[-1][1]
    t0 = time.time()
    r = cluster.hosts[old].systemctl("stop", UNIT, timeout=30)
    assert r.returncode == 0, r.stderr
    stopped_in = time.time() - t0
    cluster.wait(lambda: len(cluster.starts()) > before, 5, "another host's job started")
    new, token, t_start = cluster.starts()[-1]
    took = t_start - t0
    print(f"\nhandover: {old} stopped in {stopped_in:.2f}s; {new}'s job started {took:.2f}s after `systemctl stop`")
    assert new != old
    assert took < 1.0, f"handover took {took:.2f}s\n{cluster.diagnostics()}"
    assert token > old_token
    state = cluster.state(old)
    assert state["ActiveState"] == "inactive" and state["Result"] == "success", state
    assert not cluster.job_running(old)
    entries = cluster.wait(lambda: [e for e in cluster.leader_acquired(new) if e.get("ZKLEADER_TOKEN") == str(token)],
                           5, f"{new}'s journal has leader_acquired with token {token}")
    assert entries[-1]["ZKLEADER_CANDIDATE"] == new
    assert str(token) in entries[-1]["MESSAGE"]
    # the old leader rejoins as a follower
    assert cluster.hosts[old].systemctl("start", "--no-block", UNIT).returncode == 0
    cluster.wait(lambda: cluster.state(old)["ActiveState"] == "active", 20, f"{old} active again")
    assert not cluster.overlaps()


def test_kill_9_of_the_leader_daemon_hands_over_within_a_second(cluster: Cluster):
    """KillMode=mixed SIGKILLs the guardian with the job before it can close the dead
    daemon's session; systemd keeps the session in its fd store, and the daemon it
    restarts (RestartSec=100ms) closes it once the unit's cgroup is empty."""
    old = cluster.current_leader()
    h = cluster.hosts[old]
    before = len(cluster.starts())
    restarts = int(cluster.state(old)["NRestarts"])
    connected = h.journal_entries("-u", UNIT, "ZKLEADER_EVENT=connected")[-1]["ZKLEADER_SESSION"]
    stored = cluster.wait(lambda: cluster.stored_sessions(old), 5, f"{old}'s systemd holds its session")
    assert len(stored) == 1 and f"0x{stored[0]['session']}" == connected, (stored, connected)
    password = stored[0]["password"]
    assert len(password) == 32  # 16 bytes, hex
    cluster.assert_secret_kept(password)
    main = cluster.state(old)["MainPID"]
    t_kill = time.time()
    h.run(["kill", "-9", main], check=True)
    cluster.wait(lambda: len(cluster.starts()) > before, SESSION_TIMEOUT + 8, "another host's job started")
    new, _, t_start = cluster.starts()[before]
    took = t_start - t_kill
    released = cluster.wait(
        lambda: [e for e in h.journal_entries("-u", UNIT, "ZKLEADER_EVENT=session_released")
                 if e.get("ZKLEADER_SESSION") == connected], 5, f"{old}'s journal has session_released")
    t_released = int(released[-1]["__REALTIME_TIMESTAMP"]) / 1e6
    print(f"\nkill -9 of {old}'s daemon: its session closed by the restarted daemon after "
          f"{t_released - t_kill:.2f}s; {new}'s job started {took:.2f}s after the kill "
          f"(session timeout {SESSION_TIMEOUT:g}s)")
    assert new != old
    # well before the session could have expired (T after the last heartbeat, at most T/6 before the kill)
    assert took < 1.5, f"the successor started {took:.2f}s after the kill\n{cluster.diagnostics()}"
    assert t_released < t_start
    assert "systemd has emptied its cgroup" in released[-1]["MESSAGE"], released[-1]
    log = h.journalctl("-u", UNIT, "-o", "cat").stdout
    assert "Main process exited, code=killed, status=9/KILL" in log, log
    # Restart=on-failure brought the daemon back, as a follower, with its own new session in the store
    cluster.wait(lambda: int(cluster.state(old)["NRestarts"]) > restarts
                 and cluster.state(old)["ActiveState"] == "active", 10, f"{old} restarted")
    new_session = h.journal_entries("-u", UNIT, "ZKLEADER_EVENT=connected")[-1]["ZKLEADER_SESSION"]
    assert new_session != connected
    cluster.wait(lambda: [f"0x{x['session']}" for x in cluster.stored_sessions(old)] == [new_session], 5,
                 f"{old}'s systemd holds only the restarted daemon's session")
    cluster.assert_secret_kept(password)
    cluster.assert_secret_kept(cluster.stored_sessions(old)[0]["password"])
    assert not cluster.job_running(old)
    assert not cluster.overlaps(), cluster.diagnostics()


def test_watchdog_kills_a_paused_leader_before_its_session_can_expire(cluster: Cluster):
    old = cluster.current_leader()
    before = len(cluster.starts())
    restarts = int(cluster.state(old)["NRestarts"])
    t_stop = time.time()
    r = cluster.hosts[old].systemctl("kill", "--kill-whom=main", "--signal=SIGSTOP", UNIT)
    assert r.returncode == 0, r.stderr
    # systemd's watchdog (WatchdogSec=3s, WatchdogSignal=SIGKILL) kills the unit, job included
    cluster.wait(lambda: not cluster.job_running(old), 8, f"{old}'s job killed by the watchdog")
    t_dead = time.time()
    timeout_entries = cluster.wait(
        lambda: [e for e in cluster.hosts[old].journal_entries("-u", UNIT) if "Watchdog timeout" in e.get("MESSAGE", "")],
        5, f"{old}'s journal reports the watchdog timeout")
    t_watchdog = int(timeout_entries[-1]["__REALTIME_TIMESTAMP"]) / 1e6
    print(f"\nwatchdog: fired {t_watchdog - t_stop:.2f}s after SIGSTOP, job gone after {t_dead - t_stop:.2f}s "
          f"(session timeout {SESSION_TIMEOUT:g}s)")
    # before the session could expire: the server heard from the daemon at most
    # one heartbeat interval (T/6) before the SIGSTOP
    assert t_watchdog - t_stop < SESSION_TIMEOUT - SESSION_TIMEOUT / 6, cluster.diagnostics()
    # ... and no other host's job started before the old one was gone
    new_starts = cluster.starts()[before:]
    assert all(t > t_watchdog for _, _, t in new_starts), cluster.diagnostics()
    # the next candidate takes over once the killed daemon's session is gone: closed by
    # the daemon systemd restarts (fd store), not a session timeout later
    session = cluster.hosts[old].journal_entries("-u", UNIT, "ZKLEADER_EVENT=connected")[-1]["ZKLEADER_SESSION"]
    cluster.wait(lambda: len(cluster.starts()) > before, SESSION_TIMEOUT + 8, "a new leader")
    new, token, t_start = cluster.starts()[before]
    assert new != old
    assert t_start > t_watchdog
    released = cluster.wait(
        lambda: [e for e in cluster.hosts[old].journal_entries("-u", UNIT, "ZKLEADER_EVENT=session_released")
                 if e.get("ZKLEADER_SESSION") == session], 5, f"{old}'s restarted daemon closed {session}")
    t_released = int(released[-1]["__REALTIME_TIMESTAMP"]) / 1e6
    print(f"watchdog: {old}'s session closed {t_released - t_watchdog:.2f}s after the watchdog's kill; "
          f"{new}'s job started {t_start - t_stop:.2f}s after the SIGSTOP")
    assert t_watchdog < t_released < t_start
    assert t_start - t_watchdog < 1.5, cluster.diagnostics()
    cluster.wait(lambda: [e for e in cluster.leader_acquired(new) if e.get("ZKLEADER_TOKEN") == str(token)],
                 5, f"{new}'s journal has leader_acquired with token {token}")
    # Restart=on-failure brought the killed daemon back as a candidate
    cluster.wait(lambda: int(cluster.state(old)["NRestarts"]) > restarts
                 and cluster.state(old)["ActiveState"] == "active", 15, f"{old} restarted after the watchdog kill")
    assert not cluster.overlaps(), cluster.diagnostics()


def test_bad_config_fails_once_with_status_78(cluster: Cluster):
    name = HOSTS[0]
    h = cluster.hosts[name]
    h.write_file("/etc/zkleader/bad.yaml", "zookeeper:\n  hosts: [\njob: {}\n")
    r = h.systemctl("start", "zkleader@bad.service", timeout=30)
    assert r.returncode != 0
    time.sleep(4)  # many times RestartSec: a restart loop would show by now
    state = h.show("zkleader@bad.service", "ActiveState", "Result", "ExecMainStatus", "NRestarts")
    assert state == {"ActiveState": "failed", "Result": "exit-code", "ExecMainStatus": "78", "NRestarts": "0"}, state
    log = h.journalctl("-u", "zkleader@bad.service", "-o", "cat").stdout
    assert "/etc/zkleader/bad.yaml" in log, log
    assert log.count("Main process exited") == 1, log
    h.systemctl("reset-failed", "zkleader@bad.service")
    # the election on this host was not disturbed
    assert cluster.state(name)["ActiveState"] == "active"
