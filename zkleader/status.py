"""`zkleader status`, `resign`, `drain`, `freeze`: what ZooKeeper says about an
election, and the markers operators set beside it.

Status reads ZooKeeper, not the local daemon, so it answers from any host and
even when the local daemon is down. Its --json output is a stable interface
(README, "zkleader status --json"): fields are only ever added.
"""

from __future__ import annotations

import contextlib
import datetime
import getpass
import json
import logging
import os
import signal
import socket
import threading
import time
from collections.abc import Iterator
from dataclasses import asdict, dataclass
from typing import Any

from kazoo.client import KazooClient
from kazoo.exceptions import NoAuthError, NodeExistsError, NoNodeError

from .config import Config
from .connection import Client, TlsRefusals, client_options
from .core import candidacy, drain, exitcodes, preference

SCHEMA_VERSION = 1


class Unreachable(Exception):
    """ZooKeeper did not answer in time."""


class Refused(Unreachable):
    """ZooKeeper answered but refused us: TLS or the election path's ACL. The message
    says which and never contains a secret."""


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

    def to_json(self) -> str:
        document: dict[str, Any] = {"schema": SCHEMA_VERSION, **asdict(self)}
        return json.dumps(document, indent=2)


def _quiet_logger() -> logging.Logger:
    """kazoo's retry chatter would bury the one-line answer of a command."""
    logger = logging.getLogger("zkleader.command.kazoo")
    logger.propagate = False
    if not logger.handlers:
        logger.addHandler(logging.NullHandler())
    return logger


def read(config: Config, timeout: float = 5.0) -> Election:
    """The election as ZooKeeper sees it, with the daemon's own credentials and TLS
    settings (an ACL without world:read needs them)."""
    with session(config, timeout, config.election.path, creates=False) as client:
        return _read(client, config)


@contextlib.contextmanager
def session(config: Config, timeout: float, path: str, creates: bool) -> Iterator[KazooClient]:
    """A connected client with the daemon's credentials and TLS settings, closed on
    exit. creates: keep zookeeper.acl, so that what a command creates (a drain marker)
    carries the ACL the daemons' nodes carry. A NoAuth on ``path`` becomes Refused."""
    zookeeper = config.zookeeper
    options = client_options(zookeeper)
    if not creates:
        options.pop("default_acl", None)
    refused: list[str] = []
    gave_up = threading.Event()

    def on_rejected(reason: str, final: bool) -> None:
        refused.append(reason)
        if final:
            gave_up.set()

    tls = TlsRefusals(len(zookeeper.hosts), on_rejected) if zookeeper.tls is not None else None
    client = Client(clock=time.monotonic, tls=tls, hosts=zookeeper.connection_string,
                    timeout=max(zookeeper.session_timeout, 4.0), logger=_quiet_logger(), **options)
    connected = client.start_async()
    deadline = time.monotonic() + timeout
    while not connected.is_set() and not gave_up.is_set() and time.monotonic() < deadline:
        connected.wait(0.05)
    if not client.connected:
        client.stop()
        client.close()
        if refused:
            raise Refused(f"ZooKeeper at {zookeeper.connection_string} refused TLS: {refused[-1]}")
        raise Unreachable(f"ZooKeeper at {zookeeper.connection_string} did not answer within {timeout:g}s") from None
    try:
        yield client
    except NoAuthError:
        who = f"user {zookeeper.auth.username}" if zookeeper.auth else "an unauthenticated client"
        doing = "writing" if creates else "reading"
        raise Refused(f"ZooKeeper refused {who} {doing} {path} (NoAuth): "
                      "check zookeeper.auth and the ACL of the election path") from None
    finally:
        client.stop()
        client.close()


def set_drained(config: Config, drained: bool, timeout: float = 5.0) -> bool:
    """Create (drain) or delete (undrain) this candidate's marker (core/drain.py);
    True when that changed anything, False when it already was so."""
    marker = drain.marker_path(config.election.path, config.election.candidate or socket.gethostname())
    with session(config, timeout, marker, creates=True) as client:
        try:
            if drained:
                client.create(marker, b"", makepath=True)
            else:
                client.delete(marker)
        except (NodeExistsError, NoNodeError):
            return False
        return True


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
    with session(config, timeout, marker, creates=True) as client:
        try:
            if frozen:
                client.create(marker, data, makepath=True)
            else:
                client.delete(marker)
        except (NodeExistsError, NoNodeError):
            return False
        return True


def request_handover(config: Config, target: str, timeout: float = 5.0) -> tuple[Candidate, Candidate | None]:
    """Ask the leader to hand over to the candidate named ``target`` (core/preference.py):
    the target's queue entry, and the leader (None when the target leads already). Raises
    Refusal when the target is not queued, nobody leads, the election is frozen or
    another handover is pending."""
    path = config.election.path
    marker = preference.handover_path(path)
    with session(config, timeout, marker, creates=True) as client:
        election = _read(client, config)
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
        with contextlib.suppress(NoNodeError):
            client.delete(marker)  # void: its target left the queue
        try:
            client.create(marker, data, makepath=True)
        except NodeExistsError:
            raise Refusal("another handover was asked for at the same moment; look at `zkleader status`",
                          exitcodes.TIMEOUT) from None
        return queued[0], leader


def _read(client: KazooClient, config: Config) -> Election:
    path = config.election.path
    try:
        children = tuple(client.get_children(path))
        parent_data, _ = client.get(path)
    except NoNodeError:
        children, parent_data = (), b""
    queue = candidacy.Queue.from_children(children)
    me = (config.election.candidate, socket.gethostname())
    now = time.time()
    entries = []
    for entry in queue.entries:
        try:
            data, stat = client.get(f"{path}/{entry.name}")
        except NoNodeError:
            continue  # it went while we looked
        facts = _json_object(data)
        candidate = _text(facts.get("candidate"))
        host = _text(facts.get("host"))
        entries.append(
            Candidate(
                position=len(entries),
                node=entry.name,
                candidate=candidate,
                host=host,
                pid=facts.get("pid") if isinstance(facts.get("pid"), int) and not isinstance(facts.get("pid"), bool) else None,
                version=_text(facts.get("version")),
                started_at=_text(facts.get("started_at")),
                token=stat.czxid,
                session=f"0x{stat.ephemeralOwner:x}",
                age_seconds=round(max(0.0, now - stat.ctime / 1000), 1),
                this_host=(candidate, host) == me,
                ephemeral=stat.ephemeralOwner != 0,
                priority=entry.priority,
            )
        )
    leader = next((c for c in entries if c.ephemeral), None)
    record = _json_object(parent_data)
    since = _text(record.get("leader_since")) if leader and record.get("node") == leader.node else None
    try:
        drained = tuple(sorted(client.get_children(drain.markers_path(path))))
    except NoNodeError:
        drained = ()
    return Election(path, config.zookeeper.connection_string, leader, since, tuple(entries), queue.ignored, drained,
                    *_markers(client, path, entries))


def _markers(client: KazooClient, path: str, entries: list[Candidate]) -> tuple[Frozen | None, Handover | None]:
    """The freeze and the handover request in force, as the daemons read them."""
    read: list[tuple[bytes, Any] | None] = []
    for marker in (preference.frozen_path(path), preference.handover_path(path)):
        try:
            read.append(client.get(marker))
        except NoNodeError:
            read.append(None)
    control = preference.parse_control(*(None if r is None else r[0] for r in read))
    frozen = handover = None
    if control.frozen is not None and read[0] is not None:
        frozen = Frozen(_printable(control.frozen.by), _iso(read[0][1].ctime))
    request = control.handover
    if request is not None and read[1] is not None:
        target = next((c for c in entries if c.node == request.to), None)
        handover = Handover(request.to, target.candidate if target else None, _printable(request.by),
                            _printable(request.reason), _iso(read[1][1].ctime))
    return frozen, handover


def _iso(ctime_ms: int) -> str:
    return datetime.datetime.fromtimestamp(ctime_ms / 1000, datetime.timezone.utc).isoformat(timespec="seconds")


def render(election: Election) -> str:
    lines = [f"election  {election.election}  (ZooKeeper {election.zookeeper})"]
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
