"""zkleader.journal: the field mapping (a pure function), the structlog wiring,
the JOURNAL_STREAM check, and systemd/zkleader.catalog (parsed strictly here and
by journalctl itself, and kept in step both ways with the MESSAGE_IDs of the
registry of log events, zkleader/core/logevents.py).

The round trip through a real journald (send, read back with journalctl, the
catalog shown by journalctl -x) runs in tests/systemd/test_in_host.py, inside a
booted systemd; here it runs only if this machine has a journald of its own.
"""

from __future__ import annotations

import io
import json
import os
import re
import shutil
import subprocess
import time
import uuid
from pathlib import Path

import pytest
import structlog

from zkleader import journal
from zkleader.core.logevents import EVENTS, OTHER_MESSAGE_ID

REPO = Path(__file__).resolve().parents[1]
CATALOG = REPO / "systemd" / "zkleader.catalog"

#: The event kinds the daemon's design names; each needs an id of its own.
REQUIRED_EVENTS = (
    "joined", "following", "leader_acquired", "leadership_lost", "job_started", "job_exited",
    "job_restart_scheduled", "handover", "connecting", "connected", "suspended", "reconnected",
    "session_lost", "lease_expired", "resigned", "shutting_down", "stopped", "config_error",
)


# --------------------------------------------------------------------------- catalog

HEADER = re.compile(r"^-- ([0-9a-f]{32})(?: ([A-Za-z_]+))?$")
KEY = re.compile(r"^([A-Z][A-Za-z-]*): (\S.*)$")
SUBST = re.compile(r"@([A-Za-z0-9_]+)@")


def parse_catalog(text: str) -> dict[str, dict]:
    """Strict parser of the journald catalog format: '#' comments and blank
    lines before the first entry; each entry is '-- ID', 'Key: value' headers,
    one blank line, a non-empty body."""
    entries: dict[str, dict] = {}
    current: dict | None = None
    state = "outside"
    for number, line in enumerate(text.splitlines(), 1):
        m = HEADER.match(line)
        if m:
            assert m.group(1) not in entries, f"line {number}: duplicate id {m.group(1)}"
            current = {"headers": {}, "body": []}
            entries[m.group(1)] = current
            state = "headers"
            continue
        assert not line.startswith("--"), f"line {number}: malformed entry header {line!r}"
        if state == "outside":
            assert line == "" or line.startswith("#"), f"line {number}: text outside an entry"
        elif state == "headers":
            if line == "":
                state = "body"
                continue
            k = KEY.match(line)
            assert k, f"line {number}: not a 'Key: value' header: {line!r}"
            assert k.group(1) not in current["headers"], f"line {number}: duplicate header"
            current["headers"][k.group(1)] = k.group(2)
        else:
            assert not line.startswith("#") or current["body"], f"line {number}: comment in a body"
            current["body"].append(line)
    assert state != "headers", "the last entry has no body"
    for ident, entry in entries.items():
        entry["text"] = "\n".join(entry["body"]).strip()
    return entries


@pytest.fixture(scope="module")
def catalog() -> dict[str, dict]:
    return parse_catalog(CATALOG.read_text())


def _event_of(ident: str) -> str | None:
    """The event whose own id `ident` is (None for OTHER_MESSAGE_ID's entry)."""
    for event in EVENTS.values():
        if event.has_own_id and event.message_id == ident:
            return event.name
    return None


def test_message_ids_are_valid_and_unique():
    ids = list(journal.MESSAGE_IDS.values()) + [journal.OTHER_MESSAGE_ID]
    assert len(ids) == len(set(ids))
    for ident in ids:
        assert re.fullmatch(r"[0-9a-f]{32}", ident), ident
        assert uuid.UUID(ident).hex == ident


def test_every_named_event_kind_has_its_own_id():
    missing = [e for e in REQUIRED_EVENTS if e not in journal.MESSAGE_IDS]
    assert not missing
    assert journal.message_id("no_such_event") == journal.OTHER_MESSAGE_ID
    assert set(journal.EVENT_FIELDS) == set(journal.MESSAGE_IDS)


def test_catalog_and_message_ids_match_both_ways(catalog):
    sent = {event.message_id for event in EVENTS.values()} | {OTHER_MESSAGE_ID}
    assert sent - set(catalog) == set(), "MESSAGE_IDs without a catalog entry"
    assert set(catalog) - sent == set(), "catalog entries that no registered event has"
    assert set(journal.MESSAGE_IDS.values()) | {journal.OTHER_MESSAGE_ID} == sent


def test_catalog_entries_are_complete(catalog):
    for ident, entry in catalog.items():
        headers = entry["headers"]
        where = f"entry {ident} ({_event_of(ident) or 'other'})"
        assert headers.get("Subject"), where
        assert headers.get("Defined-By") == "zkleader", where
        assert re.match(r"^(https?|file|man|info):", headers.get("Documentation", "")), where
        assert len(entry["text"]) > 80, f"{where}: explain what happened and what to check"
        assert len(headers["Subject"]) < 100, where


def test_catalog_substitutions_name_fields_the_event_has(catalog):
    for ident, entry in catalog.items():
        event = _event_of(ident)
        text = entry["headers"]["Subject"] + "\n" + entry["text"]
        allowed = {"ZKLEADER_EVENT"} | {journal.field_name(k) for k in journal.CONTEXT_FIELDS}
        if event is not None:
            allowed |= {journal.field_name(k) for k in journal.EVENT_FIELDS[event]}
        used = set(SUBST.findall(text))
        assert used <= allowed, f"{event}: {sorted(used - allowed)} are not fields of this event"
        # '@' is special in catalog text: only @FIELD@ substitutions may use it
        assert text.count("@") == 2 * len(SUBST.findall(text)), f"{event}: stray '@'"


def test_journalctl_accepts_the_catalog(tmp_path, catalog):
    """journalctl --update-catalog into a scratch root, then read it back."""
    if shutil.which("journalctl") is None:
        pytest.skip("journalctl is not installed")
    catdir = tmp_path / "usr" / "lib" / "systemd" / "catalog"
    catdir.mkdir(parents=True)
    shutil.copy(CATALOG, catdir / "zkleader.catalog")
    r = subprocess.run(["journalctl", f"--root={tmp_path}", "--update-catalog"],
                       capture_output=True, text=True, timeout=30)
    assert r.returncode == 0 and not r.stderr.strip(), r.stderr
    assert (tmp_path / "var" / "lib" / "systemd" / "catalog" / "database").stat().st_size > 0
    r = subprocess.run(["journalctl", f"--root={tmp_path}", "--list-catalog"],
                       capture_output=True, text=True, timeout=30)
    assert r.returncode == 0, r.stderr
    listed = {}
    for line in r.stdout.splitlines():
        ident, _, subject = line.partition(" ")
        listed[ident] = subject
    assert set(listed) == set(catalog)
    for ident, entry in catalog.items():
        assert listed[ident] == f"zkleader: {entry['headers']['Subject']}"
    r = subprocess.run(["journalctl", f"--root={tmp_path}", "--dump-catalog",
                        journal.MESSAGE_IDS["leader_acquired"]], capture_output=True, text=True, timeout=30)
    assert "@ZKLEADER_TOKEN@" in r.stdout


# --------------------------------------------------------------------------- fields

def test_leader_acquired_fields():
    fields = journal.journal_fields({
        "event": "leader_acquired", "election": "/zkleader/report", "candidate": "zk-host-1",
        "node": "n_0000000007", "token": 4294967321, "level": "info",
        "timestamp": "2026-11-26T14:00:00Z",
    })
    assert fields == {
        "MESSAGE": "leader acquired for /zkleader/report (token 4294967321)",
        "PRIORITY": "6",
        "MESSAGE_ID": journal.MESSAGE_IDS["leader_acquired"],
        "SYSLOG_IDENTIFIER": "zkleader",
        "ZKLEADER_EVENT": "leader_acquired",
        "ZKLEADER_ELECTION": "/zkleader/report",
        "ZKLEADER_CANDIDATE": "zk-host-1",
        "ZKLEADER_NODE": "n_0000000007",
        "ZKLEADER_TOKEN": "4294967321",
    }


@pytest.mark.parametrize(
    ("event", "fields", "message"),
    [
        ("leadership_lost", {"reason": "lease expired", "token": 12}, "leadership lost for /e: lease expired (token 12)"),
        ("following", {"leader": "n_1", "predecessor": "n_2", "position": 2}, "following leader n_1 in /e, watching n_2"),
        ("job_started", {"pid": 321, "token": 12}, "job started for /e, pid 321, token 12"),
        ("job_exited", {"pid": 321, "code": 0, "ran": 1.25}, "job exited, pid 321, exit code 0 after 1.25s"),
        ("job_exited", {"pid": 321, "signal": 9, "ran": 0.5}, "job exited, pid 321, killed by signal SIGKILL after 0.5s"),
        ("job_exited", {"error": "cannot start: No such file"}, "job exited: cannot start: No such file"),
        ("handover", {"node": "n_1", "reason": "shutdown (SIGTERM)"}, "leadership handed over for /e: shutdown (SIGTERM)"),
        ("shutting_down", {"signal": "SIGTERM", "leader": True}, "shutting down on SIGTERM (leader: yes)"),
        ("stopped", {"exit_code": 0, "reason": "shutdown (SIGTERM)"}, "stopped with exit code 0: shutdown (SIGTERM)"),
        ("connecting", {"host": "127.0.0.1:2181", "attempt": 4}, "connecting to ZooKeeper 127.0.0.1:2181 (attempt 4)"),
        ("suspended", {}, "connection to ZooKeeper suspended"),
        ("suspended", {"lease_left": 3.2}, "connection to ZooKeeper suspended; lease left 3.2s"),
        ("config_error", {"problems": ["a.yaml:3: job: missing", "a.yaml:5: x: unknown"]},
         "invalid configuration: a.yaml:3: job: missing; a.yaml:5: x: unknown"),
    ],
)
def test_messages_read_well(event, fields, message):
    assert journal.format_message(event, {"election": "/e", "candidate": "h", **fields}) == message


def test_every_sentence_is_complete_with_all_or_no_fields():
    for event in journal.MESSAGE_IDS:
        full = {k: f"v{i}" for i, k in enumerate(journal.EVENT_FIELDS[event] + journal.CONTEXT_FIELDS)}
        for fields in (full, {}):
            text = journal.format_message(event, fields)
            assert text and "\n" not in text, (event, text)
            assert not re.search(r"[{}\[\]]|\?", text), (event, fields, text)
            assert text == " ".join(text.split()), (event, text)
        template = EVENTS[event].template
        assert template is not None, event
        used = set(re.findall(r"\{(\w+)\}", template))
        assert used <= set(journal.EVENT_FIELDS[event]) | set(journal.CONTEXT_FIELDS), event


def test_unknown_events_get_the_catch_all_id_and_a_sentence():
    fields = journal.journal_fields({"event": "zookeeper_client", "level": "warning",
                                     "message": "Connection dropped: socket connection broken",
                                     "election": "/e"})
    assert fields["MESSAGE_ID"] == journal.OTHER_MESSAGE_ID
    assert fields["MESSAGE"] == "zookeeper_client: Connection dropped: socket connection broken"
    assert fields["PRIORITY"] == "4"
    assert fields["ZKLEADER_MESSAGE"] == "Connection dropped: socket connection broken"
    fields = journal.journal_fields({"event": "create_failed", "detail": "x y", "count": 3})
    assert fields["MESSAGE"] == "create_failed: detail=x y, count=3"


@pytest.mark.parametrize(
    ("level", "priority"),
    [("debug", "7"), ("info", "6"), ("notice", "5"), ("warning", "4"), ("warn", "4"), ("error", "3"),
     ("exception", "3"), ("critical", "2"), ("fatal", "2"), ("WARNING", "4"), ("bogus", "6")],
)
def test_levels_map_to_syslog_priorities(level, priority):
    assert journal.journal_fields({"event": "joined", "level": level})["PRIORITY"] == priority
    # without add_log_level the method name decides
    assert journal.journal_fields({"event": "joined"}, level)["PRIORITY"] == priority


def test_field_names_and_values():
    fields = journal.journal_fields({
        "event": "something", "lease-left": 1.5, "ok": True, "none": None, "items": [1, "a"],
        "nested": {"a": 1}, "camelCase": "x", "x" * 80: "long", "ZKLEADER_EVENT": "spoof",
        "_record": object(), "_from_structlog": True,
    })
    assert fields["ZKLEADER_LEASE_LEFT"] == "1.5"
    assert fields["ZKLEADER_OK"] == "true"
    assert fields["ZKLEADER_NONE"] == "null"
    assert fields["ZKLEADER_ITEMS"] == '[1,"a"]'
    assert fields["ZKLEADER_NESTED"] == '{"a":1}'
    assert fields["ZKLEADER_CAMELCASE"] == "x"
    assert fields["ZKLEADER_EVENT"] == "something"  # the event name cannot be overwritten
    long_name = [k for k in fields if k.startswith("ZKLEADER_XXX")]
    assert long_name and len(long_name[0]) == 64
    for name in fields:
        assert re.fullmatch(r"[A-Z][A-Z0-9_]{0,63}", name), name
    assert not any(k.endswith("RECORD") or k.endswith("FROM_STRUCTLOG") for k in fields)


def test_exception_becomes_a_field_and_part_of_the_sentence():
    try:
        raise ValueError("boom")
    except ValueError:
        fields = journal.journal_fields({"event": "internal_error", "exc_info": True, "level": "error"})
    assert fields["MESSAGE"] == "internal error: ValueError: boom"
    assert fields["ZKLEADER_EXCEPTION"].startswith("Traceback (most recent call last):")
    assert fields["ZKLEADER_EXCEPTION"].endswith("ValueError: boom")
    assert fields["MESSAGE_ID"] == journal.MESSAGE_IDS["internal_error"]


# --------------------------------------------------------------------------- structlog

class RecordingLogger:
    """Stands where JournalLogger would, to see exactly what it would be given."""

    def __init__(self) -> None:
        self.calls: list[tuple[str, dict]] = []

    def __getattr__(self, name: str):
        return lambda **fields: self.calls.append((name, fields))


def test_structlog_passes_the_fields_to_the_logger():
    recorder = RecordingLogger()
    log = structlog.wrap_logger(recorder, processors=[structlog.processors.add_log_level, journal.JournaldRenderer()],
                                wrapper_class=structlog.make_filtering_bound_logger(0))
    log = log.bind(election="/zkleader/report", candidate="zk-host-2")
    log.warning("leadership_lost", reason="session lost", token=99)
    [(method, fields)] = recorder.calls
    assert method == "warning"
    assert fields["MESSAGE"] == "leadership lost for /zkleader/report: session lost (token 99)"
    assert fields["PRIORITY"] == "4"
    assert fields["ZKLEADER_CANDIDATE"] == "zk-host-2"


def test_fallback_writes_priority_prefixed_lines():
    """Without systemd-python (or its socket) journald still gets the priority:
    its stream reader understands a '<N>' prefix."""
    out = io.StringIO()
    log = structlog.wrap_logger(journal.JournalLogger(out, use_journal=False),
                                processors=[structlog.processors.add_log_level, journal.JournaldRenderer()],
                                wrapper_class=structlog.make_filtering_bound_logger(0))
    log.info("leader_acquired", election="/e", token=5)
    log.error("session_lost", reason="expired")
    log.debug("joined", election="/e", node="n_1", position=1)
    assert out.getvalue().splitlines() == [
        "<6>leader acquired for /e (token 5)",
        "<3>ZooKeeper session lost: expired",
        "<7>joined election /e (node n_1) at position 1",
    ]
    factory = journal.JournalLoggerFactory(out, use_journal=False)
    assert isinstance(factory(), journal.JournalLogger)


def test_journal_round_trip_if_this_machine_has_a_journald():
    socket_path = "/run/systemd/journal/socket"
    if not os.path.exists(socket_path) or shutil.which("journalctl") is None:
        pytest.skip("no journald on this machine (covered in a booted host by tests/systemd/test_in_host.py)")
    pytest.importorskip("systemd.journal")
    candidate = f"test-{uuid.uuid4().hex[:12]}"
    journal.JournalLogger().msg(**journal.journal_fields(
        {"event": "leader_acquired", "election": "/zkleader/roundtrip", "candidate": candidate, "token": 7}))
    deadline = time.monotonic() + 10
    entries: list[dict] = []
    while time.monotonic() < deadline and not entries:
        r = subprocess.run(["journalctl", "-o", "json", "--no-pager", f"ZKLEADER_CANDIDATE={candidate}"],
                           capture_output=True, text=True, timeout=30)
        entries = [json.loads(line) for line in r.stdout.splitlines() if line.startswith("{")]
        time.sleep(0.1)
    if not entries:
        pytest.skip("journald did not store the entry (not readable from here)")
    assert entries[0]["MESSAGE"] == "leader acquired for /zkleader/roundtrip (token 7)"
    assert entries[0]["MESSAGE_ID"] == journal.MESSAGE_IDS["leader_acquired"]


# --------------------------------------------------------------------------- JOURNAL_STREAM

def test_stderr_is_journal_matches_device_and_inode(tmp_path, monkeypatch):
    with open(tmp_path / "stream", "w") as stream, open(tmp_path / "other", "w") as other:
        st = os.fstat(stream.fileno())
        monkeypatch.setenv("JOURNAL_STREAM", f"{st.st_dev}:{st.st_ino}")
        assert journal.stderr_is_journal(stream) is True
        assert journal.stderr_is_journal(other) is False
        monkeypatch.setenv("JOURNAL_STREAM", f"{st.st_dev}:{st.st_ino + 1}")
        assert journal.stderr_is_journal(stream) is False
        for bad in ("", "garbage", "1:", ":2", "a:b"):
            monkeypatch.setenv("JOURNAL_STREAM", bad)
            assert journal.stderr_is_journal(stream) is False
        monkeypatch.delenv("JOURNAL_STREAM")
        assert journal.stderr_is_journal(stream) is False
    monkeypatch.setenv("JOURNAL_STREAM", "1:2")
    assert journal.stderr_is_journal(io.StringIO()) is False  # no file descriptor
