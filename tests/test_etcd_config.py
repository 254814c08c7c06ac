"""The ``etcd:`` section (issue 17): the alternative to ``zookeeper:``, its checks, and
the commands that refuse an etcd configuration for now."""

from __future__ import annotations

import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from zkleader import config
from zkleader.config import ConfigError, parse
from zkleader.core import exitcodes, timing
from zkleader.daemon import settings_from
from zkleader.security import Secret

REST = """\
election:
  path: /zkleader/report
job:
  command: ["/bin/true"]
"""


def etcd(section: str, rest: str = REST) -> str:
    return "etcd:\n" + textwrap.indent(textwrap.dedent(section), "  ") + rest


def problems(text: str) -> list[str]:
    with pytest.raises(ConfigError) as caught:
        parse(text, "cfg.yaml")
    return [str(p) for p in caught.value.problems]


def test_an_etcd_section_replaces_the_zookeeper_one() -> None:
    loaded = parse(etcd("endpoints: [10.0.0.1:2379, 'etcd-2']\nlease_ttl: 6\n"))
    assert loaded.etcd == config.EtcdConfig(endpoints=("10.0.0.1:2379", "etcd-2:2379"), lease_ttl=6)
    assert parse(etcd('endpoints: "a:1,b:2"\n')).etcd.endpoints == ("a:1", "b:2")  # type: ignore[union-attr]
    assert parse(REST).etcd is None  # neither section: ZooKeeper's defaults, as always


def test_the_core_gets_the_lease_ttl_and_no_relay_allowance() -> None:
    settings = settings_from(parse(etcd("lease_ttl: 7\n")))
    assert (settings.session_timeout, settings.tick_time) == (7.0, 0.0)
    zookeeper = settings_from(parse(REST))
    assert (zookeeper.session_timeout, zookeeper.tick_time) == (10.0, timing.DEFAULT_TICK_TIME)


@pytest.mark.parametrize(("text", "expected"), [
    ("zookeeper: {hosts: 'z:2181'}\netcd: {lease_ttl: 5}\n" + REST,
     "cfg.yaml:2: etcd: a zookeeper section is set too (line 1): an election runs on ZooKeeper or on etcd; "
     "keep one of the two sections"),
    (etcd("lease_ttl: 2.5\n"), "cfg.yaml:2: etcd.lease_ttl: must be a whole number of seconds from 1 to 3600 "
     "(etcd grants leases in whole seconds), not 2.5"),
    (etcd("lease_ttl: 4\n"), "cfg.yaml:2: etcd.lease_ttl: 4s with job.stop_timeout 2s and job.reap_allowance 0.25s "
     "leaves no room to stop the job before the lease could expire: lower job.stop_timeout to at most 1.62s or "
     "raise etcd.lease_ttl to at least 5s"),
    (etcd("endpoints: ['http://a:2379']\n"),
     'cfg.yaml:2: etcd.endpoints: entries must be "host:port" (etcd endpoints take no path or scheme)'),
    (etcd("endpoints: 'a:99999'\n"), 'cfg.yaml:2: etcd.endpoints: "a:99999": port must be 1..65535'),
    (etcd("hosts: [a]\n"), "cfg.yaml:2: etcd.hosts: unknown key (known here: endpoints, lease_ttl, tls, auth)"),
    (etcd("tls: {ca: /ca.pem, verify_hostname: false}\n"),
     "cfg.yaml:2: etcd.tls.verify_hostname: false cannot be honoured: gRPC always checks that the server's "
     "certificate names the endpoint's host; give each member a certificate with its host name or address, and "
     "remove the key"),
    (etcd("tls: {ca: /ca.pem, cert: /c.pem}\n"), "cfg.yaml:2: etcd.tls.key: etcd.tls.cert is set, so etcd.tls.key "
     "is needed too (a client certificate comes with its key)"),
    (etcd("auth: {username: zkl, password_file: /s, password: hunter2}\n"),
     "cfg.yaml:2: etcd.auth.password: passwords are never accepted inline; put it in a file only zkleader's user "
     "can read and name that file in etcd.auth.password_file"),
    (etcd("lease_ttl: 5\n", REST + "hooks: {before_lead: ['true'], timeout: 3}\n"),
     "cfg.yaml:7: hooks.timeout: 3s does not fit the lease with hooks.before_lead set: a new leader's first lease "
     "leaves it 2.58s (etcd.lease_ttl 5s); lower hooks.timeout to at most 2.58s or raise etcd.lease_ttl"),
])
def test_each_etcd_error_is_one_line_with_file_line_and_key(text: str, expected: str) -> None:
    assert problems(text) == [expected]


def test_the_smallest_lease_ttl_is_the_budgets() -> None:
    """T = 5 s fits the default stop_timeout; etcd's relay allowance is none, so the
    floor is lower than ZooKeeper's at the default tickTime (2 s: 7.85 s needed)."""
    assert parse(etcd("lease_ttl: 5\n")).etcd.lease_ttl == 5  # type: ignore[union-attr]
    assert timing.budget_problem(5.0, 2.0, tick_time=timing.DEFAULT_TICK_TIME) is not None


def test_load_reads_the_password_file_and_the_tls_files(tmp_path: Path) -> None:
    secret = tmp_path / "etcd.secret"
    secret.write_text("s3cret\n")
    secret.chmod(0o600)
    path = tmp_path / "zkleader.yaml"
    path.write_text(etcd(f"auth: {{username: zkl, password_file: {secret}}}\n"))
    auth = config.load(str(path)).etcd.auth  # type: ignore[union-attr]
    assert auth is not None and auth.password == Secret("s3cret")
    assert "s3cret" not in repr(auth)

    path.write_text(etcd(f"tls: {{ca: {tmp_path}/missing.pem}}\n"))
    with pytest.raises(ConfigError) as caught:
        config.load(str(path))
    assert [p.key for p in caught.value.problems] == ["etcd.tls.ca"]


def run_cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "zkleader", *args], capture_output=True, text=True, timeout=30)


def test_validate_accepts_and_the_commands_speak_etcd_on_an_etcd_config(tmp_path: Path) -> None:
    path = tmp_path / "etcd.yaml"
    path.write_text(etcd("lease_ttl: 6\nendpoints: [127.0.0.1:1]\n"))
    done = run_cli("validate", "-c", str(path))
    assert done.returncode == exitcodes.OK, done.stderr
    assert "etcd lease_ttl 6s" in done.stdout
    # Nothing listens there: the commands ask etcd (not ZooKeeper) and say so in one line.
    for command in (["status"], ["drain"], ["resign", "--to", "x"]):
        done = run_cli(*command, "-c", str(path))
        assert done.returncode == exitcodes.UNAVAILABLE, (command, done.stderr)
        assert done.stderr == "zkleader: etcd at 127.0.0.1:1 did not answer within 5s\n", (command, done.stderr)
