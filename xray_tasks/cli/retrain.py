"""Subcommands of retraining only what changed: fingerprint (and its registry lookup), check-source,
record-source, retire-archive.  All light: no TensorFlow."""

from __future__ import annotations

import argparse
import json
import logging

from xray_tasks.cli.common import add_config_args, load_config
from xray_tasks.config import PipelineConfig
from xray_tasks.contracts import Fingerprint, RetrainOverride, SourceCheck, SourceState
from xray_tasks.errors import MissingInput

logger = logging.getLogger(__name__)


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "fingerprint",
        help="the fingerprint a training run on this workspace and config would have, and the registry version "
        "that already has it (if any)",
    )
    add_config_args(p, "workspace", "registry")
    p.add_argument("--model-name", dest="model_name", help="registry model name (default xray-triage)")
    p.add_argument("--run-dir", help="with --retrain-reason: the run to record the forced retrain in")
    p.add_argument("--retrain-reason", default="", help="train although a version has the fingerprint: why")
    p.add_argument("--actor", default="", help="who forces the retrain")
    p.set_defaults(func=_fingerprint)

    p = sub.add_parser("check-source", help="compare the source with what the workspace ingested: any news?")
    add_config_args(p, "source", "workspace")
    p.set_defaults(func=_check_source)

    p = sub.add_parser("record-source", help="record a checked source state as ingested (after validation)")
    add_config_args(p, "workspace")
    p.add_argument("--state", required=True, help="the `state` of a check-source summary, as JSON")
    p.set_defaults(func=_record_source)

    p = sub.add_parser("retire-archive", help="withdraw an archive's commit marker so it is ingested again")
    p.add_argument("archive")
    add_config_args(p, "workspace")
    p.set_defaults(func=_retire)


def current_fingerprint(cfg: PipelineConfig, retrain: RetrainOverride | None = None) -> Fingerprint:
    """The fingerprint of training ``cfg`` on its workspace with the code running now."""
    from xray_tasks.registry.integrity import code_version
    from xray_tasks.training import fingerprint

    return fingerprint.compute(cfg.workspace, cfg, code_version(), retrain)


def record_fingerprint(
    cfg: PipelineConfig, run_dir: str, reason: str = "", actor: str = "", of: str | None = None
) -> Fingerprint:
    """Compute the run's fingerprint and save it in the run (``train`` does this first)."""
    from xray_tasks.training import fingerprint

    retrain = (
        RetrainOverride(by=actor or "unknown", reason=reason.strip(), version=of) if reason.strip() else None
    )
    if retrain is None:
        earlier = fingerprint.read(run_dir)  # the plan recorded a forced retrain in the run before it started
        retrain = earlier.retrain if earlier else None
    fp = current_fingerprint(cfg, retrain)
    fingerprint.write(run_dir, fp)
    logger.info(
        "fingerprint %s (%s)%s", fp.short, fp.code, f"; forced retrain: {reason.strip()}" if retrain else ""
    )
    return fp


def _fingerprint(args: argparse.Namespace) -> dict:
    from xray_tasks.registry.catalog import find_by_fingerprint

    cfg = load_config(args)
    try:
        fp = current_fingerprint(cfg)
    except MissingInput as exc:
        # Nothing to fingerprint (no manifest or shards yet): the run goes on and its first stage says why.
        logger.warning("no fingerprint: %s", exc)
        return {"fingerprint": None, "match": None, "problem": str(exc)}
    match = find_by_fingerprint(cfg.registry, cfg.model_name, fp.digest) if args.registry else None
    if match:
        logger.info(
            "fingerprint %s: unchanged since version %s (%s)", fp.short, match["version"], match["decision"]
        )
    else:
        logger.info("fingerprint %s: no complete version has it", fp.short)
    if args.retrain_reason.strip():
        if not args.run_dir:
            raise SystemExit("--retrain-reason needs --run-dir (the run it is recorded in)")
        fp = record_fingerprint(
            cfg, args.run_dir, args.retrain_reason, args.actor, (match or {}).get("version")
        )
    return {"fingerprint": fp.to_dict(), "match": match}


def _check_source(args: argparse.Namespace) -> SourceCheck:
    from xray_tasks.data.source_state import check

    cfg = load_config(args)
    if not cfg.source:
        raise SystemExit("--source is required")
    return check(cfg.source, cfg.workspace, cfg.ingest)


def _record_source(args: argparse.Namespace) -> dict:
    from xray_tasks.data.source_state import record

    cfg = load_config(args)
    state = SourceState.from_dict(json.loads(args.state), where="--state")
    return {"recorded": record(cfg.workspace, state), "archives": len(state.archives)}


def _retire(args: argparse.Namespace) -> dict:
    from xray_tasks.data.source_state import retire

    cfg = load_config(args)
    return {"archive": args.archive, "retired": retire(cfg.workspace, args.archive)}
