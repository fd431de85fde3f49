"""``xray-tasks``: one subcommand per stage.

Each subcommand logs progress to stderr and prints its JSON summary as the last line of stdout (what an Airflow
task reads back).  Exit status: 0 done; 1 the stage failed for a stated reason (an ``xray_tasks.errors.XrayError``
or an operating-system error; the reason is the last line on stderr); 2 bad usage, or an unexpected error (a bug:
its traceback is printed before that last line).
The process ends with ``os._exit`` after flushing: tensorflow-io's S3 file system aborts a normal interpreter exit
(``pure virtual method called``) even after success, and that must not turn a finished stage into a failure.
"""

from __future__ import annotations

import argparse
import importlib
import json
import logging
import os
import sys
import traceback
from collections.abc import Sequence

from xray_tasks.cli import common
from xray_tasks.contracts import Contract

COMMAND_MODULES = (
    "xray_tasks.cli.ingest",
    "xray_tasks.cli.model",
    "xray_tasks.cli.registry",
    "xray_tasks.cli.retrain",
)

logger = logging.getLogger("xray_tasks")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="xray-tasks", description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--log-level",
        default=os.environ.get("XRAY_LOG_LEVEL", "INFO"),
        choices=["DEBUG", "INFO", "WARNING", "ERROR"],
    )
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for name in COMMAND_MODULES:
        importlib.import_module(name).register(sub)
    return parser


def run(argv: Sequence[str] | None = None) -> int:
    """Parse, run one subcommand, print its summary; returns the exit status (no ``os._exit``)."""
    parser = build_parser()
    args = parser.parse_args(argv)
    common.configure_logging(args.log_level)
    try:
        result = args.func(args)
    except common.IncompleteResult as exc:
        print(json.dumps(exc.summary, default=str, sort_keys=True))
        logger.error("%s incomplete: %s", args.command, exc)
        print(f"error: {exc}", file=sys.stderr)
        return 1
    except common.EXPECTED_ERRORS as exc:
        logger.error("%s failed: %s", args.command, exc)
        print(f"error: {exc}", file=sys.stderr)
        return 1
    except Exception as exc:  # noqa: BLE001 (a bug, not a stated failure: show where it happened)
        traceback.print_exc(file=sys.stderr)
        print(
            f"error: unexpected {type(exc).__name__} in {args.command} (a bug; traceback above): {exc}",
            file=sys.stderr,
        )
        return 2
    if isinstance(result, Contract):
        result = result.to_dict()
    if result is not None:
        print(json.dumps(result, default=str, sort_keys=True))
    return 0


def main(argv: Sequence[str] | None = None) -> None:
    try:
        status = run(argv)
    except SystemExit as exc:  # argparse usage errors, --help, and usage errors found later
        if isinstance(exc.code, str):
            print(f"usage error: {exc.code}", file=sys.stderr)
        status = exc.code if isinstance(exc.code, int) else 2
    except KeyboardInterrupt:
        status = 130
    sys.stdout.flush()
    sys.stderr.flush()
    logging.shutdown()
    os._exit(status)


if __name__ == "__main__":
    main()
