"""Every configuration error path: one line naming file, line and key; exit 78."""

from __future__ import annotations

import signal
import socket
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from zkleader import config
from zkleader.config import ConfigError, parse
from zkleader.core import exitcodes
from zkleader.core.settings import OnExit

MINIMAL = """\
election:
  path: /zkleader/report
job:
  command: ["/bin/true"]
"""


def problems(text: str) -> list[str]:
    with pytest.raises(ConfigError) as caught:
        parse(textwrap.dedent(text), "cfg.yaml")
    return [str(p) for p in caught.value.problems]


def test_minimal_config_gets_documented_defaults() -> None:
    loaded = parse(MINIMAL, "cfg.yaml")
    assert loaded.zookeeper.hosts == ("127.0.0.1:2181",)
    assert loaded.zookeeper.session_timeout == 10.0
    assert loaded.job.argv == ("/bin/true",)
    assert loaded.job.stop_signal is signal.SIGTERM
    assert loaded.job.stop_timeout == 2.0
    assert loaded.job.on_exit is OnExit.RESTART
    assert loaded.logging.level == "info"


def test_the_candidate_defaults_to_this_hosts_name(tmp_path: Path) -> None:
    assert parse(MINIMAL, "cfg.yaml").election.candidate is None  # parse asks nothing of the host
    path = tmp_path / "cfg.yaml"
    path.write_text(MINIMAL)
    assert config.load(str(path)).election.candidate == socket.gethostname()


def test_full_example_config_parses() -> None:
    loaded = parse(
        textwrap.dedent(
            """\
            zookeeper:
              hosts: "zk1:2181,zk2:2182,[::1]:2183/apps/x"
              session_timeout: 12s
            election:
              path: /zkleader/report
              candidate: web-1
            job:
              command: "exec /usr/local/bin/report --serve"
              stop_signal: INT
              stop_timeout: 1500ms
              on_exit: resign
              restart_delay: 0.5
              environment: {MODE: primary, PORT: 8080}
              working_directory: /srv
            logging: {level: debug, format: json}
            """
        )
    )
    assert loaded.zookeeper.hosts == ("zk1:2181", "zk2:2182", "[::1]:2183")
    assert loaded.zookeeper.chroot == "/apps/x"
    assert loaded.zookeeper.connection_string == "zk1:2181,zk2:2182,[::1]:2183/apps/x"
    assert loaded.zookeeper.session_timeout == 12.0
    assert loaded.job.argv == ("/bin/sh", "-c", "exec /usr/local/bin/report --serve")
    assert loaded.job.stop_signal is signal.SIGINT
    assert loaded.job.stop_timeout == 1.5
    assert loaded.job.environment == {"MODE": "primary", "PORT": "8080"}


def test_hosts_as_list_with_default_port() -> None:
    loaded = parse(MINIMAL + "zookeeper:\n  hosts: [a, 'b:2190']\n")
    assert loaded.zookeeper.hosts == ("a:2181", "b:2190")


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("election: [\n", "cfg.yaml:2: invalid YAML"),
        ("", "cfg.yaml: the file is empty"),
        ("- a\n- b\n", "cfg.yaml:1: must be a mapping"),
        (MINIMAL + "extra: 1\n", "cfg.yaml:5: extra: unknown key"),
        (MINIMAL + "zookeeper:\n  host: x\n", "cfg.yaml:6: zookeeper.host: unknown key"),
        ("job:\n  command: [x]\n", "cfg.yaml: election: required section is missing"),
        ("election:\n  path: /a\n", "cfg.yaml: job: required section is missing"),
        ("election:\n  candidate: x\njob:\n  command: [x]\n", "cfg.yaml: election.path: required key is missing"),
        ("election:\n  path: /a\njob:\n  stop_timeout: 1\n", "cfg.yaml: job.command: required key is missing"),
        ("election:\n  path: relative\njob:\n  command: [x]\n", "cfg.yaml:2: election.path: the path \"relative\" must be absolute"),
        ("election:\n  path: /a/\njob:\n  command: [x]\n", "cfg.yaml:2: election.path: the path \"/a/\" has an empty component"),
        ("election:\n  path: /zookeeper/x\njob:\n  command: [x]\n", "reserves"),
        ("election:\n  path: 5\njob:\n  command: [x]\n", "election.path: must be an absolute ZooKeeper path"),
        ("election:\n  path: /a\njob:\n  command: []\n", "cfg.yaml:4: job.command: must be a non-empty list"),
        ("election:\n  path: /a\njob:\n  command: [1, 2]\n", "job.command: must be a non-empty list of strings"),
        ("election:\n  path: /a\njob:\n  command: '  '\n", "job.command: must not be empty"),
        (MINIMAL + "  stop_signal: SIGNOPE\n", "cfg.yaml:5: job.stop_signal: \"SIGNOPE\" is not a signal name"),
        (MINIMAL + "  stop_signal: SIGKILL\n", "job.stop_signal: SIGKILL cannot be a graceful stop signal"),
        (MINIMAL + "  stop_signal: 999\n", "job.stop_signal: 999 is not a signal number"),
        (MINIMAL + "  stop_timeout: soon\n", "cfg.yaml:5: job.stop_timeout: \"soon\" is not a duration"),
        (MINIMAL + "  stop_timeout: 0\n", "job.stop_timeout: must be greater than zero"),
        (MINIMAL + "  stop_timeout: true\n", "job.stop_timeout: must be a duration such as 2"),
        (MINIMAL + "  restart_delay: -1\n", "job.restart_delay: must not be negative"),
        (MINIMAL + "  on_exit: reboot\n", "cfg.yaml:5: job.on_exit: must be one of restart | resign | exit"),
        (MINIMAL + "  environment: [A]\n", "job.environment: must be a mapping"),
        (MINIMAL + "  environment: {'1A': x}\n", "job.environment: '1A' is not a valid variable name"),
        (MINIMAL + "  environment: {A: yes}\n", "job.environment: A: value must be a string or a number (quote booleans)"),
        (MINIMAL + "  working_directory: srv\n", "job.working_directory: \"srv\" must be an absolute path"),
        (MINIMAL + "  command: [a]\n", "cfg.yaml:5: job.command: duplicate key"),
        (MINIMAL + "zookeeper:\n  hosts: 'a:b'\n", "zookeeper.hosts: \"a:b\" is not \"host:port\""),
        (MINIMAL + "zookeeper:\n  hosts: 'a:70000'\n", "zookeeper.hosts: \"a:70000\": port must be 1..65535"),
        (MINIMAL + "zookeeper:\n  hosts: []\n", "zookeeper.hosts: must be a list of \"host:port\" strings"),
        (MINIMAL + "zookeeper:\n  hosts: 'a:1/'\n", "the chroot suffix \"/\" must be absolute"),
        (MINIMAL + "zookeeper:\n  session_timeout: 0.2\n", "zookeeper.session_timeout: must be at least 1s"),
        (MINIMAL + "zookeeper:\n  session_timeout: 2h\n", "zookeeper.session_timeout: \"2h\" is not a duration"),
        (MINIMAL + "zookeeper: 5\n", "cfg.yaml:5: zookeeper: must be a mapping"),
        (MINIMAL + "logging:\n  level: loud\n", "logging.level: must be one of debug | info | warning | error"),
        (MINIMAL + "logging:\n  format: xml\n", "logging.format: must be one of auto | console | json | journald"),
        ("election:\n  path: /a\n  candidate: ''\njob:\n  command: [x]\n", "election.candidate: must be a printable name"),
    ],
)
def test_each_error_is_one_line_with_file_line_and_key(text: str, expected: str) -> None:
    found = problems(text)
    assert any(expected in line for line in found), found
    assert all("\n" not in line and line.startswith("cfg.yaml") for line in found)


def test_all_problems_are_reported_at_once() -> None:
    found = problems("election:\n  path: x\njob:\n  command: []\n  on_exit: never\nbogus: 1\n")
    keys = {line.split(": ")[1] for line in found}
    assert keys == {"election.path", "job.command", "job.on_exit", "bogus"}


def test_timing_rule_names_the_numbers_to_change() -> None:
    (line,) = problems(MINIMAL + "  stop_timeout: 5\nzookeeper:\n  session_timeout: 10\n")
    assert line.startswith("cfg.yaml:5: job.stop_timeout: zookeeper.session_timeout 10s, zookeeper.tick_time 2s, "
                           "job.stop_timeout 5s leave no room to stop the job before the session could expire")
    assert "lower job.stop_timeout to at most 3.22s" in line and "at least 13.61s" in line


def test_timing_rule_accepts_the_largest_fitting_stop_timeout() -> None:
    parse(MINIMAL + "  stop_timeout: 3.2\n")
    problems(MINIMAL + "  stop_timeout: 3.25\n")


def test_a_small_tick_time_makes_room_for_short_sessions() -> None:
    problems(MINIMAL + "  stop_timeout: 0.5\nzookeeper:\n  session_timeout: 2\n")
    loaded = parse(MINIMAL + "  stop_timeout: 0.5\nzookeeper:\n  session_timeout: 2\n  tick_time: 200ms\n")
    assert loaded.zookeeper.tick_time == 0.2
    (line,) = problems(MINIMAL + "zookeeper:\n  session_timeout: 4\n  tick_time: 3\n")
    assert "cfg.yaml:7: zookeeper.tick_time: 3s is more than half of zookeeper.session_timeout 4s" in line


def test_config_path_resolution_order() -> None:
    assert config.resolve_path("a.yaml", {"ZKLEADER_CONFIG": "b.yaml"}) == "a.yaml"
    assert config.resolve_path(None, {"ZKLEADER_CONFIG": "b.yaml"}) == "b.yaml"
    assert config.resolve_path(None, {}) == "/etc/zkleader/zkleader.yaml"


def run_cli(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "zkleader", *args], capture_output=True, text=True, timeout=30, env=env)


def test_validate_exit_statuses(tmp_path: Path) -> None:
    good = tmp_path / "good.yaml"
    good.write_text(MINIMAL)
    done = run_cli("validate", "-c", str(good))
    assert done.returncode == exitcodes.OK, done.stderr
    assert "valid" in done.stdout

    bad = tmp_path / "bad.yaml"
    bad.write_text(MINIMAL + "  stop_timeout: never\n")
    done = run_cli("validate", "-c", str(bad))
    assert done.returncode == exitcodes.CONFIG
    assert done.stderr.strip() == (
        f'zkleader: {bad}:5: job.stop_timeout: "never" is not a duration '

        '(use a number of seconds, "1.5s", "500ms" or "2m")'
    )
    assert "Traceback" not in done.stderr


@pytest.mark.parametrize("command", ["validate", "run"])
def test_missing_and_binary_files_are_config_errors(tmp_path: Path, command: str) -> None:
    done = run_cli(command, "-c", str(tmp_path / "nope.yaml"))
    assert done.returncode == exitcodes.CONFIG
    assert done.stderr.strip() == f"zkleader: {tmp_path / 'nope.yaml'}: cannot read: No such file or directory"
    binary = tmp_path / "bin.yaml"
    binary.write_bytes(b"\xff\xfe\x00junk")
    done = run_cli(command, "-c", str(binary))
    assert done.returncode == exitcodes.CONFIG and "not UTF-8" in done.stderr and "Traceback" not in done.stderr


def test_config_from_environment_variable(tmp_path: Path) -> None:
    good = tmp_path / "env.yaml"
    good.write_text(MINIMAL)
    done = run_cli("validate", env={"ZKLEADER_CONFIG": str(good), "PATH": "/usr/bin:/bin"})
    assert done.returncode == 0 and str(good) in done.stdout


def test_help_on_every_command() -> None:
    for args in (["--help"], ["run", "--help"], ["validate", "--help"]):
        done = run_cli(*args)
        assert done.returncode == 0 and "usage: zkleader" in done.stdout
    done = run_cli("bogus")
    assert done.returncode == exitcodes.USAGE
