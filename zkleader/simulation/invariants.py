"""What must hold in every simulated world, checked after every step.

Safety (always):

* overlap: at most one leader job alive across all hosts. A job is alive from the
  moment StartJob is executed until its last process is dead (not until the daemon
  hears about it).
* legitimacy: a live job's znode exists, is the first in line (lowest czxid, the
  server's own order, not the name's), and is owned by the session its daemon had
  when it started the job; at StartJob the same must hold.
* fencing: tokens of successive leaderships strictly increase; a token is only
  reused by a restart of the job within the same leadership.
* double_start: a daemon never starts a job while its previous one is alive.
* frozen: while the election is frozen (core/preference.py) no new leadership starts
  its job, once the daemon's marker read was answered after the freeze began (a read
  answered before it saw no freeze: that takeover raced the operator and won). A
  leadership in force when the freeze began may (re)start its job.
* close_before_reap: a session is closed (by its daemon, or released by the guardian
  of a daemon that died) only once every process of the jobs its daemon started is
  dead: the close deletes the node, and the successor may start at once.

A paused or blocked daemon is no excuse: its guardian holds the lease and stops the
job in time on its own (and systemd's watchdog, where configured, kills the unit).

Documented exceptions (an *excuse* switches off overlap and legitimacy for one job):

* an operator deleted its znode by hand: the old leader stops its job as soon as it
  hears, and until then the job runs on a node that is gone. The excuse ends one
  session timeout after the deletion (by then the lease has run out even if it never
  heard). It excuses legitimacy only, never an overlap: the successor waits on the
  old leader's claim until its job is reaped (core/claim.py; tests/test_simulation.py's
  deliberate bug 15 takes the claim away and overlaps at once).
* its whole host was suspended (daemon, guardian and job frozen) and the session
  expired meanwhile: nothing on the host can act before it wakes (only fencing tokens
  cover that). The excuse starts at the expiry, during the sleep or after the wake-up
  but before the loop's first pass, and that first pass must SIGKILL the job (the
  lease clock counts the sleep): otherwise ``suspend`` breaks. A job SIGKILLed in that
  first pass (its kill deadline went by in its sleep) is excused from its session's
  expiry until it is dead, even when the expiry comes after the pass. The same holds
  for a job whose operator excuse (above) runs out while its host sleeps.

Fencing is checked with or without excuses.

The lease rule itself (timing.py), where it is claimed: lease_anchor: when a sync's
answer is read, the lease anchor it proves (relayed_at) is no later than the ZooKeeper
leader's last touch of the session so far. The margins usually hide a late anchor
until it meets an unlucky schedule; this sees it at once.

Liveness (after the faults stop, all links healed, all daemons running):

* within ``World.quiet_bound()`` exactly one job is alive, on the daemon that leads
  from the first node, and it stays the same job until the end;
* every live daemon has exactly one node, the one it believes is its own; no node of
  a dead session is left; every follower's predecessor exists and the follower holds
  a watch on it (nobody waits forever on a node that is gone);
* spin: a core whose next deadline is already past would make the production loop
  spin at 100% CPU.
* preference: with preemption configured, the job ends on a host of the highest
  priority among the live ones.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from ..core import preference

if TYPE_CHECKING:
    from .client import Client
    from .daemon import Daemon
    from .jobs import Job
    from .server import Session
    from .world import World

INF = float("inf")
#: How long beyond one session timeout after an operator deleted its node a job may
#: still be dying (its lease ran out by then; the kill and the reap follow).
OPERATOR_GRACE = 0.3

SAFETY = frozenset({"overlap", "legitimacy", "fencing", "double_start", "suspend", "lease_anchor", "core_exception",
                    "close_before_reap"})
LIVENESS = frozenset({"liveness", "nodes", "stuck", "spin"})


class Violation(AssertionError):
    """An invariant broke. ``timeline`` is the formatted trace that led to it."""

    def __init__(self, kind: str, message: str, time: float) -> None:
        super().__init__(f"[{kind}] t={time:.4f}: {message}")
        self.kind = kind
        self.message = message
        self.time = time
        self.timeline = ""
        self.seed: int | None = None

    @property
    def safety(self) -> bool:
        return self.kind in SAFETY

    def report(self) -> str:
        head = f"VIOLATION [{self.kind}] at t={self.time:.4f}"
        if self.seed is not None:
            head += f" (seed {self.seed})"
        return f"{head}\n  {self.message}\n\ntimeline (virtual seconds, host, what):\n{self.timeline}"


class Checker:
    def __init__(self, world: World) -> None:
        self.world = world
        self.alive: list[Job] = []
        self.max_token: int | None = None
        self.max_token_znode: str | None = None
        self.leaderships = 0
        self.operator_deleted: dict[str, float] = {}
        self.spins: list[str] = []
        #: Set by everything the per-step checks depend on (znodes, sessions, jobs, excuses).
        self.dirty = True
        #: Jobs SIGKILLed in their daemon's first loop pass after their host woke.
        self.killed_on_waking: set[Job] = set()
        #: When the election was last frozen, and the tokens of the leaderships then.
        self.frozen_at = 0.0
        self.frozen_tokens: set[int] = set()

    # ------------------------------------------------------------- reporting

    def violate(self, kind: str, message: str) -> None:
        world = self.world
        world.timeline.record(world.now, "CHECK", "**", f"VIOLATION [{kind}] {message}", None)
        raise Violation(kind, message, world.now)

    # ----------------------------------------------------------------- events

    def on_start(self, job: Job) -> None:
        world = self.world
        deleted_at = self.operator_deleted.get(job.znode)
        if deleted_at is not None:
            # A stale but honest answer ("your node exists", sent before the deletion) can
            # restart the old leader's job before the deletion's watch event arrives: no
            # core can avoid that, it is what fencing tokens let downstream refuse.
            self._excuse_operator(job, deleted_at + world.cfg.session_timeout + OPERATOR_GRACE)
        elif self.max_token is not None:
            if job.token < self.max_token:
                self.violate("fencing", f"{job.describe()} started with a token below {self.max_token}")
            if job.token == self.max_token and job.znode != self.max_token_znode:
                self.violate("fencing", f"{job.describe()} reuses token {job.token} of {self.max_token_znode}")
        if self.max_token is None or job.token > self.max_token:
            self.leaderships += 1
            self.max_token = job.token
            self.max_token_znode = job.znode
        node = world.server.nodes.get(job.znode)
        if node is not None and node.czxid != job.token:
            self.violate("fencing", f"{job.describe()}: token is not its znode's czxid {node.czxid}")
        self._check_frozen(job)
        self.alive.append(job)
        self.dirty = True
        world.timeline.record(world.now, job.daemon.label, "job", f"{job.describe()} is alive", None)
        self.after_step()

    def on_freeze(self) -> None:
        """The leaderships of the moment may go on (re)starting their job."""
        self.frozen_at = self.world.now
        leaders = (host.live_daemon.core.snapshot() for host in self.world.hosts if host.live_daemon is not None)
        self.frozen_tokens = {job.token for job in self.alive} | {c.token for c in leaders if c.token is not None}

    def _check_frozen(self, job: Job) -> None:
        server = self.world.server
        if preference.frozen_path(server.election_parent) not in server.nodes or job.token in self.frozen_tokens:
            return
        node = server.nodes.get(job.znode)
        session = server.sessions.get(node.owner) if node is not None else None
        read_at = session.control_read_at if session is not None else None
        if read_at is not None and read_at > self.frozen_at:
            self.violate("frozen", f"{job.describe()} started while the election was frozen (since "
                                   f"{self.frozen_at:.3f}; its daemon's marker read was answered at {read_at:.3f})")
        self.frozen_tokens.add(job.token)  # it raced the freeze and won: the frozen leadership

    def on_death(self, job: Job) -> None:
        self.alive.remove(job)
        self.killed_on_waking.discard(job)
        self.dirty = True

    def on_expired(self, session: Session) -> None:
        """A session expired: if its host sleeps, or woke and its loop has not run since,
        its job cannot have been stopped (see ``on_first_pass``)."""
        asleep = session.host.suspended_at is not None or session.host.thawing
        for job in self.alive:
            if job.session_id == session.id and (asleep or job in self.killed_on_waking):
                self._excuse(job, INF, "suspended")

    def on_closed(self, session: Session) -> None:
        """A closeSession ended the session (``cause`` in the trace says whose)."""
        for job in self.alive:
            if job.session_id == session.id or job.daemon.client.session_id == session.id:
                ended = session.ended[1] if session.ended is not None else "closed"
                self.violate(
                    "close_before_reap",
                    f"session 0x{session.id:x} was {ended} while {job.describe()}, started by its daemon, is alive",
                )

    def on_first_pass(self, daemon: Daemon) -> None:
        """The loop's first pass since its host woke: a job whose session expired meanwhile
        must be on its way out by SIGKILL now."""
        for job in self.alive:
            if job.daemon is not daemon:
                continue
            if job.sigkilled:
                self.killed_on_waking.add(job)
            elif "suspended" in job.excuses:
                self.violate(
                    "suspend",
                    f"{job.describe()} survived {daemon.label}'s first loop pass after its host woke, although "
                    f"its session expired while the host slept (its lease clock did not count the sleep?)",
                )

    def on_anchor(self, client: Client, relayed_at: float) -> None:
        """A synced answer anchors the lease at ``relayed_at`` (the host's clock): the
        ZooKeeper leader must have touched the session at or after it already."""
        server = self.world.server
        session = server.sessions[client.session_id]  # type: ignore[index]
        touched = server.heard(session)
        anchor = client.host.world_time(relayed_at)
        if anchor > touched + 1e-9:
            self.violate(
                "lease_anchor",
                f"{client.daemon.label}: a synced answer anchors the lease at t={anchor:.4f}, "
                f"{anchor - touched:.4f}s after the ZooKeeper leader last touched session 0x{session.id:x} "
                f"(t={touched:.4f})",
            )

    def on_operator_delete(self, path: str) -> None:
        world = self.world
        self.operator_deleted[path] = world.now
        for job in self.alive:
            if job.znode == path:
                self._excuse_operator(job, world.now + world.cfg.session_timeout + OPERATOR_GRACE)

    def _excuse(self, job: Job, until: float, why: str) -> None:
        """Excuses per reason; the job is excused until the latest of them runs out."""
        if until > job.excuses.get(why, -INF):
            job.excuses[why] = until
        job.excused_until = max(job.excuses.values())
        self.dirty = True
        if until != INF:
            self.world.at(until + 1e-9, self._excuse_ends)

    def _excuse_ends(self) -> None:
        self.dirty = True

    def _excuse_operator(self, job: Job, until: float) -> None:
        self._excuse(job, until, "operator")
        self.world.at(until, self._operator_window_ends, job)

    def _operator_window_ends(self, job: Job) -> None:
        """By now the job's lease is over, whether or not its daemon heard of the deletion
        (no answer after it can have renewed it); a host that sleeps, or has not run its
        loop since it woke, cannot have acted on that: the first pass must."""
        host = job.host
        if job.dead_at is None and job.excuses.get("operator", INF) <= self.world.now and (
            host.suspended_at is not None or host.thawing
        ):
            self._excuse(job, INF, "suspended")

    def spin(self, daemon: Daemon, deadline: float, local_now: float) -> None:
        core = daemon.core.snapshot()
        message = (
            f"{daemon.label}: next_deadline() is {local_now - deadline:.3f}s in the past after handling an event "
            f"(phase {core.phase.value}, job {core.job.value}, leader {core.leader}, connected {core.connected}, "
            f"restart_at {core.restart_at}, retry_at {core.retry_at}): "
            f"the production loop would busy-wait"
        )
        self.spins.append(message)
        if self.world.cfg.spin_is_violation:
            self.violate("spin", message)

    # ------------------------------------------------------------- per step

    def after_step(self) -> None:
        if not self.dirty:
            return
        self.dirty = False
        alive = self.alive
        if not alive:
            return
        now = self.world.now
        server = self.world.server
        accountable = [job for job in alive if job.excused_until < now]
        if len(accountable) > 1:
            self.violate("overlap", " and ".join(job.describe() for job in accountable) + " are alive at once")
        # An operator's delete excuses the old job's legitimacy (it runs on a node that
        # is gone until its daemon hears and reaps it), never an overlap: the leader's
        # claim keeps the successor waiting until then (core/claim.py).
        claimed = [job for job in alive if _excused_but_for_operator(job) < now]
        if len(claimed) > 1:
            self.violate("overlap", " and ".join(job.describe() for job in claimed)
                         + " are alive at once (an operator's delete does not excuse an overlap: core/claim.py)")
        for job in accountable:
            node = server.nodes.get(job.znode)
            if node is None:
                when, cause = server.deleted.get(job.znode, (now, "never created"))
                self.violate(
                    "legitimacy",
                    f"{job.describe()} is alive but its znode is gone since t={when:.4f} ({cause})",
                )
            elif node.owner != job.session_id:
                self.violate("legitimacy", f"{job.describe()} runs on a znode owned by session 0x{node.owner:x}")
            else:
                low = server.lowest()
                if low != job.znode:
                    self.violate(
                        "legitimacy",
                        f"{job.describe()} is alive but {low.rsplit('/', 1)[-1] if low else None} is first in line",
                    )
        if len(alive) > 1:
            # Even excused overlaps must be fenced: the newer leadership holds the larger
            # token (a job restarted on a znode an operator deleted is the stale one).
            fenced = [j for j in alive if j.znode not in self.operator_deleted]
            if fenced:
                newest = max(fenced, key=lambda j: j.started_at)
                if any(j.token > newest.token for j in fenced):
                    self.violate("fencing", "an older leadership holds a larger token than the newest job")

    # ---------------------------------------------------------------- liveness

    def settled(self) -> bool:
        """Whether the liveness conditions hold right now (no verdict, no exception)."""
        world = self.world
        if len(self.alive) != 1:
            return False
        job = self.alive[0]
        daemon = job.daemon
        if not daemon.alive or not daemon.core.snapshot().leader or daemon.paused is not None or job.signalled:
            return False
        if daemon.core.snapshot().job.value != "running":
            return False
        # Stale state from the faulty phase must be flushed: the lease rests on an answer
        # to a request sent after the heal.
        t_ok = daemon.core.snapshot().t_ok
        if t_ok is None or world.healed_at is None or t_ok < daemon.host.local(world.healed_at):
            return False
        server = world.server
        owners = set()
        for host in world.hosts:
            live = host.live_daemon
            if live is None or live.client.state != "connected" or live.core.snapshot().node is None:
                return False
            path = f"{server.election_parent}/{live.core.snapshot().node}"
            node = server.nodes.get(path)
            if node is None or node.owner != live.client.session_id:
                return False
            owners.add(node.owner)
            if live.core.snapshot().predecessor is not None:
                pred = f"{server.election_parent}/{live.core.snapshot().predecessor}"
                conn = live.client.conn
                if pred not in server.nodes or conn is None or pred not in conn.watched:
                    return False
        children = server.election_children()
        if world.cfg.preempt_after is not None and \
                world.priority(job.daemon.host) != max(world.priority(host) for host in world.hosts):
            return False  # a preferred host is still to take over
        return len(children) == len(owners) == len(world.hosts)

    def quiesced(self, bound: float) -> None:
        """Called ``bound`` seconds after the faults stopped."""
        jobs = list(self.alive)
        if len(jobs) != 1:
            self.violate(
                "liveness",
                f"{len(jobs)} jobs alive {bound:.2f}s after the faults stopped (expected exactly one): "
                + self._census(),
            )
        job = jobs[0]
        core = job.daemon.core.snapshot()
        if not job.daemon.alive or not core.leader:
            self.violate("liveness", f"{job.describe()} is alive but its daemon does not lead: " + self._census())
        self.quiet_job = job

    def final(self) -> None:
        world = self.world
        server = world.server
        jobs = list(self.alive)
        if len(jobs) != 1 or jobs[0] is not getattr(self, "quiet_job", None):
            self.violate("liveness", "the leader job changed during the quiet period: " + self._census())
        sessions = {}
        for host in world.hosts:
            daemon = host.live_daemon
            if daemon is None:
                self.violate("liveness", f"{host.name} has no running daemon at the end")
                continue
            if daemon.client.state != "connected":
                self.violate("liveness", f"{daemon.label} is not connected at the end: " + self._census())
            sid = daemon.client.session_id
            sessions[sid] = daemon
            owned = [n for n in server.election_children() if n.owner == sid]
            core = daemon.core.snapshot()
            if len(owned) != 1:
                self.violate(
                    "nodes",
                    f"{daemon.label} owns {len(owned)} nodes at the end "
                    f"({', '.join(n.path.rsplit('/', 1)[-1] for n in owned)}); core.node={core.node}: " + self._census(),
                )
            if core.node is None or f"{owned[0].path.rsplit('/', 1)[-1]}" != core.node:
                self.violate("nodes", f"{daemon.label} believes its node is {core.node}, owns {owned[0].path}")
            if core.predecessor is not None:
                pred = f"{owned[0].path.rsplit('/', 1)[0]}/{core.predecessor}"
                if pred not in server.nodes:
                    self.violate("stuck", f"{daemon.label} follows {core.predecessor}, which no longer exists")
                conn = daemon.client.conn
                if conn is None or pred not in conn.watched:
                    self.violate("stuck", f"{daemon.label} follows {core.predecessor} without a watch on it")
        for node in server.election_children():
            if node.owner not in sessions:
                self.violate("nodes", f"{node.path} of session 0x{node.owner:x} is left in the queue")
        if world.cfg.preempt_after is not None:
            top = max(world.priority(host) for host in world.hosts)
            leader = jobs[0].daemon.host
            if world.priority(leader) != top:
                self.violate("preference", f"{leader.name} (priority {world.priority(leader)}) leads at the end, "
                                           f"below the top priority {top}: " + self._census())

    def _census(self) -> str:
        world = self.world
        parts = []
        for host in world.hosts:
            d = host.daemon
            if d is None:
                parts.append(f"{host.name}: never started")
                continue
            c = d.core.snapshot()
            state = "dead" if not d.alive else ("paused" if d.paused else d.client.state)
            parts.append(
                f"{d.label}: {state}, phase={c.phase.value} job={c.job.value} node={c.node} pred={c.predecessor}"
            )
        queue = ", ".join(
            f"{n.path.rsplit('/', 1)[-1]}(czxid {n.czxid}, 0x{n.owner:x})"
            for n in sorted(world.server.election_children(), key=lambda n: n.czxid)
        )
        return "; ".join(parts) + f"; queue: [{queue}]"


def _excused_but_for_operator(job: Job) -> float:
    """Until when the job is excused for any reason but an operator's delete."""
    return max((until for why, until in job.excuses.items() if why != "operator"), default=-INF)
