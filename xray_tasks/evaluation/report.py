"""Plots (PNG, matplotlib's Agg backend) and the model card of an evaluated run.

``plots/roc.png``, ``pr.png``, ``threshold_sweep.png`` (the report's Figure 10), ``confusion_matrix.png`` (laid
out as the report's Figure 8, at 0.5 and at the operating point), ``training_head.png`` and
``training_finetune.png`` (loss and accuracy per epoch, train and val).  The ROC and the threshold sweep also
draw the metadata-only baseline on the same test studies when the run has one.
"""

from __future__ import annotations

import logging
import tempfile
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from xray_tasks import storage
from xray_tasks.config import PipelineConfig, to_dict
from xray_tasks.contracts import Metrics
from xray_tasks.evaluation import metrics
from xray_tasks.workspace import RunDir

logger = logging.getLogger(__name__)

HEALTHY_COLOUR, UNHEALTHY_COLOUR, MODEL_COLOUR = "#1f77b4", "#d62728", "#2ca02c"
BASELINE_COLOUR = "#9467bd"


def _pyplot():
    import matplotlib

    matplotlib.use("Agg")  # no display on workers; must precede the pyplot import
    import matplotlib.pyplot as plt

    return plt


def write_plots(
    run_dir: str, val: pd.DataFrame, test: pd.DataFrame, doc: Metrics, baseline: pd.DataFrame | None = None
) -> dict[str, str]:
    """Draw every plot from the predictions and metrics; returns name -> URI.

    ``baseline``: the metadata baseline's predictions on the same test studies, drawn beside the model's.
    """
    plt, run = _pyplot(), RunDir(run_dir)
    threshold = doc.operating_point.threshold
    figures = {
        "roc": _roc(plt, val, test, doc, threshold, baseline),
        "pr": _pr(plt, test, doc),
        "threshold_sweep": _sweep(plt, test, threshold, baseline),
        "confusion_matrix": _confusion(plt, doc, threshold),
    }
    for stage in ("head", "finetune"):
        uri = run.history(stage)
        if storage.exists(uri):
            figures[f"training_{stage}"] = _training(plt, storage.read_json(uri), stage)
    out = {}
    with tempfile.TemporaryDirectory(prefix="xray-plots-") as tmp:
        for name, fig in figures.items():
            local = Path(tmp) / f"{name}.png"
            fig.savefig(local, dpi=110, bbox_inches="tight")
            plt.close(fig)
            out[name] = run.plot(name)
            storage.put_file(local, out[name])
    logger.info("report: %d plot(s) under %s", len(out), run.plots)
    return out


def _roc(plt, val: pd.DataFrame, test: pd.DataFrame, doc: Metrics, threshold: float, baseline=None):
    fig, ax = plt.subplots(figsize=(5.5, 5))
    ci = doc.test.auroc_ci
    ci_text = f" [{ci[0]:.3f}, {ci[1]:.3f}]" if ci else ""
    for frame, name, style in ((test, "test", "-"), (val, "val", "--")):
        y, p = frame["label"].to_numpy(), frame["probability"].to_numpy()
        fpr, tpr, _ = metrics.roc_curve(y, p)
        extra = ci_text if name == "test" else ""
        ax.plot(
            fpr,
            tpr,
            style,
            color=MODEL_COLOUR if name == "test" else "grey",
            label=f"{name} (n={len(frame)}): AUROC {metrics.auroc(y, p):.3f}{extra}",
        )
    if baseline is not None:
        y, p = baseline["label"].to_numpy(), baseline["probability"].to_numpy()
        fpr, tpr, _ = metrics.roc_curve(y, p)
        ax.plot(
            fpr,
            tpr,
            "-.",
            color=BASELINE_COLOUR,
            label=f"metadata baseline, test: AUROC {metrics.auroc(y, p):.3f}",
        )
    op = doc.test.at_operating_point
    ax.plot(
        1 - op.specificity,
        op.recall,
        "o",
        color=UNHEALTHY_COLOUR,
        label=f"operating point t={threshold:.3f} (chosen on val)",
    )
    ax.plot([0, 1], [0, 1], ":", color="black", lw=0.8, label="chance")
    ax.set(
        xlabel="1 - specificity (healthy studies flagged)",
        ylabel="sensitivity (unhealthy studies flagged)",
        title="ROC",
        xlim=(0, 1),
        ylim=(0, 1.01),
    )
    ax.legend(loc="lower right", fontsize=8)
    return fig


def _pr(plt, test: pd.DataFrame, doc: Metrics):
    fig, ax = plt.subplots(figsize=(5.5, 5))
    y, p = test["label"].to_numpy(), test["probability"].to_numpy()
    precision, recall, _ = metrics.pr_curve(y, p)
    ax.step(
        np.r_[0.0, recall],
        np.r_[precision[0] if len(precision) else 1.0, precision],
        where="post",
        color=MODEL_COLOUR,
        label=f"test: AUPRC {doc.test.auprc:.3f}",
    )
    prevalence = float(y.mean()) if len(y) else 0.0
    ax.axhline(
        prevalence, ls=":", color="black", lw=0.8, label=f"always unhealthy (prevalence {prevalence:.3f})"
    )
    op = doc.test.at_operating_point
    ax.plot(op.recall, op.precision, "o", color=UNHEALTHY_COLOUR, label="operating point")
    ax.set(
        xlabel="recall (sensitivity)",
        ylabel="precision",
        title="Precision-recall (test)",
        xlim=(0, 1),
        ylim=(0, 1.01),
    )
    ax.legend(loc="lower left", fontsize=8)
    return fig


def _sweep(plt, test: pd.DataFrame, threshold: float, baseline=None):
    sweep = metrics.threshold_sweep(test["label"].to_numpy(), test["probability"].to_numpy())
    fig, ax = plt.subplots(figsize=(6.5, 4.5))
    ax.plot(
        sweep["threshold"],
        sweep["healthy_cleared"],
        color=HEALTHY_COLOUR,
        label=f"healthy studies cleared (of {sweep['healthy']})",
    )
    ax.plot(
        sweep["threshold"],
        sweep["unhealthy_missed"],
        color=UNHEALTHY_COLOUR,
        label=f"unhealthy studies missed (of {sweep['unhealthy']})",
    )
    if baseline is not None:
        base = metrics.threshold_sweep(baseline["label"].to_numpy(), baseline["probability"].to_numpy())
        for key, colour in (("healthy_cleared", HEALTHY_COLOUR), ("unhealthy_missed", UNHEALTHY_COLOUR)):
            what = key.replace("_", " ")
            ax.plot(
                base["threshold"], base[key], "-.", color=colour, lw=1, label=f"metadata baseline: {what}"
            )
    ax.axvline(0.5, ls=":", color="grey", lw=0.8, label="0.5")
    ax.axvline(threshold, ls="--", color="black", lw=0.8, label=f"operating point {threshold:.3f} (val)")
    ax.set(
        xlabel="threshold on P(unhealthy): below it a study is cleared as healthy",
        ylabel="test studies",
        title="Threshold sweep (test): cleared vs missed",
    )
    ax.legend(fontsize=8)
    return fig


def _confusion(plt, doc: Metrics, threshold: float):
    fig, axes = plt.subplots(1, 2, figsize=(9, 4))
    for ax, cm, title in (
        (axes[0], doc.test.at_half, "threshold 0.5"),
        (axes[1], doc.test.at_operating_point, f"operating point {threshold:.3f}"),
    ):
        grid = np.array([[cm.tn, cm.fp], [cm.fn, cm.tp]])
        ax.imshow(grid, cmap="Blues")
        for (r, c), value in np.ndenumerate(grid):
            ax.text(
                c,
                r,
                f"{value}",
                ha="center",
                va="center",
                color="white" if value > grid.max() / 2 else "black",
                fontsize=12,
            )
        ax.set_xticks([0, 1], ["predicted healthy", "predicted unhealthy"])
        ax.set_yticks([0, 1], ["actually healthy", "actually unhealthy"])
        ax.set_title(f"test, {title}", fontsize=10)
    fig.tight_layout()
    return fig


def _training(plt, record: dict, stage: str):
    from matplotlib.ticker import MultipleLocator

    history = record["history"]
    fig, axes = plt.subplots(1, 2, figsize=(10, 4))
    for ax, metric in zip(axes, ("loss", "accuracy")):
        for prefix, style in (("", "-"), ("val_", "--")):
            values = history.get(prefix + metric)
            if values:
                epochs = np.arange(1, len(values) + 1)
                ax.plot(
                    epochs,
                    values,
                    style,
                    marker="o" if len(values) < 15 else None,
                    label=f"{'val' if prefix else 'train'}",
                )
        best = (
            (record.get("best") or {}).get("epoch")
            if isinstance(record.get("best"), dict)
            else record.get("best_epoch")
        )
        if best:
            ax.axvline(best, ls=":", color="grey", lw=0.8, label=f"kept: epoch {best}")
        ax.set(
            xlabel="epoch",
            ylabel="binary cross-entropy" if metric == "loss" else metric,
            title=f"{'Head training' if stage == 'head' else 'Fine-tuning'}: {metric}",
        )
        epochs_run = max(len(history.get("loss") or []), 1)
        ax.xaxis.set_major_locator(MultipleLocator(max(1, round(epochs_run / 10))))  # whole epochs only
        ax.set_xlim(0.5, epochs_run + 0.5)
        ax.legend(fontsize=8)
    fig.tight_layout()
    return fig


def _fmt(value: Any) -> str:
    if value is None:
        return "n/a"
    if isinstance(value, float):
        return f"{value:.4f}"
    return str(value)


def model_card(doc: Metrics, cfg: PipelineConfig) -> str:
    """Markdown: what the model is for and not for, its data, config, metrics with intervals, limits."""
    sections = (
        _card_use(doc),
        _card_model(doc, cfg),
        _card_data(doc),
        _card_results(doc),
        _card_ladder(doc),
        _card_limits(doc),
        f"## Configuration\n```json\n{_json(to_dict(cfg))}\n```\n",
    )
    return "\n".join(sections)


def _card_use(doc: Metrics) -> str:
    return f"""# Model card: chest X-ray triage ({doc.model.base}, {doc.model.input_size} px)

## Intended use
Triage **support**: rank or pre-sort frontal chest X-rays so that studies likely to show one of the 14
ChestX-ray14 findings are read first, and report the share of healthy studies that could be deprioritised at a
fixed sensitivity.  It is **not a diagnostic device**: it names no finding with clinical validity, must not clear
a study without a radiologist, and has not been validated prospectively or on any other hospital's images.
"""


def _card_model(doc: Metrics, cfg: PipelineConfig) -> str:
    m = doc.model
    return f"""## Model
Base `{m.base}` (weights `{m.weights}`), input `{m.input_name}`: float32 [None, {m.input_size},
{m.input_size}, 3] in 0..255 (grey replicated), preprocessing inside; output `{m.output}` = softmax [None, 2],
column 1 = P(unhealthy).  Head: global average pool -> Dense {cfg.head.hidden_units} {cfg.head.activation} ->
Dropout {cfg.head.dropout} -> Dense 2 softmax{" (+ 14 sigmoid pathologies)" if cfg.head.multilabel else ""};
fine-tuned {cfg.finetune.epochs} epoch(s) with the last {cfg.finetune.unfreeze_layers} base layers unfrozen.
"""


def _card_data(doc: Metrics) -> str:
    rows = "\n".join(
        f"| {name} | {c.images} | {c.patients} | {c.healthy} | {c.unhealthy} |"
        for name, c in (doc.data.counts or {}).items()
    )
    return f"""## Data
Workspace `{doc.data.workspace}`, manifest sha256 `{doc.data.manifest_sha256[:16]}`, test digest
`{doc.data.test_digest[:16]}`.  Splits are patient-wise (official NIH lists; validation carved from
train_val patients); stored images {doc.model.stored_image_size} px.

| split | images | patients | healthy | unhealthy |
| --- | --- | --- | --- | --- |
{rows}
"""


def _card_results(doc: Metrics) -> str:
    test, op, val, point = doc.test, doc.test.at_operating_point, doc.val, doc.operating_point
    table = "\n".join(
        f"| {label} | {_fmt(a.recall)} | {_fmt(a.specificity)} | {_fmt(a.precision)} | {_fmt(a.f_beta)} | "
        f"{_fmt(a.accuracy)} | {a.tn} / {a.fp} / {a.fn} / {a.tp} |"
        for label, a in (
            ("operating point (val-chosen)", op),
            ("threshold 0.5", test.at_half),
            ("always unhealthy (benchmark)", test.benchmark_always_unhealthy),
        )
    )
    per_path = test.per_pathology_auroc
    path_lines = (
        ""
        if not per_path
        else "\n\nPer-finding AUROC (test): " + ", ".join(f"{k} {_fmt(v)}" for k, v in per_path.items())
    )
    return f"""## Results on the test split (n={test.n}, {test.positives} unhealthy)
AUROC {_fmt(test.auroc)} (95% patient bootstrap {_interval(test.auroc_ci)}), AUPRC {_fmt(test.auprc)}.
Operating point: threshold {point.threshold:.4f}, the largest with validation sensitivity >=
{point.target_sensitivity} (val: n={val.n}, AUROC {_fmt(val.auroc)}).  At it, test
sensitivity {_fmt(op.recall)} (95% CI {_interval(test.sensitivity_ci)}) and **{_fmt(op.healthy_cleared)} of
healthy studies cleared** (a doctor no longer needs to read them first).

| | sensitivity | specificity | precision | F{op.beta:g} | accuracy | TN / FP / FN / TP |
| --- | --- | --- | --- | --- | --- | --- |
{table}{path_lines}

The always-unhealthy benchmark scores a high F{op.beta:g} because recall is weighted heavily; it clears no
healthy study, which is what a triage model has to beat.
"""


def _card_ladder(doc: Metrics) -> str:
    from xray_tasks.evaluation import ladder

    return "" if doc.ladder is None else ladder.card_section(doc.ladder)


def _card_limits(doc: Metrics) -> str:
    return f"""## Known limits
- NIH labels were mined from radiology reports by NLP and are noisy; "No Finding" is not a verified normal.
- One hospital, mostly frontal views; follow-up studies of sick patients are over-represented.
- The operating point holds sensitivity only as well as validation predicts test; check the interval above.
- Images are downsampled to {doc.model.stored_image_size} px; small findings (nodules) may be lost.
"""


def _interval(ci: tuple[float, ...] | None) -> str:
    return "None" if ci is None else f"[{', '.join(repr(float(v)) for v in ci)}]"


def _json(obj: Any) -> str:
    import json

    return json.dumps(obj, indent=1, sort_keys=True)


def write_model_card(run_dir: str, doc: Metrics, cfg: PipelineConfig) -> str:
    uri = RunDir(run_dir).model_card
    storage.write_text(uri, model_card(doc, cfg))
    return uri
