"""Subcommands of governed promotion: ``models promote|reject|gc`` and ``keys generate``."""

from __future__ import annotations

import argparse
from collections.abc import Callable


def register_models(msub: argparse._SubParsersAction, registry_args: Callable[..., None]) -> None:
    p = msub.add_parser(
        "promote", help="make a version the champion (compare-and-swap), recording who and why"
    )
    registry_args(p, formats=False)
    p.add_argument("--version", required=True, help="version id, e.g. 3 or 000003")
    p.add_argument("--reason", required=True, help="why (recorded in the decision log)")
    p.add_argument("--actor", help="who decides (default: $XRAY_ACTOR or the login name)")
    p.add_argument(
        "--decision",
        choices=("approved", "rolled_back", "forced"),
        default="approved",
        help="approved: sign-off of a staged candidate; rolled_back: back to an earlier champion; forced: any "
        "complete, verified version (default: approved)",
    )
    p.add_argument(
        "--expected-champion",
        help="refuse unless this version (or 'none') is still the champion",
    )
    p.set_defaults(func=_promote)

    p = msub.add_parser("reject", help="record that a staged candidate was rejected or timed out")
    registry_args(p, formats=False)
    p.add_argument("--version", required=True, help="version id")
    p.add_argument(
        "--decision", choices=("rejected_by_reviewer", "approval_timed_out"), default="rejected_by_reviewer"
    )
    p.add_argument("--actor", help="who decides (default: $XRAY_ACTOR or the login name)")
    p.add_argument("--comment", help="the reviewer's comment")
    p.set_defaults(func=_reject)

    p = msub.add_parser(
        "gc", help="list (and with --apply remove) incomplete versions; never the champion or a complete one"
    )
    registry_args(p, formats=False)
    p.add_argument("--older-than", default="24h", help="only versions claimed longer ago (default: 24h)")
    p.add_argument("--apply", action="store_true", help="remove them (default: a dry run that only lists)")
    p.set_defaults(func=_gc)


def register_keys(sub: argparse._SubParsersAction) -> None:
    keys = sub.add_parser("keys", help="signing keys for published versions")
    ksub = keys.add_subparsers(dest="keys_command", required=True, metavar="{generate}")
    p = ksub.add_parser(
        "generate", help="write an Ed25519 private key (mode 0600) and its public key; prints the key id"
    )
    p.add_argument("--out", required=True, help="folder for signing.key and signing.pub")
    p.set_defaults(func=_keys_generate)


def _promote(args: argparse.Namespace):
    from xray_tasks.registry import promotion

    kwargs = {}
    if args.expected_champion is not None:
        text = args.expected_champion.strip().lower()
        kwargs["expected_champion"] = None if text in ("", "none") else args.expected_champion
    return promotion.promote(
        args.registry,
        args.model_name,
        args.version,
        reason=args.reason,
        actor=args.actor,
        decision=args.decision,
        **kwargs,
    )


def _reject(args: argparse.Namespace):
    from xray_tasks.registry import promotion

    return promotion.reject(
        args.registry,
        args.model_name,
        args.version,
        decision=args.decision,
        actor=args.actor,
        comment=args.comment,
    )


def _gc(args: argparse.Namespace) -> dict:
    from xray_tasks.registry import gc

    return gc.collect(args.registry, args.model_name, older_than=args.older_than, apply=args.apply)


def _keys_generate(args: argparse.Namespace) -> dict:
    from xray_tasks.registry import signing

    return signing.generate(args.out)
