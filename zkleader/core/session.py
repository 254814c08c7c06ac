"""Step functions for the connection's events: connect, suspend, reconnect, expiry."""

from __future__ import annotations

from typing import TYPE_CHECKING

from . import actions as act
from . import claim, drain, follow, hooks, lead, leave, preference
from . import events as ev
from .jobcontrol import JobPhase
from .outbox import Purpose

if TYPE_CHECKING:
    from .leadership import Leadership


def on_attempt(core: Leadership, event: ev.ConnectionAttempt) -> None:
    core.lease.attempt, core.lease.attempt_host = event.attempt, event.host
    # Powers of two: the first attempts are visible, a long outage does not flood the log.
    if event.attempt & (event.attempt - 1) == 0:
        core.out.log("connecting", "info" if event.attempt == 1 else "warning", host=event.host, attempt=event.attempt)


def on_connected(core: Leadership, event: ev.Connected) -> None:
    lease = core.lease
    if lease.session_id is not None and event.session_id != lease.session_id:
        on_session_lost(core, "session replaced")
    same_session = lease.session_id == event.session_id
    lease.session_id = event.session_id
    lease.connected = True
    lease.writable = not event.read_only
    lease.negotiated_timeout = event.negotiated_timeout
    effective = lease.update_budget(core.settings)
    if event.negotiated_timeout < core.settings.session_timeout:
        core.out.log(
            "session_timeout_reduced",
            "warning",
            configured=core.settings.session_timeout,
            negotiated=event.negotiated_timeout,
            problem=lease.budget.problem(),
        )
    if event.read_only:
        core.out.log("read_only", "warning", reason="connected to a read-only server; cannot lead")
        if core.me.leader:
            lead.lose_leadership(core, "read-only connection")
        return
    drain.check(core)  # ahead of the create (drain.py); re-arms the watch kazoo forgot
    if same_session:
        core.out.log("reconnected", session=hex_id(event.session_id), lease_left=lease.left(core.now))
        resync(core)
    else:
        core.out.log("connected", session=hex_id(event.session_id), timeout=effective)
        follow.join(core)


def on_suspended(core: Leadership) -> None:
    if not core.lease.connected:
        return
    core.lease.suspended()
    core.me.own_watched = False
    fields = {"lease_left": core.lease.left(core.now)} if core.job.phase is not JobPhase.NONE else {}
    core.out.log("suspended", "warning", **fields)


def on_session_lost(core: Leadership, reason: str) -> None:
    if core.lease.session_id is None:
        return
    alive = core.job.phase is not JobPhase.NONE
    core.out.log("session_lost", "error" if alive else "warning", reason=reason)
    if alive:
        # The lease should have stopped the job already (e.g. the daemon was paused): no grace now.
        core.job.kill_now(core.now, "session lost while the job was alive")
    core.lease.lost()
    claim.on_session_lost(core)
    core.out.stop_awaiting()
    if core.me.leader:
        hooks.lost(core, f"session lost: {reason}")
    core.forget_candidacy()
    if core.leave is not None and core.leave.kind is leave.LeaveKind.REJOIN:
        core.leave = None  # rejoining happens with the next session anyway


def resync(core: Leadership) -> None:
    """After a reconnect with the same session: kazoo forgot every watch, re-arm them."""
    if core.leave is not None:
        return
    if core.me.leader:
        lead.heartbeat(core)
        preference.rearm(core)
    elif core.me.create_unknown:
        follow.recover(core)
    elif core.me.node is not None:
        core.out.request(Purpose.LIST, lambda rid: act.ListChildren(rid, core.settings.election_path))
    elif not core.out.awaiting(Purpose.CREATE):
        follow.join(core)


def resync_if_connected(core: Leadership) -> None:
    """A request died with the connection, possibly after the reconnect was already
    handled (replies and state changes come from different kazoo threads)."""
    if core.lease.connected:
        resync(core)


def hex_id(session_id: int) -> str:
    return f"0x{session_id:x}"
