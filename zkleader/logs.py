"""structlog configuration: one event per transition, readable on a terminal,
JSON lines for log shippers (and journald fields under systemd, see journal.py).

kazoo logs through the standard library; its warnings (dropped connections,
expired sessions) are bridged into the same stream so an operator reads one log.

Logging never blocks the caller. A write to stderr blocks as long as whoever reads
it does not (a blocking container log driver, a log shipper's full pipe, a terminal
paused with Ctrl-S; the job shares that stderr and can fill the pipe by itself), and
the caller is the daemon's single loop, which must stop the job when the lease runs
out, or kazoo's connection thread, which must keep answering pings. So every
rendered event goes into a bounded in-memory queue, and one writer thread does the
writing. When the queue is full, events are dropped and counted; the first event that
finds room again is preceded by one ``log_lines_dropped`` event (``count``), which
is always written whatever the level, because it says the log is incomplete. At exit
the queue is flushed for at most EXIT_FLUSH_SECONDS: exit never hangs on a stalled
stderr.
"""

from __future__ import annotations

import atexit
import collections
import functools
import logging
import os
import select
import sys
import threading
from collections.abc import Callable
from typing import Any, TextIO

import structlog

from . import journal
from .config import Config, LogFormat

_LEVELS = {"debug": logging.DEBUG, "info": logging.INFO, "warning": logging.WARNING, "error": logging.ERROR}

#: Events waiting for the writer: far more than the daemon logs in minutes, even at
#: debug level, and a few MB at most.
QUEUE_EVENTS = 10_000
#: How long exit waits for the queue to drain (systemd's TimeoutStopSec is 15 s).
EXIT_FLUSH_SECONDS = 2.0

#: A rendered event (a line, or journald's fields) bound to where it goes.
Write = Callable[[], None]


def context(loaded: Config) -> dict[str, Any]:
    """The fields every log line of the daemon (and of its session's releaser) carries."""
    return {"election": loaded.election.path, "candidate": loaded.election.candidate}


def choose_format(requested: LogFormat, stream: TextIO) -> LogFormat:
    """auto: journald under systemd, console on a terminal, JSON lines otherwise."""
    if requested is not LogFormat.AUTO:
        return requested
    if journal.stderr_is_journal(stream):
        return LogFormat.JOURNALD
    return LogFormat.CONSOLE if stream.isatty() else LogFormat.JSON


def configure(level: str, requested: LogFormat, context: dict[str, Any], stream: TextIO = sys.stderr) -> LogFormat:
    """context: fields every event of this daemon carries (election, candidate), from
    whichever thread it is logged. May be called again (reload): events already
    queued are still written as they were rendered."""
    chosen = choose_format(requested, stream)
    out = RawStream(stream)
    processors: list[Any] = [
        _add_context(context),
        structlog.processors.add_log_level,
        structlog.processors.TimeStamper(fmt="iso", utc=True),
    ]
    problem = None
    sink: Callable[[Any], None]
    if chosen is LogFormat.JOURNALD:
        processors.append(journal.JournaldRenderer())
        journal_logger = journal.JournalLogger(out)
        sink = functools.partial(_send_fields, journal_logger)
        if not journal_logger.sends_to_journal:
            problem = ("systemd-python is not importable: writing '<priority>message' lines to stderr "
                       "instead of structured journal entries")
    else:
        if chosen is LogFormat.CONSOLE:
            processors.append(structlog.dev.ConsoleRenderer(colors=stream.isatty()))
        else:
            processors += [structlog.processors.format_exc_info, _headline_first, structlog.processors.JSONRenderer()]
        sink = functools.partial(_write_line, out)
    _writer.drop_report = functools.partial(_drop_report, processors, sink)
    _writer.start()
    structlog.configure(
        processors=processors,
        wrapper_class=structlog.make_filtering_bound_logger(_LEVELS[level]),
        logger_factory=lambda *args: _QueuedLogger(sink),
        cache_logger_on_first_use=False,
    )
    bridge = logging.getLogger("kazoo")
    bridge.handlers[:] = [_StructlogBridge()]
    bridge.setLevel(logging.WARNING if _LEVELS[level] > logging.DEBUG else logging.INFO)
    bridge.propagate = False
    if problem:
        structlog.get_logger().warning("journald_unavailable", problem=problem)
    return chosen


def flush(timeout: float) -> bool:
    """Waits up to `timeout` seconds for every queued event to be written (and a
    pending drop count to be reported); True when that happened."""
    return _writer.flush(timeout)


class RawStream:
    """Writes text straight to a stream's file descriptor.

    The writer thread may block here for as long as the reader stalls. Python's own
    buffered sys.stderr would hold its internal lock meanwhile, and the interpreter
    takes that lock at exit (it aborts after a second when a daemon thread holds it);
    os.write holds nothing. A stream without a descriptor (a test's StringIO) is
    written through its own methods.
    """

    def __init__(self, stream: TextIO) -> None:
        self._stream = stream
        self._fd: int | None
        try:
            self._fd = stream.fileno()
        except (AttributeError, OSError, ValueError):  # io.UnsupportedOperation is both
            self._fd = None

    def write(self, text: str) -> None:
        if self._fd is None:
            self._stream.write(text)
            self._stream.flush()
            return
        data = text.encode("utf-8", "replace")
        while data:
            try:
                data = data[os.write(self._fd, data):]
            except BlockingIOError:  # someone made the shared descriptor non-blocking
                select.select([], [self._fd], [])

    def flush(self) -> None:
        """Nothing is buffered here (JournalLogger's fallback calls it)."""


class _Writer:
    """The bounded queue of pending writes and the one thread that performs them."""

    def __init__(self, capacity: int) -> None:
        self._capacity = capacity
        # (write, how many lost events a failure of this write means)
        self._pending: collections.deque[tuple[Write, int]] = collections.deque()
        self._lock = threading.Lock()
        self._has_work = threading.Condition(self._lock)
        self._idle = threading.Condition(self._lock)
        self._writing = False
        self._dropped = 0
        self._thread: threading.Thread | None = None
        #: Renders and writes a log_lines_dropped event for a count (set by configure,
        #: before any event can be queued).
        self.drop_report: Callable[[int], None] = lambda count: None

    def start(self) -> None:
        with self._lock:
            if self._thread is not None:
                return
            # A daemon thread: a writer blocked on a stalled reader must not keep the
            # process alive; exit waits for it only EXIT_FLUSH_SECONDS.
            self._thread = threading.Thread(target=self._run, name="log-writer", daemon=True)
            self._thread.start()
        atexit.register(self.flush, EXIT_FLUSH_SECONDS)

    def put(self, write: Write) -> None:
        """Queues one event, or drops and counts it when the queue is full. Never blocks
        for longer than it takes another thread to append or pop one entry."""
        with self._lock:
            if len(self._pending) + (1 if self._dropped else 0) >= self._capacity:
                self._dropped += 1
                return
            self._report_drops()
            self._pending.append((write, 1))
            self._has_work.notify()

    def flush(self, timeout: float) -> bool:
        """Waits up to `timeout` for the queue to drain; reports a pending drop count
        first, so that the count is written even when no event follows the drops."""
        with self._lock:
            self._report_drops()
            self._has_work.notify()
            return self._idle.wait_for(lambda: not self._pending and not self._writing, timeout)

    def _report_drops(self) -> None:
        """Called with the lock held: the drop count goes into the queue where the
        missing events would have been (from flush, past its capacity by this entry)."""
        if self._dropped:
            self._pending.append((functools.partial(self.drop_report, self._dropped), self._dropped))
            self._dropped = 0

    def _run(self) -> None:
        while True:
            with self._lock:
                self._has_work.wait_for(lambda: bool(self._pending))
                write, weight = self._pending.popleft()
                self._writing = True
            lost = 0
            try:
                write()
            except Exception:  # noqa: BLE001  a closed stderr (EPIPE), a journal error: the event is lost, counted
                lost = weight
            with self._lock:
                self._dropped += lost
                self._writing = False
                self._idle.notify_all()


_writer = _Writer(QUEUE_EVENTS)


class _QueuedLogger:
    """structlog's logger: hands the rendered event to the writer thread."""

    def __init__(self, sink: Callable[[Any], None]) -> None:
        self._sink = sink

    def msg(self, *args: Any, **fields: Any) -> None:
        """A renderer's line arrives as the one argument, journald's fields as keywords."""
        _writer.put(functools.partial(self._sink, args[0] if args else fields))

    debug = info = warning = warn = error = err = exception = critical = fatal = failure = log = msg


def _write_line(out: RawStream, line: str) -> None:
    out.write(line + "\n")


def _send_fields(logger: journal.JournalLogger, fields: dict[str, str]) -> None:
    logger.msg(**fields)


def _drop_report(processors: list[Any], sink: Callable[[Any], None], count: int) -> None:
    """Renders and writes log_lines_dropped with the configured processors, bypassing
    the level filter (see the module doc)."""
    event: Any = {"event": "log_lines_dropped", "count": count}
    for processor in processors:
        event = processor(None, "warning", event)
    sink(event)


def _headline_first(logger: Any, method: str, event: dict[str, Any]) -> dict[str, Any]:
    """timestamp, level and event lead each JSON line, so a human can scan them."""
    head: dict[str, Any] = {key: event.pop(key) for key in ("timestamp", "level", "event") if key in event}
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
