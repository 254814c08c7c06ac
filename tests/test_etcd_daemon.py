"""`zkleader run` end to end on etcd (issue 17): real daemons on a real 3-member etcd
(zkleader.testing.etcdcluster), every job the flock overlap detector
(zkleader.testing.daemons). One leader among three, a SIGTERM handover, a kill -9 of
the leader whose guardian revokes the dead daemon's lease (release.py) so that a
successor follows well before the lease would expire; no overlap ever, and fencing
tokens (the leader key's create revision) only grow."""

from __future__ import annotations

import os
import signal
import time

import pyetcd  # type: ignore[import-untyped]
import pytest

from zkleader.core import exitcodes
from zkleader.testing.daemons import wait_for
from zkleader.testing.etcdcluster import EtcdCluster

pytestmark = pytest.mark.etcd

#: The daemons' lease TTL: long enough that a successor within it proves the revoke.
TTL = 4


def leader_key_revision(etcd: EtcdCluster, election: str) -> int:
    """The create revision of the lowest candidacy key: the leader's."""
    host, port = etcd.addresses[0]
    client = pyetcd.client(host=host, port=port, timeout=5)
    try:
        answer = client.get_prefix_response(election + "/", keys_only=True)
        return min(kv.create_revision for kv in answer.kvs)
    finally:
        client.close()


def test_three_daemons_elect_hand_over_and_survive_a_kill_9_on_etcd(etcd: EtcdCluster, daemon_group) -> None:
    election = f"/zkleader-e2e/{os.getpid()}-{time.monotonic_ns() % 10**9}"
    group = daemon_group(",".join(etcd.endpoints), election, stop_timeout=0.5, etcd_lease_ttl=TTL)
    for i in range(3):
        group.add(f"d{i}")
    for daemon in group.daemons.values():
        daemon.wait_event("joined", 30)
    (first,) = group.wait_starts(1, 30)
    time.sleep(1.0)  # a second leader job, if any, would have started by now
    assert len(group.records("start")) == 1
    assert group.leaders() == [first["candidate"]]
    assert first["token"] == leader_key_revision(etcd, election)  # the fencing token

    # SIGTERM: the leader stops its job, deletes its key, revokes its lease; the next
    # in line takes over at once.
    sent = group.signal(first["candidate"], signal.SIGTERM)
    assert group.wait_exit(first["candidate"]) == exitcodes.OK
    second = group.wait_starts(2, 5)[1]
    assert second["candidate"] != first["candidate"]
    stop = next(r for r in group.records("stop") if r["pid"] == first["pid"])
    assert stop["t"] < second["t"]
    handover = second["t"] - sent

    # kill -9: the guardian kills the job's tree, then revokes the lease by its id.
    killed = second["candidate"]
    killed_at = group.signal(killed, signal.SIGKILL)
    wait_for(group.lock_is_free, 1.0, "the old job's whole process tree to die")
    third = group.wait_starts(3, TTL + 5)[2]
    failover = third["t"] - killed_at
    released = group.daemons[killed].wait_event("session_released", 5)
    assert released["reason"] == "the daemon died; its job is reaped"
    assert third["candidate"] not in (first["candidate"], killed)
    # The lease's last keep-alive was at most TTL/3 before the kill, so expiry alone
    # would take TTL - TTL/3 at the least: a successor sooner proves the revoke.
    assert failover < TTL * 2 / 3, f"successor after {failover:.2f}s"

    tokens = [r["token"] for r in group.records("start")]
    assert tokens == sorted(set(tokens)), tokens
    assert tokens[-1] == leader_key_revision(etcd, election)
    assert group.overlaps() == []
    print(f"SIGTERM handover {handover * 1000:.0f} ms; kill -9 failover {failover * 1000:.0f} ms (TTL {TTL}s)")
