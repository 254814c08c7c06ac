"""Control over who leads (core/preference.py), on a real 3-server ensemble with real
daemons: a preferred host returning takes over once, after preempt_after; a handover
to a named host at the back of a queue of 20; a freeze that outlives a kill -9 of the
leader, then a thaw. Zero overlaps and growing fencing tokens throughout."""

from __future__ import annotations

import json
import signal
import time
from typing import Any

import pytest
from test_drain import cli, status_json, tokens_only_grow

from zkleader.core import exitcodes
from zkleader.testing.daemons import wait_for

pytestmark = pytest.mark.zookeeper

T = 2.0  # the group's session timeout


def election(group, name: str, **keys: Any) -> dict[str, Any]:
    return {"election": {"path": group.election, "candidate": name, **keys}}


def starts_of(group, name: str) -> list[dict[str, Any]]:
    return [s for s in group.records("start") if s["candidate"] == name]


def test_a_preferred_host_returning_takes_over_exactly_once_within_preempt_after(
        healthy_ensemble, election_path, daemon_group) -> None:
    preempt_after = 1.5
    group = daemon_group(healthy_ensemble.hosts, election_path, session_timeout=T)
    for name in ("a", "b"):
        group.add(name, sections=election(group, name, preempt_after=preempt_after)).wait_event("joined", 30)
    group.wait_starts(1, 30)
    preferred = election(group, "p", priority=5, preempt_after=preempt_after)

    for round_ in range(2):
        joined_at = time.monotonic()
        group.add("p", sections=preferred) if round_ == 0 else group.start("p")
        starts = group.wait_starts(2 + 2 * round_, 20)
        took = time.monotonic() - joined_at
        assert starts[-1]["candidate"] == "p"
        # Joining, the poke, the wait, the old job's stop (0.5 s at most) and the takeover.
        assert preempt_after <= took < preempt_after + 6.0, took
        leader_stop = [s for s in group.records("stop") if s["candidate"] != "p"][-1]
        assert leader_stop["t"] <= starts[-1]["t"]  # stopped before p started
        time.sleep(preempt_after + 1.0)
        assert len(starts_of(group, "p")) == round_ + 1  # exactly once: nothing bounces
        assert group.leaders() == ["p"]
        # p dies: a follower of priority 0 takes over; p comes back in the next round.
        group.signal("p", signal.SIGKILL)
        group.wait_starts(3 + 2 * round_, 20)
    assert group.overlaps() == []
    tokens_only_grow(group)


def test_a_host_that_flaps_faster_than_preempt_after_never_takes_over(
        healthy_ensemble, election_path, daemon_group) -> None:
    group = daemon_group(healthy_ensemble.hosts, election_path, session_timeout=T)
    group.add("a", sections=election(group, "a", preempt_after=3.0)).wait_event("joined", 30)
    group.wait_starts(1, 30)
    flapper = group.add("p", start=False, sections=election(group, "p", priority=9, preempt_after=3.0))
    for _ in range(3):
        group.start("p")
        flapper.wait_event("preempt_poke", 15, count=_ + 1)
        time.sleep(1.0)
        group.signal("p", signal.SIGTERM)
        group.wait_exit("p")
    group.daemons["a"].wait_event("preempt_cancelled", 10)
    assert starts_of(group, "p") == [] and group.leaders() == ["a"]
    assert group.overlaps() == []


def test_a_handover_to_a_named_host_at_the_back_of_a_queue_of_20(
        healthy_ensemble, election_path, daemon_group) -> None:
    group = daemon_group(healthy_ensemble.hosts, election_path, session_timeout=T)
    names = [f"d{i:02}" for i in range(20)]
    for name in names:
        group.add(name)
        group.daemons[name].wait_event("joined", 60)
    (first,) = group.wait_starts(1, 30)
    config = group.daemons[names[0]].config_path
    wait_for(lambda: len(status_json(config)["queue"]) == 20, 30, "20 queued")
    target = status_json(config)["queue"][-1]["candidate"]

    asked = time.monotonic()
    done = cli("resign", "-c", str(config), "--to", target, "--wait", "--timeout", "30")
    assert done.returncode == 0, done.stdout + done.stderr
    assert f"{target} on" in done.stdout and "leads now" in done.stdout
    starts = group.wait_starts(2, 10)
    print(f"resign --to the 20th of 20: {time.monotonic() - asked:.2f}s to the CLI's confirmation")
    assert starts[-1]["candidate"] == target
    assert group.records("stop")[0]["candidate"] == first["candidate"]
    assert group.records("stop")[0]["t"] <= starts[-1]["t"]
    document = status_json(config)
    assert document["leader"]["candidate"] == target and document["handover"] is None
    # The 18 candidates between went to the back, behind the old leader's new node.
    assert len(document["queue"]) == 20
    assert group.daemons[names[1]].events("node_vanished")
    assert group.overlaps() == []
    tokens_only_grow(group)

    refused = cli("resign", "-c", str(config), "--to", "nobody-such")
    assert refused.returncode == exitcodes.NOT_FOUND and "is not in the queue" in refused.stderr


def test_freeze_outlives_a_kill_9_of_the_leader_and_thaw_elects_one(
        healthy_ensemble, election_path, daemon_group) -> None:
    group = daemon_group(healthy_ensemble.hosts, election_path, session_timeout=T)
    for name in ("a", "b", "c"):
        group.add(name).wait_event("joined", 30)
    (first,) = group.wait_starts(1, 30)
    leader = first["candidate"]
    config = group.daemons["c"].config_path

    done = cli("freeze", "-c", str(config))
    assert done.returncode == 0 and done.stdout.startswith(f"froze {election_path}: {leader}"), done.stdout
    group.daemons[leader].wait_event("frozen", 10)
    document = status_json(config)
    assert document["frozen"]["by"] and document["frozen"]["since"]
    assert "frozen    since" in cli("status", "-c", str(config)).stdout
    assert cli("freeze", "-c", str(config)).stdout.endswith("is already frozen; nothing to do\n")
    follower = next(n for n in ("a", "b", "c") if n != leader)
    to = cli("resign", "-c", str(config), "--to", follower)
    assert to.returncode == exitcodes.TIMEOUT and "frozen" in to.stderr

    # The leader keeps its job through a resign request; then it dies, and with it its job.
    group.signal(leader, signal.SIGUSR1)
    group.daemons[leader].wait_event("resign_refused", 10)
    group.signal(leader, signal.SIGKILL)
    # Its guardian kills the job, then releases the session: the node goes at once.
    wait_for(lambda: leader not in [c["candidate"] for c in status_json(config)["queue"]], 3 * T, "the node gone")
    nxt = [c["candidate"] for c in status_json(config)["queue"]]
    holder = group.daemons[[c["candidate"] for c in status_json(config)["queue"]][0]]
    holder.wait_event("frozen", 10)
    time.sleep(2 * T)
    assert len(group.records("start")) == 1, "somebody took over while frozen"
    assert holder.events("frozen")[-1]["by"] == document["frozen"]["by"]

    thawed_at = time.monotonic()
    assert cli("thaw", "-c", str(config)).stdout.startswith("thawed")
    starts = group.wait_starts(2, 10)
    print(f"thaw to the next job: {time.monotonic() - thawed_at:.2f}s; queue was {nxt}")
    assert starts[-1]["candidate"] == holder.name
    time.sleep(1.0)
    assert len(group.records("start")) == 2 and group.overlaps() == []
    assert status_json(config)["frozen"] is None
    tokens_only_grow(group)
    assert json.loads(json.dumps(status_json(config)))["leader"]["candidate"] == holder.name
