"""The rules of who should lead (core/preference.py), driven through the pure core:
priorities at a takeover, the freeze, handover requests and preemption. The real
ensemble runs them in tests/test_control.py, the simulation in its "control" profile."""

from __future__ import annotations

import dataclasses
import itertools
import json

from test_leadership import PATH, SESSION, Driver, _follow, _heartbeats

from zkleader.core import actions as act
from zkleader.core import candidacy, preference
from zkleader.core import events as ev
from zkleader.core.leadership import Leadership
from zkleader.core.settings import Identity
from zkleader.core.snapshot import Phase

FROZEN, HANDOVER = f"{PATH}-frozen", f"{PATH}-handover"


def node(seq: int, priority: int = 0, letter: str = "a") -> str:
    return f"zkl-{candidacy.with_priority(letter * 32, priority)}-{seq:010d}"


def driver(priority: int = 0, preempt_after: float | None = None) -> Driver:
    """A Driver whose marker reads the test answers by hand."""
    d = Driver()
    ids = (f"{i:032x}" for i in itertools.count(1))
    settings = dataclasses.replace(d.core.settings, priority=priority, preempt_after=preempt_after)
    d.core = Leadership(settings, Identity("host", 1, "0", "now"), new_candidacy_id=lambda: next(ids))
    d.markers = None
    return d


def read(d: Driver, now: float, frozen: bytes | None = None, handover: bytes | None = None) -> list[act.Action]:
    request = d.last(act.ReadNodes)
    assert request.paths == (FROZEN, HANDOVER)
    return d.feed(ev.NodesRead(request.request_id, now, (frozen, handover)), now)


def confirm(d: Driver, now: float, czxid: int = 88) -> list[act.Action]:
    (beat,) = [a for a in d.actions if isinstance(a, act.CheckNode) and a.sync and a.request_id not in d.answered]
    d.answered.add(beat.request_id)
    return d.feed(ev.NodeChecked(beat.request_id, now, ev.NodeStat(czxid, SESSION), synced=True, relayed_at=now), now)


def takeover(d: Driver, pred: str, queue: tuple[str, ...], now: float = 1.0,
             frozen: bytes | None = None, handover: bytes | None = None) -> list[act.Action]:
    """The predecessor goes; the listing shows ``queue``; the markers read as given;
    the confirming heartbeat is answered. Returns what that answer did."""
    d.feed(ev.WatchFired(f"{PATH}/{pred}", ev.WatchKind.DELETED), now)
    d.feed(ev.ChildrenListed(d.last(act.ListChildren).request_id, now, queue), now)
    read(d, now, frozen, handover)
    return confirm(d, now)


def logged(out: list[act.Action], event: str) -> list[act.Log]:
    return [a for a in out if isinstance(a, act.Log) and a.event == event]


def deletes(out: list[act.Action]) -> list[str]:
    return [a.path for a in out if isinstance(a, act.DeleteNode)]


def lead(d: Driver, now: float = 0.0) -> str:
    """Connect, create, list (alone), read no markers, confirm: leading."""
    d.feed(ev.Connected(SESSION, 10.0), now)
    name = d.own_name()
    d.feed(ev.Created(d.last(act.CreateNode).request_id, now, f"{PATH}/{name}"), now)
    d.feed(ev.ChildrenListed(d.last(act.ListChildren).request_id, now, (name,)), now)
    read(d, now)
    confirm(d, now, czxid=77)
    assert d.view.leader
    d.feed(ev.JobStarted(pid=4242), now)
    return name


def test_the_priority_travels_in_the_candidacy_id_and_older_ids_have_none() -> None:
    for priority in (-999, -1, 0, 7, 999):
        cid = candidacy.with_priority("0123456789abcdef" * 2, priority)
        assert len(cid) == 32 and candidacy.priority_of(cid) == priority
        assert candidacy.parse(f"zkl-{cid}-0000000003") is not None
    # uuid4().hex, as daemons before priorities made them: version digit 4 there.
    assert candidacy.priority_of("9f1c2e3d4a5b4c6d8e7f0a1b2c3d4e5f") == 0


def test_preferred_is_the_handover_target_else_the_highest_priority_first_in_queue_order() -> None:
    queue = candidacy.Queue.from_children((node(1), node(2, 5, "b"), node(3, 5, "c"), node(4, 1, "d")))
    assert preference.preferred(queue, None).name == node(2, 5, "b")
    to_d = preference.Handover(node(4, 1, "d"), "op", "now", "resign --to")
    assert preference.preferred(queue, to_d).name == node(4, 1, "d")
    gone = preference.Handover(node(9), "op", "now", "resign --to")
    assert preference.preferred(queue, gone).name == node(2, 5, "b")


def test_a_takeover_yields_to_a_higher_priority_candidate_deleting_the_nodes_between() -> None:
    """The lowest node never starts the job when another should lead: it deletes its
    own node, then the nodes between itself and that candidate in queue order, so the
    preferred one wakes once, lowest (its predecessor goes last)."""
    d = driver()
    pred = node(5)
    name = _follow(d, pred)
    between, preferred = node(7, 0, "b"), node(8, 3, "c")
    out = takeover(d, pred, (name, between, preferred))
    assert not any(isinstance(a, act.StartJob) for a in out) and not d.view.leader
    (log,) = logged(out, "yielding")
    assert log.fields["to"] == preferred and log.fields["why"] == "priority" and log.fields["evicted"] == 1
    assert deletes(out) == [f"{PATH}-leader", f"{PATH}/{name}", f"{PATH}/{between}"]  # the claim first (core/claim.py)


def test_equal_priorities_keep_queue_order_and_lead_at_once() -> None:
    d = driver(priority=3)
    pred = node(5)
    name = _follow(d, pred)
    out = takeover(d, pred, (name, node(7, 3, "b")))
    assert any(isinstance(a, act.StartJob) for a in out)


def test_a_handover_target_wins_over_priorities_and_clears_the_request_once_it_leads() -> None:
    d = driver()
    pred = node(5)
    name = _follow(d, pred)
    request = preference.handover_data(name, "op@host", "resign --to")
    out = takeover(d, pred, (name, node(7, 9, "b")), handover=request)
    assert any(isinstance(a, act.StartJob) for a in out)
    assert HANDOVER in deletes(out)  # done: the target leads
    watched = [a.path for a in out if isinstance(a, act.CheckNode) and a.watch and not a.sync]
    assert sorted(watched) == [FROZEN, HANDOVER, f"{PATH}-preempt"]  # the leader's three watches


def test_frozen_nobody_takes_over_until_the_thaw() -> None:
    d = driver()
    pred = node(5)
    name = _follow(d, pred)
    out = takeover(d, pred, (name,), frozen=json.dumps({"by": "op@h", "at": "t0"}).encode())
    assert not any(isinstance(a, act.StartJob) for a in out) and not d.view.leader
    assert d.view.holding and d.view.frozen == ("op@h", "t0") and "frozen by op@h" in d.view.status_line()
    (log,) = logged(out, "frozen")
    assert log.fields["by"] == "op@h"
    (watch,) = [a for a in out if isinstance(a, act.CheckNode) and a.path == FROZEN]
    assert watch.watch
    # A reconnect re-lists: still lowest, still frozen: it holds again, without a new log line.
    d.feed(ev.NodeChecked(watch.request_id, 1.1, ev.NodeStat(3, 0)), 1.1)
    out = d.feed(ev.WatchFired(FROZEN, ev.WatchKind.DELETED), 5.0)
    assert logged(out, "thawed") and not d.view.holding
    d.feed(ev.ChildrenListed(d.last(act.ListChildren).request_id, 5.0, (name,)), 5.0)
    assert d.view.phase is Phase.CONFIRMING
    read(d, 5.0)
    out = confirm(d, 5.0)
    assert any(isinstance(a, act.StartJob) for a in out) and d.view.leader


def test_thawed_before_the_watch_was_set_confirms_again() -> None:
    d = driver()
    pred = node(5)
    name = _follow(d, pred)
    out = takeover(d, pred, (name,), frozen=b"{}")
    (watch,) = [a for a in out if isinstance(a, act.CheckNode) and a.path == FROZEN]
    out = d.feed(ev.NodeChecked(watch.request_id, 1.1, None), 1.1)
    assert [a for a in out if isinstance(a, act.ListChildren)] and not d.view.holding


def _request(d: Driver, now: float, queue: tuple[str, ...], frozen: bytes | None = None,
             handover: bytes | None = None) -> list[act.Action]:
    """The leader's handover watch fires; it lists and reads; both are answered."""
    out = d.feed(ev.WatchFired(HANDOVER, ev.WatchKind.CHANGED), now)
    assert [a.path for a in out if isinstance(a, act.CheckNode) and not a.sync] == [HANDOVER]  # re-armed
    d.feed(ev.ChildrenListed(d.last(act.ListChildren).request_id, now, queue), now)
    return read(d, now, frozen, handover)


def test_the_leader_hands_over_to_a_named_candidate_after_its_job_is_reaped() -> None:
    d = driver()
    name = lead(d)
    a, b, target, after = node(6, 0, "b"), node(7, 0, "c"), node(8, 0, "d"), node(9, 0, "e")
    out = _request(d, 1.0, (name, a, b, target, after), handover=preference.handover_data(target, "op", "resign --to"))
    assert d.kinds(out) == ["SignalJob"] and deletes(out) == []  # the job first
    (log,) = logged(out, "handing_over")
    assert log.fields["to"] == target and log.fields["evicted"] == 2
    out = d.feed(ev.JobExited(4242, -15), 1.2)
    assert deletes(out) == [f"{PATH}-leader", f"{PATH}/{name}", f"{PATH}/{a}", f"{PATH}/{b}"]  # the claim first (core/claim.py)


def test_a_handover_request_is_refused_while_frozen_or_when_its_target_is_gone() -> None:
    for frozen, target in ((b"{}", node(7, 0, "b")), (None, node(9, 0, "z"))):
        d = driver()
        name = lead(d)
        out = _request(d, 1.0, (name, node(7, 0, "b")), frozen=frozen,
                       handover=preference.handover_data(target, "op", "resign --to"))
        assert logged(out, "handover_refused") and deletes(out) == [HANDOVER]
        assert d.view.leader and not any(isinstance(a, act.SignalJob) for a in out)


def test_frozen_the_leader_refuses_to_resign_and_restarts_a_resigning_job() -> None:
    d = driver()
    name = lead(d)
    out = _request(d, 1.0, (name,), frozen=json.dumps({"by": "op"}).encode())
    assert logged(out, "frozen") and d.view.frozen is not None
    out = d.feed(ev.ResignRequested(), 2.0)
    assert logged(out, "resign_refused") and d.view.leader and d.kinds(out) == []


def test_a_follower_that_outranks_the_leader_pokes_it_once() -> None:
    d = driver(priority=5)
    leader = node(5)
    name = _follow(d, leader)
    (poke,) = [a for a in d.actions if isinstance(a, act.CreateNode) and not a.sequential]
    assert poke.path_prefix == f"{PATH}-preempt" and poke.ephemeral
    # Another poke stands: it is replaced, which fires the leader's watch all the same.
    out = d.feed(ev.RequestFailed(poke.request_id, 0.1, ev.Failure.NODE_EXISTS), 0.1)
    assert [type(a).__name__ for a in out if not isinstance(a, act.Log)] == ["DeleteNode", "CreateNode"]
    d.feed(ev.ChildrenListed(d.last(act.ListChildren).request_id, 0.2, (leader, name)), 0.2)
    assert len([a for a in d.actions if isinstance(a, act.CreateNode) and not a.sequential]) == 2  # no new poke


def test_no_poke_below_a_higher_or_equal_leader_or_behind_a_better_candidate() -> None:
    for priority, others in ((5, (node(5, 5),)), (0, (node(5),)), (5, (node(4), node(5, 8, "b")))):
        d = driver(priority=priority)
        _follow(d, *others)
        assert not [a for a in d.actions if isinstance(a, act.CreateNode) and not a.sequential]


def keep_alive(d: Driver, start: float, until: float) -> None:
    """Time passes with every heartbeat answered, as a healthy server would."""
    t = start
    while t < until - 1e-9:
        d.feed(ev.Tick(), t)
        d.beat(t)
        t = min(until, t + 0.1)


def _outranked_leader(after: float | None = 2.0) -> tuple[Driver, str]:
    """A leader (priority 0) whose poke watch fires: its listing shows a candidate of priority 5."""
    d = driver(preempt_after=after)
    name = lead(d)
    out = d.feed(ev.WatchFired(f"{PATH}-preempt", ev.WatchKind.CHANGED), 1.0)
    assert [a.path for a in out if isinstance(a, act.CheckNode) and not a.sync] == [f"{PATH}-preempt"]
    return d, name


def test_a_leader_hands_over_to_a_candidate_that_outranked_it_for_preempt_after() -> None:
    d, name = _outranked_leader()
    between, better = node(6, 0, "b"), node(7, 5, "c")
    d.feed(ev.ChildrenListed(d.last(act.ListChildren).request_id, 1.0, (name, between, better)), 1.0)
    assert logged(d.actions, "preempt_pending") and d.view.preempt_at == 3.0
    keep_alive(d, 1.0, 3.0)
    out = d.feed(ev.Tick(), 3.0)
    assert [a for a in out if isinstance(a, act.ListChildren)] and d.view.leader
    out = d.feed(ev.ChildrenListed(d.last(act.ListChildren).request_id, 3.0, (name, between, better)), 3.0)
    (log,) = logged(out, "handing_over")
    assert log.fields["to"] == better and log.fields["why"] == "preempt"
    assert d.kinds(out) == ["SignalJob"]
    out = d.feed(ev.JobExited(4242, -15), 3.2)
    assert deletes(out) == [f"{PATH}-leader", f"{PATH}/{name}", f"{PATH}/{between}"]  # the claim first (core/claim.py)


def test_the_wait_restarts_when_the_candidate_left_meanwhile() -> None:
    """Hysteresis: the same node must outrank the leader for the whole wait; a host
    that flapped comes back as a new node, and the wait starts over."""
    d, name = _outranked_leader()
    d.feed(ev.ChildrenListed(d.last(act.ListChildren).request_id, 1.0, (name, node(7, 5, "c"))), 1.0)
    keep_alive(d, 1.0, 3.0)
    d.feed(ev.Tick(), 3.0)
    out = d.feed(ev.ChildrenListed(d.last(act.ListChildren).request_id, 3.0, (name, node(9, 5, "c"))), 3.0)
    assert not logged(out, "handing_over") and d.view.preempt_at == 5.0
    keep_alive(d, 3.0, 5.0)
    d.feed(ev.Tick(), 5.0)
    out = d.feed(ev.ChildrenListed(d.last(act.ListChildren).request_id, 5.0, (name,)), 5.0)
    assert logged(out, "preempt_cancelled") and d.view.preempt_at is None and d.view.leader


def test_no_preemption_without_preempt_after_or_while_frozen() -> None:
    d, name = _outranked_leader(after=None)
    d.feed(ev.ChildrenListed(d.last(act.ListChildren).request_id, 1.0, (name, node(7, 5, "c"))), 1.0)
    assert d.view.preempt_at is None
    d, name = _outranked_leader()
    d.feed(ev.ChildrenListed(d.last(act.ListChildren).request_id, 1.0, (name, node(7, 5, "c"))), 1.0)
    read(d, 1.0, frozen=b"{}")
    keep_alive(d, 1.0, 3.0)
    d.feed(ev.Tick(), 3.0)
    out = d.feed(ev.ChildrenListed(d.last(act.ListChildren).request_id, 3.0, (name, node(7, 5, "c"))), 3.0)
    assert logged(out, "preempt_deferred") and d.view.leader


def test_the_confirmation_waits_for_the_marker_read() -> None:
    """The heartbeat's answer comes first (the read is pipelined behind it) and makes
    nobody lead; the read's answer decides at once, with no second heartbeat."""
    d = driver()
    pred = node(5)
    name = _follow(d, pred)
    d.feed(ev.WatchFired(f"{PATH}/{pred}", ev.WatchKind.DELETED), 1.0)
    d.feed(ev.ChildrenListed(d.last(act.ListChildren).request_id, 1.0, (name,)), 1.0)
    out = confirm(d, 1.0)
    assert not d.view.leader and not any(isinstance(a, act.StartJob) for a in out)
    out = read(d, 1.01)
    assert d.view.leader and any(isinstance(a, act.StartJob) for a in out) and _heartbeats(out) == []


def test_a_heartbeat_that_could_not_go_leaves_the_read_its_own_sync() -> None:
    """Only behind a heartbeat's sync may the marker read go without one: with a
    heartbeat already in flight when the confirmation starts, the read is synced."""
    d = driver()
    pred = node(5)
    name = _follow(d, pred)
    d.core.lease.heartbeat_sent(0.9)  # one in flight (a follower's last one, say)
    out = d.feed(ev.WatchFired(f"{PATH}/{pred}", ev.WatchKind.DELETED), 1.0)
    (reading,) = [a for a in out if isinstance(a, act.ReadNodes)]
    assert reading.sync and _heartbeats(out) == []
    d.feed(ev.ChildrenListed(d.last(act.ListChildren).request_id, 1.0, (name,)), 1.0)
