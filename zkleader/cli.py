"""The `zkleader` command. Exit statuses are in exitcodes.py and the README."""

from __future__ import annotations

import argparse
import sys
import time
from collections.abc import Callable

import structlog

from . import __version__, config, logs, status
from .core import exitcodes

CONFIG_HELP = f"configuration file (default: ${config.ENV_VAR}, else {config.DEFAULT_PATH})"


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="zkleader",
        description="Elect one leader among hosts through ZooKeeper or etcd and run a leader-only job on it.",
        epilog="Exit statuses: 0 ok, 1 internal error, 2 usage, 3 job exited (on_exit: exit), "
        "4 the election has no leader (status), this host is not in it (resign) or the --to candidate is not queued, "
        "69 ZooKeeper or etcd unreachable or the job cannot be supervised here, 75 timed out waiting (--wait), "
        "or refused for now (frozen, a handover pending), "
        "77 ZooKeeper or etcd refused the credentials or TLS, 78 invalid configuration.",
    )
    parser.add_argument("--version", action="version", version=f"zkleader {__version__}")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    run = commands.add_parser("run", help="run the daemon in the foreground (as systemd does)",
                              description="Join the election and run the job while this host leads.")
    run.add_argument("-c", "--config", metavar="PATH", help=CONFIG_HELP)
    validate = commands.add_parser("validate", help="check a configuration file and exit",
                                   description="Check a configuration; exit 0 when valid, 78 with one line per problem.")
    validate.add_argument("-c", "--config", metavar="PATH", help=CONFIG_HELP)
    status = commands.add_parser("status", help="show the election as the store (ZooKeeper or etcd) sees it",
                                 description="Show the leader and the queue. Exit 0 when a leader exists, "
                                 "4 when nobody is queued, 69 when the store is unreachable.")
    status.add_argument("-c", "--config", metavar="PATH", help=CONFIG_HELP)
    status.add_argument("--json", action="store_true", help="machine-readable output (stable schema)")
    resign = commands.add_parser("resign", help="make this host's daemon step down (like SIGUSR1), "
                                 "or hand over to a named candidate (--to)",
                                 description="If this host leads, its daemon stops the job, deletes its node "
                                 "(the next host takes over at once) and queues again at the back. "
                                 "On a follower it does nothing and says so. With --to, from any host: the leader "
                                 "stops its job and hands over to that candidate, even when it is not next in line; "
                                 "refused (exit 4) when it is not queued, (exit 75) while frozen or while another "
                                 "handover is pending.")
    resign.add_argument("-c", "--config", metavar="PATH", help=CONFIG_HELP)
    resign.add_argument("--to", metavar="CANDIDATE", help="the candidate (election.candidate) to hand over to")
    resign.add_argument("--wait", action="store_true", help="return once another host (with --to: that one) leads")
    resign.add_argument("--timeout", type=float, default=60.0, metavar="SECONDS",
                        help="with --wait: give up after this long (exit 75; default 60)")
    for name, does in (("freeze", "freeze the whole election for maintenance: the leader keeps its job, nobody "
                                  "takes over or hands over until `zkleader thaw`"),
                       ("thaw", "end the freeze: failovers and handovers happen again")):
        command = commands.add_parser(name, help=does, description=f"{does[0].upper()}{does[1:]}. "
                                      "Exit 0 when done or already so, 69 when the store is unreachable, 77 refused.")
        command.add_argument("-c", "--config", metavar="PATH", help=CONFIG_HELP)
    for name, does in (("drain", "take this host out of the queue until `zkleader undrain`, across restarts"),
                       ("undrain", "let this host queue again, at the back")):
        command = commands.add_parser(name, help=does, description=f"{does[0].upper()}{does[1:]}. "
                                      "Exit 0 when done or already so, 69 when the store is unreachable, 77 refused.")
        command.add_argument("-c", "--config", metavar="PATH", help=CONFIG_HELP)
        command.add_argument("--wait", action="store_true",
                             help="return once this host is out of the queue (drain) or back in it (undrain)")
        command.add_argument("--timeout", type=float, default=60.0, metavar="SECONDS",
                             help="with --wait: give up after this long (exit 75; default 60)")
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    path = config.resolve_path(args.config)
    try:
        loaded = config.load(path)
    except config.ConfigError as err:
        for problem in err.problems:
            print(f"zkleader: {problem}", file=sys.stderr)
        return exitcodes.CONFIG
    if args.command == "validate":
        for warning in loaded.warnings:
            print(f"zkleader: warning: {warning}", file=sys.stderr)
        lease = (f"etcd lease_ttl {loaded.etcd.lease_ttl}s" if loaded.etcd is not None
                 else f"session_timeout {loaded.zookeeper.session_timeout:g}s")
        print(f"{path}: valid (election {loaded.election.path}, candidate {loaded.election.candidate}, "
              f"{lease}, stop_timeout {loaded.job.stop_timeout:g}s)")
        return exitcodes.OK
    if args.command in ("status", "resign", "drain", "undrain", "freeze", "thaw"):
        try:
            if args.command == "status":
                return _status(loaded, args.json)
            if args.command == "resign" and args.to is not None:
                return _resign_to(loaded, args.to, args.wait, args.timeout)
            if args.command == "resign":
                return _resign(loaded, args.wait, args.timeout)
            if args.command in ("freeze", "thaw"):
                return _freeze(loaded, args.command == "freeze")
            return _drain(loaded, args.command == "drain", args.wait, args.timeout)
        except status.Refusal as err:
            print(f"zkleader: {err}", file=sys.stderr)
            return err.code
        except status.Refused as err:
            print(f"zkleader: {err}", file=sys.stderr)
            return exitcodes.AUTH_FAILED
        except status.Unreachable as err:
            print(f"zkleader: {err}", file=sys.stderr)
            return exitcodes.UNAVAILABLE
    return _run(loaded)


def _status(loaded: config.Config, as_json: bool) -> int:
    election = status.read(loaded)
    print(election.to_json() if as_json else status.render(election))
    return exitcodes.OK if election.leader is not None else exitcodes.NOT_FOUND


def _resign(loaded: config.Config, wait: bool, timeout: float) -> int:
    election = status.read(loaded)
    mine = [c for c in election.queue if c.this_host]
    if not mine:
        print(f"zkleader: this host ({loaded.election.candidate}) is not in {loaded.election.path}", file=sys.stderr)
        return exitcodes.NOT_FOUND
    if mine[0].position != 0:
        print(f"this host is not the leader (position {mine[0].position}); nothing to do")
        return exitcodes.OK
    if election.frozen is not None:
        print(f"zkleader: {loaded.election.path} is frozen (by {election.frozen.by} since {election.frozen.since}): "
              "nobody hands over until `zkleader thaw`", file=sys.stderr)
        return exitcodes.TIMEOUT
    problem = status.signal_local_daemon(mine[0])
    if problem:
        print(f"zkleader: cannot ask the daemon to resign: {problem}", file=sys.stderr)
        return exitcodes.FAILURE
    print(f"asked the daemon (pid {mine[0].pid}) to resign leadership of {loaded.election.path}")
    if not wait:
        return exitcodes.OK
    return _await_leader(loaded, lambda leader: leader.node != mine[0].node, timeout, "no other host")


def _await_leader(loaded: config.Config, wanted: Callable[[status.Candidate], bool], timeout: float,
                  who: str) -> int:
    """--wait: until a leader ``wanted`` has published its leadership (so it confirmed
    it, not merely came first in line), or TIMEOUT."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        time.sleep(0.1)
        election = status.read(loaded)
        leader = election.leader
        if leader is not None and election.leader_since is not None and wanted(leader):
            print(f"{leader.candidate} on {leader.host} leads now (token {leader.token})")
            return exitcodes.OK
    print(f"zkleader: {who} took over within {timeout:g}s", file=sys.stderr)
    return exitcodes.TIMEOUT


def _resign_to(loaded: config.Config, target: str, wait: bool, timeout: float) -> int:
    """The request is a marker the leader watches (core/preference.py): it stops its
    job, then hands over; --wait watches the election for the target leading."""
    entry, leader = status.request_handover(loaded, target)
    path = loaded.election.path
    if leader is None:
        print(f"{target} leads {path} already; nothing to do")
        return exitcodes.OK
    print(f"asked {leader.candidate} on {leader.host} to hand {path} over to {target} (position {entry.position})")
    if not wait:
        return exitcodes.OK
    return _await_leader(loaded, lambda leader: leader.candidate == target, timeout, f"{target} never")


def _freeze(loaded: config.Config, frozen: bool) -> int:
    path = loaded.election.path
    if not status.set_frozen(loaded, frozen):
        print(f"{path} is {'already' if frozen else 'not'} frozen; nothing to do")
    elif frozen:
        leader = status.read(loaded).leader
        who = f"{leader.candidate} on {leader.host} keeps leading" if leader else "nobody leads, and nobody will"
        print(f"froze {path}: {who} until `zkleader thaw`")
    else:
        print(f"thawed {path}: failovers and handovers happen again")
    return exitcodes.OK


def _drain(loaded: config.Config, drained: bool, wait: bool, timeout: float) -> int:
    """The marker is the whole protocol (core/drain.py): the daemon, which watches it,
    leaves or rejoins on its own; --wait watches the queue for the outcome."""
    candidate, election = loaded.election.candidate, loaded.election.path
    if not status.set_drained(loaded, drained):
        print(f"{candidate} is {'already' if drained else 'not'} drained in {election}; nothing to do")
    else:
        print(f"{'drained' if drained else 'undrained'} {candidate} in {election}")
    if not wait:
        return exitcodes.OK
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if any(c.this_host for c in status.read(loaded).queue) != drained:
            print(f"{candidate} is {'out of' if drained else 'back in'} the queue")
            return exitcodes.OK
        time.sleep(0.1)
    print(f"zkleader: {candidate} was {'still' if drained else 'not'} in the queue after {timeout:g}s", file=sys.stderr)
    return exitcodes.TIMEOUT


def _run(loaded: config.Config) -> int:
    from . import fdstore
    from .children import supervision_problem
    from .daemon import Daemon

    # Before connecting, and before any job: this also makes us the subreaper that
    # catches a dead guardian's orphans (children.py).
    problem = supervision_problem()
    if problem:
        print(f"zkleader: cannot supervise the job: {problem}", file=sys.stderr)
        return exitcodes.UNAVAILABLE
    logs.configure(loaded.logging.level, loaded.logging.format, logs.context(loaded))
    try:
        # Under systemd, after a crash: before the guardian starts (fdstore.py).
        fdstore.release_predecessor(loaded)
        return Daemon(loaded).run()
    except Exception:
        structlog.get_logger().exception("internal_error")
        return exitcodes.FAILURE
