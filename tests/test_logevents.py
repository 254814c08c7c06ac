"""zkleader.core.logevents: every event the daemon logs is registered.

An event nobody registered still reaches the journal, but under the catch-all
MESSAGE_ID and the catch-all sentence; a registered name nobody logs any more leaves
a catalog entry explaining nothing. So this test reads zkleader/ (the core and the
shells, not the test bed nor the simulation, which log for their own readers) and
collects every event name at its call sites:

* the core's ``actions.Log(event, level, fields)`` and its helpers with the same
  leading arguments (``Outbox.log``, ``Leadership._log``);
* structlog calls, ``log.warning("event", ...)``, and ``getattr(log, level)("event")``;
* event dicts rendered by hand, ``{"event": "log_lines_dropped", ...}``.

An event name must be a literal (or a conditional choice between literals) so that
it can be read here; a call site that passes a variable forwards a name logged
elsewhere (daemon.py executes the core's Log actions), which is scanned at its source.
That the catalog has an entry for each registered MESSAGE_ID and none other is checked
with the strict catalog parser in tests/test_journal.py.
"""

from __future__ import annotations

import ast
import re
import sys
import uuid
from dataclasses import dataclass
from pathlib import Path

from zkleader.core import logevents
from zkleader.core.logevents import EVENTS

PACKAGE = Path(__file__).resolve().parents[1] / "zkleader"
#: Subpackages that are not the daemon: they log for the tests' readers.
NOT_SCANNED = ("testing", "simulation")

#: structlog method -> the level add_log_level records (None: no level of its own).
METHOD_LEVELS: dict[str, str | None] = {
    "debug": "debug", "info": "info", "warning": "warning", "warn": "warning", "error": "error",
    "exception": "error", "critical": "critical", "fatal": "critical", "msg": None,
}
#: Registered, with a catalog entry, but logged nowhere: configuration errors are
#: printed to stderr before logging is configured (cli.py).
NOT_LOGGED = frozenset({"config_error"})
#: The core's ways of logging, all (event, level="info", ...).
CORE_CALLS = frozenset({"Log", "log", "_log"})
EVENT_NAME = re.compile(r"[a-z][a-z0-9_]*")


@dataclass(frozen=True)
class Site:
    """One place that logs an event: where, which event, at which levels (None when
    the level is decided at run time, or elsewhere)."""

    where: str
    event: str
    levels: frozenset[str] | None


def _literals(node: ast.expr | None) -> list[str] | None:
    """The strings an expression can be: a literal, or `a if c else b` of such."""
    if isinstance(node, ast.Constant) and isinstance(node.value, str):
        return [node.value]
    if isinstance(node, ast.IfExp):
        body, orelse = _literals(node.body), _literals(node.orelse)
        return body + orelse if body is not None and orelse is not None else None
    return None


def _is_stdlib_logger(node: ast.expr) -> bool:
    """logging.getLogger(...).debug(...): a log record (kazoo's bridge turns those
    into zookeeper_client events), not an event of ours."""
    return (isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute)
            and node.func.attr == "getLogger")


def _level_of(call: ast.Call) -> tuple[bool, ast.expr | None, list[str] | None]:
    """Whether `call` logs an event; if so its event argument and possible levels."""
    func = call.func
    name = func.attr if isinstance(func, ast.Attribute) else func.id if isinstance(func, ast.Name) else None
    first = call.args[0] if call.args else next((k.value for k in call.keywords if k.arg == "event"), None)
    if name in CORE_CALLS:
        keyword = next((k.value for k in call.keywords if k.arg == "level"), None)
        level = call.args[1] if len(call.args) > 1 else keyword
        return True, first, ["info"] if level is None else _literals(level)
    if isinstance(func, ast.Attribute) and name in METHOD_LEVELS and not _is_stdlib_logger(func.value):
        method_level = METHOD_LEVELS[name]
        return True, first, None if method_level is None else [method_level]
    if (isinstance(func, ast.Call) and isinstance(func.func, ast.Name) and func.func.id == "getattr"
            and len(func.args) == 2):
        method_levels = _literals(func.args[1])
        levels = None if method_levels is None else [METHOD_LEVELS.get(m) or m for m in method_levels]
        return True, first, levels
    return False, None, None


def scan() -> tuple[list[Site], list[str]]:
    """Every logging site in the daemon's code, and the sites whose event cannot be read."""
    sites: list[Site] = []
    unreadable: list[str] = []
    for path in sorted(PACKAGE.rglob("*.py")):
        relative = path.relative_to(PACKAGE)
        if relative.parts[0] in NOT_SCANNED:
            continue
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            where = f"zkleader/{relative}:{getattr(node, 'lineno', 0)}"
            if isinstance(node, ast.Dict):
                for key, value in zip(node.keys, node.values, strict=True):
                    if isinstance(key, ast.Constant) and key.value == "event":
                        names = _literals(value)
                        if names is None:
                            unreadable.append(where)
                        sites += [Site(where, name, None) for name in names or []]
                continue
            if not isinstance(node, ast.Call):
                continue
            logs, event, levels = _level_of(node)
            # no event: journal fields passed on, msg(**fields); a name: forwarded,
            # scanned at its source
            if not logs or event is None or isinstance(event, ast.Name):
                continue
            names = _literals(event)
            if names is None or not all(EVENT_NAME.fullmatch(name) for name in names):
                unreadable.append(f"{where}: {ast.unparse(node)[:80]}")
                continue
            sites += [Site(where, name, None if levels is None else frozenset(levels)) for name in names]
    return sites, unreadable


def test_the_scan_reads_every_logging_site_of_the_core_and_the_shells() -> None:
    sites, unreadable = scan()
    assert unreadable == [], "event names this test cannot read (make them literals, or teach the scan)"
    found = {site.event for site in sites}
    # one of each kind of call site: the core (both names of a conditional), the
    # daemon, the ZooKeeper shell, the CLI's .exception, kazoo's bridge, the drop report
    assert {"leader_acquired", "handover", "withdrawn", "starting", "tls_failed", "internal_error",
            "zookeeper_client", "log_lines_dropped"} <= found


def test_every_event_logged_is_registered_with_a_message_id() -> None:
    sites, _ = scan()
    missing = sorted(f"{site.where}: {site.event}" for site in sites if site.event not in EVENTS)
    assert missing == [], "register these in zkleader/core/logevents.py (with a catalog entry for an own id)"
    for event in {site.event for site in sites}:
        ident = EVENTS[event].message_id
        assert re.fullmatch(r"[0-9a-f]{32}", ident) and uuid.UUID(ident).hex == ident, event


def test_every_registered_event_is_logged_somewhere() -> None:
    """A registered event nobody logs any more is a stale entry (and catalog entry)."""
    sites, _ = scan()
    assert set(EVENTS) - {site.event for site in sites} == NOT_LOGGED


def test_each_event_is_logged_at_its_registered_level_somewhere() -> None:
    """The registered level is the usual one: a call site may pick a worse one for a
    worse case, but the registered level must be one the event is really logged at."""
    sites, _ = scan()
    levels: dict[str, set[str]] = {}
    for site in sites:
        if site.levels is not None:
            levels.setdefault(site.event, set()).update(site.levels)
    wrong = {event: (EVENTS[event].level, sorted(seen)) for event, seen in levels.items()
             if event in EVENTS and EVENTS[event].level not in seen}
    assert wrong == {}, "registered level, levels logged at"


def test_registry_entries_are_consistent() -> None:
    for name, event in EVENTS.items():
        assert name == event.name and EVENT_NAME.fullmatch(name), name
        if not event.has_own_id:
            # the catch-all sentence and catalog entry use no fields of the event's own
            assert event.template is None and event.fields == (), name


def test_the_registry_imports_only_the_standard_library() -> None:
    """It is part of the core, which imports nothing outside the standard library."""
    tree = ast.parse(Path(logevents.__file__).read_text())
    imported = {alias.name.split(".")[0] for node in ast.walk(tree) if isinstance(node, ast.Import)
                for alias in node.names}
    imported |= {node.module.split(".")[0] for node in ast.walk(tree)
                 if isinstance(node, ast.ImportFrom) and node.module and node.level == 0}
    assert imported <= sys.stdlib_module_names | {"__future__"}, imported
    assert not any(isinstance(node, ast.ImportFrom) and node.level for node in ast.walk(tree))
