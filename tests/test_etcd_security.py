"""EtcdShell against a real etcd with TLS (client certificates required) and user/password
auth: the client library's TLS and auth paths, and how their refusals reach the core."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pyetcd  # type: ignore[import-untyped]
import pytest
from pyetcd import etcdrpc  # type: ignore[import-untyped]

from zkleader.config import EtcdAuthConfig, EtcdConfig, TlsConfig
from zkleader.core import actions as act
from zkleader.core import events as ev
from zkleader.etcd import EtcdShell
from zkleader.security import Secret
from zkleader.testing.etcdcluster import ClientTls, EtcdCluster
from zkleader.testing.zksecure import Pki, make_pki, pki_tools_missing

from test_etcd_shell import Events

pytestmark = pytest.mark.etcd

ROOT_PASSWORD = "test-root-pass"
PASSWORD = "test-zkl-pass"
#: The only keys the user zkl may read and write.
PREFIX = "/zkl-secure/"


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> Pki:
    missing = pki_tools_missing()
    if missing:
        pytest.skip(missing)
    return make_pki(tmp_path_factory.mktemp("etcd-pki"))


@pytest.fixture(scope="module")
def secure_etcd(tmp_path_factory: pytest.TempPathFactory, pki: Pki) -> Iterator[EtcdCluster]:
    """One member, TLS with client certificates on its client port, auth enabled: a
    root user and a user zkl whose role may read and write PREFIX only."""
    tls = ClientTls(pki.ca, pki.path("server.pem"), pki.path("server.key"), pki.client_cert, pki.client_key)
    with EtcdCluster(tmp_path_factory.mktemp("etcd-secure"), 1, tls=tls) as cluster:
        admin = _client(cluster, pki)
        auth = admin.authstub
        auth.UserAdd(etcdrpc.AuthUserAddRequest(name="root", password=ROOT_PASSWORD))
        auth.UserGrantRole(etcdrpc.AuthUserGrantRoleRequest(user="root", role="root"))
        auth.RoleAdd(etcdrpc.AuthRoleAddRequest(name="zkl"))
        auth.RoleGrantPermission(etcdrpc.AuthRoleGrantPermissionRequest(name="zkl", perm=etcdrpc.Permission(
            permType=etcdrpc.Permission.READWRITE, key=PREFIX.encode(), range_end=PREFIX[:-1].encode() + b"0")))
        auth.UserAdd(etcdrpc.AuthUserAddRequest(name="zkl", password=PASSWORD))
        auth.UserGrantRole(etcdrpc.AuthUserGrantRoleRequest(user="zkl", role="zkl"))
        auth.AuthEnable(etcdrpc.AuthEnableRequest())
        admin.close()
        yield cluster


def _client(cluster: EtcdCluster, pki: Pki) -> Any:
    host, port = cluster.addresses[0]
    return pyetcd.client(host=host, port=port, ca_cert=pki.ca, cert_key=pki.client_key, cert_cert=pki.client_cert,
                         timeout=5)


def _shell(cluster: EtcdCluster, tls: TlsConfig, password: str) -> tuple[EtcdShell, Events]:
    events = Events()
    auth = EtcdAuthConfig("zkl", "/the/password/file", Secret(password))
    shell = EtcdShell(EtcdConfig(endpoints=tuple(cluster.endpoints), lease_ttl=2, tls=tls, auth=auth), events.post)
    shell.start()
    return shell, events


def test_tls_with_a_client_certificate_and_a_password_elects(secure_etcd: EtcdCluster, pki: Pki) -> None:
    shell, events = _shell(secure_etcd, TlsConfig(pki.ca, pki.client_cert, pki.client_key), PASSWORD)
    try:
        connected = events.next(ev.Connected)
        shell.execute(act.CreateNode(1, f"{PREFIX}e/zkl-{'a' * 32}-", b"{}"))
        name = events.next(ev.Created).name
        shell.execute(act.CheckNode(2, name, watch=True, sync=True))
        assert events.next(ev.NodeChecked).stat == ev.NodeStat(int(name[-10:]), connected.session_id)
        # Outside the role's prefix etcd says no: a refusal, not a lost connection.
        shell.execute(act.CreateNode(3, f"/elsewhere/zkl-{'b' * 32}-", b"{}"))
        refused = events.next(ev.RequestFailed)
        assert refused.failure is ev.Failure.NO_AUTH and "permission denied" in refused.detail
    finally:
        shell.close()


def test_a_wrong_password_is_an_auth_failure_not_a_retry_loop(secure_etcd: EtcdCluster, pki: Pki) -> None:
    shell, events = _shell(secure_etcd, TlsConfig(pki.ca, pki.client_cert, pki.client_key), "not-the-password")
    try:
        events.next(ev.AuthFailed)
        assert [e for e in events.drain(wait=0.5) if isinstance(e, ev.ConnectionAttempt)] == []
    finally:
        shell.close()


def test_without_a_client_certificate_the_shell_never_connects(secure_etcd: EtcdCluster, pki: Pki,
                                                               tmp_path: Path) -> None:
    """etcd refuses the TLS handshake; gRPC reports that as UNAVAILABLE, like a member
    that is down, so the shell keeps trying (the ZooKeeper shell says AuthFailed after
    every server refused TLS: not yet here)."""
    shell, events = _shell(secure_etcd, TlsConfig(pki.ca), PASSWORD)
    try:
        events.next(ev.ConnectionAttempt, where=lambda e: e.attempt >= 2)
        time.sleep(0.5)
        assert not [e for e in events.drain() if isinstance(e, (ev.Connected, ev.AuthFailed))]
    finally:
        shell.close()
