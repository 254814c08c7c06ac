"""Who should lead: every rule of priorities, handovers to a named candidate,
preemption and the maintenance freeze, in one place.

None of these rules can put two jobs at once, because none of them changes who *may*
lead: that is still only the lowest node, confirmed through the ZooKeeper leader and
under a valid lease (lead.py). They decide only whether the lowest node leads or
steps aside, and when a leader leaves. Stepping aside is leaving the queue as a
resign does (job, if any, reaped before the node goes), so the job moves the way it
always has: its old host stops it before the new one can start it.

The state beside the election (markers like drain's, never among the election's
children, so no listing or predecessor watch sees them):

- ``<election.path>-frozen``: ``zkleader freeze`` creates it, ``thaw`` deletes it.
- ``<election.path>-preempt``: ephemeral, made by a follower that outranks the
  leader, only to wake it (rule 4).
- ``<election.path>-handover``: a request that the leader hand over to the node
  ``to``; ``zkleader resign --to`` creates it, the target deletes it once it leads,
  the leader deletes it when it is void (target not queued, or frozen). It outlives
  its writer on purpose: if the leader dies halfway, whoever wakes still carries it
  out.

The freeze and handover markers hold JSON (who set it, ``by``; the CLI adds ``at``);
since when is the node's ctime, read by `status`. The priority travels in the node's name (candidacy.py), so
one listing tells all of them.

The rules:

1. ``preferred``: the handover's target while it is queued, else the highest
   priority, queue order among equals.
2. The takeover (``may_take_over``, asked once the lowest node's confirming
   heartbeat and the read of the freeze and handover markers behind its sync are
   both answered, pipelined behind the listing: ``confirm``): frozen, it holds (watches the freeze marker; nobody leads until thaw);
   another candidate preferred, it yields: deletes its own node, then the nodes
   between itself and that candidate in queue order (the candidate wakes once, as its
   predecessor goes last), and rejoins at the back; otherwise it leads.
3. The leader keeps an exists watch on the markers: a freeze or thaw is logged; a
   handover request is carried out like a resign, the nodes between deleted right
   after its own; refused (and deleted) when frozen or when its target is not queued.
4. Preemption (``election.preempt_after`` on the leader): a leader that learns of a
   candidate of higher priority (from its takeover's listing, or a listing made when a
   marker's watch fires) waits ``preempt_after``, lists again, and hands over to it if
   the same node is still the preferred one; otherwise the wait restarts with whoever
   is preferred now. A follower that joins behind a leader it outranks wakes it by
   creating (or replacing) the ephemeral marker ``<election.path>-preempt``, once per
   leader. A host that flaps faster than ``preempt_after`` never takes over (each
   candidacy is a new node); one that leads and then dies must again stay that long:
   the job moves at most once per ``preempt_after``.
5. While frozen, the leader refuses a resign and every handover request, restarts a
   job that exits under ``on_exit: resign``, and stays leader while its health check
   fails. A shutdown or a crash still ends its job; nobody replaces it until thaw.

Costs (herd-free): a follower holds no watch for any of this. The leader holds three
exists watches (freeze, handover, preempt markers); a frozen-out next leader one. A
freeze, thaw, handover request or poke notifies only the leader (or that waiting
node); a poke costs the leader one listing, and so does each takeover, once its
watches are armed. A handover or a yield to a candidate k places back deletes k
nodes, each waking only its own successor, and those k candidates join again at the
back.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from . import actions as act
from . import events as ev
from . import claim, follow, lead, leave
from .candidacy import Entry, Queue
from .outbox import Purpose
from .settings import Settings
from .snapshot import Phase

if TYPE_CHECKING:
    from .leadership import Leadership

FROZEN_SUFFIX = "-frozen"
HANDOVER_SUFFIX = "-handover"
PREEMPT_SUFFIX = "-preempt"


def frozen_path(election_path: str) -> str:
    return election_path.rstrip("/") + FROZEN_SUFFIX


def handover_path(election_path: str) -> str:
    return election_path.rstrip("/") + HANDOVER_SUFFIX


def preempt_path(election_path: str) -> str:
    return election_path.rstrip("/") + PREEMPT_SUFFIX


def _paths(settings: Settings) -> tuple[str, str]:
    """The markers a takeover reads."""
    return frozen_path(settings.election_path), handover_path(settings.election_path)


def _watched(settings: Settings) -> tuple[str, str, str]:
    """The markers a leader watches."""
    return (*_paths(settings), preempt_path(settings.election_path))


@dataclass(frozen=True)
class Marker:
    """Who froze the election (and when, as the CLI wrote it: text, never compared)."""

    by: str
    at: str


@dataclass(frozen=True)
class Handover:
    """A request to hand leadership to the node ``to``."""

    to: str
    by: str
    at: str
    reason: str


@dataclass(frozen=True)
class Control:
    frozen: Marker | None
    handover: Handover | None


def _json(data: bytes) -> dict[str, Any]:
    try:
        value = json.loads(data)
    except (ValueError, UnicodeDecodeError):
        return {}
    return value if isinstance(value, dict) else {}


def parse_control(frozen: bytes | None, handover: bytes | None) -> Control:
    """The markers' data as read. A freeze marker counts by its existence, whatever it
    holds; a handover request without a target is void (``to`` empty)."""
    marker = None
    if frozen is not None:
        fields = _json(frozen)
        marker = Marker(str(fields.get("by", "?")), str(fields.get("at", "?")))
    request = None
    if handover is not None:
        fields = _json(handover)
        request = Handover(str(fields.get("to", "")), str(fields.get("by", "?")), str(fields.get("at", "?")),
                           str(fields.get("reason", "?")))
    return Control(marker, request)


def handover_data(to: str, by: str, reason: str, at: str | None = None) -> bytes:
    """A handover request as ``zkleader resign --to`` writes it."""
    fields = {"to": to, "by": by, "reason": reason, **({"at": at} if at is not None else {})}
    return json.dumps(fields, separators=(",", ":")).encode()


def preferred(queue: Queue, handover: Handover | None) -> Entry | None:
    """Rule 1: who should lead, of the queued candidates."""
    if handover is not None:
        target = queue.named(handover.to)
        if target is not None:
            return target
    if not queue.entries:
        return None
    top = max(e.priority for e in queue.entries)
    return next(e for e in queue.entries if e.priority == top)


@dataclass
class Preemption:
    """Rule 4: a leader's wait before it hands over to a candidate that outranks it,
    or a follower's note that it poked the leader."""

    #: The candidate that outranks this leader, and since when this leader knows it.
    target: str | None = None
    since: float | None = None
    #: The listing at the end of the wait is in flight.
    checking: bool = False
    #: The leader this follower poked (once per leader).
    poked: str | None = None


# ------------------------------------------------------------------ takeover


def confirm(core: Leadership) -> None:
    """The lowest node's confirmation, pipelined behind its listing: the leader's claim
    (claim.py), the heartbeat (sync + exists), then the read of the markers; the later
    of the two answers decides (lead.decide, ``may_take_over``). The read goes behind
    the heartbeat's sync: one session's requests are served in order, so it sees every
    write the ZooKeeper leader had applied when that sync reached it, as a synced read
    of its own would, without a second sync. When no heartbeat can go now (one is in
    flight), the read brings its own sync."""
    core.control = None
    core.confirmed = None
    claim.request(core)
    behind_a_sync = lead.heartbeat(core)
    if not core.out.awaiting(Purpose.READ_CONTROL):
        read(core, sync=not behind_a_sync)


def read(core: Leadership, sync: bool = True) -> None:
    core.out.request(Purpose.READ_CONTROL, lambda rid: act.ReadNodes(rid, _paths(core.settings), sync=sync))


def may_take_over(core: Leadership) -> bool:
    """Rule 2, once our node is confirmed lowest: lead (under the claim, claim.py),
    hold or yield."""
    control, me = core.control, core.me
    if control is None:
        # Not read since the listing (the read failed, or is still on its way): its
        # answer decides; if none is due, read now (synced: no heartbeat goes with it).
        if not core.out.awaiting(Purpose.READ_CONTROL):
            read(core)
        return False
    if control.frozen is not None:
        _hold(core, control.frozen)
        return False
    if core.holding:
        _thawed(core, relist=False)  # the thaw's watch was lost with a connection
    queue, node = me.queue, me.node
    best = preferred(queue, control.handover) if queue is not None else None
    own = queue.named(node) if queue is not None and node is not None else None
    if best is None or own is None or best.name == own.name:
        return claim.taken(core)
    why = "handover" if control.handover is not None and best.name == control.handover.to else "priority"
    between = queue.between(own, best) if queue is not None else ()
    core.out.log("yielding", to=best.name, priority=best.priority, own_priority=own.priority, why=why,
                 evicted=len(between))
    leave.begin(core, leave.LeaveKind.REJOIN, f"yielding to {best.name} ({why})")
    assert core.leave is not None
    core.leave.evict = tuple(e.name for e in between)
    return False


def _hold(core: Leadership, marker: Marker) -> None:
    """Frozen: our node stays lowest and waits, watching the marker, for the thaw."""
    _note_freeze(core, marker)
    core.holding = True
    core.phase = Phase.FOLLOWING
    watch(core, frozen_path(core.settings.election_path))


def watch(core: Leadership, path: str) -> None:
    core.out.request(Purpose.WATCH_CONTROL, lambda rid: act.CheckNode(rid, path, watch=True))


def on_acquired(core: Leadership) -> None:
    """Leadership confirmed: watch both markers (rule 3). A handover request still
    standing named us or no queued node (else we would have yielded): it is done.
    Whether a candidate outranks us, the takeover's listing tells (rule 4)."""
    core.preempt = Preemption()
    for path in _watched(core.settings):
        watch(core, path)
    if core.control is not None and core.control.handover is not None:
        _clear(core)
    consider(core)
    # A follower that poked us while we were still confirming found no watch armed:
    # list once more behind the watches (off the job's path; a poke after this listing
    # fires them).
    _list(core)


def rearm(core: Leadership) -> None:
    """After a reconnect (kazoo forgot the watches): the leader's, or the holder's."""
    if core.me.leader:
        for path in _watched(core.settings):
            watch(core, path)
        _list(core)  # a poke may have come while the watches were gone
        read(core)


def _list(core: Leadership) -> None:
    """A listing sent now, even while another is in flight: that one may have been
    answered before the change that fired the watch (the answers come in order)."""
    core.out.request(Purpose.LIST, lambda rid: act.ListChildren(rid, core.settings.election_path))


# ------------------------------------------------------------------ replies


def on_read(core: Leadership, reply: ev.Reply) -> None:
    if isinstance(reply, ev.RequestFailed):
        follow.after_failure(core, reply)
        return
    assert isinstance(reply, ev.NodesRead)
    control = parse_control(*reply.data)
    core.control = control
    if core.me.leader:
        _note_freeze(core, control.frozen)
        _as_leader(core, control)
    elif core.phase is Phase.CONFIRMING:
        if core.confirmed is not None:
            lead.decide(core)  # the heartbeat was answered first
        else:
            lead.heartbeat(core)  # its answer decides (one at a time: the one in flight does)


def on_watch_reply(core: Leadership, reply: ev.Reply) -> None:
    if isinstance(reply, ev.RequestFailed):
        follow.after_failure(core, reply)
    elif isinstance(reply, ev.NodeChecked) and reply.stat is None and core.holding and not core.me.leader:
        _thawed(core)  # thawed before the watch was set: it would never fire


def on_watch(core: Leadership, event: ev.WatchFired) -> bool:
    """A marker's watch fired; False when the path is no marker."""
    frozen = frozen_path(core.settings.election_path)
    if event.path not in _watched(core.settings):
        return False
    if core.me.leader:
        watch(core, event.path)
        _list(core)  # a handover is checked, and a poke answered, against a fresh queue
        read(core)
    elif core.holding and event.path == frozen:
        if event.kind is ev.WatchKind.DELETED:
            _thawed(core)
        else:
            watch(core, event.path)
    return True


def _thawed(core: Leadership, relist: bool = True) -> None:
    core.holding = False
    _note_freeze(core, None)
    if relist:
        follow.relist(core)  # still lowest: the listing's answer confirms again


def _note_freeze(core: Leadership, marker: Marker | None) -> None:
    """The journal says when this daemon learns of a freeze or a thaw."""
    if (marker is None) != (core.frozen is None):
        if marker is not None:
            core.out.log("frozen", "warning", by=marker.by, at=marker.at, leader=core.me.leader)
        else:
            core.out.log("thawed", leader=core.me.leader)
    core.frozen = marker


def _as_leader(core: Leadership, control: Control) -> None:
    """Rule 3: carry out, or refuse, a handover request."""
    request, me = control.handover, core.me
    if request is None or core.leave is not None:
        return
    if request.to == me.node:
        _clear(core)
        return
    queue = me.queue
    own = queue.named(me.node) if queue is not None and me.node is not None else None
    target = queue.named(request.to) if queue is not None else None
    refusal = None
    if control.frozen is not None:
        refusal = "the election is frozen"
    elif own is None or target is None or target.sequence < own.sequence:
        refusal = "its target is not in the queue"
    if refusal is not None:
        core.out.log("handover_refused", "warning", to=request.to, by=request.by, reason=refusal)
        _clear(core)
        return
    assert queue is not None and own is not None and target is not None
    _hand_over(core, queue, own, target, request.reason, request.by)


def _hand_over(core: Leadership, queue: Queue, own: Entry, target: Entry, why: str, by: str) -> None:
    """Leave like a resign, the nodes between us and ``target`` deleted after ours."""
    between = queue.between(own, target)
    core.out.log("handing_over", to=target.name, by=by, why=why, token=core.me.token, evicted=len(between))
    leave.begin(core, leave.LeaveKind.REJOIN, f"handing over to {target.name} ({why})")
    assert core.leave is not None
    core.leave.evict = tuple(e.name for e in between)


def _clear(core: Leadership) -> None:
    path = handover_path(core.settings.election_path)
    core.out.request(Purpose.CLEAR_HANDOVER, lambda rid: act.DeleteNode(rid, path))


def refuses_resign(core: Leadership) -> bool:
    """Rule 5 for ``zkleader resign`` (SIGUSR1)."""
    if core.frozen is None:
        return False
    core.out.log("resign_refused", "warning", reason="the election is frozen", by=core.frozen.by)
    return True


# ---------------------------------------------------------------- preemption


def outranks_leader(core: Leadership) -> bool:
    """We are queued behind a leader of lower priority, and the preferred candidate."""
    me = core.me
    queue = me.queue
    if queue is None or me.node is None or me.leader or not queue.entries:
        return False
    own = queue.named(me.node)
    return own is not None and own.priority > queue.entries[0].priority and preferred(queue, None) == own


def consider(core: Leadership) -> None:
    """After each listing: a follower that outranks the leader pokes it (once per
    leader); a leader with ``preempt_after`` starts, keeps or ends its wait (rule 4),
    and hands over when the same candidate has outranked it all along."""
    me, wait = core.me, core.preempt
    if not me.leader:
        queue = me.queue
        if queue is not None and outranks_leader(core) and wait.poked != queue.entries[0].name:
            wait.poked = queue.entries[0].name
            _poke(core)
        return
    wait.checking = False
    after, queue, node = core.settings.preempt_after, me.queue, me.node
    own = queue.named(node) if queue is not None and node is not None else None
    best = preferred(queue, None) if queue is not None else None
    if after is None or own is None or best is None or best.priority <= own.priority:
        if wait.target is not None:
            core.out.log("preempt_cancelled", target=wait.target, reason="nobody outranks this leader now")
        wait.target = wait.since = None
        return
    if wait.target != best.name:
        wait.target, wait.since = best.name, core.now
        core.out.log("preempt_pending", target=best.name, priority=best.priority, after=after)
        return
    assert wait.since is not None and queue is not None
    if core.now < wait.since + after or core.leave is not None:
        return
    if core.frozen is not None:
        core.out.log("preempt_deferred", target=best.name, reason="the election is frozen")
        wait.since = core.now
        return
    _hand_over(core, queue, own, best, "preempt", core.settings.candidate)


def _poke(core: Leadership) -> None:
    """Create the preempt marker (ephemeral: gone with our session), or replace one
    that stands: either fires the leader's watch, and it lists the queue."""
    path = preempt_path(core.settings.election_path)
    core.out.log("preempt_poke", leader=core.me.queue.entries[0].name if core.me.queue else None)
    core.out.request(Purpose.POKE, lambda rid: act.CreateNode(rid, path, b"", sequential=False, ephemeral=True))


def on_poke_reply(core: Leadership, reply: ev.Reply) -> None:
    if isinstance(reply, ev.RequestFailed) and reply.failure is ev.Failure.NODE_EXISTS:
        path = preempt_path(core.settings.election_path)
        core.out.request(Purpose.POKE, lambda rid: act.DeleteNode(rid, path))
        core.out.request(Purpose.POKE, lambda rid: act.CreateNode(rid, path, b"", sequential=False, ephemeral=True))


def preempt_due(core: Leadership) -> float | None:
    after, wait = core.settings.preempt_after, core.preempt
    if after is None or wait.since is None or wait.checking or not core.me.leader:
        return None
    return wait.since + after


def poll(core: Leadership) -> None:
    """At the end of the wait: list once more; the answer decides (``consider``)."""
    due = preempt_due(core)
    if due is None or core.now < due or not core.lease.connected or core.leave is not None:
        return
    core.preempt.checking = True
    _list(core)
