"""The rules of zookeeper.auth, zookeeper.acl and zookeeper.tls that YAML alone cannot
express: the secret file, the ACL grammar and the lock-outs it must not allow, and the
TLS files as OpenSSL will load them.

Standard library only, and it imports nothing of zkleader: config.py applies these
rules (``parse`` the ones about the text, ``load`` the ones that read files, so that a
missing or unreadable file is a configuration error, exit 78, and never a run-time
surprise), and connection.py turns the checked result into kazoo's arguments.

Secrets: the password is read once, kept in a ``Secret`` (whose repr and str are a
mask, so it cannot leak through a log line, a traceback's locals or a dataclass
repr) and unwrapped only to build kazoo's ``auth_data``.
"""

from __future__ import annotations

import base64
import hashlib
import ipaddress
import os
import re
import ssl
import stat
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

#: Bytes: a password file bigger than this is a mistake (a key, a log, a directory).
MAX_SECRET_BYTES = 4096


class Permissions:
    """ZooKeeper's permission bits (ZooDefs.Perms), as every client sends them."""

    READ = 1
    WRITE = 2
    CREATE = 4
    DELETE = 8
    ADMIN = 16
    ALL = 31


PERMISSIONS: Mapping[str, int] = {
    "read": Permissions.READ,
    "write": Permissions.WRITE,
    "create": Permissions.CREATE,
    "delete": Permissions.DELETE,
    "admin": Permissions.ADMIN,
}
_LETTERS = {"r": "read", "w": "write", "c": "create", "d": "delete", "a": "admin"}
#: What every daemon of an election needs on the election path: list and read the
#: queue, create and delete its own node, publish the leader (set data).
NEEDED = ("read", "write", "create", "delete")
SCHEMES = ("world", "auth", "digest", "ip", "x509", "sasl")
_DIGEST_ID = re.compile(r"^[^:\s]+:[A-Za-z0-9+/]{27}=$")
_USERNAME = re.compile(r"^[A-Za-z0-9_.@-]{1,128}$")


class Secret:
    """A password that never prints itself."""

    __slots__ = ("_value",)

    def __init__(self, value: str) -> None:
        self._value = value

    def reveal(self) -> str:
        return self._value

    def __repr__(self) -> str:
        return "Secret('********')"

    __str__ = __repr__

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Secret) and other._value == self._value

    def __hash__(self) -> int:
        return hash(self._value)


@dataclass(frozen=True)
class AclEntry:
    """One ZooKeeper ACL entry: scheme, id and a permission bit mask."""

    scheme: str
    id: str
    perms: int

    def __str__(self) -> str:
        letters = "".join(letter for letter, name in _LETTERS.items() if self.perms & PERMISSIONS[name])
        return f"{self.scheme}:{self.id}:{letters}"


# ------------------------------------------------------------------- secrets


def secret_path(value: Any) -> str:
    """zookeeper.auth.password_file as written; the file itself is read by ``read_secret``."""
    if not isinstance(value, str) or not value.startswith("/") or "\0" in value:
        raise ValueError("must be an absolute path to a file holding the password")
    return value


def read_secret(path: str) -> tuple[Secret, int]:
    """The password in ``path`` (one line; a final newline is dropped) and the file's
    mode. Raises ValueError with a message that never contains the file's content."""
    raw, mode = _small_file(path, MAX_SECRET_BYTES, "password file", read=True)
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError:
        raise ValueError(f"{path} is not UTF-8 text") from None
    if text.endswith("\r\n"):
        text = text[:-2]
    elif text.endswith("\n"):
        text = text[:-1]
    if not text:
        raise ValueError(f"{path} is empty: it must hold the password")
    if any(c in text for c in "\n\r\0"):
        raise ValueError(f"{path} must hold the password alone on one line")
    return Secret(text), mode


def exposure_warning(path: str, mode: int) -> str | None:
    """Why a secret file with this mode is too open, or None."""
    if mode & 0o077 == 0:
        return None
    who = " and ".join(w for w, bits in (("group", 0o070), ("others", 0o007)) if mode & bits)
    return (f"the password file {path} is accessible to {who} (mode {mode:04o}); "
            f"make it readable by zkleader's user only: chmod 600 {path}")


def check_username(value: Any) -> str:
    if not isinstance(value, str) or not _USERNAME.match(value):
        raise ValueError("must be a user name of 1..128 letters, digits, '_', '.', '@' or '-'")
    return value


def digest_id(username: str, password: Secret) -> str:
    """ZooKeeper's digest identity for these credentials: user:base64(sha1(user:password))."""
    hashed = hashlib.sha1(f"{username}:{password.reveal()}".encode()).digest()
    return f"{username}:{base64.b64encode(hashed).decode()}"


# ---------------------------------------------------------------------- ACLs


def creator_acl() -> tuple[AclEntry, ...]:
    """The authenticated identity that creates a node gets everything; anyone may read."""
    return (AclEntry("auth", "", Permissions.ALL), AclEntry("world", "anyone", Permissions.READ))


def parse_acl_entry(value: Any) -> AclEntry:
    """``"scheme:id:perms"`` (perms as letters rwcda) or a mapping
    ``{scheme, id, perms}`` (perms: a list of read/write/create/delete/admin, or "all",
    or letters). Raises ValueError naming what is wrong."""
    if isinstance(value, str):
        scheme, sep, rest = value.partition(":")
        ident, sep2, letters = rest.rpartition(":")
        if not sep or not sep2:
            raise ValueError(f'"{_clip(value)}" is not "scheme:id:perms" such as "world:anyone:r"')
        perms = _perms(letters)
    elif isinstance(value, dict):
        unknown = sorted(str(k) for k in value if k not in ("scheme", "id", "perms"))
        if unknown:
            raise ValueError(f"unknown key {unknown[0]!r} in an ACL entry (known: scheme, id, perms)")
        if "scheme" not in value or "perms" not in value:
            raise ValueError("an ACL entry needs scheme, id and perms")
        scheme, ident = value["scheme"], value.get("id", "")
        if not isinstance(scheme, str):
            raise ValueError("an ACL entry's scheme must be a string")
        if not isinstance(ident, str):
            raise ValueError(f"the id of a {_clip(scheme)} ACL entry must be a string (quote it)")
        perms = _perms(value["perms"])
    else:
        raise ValueError('each ACL entry must be "scheme:id:perms" or a mapping {scheme, id, perms}')
    if scheme not in SCHEMES:
        raise ValueError(f'unknown ACL scheme "{_clip(scheme)}" (known: {", ".join(SCHEMES)})')
    _check_id(scheme, ident)
    if perms == 0:
        raise ValueError(f"the ACL entry for {scheme}:{_clip(ident)} grants no permission")
    return AclEntry(scheme, ident, perms)


def _perms(value: Any) -> int:
    if isinstance(value, str):
        if value == "all":
            return Permissions.ALL
        if not value or any(c not in _LETTERS for c in value) or len(set(value)) != len(value):
            raise ValueError(f'"{_clip(value)}" is not a set of permission letters from "rwcda" (or "all")')
        return sum(PERMISSIONS[_LETTERS[c]] for c in value)
    if isinstance(value, list) and value:
        total = 0
        for name in value:
            if name == "all":
                bits = Permissions.ALL
            elif isinstance(name, str) and name in PERMISSIONS:
                bits = PERMISSIONS[name]
            else:
                raise ValueError(f"{_clip(repr(name))} is not a permission (read, write, create, delete, admin, all)")
            if total & bits and name != "all":
                raise ValueError(f"permission {name} is listed twice")
            total |= bits
        return total
    raise ValueError("perms must be a non-empty list such as [read, create] or letters such as \"rwcda\"")


def _check_id(scheme: str, ident: str) -> None:
    if any(ord(c) < 0x20 or ord(c) == 0x7F for c in ident):
        raise ValueError(f"the id of a {scheme} ACL entry contains a control character")
    if scheme == "world" and ident != "anyone":
        raise ValueError('the only world id is "anyone" (world:anyone)')
    if scheme == "auth" and ident != "":
        raise ValueError('an auth entry (the creator) has an empty id: "auth::cdrwa"')
    if scheme == "digest" and not _DIGEST_ID.match(ident):
        raise ValueError('a digest id is "user:base64(sha1(user:password))", e.g. "zkleader:4aU2...=" (28 characters after the colon)')
    if scheme == "ip":
        try:
            ipaddress.ip_network(ident, strict=False)
        except ValueError:
            raise ValueError(f'"{_clip(ident)}" is not an IP address or network such as 10.0.0.0/8') from None
    if scheme in ("x509", "sasl") and not ident.strip():
        raise ValueError(f"a {scheme} entry needs an id (the certificate's subject DN or the SASL principal)")


def acl_problem(entries: Iterable[AclEntry], has_identity: bool) -> str | None:
    """Why a configured ACL list would lock the daemons out, or None. The entry for the
    daemons' own digest is checked against the password by ``digest_problem``."""
    entries = tuple(entries)
    if not entries:
        return "an ACL list must not be empty"
    seen: set[tuple[str, str]] = set()
    for entry in entries:
        if (entry.scheme, entry.id) in seen:
            return f"the ACL lists {entry.scheme}:{_clip(entry.id)} twice"
        seen.add((entry.scheme, entry.id))
        if entry.scheme == "auth" and not has_identity:
            return "an auth (creator) entry needs zookeeper.auth or a client certificate in zookeeper.tls"
    granted = 0
    for entry in entries:
        granted |= entry.perms
    missing = [name for name in NEEDED if not granted & PERMISSIONS[name]]
    if missing:
        return (f"no entry grants {', '.join(missing)}: every daemon needs {', '.join(NEEDED)} on the "
                "election path")
    return None


def digest_problem(entries: Iterable[AclEntry], username: str, password: Secret) -> str | None:
    """Why the digest entry for ``username`` would lock the daemons out (it names another
    password than the one they authenticate with), or None."""
    for entry in entries:
        if entry.scheme == "digest" and entry.id.split(":", 1)[0] == username \
                and entry.id != digest_id(username, password):
            return (f"the digest entry for user {username} does not match the password in "
                    "zookeeper.auth.password_file: the daemons would lock themselves out")
    return None


def _clip(text: str, limit: int = 60) -> str:
    text = "".join(c if c.isprintable() else "?" for c in str(text))
    return text if len(text) <= limit else text[: limit - 3] + "..."


# ----------------------------------------------------------------------- TLS


def check_tls_files(ca: str, cert: str | None, key: str | None) -> dict[str, str]:
    """Loads the CA and the client key pair the way kazoo will; returns problems by
    key name ("ca", "cert", "key"), empty when all is well."""
    problems: dict[str, str] = {}
    for name, path in (("ca", ca), ("cert", cert), ("key", key)):
        if path is not None:
            problem = _pem_file_problem(path)
            if problem:
                problems[name] = problem
    if problems:
        return problems
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    try:
        context.load_verify_locations(cafile=ca)
    except (ssl.SSLError, ValueError, OSError) as err:
        problems["ca"] = f"{ca} holds no PEM CA certificate ({_ssl_reason(err)})"
    if cert is not None and key is not None:
        try:
            context.load_cert_chain(certfile=cert, keyfile=key, password=_no_password)
        except _EncryptedKey:
            problems["key"] = f"{key} is encrypted; zkleader needs an unencrypted key (protect it with chmod 600)"
        except (ssl.SSLError, ValueError, OSError) as err:
            reason = _ssl_reason(err)
            which = "key" if "KEY" in reason.upper() else "cert"
            problems[which] = f"{cert} and {key} are not a matching PEM certificate and key ({reason})"
    return problems


#: Bytes: PEM files are small; a bigger "certificate" is a wrong path.
MAX_PEM_BYTES = 1 << 20


def _pem_file_problem(path: str) -> str | None:
    """OpenSSL would block on a FIFO and read /dev/zero forever: only a readable
    regular file of sane size goes to it."""
    try:
        _small_file(path, MAX_PEM_BYTES, "PEM file", read=False)
    except ValueError as err:
        return str(err)
    return None


def _small_file(path: str, limit: int, kind: str, *, read: bool) -> tuple[bytes, int]:
    """What a readable regular file of at most ``limit`` bytes holds (nothing unless
    ``read``) and its mode. Raises ValueError saying what is wrong, never what the file
    holds. Opened without blocking, so that a FIFO cannot hang the loader."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK)
    except (OSError, ValueError) as err:
        raise ValueError(_cannot_read(path, err)) from None
    try:
        info = os.fstat(fd)
        if not stat.S_ISREG(info.st_mode):
            raise ValueError(f"{path} is not a regular file")
        if info.st_size > limit:
            raise ValueError(f"{path} is larger than {limit} bytes: not a {kind}")
        return (os.read(fd, limit + 1) if read else b""), stat.S_IMODE(info.st_mode)
    except OSError as err:
        raise ValueError(_cannot_read(path, err)) from None
    finally:
        os.close(fd)


class _EncryptedKey(Exception):
    pass


def _no_password() -> str:
    # OpenSSL asks for a password only for an encrypted key. Without this callback it
    # would prompt on the terminal, and a daemon would hang.
    raise _EncryptedKey()


def _cannot_read(path: str, err: BaseException) -> str:
    return f"cannot read {path}: {getattr(err, 'strerror', None) or err}"


def _ssl_reason(err: BaseException) -> str:
    reason = getattr(err, "reason", None) or getattr(err, "strerror", None) or str(err)
    return str(reason)
