"""Step functions for leaving in order: stop the job, wait until it is reaped, delete
the node (the successor leads at once), then rejoin at the back, exit, or reopen with
a new configuration. Nothing is handed on while a process of the job may live."""

from __future__ import annotations

import enum
import functools
from dataclasses import dataclass
from typing import TYPE_CHECKING

from . import actions as act
from . import events as ev
from . import exitcodes, follow, hooks, lead, preference
from .jobcontrol import JobPhase
from .outbox import Purpose
from .snapshot import Phase

if TYPE_CHECKING:
    from .leadership import Leadership

#: How long a leaving daemon waits for its node's deletion before it exits anyway.
LEAVE_GRACE = 2.0


class LeaveKind(enum.Enum):
    """What follows once the job is reaped and the node deleted."""

    REJOIN = "rejoin"  # queue again at the back (resign, on_exit: resign, health)
    EXIT = "exit"  # close the session and exit the daemon
    REOPEN = "reopen"  # close the session; the daemon starts over with a new configuration


@dataclass
class Leave:
    kind: LeaveKind
    reason: str
    exit_code: int = exitcodes.OK
    deadline: float | None = None
    #: Nodes between ours and the candidate we hand over or yield to (preference.py):
    #: deleted right after our own, so that candidate is lowest when it wakes.
    evict: tuple[str, ...] = ()


def begin(core: Leadership, kind: LeaveKind, reason: str, exit_code: int = exitcodes.OK) -> None:
    deadline = None
    if kind is not LeaveKind.REJOIN:
        deadline = core.now + core.settings.stop_timeout + LEAVE_GRACE
    core.leave = Leave(kind, reason, exit_code, deadline)
    core.phase = Phase.LEAVING
    # A leader that leaves has stopped leading now, not when its node goes: on_lost
    # (say, dropping a virtual IP) runs before the successor can take over.
    hooks.lost(core, reason)
    if core.job.alive:
        lead.stop_job(core, reason)


def on_shutdown(core: Leadership, signal_name: str) -> None:
    if core.leave is not None and core.leave.kind is LeaveKind.EXIT:
        return
    core.out.log("shutting_down", signal=signal_name, leader=core.me.leader)
    begin(core, LeaveKind.EXIT, f"shutdown ({signal_name})")
    core.out.emit(act.AnnounceStopping())


def on_resign(core: Leadership) -> None:
    if not core.me.leader or core.leave is not None:
        core.out.log("resign_ignored", reason="not the leader", position=core.me.position)
        return
    if preference.refuses_resign(core):
        return
    core.out.log("resigning", token=core.me.token)
    begin(core, LeaveKind.REJOIN, "resign requested")


def on_reopen(core: Leadership, reason: str) -> None:
    if core.leave is None or core.leave.kind is LeaveKind.REJOIN:
        core.out.log("leaving_to_reconfigure", reason=reason)
        begin(core, LeaveKind.REOPEN, reason)


def withdraw_if_unhealthy(core: Leadership) -> bool:
    """A create that was in flight when the health check failed, or the host was
    drained, still lands: take that node out of the queue again instead of letting it lead."""
    if not (core.health.withdrawn or core.drained) or core.leave is not None:
        return False
    begin(core, LeaveKind.REJOIN, "drained" if core.drained else "health check failed")
    return True


#: Requests whose refusal costs no safety: the informative leader record, and the
#: preference protocol's writes (without them a handover only takes more hops).
_ADVISORY = (Purpose.PUBLISH, Purpose.EVICT, Purpose.CLEAR_HANDOVER, Purpose.POKE)


def on_refused(core: Leadership, purpose: Purpose, detail: str) -> None:
    """NoAuth: the election path's ACL refuses this client. The published leader
    record is only informative, so a refused publish is a warning (otherwise every
    successor would refuse to lead in turn and no host would lead at all).
    Anything else: leave in order, job reaped before the node or session goes."""
    if purpose in _ADVISORY:
        core.out.log("publish_failed" if purpose is Purpose.PUBLISH else "not_authorized_advisory", "warning",
                     purpose=purpose.value, detail=detail)
        return
    core.out.log("not_authorized", "error", purpose=purpose.value, detail=detail)
    if purpose is Purpose.DELETE_OWN:
        core.me.node = None  # closing the session deletes it as well
    refused(core, "not authorized on the election path")


def refused(core: Leadership, reason: str) -> None:
    """Exit with AUTH_FAILED, after the job is reaped (retrying would not help)."""
    if core.leave is not None and core.leave.kind is LeaveKind.EXIT:
        core.leave.exit_code = exitcodes.AUTH_FAILED
        return
    begin(core, LeaveKind.EXIT, reason, exitcodes.AUTH_FAILED)


def progress(core: Leadership) -> None:
    """Once the job is reaped: delete the node (the successor leads at once), then
    exit or rejoin at the back of the queue."""
    leave = core.leave
    assert leave is not None
    node = core.me.node
    if core.job.phase is not JobPhase.NONE:
        if leave.deadline is not None and core.now >= leave.deadline and core.job.killed:
            finish(core)  # without closing the session: see finish
        return
    if node is not None and core.lease.connected and core.lease.session_id is not None:
        if not core.out.awaiting(Purpose.DELETE_OWN):
            core.out.request(Purpose.DELETE_OWN, lambda rid: act.DeleteNode(rid, core.path(node)))
            # Then the nodes between us and the candidate we hand over to, in queue order:
            # its own predecessor goes last, so it wakes once, with nobody left ahead.
            for path in map(core.path, leave.evict):
                core.out.request(Purpose.EVICT, functools.partial(act.DeleteNode, path=path))
            leave.evict = ()
        if leave.deadline is not None and core.now >= leave.deadline:
            finish(core)
        return
    if leave.kind is not LeaveKind.REJOIN:
        finish(core)  # no node left to delete, or no connection to delete it with
        return
    if node is None:
        core.leave = None
        rejoin_at = hooks.rejoin_at(core)
        if rejoin_at is not None:
            core.retry_at = rejoin_at  # after a veto: follow.retry joins then
            return
        follow.join(core)


def on_delete_reply(core: Leadership, reply: ev.Reply) -> None:
    if isinstance(reply, ev.RequestFailed) and reply.failure is ev.Failure.CONNECTION:
        if core.leave is not None and core.leave.kind is not LeaveKind.REJOIN:
            finish(core)
        return  # rejoining: retried on reconnect
    if core.leave is not None:
        core.out.log("handover" if core.me.leader else "withdrawn", node=core.me.node, reason=core.leave.reason)
    core.forget_candidacy()


def finish(core: Leadership) -> None:
    """Close the session and exit (or reopen). Never while a process of the job may
    live: SIGKILL went out but the job was not reaped (a stopped guardian, a process
    in uninterruptible sleep on a hung mount). Closing the session would delete our
    node and start the successor at once; instead the daemon exits with the session
    open, so ZooKeeper expires it no earlier than the lease allows, and a reopen is
    refused the same way (a new job runner beside a live old tree)."""
    leave = core.leave
    assert leave is not None
    core.phase = Phase.STOPPED
    hooks.lost(core, leave.reason)  # leaving without the node's deletion confirmed
    if leave.kind is LeaveKind.EXIT:
        hooks.stopping(core, leave.reason)
    if core.job.phase is not JobPhase.NONE:
        core.out.log("job_not_reaped", "error", pid=core.job.pid, reason=leave.reason,
                     problem="the job's processes survived SIGKILL; exiting without closing the session, "
                             "which ZooKeeper expires after the session timeout")
        core.out.emit(act.Exit(exitcodes.UNREAPED))
        return
    if leave.kind is LeaveKind.REOPEN:
        core.out.log("reopening", reason=leave.reason)
        core.out.emit(act.CloseSession(), act.Reopen())
        return
    core.out.log("stopped", exit_code=leave.exit_code, reason=leave.reason)
    core.out.emit(act.CloseSession(), act.Exit(leave.exit_code))
