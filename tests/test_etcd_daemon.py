"""`zkleader run` end to end on etcd (issue 17): real daemons on a real 3-member etcd
(zkleader.testing.etcdcluster), every job the flock overlap detector
(zkleader.testing.daemons). One leader among three, a SIGTERM handover, a kill -9 of
the leader whose guardian revokes the dead daemon's lease (release.py) so that a
successor follows well before the lease would expire; no overlap ever, and fencing
tokens (the leader key's create revision) only grow."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import time

import pyetcd  # type: ignore[import-untyped]
import pytest
import yaml

from zkleader.core import exitcodes
from zkleader.testing.daemons import REPO, guardian_of, wait_for
from zkleader.testing.etcdcluster import EtcdCluster
from zkleader.testing.notifysocket import bound

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


#: What the daemon systemd restarts runs before it connects (cli.py), with the dead
#: run's descriptor at fd 3 as systemd passes it (LISTEN_FDS). The cgroup check is
#: passed as empty here: it is tested on its own (tests/test_fdstore.py) and under a
#: real systemd (tests/systemd/test_e2e.py); this process shares the test's cgroup.
RESTARTED = r"""
import os, sys
from zkleader import config, fdstore, logs
os.dup2(int(sys.argv[2]), 3)
os.set_inheritable(3, True)
os.environ.update(LISTEN_PID=str(os.getpid()), LISTEN_FDS="1", LISTEN_FDNAMES=fdstore.FDNAME)
loaded = config.load(sys.argv[1])
logs.configure("info", "json", logs.context(loaded))
fdstore.cgroup_others = lambda: []
fdstore.release_predecessor(loaded)
"""


def test_the_daemon_systemd_restarts_revokes_the_lease_its_dead_predecessor_left(
        etcd: EtcdCluster, daemon_group, monkeypatch) -> None:
    """fdstore.py on etcd: under systemd, a kill -9 of the daemon also kills its guardian
    (KillMode=mixed), so nobody revokes the lease, and the next host would wait its TTL.
    The daemon hands its lease to systemd's fd store (here a bound NOTIFY_SOCKET stands
    in for systemd); the daemon systemd restarts revokes it from there, and the next
    candidate takes over at once."""
    ttl = 10  # long enough that a takeover within a few seconds proves the revoke
    election = f"/zkleader-fdstore/{os.getpid()}-{time.monotonic_ns() % 10**9}"
    group = daemon_group(",".join(etcd.endpoints), election, stop_timeout=0.5, etcd_lease_ttl=ttl)
    with bound("zkf-") as (path, systemd):
        monkeypatch.setenv("NOTIFY_SOCKET", path)
        dead = group.add("d0")
        lease = dead.wait_event("connected", 30)["session"]
        stored = None
        while stored is None:  # READY, STATUS, ... and the lease's descriptor among them
            lines, fds = systemd.next_with_fds(timeout=10)
            if "FDSTORE=1" in lines:
                (stored,) = fds
        try:  # a failure must not leave the stored copy open for later tests to find
            payload = json.loads(os.pread(stored, 4096, 0))
            assert payload["servers"] == "etcd " + ",".join(etcd.endpoints)
            assert f"0x{payload['session']}" == lease
            monkeypatch.delenv("NOTIFY_SOCKET")
            (first,) = group.wait_starts(1, 30)
            group.add("d1")
            group.daemons["d1"].wait_event("joined", 30)

            # systemd's kill of the whole unit: guardian and job die with the daemon
            guardian = guardian_of(dead.pid)
            assert guardian is not None
            killed_at = time.monotonic()
            for pid in (guardian.pid, first["pid"], dead.pid):
                with contextlib.suppress(ProcessLookupError):  # the job dies with its guardian
                    os.kill(pid, signal.SIGKILL)
            wait_for(group.lock_is_free, 1.0, "the old job to die")
            time.sleep(1.0)
            assert len(group.records("start")) == 1, "nobody may take over while the lease lives"

            restarted = subprocess.run(
                [sys.executable, "-c", RESTARTED, str(dead.config_path), str(stored)], pass_fds=(stored,),
                capture_output=True, text=True, timeout=ttl, cwd=REPO)
        finally:
            os.close(stored)
    events = [json.loads(line) for line in restarted.stdout.splitlines() + restarted.stderr.splitlines()
              if line.startswith("{")]
    assert [(e["event"], e["session"]) for e in events if e["event"].startswith("session_")] == [
        ("session_released", lease)], restarted
    second = group.wait_starts(2, 5)[1]
    assert second["candidate"] == "d1"
    assert second["t"] - killed_at < ttl * 2 / 3, f"successor after {second['t'] - killed_at:.2f}s"
    assert group.overlaps() == []


def test_a_reload_moves_the_election_from_etcd_to_zookeeper(etcd: EtcdCluster, healthy_zk_server,
                                                            kazoo_client, daemon_group) -> None:
    """SIGHUP with a ``zookeeper:`` section where ``etcd:`` was (a migration): the daemon
    leaves etcd as on any reopen (job stopped and reaped, key deleted, lease revoked)
    before it joins on ZooKeeper, so the two jobs never run at once."""
    election = f"/zkleader-move/{os.getpid()}-{time.monotonic_ns() % 10**9}"
    group = daemon_group(",".join(etcd.endpoints), election, stop_timeout=0.5, etcd_lease_ttl=TTL)
    daemon = group.add("a")
    (first,) = group.wait_starts(1, 30)
    assert first["token"] == leader_key_revision(etcd, election)
    config = yaml.safe_load(daemon.config_path.read_text())
    del config["etcd"]
    config["zookeeper"] = {"hosts": healthy_zk_server.hosts, "session_timeout": 2.0, "tick_time": 0.2}
    daemon.config_path.write_text(yaml.safe_dump(config))
    group.signal("a", signal.SIGHUP)
    daemon.wait_event("reopening", 10)
    second = group.wait_starts(2, 20)[1]
    stop = next(r for r in group.records("stop") if r["pid"] == first["pid"])
    assert stop["t"] < second["t"]
    host, port = etcd.addresses[0]
    client = pyetcd.client(host=host, port=port, timeout=5)
    try:
        assert client.get_prefix_response(election + "/", keys_only=True).kvs == []  # key and lease gone
    finally:
        client.close()
    zk = kazoo_client(healthy_zk_server.hosts)
    (node,) = zk.get_children(election)
    assert second["token"] == zk.exists(f"{election}/{node}").czxid  # the fencing token is ZooKeeper's now
    assert group.overlaps() == []
