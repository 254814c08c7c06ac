"""Under systemd: the daemon that systemd restarts closes its dead predecessor's session.

Why: when the daemon dies (kill -9, the OOM killer, the watchdog's SIGKILL), its warm
guardian would kill the job and close the session (guardian.py, release.py), but under
systemd it never gets the chance. With ``KillMode=mixed`` systemd SIGKILLs the rest of
the unit's cgroup, guardian included, as soon as the main process is gone (measured on
systemd 252: guardian, job and all dead within 5 ms of the kill, before the guardian
had even read its lifeline's EOF). The session then lives until it expires, and the
next host waits a whole session timeout.

So the session also goes where systemd keeps it across that death: its file
descriptor store (``FileDescriptorStoreMax=1`` in the unit). On every new session the
daemon writes the session id and password into a sealed memfd, hands it to systemd
(sd_notify FDSTORE=1, notify.store_fd) and closes its own copy; a clean exit, which
closes the session itself, removes it again (FDSTOREREMOVE=1). systemd keeps the store
while the unit waits for its automatic restart (``Restart=on-failure``) and passes it
to the next daemon (LISTEN_FDS). That daemon, before it connects or starts anything
(``release_predecessor``, from cli.py):

1. takes the descriptor, reads it, closes it and asks systemd to drop it;
2. checks that the unit's cgroup holds no process but itself: systemd restarts a
   service only once its cgroup is empty, or after TimeoutStopSec with processes that
   survived SIGKILL (an unkillable job, in D state), and then the session must stay
   open and expire on its own, as the daemon itself would keep it (exit 71);
3. closes the session with release.release(): the old node goes, the next host's
   watch fires, and it takes over a RestartSec plus a Python start-up after the kill
   instead of a session timeout.

Where the secret goes: a memfd (close-on-exec) that only this process and systemd
ever hold. Never argv, the environment, a file or a log (its name and the session id
are not secret); the job never sees it: it is read and closed before the guardian is
started, and LISTEN_* never reach a child (job.py).

On etcd the session is the lease: the store holds its id (and etcd.LEASE_PASSWORD as the
password), and step 3 revokes it, so its key goes at once as a closed session's node does.
The servers kept with it name the backend (Config.servers): a ZooKeeper session is never
taken for a lease of the same number, nor the other way round.

Everything here is a no-op outside systemd (no NOTIFY_SOCKET, no LISTEN_FDS).
"""

from __future__ import annotations

import fcntl
import json
import os
import re
import threading
from collections.abc import Callable
from typing import TYPE_CHECKING

import structlog

from . import notify

if TYPE_CHECKING:
    from .config import Config

#: The descriptor's name in systemd's store (LISTEN_FDNAMES on the way back).
FDNAME = "zkleader-session"
_SEALS = fcntl.F_SEAL_SEAL | fcntl.F_SEAL_SHRINK | fcntl.F_SEAL_GROW | fcntl.F_SEAL_WRITE


class SessionStore:
    """The daemon's side: keeps systemd's store in step with the current session.
    Called on kazoo's connection thread (a SessionListener, zookeeper.py); never
    blocks (notify's datagrams go out with MSG_DONTWAIT)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        #: What systemd holds now (servers, session id, password), None when nothing.
        self._stored: tuple[str, int, bytes] | None = None

    def listener(self, servers: str, first: Callable[[int | None, bytes], None]) -> Callable[[int | None, bytes], None]:
        """The SessionListener for one configuration's servers (Config.servers): tells ``first``
        (the guardian, job.py), then systemd."""
        def keep(session_id: int | None, password: bytes = b"") -> None:
            first(session_id, password)
            self.keep(servers, session_id, password)
        return keep

    def keep(self, servers: str, session_id: int | None, password: bytes = b"") -> None:
        """The session systemd should hold (None: none, the daemon closed it)."""
        if not notify.enabled():
            return
        wanted = None if session_id is None else (servers, session_id, password)
        with self._lock:
            if wanted == self._stored:
                return  # a reconnect of the same session: systemd holds it already
            if self._stored is not None:
                # FileDescriptorStoreMax=1: the old entry must go before a new one fits.
                notify.remove_fds(FDNAME)
                self._stored = None
            if wanted is not None and _store(*wanted):
                self._stored = wanted


def _store(servers: str, session_id: int, password: bytes) -> bool:
    try:
        fd = os.memfd_create(FDNAME, os.MFD_CLOEXEC | os.MFD_ALLOW_SEALING)
    except OSError:
        return False  # no memfd here: the session expires on its own, as without systemd
    try:
        payload = {"servers": servers, "session": f"{session_id:x}", "password": password.hex()}
        os.write(fd, json.dumps(payload).encode())
        fcntl.fcntl(fd, fcntl.F_ADD_SEALS, _SEALS)  # read-only from now on, for whoever holds it
        return notify.store_fd(fd, FDNAME)
    except OSError:
        return False
    finally:
        os.close(fd)  # systemd holds its own duplicate


def take_stored() -> tuple[str, int, bytes] | None:
    """The session a dead predecessor left in systemd's store, read once: every passed
    descriptor of ours is closed, and systemd is told to drop them."""
    fds = notify.listen_fds().get(FDNAME, [])
    if not fds:
        return None
    stored = None
    for fd in fds:
        try:
            if stored is None:
                payload = json.loads(os.pread(fd, 4096, 0))
                stored = (str(payload["servers"]), int(payload["session"], 16), bytes.fromhex(payload["password"]))
        except (OSError, ValueError, KeyError, TypeError):
            pass
        finally:
            os.close(fd)
    notify.remove_fds(FDNAME)
    return stored


def cgroup_others(proc: str = "/proc", own_pid: int | None = None) -> list[int] | None:
    """Every process in this process's cgroup, and below it, other than itself: the pids
    of every cgroup hierarchy that tracks it (the unified one, and systemd's v1
    name=systemd in hybrid mode), as this pid namespace sees them (0 counts: a process
    we cannot name is still a process). None when no hierarchy could be read."""
    own_pid = os.getpid() if own_pid is None else own_pid
    others: set[int] = set()
    read_any = False
    for directory in _cgroup_directories(proc):
        for dirpath, _, filenames in os.walk(directory):
            if "cgroup.procs" not in filenames:
                continue
            try:
                with open(os.path.join(dirpath, "cgroup.procs")) as handle:
                    pids = [int(word) for word in handle.read().split()]
            except (OSError, ValueError):
                continue
            read_any = True
            others.update(pid for pid in pids if pid != own_pid)
    return sorted(others) if read_any else None


def _cgroup_directories(proc: str) -> list[str]:
    """Where this process's cgroup is mounted, from /proc/self/cgroup and mountinfo."""
    paths: dict[str, str] = {}
    try:
        with open(f"{proc}/self/cgroup") as handle:
            for line in handle:
                hierarchy, controllers, path = line.rstrip("\n").split(":", 2)
                if hierarchy == "0" and not controllers:
                    paths["cgroup2"] = path
                elif "name=systemd" in controllers.split(","):
                    paths["name=systemd"] = path
        with open(f"{proc}/self/mountinfo") as handle:
            mounts = handle.read().splitlines()
    except (OSError, ValueError):
        return []
    found = []
    for line in mounts:
        fields = line.split(" ")
        try:
            dash = fields.index("-")
            root, point, fstype, options = fields[3], fields[4], fields[dash + 1], fields[dash + 3]
        except (ValueError, IndexError):
            continue
        key = "cgroup2" if fstype == "cgroup2" else (
            "name=systemd" if fstype == "cgroup" and "name=systemd" in options.split(",") else None)
        if key is None or key not in paths:
            continue
        relative = os.path.relpath(paths[key], _unescape(root))
        if relative.startswith(".."):
            continue  # this mount shows another part of the tree
        directory = os.path.normpath(os.path.join(_unescape(point), relative))
        if os.path.isdir(directory) and directory not in found:
            found.append(directory)
    return found


def _unescape(field: str) -> str:
    """mountinfo escapes space, tab, newline and backslash as octal (\\040)."""
    return re.sub(r"\\([0-7]{3})", lambda match: chr(int(match.group(1), 8)), field)


def _close(loaded: Config, session_id: int, password: bytes) -> bool:
    """release.release, imported (with kazoo) only when there is a session to close."""
    from .release import release

    return release(loaded, session_id, password)


def release_predecessor(loaded: Config, close: Callable[[Config, int, bytes], bool] | None = None) -> None:
    """At start-up, before connecting and before the guardian: close the session a dead
    predecessor left in systemd's store, if every process of its run is gone."""
    stored = take_stored()
    if stored is None:
        return
    servers, session_id, password = stored
    log = structlog.get_logger()
    session = f"0x{session_id:x}"
    others = cgroup_others()
    if servers != loaded.servers:
        reason = "the coordination servers changed since; the session expires on its own"
    elif others is None:
        reason = "cannot read this unit's cgroup to check that the last run's processes are gone; " \
                 "the session expires on its own"
    elif others:
        reason = (f"{len(others)} process(es) of the last run still in this unit's cgroup "
                  f"(pids {' '.join(map(str, others[:10]))}); the session expires on its own")
    else:
        if (close or _close)(loaded, session_id, password):
            log.warning("session_released", session=session,
                        reason="the last run of this service died; systemd has emptied its cgroup")
            return
        from .release import unanswered

        reason = unanswered(loaded)
    log.warning("session_release_failed", session=session, reason=reason)
