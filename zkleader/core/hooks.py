"""When the transition hooks run (the shell, zkleader/hooks.py, runs them).

Why in the core: the order of transitions is the core's knowledge, and keepalived's
notify scripts ran out of order precisely because each transition was detected by a
different part of the program. Here one object tracks the role last announced to the
hooks and emits ``RunHook`` in the order the core sees transitions; the shell runs
them one at a time, in that order.

A hook never delays a safety action: ``RunHook`` sorts after the job's stop and start
(``Outbox.take``), and the shell only queues it. Pure: no I/O, no clock.

Kinds (the config keys ``hooks.<kind>``):

- ``on_leader``: this host leads and its job has started (JobStarted), once per
  leadership (a job restarted under the same leadership fires nothing).
- ``on_follower``: this host follows (first time, or again after leading or losing).
- ``on_lost``: leadership ended, with the reason (lost, resigned, handed over on
  shutdown, session lost).
- ``on_stop``: the daemon stops (its job reaped, about to exit).
- ``before_lead``: a check between leadership confirmed and the job's start; a
  non-zero exit (or a timeout) vetoes: the host steps back to the end of the queue.
  It runs on the lease like the job: its deadline (``RunHook.deadline``) is the
  earlier of ``hooks.timeout`` from now and the lease's SIGKILL instant, so its tree
  is killed before the session could expire even if ZooKeeper never answers again;
  config.py refuses a ``hooks.timeout`` that a new leader's first lease cannot hold
  (``timing.before_lead_window``). Once per leadership: a job restarted by
  ``on_exit: restart`` is not checked again.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from . import actions as act
from . import events as ev

if TYPE_CHECKING:
    from .leadership import Leadership

#: The hooks that only report a transition (the simulation emits them all).
KINDS = ("on_leader", "on_follower", "on_lost", "on_stop")
#: The hook that can veto leading.
BEFORE_LEAD = "before_lead"

#: After a veto, the host queues again no sooner than this: alone in the queue, it
#: would otherwise lead, check and veto again as fast as ZooKeeper answers.
VETO_BACKOFF = 1.0

#: before_lead's state within one leadership.
PENDING, PASSED = "pending", "passed"

#: The roles a hook's ZKLEADER_FROM / ZKLEADER_TO name.
NONE, FOLLOWER, LEADER, STOPPED = "none", "follower", "leader", "stopped"


class Transitions:
    """The role last announced to the hooks. Kept apart from ``Candidacy`` because it
    outlives candidacies: "following again after leading" spans a new node."""

    def __init__(self) -> None:
        self.role = NONE
        #: True between leader_acquired and its end, so that on_lost fires once per
        #: leadership even when it ends before the job ever started.
        self.leading = False
        #: None (not asked yet in this leadership), PENDING or PASSED.
        self.before_lead: str | None = None
        #: When the host may queue again after a veto (None: at once).
        self.rejoin_at: float | None = None


def acquired(core: Leadership) -> None:
    """Leadership confirmed: on_leader waits for the job's start (``job_started``)."""
    core.transitions.leading = True
    core.transitions.before_lead = None


def cleared_to_lead(core: Leadership) -> bool:
    """Whether the job may start as far as before_lead is concerned (the lease and the
    rest are lead.enforce's). Asks for the check once per leadership, on the lease in
    force: called only while that lease is valid, so its kill instant is set."""
    tr = core.transitions
    if BEFORE_LEAD not in core.settings.hooks or tr.before_lead == PASSED:
        return True
    if tr.before_lead is None:
        kill_by = core.lease.kill_by()
        assert kill_by is not None
        tr.before_lead = PENDING
        fields = _fields(core, BEFORE_LEAD, tr.role, LEADER, "leadership confirmed")
        core.out.emit(act.RunHook(BEFORE_LEAD, fields, deadline=min(core.now + core.settings.hook_timeout, kill_by)))
    return False


def rejoin_at(core: Leadership) -> float | None:
    """When a host that just left may queue again: after a veto, VETO_BACKOFF later;
    otherwise None (at once). Asked once per leave."""
    tr = core.transitions
    at, tr.rejoin_at = tr.rejoin_at, None
    return at if at is not None and at > core.now else None


def on_before_lead_checked(core: Leadership, event: ev.BeforeLeadChecked) -> str | None:
    """The verdict, for this leadership only (a late one for an earlier is ignored).
    Returns the reason to step back when it is a veto (the caller leaves: leave.py
    needs this module, so this module does not call it)."""
    tr = core.transitions
    if tr.before_lead != PENDING or not core.me.leader or core.me.token != event.token or core.leave is not None:
        return None
    if event.ok:
        tr.before_lead = PASSED  # lead.enforce starts the job in this same step
        return None
    tr.before_lead = None
    tr.rejoin_at = core.now + VETO_BACKOFF
    core.out.log("before_lead_vetoed", "warning", token=event.token, detail=event.detail)
    return f"before_lead vetoed: {event.detail}"


def job_started(core: Leadership) -> None:
    """JobStarted while this host still leads: announce the leadership once."""
    tr = core.transitions
    if core.me.leader and tr.leading and tr.role != LEADER:
        _emit(core, "on_leader", LEADER, reason="job started")


def following(core: Leadership) -> None:
    """This host follows someone: announce it unless already announced."""
    if core.transitions.role != FOLLOWER:
        _emit(core, "on_follower", FOLLOWER, reason="following")


def lost(core: Leadership, reason: str) -> None:
    """Leadership ended (called wherever ``me.leader`` goes false); once per leadership."""
    tr = core.transitions
    if not tr.leading:
        return
    tr.leading = False
    _emit(core, "on_lost", NONE, reason=reason, previous=LEADER)


def stopping(core: Leadership, reason: str) -> None:
    """The daemon is about to exit (the job reaped, or abandoned as unreaped)."""
    if core.transitions.role != STOPPED:
        _emit(core, "on_stop", STOPPED, reason=reason)


def _emit(core: Leadership, kind: str, to: str, reason: str, previous: str | None = None) -> None:
    """Records the new role, then queues the hook when it is configured. ``previous``
    overrides the recorded role (on_lost is from leader even if on_leader never ran)."""
    tr = core.transitions
    previous, tr.role = previous or tr.role, to
    if kind not in core.settings.hooks:
        return  # not configured: the role is still tracked, so a later hook's FROM is right
    core.out.emit(act.RunHook(kind, _fields(core, kind, previous, to, reason)))


def _fields(core: Leadership, kind: str, previous: str, to: str, reason: str) -> dict[str, str]:
    """The transition as the hook's environment sees it (ZKLEADER_<KEY>)."""
    me = core.me
    fields: dict[str, str] = {
        "hook": kind,
        "from": previous,
        "to": to,
        "reason": reason,
        "election": core.settings.election_path,
        "candidate": core.settings.candidate,
    }
    token = me.token if kind in ("on_leader", "on_lost", BEFORE_LEAD) else None
    if token is None and core.job.token is not None and kind == "on_leader":
        token = core.job.token
    if token is not None:
        fields["fencing_token"] = str(token)
    if kind in ("on_leader", BEFORE_LEAD):
        fields["leader"] = core.settings.candidate
        fields["leader_host"] = core.identity.host
    elif me.leader_node is not None and kind == "on_follower":
        # A follower knows only the leader's node name, not its candidate or host.
        fields["leader_node"] = me.leader_node
    return fields
