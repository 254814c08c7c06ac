"""The `zkleader` command. Exit statuses are in exitcodes.py and the README."""

from __future__ import annotations

import argparse
import sys

import structlog

from . import __version__, config, exitcodes, logs

CONFIG_HELP = f"configuration file (default: ${config.ENV_VAR}, else {config.DEFAULT_PATH})"


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="zkleader",
        description="Elect one leader among hosts through ZooKeeper and run a leader-only job on it.",
        epilog="Exit statuses: 0 ok, 1 internal error, 2 usage, 3 job exited (on_exit: exit), "
        "77 ZooKeeper authentication failed, 78 invalid configuration.",
    )
    parser.add_argument("--version", action="version", version=f"zkleader {__version__}")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    run = commands.add_parser("run", help="run the daemon in the foreground (as systemd does)",
                              description="Join the election and run the job while this host leads.")
    run.add_argument("-c", "--config", metavar="PATH", help=CONFIG_HELP)
    validate = commands.add_parser("validate", help="check a configuration file and exit",
                                   description="Check a configuration; exit 0 when valid, 78 with one line per problem.")
    validate.add_argument("-c", "--config", metavar="PATH", help=CONFIG_HELP)
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
        print(f"{path}: valid (election {loaded.election.path}, candidate {loaded.election.candidate}, "
              f"session_timeout {loaded.zookeeper.session_timeout:g}s, stop_timeout {loaded.job.stop_timeout:g}s)")
        return exitcodes.OK
    return _run(loaded)


def _run(loaded: config.Config) -> int:
    from .daemon import Daemon

    logs.configure(loaded.logging.level, loaded.logging.format,
                   {"election": loaded.election.path, "candidate": loaded.election.candidate})
    try:
        return Daemon(loaded).run()
    except Exception:
        structlog.get_logger().exception("internal_error")
        return exitcodes.FAILURE
