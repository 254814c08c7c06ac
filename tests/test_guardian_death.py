"""Issue 11, item 2: a dead guardian is not a reaped job.

The guardian can die before its job (kill -9 by an operator, the OOM killer, the job
killing its parent). PR_SET_PDEATHSIG then takes only the job's main process; the
grandchildren live on with the job's flock. "Stopped" must still mean every process
of the tree is gone before the next job starts, on this host (on_exit: restart) or
on a successor (on_exit: resign). Real daemons, a real ZooKeeper, and the flock
overlap detector as the job's grandchildren: a second job that starts while any of
them lives records an overlap.
"""

from __future__ import annotations

import os
import signal
import sys
import time
from pathlib import Path
from typing import Any

import pytest

from zkleader.testing.daemons import (
    DETECTOR,
    Daemon,
    DaemonGroup,
    cmdline,
    process_running,
    wait_for,
)

pytestmark = pytest.mark.zookeeper

# A job as many are: a shell that starts a worker and waits. The worker (the detector)
# forks a child of its own; both hold the lock, the shell does not.
SHELL_JOB = f'"{sys.executable}" -I -S "{DETECTOR}" --fork &\nwait\n'
# The same, but after a while the shell kills its own parent, the guardian.
PARRICIDE_JOB = f'"{sys.executable}" -I -S "{DETECTOR}" --fork &\nsleep 0.5\nkill -9 $PPID\nwait\n'


def process_table() -> dict[int, tuple[int, str]]:
    """pid -> (ppid, state), from /proc/*/stat."""
    table = {}
    for name in os.listdir("/proc"):
        if name.isdigit():
            try:
                with open(f"/proc/{name}/stat") as handle:
                    fields = handle.read().rsplit(")", 1)[1].split()
            except OSError:
                continue
            table[int(name)] = (int(fields[1]), fields[0])
    return table


def job_tree(daemon: Daemon) -> tuple[int, list[int]] | None:
    """The daemon's guardian and every process below it, once the detector's forked
    child exists (shell + detector + its child); None before that."""
    table = process_table()
    guardians = [pid for pid, (ppid, _) in table.items() if ppid == daemon.pid and "guardian.py" in cmdline(pid)]
    if len(guardians) != 1:
        return None
    tree, frontier = [], [guardians[0]]
    while frontier:
        parent = frontier.pop()
        below = [pid for pid, (ppid, _) in table.items() if ppid == parent]
        tree += below
        frontier += below
    return (guardians[0], tree) if len(tree) >= 3 else None


def kill_leftovers(pids: list[int]) -> None:
    """If the test failed, the old job's processes may still run (orphaned to init):
    kill those that still run our job, and nothing else."""
    for pid in pids:
        line = cmdline(pid)
        if str(DETECTOR) in line or "job.sh" in line:
            try:
                os.kill(pid, signal.SIGKILL)
            except OSError:
                pass


def next_start_or_overlap(group: DaemonGroup, starts: int, timeout: float) -> list[dict[str, Any]]:
    """Waits for the given number of job starts, or any overlap, whichever comes first."""
    wait_for(lambda: group.overlaps() or len(group.records("start")) >= starts, timeout,
             f"{starts} job starts or an overlap")
    assert group.overlaps() == [], "a second job started while the first one's processes lived"
    return group.records("start")


def shell_job(tmp_path: Path, text: str) -> list[str]:
    script = tmp_path / "job.sh"
    script.write_text(text)
    return ["/bin/sh", str(script)]


def guardian_deaths(daemon: Daemon) -> list[str]:
    return [e.get("error", "") for e in daemon.events("job_exited") if "guardian died" in e.get("error", "")]


def test_kill_9_of_the_guardian_restarts_the_job_only_after_its_whole_tree_is_gone(
    healthy_zk_server, election_path, daemon_group, tmp_path
) -> None:
    group = daemon_group(healthy_zk_server.hosts, election_path,
                         job={"command": shell_job(tmp_path, SHELL_JOB), "on_exit": "restart"})
    daemon = group.add("a")
    group.wait_starts(1, 30)
    guardian, old = wait_for(lambda: job_tree(daemon), 20, "the job's process tree")
    try:
        os.kill(guardian, signal.SIGKILL)
        starts = next_start_or_overlap(group, 2, 20)
        assert starts[1]["candidate"] == "a"
        assert [pid for pid in old if process_running(pid)] == []
        (error,) = guardian_deaths(daemon)
        assert error.startswith("guardian died by signal 9 (SIGKILL) before the job ended;"), error
        assert len(daemon.events("leader_acquired")) == 1  # the same leadership throughout
    finally:
        kill_leftovers(old)


def test_kill_9_of_the_guardian_lets_a_successor_start_only_after_the_old_tree_is_gone(
    healthy_zk_server, election_path, daemon_group, tmp_path
) -> None:
    group = daemon_group(healthy_zk_server.hosts, election_path,
                         job={"command": shell_job(tmp_path, SHELL_JOB), "on_exit": "resign"})
    a = group.add("a")
    group.wait_starts(1, 30)
    group.add("b").wait_event("joined", 30)
    guardian, old = wait_for(lambda: job_tree(a), 20, "the job's process tree")
    try:
        killed_at = time.monotonic()
        os.kill(guardian, signal.SIGKILL)
        second = next_start_or_overlap(group, 2, 20)[1]
        assert second["candidate"] == "b" and second["t"] > killed_at
        assert [pid for pid in old if process_running(pid)] == []
        assert guardian_deaths(a)
    finally:
        kill_leftovers(old)


def test_a_job_that_kills_its_own_guardian_never_overlaps_its_restart(
    healthy_zk_server, election_path, daemon_group, tmp_path
) -> None:
    """The job's parent is the guardian: `kill -9 $PPID` from the job's shell."""
    group = daemon_group(healthy_zk_server.hosts, election_path,
                         job={"command": shell_job(tmp_path, PARRICIDE_JOB), "on_exit": "restart"})
    daemon = group.add("a")
    seen: set[int] = set()

    def three_starts() -> bool:
        for pid, _ in process_table().items():
            if str(DETECTOR) in cmdline(pid):
                seen.add(pid)
        return bool(group.overlaps()) or len(group.records("start")) >= 3

    try:
        wait_for(three_starts, 40, "three job starts or an overlap")
        assert group.overlaps() == []
        assert len(guardian_deaths(daemon)) >= 2
    finally:
        kill_leftovers(sorted(seen))


# --------------------------------------- the daemon's other children: health checks


def test_the_sweep_spares_a_health_check_that_is_running(
    healthy_zk_server, election_path, daemon_group, tmp_path
) -> None:
    """The daemon's own children include its health checks: sweeping a dead guardian's
    orphans must not kill one (the subprocess module would then report it passed)."""
    first = tmp_path / "first-check-done"
    check = f'if [ -e "{first}" ]; then sleep 1.5; touch "{tmp_path}/check-done.$$"; fi; touch "{first}"'
    group = daemon_group(healthy_zk_server.hosts, election_path,
                         job={"command": shell_job(tmp_path, SHELL_JOB), "on_exit": "restart"})
    daemon = group.add("a", sections={"health": {"command": ["/bin/sh", "-c", check], "interval": 0.1,
                                                 "timeout": 10, "failures": 1}})
    group.wait_starts(1, 30)
    guardian, old = wait_for(lambda: job_tree(daemon), 20, "the job's process tree")
    try:
        health = wait_for(lambda: [pid for pid, (ppid, _) in process_table().items()
                                   if ppid == daemon.pid and "check-done" in cmdline(pid)], 20, "a running check")[0]
        os.kill(guardian, signal.SIGKILL)
        wait_for(lambda: guardian_deaths(daemon), 20, "the guardian's death reported")
        wait_for((tmp_path / f"check-done.{health}").exists, 10, f"the health check {health} to finish")
        assert group.overlaps() == []
    finally:
        kill_leftovers(old)


def test_what_a_health_check_leaves_behind_does_not_pile_up_as_zombies(
    healthy_zk_server, election_path, daemon_group, tmp_path
) -> None:
    """The daemon is a subreaper, so a check's background processes become its
    children when the check exits; once they end, they are reaped at the next check."""
    group = daemon_group(healthy_zk_server.hosts, election_path)
    daemon = group.add("a", sections={"health": {"command": ["/bin/sh", "-c", "sleep 0.1 &"], "interval": 0.2}})
    group.wait_starts(1, 30)
    time.sleep(3.0)  # ~10 checks, each leaving a process that ends 0.1 s later
    zombies = [pid for pid, (ppid, state) in process_table().items() if ppid == daemon.pid and state == "Z"]
    assert len(zombies) <= 2, f"zombie children of the daemon: {zombies}"
