"""Names of election znodes and the order of the queue.

A node is named ``zkl-<32 hex id>-<sequence>``. The id is fresh for every candidacy
and is known before the create is sent, so after a lost reply the daemon finds its
own node by id instead of creating a second one (the "protection" of kazoo's Lock
and Curator). Only the sequence number orders the queue.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

PREFIX = "zkl-"
#: ZooKeeper prints the sequence with Java's %010d: ten digits, or a minus sign and
#: nine or ten digits for a wrapped (negative) counter ("-000000005").
_NAME = re.compile(r"^zkl-([0-9a-f]{32})-(\d{10}|-\d{9,10})$")


@dataclass(frozen=True, order=True)
class Entry:
    """One well-formed node of the queue, ordered by sequence number."""

    sequence: int
    name: str
    candidacy_id: str


def node_prefix(election_path: str, candidacy_id: str) -> str:
    return f"{election_path}/{PREFIX}{candidacy_id}-"


def parse(name: str) -> Entry | None:
    """None for a child that is not ours in shape (it is ignored, never fatal)."""
    match = _NAME.match(name)
    if not match:
        return None
    # ZooKeeper's sequence is a signed 32-bit counter printed with %010d: after
    # 2147483647 it goes on at -2147483648. Read as unsigned, the order survives that
    # wrap (the next one comes after 4,294,967,296 creations under one parent).
    return Entry(sequence=int(match.group(2)) & 0xFFFFFFFF, name=name, candidacy_id=match.group(1))


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
