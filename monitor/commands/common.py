"""What every command shares: number arguments, --config, loading settings, exit codes on errors."""

from __future__ import annotations

import argparse
import dataclasses
import os
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import anyio
import structlog

from monitor.commands.exits import EXIT_OK, EXIT_STARTUP, EXIT_USAGE
from monitor.config import Settings
from monitor.config_load import load_settings_with_warnings, shard_from_hostname
from monitor.errors import ConfigError, MonitorError, StartupError
from monitor.logs import configure_logging

log = structlog.get_logger(__name__)


def number_arg(
    convert: Callable[[str], float], noun: str, ok: Callable[[float], bool], bound: str
) -> Callable[[str], Any]:
    """An argparse `type` that converts with `convert` and checks `ok`, naming what is wrong."""

    def parse(text: str) -> Any:
        try:
            value = convert(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"must be {noun}, got {text!r}") from None
        if not ok(value):
            raise argparse.ArgumentTypeError(f"must be {bound}, got {value}")
        return value

    return parse


positive_int = number_arg(int, "a whole number", lambda v: v >= 1, "at least 1")
count_arg = number_arg(int, "a whole number", lambda v: v >= 0, "0 or more")
positive_float = number_arg(float, "a number", lambda v: v > 0, "> 0")


def add_world_options(parser: argparse.ArgumentParser, *, subscriptions: int, vaults: int) -> None:
    """--seed, --subscriptions and --vaults-per-subscription of a simulated estate."""
    parser.add_argument("--seed", type=int, default=1, help="world seed (default: 1)")
    parser.add_argument(
        "--subscriptions",
        type=positive_int,
        default=subscriptions,
        help=f"simulated subscriptions (default: {subscriptions})",
    )
    parser.add_argument(
        "--vaults-per-subscription",
        type=positive_int,
        default=vaults,
        help=f"vaults in each subscription (default: {vaults})",
    )


def add_config_option(parser: argparse.ArgumentParser) -> None:
    """--config, for the commands that read the daemon's configuration."""
    parser.add_argument(
        "--config",
        type=Path,
        default=None,
        help=(
            "TOML configuration file (see config/monitor.example.toml); settings may also come "
            "from BACKUP_MONITOR_<SECTION>__<KEY> environment variables"
        ),
    )


def settings_for(args: argparse.Namespace, *, one_shot: bool = False) -> Settings | None:
    """The settings of `--config` and the environment, shard resolved, with logging set up and
    one warning per `BACKUP_MONITOR_*` variable that names no setting.

    A configuration error is reported (one line on stderr) and gives None: exit with
    EXIT_USAGE. `one_shot` commands keep stderr for their own lines: they log info only when
    `[log] level` asks for debug.
    """
    try:
        loaded = load_settings_with_warnings(args.config, os.environ)
        settings = resolve_shard(loaded.settings, os.environ.get("HOSTNAME", ""))
    except ConfigError as exc:
        report_failure("configuration error", exc)
        return None
    level = settings.log.level
    if one_shot and level not in ("debug", "error"):
        level = "warning"
    configure_logging(level, settings.log.format)
    for item in loaded.unknown_variables:
        log.warning("config.unknown_variable", variable=item.variable, suggestion=item.suggestion)
    return settings


def resolve_shard(settings: Settings, hostname: str) -> Settings:
    """Settings with `shard.index` set: as configured, else the pod ordinal in `hostname`, else 0.

    Raises:
        ConfigError: (`shard.index`) the ordinal taken from the hostname is not below
            `shard.count`.
    """
    shard = settings.shard
    if shard.index is not None:
        return settings
    index = shard_from_hostname(hostname) if hostname else None
    if index is None:
        index = 0
    elif index >= shard.count:
        raise ConfigError(
            "shard.index",
            f"taken from HOSTNAME {hostname!r} as {index}, must be < shard.count ({shard.count})",
        )
    return dataclasses.replace(settings, shard=dataclasses.replace(shard, index=index))


def report_failure(kind: str, exc: BaseException) -> None:
    """On stderr: `backup-monitor: KIND: the first error that is not a group`.

    A message of several lines (azure-identity's list of the credentials it tried, a token
    endpoint's answer) goes on with each further line indented by 4 spaces, tabs expanded, so
    that it reads as one block under the first line.
    """
    # Task groups nest: the message worth a line is the first error that is not a group.
    while isinstance(exc, BaseExceptionGroup):
        exc = exc.exceptions[0]
    first, *rest = str(exc).splitlines() or [""]
    lines = [f"backup-monitor: {kind}: {first}", *(f"    {line.expandtabs(4)}" for line in rest)]
    sys.stderr.write("\n".join(lines) + "\n")


def run_guarded(body: Any, *args: Any, failure_code: int = EXIT_STARTUP) -> int:
    """Run an async command and return its exit code.

    The body's own int result is the code (None: 0); configuration errors give 2, startup
    failures 3, and any other MonitorError `failure_code`, each with one line on stderr.
    """
    code = EXIT_OK
    try:
        result = anyio.run(body, *args)
        if isinstance(result, int):
            code = result
    except* ConfigError as group:
        report_failure("configuration error", group.exceptions[0])
        code = EXIT_USAGE
    except* StartupError as group:
        report_failure("startup failed", group.exceptions[0])
        code = EXIT_STARTUP
    except* MonitorError as group:
        report_failure("failed", group.exceptions[0])
        code = failure_code
    return code
