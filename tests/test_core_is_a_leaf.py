"""The core decides and does nothing else: importing it must load no I/O library."""

from __future__ import annotations

import json
import subprocess
import sys


def test_importing_the_core_loads_neither_kazoo_nor_yaml_nor_structlog() -> None:
    probe = (
        "import importlib, json, pkgutil, sys\n"
        "import zkleader.core\n"
        "for module in pkgutil.iter_modules(zkleader.core.__path__):\n"
        "    importlib.import_module('zkleader.core.' + module.name)\n"
        "print(json.dumps(sorted(sys.modules)))\n"
    )
    loaded = json.loads(subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True,
                                       check=True).stdout)
    outside = sorted(m for m in loaded if m.split(".")[0] in {"kazoo", "yaml", "structlog", "prometheus_client",
                                                               "systemd"})
    assert outside == []
    ours = sorted(m for m in loaded if m.startswith("zkleader.") and not m.startswith("zkleader.core"))
    assert ours == []


def test_every_core_module_imports_first() -> None:
    """The step modules import each other; a name imported from a module still being
    initialised breaks whichever import comes first (bench/control.py met one,
    importing core.preference first: session.py's `from .leave import LeaveKind`)."""
    import pkgutil

    import zkleader.core

    names = [m.name for m in pkgutil.iter_modules(zkleader.core.__path__)]
    for name in names:
        done = subprocess.run([sys.executable, "-c", f"import zkleader.core.{name}"], capture_output=True, text=True)
        assert done.returncode == 0, f"zkleader.core.{name}: {done.stderr.strip().splitlines()[-1:]}"
