"""When the pure core asks for transition hooks (core/hooks.py): which, in what order,
with what fields, and never ahead of a safety action in the same step."""

from __future__ import annotations

import dataclasses

from test_leadership import PATH, SESSION, STOP, Driver, _candidate, _follow

from zkleader.core import actions as act
from zkleader.core import events as ev
from zkleader.core.hooks import KINDS
from zkleader.core.settings import OnExit


def hooked(on_exit: OnExit = OnExit.RESTART, kinds: tuple[str, ...] = KINDS) -> Driver:
    d = Driver(on_exit)
    d.core.settings = dataclasses.replace(d.core.settings, hooks=frozenset(kinds))
    return d


def hooks(actions: list[act.Action]) -> list[str]:
    return [a.kind for a in actions if isinstance(a, act.RunHook)]


def fields(d: Driver, kind: str) -> dict[str, str]:
    found = [a for a in d.actions if isinstance(a, act.RunHook) and a.kind == kind]
    assert found, f"no {kind} hook in {d.actions}"
    return found[-1].fields


def test_no_hook_is_emitted_unless_configured() -> None:
    d = Driver()  # Settings.hooks empty: production without a hooks section, the simulation
    d.lead()
    d.feed(ev.ShutdownRequested("SIGTERM"), 0.5)
    d.feed(ev.JobExited(-15), 0.6)
    d.feed(ev.Deleted(d.last(act.DeleteNode).request_id, 0.7), 0.7)
    assert hooks(d.actions) == []


def test_on_leader_waits_for_the_job_to_have_started() -> None:
    d = hooked()
    d.feed(ev.Connected(SESSION, 4.0), 0)
    name = d.own_name()
    d.feed(ev.Created(d.last(act.CreateNode).request_id, 0, f"{PATH}/{name}"), 0)
    d.feed(ev.ChildrenListed(d.last(act.ListChildren).request_id, 0, (name,)), 0)
    confirmed = d.feed(ev.NodeChecked(d.last(act.CheckNode).request_id, 0, ev.NodeStat(77, SESSION), synced=True,
                                      relayed_at=0), 0)
    assert "StartJob" in d.kinds(confirmed) and hooks(confirmed) == []
    started = d.feed(ev.JobStarted(pid=999), 0.01)
    assert hooks(started) == ["on_leader"]
    f = fields(d, "on_leader")
    assert f["hook"] == "on_leader" and f["from"] == "none" and f["to"] == "leader"
    assert f["fencing_token"] == "77" and f["election"] == PATH and f["candidate"] == "me"
    assert f["leader"] == "me" and f["leader_host"] == "host"


def test_a_restarted_job_does_not_announce_the_same_leadership_twice() -> None:
    d = hooked()
    d.lead()
    d.feed(ev.JobExited(1), 0.1)
    d.feed(ev.Tick(), 5.0)
    d.beat(5.0)
    d.feed(ev.Tick(), 5.0)
    assert d.last(act.StartJob) and sum(isinstance(a, act.StartJob) for a in d.actions) == 2
    d.feed(ev.JobStarted(pid=1000), 5.01)
    assert hooks(d.actions) == ["on_leader"]


def test_a_follower_announces_itself_once_with_the_leaders_node() -> None:
    d = hooked()
    leader = _candidate(1)
    _follow(d, leader)
    assert hooks(d.actions) == ["on_follower"]
    f = fields(d, "on_follower")
    assert f["from"] == "none" and f["to"] == "follower" and f["leader_node"] == leader
    assert "fencing_token" not in f and "leader_host" not in f  # not known to a follower
    # A new predecessor (someone queued between us and the leader left) is no transition.
    d.feed(ev.ChildrenListed(d.last(act.ListChildren).request_id, 0.1, (leader, _candidate(2), d.own_name(6))), 0.1)
    assert hooks(d.actions) == ["on_follower"]


def test_resign_runs_lost_before_following_again() -> None:
    d = hooked()
    d.lead()
    out = d.feed(ev.ResignRequested(), 1.0)
    # The job's stop comes first in the step; the hook is only queued after it.
    assert d.kinds(out) == ["SignalJob", "RunHook"]
    assert fields(d, "on_lost")["reason"] == "resign requested" and fields(d, "on_lost")["from"] == "leader"
    d.feed(ev.JobExited(-15), 1.1)
    d.feed(ev.Deleted(d.last(act.DeleteNode).request_id, 1.2), 1.2)  # handed over: on_lost not again
    name = d.own_name(9)
    d.feed(ev.Created(d.last(act.CreateNode).request_id, 1.3, f"{PATH}/{name}"), 1.3)
    d.feed(ev.ChildrenListed(d.last(act.ListChildren).request_id, 1.3, (_candidate(8), name)), 1.3)
    assert hooks(d.actions) == ["on_leader", "on_lost", "on_follower"]
    assert fields(d, "on_follower")["from"] == "none"


def test_an_operator_deleting_the_node_kills_first_then_queues_on_lost() -> None:
    d = hooked()
    d.lead()
    out = d.feed(ev.WatchFired(d.last(act.StartJob).znode, ev.WatchKind.DELETED), 1.0)
    names = [type(a).__name__ for a in out if not isinstance(a, act.Log)]
    assert names[0] == "KillJob" and names.index("CreateNode") < names.index("RunHook")
    assert fields(d, "on_lost")["reason"] == "own node deleted"
    assert fields(d, "on_lost")["fencing_token"] == "77"


def test_session_loss_runs_on_lost_with_the_reason() -> None:
    d = hooked()
    d.lead()
    out = d.feed(ev.SessionLost("expired_session"), 0.5)
    assert [type(a).__name__ for a in out if not isinstance(a, act.Log)] == ["KillJob", "RunHook"]
    assert fields(d, "on_lost")["reason"] == "session lost: expired_session"


def test_the_lease_running_out_is_a_loss_too() -> None:
    d = hooked()
    d.lead(now=10.0)
    d.feed(ev.Suspended(), 10.5)
    d.feed(ev.SessionLost("expired_session"), 30.0)
    assert hooks(d.actions) == ["on_leader", "on_lost"]


def test_shutdown_of_a_leader_runs_lost_then_stop_and_stop_before_exit() -> None:
    d = hooked()
    d.lead()
    d.feed(ev.ShutdownRequested("SIGTERM"), 0.5)
    d.feed(ev.JobExited(-15), 1.1)
    out = d.feed(ev.Deleted(d.last(act.DeleteNode).request_id, 1.6), 1.61)
    assert [type(a).__name__ for a in out if not isinstance(a, act.Log)] == ["CloseSession", "RunHook", "Exit"]
    assert hooks(d.actions) == ["on_leader", "on_lost", "on_stop"]
    assert fields(d, "on_lost")["reason"] == "shutdown (SIGTERM)"
    stop = fields(d, "on_stop")
    assert stop["from"] == "none" and stop["to"] == "stopped" and stop["reason"] == "shutdown (SIGTERM)"


def test_an_unreaped_job_still_gets_on_stop_before_the_exit() -> None:
    d = hooked()
    d.lead()
    d.feed(ev.ShutdownRequested("SIGTERM"), 0.5)
    d.feed(ev.Tick(), 0.5 + STOP)
    out = d.feed(ev.Tick(), 0.5 + STOP + 10.0)
    assert [type(a).__name__ for a in out if not isinstance(a, act.Log)] == ["RunHook", "Exit"]
    assert hooks(d.actions)[-1] == "on_stop"


def test_a_follower_stopping_runs_only_on_stop() -> None:
    d = hooked()
    _follow(d, _candidate(1))
    d.feed(ev.ShutdownRequested("SIGTERM"), 0.5)
    d.feed(ev.Deleted(d.last(act.DeleteNode).request_id, 0.6), 0.6)
    assert hooks(d.actions) == ["on_follower", "on_stop"]
    assert fields(d, "on_stop")["from"] == "follower"


def test_only_the_configured_kinds_are_emitted_but_from_tracks_every_role() -> None:
    d = hooked(kinds=("on_lost", "on_stop"))
    d.lead()
    d.feed(ev.ShutdownRequested("SIGTERM"), 0.5)
    d.feed(ev.JobExited(-15), 0.6)
    d.feed(ev.Deleted(d.last(act.DeleteNode).request_id, 0.7), 0.7)
    assert hooks(d.actions) == ["on_lost", "on_stop"]


def test_leadership_lost_before_the_job_started_announces_no_leader_but_the_loss() -> None:
    d = hooked()
    d.feed(ev.Connected(SESSION, 4.0), 0)
    name = d.own_name()
    d.feed(ev.Created(d.last(act.CreateNode).request_id, 0, f"{PATH}/{name}"), 0)
    d.feed(ev.ChildrenListed(d.last(act.ListChildren).request_id, 0, (name,)), 0)
    d.feed(ev.NodeChecked(d.last(act.CheckNode).request_id, 0, ev.NodeStat(77, SESSION), synced=True, relayed_at=0), 0)
    d.feed(ev.SessionLost("expired_session"), 0.01)
    d.feed(ev.JobStarted(pid=999), 0.02)  # too late: leadership is gone
    assert hooks(d.actions) == ["on_lost"]
    assert fields(d, "on_lost")["from"] == "leader"


# ------------------------------------------------------------------ before_lead


def confirmed(d: Driver, now: float = 0.0) -> list[act.Action]:
    """Connect, create, list, confirm: leadership taken, the job not started yet."""
    d.feed(ev.Connected(SESSION, 4.0), now)
    name = d.own_name()
    d.feed(ev.Created(d.last(act.CreateNode).request_id, now, f"{PATH}/{name}"), now)
    d.feed(ev.ChildrenListed(d.last(act.ListChildren).request_id, now, (name,)), now)
    check = d.last(act.CheckNode)
    d.answered.add(check.request_id)
    return d.feed(ev.NodeChecked(check.request_id, now, ev.NodeStat(77, SESSION), synced=True, relayed_at=now), now)


def gated(timeout: float = 1.0) -> Driver:
    d = hooked(kinds=(*KINDS, "before_lead"))
    d.core.settings = dataclasses.replace(d.core.settings, hook_timeout=timeout)
    return d


def test_before_lead_runs_before_the_job_and_a_pass_starts_it_at_once() -> None:
    d = gated()
    out = confirmed(d)
    assert "StartJob" not in d.kinds(out) and hooks(out) == ["before_lead"]
    run = d.last(act.RunHook)
    assert run.deadline == 1.0  # hooks.timeout from now, well inside the lease
    assert run.fields["fencing_token"] == "77" and run.fields["to"] == "leader"
    assert hooks(d.feed(ev.Tick(), 0.5)) == [] and "StartJob" not in d.kinds(d.actions)  # asked once
    out = d.feed(ev.BeforeLeadChecked(77, True, "exit 0"), 0.6)
    assert "StartJob" in d.kinds(out)
    d.feed(ev.JobStarted(pid=5), 0.61)
    assert hooks(d.actions) == ["before_lead", "on_leader"]


def test_before_lead_never_outlives_the_lease_in_force() -> None:
    d = gated(timeout=60.0)
    confirmed(d)
    assert d.last(act.RunHook).deadline == d.core.lease.kill_by()


def test_a_veto_steps_back_to_the_end_of_the_queue_and_says_why() -> None:
    d = gated()
    confirmed(d)
    out = d.feed(ev.BeforeLeadChecked(77, False, "exit 1: replica 40 s behind"), 0.5)
    assert d.kinds(out) == ["DeleteNode", "RunHook"]
    assert not any(isinstance(a, act.StartJob) for a in d.actions)
    veto = [a for a in d.actions if isinstance(a, act.Log) and a.event == "before_lead_vetoed"]
    assert veto and veto[0].fields["detail"] == "exit 1: replica 40 s behind"
    assert fields(d, "on_lost")["reason"] == "before_lead vetoed: exit 1: replica 40 s behind"
    out = d.feed(ev.Deleted(d.last(act.DeleteNode).request_id, 0.6), 0.6)
    assert "CreateNode" not in d.kinds(out)  # not at once: alone, it would lead and veto again in a loop
    assert d.core.next_deadline() == 1.5
    assert "CreateNode" in d.kinds(d.feed(ev.Tick(), 1.5))  # queues again, at the back


def test_a_verdict_for_an_earlier_leadership_is_ignored() -> None:
    d = gated()
    confirmed(d)
    d.feed(ev.SessionLost("expired_session"), 0.2)
    assert d.kinds(d.feed(ev.BeforeLeadChecked(77, True, "exit 0"), 0.3)) == []
    assert d.kinds(d.feed(ev.BeforeLeadChecked(77, False, "late"), 0.3)) == []


def test_a_restarted_job_is_not_checked_again() -> None:
    d = gated()
    confirmed(d)
    d.feed(ev.BeforeLeadChecked(77, True, "exit 0"), 0.1)
    d.feed(ev.JobStarted(pid=5), 0.1)
    d.feed(ev.JobExited(1), 0.2)
    d.beat(2.0)
    d.feed(ev.Tick(), 2.0)
    assert sum(isinstance(a, act.StartJob) for a in d.actions) == 2
    assert hooks(d.actions).count("before_lead") == 1


def test_the_window_a_new_leader_leaves_before_lead() -> None:
    from zkleader.core import timing

    window = timing.before_lead_window(10.0, 2.0)
    budget = timing.LeaseBudget(10.0, 0.0, 0.0, 2.0)
    assert window == budget.kill_offset - budget.takeover_lag
    assert round(window, 2) == 4.32
    assert timing.before_lead_window(2.0, 0.2) > 0
