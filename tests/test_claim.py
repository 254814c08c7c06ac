"""The leader's claim (core/claim.py), driven through the pure core: a successor waits
while the previous leader's session holds the claim, a leader releases it only once its
job is reaped (before its node, on a clean leave), and a claim whose answer was lost is
read before it is trusted or deleted. The real ensemble runs it in tests/test_faults.py
(14c, 18), the simulation in every profile (invariants.py: an operator's delete
excuses no overlap)."""

from __future__ import annotations

from test_leadership import CLAIM, PATH, SESSION, Driver, _candidate, _follow, _heartbeats

from zkleader.core import actions as act
from zkleader.core import events as ev
from zkleader.core.claim import Claim
from zkleader.core.snapshot import Phase

OTHER = 0x77


def manual() -> Driver:
    """A Driver whose claim requests the test answers by hand."""
    d = Driver()
    d.claims = False
    return d


def claim_requests(out: list[act.Action]) -> list[act.Action]:
    return [a for a in out if getattr(a, "path_prefix", getattr(a, "path", None)) == CLAIM]


def answer_beat(d: Driver, now: float, czxid: int = 88) -> list[act.Action]:
    """Answers the heartbeats still waiting (the claim's reads are the test's)."""
    out: list[act.Action] = []
    for beat in _heartbeats(d.actions):
        if beat.path != CLAIM and beat.request_id not in d.answered:
            d.answered.add(beat.request_id)
            out += d.feed(ev.NodeChecked(beat.request_id, now, ev.NodeStat(czxid, SESSION), synced=True,
                                         relayed_at=now), now)
    return out


def wake_lowest(d: Driver, pred: str, name: str, now: float = 1.0) -> act.CreateNode:
    """The predecessor goes and the listing finds us lowest; returns the claim's create
    pipelined in the confirmation (ahead of the heartbeat and the marker read)."""
    out = d.feed(ev.WatchFired(f"{PATH}/{pred}", ev.WatchKind.DELETED), now)
    kinds = [type(a).__name__ for a in out if not isinstance(a, act.Log)]
    assert kinds == ["ListChildren", "CreateNode", "CheckNode", "ReadNodes"]
    (create,) = claim_requests(out)
    assert isinstance(create, act.CreateNode) and create.ephemeral and not create.sequential
    assert create.data == name.encode()
    d.feed(ev.ChildrenListed(d.last(act.ListChildren).request_id, now, (name,)), now)
    return create


def claim_exists(d: Driver) -> tuple[str, act.CheckNode]:
    """d follows; its predecessor goes; its claim's create finds the claim there. Returns
    our node's name and the read of the claim's owner that follows."""
    pred = _candidate(5)
    name = _follow(d, pred)
    create = wake_lowest(d, pred, name)
    out = d.feed(ev.RequestFailed(create.request_id, 1.0, ev.Failure.NODE_EXISTS, "exists"), 1.0)
    (check,) = claim_requests(out)
    assert isinstance(check, act.CheckNode) and check.watch
    return name, check


def test_a_takeover_leads_at_the_heartbeat_behind_its_claim() -> None:
    d = manual()
    pred = _candidate(5)
    name = _follow(d, pred)
    create = wake_lowest(d, pred, name)
    d.feed(ev.Created(create.request_id, 1.0, CLAIM), 1.0)
    out = answer_beat(d, 1.0)
    assert any(isinstance(a, act.StartJob) for a in out) and d.view.leader


def test_no_job_while_another_session_holds_the_claim_until_it_is_released() -> None:
    d = manual()
    name, check = claim_exists(d)
    out = answer_beat(d, 1.0)  # the heartbeat pipelined behind the create decides nothing yet
    assert not d.view.leader and not any(isinstance(a, act.StartJob) for a in out)
    out = d.feed(ev.NodeChecked(check.request_id, 1.0, ev.NodeStat(3, OTHER)), 1.01)
    (log,) = [a for a in out if isinstance(a, act.Log) and a.event == "previous_leader_holds"]
    assert log.fields["owner"] == "0x77"
    assert d.view.phase is Phase.FOLLOWING and not d.view.leader and d.view.waiting_on_claim
    assert "waiting for the previous leader's session to release its claim" in d.view.status_line()
    # Heartbeats and relists while waiting start nothing; the deletion of the claim does.
    out = d.feed(ev.WatchFired(CLAIM, ev.WatchKind.DELETED), 5.0)
    assert [a.event for a in out if isinstance(a, act.Log)] == ["previous_leader_released"]
    d.feed(ev.ChildrenListed(d.last(act.ListChildren).request_id, 5.0, (name,)), 5.0)
    (create,) = [a for a in claim_requests(d.actions[-6:]) if isinstance(a, act.CreateNode)]
    d.feed(ev.Created(create.request_id, 5.0, CLAIM), 5.0)
    out = answer_beat(d, 5.0)
    assert any(isinstance(a, act.StartJob) for a in out) and d.view.leader


def test_a_deletion_seen_before_the_owners_answer_is_read_again() -> None:
    """kazoo delivers watches and replies on two threads: the claim's deletion can come
    before the answer that still shows it. The daemon reads again instead of waiting
    for a watch that already fired (the simulation found this one)."""
    d = manual()
    _name, first = claim_exists(d)
    out = d.feed(ev.WatchFired(CLAIM, ev.WatchKind.DELETED), 1.01)
    (second,) = claim_requests(out)
    assert isinstance(second, act.CheckNode)
    d.feed(ev.NodeChecked(first.request_id, 1.0, ev.NodeStat(3, OTHER)), 1.02)
    assert d.core.claim is Claim.WAITING
    out = d.feed(ev.NodeChecked(second.request_id, 1.0, None), 1.03)
    assert d.core.claim is Claim.NONE and any(isinstance(a, act.ListChildren) for a in out)


def middle_goes(d: Driver) -> tuple[str, str, act.Action]:
    """d follows a middle node, which goes: the confirmation's claim create goes out
    before the listing shows the leader still there. Returns the leader's node, ours,
    and that create."""
    leader, middle = _candidate(3), _candidate(5)
    name = _follow(d, leader, middle)
    out = d.feed(ev.WatchFired(f"{PATH}/{middle}", ev.WatchKind.DELETED), 1.0)
    (create,) = claim_requests(out)
    d.feed(ev.ChildrenListed(d.last(act.ListChildren).request_id, 1.0, (leader, name)), 1.0)
    return leader, name, create


def test_a_claim_made_by_a_daemon_that_does_not_lead_is_released() -> None:
    """A middle node went: the claim its successor made is released at once."""
    d = manual()
    _leader, _name, create = middle_goes(d)
    out = d.feed(ev.Created(create.request_id, 1.0, CLAIM), 1.0)
    (release,) = claim_requests(out)
    assert isinstance(release, act.DeleteNode) and d.core.claim is Claim.RELEASING


def test_a_claim_whose_create_reply_was_lost_is_read_then_released_if_ours() -> None:
    """Else a claim of ours nobody knows of would hold off every successor for as
    long as this session lives."""
    d = manual()
    leader, name, create = middle_goes(d)
    d.feed(ev.Suspended(), 1.01)
    out = d.feed(ev.RequestFailed(create.request_id, 1.0, ev.Failure.CONNECTION, "lost"), 1.02)
    assert d.core.claim is Claim.UNKNOWN and claim_requests(out) == []  # nothing sent while disconnected
    out = d.feed(ev.Connected(SESSION, 4.0), 1.5)
    (check,) = claim_requests(out)
    assert isinstance(check, act.CheckNode)
    out = d.feed(ev.NodeChecked(check.request_id, 1.5, ev.NodeStat(9, SESSION)), 1.51)
    assert claim_requests(out) == []  # the reconnect's listing may still find us lowest
    out = d.feed(ev.ChildrenListed(d.last(act.ListChildren).request_id, 1.5, (leader, name)), 1.52)
    (release,) = claim_requests(out)
    assert isinstance(release, act.DeleteNode)


def test_a_lost_release_is_never_repeated_blindly() -> None:
    """The delete may have landed and another session may hold the claim by now."""
    d = Driver()
    d.lead()
    d.claims = False
    d.feed(ev.ResignRequested(), 1.0)
    out = d.feed(ev.JobExited(999, -15), 1.1)
    (release,) = claim_requests(out)
    d.feed(ev.Suspended(), 1.2)
    d.feed(ev.RequestFailed(release.request_id, 1.1, ev.Failure.CONNECTION, "lost"), 1.2)
    out = d.feed(ev.Connected(SESSION, 4.0), 1.5)
    (check,) = claim_requests(out)
    assert isinstance(check, act.CheckNode)
    out = d.feed(ev.NodeChecked(check.request_id, 1.5, ev.NodeStat(9, OTHER)), 1.51)
    assert claim_requests(out) == [] and d.core.claim is Claim.NONE


def test_a_clean_leave_releases_the_claim_right_before_the_node() -> None:
    d = Driver()
    d.lead()
    d.feed(ev.ResignRequested(), 1.0)
    out = d.feed(ev.JobExited(999, -15), 1.1)
    deletes = [a.path for a in out if isinstance(a, act.DeleteNode)]
    assert deletes[:2] == [CLAIM, d.last(act.StartJob).znode]


def test_a_leader_whose_node_vanished_releases_the_claim_only_once_the_job_is_reaped() -> None:
    d = Driver()
    d.lead()
    node = d.last(act.StartJob).znode
    out = d.feed(ev.WatchFired(node, ev.WatchKind.DELETED), 1.0)
    assert any(isinstance(a, act.KillJob) for a in out) and claim_requests(out) == []
    assert d.core.claim is Claim.HELD
    out = d.feed(ev.JobExited(999, -9), 1.3)
    assert [type(a).__name__ for a in claim_requests(out)] == ["DeleteNode"]


def test_the_claim_goes_with_the_session() -> None:
    d = Driver()
    d.lead()
    d.feed(ev.SessionLost("expired"), 1.0)
    assert d.core.claim is Claim.NONE


def test_a_read_of_the_owner_that_fails_is_made_again_once_connected() -> None:
    """The simulation's strict profile found this one: a read lost with the connection
    left the claim forgotten, and the next in line waited on it for good."""
    d = manual()
    _name, check = claim_exists(d)
    d.feed(ev.Suspended(), 1.01)
    d.feed(ev.RequestFailed(check.request_id, 1.0, ev.Failure.CONNECTION, "lost"), 1.02)
    assert d.core.claim is Claim.UNKNOWN
    out = d.feed(ev.Connected(SESSION, 4.0), 1.5)
    (again,) = claim_requests(out)
    assert isinstance(again, act.CheckNode) and again.watch


def test_a_create_answered_after_the_heartbeat_and_the_read_decides_at_once() -> None:
    """kazoo completes a create made with makepath one callback late, behind the
    heartbeat and the marker read sent after it (the fault suite's test 17 found it:
    the daemon then waited for a second heartbeat that its cut-off server never
    answered). The create's answer decides: no round trip more."""
    d = manual()
    pred = _candidate(5)
    name = _follow(d, pred)
    create = wake_lowest(d, pred, name)
    out = answer_beat(d, 1.0)
    assert not d.view.leader and not any(isinstance(a, act.StartJob) for a in out)
    out = d.feed(ev.Created(create.request_id, 1.0, CLAIM), 1.01)
    assert d.view.leader and any(isinstance(a, act.StartJob) for a in out) and _heartbeats(out) == []
