"""zkleader.logs: logging never blocks its caller, whatever reads stderr.

Each test runs a small program in a subprocess (logs.configure sets up process-wide
state: structlog, the writer thread, an exit hook) whose stderr is a pipe the test
does not read, or not yet: the state of a stalled log reader. The claims:

* every log call returns although nothing reads stderr (before the log writer
  thread, the first call past the pipe's 64 KiB blocked for good);
* every event is either written or counted in a log_lines_dropped event, exactly;
* exit does not hang on a stderr nobody reads, and exits with the program's status;
* journald chosen but systemd-python not importable: '<priority>message' lines on
  stderr, and a warning that says so.
"""

from __future__ import annotations

import json
import os
import select
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]

#: More events than the queue (logs.QUEUE_EVENTS) and the pipe (64 KiB) hold together.
EVENTS = 30_000

FLOOD = f"""
import logging, sys
sys.path.insert(0, {str(REPO)!r})
import structlog
from zkleader import logs
from zkleader.config import LogFormat
logs.configure("info", LogFormat.JSON, {{"election": "/e", "candidate": "c"}})
log = structlog.get_logger()
for i in range({EVENTS}):
    log.info("line", i=i)
logging.getLogger("kazoo").warning("bridged")  # kazoo's warnings take the same path
print("logged", flush=True)
sys.stdin.read()  # until the test closes stdin
sys.exit(int(sys.argv[1]))
"""


def start(code: str, *args: str, env: dict[str, str] | None = None) -> subprocess.Popen[bytes]:
    return subprocess.Popen([sys.executable, "-c", code, *args], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, env=env)


def wait_line(process: subprocess.Popen[bytes], timeout: float) -> bytes:
    """The next line of the child's stdout, or AssertionError after `timeout` seconds."""
    assert process.stdout is not None
    ready, _, _ = select.select([process.stdout], [], [], timeout)
    assert ready, f"nothing on stdout within {timeout:g}s: the child is stuck (blocked on its stderr?)"
    return process.stdout.readline()


def test_a_stalled_stderr_never_blocks_logging_and_every_event_is_written_or_counted() -> None:
    process = start(FLOOD, "0")
    try:
        assert wait_line(process, 30) == b"logged\n"
        # stderr is full and unread; now read it, and let the child exit.
        _, err = process.communicate(b"", timeout=60)
    finally:
        process.kill()
        process.wait()
    assert process.returncode == 0, err[-2000:]
    events = [json.loads(line) for line in err.splitlines()]
    lines = [e["i"] for e in events if e["event"] == "line"]
    drops = [e for e in events if e["event"] == "log_lines_dropped"]
    bridged = [e for e in events if e["event"] == "zookeeper_client"]
    dropped = sum(e["count"] for e in drops)
    assert drops and all(e["level"] == "warning" and e["candidate"] == "c" for e in drops)
    assert lines == sorted(lines), "events were written out of order"
    assert len(lines) + len(bridged) + dropped == EVENTS + 1, "an event was neither written nor counted"


def test_exit_does_not_hang_on_a_stderr_nobody_reads() -> None:
    process = start(FLOOD, "3")
    try:
        assert wait_line(process, 30) == b"logged\n"
        assert process.stdin is not None
        process.stdin.close()
        # The exit flush waits EXIT_FLUSH_SECONDS (2 s) for the writer, then gives up.
        status = process.wait(timeout=30)
    finally:
        process.kill()
        process.wait()
    # 3, not a crash: the writer thread blocked in its write holds no lock that the
    # interpreter takes at exit (Python aborts when one is held by a daemon thread).
    assert status == 3


JOURNALD = f"""
import os, sys
sys.modules["systemd"] = None  # systemd-python is not importable
sys.path.insert(0, {str(REPO)!r})
import structlog
from zkleader import logs
from zkleader.config import LogFormat
if sys.argv[1] == "auto":
    st = os.fstat(2)  # what systemd says when stderr is a journal stream
    os.environ["JOURNAL_STREAM"] = f"{{st.st_dev}}:{{st.st_ino}}"
chosen = logs.configure("info", LogFormat(sys.argv[1]), {{"election": "/e", "candidate": "c"}})
structlog.get_logger().info("leader_acquired", token=5)
print(chosen.value, logs.flush(10), flush=True)
"""


def test_journald_without_systemd_python_falls_back_to_lines_and_says_so() -> None:
    for requested in ("journald", "auto"):
        r = subprocess.run([sys.executable, "-c", JOURNALD, requested], capture_output=True, timeout=60, check=False,
                           env={k: v for k, v in os.environ.items() if k != "JOURNAL_STREAM"})
        assert r.returncode == 0, r.stderr
        assert r.stdout.split() == [b"journald", b"True"], requested
        warning, event = r.stderr.decode().splitlines()
        assert warning.startswith("<4>journald_unavailable: ") and "systemd-python is not importable" in warning
        assert event == "<6>leader acquired for /e (token 5)"
