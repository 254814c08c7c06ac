"""zkleader.notify against a real AF_UNIX datagram socket standing in for
systemd's NOTIFY_SOCKET: the exact datagrams, and silence where there must be
silence. notify speaks the protocol itself: systemd-python is not needed (checked
in a subprocess where importing it fails)."""

from __future__ import annotations

import os
import secrets
import socket
import subprocess
import sys
from pathlib import Path

import pytest

from zkleader import notify
from zkleader.testing.notifysocket import Receiver, bound

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture
def notify_socket(monkeypatch):
    with bound() as (path, receiver):
        monkeypatch.setenv("NOTIFY_SOCKET", path)
        yield receiver


@pytest.fixture
def abstract_notify_socket(monkeypatch):
    """systemd usually hands out a path, but sd_notify also accepts "@abstract"."""
    name = f"zkleader-test-{os.getpid()}-{secrets.token_hex(4)}"
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    sock.bind("\0" + name)
    monkeypatch.setenv("NOTIFY_SOCKET", "@" + name)
    try:
        yield Receiver(sock)
    finally:
        sock.close()


def test_ready(notify_socket):
    assert notify.enabled()
    assert notify.ready() is True
    assert notify_socket.next() == b"READY=1"


def test_ready_with_status(notify_socket):
    assert notify.ready("following /zkleader/report") is True
    assert notify_socket.next() == b"READY=1\nSTATUS=following /zkleader/report"


def test_status(notify_socket):
    assert notify.status("leader of /zkleader/report, token 4294967321") is True
    assert notify_socket.next() == b"STATUS=leader of /zkleader/report, token 4294967321"


def test_status_cannot_inject_assignments(notify_socket):
    """A newline in a status line must not become a second assignment."""
    assert notify.status("reason: x\nREADY=1\r\nWATCHDOG=1") is True
    assert notify_socket.next() == b"STATUS=reason: x READY=1  WATCHDOG=1"


def test_watchdog(notify_socket):
    assert notify.watchdog() is True
    assert notify_socket.next() == b"WATCHDOG=1"


def test_stopping_and_reloading(notify_socket):
    assert notify.stopping() is True
    assert notify_socket.next() == b"STOPPING=1"
    assert notify.stopping("stopping the job") is True
    assert notify_socket.next() == b"STOPPING=1\nSTATUS=stopping the job"
    assert notify.reloading() is True
    assert notify_socket.next() == b"RELOADING=1"
    assert notify.reloading("reloading") is True
    assert notify_socket.next() == b"RELOADING=1\nSTATUS=reloading"


def test_abstract_socket(abstract_notify_socket):
    assert notify.ready() is True
    assert abstract_notify_socket.next() == b"READY=1"


def test_every_call_is_one_datagram_in_order(notify_socket):
    notify.ready()
    for _ in range(3):
        notify.watchdog()
    notify.stopping()
    got = [notify_socket.next() for _ in range(5)]
    assert got == [b"READY=1", b"WATCHDOG=1", b"WATCHDOG=1", b"WATCHDOG=1", b"STOPPING=1"]
    assert notify_socket.nothing()


def test_noop_without_notify_socket(notify_socket, monkeypatch):
    monkeypatch.delenv("NOTIFY_SOCKET")
    assert not notify.enabled()
    for call in (notify.ready, notify.watchdog, notify.stopping, notify.reloading):
        assert call() is False
    assert notify.status("x") is False
    assert notify_socket.nothing()


def test_no_exception_when_the_socket_is_gone(monkeypatch, tmp_path):
    """A daemon must not die because its supervisor's socket vanished."""
    monkeypatch.setenv("NOTIFY_SOCKET", str(tmp_path / "gone"))
    assert notify.ready() is False
    assert notify.watchdog() is False


WITHOUT_SYSTEMD_PYTHON = (
    "import sys; sys.modules['systemd'] = None; sys.path.insert(0, sys.argv[1])\n"
    "try:\n    import systemd.daemon\nexcept ImportError:\n    pass\n"
    "else:\n    raise SystemExit('systemd-python is still importable')\n"
    "from zkleader import notify\n"
    "print(notify.enabled(), notify.ready('following'), notify.watchdog(), notify.status('x'), notify.stopping())\n"
)


@pytest.mark.parametrize("socket_fixture", ["notify_socket", "abstract_notify_socket"])
def test_sends_without_systemd_python(socket_fixture, request):
    """systemd-python missing must not leave `systemctl start` waiting for READY=1
    until systemd gives up: the datagrams go out all the same."""
    receiver = request.getfixturevalue(socket_fixture)
    r = subprocess.run([sys.executable, "-c", WITHOUT_SYSTEMD_PYTHON, str(REPO)], capture_output=True, text=True,
                       env={**os.environ}, timeout=30)
    assert r.returncode == 0, r.stderr
    assert r.stdout.split() == ["True"] * 5
    got = [receiver.next() for _ in range(4)]
    assert got == [b"READY=1\nSTATUS=following", b"WATCHDOG=1", b"STATUS=x", b"STOPPING=1"]
    assert receiver.nothing()


FILL = (
    "import sys; sys.path.insert(0, sys.argv[1])\n"
    "from zkleader import notify\n"
    "sent = 0\n"
    "while sent < 100_000 and notify.watchdog():\n    sent += 1\n"
    "print(sent, notify.status('still returns'))\n"
)


def test_a_full_socket_never_blocks(notify_socket):
    """Called from the daemon's loop: when systemd does not read, the datagram is
    dropped at once (False) instead of waiting. (In a subprocess: a send that blocks
    in C may hold the GIL, and must fail the test rather than hang it.)"""
    r = subprocess.run([sys.executable, "-c", FILL, str(REPO)], capture_output=True, text=True,
                       env={**os.environ}, timeout=30)
    assert r.returncode == 0, r.stderr
    sent, last = r.stdout.split()
    assert int(sent) < 100_000, "the receive queue never filled"
    assert last == "False"
    assert notify_socket.next() == b"WATCHDOG=1"


def test_unsupported_socket_addresses_are_ignored(monkeypatch):
    for value in ("", "vsock:2:1234", "relative/path"):
        monkeypatch.setenv("NOTIFY_SOCKET", value)
        assert not notify.enabled()
        assert notify.ready() is False


@pytest.mark.parametrize(
    ("usec", "pid", "expected"),
    [
        ("3000000", None, 3.0),
        ("3000000", "self", 3.0),
        ("1500000", "self", 1.5),
        ("3000000", "other", None),
        (None, None, None),
        (None, "self", None),
        ("0", None, None),
        ("-5", None, None),
        ("3s", None, None),
        ("3000000", "not-a-pid", None),
    ],
)
def test_watchdog_interval(monkeypatch, usec, pid, expected):
    for name, value in (("WATCHDOG_USEC", usec), ("WATCHDOG_PID", pid)):
        if value is None:
            monkeypatch.delenv(name, raising=False)
        else:
            if value == "self":
                value = str(os.getpid())
            elif value == "other":
                value = str(os.getpid() + 1)
            monkeypatch.setenv(name, value)
    assert notify.watchdog_interval() == expected


def test_watchdog_interval_is_not_inherited_by_children(monkeypatch):
    """systemd's variables reach the daemon's children too; WATCHDOG_PID keeps
    a child from thinking the watchdog is its own."""
    monkeypatch.setenv("WATCHDOG_USEC", "3000000")
    monkeypatch.setenv("WATCHDOG_PID", str(os.getpid()))
    code = "import sys; sys.path.insert(0, sys.argv[1]); from zkleader import notify; print(notify.watchdog_interval())"
    r = subprocess.run([sys.executable, "-c", code, str(REPO)], capture_output=True, text=True, timeout=30)
    assert r.returncode == 0, r.stderr
    assert r.stdout.strip() == "None"
