"""The wheel and the sdist (issue 16, item 3): built by `scripts/package --dist-only`
(`python -m build`, then `twine check --strict`, which the script runs and fails on),
and the wheel installs with its systemd extra into a fresh venv of Debian's python3,
whose `zkleader --version` is the one version.

Needs the network to PyPI (build's isolated environment, the fresh venv's
dependencies), as pip on a host does."""

from __future__ import annotations

import subprocess
import zipfile
from pathlib import Path

import pytest

from zkleader import __version__

REPO = Path(__file__).resolve().parents[1]
DEBIAN_ENV = {"PATH": "/usr/sbin:/usr/bin:/sbin:/bin", "LC_ALL": "C.UTF-8", "HOME": "/root"}


@pytest.fixture(scope="module")
def dists() -> tuple[Path, Path]:
    done = subprocess.run([str(REPO / "scripts" / "package"), "--dist-only"], capture_output=True, text=True,
                          timeout=600)
    assert done.returncode == 0, f"scripts/package --dist-only failed:\n{done.stderr[-3000:]}"
    sdist, wheel = (Path(p) for p in done.stdout.split())
    assert sdist.name == f"zkleader-{__version__}.tar.gz" and wheel.name == f"zkleader-{__version__}-py3-none-any.whl"
    return sdist, wheel


def test_twine_check_is_clean(dists):
    """scripts/package ran it already (and fails without it); here with its output read."""
    twine = REPO / "build" / "tools-venv" / "bin" / "twine"
    done = subprocess.run([str(twine), "check", "--strict", *map(str, dists)], capture_output=True, text=True,
                          timeout=120, env=DEBIAN_ENV)
    assert done.returncode == 0, done.stdout + done.stderr
    assert done.stdout.count("PASSED") == 2, done.stdout
    with zipfile.ZipFile(dists[1]) as z:
        metadata = z.read(f"zkleader-{__version__}.dist-info/METADATA").decode()
    assert "License-Expression: Apache-2.0" in metadata


def test_a_bad_argument_is_one_line():
    done = subprocess.run([str(REPO / "scripts" / "package"), "--deb-only"], capture_output=True, text=True,
                          timeout=60)
    assert done.returncode == 2 and done.stderr.count("\n") == 1 and done.stderr.startswith("package: "), done


def test_the_wheel_holds_the_package_and_its_metadata(dists):
    _, wheel = dists
    with zipfile.ZipFile(wheel) as z:
        names = z.namelist()
        metadata = z.read(f"zkleader-{__version__}.dist-info/METADATA").decode()
        entry_points = z.read(f"zkleader-{__version__}.dist-info/entry_points.txt").decode()
    assert "zkleader/cli.py" in names and "zkleader/reference.py" in names
    assert not [n for n in names if n.startswith("tests/") or "__pycache__" in n]
    assert f"Version: {__version__}" in metadata
    assert "Provides-Extra: systemd" in metadata and "systemd-python>=235; extra == 'systemd'" in metadata
    assert "zkleader = zkleader.cli:main" in entry_points


def bundled_pins() -> dict[str, str]:
    """debian/bundled-requirements.txt: {normalized name: pinned version}."""
    from packaging.requirements import Requirement
    from packaging.utils import canonicalize_name

    pins = {}
    for line in (REPO / "debian" / "bundled-requirements.txt").read_text().splitlines():
        line = line.split("#", 1)[0].strip()
        if line:
            req = Requirement(line)
            (spec,) = req.specifier
            assert spec.operator == "==", f"not a pin: {line}"
            pins[canonicalize_name(req.name)] = spec.version
    return pins


def test_the_bundled_pins_satisfy_what_the_wheel_requires(dists):
    """The .deb's venv holds these pins, not what pip would pick for the wheel: each
    must meet the wheel's own requirement, the etcd extra's included (its client
    and the protobuf its generated code needs), or the package would run a client
    zkleader does not declare. The bundled libraries' own requirements among each
    other too (etcd-sdk-python's grpcio>=1.66.2, grpcio's typing-extensions~=4.12),
    read from the test venv, which holds the same versions."""
    import importlib.metadata
    from packaging.requirements import Requirement
    from packaging.utils import canonicalize_name

    _, wheel = dists
    with zipfile.ZipFile(wheel) as z:
        metadata = z.read(f"zkleader-{__version__}.dist-info/METADATA").decode()
    assert "Provides-Extra: etcd" in metadata
    pins = bundled_pins()
    assert {"kazoo", "prometheus-client", "etcd-sdk-python", "protobuf", "grpcio"} <= set(pins), pins
    checked = set()
    for line in metadata.splitlines():
        if not line.startswith("Requires-Dist: "):
            continue
        req = Requirement(line.removeprefix("Requires-Dist: "))
        name = canonicalize_name(req.name)
        if name in pins and (req.marker is None or req.marker.evaluate({"extra": "etcd"})):
            assert req.specifier.contains(pins[name]), f"bundled {name}=={pins[name]} does not meet {req}"
            checked.add(name)
    assert {"kazoo", "prometheus-client", "etcd-sdk-python", "protobuf"} <= checked, checked
    for name, version in pins.items():
        assert importlib.metadata.version(name) == version, f"the test venv has another {name}"
        for text in importlib.metadata.requires(name) or ():
            req = Requirement(text)
            if canonicalize_name(req.name) in pins and req.marker is None:
                assert req.specifier.contains(pins[canonicalize_name(req.name)]), f"{name}=={version} needs {req}"
                checked.add(canonicalize_name(req.name))
    assert {"grpcio", "typing-extensions"} <= checked, checked


def test_the_sdist_can_build_the_deb(dists):
    """It carries debian/, the units, the catalog, the example configuration and the tests."""
    import tarfile

    sdist, _ = dists
    with tarfile.open(sdist) as t:
        names = {n.split("/", 1)[1] for n in t.getnames() if "/" in n}
    for needed in ("debian/rules", "debian/control", "debian/bundled-requirements.txt", "systemd/zkleader.service",
                   "systemd/zkleader.catalog", "config/example.yaml", "README.md", "tests/test_reference.py"):
        assert needed in names, needed


def test_pip_install_with_the_systemd_extra_into_a_fresh_venv(dists, tmp_path):
    _, wheel = dists
    venv = tmp_path / "venv"
    subprocess.run(["/usr/bin/python3", "-m", "venv", str(venv)], check=True, timeout=120)
    done = subprocess.run([str(venv / "bin" / "pip"), "install", "-q", f"{wheel}[systemd]"],
                          capture_output=True, text=True, timeout=600, env=DEBIAN_ENV)
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-3000:]
    version = subprocess.run([str(venv / "bin" / "zkleader"), "--version"], capture_output=True, text=True,
                             timeout=60)
    assert version.returncode == 0 and version.stdout.strip() == f"zkleader {__version__}", version
    journal = subprocess.run([str(venv / "bin" / "python"), "-c", "import systemd.journal, zkleader.cli"],
                             capture_output=True, text=True, timeout=60)
    assert journal.returncode == 0, journal.stderr
