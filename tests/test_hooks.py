"""The hook shell (zkleader/hooks.py) with real processes: FIFO order and never two at
once under a burst, run() never blocking, the timeout killing the whole tree, the
environment, failures logged and counted, and the loop handing RunHook to it."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import pytest

from zkleader import config
from zkleader.config import HooksConfig
from zkleader.hooks import HookRunner
from zkleader.simulation.runner import explore


class Recorder:
    """A structlog-like logger that keeps what it was told."""

    def __init__(self) -> None:
        self.lines: list[tuple[str, str, dict[str, Any]]] = []

    def __getattr__(self, level: str) -> Any:
        return lambda event, **fields: self.lines.append((level, event, fields))


def wait_for(predicate: Any, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.01)


def alive(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] != "Z"
    except FileNotFoundError:
        return False


def test_a_burst_runs_in_order_one_at_a_time_and_never_blocks_the_caller(tmp_path: Path) -> None:
    log = tmp_path / "log"
    # Each hook notes its start and end; a random-ish sleep between would expose overlap.
    script = (f'echo "start $ZKLEADER_HOOK $ZKLEADER_REASON" >> {log}; '
              f'sleep 0.0$(( $ZKLEADER_REASON % 7 )); echo "end $ZKLEADER_HOOK $ZKLEADER_REASON" >> {log}')
    runner = HookRunner(HooksConfig(on_leader=script, on_lost=script, on_follower=script, timeout=5), Recorder())
    kinds = ["on_leader", "on_lost", "on_follower"]
    sent = []
    began = time.monotonic()
    for i in range(30):
        kind = kinds[i % 3]
        runner.run(kind, {"hook": kind, "reason": str(i)})
        sent.append(f"{kind} {i}")
    assert time.monotonic() - began < 0.5  # queued, not run: the loop never waits
    assert runner.close()
    lines = log.read_text().splitlines()
    expected = [line for item in sent for line in (f"start {item}", f"end {item}")]
    assert lines == expected  # FIFO, and every hook ended before the next began
    assert runner.counts == {"ran": 30, "failed": 0, "timed_out": 0, "dropped": 0}


def test_the_timeout_kills_the_whole_tree_including_a_setsid_escapee(tmp_path: Path) -> None:
    pids = tmp_path / "pids"
    after = tmp_path / "after"
    script = (f"sleep 300 & echo $! >> {pids}; "
              f"setsid sleep 300 & echo $! >> {pids}; "
              f"sh -c 'sleep 300 & echo $! >> {pids}; wait' & "
              f"echo $$ >> {pids}; wait")
    log = Recorder()
    runner = HookRunner(HooksConfig(on_lost=script, on_stop=f"touch {after}", timeout=0.5), log)
    began = time.monotonic()
    runner.run("on_lost", {"hook": "on_lost", "reason": "test"})
    runner.run("on_stop", {"hook": "on_stop", "reason": "next"})
    wait_for(after.exists)
    took = time.monotonic() - began
    assert 0.5 <= took < 3.0  # the next hook ran right after the timeout
    recorded = [int(p) for p in pids.read_text().split()]
    assert len(recorded) == 4
    wait_for(lambda: not any(alive(p) for p in recorded), timeout=2.0)
    assert runner.counts["timed_out"] == 1 and runner.counts["failed"] == 1
    failed = [fields for level, event, fields in log.lines if event == "hook_failed"]
    assert failed and "timed out after 0.5s" in failed[0]["error"] and failed[0]["hook"] == "on_lost"
    assert runner.close()


def test_the_environment_carries_the_transition(tmp_path: Path) -> None:
    out = tmp_path / "env"
    runner = HookRunner(HooksConfig(on_leader=["/bin/sh", "-c", f"env > {out}"]), Recorder())
    fields = {"hook": "on_leader", "from": "follower", "to": "leader", "reason": "job started",
              "election": "/e", "candidate": "a", "fencing_token": "77", "leader": "a", "leader_host": "h"}
    runner.run("on_leader", fields)
    assert runner.close()
    env = dict(line.split("=", 1) for line in out.read_text().splitlines() if line.startswith("ZKLEADER_"))
    assert env == {"ZKLEADER_HOOK": "on_leader", "ZKLEADER_FROM": "follower", "ZKLEADER_TO": "leader",
                   "ZKLEADER_REASON": "job started", "ZKLEADER_ELECTION": "/e", "ZKLEADER_CANDIDATE": "a",
                   "ZKLEADER_FENCING_TOKEN": "77", "ZKLEADER_LEADER": "a", "ZKLEADER_LEADER_HOST": "h"}
    assert "PATH" in out.read_text()  # the daemon's own environment too


def test_failures_are_logged_and_counted_and_the_next_hook_still_runs(tmp_path: Path) -> None:
    log = Recorder()
    ok = tmp_path / "ok"
    runner = HookRunner(HooksConfig(on_lost="echo 'no route to host' >&2; exit 3",
                                    on_follower=[str(tmp_path / "missing")], on_stop=f"touch {ok}"), log)
    runner.run("on_lost", {"reason": "resign requested"})
    runner.run("on_follower", {"reason": "following"})
    runner.run("on_leader", {"reason": "not configured: ignored"})
    runner.run("on_stop", {"reason": "shutdown"})
    assert runner.close()
    assert ok.exists()
    failed = [fields for level, event, fields in log.lines if event == "hook_failed"]
    assert failed[0] == {"hook": "on_lost", "reason": "resign requested", "error": "exit 3: no route to host"}
    assert failed[1]["hook"] == "on_follower" and failed[1]["error"].startswith("cannot run")
    assert runner.counts == {"ran": 2, "failed": 2, "timed_out": 0, "dropped": 0}
    assert [event for _, event, _ in log.lines].count("hook_ran") == 1


def test_close_gives_up_after_its_grace() -> None:
    runner = HookRunner(HooksConfig(on_stop="sleep 5", timeout=5), Recorder())
    runner.run("on_stop", {})
    began = time.monotonic()
    assert not runner.close(grace=0.3)
    assert time.monotonic() - began < 1.0


def test_the_config_section(tmp_path: Path) -> None:
    base = "election: {path: /e}\njob: {command: [/bin/true]}\n"
    parsed = config.parse(base + "hooks:\n  on_leader: [/usr/bin/vip, up]\n  on_lost: vip down\n  timeout: 3s\n")
    assert parsed.hooks == HooksConfig(on_leader=("/usr/bin/vip", "up"), on_lost="vip down", timeout=3.0)
    assert parsed.hooks.kinds == frozenset({"on_leader", "on_lost"})
    assert parsed.hooks.argv("on_lost") == ("/bin/sh", "-c", "vip down") and parsed.hooks.argv("on_stop") is None
    assert config.parse(base).hooks is None
    assert config.parse(base + "hooks: {timeout: 3s}\n").hooks is None  # no command: no hooks
    with pytest.raises(config.ConfigError) as err:
        config.parse(base + "hooks:\n  on_leader: []\n  timeout: -1\n  on_elected: x\n", "f.yaml")
    problems = sorted(str(p) for p in err.value.problems)
    assert any(p.startswith("f.yaml:4: hooks.on_leader:") for p in problems)
    assert any(p.startswith("f.yaml:5: hooks.timeout:") for p in problems)
    assert any(p.startswith("f.yaml:6: hooks.on_elected: unknown key") for p in problems)


def test_the_simulation_hands_every_hook_on_in_a_sane_order() -> None:
    summary = explore(range(1000, 1100), workers=1)
    assert not summary.findings
    assert summary.stats.get("hook on_leader", 0) > 0 and summary.stats.get("hook on_lost", 0) > 0
    assert summary.stats.get("hooks out of order", 0) == 0


def test_the_daemon_loop_passes_run_hook_to_the_runner(tmp_path: Path) -> None:
    """Loop.perform hands RunHook on (and ignores it without a runner)."""
    from zkleader.core import actions as act
    from zkleader.loop import Loop

    taken: list[tuple[str, dict[str, str]]] = []

    class Hooks:
        def run(self, kind: str, fields: dict[str, str], deadline: float | None = None) -> None:
            taken.append((kind, fields))

    loop = Loop.__new__(Loop)
    loop.hooks = None
    assert loop.perform([act.RunHook("on_leader", {"hook": "on_leader"})]) is None
    loop.hooks = Hooks()
    loop.perform([act.RunHook("on_leader", {"hook": "on_leader"})])
    assert taken == [("on_leader", {"hook": "on_leader"})]



def test_before_lead_posts_its_verdict_and_is_killed_at_its_deadline(tmp_path: Path) -> None:
    from zkleader.core import events as ev

    posted: list[ev.Event] = []
    now = time.monotonic
    runner = HookRunner(HooksConfig(before_lead='test "$ZKLEADER_FENCING_TOKEN" = 7 || { echo lagging; exit 1; }',
                                    timeout=5), Recorder(), clock=now, post=posted.append)
    runner.run("before_lead", {"fencing_token": "7"}, deadline=now() + 5)
    runner.run("before_lead", {"fencing_token": "8"}, deadline=now() + 5)
    runner.run("before_lead", {"fencing_token": "9"}, deadline=now() - 1)  # its turn came too late
    assert runner.close()
    assert posted[0] == ev.BeforeLeadChecked(7, True, "exit 0")
    assert posted[1] == ev.BeforeLeadChecked(8, False, "exit 1: lagging")
    assert posted[2].ok is False and "no time left" in posted[2].detail

    posted.clear()
    runner = HookRunner(HooksConfig(before_lead="sleep 30", timeout=5), Recorder(), clock=now, post=posted.append)
    began = now()
    runner.run("before_lead", {"fencing_token": "7"}, deadline=began + 0.3)  # the lease's kill instant
    assert runner.close()
    assert 0.3 <= now() - began < 2.0
    assert posted[0].ok is False and "timed out" in posted[0].detail


def test_before_lead_must_fit_a_new_leaders_first_lease() -> None:
    base = "election: {path: /e}\njob: {command: [/bin/true]}\n"
    with pytest.raises(config.ConfigError) as err:
        config.parse(base + "hooks:\n  before_lead: check\n", "f.yaml")
    (problem,) = err.value.problems
    assert str(problem).startswith("f.yaml:4: hooks.timeout: 10s does not fit the lease")
    assert "at most 4.32s" in str(problem)
    assert config.parse(base + "hooks:\n  before_lead: check\n  timeout: 4s\n").hooks is not None
    assert config.parse(base + "hooks:\n  on_leader: check\n  timeout: 60s\n").hooks is not None  # no lease to fit
