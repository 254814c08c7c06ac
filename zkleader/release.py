"""Ends a dead daemon's ZooKeeper session: what its guardian becomes (guardian.py).

Why: a daemon killed on a healthy host (kill -9, the OOM killer, an uncaught error)
leaves its session alive on the servers until it expires, a whole session timeout,
and the successor waits that long although the job is already dead. The guardian
knows both facts first: its lifeline closed, and it has reaped every process of the
job. Only then does it exec this module, which attaches to the session by its id and
password (kazoo's ``client_id``) and closes it, so the node goes and the successor's
watch fires at once.

Bounded and harmless when it fails: if no server answers within the session timeout
the session expires on its own anyway; if the session already expired, ZooKeeper
hands kazoo a new one, and closing that is a no-op for the election. The password
arrives on an inherited pipe (``--secret-fd``), never argv or the environment, and is
never logged. Runs as ``python -m zkleader.release CONFIG --secret-fd N``.

On etcd (an ``etcd:`` section) the session is a lease: it is revoked by its id
(etcd.revoke), its keys go at once, and the password the guardian passes on is a
stand-in (etcd.LEASE_PASSWORD). A lease that expired already counts as released.
"""

from __future__ import annotations

import argparse
import logging
import os
import sys

import structlog

from . import config, logs
from .connection import client_options
from .core import exitcodes


def read_secret(fd: int) -> tuple[int, bytes]:
    """The session id and password the guardian wrote: two hex words."""
    with os.fdopen(fd, "rb") as pipe:
        words = pipe.read(4096).split()
    if len(words) != 2:
        raise ValueError("expected a session id and a password")
    return int(words[0], 16), bytes.fromhex(words[1].decode())


def unanswered(loaded: config.Config) -> str:
    """Why a release failed, for the journal: nobody answered in time."""
    servers = "etcd member" if loaded.etcd is not None else "ZooKeeper server"
    return f"no {servers} answered; the session expires on its own"


def release(loaded: config.Config, session_id: int, password: bytes) -> bool:
    """Attaches to the session and closes it; False when no server could be reached in
    a session timeout (it then expires on its own)."""
    if loaded.etcd is not None:
        from .etcd import revoke  # grpc and pyetcd only for an etcd election

        return revoke(loaded.etcd, session_id, within=loaded.etcd.lease_ttl)
    from kazoo.client import KazooClient  # only here: the import is most of our start-up

    zookeeper = loaded.zookeeper
    client = KazooClient(
        hosts=zookeeper.connection_string,
        timeout=zookeeper.session_timeout,
        client_id=(session_id, password),
        connection_retry={"max_tries": -1, "delay": 0.05, "backoff": 2, "max_delay": 1.0},
        logger=logging.getLogger("kazoo"),
        **client_options(zookeeper),
    )
    try:
        client.start(timeout=zookeeper.session_timeout)
    except Exception:  # kazoo's timeout, TLS or auth refusals: expiry does the rest
        client.stop()
        client.close()
        return False
    client.stop()  # sends closeSession and waits for its answer
    client.close()
    return True


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m zkleader.release")
    parser.add_argument("config")
    parser.add_argument("--secret-fd", type=int, required=True)
    args = parser.parse_args(argv)
    try:
        session_id, password = read_secret(args.secret_fd)
    except (OSError, ValueError) as err:
        print(f"zkleader: release: cannot read the session from fd {args.secret_fd}: {err}", file=sys.stderr)
        return exitcodes.FAILURE
    try:
        loaded = config.load(args.config)
    except config.ConfigError as err:
        print(f"zkleader: release: {err.problems[0]}; the session expires on its own", file=sys.stderr)
        return exitcodes.CONFIG
    logs.configure(loaded.logging.level, loaded.logging.format, logs.context(loaded))
    log = structlog.get_logger()
    session = f"0x{session_id:x}"
    if release(loaded, session_id, password):
        log.warning("session_released", session=session, reason="the daemon died; its job is reaped")
        code = exitcodes.OK
    else:
        log.warning("session_release_failed", session=session, reason=unanswered(loaded))
        code = exitcodes.UNAVAILABLE
    return code  # logs.py flushes its queue at exit


if __name__ == "__main__":
    sys.exit(main())
