"""The guardian on its own (no daemon, no ZooKeeper), and the daemon's start-up check
that the machine can supervise a job at all (issue 11, items 10 and 12).

The guardian is started exactly as JobRunner starts it. Each job holds an exclusive
flock(2) on one file in every process it has: the kernel frees the lock only when the
last of them is gone, so "the lock is free when the guardian reports exited" is the
exact check that "exited" means the whole tree is gone.
"""

from __future__ import annotations

import errno
import fcntl
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from zkleader.children import supervision_problem
from zkleader.core import exitcodes
from zkleader.job import guardian_argv
from zkleader.testing.daemons import process_running
from zkleader.testing.zkserver import wait_until

REPO = Path(__file__).resolve().parent.parent

# Locks the file, waits for the test's "go" file, then leaves a grandchild behind the
# way a classic daemon does: fork, setsid (a new session: killpg of the job misses
# it), fork again, the middle process exits (the grandchild is orphaned), SIGTERM and
# SIGHUP ignored. The main process exits once the grandchild has written its pid, or
# lives on with "--stay".
DOUBLE_FORK_JOB = r"""
import fcntl, os, signal, sys, time

lock_path, go_path, pid_path = sys.argv[1:4]
lock = os.open(lock_path, os.O_RDWR | os.O_CREAT, 0o644)
fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
while not os.path.exists(go_path):
    time.sleep(0.01)
if os.fork() == 0:
    os.setsid()
    if os.fork() != 0:
        os._exit(0)
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    signal.signal(signal.SIGHUP, signal.SIG_IGN)
    with open(pid_path + ".tmp", "w") as handle:
        handle.write(str(os.getpid()))
    os.rename(pid_path + ".tmp", pid_path)
    while True:
        time.sleep(1)
os.wait()
while not os.path.exists(pid_path) or "--stay" in sys.argv:
    time.sleep(0.01)
"""

# Touches SIZE bytes of private anonymous memory page by page (so that every page is
# really allocated), holds the lock, says "ready" through a file and waits for death.
BIG_JOB = r"""
import fcntl, mmap, os, sys, time

lock_path, ready_path, size = sys.argv[1], sys.argv[2], int(sys.argv[3])
lock = os.open(lock_path, os.O_RDWR | os.O_CREAT, 0o644)
fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
memory = mmap.mmap(-1, size)
for offset in range(0, size, mmap.PAGESIZE):
    memory[offset] = 1
open(ready_path, "w").close()
while True:
    time.sleep(1)
"""


class Guardian:
    """One guardian started as JobRunner starts it: stdin is the lifeline and the
    command channel, STATUS_FD the report pipe. With argv, a job is started at once
    on a lease that lasts (``lease`` moves its deadlines)."""

    def __init__(self, argv: list[str] | None = None, release: list[str] | None = None, stop_at: float = 1e9,
                 kill_at: float = 1e9) -> None:
        status_r, status_w = os.pipe()
        self.process = subprocess.Popen(guardian_argv(status_w, release or []), stdin=subprocess.PIPE,
                                        pass_fds=(status_w,))
        os.close(status_w)
        self.status = os.fdopen(status_r, "rb")
        if argv is not None:
            self.start(argv, stop_at, kill_at)

    def start(self, argv: list[str], stop_at: float = 1e9, kill_at: float = 1e9) -> None:
        spec = {"argv": argv, "env": dict(os.environ), "cwd": None, "stop_signal": int(signal.SIGTERM),
                "stop_at": stop_at, "kill_at": kill_at}
        self.command("start " + json.dumps(spec))

    def report(self) -> str:
        """The next report line; blocks until the guardian writes one or exits."""
        return self.status.readline().decode().strip()

    def command(self, line: str) -> None:
        assert self.process.stdin is not None
        self.process.stdin.write(line.encode() + b"\n")
        self.process.stdin.flush()

    def close(self) -> None:
        """Closing the lifeline makes a live guardian kill its tree and exit."""
        assert self.process.stdin is not None
        self.process.stdin.close()
        self.process.wait(30)
        self.status.close()


def lock_is_free(path: Path) -> bool:
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        return False
    finally:
        os.close(fd)
    return True


def kill_if_ours(pid: int, marker: str) -> None:
    """Cleanup for a test that failed: only a process still running our job script."""
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as handle:
            if marker.encode() in handle.read():
                os.kill(pid, signal.SIGKILL)
    except OSError:
        pass


def double_fork_scenario(workdir: Path, how: str, hide_children_files: bool) -> None:
    """The guardian must report "exited" only once the setsid'd grandchild is gone,
    whether the job's main process exits on its own or the daemon sends "kill".
    hide_children_files: bind-mount /dev/null over the guardian's
    /proc/PID/task/PID/children first, as on a kernel without CONFIG_PROC_CHILDREN
    (needs a private mount namespace)."""
    script = workdir / "double_fork_job.py"
    script.write_text(DOUBLE_FORK_JOB)
    lock, go, pid_file = workdir / "job.lock", workdir / "go", workdir / "grandchild.pid"
    argv = [sys.executable, "-I", "-S", str(script), str(lock), str(go), str(pid_file)]
    guardian = Guardian(argv + (["--stay"] if how == "kill command" else []))
    grandchild = 0
    try:
        assert guardian.report().startswith("started ")
        if hide_children_files:
            pid = guardian.process.pid
            subprocess.run(["mount", "--bind", "/dev/null", f"/proc/{pid}/task/{pid}/children"], check=True)
        go.touch()
        grandchild = int(wait_until(lambda: pid_file.exists() and pid_file.read_text(), 20,
                                    message="the grandchild's pid"))
        if how == "kill command":
            guardian.command("kill")
        exited = guardian.report()
        # The report comes only once the tree is empty: the lock is free at that very moment.
        assert lock_is_free(lock), f"{how}: lock still held when the guardian reported {exited!r}"
        assert not process_running(grandchild)
        assert exited == ("exited 0" if how == "main exits" else f"exited {-signal.SIGKILL}")
        assert guardian.process.poll() is None, "a warm guardian outlives its job"
    finally:
        if grandchild:
            kill_if_ours(grandchild, str(script))
        guardian.close()


def _can_unshare() -> bool:
    if shutil.which("unshare") is None:
        return False
    return subprocess.run(["unshare", "-rm", "true"], capture_output=True, timeout=30).returncode == 0


NEEDS_UNSHARE = pytest.mark.skipif(not _can_unshare(),
                                   reason="needs unprivileged user and mount namespaces (unshare -rm)")


@pytest.mark.parametrize("how", ["main exits", "kill command"])
def test_the_guardian_reports_exited_only_once_a_double_forked_setsid_grandchild_is_gone(
    tmp_path: Path, how: str
) -> None:
    double_fork_scenario(tmp_path, how, hide_children_files=False)


@NEEDS_UNSHARE
@pytest.mark.parametrize("how", ["main exits", "kill command"])
def test_the_same_without_proc_children_files(tmp_path: Path, how: str) -> None:
    """Some kernels lack /proc/PID/task/*/children: the guardian must not need them."""
    code = ("import sys; from pathlib import Path; sys.path[:0] = sys.argv[1:2]; "
            "from test_guardian import double_fork_scenario; "
            "double_fork_scenario(Path(sys.argv[2]), sys.argv[3], hide_children_files=True)")
    done = subprocess.run(["unshare", "-rm", sys.executable, "-c", code, str(REPO / "tests"), str(tmp_path), how],
                          capture_output=True, text=True, timeout=120, cwd=REPO)
    assert done.returncode == 0, done.stderr[-3000:]


def test_a_job_that_cannot_start_is_reported_failed(tmp_path: Path) -> None:
    guardian = Guardian([str(tmp_path / "no-such-program")])
    try:
        assert guardian.report().startswith("failed ")
        assert guardian.process.poll() is None, "the guardian stays for the next attempt"
    finally:
        guardian.close()


# --------------------------------------------------------- can this machine supervise?


def test_supervision_refused_without_a_procfs(tmp_path: Path) -> None:
    missing = tmp_path / "proc"
    assert supervision_problem(proc=str(missing)) == (
        f"{missing} is not mounted (a procfs is needed to find the job's processes)")


def test_supervision_refused_with_the_procfs_of_another_pid_namespace(tmp_path: Path) -> None:
    (tmp_path / "self").mkdir()
    (tmp_path / "self" / "stat").write_text("1 (init) S 0 1 1 0 -1 4194560\n")
    problem = supervision_problem(proc=str(tmp_path))
    assert problem is not None and "another pid namespace" in problem


def test_supervision_refused_when_prctl_fails() -> None:
    def refuse(option: int, value: int) -> None:
        raise OSError(errno.EINVAL, os.strerror(errno.EINVAL))

    assert supervision_problem(set_subreaper=refuse) == "prctl(PR_SET_CHILD_SUBREAPER) failed: Invalid argument"


def test_supervision_check_passes_and_makes_the_process_a_subreaper() -> None:
    """In a child process: a subreaper pytest would collect every orphan of the session."""
    probe = ("import ctypes, sys; from zkleader.children import supervision_problem; "
             "problem = supervision_problem(); value = ctypes.c_int(); "
             "ctypes.CDLL(None).prctl(37, ctypes.byref(value), 0, 0, 0); "  # PR_GET_CHILD_SUBREAPER
             "print(problem, value.value)")
    done = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, timeout=60, cwd=REPO)
    assert done.stdout.split() == ["None", "1"], done.stderr


@NEEDS_UNSHARE
def test_run_without_proc_exits_69_with_one_line_before_connecting(tmp_path: Path) -> None:
    """End to end: `zkleader run` in a mount namespace where /proc is an empty tmpfs."""
    config = tmp_path / "c.yaml"
    config.write_text("zookeeper:\n  hosts: 127.0.0.1:1\n  session_timeout: 6\n  tick_time: 0.2\n"
                      "election:\n  path: /x\njob:\n  command: [sleep, '60']\nlogging:\n  format: json\n")
    done = subprocess.run(
        ["unshare", "-rm", "sh", "-c", 'mount -t tmpfs none /proc && exec "$@"', "sh",
         sys.executable, "-m", "zkleader", "run", "-c", str(config)],
        capture_output=True, text=True, timeout=60, cwd=REPO)
    assert done.returncode == exitcodes.UNAVAILABLE, done.stderr
    assert done.stderr == ("zkleader: cannot supervise the job: /proc is not mounted "
                           "(a procfs is needed to find the job's processes)\n")


# ------------------------------------------------------------------ a large job's death

GIB = 1 << 30


def available_memory() -> int:
    with open("/proc/meminfo") as handle:
        fields = dict(line.split(":", 1) for line in handle)
    return int(fields["MemAvailable"].split()[0]) * 1024


@pytest.mark.skipif(available_memory() < 6 * GIB, reason="needs 2 GiB for the job and room to spare")
def test_a_killed_2gib_job_has_released_its_lock_when_the_guardian_reports_it_exited(tmp_path: Path) -> None:
    """SIGKILL is not instant for a big process: the kernel tears its memory down
    before it closes its files, and only then is it reaped. The guardian must report
    "exited" only after the reap, when the job's locks (and ports) are free. Prints
    the teardown time, the number behind job.reap_allowance."""
    script = tmp_path / "big_job.py"
    script.write_text(BIG_JOB)
    lock, ready = tmp_path / "job.lock", tmp_path / "ready"
    guardian = Guardian([sys.executable, "-I", "-S", str(script), str(lock), str(ready), str(2 * GIB)])
    try:
        job = int(guardian.report().split()[1])
        wait_until(ready.exists, 120, message="the job to touch 2 GiB")
        with open(f"/proc/{job}/status") as handle:
            rss = next(int(line.split()[1]) * 1024 for line in handle if line.startswith("VmRSS:"))
        assert rss >= 2 * GIB
        sent = time.monotonic()
        guardian.command("kill")
        exited = guardian.report()
        teardown = time.monotonic() - sent
        assert lock_is_free(lock), f"lock still held when the guardian reported {exited!r}"
        assert exited == f"exited {-signal.SIGKILL}"
        print(f"2 GiB job: from the kill command to 'exited' {teardown * 1000:.0f} ms (RSS {rss / GIB:.2f} GiB)")
    finally:
        guardian.close()


# ------------------------------------------------------------- warm, lease, release

# Holds the lock, counts the SIGTERMs it gets in a file, and exits 0.3 s after the
# first unless told to ignore them ("--stubborn").
COUNTING_JOB = r"""
import fcntl, os, signal, sys, time

lock_path, count_path = sys.argv[1], sys.argv[2]
lock = os.open(lock_path, os.O_RDWR | os.O_CREAT, 0o644)
fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
terms = []
def on_term(signum, frame):
    terms.append(time.monotonic())
    with open(count_path, "w") as handle:
        handle.write(str(len(terms)))
signal.signal(signal.SIGTERM, on_term)
open(count_path, "w").write("0")
while not terms or "--stubborn" in sys.argv or time.monotonic() - terms[0] < 0.3:
    time.sleep(0.01)
"""


def boottime() -> float:
    return time.clock_gettime(time.CLOCK_BOOTTIME)


def counting_job(workdir: Path, *flags: str) -> tuple[list[str], Path, Path]:
    script = workdir / "counting_job.py"
    script.write_text(COUNTING_JOB)
    lock, count = workdir / "job.lock", workdir / "terms"
    return [sys.executable, "-I", "-S", str(script), str(lock), str(count), *flags], lock, count


def test_a_warm_guardian_runs_one_job_after_another(tmp_path: Path) -> None:
    argv, lock, count = counting_job(tmp_path)
    guardian = Guardian()
    try:
        for _ in range(2):
            guardian.start(argv)
            assert guardian.report().startswith("started ")
            wait_until(count.exists, 20, message="the job to run")
            guardian.command(f"signal {int(signal.SIGTERM)}")
            assert guardian.report() == "exited 0"
            assert count.read_text() == "1", "one stop, one signal: not once per way it reaches the job"
            assert lock_is_free(lock)
            count.unlink()
        assert guardian.process.poll() is None
    finally:
        guardian.close()


def test_the_guardian_stops_the_job_itself_when_the_lease_runs_out(tmp_path: Path) -> None:
    """No word from the daemon (a stalled daemon): the stop signal at stop_at, once,
    even when the daemon's own stop signal follows an instant later."""
    argv, lock, count = counting_job(tmp_path)
    guardian = Guardian(argv)
    try:
        assert guardian.report().startswith("started ")
        wait_until(count.exists, 20, message="the job to run")
        # The deadlines come once the job has its handler (a slow machine may take a
        # while to start Python): the last renewal before the daemon went silent.
        stop_at = boottime() + 0.5
        guardian.command(f"lease {stop_at} {stop_at + 5}")
        wait_until(lambda: count.read_text() == "1", 20, message="the guardian's own stop signal")
        assert boottime() >= stop_at
        guardian.command(f"signal {int(signal.SIGTERM)}")  # the daemon, late
        assert guardian.report() == "exited 0 lease"
        assert count.read_text() == "1", "the job heard its stop signal twice"
        assert lock_is_free(lock)
    finally:
        guardian.close()


def test_a_renewed_lease_moves_the_guardians_deadlines(tmp_path: Path) -> None:
    argv, lock, count = counting_job(tmp_path)
    guardian = Guardian(argv, stop_at=boottime() + 0.5, kill_at=boottime() + 0.6)
    try:
        assert guardian.report().startswith("started ")
        guardian.command(f"lease {boottime() + 30} {boottime() + 31}")
        time.sleep(1.0)
        assert count.read_text() == "0", "stopped although the lease was renewed"
        guardian.command(f"signal {int(signal.SIGTERM)}")
        assert guardian.report() == "exited 0"
    finally:
        guardian.close()


def test_the_guardian_kills_a_job_that_ignores_the_stop_by_the_kill_deadline(tmp_path: Path) -> None:
    argv, lock, count = counting_job(tmp_path, "--stubborn")
    guardian = Guardian(argv)
    try:
        assert guardian.report().startswith("started ")
        wait_until(count.exists, 20, message="the job to run")
        start = boottime()
        guardian.command(f"lease {start + 0.5} {start + 1.0}")
        assert guardian.report() == f"exited {-signal.SIGKILL} lease"
        assert boottime() >= start + 1.0
        assert count.read_text() == "1"
        assert lock_is_free(lock)
    finally:
        guardian.close()


# Writes the secret it got, and whether the job's lock was free when it ran.
RELEASER = r"""
import fcntl, os, sys
lock_path, out_path = sys.argv[1], sys.argv[2]
secret = os.read(int(sys.argv[sys.argv.index("--secret-fd") + 1]), 4096).decode().strip()
fd = os.open(lock_path, os.O_RDWR | os.O_CREAT, 0o644)
try:
    fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    free = "free"
except BlockingIOError:
    free = "held"
open(out_path, "w").write(secret + " " + free)
"""


@pytest.mark.parametrize("told", ["session", "nosession"])
def test_a_dead_daemons_session_is_released_only_after_the_tree_is_gone(tmp_path: Path, told: str) -> None:
    """The lifeline closes (the daemon died): the guardian kills the job (a double-fork
    that leaves a grandchild holding the lock), reaps everything, and only then execs
    the releaser with the session on a pipe; after `nosession`, it just exits."""
    script = tmp_path / "double_fork_job.py"
    script.write_text(DOUBLE_FORK_JOB)
    releaser = tmp_path / "releaser.py"
    releaser.write_text(RELEASER)
    lock, go, pid_file, out = tmp_path / "job.lock", tmp_path / "go", tmp_path / "grandchild.pid", tmp_path / "out"
    argv = [sys.executable, "-I", "-S", str(script), str(lock), str(go), str(pid_file), "--stay"]
    guardian = Guardian(argv, release=[sys.executable, "-I", "-S", str(releaser), str(lock), str(out)])
    grandchild = 0
    try:
        assert guardian.report().startswith("started ")
        guardian.command("session 1a2b 00ff" if told == "session" else "session 1a2b 00ff\nnosession")
        go.touch()
        grandchild = int(wait_until(lambda: pid_file.exists() and pid_file.read_text(), 20,
                                    message="the grandchild's pid"))
        guardian.close()
        assert not process_running(grandchild)
        if told == "session":
            assert out.read_text() == "1a2b 00ff free"
        else:
            assert not out.exists()
    finally:
        if grandchild:
            kill_if_ours(grandchild, str(script))
