"""The leader's claim: the rule that keeps a successor from starting while the last
leader's job may still run, when the last leader's node vanished under a live session.

The election alone hands leadership on when the lowest node goes. A node goes in three
ways: its daemon deletes it after reaping its job (a clean leave), its session ends
(the lease has run out by then, timing.py), or someone else deletes it: an operator's
``zkcli delete`` or ``etcdctl del``, while the old leader's daemon is paused, slow or
cut off. Only the third hands on leadership while the old job may run, and the
successor starts in about one round trip: fault-results.md B3, tests 14c and 18.

So the leader also holds ``<election.path>-leader``, an ephemeral node (on etcd a key
on its lease) beside the election, never among its children:

1. A daemon leads only while its session holds the claim. The takeover's confirmation
   creates the claim (data: its node's name) in its pipeline, ahead of the heartbeat
   and the marker read; their answers, which decide, find the create answered. The
   job starts only after that.
2. The claim exists already: its owner is read (exists, with a watch). Our own session
   (a create whose reply was lost, or our previous candidacy's claim not yet
   released): it is ours. Another session: the daemon waits, following, until the
   watch says the claim is gone (``previous_leader_holds``), then confirms again.
3. A daemon releases its claim (deletes it) only once it has no job process left and
   no leadership: on a clean leave right before its node, in the same session's
   order, so a successor that saw the node go finds the claim gone as well; after its
   node vanished, once the job is reaped. A session's end takes the claim with it,
   and its lease had run out by then.
4. A claim whose create, read or delete got no answer (a lost connection, a server
   error) is UNKNOWN: its owner is read before anything else, once connected and no
   retry delay is pending. Trusting it could lead without a claim; forgetting it
   could leave one of ours that holds off every successor until our session ends;
   deleting it again blindly could delete the next leader's.

Holds because: a job runs only under a held claim (rule 1), a claim is deleted only
when its holder's job is reaped (rule 3) or by its session's end (lease expired), and
ZooKeeper (etcd) lets one session at a time hold the node (key). Not covered: an
operator who deletes the claim itself as well, or revokes an etcd lease (the key and
the claim go together with the lease, while the paused leader's job may run until its
guardian stops it on the lease: etcd's test 6b).

Costs: one create per takeover and a delete per clean leave, on no follower's path
(a daemon woken by a predecessor that was not the leader makes the create too, and
hears that the claim exists, or releases it). No extra round trip: the create is
pipelined in the takeover (one write more in it); a claim held by another session
costs the read of its owner. Nobody watches the claim except a daemon waiting on it (rule 2): no herd.
"""

from __future__ import annotations

import enum
from typing import TYPE_CHECKING

from . import actions as act
from . import events as ev
from . import follow, lead, session
from .jobcontrol import JobPhase
from .outbox import Purpose
from .snapshot import Phase

if TYPE_CHECKING:
    from .leadership import Leadership

CLAIM_SUFFIX = "-leader"


def claim_path(election_path: str) -> str:
    return election_path.rstrip("/") + CLAIM_SUFFIX


class Claim(enum.Enum):
    """This session's claim, as last learned."""

    NONE = "none"  # not held by this session, as far as this daemon knows
    CREATING = "creating"  # the create is in flight
    CHECKING = "checking"  # it existed: its owner is being read
    HELD = "held"
    WAITING = "waiting"  # another session holds it; its deletion's watch is armed
    RELEASING = "releasing"  # the delete is in flight
    UNKNOWN = "unknown"  # an answer was lost (rule 4): its owner is read first


def request(core: Leadership) -> None:
    """Rule 1's create, pipelined in the takeover's confirmation ahead of the heartbeat
    and the marker read, so that their answers, which decide, come after the create's:
    a takeover costs no extra round trip. Sent before the daemon knows
    its node is lowest (the listing's answer is on its way too): a claim made by a
    daemon that turns out not to lead is released at once (rule 3); meanwhile it only
    makes a leader that confirms at the same instant wait for that release."""
    match core.claim:
        case Claim.NONE:
            _create(core)
        case Claim.WAITING:  # confirming again (a relist, a reconnect): re-read, re-arm the watch
            _check(core)


def taken(core: Leadership) -> bool:
    """Rule 1, asked by the takeover once our node may lead: True when this session
    holds the claim; otherwise an answer still due decides (the create's or the
    owner's read), or the claim is made now with a heartbeat behind it."""
    if core.claim is Claim.NONE:  # the pipelined create was refused
        _create(core)
        lead.heartbeat(core)
    return core.claim is Claim.HELD


def _create(core: Leadership) -> None:
    core.claim = Claim.CREATING
    path, data = claim_path(core.settings.election_path), (core.me.node or "").encode()
    core.out.request(Purpose.CLAIM, lambda rid: act.CreateNode(rid, path, data, sequential=False, ephemeral=True))


def _check(core: Leadership) -> None:
    """Whose the claim is, with a watch for its deletion (WAITING stays WAITING until
    an answer says otherwise)."""
    if core.claim is not Claim.WAITING:
        core.claim = Claim.CHECKING
    path = claim_path(core.settings.election_path)
    core.out.request(Purpose.CHECK_CLAIM, lambda rid: act.CheckNode(rid, path, watch=True, sync=True))


def step(core: Leadership) -> None:
    """After every event (lead.enforce): settle a claim left unknown, release one that
    is due (rule 3). Only while connected: a request sent without a connection fails
    at once, and would be sent again at once."""
    if not core.lease.connected:
        return
    if core.claim is Claim.UNKNOWN and core.retry_at is None:  # not while a failure's retry waits
        _check(core)
    elif _release_due(core):
        core.claim = Claim.RELEASING
        path = claim_path(core.settings.election_path)
        core.out.request(Purpose.RELEASE_CLAIM, lambda rid: act.DeleteNode(rid, path))


def _release_due(core: Leadership) -> bool:
    """Rule 3: held, no job process left, and no leadership to keep it for (a daemon
    confirming its own takeover keeps the claim it just made, and so does one whose
    listing, which may find it lowest, is still due)."""
    if core.claim is not Claim.HELD or core.job.phase is not JobPhase.NONE:
        return False
    return core.leave is not None or not (core.me.leader or core.phase is Phase.CONFIRMING
                                          or core.out.awaiting(Purpose.LIST))


def on_session_lost(core: Leadership) -> None:
    """The claim is ephemeral: it went with the session (and so did its lease)."""
    core.claim = Claim.NONE


def on_create_reply(core: Leadership, reply: ev.Reply) -> None:
    if isinstance(reply, ev.Created):
        core.claim = Claim.HELD
        _decide(core)
        return
    assert isinstance(reply, ev.RequestFailed)
    if reply.failure is ev.Failure.NODE_EXISTS:
        if core.phase is Phase.CONFIRMING:
            _check(core)
        else:  # the listing said we do not lead: nothing to claim
            core.claim = Claim.NONE
        return
    # Lost with the connection: it may have landed, and a claim of ours nobody knows
    # of would hold off every successor until our session ends. Its owner is read
    # once connected (``step``). Refused: the takeover's retry tries again.
    core.claim = Claim.UNKNOWN if reply.failure is ev.Failure.CONNECTION else Claim.NONE
    follow.after_failure(core, reply)


def on_check_reply(core: Leadership, reply: ev.Reply) -> None:
    if core.claim not in (Claim.CHECKING, Claim.WAITING):
        return  # an answer a later one settled already
    waiting = core.claim is Claim.WAITING
    if isinstance(reply, ev.RequestFailed):
        # Still unknown (and a watch may be gone with the connection): read again once
        # connected, or after the retry delay (``step``); its answer settles it.
        core.claim = Claim.UNKNOWN
        follow.after_failure(core, reply)
        return
    assert isinstance(reply, ev.NodeChecked)
    if reply.stat is None:  # released meanwhile
        core.claim = Claim.NONE
        if waiting:
            _released(core)
        else:
            _decide(core)
    elif reply.stat.ephemeral_owner == core.lease.session_id:
        core.claim = Claim.HELD
        _decide(core)
    elif not waiting and core.phase is not Phase.CONFIRMING:
        core.claim = Claim.NONE  # another's, and we are not taking over: none of our business
    else:
        if not waiting:
            core.out.log("previous_leader_holds", "warning", owner=session.hex_id(reply.stat.ephemeral_owner),
                         node=core.me.node)
        core.claim = Claim.WAITING
        if core.phase is Phase.CONFIRMING:
            core.phase = Phase.FOLLOWING


def _released(core: Leadership) -> None:
    core.out.log("previous_leader_released", node=core.me.node)
    follow.relist(core)  # still lowest: the listing's answer confirms again


def _decide(core: Leadership) -> None:
    """A confirming daemon's claim is settled. When the heartbeat and the marker read
    sent behind the create were answered first, decide now (lead.decide asks
    ``taken`` again): ZooKeeper answered the create first, but kazoo completes a
    create made with makepath one callback later than the requests behind it, so its
    answer can reach the core last. Otherwise the answer still due decides, or a
    fresh heartbeat's (one at a time: one in flight decides)."""
    if core.phase is not Phase.CONFIRMING or core.me.leader:
        return
    if core.claim is Claim.NONE:
        _create(core)
    elif core.confirmed is not None and core.control is not None:
        lead.decide(core)
        return
    lead.heartbeat(core)


def on_release_reply(core: Leadership, reply: ev.Reply) -> None:
    if isinstance(reply, ev.RequestFailed) and reply.failure is not ev.Failure.NO_NODE:
        # Maybe deleted, and maybe another session's by now: never delete it again
        # blindly; its owner is read first (``step``).
        core.claim = Claim.UNKNOWN
        follow.after_failure(core, reply)
        return
    core.claim = Claim.NONE  # deleted, or gone already
    _decide(core)  # a takeover that began while the release was in flight


def on_watch(core: Leadership, event: ev.WatchFired) -> bool:
    """The claim's watch fired; False when the path is not the claim."""
    if event.path != claim_path(core.settings.election_path):
        return False
    if core.claim is Claim.WAITING and event.kind is ev.WatchKind.DELETED:
        core.claim = Claim.NONE
        _released(core)
    elif core.claim in (Claim.WAITING, Claim.CHECKING):
        # Changed; or fired while the read that set it is unanswered (kazoo runs replies
        # and watches on two threads): that answer may predate the change. Read again:
        # answers come in order, so this one settles it.
        _check(core)
    return True
