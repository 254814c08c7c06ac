"""Names of election znodes and the order of the queue.

A node is named ``zkl-<32 hex id>-<sequence>``. The id is fresh for every candidacy
and is known before the create is sent, so after a lost reply the daemon finds its
own node by id instead of creating a second one (the "protection" of kazoo's Lock
and Curator). Only the sequence number orders the queue.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass

PREFIX = "zkl-"
#: ZooKeeper prints the sequence with Java's %010d: ten digits, or a minus sign and
#: nine or ten digits for a wrapped (negative) counter ("-000000005"). The etcd shell
#: prints a key's 64-bit create revision the same way: ten digits, or up to nineteen
#: without a leading zero (%010d pads only to ten), never negative.
_NAME = re.compile(r"^zkl-([0-9a-f]{32})-(\d{10}|[1-9]\d{10,18}|-\d{9,10})$")


#: Where the priority sits in a candidacy id, and the bias that keeps it positive.
_MARK_AT, _MARK, _BIAS = 12, "f", 0x800


def with_priority(candidacy_id: str, priority: int) -> str:
    """A fresh 32-hex id with ``priority`` (-999..999, config.PRIORITY_RANGE) in it."""
    return f"{candidacy_id[:_MARK_AT]}{_MARK}{priority + _BIAS:03x}{candidacy_id[_MARK_AT + 4:]}"


def priority_of(candidacy_id: str) -> int:
    if candidacy_id[_MARK_AT] != _MARK:
        return 0
    return int(candidacy_id[_MARK_AT + 1:_MARK_AT + 4], 16) - _BIAS


@dataclass(frozen=True, order=True)
class Entry:
    """One well-formed node of the queue, ordered by sequence number."""

    sequence: int
    name: str
    candidacy_id: str

    @property
    def priority(self) -> int:
        return priority_of(self.candidacy_id)


def node_prefix(election_path: str, candidacy_id: str) -> str:
    return f"{election_path}/{PREFIX}{candidacy_id}-"


def parse(name: str) -> Entry | None:
    """None for a child that is not ours in shape (it is ignored, never fatal)."""
    match = _NAME.match(name)
    if not match:
        return None
    # ZooKeeper's sequence is a signed 32-bit counter printed with %010d: after
    # 2147483647 it goes on at -2147483648. Read as unsigned, the order survives that
    # wrap (the next one comes after 4,294,967,296 creations under one parent). Only a
    # negative one needs the wrap: ZooKeeper never prints more than 2147483647 (so a
    # non-negative one reads the same either way), while an etcd create revision is a
    # 64-bit count that never wraps and must be read whole, 2**32 and beyond.
    sequence = int(match.group(2))
    return Entry(sequence=sequence & 0xFFFFFFFF if sequence < 0 else sequence, name=name,
                 candidacy_id=match.group(1))


@dataclass(frozen=True)
class Queue:
    entries: tuple[Entry, ...]
    ignored: tuple[str, ...]

    @classmethod
    def from_children(cls, children: tuple[str, ...]) -> Queue:
        parsed = [(name, parse(name)) for name in children]
        entries = tuple(sorted(e for _, e in parsed if e is not None))
        ignored = tuple(sorted(name for name, e in parsed if e is None))
        return cls(entries, ignored)

    def mine(self, candidacy_id: str) -> tuple[Entry, ...]:
        """Our entries, by the id we put in their names: normally one, never more
        unless a create landed twice; the caller keeps the first and deletes the rest."""
        return tuple(e for e in self.entries if e.candidacy_id == candidacy_id)

    def named(self, name: str) -> Entry | None:
        return next((e for e in self.entries if e.name == name), None)

    def predecessor(self, entry: Entry) -> Entry | None:
        """The entry just before ours, or None when ours is the lowest (we lead)."""
        before = [e for e in self.entries if e.sequence < entry.sequence]
        return before[-1] if before else None

    def position(self, entry: Entry) -> int:
        """0 for the leader, 1 for the next in line, and so on."""
        return sum(1 for e in self.entries if e.sequence < entry.sequence)

    def between(self, first: Entry, last: Entry) -> tuple[Entry, ...]:
        """The entries strictly after ``first`` and before ``last``."""
        return tuple(e for e in self.entries if first.sequence < e.sequence < last.sequence)


class Candidacy:
    """This daemon's place in the queue: the id its node's name carries, the node, who
    it watches, and whether it leads. Forgotten as a whole when the node goes: the next
    candidacy gets a fresh id, and so a fresh node."""

    def __init__(self, new_id: Callable[[], str], priority: int = 0) -> None:
        self._new_id = lambda: with_priority(new_id(), priority)
        self.id = self._new_id()
        self.priority = priority
        self.node: str | None = None
        #: A create's reply was lost: the node may exist; look before creating again.
        self.create_unknown = False
        self.predecessor: str | None = None
        #: Candidates below ours in the listing that named ``predecessor`` (the two are
        #: always set from the same listing): 1 means the predecessor was the lowest.
        self.position: int | None = None
        self.leader = False
        #: The fencing token: our node's czxid, once it leads.
        self.token: int | None = None
        #: A watch on our own node is armed on the server (kazoo forgets watches on every
        #: disconnect): a follower must hear at once when its node is deleted.
        self.own_watched = False
        #: The node that led in our latest listing (status only).
        self.leader_node: str | None = None
        #: Our latest listing of the queue (preference.py decides with it).
        self.queue: Queue | None = None
        #: Persistent look-alike nodes: no candidates, skipped by every daemon alike.
        self.not_candidates: set[str] = set()
        #: Candidacy ids this process gave up: a node of theirs that shows up in a
        #: listing is a ghost (a create that landed late) and is deleted.
        self.abandoned: tuple[str, ...] = ()
        self.leading_since = 0.0

    def forget(self) -> None:
        self.leader = False
        self.token = None
        self.node = None
        self.predecessor = None
        self.position = None
        self.queue = None
        self.create_unknown = False
        self.own_watched = False
        self.abandoned = (*self.abandoned[-15:], self.id)
        self.id = self._new_id()
