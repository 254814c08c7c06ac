"""Issue 6, security: digest authentication, ACLs on the election path, TLS to the
secureClientPort, secrets kept out of logs and `status`, and the exit statuses of
every failure. Real daemons against real ZooKeeper servers (zkleader/testing/zksecure.py)."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml
from kazoo.exceptions import NoAuthError
from kazoo.security import ACL, Id, Permissions

from zkleader import config, connection, security
from zkleader.core import exitcodes
from zkleader.testing.daemons import DaemonGroup
from zkleader.testing.zksecure import digest_id

PASSWORD = "s3cr3t-Pa55word-for-zkleader-tests"
WRONG_PASSWORD = "an0ther-Pa55word-that-is-wrong"
T = 2.0


def cli(*args: str, timeout: float = 60) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "zkleader", *args], capture_output=True, text=True, timeout=timeout)


def write_config(path: Path, zookeeper: dict, election: str = "/zkleader-test/sec", **job) -> Path:
    document = {"zookeeper": zookeeper, "election": {"path": election, "candidate": "me"},
                "job": {"command": ["true"], **job}}
    path.write_text(yaml.safe_dump(document))
    return path


def line_of(path: Path, key: str) -> int:
    """The 1-based line of the first "key:" in a written config."""
    return next(i for i, line in enumerate(path.read_text().splitlines(), 1) if line.strip().startswith(f"{key}:"))


def problems(path: Path) -> list[str]:
    with pytest.raises(config.ConfigError) as caught:
        config.load(str(path))
    lines = str(caught.value).splitlines()
    assert lines and all(line.startswith(str(path)) for line in lines), lines
    return lines


# ------------------------------------------------------------ configuration


def test_auth_reads_the_secret_file_and_defaults_to_the_creator_acl(tmp_path, secret_file) -> None:
    secret = secret_file(PASSWORD)
    loaded = config.load(str(write_config(tmp_path / "c.yaml", {
        "hosts": "127.0.0.1:2181", "auth": {"scheme": "digest", "username": "zkleader", "password_file": str(secret)}})))
    auth = loaded.zookeeper.auth
    assert auth is not None and auth.username == "zkleader" and auth.password.reveal() == PASSWORD
    assert loaded.zookeeper.acl == "creator" and loaded.warnings == ()
    # The password never prints: not in repr/str of the config, the secret or the options' repr.
    options = connection.client_options(loaded.zookeeper)
    assert options["auth_data"] == [("digest", f"zkleader:{PASSWORD}")]
    assert [str(a.id.scheme) for a in options["default_acl"]] == ["auth", "world"]
    for text in (repr(loaded), str(loaded), repr(auth), str(auth.password), repr(loaded.zookeeper)):
        assert PASSWORD not in text
    # Without auth the ACL stays open (kazoo's default).
    plain = config.load(str(write_config(tmp_path / "p.yaml", {"hosts": "127.0.0.1:2181"})))
    assert plain.zookeeper.acl == "open" and connection.client_options(plain.zookeeper) == {}


@pytest.mark.parametrize("case", ["missing", "directory", "empty", "two lines", "huge", "fifo", "relative"])
def test_a_missing_or_unreadable_secret_is_a_config_error(tmp_path, case) -> None:
    path = tmp_path / "zk.secret"
    if case == "directory":
        path.mkdir()
    elif case == "empty":
        path.write_text("\n")
    elif case == "two lines":
        path.write_text(f"{PASSWORD}\nmore\n")
    elif case == "huge":
        path.write_text("x" * 10000)
    elif case == "fifo":
        os.mkfifo(path)
    name = "zk.secret" if case == "relative" else str(path)
    cfg = write_config(tmp_path / "c.yaml", {"auth": {"username": "zkleader", "password_file": name}})
    (line,) = problems(cfg)
    assert f"{cfg}:{line_of(cfg, 'password_file')}: zookeeper.auth.password_file: " in line, line
    assert PASSWORD not in line
    done = cli("validate", "-c", str(cfg))
    assert done.returncode == exitcodes.CONFIG and done.stderr.strip() == f"zkleader: {line}"


def test_an_inline_password_is_refused_without_echoing_it(tmp_path, secret_file) -> None:
    cfg = write_config(tmp_path / "c.yaml", {"auth": {"username": "zkleader", "password": PASSWORD,
                                                       "password_file": str(secret_file(PASSWORD))}})
    done = cli("validate", "-c", str(cfg))
    assert done.returncode == exitcodes.CONFIG
    assert "zookeeper.auth.password: passwords are never accepted inline" in done.stderr
    assert PASSWORD not in done.stderr + done.stdout


def test_sasl_is_rejected_as_not_supported_yet(tmp_path, secret_file) -> None:
    cfg = write_config(tmp_path / "c.yaml", {"auth": {"scheme": "sasl", "username": "zkleader",
                                                       "password_file": str(secret_file(PASSWORD))}})
    (line,) = problems(cfg)
    assert "zookeeper.auth.scheme: sasl is not supported yet" in line


@pytest.mark.parametrize("mode", [0o640, 0o604, 0o644])
def test_a_secret_readable_by_group_or_others_gives_a_warning_naming_the_file(tmp_path, secret_file, mode) -> None:
    secret = secret_file(PASSWORD, mode=mode)
    cfg = write_config(tmp_path / "c.yaml", {"auth": {"username": "zkleader", "password_file": str(secret)}})
    (warning,) = config.load(str(cfg)).warnings
    where = f"{cfg}:{line_of(cfg, 'password_file')}: zookeeper.auth.password_file"
    assert warning.startswith(f"{where}: the password file {secret} is accessible to")
    assert f"mode {mode:04o}" in warning and PASSWORD not in warning


def _cli_prints_warnings() -> bool:
    import zkleader.cli

    return ".warnings" in Path(zkleader.cli.__file__).read_text()


@pytest.mark.xfail(not _cli_prints_warnings(), strict=True,
                   reason="zkleader/cli.py does not print Config.warnings yet (a two-line hook, see the report)")
def test_validate_prints_the_secret_file_warning(tmp_path, secret_file) -> None:
    secret = secret_file(PASSWORD, mode=0o644)
    cfg = write_config(tmp_path / "c.yaml", {"auth": {"username": "zkleader", "password_file": str(secret)}})
    done = cli("validate", "-c", str(cfg))
    assert done.returncode == exitcodes.OK
    assert f"the password file {secret} is accessible to group and others" in done.stderr
    assert PASSWORD not in done.stdout + done.stderr


GOOD_DIGEST = digest_id("zkleader", PASSWORD)


@pytest.mark.parametrize(
    "acl, expected",
    [
        ("open", "open"),
        ("creator", "creator"),
        (["world:anyone:r", f"digest:{GOOD_DIGEST}:cdrwa"],
         (security.AclEntry("world", "anyone", 1), security.AclEntry("digest", GOOD_DIGEST, 31))),
        ([{"scheme": "digest", "id": GOOD_DIGEST, "perms": ["read", "write", "create", "delete", "admin"]},
          {"scheme": "ip", "id": "127.0.0.0/8", "perms": "r"}, "auth::a"],
         (security.AclEntry("digest", GOOD_DIGEST, 31), security.AclEntry("ip", "127.0.0.0/8", 1),
          security.AclEntry("auth", "", 16))),
        ([{"scheme": "x509", "id": "CN=zkleader-client", "perms": "all"}],
         (security.AclEntry("x509", "CN=zkleader-client", 31),)),
    ],
)
def test_acl_forms(tmp_path, secret_file, acl, expected) -> None:
    cfg = write_config(tmp_path / "c.yaml", {"auth": {"username": "zkleader", "password_file": str(secret_file(PASSWORD))},
                                             "acl": acl})
    assert config.load(str(cfg)).zookeeper.acl == expected


BAD_ACLS = [
    ("world", "must be creator, open or a list"),
    (7, "must be creator, open or a list"),
    ([], "an ACL list must not be empty"),
    (["world:anyone"], 'is not "scheme:id:perms"'),
    (["world:everyone:r"], 'the only world id is "anyone"'),
    (["world:anyone:rx"], "permission letters"),
    (["world:anyone:rr"], "permission letters"),
    (["digest:zkleader:plain:cdrwa"], "a digest id is"),
    (["ip:300.1.1.1:r"], "not an IP address"),
    (["kerberos:x:r"], "unknown ACL scheme"),
    (["auth:someone:r"], "an auth entry (the creator) has an empty id"),
    ([{"scheme": "world", "id": "anyone"}], "needs scheme, id and perms"),
    ([{"scheme": "world", "id": "anyone", "perms": [], "x": 1}], "unknown key 'x'"),
    ([{"scheme": "world", "id": "anyone", "perms": ["read", "read"]}], "listed twice"),
    ([{"scheme": "world", "id": "anyone", "perms": ["rule"]}], "is not a permission"),
    ([{"scheme": "ip", "id": 127, "perms": "r"}], "must be a string"),
    ([["world"]], "each ACL entry must be"),
    (["world:anyone:r", "world:anyone:c"], "lists world:anyone twice"),
    (["world:anyone:r"], "no entry grants write, create, delete"),
    ([f"digest:{digest_id('zkleader', WRONG_PASSWORD)}:cdrwa"], "does not match the password"),
]


@pytest.mark.parametrize("acl, message", BAD_ACLS)
def test_invalid_acls_are_config_errors(tmp_path, secret_file, acl, message) -> None:
    cfg = write_config(tmp_path / "c.yaml", {"auth": {"username": "zkleader", "password_file": str(secret_file(PASSWORD))},
                                             "acl": acl})
    lines = problems(cfg)
    assert any(message in line for line in lines), lines
    assert all(": zookeeper.acl" in line for line in lines), lines
    assert all(PASSWORD not in line for line in lines)


def test_creator_and_auth_entries_need_an_identity(tmp_path) -> None:
    for acl in ("creator", ["auth::cdrwa"]):
        (line,) = problems(write_config(tmp_path / "c.yaml", {"acl": acl}))
        assert "zookeeper.acl" in line and ("needs an identity" in line or "needs zookeeper.auth" in line), line


def test_tls_file_problems_are_config_errors(tmp_path, pki) -> None:
    base = {"ca": pki.ca, "cert": pki.client_cert, "key": pki.client_key}
    ok = config.load(str(write_config(tmp_path / "ok.yaml", {"hosts": "localhost:2281", "tls": base})))
    assert ok.zookeeper.tls == config.TlsConfig(pki.ca, pki.client_cert, pki.client_key, True)
    assert connection.client_options(ok.zookeeper) == {
        "use_ssl": True, "ca": pki.ca, "certfile": pki.client_cert, "keyfile": pki.client_key,
        "verify_certs": True, "check_hostname": True}
    encrypted = tmp_path / "encrypted.key"
    subprocess.run(["openssl", "pkey", "-in", pki.client_key, "-out", str(encrypted), "-aes256", "-passout",
                    "pass:xyzzy"], check=True, capture_output=True)
    cases = [
        ({**base, "ca": str(tmp_path / "nope.pem")}, "zookeeper.tls.ca: cannot read"),
        ({**base, "ca": pki.client_key}, "zookeeper.tls.ca:"),
        ({**base, "ca": "/dev/zero"}, "zookeeper.tls.ca: /dev/zero is not a regular file"),
        ({**base, "cert": str(tmp_path / "nope.pem")}, "zookeeper.tls.cert: cannot read"),
        ({**base, "key": pki.rogue_key}, "are not a matching PEM certificate and key"),
        ({**base, "key": str(encrypted)}, "is encrypted"),
        ({"ca": pki.ca, "cert": pki.client_cert}, "zookeeper.tls.key: zookeeper.tls.cert is set"),
        ({**base, "verify_hostname": "yes"}, "zookeeper.tls.verify_hostname: must be true or false"),
        ({"cert": pki.client_cert, "key": pki.client_key}, "zookeeper.tls.ca: required key is missing"),
        ({**base, "ca": "ca.pem"}, "must be an absolute path"),
        ({**base, "crl": "/x"}, "zookeeper.tls.crl: unknown key"),
    ]
    for tls, message in cases:
        lines = problems(write_config(tmp_path / "c.yaml", {"hosts": "localhost:2281", "tls": tls}))
        assert any(message in line for line in lines), (tls, lines)
    done = cli("validate", "-c", str(write_config(tmp_path / "c.yaml", {"tls": {**base, "key": str(encrypted)}})))
    assert done.returncode == exitcodes.CONFIG and "Traceback" not in done.stderr


# ------------------------------------------------------------ against ZooKeeper


def zookeeper_section(hosts: str, **extra) -> dict:
    """DaemonGroup's own zookeeper section (whatever the test bed puts there) plus ours:
    `add(sections=...)` replaces a whole top-level section."""
    base = DaemonGroup(Path("/nonexistent"), hosts, "/unused").config("unused")["zookeeper"]
    return {"zookeeper": {**base, "hosts": hosts, "session_timeout": T, **extra}}


def auth_section(hosts: str, secret: Path, **extra) -> dict:
    return zookeeper_section(
        hosts, auth={"scheme": "digest", "username": "zkleader", "password_file": str(secret)}, **extra)


def status(cfg: Path, *flags: str) -> subprocess.CompletedProcess[str]:
    return cli("status", "-c", str(cfg), *flags)


def assert_secret_absent(group, *outputs: str, secret: str = PASSWORD) -> None:
    for daemon in group.daemons.values():
        assert secret not in daemon.log_text(), f"{secret!r} in {daemon.log_path}"
    for text in outputs:
        assert secret not in text


@pytest.mark.zookeeper
def test_digest_acl_keeps_unauthenticated_clients_from_changing_the_election(
    healthy_digest_zk, election_path, daemon_group, secret_file, kazoo_client, super_client, tmp_path
) -> None:
    secret = secret_file(PASSWORD)
    group = daemon_group(healthy_digest_zk.hosts, election_path)
    for name in ("a", "b", "c"):
        group.add(name, sections=auth_section(healthy_digest_zk.hosts, secret)).wait_event("joined", 30)
    (first,) = group.wait_starts(1, 30)
    assert first["candidate"] == "a"

    outsider = kazoo_client(healthy_digest_zk.hosts)
    children = sorted(outsider.get_children(election_path), key=lambda n: n.rsplit("-", 1)[1])  # world may read
    assert len(children) == 3
    expected = [ACL(Permissions.ALL, Id("digest", digest_id("zkleader", PASSWORD))),
                ACL(Permissions.READ, Id("world", "anyone"))]
    parent = election_path.rsplit("/", 1)[0]
    for path in (parent, election_path, *(f"{election_path}/{c}" for c in children)):
        assert super_client.get_acls(path)[0] == expected, path
        # Without ADMIN, ZooKeeper shows the digest with its hash redacted.
        assert outsider.get_acls(path)[0][0].id == Id("digest", "zkleader:x")
    leader_node = f"{election_path}/{children[0]}"
    lower = f"{election_path}/zkl-{'0' * 32}-0000000000"
    attempts = {
        "delete the leader's node": lambda: outsider.delete(leader_node),
        "insert a lower node": lambda: outsider.create(lower, b"{}"),
        "insert a sequential node": lambda: outsider.create(f"{election_path}/zkl-{'1' * 32}-", sequence=True,
                                                             ephemeral=True),
        "overwrite the leader record": lambda: outsider.set(election_path, b"{}"),
        "open the ACL": lambda: outsider.set_acls(election_path, [ACL(Permissions.ALL, Id("world", "anyone"))]),
        "delete the election path": lambda: outsider.delete(election_path, recursive=True),
    }
    for what, attempt in attempts.items():
        with pytest.raises(NoAuthError):
            attempt()
            pytest.fail(f"an unauthenticated client could {what}")
    # A client with a wrong password is another identity: just as powerless.
    wrong = kazoo_client(healthy_digest_zk.hosts, auth_data=[("digest", f"zkleader:{WRONG_PASSWORD}")])
    with pytest.raises(NoAuthError):
        wrong.delete(leader_node)

    time.sleep(T)
    assert len(group.records("start")) == 1 and group.leaders() == ["a"]
    assert sorted(outsider.get_children(election_path)) == sorted(children)

    # status renders with and without credentials (world may read), and never shows the password.
    anonymous = write_config(tmp_path / "anon.yaml", {"hosts": healthy_digest_zk.hosts}, election=election_path)
    for cfg in (group.daemons["b"].config_path, anonymous):
        text, document = status(cfg), status(cfg, "--json")
        assert text.returncode == 0 and "leader    a on" in text.stdout, text.stderr
        assert document.returncode == 0 and json.loads(document.stdout)["leader"]["candidate"] == "a"
        assert_secret_absent(group, text.stdout, text.stderr, document.stdout, document.stderr)

    # The leader hands over as usual under ACLs.
    group.signal("a", signal.SIGTERM)
    assert group.wait_exit("a") == exitcodes.OK
    assert group.wait_starts(2, 10)[1]["candidate"] == "b"
    assert group.overlaps() == []
    assert_secret_absent(group)


@pytest.mark.zookeeper
def test_a_wrong_password_exits_77_with_a_clear_error_and_no_retry_loop(
    healthy_digest_zk, election_path, daemon_group, secret_file, tmp_path
) -> None:
    group = daemon_group(healthy_digest_zk.hosts, election_path)
    group.add("a", sections=auth_section(healthy_digest_zk.hosts, secret_file(PASSWORD)))
    group.wait_starts(1, 30)
    wrong = secret_file(WRONG_PASSWORD, name="wrong.secret")
    intruder = group.add("intruder", sections=auth_section(healthy_digest_zk.hosts, wrong))
    assert group.wait_exit("intruder", timeout=30) == exitcodes.AUTH_FAILED
    (refused,) = intruder.events("not_authorized")
    assert "ZooKeeper refused user zkleader (digest)" in refused["detail"]
    assert "a wrong password is a different identity" in refused["detail"]
    assert intruder.events("create_failed") == []  # one refusal, then out: no loop against the server
    assert [e["event"] for e in intruder.events()].count("connecting") <= 1
    assert group.leaders() == ["a"] and len(group.records("start")) == 1
    # status with the wrong password still reads (world:read) and shows the real leader.
    done = status(intruder.config_path)
    assert done.returncode == 0 and "leader    a on" in done.stdout
    assert_secret_absent(group, done.stdout, done.stderr)
    assert_secret_absent(group, done.stdout, done.stderr, secret=WRONG_PASSWORD)
    assert group.overlaps() == []


@pytest.mark.zookeeper
def test_an_election_path_that_refuses_the_leader_record_only_warns(
    healthy_digest_zk, election_path, daemon_group, secret_file, super_client
) -> None:
    """The election path lets zkleader create, delete and read, but not write: only the
    informative leader record is refused. Each leader used to exit 77 on it right after
    starting its job (without waiting for the reap), and so did every successor: no
    leader anywhere. Now it is a warning, and leadership works as usual."""
    super_client.create(election_path, makepath=True, acl=[
        ACL(Permissions.CREATE | Permissions.DELETE | Permissions.READ, Id("digest", digest_id("zkleader", PASSWORD))),
        ACL(Permissions.READ, Id("world", "anyone")),
    ])
    secret = secret_file(PASSWORD)
    group = daemon_group(healthy_digest_zk.hosts, election_path)
    for name in ("a", "b"):
        group.add(name, sections=auth_section(healthy_digest_zk.hosts, secret)).wait_event("joined", 30)
    (first,) = group.wait_starts(1, 30)
    assert first["candidate"] == "a"
    group.daemons["a"].wait_event("publish_failed", 10)
    time.sleep(T)
    assert group.daemons["a"].alive() and group.leaders() == ["a"] and len(group.records("start")) == 1
    group.signal("a", signal.SIGTERM)
    assert group.wait_exit("a") == exitcodes.OK
    assert group.wait_starts(2, 10)[1]["candidate"] == "b"
    group.daemons["b"].wait_event("publish_failed", 10)
    assert group.daemons["b"].alive() and group.leaders() == ["b"]
    assert group.overlaps() == []


@pytest.mark.zookeeper
def test_a_list_acl_without_world_read_needs_credentials_for_status(
    healthy_digest_zk, election_path, daemon_group, secret_file, tmp_path
) -> None:
    secret = secret_file(PASSWORD)
    acl = [f"digest:{digest_id('zkleader', PASSWORD)}:cdrwa"]
    group = daemon_group(healthy_digest_zk.hosts, election_path)
    group.add("a", sections=auth_section(healthy_digest_zk.hosts, secret, acl=acl))
    group.wait_starts(1, 30)
    ok = status(group.daemons["a"].config_path, "--json")
    assert ok.returncode == 0 and json.loads(ok.stdout)["leader"]["candidate"] == "a"
    anonymous = write_config(tmp_path / "anon.yaml", {"hosts": healthy_digest_zk.hosts}, election=election_path)
    done = status(anonymous)
    assert done.returncode != 0 and "Traceback" not in done.stderr
    assert "refused an unauthenticated client reading" in done.stderr and "(NoAuth)" in done.stderr
    assert_secret_absent(group, ok.stdout, ok.stderr, done.stdout, done.stderr)


@pytest.mark.zookeeper
def test_an_existing_open_election_path_is_reported(
    healthy_digest_zk, unique_path, daemon_group, secret_file, kazoo_client
) -> None:
    election_path = unique_path("/made-open-before")
    kazoo_client(healthy_digest_zk.hosts).ensure_path(election_path)  # open ACL, made before zkleader
    group = daemon_group(healthy_digest_zk.hosts, election_path)
    daemon = group.add("a", sections=auth_section(healthy_digest_zk.hosts, secret_file(PASSWORD)))
    group.wait_starts(1, 30)
    warning = daemon.wait_event("election_acl_open", 10)
    assert warning["path"] == election_path and "world:anyone:rwcda" in warning["acl"]
    assert group.overlaps() == []


@pytest.mark.zookeeper
def test_the_daemon_logs_the_exposed_secret_file_at_start(
    healthy_digest_zk, election_path, daemon_group, secret_file
) -> None:
    secret = secret_file(PASSWORD, mode=0o644)
    group = daemon_group(healthy_digest_zk.hosts, election_path)
    daemon = group.add("a", sections=auth_section(healthy_digest_zk.hosts, secret))
    event = daemon.wait_event("secret_file_exposed", 30)
    assert event["level"] == "warning" and str(secret) in event["problem"]
    group.wait_starts(1, 30)
    assert_secret_absent(group)


# ------------------------------------------------------------------------ TLS


def tls_section(hosts: str, pki, **tls) -> dict:
    return zookeeper_section(hosts, tls={"ca": pki.ca, "cert": pki.client_cert, "key": pki.client_key, **tls})


@pytest.mark.zookeeper
def test_daemons_elect_and_hand_over_over_tls(healthy_tls_zk, pki, election_path, daemon_group, secret_file) -> None:
    secret = secret_file(PASSWORD)
    section = tls_section(healthy_tls_zk.secure_hosts, pki)
    section["zookeeper"]["auth"] = {"username": "zkleader", "password_file": str(secret)}
    group = daemon_group(healthy_tls_zk.secure_hosts, election_path)
    for name in ("a", "b", "c"):
        group.add(name, sections=section).wait_event("joined", 30)
    (first,) = group.wait_starts(1, 30)
    assert first["candidate"] == "a"
    cfg = group.daemons["b"].config_path
    text, document = status(cfg), status(cfg, "--json")
    assert text.returncode == 0 and "leader    a on" in text.stdout, text.stderr
    assert [c["candidate"] for c in json.loads(document.stdout)["queue"]] == ["a", "b", "c"]
    # Over TLS with a client certificate and digest auth, "creator" names both identities.
    from kazoo.client import KazooClient

    probe = KazooClient(hosts=healthy_tls_zk.secure_hosts, **connection.client_options(config.load(str(cfg)).zookeeper))
    probe.start(timeout=15)
    try:
        schemes = {acl.id.scheme: acl.perms for acl in probe.get_acls(election_path)[0]}
    finally:
        probe.stop()
        probe.close()
    assert schemes == {"digest": Permissions.ALL, "x509": Permissions.ALL, "world": Permissions.READ}
    group.signal("a", signal.SIGTERM)
    assert group.wait_exit("a") == exitcodes.OK
    assert group.wait_starts(2, 10)[1]["candidate"] == "b"
    assert group.overlaps() == []
    assert_secret_absent(group, text.stdout, text.stderr, document.stdout, document.stderr)


@pytest.mark.zookeeper
@pytest.mark.parametrize("case", ["wrong CA", "hostname mismatch", "certificate from another CA"])
def test_a_tls_failure_exits_77_with_a_clear_error(healthy_tls_zk, pki, election_path, daemon_group, case) -> None:
    hosts = healthy_tls_zk.secure_hosts
    tls = {}
    if case == "wrong CA":
        tls = {"ca": pki.other_ca}
    elif case == "hostname mismatch":
        hosts = healthy_tls_zk.secure_hosts_by_ip
    else:
        tls = {"cert": pki.rogue_cert, "key": pki.rogue_key}
    group = daemon_group(hosts, election_path)
    daemon = group.add("a", sections=tls_section(hosts, pki, **tls))
    assert group.wait_exit("a", timeout=30) == exitcodes.AUTH_FAILED
    failed = daemon.events("tls_failed")
    assert len(failed) == 1, daemon.log_text()[-3000:]
    reason = failed[0]["reason"]
    expected = {"wrong CA": "the server's certificate was refused",
                "hostname mismatch": "IP address mismatch",
                "certificate from another CA": "does the server trust our client certificate?"}[case]
    assert expected in reason, reason
    assert daemon.events("auth_failed") and not daemon.events("job_started")
    done = status(daemon.config_path)
    assert done.returncode != 0 and "Traceback" not in done.stderr
    assert "refused TLS" in done.stderr, done.stderr


@pytest.mark.zookeeper
def test_verify_hostname_false_still_checks_the_chain(healthy_tls_zk, pki, election_path, daemon_group) -> None:
    hosts = healthy_tls_zk.secure_hosts_by_ip
    group = daemon_group(hosts, election_path)
    group.add("a", sections=tls_section(hosts, pki, verify_hostname=False))
    group.wait_starts(1, 30)
    group.add("b", sections=tls_section(hosts, pki, verify_hostname=False, ca=pki.other_ca))
    assert group.wait_exit("b", timeout=30) == exitcodes.AUTH_FAILED
    assert group.overlaps() == []
