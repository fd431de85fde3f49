"""Subcommands of the model side: features, train (the head), finetune, evaluate, and the metadata baseline.

A run lives in ``--run-dir`` (default ``<workspace>/runs/<run_id>``; ``train`` makes a new id when neither
``--run-dir`` nor ``--run-id`` is given).  ``train`` saves the resolved config in the run directory; the later
stages start from that saved config unless ``--profile`` or ``--config`` is given, and ``--set`` still overrides
single keys (e.g. ``--set finetune.epochs=2``), so all stages of a run agree on the base and sizes.
TensorFlow is imported only inside the handlers: building the parser stays light.
"""

from __future__ import annotations

import argparse
import logging
import time
import uuid

from xray_tasks.cli.common import add_config_args, load_config, parse_assignments
from xray_tasks.config import SPLITS, PipelineConfig, override
from xray_tasks.workspace import RunDir, Workspace

logger = logging.getLogger(__name__)


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "features", help="frozen base over the shards -> pooled features, one Parquet per shard"
    )
    add_config_args(p, "workspace")
    p.add_argument("--splits", default=",".join(SPLITS), help="comma list of splits (default: all)")
    p.add_argument(
        "--group",
        default="0/1",
        type=_group,
        help="I/N: only group I (from 0) of N of the shards, for N workers sharing the stage (default 0/1: all)",
    )
    p.set_defaults(func=_features)

    p = sub.add_parser(
        "baseline",
        help="metadata-only baseline (follow-up, age, sex, view) of the workspace's manifest: fit on train, "
        "threshold on val, metrics on test; once per manifest",
    )
    add_config_args(p, "workspace")
    p.add_argument("--force", action="store_true", help="refit even if this manifest's baseline exists")
    p.set_defaults(func=_baseline)

    for name, func, text in (
        ("train", _train, "train the report's head on the pooled features (starts a run)"),
        (
            "finetune",
            _finetune,
            "fine-tune base + head from the shards (resumable), write the run's model.keras",
        ),
        ("evaluate", _evaluate, "predictions, metrics.json, plots and model card of a run"),
    ):
        p = sub.add_parser(name, help=text)
        add_config_args(p, "workspace")
        p.set_defaults(profile=None)  # None: reuse the run's saved config when there is one
        p.add_argument("--run-dir", help="run directory (local path or s3:// URI)")
        p.add_argument("--run-id", help="run name under <workspace>/runs/ (instead of --run-dir)")
        p.set_defaults(func=func)
        if name == "train":
            p.add_argument(
                "--retrain-reason", default="", help="why an unchanged fingerprint is trained again"
            )
            p.add_argument("--retrain-of", default=None, help="the version that already has the fingerprint")
            p.add_argument("--actor", default="", help="who forced the retrain (recorded with the reason)")


def _group(text: str) -> tuple[int, int]:
    """``I/N`` -> ``(I, N)`` with ``0 <= I < N``."""
    index, _, count = text.partition("/")
    if not (index.isdigit() and count.isdigit() and 0 <= int(index) < int(count)):
        raise argparse.ArgumentTypeError(
            f"{text!r} is not I/N with 0 <= I < N, e.g. 0/2 and 1/2 for two workers"
        )
    return int(index), int(count)


def _features(args: argparse.Namespace):
    from xray_tasks.training.features import extract_features

    cfg = load_config(args)
    splits = tuple(s.strip() for s in args.splits.split(",") if s.strip())
    _determinism(cfg)
    return extract_features(cfg.workspace, cfg.features, splits, args.group)


def _baseline(args: argparse.Namespace):
    from xray_tasks.evaluation.baseline import run_baseline

    cfg = load_config(args)
    return run_baseline(cfg.workspace, cfg, force=args.force)


def run_dir_of(args: argparse.Namespace, workspace: str, create: bool) -> str:
    """``--run-dir``, else ``<workspace>/runs/<--run-id>``, else (when ``create``) a new timestamped id."""
    if args.run_dir and args.run_id:
        raise SystemExit("give --run-dir or --run-id, not both")
    if args.run_dir:
        return args.run_dir
    if args.run_id:
        return Workspace(workspace).run(args.run_id).root
    if not create:
        raise SystemExit("--run-dir or --run-id is required (the run that `xray-tasks train` started)")
    return Workspace(workspace).run(f"{time.strftime('%Y%m%d-%H%M%S')}-{uuid.uuid4().hex[:6]}").root


def run_config(args: argparse.Namespace, create: bool) -> tuple[PipelineConfig, str]:
    """The config for one stage of a run and the run directory."""
    if args.profile is None and not args.config:
        workspace = args.workspace or PipelineConfig().workspace
        run_dir = run_dir_of(args, workspace, create)
        cfg = RunDir(run_dir).read_config()
        if cfg is not None:
            assignments = parse_assignments(args.set)
            if args.workspace:
                assignments["workspace"] = args.workspace
            logger.info(
                "config: the run's saved %s%s",
                RunDir(run_dir).config,
                f" with {assignments}" if assignments else "",
            )
            return (override(cfg, assignments) if assignments else cfg), run_dir
    if args.profile is None:
        args.profile = "full"
    cfg = load_config(args)
    return cfg, run_dir_of(args, cfg.workspace, create)


def _train(args: argparse.Namespace):
    from xray_tasks.cli.retrain import record_fingerprint
    from xray_tasks.training.head import train_head

    cfg, run_dir = run_config(args, create=True)
    _determinism(cfg)
    record_fingerprint(cfg, run_dir, args.retrain_reason, args.actor, args.retrain_of)
    return train_head(cfg.workspace, run_dir, cfg)


def _finetune(args: argparse.Namespace):
    from xray_tasks.training.finetune import run_finetune

    cfg, run_dir = run_config(args, create=False)
    _determinism(cfg)
    return run_finetune(cfg.workspace, run_dir, cfg)


def _evaluate(args: argparse.Namespace):
    from xray_tasks.evaluation.evaluate import run_evaluate

    cfg, run_dir = run_config(args, create=False)
    _determinism(cfg)
    return run_evaluate(cfg.workspace, run_dir, cfg)


def _determinism(cfg: PipelineConfig) -> None:
    from xray_tasks.training.determinism import apply

    apply(cfg.repro)
