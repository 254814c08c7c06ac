"""The core's side of the guardian's lease (issue 13): the job starts with the lease's
deadlines, every change of them while the job may run reaches the guardian, none
after the stop began, and a job the guardian stopped on its own counts as stopped."""

from __future__ import annotations

import pytest
from test_leadership import SESSION, Driver

from zkleader.core import actions as act
from zkleader.core import events as ev
from zkleader.core.jobcontrol import JobPhase


def guards(out: list[act.Action]) -> list[act.GuardLease]:
    return [a for a in out if isinstance(a, act.GuardLease)]


def test_the_job_starts_with_the_lease_deadlines_the_daemon_itself_keeps() -> None:
    d = Driver()
    d.lead(now=10.0)  # t_ok = 10
    start, budget = d.last(act.StartJob), d.view.budget
    assert (start.stop_at, start.kill_at) == (pytest.approx(10.0 + budget.stop_offset),
                                              pytest.approx(10.0 + budget.kill_offset))


def test_each_renewal_moves_the_guardians_deadlines_and_only_a_renewal_does() -> None:
    d = Driver()
    d.lead(now=10.0)
    d.feed(ev.JobStarted(123), 10.01)
    budget = d.view.budget
    assert guards(d.feed(ev.Tick(), 10.1)) == []
    due = d.core.lease.heartbeat_due
    assert due is not None
    d.feed(ev.Tick(), due)
    out = d.beat(due + 0.01)  # anchored at due + 0.01
    assert guards(out) == [act.GuardLease(due + 0.01 + budget.stop_offset, due + 0.01 + budget.kill_offset)]
    assert guards(d.feed(ev.Tick(), due + 0.02)) == []


def test_no_new_deadlines_reach_the_guardian_once_the_job_is_stopping() -> None:
    """The session is lost while the job stops slowly; a new session leads again before
    it is reaped. That lease does not protect the leadership the job was started under,
    so the guardian keeps the deadlines it had."""
    d = Driver()
    d.lead(now=10.0)
    d.feed(ev.JobStarted(123), 10.01)
    d.feed(ev.SessionLost("expired"), 10.5)
    assert d.core.job.phase is JobPhase.STOPPING
    out = d.feed(ev.Connected(SESSION, 4.0), 10.6)
    create = d.last(act.CreateNode)
    name = d.own_name(9)
    out += d.feed(ev.Created(create.request_id, 10.61, f"/e/{name}"), 10.61)
    out += d.feed(ev.ChildrenListed(d.last(act.ListChildren).request_id, 10.62, (name,)), 10.62)
    out += d.beat(10.63)
    assert d.view.leader and d.core.job.phase is JobPhase.STOPPING
    out += d.feed(ev.Tick(), 10.64)
    assert guards(out) == []


def test_a_job_the_guardian_stopped_is_started_again_on_a_valid_lease_without_backoff() -> None:
    """A daemon that stalled past its stop deadline and came back still leading: the
    guardian's stop is a stop for cause, not the job failing (no restart backoff, no
    resignation under on_exit: resign)."""
    d = Driver()
    d.lead(now=10.0)
    d.feed(ev.JobStarted(123), 10.01)
    due = d.core.lease.heartbeat_due
    assert due is not None
    d.feed(ev.Tick(), due)
    d.beat(due + 0.01)
    out = d.feed(ev.JobExited(-15, by_guardian=True), due + 0.02)
    assert d.kinds(out) == ["StartJob"]
    assert [a.fields["cause"] for a in out if isinstance(a, act.Log) and a.event == "job_exited"] == [
        "stopped_by_guardian"]
