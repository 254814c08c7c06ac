"""structlog configuration: one event per transition, readable on a terminal,
JSON lines for log shippers (and journald fields under systemd, see journal.py).

kazoo logs through the standard library; its warnings (dropped connections,
expired sessions) are bridged into the same stream so an operator reads one log.
"""

from __future__ import annotations

import logging
import sys
from typing import Any, TextIO

import structlog

from . import journal
from .config import LogFormat

_LEVELS = {"debug": logging.DEBUG, "info": logging.INFO, "warning": logging.WARNING, "error": logging.ERROR}


def choose_format(requested: LogFormat, stream: TextIO) -> LogFormat:
    """auto: journald under systemd, console on a terminal, JSON lines otherwise."""
    if requested is not LogFormat.AUTO:
        return requested
    if journal.stderr_is_journal(stream):
        return LogFormat.JOURNALD
    return LogFormat.CONSOLE if stream.isatty() else LogFormat.JSON


def configure(level: str, requested: LogFormat, context: dict[str, Any], stream: TextIO = sys.stderr) -> LogFormat:
    """context: fields every event of this daemon carries (election, candidate), from
    whichever thread it is logged."""
    chosen = choose_format(requested, stream)
    processors: list[Any] = [
        _add_context(context),
        structlog.processors.add_log_level,
        structlog.processors.TimeStamper(fmt="iso", utc=True),
    ]
    factory: Any = structlog.PrintLoggerFactory(file=stream)
    if chosen is LogFormat.CONSOLE:
        processors.append(structlog.dev.ConsoleRenderer(colors=stream.isatty()))
    elif chosen is LogFormat.JOURNALD:
        processors.append(journal.JournaldRenderer())
        factory = journal.JournalLoggerFactory(stream)
    else:
        processors += [structlog.processors.format_exc_info, _headline_first, structlog.processors.JSONRenderer()]
    structlog.configure(
        processors=processors,
        wrapper_class=structlog.make_filtering_bound_logger(_LEVELS[level]),
        logger_factory=factory,
        cache_logger_on_first_use=False,
    )
    bridge = logging.getLogger("kazoo")
    bridge.handlers[:] = [_StructlogBridge()]
    bridge.setLevel(logging.WARNING if _LEVELS[level] > logging.DEBUG else logging.INFO)
    bridge.propagate = False
    return chosen


def _headline_first(logger: Any, method: str, event: dict[str, Any]) -> dict[str, Any]:
    """timestamp, level and event lead each JSON line, so a human can scan them."""
    head = {key: event.pop(key) for key in ("timestamp", "level", "event") if key in event}
    return {**head, **event}


def _add_context(context: dict[str, Any]) -> Any:
    def add(logger: Any, method: str, event: dict[str, Any]) -> dict[str, Any]:
        for key, value in context.items():
            event.setdefault(key, value)
        return event

    return add


class _StructlogBridge(logging.Handler):
    def emit(self, record: logging.LogRecord) -> None:
        level = record.levelname.lower()
        log = structlog.get_logger()
        getattr(log, level if level in _LEVELS else "warning")("zookeeper_client", message=record.getMessage())
