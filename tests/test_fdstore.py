"""zkleader.fdstore and notify's file descriptor passing, without systemd: a bound
AF_UNIX datagram socket stands in for NOTIFY_SOCKET and receives the descriptors
(SCM_RIGHTS), LISTEN_* are set by hand in a child process, and a fake /proc points
at a fake cgroup tree. tests/systemd/test_e2e.py runs the whole path under a real
systemd (kill -9 and the watchdog)."""

from __future__ import annotations

import fcntl
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from zkleader import config, fdstore, notify
from zkleader.testing.notifysocket import bound

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture
def systemd(monkeypatch):
    with bound("zkf-") as (path, receiver):
        monkeypatch.setenv("NOTIFY_SOCKET", path)
        yield receiver


def test_store_fd_sends_the_descriptor_with_fdstore_fdname_and_fdpoll(systemd):
    r, w = os.pipe()
    try:
        assert notify.store_fd(r, "zkleader-session")
        lines, fds = systemd.next_with_fds()
        assert lines == ["FDSTORE=1", "FDNAME=zkleader-session", "FDPOLL=0"]
        assert len(fds) == 1
        os.write(w, b"x")
        assert os.read(fds[0], 1) == b"x"  # the same pipe, duplicated into the receiver
        os.close(fds[0])
    finally:
        os.close(r)
        os.close(w)
    assert notify.remove_fds("zkleader-session")
    assert systemd.next_with_fds() == (["FDSTOREREMOVE=1", "FDNAME=zkleader-session"], [])


def test_fd_names_systemd_would_refuse_are_refused_here():
    for bad in ("", "a:b", "tab\there", "x" * 256, "é"):
        with pytest.raises(ValueError):
            notify.store_fd(0, bad)


def test_without_notify_socket_nothing_is_stored(monkeypatch):
    monkeypatch.delenv("NOTIFY_SOCKET", raising=False)
    store = fdstore.SessionStore()
    told = []
    store.listener("zk:2181", lambda *session: told.append(session))(0x1234, b"p" * 16)
    assert told == [(0x1234, b"p" * 16)]  # the guardian still hears of it
    assert not notify.store_fd(0, "zkleader-session")


def test_the_session_goes_into_a_sealed_memfd_and_follows_the_session(systemd):
    store = fdstore.SessionStore()
    told = []
    keep = store.listener("zk1:2181,zk2:2181", lambda *session: told.append(session))
    keep(0xABC, bytes(range(16)))
    lines, fds = systemd.next_with_fds()
    assert lines == ["FDSTORE=1", "FDNAME=zkleader-session", "FDPOLL=0"]
    (fd,) = fds
    assert json.loads(os.pread(fd, 4096, 0)) == {
        "servers": "zk1:2181,zk2:2181", "session": "abc", "password": bytes(range(16)).hex()}
    assert os.readlink(f"/proc/self/fd/{fd}") == "/memfd:zkleader-session (deleted)"
    seals = fcntl.fcntl(fd, fcntl.F_GET_SEALS)
    assert seals & fcntl.F_SEAL_WRITE and seals & fcntl.F_SEAL_SEAL
    with pytest.raises(PermissionError):
        os.pwrite(fd, b"x", 0)
    os.close(fd)
    keep(0xABC, bytes(range(16)))  # a reconnect of the same session: systemd holds it already
    assert systemd.nothing()
    keep(0xDEF, b"q" * 16)  # a new session: the old entry goes first (FileDescriptorStoreMax=1)
    assert systemd.next_with_fds() == (["FDSTOREREMOVE=1", "FDNAME=zkleader-session"], [])
    lines, fds = systemd.next_with_fds()
    assert lines[0] == "FDSTORE=1" and len(fds) == 1
    assert json.loads(os.pread(fds[0], 4096, 0))["session"] == "def"
    os.close(fds[0])
    keep(None, b"")  # closed by the daemon itself: nothing left to release
    assert systemd.next_with_fds() == (["FDSTOREREMOVE=1", "FDNAME=zkleader-session"], [])
    keep(None, b"")
    assert systemd.nothing()
    assert told == [(0xABC, bytes(range(16)))] * 2 + [(0xDEF, b"q" * 16), (None, b""), (None, b"")]


def _session_memfds() -> set[int]:
    """This process's descriptors that point at a session memfd."""
    found = set()
    for fd in Path("/proc/self/fd").iterdir():
        try:
            if os.readlink(fd) == "/memfd:zkleader-session (deleted)":
                found.add(int(fd.name))
        except OSError:
            pass  # the directory's own descriptor, closed by now
    return found


def test_no_copy_of_the_memfd_stays_with_the_daemon(systemd):
    before = _session_memfds()  # another test's leftovers are not this test's business
    fdstore.SessionStore().keep("zk:2181", 1, b"p" * 16)
    _, fds = systemd.next_with_fds()
    assert _session_memfds() - before == set(fds)  # only the one the receiver got
    os.close(fds[0])


TAKE = r"""
import json, os, sys
from zkleader import fdstore
fd = os.memfd_create("zkleader-session", os.MFD_CLOEXEC)
os.write(fd, json.dumps({"servers": "zk:2181", "session": "1f", "password": "00ff" * 8}).encode())
if fd != 3:  # what systemd does: the stored descriptors from 3 on, inheritable
    os.dup2(fd, 3)
    os.close(fd)
os.set_inheritable(3, True)
os.environ.update(LISTEN_PID=sys.argv[1] or str(os.getpid()), LISTEN_FDS="1", LISTEN_FDNAMES="zkleader-session")
stored = fdstore.take_stored()
try:
    os.fstat(3)
    open_after = True
except OSError:
    open_after = False
print(json.dumps({"stored": None if stored is None else [stored[0], stored[1], stored[2].hex()],
                  "open_after": open_after,
                  "env_left": [k for k in os.environ if k.startswith("LISTEN_")]}))
"""


def _take(systemd_path: str, listen_pid: str = "") -> dict:
    out = subprocess.run([sys.executable, "-c", TAKE, listen_pid], capture_output=True, text=True, check=True,
                         env={**os.environ, "NOTIFY_SOCKET": systemd_path, "PYTHONPATH": str(REPO)})
    return json.loads(out.stdout)


def test_the_restarted_daemon_takes_the_session_once_and_closes_the_descriptor(systemd):
    result = _take(systemd.sock.getsockname())
    assert result == {"stored": ["zk:2181", 0x1F, "00ff" * 8], "open_after": False, "env_left": []}
    # ... and tells systemd to drop its copy: the new daemon stores its own session
    assert systemd.next_with_fds() == (["FDSTOREREMOVE=1", "FDNAME=zkleader-session"], [])


def test_descriptors_meant_for_another_process_are_left_alone(systemd):
    result = _take(systemd.sock.getsockname(), listen_pid="1")
    assert result == {"stored": None, "open_after": True, "env_left": []}
    assert systemd.nothing()


def _fake_proc(tmp_path: Path, procs: dict[str, str], *, v2_only: bool = False) -> Path:
    """/proc/self/{cgroup,mountinfo} naming a hybrid (or pure v2) tree under tmp_path,
    and the cgroup.procs files of a unit's cgroup (and a child cgroup) there."""
    unit = "/system.slice/zkleader.service"
    v1, v2 = tmp_path / "cg" / "systemd", tmp_path / "cg" / "unified dir"
    lines, mounts = [], []
    if not v2_only:
        lines.append(f"1:name=systemd:{unit}")
        mounts.append(f"30 25 0:26 / {tmp_path}/cg/systemd rw,nosuid - cgroup cgroup rw,xattr,name=systemd")
    lines.append(f"0::{unit}")
    mounts.append(f"29 25 0:25 / {str(v2).replace(' ', chr(92) + '040')} rw,nosuid - cgroup2 cgroup2 rw")
    mounts.append(f"31 25 0:27 / {tmp_path}/cg/memory rw - cgroup cgroup rw,memory")
    for root in ([v2] if v2_only else [v1, v2]):
        for relative, pids in procs.items():
            directory = root / unit.lstrip("/") / relative
            directory.mkdir(parents=True, exist_ok=True)
            (directory / "cgroup.procs").write_text(pids)
    proc = tmp_path / "proc" / "self"
    proc.mkdir(parents=True)
    (proc / "cgroup").write_text("\n".join(lines) + "\n")
    (proc / "mountinfo").write_text("\n".join(mounts) + "\n")
    return tmp_path / "proc"


def test_cgroup_with_only_ourselves(tmp_path):
    proc = _fake_proc(tmp_path, {"": "42\n"})
    assert fdstore.cgroup_others(str(proc), own_pid=42) == []


def test_cgroup_leftovers_are_found_in_every_hierarchy_and_below(tmp_path):
    proc = _fake_proc(tmp_path, {"": "42\n77\n", "child": "0\n"})
    assert fdstore.cgroup_others(str(proc), own_pid=42) == [0, 77]
    proc2 = _fake_proc(tmp_path / "v2", {"": "42\n9\n"}, v2_only=True)
    assert fdstore.cgroup_others(str(proc2), own_pid=42) == [9]


def test_an_unreadable_cgroup_is_not_taken_for_an_empty_one(tmp_path):
    (tmp_path / "proc" / "self").mkdir(parents=True)
    assert fdstore.cgroup_others(str(tmp_path / "proc"), own_pid=42) is None


def test_the_real_cgroup_holds_this_test_process():
    others = fdstore.cgroup_others()
    if others is None:
        pytest.skip("no cgroup hierarchy readable here")
    assert os.getpid() not in others


class Log:
    def __init__(self) -> None:
        self.events: list[tuple[str, dict]] = []

    def warning(self, event: str, **fields) -> None:
        self.events.append((event, fields))


@pytest.fixture
def log(monkeypatch):
    captured = Log()
    monkeypatch.setattr(fdstore.structlog, "get_logger", lambda: captured)
    return captured


JOB = "job: {command: [/bin/true]}\nelection: {path: /e, candidate: c}\n"


@pytest.fixture(scope="module")
def configs(tmp_path_factory) -> dict[str, config.Config]:
    """The same election on ZooKeeper (zk:2181) and on etcd (an endpoint at the same
    address), loaded as the daemon loads them."""
    directory = tmp_path_factory.mktemp("configs")
    loaded = {}
    for backend, section in (("zookeeper", "zookeeper: {hosts: 'zk:2181'}\n"),
                             ("etcd", "etcd: {endpoints: ['zk:2181']}\n")):
        path = directory / f"{backend}.yaml"
        path.write_text(section + JOB)
        loaded[backend] = config.load(str(path))
    return loaded


def _release(monkeypatch, loaded, stored, others, answer=True):
    calls = []
    monkeypatch.setattr(fdstore, "take_stored", lambda: stored)
    monkeypatch.setattr(fdstore, "cgroup_others", lambda: others)

    def close(loaded, session_id, password):
        calls.append((session_id, password))
        return answer

    fdstore.release_predecessor(loaded, close=close)
    return calls


def test_released_only_when_the_cgroup_is_empty(monkeypatch, log, configs):
    assert _release(monkeypatch, configs["zookeeper"], ("zk:2181", 0x1F, b"pw"), []) == [(0x1F, b"pw")]
    assert log.events == [("session_released", {
        "session": "0x1f", "reason": "the last run of this service died; systemd has emptied its cgroup"})]


def test_a_lease_is_released_on_etcd(monkeypatch, log, configs):
    """The stored servers name the backend: a lease is revoked only by an etcd daemon."""
    assert _release(monkeypatch, configs["etcd"], ("etcd zk:2181", 0x1F, b"lease"), []) == [(0x1F, b"lease")]
    assert [event for event, _ in log.events] == ["session_released"]


def test_nothing_stored_nothing_done(monkeypatch, log, configs):
    assert _release(monkeypatch, configs["zookeeper"], None, [77]) == []
    assert log.events == []


@pytest.mark.parametrize("backend, stored, others, why", [
    ("zookeeper", ("zk:2181", 0x1F, b"pw"), [77, 0],
     "2 process(es) of the last run still in this unit's cgroup (pids 77 0)"),
    ("zookeeper", ("zk:2181", 0x1F, b"pw"), None, "cannot read this unit's cgroup"),
    ("zookeeper", ("other:2181", 0x1F, b"pw"), [], "the coordination servers changed since"),
    # a session and a lease on the same address are not the same thing
    ("zookeeper", ("etcd zk:2181", 0x1F, b"lease"), [], "the coordination servers changed since"),
    ("etcd", ("zk:2181", 0x1F, b"pw"), [], "the coordination servers changed since"),
])
def test_never_released_while_a_process_of_the_last_run_may_live(monkeypatch, log, configs, backend, stored,
                                                                 others, why):
    assert _release(monkeypatch, configs[backend], stored, others) == []
    (event, fields), = log.events
    assert event == "session_release_failed" and fields["session"] == "0x1f"
    assert why in fields["reason"] and fields["reason"].endswith("the session expires on its own")


@pytest.mark.parametrize("backend, servers, who", [("zookeeper", "zk:2181", "ZooKeeper server"),
                                                   ("etcd", "etcd zk:2181", "etcd member")])
def test_unreachable_servers_are_said(monkeypatch, log, configs, backend, servers, who):
    assert _release(monkeypatch, configs[backend], (servers, 0x1F, b"pw"), [], answer=False) == [(0x1F, b"pw")]
    assert log.events == [("session_release_failed", {
        "session": "0x1f", "reason": f"no {who} answered; the session expires on its own"})]


def test_the_password_is_never_logged(monkeypatch, log, configs):
    password = bytes(range(16))
    for others, answer in (([], True), ([], False), ([5], True), (None, True)):
        _release(monkeypatch, configs["zookeeper"], ("zk:2181", 0x1F, password), others, answer)
    text = repr(log.events)
    assert password.hex() not in text and repr(password) not in text
