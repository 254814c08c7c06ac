"""Fixtures for the tests that boot real systemd hosts (tests/systemd/harness.py).

  systemd_capable   session  skips when the machine cannot boot a SystemdHost
  zkleader_venv     session  the /opt/zkleader tree every host bind-mounts
  make_host         function factory: make_host(hostname, boot=True, **kw) -> SystemdHost;
                             every host made is closed at teardown (and close()
                             verifies nothing is left mounted or running)
  real_tmp_canary   function a file in the real /tmp, checked after the test

Every test in this directory carries the ``systemd`` marker.
"""

from __future__ import annotations

import os
import secrets
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent))

import harness  # noqa: E402


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line("markers", "systemd: boots a real systemd in private namespaces")


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    here = Path(__file__).resolve().parent
    for item in items:
        if here in Path(str(item.fspath)).resolve().parents:
            item.add_marker(pytest.mark.systemd)


@pytest.fixture(scope="session")
def systemd_capable() -> None:
    harness.skip_unless_available()


@pytest.fixture(scope="session")
def zkleader_venv(systemd_capable, tmp_path_factory: pytest.TempPathFactory) -> Path:
    return harness.build_zkleader_venv(tmp_path_factory.mktemp("opt-zkleader") / "zkleader")


@pytest.fixture
def make_host(systemd_capable, zkleader_venv: Path, request: pytest.FixtureRequest):
    hosts: list[harness.SystemdHost] = []

    def make(hostname: str, *, boot: bool = True, install: bool = True, **kw) -> harness.SystemdHost:
        if install:
            kw.setdefault("zkleader_venv", zkleader_venv)
        host = harness.SystemdHost(hostname, **kw)
        hosts.append(host)
        if boot:
            host.boot()
        return host

    yield make
    errors = []
    for host in reversed(hosts):
        try:
            host.close()
        except Exception as err:  # report all, close all
            errors.append(err)
    if errors:
        raise errors[0]


@pytest.fixture
def real_tmp_canary():
    """A file in the machine's real /tmp; the test fails if it is gone afterwards
    (a systemd that saw the real root would run tmpfiles on it)."""
    path = Path("/tmp") / f"zkleader-canary-{os.getpid()}-{secrets.token_hex(4)}"
    token = secrets.token_hex(8)
    path.write_text(token)
    yield path
    assert path.exists(), f"the real /tmp lost {path}: a booted systemd touched the real root"
    assert path.read_text() == token
    path.unlink()
