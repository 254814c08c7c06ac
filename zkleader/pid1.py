"""PID 1 for a zkleader container: lets the guardian outlive a killed daemon.

Why: when the daemon dies (kill -9, the OOM killer), its guardian kills and reaps the
job's whole tree and then closes the daemon's ZooKeeper session (guardian.py,
release.py), so that the next host takes over at once. In a container that only works
if the guardian is still alive by then. It is not when the daemon is PID 1 (the kernel
kills the whole pid namespace with it), nor under Docker's ``init: true``: tini exits
as soon as its one child has exited, and the namespace goes with it (seen with tini
0.19: the guardian was dead within 50 ms of the daemon's kill -9, long before it could
connect to ZooKeeper). This init does what tini does (reap orphans, pass signals on to
the daemon) and one more thing: once the daemon has exited it waits until every other
process has exited too, for at most ``--grace`` seconds, and only then exits with the
daemon's status (128 + N when signal N killed it, as a shell reports it).

    python -m zkleader.pid1 [--grace SECONDS] -- zkleader run -c /etc/zkleader/zkleader.yaml

SIGTERM, SIGINT, SIGHUP, SIGUSR1, SIGUSR2 and SIGQUIT go to the daemon (``docker
stop``: a graceful handover; SIGHUP: reload; SIGUSR1: resign). Once the daemon is gone,
SIGTERM or SIGINT end the wait at once. Not PID 1 (a plain shell, a test), it makes
itself a child subreaper, so the daemon's orphans still come to it, and kills whatever
is left when the grace runs out (as PID 1, the kernel does that). Standard library only.
"""

from __future__ import annotations

import argparse
import os
import signal
import sys
import time

from .guardian import PR_SET_CHILD_SUBREAPER, children_of, prctl, reap_all

FORWARDED = (signal.SIGTERM, signal.SIGINT, signal.SIGHUP, signal.SIGUSR1, signal.SIGUSR2, signal.SIGQUIT)
#: Enough for the guardian to kill the job and close the session (bounded by the
#: session timeout), not so much that a job that survives SIGKILL keeps the container.
DEFAULT_GRACE = 30.0


def _exit_status(status: int) -> int:
    code = os.waitstatus_to_exitcode(status)
    return 128 - code if code < 0 else code


def _spawn(argv: list[str]) -> int:
    pid = os.fork()
    if pid == 0:
        try:
            signal.pthread_sigmask(signal.SIG_SETMASK, [])
            os.execvp(argv[0], argv)
        except OSError as err:
            sys.stderr.write(f"zkleader pid1: cannot run {argv[0]}: {err.strerror or err}\n")
        os._exit(127)
    return pid


def _reap(main: int) -> tuple[int | None, bool]:
    """Reaps every child that has ended; returns the main child's status if it was
    among them, and whether no child is left at all (ECHILD)."""
    reaped, none_left = reap_all()
    return next((_exit_status(status) for pid, status in reaped if pid == main), None), none_left


def _kill_the_rest(bound: float = 5.0) -> None:
    """What the kernel does when a namespace's PID 1 exits, done by hand when we are
    not PID 1: SIGKILL to every child left (descendants come to us as they are
    orphaned), again until none is left or ``bound`` seconds have passed (a process
    in uninterruptible sleep cannot be waited for)."""
    if os.getpid() == 1:
        return
    deadline = time.monotonic() + bound
    while time.monotonic() < deadline:
        for pid, _ in children_of().get(os.getpid(), []):
            try:
                os.kill(pid, signal.SIGKILL)
            except OSError:
                pass
        if _reap(0)[1]:
            return
        time.sleep(0.02)


def run(argv: list[str], grace: float) -> int:
    if os.getpid() != 1:
        prctl(PR_SET_CHILD_SUBREAPER, 1)
    waited = {*FORWARDED, signal.SIGCHLD}
    # Blocked, a signal stays pending for sigtimedwait, even for a namespace's PID 1,
    # which the kernel would otherwise spare every signal it has no handler for.
    signal.pthread_sigmask(signal.SIG_BLOCK, waited)
    main = _spawn(argv)
    status: int | None = None
    deadline = 0.0
    while True:
        ended, none_left = _reap(main)
        if ended is not None:
            status, deadline = ended, time.monotonic() + grace
        if status is not None:
            if none_left:
                return status
            if time.monotonic() >= deadline:
                _kill_the_rest()
                return status
        wait = 1.0 if status is None else max(0.0, min(1.0, deadline - time.monotonic()))
        info = signal.sigtimedwait(waited, wait)
        if info is None or info.si_signo == signal.SIGCHLD:
            continue
        if status is None:
            try:
                os.kill(main, info.si_signo)  # unreaped: its pid is still its own
            except OSError:
                pass
        elif info.si_signo in (signal.SIGTERM, signal.SIGINT):
            _kill_the_rest()
            return status


def main(args: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m zkleader.pid1",
                                     description="PID 1 for a zkleader container (see the module's docstring).")
    parser.add_argument("--grace", type=float, default=DEFAULT_GRACE, metavar="SECONDS",
                        help=f"after the daemon exited, wait this long for the others (default {DEFAULT_GRACE:g})")
    parser.add_argument("command", nargs=argparse.REMAINDER, help="the daemon's command line, after --")
    options = parser.parse_args(args)
    command = options.command[1:] if options.command[:1] == ["--"] else options.command
    if not command:
        sys.stderr.write(f"{parser.prog}: no command given (after --, the daemon's command line)\n")
        return 2
    return run(command, options.grace)


if __name__ == "__main__":
    sys.exit(main())
