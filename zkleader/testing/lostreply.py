"""``python -m zkleader.testing.lostreply run -c CONFIG``: `zkleader run` on etcd whose
first candidacy put is applied by etcd and its reply lost (fault 7 at the daemon level,
tests/test_etcd_faults.py).

FaultProxy cannot drop one gRPC reply (calls are multiplexed on HTTP/2 streams, see
tests/fault-results.md, section etcd), so the loss is made inside the daemon process,
as the shell-level fault 7 makes it: the pyetcd client of the daemon's first
connection lets its first candidacy transaction (the Txn that puts
``<election>/zkl-<id>-`` on the lease) go to etcd and be answered, then closes its
channel and raises UNAVAILABLE, what a connection broken before the reply gives. The
daemon itself is unchanged: this module patches ``zkleader.etcd.connect`` and then
runs ``zkleader.cli.main``.

What was lost is written to stdout (the daemon's log in DaemonGroup) as one JSON line,
event ``test_create_reply_lost``, with the key, the lease, the put's revision and the
CLOCK_MONOTONIC time of the loss, so that the test can check the daemon recovered that
very key on that lease.
"""

from __future__ import annotations

import json
import os
import re
import sys
import time
from typing import Any

import grpc  # type: ignore[import-untyped]
from pyetcd.transactions import Put  # type: ignore[import-untyped]

import zkleader.etcd
from zkleader.cli import main
from zkleader.config import EtcdConfig
from zkleader.core.candidacy import PREFIX

EVENT = "test_create_reply_lost"
_CANDIDACY_KEY = re.compile(rf"/{PREFIX}[0-9a-f]{{32}}-$")


class Unavailable(grpc.RpcError):  # type: ignore[misc]
    """The error a call gets when its connection breaks before the reply."""

    def code(self) -> Any:
        return grpc.StatusCode.UNAVAILABLE

    def details(self) -> str:
        return "connection closed before the reply (test: lost reply)"


class LoseCreateReply:
    """A pyetcd client whose first candidacy transaction is applied and its reply lost;
    every other call passes through (the lease grant, keep-alives, reads)."""

    def __init__(self, client: Any, fired: list[dict[str, Any]]) -> None:
        self._client = client
        self._fired = fired

    def transaction(self, compare: Any, success: Any, failure: Any) -> Any:
        put = next((op for op in success if isinstance(op, Put) and _CANDIDACY_KEY.search(op.key)), None)
        if self._fired or put is None:
            return self._client.transaction(compare=compare, success=success, failure=failure)
        created, answers = self._client.transaction(compare=compare, success=success, failure=failure)
        record = {"event": EVENT, "t": time.monotonic(), "key": put.key, "lease": put.lease, "created": bool(created),
                  "revision": answers[0].response_put.header.revision if created else None}
        self._fired.append(record)
        self._client.close()
        # One write(2) on the daemon's log (fd 1, opened O_APPEND): not torn by its lines.
        os.write(1, (json.dumps(record) + "\n").encode())
        raise Unavailable()

    def __getattr__(self, name: str) -> Any:
        return getattr(self._client, name)


def install() -> list[dict[str, Any]]:
    """Patches ``zkleader.etcd.connect``: clients are wrapped until the loss happened,
    so only one candidacy put of the process loses its reply. The records of the loss."""
    fired: list[dict[str, Any]] = []
    real_connect = zkleader.etcd.connect

    def connect(config: EtcdConfig, endpoint: str, timeout: float) -> Any:
        client = real_connect(config, endpoint, timeout)
        return client if fired else LoseCreateReply(client, fired)

    zkleader.etcd.connect = connect
    return fired


if __name__ == "__main__":
    install()
    sys.exit(main(sys.argv[1:]))
