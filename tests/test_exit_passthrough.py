"""`job.on_exit: exit` passes the job's exit status through as the daemon's, after the
orderly handover, except where it would be misread as one of the daemon's own
statuses (core/exitcodes.py, README "Commands and exit statuses")."""

from __future__ import annotations

import pytest
from test_leadership import STOP, Driver

from zkleader.core import actions as act
from zkleader.core import events as ev
from zkleader.core import exitcodes
from zkleader.core.settings import OnExit


@pytest.mark.parametrize(
    ("returncode", "status"),
    [
        (0, 0),  # done: systemd's Restart=on-failure leaves it stopped
        (3, 3),
        (5, 5),
        (42, 42),
        (63, 63),
        (79, 79),
        (127, 127),
        (255, 255),
        (1, exitcodes.JOB_EXITED),  # "internal error (a bug)"
        (2, exitcodes.JOB_EXITED),  # usage
        (4, exitcodes.JOB_EXITED),  # status/resign's "not found"
        (64, exitcodes.JOB_EXITED),  # sysexits.h, kept for the daemon
        (69, exitcodes.JOB_EXITED),
        (70, exitcodes.JOB_EXITED),
        (71, exitcodes.JOB_EXITED),  # would claim an unreaped job
        (75, exitcodes.JOB_EXITED),
        (77, exitcodes.JOB_EXITED),  # would stop systemd's restarts
        (78, exitcodes.JOB_EXITED),  # would stop systemd's restarts
        (-9, 137),  # killed by SIGKILL: 128 + N as shells report it
        (-15, 143),
        (None, exitcodes.JOB_EXITED),  # never started
    ],
)
def test_the_mapping(returncode: int | None, status: int) -> None:
    assert exitcodes.for_job(returncode) == status


def test_no_passed_status_is_one_of_the_daemons_own_but_ok_and_job_exited() -> None:
    own = {v for k, v in vars(exitcodes).items() if k.isupper() and isinstance(v, int)}
    passed = {exitcodes.for_job(code) for code in [None, *range(-64, 256)]}
    assert passed & own == {exitcodes.OK, exitcodes.JOB_EXITED}
    assert all(0 <= status <= 255 for status in passed)


def _exit_after_job_exit(returncode: int | None, error: str = "") -> tuple[Driver, list[act.Action]]:
    d = Driver(OnExit.EXIT)
    d.lead()
    # The handover comes first: the node goes before the daemon exits.
    assert d.kinds(d.feed(ev.JobExited(returncode, error), 0.2)) == ["DeleteNode"]
    out = d.feed(ev.Deleted(d.last(act.DeleteNode).request_id, 0.2), 0.21)
    return d, out


@pytest.mark.parametrize(("returncode", "status"), [(42, 42), (0, 0), (78, 3), (-9, 137)])
def test_the_status_is_passed_after_the_handover(returncode: int, status: int) -> None:
    d, out = _exit_after_job_exit(returncode)
    assert d.kinds(out) == ["CloseSession", "Exit"] and d.last(act.Exit).code == status
    (stopped,) = [a for a in out if isinstance(a, act.Log) and a.event == "stopped"]
    assert stopped.fields["exit_code"] == status
    (exited,) = [a for a in d.actions if isinstance(a, act.Log) and a.event == "job_exited"]
    assert exited.fields.get("code", exited.fields.get("signal")) is not None  # the real status stays in the log


def test_a_job_that_never_started_exits_3() -> None:
    d = Driver(OnExit.EXIT)
    d.lead()
    d.feed(ev.JobExited(None, "cannot start: no such file"), 0.2)
    d.feed(ev.Deleted(d.last(act.DeleteNode).request_id, 0.2), 0.21)
    assert d.last(act.Exit).code == exitcodes.JOB_EXITED


def test_without_an_answer_to_the_delete_the_status_is_still_the_jobs() -> None:
    """The leave's deadline (no deletion confirmed in time) exits with the same status."""
    d = Driver(OnExit.EXIT)
    d.lead()
    d.feed(ev.JobExited(42), 0.2)
    d.feed(ev.Tick(), 0.2 + STOP + 10.0)
    assert d.last(act.Exit).code == 42


def test_a_refusal_during_the_leave_still_wins() -> None:
    """NoAuth while leaving: 77 says more than the job's status (no retry loop)."""
    d = Driver(OnExit.EXIT)
    d.lead()
    d.feed(ev.JobExited(42), 0.2)
    delete = d.last(act.DeleteNode)
    d.feed(ev.RequestFailed(delete.request_id, 0.2, ev.Failure.NO_AUTH), 0.21)
    assert d.last(act.Exit).code == exitcodes.AUTH_FAILED


def test_a_stop_the_daemon_asked_for_is_not_the_jobs_exit() -> None:
    """SIGTERM's graceful stop ends the job (-15): the daemon exits 0, not 143."""
    d = Driver(OnExit.EXIT)
    d.lead()
    d.feed(ev.ShutdownRequested("SIGTERM"), 0.5)
    d.feed(ev.JobExited(-15), 0.6)
    d.feed(ev.Deleted(d.last(act.DeleteNode).request_id, 0.6), 0.61)
    assert d.last(act.Exit).code == exitcodes.OK


# ------------------------------------------------------------ a real daemon


@pytest.mark.zookeeper
def test_a_real_daemon_exits_with_its_jobs_status_after_the_handover(healthy_zk_server, election_path,
                                                                    daemon_group) -> None:
    group = daemon_group(healthy_zk_server.hosts, election_path, job_args=("--exit-after", "0.3", "--exit-code", "42"),
                         job={"on_exit": "exit"})
    group.add("a")
    group.wait_starts(1, 30)
    group.add("b").wait_event("joined", 30)
    assert group.wait_exit("a") == 42
    exited = group.records("exit")[0]["t"]
    second = group.wait_starts(2, 5)[1]
    assert second["candidate"] == "b" and second["t"] - exited < 1.0
    assert group.overlaps() == []
    stopped = group.daemons["a"].events("stopped")
    assert stopped and stopped[-1]["exit_code"] == 42
