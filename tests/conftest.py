"""The pytest fixtures of the test bed (the bed itself is the package zkleader.testing).

Servers (zkleader.testing.zkserver), all on 127.0.0.1, tickTime 200 ms, session
timeouts 0.4..10 s allowed:

  zk_server           session  ZooKeeperServer, standalone, started
  zk_ensemble         session  Ensemble of 3, started
  healthy_zk_server   function zk_server, restarted/resumed first if a test stopped it
  healthy_ensemble    function zk_ensemble with all 3 servers running and serving
                               (stopped ones restarted, paused ones resumed)

Helpers:

  fault_proxy         function factory: fault_proxy(upstreams, **kw) -> FaultProxy
                               (zkleader.testing.faultproxy), all closed at teardown
  kazoo_client        function factory: kazoo_client(hosts, timeout=4.0, start=True,
                               **kw) -> KazooClient; stopped and closed at teardown
  election_path       function a znode path unique to this test, e.g.
                               "/zkleader-test/test_x.py__test_y-1234-0a1b2c" (not created)
  unique_path         function factory: unique_path(prefix="/zkleader-test") -> new path

Daemons (zkleader.testing.daemons):

  daemon_group        function factory: daemon_group(hosts, election, **options) -> DaemonGroup;
                               every daemon SIGKILLed at teardown

Security (zkleader.testing.zksecure; the TLS ones skip without openssl and keytool):

  pki, tls_zk, digest_zk       module   a throw-away Pki, a TLS-only server, a digest server
  healthy_tls_zk, healthy_digest_zk
                      function the same servers, restarted/resumed first
  secret_file         function factory: secret_file(password, mode=0o600, name="zk.secret") -> path
  super_client        function a kazoo client that is "super" on the digest server

When a test that used a server fails, the tail of each server's log is added
to the report ("zookeeper log ..." sections).
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import pytest

from zkleader.testing.daemons import DaemonGroup
from zkleader.testing.faultproxy import FaultProxy
from zkleader.testing.zksecure import (
    SUPER_PASSWORD,
    Pki,
    TlsServer,
    digest_server,
    make_pki,
    pki_tools_missing,
)
from zkleader.testing.zkserver import Ensemble, ZooKeeperServer, unique_znode_path

_SERVERS_ATTR = "_zk_servers_used"


def pytest_configure(config: pytest.Config) -> None:
    # Also declared in pyproject.toml; repeated so the bed works on its own.
    config.addinivalue_line("markers", "zookeeper: needs a real ZooKeeper server (started by fixtures)")


def _note_servers(request: pytest.FixtureRequest, servers) -> None:
    node = request.node
    used = getattr(node, _SERVERS_ATTR, None)
    if used is None:
        used = []
        setattr(node, _SERVERS_ATTR, used)
    for s in servers:
        if s not in used:
            used.append(s)


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call):
    outcome = yield
    rep = outcome.get_result()
    if rep.failed and call.when in ("setup", "call", "teardown"):
        for s in getattr(item, _SERVERS_ATTR, []):
            rep.sections.append(
                (f"zookeeper log {s.name} ({s.hosts}) {s.log_path}", s.log_tail(40))
            )


@pytest.fixture(scope="session")
def zk_server(tmp_path_factory: pytest.TempPathFactory):
    """A standalone ZooKeeper server for the whole session (tickTime 200 ms)."""
    server = ZooKeeperServer(tmp_path_factory.mktemp("zk-standalone"), name="zk-standalone")
    try:
        server.start(timeout=60)
        yield server
    finally:
        server.close()


@pytest.fixture(scope="session")
def zk_ensemble(tmp_path_factory: pytest.TempPathFactory):
    """A 3-server ZooKeeper ensemble for the whole session (tickTime 200 ms)."""
    ensemble = Ensemble(tmp_path_factory.mktemp("zk-ensemble"), size=3)
    try:
        ensemble.start(timeout=90)
        yield ensemble
    finally:
        ensemble.close()


@pytest.fixture
def healthy_zk_server(request: pytest.FixtureRequest, zk_server: ZooKeeperServer) -> ZooKeeperServer:
    """zk_server, made sure to be running and serving before the test."""
    zk_server.resume()
    zk_server.start(wait=True, timeout=60)
    _note_servers(request, [zk_server])
    return zk_server


@pytest.fixture(scope="module")
def etcd(tmp_path_factory: pytest.TempPathFactory):
    """A 3-member etcd cluster (Debian's etcd-server, loopback) for one test module
    (tests/test_etcd_*.py); tests that kill or pause members restore them."""
    from zkleader.testing.etcdcluster import EtcdCluster

    with EtcdCluster(tmp_path_factory.mktemp("etcd"), 3) as started:
        yield started


@pytest.fixture
def healthy_ensemble(request: pytest.FixtureRequest, zk_ensemble: Ensemble) -> Ensemble:
    """zk_ensemble with all servers running and serving, a leader elected.
    Tests may stop, kill or pause servers; the next test gets them back."""
    zk_ensemble.ensure_running(timeout=90)
    _note_servers(request, zk_ensemble.servers)
    return zk_ensemble


@pytest.fixture
def fault_proxy(request: pytest.FixtureRequest):
    """Factory: ``fault_proxy(upstreams, **kw)`` -> a running FaultProxy.

    ``upstreams``: ZooKeeperServer, Ensemble, "h:p,h:p" or [(h, p), ...].
    One proxy port per upstream; ``proxy.hosts`` is the connection string.
    Every proxy made is closed at teardown."""
    proxies: list[FaultProxy] = []

    def make(upstreams, **kw) -> FaultProxy:
        kw.setdefault("name", f"proxy{len(proxies)}")
        proxy = FaultProxy(upstreams, **kw)
        proxies.append(proxy)
        if isinstance(upstreams, ZooKeeperServer):
            _note_servers(request, [upstreams])
        elif isinstance(upstreams, Ensemble):
            _note_servers(request, upstreams.servers)
        return proxy

    yield make
    for proxy in reversed(proxies):
        proxy.close()


@pytest.fixture
def kazoo_client():
    """Factory: ``kazoo_client(hosts, timeout=4.0, start=True, **kw)`` -> KazooClient.

    Reconnects fast (connection_retry: 50 ms doubling up to 1 s, forever)
    unless ``connection_retry`` is given.  Every client is stopped and closed
    at teardown."""
    from kazoo.client import KazooClient
    from kazoo.retry import KazooRetry

    clients: list = []

    def make(hosts: str, timeout: float = 4.0, start: bool = True, start_timeout: float = 15.0, **kw):
        kw.setdefault(
            "connection_retry",
            KazooRetry(max_tries=-1, delay=0.05, backoff=2, max_jitter=0.05, max_delay=1.0),
        )
        client = KazooClient(hosts=hosts, timeout=timeout, **kw)
        clients.append(client)
        if start:
            client.start(timeout=start_timeout)
        return client

    yield make
    for client in reversed(clients):
        try:
            client.stop()
        except Exception:
            pass
        try:
            client.close()
        except Exception:
            pass


@pytest.fixture
def election_path(request: pytest.FixtureRequest) -> str:
    """A znode path unique to this test (derived from its node id); not created."""
    return unique_znode_path(request.node.nodeid)


@pytest.fixture
def unique_path(request: pytest.FixtureRequest):
    """Factory: ``unique_path(prefix="/zkleader-test")`` -> a fresh unique path."""

    def make(prefix: str = "/zkleader-test") -> str:
        return unique_znode_path(request.node.nodeid, prefix)

    return make


# --------------------------------------------------------------------------- daemons


@pytest.fixture
def daemon_group(tmp_path: Path):
    """Factory: ``daemon_group(hosts, election, **options)`` -> DaemonGroup. Every daemon
    is SIGKILLed at teardown; on failure the logs and detector records are printed."""
    groups: list[DaemonGroup] = []

    def make(hosts: str, election: str, **options: Any) -> DaemonGroup:
        workdir = tmp_path / f"group{len(groups)}"
        workdir.mkdir()
        group = DaemonGroup(workdir, hosts, election, **options)
        groups.append(group)
        return group

    yield make
    for group in groups:
        group.close()
        print(group.describe())  # pytest shows captured output only when the test failed


# --------------------------------------------------------------------------- security


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> Pki:
    missing = pki_tools_missing()
    if missing:
        pytest.skip(missing)
    return make_pki(tmp_path_factory.mktemp("pki"))


@pytest.fixture(scope="module")
def tls_zk(tmp_path_factory: pytest.TempPathFactory, pki: Pki):
    server = TlsServer(tmp_path_factory.mktemp("zk-tls"), pki)
    try:
        server.start(timeout=60)
        yield server
    finally:
        server.close()


@pytest.fixture(scope="module")
def digest_zk(tmp_path_factory: pytest.TempPathFactory):
    server = digest_server(tmp_path_factory.mktemp("zk-digest"))
    try:
        server.start(timeout=60)
        yield server
    finally:
        server.close()


@pytest.fixture
def healthy_tls_zk(tls_zk: TlsServer) -> TlsServer:
    tls_zk.resume()
    tls_zk.start(wait=True, timeout=60)
    return tls_zk


@pytest.fixture
def healthy_digest_zk(digest_zk: ZooKeeperServer) -> ZooKeeperServer:
    digest_zk.resume()
    digest_zk.start(wait=True, timeout=60)
    return digest_zk


@pytest.fixture
def secret_file(tmp_path: Path):
    """Factory: ``secret_file(password, mode=0o600, name="zk.secret")`` -> its path."""

    def make(password: str, mode: int = 0o600, name: str = "zk.secret") -> Path:
        path = tmp_path / name
        path.write_text(password + "\n")
        os.chmod(path, mode)
        return path

    return make


@pytest.fixture
def super_client(kazoo_client, healthy_digest_zk):
    """A kazoo client authenticated as the digest server's super user."""
    return kazoo_client(healthy_digest_zk.hosts, auth_data=[("digest", f"super:{SUPER_PASSWORD}")])
