"""Operator experience against a real ZooKeeper: status, resign, reload, health gate, metrics."""

from __future__ import annotations

import json
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest
import yaml
from prometheus_client.parser import text_string_to_metric_families

from zkleader.core import exitcodes
from zkleader.testing.daemons import wait_for
from zkleader.testing.zkserver import free_port

pytestmark = pytest.mark.zookeeper


def cli(*args: str, timeout: float = 60) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "zkleader", *args], capture_output=True, text=True, timeout=timeout)


def status_json(config: Path) -> dict:
    done = cli("status", "-c", str(config), "--json")
    assert done.returncode in (0, exitcodes.NOT_FOUND), done.stderr
    return json.loads(done.stdout)


def three(group) -> None:
    for name in ("a", "b", "c"):
        group.add(name).wait_event("joined", 30)
    group.wait_starts(1, 30)


def test_status_shows_leader_queue_and_this_host(healthy_zk_server, election_path, daemon_group) -> None:
    group = daemon_group(healthy_zk_server.hosts, election_path)
    three(group)
    wait_for(lambda: status_json(group.daemons["b"].config_path)["leader_since"], 10, "the leader to publish itself")
    document = status_json(group.daemons["b"].config_path)
    assert document["schema"] == 1 and document["election"] == election_path
    assert [c["candidate"] for c in document["queue"]] == ["a", "b", "c"]
    assert [c["position"] for c in document["queue"]] == [0, 1, 2]
    assert [c["this_host"] for c in document["queue"]] == [False, True, False]
    leader = document["leader"]
    assert leader["candidate"] == "a" and leader["host"] == socket.gethostname()
    assert leader["pid"] == group.daemons["a"].pid
    assert leader["token"] == group.records("start")[0]["token"]
    assert document["claim"] == {"node": leader["node"], "session": leader["session"], "held_by_leader": True}
    text = cli("status", "-c", str(group.daemons["b"].config_path))
    assert text.returncode == 0
    assert "leader    a on" in text.stdout and "<- this host" in text.stdout and "waiting" not in text.stdout


def test_a_claim_held_by_another_session_keeps_the_first_in_line_waiting(healthy_zk_server, election_path,
                                                                        daemon_group) -> None:
    """core/claim.py end to end: another session holds the leader's claim (here a test
    client's; in production a leader whose node an operator deleted while its job may
    still run). The first in line waits, says so in the journal, in status and in its
    STATUS= line, and leads the moment that session ends."""
    from kazoo.client import KazooClient

    other = KazooClient(hosts=healthy_zk_server.hosts)
    other.start(timeout=10)
    try:
        other.create(f"{election_path}-leader", b"zkl-gone-0000000007", ephemeral=True, makepath=True)
        owner = f"0x{other.client_id[0]:x}"
        group = daemon_group(healthy_zk_server.hosts, election_path)
        a = group.add("a")
        assert a.wait_event("previous_leader_holds", 30)["owner"] == owner
        document = status_json(a.config_path)
        assert document["claim"] == {"node": "zkl-gone-0000000007", "session": owner, "held_by_leader": False}
        assert f"waiting   the previous leader's session {owner}" in cli("status", "-c", str(a.config_path)).stdout
        time.sleep(1.0)
        assert group.records("start") == [], "a job started while another session held the claim"
    finally:
        other.stop()
        other.close()
    a.wait_event("previous_leader_released", 30)
    (start,) = group.wait_starts(1, 30)
    assert start["candidate"] == "a"


def test_status_without_leader_and_without_zookeeper(healthy_zk_server, election_path, tmp_path) -> None:
    config = tmp_path / "c.yaml"
    base = {"election": {"path": election_path}, "job": {"command": ["true"]}}
    config.write_text(yaml.safe_dump({**base, "zookeeper": {"hosts": healthy_zk_server.hosts}}))
    done = cli("status", "-c", str(config), "--json")
    assert done.returncode == exitcodes.NOT_FOUND
    assert json.loads(done.stdout)["leader"] is None

    config.write_text(yaml.safe_dump({**base, "zookeeper": {"hosts": f"127.0.0.1:{free_port()}"}}))
    done = cli("status", "-c", str(config))
    assert done.returncode == exitcodes.UNAVAILABLE
    assert done.stderr.startswith("zkleader: ZooKeeper at 127.0.0.1:") and "Traceback" not in done.stderr


def test_resign_moves_leadership_and_requeues_at_the_back(healthy_zk_server, election_path, daemon_group) -> None:
    group = daemon_group(healthy_zk_server.hosts, election_path)
    three(group)
    follower = cli("resign", "-c", str(group.daemons["b"].config_path))
    assert follower.returncode == 0 and "not the leader (position 1)" in follower.stdout
    done = cli("resign", "-c", str(group.daemons["a"].config_path), "--wait", "--timeout", "20")
    assert done.returncode == 0, done.stdout + done.stderr
    assert "b on" in done.stdout and "leads now" in done.stdout
    second = group.wait_starts(2, 10)[1]
    assert second["candidate"] == "b"
    wait_for(lambda: [c["candidate"] for c in status_json(group.daemons["a"].config_path)["queue"]] == ["b", "c", "a"],
             10, "a to queue again at the back")
    assert group.daemons["a"].alive()
    assert group.overlaps() == []


def test_sigusr1_resigns_too(healthy_zk_server, election_path, daemon_group) -> None:
    group = daemon_group(healthy_zk_server.hosts, election_path)
    three(group)
    group.signal("a", signal.SIGUSR1)
    assert group.wait_starts(2, 10)[1]["candidate"] == "b"
    assert group.daemons["a"].events("resigning")
    assert group.overlaps() == []


def rewrite(daemon, change) -> None:
    config = yaml.safe_load(daemon.config_path.read_text())
    change(config)
    daemon.config_path.write_text(yaml.safe_dump(config))


def test_reload_keeps_running_config_on_error_and_restarts_a_changed_job(
    healthy_zk_server, election_path, daemon_group
) -> None:
    group = daemon_group(healthy_zk_server.hosts, election_path)
    daemon = group.add("a")
    (first,) = group.wait_starts(1, 30)

    good = daemon.config_path.read_text()
    daemon.config_path.write_text(good + "job_typo: 1\n")
    group.signal("a", signal.SIGHUP)
    failed = daemon.wait_event("reload_failed", 10)
    assert "job_typo: unknown key" in failed["problems"][0]
    time.sleep(0.5)
    assert len(group.records("start")) == 1 and daemon.alive()

    daemon.config_path.write_text(good)
    rewrite(daemon, lambda c: c["job"]["environment"].update(NEW_SETTING="1"))
    group.signal("a", signal.SIGHUP)
    second = group.wait_starts(2, 10)[1]
    assert second["token"] == first["token"]  # same leadership, new job definition
    assert daemon.events("reconfigured")[0]["restart_job"] is True
    assert group.overlaps() == []


def test_reload_with_a_new_election_path_leaves_and_rejoins(healthy_zk_server, election_path, daemon_group) -> None:
    group = daemon_group(healthy_zk_server.hosts, election_path)
    daemon = group.add("a")
    group.wait_starts(1, 30)
    new_path = election_path + "-moved"
    rewrite(daemon, lambda c: c["election"].update(path=new_path))
    group.signal("a", signal.SIGHUP)
    daemon.wait_event("reopening", 10)
    acquired = daemon.wait_event("leader_acquired", 20, count=2)
    assert acquired["election"] == new_path
    assert group.wait_starts(2, 10)[1]["token"] > group.records("start")[0]["token"]
    assert group.overlaps() == []


def test_failing_health_check_withdraws_the_leader_until_it_passes(
    healthy_zk_server, election_path, daemon_group, tmp_path
) -> None:
    flag = tmp_path / "healthy"
    flag.touch()
    health = {"health": {"command": ["test", "-e", str(flag)], "interval": 0.2, "timeout": 1,
                         "failures": 2, "successes": 2}}
    group = daemon_group(healthy_zk_server.hosts, election_path)
    group.add("a", sections=health).wait_event("joined", 30)
    group.add("b").wait_event("joined", 30)
    (first,) = group.wait_starts(1, 30)
    assert first["candidate"] == "a"
    flag.unlink()
    group.daemons["a"].wait_event("health_withdrawn", 10)
    second = group.wait_starts(2, 10)[1]
    assert second["candidate"] == "b"
    time.sleep(1)
    assert all(r["candidate"] == "b" for r in group.records("start")[1:])  # never leads while unhealthy
    flag.touch()
    group.daemons["a"].wait_event("health_restored", 10)
    group.daemons["a"].wait_event("joined", 10, count=2)
    assert group.overlaps() == []


def test_unhealthy_host_never_joins(healthy_zk_server, election_path, daemon_group) -> None:
    group = daemon_group(healthy_zk_server.hosts, election_path)
    daemon = group.add("a", sections={"health": {"command": "exit 1", "interval": 0.2, "failures": 1}})
    daemon.wait_event("health_failed", 10, count=3)
    assert daemon.events("joined") == [] and group.records("start") == []


def test_metrics_are_served_and_parse(healthy_zk_server, election_path, daemon_group) -> None:
    port = free_port()
    group = daemon_group(healthy_zk_server.hosts, election_path)
    group.add("a", sections={"metrics": {"listen": f"127.0.0.1:{port}"}})
    group.wait_starts(1, 30)

    def scrape() -> dict[str, float]:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as response:
            text = response.read().decode()
        return {
            sample.name + (json.dumps(sample.labels, sort_keys=True) if sample.labels else ""): sample.value
            for family in text_string_to_metric_families(text)
            for sample in family.samples
        }

    values = wait_for(lambda: (v := scrape()).get("zkleader_job_starts_total") == 1.0 and v, 10, "a job start")
    assert values["zkleader_is_leader"] == 1.0
    assert values["zkleader_queue_position"] == 0.0
    assert values['zkleader_leader_transitions_total{"direction": "acquired"}'] == 1.0
    assert values['zkleader_zookeeper_state{"zkleader_zookeeper_state": "connected"}'] == 1.0
    assert values["zkleader_seconds_since_leadership_change"] >= 0
