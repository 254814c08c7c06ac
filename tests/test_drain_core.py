"""The decision core's drain (core/drain.py), driven event by event: the marker's
answer takes this host out of the queue in order and keeps it out until undrained."""

from __future__ import annotations

from test_leadership import PATH, SESSION, Driver, T, _candidate, _follow

from zkleader.core import actions as act
from zkleader.core import events as ev
from zkleader.core.snapshot import Phase

MARKER = f"{PATH}-drained/me"


def _drain_checks(d: Driver) -> list[act.CheckNode]:
    return [a for a in d.actions if isinstance(a, act.CheckNode) and a.path == MARKER]


def _answer(d: Driver, exists: bool, now: float = 0.0) -> list[act.Action]:
    check = _drain_checks(d)[-1]
    stat = ev.NodeStat(czxid=9, ephemeral_owner=0) if exists else None
    return d.feed(ev.NodeChecked(check.request_id, now, stat), now)


def _events(out: list[act.Action]) -> list[str]:
    return [a.event for a in out if isinstance(a, act.Log)]


def test_each_connect_checks_the_marker_with_one_watch_ahead_of_the_create() -> None:
    d = Driver()
    out = d.feed(ev.Connected(SESSION, T), 0)
    checks = [a for a in out if isinstance(a, act.CheckNode)]
    assert [(c.path, c.watch) for c in checks] == [(MARKER, True)]
    assert out.index(checks[0]) < out.index(d.last(act.CreateNode))  # answered first: one session, in order


def test_drained_at_start_never_lists_nor_leads_and_takes_its_node_back() -> None:
    d = Driver()
    d.feed(ev.Connected(SESSION, T), 0)
    out = _answer(d, exists=True)
    assert "drained" in _events(out) and d.view.drained
    name = d.own_name()
    out = d.feed(ev.Created(d.last(act.CreateNode).request_id, 0, f"{PATH}/{name}"), 0)
    assert d.kinds(out) == ["DeleteNode"] and d.last(act.DeleteNode).path == f"{PATH}/{name}"
    out = d.feed(ev.Deleted(d.last(act.DeleteNode).request_id, 0), 0)
    assert d.kinds(out) == []  # no rejoin while drained
    assert d.view.node is None and "drained" in d.view.status_line()


def test_draining_the_leader_stops_the_job_before_its_node_goes_then_stays_out() -> None:
    d = Driver()
    d.lead()
    d.feed(ev.JobStarted(1234), 0)
    _answer(d, exists=False)
    out = d.feed(ev.WatchFired(MARKER, ev.WatchKind.CHANGED), 1)
    assert [c.path for c in out if isinstance(c, act.CheckNode) and not c.sync] == [MARKER]  # the watch re-armed
    out = _answer(d, exists=True, now=1)
    assert d.kinds(out) == ["SignalJob"]  # the job first; the node stays until it is reaped
    out = d.feed(ev.JobExited(-15), 1.2)
    assert d.kinds(out) == ["DeleteNode"]
    out = d.feed(ev.Deleted(d.last(act.DeleteNode).request_id, 1.2), 1.2)
    assert d.kinds(out) == [] and not d.view.leader and d.view.node is None


def test_draining_a_follower_deletes_its_node_and_undrain_rejoins_at_the_back() -> None:
    d = Driver()
    _follow(d, _candidate(1))
    _answer(d, exists=False)
    d.feed(ev.WatchFired(MARKER, ev.WatchKind.CHANGED), 1)
    out = _answer(d, exists=True, now=1)
    assert d.kinds(out) == ["DeleteNode"]
    first_id = d.view.candidacy_id
    d.feed(ev.Deleted(d.last(act.DeleteNode).request_id, 1), 1)
    d.feed(ev.WatchFired(MARKER, ev.WatchKind.DELETED), 2)
    out = _answer(d, exists=False, now=2)
    assert "undrained" in _events(out) and d.kinds(out) == ["CreateNode"]
    assert d.view.candidacy_id != first_id and d.view.phase is Phase.JOINING  # a fresh node: the back


def test_a_new_session_while_drained_stays_out_and_a_health_pass_does_not_readmit() -> None:
    d = Driver()
    d.feed(ev.Connected(SESSION, T), 0)
    _answer(d, exists=True)
    d.feed(ev.Created(d.last(act.CreateNode).request_id, 0, f"{PATH}/{d.own_name()}"), 0)
    d.feed(ev.Deleted(d.last(act.DeleteNode).request_id, 0), 0)
    d.feed(ev.SessionLost("expired"), 1)
    creates = len([a for a in d.actions if isinstance(a, act.CreateNode)])
    d.feed(ev.Connected(SESSION + 1, T), 2)
    assert len(_drain_checks(d)) == 2
    assert len([a for a in d.actions if isinstance(a, act.CreateNode)]) == creates  # drained: no create
    out = _answer(d, exists=True, now=2)
    assert d.kinds(out) == [] and "drained" not in _events(out)  # no change, nothing said again


def test_a_connection_watch_event_on_the_marker_is_not_a_change() -> None:
    d = Driver()
    _follow(d, _candidate(1))
    _answer(d, exists=False)
    out = d.feed(ev.WatchFired(MARKER, ev.WatchKind.CONNECTION), 1)
    assert d.kinds(out) == [] and not _drain_checks(d)[1:]


def test_a_check_that_died_with_the_connection_after_the_reconnect_is_sent_again() -> None:
    d = Driver()
    _follow(d, _candidate(1))
    stale = _drain_checks(d)[-1]
    d.feed(ev.Suspended(), 1)
    d.feed(ev.Connected(SESSION, T), 1.1)  # same session: the old check still awaited
    assert len(_drain_checks(d)) == 1
    out = d.feed(ev.RequestFailed(stale.request_id, 0, ev.Failure.CONNECTION), 1.2)
    assert [c.path for c in out if isinstance(c, act.CheckNode)] == [MARKER]  # the watch re-armed


def test_a_drain_undone_at_once_is_seen_undone_whatever_the_order_of_the_answers() -> None:
    """Found by the simulation's control profile (seeds 1000275, 1000502): a drain undone
    while the check the drain's watch sent was in flight, or while the node's deletion
    was, left the host drained forever. The undrain's watch fires with the first check
    still unanswered: a second check goes out anyway (answers come in order, the last
    stands), and forgetting the candidacy as its node goes no longer drops it."""
    d = Driver()
    d.feed(ev.Connected(SESSION, T), 0)
    _answer(d, exists=True)  # drained at connect
    name = d.own_name()
    d.feed(ev.Created(d.last(act.CreateNode).request_id, 0, f"{PATH}/{name}"), 0)
    delete = d.last(act.DeleteNode)
    out = d.feed(ev.WatchFired(MARKER, ev.WatchKind.DELETED), 0.01)  # undrained at once
    assert [c.path for c in out if isinstance(c, act.CheckNode)] == [MARKER]
    d.feed(ev.Deleted(delete.request_id, 0.02), 0.02)  # the node went: the candidacy is forgotten
    out = _answer(d, exists=False, now=0.03)
    assert "undrained" in _events(out) and d.kinds(out) == ["CreateNode"] and not d.view.drained

    # The same with a check in flight when the marker goes: its stale "exists" comes first.
    d = Driver()
    _follow(d, _candidate(5))
    d.feed(ev.WatchFired(MARKER, ev.WatchKind.CHANGED), 1.0)  # drained
    stale = _drain_checks(d)[-1]
    d.feed(ev.WatchFired(MARKER, ev.WatchKind.DELETED), 1.01)  # and undrained
    fresh = _drain_checks(d)[-1]
    assert fresh.request_id != stale.request_id
    d.feed(ev.NodeChecked(stale.request_id, 1.0, ev.NodeStat(czxid=9, ephemeral_owner=0)), 1.02)
    d.feed(ev.Deleted(d.last(act.DeleteNode).request_id, 1.03), 1.03)
    out = d.feed(ev.NodeChecked(fresh.request_id, 1.01, None), 1.04)
    assert "undrained" in _events(out) and d.kinds(out) == ["CreateNode"]
