"""Loading and checking the YAML configuration.

Every problem becomes one line naming the file, the line and the dotted key, so an
operator can fix a config without reading a traceback, and ``zkleader validate`` and
``zkleader run`` share exactly these checks. The YAML is composed into nodes (not
loaded straight into dicts) because only nodes remember the line they came from.

``parse`` checks the text and nothing else: it reads no file and asks nothing of the
host, so any text can be thrown at it. ``load`` reads the file and then what the text
points at (the password file, the TLS files) and fills in this host's name as the
default candidate. The allowed keys of each section are the fields of its dataclass,
so a new setting is one field and its check. Turning the result into kazoo's
arguments is the ZooKeeper shell's business (connection.py).
"""

from __future__ import annotations

import enum
import math
import os
import re
import reprlib
import signal
import socket
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, fields, replace
from typing import Any, TypeVar

import yaml

from . import security
from .core import timing
from .core.settings import OnExit
from .security import AclEntry, Secret

DEFAULT_PATH = "/etc/zkleader/zkleader.yaml"
ENV_VAR = "ZKLEADER_CONFIG"


class LogFormat(enum.Enum):
    AUTO = "auto"
    CONSOLE = "console"
    JSON = "json"
    JOURNALD = "journald"


LOG_LEVELS = ("debug", "info", "warning", "error")


AUTH_SCHEMES = ("digest", "sasl")

#: The metadata of a dataclass field that is no key of its YAML section (it is derived
#: from other keys, or filled in by ``load``).
_NOT_A_KEY = {"key": False}


@dataclass(frozen=True)
class AuthConfig:
    """zookeeper.auth: the identity the daemon authenticates as. The password is read
    from password_file by ``load`` (so a reload picks up a new one) and kept masked.
    ``password`` is a key only to be refused: passwords are never written inline."""

    scheme: str
    username: str
    password_file: str
    #: None in what ``parse`` returns: it reads no file.
    password: Secret | None = field(default=None, repr=False)
    #: Set when the file is readable by group or others (one line, file:line:key).
    warning: str | None = field(default=None, compare=False, repr=False, metadata=_NOT_A_KEY)


@dataclass(frozen=True)
class TlsConfig:
    """zookeeper.tls: TLS to ZooKeeper's secureClientPort."""

    ca: str
    cert: str | None = None
    key: str | None = None
    verify_hostname: bool = True


#: zookeeper.acl: "open" (world may do anything), "creator" (the authenticated creator
#: may do anything, world may read) or an explicit list of entries.
Acl = str | tuple[AclEntry, ...]


@dataclass(frozen=True)
class ZooKeeperConfig:
    hosts: tuple[str, ...] = ("127.0.0.1:2181",)
    #: The "/chroot" suffix of zookeeper.hosts.
    chroot: str | None = field(default=None, metadata=_NOT_A_KEY)
    session_timeout: float = 10.0
    #: The servers' tickTime: it bounds how late a session touch reaches the ZooKeeper
    #: leader, which the lease must allow for (timing.py).
    tick_time: float = timing.DEFAULT_TICK_TIME
    auth: AuthConfig | None = None
    acl: Acl = "open"
    tls: TlsConfig | None = None

    @property
    def connection_string(self) -> str:
        return ",".join(self.hosts) + (self.chroot or "")


@dataclass(frozen=True)
class EtcdAuthConfig:
    """etcd.auth: the etcd user (etcd's user/password auth) all daemons of an election
    share. The password is read from password_file by ``load``, as zookeeper.auth's;
    ``password`` is a key only to be refused."""

    username: str
    password_file: str
    password: Secret | None = field(default=None, repr=False)
    warning: str | None = field(default=None, compare=False, repr=False, metadata=_NOT_A_KEY)


#: etcd grants leases in whole seconds; the lease budget sets the real floor (timing.py).
ETCD_LEASE_TTL_RANGE = range(1, 3601)


@dataclass(frozen=True)
class EtcdConfig:
    """The ``etcd:`` section, the alternative to ``zookeeper:`` (issue 17; etcd.py):
    endpoints as ``host:port``, the lease TTL T in whole seconds (etcd's unit), TLS as
    for ZooKeeper (gRPC always checks the server's hostname: ``verify_hostname: false``
    is refused rather than silently not honoured), and an etcd user."""

    endpoints: tuple[str, ...] = ("127.0.0.1:2379",)
    lease_ttl: int = 10
    tls: TlsConfig | None = None
    auth: EtcdAuthConfig | None = None

    @property
    def endpoint_string(self) -> str:
        """The endpoints as one string, for logs and the fd store (Config.servers)."""
        return ",".join(self.endpoints)


@dataclass(frozen=True)
class ElectionConfig:
    path: str
    #: None in what ``parse`` returns when the file names none: ``load`` puts this
    #: host's name here.
    candidate: str | None = None
    #: Higher leads first at a failover (queue order among equals); in the node's name.
    priority: int = 0
    #: None: never preempt. Else a leader hands over to a higher-priority candidate
    #: that has stayed queued this long (core/preference.py).
    preempt_after: float | None = None

    @property
    def candidate_name(self) -> str:
        """The candidate's name: ``candidate``, or this host's name, as ``load`` fills
        it in (a parsed configuration may have none)."""
        return self.candidate if self.candidate is not None else socket.gethostname()


@dataclass(frozen=True)
class JobConfig:
    command: tuple[str, ...] | str
    stop_signal: signal.Signals = signal.SIGTERM
    stop_timeout: float = 2.0
    #: From SIGKILL to the job reaped: a job with a large resident set keeps its locks
    #: and ports while the kernel tears its memory down (timing.py).
    reap_allowance: float = timing.DEFAULT_REAP_ALLOWANCE
    on_exit: OnExit = OnExit.RESTART
    restart_delay: float = 1.0
    environment: Mapping[str, str] = field(default_factory=dict)
    working_directory: str | None = None

    @property
    def argv(self) -> tuple[str, ...]:
        return _argv(self.command)


def _argv(command: tuple[str, ...] | str) -> tuple[str, ...]:
    """A list is exec'd as is; a string runs through /bin/sh -c."""
    return ("/bin/sh", "-c", command) if isinstance(command, str) else command


@dataclass(frozen=True)
class LoggingConfig:
    level: str = "info"
    format: LogFormat = LogFormat.AUTO


@dataclass(frozen=True)
class HealthConfig:
    """An optional check that gates candidacy: a failing host withdraws from the election."""

    command: tuple[str, ...] | str
    interval: float = 5.0
    timeout: float = 2.0
    failures: int = 3
    successes: int = 2

    @property
    def argv(self) -> tuple[str, ...]:
        return _argv(self.command)


@dataclass(frozen=True)
class HooksConfig:
    """Commands run on leadership transitions (hooks.py runs them, core/hooks.py says
    when), one at a time in the order of the transitions, each within ``timeout``."""

    on_leader: tuple[str, ...] | str | None = None
    on_follower: tuple[str, ...] | str | None = None
    on_lost: tuple[str, ...] | str | None = None
    on_stop: tuple[str, ...] | str | None = None
    #: Runs between leadership confirmed and the job's start; non-zero vetoes leading.
    before_lead: tuple[str, ...] | str | None = None
    timeout: float = 10.0

    def argv(self, kind: str) -> tuple[str, ...] | None:
        """The command of hook ``kind``, or None when it is not configured."""
        command = getattr(self, kind, None) if kind in HOOK_KINDS else None
        return None if command is None else _argv(command)

    @property
    def kinds(self) -> frozenset[str]:
        """The hooks configured: the only ones the core emits."""
        return frozenset(kind for kind in HOOK_KINDS if getattr(self, kind) is not None)


#: The hooks.* keys that name a command.
HOOK_KINDS = ("on_leader", "on_follower", "on_lost", "on_stop", "before_lead")


@dataclass(frozen=True)
class MetricsConfig:
    #: metrics.listen: the (host, port) the HTTP endpoint binds.
    listen: tuple[str, int]

    @property
    def host(self) -> str:
        return self.listen[0]

    @property
    def port(self) -> int:
        return self.listen[1]


@dataclass(frozen=True)
class HttpConfig:
    #: http.listen: the (host, port) of the endpoints for load balancers (http.py).
    listen: tuple[str, int]


@dataclass(frozen=True)
class Config:
    source: str = field(metadata=_NOT_A_KEY)
    zookeeper: ZooKeeperConfig
    election: ElectionConfig
    job: JobConfig
    logging: LoggingConfig
    health: HealthConfig | None = None
    metrics: MetricsConfig | None = None
    http: HttpConfig | None = None
    hooks: HooksConfig | None = None
    #: Set instead of a ``zookeeper:`` section (never both): the election runs on etcd,
    #: and ``zookeeper`` holds unused defaults.
    etcd: EtcdConfig | None = None

    @property
    def warnings(self) -> tuple[str, ...]:
        """Problems that do not stop the daemon (one line each, file:line: key: ...)."""
        auth = self.etcd.auth if self.etcd is not None else self.zookeeper.auth
        return (auth.warning,) if auth is not None and auth.warning else ()

    @property
    def servers(self) -> str:
        """The coordination servers as one string that names the backend: what the fd
        store keeps with a session, so that the daemon restarted after a crash releases
        it only if the servers are still the same (fdstore.py)."""
        if self.etcd is not None:
            return f"etcd {self.etcd.endpoint_string}"
        return self.zookeeper.connection_string

    @property
    def lease_timing(self) -> tuple[float, float]:
        """(T, tick_time) for the lease budget (timing.py): ZooKeeper's session timeout
        and tickTime, or etcd's lease TTL and no relay allowance: only the etcd leader
        renews a lease, before it answers the keep-alive (tests/etcd-timing.md)."""
        if self.etcd is not None:
            return float(self.etcd.lease_ttl), ETCD_TICK_TIME
        return self.zookeeper.session_timeout, self.zookeeper.tick_time


#: The relay allowance of etcd's lease rule: none. A ZooKeeper follower reports session
#: touches to its leader up to tickTime/2 late; an etcd keep-alive is answered only after
#: the etcd leader's lessor renewed the lease (tests/etcd-timing.md).
ETCD_TICK_TIME = 0.0


@dataclass(frozen=True)
class Problem:
    source: str
    line: int | None
    key: str
    message: str

    def __str__(self) -> str:
        where = f"{self.source}:{self.line}" if self.line else self.source
        text = f"{where}: {self.key}: {self.message}" if self.key else f"{where}: {self.message}"
        return _one_line(text)


def _one_line(text: str) -> str:
    """Keys and values come from the file: a line break or a terminal escape in one
    must not break the one-line-per-problem promise."""
    if text.isprintable():
        return text
    return "".join(c if c.isprintable() else repr(c)[1:-1] for c in text)


class ConfigError(Exception):
    """One or more problems; str() is one line per problem."""

    def __init__(self, problems: list[Problem]) -> None:
        super().__init__("\n".join(str(p) for p in problems))
        self.problems = problems


def resolve_path(cli_path: str | None, environ: Mapping[str, str] = os.environ) -> str:
    """-c wins, then $ZKLEADER_CONFIG, then the system default."""
    return cli_path or environ.get(ENV_VAR) or DEFAULT_PATH


def load(path: str) -> Config:
    """The configuration in the file at ``path``, with what the text points at read
    and checked: every problem of the text and of those files at once."""
    try:
        with open(path, "rb") as handle:
            raw = handle.read()
    except OSError as err:
        raise ConfigError([Problem(path, None, "", f"cannot read: {err.strerror or err}")]) from None
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as err:
        raise ConfigError([Problem(path, None, "", f"not UTF-8 text (byte {err.start})")]) from None
    reader = _Reader(path)
    parsed = reader.read(text)
    secret = reader.read_files()
    if reader.problems or parsed is None:
        raise ConfigError(reader.problems)
    zookeeper, election, etcd = parsed.zookeeper, parsed.election, parsed.etcd
    if zookeeper.auth is not None and secret is not None:
        zookeeper = replace(zookeeper, auth=replace(zookeeper.auth, password=secret[0], warning=secret[1]))
    if etcd is not None and etcd.auth is not None and secret is not None:
        etcd = replace(etcd, auth=replace(etcd.auth, password=secret[0], warning=secret[1]))
    if election.candidate is None:
        election = replace(election, candidate=election.candidate_name)
    return replace(parsed, zookeeper=zookeeper, election=election, etcd=etcd)


def parse(text: str, source: str = "<config>") -> Config:
    """What the text says, checked. Pure: the password is not read (``password`` is
    None), the TLS files are not looked at and a missing candidate stays None; ``load``
    does all three."""
    reader = _Reader(source)
    config = reader.read(text)
    if reader.problems or config is None:
        raise ConfigError(reader.problems)
    return config


T = TypeVar("T")
_DURATION = re.compile(r"^\s*(\d+(?:\.\d*)?|\.\d+)\s*(ms|s|m)?\s*$")
_UNIT_SECONDS = {"ms": 0.001, "s": 1.0, "m": 60.0, None: 1.0}
_HOST = re.compile(r"^(\[[0-9A-Fa-f:.]+\]|[A-Za-z0-9_.-]+)(?::(\d+))?$")
_ENV_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")
_MISSING = object()


def _keys(section: type) -> tuple[str, ...]:
    """The keys a section of the file may hold: its dataclass's fields, in their order."""
    return tuple(f.name for f in fields(section) if f.metadata.get("key", True))


class _Reader:
    """Walks composed YAML nodes, collecting every problem instead of stopping at the
    first. The walk reads no file: it notes what the text points at (the password file,
    the TLS files, the ACL entry that must match the password) for ``read_files``."""

    def __init__(self, source: str) -> None:
        self.source = source
        self.problems: list[Problem] = []
        self._constructor = yaml.SafeLoader("")
        #: The password file, its node and its dotted key (zookeeper.auth or etcd.auth).
        self._password_file: tuple[str, yaml.Node, str] | None = None
        #: The TLS files, their nodes and the section they came from (zookeeper or etcd).
        self._tls_files: tuple[TlsConfig, dict[str, yaml.Node], str] | None = None
        #: An explicit ACL list, its node, and the user whose password it must match.
        self._acl_list: tuple[tuple[AclEntry, ...], yaml.Node, str] | None = None

    def read(self, text: str) -> Config | None:
        """The configuration the text describes, or None with ``problems`` saying why."""
        try:
            return self.config(self._compose(text))
        except RecursionError:
            # PyYAML composes and constructs recursively: "[[[[...]]]]" thousands deep.
            raise ConfigError([Problem(self.source, None, "", "invalid YAML: nested too deeply")]) from None

    def _compose(self, text: str) -> yaml.Node | None:
        try:
            return yaml.compose(text, Loader=yaml.SafeLoader)
        except yaml.MarkedYAMLError as err:
            mark = err.problem_mark or err.context_mark
            line = mark.line + 1 if mark else None
            reason = (err.problem or err.context or "invalid YAML").strip()
            raise ConfigError([Problem(self.source, line, "", f"invalid YAML: {reason}")]) from None
        except yaml.YAMLError as err:
            raise ConfigError([Problem(self.source, None, "", f"invalid YAML: {err}")]) from None

    def read_files(self) -> tuple[Secret, str | None] | None:
        """Reads the password file and checks the TLS files the text named, adding their
        problems; returns the password and the warning about its file's mode, if any."""
        secret: tuple[Secret, str | None] | None = None
        if self._password_file is not None:
            path, node, key = self._password_file
            try:
                password, mode = security.read_secret(path)
            except ValueError as err:
                self.problem(node, key, str(err))
            else:
                exposed = security.exposure_warning(path, mode)
                line = node.start_mark.line + 1
                secret = (password, str(Problem(self.source, line, key, exposed)) if exposed else None)
        if self._tls_files is not None:
            tls, nodes, section = self._tls_files
            for name, problem in security.check_tls_files(tls.ca, tls.cert, tls.key).items():
                self.problem(nodes.get(name), f"{section}.tls.{name}", problem)
        if self._acl_list is not None and secret is not None:
            entries, node, username = self._acl_list
            acl_problem = security.digest_problem(entries, username, secret[0])
            if acl_problem:
                self.problem(node, "zookeeper.acl", acl_problem)
        return secret

    def problem(self, node: yaml.Node | None, key: str, message: str) -> None:
        line = node.start_mark.line + 1 if node is not None else None
        self.problems.append(Problem(self.source, line, key, message))

    def value(self, node: yaml.Node) -> Any:
        return self._constructor.construct_object(node, deep=True)

    def mapping(self, node: yaml.Node | None, key: str, section: type) -> dict[str, yaml.Node] | None:
        """The entries of a mapping node, reporting keys that are no field of ``section``
        and duplicate keys."""
        if node is None or _is_null(node):
            return {}
        if not isinstance(node, yaml.MappingNode):
            self.problem(node, key, "must be a mapping")
            return None
        allowed = _keys(section)
        entries: dict[str, yaml.Node] = {}
        for key_node, value_node in node.value:
            name = key_node.value if isinstance(key_node, yaml.ScalarNode) else None
            dotted = f"{key}.{name}" if key else str(name)
            if name not in allowed:
                known = ", ".join(allowed)
                self.problem(key_node, dotted, f"unknown key (known here: {known})")
            elif name in entries:
                self.problem(key_node, dotted, "duplicate key")
            else:
                entries[name] = value_node
        return entries

    def field(
        self,
        entries: dict[str, yaml.Node],
        section: str,
        name: str,
        convert: Callable[[Any], T],
        default: Any = _MISSING,
    ) -> T | None:
        """Converts one entry; a converter raises ValueError with the user-facing reason."""
        dotted = f"{section}.{name}"
        node = entries.get(name)
        if node is None:
            if default is _MISSING:
                self.problem(None, dotted, "required key is missing")
                return None
            return default
        try:
            return convert(self.value(node))
        except (ValueError, TypeError) as err:
            self.problem(node, dotted, str(err))
        except yaml.YAMLError as err:
            self.problem(node, dotted, f"invalid value: {err}")
        return None

    def config(self, root: yaml.Node | None) -> Config | None:
        if root is None:
            self.problem(None, "", "the file is empty; election.path and job.command are required")
            return None
        top = self.mapping(root, "", Config)
        if top is None:
            return None
        zookeeper = self.zookeeper(top)
        etcd = self.etcd(top)
        election = self.election(top)
        job = self.job(top)
        logging_ = self.logging(top)
        before = len(self.problems)
        health = self.health(top)
        metrics = self.metrics(top)
        http = self.http(top, metrics)
        hooks = self.hooks(top, zookeeper, etcd, job)
        if zookeeper is None or election is None or job is None or logging_ is None or len(self.problems) > before:
            return None
        if "etcd" in top and etcd is None:
            return None
        if etcd is not None:
            problem = _etcd_budget_problem(etcd.lease_ttl, job)
            if problem:
                entries = self.mapping(top["etcd"], "etcd", EtcdConfig) or {}
                self.problem(entries.get("lease_ttl") or top["etcd"], "etcd.lease_ttl", problem)
                return None
            return Config(self.source, zookeeper, election, job, logging_, health, metrics, http=http, hooks=hooks,
                          etcd=etcd)
        problem = timing.budget_problem(zookeeper.session_timeout, job.stop_timeout, tick_time=zookeeper.tick_time,
                                        reap_allowance=job.reap_allowance)
        if problem:
            job_entries = self.mapping(top.get("job"), "job", JobConfig) or {}
            self.problem(job_entries.get("stop_timeout") or top.get("job"), "job.stop_timeout", problem)
            return None
        return Config(self.source, zookeeper, election, job, logging_, health, metrics, http=http, hooks=hooks)

    def zookeeper(self, top: dict[str, yaml.Node]) -> ZooKeeperConfig | None:
        entries = self.mapping(top.get("zookeeper"), "zookeeper", ZooKeeperConfig)
        if entries is None:
            return None
        before = len(self.problems)
        hosts = self.field(entries, "zookeeper", "hosts", _hosts, default=(ZooKeeperConfig.hosts, None))
        session_timeout = self.field(
            entries, "zookeeper", "session_timeout", _session_timeout, default=ZooKeeperConfig.session_timeout
        )
        tick_time = self.field(entries, "zookeeper", "tick_time", _positive_duration, default=ZooKeeperConfig.tick_time)
        auth = self.auth(entries)
        tls = self.tls(entries, "zookeeper")
        if len(self.problems) > before:
            return None
        assert session_timeout is not None and tick_time is not None
        if tick_time > session_timeout / 2:
            self.problem(entries.get("tick_time") or entries.get("session_timeout"), "zookeeper.tick_time",
                         f"{tick_time:g}s is more than half of zookeeper.session_timeout {session_timeout:g}s; "
                         "ZooKeeper grants sessions of at least two ticks")
            return None
        acl = self.acl(entries, auth, tls)
        if hosts is None or session_timeout is None or acl is None:
            return None
        return ZooKeeperConfig(hosts=hosts[0], chroot=hosts[1], session_timeout=session_timeout,
                               tick_time=tick_time, auth=auth, acl=acl, tls=tls)

    def auth(self, entries: dict[str, yaml.Node]) -> AuthConfig | None:
        node = entries.get("auth")
        if node is None or _is_null(node):
            return None
        auth = self.mapping(node, "zookeeper.auth", AuthConfig)
        if auth is None:
            return None
        before = len(self.problems)
        if "password" in auth:
            # Never echo the value: it may be the real password.
            self.problem(auth["password"], "zookeeper.auth.password",
                         "passwords are never accepted inline; put it in a file only zkleader's user can read "
                         "and name that file in zookeeper.auth.password_file")
        scheme = self.field(auth, "zookeeper.auth", "scheme", _auth_scheme, default="digest")
        username = self.field(auth, "zookeeper.auth", "username", security.check_username)
        password_file = self.field(auth, "zookeeper.auth", "password_file", security.secret_path)
        if password_file is not None:
            self._password_file = (password_file, auth["password_file"], "zookeeper.auth.password_file")
        if len(self.problems) > before or scheme is None or username is None or password_file is None:
            return None
        return AuthConfig(scheme, username, password_file)

    def etcd(self, top: dict[str, yaml.Node]) -> EtcdConfig | None:
        """The ``etcd:`` section, or None without one. Refused next to a ``zookeeper:``
        section: one daemon elects on one backend (without either, ZooKeeper's defaults
        apply, as before etcd existed)."""
        node = top.get("etcd")
        if node is None:
            return None
        if "zookeeper" in top:
            line = top["zookeeper"].start_mark.line + 1
            self.problem(node, "etcd", f"a zookeeper section is set too (line {line}): an election runs on "
                         "ZooKeeper or on etcd; keep one of the two sections")
            return None
        entries = self.mapping(node, "etcd", EtcdConfig)
        if entries is None:
            return None
        before = len(self.problems)
        endpoints = self.field(entries, "etcd", "endpoints", _endpoints, default=EtcdConfig.endpoints)
        lease_ttl = self.field(entries, "etcd", "lease_ttl", _lease_ttl, default=EtcdConfig.lease_ttl)
        tls = self.tls(entries, "etcd")
        auth = self.etcd_auth(entries)
        if len(self.problems) > before or endpoints is None or lease_ttl is None:
            return None
        if tls is not None and not tls.verify_hostname:
            tls_entries = self.mapping(entries["tls"], "etcd.tls", TlsConfig) or {}
            self.problem(tls_entries.get("verify_hostname"), "etcd.tls.verify_hostname",
                         "false cannot be honoured: gRPC always checks that the server's certificate names the "
                         "endpoint's host; give each member a certificate with its host name or address, and "
                         "remove the key")
            return None
        return EtcdConfig(endpoints=endpoints, lease_ttl=lease_ttl, tls=tls, auth=auth)

    def etcd_auth(self, entries: dict[str, yaml.Node]) -> EtcdAuthConfig | None:
        node = entries.get("auth")
        if node is None or _is_null(node):
            return None
        auth = self.mapping(node, "etcd.auth", EtcdAuthConfig)
        if auth is None:
            return None
        before = len(self.problems)
        if "password" in auth:
            self.problem(auth["password"], "etcd.auth.password",
                         "passwords are never accepted inline; put it in a file only zkleader's user can read "
                         "and name that file in etcd.auth.password_file")
        username = self.field(auth, "etcd.auth", "username", security.check_username)
        password_file = self.field(auth, "etcd.auth", "password_file", security.secret_path)
        if password_file is not None:
            self._password_file = (password_file, auth["password_file"], "etcd.auth.password_file")
        if len(self.problems) > before or username is None or password_file is None:
            return None
        return EtcdAuthConfig(username, password_file)

    def tls(self, entries: dict[str, yaml.Node], section: str) -> TlsConfig | None:
        """``<section>.tls`` (zookeeper or etcd: the same keys and checks)."""
        node = entries.get("tls")
        if node is None or _is_null(node):
            return None
        where = f"{section}.tls"
        tls = self.mapping(node, where, TlsConfig)
        if tls is None:
            return None
        before = len(self.problems)
        ca = self.field(tls, where, "ca", _file_path)
        cert = self.field(tls, where, "cert", _file_path_or_null, default=None)
        key = self.field(tls, where, "key", _file_path_or_null, default=None)
        verify_hostname = self.field(tls, where, "verify_hostname", _boolean, default=True)
        if len(self.problems) > before or ca is None or verify_hostname is None:
            return None
        if (cert is None) != (key is None):
            missing = "key" if key is None else "cert"
            given = "cert" if key is None else "key"
            self.problem(tls.get(given), f"{where}.{missing}",
                         f"{where}.{given} is set, so {where}.{missing} is needed too (a client "
                         "certificate comes with its key)")
            return None
        tls_config = TlsConfig(ca=ca, cert=cert, key=key, verify_hostname=verify_hostname)
        self._tls_files = (tls_config, tls, section)
        return tls_config

    def acl(self, entries: dict[str, yaml.Node], auth: AuthConfig | None, tls: TlsConfig | None) -> Acl | None:
        """Default: creator with zookeeper.auth, open without."""
        node = entries.get("acl")
        has_identity = auth is not None or (tls is not None and tls.cert is not None)
        if node is None or _is_null(node):
            return "creator" if auth is not None else "open"
        if isinstance(node, yaml.SequenceNode):
            acl: list[AclEntry] = []
            for index, item in enumerate(node.value):
                key = f"zookeeper.acl[{index}]"
                try:
                    acl.append(security.parse_acl_entry(self.value(item)))
                except (ValueError, TypeError) as err:
                    self.problem(item, key, str(err))
                except yaml.YAMLError as err:
                    self.problem(item, key, f"invalid value: {err}")
            if len(acl) != len(node.value):
                return None
            problem = security.acl_problem(acl, has_identity)
            if problem:
                self.problem(node, "zookeeper.acl", problem)
                return None
            if auth is not None:
                self._acl_list = (tuple(acl), node, auth.username)
            return tuple(acl)
        try:
            value = self.value(node)
        except yaml.YAMLError as err:
            self.problem(node, "zookeeper.acl", f"invalid value: {err}")
            return None
        if value not in ("creator", "open"):
            self.problem(node, "zookeeper.acl", 'must be creator, open or a list of entries such as '
                         '["auth::cdrwa", "world:anyone:r"], not ' + _describe_short(value))
            return None
        if value == "creator" and not has_identity:
            self.problem(node, "zookeeper.acl", "creator needs an identity to grant: set zookeeper.auth "
                         "(or a client certificate in zookeeper.tls), or use acl: open")
            return None
        return value

    def election(self, top: dict[str, yaml.Node]) -> ElectionConfig | None:
        node = top.get("election")
        if node is None:
            self.problem(None, "election", "required section is missing (it needs at least election.path)")
            return None
        entries = self.mapping(node, "election", ElectionConfig)
        if entries is None:
            return None
        before = len(self.problems)
        path = self.field(entries, "election", "path", _znode_path)
        candidate = self.field(entries, "election", "candidate", _candidate, default=ElectionConfig.candidate)
        priority = self.field(entries, "election", "priority", _priority, default=ElectionConfig.priority)
        preempt_after = self.field(entries, "election", "preempt_after", _duration_or_null, default=None)
        if path is None or priority is None or len(self.problems) > before:
            return None
        return ElectionConfig(path=path, candidate=candidate, priority=priority, preempt_after=preempt_after)

    def job(self, top: dict[str, yaml.Node]) -> JobConfig | None:
        node = top.get("job")
        if node is None:
            self.problem(None, "job", "required section is missing (it needs at least job.command)")
            return None
        entries = self.mapping(node, "job", JobConfig)
        if entries is None:
            return None
        before = len(self.problems)
        values: dict[str, Any] = {  # each checked by its own converter; None where it failed (then unused)
            "command": self.field(entries, "job", "command", _command),
            "stop_signal": self.field(entries, "job", "stop_signal", _signal, default=JobConfig.stop_signal),
            "stop_timeout": self.field(entries, "job", "stop_timeout", _positive_duration, default=JobConfig.stop_timeout),
            "reap_allowance": self.field(entries, "job", "reap_allowance", _positive_duration,
                                         default=JobConfig.reap_allowance),
            "on_exit": self.field(entries, "job", "on_exit", _enum(OnExit), default=JobConfig.on_exit),
            "restart_delay": self.field(entries, "job", "restart_delay", _duration, default=JobConfig.restart_delay),
            "environment": self.field(entries, "job", "environment", _environment, default={}),
            "working_directory": self.field(entries, "job", "working_directory", _absolute_or_null, default=None),
        }
        if len(self.problems) > before:
            return None
        return JobConfig(**values)

    def health(self, top: dict[str, yaml.Node]) -> HealthConfig | None:
        if top.get("health") is None:
            return None
        entries = self.mapping(top["health"], "health", HealthConfig)
        if entries is None:
            return None
        before = len(self.problems)
        values: dict[str, Any] = {  # as in job()
            "command": self.field(entries, "health", "command", _command),
            "interval": self.field(entries, "health", "interval", _positive_duration, default=HealthConfig.interval),
            "timeout": self.field(entries, "health", "timeout", _positive_duration, default=HealthConfig.timeout),
            "failures": self.field(entries, "health", "failures", _count, default=HealthConfig.failures),
            "successes": self.field(entries, "health", "successes", _count, default=HealthConfig.successes),
        }
        if len(self.problems) > before:
            return None
        return HealthConfig(**values)

    def metrics(self, top: dict[str, yaml.Node]) -> MetricsConfig | None:
        if top.get("metrics") is None:
            return None
        entries = self.mapping(top["metrics"], "metrics", MetricsConfig)
        if entries is None:
            return None
        listen = self.field(entries, "metrics", "listen", _listen)
        return None if listen is None else MetricsConfig(listen)

    def http(self, top: dict[str, yaml.Node], metrics: MetricsConfig | None) -> HttpConfig | None:
        if top.get("http") is None:
            return None
        entries = self.mapping(top["http"], "http", HttpConfig)
        if entries is None:
            return None
        listen = self.field(entries, "http", "listen", _listen)
        if listen is not None and metrics is not None and listen == metrics.listen:
            self.problem(entries["listen"], "http.listen",
                         "is metrics.listen too: one port, one listener (http.listen serves /metrics as well)")
            return None
        return None if listen is None else HttpConfig(listen)

    def hooks(self, top: dict[str, yaml.Node], zookeeper: ZooKeeperConfig | None, etcd: EtcdConfig | None,
              job: JobConfig | None) -> HooksConfig | None:
        """The optional ``hooks`` section; a section without any command is None. With
        before_lead, hooks.timeout must fit a new leader's first lease (its tree is
        killed by the lease's SIGKILL instant anyway: timing.before_lead_window)."""
        if top.get("hooks") is None:
            return None
        entries = self.mapping(top["hooks"], "hooks", HooksConfig)
        if entries is None:
            return None
        before = len(self.problems)
        values: dict[str, Any] = {
            kind: self.field(entries, "hooks", kind, _command_or_null, default=None) for kind in HOOK_KINDS
        }
        values["timeout"] = self.field(entries, "hooks", "timeout", _positive_duration, default=HooksConfig.timeout)
        if len(self.problems) > before:
            return None
        hooks = HooksConfig(**values)
        if hooks.before_lead is not None and etcd is not None and job is not None:
            window = timing.before_lead_window(etcd.lease_ttl, ETCD_TICK_TIME, job.reap_allowance)
            if hooks.timeout > window:
                self.problem(entries.get("timeout") or entries["before_lead"], "hooks.timeout",
                             f"{hooks.timeout:g}s does not fit the lease with hooks.before_lead set: a new leader's "
                             f"first lease leaves it {window:.2f}s (etcd.lease_ttl {etcd.lease_ttl}s); lower "
                             f"hooks.timeout to at most {max(window, 0):.2f}s or raise etcd.lease_ttl")
                return None
        elif hooks.before_lead is not None and zookeeper is not None and job is not None:
            window = timing.before_lead_window(zookeeper.session_timeout, zookeeper.tick_time, job.reap_allowance)
            if hooks.timeout > window:
                self.problem(entries.get("timeout") or entries["before_lead"], "hooks.timeout",
                             f"{hooks.timeout:g}s does not fit the lease with hooks.before_lead set: a new leader's "
                             f"first lease leaves it {window:.2f}s (zookeeper.session_timeout "
                             f"{zookeeper.session_timeout:g}s, zookeeper.tick_time {zookeeper.tick_time:g}s); lower "
                             f"hooks.timeout to at most {max(window, 0):.2f}s or raise zookeeper.session_timeout")
                return None
        return hooks if hooks.kinds else None

    def logging(self, top: dict[str, yaml.Node]) -> LoggingConfig | None:
        entries = self.mapping(top.get("logging"), "logging", LoggingConfig)
        if entries is None:
            return None
        level = self.field(entries, "logging", "level", _choice(LOG_LEVELS), default=LoggingConfig.level)
        log_format = self.field(entries, "logging", "format", _enum(LogFormat), default=LoggingConfig.format)
        if level is None or log_format is None:
            return None
        return LoggingConfig(level=level, format=log_format)


def _is_null(node: yaml.Node) -> bool:
    return isinstance(node, yaml.ScalarNode) and node.tag == "tag:yaml.org,2002:null"


def _auth_scheme(value: Any) -> str:
    if value == "sasl":
        raise ValueError("sasl is not supported yet; use digest (ZooKeeper's built-in user:password scheme)")
    if value not in AUTH_SCHEMES:
        raise ValueError(f"must be digest, not {_describe_short(value)}")
    return value


_REPR = reprlib.Repr()
_REPR.maxstring = _REPR.maxother = 60
_REPR.maxlevel = 2


def _short(value: Any) -> str:
    """A bounded repr: a value may be a 5 MB string or an alias bomb."""
    return _REPR.repr(value)


def _quoted(text: str) -> str:
    """A string from the file in double quotes, clipped."""
    return f'"{text if len(text) <= 60 else text[:57] + "..."}"'


def _describe_short(value: Any) -> str:
    if isinstance(value, str):
        return repr(value if len(value) <= 40 else value[:37] + "...")
    return _describe(value)


def _file_path(value: Any) -> str:
    path = _string(value, "an absolute path to a PEM file")
    if not path.startswith("/") or "\0" in path:
        raise ValueError(f"{_describe_short(path)} must be an absolute path")
    return path


def _file_path_or_null(value: Any) -> str | None:
    return None if value is None else _file_path(value)


def _boolean(value: Any) -> bool:
    if not isinstance(value, bool):
        raise ValueError(f"must be true or false, not {_describe_short(value)}")
    return value


def _string(value: Any, what: str = "a string") -> str:
    if not isinstance(value, str):
        raise ValueError(f"must be {what}, not {_describe(value)}")
    return value


def _describe(value: Any) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return f"a boolean ({str(value).lower()})"
    return {int: "a number", float: "a number", list: "a list", dict: "a mapping", str: "a string"}.get(
        type(value), type(value).__name__
    )


def _duration(value: Any) -> float:
    """Seconds as a number, or a string such as "1.5s", "500ms" or "2m"."""
    if isinstance(value, bool) or not isinstance(value, (int, float, str)):
        raise ValueError(f'must be a duration such as 2, "1.5s" or "500ms", not {_describe(value)}')
    if isinstance(value, str):
        match = _DURATION.match(value)
        if not match:
            raise ValueError(f'{_quoted(value)} is not a duration (use a number of seconds, "1.5s", "500ms" or "2m")')
        seconds = float(match.group(1)) * _UNIT_SECONDS[match.group(2)]
    else:
        seconds = float(value)
    if seconds < 0:
        raise ValueError("must not be negative")
    if seconds >= 86400 * 365:
        raise ValueError(f"{value!r} is out of range (at most a year)")
    return seconds


def _duration_or_null(value: Any) -> float | None:
    return None if value is None else _duration(value)


def _positive_duration(value: Any) -> float:
    seconds = _duration(value)
    if seconds <= 0:
        raise ValueError("must be greater than zero")
    return seconds


def _session_timeout(value: Any) -> float:
    seconds = _duration(value)
    if seconds < timing.MIN_SESSION_TIMEOUT:
        raise ValueError(f"must be at least {timing.MIN_SESSION_TIMEOUT:g}s")
    if seconds > 3600:
        raise ValueError("must be at most 3600s (ZooKeeper caps sessions far lower)")
    return seconds


def _lease_ttl(value: Any) -> int:
    """Whole seconds: etcd grants leases in seconds. The floor that matters is the lease
    budget's (checked with job.stop_timeout, ``_etcd_budget_problem``); etcd itself
    raises a TTL below ceil(1.5 x its election timeout), which only lengthens the lease."""
    if isinstance(value, bool) or not isinstance(value, int) or value not in ETCD_LEASE_TTL_RANGE:
        raise ValueError(f"must be a whole number of seconds from {ETCD_LEASE_TTL_RANGE.start} to "
                         f"{ETCD_LEASE_TTL_RANGE.stop - 1} (etcd grants leases in whole seconds), not {_short(value)}")
    return value


def _etcd_budget_problem(lease_ttl: int, job: JobConfig) -> str | None:
    """timing.LeaseBudget with T = the lease TTL and no relay allowance (ETCD_TICK_TIME),
    in etcd's keys and whole seconds."""
    if timing.budget_problem(lease_ttl, job.stop_timeout, tick_time=ETCD_TICK_TIME,
                             reap_allowance=job.reap_allowance) is None:
        return None
    needed = timing.min_session_timeout(job.stop_timeout, 0.0, ETCD_TICK_TIME, job.reap_allowance)
    fits = timing.max_stop_timeout(lease_ttl, 0.0, ETCD_TICK_TIME, job.reap_allowance)
    lower = f"lower job.stop_timeout to at most {fits:.2f}s or " if fits > 0 else ""
    return (f"{lease_ttl}s with job.stop_timeout {job.stop_timeout:g}s and job.reap_allowance "
            f"{job.reap_allowance:g}s leaves no room to stop the job before the lease could expire: "
            f"{lower}raise etcd.lease_ttl to at least {math.ceil(needed)}s")


def _endpoints(value: Any) -> tuple[str, ...]:
    """etcd.endpoints: as zookeeper.hosts (a list or one comma-separated string), with
    etcd's client port as the default and no chroot (etcd has no such suffix)."""
    if isinstance(value, str) and "/" in value:
        raise ValueError(f'"{value}" is not "host:port" (etcd endpoints take no path or scheme)')
    if isinstance(value, list) and any(isinstance(v, str) and "/" in v for v in value):
        raise ValueError('entries must be "host:port" (etcd endpoints take no path or scheme)')
    return _hosts(value, default_port=2379, example="h1:2379,h2:2379")[0]


def _hosts(value: Any, default_port: int = 2181,
           example: str = "h1:2181,h2:2181") -> tuple[tuple[str, ...], str | None]:
    """A list of "host:port" or one comma-separated string; a "/chroot" may end either."""
    if isinstance(value, str):
        text = value
    elif isinstance(value, list) and value and all(isinstance(v, str) for v in value):
        text = ",".join(value)
    else:
        raise ValueError(f'must be a list of "host:port" strings or one "{example}" string, not {_describe(value)}')
    chroot = None
    slash = text.find("/")
    if slash >= 0:
        text, chroot = text[:slash], _znode_path(text[slash:], "the chroot suffix")
    hosts = []
    for entry in (part.strip() for part in text.split(",")):
        match = _HOST.match(entry)
        if not match:
            raise ValueError(f'"{entry}" is not "host:port"')
        port = int(match.group(2) or default_port)
        if not 0 < port < 65536:
            raise ValueError(f'"{entry}": port must be 1..65535')
        hosts.append(f"{match.group(1)}:{port}")
    return tuple(hosts), chroot


def _znode_path(value: Any, what: str = "the path") -> str:
    path = _string(value, "an absolute ZooKeeper path such as /zkleader/report")
    if not path.startswith("/") or path == "/":
        raise ValueError(f'{what} "{path}" must be absolute and below "/", e.g. /zkleader/report')
    if path.endswith("/") or "//" in path:
        raise ValueError(f'{what} "{path}" has an empty component or a trailing "/"')
    parts = path.split("/")[1:]
    if any(p in (".", "..") for p in parts):
        raise ValueError(f'{what} "{path}" may not contain "." or ".." components')
    if parts[0] == "zookeeper":
        raise ValueError(f'{what} "{path}" is inside /zookeeper, which ZooKeeper reserves')
    if any(ord(c) < 0x20 or 0x7F <= ord(c) <= 0x9F or 0xD800 <= ord(c) <= 0xF8FF or ord(c) >= 0xFFF0 for c in path):
        raise ValueError(f'{what} contains a character ZooKeeper does not allow in paths')
    return path


def _candidate(value: Any) -> str:
    name = _string(str(value) if isinstance(value, int) and not isinstance(value, bool) else value)
    if not name.strip() or len(name) > 255 or any(ord(c) < 0x20 for c in name):
        raise ValueError("must be a printable name of 1..255 characters")
    return name


def _command(value: Any) -> tuple[str, ...] | str:
    if isinstance(value, str):
        if not value.strip():
            raise ValueError("must not be empty")
        return value
    if isinstance(value, list) and value and all(isinstance(v, str) for v in value):
        if not value[0]:
            raise ValueError("the program (first item) must not be empty")
        if any("\0" in v for v in value):
            raise ValueError("must not contain NUL characters")
        return tuple(value)
    raise ValueError(f"must be a non-empty list of strings (exec'd) or a string (run by /bin/sh -c), not {_describe(value)}")


def _command_or_null(value: Any) -> tuple[str, ...] | str | None:
    return None if value is None else _command(value)


def _signal(value: Any) -> signal.Signals:
    if isinstance(value, int) and not isinstance(value, bool):
        try:
            return signal.Signals(value)
        except ValueError:
            raise ValueError(f"{value} is not a signal number") from None
    name = _string(value, 'a signal name such as "SIGTERM"').strip().upper()
    name = name if name.startswith("SIG") else "SIG" + name
    if name in ("SIGKILL", "SIGSTOP"):
        raise ValueError(f"{name} cannot be a graceful stop signal (SIGKILL follows stop_timeout anyway)")
    try:
        return signal.Signals[name]
    except KeyError:
        raise ValueError(f'{_quoted(value)} is not a signal name such as "SIGTERM" or "SIGINT"') from None


E = TypeVar("E", bound=enum.Enum)


def _enum(kind: type[E]) -> Callable[[Any], E]:
    choices = " | ".join(str(m.value) for m in kind)

    def convert(value: Any) -> E:
        try:
            if not isinstance(value, str):
                raise ValueError  # Enum's own message would repr the value, however big
            return kind(value)
        except ValueError:
            raise ValueError(f"must be one of {choices}, not {_short(value)}") from None

    return convert


def _choice(choices: tuple[str, ...]) -> Callable[[Any], str]:
    def convert(value: Any) -> str:
        if value not in choices:
            raise ValueError(f"must be one of {' | '.join(choices)}, not {_short(value)}")
        return value

    return convert


def _count(value: Any) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or not 1 <= value <= 1000:
        raise ValueError(f"must be a whole number from 1 to 1000, not {_short(value)}")
    return value


#: Written into the node's name (core/preference.py), so bounded to a fixed width.
PRIORITY_RANGE = range(-999, 1000)


def _priority(value: Any) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value not in PRIORITY_RANGE:
        raise ValueError(f"must be a whole number from {PRIORITY_RANGE.start} to {PRIORITY_RANGE.stop - 1}, "
                         f"not {_short(value)}")
    return value


def _listen(value: Any) -> tuple[str, int]:
    text = _string(value, 'an address such as "127.0.0.1:9108"')
    match = _HOST.match(text.strip())
    if not match or not match.group(2) or not 0 < int(match.group(2)) < 65536:
        raise ValueError(f'"{text}" is not "host:port" (e.g. "127.0.0.1:9108")')
    return match.group(1).strip("[]"), int(match.group(2))


def _environment(value: Any) -> dict[str, str]:
    if value is None:
        return {}
    if not isinstance(value, dict):
        raise ValueError(f"must be a mapping of NAME: value, not {_describe(value)}")
    result = {}
    for name, item in value.items():
        if not isinstance(name, str) or not _ENV_NAME.match(name):
            raise ValueError(f"{_short(name)} is not a valid variable name")
        if isinstance(item, bool) or not isinstance(item, (str, int, float)):
            raise ValueError(f"{name}: value must be a string or a number (quote booleans), not {_describe(item)}")
        text = str(item)
        if "\0" in text:
            raise ValueError(f"{name}: value must not contain NUL")
        result[name] = text
    return result


def _absolute_or_null(value: Any) -> str | None:
    if value is None:
        return None
    path = _string(value, "an absolute directory path or null")
    if not path.startswith("/") or "\0" in path:
        raise ValueError(f'"{path}" must be an absolute path')
    return path
