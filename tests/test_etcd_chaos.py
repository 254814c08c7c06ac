"""The seeded chaos run on etcd (issue 17), short enough for CI: random faults for about
a minute against 4 real daemons on a real 3-member etcd of this test's own whose
members reach each other through peer links (``EtcdCluster(peer_links=True)``, for the
mix's isolate_etcd_member and isolate_leaders_etcd_member; conftest's shared ``etcd``
has no such links, so that the other modules see etcd's peer traffic undelayed), each
daemon behind its own byte-forwarding proxy, lease TTL T = 4 s as in
tests/test_etcd_faults.py; then heal everything and check the invariants of
tests/test_chaos.py: zero overlaps (the flock detector), fencing tokens (create
revisions) only growing, one leader with every daemon back in the queue and every
follower following its real predecessor. The mix is zkleader.testing.chaos.FAULTS_ETCD
(what it leaves out and why: EtcdStore and FAULTS_ETCD). The long run is the CLI:
``.venv/bin/python -m zkleader.testing.chaos --backend etcd --seed S --duration SECONDS
--daemons N``. CHAOS_SEED / CHAOS_DURATION override the seed and duration here."""

from __future__ import annotations

import os
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from zkleader.testing.chaos import (
    Cluster,
    EtcdStore,
    RawFaultProxy,
    format_summary,
    run_chaos,
)
from zkleader.testing.etcdcluster import EtcdCluster
from zkleader.testing.faultproxy import FaultProxy

pytestmark = pytest.mark.etcd

SEED = int(os.environ.get("CHAOS_SEED", "22"))
DURATION = float(os.environ.get("CHAOS_DURATION", "60"))
T = 4  # the daemons' lease TTL (s)


@pytest.fixture
def isolatable_etcd(tmp_path_factory: pytest.TempPathFactory) -> Iterator[EtcdCluster]:
    """A fresh 3-member etcd with peer links, started healthy; run_chaos restores its
    members and links itself."""
    with EtcdCluster(tmp_path_factory.mktemp("etcd-chaos"), 3, peer_links=True) as cluster:
        yield cluster


def test_seeded_chaos_run_on_etcd_never_runs_two_leader_jobs(isolatable_etcd: EtcdCluster, tmp_path: Path) -> None:
    proxies: list[FaultProxy] = []

    def make_proxy(upstreams: Any, **kw: Any) -> FaultProxy:
        proxies.append(RawFaultProxy(upstreams, **kw))
        return proxies[-1]

    store = EtcdStore(isolatable_etcd)
    assert {"isolate_etcd_member", "isolate_leaders_etcd_member"} <= set(store.faults), "peer links, no isolation"
    election = f"/zkleader-chaos/ci-{os.getpid()}-{time.monotonic_ns() % 10**9}"
    cluster = Cluster(store, tmp_path, make_proxy, election=election, session_timeout=T, stop_timeout=0.5)
    try:
        result = run_chaos(cluster, SEED, DURATION, daemons=4)
        summary = format_summary(result)
        print(summary)
        assert result.problems() == [], summary  # overlaps, a token going down, a SIGTERM without exit 0
        kinds = {f.kind for f in result.faults}
        assert kinds, "no fault was injected"
        assert kinds <= set(store.faults), f"a fault outside the etcd mix: {kinds - set(store.faults)}"
    finally:
        cluster.close()
        store.close()
        for proxy in proxies:
            proxy.close()
        print(cluster.describe()[-20000:])
