"""The Debian package, installed as an operator installs it (issue 16, item 2).

Three booted systemd hosts, none with the test venv at /opt/zkleader: each first
loses Debian's python3-structlog and python3-systemd (inside its own overlay: the
real machine keeps them) and the container image's /usr/sbin/policy-rc.d (which
forbids maintainer scripts to start or stop services; real hosts have none), then
gets
``apt-get install ./zkleader_<version>_all.deb`` with every download sent to a dead proxy, so apt must
resolve those dependencies itself, from the .debs in the machine's apt cache
(the fixture fills the cache with ``apt-get install --download-only`` when it is
empty). Then, as the README says: edit /etc/zkleader/zkleader.yaml, ``zkleader
validate``, ``systemctl enable --now zkleader`` on all three; one leader, a handover,
and ``apt-get remove zkleader`` on the leader: the service stops (its job stops
before its node goes), another host takes over, the configuration stays; ``purge``
removes it.

The .deb comes from ``scripts/package`` (built once per module; about 15 s).
"""

from __future__ import annotations

import os
import re
import secrets
import subprocess
import time
from pathlib import Path

import pytest

import harness
from test_e2e import HOSTS, config_yaml

REPO = Path(__file__).resolve().parents[2]
UNIT = "zkleader.service"
# Debian's packages the .deb depends on that a minimal Debian 12 host lacks (kazoo and
# prometheus-client are bundled in its venv: debian/bundled-requirements.txt).
DEPENDENCIES = ("python3-structlog", "python3-systemd")
APT_ENV = {"DEBIAN_FRONTEND": "noninteractive"}
NO_NETWORK = ("-o", "Acquire::http::Proxy=http://127.0.0.1:9", "-o", "Acquire::https::Proxy=http://127.0.0.1:9",
              "-o", "Acquire::Retries=0")


@pytest.fixture(scope="module")
def deb(systemd_capable) -> Path:
    """dist/zkleader_<version>_all.deb, freshly built, and the dependencies' .debs in
    the apt cache that every host sees through its overlay."""
    built = subprocess.run([str(REPO / "scripts" / "package")], capture_output=True, text=True, timeout=600)
    assert built.returncode == 0, f"scripts/package failed:\n{built.stderr[-4000:]}"
    path = Path(built.stdout.split()[-1])
    assert path.name.endswith("_all.deb") and path.exists(), built.stdout
    cached = subprocess.run(["apt-get", "install", "-y", "-qq", "--reinstall", "--download-only", *DEPENDENCIES],
                            capture_output=True, text=True, timeout=300, env={"PATH": "/usr/sbin:/usr/bin:/sbin:/bin",
                                                                               **APT_ENV})
    assert cached.returncode == 0, f"could not put {DEPENDENCIES} into the apt cache:\n{cached.stderr}"
    return path


def test_the_package_holds_what_hosts_need(deb: Path, tmp_path: Path):
    """Its files and control data, read from the .deb itself (no host needed)."""
    from zkleader import __version__

    assert deb.name == f"zkleader_{__version__}_all.deb"
    field = lambda name: subprocess.run(["dpkg-deb", "-f", str(deb), name], capture_output=True, text=True,
                                        check=True).stdout.strip()
    assert field("Version") == __version__
    depends = field("Depends")
    for dep in ("python3-structlog", "python3-systemd", "python3-yaml"):
        assert dep in depends, depends
    assert "python3-kazoo" not in depends and "python3-prometheus-client" not in depends, depends
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
    site = root / "usr/lib/zkleader/lib/python3.11/site-packages"
    assert {p.name for p in site.iterdir() if p.is_dir() and not p.name.endswith(".dist-info")} == \
        {"zkleader", "kazoo", "prometheus_client"}, sorted(p.name for p in site.iterdir())
    assert not list(root.rglob("__pycache__"))
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


def test_apt_install_enable_handover_remove_purge(deb: Path, make_host, tmp_path_factory):
    from zkleader import __version__
    from zkleader.testing.zkserver import ZooKeeperServer

    shared = tmp_path_factory.mktemp("shared")
    shared.chmod(0o777)
    pkg = tmp_path_factory.mktemp("pkg")
    (pkg / deb.name).write_bytes(deb.read_bytes())
    election = f"/zkleader-deb/{secrets.token_hex(4)}"
    server = ZooKeeperServer(tmp_path_factory.mktemp("zk-deb"), name="zk-deb")
    try:
        server.start(timeout=60)
        hosts = {name: make_host(name, boot=False, install=False,
                                 binds=[harness.Bind(str(shared), "/shared"),
                                        harness.Bind(str(pkg), "/pkg", readonly=True)])
                 for name in HOSTS}
        harness.boot_all(list(hosts.values()))

        def starts() -> list[tuple[str, int]]:
            path = shared / "events"
            lines = path.read_text().splitlines() if path.exists() else []
            return [(line.split()[1], int(line.split()[2])) for line in lines if line.startswith("start ")]

        def diagnostics() -> str:
            out = []
            for name, h in hosts.items():
                out.append(f"===== {name}\n" + h.journalctl("-u", UNIT, "-n", "30", "-o", "short-precise").stdout)
            out.append(f"===== starts {starts()}")
            return "\n".join(out)

        # -- install on fresh hosts ---------------------------------------------
        for name, h in hosts.items():
            assert h.run(["test", "-e", "/opt/zkleader"]).returncode != 0, "a fresh host has no venv"
            gone = h.run(["dpkg", "--purge", *DEPENDENCIES], env=APT_ENV)
            assert gone.returncode == 0, gone.stderr
            h.run(["rm", "-f", "/usr/sbin/policy-rc.d"], check=True)
            # Any download would go to a proxy on the discard port and fail: the
            # dependencies must come from the apt cache (apt's --no-download
            # refuses a local .deb: "Pathname to install is not absolute").
            r = h.run(["apt-get", "install", "-y", *NO_NETWORK, f"/pkg/{deb.name}"], env=APT_ENV, timeout=300)
            assert r.returncode == 0, f"{name}: apt-get install failed:\n{r.stdout[-3000:]}\n{r.stderr[-3000:]}"
            for dep in DEPENDENCIES:
                assert re.search(rf"Setting up {re.escape(dep)} ", r.stdout), f"apt did not install {dep}:\n{r.stdout}"
            # installed, neither enabled nor started
            assert h.systemctl("is-enabled", UNIT).stdout.strip() == "disabled"
            assert h.systemctl("is-active", UNIT).stdout.strip() == "inactive"
            assert h.run(["zkleader", "--version"]).stdout.strip() == f"zkleader {__version__}"
            # zkleader and the bundled libraries from the package's venv, the rest from Debian
            where = h.run(["/usr/lib/zkleader/bin/python", "-c",
                           "import zkleader, kazoo, prometheus_client, structlog, yaml, systemd.journal as j; "
                           "print(*(m.__file__ for m in (zkleader, kazoo, prometheus_client, structlog, yaml, j)))"],
                          check=True).stdout.split()
            venv = "/usr/lib/zkleader/lib/python3.11/site-packages"
            assert where[:3] == [f"{venv}/zkleader/__init__.py", f"{venv}/kazoo/__init__.py",
                                 f"{venv}/prometheus_client/__init__.py"], where
            assert all(p.startswith("/usr/lib/python3/dist-packages/") for p in where[3:]), where
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

        # -- configure and enable ---------------------------------------------------
        for name, h in hosts.items():
            h.write_file("/etc/zkleader/zkleader.yaml", config_yaml(server.hosts, election, name))
            valid = h.run(["zkleader", "validate"])
            assert valid.returncode == 0, valid.stderr
            r = h.systemctl("enable", "--now", "--no-block", UNIT)
            assert r.returncode == 0, r.stderr
        for name, h in hosts.items():
            wait(lambda: h.systemctl("is-active", UNIT).stdout.strip() == "active", 30,
                 f"{name}: {UNIT} active", diagnostics)
            assert h.systemctl("is-enabled", UNIT).stdout.strip() == "enabled"
        wait(starts, 20, "a leader job started", diagnostics)
        time.sleep(1.5)  # time for a wrong second leader to show up
        assert len(starts()) == 1, diagnostics()
        assert not (shared / "overlaps").exists(), diagnostics()

        # -- a handover: systemctl stop on the leader -------------------------------
        leader = starts()[-1][0]
        r = hosts[leader].systemctl("stop", UNIT, timeout=30)
        assert r.returncode == 0, r.stderr
        wait(lambda: len(starts()) == 2, 10, "another host leads after the stop", diagnostics)
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
        wait(lambda: len(starts()) == 3, 10, "another host leads after apt remove", diagnostics)
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
        assert not (shared / "overlaps").exists(), diagnostics()
    finally:
        server.close()
