"""`zkleader status`, `resign`, `drain`, `freeze`: what the store (ZooKeeper or etcd)
says about an election, and the markers operators set beside it.

Status reads the store (stores.py), not the local daemon, so it answers from any host
and even when the local daemon is down. Its output is the same for both stores, and
its --json output is a stable interface (README, "zkleader status --json"): fields are
only ever added.
"""

from __future__ import annotations

import datetime
import getpass
import json
import os
import signal
import socket
import time
from dataclasses import asdict, dataclass
from typing import Any

from .config import Config
from .core import candidacy, claim, drain, exitcodes, preference
from .stores import Node, Refused, Store, Unreachable, connect

__all__ = ["Refused", "Unreachable"]  # the commands' errors, raised by stores.py

SCHEMA_VERSION = 1


@dataclass(frozen=True)
class Candidate:
    position: int
    node: str
    candidate: str | None
    host: str | None
    pid: int | None
    version: str | None
    started_at: str | None
    token: int
    session: str
    age_seconds: float
    this_host: bool
    #: False for a node no session owns (ephemeralOwner 0): not a daemon's, someone
    #: made it by hand. The daemons skip it (no session can ever remove it), so it
    #: is never the leader here either.
    ephemeral: bool = True
    #: election.priority, from the node's name (core/candidacy.py).
    priority: int = 0


@dataclass(frozen=True)
class Frozen:
    """`zkleader freeze` is in force: who froze the election, and since when (the
    marker's creation, by ZooKeeper's clock)."""

    by: str
    since: str


@dataclass(frozen=True)
class Handover:
    """A handover request that still stands (core/preference.py): to whom, why."""

    to: str
    to_candidate: str | None
    by: str
    reason: str
    since: str


@dataclass(frozen=True)
class Claim:
    """The leader's claim (core/claim.py): which session holds it, for which node. Held
    by a session other than the first node's, it keeps the next in line waiting: the
    previous leader's node went while its session lives, and its job may still run."""

    node: str
    session: str
    #: The session of the first node in the queue holds it.
    held_by_leader: bool


@dataclass(frozen=True)
class Election:
    election: str
    zookeeper: str
    leader: Candidate | None
    leader_since: str | None
    queue: tuple[Candidate, ...]
    ignored: tuple[str, ...]
    #: Candidates an operator drained (`zkleader drain`): out of the queue until undrained.
    drained: tuple[str, ...] = ()
    frozen: Frozen | None = None
    handover: Handover | None = None
    #: The store's name ("ZooKeeper", "etcd") for the text's first line. Not in the
    #: JSON, whose schema is the same for both stores: ``zookeeper`` holds the address
    #: of whichever store the configuration names.
    store: str = "ZooKeeper"
    claim: Claim | None = None

    def to_json(self) -> str:
        document: dict[str, Any] = {"schema": SCHEMA_VERSION, **asdict(self)}
        del document["store"]
        return json.dumps(document, indent=2)


def read(config: Config, timeout: float = 5.0) -> Election:
    """The election as the store sees it, with the daemon's own credentials and TLS
    settings (an ACL without world:read needs them)."""
    with connect(config, timeout, config.election.path, creates=False) as store:
        return _read(store, config)


def set_drained(config: Config, drained: bool, timeout: float = 5.0) -> bool:
    """Create (drain) or delete (undrain) this candidate's marker (core/drain.py);
    True when that changed anything, False when it already was so."""
    marker = drain.marker_path(config.election.path, config.election.candidate or socket.gethostname())
    with connect(config, timeout, marker, creates=True) as store:
        return store.create(marker, b"") if drained else store.delete(marker)


class Refusal(Exception):
    """An operator's request the election's state refuses; ``code`` is the exit status."""

    def __init__(self, message: str, code: int) -> None:
        super().__init__(message)
        self.code = code


def operator() -> str:
    """Who asks, for the markers' ``by`` (the one behind sudo, where there is one)."""
    return f"{os.environ.get('SUDO_USER') or getpass.getuser()}@{socket.gethostname()}"


def _now_text() -> str:
    return datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds")


def set_frozen(config: Config, frozen: bool, timeout: float = 5.0) -> bool:
    """Create (freeze) or delete (thaw) the election's freeze marker; True when that
    changed anything, False when it already was so."""
    marker = preference.frozen_path(config.election.path)
    data = json.dumps({"by": operator(), "at": _now_text()}, separators=(",", ":")).encode()
    with connect(config, timeout, marker, creates=True) as store:
        return store.create(marker, data) if frozen else store.delete(marker)


def request_handover(config: Config, target: str, timeout: float = 5.0) -> tuple[Candidate, Candidate | None]:
    """Ask the leader to hand over to the candidate named ``target`` (core/preference.py):
    the target's queue entry, and the leader (None when the target leads already). Raises
    Refusal when the target is not queued, nobody leads, the election is frozen or
    another handover is pending."""
    path = config.election.path
    marker = preference.handover_path(path)
    with connect(config, timeout, marker, creates=True) as store:
        election = _read(store, config)
        if election.frozen is not None:
            raise Refusal(f"{path} is frozen (by {election.frozen.by} since {election.frozen.since}): "
                          "nobody hands over until `zkleader thaw`", exitcodes.TIMEOUT)
        queued = [c for c in election.queue if c.ephemeral and c.candidate == target]
        if not queued:
            names = ", ".join(_printable(c.candidate or "?") for c in election.queue if c.ephemeral) or "nobody"
            raise Refusal(f"{_printable(target)} is not in the queue of {path} (not running, failing its health "
                          f"check, or drained); queued: {names}", exitcodes.NOT_FOUND)
        leader = election.leader
        assert leader is not None  # the queue holds a daemon's node
        if queued[0].node == leader.node:
            return queued[0], None
        pending = election.handover
        if pending is not None and any(c.node == pending.to for c in election.queue):
            raise Refusal(f"a handover to {_printable(pending.to_candidate or pending.to)} is pending "
                          f"(asked by {pending.by} since {pending.since})", exitcodes.TIMEOUT)
        data = preference.handover_data(queued[0].node, operator(), "resign --to", _now_text())
        store.delete(marker)  # if any, void: its target left the queue
        if not store.create(marker, data):
            raise Refusal("another handover was asked for at the same moment; look at `zkleader status`",
                          exitcodes.TIMEOUT)
        return queued[0], leader


def _read(store: Store, config: Config) -> Election:
    path = config.election.path
    queue = candidacy.Queue.from_children(store.candidates(path))
    me = (config.election.candidate, socket.gethostname())
    now = time.time()
    entries: list[Candidate] = []
    for entry in queue.entries:
        node = store.candidate(path, entry.name)
        if node is None:
            continue  # it went while we looked
        facts = _json_object(node.data)
        candidate = _text(facts.get("candidate"))
        host = _text(facts.get("host"))
        started_at = _text(facts.get("started_at"))
        # etcd keeps no creation time: the daemon's start is the nearest (never younger).
        created = node.created if node.created is not None else _epoch(started_at)
        entries.append(
            Candidate(
                position=len(entries),
                node=entry.name,
                candidate=candidate,
                host=host,
                pid=facts.get("pid") if isinstance(facts.get("pid"), int) and not isinstance(facts.get("pid"), bool) else None,
                version=_text(facts.get("version")),
                started_at=started_at,
                token=node.token,
                session=f"0x{node.owner:x}",
                age_seconds=round(max(0.0, now - created), 1) if created is not None else 0.0,
                this_host=(candidate, host) == me,
                ephemeral=node.owner != 0,
                priority=entry.priority,
            )
        )
    leader = next((c for c in entries if c.ephemeral), None)
    parent = store.get(path)
    record = _json_object(parent.data if parent is not None else b"")
    since = _text(record.get("leader_since")) if leader and record.get("node") == leader.node else None
    drained = store.markers(drain.markers_path(path))
    held = store.get(claim.claim_path(path))
    owner = None if held is None else Claim(_printable(held.data.decode(errors="replace"))[:255],
                                            f"0x{held.owner:x}", leader is not None and leader.session == f"0x{held.owner:x}")
    return Election(path, store.address, leader, since, tuple(entries), queue.ignored, drained,
                    *_markers(store, path, entries), store=store.kind, claim=owner)


def _markers(store: Store, path: str, entries: list[Candidate]) -> tuple[Frozen | None, Handover | None]:
    """The freeze and the handover request in force, as the daemons read them."""
    read = [store.get(preference.frozen_path(path)), store.get(preference.handover_path(path))]
    control = preference.parse_control(*(None if node is None else node.data for node in read))
    frozen = handover = None
    if control.frozen is not None and read[0] is not None:
        frozen = Frozen(_printable(control.frozen.by), _since(read[0]))
    request = control.handover
    if request is not None and read[1] is not None:
        target = next((c for c in entries if c.node == request.to), None)
        handover = Handover(request.to, target.candidate if target else None, _printable(request.by),
                            _printable(request.reason), _since(read[1]))
    return frozen, handover


def _since(marker: Node) -> str:
    """When a marker was set: its creation where the store keeps it (ZooKeeper), else
    the ``at`` the command wrote into it (etcd keeps no time for a key)."""
    if marker.created is not None:
        return datetime.datetime.fromtimestamp(marker.created, datetime.timezone.utc).isoformat(timespec="seconds")
    return _printable(_text(_json_object(marker.data).get("at")) or "unknown")


def _epoch(text: str | None) -> float | None:
    """An ISO 8601 time with its zone (started_at) in seconds since the epoch, or None."""
    try:
        moment = datetime.datetime.fromisoformat(text) if text else None
    except ValueError:
        return None
    return moment.timestamp() if moment is not None and moment.tzinfo is not None else None


def render(election: Election) -> str:
    lines = [f"election  {election.election}  ({election.store} {election.zookeeper})"]
    leader = election.leader
    if leader is None:
        lines.append("leader    none: no candidate is queued")
    elif election.frozen is not None and election.leader_since is None:
        lines.append(f"leader    none running: {_printable(leader.candidate or '?')} on {_printable(leader.host or '?')} "
                     "is first in line and takes over at `zkleader thaw`")
    else:
        since = election.leader_since or "unknown"
        lines.append(f"leader    {_printable(leader.candidate or '?')} on {_printable(leader.host or '?')} "
                     f"(pid {leader.pid}), since {_printable(since)}, token {leader.token}")
    if election.frozen is not None:
        lines.append(f"frozen    since {election.frozen.since} by {election.frozen.by}: nobody takes over or hands "
                     "over until `zkleader thaw`")
    if election.claim is not None and not election.claim.held_by_leader:
        lines.append(f"waiting   the previous leader's session {election.claim.session} (node {election.claim.node}) "
                     "still holds the leader's claim: its job may still run; the next in line takes over once it "
                     "is released or that session expires")
    if election.handover is not None:
        request = election.handover
        target = _printable(request.to_candidate) if request.to_candidate else f"{request.to} (no longer queued)"
        lines.append(f"handover  to {target}, asked by {request.by} ({request.reason}) at {request.since}")
    if election.queue:
        header = ("POS", "CANDIDATE", "HOST", "PID", "PRI", "AGE", "NODE", "")
        rows = [header] + [
            (str(c.position), _printable(c.candidate or "?"), _printable(c.host or "?"), str(c.pid or "?"),
             str(c.priority), _age(c.age_seconds), c.node,
             "<- this host" if c.this_host else "" if c.ephemeral else "<- persistent")
            for c in election.queue
        ]
        widths = [max(len(row[i]) for row in rows) for i in range(len(header))]
        lines.append("")
        lines += ["  ".join(cell.ljust(widths[i]) for i, cell in enumerate(row)).rstrip() for row in rows]
    if election.drained:
        lines.append(f"\ndrained   {', '.join(_printable(name) for name in election.drained)} "
                     "(out of the queue until `zkleader undrain`)")
    persistent = [c.node for c in election.queue if not c.ephemeral]
    if persistent:
        lines.append(f"\nwarning   {len(persistent)} node(s) in zkleader's format that no session owns (made by hand, "
                     f"not by a daemon): {', '.join(persistent[:5])}; the daemons skip them: delete them")
    if election.ignored:
        names = ", ".join(_printable(name) for name in election.ignored[:5])
        lines.append(f"\nignored   {len(election.ignored)} child node(s) not in zkleader's format: {names}")
    return "\n".join(lines)


def signal_local_daemon(entry: Candidate) -> str | None:
    """SIGUSR1 to the daemon behind our own entry; None when done, else why not."""
    if entry.pid is None:
        return "the node does not name the daemon's pid"
    try:
        with open(f"/proc/{entry.pid}/cmdline", "rb") as handle:
            command = handle.read().replace(b"\0", b" ").decode(errors="replace")
    except OSError:
        return f"no process {entry.pid} on this host"
    if "zkleader" not in command:
        return f"process {entry.pid} is not a zkleader daemon ({command[:60]})"
    os.kill(entry.pid, signal.SIGUSR1)
    return None


def _json_object(data: bytes) -> dict[str, Any]:
    try:
        value = json.loads(data.decode()) if data else {}
    except (ValueError, UnicodeDecodeError):
        return {}
    return value if isinstance(value, dict) else {}


def _text(value: Any) -> str | None:
    return value[:255] if isinstance(value, str) else None


def _printable(text: str) -> str:
    """Node data is anyone's input: no terminal escapes or line breaks reach the screen."""
    return "".join(c if c.isprintable() else "?" for c in text)


def _age(seconds: float) -> str:
    if seconds < 120:
        return f"{seconds:.0f}s"
    if seconds < 7200:
        return f"{seconds / 60:.0f}m"
    if seconds < 172800:
        return f"{seconds / 3600:.0f}h"
    return f"{seconds / 86400:.0f}d"
