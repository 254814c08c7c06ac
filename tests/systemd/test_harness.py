"""The SystemdHost harness itself: boots, answers, installs zkleader, and leaves
the real machine as it found it."""

from __future__ import annotations

import os
import socket
import subprocess
import time
from pathlib import Path

import pytest

import harness


def _our_mounts(host: harness.SystemdHost) -> list[str]:
    mnt = str(host.workdir / "mnt")
    with open("/proc/mounts") as f:
        return [line for line in f if mnt in line]


def test_boot_one_host(make_host, real_tmp_canary: Path, capsys):
    real_hostname = socket.gethostname()
    host = make_host("zk-harness-1")
    print(f"\nboot time zk-harness-1: {host.boot_seconds:.2f}s")
    pid = host.pid
    assert pid is not None

    # systemd is PID 1 of its own namespaces and works through systemctl
    assert host.run(["cat", "/proc/1/comm"], check=True).stdout.strip() == "systemd"
    state = host.systemctl("is-system-running").stdout.strip()
    failed = host.systemctl("--failed", "--plain", "--no-legend").stdout
    assert state == "running", f"state {state!r}, failed units:\n{failed}"
    assert host.systemctl("is-active", "systemd-journald.service").stdout.strip() == "active"

    # its own hostname; the machine's is untouched
    assert host.run(["hostname"], check=True).stdout.strip() == "zk-harness-1"
    assert host.run(["cat", "/etc/hostname"], check=True).stdout.strip() == "zk-harness-1"
    assert socket.gethostname() == real_hostname

    # a fresh /tmp, and the real one is not visible inside
    assert host.run(["test", "-e", str(real_tmp_canary)]).returncode != 0
    host.write_file("/tmp/inside", "only in the host\n")
    assert not Path("/tmp/inside").exists() or Path("/tmp/inside").read_text() != "only in the host\n"

    # files written go to the overlay, not to the real disk
    host.write_file("/etc/zkleader-harness-test/probe.txt", "hello\n", mode=0o600)
    assert host.read_file("/etc/zkleader-harness-test/probe.txt") == "hello\n"
    assert not Path("/etc/zkleader-harness-test").exists()

    # the journal: a line logged inside comes back as a parsed entry
    host.run(["systemd-cat", "-t", "harness-probe", "echo", "hello journal"], check=True)
    deadline = time.monotonic() + 5
    entries: list[dict] = []
    while time.monotonic() < deadline and not entries:
        entries = host.journal_entries("SYSLOG_IDENTIFIER=harness-probe")
        time.sleep(0.05)
    assert [e["MESSAGE"] for e in entries] == ["hello journal"]
    assert entries[0]["_HOSTNAME"] == "zk-harness-1"

    # masked: nothing of the image's own services runs
    for unit in ("getty@tty1.service", "console-getty.service", "postgresql.service", "systemd-timesyncd.service"):
        assert host.systemctl("is-active", unit).stdout.strip() != "active", unit

    # the namespaces share the machine's network: loopback is the same
    with socket.socket() as srv:
        srv.bind(("127.0.0.1", 0))
        srv.listen(1)
        port = srv.getsockname()[1]
        r = host.run(["/opt/zkleader/bin/python", "-c",
                      f"import socket; socket.create_connection(('127.0.0.1', {port}), 2).close()"])
        assert r.returncode == 0, r.stderr

    host.close()
    assert not _our_mounts(host), "mounts of the host left behind"
    assert not Path(f"/proc/{pid}").exists(), "the host's PID 1 survived close()"
    with open("/proc/mounts") as f:
        assert not [line for line in f if " overlay " in line and str(host.workdir) in line]
    assert real_tmp_canary.exists()


def test_close_kills_everything_and_unmounts(make_host):
    host = make_host("zk-harness-2", install=False)
    host.run(["systemd-run", "--unit=sleeper", "sleep", "600"], check=True)
    main = int(host.show("sleeper.service", "MainPID")["MainPID"])
    assert main > 0
    # the sleeper's pid as seen from outside: find it through its cgroup
    cgroups = list(host._cgroups)
    outside = set()
    for cg in cgroups:
        for dirpath, _dirs, files in os.walk(cg):
            if "cgroup.procs" in files:
                outside |= {int(p) for p in Path(dirpath, "cgroup.procs").read_text().split()}
    assert len(outside) >= 3  # systemd, journald, sleep
    host.close()
    for pid in outside:
        assert not Path(f"/proc/{pid}").exists(), f"pid {pid} of the host survived"
    for cg in cgroups:
        assert not cg.exists(), f"cgroup {cg} left behind"
    assert not _our_mounts(host)


def test_zkleader_installed_like_on_a_real_host(make_host):
    """/opt/zkleader works from a sandboxed service: PrivateTmp and ProtectHome
    hide /tmp and /root, where a clone of the repo may live."""
    host = make_host("zk-harness-3")
    r = host.run([
        "systemd-run", "--wait", "--pipe", "--quiet", "--collect",
        "-p", "PrivateTmp=yes", "-p", "ProtectHome=yes", "-p", "ProtectSystem=strict",
        "-p", "NoNewPrivileges=yes",
        "/opt/zkleader/bin/python", "-c",
        "import sys, kazoo, yaml, structlog, systemd.daemon, systemd.journal;"
        "import zkleader, zkleader.notify, zkleader.journal;"
        "print(sys.prefix); print(zkleader.__file__)",
    ], timeout=60)
    assert r.returncode == 0, r.stderr + r.stdout
    prefix, module = r.stdout.split()
    assert prefix == "/opt/zkleader"
    assert module.startswith("/opt/zkleader/lib/")
    r = host.run(["/opt/zkleader/bin/zkleader", "--version"])
    assert r.returncode == 0 and "zkleader" in (r.stdout + r.stderr), r.stderr
    # read-only, like a package-managed install
    assert host.run(["touch", "/opt/zkleader/x"]).returncode != 0


def test_unavailable_reason_is_none_here():
    """On the development machine and CI (root, util-linux, systemd) the harness
    must run, not skip: a silent skip would hide every systemd test."""
    reason = harness.unavailable_reason()
    if os.geteuid() != 0:
        pytest.skip("not root")
    assert reason is None


def test_refuses_dangerous_bind_targets(tmp_path):
    for target in ("/", "/tmp", "/run", "/proc"):
        host = harness.SystemdHost("zk-harness-x", binds=[harness.Bind(str(tmp_path), target)],
                                   workdir=tmp_path / "w")
        (tmp_path / "w").mkdir(exist_ok=True)
        with pytest.raises(ValueError):
            host.start()
        assert host.proc is None
