"""Tell systemd how the daemon is doing (sd_notify(3)), and feed its watchdog.

The unit is ``Type=notify`` with ``WatchdogSec=``: systemd considers the daemon
started only after READY=1, and kills the whole unit (job included) when no
WATCHDOG=1 arrives within the interval. That is what protects leadership from
a *paused* daemon (SIGSTOP, a swap storm, a loop stuck in a bug): a paused daemon
cannot stop its own job, but systemd can, and does so before the ZooKeeper session
can expire (README, "Why two leader jobs cannot overlap"). So WATCHDOG=1 must only
ever be sent by the daemon's live main loop, never by a helper thread that would
keep pinging while the loop is stuck. (A frozen VM or a paused whole host freezes
systemd too: only the job's fencing token covers that.)

The protocol is spoken directly, not through systemd-python: one AF_UNIX datagram
of newline-separated VAR=value assignments to $NOTIFY_SOCKET (a leading '@' means
the abstract namespace). A missing optional package must never leave
`systemctl start` waiting for a READY=1 that is not coming until systemd kills the
unit. The send never blocks (MSG_DONTWAIT): these calls come from the daemon's
loop, which must not stall behind a busy PID 1; a datagram that cannot be queued
at once is dropped and the next one (every watchdog period) goes out.

The file descriptor store (FDSTORE=1, FileDescriptorStoreMax= in the unit) rides on
the same datagram: the descriptors go along as SCM_RIGHTS, systemd keeps them while
the service restarts and hands them back to the next main process (sd_listen_fds(3):
LISTEN_FDS, LISTEN_PID, LISTEN_FDNAMES). fdstore.py keeps the ZooKeeper session there.

Everything here is a no-op returning False when the daemon is not run by systemd
(NOTIFY_SOCKET unset): the same code runs in a terminal, in tests and under systemd.
"""

from __future__ import annotations

import array
import os
import socket
from collections.abc import Sequence

__all__ = ["enabled", "notify", "ready", "status", "watchdog", "stopping", "reloading",
           "watchdog_interval", "store_fd", "remove_fds", "listen_fds"]

#: sd_listen_fds(3): the first descriptor systemd passes is always 3.
LISTEN_FDS_START = 3


def _address() -> str | None:
    """The socket address from $NOTIFY_SOCKET, or None when there is none we can use.
    '@name' is the abstract name "\\0name"; a vsock: address (which systemd hands to a
    whole VM, never to a service) is not supported."""
    value = os.environ.get("NOTIFY_SOCKET", "")
    if value.startswith("@"):
        return "\0" + value[1:]
    if value.startswith("/"):
        return value
    return None


def enabled() -> bool:
    """True when systemd gave us a NOTIFY_SOCKET, i.e. notifications are sent."""
    return _address() is not None


def notify(*assignments: str, fds: Sequence[int] = ()) -> bool:
    """Send one datagram made of VAR=value assignments, one per line, with ``fds``
    attached as SCM_RIGHTS (sd_pid_notify_with_fds(3)).

    Returns True when the datagram was sent, False when notifications are off
    (no NOTIFY_SOCKET) or sending failed. Never raises and never blocks: a daemon
    must not die or stall because its supervisor's socket is gone or full.
    """
    address = _address()
    if address is None:
        return False
    data = "\n".join(assignments).encode()
    try:
        with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC) as sock:
            if fds:
                rights = [(socket.SOL_SOCKET, socket.SCM_RIGHTS, array.array("i", fds).tobytes())]
                sock.sendmsg([data], rights, socket.MSG_DONTWAIT, address)
            else:
                sock.sendto(data, socket.MSG_DONTWAIT, address)
    except (OSError, ValueError):
        return False
    return True


def _one_line(text: str) -> str:
    # A newline would start a new assignment in the datagram (e.g. inject READY=1).
    return " ".join(str(text).split("\n")).replace("\r", " ")


def ready(status_line: str | None = None) -> bool:
    """READY=1: startup is finished; `systemctl start` returns now.

    zkleader sends it once it is configured and has started talking to
    ZooKeeper (not once it leads: a follower is a healthy, started daemon).
    """
    if status_line is None:
        return notify("READY=1")
    return notify("READY=1", "STATUS=" + _one_line(status_line))


def status(line: str) -> bool:
    """STATUS=...: one line shown by `systemctl status` (e.g. "leader of
    /zkleader/report, token 4294967321, job pid 1234")."""
    return notify("STATUS=" + _one_line(line))


def watchdog() -> bool:
    """WATCHDOG=1: the main loop is alive. Call it from the loop itself, at
    least every watchdog_interval()/2 (sd_watchdog_enabled(3) recommends half)."""
    return notify("WATCHDOG=1")


def stopping(status_line: str | None = None) -> bool:
    """STOPPING=1: shutdown has begun (the job is being stopped); systemd shows
    the unit as deactivating and will not think the daemon crashed."""
    if status_line is None:
        return notify("STOPPING=1")
    return notify("STOPPING=1", "STATUS=" + _one_line(status_line))


def reloading(status_line: str | None = None) -> bool:
    """RELOADING=1: a reload (SIGHUP from ExecReload) is being applied; send
    ready() when it is done."""
    if status_line is None:
        return notify("RELOADING=1")
    return notify("RELOADING=1", "STATUS=" + _one_line(status_line))


def watchdog_interval() -> float | None:
    """The watchdog interval in seconds that systemd expects, or None if off.

    systemd sets WATCHDOG_USEC (microseconds) when the unit has WatchdogSec=,
    and WATCHDOG_PID to the process it means. The variables are inherited by
    children, so a process whose pid is not WATCHDOG_PID (e.g. a job started by
    the daemon, or a helper) must not think the watchdog is meant for it: then
    None. This mirrors sd_watchdog_enabled(3), without needing libsystemd.
    """
    usec = os.environ.get("WATCHDOG_USEC")
    if not usec:
        return None
    pid = os.environ.get("WATCHDOG_PID")
    if pid:
        try:
            if int(pid) != os.getpid():
                return None
        except ValueError:
            return None
    try:
        value = int(usec)
    except ValueError:
        return None
    if value <= 0:
        return None
    return value / 1_000_000


def _fdname(name: str) -> str:
    """systemd's fdname_is_valid: printable ASCII without ':', at most 255 characters."""
    if not name or len(name) > 255 or any(not " " <= c <= "~" or c == ":" for c in name):
        raise ValueError(f"invalid file descriptor name {name!r}")
    return name


def store_fd(fd: int, name: str) -> bool:
    """FDSTORE=1: systemd keeps a duplicate of ``fd`` under ``name`` and passes it to
    the next main process when the service restarts. Needs FileDescriptorStoreMax=
    in the unit (systemd logs and drops it otherwise). FDPOLL=0: systemd must not
    watch it for POLLHUP (a memfd cannot be polled anyway)."""
    return notify("FDSTORE=1", "FDNAME=" + _fdname(name), "FDPOLL=0", fds=[fd])


def remove_fds(name: str) -> bool:
    """FDSTOREREMOVE=1: systemd closes every descriptor it keeps under ``name``."""
    return notify("FDSTOREREMOVE=1", "FDNAME=" + _fdname(name))


def listen_fds(unset_environment: bool = True) -> dict[str, list[int]]:
    """The descriptors systemd passed to this process, by name (sd_listen_fds_with_names(3)):
    the fd store's after a restart, a socket unit's. Empty when there are none or they
    are meant for another process (LISTEN_PID is not ours: the variables were
    inherited). The descriptors are made close-on-exec, so that no child inherits
    them by accident; with ``unset_environment`` the variables go too."""
    environ = os.environ
    try:
        pid, count = int(environ.get("LISTEN_PID", "")), int(environ.get("LISTEN_FDS", ""))
    except ValueError:
        pid, count = 0, 0
    names = environ.get("LISTEN_FDNAMES", "").split(":")
    if unset_environment:
        for variable in ("LISTEN_PID", "LISTEN_FDS", "LISTEN_FDNAMES"):
            environ.pop(variable, None)
    if pid != os.getpid() or count <= 0:
        return {}
    passed: dict[str, list[int]] = {}
    for index in range(count):
        fd = LISTEN_FDS_START + index
        try:
            os.set_inheritable(fd, False)
        except OSError:
            continue  # not open: nothing to hand out
        name = names[index] if index < len(names) and names[index] else "unknown"
        passed.setdefault(name, []).append(fd)
    return passed
