"""Drain: an operator takes this host out of the queue until it is undrained.

The drained state lives in ZooKeeper, not in the daemon, so that it survives daemon
restarts and reboots: a persistent marker node ``<election.path>-drained/<candidate>``
(``zkleader drain`` creates it, ``zkleader undrain`` deletes it). It sits beside the
election, never among its children, which hold only candidates: no daemon's listing
or predecessor watch ever sees it.

Herd-free: each daemon keeps one exists watch on its own marker, so draining or
undraining a host notifies that one daemon; its leaving then wakes at most its
successor, as any leaving does. The marker is checked at each (re)connect, pipelined
ahead of the create: ZooKeeper answers a session's requests in order, so a drained
host learns it before its create's reply, and leaves before it could list or lead
(its node stood for one round trip at the back of the queue, where it wakes nobody).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from . import actions as act
from . import events as ev
from . import follow, leave
from .outbox import Purpose
from .settings import Settings

if TYPE_CHECKING:
    from .leadership import Leadership

#: The marker's parent is the election path with this suffix.
SUFFIX = "-drained"


def markers_path(election_path: str) -> str:
    """Where every candidate's marker lives (`status` lists it)."""
    return election_path.rstrip("/") + SUFFIX


def marker_path(election_path: str, candidate: str) -> str:
    """One candidate's marker: the daemon watches it, `zkleader drain` creates it."""
    return f"{markers_path(election_path)}/{candidate}"


def own_marker(settings: Settings) -> str:
    return marker_path(settings.election_path, settings.candidate)


def check(core: Leadership, changed: bool = False) -> None:
    """exists(marker) with a watch (one per daemon); the watch fires on create and delete.
    changed (the watch fired): ask again even while a check is in flight, whose answer
    may predate the change (a drain undone at once); the answers come in order, and
    the last one stands."""
    if core.lease.connected and (changed or not core.out.awaiting(Purpose.CHECK_DRAIN)):
        core.out.request(Purpose.CHECK_DRAIN, lambda rid: act.CheckNode(rid, own_marker(core.settings), watch=True))


def on_reply(core: Leadership, reply: ev.Reply) -> None:
    if isinstance(reply, ev.RequestFailed):
        if reply.failure is ev.Failure.CONNECTION:
            # It may have died after the reconnect was handled (replies and state come
            # from different kazoo threads), which skipped its check as still awaited.
            check(core)
        else:  # checked again at the next (re)connect; until then the last answer stands
            core.out.log("drain_check_failed", "warning", detail=reply.detail)
        return
    assert isinstance(reply, ev.NodeChecked)
    drained = reply.stat is not None
    changed = drained != core.drained
    core.drained = drained
    if changed:
        core.out.log("drained" if drained else "undrained", marker=own_marker(core.settings))
    if drained:
        if core.leave is None and (core.me.node is not None or core.me.create_unknown
                                   or core.out.awaiting(Purpose.CREATE)):
            leave.begin(core, leave.LeaveKind.REJOIN, "drained")
    elif changed and core.leave is None and core.me.node is None and not core.me.create_unknown \
            and not core.out.awaiting(Purpose.CREATE):
        follow.join(core)  # undrained: at the back of the queue, with a fresh node
