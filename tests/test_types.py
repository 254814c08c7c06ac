"""The type hints are checked: mypy over the whole package (core, shells, the
simulation and the test harness in zkleader/testing), with the settings in
pyproject.toml, in both passes of scripts/test (PyPI's libraries and Debian's)."""

from __future__ import annotations

import subprocess
import sys

from zkleader.testing.daemons import REPO


def test_mypy_finds_nothing_in_the_package() -> None:
    done = subprocess.run([sys.executable, "-m", "mypy", "--cache-dir", "/dev/null", "zkleader"],
                          cwd=REPO, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stdout[-4000:] + done.stderr[-2000:]
