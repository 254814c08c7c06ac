"""The trace of a simulated run, printed as a timeline when an invariant breaks.

Entries are stored raw (time, who, kind, object, the host's local time) and formatted
only when printed, so recording costs almost nothing. Kinds:

    <-   an event handled by a daemon's core        ->   an action the core returned
    !!   a fault or a world event                    zk   the ZooKeeper model (expiry, znodes)
    job  the job model                               **   the invariant that broke
"""

from __future__ import annotations

import dataclasses
import enum
from collections import deque
from typing import Any

from ..core import actions as act
from ..core import events as ev


class Timeline:
    def __init__(self, limit: int | None) -> None:
        self.entries: deque[tuple[float, str, str, Any, float | None]] = deque(maxlen=limit)
        self.dropped_before = limit is not None

    def record(self, t: float, who: str, kind: str, obj: Any, local: float | None) -> None:
        self.entries.append((t, who, kind, obj, local))

    def format(self, last: int | None = None, logs: bool = True, compact: bool = True) -> str:
        """The last ``last`` lines; with ``compact``, a leader's routine heartbeats (Tick,
        exists on its own node, the answer) are folded into one line per run."""
        entries = list(self.entries)
        if compact:
            entries = _fold_heartbeats(entries)
        if last is not None:
            entries = entries[-last:]
        lines = []
        for t, who, kind, obj, local in entries:
            if not logs and isinstance(obj, act.Log) and obj.level in ("debug", "info"):
                continue
            lines.append(f"{t:10.4f}  {who:<7} {kind:<3} {describe(obj, local)}")
        return "\n".join(lines)


def _is_heartbeat(entries: list[tuple[float, str, str, Any, float | None]], i: int) -> bool:
    """entries[i:i+3] is Tick -> CheckNode(own, watch) -> NodeChecked(owned) of one host."""
    if i + 2 >= len(entries):
        return False
    (_, who, k0, e0, _), (_, w1, k1, e1, _), (_, w2, k2, e2, _) = entries[i], entries[i + 1], entries[i + 2]
    return (
        who == w1 == w2
        and k0 == "<-" and isinstance(e0, ev.Tick)
        and k1 == "->" and isinstance(e1, act.CheckNode) and e1.watch
        and k2 == "<-" and isinstance(e2, ev.NodeChecked) and e2.stat is not None
    )


def _fold_heartbeats(entries: list[tuple[float, str, str, Any, float | None]]) -> list[tuple[float, str, str, Any, float | None]]:
    out: list[tuple[float, str, str, Any, float | None]] = []
    runs: dict[str, list[Any]] = {}  # host -> [first time, count, index in out]
    i = 0
    while i < len(entries):
        if _is_heartbeat(entries, i):
            t, who = entries[i][0], entries[i][1]
            run = runs.get(who)
            if run is not None and out[run[2]][1] == who:
                run[1] += 1
                out[run[2]] = (run[0], who, "..", f"{run[1]} routine heartbeats (exists on its own node, answered) "
                                                 f"until t={entries[i + 2][0]:.4f}", None)
            else:
                runs[who] = [t, 1, len(out)]
                out.extend(entries[i:i + 3])
                runs[who][2] = len(out) - 1
                runs[who][0] = entries[i + 2][0]
                runs[who][1] = 0
            i += 3
            continue
        entry = entries[i]
        runs.pop(entry[1], None)
        out.append(entry)
        i += 1
    return out


def describe(obj: Any, local: float | None = None) -> str:
    if isinstance(obj, str):
        return obj
    if isinstance(obj, act.Log):
        fields = " ".join(f"{k}={_short(v)}" for k, v in obj.fields.items())
        return f"log {obj.level} {obj.event} {fields}".rstrip()
    if isinstance(obj, ev.Connected):
        return f"Connected(session=0x{obj.session_id:x}, timeout={obj.negotiated_timeout:g})"
    if isinstance(obj, ev.NodeChecked):
        stat = "none" if obj.stat is None else f"czxid={obj.stat.czxid} owner=0x{obj.stat.ephemeral_owner:x}"
        return f"NodeChecked(#{obj.request_id}, {stat}{_age(obj.sent_at, local)})"
    if isinstance(obj, ev.ChildrenListed):
        names = ", ".join(_short(c) for c in obj.children)
        return f"ChildrenListed(#{obj.request_id}, [{names}]{_age(obj.sent_at, local)})"
    if isinstance(obj, (ev.Created, ev.Deleted, ev.RequestFailed)):
        body = [f"#{obj.request_id}"]
        if isinstance(obj, ev.Created):
            body.append(_short(obj.name))
        if isinstance(obj, ev.RequestFailed):
            body.append(obj.failure.value)
        return f"{type(obj).__name__}({', '.join(body)}{_age(obj.sent_at, local)})"
    if isinstance(obj, (act.CheckNode, act.ListChildren, act.DeleteNode)):
        extra = ", watch" if isinstance(obj, act.CheckNode) and obj.watch else ""
        return f"{type(obj).__name__}(#{obj.request_id}, {_short(obj.path)}{extra})"
    if isinstance(obj, act.CreateNode):
        return f"CreateNode(#{obj.request_id}, {_short(obj.path_prefix)}{'*' if obj.sequential else ''})"
    if isinstance(obj, act.ReadNodes):
        return f"ReadNodes(#{obj.request_id}, {', '.join(_short(p) for p in obj.paths)})"
    if type(obj).__name__ == "PublishLeadership":
        return f"PublishLeadership(#{obj.request_id}, {obj.path}, token={obj.data.get('token')})"
    if hasattr(obj, "request_id") and hasattr(obj, "sent_at"):
        return f"{type(obj).__name__}(#{obj.request_id}{_age(obj.sent_at, local)})"
    if isinstance(obj, act.StartJob):
        return f"StartJob(token={obj.token}, {_short(obj.znode)})"
    if dataclasses.is_dataclass(obj):
        parts = []
        for f in dataclasses.fields(obj):
            value = getattr(obj, f.name)
            parts.append(f"{f.name}={_short(value)}")
        return f"{type(obj).__name__}({', '.join(parts)})"
    return repr(obj)


def _age(sent_at: float, local: float | None) -> str:
    if local is None:
        return ""
    return f", sent {local - sent_at:.3f}s ago"


def _short(value: Any) -> str:
    """Node names are long; keep the id's first 8 hex digits and the sequence."""
    if isinstance(value, enum.Enum):
        return str(value.value)
    if isinstance(value, float):
        return f"{value:.3f}"
    if isinstance(value, str):
        if "/" in value:
            head, _, tail = value.rpartition("/")
            return f"{head}/{_short(tail)}" if tail.startswith("zkl-") else value
        if value.startswith("zkl-") and len(value) > 40:
            return short_name(value)
        return value
    if isinstance(value, list):
        return "[" + ", ".join(_short(v) for v in value) + "]"
    return str(value)


def short_name(name: str) -> str:
    """zkl-<32 hex>-<seq> as the simulation makes them: host, generation, candidacy."""
    ident, _, seq = name[4:].partition("-")
    try:
        host, gen, n = int(ident[0:4], 16), int(ident[4:12], 16), int(ident[12:], 16)
    except ValueError:
        return f"zkl-{ident[:8]}..-{seq}"
    return f"zkl[h{host}.g{gen}.c{n}]-{seq}"
