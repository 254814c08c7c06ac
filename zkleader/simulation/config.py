"""What a simulated world is made of: its parameters and the deliberate bugs its
shells can be switched into (tests only)."""

from __future__ import annotations

import enum
from collections.abc import Callable
from dataclasses import dataclass, field

from ..core.leadership import Leadership
from ..core.settings import Identity, OnExit, Settings

INF = float("inf")
ELECTION = "/zkleader/sim"

CoreFactory = Callable[[Settings, Identity, Callable[[], str]], Leadership]


class Bug(enum.Enum):
    """Deliberate bugs in the model's shells, each reproducing a rule or a shell that
    production used to have; the simulation must catch every one of them."""

    #: The lease anchor counts every packet whose *write* finished tickTime/2 before the
    #: sync (commit e94b8c8): a stalled stream delivers such writes together with the sync.
    WRITTEN_ANCHOR = "written-anchor"
    #: The first rule: t_ok is the sync's own send time and the ZooKeeper leader's last
    #: touch is assumed at most T/6 + tickTime/2 older (deadlines shortened by that).
    SYNC_SENT_ANCHOR = "sync-sent-anchor"
    #: The job runner reports the job gone when its guardian dies, while the workers the
    #: job forked live on (the daemon was no subreaper and swept nothing).
    EARLY_EXIT_REPORT = "early-exit-report"
    #: The loop writes its log lines itself and blocks while the stream is stalled.
    BLOCKING_LOGS = "blocking-logs"
    #: The daemon's clock stops during a system suspend (CLOCK_MONOTONIC, not BOOTTIME).
    STOPPING_CLOCK = "stopping-clock"
    #: The guardian takes the lease's deadlines but never acts on them (the cold guardian
    #: before it held the lease): only the daemon stops the job, so a stalled one does not.
    GUARDIAN_IGNORES_LEASE = "guardian-ignores-lease"
    #: A dead daemon's guardian execs the release as soon as its lifeline closes, before
    #: it has killed and reaped the job's tree (the job dies only when the release exits).
    RELEASE_BEFORE_REAP = "release-before-reap"
    #: On etcd, the heartbeat anchors the lease when the keep-alive's answer arrives (when
    #: the linearizable read goes out) instead of at the keep-alive's send time: the etcd
    #: leader renewed the lease earlier than that, by the answer's trip back.
    ETCD_ANSWER_ANCHOR = "etcd-answer-anchor"


@dataclass(frozen=True)
class WorldConfig:
    hosts: int = 3
    session_timeout: float = 2.0
    stop_timeout: float = 0.3
    on_exit: OnExit = OnExit.RESTART
    restart_delay: float = 0.1
    #: ZooKeeper tickTime: expiry buckets; the server grants timeouts in [2, 20] ticks.
    tick_time: float = 0.2
    #: The server's maxSessionTimeout when it is below 20 ticks (a reduced grant).
    max_session_timeout: float | None = None
    #: Host clocks run at 1 +- up to this rate (monotonic clocks are not all equal).
    clock_drift: float = 0.005
    #: systemd RestartSec: a dead daemon comes back after up to this many seconds.
    restart_sec: float = 0.5
    #: A restarted daemon repeats its predecessor's candidacy ids (cloned host, bad RNG).
    reuse_ids: bool = False
    #: Initial cversion of the election parent; near 2**31 the sequence wraps.
    sequence_start: int = 0
    #: Servers in the connection string (kazoo's connect timeout is T / servers).
    servers: int = 3
    #: Timeline entries kept (None: all).
    trace_limit: int | None = 3000
    #: A core whose next deadline is already past (a busy loop) is a violation.
    spin_is_violation: bool = True
    #: systemd WatchdogSec (0: no watchdog). The loop feeds it every interval/2; a loop
    #: that stops (a pause) gets the whole unit SIGKILLed one interval after the last ping.
    watchdog: float = 0.0
    #: The share of jobs that ignore the stop signal (only SIGKILL ends them); of the
    #: others, 7% outlast stop_timeout.
    ignore_stop: float = 0.03
    #: Deliberate bugs switched on in the model's shells (tests only).
    bugs: frozenset[Bug] = field(default_factory=frozenset)
    #: election.priority of each host, by index (empty: all 0), and election.preempt_after.
    priorities: tuple[int, ...] = ()
    preempt_after: float | None = None
    #: "etcd": the server is an etcd cluster seen through zkleader/etcd.py (README "On
    #: etcd", tests/etcd-timing.md): a lease is renewed only by a keep-alive (the shell
    #: sends one every T/3 whatever else it sends, and one leads each heartbeat), at
    #: once by the etcd leader, with no relay; it expires exactly TTL after its last
    #: renewal (etcd's sweep only makes that later); the core gets tick_time 0 and the
    #: heartbeat's anchor is the keep-alive's send time. Every fault and the rest of
    #: the model stay as for ZooKeeper (the shell maps etcd onto the same events).
    backend: str = "zookeeper"

    @property
    def on_etcd(self) -> bool:
        return self.backend == "etcd"

    @property
    def retry_max_delay(self) -> float:
        # zkleader.zookeeper: max(0.2, min(2.0, T * RECONNECT_CAP_FRACTION))
        return max(0.2, min(2.0, self.session_timeout * 0.2))
