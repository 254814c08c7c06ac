"""The core daemon end to end: real daemons, a real ZooKeeper, the flock detector."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time

import pytest

from zkleader.core import exitcodes
from zkleader.testing.daemons import wait_for
from zkleader.testing.faultproxy import CREATE_OPS

pytestmark = pytest.mark.zookeeper

T = 2.0  # session timeout of the daemons in these tests


def test_five_daemons_run_exactly_one_job(healthy_zk_server, election_path, daemon_group, kazoo_client) -> None:
    group = daemon_group(healthy_zk_server.hosts, election_path)
    for i in range(5):
        group.add(f"d{i}")
    (start,) = group.wait_starts(1, 30)
    for daemon in group.daemons.values():
        daemon.wait_event("joined", 30)
    time.sleep(T)  # a second leader job, if any, would have started by now
    assert len(group.records("start")) == 1
    assert group.leaders() == [start["candidate"]]
    followers = [d for d in group.daemons.values() if d.name != start["candidate"]]
    assert all(d.events("following") for d in followers)
    assert group.overlaps() == []

    # Each follower watches exactly its immediate predecessor and its own node (so it
    # hears at once if its node is deleted); the leader its own node and the freeze,
    # handover and preempt markers (core/preference.py). Besides, each daemon watches
    # its own drain marker, beside the election: one watch, its own.
    client = kazoo_client(healthy_zk_server.hosts)
    children = sorted(client.get_children(election_path), key=lambda n: int(n.rsplit("-", 1)[1]))
    assert len(children) == 5
    owners = {client.exists(f"{election_path}/{n}").ephemeralOwner: n for n in children}
    watches = parse_wchc(healthy_zk_server.four_letter("wchc"))
    for session, node in owners.items():
        index = children.index(node)
        expected = {f"{election_path}/{n}" for n in ({children[index - 1], node} if index else {node})}
        candidate = json.loads(client.get(f"{election_path}/{node}")[0])["candidate"]
        expected.add(f"{election_path}-drained/{candidate}")
        if not index:
            expected |= {f"{election_path}-frozen", f"{election_path}-handover", f"{election_path}-preempt"}
        assert watches.get(session) == expected, (node, watches.get(session))


def parse_wchc(text: str) -> dict[int, set[str]]:
    """ZooKeeper's `wchc`: a session id line, then its watched paths indented."""
    watches: dict[int, set[str]] = {}
    session = None
    for line in text.splitlines():
        if line.startswith("0x"):
            session = int(line.strip(), 16)
            watches[session] = set()
        elif line.strip().startswith("/") and session is not None:
            watches[session].add(line.strip())
    return watches


def test_kill_9_of_the_leader_kills_its_job_at_once_and_a_successor_follows(
    healthy_zk_server, election_path, daemon_group
) -> None:
    group = daemon_group(healthy_zk_server.hosts, election_path, job_args=("--fork",))
    for i in range(3):
        group.add(f"d{i}")
        group.daemons[f"d{i}"].wait_event("joined", 30)
    (first,) = group.wait_starts(1, 30)
    killed_at = group.signal(first["candidate"], signal.SIGKILL)
    # The guardian sees its lifeline close and kills the whole tree, forked child included.
    wait_for(group.lock_is_free, 1.0, "the old job's whole process tree to die")
    freed = time.monotonic() - killed_at
    second = group.wait_starts(2, T + 5)[1]
    assert second["candidate"] != first["candidate"]
    failover = second["t"] - killed_at
    assert failover <= T + 1.0, f"successor after {failover:.2f}s"
    assert group.overlaps() == []
    print(f"job dead {freed:.3f}s after kill -9; successor job after {failover:.3f}s (T={T}s)")


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGINT])
def test_signal_hands_over_in_well_under_a_second(healthy_zk_server, election_path, daemon_group, signum) -> None:
    group = daemon_group(healthy_zk_server.hosts, election_path)
    for i in range(3):
        group.add(f"d{i}")
        group.daemons[f"d{i}"].wait_event("joined", 30)
    (first,) = group.wait_starts(1, 30)
    sent = group.signal(first["candidate"], signum)
    assert group.wait_exit(first["candidate"]) == exitcodes.OK
    second = group.wait_starts(2, 5)[1]
    handover = second["t"] - sent
    stop = next(r for r in group.records("stop") if r["pid"] == first["pid"])
    assert stop["t"] < second["t"]
    assert second["token"] > first["token"]
    assert handover < 1.0, f"handover took {handover:.3f}s"
    events = [e["event"] for e in group.daemons[first["candidate"]].events()]
    assert events.index("job_exited") < events.index("handover") < events.index("stopped")
    assert group.overlaps() == []
    print(f"{signum.name} handover: {handover * 1000:.0f} ms")


def test_shutdown_kills_a_job_tree_that_ignores_the_stop_signal(healthy_zk_server, election_path, daemon_group) -> None:
    group = daemon_group(healthy_zk_server.hosts, election_path, job_args=("--ignore-term", "--fork"))
    group.add("a")
    group.wait_starts(1, 30)
    group.add("b").wait_event("joined", 30)
    sent = group.signal("a", signal.SIGTERM)
    assert group.wait_exit("a") == exitcodes.OK
    second = group.wait_starts(2, 5)[1]
    assert second["candidate"] == "b"
    assert group.stop_timeout <= second["t"] - sent < group.stop_timeout + 1.0
    assert "job_killed" in [e["event"] for e in group.daemons["a"].events()]
    assert group.overlaps() == []


def test_lost_reply_to_create_leaves_no_ghost_node(
    healthy_zk_server, election_path, daemon_group, fault_proxy, kazoo_client
) -> None:
    client = kazoo_client(healthy_zk_server.hosts)
    client.ensure_path(election_path)  # so the first create through the proxy is the candidate's own
    proxy = fault_proxy(healthy_zk_server)
    rule = proxy.lose_reply_to(CREATE_OPS)
    group = daemon_group(proxy.hosts, election_path)
    daemon = group.add("a")
    assert rule.wait(20), "the create request never passed the proxy"
    group.wait_starts(1, 20)
    assert daemon.events("create_recovered")
    children = client.get_children(election_path)
    assert len(children) == 1, children
    assert group.overlaps() == []


def test_on_exit_restart_backs_off_and_keeps_leading(healthy_zk_server, election_path, daemon_group) -> None:
    group = daemon_group(healthy_zk_server.hosts, election_path, job_args=("--exit-after", "0.1"))
    daemon = group.add("a")
    group.wait_starts(4, 20)
    delays = [e["delay"] for e in daemon.events("job_restart_scheduled")[:3]]
    assert delays == [0.2, 0.4, 0.8]
    assert [e["restarts"] for e in daemon.events("job_restart_scheduled")[:3]] == [1, 2, 3]
    assert len(daemon.events("leader_acquired")) == 1
    assert group.overlaps() == []


def test_on_exit_resign_moves_leadership_to_the_next_host(healthy_zk_server, election_path, daemon_group) -> None:
    # Long enough for b to queue behind a's first leadership even on a loaded machine.
    group = daemon_group(healthy_zk_server.hosts, election_path, job_args=("--exit-after", "2"),
                         job={"on_exit": "resign"})
    group.add("a").wait_event("joined", 30)
    group.add("b").wait_event("joined", 30)
    starts = group.wait_starts(3, 30)
    candidates = [s["candidate"] for s in starts[:3]]
    assert candidates in (["a", "b", "a"], ["b", "a", "b"])
    tokens = [s["token"] for s in starts]
    assert tokens == sorted(set(tokens))  # every new leadership has a larger fencing token
    assert group.overlaps() == []


def test_on_exit_exit_stops_the_daemon_with_status_3(healthy_zk_server, election_path, daemon_group) -> None:
    group = daemon_group(healthy_zk_server.hosts, election_path, job_args=("--exit-after", "0.3"),
                         job={"on_exit": "exit"})
    group.add("a")
    group.wait_starts(1, 30)
    group.add("b").wait_event("joined", 30)
    assert group.wait_exit("a") == exitcodes.JOB_EXITED
    exited = group.records("exit")[0]["t"]
    second = group.wait_starts(2, 5)[1]
    assert second["candidate"] == "b" and second["t"] - exited < 1.0
    assert group.overlaps() == []


def test_unreachable_zookeeper_is_retried_until_it_answers(
    healthy_zk_server, election_path, daemon_group, fault_proxy
) -> None:
    proxy = fault_proxy(healthy_zk_server)
    proxy.partition()
    group = daemon_group(proxy.hosts, election_path)
    daemon = group.add("a")
    daemon.wait_event("connecting", 10, count=2)
    assert group.records("start") == [] and daemon.alive()
    proxy.heal()
    group.wait_starts(1, 20)
    assert group.overlaps() == []


def test_job_environment(healthy_zk_server, election_path, daemon_group, tmp_path, monkeypatch) -> None:
    # systemd's variables are the daemon's own: the job must not inherit them.
    monkeypatch.setenv("NOTIFY_SOCKET", str(tmp_path / "no-such-socket"))
    monkeypatch.setenv("WATCHDOG_USEC", "500000")
    monkeypatch.setenv("WATCHDOG_PID", "1")  # meant for another process: the daemon ignores it
    dump = tmp_path / "env.txt"
    group = daemon_group(healthy_zk_server.hosts, election_path,
                         job={"command": f"env > {dump}.tmp && mv {dump}.tmp {dump}; exec sleep 60",
                              "environment": {"EXTRA": "yes"}})
    daemon = group.add("a")
    wait_for(dump.exists, 30, "the job to write its environment")
    variables = dict(line.split("=", 1) for line in dump.read_text().splitlines() if "=" in line)
    token = daemon.events("leader_acquired")[0]["token"]
    assert variables["ZKLEADER_FENCING_TOKEN"] == str(token)
    assert variables["ZKLEADER_ELECTION"] == election_path
    assert variables["ZKLEADER_CANDIDATE"] == "a"
    assert re.fullmatch(rf"{re.escape(election_path)}/zkl-[0-9a-f]{{32}}-\d{{10}}", variables["ZKLEADER_ZNODE"])
    assert variables["EXTRA"] == "yes"
    assert "NOTIFY_SOCKET" not in variables and "WATCHDOG_USEC" not in variables


def test_run_with_a_bad_config_exits_78_without_traceback(tmp_path) -> None:
    bad = tmp_path / "bad.yaml"
    bad.write_text("election:\n  path: /x\njob:\n  command: [a]\n  on_exit: sometimes\n")
    done = subprocess.run([sys.executable, "-m", "zkleader", "run", "-c", str(bad)], capture_output=True, text=True,
                          timeout=30)
    assert done.returncode == exitcodes.CONFIG
    assert done.stderr.strip() == f"zkleader: {bad}:5: job.on_exit: must be one of restart | resign | exit, not 'sometimes'"


def test_a_watchdog_too_long_for_the_lease_is_refused_with_78(tmp_path, monkeypatch) -> None:
    config = tmp_path / "c.yaml"
    config.write_text("zookeeper:\n  hosts: 127.0.0.1:1\n  session_timeout: 6\n  tick_time: 0.2\n"
                      "election:\n  path: /x\njob:\n  command: [sleep, '60']\n  stop_timeout: 1\nlogging:\n  format: json\n")
    monkeypatch.setenv("WATCHDOG_USEC", "4000000")  # what WatchdogSec=4s gives the daemon
    done = subprocess.run(
        # The daemon honours WATCHDOG_USEC only when WATCHDOG_PID names itself.
        [sys.executable, "-c", "import os, sys; os.environ['WATCHDOG_PID'] = str(os.getpid()); "
         "from zkleader.cli import main; sys.exit(main(['run', '-c', sys.argv[1]]))", str(config)],
        capture_output=True, text=True, timeout=30)
    assert done.returncode == exitcodes.CONFIG, done.stderr
    assert '"event": "lease_budget_impossible"' in done.stderr
