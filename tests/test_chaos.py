"""A short seeded chaos run in CI: random faults for about a minute against 4 daemons
on the 3-node ensemble, then heal everything and check the invariants. The long run
is the CLI: ``.venv/bin/python -m zkleader.testing.chaos --seed S --duration SECONDS --daemons N``.
CHAOS_SEED / CHAOS_DURATION override the seed and duration here."""

from __future__ import annotations

import os

import pytest

from zkleader.testing.chaos import Cluster, format_summary, run_chaos

pytestmark = pytest.mark.zookeeper

SEED = int(os.environ.get("CHAOS_SEED", "20240611"))
DURATION = float(os.environ.get("CHAOS_DURATION", "60"))


def test_seeded_chaos_run_never_runs_two_leader_jobs(healthy_ensemble, fault_proxy, kazoo_client, election_path,
                                                     tmp_path) -> None:
    admin = kazoo_client(healthy_ensemble.hosts, timeout=10.0)
    cluster = Cluster(healthy_ensemble, tmp_path, fault_proxy, admin, election_path, session_timeout=2.0,
                      stop_timeout=0.5)
    try:
        result = run_chaos(cluster, SEED, DURATION, daemons=4)
        print(format_summary(result))
        assert result.overlaps == [], format_summary(result)
        assert result.token_problems == []
        assert result.problems() == []
        assert result.faults, "no fault was injected"
    finally:
        cluster.close()
        print(cluster.describe()[-20000:])
