"""Structured logging to journald, for structlog.

Under systemd every event becomes one journal entry whose fields can be
queried (``journalctl -u zkleader ZKLEADER_EVENT=leader_acquired``,
``journalctl MESSAGE_ID=c1937893b6d6476990a52da88714bc4d``) and explained
(``journalctl -x`` shows the entry of systemd/zkleader.catalog for the
MESSAGE_ID):

* MESSAGE: one readable sentence, e.g.
  "leader acquired for /zkleader/report (token 4294967321)";
* PRIORITY: the syslog priority of the structlog level;
* MESSAGE_ID: a fixed id per event kind (MESSAGE_IDS; anything else gets
  OTHER_MESSAGE_ID), so that tools and the catalog need no text matching (ids
  and sentences come from the registry of log events, zkleader/core/logevents.py);
* ZKLEADER_EVENT: structlog's event name;
* ZKLEADER_<KEY>: every other key of the event dict, upper-cased (election,
  candidate, token, leader, reason, pid, ...);
* SYSLOG_IDENTIFIER=zkleader, so ``journalctl -t zkleader`` finds them.

Wiring, for a program of its own (the daemon's logs.configure does the same for
``logging.format: journald``, and for ``auto`` when stderr_is_journal() says stderr
already goes there, but sends from its log writer thread so that a slow journal
never blocks the daemon's loop)::

    structlog.configure(
        processors=[..., structlog.processors.add_log_level, journal.JournaldRenderer()],
        logger_factory=journal.JournalLoggerFactory(),
    )

The renderer is a pure function of the event dict (journal_fields), so it is
testable without a journal; the logger sends with systemd-python's
``systemd.journal.sendv`` (imported lazily). Without systemd-python, or if the
journal socket fails, it falls back to writing ``<priority>MESSAGE`` lines to
stderr, which journald's stream reader turns into entries of the right priority
(logs.configure says so with a ``journald_unavailable`` warning).
"""

from __future__ import annotations

import json
import os
import re
import signal
import sys
import traceback
from collections.abc import Mapping
from typing import Any, Protocol, TextIO

from .core.logevents import CONTEXT_FIELDS, EVENTS, OTHER_MESSAGE_ID

__all__ = [
    "MESSAGE_IDS", "OTHER_MESSAGE_ID", "EVENT_FIELDS", "CONTEXT_FIELDS", "PRIORITIES", "message_id", "priority",
    "format_message", "journal_fields", "JournaldRenderer", "JournalLogger",
    "JournalLoggerFactory", "stderr_is_journal", "SYSLOG_IDENTIFIER", "TextSink",
]

SYSLOG_IDENTIFIER = "zkleader"
FIELD_PREFIX = "ZKLEADER_"

#: event -> MESSAGE_ID, for the events with an id of their own (the registry,
#: zkleader/core/logevents.py, holds them; each has an entry in systemd/zkleader.catalog).
MESSAGE_IDS: dict[str, str] = {e.name: e.message_id for e in EVENTS.values() if e.has_own_id}

#: event -> the fields its sentence and its catalog entry may use besides
#: CONTEXT_FIELDS, for the same events as MESSAGE_IDS (from the registry too).
EVENT_FIELDS: dict[str, tuple[str, ...]] = {e.name: e.fields for e in EVENTS.values() if e.has_own_id}

#: structlog level (or method) name -> syslog priority (syslog(3), sd-daemon(3)).
PRIORITIES: dict[str, int] = {
    "critical": 2, "fatal": 2,
    "error": 3, "err": 3, "exception": 3, "failure": 3,
    "warning": 4, "warn": 4,
    "notice": 5,
    "info": 6, "msg": 6, "success": 6,
    "debug": 7,
}

# Keys that are not copied into ZKLEADER_* fields: the event name has its own
# field, the level is PRIORITY, journald stamps its own time, structlog's
# stdlib integration keys are internal, exc_info becomes ZKLEADER_EXCEPTION.
_SKIP_KEYS = frozenset({"event", "level", "timestamp", "exc_info", "_record", "_from_structlog"})
# Context keys left out of the catch-all sentence (they are on every event).
_CONTEXT_KEYS = frozenset(CONTEXT_FIELDS)
_OPTIONAL = re.compile(r"\[([^\[\]]*)\]")
_PLACEHOLDER = re.compile(r"\{(\w+)\}")
_BAD_FIELD_CHARS = re.compile(r"[^A-Z0-9_]")


def message_id(event: str) -> str:
    """The MESSAGE_ID of an event kind (OTHER_MESSAGE_ID for unknown ones)."""
    entry = EVENTS.get(event)
    return entry.message_id if entry is not None else OTHER_MESSAGE_ID


def priority(level: str | None) -> int:
    """syslog priority for a structlog level name; info when unknown."""
    return PRIORITIES.get((level or "info").lower(), 6)


def _text(value: Any) -> str:
    """A field value as journal text: strings as they are, JSON for the rest
    (so True is "true", None is "null", lists and dicts stay parseable)."""
    if isinstance(value, str):
        return value
    if isinstance(value, bytes):
        return value.decode("utf-8", "replace")
    if isinstance(value, (bool, type(None), list, tuple, dict)):
        try:
            return json.dumps(value, separators=(",", ":"), default=str)
        except (TypeError, ValueError):
            return str(value)
    return str(value)


def _inline(value: Any) -> str:
    """A value inside the one-line MESSAGE."""
    if isinstance(value, (list, tuple)):
        text = "; ".join(_inline(v) for v in value)
    elif isinstance(value, bool):
        text = "yes" if value else "no"
    elif value is None:
        text = "none"
    else:
        text = _text(value)
    return " ".join(text.split())


def format_message(event: str, fields: Mapping[str, Any]) -> str:
    """The readable one-line MESSAGE for an event and its fields."""
    present = {k: v for k, v in fields.items() if v is not None and v != ""}
    entry = EVENTS.get(event)
    template = entry.template if entry is not None else None
    if template is None:
        extra = [(k, v) for k, v in fields.items()
                 if k not in _SKIP_KEYS and k not in _CONTEXT_KEYS and k != "exception"]
        if "message" in fields:
            return " ".join(f"{event}: {_inline(fields['message'])}".split())
        if not extra:
            return str(event)
        return f"{event}: " + ", ".join(f"{k}={_inline(v)}" for k, v in extra)

    def optional(match: re.Match[str]) -> str:
        part = match.group(1)
        keys = _PLACEHOLDER.findall(part)
        return part if all(k in present for k in keys) else ""

    def value(match: re.Match[str]) -> str:
        key = match.group(1)
        found = present.get(key, "?")
        if key == "signal" and isinstance(found, int) and not isinstance(found, bool):
            try:
                return signal.Signals(found).name
            except ValueError:
                pass
        return _inline(found)

    text = _OPTIONAL.sub(optional, template)
    return _PLACEHOLDER.sub(value, text)


def field_name(key: str) -> str:
    """ZKLEADER_<KEY>: upper-cased, anything but A-Z 0-9 _ replaced by _,
    at most 64 characters (journald's limit on field names)."""
    return (FIELD_PREFIX + _BAD_FIELD_CHARS.sub("_", str(key).upper()))[:64]


def _exception_text(exc_info: Any) -> str | None:
    if not exc_info:
        return None
    if exc_info is True:
        exc_info = sys.exc_info()
    elif isinstance(exc_info, BaseException):
        exc_info = (type(exc_info), exc_info, exc_info.__traceback__)
    if not isinstance(exc_info, tuple) or exc_info[0] is None:
        return None
    return "".join(traceback.format_exception(*exc_info)).rstrip()


def journal_fields(event_dict: Mapping[str, Any], method_name: str | None = None) -> dict[str, str]:
    """Map a structlog event dict to journal fields (pure; see module doc)."""
    event = str(event_dict.get("event", ""))
    level = event_dict.get("level") or method_name or "info"
    exception = _exception_text(event_dict.get("exc_info"))
    if exception is None and isinstance(event_dict.get("exception"), str):
        exception = event_dict["exception"]  # structlog's format_exc_info ran before us
    sentence_fields: Mapping[str, Any] = event_dict
    if exception and not event_dict.get("error"):
        # "internal error: ValueError: boom" rather than just "internal error"
        sentence_fields = {**event_dict, "error": exception.strip().splitlines()[-1]}
    fields: dict[str, str] = {
        "MESSAGE": format_message(event, sentence_fields),
        "PRIORITY": str(priority(str(level))),
        "MESSAGE_ID": message_id(event),
        "SYSLOG_IDENTIFIER": SYSLOG_IDENTIFIER,
        "ZKLEADER_EVENT": event,
    }
    for key, value in event_dict.items():
        if key in _SKIP_KEYS:
            continue
        name = field_name(key)
        if name == "ZKLEADER_EVENT":
            continue
        fields[name] = _text(value)
    if exception:
        fields.setdefault("ZKLEADER_EXCEPTION", exception)
    return fields


class JournaldRenderer:
    """structlog's final processor: returns the journal fields as a dict, which
    structlog passes as keyword arguments to JournalLogger."""

    def __call__(self, logger: Any, method_name: str, event_dict: Mapping[str, Any]) -> dict[str, str]:
        return journal_fields(event_dict, method_name)


class TextSink(Protocol):
    """Where fallback lines go: a text stream, or logs.RawStream."""

    def write(self, text: str, /) -> Any: ...

    def flush(self) -> Any: ...


class JournalLogger:
    """Sends each rendered event to journald (systemd.journal.sendv)."""

    def __init__(self, fallback: TextSink | None = None, *, use_journal: bool = True) -> None:
        """fallback: where "<priority>MESSAGE" lines go when the journal cannot
        be used (default: sys.stderr at the time of writing); use_journal=False
        forces the fallback (tests, or a daemon told not to use the socket)."""
        self._fallback = fallback
        self._sendv: Any = None
        if use_journal:
            try:
                from systemd import journal  # type: ignore[attr-defined]  # (systemd-python has no stubs)

                self._sendv = journal.sendv
            except ImportError:
                self._sendv = None

    @property
    def sends_to_journal(self) -> bool:
        """False when every event goes to the fallback lines (no systemd-python)."""
        return self._sendv is not None

    def msg(self, **fields: str) -> None:
        if not fields.get("MESSAGE"):
            return
        if self._sendv is not None:
            try:
                self._sendv(*(f"{k}={v}" for k, v in fields.items()))
                return
            except OSError:
                pass
        stream = self._fallback or sys.stderr
        prio = fields.get("PRIORITY", "6")
        for line in (fields["MESSAGE"].splitlines() or [""]):
            stream.write(f"<{prio}>{line}\n")
        stream.flush()

    debug = info = notice = warning = warn = error = err = exception = critical = fatal = failure = success = log = msg

    def __call__(self, **fields: str) -> None:
        self.msg(**fields)


class JournalLoggerFactory:
    """logger_factory for structlog.configure."""

    def __init__(self, fallback: TextSink | None = None, *, use_journal: bool = True) -> None:
        self._fallback = fallback
        self._use_journal = use_journal

    def __call__(self, *args: Any) -> JournalLogger:
        return JournalLogger(self._fallback, use_journal=self._use_journal)


def stderr_is_journal(stream: TextIO | None = None) -> bool:
    """True when stderr (or `stream`) is connected to the journal.

    systemd sets JOURNAL_STREAM=<device>:<inode> for a service whose stdout or
    stderr is a journal stream; the variable is inherited, so we only trust it
    when it matches the stream's own fstat (a child whose stderr was redirected
    elsewhere gets False). This is how ``logging.format: auto`` picks journald
    under systemd and console/JSON elsewhere (sd_journal_stream_fd(3),
    systemd.exec(5) "$JOURNAL_STREAM").
    """
    value = os.environ.get("JOURNAL_STREAM", "")
    if ":" not in value:
        return False
    try:
        dev, ino = (int(part) for part in value.split(":", 1))
        fd = (stream if stream is not None else sys.stderr).fileno()
        st = os.fstat(fd)
    except (ValueError, OSError, AttributeError):
        return False
    except Exception:  # io.UnsupportedOperation (pytest capture etc.)
        return False
    return st.st_dev == dev and st.st_ino == ino
