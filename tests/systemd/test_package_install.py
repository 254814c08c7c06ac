"""The Debian package, installed as an operator installs it (issue 16, item 2).

Three booted systemd hosts, none with the test venv at /opt/zkleader: each first
loses Debian's python3-structlog and python3-systemd (inside its own overlay: the
real machine keeps them) and the container image's /usr/sbin/policy-rc.d (which
forbids maintainer scripts to start or stop services; real hosts have none), then
gets
``apt-get install ./zkleader_<version>_<arch>.deb`` with every download sent to a dead proxy, so apt must
resolve those dependencies itself, from the .debs in the machine's apt cache
(the fixture fills the cache with ``apt-get install --download-only`` when it is
empty). Then, as the README says: edit /etc/zkleader/zkleader.yaml, ``zkleader
validate``, ``systemctl enable --now zkleader`` on all three; one leader, a handover,
and ``apt-get remove zkleader`` on the leader: the service stops (its job stops
before its node goes), another host takes over, the configuration stays; ``purge``
removes it. The same package elects through etcd too: three fresh hosts install it,
get an ``etcd:`` section pointing at a 3-member etcd on loopback, enable it, elect one
leader and hand over.

The .deb comes from ``scripts/package`` (built once per module; about 45 s). It is
``Architecture: any``: the etcd client's grpcio is a compiled wheel bundled in its venv
(debian/bundled-requirements.txt).
"""

from __future__ import annotations

import os
import re
import secrets
import subprocess
import time
from collections.abc import Callable
from pathlib import Path

import pytest

import harness
from test_e2e import HOSTS, config_yaml

REPO = Path(__file__).resolve().parents[2]
UNIT = "zkleader.service"
# Debian's packages the .deb depends on that a minimal Debian 12 host lacks (kazoo,
# prometheus-client and the etcd client with grpcio and protobuf are bundled in its
# venv: debian/bundled-requirements.txt).
DEPENDENCIES = ("python3-structlog", "python3-systemd")
APT_ENV = {"DEBIAN_FRONTEND": "noninteractive"}
ARCH = subprocess.run(["dpkg", "--print-architecture"], capture_output=True, text=True, check=True).stdout.strip()
VENV_SITE = "/usr/lib/zkleader/lib/python3.11/site-packages"
NO_NETWORK = ("-o", "Acquire::http::Proxy=http://127.0.0.1:9", "-o", "Acquire::https::Proxy=http://127.0.0.1:9",
              "-o", "Acquire::Retries=0")


@pytest.fixture(scope="module")
def deb(systemd_capable) -> Path:
    """dist/zkleader_<version>_<arch>.deb, freshly built, and the dependencies' .debs in
    the apt cache that every host sees through its overlay."""
    built = subprocess.run([str(REPO / "scripts" / "package")], capture_output=True, text=True, timeout=600)
    assert built.returncode == 0, f"scripts/package failed:\n{built.stderr[-4000:]}"
    path = Path(built.stdout.split()[-1])
    assert path.name.endswith(f"_{ARCH}.deb") and path.exists(), built.stdout
    cached = subprocess.run(["apt-get", "install", "-y", "-qq", "--reinstall", "--download-only", *DEPENDENCIES],
                            capture_output=True, text=True, timeout=300, env={"PATH": "/usr/sbin:/usr/bin:/sbin:/bin",
                                                                               **APT_ENV})
    assert cached.returncode == 0, f"could not put {DEPENDENCIES} into the apt cache:\n{cached.stderr}"
    return path


def test_the_package_holds_what_hosts_need(deb: Path, tmp_path: Path):
    """Its files and control data, read from the .deb itself (no host needed)."""
    from zkleader import __version__

    assert deb.name == f"zkleader_{__version__}_{ARCH}.deb"
    field = lambda name: subprocess.run(["dpkg-deb", "-f", str(deb), name], capture_output=True, text=True,
                                        check=True).stdout.strip()
    assert field("Version") == __version__
    assert field("Architecture") == ARCH
    depends = [d.strip().split()[0] for d in field("Depends").split(",")]
    for dep in ("python3-structlog", "python3-systemd", "python3-yaml", "libc6"):
        assert dep in depends, depends
    # bundled, so not from Debian (python3-grpcio 1.51 and python3-protobuf 3.21 cannot serve)
    for dep in ("python3-kazoo", "python3-prometheus-client", "python3-grpcio", "python3-protobuf",
                "python3-typing-extensions"):
        assert dep not in depends, depends
    subprocess.run(["dpkg-deb", "-R", str(deb), str(tmp_path / "x")], check=True)
    root = tmp_path / "x"
    assert (root / "DEBIAN" / "conffiles").read_text().split() == ["/etc/zkleader/zkleader.yaml"]
    assert (root / "etc/zkleader/zkleader.yaml").read_text() == (REPO / "config" / "example.yaml").read_text()
    # README uncompressed: the units' and the catalog's Documentation= point at it
    assert (root / "usr/share/doc/zkleader/README.md").read_text() == (REPO / "README.md").read_text()
    assert (root / "usr/lib/systemd/catalog/zkleader.catalog").read_text() == \
        (REPO / "systemd" / "zkleader.catalog").read_text()
    for page in ("usr/share/man/man8/zkleader.8.gz", "usr/share/man/man5/zkleader.yaml.5.gz"):
        assert (root / page).exists(), page
    link = root / "usr/bin/zkleader"
    assert os.path.normpath(link.parent.relative_to(root).joinpath(link.readlink())) == "usr/lib/zkleader/bin/zkleader"
    # no pip, no setuptools, no byte-code in the venv: apt is how it changes
    site = root / VENV_SITE.lstrip("/")
    assert {p.name for p in site.iterdir() if not p.name.endswith(".dist-info")} == \
        {"zkleader", "kazoo", "prometheus_client", "pyetcd", "grpc", "google", "typing_extensions.py"}, \
        sorted(p.name for p in site.iterdir())
    # exactly zkleader and the pins of debian/bundled-requirements.txt, at those versions
    pins = {line.split("#", 1)[0].strip().lower().replace("-", "_")
            for line in (REPO / "debian" / "bundled-requirements.txt").read_text().splitlines()
            if line.split("#", 1)[0].strip()}
    dists = {p.name.removesuffix(".dist-info").lower().replace("-", "==", 1)
             for p in site.iterdir() if p.name.endswith(".dist-info")}
    assert dists == pins | {f"zkleader=={__version__}"}, (dists, pins)
    assert not list(root.rglob("__pycache__"))
    # the compiled modules are the bundled wheels' only ones; nothing under lib/ is executable
    assert sorted(str(p.parent.relative_to(site)) for p in site.rglob("*.so")) == ["google/_upb", "grpc/_cython"]
    assert not [p for p in (root / "usr/lib/zkleader/lib").rglob("*") if p.is_file() and p.stat().st_mode & 0o111]
    # the units are the repository's, but for where the daemon lives
    for unit in ("zkleader.service", "zkleader@.service"):
        ours = (REPO / "systemd" / unit).read_text().splitlines()
        packaged = (root / "lib/systemd/system" / unit).read_text().splitlines()
        assert len(ours) == len(packaged), unit
        changed = [(a, b) for a, b in zip(ours, packaged) if a != b]
        assert changed and all("/opt/zkleader" in a and "/opt/zkleader" not in b for a, b in changed), changed
        assert any(b.startswith("ExecStart=/usr/bin/zkleader run -c /etc/zkleader/") for _, b in changed), changed
    # the maintainer scripts stop the service on remove, never enable or start it on install
    prerm = (root / "DEBIAN" / "prerm").read_text()
    assert "deb-systemd-invoke stop 'zkleader.service'" in prerm and "zkleader@*.service" in prerm
    # (dh_installsystemd --no-enable: postinst re-enables only a unit the admin had enabled)
    lines = [line.strip() for line in (root / "DEBIAN" / "postinst").read_text().splitlines()
             if line.strip() and not line.strip().startswith("#")]
    enables = [i for i, line in enumerate(lines) if line.startswith("deb-systemd-helper enable")]
    assert enables and all("was-enabled" in lines[i - 1] for i in enables), lines


def journal_events(host: harness.SystemdHost) -> list[dict]:
    """zkleader.service's structured entries, in the journal's order."""
    return [e for e in host.journal_entries("-u", UNIT) if e.get("ZKLEADER_EVENT")]


def wait(pred, timeout: float, what: str, diagnostics=lambda: ""):
    deadline = time.monotonic() + timeout
    while True:
        value = pred()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for: {what}\n{diagnostics()}")
        time.sleep(0.1)


def apt_install(h: harness.SystemdHost, deb: Path) -> None:
    """On a fresh host: apt-get install /pkg/<deb>, its Debian dependencies from the
    apt cache only; then what the package put where (the units neither enabled nor
    started, the venv's libraries, the conffile, the catalog, the docs)."""
    from zkleader import __version__

    assert h.run(["test", "-e", "/opt/zkleader"]).returncode != 0, "a fresh host has no venv"
    gone = h.run(["dpkg", "--purge", *DEPENDENCIES], env=APT_ENV)
    assert gone.returncode == 0, gone.stderr
    h.run(["rm", "-f", "/usr/sbin/policy-rc.d"], check=True)
    # Any download would go to a proxy on the discard port and fail: the
    # dependencies must come from the apt cache (apt's --no-download
    # refuses a local .deb: "Pathname to install is not absolute").
    r = h.run(["apt-get", "install", "-y", *NO_NETWORK, f"/pkg/{deb.name}"], env=APT_ENV, timeout=300)
    assert r.returncode == 0, f"{h.hostname}: apt-get install failed:\n{r.stdout[-3000:]}\n{r.stderr[-3000:]}"
    for dep in DEPENDENCIES:
        assert re.search(rf"Setting up {re.escape(dep)} ", r.stdout), f"apt did not install {dep}:\n{r.stdout}"
    # installed, neither enabled nor started
    assert h.systemctl("is-enabled", UNIT).stdout.strip() == "disabled"
    assert h.systemctl("is-active", UNIT).stdout.strip() == "inactive"
    assert h.run(["zkleader", "--version"]).stdout.strip() == f"zkleader {__version__}"
    # zkleader and the bundled libraries from the package's venv, the rest from Debian
    bundled = ("zkleader", "kazoo", "prometheus_client", "pyetcd", "grpc", "google.protobuf")
    debian = ("structlog", "yaml", "systemd.journal")
    where = h.run(["/usr/lib/zkleader/bin/python", "-c",
                   "import importlib, sys; "
                   "print(*(importlib.import_module(m).__file__ for m in sys.argv[1:]))", *bundled, *debian],
                  check=True).stdout.split()
    assert where[:len(bundled)] == [f"{VENV_SITE}/{m.replace('.', '/')}/__init__.py" for m in bundled], where
    assert all(p.startswith("/usr/lib/python3/dist-packages/") for p in where[len(bundled):]), where
    conffiles = h.run(["dpkg-query", "-W", "-f", "${Conffiles}", "zkleader"], check=True).stdout
    assert "/etc/zkleader/zkleader.yaml" in conffiles
    assert h.read_file("/etc/zkleader/zkleader.yaml") == (REPO / "config" / "example.yaml").read_text()
    # the catalog database was updated (systemd's dpkg trigger): journalctl -x explains events
    catalog = h.journalctl("--list-catalog").stdout
    assert "zkleader on this host became the leader" in catalog
    assert h.run(["test", "-f", "/usr/share/doc/zkleader/README.md"]).returncode == 0
    for page in ("/usr/share/man/man8/zkleader.8.gz", "/usr/share/man/man5/zkleader.yaml.5.gz"):
        assert h.run(["test", "-f", page]).returncode == 0, page
    unit = h.systemctl("cat", UNIT).stdout
    assert "ExecStart=/usr/bin/zkleader run -c /etc/zkleader/zkleader.yaml" in unit


def fresh_hosts(deb: Path, make_host, tmp_path_factory) -> tuple[dict[str, harness.SystemdHost], Path]:
    """Three booted hosts without zkleader, the .deb at /pkg, and /shared, where the
    job (test_e2e.JOB) of every host appends its start and stop lines."""
    shared = tmp_path_factory.mktemp("shared")
    shared.chmod(0o777)
    pkg = tmp_path_factory.mktemp("pkg")
    (pkg / deb.name).write_bytes(deb.read_bytes())
    hosts = {name: make_host(name, boot=False, install=False,
                             binds=[harness.Bind(str(shared), "/shared"),
                                    harness.Bind(str(pkg), "/pkg", readonly=True)])
             for name in HOSTS}
    harness.boot_all(list(hosts.values()))
    return hosts, shared


def job_starts(shared: Path) -> list[tuple[str, int]]:
    """(candidate, fencing token) of every leader job started, in order."""
    path = shared / "events"
    lines = path.read_text().splitlines() if path.exists() else []
    return [(line.split()[1], int(line.split()[2])) for line in lines if line.startswith("start ")]


def diagnostics(hosts: dict[str, harness.SystemdHost], shared: Path) -> str:
    out = []
    for name, h in hosts.items():
        out.append(f"===== {name}\n" + h.journalctl("-u", UNIT, "-n", "30", "-o", "short-precise").stdout)
    out.append(f"===== starts {job_starts(shared)}")
    return "\n".join(out)


def install_and_elect(deb: Path, hosts: dict[str, harness.SystemdHost], config: Callable[[str], str],
                      starts: Callable[[], list[tuple[str, int]]], diag: Callable[[], str]) -> None:
    """apt install on every fresh host, its config written (``config(name)``) and
    validated, ``enable --now``; then exactly one leader job."""
    for h in hosts.values():
        apt_install(h, deb)
    for name, h in hosts.items():
        h.write_file("/etc/zkleader/zkleader.yaml", config(name))
        valid = h.run(["zkleader", "validate"])
        assert valid.returncode == 0, valid.stderr
        r = h.systemctl("enable", "--now", "--no-block", UNIT)
        assert r.returncode == 0, r.stderr
    for name, h in hosts.items():
        wait(lambda: h.systemctl("is-active", UNIT).stdout.strip() == "active", 30,
             f"{name}: {UNIT} active", diag)
        assert h.systemctl("is-enabled", UNIT).stdout.strip() == "enabled"
    wait(starts, 30, "a leader job started", diag)
    time.sleep(1.5)  # time for a wrong second leader to show up
    assert len(starts()) == 1, diag()


def test_apt_install_enable_handover_remove_purge(deb: Path, make_host, tmp_path_factory):
    from zkleader.testing.zkserver import ZooKeeperServer

    election = f"/zkleader-deb/{secrets.token_hex(4)}"
    server = ZooKeeperServer(tmp_path_factory.mktemp("zk-deb"), name="zk-deb")
    try:
        server.start(timeout=60)
        hosts, shared = fresh_hosts(deb, make_host, tmp_path_factory)
        starts = lambda: job_starts(shared)
        diag = lambda: diagnostics(hosts, shared)

        # -- install on fresh hosts, configure, enable: one leader -------------------
        install_and_elect(deb, hosts, lambda name: config_yaml(server.hosts, election, name), starts, diag)
        assert not (shared / "overlaps").exists(), diag()

        # -- a handover: systemctl stop on the leader -------------------------------
        leader = starts()[-1][0]
        r = hosts[leader].systemctl("stop", UNIT, timeout=30)
        assert r.returncode == 0, r.stderr
        wait(lambda: len(starts()) == 2, 10, "another host leads after the stop", diag)
        assert starts()[-1][0] != leader
        assert hosts[leader].systemctl("start", UNIT, timeout=30).returncode == 0

        # -- apt remove on the current leader ----------------------------------------
        leader, token = starts()[-1]
        h = hosts[leader]
        edited = h.read_file("/etc/zkleader/zkleader.yaml")
        # an instance of the template on the same host, alone in an election of its own:
        # dh_installsystemd does not know it, the package's prerm must stop it too
        solo = re.sub(r"(?m)^  command: .*$", '  command: ["sleep", "infinity"]',
                      config_yaml(server.hosts, f"{election}-solo", leader))
        h.write_file("/etc/zkleader/solo.yaml", solo)
        assert h.run(["zkleader", "validate", "-c", "/etc/zkleader/solo.yaml"]).returncode == 0
        assert h.systemctl("start", "zkleader@solo.service", timeout=30).returncode == 0
        assert h.systemctl("is-active", "zkleader@solo.service").stdout.strip() == "active"
        r = h.run(["apt-get", "remove", "-y", "zkleader"], env=APT_ENV, timeout=120)
        assert r.returncode == 0, f"{r.stdout}\n{r.stderr}"
        assert h.systemctl("is-active", UNIT).stdout.strip() == "inactive"
        assert h.systemctl("is-active", "zkleader@solo.service").stdout.strip() == "inactive", \
            "apt remove left an instance of zkleader@.service running"
        assert h.show(UNIT, "Result")["Result"] in ("success", ""), h.show(UNIT, "Result")
        wait(lambda: len(starts()) == 3, 10, "another host leads after apt remove", diag)
        assert starts()[-1][0] != leader and starts()[-1][1] > token
        events = [e["ZKLEADER_EVENT"] for e in journal_events(h)]
        last_stop = len(events) - 1 - events[::-1].index("shutting_down")
        tail = events[last_stop:]
        assert "job_exited" in tail and "handover" in tail and tail[-1] == "stopped", tail
        assert tail.index("job_exited") < tail.index("handover"), f"the node went before the job stopped: {tail}"
        assert "job_killed" not in tail, tail
        # the configuration stays; the package is in state rc
        assert h.read_file("/etc/zkleader/zkleader.yaml") == edited
        assert h.run(["dpkg-query", "-W", "-f", "${db:Status-Abbrev}", "zkleader"]).stdout.strip() == "rc"
        assert h.run(["test", "-e", "/usr/bin/zkleader"]).returncode != 0

        # -- purge removes it ---------------------------------------------------------
        r = h.run(["apt-get", "purge", "-y", "zkleader"], env=APT_ENV, timeout=120)
        assert r.returncode == 0, f"{r.stdout}\n{r.stderr}"
        assert h.run(["test", "-e", "/etc/zkleader/zkleader.yaml"]).returncode != 0
        # what the administrator added is theirs: dpkg leaves it (and so the directory)
        assert h.run(["ls", "/etc/zkleader"], check=True).stdout.split() == ["solo.yaml"]
        assert not (shared / "overlaps").exists(), diag()
    finally:
        server.close()


def etcd_config(endpoints: list[str], election: str, candidate: str) -> str:
    """test_e2e's configuration (its job, stop_timeout 1 s) with an etcd: section in
    place of zookeeper:. lease_ttl 6 s as test_e2e's session timeout: the unit's
    WatchdogSec=2s fits in its margin."""
    section = f"etcd:\n  endpoints: [{', '.join(endpoints)}]\n  lease_ttl: 6\n"
    text = re.sub(r"(?ms)^zookeeper:\n.*?(?=^election:)", section, config_yaml("unused:2181", election, candidate))
    assert text.startswith("etcd:") and "zookeeper" not in text, text
    return text


@pytest.mark.etcd
def test_the_package_elects_on_etcd(deb: Path, make_host, tmp_path_factory, etcd):
    """The bundled etcd client (etcd-sdk-python, grpcio, protobuf) in the installed
    package: three hosts elect through a real 3-member etcd on loopback, one leader
    whose fencing token is its key's create revision, and a handover on stop."""
    import pyetcd

    election = f"/zkleader-deb-etcd/{secrets.token_hex(4)}"
    hosts, shared = fresh_hosts(deb, make_host, tmp_path_factory)
    starts = lambda: job_starts(shared)
    diag = lambda: diagnostics(hosts, shared)
    install_and_elect(deb, hosts, lambda name: etcd_config(etcd.endpoints, election, name), starts, diag)

    # the election is etcd's: three keys under the prefix, the token the lowest one's
    # create revision (read with the test venv's own client)
    host, port = etcd.addresses[0]
    client = pyetcd.client(host=host, port=port, timeout=5)
    try:
        keys = client.get_prefix_response(election + "/", keys_only=True).kvs
    finally:
        client.close()
    candidates = [kv for kv in keys if kv.key.decode().rsplit("/", 1)[1].startswith("zkl-")]
    assert len(candidates) == 3, [kv.key for kv in keys]
    leader, token = starts()[-1]
    first = min(candidates, key=lambda kv: kv.create_revision)
    assert token == first.create_revision, (token, [kv.key for kv in keys])
    # ... held by the lease the leader's daemon reported when it connected
    connected = [e for e in journal_events(hosts[leader]) if e["ZKLEADER_EVENT"] == "connected"]
    assert connected and int(connected[-1]["ZKLEADER_SESSION"], 16) == first.lease, (connected, first)

    # -- a handover: systemctl stop on the leader ------------------------------------
    r = hosts[leader].systemctl("stop", UNIT, timeout=30)
    assert r.returncode == 0, r.stderr
    wait(lambda: len(starts()) == 2, 10, "another host leads after the stop", diag)
    successor, successor_token = starts()[-1]
    assert successor != leader and successor_token > token, starts()
    events = [e["ZKLEADER_EVENT"] for e in journal_events(hosts[leader])]
    tail = events[len(events) - 1 - events[::-1].index("shutting_down"):]
    assert "job_exited" in tail and "handover" in tail and tail[-1] == "stopped", tail
    assert tail.index("job_exited") < tail.index("handover"), f"the key went before the job stopped: {tail}"
    assert not (shared / "overlaps").exists(), diag()
