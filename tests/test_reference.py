"""The one source of the configuration reference and of the man pages (issue 16,
item 4): every key of zkleader/config.py has a row in zkleader/reference.py, the
README's table is exactly what that generates, and zkleader(8) says what --help
says. When one fails, its message says what to add where."""

from __future__ import annotations

import dataclasses
import re
import shutil
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest

from zkleader import __version__, cli, reference

REPO = Path(__file__).resolve().parents[1]


def test_every_config_key_has_a_row_and_every_row_a_key():
    problems = reference.problems()
    assert problems == [], "the configuration reference is out of date:\n" + "\n".join(problems)


def test_the_readme_table_is_the_generated_one():
    readme = (REPO / "README.md").read_text()
    assert reference.readme_table(readme) == reference.markdown_table(), (
        "README.md's configuration table differs from zkleader/reference.py: edit the row in KEYS "
        "there, then run `.venv/bin/python -m zkleader.reference readme`")


def test_a_key_without_a_row_is_reported_with_what_to_do(monkeypatch):
    dropped = next(k for k in reference.KEYS if k.name == "election.priority")
    monkeypatch.setattr(reference, "KEYS", tuple(k for k in reference.KEYS if k is not dropped))
    problems = reference.problems()
    assert len(problems) == 1
    assert problems[0].startswith("election.priority (ElectionConfig.priority in zkleader/config.py) is undocumented")
    assert "Key(name, default, meaning)" in problems[0] and "zkleader.reference readme" in problems[0]


def test_a_stale_row_and_a_wrong_default_are_reported(monkeypatch):
    rows = [dataclasses.replace(k, default="`5`") if k.name == "job.stop_timeout" else k for k in reference.KEYS]
    rows.append(reference.Key("job.nice", "`0`", "gone"))
    monkeypatch.setattr(reference, "KEYS", tuple(rows))
    problems = reference.problems()
    assert any(p.startswith("job.nice: a row in KEYS") for p in problems), problems
    assert any(p.startswith("job.stop_timeout: KEYS in zkleader/reference.py shows default '5', "
                            "the parser's default is '2'") for p in problems), problems
    assert len(problems) == 2, problems


def test_the_check_command_fails_on_a_problem(monkeypatch, capsys):
    monkeypatch.setattr(reference, "KEYS", reference.KEYS[1:])
    assert reference.main(["check"]) == 1
    assert "zookeeper.hosts" in capsys.readouterr().err
    monkeypatch.undo()
    assert reference.main(["check"]) == 0


def _text(roff: str) -> str:
    """What a reader of the page sees, roughly: roff escapes and fonts removed,
    blanks collapsed."""
    text = re.sub(r"\\f[BIR]", "", roff).replace("\\-", "-").replace("\\e", "\\").replace("\\&", "")
    text = "\n".join(line for line in text.splitlines() if not line.startswith("."))
    return re.sub(r"\s+", " ", text)


def test_zkleader_8_says_what_help_says():
    """Every subcommand, its summary, its description and each option with its help text,
    as argparse prints them in --help, is in the man page."""
    parser = cli.build_parser()
    page = _text(reference.cli_manpage(parser, "2026-01-01"))
    subcommands = reference.subcommands(parser)
    assert {name for name, _, _ in subcommands} >= {"run", "validate", "status", "resign"}
    for name, summary, sub in subcommands:
        helptext = re.sub(r"\s+", " ", sub.format_help())
        assert f" {name} " in page and summary in page, name
        if sub.description:
            assert re.sub(r"\s+", " ", sub.description) in page and re.sub(r"\s+", " ", sub.description) in helptext
        for action in reference.options(sub):
            for option in action.option_strings:
                assert option in page and option in helptext, (name, option)
            expanded = re.sub(r"\s+", " ", reference._help_text(sub, action))
            assert expanded in page, f"zkleader {name} {action.option_strings}: {expanded!r} not in zkleader(8)"
            assert expanded in helptext
    for code in re.findall(r"(?:: |, )(\d+) ", parser.epilog or ""):
        assert re.search(rf"\b{code}\b", page), f"exit status {code} missing from zkleader(8)"


def test_zkleader_yaml_5_has_every_key():
    page = _text(reference.yaml_manpage("2026-01-01"))
    for key in reference.KEYS:
        assert key.name in page


@pytest.mark.skipif(shutil.which("man") is None, reason="man-db not installed")
def test_the_man_pages_render_without_warnings(tmp_path):
    for path in reference.write_manpages(tmp_path, "2026-01-01"):
        done = subprocess.run(["man", "--warnings", "-E", "UTF-8", "-l", str(path)], capture_output=True,
                              text=True, env={"PATH": "/usr/bin:/bin", "MANWIDTH": "80", "LC_ALL": "C.UTF-8"},
                              timeout=60)
        assert done.returncode == 0 and done.stderr == "", f"{path.name}: {done.stderr}"
        assert "zkleader" in done.stdout


def test_the_version_has_one_source():
    project = tomllib.loads((REPO / "pyproject.toml").read_text())
    assert "version" not in project["project"] and project["project"]["dynamic"] == ["version"]
    assert project["tool"]["hatch"]["version"]["path"] == "zkleader/__init__.py"
    first = (REPO / "debian" / "changelog").read_text().splitlines()[0]
    assert re.match(rf"^zkleader \({re.escape(__version__)}\) ", first), (
        f"debian/changelog's top entry is {first!r} but zkleader/__init__.py says {__version__}: "
        f"add a changelog entry (dch -v {__version__})")
    done = subprocess.run([sys.executable, "-m", "zkleader", "--version"], capture_output=True, text=True, timeout=30)
    assert done.stdout.strip() == f"zkleader {__version__}"
