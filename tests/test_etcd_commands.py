"""The operator commands on etcd (issue 17): `status --json`, `resign` (plain and --to),
`drain`/`undrain`, `freeze`/`thaw`, run by the CLI against a real 3-member etcd
(zkleader.testing.etcdcluster) while real daemons elect (zkleader.testing.daemons),
every job the flock overlap detector. What the commands show is checked against etcd's
own keys (token = create revision, session = lease id). No overlap ever; fencing
tokens only grow. Last, the commands with TLS client certificates and a password, and
their exit statuses when etcd refuses."""

from __future__ import annotations

import json
import os
import signal
import time
from pathlib import Path
from typing import Any

import pyetcd  # type: ignore[import-untyped]
import pytest
import yaml
from test_drain import cli, status_json, tokens_only_grow
# pki and secure_etcd are fixtures: a 1-member etcd with TLS client certificates and auth.
from test_etcd_security import PASSWORD, PREFIX, pki, secure_etcd  # noqa: F401

from zkleader.core import exitcodes
from zkleader.testing.daemons import wait_for
from zkleader.testing.etcdcluster import EtcdCluster

pytestmark = pytest.mark.etcd

#: The daemons' lease TTL (T): the shortest the loader accepts with stop_timeout 0.5 s.
TTL = 4


def three(etcd: EtcdCluster, daemon_group, priorities: tuple[int, int, int] = (0, 0, 0)) -> Any:
    """Daemons a, b, c (with these priorities) on a fresh election; a leads."""
    election = f"/zkleader-cmd/{os.getpid()}-{time.monotonic_ns() % 10**9}"
    group = daemon_group(",".join(etcd.endpoints), election, stop_timeout=0.5, etcd_lease_ttl=TTL)
    for name, priority in zip("abc", priorities):
        group.add(name, sections={"election": {"path": election, "candidate": name, "priority": priority}})
        group.daemons[name].wait_event("joined", 30)
        if name == "a":
            group.wait_starts(1, 30)
    return group


def keys(etcd: EtcdCluster, election: str) -> list[Any]:
    """The election's candidacy keys as etcd holds them, oldest first."""
    host, port = etcd.addresses[0]
    client = pyetcd.client(host=host, port=port, timeout=5)
    try:
        answer = client.get_prefix_response(election + "/", keys_only=True, sort_target="create",
                                            sort_order="ascend")
        return list(answer.kvs)
    finally:
        client.close()


def config_of(group, name: str) -> Path:
    return group.daemons[name].config_path


def test_status_shows_the_queue_with_priorities_and_resign_to_the_last_hands_over(etcd, daemon_group) -> None:
    group = three(etcd, daemon_group, priorities=(0, 2, 1))
    config = config_of(group, "b")
    wait_for(lambda: len(status_json(config)["queue"]) == 3, 10, "3 queued")
    document = status_json(config)
    assert document["schema"] == 1 and document["zookeeper"] == ",".join(etcd.endpoints)
    assert document["election"] == group.election
    queue = document["queue"]
    assert [(c["candidate"], c["priority"], c["position"]) for c in queue] == [("a", 0, 0), ("b", 2, 1), ("c", 1, 2)]
    assert document["leader"]["candidate"] == "a" and document["leader_since"]
    assert [c["this_host"] for c in queue] == [False, True, False]
    held = keys(etcd, group.election)
    assert [c["token"] for c in queue] == [kv.create_revision for kv in held]  # token = create revision
    assert [c["session"] for c in queue] == [f"0x{kv.lease:x}" for kv in held]  # session = lease id
    assert all(c["ephemeral"] and c["pid"] == group.daemons[c["candidate"]].pid for c in queue)
    assert all(0 <= c["age_seconds"] < 120 for c in queue)
    assert (document["drained"], document["frozen"], document["handover"], document["ignored"]) == ([], None, None, [])
    text = cli("status", "-c", str(config))
    assert text.returncode == exitcodes.OK
    assert text.stdout.splitlines()[0] == f"election  {group.election}  (etcd {','.join(etcd.endpoints)})"
    assert f"leader    a on {queue[0]['host']} (pid {queue[0]['pid']})" in text.stdout

    refused = cli("resign", "-c", str(config), "--to", "nobody-such")
    assert refused.returncode == exitcodes.NOT_FOUND and "is not in the queue" in refused.stderr
    done = cli("resign", "-c", str(config), "--to", "c", "--wait", "--timeout", "20")
    assert done.returncode == exitcodes.OK, done.stdout + done.stderr
    assert "asked a on" in done.stdout and "c on" in done.stdout and "leads now" in done.stdout
    starts = group.wait_starts(2, 10)
    assert [s["candidate"] for s in starts] == ["a", "c"]
    stop = group.records("stop")[0]
    assert stop["candidate"] == "a" and stop["t"] <= starts[1]["t"]  # a's job stopped before c's started
    after = status_json(config)
    assert after["leader"]["candidate"] == "c" and after["handover"] is None
    assert after["leader"]["token"] == starts[1]["token"]

    # A plain resign on the leader's own host: the next in line takes over.
    done = cli("resign", "-c", str(config_of(group, "c")), "--wait", "--timeout", "20")
    assert done.returncode == exitcodes.OK, done.stdout + done.stderr
    assert group.wait_starts(3, 10)[2]["candidate"] != "c"
    assert group.overlaps() == []
    tokens_only_grow(group)


def test_drain_and_undrain_the_leader(etcd, daemon_group) -> None:
    group = three(etcd, daemon_group)
    config = config_of(group, "a")
    done = cli("drain", "-c", str(config), "--wait", "--timeout", "20")
    assert done.returncode == exitcodes.OK, done.stdout + done.stderr
    assert done.stdout.splitlines() == [f"drained a in {group.election}", "a is out of the queue"]
    group.daemons["a"].wait_event("drained", 10)
    starts = group.wait_starts(2, 10)
    assert [s["candidate"] for s in starts] == ["a", "b"]
    assert group.records("stop")[0]["t"] <= starts[1]["t"]
    document = status_json(config)
    assert [c["candidate"] for c in document["queue"]] == ["b", "c"] and document["drained"] == ["a"]
    assert cli("drain", "-c", str(config)).stdout.startswith("a is already drained")

    done = cli("undrain", "-c", str(config), "--wait", "--timeout", "20")
    assert done.returncode == exitcodes.OK, done.stdout + done.stderr
    document = status_json(config)
    assert [c["candidate"] for c in document["queue"]] == ["b", "c", "a"] and document["drained"] == []
    assert cli("undrain", "-c", str(config)).stdout.startswith("a is not drained")
    assert len(group.records("start")) == 2 and group.leaders() == ["b"]
    assert group.overlaps() == []
    tokens_only_grow(group)


def test_freeze_outlives_a_kill_9_of_the_leader_and_thaw_elects_one(etcd, daemon_group) -> None:
    group = three(etcd, daemon_group)
    config = config_of(group, "c")
    done = cli("freeze", "-c", str(config))
    assert done.returncode == exitcodes.OK and done.stdout.startswith(f"froze {group.election}: a"), done.stdout
    group.daemons["a"].wait_event("frozen", 10)
    frozen = status_json(config)["frozen"]
    assert frozen["by"] and frozen["since"] != "unknown"
    assert cli("freeze", "-c", str(config)).stdout.endswith("is already frozen; nothing to do\n")
    to = cli("resign", "-c", str(config), "--to", "b")
    assert to.returncode == exitcodes.TIMEOUT and "frozen" in to.stderr

    group.signal("a", signal.SIGKILL)
    # The guardian kills the job, then revokes a's lease: its key goes at once.
    wait_for(lambda: "a" not in [c["candidate"] for c in status_json(config)["queue"]], TTL + 2, "a's key gone")
    group.daemons["b"].wait_event("frozen", 10)
    time.sleep(2 * TTL)
    assert len(group.records("start")) == 1, "somebody took over while frozen"
    document = status_json(config)
    assert document["leader"]["candidate"] == "b" and document["leader_since"] is None
    assert "takes over at `zkleader thaw`" in cli("status", "-c", str(config)).stdout

    assert cli("thaw", "-c", str(config)).stdout.startswith("thawed")
    starts = group.wait_starts(2, 10)
    assert starts[-1]["candidate"] == "b"
    time.sleep(1.0)
    assert len(group.records("start")) == 2 and group.leaders() == ["b"]
    assert status_json(config)["frozen"] is None
    assert json.loads(cli("status", "-c", str(config), "--json").stdout)["leader"]["candidate"] == "b"
    assert group.overlaps() == []
    tokens_only_grow(group)


def test_the_commands_use_tls_and_the_password_and_a_refusal_exits_77(
        secure_etcd, pki, tmp_path: Path) -> None:  # noqa: F811 (the imported fixtures)
    secret = tmp_path / "password"
    secret.write_text(PASSWORD + "\n")

    def config(election: str, password_file: Path = secret) -> str:
        path = tmp_path / f"{len(list(tmp_path.iterdir()))}.yaml"
        path.write_text(yaml.safe_dump({
            "etcd": {"endpoints": secure_etcd.endpoints, "lease_ttl": TTL,
                     "tls": {"ca": pki.ca, "cert": pki.client_cert, "key": pki.client_key},
                     "auth": {"username": "zkl", "password_file": str(password_file)}},
            "election": {"path": election, "candidate": "me"},
            "job": {"command": ["true"], "stop_timeout": 0.5}}))
        return str(path)

    allowed = config(f"{PREFIX}cmd")
    assert cli("freeze", "-c", allowed).returncode == exitcodes.OK
    done = cli("status", "-c", allowed, "--json")
    assert done.returncode == exitcodes.NOT_FOUND, done.stderr  # nobody queued
    assert json.loads(done.stdout)["frozen"]["by"]
    assert cli("thaw", "-c", allowed).stdout.startswith("thawed")

    wrong = tmp_path / "wrong"
    wrong.write_text("not-the-password\n")
    done = cli("status", "-c", config(f"{PREFIX}cmd", wrong))
    assert done.returncode == exitcodes.AUTH_FAILED and len(done.stderr.splitlines()) == 1, done.stderr
    assert done.stderr.startswith("zkleader: etcd at ") and "refused user zkl" in done.stderr
    assert "not-the-password" not in done.stderr

    # The role may not touch this prefix: etcd answers, and says no.
    done = cli("drain", "-c", config("/elsewhere/cmd"))
    assert done.returncode == exitcodes.AUTH_FAILED and len(done.stderr.splitlines()) == 1, done.stderr
    assert "etcd refused user zkl writing /elsewhere/cmd-drained/me (etcdserver: permission denied)" in done.stderr
