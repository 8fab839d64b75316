"""The command line: argv -> Settings -> logging -> the client that runs the command; each returns an exit code.

The three clients import none of each other. Each declares its commands'
arguments and the function that runs them (cli/arguments.py, web/server.py,
bench/arguments.py); this module, above all three, puts them in one parser and
hands each command to its own client.
"""

from __future__ import annotations

import argparse
import os
from pathlib import Path

from bgremover import __version__, logs
from bgremover.bench import arguments as bench
from bgremover.brokerurl import secrets
from bgremover.cli import arguments as cli
from bgremover.cli.flags import add_setting_flags, flag_settings
from bgremover.exits import EXIT_USAGE, fail
from bgremover.settings import Settings, SettingsError, load_settings, unknown_variables
from bgremover.web import server as web


def build_parser() -> argparse.ArgumentParser:
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--root", type=Path, help="the folder holding inbox/, outbox/, ... (setting: root)")
    common.add_argument("--config", type=Path, help="a TOML settings file (or BGREMOVER_CONFIG)")
    parser = argparse.ArgumentParser(
        prog="bgremover", description="A hot folder that removes image backgrounds on this machine."
    )
    parser.add_argument("--version", action="version", version=f"bgremover {__version__}")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for add in (cli.add_run, cli.add_status, cli.add_retry, cli.add_review, cli.add_cancel, cli.add_remove):
        add(commands, common)
    add_bench(commands, common)
    cli.add_models(commands, common)
    cli.add_worker(commands, common)
    web.add_web_arguments(commands.add_parser("web", parents=[common], help=web.HELP))
    return parser


def add_bench(commands: argparse._SubParsersAction, common: argparse.ArgumentParser) -> None:
    parser = commands.add_parser("bench", parents=[common], help=bench.HELP)
    bench.add_bench_arguments(parser)
    add_setting_flags(parser, spelled_otherwise=bench.SPELLED_OTHERWISE)


def start(settings: Settings, args: argparse.Namespace) -> int:
    """Hand the command to its client, whose modules load only now: `--help` stays fast."""
    if args.command == "web":
        return web.start(settings, args)
    if args.command == "bench":
        from bgremover.bench.main import main as run_bench

        return run_bench(settings, args)
    from bgremover.cli import commands

    return getattr(commands, args.command)(settings, args)


def warn_of_unknown_variables() -> None:
    """A BGREMOVER_ variable that names no setting is most likely a typo: say so, instead of ignoring it unseen."""
    import structlog

    log = structlog.get_logger()
    for variable, close in unknown_variables(os.environ):
        log.warning(
            "unknown_environment_variable",
            variable=variable,
            **({"did_you_mean": close} if close else {}),
            note="not a setting; ignored",
        )


def warn_of_a_password_in_arguments() -> None:
    """--broker with a password: any user of this host reads it in `ps` for as long as the process runs."""
    import structlog

    structlog.get_logger().warning(
        "broker_password_in_arguments",
        note="any user of this host can read --broker in ps: give the URL by broker_url_file or BGREMOVER_BROKER_URL",
    )


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        broker = {"broker_url": args.broker} if getattr(args, "broker", None) else {}
        if getattr(args, "worker_providers", None):
            broker["providers"] = args.worker_providers
        settings = load_settings(args.config, root=args.root, **flag_settings(args), **broker)
    except SettingsError as exc:
        return fail(str(exc), EXIT_USAGE)
    given = getattr(args, "broker", None) or ""  # bench's --broker is not a setting, and may differ
    hidden = secrets(settings.broker_url.get_secret_value() if settings.broker_url else "") + secrets(given)
    logs.configure(settings.log_format, settings.log_level, hidden=hidden)
    if secrets(given):
        warn_of_a_password_in_arguments()
    warn_of_unknown_variables()
    return start(settings, args)
