"""docker-compose.yml without Docker: everything it names exists, the zkleader configs
it mounts validate, and their ZooKeeper hosts are the compose services and ports.
When Debian's docker-compose is installed, `docker-compose config` must accept it."""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from zkleader import config as zconfig

REPO = Path(__file__).resolve().parent.parent
COMPOSE = REPO / "docker-compose.yml"
MOUNT = "/etc/zkleader/zkleader.yaml"


def compose() -> dict:
    return yaml.safe_load(COMPOSE.read_text())


def services(kind: str) -> dict[str, dict]:
    """'zookeeper' or 'zkleader' services, told apart by image and build."""
    found = {}
    for name, service in compose()["services"].items():
        is_zk = str(service.get("image", "")).startswith("zookeeper")
        if (kind == "zookeeper") == is_zk:
            found[name] = service
    return found


def mounted_config(service: dict) -> Path:
    for volume in service.get("volumes", []):
        source, target, *_ = volume.split(":")
        if target == MOUNT:
            return (REPO / source).resolve()
    raise AssertionError(f"no volume mounted at {MOUNT}: {service.get('volumes')}")


def zookeeper_servers() -> dict[str, int]:
    """Service name -> client port, from the ensemble's ZOO_SERVERS."""
    ports: dict[str, int] = {}
    for name, service in services("zookeeper").items():
        spec = service["environment"]["ZOO_SERVERS"]
        for entry in spec.split():
            match = re.fullmatch(r"server\.(\d+)=([\w.-]+):(\d+):(\d+)(?::\w+)?;(?:[\d.]+:)?(\d+)", entry)
            assert match, f"{name}: cannot read ZOO_SERVERS entry {entry!r}"
            ports[match.group(2)] = int(match.group(5))
    return ports


def test_the_compose_file_has_three_zookeepers_and_three_zkleaders() -> None:
    assert len(services("zookeeper")) == 3
    assert len(services("zkleader")) == 3


def test_every_file_it_names_exists() -> None:
    for name, service in compose()["services"].items():
        build = service.get("build")
        if build is not None:
            context = REPO / (build if isinstance(build, str) else build.get("context", "."))
            dockerfile = context / (build.get("dockerfile", "Dockerfile") if isinstance(build, dict) else "Dockerfile")
            assert context.is_dir(), name
            assert dockerfile.is_file(), name
        for volume in service.get("volumes", []):
            source = volume.split(":")[0]
            if source.startswith((".", "/")):
                assert (REPO / source).exists(), f"{name}: {source} does not exist"


def test_the_dockerfile_builds_from_a_debian_python_image_and_copies_files_that_exist() -> None:
    text = (REPO / "Dockerfile").read_text()
    base = re.search(r"^FROM\s+(\S+)", text, re.M)
    assert base and re.fullmatch(r"python:3\.1\d-slim-(bookworm|trixie)", base.group(1)), base
    for line in re.findall(r"^COPY\s+(.+)$", text, re.M):
        *sources, _target = line.split()
        for source in sources:
            assert (REPO / source).exists(), f"COPY {source}: not in the repository"
    ignored = (REPO / ".dockerignore").read_text().splitlines()
    for source in ("pyproject.toml", "README.md", "zkleader/"):
        assert f"!{source}" in ignored, f".dockerignore drops {source}"
    assert '"zkleader"' in text and "ENTRYPOINT" in text


def test_every_zkleader_service_runs_its_mounted_config() -> None:
    for name, service in services("zkleader").items():
        assert service["command"] == ["run", "-c", MOUNT], name
        assert mounted_config(service).is_file(), name
        assert set(service["depends_on"]) == set(services("zookeeper")), name


@pytest.mark.parametrize("host", ["host-1", "host-2", "host-3"])
def test_each_config_validates_with_zkleader_validate(host: str) -> None:
    path = mounted_config(services("zkleader")[host])
    result = subprocess.run([sys.executable, "-m", "zkleader", "validate", "-c", str(path)],
                            capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    assert "valid" in result.stdout


def test_config_hosts_are_the_compose_zookeepers_and_their_client_ports() -> None:
    ensemble = zookeeper_servers()
    assert set(ensemble) == set(services("zookeeper")), "ZOO_SERVERS must name exactly the zookeeper services"
    expected = {f"{name}:{port}" for name, port in ensemble.items()}
    candidates = set()
    paths = set()
    for name, service in services("zkleader").items():
        loaded = zconfig.load(str(mounted_config(service)))
        assert set(loaded.zookeeper.hosts) == expected, name
        assert loaded.election.candidate == service["hostname"] == name
        candidates.add(loaded.election.candidate)
        paths.add(loaded.election.path)
    assert len(candidates) == 3, "each host needs its own candidate name"
    assert len(paths) == 1, "all three must be on one election"


def test_the_zookeeper_members_agree_and_ids_are_distinct() -> None:
    zks = services("zookeeper")
    specs = {service["environment"]["ZOO_SERVERS"] for service in zks.values()}
    assert len(specs) == 1
    ids = {int(service["environment"]["ZOO_MY_ID"]) for service in zks.values()}
    assert ids == {1, 2, 3}
    for name, service in zks.items():
        spec = service["environment"]["ZOO_SERVERS"].split()
        mine = [e for e in spec if e.split("=", 1)[1].startswith(name + ":")]
        assert mine == [f"server.{service['environment']['ZOO_MY_ID']}={mine[0].split('=', 1)[1]}"], (name, mine)


def test_the_session_timeout_fits_the_official_images_tick_time() -> None:
    """zookeeper:3.8 runs with tickTime 2000 ms, so the server grants 4..40 s."""
    for service in services("zkleader").values():
        timeout = zconfig.load(str(mounted_config(service))).zookeeper.session_timeout
        assert 4.0 <= timeout <= 40.0


@pytest.mark.skipif(shutil.which("docker-compose") is None, reason="Debian's docker-compose is not installed")
def test_docker_compose_accepts_the_file() -> None:
    result = subprocess.run(["docker-compose", "-f", str(COMPOSE), "config", "-q"], capture_output=True, text=True,
                            timeout=60, cwd=REPO)
    assert result.returncode == 0, result.stderr
