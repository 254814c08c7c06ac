"""Step functions for leading: the heartbeat that renews the lease, confirming and
losing leadership, and the rule that starts, stops and kills the job (``enforce``)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

from . import actions as act
from . import events as ev
from . import claim, exitcodes, follow, hooks, leave, preference, session
from .jobcontrol import JobPhase
from .outbox import Purpose
from .settings import OnExit
from .snapshot import Phase

if TYPE_CHECKING:
    from .leadership import Leadership


def heartbeat(core: Leadership) -> bool:
    """sync + exists() on our own node, with a watch: refreshes the lease, re-checks
    ownership and keeps the deletion watch armed (kazoo drops watches on every
    disconnect). One at a time (``Lease.may_heartbeat``); False when none was sent."""
    node = core.me.node
    if node is None or not core.lease.may_heartbeat():
        return False
    core.lease.heartbeat_sent(core.now)
    core.out.request(Purpose.CHECK_OWN, lambda rid: act.CheckNode(rid, core.path(node), watch=True, sync=True))
    return True


def wants_heartbeat(core: Leadership) -> bool:
    return core.me.leader and core.lease.may_heartbeat() and core.me.node is not None


def on_heartbeat_reply(core: Leadership, reply: ev.Reply) -> None:
    """A heartbeat's answer. Only a heartbeat that went through the ZooKeeper leader
    (sync, then exists) proves the session is kept alive, and only from the moment
    its relayed_at names (timing.py): a follower server cut off from the leader
    still answers plain reads."""
    renewal = core.lease.heartbeat_answered(core.now)
    if isinstance(reply, ev.RequestFailed):
        if reply.failure is ev.Failure.CONNECTION:
            session.resync_if_connected(core)
        return  # any other failure: the next heartbeat on the cadence tries again
    assert isinstance(reply, ev.NodeChecked)
    stat = own_node_holds(core, reply)
    if stat is None:
        return
    me = core.me
    me.own_watched = True
    if reply.synced and reply.relayed_at is not None:
        core.lease.renew(reply.relayed_at)
    if not me.leader and core.phase is Phase.CONFIRMING:
        core.confirmed = Confirmed(stat.czxid, renewal)
        decide(core)


@dataclass(frozen=True)
class Confirmed:
    """A confirming heartbeat's answer: our node stands and is ours (its czxid, the
    fencing token), and when the next heartbeat may anchor a lease of its own."""

    token: int
    renewal: float


def decide(core: Leadership) -> None:
    """The takeover's decision, once the confirming heartbeat and the marker read
    pipelined behind it (preference.confirm) are both answered, whichever comes last:
    lead, hold or yield (preference.may_take_over)."""
    me, confirmed = core.me, core.confirmed
    if confirmed is None or me.leader or core.phase is not Phase.CONFIRMING or core.leave is not None \
            or core.health.withdrawn or not preference.may_take_over(core):
        return
    core.confirmed = None
    # The first heartbeat rarely anchors a lease of its own (only kazoo's pings were
    # answered before it); the next one, tickTime/2 after this answer, does
    # (timing.LeaseBudget.first_renewal).
    core.lease.heartbeat_due = confirmed.renewal
    me.leader = True
    me.token = confirmed.token
    core.phase = Phase.LEADING
    me.leading_since = core.now
    core.job.restart_at = None
    core.job.quick_exits = 0
    core.out.log("leader_acquired", node=me.node, token=me.token)
    hooks.acquired(core)
    preference.on_acquired(core)
    data = {**core.node_data(), "node": me.node, "token": me.token}
    core.out.request(Purpose.PUBLISH, lambda rid: act.PublishLeadership(rid, core.settings.election_path, data))


def own_node_holds(core: Leadership, reply: ev.NodeChecked) -> ev.NodeStat | None:
    """Our node's stat when it exists and belongs to this session; otherwise None, and
    the node is left behind to join again (an operator deleted it, or a session that
    reused its name owns it)."""
    stat = reply.stat
    if stat is None:
        rejoin_without_node(core, "own node deleted")
        return None
    if stat.ephemeral_owner != core.lease.session_id:
        core.out.log("node_not_ours", "error", node=core.me.node, owner=session.hex_id(stat.ephemeral_owner))
        rejoin_without_node(core, "own node is owned by another session")
        return None
    return stat


def on_publish_reply(core: Leadership, reply: ev.Reply) -> None:
    """Only informative: a failure is logged; the heartbeat decides about the node."""
    if isinstance(reply, ev.RequestFailed) and reply.failure is not ev.Failure.CONNECTION:
        core.out.log("publish_failed", "warning", detail=reply.detail)


def rejoin_without_node(core: Leadership, reason: str) -> None:
    """Our node is gone while the session lives: stop leading, join again at the back.
    A new node while the old job is still stopping is safe: no job starts until it is reaped."""
    core.out.log("node_vanished", "warning", node=core.me.node, reason=reason)
    # Whoever is next saw the same deletion and may start its job within
    # milliseconds: no graceful stop while leadership is already gone.
    core.job.kill_now(core.now, reason)
    lose_leadership(core, reason)
    core.forget_candidacy()
    follow.join(core)


def lose_leadership(core: Leadership, reason: str) -> None:
    """Leadership is gone (or never to be trusted again in this candidacy)."""
    if core.me.leader:
        core.out.log("leadership_lost", "warning", reason=reason, token=core.me.token)
        hooks.lost(core, reason)
    core.me.leader = False
    if core.leave is None and core.phase is Phase.LEADING:
        core.phase = Phase.JOINING
    if core.job.alive:
        stop_job(core, reason)


def stop_job(core: Leadership, reason: str) -> None:
    """The graceful stop, with SIGKILL no later than the lease allows."""
    core.job.stop(core.now, reason, core.settings, core.lease.kill_by())


def enforce(core: Leadership) -> None:
    """The safety rule and every deadline, checked after each event."""
    job, now = core.job, core.now
    if job.alive and not _may_run(core):
        _stop_for_cause(core)
    if job.kill_due is not None and now >= job.kill_due:
        job.kill_now(now, "stop_timeout elapsed or the lease ran out")
    core.health.poll(now)
    preference.poll(core)
    if core.retry_at is not None and now >= core.retry_at:
        core.retry_at = None
        follow.retry(core)
    if wants_heartbeat(core) and core.lease.heartbeat_due is not None and now >= core.lease.heartbeat_due:
        heartbeat(core)
    stall = core.lease.stall_deadline
    if stall is not None and now >= stall:
        core.lease.drop_asked()
        core.out.log("heartbeat_unanswered", "warning", lease_left=core.lease.left(now))
        core.out.emit(act.DropConnection())
    claim.step(core)  # a release goes before a leaving daemon's node: the successor finds both gone
    if core.leave is not None:
        leave.progress(core)
    elif core.me.leader and job.phase is JobPhase.NONE and _may_run(core) and core.lease.outlasts_renewal(now):
        if (job.restart_at is None or now >= job.restart_at) and hooks.cleared_to_lead(core):
            node, token, deadlines = core.me.node, core.me.token, core.lease.deadlines()
            assert node is not None and token is not None and deadlines is not None
            job.start(now, token, core.path(node), deadlines)
    deadlines = core.lease.deadlines()
    if deadlines is not None:
        job.guard(deadlines)


def on_job_exited(core: Leadership, event: ev.JobExited) -> None:
    stopped_by_us, ran = core.job.exited(event, core.now)
    if stopped_by_us or not core.me.leader or core.leave is not None:
        return
    match core.settings.on_exit:
        case OnExit.RESTART:
            core.job.schedule_restart(core.now, ran, core.settings)
        case OnExit.RESIGN if core.frozen is not None:
            core.out.log("resign_refused", "warning", reason="the election is frozen: the job restarts instead")
            core.job.schedule_restart(core.now, ran, core.settings)
        case OnExit.RESIGN:
            core.out.log("resigned", "warning", reason="job exited and job.on_exit is resign")
            leave.begin(core, leave.LeaveKind.REJOIN, "job exited (on_exit: resign)")
        case OnExit.EXIT:
            leave.begin(core, leave.LeaveKind.EXIT, "job exited (on_exit: exit)", exitcodes.for_job(event.returncode))


def _may_run(core: Leadership) -> bool:
    return core.me.leader and core.leave is None and core.lease.writable and core.lease.valid_at(core.now)


def _stop_for_cause(core: Leadership) -> None:
    if core.leave is not None:
        stop_job(core, core.leave.reason)
    elif not core.me.leader:
        stop_job(core, "leadership lost")
    elif not core.lease.writable:
        stop_job(core, "read-only connection")
    else:
        reason = "lease expired: no heartbeat answered in time"
        core.out.log("lease_expired", "error", reason=reason, lease_left=core.lease.left(core.now))
        stop_job(core, reason)
