"""ZooKeeper servers with security turned on, for tests/test_security.py and
tests/test_hostile.py.

* ``Pki``: a throw-away certificate authority made with openssl, a server and a
  client certificate signed by it (the server's valid for the name localhost only), a
  second, unrelated CA (the "wrong CA"), a client certificate signed by that one,
  and the Java stores the server needs (a PKCS12 keystore made with openssl, a
  PKCS12 truststore made with keytool).
* ``tls_server(workdir, pki)``: a standalone ZooKeeperServer whose
  ``secureClientPort`` speaks TLS only (NettyServerCnxnFactory, client
  certificates required). Its plain ``clientPort`` stays open on loopback
  because the test bed's readiness checks use four-letter words on it; the
  daemons under test are pointed at ``server.secure_hosts``.
* ``digest_server(workdir)``: a standalone server with a superDigest, so tests
  can look at (and clean up) znodes whatever their ACL. Digest ACLs need no other
  server setting: ZooKeeper's digest provider is always on.
* The fixtures built on these are in tests/conftest.py: ``pki``, ``tls_zk`` and
  ``digest_zk`` (module scope), ``secret_file`` (a factory for password files with a
  given mode), ``super_client`` (a kazoo client that is "super" on the digest server).

Everything listens on 127.0.0.1; the JVMs are the test bed's (zkserver.py).
"""

from __future__ import annotations

import base64
import hashlib
import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path

from .zkserver import ZooKeeperServer, free_port

STORE_PASSWORD = "test-store-pass"  # the Java keystore's, not a zkleader secret
SUPER_PASSWORD = "test-super-pass"


def digest_id(username: str, password: str) -> str:
    """ZooKeeper's digest identity: user:base64(sha1(user:password))."""
    hashed = base64.b64encode(hashlib.sha1(f"{username}:{password}".encode()).digest()).decode()
    return f"{username}:{hashed}"


def _run(*args: str, cwd: Path) -> None:
    done = subprocess.run(args, cwd=cwd, capture_output=True, text=True, timeout=120)
    if done.returncode != 0:
        raise RuntimeError(f"{' '.join(args)} failed ({done.returncode}):\n{done.stdout}\n{done.stderr}")


@dataclass(frozen=True)
class Pki:
    dir: Path

    def path(self, name: str) -> str:
        return str(self.dir / name)

    @property
    def ca(self) -> str:
        return self.path("ca.pem")

    @property
    def other_ca(self) -> str:
        """A CA that signed nothing the server presents: the 'wrong CA'."""
        return self.path("other-ca.pem")

    @property
    def client_cert(self) -> str:
        return self.path("client.pem")

    @property
    def client_key(self) -> str:
        return self.path("client.key")

    @property
    def rogue_cert(self) -> str:
        """A client certificate signed by the other CA: the server must refuse it."""
        return self.path("rogue.pem")

    @property
    def rogue_key(self) -> str:
        return self.path("rogue.key")

    @property
    def keystore(self) -> str:
        return self.path("server.p12")

    @property
    def truststore(self) -> str:
        return self.path("trust.p12")


#: Why a Pki cannot be made here (the tests skip with it), or None.
PKI_TOOLS_MISSING = "openssl and keytool are needed for the TLS tests"


def pki_tools_missing() -> str | None:
    """None when openssl and keytool are on PATH, else why a Pki cannot be made."""
    return None if shutil.which("openssl") and shutil.which("keytool") else PKI_TOOLS_MISSING


def make_pki(directory: Path) -> Pki:
    """Generates every file of a Pki into ``directory`` (a few seconds: RSA keys)."""
    missing = pki_tools_missing()
    if missing:
        raise RuntimeError(missing)
    d = Path(directory)
    d.mkdir(parents=True, exist_ok=True)
    # The server's certificate names only "localhost": daemons connect to localhost:PORT,
    # and 127.0.0.1:PORT fails hostname verification (the test of verify_hostname).
    sans = {"server": "subjectAltName=DNS:localhost", "client": "subjectAltName=DNS:zkleader-client",
            "rogue": "subjectAltName=DNS:zkleader-client"}
    for ca, cn in (("ca", "zkleader test CA"), ("other-ca", "some other CA")):
        _run("openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "30",
             "-keyout", f"{ca}.key", "-out", f"{ca}.pem", "-subj", f"/CN={cn}",
             "-addext", "basicConstraints=critical,CA:TRUE", "-addext", "keyUsage=critical,keyCertSign,cRLSign", cwd=d)
    for name, cn, ca, usage in (
        ("server", "localhost", "ca", "serverAuth"),
        ("client", "zkleader-client", "ca", "clientAuth"),
        ("rogue", "zkleader-client", "other-ca", "clientAuth"),
    ):
        _run("openssl", "req", "-newkey", "rsa:2048", "-nodes", "-keyout", f"{name}.key", "-out", f"{name}.csr",
             "-subj", f"/CN={cn}", cwd=d)
        (d / f"{name}.ext").write_text(f"{sans[name]}\nextendedKeyUsage={usage}\nbasicConstraints=CA:FALSE\n")
        _run("openssl", "x509", "-req", "-in", f"{name}.csr", "-CA", f"{ca}.pem", "-CAkey", f"{ca}.key",
             "-CAcreateserial", "-days", "30", "-out", f"{name}.pem", "-extfile", f"{name}.ext", cwd=d)
    for key in d.glob("*.key"):
        key.chmod(0o600)
    _run("openssl", "pkcs12", "-export", "-in", "server.pem", "-inkey", "server.key", "-certfile", "ca.pem",
         "-name", "server", "-out", "server.p12", "-passout", f"pass:{STORE_PASSWORD}", cwd=d)
    _run("keytool", "-importcert", "-noprompt", "-alias", "ca", "-file", "ca.pem", "-keystore", "trust.p12",
         "-storetype", "PKCS12", "-storepass", STORE_PASSWORD, cwd=d)
    return Pki(d)


class TlsServer(ZooKeeperServer):
    """A standalone server with a TLS-only secureClientPort next to its plain port."""

    def __init__(self, workdir: Path, pki: Pki, **kw: object) -> None:
        self.secure_port = free_port()
        extra = {
            "secureClientPort": self.secure_port,
            "secureClientPortAddress": "127.0.0.1",
            "serverCnxnFactory": "org.apache.zookeeper.server.NettyServerCnxnFactory",
            "ssl.keyStore.location": pki.keystore,
            "ssl.keyStore.password": STORE_PASSWORD,
            "ssl.keyStore.type": "PKCS12",
            "ssl.trustStore.location": pki.truststore,
            "ssl.trustStore.password": STORE_PASSWORD,
            "ssl.trustStore.type": "PKCS12",
            "ssl.clientAuth": "need",
            **dict(kw.pop("extra_config", None) or {}),  # type: ignore[call-overload]
        }
        super().__init__(workdir, extra_config=extra, name="zk-tls", **kw)  # type: ignore[arg-type]

    @property
    def secure_hosts(self) -> str:
        """By name: the server's certificate is for localhost (resolves to 127.0.0.1)."""
        return f"localhost:{self.secure_port}"

    @property
    def secure_hosts_by_ip(self) -> str:
        """By address: fails hostname verification (the certificate names localhost)."""
        return f"127.0.0.1:{self.secure_port}"

    def _reallocate_ports(self) -> None:
        super()._reallocate_ports()
        self.secure_port = free_port()
        self.extra_config["secureClientPort"] = self.secure_port


def digest_server(workdir: Path) -> ZooKeeperServer:
    """A standalone server where ``super:SUPER_PASSWORD`` may do anything."""
    flag = f"-Dzookeeper.DigestAuthenticationProvider.superDigest={digest_id('super', SUPER_PASSWORD)}"
    return ZooKeeperServer(workdir, jvm_flags=[flag], name="zk-digest")

