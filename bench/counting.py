"""Client-side counters: requests issued and watch notifications delivered.

kazoo sends every request through ``KazooClient._call`` and reads every server
notification in ``ConnectionHandler._read_watch_event``; pings go out through
``ConnectionHandler._send_ping``. Wrapping those three on one client instance counts
exactly what that session sends and receives, without touching zkleader's code.
Pinned to kazoo 2.11's private API (as zkleader.zookeeper is).
"""

from __future__ import annotations

import threading
from collections import Counter
from collections.abc import Callable
from typing import Any

_LOCK = threading.Lock()


class Counters:
    """One candidate's counts. ``periodic``: requests that keep a session or a lease
    alive on a timer (zkleader's leader heartbeat, etcd keepalives), reported apart
    from the requests a leadership change causes."""

    def __init__(self) -> None:
        self.requests: Counter[str] = Counter()
        self.periodic = 0
        self.notifications = 0
        self.pings = 0
        #: Connections lost (Suspended) and sessions or leases lost (SessionLost), as
        #: the daemon's loop took them: on a starved machine, what a storm is made of.
        self.suspended = 0
        self.sessions_lost = 0

    def request(self, kind: str) -> None:
        with _LOCK:
            self.requests[kind] += 1

    def tick_periodic(self) -> None:
        with _LOCK:
            self.periodic += 1

    def notification(self, count: int = 1) -> None:
        with _LOCK:
            self.notifications += count

    def ping(self) -> None:
        with _LOCK:
            self.pings += 1

    def lost(self, session: bool) -> None:
        with _LOCK:
            if session:
                self.sessions_lost += 1
            else:
                self.suspended += 1


def instrument_kazoo(
    client: Any,
    counters: Counters,
    periodic: Callable[[Any], bool] | None = None,
    on_created: Callable[[], None] | None = None,
    on_notification: Callable[[], None] | None = None,
) -> None:
    """Counts on one KazooClient. periodic(request) -> True for a timer-driven request;
    on_created: called once a Create request of this client succeeded; on_notification:
    called on kazoo's connection thread as it reads a watch notification off the socket,
    before kazoo hands it to the callbacks."""
    original_call = client._call
    connection = client._connection
    original_watch = connection._read_watch_event
    original_ping = connection._send_ping

    def call(request: Any, async_object: Any) -> Any:
        if periodic is not None and periodic(request):
            counters.tick_periodic()
        else:
            counters.request(type(request).__name__)
        if on_created is not None and type(request).__name__ == "Create":
            async_object.rawlink(lambda result: on_created() if result.successful() else None)
        return original_call(request, async_object)

    def read_watch_event(buffer: Any, offset: int) -> Any:
        if on_notification is not None:
            on_notification()
        counters.notification()
        return original_watch(buffer, offset)

    def send_ping(connect_timeout: float) -> Any:
        counters.ping()
        return original_ping(connect_timeout)

    client._call = call
    connection._read_watch_event = read_watch_event
    connection._send_ping = send_ping


def cut_kazoo_session(client: Any) -> None:
    """The in-process kill -9: the session's socket is dropped without a CloseSession
    and the client never reconnects, so the server must expire the session."""
    import socket

    client._stopped.set()  # the connection loop exits instead of reconnecting; no Close is sent
    sock = getattr(client._connection, "_socket", None)
    if sock is not None:
        try:
            sock.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass
