"""The Prometheus metrics (zkleader/metrics.py): the observer driven by the real core,
step by step as the loop drives it (Loop.decide), read back from its real registry;
then one real daemon pair scraped over HTTP after a handover."""

from __future__ import annotations

import dataclasses
import json
import math
import signal
import urllib.request

import pytest
from prometheus_client.parser import text_string_to_metric_families
from test_leadership import PATH, SESSION, STOP, Driver, T, _candidate, _follow

from zkleader.core import actions as act
from zkleader.core import events as ev
from zkleader.core.settings import HealthPolicy, OnExit
from zkleader.metrics import Metrics
from zkleader.testing.daemons import wait_for
from zkleader.testing.zkserver import free_port


class Metered(Driver):
    """The core's driver with the Metrics observer seeing every step, as Loop.decide
    shows it: the event, the actions, the snapshot after them, the time."""

    def __init__(self, on_exit: OnExit = OnExit.RESTART) -> None:
        super().__init__(on_exit)
        self.clock = 0.0
        self.metrics = Metrics(None, lambda: self.clock)

    def observe(self, event: ev.Event, out: list[act.Action], now: float) -> None:
        self.clock = max(self.clock, now)
        self.metrics.observe(event, out, self.view, now)

    def value(self, name: str, **labels: str) -> float | None:
        return self.metrics.registry.get_sample_value(name, labels)

    def changes(self) -> dict[tuple[str, str], float]:
        """The non-zero leadership change counters, by (change, reason)."""
        return {
            (s.labels["change"], s.labels["reason"]): s.value
            for family in self.metrics.registry.collect() if family.name == "zkleader_leadership_changes"
            for s in family.samples if s.name.endswith("_total") and s.value
        }


def _takeover(d: Metered, deleted_at: float = 1.0, answered_at: float = 1.004, started_at: float = 1.008) -> None:
    """Follow the leader, see its node deleted, confirm, start the job."""
    pred = _candidate(5)
    name = _follow(d, pred)
    out = d.feed(ev.WatchFired(f"{PATH}/{pred}", ev.WatchKind.DELETED), deleted_at)
    (beat,) = [a for a in out if isinstance(a, act.CheckNode) and a.sync]
    d.feed(ev.ChildrenListed(d.last(act.ListChildren).request_id, deleted_at, (name,)), answered_at)
    d.answered.add(beat.request_id)
    d.feed(ev.NodeChecked(beat.request_id, deleted_at, ev.NodeStat(88, SESSION), synced=True, relayed_at=deleted_at),
           answered_at)
    assert d.view.leader
    d.feed(ev.JobStarted(pid=999), started_at)


def test_a_takeover_is_timed_from_the_predecessors_deletion_to_the_job_running() -> None:
    d = Metered()
    _takeover(d)
    assert d.value("zkleader_failover_seconds_count") == 1
    assert d.value("zkleader_failover_seconds_sum") == pytest.approx(0.008)
    assert d.value("zkleader_failover_seconds_bucket", le="0.01") == 1
    assert d.value("zkleader_failover_seconds_bucket", le="0.005") == 0
    assert d.value("zkleader_last_failover_seconds") == pytest.approx(0.008)
    assert d.changes() == {("acquired", "predecessor_deleted"): 1}
    assert d.value("zkleader_leader_transitions_total", direction="acquired") == 1
    # The confirming check is a heartbeat too: sent at 1.0 (its reply says so), handled at 1.004.
    assert d.value("zkleader_heartbeat_round_trip_seconds_count") == 1
    assert d.value("zkleader_heartbeat_round_trip_seconds_sum") == pytest.approx(0.004)


def test_a_leader_that_found_nobody_ahead_is_no_takeover() -> None:
    d = Metered()
    d.lead()
    assert d.changes() == {("acquired", "listed_first"): 1}
    assert d.value("zkleader_failover_seconds_count") == 0
    assert d.value("zkleader_job_starts_total") == 1


def test_a_deletion_that_did_not_make_this_host_leader_is_forgotten() -> None:
    """A middle candidate leaves: this host follows the next one. Leading later after a
    listing (a reconnect) is not timed from that old deletion."""
    d = Metered()
    leader, middle = _candidate(3), _candidate(5)
    name = _follow(d, leader, middle)
    d.feed(ev.WatchFired(f"{PATH}/{middle}", ev.WatchKind.DELETED), 1.0)
    d.feed(ev.ChildrenListed(d.last(act.ListChildren).request_id, 1.0, (leader, name)), 1.01)
    assert d.view.predecessor == leader
    d.feed(ev.Suspended(), 2.0)
    d.feed(ev.Connected(SESSION, T), 2.1)
    d.feed(ev.ChildrenListed(d.last(act.ListChildren).request_id, 2.1, (name,)), 2.1)
    beat = d.last(act.CheckNode)
    d.feed(ev.NodeChecked(beat.request_id, 2.1, ev.NodeStat(88, SESSION), synced=True, relayed_at=2.1), 2.11)
    d.feed(ev.JobStarted(pid=999), 2.12)
    assert d.changes() == {("acquired", "listed_first"): 1}
    assert d.value("zkleader_failover_seconds_count") == 0


def _leave(d: Metered, event: ev.Event, at: float) -> None:
    """An orderly leave: the event, the job reaped, the node deleted."""
    d.feed(event, at)
    d.feed(ev.JobExited(-15), at + 0.05)
    d.feed(ev.Deleted(d.last(act.DeleteNode).request_id, at + 0.06), at + 0.07)


def test_leaving_in_order_counts_the_loss_by_why_and_times_the_stop() -> None:
    d = Metered()
    d.lead()
    _leave(d, ev.ResignRequested(), 1.0)
    assert d.changes() == {("acquired", "listed_first"): 1, ("lost", "resigned"): 1}
    # The handover ends a leadership without a leadership_lost line: counted all the same.
    assert d.value("zkleader_leader_transitions_total", direction="lost") == 1
    assert d.value("zkleader_job_stop_seconds_count", cause="stopped") == 1
    assert d.value("zkleader_job_stop_seconds_sum", cause="stopped") == pytest.approx(0.05)


@pytest.mark.parametrize(("event", "reason"), [
    (ev.ShutdownRequested("SIGTERM"), "shutdown"),
    (ev.ResignRequested(), "resigned"),
    (ev.ReopenRequested("zookeeper settings changed"), "reconfigured"),
])
def test_each_kind_of_leave_has_its_reason(event: ev.Event, reason: str) -> None:
    d = Metered()
    d.lead()
    _leave(d, event, 1.0)
    assert ("lost", reason) in d.changes()


def test_a_failing_health_check_is_the_reason() -> None:
    d = Metered()
    d.lead()
    d.core.settings = dataclasses.replace(d.core.settings, health=HealthPolicy(interval=1.0, failures=1, successes=1))
    _leave(d, ev.HealthChecked(False, "disk full"), 1.0)
    assert ("lost", "health") in d.changes()


def test_a_drain_is_the_reason() -> None:
    d = Metered()
    d.lead()
    marker = f"{PATH}-drained/me"
    d.feed(ev.WatchFired(marker, ev.WatchKind.CHANGED), 1.0)  # the marker appeared
    check = [a for a in d.actions if isinstance(a, act.CheckNode) and a.path == marker][-1]
    _leave(d, ev.NodeChecked(check.request_id, 1.0, ev.NodeStat(czxid=9, ephemeral_owner=0)), 1.0)
    assert ("lost", "drained") in d.changes()


def test_a_job_exit_with_on_exit_resign_is_the_reason() -> None:
    d = Metered(OnExit.RESIGN)
    d.lead()
    d.feed(ev.JobExited(1), 1.0)
    d.feed(ev.Deleted(d.last(act.DeleteNode).request_id, 1.0), 1.01)
    assert ("lost", "job_exited") in d.changes()
    assert d.value("zkleader_job_stop_seconds_count", cause="exited") is None  # nobody asked it to stop
    assert d.value("zkleader_job_exits_total", cause="exited") == 1


def test_a_lost_session_is_the_reason_and_the_kill_is_timed() -> None:
    d = Metered()
    d.lead()
    d.feed(ev.SessionLost("expired_session"), 1.0)
    assert d.changes()[("lost", "session_lost")] == 1
    d.feed(ev.JobExited(-9), 1.002)
    assert d.value("zkleader_job_stop_seconds_sum", cause="killed") == pytest.approx(0.002)


def test_an_own_node_deleted_by_someone_else_is_the_reason() -> None:
    d = Metered()
    d.lead()
    d.feed(ev.WatchFired(d.last(act.StartJob).znode, ev.WatchKind.DELETED), 1.0)
    assert ("lost", "node_deleted") in d.changes()


def test_a_read_only_server_is_the_reason() -> None:
    d = Metered()
    d.lead()
    d.feed(ev.Suspended(), 0.5)
    d.feed(ev.Connected(SESSION, T, read_only=True), 0.6)
    assert ("lost", "read_only") in d.changes()


def test_a_lease_that_ran_out_is_the_reason_of_the_session_loss_that_follows() -> None:
    d = Metered()
    d.lead()
    d.feed(ev.Suspended(), 0.5)
    stop_at = d.view.budget.stop_at(d.view.t_ok)
    d.feed(ev.Tick(), stop_at + 0.01)  # no answer in time: the job stops, the node is still ours
    assert d.view.leader and d.changes() == {("acquired", "listed_first"): 1}
    d.feed(ev.SessionLost("expired_session"), stop_at + 1.0)
    assert d.changes()[("lost", "lease_expired")] == 1


def test_a_lease_renewed_after_running_out_is_no_longer_the_reason() -> None:
    d = Metered()
    d.lead()
    d.feed(ev.Suspended(), 0.5)
    stop_at = d.view.budget.stop_at(d.view.t_ok)
    d.feed(ev.Tick(), stop_at + 0.01)
    d.feed(ev.JobExited(-15), stop_at + 0.02)
    d.feed(ev.Connected(SESSION, T), stop_at + 0.1)
    d.beat(stop_at + 0.1)
    _leave(d, ev.ShutdownRequested("SIGTERM"), stop_at + 1.0)
    assert ("lost", "shutdown") in d.changes() and ("lost", "lease_expired") not in d.changes()


def test_the_lease_gauge_is_computed_at_scrape_time() -> None:
    d = Metered()
    assert math.isnan(d.value("zkleader_lease_remaining_seconds"))  # no lease before leading
    d.lead()
    stop_at = d.view.budget.stop_at(0.0)
    d.clock = 0.5
    assert d.value("zkleader_lease_remaining_seconds") == pytest.approx(stop_at - 0.5)
    d.clock = stop_at + 1.0  # a stalled loop: the figure says how late it is
    assert d.value("zkleader_lease_remaining_seconds") == pytest.approx(-1.0)
    assert d.value("zkleader_session_timeout_seconds") == T
    _leave(d, ev.ResignRequested(), stop_at + 1.0)
    assert math.isnan(d.value("zkleader_lease_remaining_seconds"))


def test_heartbeats_are_timed_from_their_sending_to_their_answer() -> None:
    d = Metered()
    d.lead()
    before = d.value("zkleader_heartbeat_round_trip_seconds_count")
    due = d.core.next_deadline()
    (beat,) = [a for a in d.feed(ev.Tick(), due) if isinstance(a, act.CheckNode) and a.sync]
    d.feed(ev.NodeChecked(beat.request_id, due + 0.001, ev.NodeStat(77, SESSION), synced=True, relayed_at=due),
           due + 0.004)
    assert d.value("zkleader_heartbeat_round_trip_seconds_count") == before + 1
    assert d.value("zkleader_heartbeat_round_trip_seconds_bucket", le="0.005") == before + 1
    # A failed one is not timed (there was no round trip) and not kept.
    (beat,) = [a for a in d.feed(ev.Tick(), d.core.next_deadline()) if isinstance(a, act.CheckNode) and a.sync]
    d.feed(ev.RequestFailed(beat.request_id, due, ev.Failure.CONNECTION), due + 0.5)
    assert d.value("zkleader_heartbeat_round_trip_seconds_count") == before + 1
    assert beat.request_id not in d.metrics._heartbeats


def test_a_stop_escalating_to_sigkill_is_timed_from_the_stop_signal() -> None:
    d = Metered()
    d.lead()
    d.feed(ev.ShutdownRequested("SIGTERM"), 1.0)
    d.feed(ev.Tick(), 1.0 + STOP)
    assert d.last(act.KillJob)
    d.feed(ev.JobExited(-9), 1.0 + STOP + 0.01)
    assert d.value("zkleader_job_stop_seconds_sum", cause="killed") == pytest.approx(STOP + 0.01)


# ------------------------------------------------------------ a real daemon


def _scrape(port: int) -> dict[str, float]:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as response:
        text = response.read().decode()
    return {
        sample.name + (json.dumps(sample.labels, sort_keys=True) if sample.labels else ""): sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
    }


@pytest.mark.zookeeper
def test_a_handover_as_both_daemons_report_it_over_http(healthy_zk_server, election_path, daemon_group) -> None:
    ports = {"a": free_port(), "b": free_port()}
    group = daemon_group(healthy_zk_server.hosts, election_path)
    group.add("a", sections={"metrics": {"listen": f"127.0.0.1:{ports['a']}"}})
    group.wait_starts(1, 30)
    group.add("b", sections={"metrics": {"listen": f"127.0.0.1:{ports['b']}"}}).wait_event("joined", 30)
    group.signal("a", signal.SIGUSR1)  # resign: a hands over and queues again behind b
    group.wait_starts(2, 10)

    b = wait_for(lambda: (v := _scrape(ports["b"])).get("zkleader_failover_seconds_count") == 1.0 and v, 10,
                 "b's takeover in its metrics")
    assert 0 < b["zkleader_failover_seconds_sum"] < 1.0
    assert b['zkleader_leadership_changes_total{"change": "acquired", "reason": "predecessor_deleted"}'] == 1.0
    assert b["zkleader_is_leader"] == 1.0
    assert b["zkleader_last_failover_seconds"] == b["zkleader_failover_seconds_sum"]
    assert 0 < b["zkleader_lease_remaining_seconds"] <= group.session_timeout
    assert b["zkleader_session_timeout_seconds"] == group.session_timeout
    assert b["zkleader_heartbeat_round_trip_seconds_count"] >= 1

    a = wait_for(lambda: (v := _scrape(ports["a"])).get("zkleader_queue_position") == 1.0 and v, 10,
                 "a queued behind b")
    assert a['zkleader_leadership_changes_total{"change": "acquired", "reason": "listed_first"}'] == 1.0
    assert a['zkleader_leadership_changes_total{"change": "lost", "reason": "resigned"}'] == 1.0
    assert a['zkleader_leader_transitions_total{"direction": "lost"}'] == 1.0
    assert a['zkleader_job_stop_seconds_count{"cause": "stopped"}'] == 1.0
    assert 0 < a['zkleader_job_stop_seconds_sum{"cause": "stopped"}'] < group.stop_timeout
    assert math.isnan(a["zkleader_lease_remaining_seconds"])
    assert a["zkleader_heartbeat_round_trip_seconds_count"] >= 1
    assert group.overlaps() == []
