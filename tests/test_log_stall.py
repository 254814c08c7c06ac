"""A leader whose log output nobody reads still reaps its job in time.

The leader daemon's stdout and stderr are a pipe that nothing reads (a blocking
container log driver, a log shipper's full pipe, a terminal paused with Ctrl-S), and
its job floods the same stderr, so the pipe is full and every write to it blocks.
Then the leader is silently partitioned. Its job ignores SIGTERM, so only the
daemon's loop, acting again stop_timeout after the stop signal, can end it with
SIGKILL: a loop blocked in a log write never would, and the job would outlive the
session. Claims (as in tests/test_faults.py, on a 3-node ensemble behind fault
proxies): the job is gone before its session could expire (before ``heard + T``),
the successor's job starts after it, and the flock detector saw no overlap.
"""

from __future__ import annotations

import sys
import time

import pytest
from test_faults import WAIT, T, cluster  # noqa: F401  (the fixture)

from zkleader.testing.daemons import DETECTOR, wait_for

pytestmark = pytest.mark.zookeeper

#: The leader's job: the detector, ignoring SIGTERM, with a child writing to stderr
#: as fast as the pipe takes it (in the job's process group: it dies with the job).
FLOODING_JOB = ["/bin/sh", "-c", 'yes zkleader-test-flood >&2 & exec "$0" "$@"',
                sys.executable, "-I", "-S", str(DETECTOR), "--ignore-term"]


def test_a_leader_with_a_stalled_stderr_reaps_its_job_before_its_session_can_expire(cluster) -> None:  # noqa: F811
    c = cluster()
    c.group.stall_output("d0")
    c.add("d0", wait_joined=False, command=FLOODING_JOB)
    old = wait_for(lambda: next((j for j in c.watcher.alive() if j.candidate == "d0"), None), 30, "d0's job")
    c.add("d1")
    c.add("d2")
    c.group.fill_output("d0")

    c.proxies["d0"].partition()
    t_p = time.monotonic()
    heard = c.last_heard("d0")
    end = c.watcher.wait_end(old, WAIT)
    successor = c.watcher.wait_start_after(t_p, WAIT, "a successor job")
    assert end < heard + T, f"job ended {end - heard:.3f}s after the server last heard from d0"
    assert end < t_p + T
    assert successor.start > end, "the successor started before the old job was gone"
    assert successor.candidate != "d0" and successor.token > old.token
    assert c.group.overlaps() == []
    assert c.group.fill_output("d0") == 0, "the pipe was read after all: the test lost its point"
