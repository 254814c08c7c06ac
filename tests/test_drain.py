"""`zkleader drain` / `undrain` against a real ZooKeeper and real daemons: the drained
host leaves in order (no overlap), stays out across a restart, rejoins at the back."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from zkleader.core import exitcodes
from zkleader.testing.daemons import wait_for

pytestmark = pytest.mark.zookeeper


def cli(*args: str, timeout: float = 60) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "zkleader", *args], capture_output=True, text=True, timeout=timeout,
                          check=False)


def status_json(config: Path) -> dict:
    done = cli("status", "-c", str(config), "--json")
    assert done.returncode in (0, exitcodes.NOT_FOUND), done.stderr
    return json.loads(done.stdout)


def queue(config: Path) -> list[str]:
    return [c["candidate"] for c in status_json(config)["queue"]]


def tokens_only_grow(group) -> None:
    tokens = [r["token"] for r in group.records("start")]
    assert tokens == sorted(set(tokens)), tokens


def test_draining_the_leader_hands_over_and_undrain_rejoins_at_the_back(
        healthy_zk_server, election_path, daemon_group) -> None:
    group = daemon_group(healthy_zk_server.hosts, election_path)
    for name in ("a", "b", "c"):
        group.add(name).wait_event("joined", 30)
    group.wait_starts(1, 30)
    config = group.daemons["a"].config_path

    done = cli("drain", "-c", str(config), "--wait", "--timeout", "20")
    assert done.returncode == 0, done.stdout + done.stderr
    assert done.stdout.splitlines()[0] == f"drained a in {election_path}"
    group.daemons["a"].wait_event("drained", 10)
    starts = group.wait_starts(2, 20)
    assert [s["candidate"] for s in starts] == ["a", "b"]
    assert group.records("stop")[0]["candidate"] == "a"  # stopped before b started: no overlap
    document = status_json(config)
    assert [c["candidate"] for c in document["queue"]] == ["b", "c"] and document["drained"] == ["a"]
    assert "drained   a" in cli("status", "-c", str(config)).stdout
    assert cli("drain", "-c", str(config)).stdout.startswith("a is already drained")

    done = cli("undrain", "-c", str(config), "--wait", "--timeout", "20")
    assert done.returncode == 0, done.stdout + done.stderr
    group.daemons["a"].wait_event("undrained", 10)
    assert queue(config) == ["b", "c", "a"] and status_json(config)["drained"] == []
    assert group.overlaps() == [] and status_json(config)["leader"]["candidate"] == "b"
    tokens_only_grow(group)


def test_a_drained_daemon_restarted_stays_out_until_undrained(healthy_ensemble, election_path, daemon_group) -> None:
    """On the 3-server ensemble, as issue 15 asks of each control."""
    group = daemon_group(healthy_ensemble.hosts, election_path)
    for name in ("a", "b"):
        group.add(name).wait_event("joined", 30)
    group.wait_starts(1, 30)
    b = group.daemons["b"]
    assert cli("drain", "-c", str(b.config_path), "--wait", "--timeout", "20").returncode == 0
    wait_for(lambda: queue(b.config_path) == ["a"], 10, "b out of the queue")

    group.signal("b", signal.SIGTERM)
    assert group.wait_exit("b") == 0
    joined = len(b.events("joined"))
    group.start("b")
    b.wait_event("drained", 15, count=2)  # the new process found its marker at connect
    wait_for(lambda: group.leaders() == ["a"], 5, "a still leading")
    assert queue(b.config_path) == ["a"] and len(b.events("joined")) == joined

    group.signal("a", signal.SIGKILL)  # even the only live daemon left stays out
    wait_for(lambda: queue(b.config_path) == [], 15, "a's session to expire")
    assert group.records("start")[-1]["candidate"] == "a"

    assert cli("undrain", "-c", str(b.config_path), "--wait", "--timeout", "20").returncode == 0
    starts = group.wait_starts(2, 20)
    assert starts[-1]["candidate"] == "b"
    assert group.overlaps() == []
    tokens_only_grow(group)
