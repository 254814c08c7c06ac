"""The registry of log events: every event zkleader logs, described once.

The core decides what is worth saying (``actions.Log`` names an event) and the shells
say it: journal.py turns the name into journald's MESSAGE_ID and a readable sentence,
systemd/zkleader.catalog explains each MESSAGE_ID to ``journalctl -x``. One entry per
event keeps these in step, where three parallel tables used to drift apart one key at a
time. tests/test_logevents.py checks that every event name logged in zkleader/ has an
entry here, tests/test_journal.py that the catalog has an entry for each MESSAGE_ID
and none other.

Standard library only, like the rest of the core, so that the core can refer to these
entries; nothing here formats or sends anything.

Never change a MESSAGE_ID once released (operators' queries and alerting rules use
them), nor give one to an event without writing its catalog entry.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from types import MappingProxyType
from typing import Literal

__all__ = ["CONTEXT_FIELDS", "EVENTS", "OTHER_MESSAGE_ID", "Level", "LogEvent"]

#: The levels the daemon logs at (logging.level in the configuration).
Level = Literal["debug", "info", "warning", "error"]

#: The MESSAGE_ID of every event without an id of its own (kazoo's bridged warnings,
#: rare diagnostics, and any event name this registry does not know). Its catalog
#: entry explains that ZKLEADER_EVENT names the event.
OTHER_MESSAGE_ID = "5b2bd3d0793d4c219a35d1b3f6970b60"

#: Fields every event carries (logs.configure binds them), besides its own.
CONTEXT_FIELDS = ("election", "candidate")


@dataclass(frozen=True)
class LogEvent:
    """One kind of log event.

    name: the structlog event name, ZKLEADER_EVENT in the journal.
    level: the level it is usually logged at; a call site may choose another for a
        worse case (a session lost while the job runs is an error, not a warning).
    message_id: its journald MESSAGE_ID; OTHER_MESSAGE_ID for events that share the
        catch-all catalog entry.
    fields: the fields it carries besides CONTEXT_FIELDS, the only ones its sentence
        and its catalog entry's @ZKLEADER_...@ substitutions may use (more fields
        still reach the journal as ZKLEADER_*).
    template: its one readable sentence for journald's MESSAGE: "{field}" is
        replaced by the field's value, "[...]" is an optional part, kept only when
        every {field} in it is present (the sentence must read well without
        CONTEXT_FIELDS too). None: the catch-all sentence "event: key=value, ...".
    """

    name: str
    level: Level
    message_id: str = OTHER_MESSAGE_ID
    fields: tuple[str, ...] = ()
    template: str | None = None

    @property
    def has_own_id(self) -> bool:
        """True when the event has a MESSAGE_ID (and a catalog entry) of its own."""
        return self.message_id != OTHER_MESSAGE_ID


def _index(*events: LogEvent) -> Mapping[str, LogEvent]:
    """The events by name, read-only; a name given twice is a mistake, not an update."""
    by_name: dict[str, LogEvent] = {}
    for event in events:
        if event.name in by_name:
            raise ValueError(f"log event {event.name!r} is registered twice")
        by_name[event.name] = event
    return MappingProxyType(by_name)


#: Every event zkleader logs, by name.
EVENTS: Mapping[str, LogEvent] = _index(
    # election
    LogEvent("joined", "info", "56207d0c88f04c359de527b326d01b47", ("node", "position"),
             "joined election[ {election}][ as {candidate}][ (node {node})][ at position {position}]"),
    LogEvent("following", "info", "8954142dd8fb4732a16d0f285e802673", ("predecessor", "position", "leader"),
             "following[ leader {leader}][ in {election}][, watching {predecessor}]"),
    LogEvent("leader_acquired", "info", "c1937893b6d6476990a52da88714bc4d", ("node", "token"),
             "leader acquired[ for {election}][ (token {token})]"),
    LogEvent("leadership_lost", "warning", "ce4ae2c6f3c14caf8ab49967502386f6", ("reason", "token"),
             "leadership lost[ for {election}][: {reason}][ (token {token})]"),
    LogEvent("handover", "info", "f6cf2cc17b824a9388eee07c0cfb9450", ("node", "reason"),
             "leadership handed over[ for {election}][: {reason}]"),
    LogEvent("withdrawn", "info", "4fadccbe9d36458e876af4e4535f0b94", ("node", "reason"),
             "withdrew from election[ {election}][: {reason}]"),
    LogEvent("resigned", "warning", "1bc41e0c96514a90bd39aa823462f944", ("reason",),
             "resigned leadership[ of {election}][: {reason}]"),
    LogEvent("handing_over", "info", "63ae60e4de9048b68a50ecabf152509d", ("to", "by", "why", "token", "evicted"),
             "handing leadership[ of {election}] over[ to {to}][ ({why})][, asked by {by}]"),
    LogEvent("yielding", "info", "dd75a8fa90f94509a4d982a01b54ad5f", ("to", "why", "priority", "own_priority", "evicted"),
             "yielding[ {election}][ to {to}] instead of leading[ ({why})]"),
    LogEvent("frozen", "warning", "541943074be74f6ca8a90fdf9a7324b6", ("by", "at", "leader"),
             "election[ {election}] frozen[ by {by}][ since {at}]: nobody takes over or hands over until thawed"),
    LogEvent("thawed", "info", "9271b37ff5ba41b699ba233493ce6cd1", ("leader",), "election[ {election}] thawed"),
    LogEvent("previous_leader_holds", "warning", "2f51414eeb5847018fdab780a85acb05", ("owner", "node"),
             "not taking over[ {election}] yet: the previous leader's session[ {owner}] still holds the claim"),
    LogEvent("previous_leader_released", "info", "62b8d69f35034bb3b74bb1d5f6d3fc55", ("node",),
             "the previous leader released its claim[ on {election}]: taking over"),
    LogEvent("node_vanished", "warning", "01baad3cfeab4d4599a657e4d5cc853f", ("node", "reason"),
             "own election node[ {node}] vanished[: {reason}]"),
    LogEvent("node_not_ours", "error", "c5e0edfbb7034cc58abed74e55930639", ("node", "owner"),
             "election node[ {node}] belongs to another session[ ({owner})]"),
    # the job
    LogEvent("job_started", "info", "538d3434bcba43b4b7896f9b41ad232b", ("pid", "token"),
             "job started[ for {election}][, pid {pid}][, token {token}]"),
    LogEvent("job_stopping", "info", "af127f37b43c4474897292dc2704f4aa", ("signal", "reason", "pid"),
             "stopping job[ pid {pid}][ with {signal}][: {reason}]"),
    LogEvent("job_killed", "warning", "46dc45c517304e518d87616b432c0240", ("reason", "pid"),
             "job killed with SIGKILL[, pid {pid}][: {reason}]"),
    LogEvent("job_exited", "info", "0d5c7097fbdc46a08b55cb1fd8452c94", ("pid", "ran", "code", "signal", "error"),
             "job exited[, pid {pid}][, exit code {code}][, killed by signal {signal}][: {error}][ after {ran}s]"),
    LogEvent("job_restart_scheduled", "warning", "970dad80cd7f4640b5d883c1c3e40fbd", ("delay", "restarts"),
             "job restart scheduled[ in {delay}s][ (quick restart {restarts})]"),
    LogEvent("job_not_reaped", "error", "ca568d670eca4be3b71b2937e0cf5a79", ("pid", "reason", "problem"),
             "job not reaped[: {reason}]"),
    LogEvent("guardian_died", "warning", "bff605655678474982e7dc29ca9418a2", ("how", "leftovers"),
             "the job's guardian ended unexpectedly[: {how}][; {leftovers} leftover process(es) killed]; a fresh one follows"),
    LogEvent("guardian_failed", "error"),
    LogEvent("listen_failed", "error"),
    LogEvent("session_released", "warning", "1ef04cbdc9bb4b1ca2638d1c168b60aa", ("session", "reason"),
             "closed the dead daemon's ZooKeeper session[ {session}][: {reason}]"),
    LogEvent("session_release_failed", "warning"),
    # transition hooks (hooks.py)
    LogEvent("hook_failed", "warning", "0d1d201f6dd5481d886dba115f2978c5", ("hook", "reason", "error"),
             "transition hook[ {hook}] failed[: {error}][ (transition: {reason})]"),
    LogEvent("before_lead_vetoed", "warning", "6b0a4f0d2c7e4b8f9a51e3d27c4b9f18", ("token", "detail"),
             "the before_lead hook vetoed leading[ (token {token})][: {detail}]; stepping back to the end of the queue"),
    LogEvent("hook_ran", "info"),
    LogEvent("hook_dropped", "warning"),
    # ZooKeeper session
    LogEvent("connecting", "info", "fa7ac3e0825642eea3e119d618417381", ("host", "attempt"),
             "connecting to ZooKeeper[ {host}][ (attempt {attempt})]"),
    LogEvent("connected", "info", "4447a96cf7ef415ba4091f910a32fa9a", ("session", "timeout"),
             "connected to ZooKeeper[, session {session}][, session timeout {timeout}s]"),
    LogEvent("suspended", "warning", "5704846b7c19439a89aaf7ea3c10b91c", ("lease_left",),
             "connection to ZooKeeper suspended[; lease left {lease_left}s]"),
    LogEvent("heartbeat_unanswered", "warning", "0564e75bc6d24eeeaeeeee2df82bb524", ("lease_left",),
             "ZooKeeper did not answer a heartbeat for a whole interval; moving to another server[; lease left {lease_left}s]"),
    LogEvent("reconnected", "info", "59f2ac57e242444b933a0be2ecb63e9e", ("session", "lease_left"),
             "reconnected to ZooKeeper[, same session {session}][; lease left {lease_left}s]"),
    LogEvent("session_lost", "warning", "4e664ce4b4d142059da42fddfbb0e7a1", ("reason",),
             "ZooKeeper session lost[: {reason}]"),
    LogEvent("session_timeout_reduced", "warning", "ebf2327aad254b3f8ad73f839ab6a904",
             ("configured", "negotiated", "problem"),
             "ZooKeeper reduced the session timeout[ from {configured}s][ to {negotiated}s][: {problem}]"),
    LogEvent("lease_expired", "error", "a60ca1d633b34b89af79bd2dca1aeb31", ("reason", "lease_left"),
             "lease expired[ for {election}], stopping the job[: {reason}]"),
    LogEvent("read_only", "warning", "5dcf5afe84a6491793e2526afd25ac49", ("reason",),
             "read-only ZooKeeper connection, cannot lead[: {reason}]"),
    LogEvent("auth_failed", "error", "0f49fb0760724c61b2716c06869ff868", ("reason",),
             "ZooKeeper rejected the credentials[: {reason}]"),
    # the daemon's life
    LogEvent("starting", "info", "c2b0050e363b40fbb90bb52c9a958576", ("version", "zookeeper", "session_timeout"),
             "starting zkleader[ {version}][ for {election}][ as {candidate}][, ZooKeeper {zookeeper}]"
             "[, session timeout {session_timeout}s]"),
    LogEvent("shutting_down", "info", "f12464e70a56403196e239ecc5e669d3", ("signal", "leader"),
             "shutting down[ on {signal}][ (leader: {leader})]"),
    LogEvent("stopped", "info", "66191254e9ca4ec19799d394ceaabcd3", ("exit_code", "reason"),
             "stopped[ with exit code {exit_code}][: {reason}]"),
    LogEvent("config_error", "error", "57f681cdbeb845d1b1a0e64ba36d35f4", ("path", "problem", "problems"),
             "invalid configuration[ {path}][: {problem}][: {problems}]"),
    LogEvent("internal_error", "error", "6d6756befc7e495f92dca8867093fe0c", ("error", "exception"),
             "internal error[: {error}]"),
    LogEvent("log_lines_dropped", "warning", "497e436c210b4466b4f00ea6862805ea", ("count",),
             "log output stalled[: {count} events dropped]"),
    # The rest share OTHER_MESSAGE_ID and the catch-all sentence. The core's election
    # and health checks:
    LogEvent("create_failed", "error"),
    LogEvent("create_recovered", "info"),
    LogEvent("foreign_children", "warning"),
    LogEvent("not_a_candidate", "warning"),
    LogEvent("publish_failed", "warning"),
    LogEvent("not_authorized", "error"),
    LogEvent("resigning", "info"),
    LogEvent("resign_ignored", "info"),
    LogEvent("health_failed", "warning"),
    LogEvent("health_withdrawn", "warning"),
    LogEvent("health_passed", "info"),
    LogEvent("health_restored", "info"),
    LogEvent("drained", "info"),
    LogEvent("undrained", "info"),
    LogEvent("drain_check_failed", "warning"),
    LogEvent("handover_refused", "warning"),
    LogEvent("resign_refused", "warning"),
    LogEvent("health_failing_frozen", "warning"),
    LogEvent("preempt_pending", "info"),
    LogEvent("preempt_cancelled", "info"),
    LogEvent("preempt_deferred", "info"),
    LogEvent("preempt_poke", "info"),
    LogEvent("not_authorized_advisory", "warning"),
    LogEvent("leaving_to_reconfigure", "info"),
    LogEvent("reconfigured", "info"),
    LogEvent("reopening", "info"),
    # the daemon's configuration and reloads
    LogEvent("lease_budget_impossible", "error"),
    LogEvent("watchdog_too_long", "warning"),
    LogEvent("reload_failed", "error"),
    LogEvent("reload_partial", "warning"),
    LogEvent("reloaded", "info"),
    LogEvent("journald_unavailable", "warning"),
    # ZooKeeper: the connection's checks, and kazoo's own log records
    LogEvent("secret_file_exposed", "warning"),
    LogEvent("tls_failed", "error"),
    LogEvent("tls_refused", "warning"),
    LogEvent("tick_time_suspect", "warning"),
    LogEvent("tick_time_mismatch", "warning"),
    LogEvent("observer_server", "warning"),
    LogEvent("four_letter_failed", "debug"),
    LogEvent("four_letter_refused", "debug"),
    LogEvent("election_acl_open", "warning"),
    # etcd (zkleader/etcd.py, the second backend: issue 17)
    LogEvent("etcd_auth_failed", "error"),
    LogEvent("etcd_connect_failed", "debug"),
    LogEvent("etcd_connection_lost", "info"),
    LogEvent("etcd_revoke_failed", "debug"),
    LogEvent("etcd_revokes_live_leases", "warning"),
    LogEvent("zookeeper_client", "warning"),
)
