"""systemd's side of NOTIFY_SOCKET, for tests: a bound datagram socket that reads what
the daemon sends (notify.py), the descriptors of an FDSTORE=1 included."""

from __future__ import annotations

import array
import os
import shutil
import socket
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager


class Receiver:
    def __init__(self, sock: socket.socket) -> None:
        self.sock = sock

    def next(self, timeout: float = 2.0) -> bytes:
        """The next datagram."""
        self.sock.settimeout(timeout)
        return self.sock.recv(65536)

    def next_with_fds(self, timeout: float = 2.0) -> tuple[list[str], list[int]]:
        """The next datagram's lines, and the descriptors it carried (now ours)."""
        self.sock.settimeout(timeout)
        data, ancillary, _, _ = self.sock.recvmsg(65536, socket.CMSG_SPACE(16 * 4))
        fds = array.array("i")
        for level, kind, payload in ancillary:
            if level == socket.SOL_SOCKET and kind == socket.SCM_RIGHTS:
                fds.frombytes(payload[: len(payload) - len(payload) % fds.itemsize])
        return data.decode().split("\n"), list(fds)

    def nothing(self, wait: float = 0.2) -> bool:
        """True when nothing arrives within ``wait``; a datagram fails the test."""
        self.sock.settimeout(wait)
        try:
            data = self.sock.recv(65536)
        except TimeoutError:
            return True
        raise AssertionError(f"unexpected datagram {data!r}")


@contextmanager
def bound(prefix: str = "zkn-") -> Iterator[tuple[str, Receiver]]:
    """A datagram socket bound at a fresh short path (sun_path has 108 bytes): the
    value for NOTIFY_SOCKET, and its receiver."""
    directory = tempfile.mkdtemp(prefix=prefix)
    path = os.path.join(directory, "notify")
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    sock.bind(path)
    try:
        yield path, Receiver(sock)
    finally:
        sock.close()
        shutil.rmtree(directory, ignore_errors=True)
