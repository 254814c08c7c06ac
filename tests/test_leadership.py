"""Unit tests of the pure decision core, driven event by event with explicit times."""

from __future__ import annotations

import itertools
import signal
from typing import Any

import pytest

from zkleader.core import actions as act
from zkleader.core import events as ev
from zkleader.core import exitcodes, timing
from zkleader.core.leadership import Leadership
from zkleader.core.snapshot import Phase, Snapshot
from zkleader.core.settings import Identity, OnExit, Settings

T = 4.0
STOP = 1.0
SESSION = 0x42
PATH = "/e"
CLAIM = "/e-leader"


class Driver:
    """Feeds events and remembers the actions, answering requests by hand."""

    def __init__(self, on_exit: OnExit = OnExit.RESTART, session_timeout: float = T) -> None:
        ids = (f"{i:032x}" for i in itertools.count(1))
        settings = Settings(PATH, "me", session_timeout, signal.SIGTERM, STOP, on_exit, restart_delay=0.5, tick_time=0.2)
        self.core = Leadership(settings, Identity("host", 1, "0", "now"), new_candidacy_id=lambda: next(ids))
        self.actions: list[act.Action] = []
        self.answered: set[int] = set()
        #: The freeze and handover markers' data every ReadNodes gets at once, or None
        #: to leave them unanswered.
        self.markers: tuple[bytes | None, bytes | None] | None = (None, None)
        #: Every create and delete of the leader's claim (core/claim.py) succeeds at once, or,
        #: False, is left unanswered (tests/test_claim.py answers them by hand).
        self.claims = True

    def feed(self, event: ev.Event, now: float) -> list[act.Action]:
        out = self.core.handle(event, now)
        self.actions.extend(out)
        self.observe(event, out, now)
        if self.markers is not None:
            # A server answers in order: the marker read sent before a heartbeat is
            # answered before it (tests/test_preference.py answers them by hand).
            for read in [a for a in out if isinstance(a, act.ReadNodes)]:
                out = out + self.feed(ev.NodesRead(read.request_id, now, self.markers), now)
        if self.claims:
            for create in [a for a in out if isinstance(a, act.CreateNode) and a.path_prefix == CLAIM]:
                out = out + self.feed(ev.Created(create.request_id, now, CLAIM), now)
            for release in [a for a in out if isinstance(a, act.DeleteNode) and a.path == CLAIM]:
                out = out + self.feed(ev.Deleted(release.request_id, now), now)
        return out

    def observe(self, event: ev.Event, out: list[act.Action], now: float) -> None:
        """Sees each step before the answers fed at once (tests/test_metrics.py)."""

    @property
    def view(self) -> Snapshot:
        return self.core.snapshot()

    def last(self, kind: type) -> Any:
        found = [a for a in self.actions if isinstance(a, kind)]
        assert found, f"no {kind.__name__} in {self.actions}"
        return found[-1]

    def beat(self, now: float) -> list[act.Action]:
        """Answers every heartbeat still waiting, as a healthy server would."""
        out: list[act.Action] = []
        for check in [a for a in self.actions if isinstance(a, act.CheckNode) and not _is_drain_check(a)]:
            if check.request_id not in self.answered:
                self.answered.add(check.request_id)
                out += self.feed(ev.NodeChecked(check.request_id, now, ev.NodeStat(77, SESSION), synced=True,
                                                relayed_at=now), now)
        return out

    def kinds(self, out: list[act.Action]) -> list[str]:
        """The actions but logs, heartbeats (which go out on their own cadence) and the
        drop of a connection whose heartbeat the test left unanswered."""
        return [type(a).__name__ for a in out
                if not isinstance(a, (act.Log, act.DropConnection, act.ReadNodes)) and not _is_heartbeat(a)
                and not _is_drain_check(a) and not _is_marker_watch(a) and not _is_claim(a)]

    def own_name(self, seq: int = 5) -> str:
        return f"zkl-{self.view.candidacy_id}-{seq:010d}"

    def lead(self, now: float = 0.0, others: tuple[str, ...] = ()) -> None:
        """Connect, create, list, confirm: the path every leader takes."""
        self.feed(ev.Connected(SESSION, T), now)
        create = self.last(act.CreateNode)
        name = self.own_name()
        self.feed(ev.Created(create.request_id, now, f"{PATH}/{name}"), now)
        listing = self.last(act.ListChildren)
        self.feed(ev.ChildrenListed(listing.request_id, now, (name, *others)), now)
        check = self.last(act.CheckNode)
        assert check.path == f"{PATH}/{name}" and check.watch
        self.answered.add(check.request_id)
        out = self.feed(ev.NodeChecked(check.request_id, now, ev.NodeStat(czxid=77, ephemeral_owner=SESSION), synced=True,
                                       relayed_at=now), now)
        assert self.kinds(out) == ["StartJob", "ListChildren", "PublishLeadership"]
        self.feed(ev.JobStarted(pid=999), now)


def _is_heartbeat(action: act.Action) -> bool:
    return isinstance(action, act.CheckNode) and action.sync


def _is_claim(action: act.Action) -> bool:
    """The leader's claim: created in each takeover, released before the node
    (tests/test_claim.py covers it)."""
    return isinstance(action, (act.CreateNode, act.DeleteNode, act.CheckNode)) and \
        getattr(action, "path_prefix", getattr(action, "path", None)) == CLAIM


def _is_drain_check(action: act.Action) -> bool:
    """The drain marker's check at each connect (tests/test_drain_core.py covers it)."""
    return isinstance(action, act.CheckNode) and action.path == f"{PATH}-drained/me"


def _is_marker_watch(action: act.Action) -> bool:
    """A leader's watches on the freeze, handover and preempt markers (tests/test_preference.py)."""
    return isinstance(action, act.CheckNode) and action.path in (f"{PATH}-{m}" for m in ("frozen", "handover", "preempt"))


def _candidate(seq: int, letter: str = "f") -> str:
    return f"zkl-{letter * 32}-{seq:010d}"


def _follow(d: Driver, *others: str, seq: int = 6) -> str:
    """Connect, create our node (sequence ``seq``) and list ``others`` beside it: a
    follower watching its predecessor. Returns our node's name."""
    d.feed(ev.Connected(SESSION, T), 0)
    name = d.own_name(seq)
    d.feed(ev.Created(d.last(act.CreateNode).request_id, 0, f"{PATH}/{name}"), 0)
    d.feed(ev.ChildrenListed(d.last(act.ListChildren).request_id, 0, (*others, name)), 0)
    assert d.view.phase is Phase.FOLLOWING
    return name


def _heartbeats(out: list[act.Action]) -> list[act.CheckNode]:
    return [a for a in out if isinstance(a, act.CheckNode) and a.sync]


def _listings(out: list[act.Action]) -> list[act.ListChildren]:
    return [a for a in out if isinstance(a, act.ListChildren)]


def test_leader_starts_job_with_czxid_token_only_after_ownership_confirmed() -> None:
    d = Driver()
    d.lead()
    start = d.last(act.StartJob)
    assert start.token == 77 and start.znode.startswith(f"{PATH}/zkl-")
    assert d.view.phase is Phase.LEADING


def test_node_owned_by_another_session_is_never_led() -> None:
    d = Driver()
    d.feed(ev.Connected(SESSION, T), 0)
    name = d.own_name()
    d.feed(ev.Created(d.last(act.CreateNode).request_id, 0, f"{PATH}/{name}"), 0)
    d.feed(ev.ChildrenListed(d.last(act.ListChildren).request_id, 0, (name,)), 0)
    out = d.feed(ev.NodeChecked(d.last(act.CheckNode).request_id, 0, ev.NodeStat(77, ephemeral_owner=0x99)), 0)
    assert "StartJob" not in d.kinds(out)
    assert "CreateNode" in d.kinds(out)  # rejoins with a fresh node instead


def test_lease_stops_then_kills_the_job_before_the_session_could_expire() -> None:
    d = Driver()
    d.lead(now=10.0)  # t_ok = 10
    d.feed(ev.Suspended(), 10.5)
    budget = d.view.budget
    stop_at = 10.0 + budget.stop_offset
    assert d.core.next_deadline() == pytest.approx(stop_at)
    assert d.kinds(d.feed(ev.Tick(), stop_at - 0.001)) == []
    assert d.kinds(d.feed(ev.Tick(), stop_at)) == ["SignalJob"]
    kill_at = 10.0 + budget.kill_offset
    assert d.core.next_deadline() == pytest.approx(kill_at)
    assert d.kinds(d.feed(ev.Tick(), kill_at)) == ["KillJob"]
    # Room to reap before the earliest moment the ZooKeeper leader could expire the
    # session (T after t_ok, the latest packet it is known to have heard of).
    assert kill_at + timing.DEFAULT_REAP_ALLOWANCE < budget.expires_at(10.0) == 10.0 + T


def test_ride_through_a_reconnect_keeps_the_job_untouched() -> None:
    d = Driver()
    d.lead(now=0.0)
    d.feed(ev.Suspended(), 0.5)
    out = d.feed(ev.Connected(SESSION, T), 1.0)
    heartbeat = [a for a in out if isinstance(a, act.CheckNode)]
    assert heartbeat, out
    d.feed(ev.NodeChecked(heartbeat[0].request_id, 1.0, ev.NodeStat(77, SESSION), synced=True, relayed_at=0.9), 1.05)
    for now in (1.5, 2.0, 0.9 + d.view.budget.stop_offset - 0.01):
        assert "SignalJob" not in d.kinds(d.feed(ev.Tick(), now))


def test_the_lease_runs_from_the_relayed_packet_not_from_the_sync_or_its_answer() -> None:
    d = Driver()
    d.lead(now=0.0)
    h = d.view.budget.heartbeat_interval + 1.0
    d.feed(ev.Tick(), h)
    beat = d.last(act.CheckNode)
    # The answer arrives very late, and the latest packet known to have reached the
    # ZooKeeper leader went out well before the sync (timing.relayed_anchor).
    d.feed(ev.NodeChecked(beat.request_id, h, ev.NodeStat(77, SESSION), synced=True, relayed_at=h - 0.7), h + 1.0)
    assert d.view.t_ok == pytest.approx(h - 0.7)
    # An older anchor from a reordered answer never moves the lease back.
    d.feed(ev.Tick(), h + d.view.budget.heartbeat_interval)
    again = d.last(act.CheckNode)
    d.feed(ev.NodeChecked(again.request_id, h + 0.7, ev.NodeStat(77, SESSION), synced=True, relayed_at=0.1), h + 0.8)
    assert d.view.t_ok == pytest.approx(h - 0.7)


def test_heartbeats_go_one_at_a_time_and_never_sooner_than_ticktime_half_after_an_answer() -> None:
    """An unanswered heartbeat leaves the connection silent so kazoo's ping can find a
    dead server; an answer anchors the lease of a sync queued tickTime/2 later at the
    earliest (timing.relayed_anchor), so the next heartbeat waits that long."""
    d = Driver()
    d.lead(now=0.0)
    h = d.view.budget.heartbeat_interval
    (second,) = [a for a in d.feed(ev.Tick(), d.view.budget.first_renewal) if _is_heartbeat(a)]
    assert [a for a in d.feed(ev.Tick(), 2 * h) if _is_heartbeat(a)] == []  # still unanswered
    late = 2 * h + 0.01
    d.feed(ev.NodeChecked(second.request_id, 0.1, ev.NodeStat(77, SESSION), synced=True, relayed_at=0.0), late)
    assert d.core.next_deadline() == pytest.approx(late + d.view.budget.first_renewal)
    assert len([a for a in d.feed(ev.Tick(), late + d.view.budget.first_renewal) if _is_heartbeat(a)]) == 1


def test_a_heartbeat_unanswered_for_a_whole_interval_drops_the_connection_once() -> None:
    """A leader whose server alone went silent moves to another server (same session)
    at once, instead of at kazoo's ping deadline, after the lease would have run out."""
    d = Driver()
    d.lead(now=0.0)
    h = d.view.budget.heartbeat_interval
    (beat,) = [a for a in d.feed(ev.Tick(), d.view.budget.first_renewal) if _is_heartbeat(a)]
    stall = d.view.budget.first_renewal + h
    assert d.core.next_deadline() == pytest.approx(stall)
    assert not any(isinstance(a, act.DropConnection) for a in d.feed(ev.Tick(), stall - 0.001))
    out = d.feed(ev.Tick(), stall)
    assert [a for a in out if isinstance(a, act.DropConnection)] == [act.DropConnection()]
    assert not any(isinstance(a, act.DropConnection) for a in d.feed(ev.Tick(), stall + h))  # once
    # Answered in time: no drop.
    d = Driver()
    d.lead(now=0.0)
    (beat,) = [a for a in d.feed(ev.Tick(), d.view.budget.first_renewal) if _is_heartbeat(a)]
    d.feed(ev.NodeChecked(beat.request_id, 0.1, ev.NodeStat(77, SESSION), synced=True, relayed_at=0.0), 0.2)
    assert not any(isinstance(a, act.DropConnection) for a in d.feed(ev.Tick(), 0.1 + h + 0.01))


def test_a_job_is_not_started_on_a_lease_that_ends_before_its_renewal_can_come() -> None:
    """A new leader's first anchor can be old (only kazoo's pings were answered, on a
    slow network). Starting the job on a lease that ends before the second heartbeat can
    renew it would stop and restart the job at once (seed 3001808 of a long simulation
    run); it waits for that renewal instead."""
    d = Driver()
    d.feed(ev.Connected(SESSION, T), 0)
    name = d.own_name()
    d.feed(ev.Created(d.last(act.CreateNode).request_id, 10.0, f"{PATH}/{name}"), 10.0)
    d.feed(ev.ChildrenListed(d.last(act.ListChildren).request_id, 10.0, (name,)), 10.0)
    first = d.last(act.CheckNode)
    budget = d.view.budget
    old_anchor = 10.0 - budget.stop_offset + budget.first_renewal / 2  # valid, but not until the renewal
    out = d.feed(ev.NodeChecked(first.request_id, 10.0, ev.NodeStat(77, SESSION), synced=True, relayed_at=old_anchor),
                 10.0)
    assert d.view.leader and "StartJob" not in d.kinds(out)
    renewal = 10.0 + budget.first_renewal
    (second,) = [a for a in d.feed(ev.Tick(), renewal) if _is_heartbeat(a)]
    out = d.feed(ev.NodeChecked(second.request_id, renewal, ev.NodeStat(77, SESSION), synced=True, relayed_at=10.0),
                 renewal + 0.01)
    assert d.kinds(out) == ["StartJob"]


def test_a_new_leader_without_an_anchor_waits_for_the_early_second_heartbeat() -> None:
    d = Driver()
    d.feed(ev.Connected(SESSION, T), 0)
    name = d.own_name()
    d.feed(ev.Created(d.last(act.CreateNode).request_id, 0, f"{PATH}/{name}"), 0)
    d.feed(ev.ChildrenListed(d.last(act.ListChildren).request_id, 0, (name,)), 0)
    first = d.last(act.CheckNode)
    # Nothing was on the wire tickTime/2 before this sync: leadership, but no lease yet.
    out = d.feed(ev.NodeChecked(first.request_id, 0, ev.NodeStat(77, SESSION), synced=True, relayed_at=None), 0.01)
    assert d.view.leader and "StartJob" not in d.kinds(out)
    renewal = 0.01 + d.view.budget.first_renewal
    assert d.core.next_deadline() == pytest.approx(renewal)
    second = [a for a in d.feed(ev.Tick(), renewal) if _is_heartbeat(a)]
    assert len(second) == 1
    out = d.feed(ev.NodeChecked(second[0].request_id, renewal, ev.NodeStat(77, SESSION), synced=True, relayed_at=0.0),
                 renewal + 0.01)
    assert d.kinds(out) == ["StartJob"]


def test_connection_watch_event_is_not_a_deletion() -> None:
    d = Driver()
    d.feed(ev.Connected(SESSION, T), 0)
    name = d.own_name(6)
    d.feed(ev.Created(d.last(act.CreateNode).request_id, 0, f"{PATH}/{name}"), 0)
    pred = "zkl-" + "f" * 32 + "-0000000005"
    d.feed(ev.ChildrenListed(d.last(act.ListChildren).request_id, 0, (pred, name, "junk")), 0)
    assert d.view.phase is Phase.FOLLOWING and d.view.predecessor == pred
    assert d.last(act.CheckNode).path == f"{PATH}/{pred}"
    out = d.feed(ev.WatchFired(f"{PATH}/{pred}", ev.WatchKind.CONNECTION), 0.1)
    assert d.kinds(out) == []
    out = d.feed(ev.WatchFired(f"{PATH}/{pred}", ev.WatchKind.DELETED), 0.2)
    assert [a.path for a in _heartbeats(out)] == [f"{PATH}/{name}"]  # it was the lowest: no listing


def test_deleting_the_lowest_predecessor_lists_reads_and_confirms_in_one_round_trip() -> None:
    """The deletion of the lowest node sends the listing, the leader's claim, the
    heartbeat (sync + exists) and the read of the freeze and handover markers together
    (a candidate of higher priority may have joined since our last listing:
    preference.py). The read goes behind the heartbeat's sync, so it needs no sync of
    its own; answered in that order, the read's answer starts the job: one round trip
    after the watch, one sync in it."""
    d = Driver()
    d.markers = None
    pred = _candidate(5)
    name = _follow(d, pred)
    out = d.feed(ev.WatchFired(f"{PATH}/{pred}", ev.WatchKind.DELETED), 1.0)
    requests = [a for a in out if isinstance(a, (act.ListChildren, act.ReadNodes, act.CheckNode))]
    assert [type(a).__name__ for a in requests] == ["ListChildren", "CheckNode", "ReadNodes"]
    read = requests[2]
    assert isinstance(read, act.ReadNodes) and not read.sync and read.paths == (f"{PATH}-frozen", f"{PATH}-handover")
    (beat,) = _heartbeats(out)
    assert beat.path == f"{PATH}/{name}" and beat.watch
    d.feed(ev.ChildrenListed(d.last(act.ListChildren).request_id, 1.0, (name,)), 1.0)
    assert d.view.phase is Phase.CONFIRMING and d.view.predecessor is None and d.view.position == 0
    out = d.feed(ev.NodeChecked(beat.request_id, 1.0, ev.NodeStat(czxid=88, ephemeral_owner=SESSION), synced=True,
                                relayed_at=1.0), 1.01)
    assert d.kinds(out) == [] and not d.view.leader  # the markers' answer is still due
    out = d.feed(ev.NodesRead(read.request_id, 1.0, (None, None)), 1.01)
    assert d.kinds(out) == ["StartJob", "ListChildren", "PublishLeadership"]
    assert d.last(act.StartJob).token == 88 and d.view.phase is Phase.LEADING


def test_a_confirmation_that_finds_our_node_gone_rejoins() -> None:
    """The heartbeat is what proves our node still stands: deleted meanwhile (an
    operator, a lost-reply recovery), the daemon joins again instead of leading."""
    d = Driver()
    pred = _candidate(5)
    name = _follow(d, pred)
    (beat,) = _heartbeats(d.feed(ev.WatchFired(f"{PATH}/{pred}", ev.WatchKind.DELETED), 1.0))
    d.feed(ev.ChildrenListed(d.last(act.ListChildren).request_id, 1.0, (name,)), 1.0)
    out = d.feed(ev.NodeChecked(beat.request_id, 1.0, None, synced=True, relayed_at=1.0), 1.01)
    assert d.kinds(out) == ["CreateNode"] and not d.view.leader and d.view.node is None


def test_deleting_a_predecessor_with_candidates_below_it_lists_again() -> None:
    """Someone between the lowest node and us may remain: list, follow the next one,
    and confirm at once when that one, now the lowest, goes."""
    d = Driver()
    lowest, pred = _candidate(4, "a"), _candidate(5)
    name = _follow(d, lowest, pred)
    assert d.view.position == 2
    out = d.feed(ev.WatchFired(f"{PATH}/{pred}", ev.WatchKind.DELETED), 1.0)
    assert len(_listings(out)) == 1 and len(_heartbeats(out)) == 1  # pipelined behind the listing
    d.feed(ev.ChildrenListed(d.last(act.ListChildren).request_id, 1.0, (lowest, name)), 1.0)
    assert d.view.predecessor == lowest and d.view.position == 1
    # The heartbeat's answer comes after the listing's: it must not make a follower lead.
    d.beat(1.01)
    assert not d.view.leader and d.view.phase is Phase.FOLLOWING
    out = d.feed(ev.WatchFired(f"{PATH}/{lowest}", ev.WatchKind.DELETED), 2.0)
    assert len(_listings(out)) == 1 and [b.path for b in _heartbeats(out)] == [f"{PATH}/{name}"]


def test_after_a_listing_the_confirming_heartbeat_is_already_on_its_way() -> None:
    """The predecessor was not the lowest of our (old) listing, but everyone below it
    has left since: the new listing and the heartbeat go out together, and the
    heartbeat's answer, handled after the listing's, makes us lead: one round trip."""
    d = Driver()
    lowest, pred = _candidate(4, "a"), _candidate(5)
    name = _follow(d, lowest, pred)
    out = d.feed(ev.WatchFired(f"{PATH}/{pred}", ev.WatchKind.DELETED), 1.0)
    assert [type(a).__name__ for a in out if not isinstance(a, act.Log)] == [
        "ListChildren", "CreateNode", "CheckNode", "ReadNodes"]  # the create: core/claim.py
    out = d.feed(ev.ChildrenListed(d.last(act.ListChildren).request_id, 1.0, (name,)), 1.0)
    assert _heartbeats(out) == [] and d.view.phase is Phase.CONFIRMING
    out = d.beat(1.01)
    assert d.view.leader and "StartJob" in d.kinds(out)


def test_a_persistent_look_alike_does_not_count_as_a_candidate_below_us() -> None:
    """A persistent node shaped like ours between the lowest node and us is no
    candidate: once known, the lowest node is our predecessor, and its deletion
    confirms at once, pipelined behind the listing."""
    d = Driver()
    lowest, junk = _candidate(2, "a"), _candidate(4, "e")
    name = _follow(d, lowest, junk)
    d.feed(ev.NodeChecked(d.last(act.CheckNode).request_id, 0, ev.NodeStat(3, ephemeral_owner=0)), 0)
    d.feed(ev.ChildrenListed(d.last(act.ListChildren).request_id, 0.1, (lowest, junk, name)), 0.1)
    assert d.view.predecessor == lowest and d.view.position == 1
    out = d.feed(ev.WatchFired(f"{PATH}/{lowest}", ev.WatchKind.DELETED), 1.0)
    assert len(_listings(out)) == 1 and [b.path for b in _heartbeats(out)] == [f"{PATH}/{name}"]
    d.feed(ev.ChildrenListed(d.last(act.ListChildren).request_id, 1.0, (junk, name)), 1.0)
    assert d.view.phase is Phase.CONFIRMING


def test_the_fast_confirmation_waits_for_a_listing_in_flight_and_skips_a_leave() -> None:
    """kazoo answers requests and fires watches on two threads, so a listing in flight
    may still show the deleted predecessor after its deletion: confirming now would let
    that answer unseat the new leader ("a lower node appeared"). Its answer decides
    instead; here it still shows the predecessor (a server behind the deletion after a
    reconnect), which is watched again, and its deletion then confirms at once. A
    follower that is leaving does not confirm at all."""
    d = Driver()
    pred = _candidate(5)
    name = _follow(d, pred)
    d.feed(ev.Suspended(), 0.5)
    d.feed(ev.Connected(SESSION, T), 0.6)  # the resync lists the queue again
    out = d.feed(ev.WatchFired(f"{PATH}/{pred}", ev.WatchKind.DELETED), 0.7)
    assert _heartbeats(out) == [] and _listings(out) == [] and d.view.phase is Phase.FOLLOWING
    d.feed(ev.ChildrenListed(d.last(act.ListChildren).request_id, 0.7, (pred, name)), 0.8)
    check = d.last(act.CheckNode)
    assert check.path == f"{PATH}/{pred}" and check.watch
    d.feed(ev.NodeChecked(check.request_id, 0.8, ev.NodeStat(5, ephemeral_owner=0x77)), 0.8)
    out = d.feed(ev.WatchFired(f"{PATH}/{pred}", ev.WatchKind.DELETED), 0.9)
    assert len(_listings(out)) == 1 and [b.path for b in _heartbeats(out)] == [f"{PATH}/{name}"]
    assert not any(isinstance(a, act.Log) and a.event == "leadership_lost" for a in d.actions)

    leaving = Driver()
    _follow(leaving, pred)
    leaving.feed(ev.ShutdownRequested("SIGTERM"), 0.5)
    out = leaving.feed(ev.WatchFired(f"{PATH}/{pred}", ev.WatchKind.DELETED), 0.6)
    assert _heartbeats(out) == [] and leaving.view.phase is Phase.LEAVING


def test_lost_create_reply_finds_own_node_instead_of_creating_a_ghost() -> None:
    d = Driver()
    d.feed(ev.Connected(SESSION, T), 0)
    create = d.last(act.CreateNode)
    d.feed(ev.Suspended(), 0.1)
    d.feed(ev.RequestFailed(create.request_id, 0, ev.Failure.CONNECTION), 0.1)
    out = d.feed(ev.Connected(SESSION, T), 0.5)
    assert d.kinds(out) == ["ListChildren"]
    assert d.last(act.ListChildren).sync  # a lagging server must not hide the create
    name = d.own_name(3)
    out = d.feed(ev.ChildrenListed(d.last(act.ListChildren).request_id, 0.5, (name,)), 0.5)
    assert "CreateNode" not in d.kinds(out) and d.view.node == name


def test_a_create_that_landed_twice_keeps_the_node_the_daemon_stands_on() -> None:
    """The recovery listing missed the first create (served before it was visible), so
    the daemon created again under the same id; the next listing shows both. Deleting
    'all but the first' would delete the current node and leave the daemon waiting on
    itself forever."""
    d = Driver()
    d.feed(ev.Connected(SESSION, T), 0)
    first_create = d.last(act.CreateNode)
    d.feed(ev.RequestFailed(first_create.request_id, 0, ev.Failure.CONNECTION), 0.1)
    d.feed(ev.ChildrenListed(d.last(act.ListChildren).request_id, 0.1, ()), 0.1)
    second_create = d.last(act.CreateNode)
    assert second_create is not first_create
    earlier, current = d.own_name(3), d.own_name(4)
    d.feed(ev.Created(second_create.request_id, 0.2, f"{PATH}/{current}"), 0.2)
    out = d.feed(ev.ChildrenListed(d.last(act.ListChildren).request_id, 0.2, (earlier, current)), 0.2)
    assert [a.path for a in out if isinstance(a, act.DeleteNode)] == [f"{PATH}/{earlier}"]
    assert d.view.node == current


def test_a_follower_learns_at_once_that_its_own_node_was_deleted() -> None:
    d = Driver()
    d.feed(ev.Connected(SESSION, T), 0)
    name = d.own_name(6)
    d.feed(ev.Created(d.last(act.CreateNode).request_id, 0, f"{PATH}/{name}"), 0)
    pred = "zkl-" + "f" * 32 + "-0000000005"
    out = d.feed(ev.ChildrenListed(d.last(act.ListChildren).request_id, 0, (pred, name)), 0)
    checks = {a.path: a for a in out if isinstance(a, act.CheckNode)}
    assert set(checks) == {f"{PATH}/{pred}", f"{PATH}/{name}"} and all(c.watch for c in checks.values())
    d.feed(ev.NodeChecked(checks[f"{PATH}/{name}"].request_id, 0, ev.NodeStat(9, SESSION)), 0)
    out = d.feed(ev.WatchFired(f"{PATH}/{name}", ev.WatchKind.DELETED), 1.0)
    assert d.kinds(out) == ["CreateNode"] and d.view.node is None
    # After a reconnect the watch is armed again (kazoo forgot it).
    d2 = Driver()
    d2.feed(ev.Connected(SESSION, T), 0)
    d2.feed(ev.Created(d2.last(act.CreateNode).request_id, 0, f"{PATH}/{d2.own_name(6)}"), 0)
    out = d2.feed(ev.ChildrenListed(d2.last(act.ListChildren).request_id, 0, (pred, d2.own_name(6))), 0)
    own = [a for a in out if isinstance(a, act.CheckNode) and a.path.endswith(d2.own_name(6))][0]
    d2.feed(ev.NodeChecked(own.request_id, 0, ev.NodeStat(9, SESSION)), 0)
    d2.feed(ev.Suspended(), 0.5)
    d2.feed(ev.Connected(SESSION, T), 0.6)
    out = d2.feed(ev.ChildrenListed(d2.last(act.ListChildren).request_id, 0.6, (pred, d2.own_name(6))), 0.6)
    assert any(isinstance(a, act.CheckNode) and a.path.endswith(d2.own_name(6)) for a in out)


def test_shutdown_deletes_the_node_only_after_the_job_is_reaped() -> None:
    d = Driver()
    d.lead()
    out = d.feed(ev.ShutdownRequested("SIGTERM"), 0.5)
    assert d.kinds(out) == ["SignalJob", "AnnounceStopping"]  # systemd hears STOPPING=1 at once
    assert "DeleteNode" not in d.kinds(d.feed(ev.Tick(), 1.0))
    d.beat(1.0)
    out = d.feed(ev.JobExited(-15), 1.1)
    assert d.kinds(out) == ["DeleteNode"]
    out = d.feed(ev.Deleted(d.last(act.DeleteNode).request_id, 1.6), 1.61)
    assert d.kinds(out) == ["CloseSession", "Exit"] and d.last(act.Exit).code == exitcodes.OK
    assert any(isinstance(a, act.Log) and a.event == "handover" for a in d.actions)


def test_a_job_that_survives_sigkill_never_lets_the_session_close() -> None:
    """A job in uninterruptible sleep (or a stopped guardian) is never reaped: closing
    the session would delete the node and start the successor beside it. The daemon
    exits with the session open instead, so ZooKeeper expires it no earlier than the
    lease allows."""
    d = Driver()
    d.lead()
    d.feed(ev.ShutdownRequested("SIGTERM"), 0.5)
    d.feed(ev.Tick(), 0.5 + STOP)
    assert d.last(act.KillJob)
    out = d.feed(ev.Tick(), 0.5 + STOP + 10.0)
    assert d.kinds(out) == ["Exit"] and d.last(act.Exit).code == exitcodes.UNREAPED
    assert not any(isinstance(a, (act.CloseSession, act.DeleteNode, act.Reopen)) for a in d.actions)
    assert any(isinstance(a, act.Log) and a.event == "job_not_reaped" for a in out)


def test_a_reload_never_reopens_beside_an_unreaped_job() -> None:
    d = Driver()
    d.lead()
    d.feed(ev.ReopenRequested("zookeeper settings changed"), 0.5)
    d.feed(ev.Tick(), 0.5 + STOP)
    out = d.feed(ev.Tick(), 0.5 + STOP + 10.0)
    assert d.kinds(out) == ["Exit"] and d.last(act.Exit).code == exitcodes.UNREAPED
    assert not any(isinstance(a, (act.CloseSession, act.Reopen)) for a in d.actions)


def test_stopping_the_job_comes_before_any_log_line() -> None:
    """Logging may block on a stalled reader of the daemon's stderr: the kill goes first."""
    d = Driver()
    d.lead()
    out = d.feed(ev.WatchFired(d.last(act.StartJob).znode, ev.WatchKind.DELETED), 1.0)
    assert isinstance(out[0], act.KillJob)
    d = Driver()
    d.lead()
    out = d.feed(ev.Tick(), d.view.budget.stop_offset + 0.01)
    assert isinstance(out[0], act.SignalJob) and any(isinstance(a, act.Log) for a in out)


def test_stop_timeout_escalates_to_sigkill() -> None:
    d = Driver()
    d.lead()
    d.feed(ev.ShutdownRequested("SIGINT"), 1.0)
    assert d.kinds(d.feed(ev.Tick(), 1.0 + STOP)) == ["KillJob"]


def test_session_lost_with_a_live_job_kills_it_at_once() -> None:
    d = Driver()
    d.lead()
    out = d.feed(ev.SessionLost("expired_session"), 0.5)
    assert d.kinds(out) == ["KillJob"]
    out = d.feed(ev.Connected(SESSION + 1, T), 0.6)
    assert "CreateNode" in d.kinds(out)


def test_restart_policy_backs_off_on_quick_exits() -> None:
    d = Driver(OnExit.RESTART)
    d.lead()
    now = 0.0
    for expected in (0.5, 1.0, 2.0):
        now += 0.1
        out = d.feed(ev.JobExited(1), now)
        (scheduled,) = [a for a in out if isinstance(a, act.Log) and a.event == "job_restart_scheduled"]
        assert scheduled.fields["delay"] == pytest.approx(expected)
        restart_at = now + expected
        d.beat(now)
        while True:  # a healthy server keeps answering heartbeats at once meanwhile
            now = d.core.next_deadline()
            out = d.feed(ev.Tick(), now)
            out += d.beat(now)
            if "StartJob" in d.kinds(out):
                break
            assert now <= restart_at + 1e-9  # never started before its time
        assert now == pytest.approx(restart_at)
        d.feed(ev.JobStarted(1000), now)


def test_resign_policy_deletes_node_and_rejoins_at_the_back() -> None:
    d = Driver(OnExit.RESIGN)
    d.lead()
    out = d.feed(ev.JobExited(1), 0.2)
    assert d.kinds(out) == ["DeleteNode"]
    out = d.feed(ev.Deleted(d.last(act.DeleteNode).request_id, 0.2), 0.21)
    assert d.kinds(out) == ["CreateNode"] and not d.view.leader


def test_exit_policy_hands_over_then_exits_3() -> None:
    d = Driver(OnExit.EXIT)
    d.lead()
    assert d.kinds(d.feed(ev.JobExited(1), 0.2)) == ["DeleteNode"]
    out = d.feed(ev.Deleted(d.last(act.DeleteNode).request_id, 0.2), 0.21)
    assert d.kinds(out) == ["CloseSession", "Exit"] and d.last(act.Exit).code == exitcodes.JOB_EXITED


def test_negotiated_timeout_shorter_than_configured_shortens_the_lease() -> None:
    d = Driver(session_timeout=10.0)
    d.feed(ev.Connected(SESSION, negotiated_timeout=4.0), 0)
    assert d.view.budget.session_timeout == 4.0
    assert any(isinstance(a, act.Log) and a.event == "session_timeout_reduced" for a in d.actions)


def test_operator_deleting_the_leader_node_stops_job_and_rejoins() -> None:
    d = Driver()
    d.lead()
    out = d.feed(ev.WatchFired(d.last(act.StartJob).znode, ev.WatchKind.DELETED), 1.0)
    # No graceful stop: the successor saw the same deletion and may start at once.
    assert d.kinds(out) == ["KillJob", "CreateNode"]
    assert not d.view.leader


def test_auth_failure_exits_77() -> None:
    d = Driver()
    out = d.feed(ev.AuthFailed(), 0)
    assert d.kinds(out) == ["CloseSession", "Exit"] and d.last(act.Exit).code == exitcodes.AUTH_FAILED


def test_auth_failure_of_a_leader_leaves_in_order() -> None:
    """Stop, reap, delete, close: never close the session (the successor starts at
    once) while the job may still run."""
    d = Driver()
    d.lead()
    out = d.feed(ev.AuthFailed(), 0.6)
    assert d.kinds(out) == ["SignalJob"]
    out = d.feed(ev.JobExited(-15), 0.7)
    assert d.kinds(out) == ["DeleteNode"]
    out = d.feed(ev.RequestFailed(d.last(act.DeleteNode).request_id, 0.7, ev.Failure.CONNECTION), 0.7)
    assert d.kinds(out) == ["CloseSession", "Exit"] and d.last(act.Exit).code == exitcodes.AUTH_FAILED


def test_a_refused_publish_is_only_a_warning() -> None:
    """An election path whose ACL lets a host create, delete and read but not write:
    exiting on the informative publish would make every successor exit in turn."""
    d = Driver()
    d.lead()
    publish = d.last(act.PublishLeadership)
    out = d.feed(ev.RequestFailed(publish.request_id, 0.1, ev.Failure.NO_AUTH, "NoAuth"), 0.1)
    assert d.kinds(out) == []
    assert [a.event for a in out if isinstance(a, act.Log)] == ["publish_failed"]
    assert d.view.leader and d.view.job.value == "running"


def test_a_refused_request_while_leading_stops_and_reaps_the_job_before_leaving() -> None:
    d = Driver()
    d.lead()
    beat = d.feed(ev.Tick(), d.view.budget.first_renewal)
    (check,) = [a for a in beat if _is_heartbeat(a)]
    out = d.feed(ev.RequestFailed(check.request_id, 0.2, ev.Failure.NO_AUTH, "NoAuth"), 0.2)
    assert d.kinds(out) == ["SignalJob"]  # not CloseSession, not Exit: the job still runs
    out = d.feed(ev.JobExited(-15), 0.3)
    assert d.kinds(out) == ["DeleteNode"]
    out = d.feed(ev.RequestFailed(d.last(act.DeleteNode).request_id, 0.3, ev.Failure.NO_AUTH, "NoAuth"), 0.3)
    assert d.kinds(out) == ["CloseSession", "Exit"] and d.last(act.Exit).code == exitcodes.AUTH_FAILED


def test_persistent_node_shaped_like_ours_is_skipped() -> None:
    d = Driver()
    d.feed(ev.Connected(SESSION, T), 0)
    name = d.own_name(6)
    d.feed(ev.Created(d.last(act.CreateNode).request_id, 0, f"{PATH}/{name}"), 0)
    junk = "zkl-" + "e" * 32 + "-0000000001"
    d.feed(ev.ChildrenListed(d.last(act.ListChildren).request_id, 0, (junk, name)), 0)
    out = d.feed(ev.NodeChecked(d.last(act.CheckNode).request_id, 0, ev.NodeStat(3, ephemeral_owner=0)), 0)
    assert d.kinds(out) == ["ListChildren"]
    d.feed(ev.ChildrenListed(d.last(act.ListChildren).request_id, 0.1, (junk, name)), 0.1)
    check = d.last(act.CheckNode)
    assert check.path == f"{PATH}/{name}"  # confirming its own node: it leads


def test_create_landing_after_health_withdrawal_is_taken_back() -> None:
    from zkleader.core.settings import HealthPolicy

    ids = (f"{i:032x}" for i in itertools.count(1))
    settings = Settings(PATH, "me", T, signal.SIGTERM, STOP, OnExit.RESTART, 0.5, health=HealthPolicy(1.0, 1, 1),
                        tick_time=0.2)
    core = Leadership(settings, Identity("h", 1, "0", "now"), new_candidacy_id=lambda: next(ids))
    out = core.handle(ev.Tick(), 0)
    assert [type(a).__name__ for a in out] == ["RunHealthCheck"]
    core.handle(ev.HealthChecked(True), 0.1)
    out = core.handle(ev.Connected(SESSION, T), 0.2)
    (create,) = [a for a in out if isinstance(a, act.CreateNode)]
    core.handle(ev.Tick(), 1.1)
    core.handle(ev.HealthChecked(False, "disk full"), 1.2)
    assert core.snapshot().withdrawn
    out = core.handle(ev.Created(create.request_id, 0.2, f"{PATH}/zkl-{core.snapshot().candidacy_id}-0000000001"), 1.3)
    assert [type(a).__name__ for a in out if not isinstance(a, act.Log)] == ["DeleteNode"]
    assert not core.snapshot().leader


def test_restart_backoff_is_capped_however_long_the_crash_loop() -> None:
    d = Driver(OnExit.RESTART)
    d.lead()
    d.core.job.quick_exits = 5000  # a crash loop that has run for days
    out = d.feed(ev.JobExited(1), 1.0)
    (scheduled,) = [a for a in out if isinstance(a, act.Log) and a.event == "job_restart_scheduled"]
    assert scheduled.fields["delay"] == 60.0


def test_only_answers_that_went_through_the_zookeeper_leader_feed_the_lease() -> None:
    d = Driver()
    d.lead(now=0.0)
    d.feed(ev.Tick(), d.view.budget.heartbeat_interval)
    beat = d.last(act.CheckNode)
    assert beat.sync
    # An exists() answered by a follower server without the sync: proves nothing.
    d.feed(ev.NodeChecked(beat.request_id, 1.0, ev.NodeStat(77, SESSION), synced=False), 1.0)
    assert d.view.t_ok == 0.0
    assert d.kinds(d.feed(ev.Tick(), d.view.budget.stop_offset)) == ["SignalJob"]
