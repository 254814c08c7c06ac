"""Step functions for joining the queue and following a predecessor: create, list,
watch the predecessor (and our own node), recover a create whose reply was lost."""

from __future__ import annotations

import json
from typing import TYPE_CHECKING

from . import actions as act
from . import candidacy, claim, drain, hooks, lead, leave, preference, session
from . import events as ev
from .outbox import Purpose
from .snapshot import Phase

if TYPE_CHECKING:
    from .leadership import Leadership

#: After a request fails for a reason other than the connection, wait this long.
RETRY_DELAY = 1.0


def join(core: Leadership) -> None:
    if (core.lease.session_id is None or not core.lease.connected or core.leave is not None or core.health.withdrawn
            or core.drained):
        return
    core.phase = Phase.JOINING
    create(core)


def create(core: Leadership) -> None:
    data = json.dumps(core.node_data(), separators=(",", ":")).encode()
    prefix = candidacy.node_prefix(core.settings.election_path, core.me.id)
    core.out.request(Purpose.CREATE, lambda rid: act.CreateNode(rid, prefix, data))


def relist(core: Leadership) -> None:
    if not core.out.awaiting(Purpose.LIST):
        core.out.request(Purpose.LIST, lambda rid: act.ListChildren(rid, core.settings.election_path))


def recover(core: Leadership) -> None:
    """After a create whose reply was lost: list the queue, synced first, so a server
    lagging behind the ZooKeeper leader cannot hide a create that already landed."""
    if not core.out.awaiting(Purpose.RECOVER):
        core.out.request(Purpose.RECOVER, lambda rid: act.ListChildren(rid, core.settings.election_path, sync=True))


def retry(core: Leadership) -> None:
    if not core.lease.connected or core.leave is not None:
        return
    if core.me.node is None and not core.me.create_unknown and not core.out.awaiting(Purpose.CREATE):
        join(core)
    else:
        relist(core)


def watch_own(core: Leadership) -> None:
    """A follower's exists watch on its own node (one per daemon, so still no herd):
    without it, a follower whose node an operator or a lost-reply recovery deleted
    would wait forever, believing itself queued."""
    me = core.me
    if me.own_watched or me.node is None or core.out.awaiting(Purpose.WATCH_OWN):
        return
    core.out.request(Purpose.WATCH_OWN, lambda rid: act.CheckNode(rid, core.path(me.node or ""), watch=True))


def delete_extra(core: Leadership, name: str) -> None:
    """A node of ours that must not stand in the queue: a ghost of an abandoned
    candidacy, or a second node of this one."""
    path = core.path(name)
    core.out.request(Purpose.DELETE_EXTRA, lambda rid: act.DeleteNode(rid, path))


def retry_later(core: Leadership) -> None:
    """A request failed for a reason other than the connection."""
    core.retry_at = core.now + RETRY_DELAY


def after_failure(core: Leadership, reply: ev.RequestFailed) -> None:
    """A queue request failed: the connection's loss is repaired by a resync (now, or
    on the reconnect), any other failure by a retry after RETRY_DELAY."""
    if reply.failure is ev.Failure.CONNECTION:
        session.resync_if_connected(core)
    else:
        retry_later(core)


def on_create_reply(core: Leadership, reply: ev.Reply) -> None:
    if isinstance(reply, ev.Created):
        core.me.node = reply.name.rsplit("/", 1)[-1]
        core.me.create_unknown = False
        if leave.withdraw_if_unhealthy(core):
            return
        core.out.request(Purpose.LIST, lambda rid: act.ListChildren(rid, core.settings.election_path))
    elif isinstance(reply, ev.RequestFailed) and reply.failure is ev.Failure.CONNECTION:
        # The server may have created the node while the reply was lost: look before creating again.
        core.me.create_unknown = True
        if core.lease.connected:
            recover(core)
    else:
        core.out.log("create_failed", "error", detail=getattr(reply, "detail", ""))
        retry_later(core)


def on_list_reply(core: Leadership, reply: ev.Reply) -> None:
    me = core.me
    if isinstance(reply, ev.RequestFailed):
        if reply.failure is ev.Failure.NO_NODE:
            lead.rejoin_without_node(core, "the election path was deleted")
        else:
            after_failure(core, reply)
        return
    assert isinstance(reply, ev.ChildrenListed)
    queue = candidacy.Queue.from_children(tuple(c for c in reply.children if c not in me.not_candidates))
    if queue.ignored:
        core.out.log("foreign_children", "warning", ignored=list(queue.ignored[:5]), count=len(queue.ignored))
    for stale in (e for e in queue.entries if e.candidacy_id in me.abandoned):
        delete_extra(core, stale.name)
    mine = queue.mine(me.id)
    if me.create_unknown:
        me.create_unknown = False
        if not mine:
            create(core)
            return
        me.node = mine[0].name
        core.out.log("create_recovered", node=me.node)
    # A create can land twice (a reply lost, the recovery listing served before the
    # first create was visible there): keep the node this daemon stands on, which
    # its watches and heartbeats name, and delete the other.
    for extra in (e for e in mine if e.name != me.node):
        delete_extra(core, extra.name)
    if me.node is not None and leave.withdraw_if_unhealthy(core):
        return
    if me.node is None:
        return
    entry = queue.named(me.node)
    if entry is None:
        lead.rejoin_without_node(core, "own node deleted")
        return
    me.queue = queue
    position = queue.position(entry)
    predecessor = queue.predecessor(entry)
    if me.position is None:
        core.out.log("joined", node=me.node, position=position)
    me.position = position
    if predecessor is None:
        me.predecessor = None
        if me.leader:
            preference.consider(core)
        else:  # holding too (a reconnect lost the freeze watch): the markers are read again
            core.phase = Phase.CONFIRMING
            preference.confirm(core)
        return
    if me.leader:
        # Someone sits before our node (impossible unless sequence numbers wrapped):
        # never lead from behind another candidate.
        lead.lose_leadership(core, "a lower node appeared")
    core.phase = Phase.FOLLOWING
    watch_own(core)
    me.leader_node = queue.entries[0].name
    if predecessor.name != me.predecessor:
        me.predecessor = predecessor.name
        core.out.log("following", predecessor=predecessor.name, position=position, leader=queue.entries[0].name)
    hooks.following(core)
    core.out.request(
        Purpose.CHECK_PREDECESSOR, lambda rid: act.CheckNode(rid, core.path(predecessor.name), watch=True)
    )
    preference.consider(core)


def on_predecessor_reply(core: Leadership, reply: ev.Reply) -> None:
    if isinstance(reply, ev.NodeChecked) and reply.stat is None:
        # Gone before the watch was set: the watch would never fire, so look again now.
        relist(core)
    elif isinstance(reply, ev.NodeChecked) and reply.stat is not None and reply.stat.ephemeral_owner == 0 \
            and core.me.predecessor:
        # A persistent node shaped like ours is no candidate (no session can lose it):
        # every daemon that meets it skips it, so they all agree on the order.
        core.out.log("not_a_candidate", "warning", node=core.me.predecessor, reason="persistent node")
        core.me.not_candidates.add(core.me.predecessor)
        relist(core)
    elif isinstance(reply, ev.RequestFailed):
        after_failure(core, reply)


def on_own_watch_reply(core: Leadership, reply: ev.Reply) -> None:
    if isinstance(reply, ev.RequestFailed):
        after_failure(core, reply)
        return
    assert isinstance(reply, ev.NodeChecked)
    if lead.own_node_holds(core, reply) is not None:
        core.me.own_watched = True


def on_watch(core: Leadership, event: ev.WatchFired) -> None:
    me = core.me
    if event.kind is ev.WatchKind.CONNECTION:
        return  # a connection loss, not a deletion; watches are re-armed on reconnect
    if event.path == drain.own_marker(core.settings):
        drain.check(core, changed=True)  # created or deleted: the answer says which, and re-arms the watch
        return
    if preference.on_watch(core, event) or claim.on_watch(core, event):
        return
    if me.node is not None and event.path == core.path(me.node):
        me.own_watched = False
        if event.kind is ev.WatchKind.DELETED and not core.out.awaiting(Purpose.DELETE_OWN):
            lead.rejoin_without_node(core, "own node deleted")
        elif not me.leader:
            watch_own(core)  # data changed: a follower re-arms; a leader's heartbeat does
        return
    if me.predecessor is not None and event.path == core.path(me.predecessor):
        if event.kind is ev.WatchKind.DELETED:
            on_predecessor_deleted(core)
        else:
            core.out.request(Purpose.CHECK_PREDECESSOR, lambda rid: act.CheckNode(rid, event.path, watch=True))


def on_predecessor_deleted(core: Leadership) -> None:
    """Our predecessor's node is gone: list the queue again, and when the daemon could
    lead, send its confirmation right behind the listing (``preference.confirm``: the
    leader's claim, the heartbeat, the read of the freeze and handover markers) rather
    than after the listing's answer. ZooKeeper answers one session's requests in order,
    and the shell posts the answers in that order, so the listing's answer is handled
    first; only if it found our node lowest (phase CONFIRMING) do the heartbeat's and
    the markers' answers make us leader (``lead.decide``). Otherwise the read and the
    heartbeat only renew the lease's anchor and re-check our node, both harmless for a
    follower. One round trip from the deletion to the decision either way.

    The queue is always listed, even when the predecessor was the lowest of our last
    listing: a candidate of higher priority may have joined since, and it should lead
    (preference.py). Not when the daemon leads already, is leaving or withdrawn by its
    health check, or is disconnected (a watch posted before the loss: the reconnect
    lists and re-arms anyway); nor when a listing is in flight, whose answer may still
    show the predecessor (kazoo runs replies and watches on two threads): that answer
    leads to a confirmation of its own."""
    me = core.me
    could_lead = (
        not me.leader
        and core.leave is None
        and not core.health.withdrawn
        and core.lease.connected
        and not core.out.awaiting(Purpose.LIST)
        and not core.out.awaiting(Purpose.RECOVER)
    )
    relist(core)
    if could_lead:
        preference.confirm(core)
