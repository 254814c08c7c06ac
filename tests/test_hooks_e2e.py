"""Transition hooks end to end: real daemons, a real ZooKeeper, hooks writing to one
shared file. Shows on_leader, on_lost, on_follower and on_stop firing in order on each
host across a planned handover, and the old leader's on_lost before the new leader's
on_leader; then the README's worked example, a virtual IP that follows the leader
between two network namespaces."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import time
from pathlib import Path

import pytest

from zkleader.core import exitcodes
from zkleader.testing.daemons import wait_for

pytestmark = pytest.mark.zookeeper


def hooks_section(path: Path) -> dict[str, object]:
    line = f'echo "$ZKLEADER_CANDIDATE $ZKLEADER_HOOK $ZKLEADER_FROM>$ZKLEADER_TO $ZKLEADER_FENCING_TOKEN|$ZKLEADER_REASON" >> {path}'
    return {"hooks": {"on_leader": line, "on_follower": line, "on_lost": line, "on_stop": line, "timeout": "5s"}}


def test_hooks_fire_in_order_across_a_handover(healthy_zk_server, election_path, daemon_group, tmp_path) -> None:
    out = tmp_path / "hooks.log"
    group = daemon_group(healthy_zk_server.hosts, election_path)
    group.add("a", sections=hooks_section(out))
    (first,) = group.wait_starts(1, 30)
    assert first["candidate"] == "a"
    group.add("b", sections=hooks_section(out)).wait_event("following", 30)

    def lines() -> list[str]:
        return out.read_text().splitlines() if out.exists() else []

    wait_for(lambda: len(lines()) >= 2 and lines(), 10, "on_leader of a, on_follower of b")
    group.signal("a", signal.SIGUSR1)  # resign: a hands over to b and queues again behind it
    wait_for(lambda: len(lines()) >= 5 and lines(), 15, "a's on_lost and on_follower, b's on_leader")
    group.signal("b", signal.SIGTERM)  # b stops: a leads again
    assert group.wait_exit("b") == exitcodes.OK
    wait_for(lambda: len(lines()) >= 8 and lines(), 15, "b's on_lost and on_stop, a's on_leader")

    seen = lines()
    a = [line.split(" ", 2)[1:] for line in seen if line.startswith("a ")]
    b = [line.split(" ", 2)[1:] for line in seen if line.startswith("b ")]
    assert [h for h, _ in a] == ["on_leader", "on_lost", "on_follower", "on_leader"], seen
    assert [h for h, _ in b] == ["on_follower", "on_leader", "on_lost", "on_stop"], seen
    assert a[0][1].startswith("none>leader ") and a[1][1].startswith("leader>none ")
    assert a[1][1].endswith("|resign requested") and b[2][1].endswith("|shutdown (SIGTERM)")
    assert b[3][1].startswith("none>stopped ")
    # Tokens: each leadership's own, growing.
    tokens = [int(rest.split(" ", 1)[1].split("|")[0]) for rest in (a[0][1], b[1][1], a[3][1])]
    assert tokens == sorted(tokens) and len(set(tokens)) == 3
    # Across hosts: the old leader's on_lost ran before the new leader's on_leader.
    assert seen.index(f"a {a[1][0]} {a[1][1]}") < seen.index(f"b {b[1][0]} {b[1][1]}")
    assert seen.index(f"b {b[2][0]} {b[2][1]}") < seen.index(f"a {a[3][0]} {a[3][1]}")
    assert group.overlaps() == []


VIP = "192.0.2.10/32"


def _ip(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(["ip", *args], capture_output=True, text=True, check=False)


@pytest.fixture
def namespaces():
    """Two network namespaces, each with an eth0 (one end of a veth pair, up): two
    "hosts" whose addresses a hook can move. Skips without root or ip netns."""
    if os.geteuid() != 0 or shutil.which("ip") is None:
        pytest.skip("needs root and iproute2")
    names = [f"zkl-{os.getpid()}-{host}" for host in ("a", "b")]
    made = []
    try:
        for name in names:
            if _ip("netns", "add", name).returncode != 0:
                pytest.skip("ip netns add failed")
            made.append(name)
            for step in (("link", "add", "eth0", "type", "veth", "peer", "name", "peer0"),
                         ("link", "set", "eth0", "up"), ("link", "set", "peer0", "up")):
                assert _ip("-n", name, *step).returncode == 0
        yield dict(zip(("a", "b"), names))
    finally:
        for name in made:
            _ip("netns", "del", name)


def vip_hooks(netns: str) -> dict[str, object]:
    """The README's vip script, inlined, with `ip -n` standing for "on this host"."""
    up = f"ip -n {netns} addr replace {VIP} dev eth0"
    down = f"ip -n {netns} addr del {VIP} dev eth0 2>/dev/null || true"
    return {"hooks": {"on_leader": up, "on_follower": down, "on_lost": down, "on_stop": down, "timeout": "5s"}}


def holders(netns: dict[str, str]) -> list[str]:
    return [host for host, name in netns.items() if VIP.split("/")[0] in _ip("-n", name, "-o", "addr", "show", "dev", "eth0").stdout]


def test_a_virtual_ip_follows_the_leader_between_network_namespaces(healthy_zk_server, election_path, daemon_group,
                                                                     namespaces) -> None:
    group = daemon_group(healthy_zk_server.hosts, election_path)
    group.add("a", sections=vip_hooks(namespaces["a"]))
    group.wait_starts(1, 30)
    group.add("b", sections=vip_hooks(namespaces["b"])).wait_event("following", 30)
    wait_for(lambda: holders(namespaces) == ["a"], 10, "the VIP on a")
    group.signal("a", signal.SIGUSR1)  # planned handover
    wait_for(lambda: holders(namespaces) == ["b"], 10, "the VIP moved to b")
    group.signal("b", signal.SIGTERM)
    assert group.wait_exit("b") == exitcodes.OK
    wait_for(lambda: holders(namespaces) == ["a"], 10, "the VIP back on a")
    assert group.overlaps() == []


def test_before_lead_vetoes_and_the_next_candidate_leads(healthy_zk_server, election_path, daemon_group, tmp_path) -> None:
    out = tmp_path / "hooks.log"
    veto = {"before_lead": f'echo "$ZKLEADER_CANDIDATE before_lead" >> {out}; echo "replica 40 s behind"; exit 1',
            "timeout": "0.5s"}  # T = 2 s leaves a new leader 0.77 s for it
    passes = {"before_lead": f'echo "$ZKLEADER_CANDIDATE before_lead" >> {out}', "timeout": "0.5s"}
    group = daemon_group(healthy_zk_server.hosts, election_path)
    group.add("a", sections={"hooks": veto})
    event = group.daemons["a"].wait_event("before_lead_vetoed", 30)
    first_veto = time.monotonic()
    assert event["detail"] == "exit 1: replica 40 s behind"
    group.add("b", sections={"hooks": passes})
    (start,) = group.wait_starts(1, 30)
    assert start["candidate"] == "b"
    assert group.records("start") == [start] and group.overlaps() == []
    # a queues again no sooner than a second after each veto: no busy loop while alone.
    vetoes = group.daemons["a"].events("before_lead_vetoed")
    assert len(vetoes) <= 2 + (time.monotonic() - first_veto) / 1.0, vetoes
    assert "b before_lead" in out.read_text().splitlines()
