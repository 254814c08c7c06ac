"""The job's guardian: a tiny process between the daemon and the job.

Why it exists: PR_SET_PDEATHSIG reaches only a direct child, so a job that forks
(any shell script) would leave grandchildren alive after a kill -9 of the daemon,
and with them the job's locks and ports: two leader jobs. The guardian owns the
job's whole process tree instead. It is a child subreaper, so every orphaned
descendant becomes its child; it kills the tree the instant its lifeline (stdin,
a pipe from the daemon) reaches EOF, which the kernel guarantees when the daemon
dies however it dies; and it exits only when the tree is gone, so the daemon's
"reaped" means every process, not just the first.

It needs only prctl(2) and a procfs: waitpid's ECHILD says the tree is empty (as a
subreaper every descendant ends up as our child before it can be reaped), and one
scan of /proc/*/stat finds the descendants to signal. It does not use
/proc/PID/task/*/children, which needs CONFIG_PROC_CHILDREN and is missing on some
kernels. The daemon imports ``prctl`` and ``children_of`` from here, so both sides
read the process table the same way.

It runs as ``python -I -S guardian.py STATUS_FD -- ARGV...`` with only the standard
library (fast start, no site-packages). Commands on stdin: ``signal N`` (graceful
stop: N to the job's process group and every descendant) and ``kill`` (SIGKILL to
all). Reports on STATUS_FD: ``started PID``, then ``exited RETURNCODE`` (negative:
killed by that signal) or ``failed MESSAGE``, just before it exits.
"""

from __future__ import annotations

import ctypes
import os
import select
import signal
import sys

PR_SET_PDEATHSIG = 1
PR_SET_CHILD_SUBREAPER = 36
_IGNORED = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP, signal.SIGQUIT)
_libc = ctypes.CDLL(None, use_errno=True)
# prctl is variadic in C: declare the unsigned long arguments so that no register
# carries garbage in its upper half (PR_SET_PDEATHSIG rejects an invalid signal).
_libc.prctl.argtypes = [ctypes.c_int] + [ctypes.c_ulong] * 4
_libc.prctl.restype = ctypes.c_int


def prctl(option: int, value: int) -> None:
    """prctl(2) that raises OSError when the kernel refuses: supervision that silently
    did not happen (no subreaper, no death signal) would let a job outlive us."""
    if _libc.prctl(option, value, 0, 0, 0) != 0:
        errno = ctypes.get_errno()
        raise OSError(errno, os.strerror(errno))


def children_of(proc: str = "/proc") -> dict[int, list[tuple[int, str]]]:
    """One scan of the process table: parent pid -> [(pid, state)] of its children.
    The ppid and state are read after the last ')' of /proc/PID/stat, since a
    command name may itself contain ')' and spaces. Processes that vanish during the
    scan are skipped."""
    children: dict[int, list[tuple[int, str]]] = {}
    for name in os.listdir(proc):
        if not name.isdigit():
            continue
        try:
            with open(f"{proc}/{name}/stat", "rb") as handle:
                fields = handle.read().rsplit(b")", 1)[1].split()
        except (OSError, IndexError):
            continue
        children.setdefault(int(fields[1]), []).append((int(name), fields[0].decode()))
    return children


def _descendants() -> list[int]:
    """Every descendant of ours, from one scan of the process table. A pid read here
    could in theory be reaped by its parent and recycled before we signal it; that
    needs the whole pid space to wrap within microseconds."""
    tree = children_of()
    found: list[int] = []
    frontier = [os.getpid()]
    while frontier:
        for pid, _ in tree.get(frontier.pop(), []):
            found.append(pid)
            frontier.append(pid)
    return found


def _report(status_fd: int, line: str) -> None:
    """Best effort: a daemon that died no longer reads, and the tree dies anyway."""
    try:
        os.write(status_fd, (line + "\n").encode())
    except OSError:
        pass


def _signal_tree(job_pid: int | None, signum: int) -> None:
    """Signals the job's process group (atomic, catches a process forked during our
    scan) while its leader is unreaped and its pgid cannot be recycled, and every
    descendant the scan finds (processes that left the group with setsid/setpgid)."""
    if job_pid is not None:
        try:
            os.killpg(job_pid, signum)
        except OSError:
            pass
    for pid in _descendants():
        try:
            os.kill(pid, signum)
        except OSError:
            pass


def _in_job(status_fd: int, argv: list[str]) -> int:
    """fork + exec by hand: the subprocess module alone costs ~15 ms to import, and
    this start sits on the failover path. The guardian is single-threaded, so a
    plain fork is safe here."""
    parent = os.getpid()
    exec_error_r, exec_error_w = os.pipe()  # close-on-exec: EOF means exec succeeded
    pid = os.fork()
    if pid == 0:
        try:
            os.close(exec_error_r)
            os.close(status_fd)
            os.setsid()  # its own session and process group: signals reach the whole job
            for signum in _IGNORED:
                # Ignored signals survive exec: give the job the dispositions a service expects.
                signal.signal(signum, signal.SIG_DFL)
            # Dies with the guardian even if the guardian itself is SIGKILLed...
            prctl(PR_SET_PDEATHSIG, signal.SIGKILL)
            if os.getppid() != parent:  # ...including in the instant before prctl.
                os._exit(127)
            devnull = os.open(os.devnull, os.O_RDONLY)
            os.dup2(devnull, 0)
            os.execvp(argv[0], argv)
        except OSError as err:
            os.write(exec_error_w, f"{argv[0]}: {err.strerror or err}".encode())
        finally:
            os._exit(127)
    os.close(exec_error_w)
    with os.fdopen(exec_error_r, "rb") as errors:
        failure = errors.read().decode(errors="replace")
    if failure:
        os.waitpid(pid, 0)
        _report(status_fd, f"failed {failure}")
        return 127
    _report(status_fd, f"started {pid}")
    return _supervise(status_fd, pid)


def _supervise(status_fd: int, job_pid: int) -> int:
    wake_r, wake_w = os.pipe()
    os.set_blocking(wake_w, False)
    signal.signal(signal.SIGCHLD, lambda *_: None)
    signal.set_wakeup_fd(wake_w)
    lifeline = sys.stdin.fileno()
    commands = b""
    returncode: int | None = None
    lifeline_open = True
    doomed = False  # once set, the whole tree is SIGKILLed again on every pass until empty
    while True:
        reaped, tree_empty = _reap_all()
        for pid, status in reaped:
            if pid == job_pid:
                returncode = os.waitstatus_to_exitcode(status)
                doomed = True  # the main process is gone: anything it left behind goes too
        if tree_empty:
            # No child left, so no descendant either (orphans become ours before they
            # can be reaped), and the job's main process was among the reaped.
            _report(status_fd, f"exited {returncode}")
            return 0
        if doomed:
            _signal_tree(job_pid if returncode is None else None, signal.SIGKILL)
        watched = [wake_r] + ([lifeline] if lifeline_open else [])
        ready, _, _ = select.select(watched, [], [], 0.05 if doomed else 1.0)
        if wake_r in ready:
            os.read(wake_r, 4096)
        if lifeline in ready:
            chunk = os.read(lifeline, 4096)
            if not chunk:
                # The daemon is gone, and with it the leadership: kill everything now.
                lifeline_open = False
                doomed = True
                continue
            commands += chunk
            while b"\n" in commands:
                line, commands = commands.split(b"\n", 1)
                words = line.decode(errors="replace").split()
                if words == ["kill"]:
                    doomed = True
                elif words[:1] == ["signal"] and len(words) == 2 and words[1].isdigit():
                    _signal_tree(job_pid if returncode is None else None, int(words[1]))


def _reap_all() -> tuple[list[tuple[int, int]], bool]:
    """Reaps every child that has ended. The flag is waitpid's ECHILD: we have no child
    at all, which for a subreaper means the job's whole tree is gone."""
    reaped = []
    while True:
        try:
            pid, status = os.waitpid(-1, os.WNOHANG)
        except ChildProcessError:
            return reaped, True
        if pid == 0:
            return reaped, False
        reaped.append((pid, status))


def main(argv: list[str]) -> int:
    if len(argv) < 4 or argv[2] != "--":
        sys.stderr.write("usage: guardian.py STATUS_FD -- ARGV...\n")
        return 2
    status_fd = int(argv[1])
    # A blocked signal mask survives fork and exec: whatever started the daemon may
    # have blocked signals, and the job must start with a clean mask.
    signal.pthread_sigmask(signal.SIG_SETMASK, [])
    for signum in _IGNORED:
        # A terminal's Ctrl-C reaches our process group; only the daemon decides stops.
        signal.signal(signum, signal.SIG_IGN)
    try:
        prctl(PR_SET_CHILD_SUBREAPER, 1)
    except OSError as err:
        # Without it, orphans of the job would escape us: refuse rather than pretend.
        _report(status_fd, f"failed prctl(PR_SET_CHILD_SUBREAPER): {err.strerror}")
        return 127
    return _in_job(status_fd, argv[3:])


if __name__ == "__main__":
    sys.exit(main(sys.argv))
