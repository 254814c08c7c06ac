"""Boot a real systemd as PID 1 of private namespaces: one simulated host each.

Read /work/shared/notes/real-systemd.md first. The one rule that must never be
broken: a booted systemd must never see the real root file system, because
systemd-tmpfiles (and friends) then act on the real disk (it once emptied the
real /tmp). The boot script below therefore, inside its own mount namespace with
private propagation:

* mounts a fresh tmpfs, and on it an overlay of / whose upper and work
  directories live on that tmpfs (every write of the host lands in RAM and
  vanishes with the namespace);
* mounts fresh tmpfs on <root>/tmp and <root>/run, proc on <root>/proc and
  recursive binds of /sys and /dev;
* checks that each of those really is a mount point (``set -e`` plus
  ``mountpoint -q``: if anything failed, the script exits before systemd runs,
  and PID 1 exiting tears the namespaces down);
* only then chroots into the overlay and execs /lib/systemd/systemd.

Extra safety on top of the notes (each makes the booted systemd touch less of the
real machine, none is needed for the tests to pass):

* ``container=zkleader-harness`` in PID 1's environment: systemd then knows it
  is not the machine's init (it does not read the kernel command line, does not
  touch the hardware watchdog, the clock or /dev/console) and units with
  ConditionVirtualization=!container stay off.
* /sys (the top sysfs mount only) and /proc/sys are read-only, so no unit can
  change the real kernel's tunables (sysctl is global, and we share the real
  network namespace).
* the v1 cgroup controller hierarchies (cpu, memory, pids, ...) are unmounted in
  the private namespace; only the name=systemd and the unified hierarchies stay.
  Each host's PID 1 is first moved into its own cgroup
  (``zkleader-harness/<host>-<random>`` in those two hierarchies), which
  systemd takes as its root: three hosts would otherwise all manage the same
  ``/system.slice/zkleader.service`` cgroup. Leaving the controllers out keeps
  the hosts' processes inside the memory/cpu limits the machine put us in.
* everything the image would start that a test host does not need is masked
  (gettys, postgresql, timers, sysctl, modules, binfmt, pstore, timesyncd, ...),
  including whatever the image enabled in /etc/systemd/system/*.wants.

The network namespace is shared with the real machine on purpose: loopback
ZooKeeper servers started by the tests are reachable from every host.

Ending a host: SIGKILL to the namespace's PID 1 (the pid of the child that our
own `unshare` forked, seen from outside). The kernel kills everything in the PID
namespace; the mount namespace and with it every mount and the tmpfs upper go
away. We then wait for our `unshare` to exit, remove the (empty) cgroups we
created, and check that no mount of ours is visible in /proc/mounts.

How zkleader is installed inside a host: see `build_zkleader_venv`.
"""

from __future__ import annotations

import json
import os
import secrets
import shlex
import shutil
import signal
import stat
import subprocess
import sys
import sysconfig
import tempfile
import time
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable, Sequence

REPO = Path(__file__).resolve().parents[2]
SYSTEMD = "/lib/systemd/system"
SYSTEMD_BIN = "/lib/systemd/systemd"
TARGET = "zkleader-testhost.target"
CGROUP_ROOTS = ("/sys/fs/cgroup/systemd", "/sys/fs/cgroup/unified", "/sys/fs/cgroup")
CGROUP_PARENT = "zkleader-harness"
INSTALL_PREFIX = "/opt/zkleader"

# Units a test host must not run. Most are not even pulled in by our small
# target; masking them makes sure nothing pulls them in later either.
MASKED_UNITS = (
    # consoles: a getty on the real console would fight with the machine's
    "getty@.service", "serial-getty@.service", "console-getty.service",
    "container-getty@.service", "getty-static.service", "getty.target",
    # touch global kernel state or real devices
    "systemd-sysctl.service", "systemd-modules-load.service", "kmod-static-nodes.service",
    "systemd-binfmt.service", "proc-sys-fs-binfmt_misc.automount",
    "proc-sys-fs-binfmt_misc.mount", "systemd-tmpfiles-setup-dev.service",
    "systemd-udevd.service", "systemd-udev-trigger.service", "systemd-udev-settle.service",
    "systemd-hwdb-update.service", "systemd-random-seed.service", "systemd-pstore.service",
    "systemd-timesyncd.service", "systemd-pcrphase.service", "systemd-pcrphase-sysinit.service",
    "systemd-repart.service", "systemd-firstboot.service", "systemd-machine-id-commit.service",
    "systemd-remount-fs.service", "systemd-fsck-root.service",
    "sys-kernel-config.mount", "sys-kernel-debug.mount", "sys-kernel-tracing.mount",
    "sys-fs-fuse-connections.mount", "dev-hugepages.mount",
    "systemd-journald-audit.socket",
    "systemd-ask-password-console.path", "systemd-ask-password-wall.path",
    # services the image or a package may have: none belongs on a test host
    "systemd-logind.service", "systemd-networkd.service", "systemd-networkd.socket",
    "systemd-networkd-wait-online.service", "systemd-resolved.service",
    "postgresql.service", "postgresql@.service",
    "zookeeper.service", "ssh.service", "ssh.socket", "sshd.service", "cron.service",
    "anacron.service", "anacron.timer", "rsyslog.service", "syslog.socket",
    "e2scrub_reap.service", "e2scrub_all.timer", "apt-daily.timer",
    "apt-daily-upgrade.timer", "dpkg-db-backup.timer", "fstrim.timer", "man-db.timer",
    "systemd-tmpfiles-clean.timer",
)

TARGET_UNIT = """\
[Unit]
Description=zkleader test host (tests/systemd/harness.py)
Documentation=file:///work/shared/notes/real-systemd.md
# sysinit.target is pulled in by every service anyway (default dependencies);
# sockets.target brings journald's and D-Bus's sockets (systemd-run --wait and
# systemd-analyze need the bus). No multi-user.target, no timers.
Requires=sysinit.target sockets.target
After=sysinit.target sockets.target
AllowIsolate=yes
"""

BOOT_SCRIPT = r"""
set -eu
umask 022  # the overlay's root directory gets its mode from the upper dir
R="$ZKH_MNT"
mount -t tmpfs -o mode=0755 zkh-root "$R"
mkdir "$R/upper" "$R/work" "$R/root"
mount -t overlay zkh-overlay -o "lowerdir=/,upperdir=$R/upper,workdir=$R/work" "$R/root"
mount -t proc proc "$R/root/proc"
mount --rbind /sys "$R/root/sys"
mount --rbind /dev "$R/root/dev"
mount -t tmpfs -o mode=1777 zkh-tmp "$R/root/tmp"
mount -t tmpfs -o mode=0755 zkh-run "$R/root/run"
for m in proc sys dev tmp run; do mountpoint -q "$R/root/$m"; done
# Read-only /sys (top mount only; the cgroup mounts below it stay writable)
# and /proc/sys: the host cannot change the real kernel's tunables.
mount -o remount,bind,ro "$R/root/sys"
mount --bind "$R/root/proc/sys" "$R/root/proc/sys"
mount -o remount,bind,ro "$R/root/proc/sys"
# Keep only the name=systemd and unified cgroup hierarchies (see module doc).
for c in "$R"/root/sys/fs/cgroup/*; do
    case "${c##*/}" in systemd|unified) ;; *) mountpoint -q "$c" && umount -l "$c" ;; esac
done
# Our own cgroup, which this systemd will take as its root.
for c in $ZKH_CGROUPS; do echo 0 > "$c/cgroup.procs"; done
cp -a "$ZKH_STAGE/." "$R/root/"
while read -r src dst ro; do
    [ -n "$src" ] || continue
    mkdir -p "$R/root$dst"
    mount --bind "$src" "$R/root$dst"
    [ "$ro" = ro ] && mount -o remount,bind,ro "$R/root$dst"
done < "$ZKH_BINDS"
hostname "$ZKH_HOSTNAME"
exec env -i container=zkleader-harness PATH=/usr/sbin:/usr/bin:/sbin:/bin \
    chroot "$R/root" /lib/systemd/systemd --system --unit=$ZKH_TARGET \
    --log-target=journal-or-kmsg
"""


class HarnessUnavailable(RuntimeError):
    """The machine cannot boot a systemd in namespaces (not a test failure)."""


def unavailable_reason() -> str | None:
    """Why this machine cannot run SystemdHost, or None if it can."""
    if sys.platform != "linux":
        return "SystemdHost needs Linux"
    if os.geteuid() != 0:
        return "SystemdHost needs root (mount/pid namespaces, overlayfs, chroot)"
    for tool in ("unshare", "nsenter", "chroot", "mountpoint", "env"):
        if shutil.which(tool) is None:
            return f"SystemdHost needs {tool}(1) (util-linux/coreutils)"
    if not os.access(SYSTEMD_BIN, os.X_OK):
        return f"SystemdHost needs systemd installed ({SYSTEMD_BIN} is missing)"
    if not any(os.path.exists(f"{c}/cgroup.procs") for c in CGROUP_ROOTS):
        return "SystemdHost needs a mounted cgroup file system"
    return None


def skip_unless_available() -> None:
    """pytest.skip (with the reason) where the machine cannot do it."""
    reason = unavailable_reason()
    if reason:
        import pytest

        pytest.skip(reason)


# ---------------------------------------------------------------------------
# zkleader installation
# ---------------------------------------------------------------------------

def build_zkleader_venv(dest: Path, *, source_purelib: str | None = None,
                        repo: Path = REPO) -> Path:
    """Build, once per test session, the tree that each host sees at /opt/zkleader.

    The daemon must run inside a host as on a real one: Debian's /usr/bin/python3,
    a venv under /opt (units use PrivateTmp/ProtectHome, so nothing may live
    under /tmp or /root, where a CI clone may be). We build a relocatable venv
    in a staging directory (which may itself be under /tmp) and every host
    bind-mounts it read-only at /opt/zkleader before its systemd starts: a bind
    mount made before chroot is a mount of its own, which PrivateTmp and
    ProtectHome do not hide.

    Why this way and not pip: building a wheel of the repo needs setuptools>=77
    with build isolation, i.e. the network; the dependencies are already
    installed, compiled against this machine's libsystemd, in the venv the tests
    run from. So the tree is: pyvenv.cfg (home=/usr/bin), bin/python ->
    /usr/bin/python3, a copy of the test venv's site-packages minus the
    editable-install hook (which points into the clone), a copy of the repo's
    zkleader/ package (byte-compiled, since the mount is read-only), and a
    bin/zkleader console script whose shebang is /opt/zkleader/bin/python. One
    copy serves all hosts; read-only like a package-managed install.
    """
    dest = Path(dest)
    if dest.exists():
        shutil.rmtree(dest)
    ver = f"python{sys.version_info.major}.{sys.version_info.minor}"
    site = dest / "lib" / ver / "site-packages"
    (dest / "bin").mkdir(parents=True)
    src_site = Path(source_purelib or sysconfig.get_paths()["purelib"])
    if sys.prefix == sys.base_prefix and source_purelib is None:
        raise HarnessUnavailable("run the tests from the project venv (.venv/bin/python)")

    def ignore(dirpath: str, names: list[str]) -> set[str]:
        skip = {n for n in names if n.startswith("__editable__") or n == "zkleader"}
        if Path(dirpath) == src_site:
            skip |= {n for n in names if n.startswith("zkleader-") and n.endswith(".dist-info")}
        return skip

    shutil.copytree(src_site, site, symlinks=True, ignore=ignore)
    shutil.copytree(repo / "zkleader", site / "zkleader",
                    ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
    subprocess.run([sys.executable, "-m", "compileall", "-q", str(site / "zkleader")],
                   check=False, stdout=subprocess.DEVNULL)
    (dest / "lib64").symlink_to("lib")
    (dest / "bin" / "python").symlink_to("/usr/bin/python3")
    (dest / "bin" / "python3").symlink_to("python")
    (dest / "pyvenv.cfg").write_text(
        "home = /usr/bin\ninclude-system-site-packages = false\n"
        f"version = {sys.version_info.major}.{sys.version_info.minor}.{sys.version_info.micro}\n"
    )
    script = dest / "bin" / "zkleader"
    script.write_text(
        f"#!{INSTALL_PREFIX}/bin/python\n"
        "import sys\n"
        "from zkleader.cli import main\n"
        "if __name__ == '__main__':\n"
        "    sys.exit(main())\n"
    )
    script.chmod(0o755)
    _normalize_modes(dest)
    return dest


def _normalize_modes(top: Path) -> None:
    """Directories at least 0755, files at least 0444, whatever the umask was."""
    os.chmod(top, stat.S_IMODE(os.stat(top).st_mode) | 0o755)
    for dirpath, dirnames, filenames in os.walk(top):
        for name in dirnames + filenames:
            p = os.path.join(dirpath, name)
            if os.path.islink(p):
                continue
            mode = stat.S_IMODE(os.lstat(p).st_mode)
            os.chmod(p, mode | (0o755 if name in dirnames else 0o444))


# ---------------------------------------------------------------------------
# the host
# ---------------------------------------------------------------------------

@dataclass(frozen=True)
class Bind:
    """A directory of the real machine visible inside the host."""

    source: str
    target: str
    readonly: bool = False


class SystemdHost:
    """A simulated host: a real systemd as PID 1 of its own namespaces.

    Usage::

        with SystemdHost("zk-host-1", binds=[Bind(shared, "/shared")],
                         zkleader_venv=venv) as host:      # boots
            host.write_file("/etc/zkleader/zkleader.yaml", text)
            host.systemctl("start", "zkleader")
            entries = host.journal_entries("-u", "zkleader")
    """

    def __init__(self, hostname: str, *, binds: Iterable[Bind] = (),
                 zkleader_venv: Path | str | None = None,
                 extra_masks: Sequence[str] = (), boot_timeout: float = 60.0,
                 workdir: Path | str | None = None):
        self.hostname = hostname
        self.binds = list(binds)
        if zkleader_venv is not None:
            self.binds.append(Bind(str(zkleader_venv), INSTALL_PREFIX, readonly=True))
        self.extra_masks = tuple(extra_masks)
        self.boot_timeout = boot_timeout
        self._own_workdir = workdir is None
        self.workdir = Path(workdir or tempfile.mkdtemp(prefix=f"zkh-{hostname}-"))
        self.proc: subprocess.Popen | None = None
        self.pid: int | None = None          # PID 1 of the namespace, seen from outside
        self.boot_seconds: float | None = None
        self._t0 = 0.0
        self._cgroups: list[Path] = []
        self._console = None

    # -- life cycle ---------------------------------------------------------

    def __enter__(self) -> "SystemdHost":
        try:
            self.boot()
        except BaseException:
            self.close()
            raise
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def boot(self, timeout: float | None = None) -> float:
        """Start and wait until `systemctl is-system-running` says running/degraded."""
        self.start()
        return self.wait_booted(timeout)

    def start(self) -> None:
        """Spawn the namespaces and exec systemd; does not wait (see wait_booted)."""
        reason = unavailable_reason()
        if reason:
            raise HarnessUnavailable(reason)
        if self.proc is not None:
            raise RuntimeError("host already started")
        for b in self.binds:
            if set(b.source + b.target) & set(" \n\t"):
                raise ValueError(f"bind paths must not contain blanks: {b}")
            target = os.path.normpath(b.target)
            if not target.startswith("/") or target in ("/", "/tmp", "/run", "/proc", "/sys", "/dev", "/etc", "/usr"):
                raise ValueError(f"refusing bind target {b.target!r}")
            if not os.path.isdir(b.source):
                raise ValueError(f"bind source is not a directory: {b.source}")
        mnt = self.workdir / "mnt"
        stage = self.workdir / "stage"
        mnt.mkdir(parents=True, exist_ok=True)
        self._write_stage(stage)
        binds = self.workdir / "binds"
        binds.write_text("".join(
            f"{b.source} {os.path.normpath(b.target)} {'ro' if b.readonly else 'rw'}\n" for b in self.binds))
        self._cgroups = self._make_cgroups()
        env = {
            "PATH": "/usr/sbin:/usr/bin:/sbin:/bin",
            "ZKH_MNT": str(mnt), "ZKH_STAGE": str(stage), "ZKH_BINDS": str(binds),
            "ZKH_HOSTNAME": self.hostname, "ZKH_TARGET": TARGET,
            "ZKH_CGROUPS": " ".join(str(c) for c in self._cgroups),
        }
        self._console = open(self.workdir / "console.log", "wb")
        self._t0 = time.monotonic()
        self.proc = subprocess.Popen(
            ["unshare", "--pid", "--fork", "--kill-child=SIGKILL", "--mount",
             "--propagation", "private", "--uts", "--ipc",
             "/bin/bash", "-c", BOOT_SCRIPT],
            stdin=subprocess.DEVNULL, stdout=self._console, stderr=subprocess.STDOUT,
            env=env, preexec_fn=_die_with_parent,
        )
        deadline = time.monotonic() + 10
        while self.pid is None:
            self.pid = _child_of(self.proc.pid)
            if self.pid is None:
                if self.proc.poll() is not None or time.monotonic() > deadline:
                    raise RuntimeError(f"{self.hostname}: namespace did not start:\n{self.console()}")
                time.sleep(0.01)

    def wait_booted(self, timeout: float | None = None) -> float:
        timeout = self.boot_timeout if timeout is None else timeout
        assert self.proc is not None, "start() first"
        deadline = time.monotonic() + timeout
        state = ""
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"{self.hostname}: systemd exited with {self.proc.returncode}:\n{self.console()}")
            if self._is_systemd_running():
                r = self.run(["systemctl", "is-system-running"], timeout=10)
                state = r.stdout.strip()
                if state in ("running", "degraded"):
                    self.boot_seconds = time.monotonic() - self._t0
                    return self.boot_seconds
            time.sleep(0.05)
        diag = self.run(["systemctl", "list-jobs", "--no-pager"], timeout=10).stdout if self._is_systemd_running() else ""
        raise TimeoutError(f"{self.hostname}: not booted after {timeout}s (state {state!r})\n{diag}\n{self.console()}")

    def _is_systemd_running(self) -> bool:
        # Before exec, PID 1 is bash running the boot script.
        try:
            exe = os.readlink(f"/proc/{self.pid}/exe")
        except OSError:
            return False
        return exe.endswith("/systemd")

    def close(self) -> None:
        """SIGKILL the namespace's PID 1 (only the pid we started), wait, clean up,
        and check that nothing of ours is left mounted or running."""
        problems = []
        if self.proc is not None:
            if self.pid is None:
                self.pid = _child_of(self.proc.pid)
            if self.pid is not None and _parent_of(self.pid) == self.proc.pid:
                try:
                    os.kill(self.pid, signal.SIGKILL)
                except ProcessLookupError:
                    pass
            if self.proc.poll() is None:
                # our unshare: --kill-child makes its death kill PID 1 as well
                try:
                    self.proc.wait(timeout=10)
                except subprocess.TimeoutExpired:
                    self.proc.kill()
                    self.proc.wait(timeout=10)
            self.proc = None
        if self._console is not None:
            self._console.close()
            self._console = None
        for cg in self._cgroups:
            if not _remove_cgroup_tree(cg, timeout=10):
                problems.append(f"cgroup {cg} still has processes")
        self._cgroups = []
        mnt = str(self.workdir / "mnt")
        with open("/proc/mounts") as f:
            left = [line for line in f if f" {mnt}" in line]
        if left:
            problems.append(f"still mounted: {left}")
        if self._own_workdir and not problems and self.workdir.exists():
            shutil.rmtree(self.workdir, ignore_errors=True)
        self.pid = None
        if problems:
            raise RuntimeError(f"{self.hostname}: close() left {problems}")

    # -- staging -------------------------------------------------------------

    def _write_stage(self, stage: Path) -> None:
        """Files copied into the overlay before systemd starts."""
        if stage.exists():
            shutil.rmtree(stage)
        etc = stage / "etc"
        unitdir = etc / "systemd" / "system"
        unitdir.mkdir(parents=True)
        (etc / "hostname").write_text(self.hostname + "\n")
        (etc / "machine-id").write_text(uuid.uuid4().hex + "\n")
        (unitdir / TARGET).write_text(TARGET_UNIT)
        for name in sorted(set(MASKED_UNITS) | set(self.extra_masks) | _enabled_in_image()):
            link = unitdir / name
            if not link.exists() and not link.is_symlink():
                link.symlink_to("/dev/null")
        # journald: keep it small and volatile (on the host's tmpfs /run).
        jd = etc / "systemd" / "journald.conf.d"
        jd.mkdir(parents=True)
        (jd / "zkleader-harness.conf").write_text(
            "[Journal]\nStorage=volatile\nRateLimitBurst=0\nRuntimeMaxUse=32M\n")
        # `cp -a stage/. root/` copies modes too, onto /, /etc, ...: whatever
        # the caller's umask, they must be the usual 0755/0644.
        _normalize_modes(stage)

    def _make_cgroups(self) -> list[Path]:
        name = f"{self.hostname}-{secrets.token_hex(3)}"
        out = []
        for root in CGROUP_ROOTS[:2]:
            if os.path.exists(f"{root}/cgroup.procs"):
                cg = Path(root) / CGROUP_PARENT / name
                cg.mkdir(parents=True)
                out.append(cg)
        if not out:  # pure cgroup v2 machine
            cg = Path(CGROUP_ROOTS[2]) / CGROUP_PARENT / name
            cg.mkdir(parents=True)
            out.append(cg)
        return out

    # -- commands inside -----------------------------------------------------

    def run(self, cmd: Sequence[str] | str, *, check: bool = False, input: str | None = None,
            timeout: float = 60, env: dict[str, str] | None = None,
            errors: str = "strict") -> subprocess.CompletedProcess:
        """Run a command in all of the host's namespaces, root and cwd
        (`nsenter -t PID -a -r -w`). A string is run by /bin/sh -c. errors: how output
        that is not UTF-8 is decoded (journalctl's export format carries binary fields)."""
        if self.pid is None:
            raise RuntimeError(f"{self.hostname} is not running")
        if isinstance(cmd, str):
            cmd = ["/bin/sh", "-c", cmd]
        full_env = {"PATH": "/usr/sbin:/usr/bin:/sbin:/bin", "LANG": "C.UTF-8",
                    "SYSTEMD_PAGER": "", "SYSTEMD_COLORS": "0", "TERM": "dumb"}
        full_env.update(env or {})
        r = subprocess.run(["nsenter", "-t", str(self.pid), "-a", "-r", "-w", *cmd],
                           input=input, capture_output=True, text=True, errors=errors, timeout=timeout,
                           env=full_env)
        if check and r.returncode != 0:
            raise subprocess.CalledProcessError(r.returncode, r.args, r.stdout, r.stderr)
        return r

    def write_file(self, path: str, text: str, mode: int = 0o644) -> None:
        """Write a file into the host's overlay (parents created)."""
        if not path.startswith("/"):
            raise ValueError("absolute path inside the host expected")
        self.run(["/bin/sh", "-c", 'mkdir -p "$(dirname "$1")" && cat > "$1" && chmod "$2" "$1"',
                  "sh", path, f"{mode:o}"], input=text, check=True)

    def read_file(self, path: str) -> str:
        return self.run(["cat", path], check=True).stdout

    def systemctl(self, *args: str, check: bool = False, timeout: float = 60) -> subprocess.CompletedProcess:
        return self.run(["systemctl", "--no-pager", "--no-ask-password", *args],
                        check=check, timeout=timeout)

    def journalctl(self, *args: str, check: bool = False, timeout: float = 60,
                   errors: str = "strict") -> subprocess.CompletedProcess:
        return self.run(["journalctl", "--no-pager", *args], check=check, timeout=timeout, errors=errors)

    def journal_entries(self, *args: str) -> list[dict]:
        """journalctl -o json, parsed; one dict per entry, fields as strings
        (binary fields, which journalctl prints as byte arrays, are decoded)."""
        r = self.journalctl("-o", "json", *args)
        return parse_journal_json(r.stdout)

    def show(self, unit: str, *props: str) -> dict[str, str]:
        """systemctl show UNIT -p ...: the properties as a dict."""
        r = self.systemctl("show", unit, *(f"--property={p}" for p in props), check=True)
        return dict(line.split("=", 1) for line in r.stdout.splitlines() if "=" in line)

    def unit_pids(self, unit: str) -> list[int]:
        """The processes in a unit's cgroup, as pids of the real machine (to read their
        /proc from outside), from the first hierarchy this host's systemd manages."""
        if not self._cgroups:
            return []
        path = self._cgroups[0] / "system.slice" / unit / "cgroup.procs"
        try:
            return [int(word) for word in path.read_text().split()]
        except (OSError, ValueError):
            return []

    def fd_store(self, name: str) -> list[bytes]:
        """What this host's systemd (PID 1) holds in memfds named ``name``: the contents
        of every descriptor of PID 1 that links to "/memfd:NAME (deleted)"."""
        found = []
        fd_dir = Path(f"/proc/{self.pid}/fd")
        for fd in fd_dir.iterdir():
            try:
                if os.readlink(fd) == f"/memfd:{name} (deleted)":
                    found.append(fd.read_bytes())
            except OSError:
                continue
        return found

    def console(self) -> str:
        try:
            return (self.workdir / "console.log").read_text(errors="replace")[-4000:]
        except OSError:
            return ""

    def __repr__(self) -> str:
        return f"SystemdHost({self.hostname!r}, pid={self.pid})"


def parse_journal_json(text: str) -> list[dict]:
    out = []
    for line in text.splitlines():
        line = line.strip()
        if not line.startswith("{"):
            continue
        entry = json.loads(line)
        for k, v in list(entry.items()):
            if isinstance(v, list) and all(isinstance(b, int) for b in v):
                entry[k] = bytes(v).decode("utf-8", "replace")
        out.append(entry)
    return out


def boot_all(hosts: Sequence[SystemdHost], timeout: float | None = None) -> list[float]:
    """Boot several hosts in parallel; on failure close those already started."""
    try:
        for h in hosts:
            h.start()
        return [h.wait_booted(timeout) for h in hosts]
    except BaseException:
        for h in hosts:
            try:
                h.close()
            except Exception:
                pass
        raise


# ---------------------------------------------------------------------------
# helpers
# ---------------------------------------------------------------------------

def _die_with_parent() -> None:
    """In the child before exec: SIGKILL us (unshare) when the test process
    dies; unshare's --kill-child then takes the namespace's PID 1 down too."""
    import ctypes

    libc = ctypes.CDLL(None, use_errno=True)
    PR_SET_PDEATHSIG = 1
    libc.prctl(PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)


def _child_of(pid: int) -> int | None:
    try:
        with open(f"/proc/{pid}/task/{pid}/children") as f:
            kids = f.read().split()
        if kids:
            return int(kids[0])
    except OSError:
        pass
    for d in os.listdir("/proc"):  # fallback without CONFIG_PROC_CHILDREN
        if d.isdigit() and _parent_of(int(d)) == pid:
            return int(d)
    return None


def _parent_of(pid: int) -> int | None:
    try:
        with open(f"/proc/{pid}/stat") as f:
            return int(f.read().rsplit(")", 1)[1].split()[1])
    except (OSError, IndexError, ValueError):
        return None


def _remove_cgroup_tree(cg: Path, timeout: float) -> bool:
    """rmdir a cgroup and everything systemd created below it, once empty."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            for dirpath, _dirs, _files in os.walk(cg, topdown=False):
                os.rmdir(dirpath)
        except FileNotFoundError:
            pass
        except OSError:
            if time.monotonic() < deadline:
                time.sleep(0.05)
                continue
            return False
        break
    parent = cg.parent
    if parent.name == CGROUP_PARENT:
        try:
            parent.rmdir()  # fails (harmlessly) while other hosts still run
        except OSError:
            pass
    return True


def _enabled_in_image() -> set[str]:
    """Units the image enabled itself (/etc/systemd/system/*.wants): mask them."""
    out: set[str] = set()
    base = Path("/etc/systemd/system")
    for wants in base.glob("*.wants"):
        for link in wants.iterdir():
            name = link.name
            out.add(name)
            if "@" in name:
                out.add(name.split("@", 1)[0] + "@." + name.rsplit(".", 1)[-1])
    return out


def quote(cmd: Sequence[str]) -> str:
    return " ".join(shlex.quote(c) for c in cmd)
