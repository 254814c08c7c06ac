"""One step's output, raft's ``Ready``: the actions in order, and the requests whose
replies are still awaited (and why each was sent, which decides what its reply means)."""

from __future__ import annotations

import enum
from collections.abc import Callable

from . import actions as act


class Purpose(enum.Enum):
    """Why a request was sent: decides what its reply means."""

    CREATE = "create"
    LIST = "list"
    RECOVER = "recover"  # a synced listing after a create whose reply was lost
    CHECK_PREDECESSOR = "check_predecessor"
    CHECK_OWN = "check_own"  # the heartbeat: sync + exists with a watch
    WATCH_OWN = "watch_own"  # a follower's exists watch on its own node
    PUBLISH = "publish"
    DELETE_OWN = "delete_own"
    DELETE_EXTRA = "delete_extra"
    CHECK_DRAIN = "check_drain"  # exists with a watch on our drain marker (drain.py)
    READ_CONTROL = "read_control"  # the freeze and handover markers, synced (preference.py)
    WATCH_CONTROL = "watch_control"  # exists watches on those markers: the leader's, or a frozen-out waker's
    EVICT = "evict"  # a node between a yielding daemon and the candidate it yields to
    CLEAR_HANDOVER = "clear_handover"  # a handover request that is done or void
    POKE = "poke"  # a follower that outranks the leader wakes it (the preempt marker)
    CLAIM = "claim"  # the leader's claim (claim.py): its create
    CHECK_CLAIM = "check_claim"  # whose the claim is, with a watch for its deletion
    RELEASE_CLAIM = "release_claim"  # its delete, once the job is reaped


class Outbox:
    def __init__(self) -> None:
        self._actions: list[act.Action] = []
        self._last_request = 0
        self._awaited: dict[int, Purpose] = {}

    def emit(self, *actions: act.Action) -> None:
        self._actions.extend(actions)

    def log(self, event: str, level: str = "info", **fields: object) -> None:
        self._actions.append(act.Log(event, level, fields))

    def request(self, purpose: Purpose, build: Callable[[int], act.Action]) -> None:
        """Emits the request ``build(request_id)`` and remembers why it was sent."""
        self._last_request += 1
        self._awaited[self._last_request] = purpose
        self._actions.append(build(self._last_request))

    def awaiting(self, purpose: Purpose) -> bool:
        return purpose in self._awaited.values()

    def answered(self, request_id: int) -> Purpose | None:
        """Why the request was sent, or None for a reply nobody waits for any more."""
        return self._awaited.pop(request_id, None)

    def stop_awaiting(self, *keep: Purpose) -> None:
        """Replies to everything but ``keep`` will be ignored from now on."""
        self._awaited = {rid: p for rid, p in self._awaited.items() if p in keep}

    def take(self) -> list[act.Action]:
        """The step's actions, stopping the job first and starting it next (a stable
        sort): the shells may take their time over the rest, logging and the
        informative leader record included, but never while a job that must stop
        still runs, nor on the failover path between a confirmed leadership and its job."""
        out, self._actions = self._actions, []
        out.sort(key=_urgency)
        return out


def _urgency(action: act.Action) -> int:
    """Job stop, job start, the rest (leaving the queue included), then hooks (only
    queued by the shell, yet after every safety action all the same), then the step's
    end (Exit, Reopen: nothing after them runs, and on_stop must be queued first)."""
    if isinstance(action, (act.SignalJob, act.KillJob)):
        return 0
    if isinstance(action, act.StartJob):
        return 1
    if isinstance(action, act.RunHook):
        return 3
    return 4 if isinstance(action, (act.Exit, act.Reopen)) else 2
