"""The job's guardian: a small warm process between the daemon and the job.

Why it exists, and why it is started before it is needed:

* **It owns the job's whole process tree.** PR_SET_PDEATHSIG reaches only a direct
  child, so a job that forks (any shell script) would leave grandchildren alive after
  a kill -9 of the daemon, and with them the job's locks and ports: two leader jobs.
  The guardian is a child subreaper, so every orphaned descendant becomes its child,
  and it reports a job gone only when waitpid says it has no child left at all: the
  daemon's "reaped" means every process, not just the first.
* **It is warm.** Every candidate starts its guardian with the daemon, before it could
  ever lead. Becoming leader then costs one line on a pipe and one fork/exec here,
  instead of a Python interpreter starting cold on the failover path.
* **It holds the lease.** With the start and after each renewal the daemon tells it
  the lease's two deadlines on CLOCK_BOOTTIME (the daemon's clock): when the graceful
  stop must begin and when SIGKILL must go (core.timing.LeaseBudget). If no extension
  comes in time, because the daemon is stopped, hung, swapping or blocked on a pipe,
  the guardian runs the same stop schedule itself, so the job is reaped before the
  earliest moment ZooKeeper could expire the session however the daemon fares.
* **It releases a dead daemon's session.** The lifeline (its stdin, a pipe from the
  daemon) reaches EOF when the daemon dies however it dies. The guardian then kills
  and reaps the whole tree and only then, with the session id and password the daemon
  gave it, replaces itself with ``zkleader.release``, which attaches to that session
  and closes it: the successor starts at once instead of a session timeout later.
  The password travels only through pipes (never argv, the environment or a log),
  and the job never sees it: exec replaces the forked job's copy of our memory.
  Where a supervisor kills the guardian together with a dead daemon (systemd's
  KillMode=mixed SIGKILLs the whole cgroup within milliseconds), the restarted daemon
  releases the session instead, from systemd's fd store (fdstore.py); in a container,
  zkleader.pid1 waits for the guardian where an init like tini would not.

It needs only prctl(2) and a procfs: waitpid's ECHILD says the tree is empty (as a
subreaper every descendant ends up as our child before it can be reaped), and one
scan of /proc/*/stat finds the descendants to signal. It does not use
/proc/PID/task/*/children, which needs CONFIG_PROC_CHILDREN and is missing on some
kernels. The daemon and zkleader.pid1 import ``prctl``, ``children_of`` and
``reap_all`` from here, so all read the process table the same way.

It runs as ``python -I -S guardian.py STATUS_FD [RELEASE_ARGV...]`` with only the
standard library (small, no site-packages). Commands, one per line on stdin:

``start JSON``           fork and exec a job: {"argv", "env", "cwd", "stop_signal",
                         "stop_at", "kill_at"}
``lease STOP_AT KILL_AT`` the renewed lease's deadlines (CLOCK_BOOTTIME seconds)
``signal N``             N to the job's process group and every descendant
``kill``                 SIGKILL to all, again until the tree is empty
``session ID PASSWORD``  the session to release if the daemon dies (hex)
``nosession``            the daemon closed its session itself: nothing to release

Reports on STATUS_FD: ``started PID``; ``exited RETURNCODE`` (negative: killed by that
signal), with `` lease`` appended when the guardian stopped the job on its own because
the lease ran out; ``failed MESSAGE`` when the job could not be started.
"""

from __future__ import annotations

import ctypes
import json
import os
import select
import signal
import sys
import time

PR_SET_PDEATHSIG = 1
PR_SET_CHILD_SUBREAPER = 36
_IGNORED = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP, signal.SIGQUIT)
#: While a job is being killed, the tree is SIGKILLed again this often until empty.
_KILL_PASS = 0.05
#: The longest the guardian sleeps while a job exists: its select runs on
#: CLOCK_MONOTONIC, which stops during a system suspend (as loop.MAX_SLEEP).
_MAX_SLEEP = 0.5
#: How long a graceful signal waits before it goes to the job's processes outside its
#: process group (``Guardian._stop``).
_SCAN_DELAY = 0.01
#: How long the guardian lets a live daemon's own stop signal come first.
STOP_GRACE = 0.05


def own_stop_at(stop_at: float, kill_at: float) -> float:
    """When the guardian sends the stop signal itself: a moment after the daemon would
    (its loop acts at ``stop_at``), so that a healthy daemon's stop is the one the job
    hears and the logs name, and at most a quarter of the graceful window later.
    SIGKILL has no such grace: ``kill_at`` is what the safety rule needs."""
    return stop_at + min(STOP_GRACE, max(0.0, kill_at - stop_at) / 4)
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


def now() -> float:
    """The daemon's clock (clock.py): deadlines it sends are on CLOCK_BOOTTIME."""
    return time.clock_gettime(time.CLOCK_BOOTTIME)


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


def reap_all() -> tuple[list[tuple[int, int]], bool]:
    """Reaps every child that has ended. The flag is waitpid's ECHILD: we have no child
    at all, which for a subreaper means the job's whole tree is gone."""
    reaped: list[tuple[int, int]] = []
    while True:
        try:
            pid, status = os.waitpid(-1, os.WNOHANG)
        except ChildProcessError:
            return reaped, True
        if pid == 0:
            return reaped, False
        reaped.append((pid, status))


class Guardian:
    """One guardian's state: at most one job at a time, the lease it may run on, and
    the session to release. Single-threaded: a select loop over the lifeline and a
    SIGCHLD wake-up pipe, woken also by the lease's deadlines."""

    def __init__(self, status_fd: int, release_argv: list[str]) -> None:
        self._status_fd = status_fd
        self._release_argv = release_argv
        self._lifeline = sys.stdin.fileno()
        self._lifeline_open = True
        self._commands = b""
        self._session: tuple[str, str] | None = None
        #: The next job's process, forked ahead (``_fork_launcher``); only while no job runs.
        self._launcher: tuple[int, int, int] | None = None
        self._forget_job()

    def _forget_job(self) -> None:
        self._job_pid: int | None = None
        self._returncode: int | None = None
        #: Set once the tree must go: SIGKILLed again on every pass until empty.
        self._doomed = False
        self._stop_signal = signal.SIGTERM
        self._stop_at: float | None = None
        self._kill_at: float | None = None
        #: The graceful stop went out (from the daemon or from our own schedule).
        self._stopping = False
        self._stopped_on_own = False
        #: A graceful signal still owed to processes outside the job's group: (signal,
        #: the group that had it, when).
        self._scan: tuple[int, int | None, float] | None = None

    # ------------------------------------------------------------------ loop

    def run(self) -> int:
        wake_r, wake_w = os.pipe()
        os.set_blocking(wake_w, False)
        signal.signal(signal.SIGCHLD, lambda *_: None)
        signal.set_wakeup_fd(wake_w)
        self._launcher = self._fork_launcher()
        while True:
            tree_empty = self._reap()
            if not self._lifeline_open and tree_empty:
                return self._release()
            self._hold_lease(now())
            self._scan_due(now())
            if self._doomed:
                self._signal_tree(signal.SIGKILL)
            watched = [wake_r] + ([self._lifeline] if self._lifeline_open else [])
            ready, _, _ = select.select(watched, [], [], self._timeout())
            if wake_r in ready:
                os.read(wake_r, 4096)
            if self._lifeline in ready:
                chunk = os.read(self._lifeline, 65536)
                if chunk:
                    self._take(chunk)
                else:
                    # The daemon is gone, and with it the leadership: kill everything now.
                    self._lifeline_open = False
                    self._doomed = self._job_pid is not None
                    self._drop_launcher()

    def _timeout(self) -> float | None:
        """Sleep until the next deadline of the lease; with no job, until a command."""
        if self._job_pid is None:
            return None
        if self._doomed:
            return _KILL_PASS
        scan = None if self._scan is None else self._scan[2]
        deadlines = [d for d in (None if self._stopping else self._own_stop_at(), self._kill_at, scan) if d is not None]
        return min(max(0.0, min(deadlines) - now()), _MAX_SLEEP) if deadlines else _MAX_SLEEP

    def _own_stop_at(self) -> float | None:
        if self._stop_at is None or self._kill_at is None:
            return self._stop_at
        return own_stop_at(self._stop_at, self._kill_at)

    def _reap(self) -> bool:
        """Reaps what ended; reports the job's end once its whole tree is gone."""
        reaped, tree_empty = reap_all()
        for pid, status in reaped:
            if pid == self._job_pid:
                self._returncode = os.waitstatus_to_exitcode(status)
                self._doomed = True  # the main process is gone: anything it left behind goes too
            elif self._launcher is not None and pid == self._launcher[0]:
                # Someone killed the waiting launcher: another is forked below.
                _, spec_w, exec_error_r = self._launcher
                self._launcher = None
                os.close(spec_w)
                os.close(exec_error_r)
        if tree_empty and self._job_pid is not None:
            # No child left, so no descendant either (orphans become ours before they
            # can be reaped), and the job's main process was among the reaped.
            self._report(f"exited {self._returncode}" + (" lease" if self._stopped_on_own else ""))
            self._forget_job()
        if tree_empty and self._lifeline_open and self._launcher is None:
            self._launcher = self._fork_launcher()
        return tree_empty

    def _hold_lease(self, at: float) -> None:
        """The daemon's own stop schedule, run here when the daemon did not: the stop
        signal when the lease says stop, SIGKILL when it says kill."""
        if self._job_pid is None or self._doomed:
            return
        if self._kill_at is not None and at >= self._kill_at:
            self._doomed = True
        elif (stop_at := self._own_stop_at()) is not None and at >= stop_at and not self._stopping:
            self._stopped_on_own = True
            self._stop(self._stop_signal)

    # -------------------------------------------------------------- commands

    def _take(self, chunk: bytes) -> None:
        self._commands += chunk
        while b"\n" in self._commands:
            line, self._commands = self._commands.split(b"\n", 1)
            word, _, rest = line.decode(errors="replace").partition(" ")
            if word == "start":
                self._start(rest)
            else:
                self._command(word, rest.split())

    def _command(self, word: str, args: list[str]) -> None:
        if word == "lease" and len(args) == 2:
            self._stop_at, self._kill_at = float(args[0]), float(args[1])
        elif word == "kill":
            self._doomed = self._job_pid is not None
        elif word == "signal" and len(args) == 1 and args[0].isdigit():
            signum = int(args[0])
            # Our own schedule may have sent the stop signal an instant before the
            # daemon's loop did the same: a job hears its stop signal once.
            if not (self._stopped_on_own and signum == self._stop_signal):
                self._stop(signum)
        elif word == "session" and len(args) == 2:
            self._session = (args[0], args[1])
        elif word == "nosession":
            self._session = None

    def _stop(self, signum: int) -> None:
        """A graceful signal: to the job's process group now, and to processes that
        left the group (the scan of /proc, ~1 ms with a few hundred processes) a moment
        later unless the tree is gone by then: most jobs die of the signal within that
        moment, and the scan would only delay their reaping and so the handover."""
        if signum == self._stop_signal:
            self._stopping = True
        self._scan = (signum, self._signal_group(signum), now() + _SCAN_DELAY)

    def _scan_due(self, at: float) -> None:
        if self._scan is not None and at >= self._scan[2]:
            signum, group, _ = self._scan
            self._scan = None
            self._signal_outside(signum, group)

    def _signal_tree(self, signum: int) -> None:
        """Signals the job's process group (atomic, catches a process forked during our
        scan) and every other descendant the scan finds (processes that left the group
        with setsid/setpgid)."""
        self._signal_outside(signum, self._signal_group(signum))

    def _signal_group(self, signum: int) -> int | None:
        """killpg while the group's leader is unreaped (its pgid cannot be recycled);
        the group signalled, or None."""
        if self._job_pid is None or self._returncode is not None:
            return None
        try:
            os.killpg(self._job_pid, signum)
        except OSError:
            return None
        return self._job_pid

    def _signal_outside(self, signum: int, group: int | None) -> None:
        """Every descendant not in ``group``: a process of the group has the signal
        already, and a second one could reach a handler twice (some programs take a
        second SIGTERM as "quit now")."""
        if self._job_pid is None:
            return
        for pid in _descendants():
            try:
                if group is None or os.getpgid(pid) != group:
                    os.kill(pid, signum)
            except OSError:
                pass

    def _start(self, spec_text: str) -> None:
        """Hands the job to the waiting launcher, which execs it at once, and waits for
        the exec's outcome (EOF on a close-on-exec pipe: it succeeded)."""
        if self._job_pid is not None:
            self._report("failed a job is already running")
            return
        launcher = self._launcher or self._fork_launcher()
        self._launcher = None
        pid, spec_w, exec_error_r = launcher
        try:
            os.write(spec_w, spec_text.encode() + b"\n")
        except OSError:
            pass  # a launcher killed meanwhile: reported as a job that died at once
        os.close(spec_w)
        # Our own reading of the spec waits until the launcher has it: off the start's path.
        spec = json.loads(spec_text)
        with os.fdopen(exec_error_r, "rb") as errors:
            failure = errors.read().decode(errors="replace")
        if failure:
            os.waitpid(pid, 0)
            self._report(f"failed {failure}")
            self._launcher = self._fork_launcher()
            return
        self._job_pid = pid
        self._stop_signal = signal.Signals(spec["stop_signal"])
        self._stop_at, self._kill_at = spec["stop_at"], spec["kill_at"]
        self._report(f"started {pid}")

    def _fork_launcher(self) -> tuple[int, int, int]:
        """Forks the next job's process ahead of time: (pid, spec pipe, exec error pipe).

        Why ahead: a forked CPython pays for its copy-on-write pages and its set-up
        (setsid, signal dispositions, the death signal) before it can exec, about 3 ms on
        the test machine, which would sit between leadership and the job's start. The
        launcher pays it while nothing waits, then blocks on its spec pipe; a start costs
        one pipe write and the exec (measured: 1.5 ms p50 instead of 5.7). The guardian
        is single-threaded, so a plain fork is safe; the launcher exists only while no
        job does, so it never counts as part of a job's tree."""
        parent = os.getpid()
        spec_r, spec_w = os.pipe()
        exec_error_r, exec_error_w = os.pipe()  # close-on-exec: EOF means exec succeeded
        pid = os.fork()
        if pid == 0:
            argv0 = "the job"
            try:
                os.close(spec_w)
                os.close(exec_error_r)
                os.close(self._status_fd)
                os.setsid()  # its own session and process group: signals reach the whole job
                signal.set_wakeup_fd(-1)
                for signum in (*_IGNORED, signal.SIGCHLD):
                    # Ignored signals survive exec: give the job the dispositions a service expects.
                    signal.signal(signum, signal.SIG_DFL)
                # Dies with the guardian even if the guardian itself is SIGKILLed...
                prctl(PR_SET_PDEATHSIG, signal.SIGKILL)
                if os.getppid() != parent:  # ...including in the instant before prctl.
                    os._exit(127)
                devnull = os.open(os.devnull, os.O_RDONLY)
                os.dup2(devnull, 0)
                os.close(devnull)
                text = b""
                while not text.endswith(b"\n"):
                    chunk = os.read(spec_r, 1 << 20)
                    if not chunk:
                        os._exit(0)  # no job after all (the guardian is ending)
                    text += chunk
                spec = json.loads(text)
                argv: list[str] = spec["argv"]
                argv0 = argv[0]
                if spec.get("cwd"):
                    os.chdir(spec["cwd"])
                os.execvpe(argv0, argv, spec["env"])
            except OSError as err:
                where = f" ({err.filename})" if err.filename and err.filename != argv0 else ""
                os.write(exec_error_w, f"{argv0}: {err.strerror or err}{where}".encode())
            finally:
                os._exit(127)
        os.close(spec_r)
        os.close(exec_error_w)
        return pid, spec_w, exec_error_r

    def _drop_launcher(self) -> None:
        """No job will come (the daemon is gone): the waiting launcher goes."""
        if self._launcher is None:
            return
        pid, spec_w, exec_error_r = self._launcher
        self._launcher = None
        os.close(spec_w)  # EOF: it exits on its own; SIGKILL in case it is stopped
        os.close(exec_error_r)
        try:
            os.kill(pid, signal.SIGKILL)
        except OSError:
            pass
        os.waitpid(pid, 0)

    # ------------------------------------------------------------- the end

    def _release(self) -> int:
        """The daemon is gone and the job's whole tree with it: end the daemon's session
        so that its node goes now, not a session timeout from now. Exec, so the releaser
        (kazoo, the daemon's connection settings) costs nothing while the guardian waits;
        the credentials go through a pipe it inherits."""
        if self._session is None or not self._release_argv:
            return 0
        secret_r, secret_w = os.pipe()
        os.write(secret_w, f"{self._session[0]} {self._session[1]}\n".encode())
        os.close(secret_w)
        os.set_inheritable(secret_r, True)
        try:
            os.execv(self._release_argv[0], [*self._release_argv, "--secret-fd", str(secret_r)])
        except OSError as err:
            sys.stderr.write(f"zkleader guardian: cannot release the session: {err.strerror or err}\n")
            return 1

    def _report(self, line: str) -> None:
        """Best effort: a daemon that died no longer reads, and the tree dies anyway."""
        try:
            os.write(self._status_fd, (line + "\n").encode())
        except OSError:
            pass


def main(argv: list[str]) -> int:
    if len(argv) < 2 or not argv[1].isdigit():
        sys.stderr.write("usage: guardian.py STATUS_FD [RELEASE_ARGV...]\n")
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
        Guardian(status_fd, [])._report(f"failed prctl(PR_SET_CHILD_SUBREAPER): {err.strerror}")
        return 127
    return Guardian(status_fd, argv[2:]).run()


if __name__ == "__main__":
    sys.exit(main(sys.argv))
