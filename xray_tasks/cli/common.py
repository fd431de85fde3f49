"""Helpers shared by the subcommand modules: logging, configuration from flags, expected errors."""

from __future__ import annotations

import argparse
import json
import logging
import sys

from xray_tasks.config import PipelineConfig, from_dict, override, profile, to_dict
from xray_tasks.errors import XrayError

EXPECTED_ERRORS: tuple[type[BaseException], ...] = (XrayError, OSError)
"""Errors a stage raises for bad input or a failing dependency: reported as one clear line, exit status 1."""


class IncompleteResult(XrayError):
    """A command did its work but some of it failed (e.g. inputs that could not be scored): its summary is still
    printed as the last stdout line, the message goes to stderr, and the exit status is 1."""

    def __init__(self, message: str, summary: dict) -> None:
        super().__init__(message)
        self.summary = summary


def configure_logging(level: str) -> None:
    logging.basicConfig(
        level=getattr(logging, level),
        stream=sys.stderr,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        force=True,
    )
    for noisy in ("botocore", "boto3", "urllib3", "s3transfer", "PIL"):
        logging.getLogger(noisy).setLevel(logging.WARNING)


def add_config_args(parser: argparse.ArgumentParser, *paths: str) -> None:
    """``--profile``, ``--config FILE``, repeatable ``--set section.key=value``, and the named path flags."""
    parser.add_argument(
        "--profile",
        default="full",
        choices=["full", "demo"],
        help="preset the other settings start from (default: full, the report's settings)",
    )
    parser.add_argument("--config", help="JSON file with (part of) a pipeline config")
    parser.add_argument(
        "--set",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="override one setting, e.g. --set head.epochs=20 (repeatable)",
    )
    for name in paths:
        parser.add_argument(f"--{name}", help=f"pipeline {name} (local path or s3:// URI)")


def parse_assignments(items: list[str]) -> dict[str, str]:
    """``["head.epochs=5", ...]`` from repeated ``--set`` flags -> ``{"head.epochs": "5", ...}``."""
    assignments = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep:
            raise SystemExit(f"--set expects KEY=VALUE, got {item!r}")
        assignments[key.strip()] = value
    return assignments


def load_config(args: argparse.Namespace) -> PipelineConfig:
    cfg = profile(args.profile)
    if args.config:
        with open(args.config) as fh:
            data = json.load(fh)
        base = to_dict(cfg)
        for section, values in data.items():
            if isinstance(values, dict) and isinstance(base.get(section), dict):
                base[section].update(values)
            else:
                base[section] = values
        cfg = from_dict(PipelineConfig, base)
    assignments = parse_assignments(args.set)
    for name in ("workspace", "source", "registry", "model_name"):
        value = getattr(args, name, None)
        if value:
            assignments[name] = value
    return override(cfg, assignments) if assignments else cfg
