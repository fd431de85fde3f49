"""A candidate against the champion: the key metrics of both, side by side, with their deltas.

What a reviewer signs off on (the training DAG's approval body) and what the Models page shows as champion
against challenger.  Pure functions of two ``metrics.json`` documents (:class:`xray_tasks.contracts.Metrics`);
whether both were measured on the same test split is said, never assumed: equal split digests, or the gate's
own comparison (``same_split`` / ``rescored``) for the AUROC.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from xray_tasks.contracts import Metrics


@dataclass(frozen=True)
class Row:
    """One metric of the comparison: higher is better for all of them except where ``higher_is_better`` is off."""

    name: str
    candidate: float | None
    champion: float | None
    higher_is_better: bool = True

    @property
    def delta(self) -> float | None:
        if self.candidate is None or self.champion is None:
            return None
        return self.candidate - self.champion


def key_metrics(metrics: Metrics) -> dict[str, float | None]:
    """The numbers a triage reviewer compares, by the names the rows use."""
    test, at_op = metrics.test, metrics.test.at_operating_point
    ci = test.auroc_ci or (None, None)
    return {
        "test AUROC": test.auroc,
        "AUROC 95% CI low": ci[0],
        "AUPRC": test.auprc,
        "sensitivity at the operating point": at_op.recall,
        "healthy studies cleared": at_op.healthy_cleared,
        f"F{at_op.beta:g}": at_op.f_beta,
        "threshold (chosen on val)": metrics.operating_point.threshold,
    }


def split_digest(metrics: Metrics) -> str:
    """The test split's identity: the digest of names, labels and patients where recorded, else of the names."""
    return getattr(metrics.data, "test_split_digest", None) or metrics.data.test_digest


def same_split(candidate: Metrics, champion: Metrics | None) -> bool:
    return champion is not None and split_digest(candidate) == split_digest(champion)


def compare(
    candidate: Metrics, champion: Metrics | None, champion_auroc_on_candidate_split: float | None = None
) -> list[Row]:
    """Rows of candidate against champion.

    Args:
        champion_auroc_on_candidate_split: the gate's champion AUROC on the candidate's test split (its
            decision context); it replaces the champion's own test AUROC, so that row always compares like
            with like.
    """
    mine = key_metrics(candidate)
    theirs = key_metrics(champion) if champion is not None else {}
    if champion_auroc_on_candidate_split is not None:
        theirs["test AUROC"] = champion_auroc_on_candidate_split
    return [
        Row(name, value, theirs.get(name), higher_is_better=not name.startswith("threshold"))
        for name, value in mine.items()
    ]


def _fmt(value: float | None, signed: bool = False) -> str:
    if value is None:
        return "–"
    return f"{value:+.3f}" if signed else f"{value:.3f}"


def markdown_table(rows: list[Row], candidate_label: str, champion_label: str) -> str:
    """The rows as a Markdown table (what the Airflow UI renders in an approval's body)."""
    lines = [
        f"| metric | {candidate_label} | {champion_label} | delta |",
        "| --- | ---: | ---: | ---: |",
    ]
    for row in rows:
        lines.append(
            f"| {row.name} | {_fmt(row.candidate)} | {_fmt(row.champion)} | {_fmt(row.delta, signed=True)} |"
        )
    return "\n".join(lines)


def gate_checks_markdown(gate: dict[str, Any] | None) -> str:
    """The gate's checks of a decision record (``GateResult.to_dict()``) as a Markdown list."""
    checks = (gate or {}).get("checks") or []
    if not checks:
        return "- (no gate checks recorded)"
    lines = []
    for check in checks:
        mark = "pass" if check.get("passed") else "FAIL"
        lines.append(f"- **{mark}** `{check.get('name')}`: {check.get('detail')}")
    return "\n".join(lines)


def review_markdown(
    model_name: str,
    candidate_version: str,
    candidate: Metrics,
    gate: dict[str, Any] | None,
    champion_version: str | None,
    champion: Metrics | None,
    models_url: str,
    forced: dict[str, Any] | None = None,
) -> str:
    """What a reviewer reads before approving ``candidate_version``: candidate against champion, the gate's
    checks, and a link to the Models page.

    ``gate`` is the candidate's gate result (``GateResult.to_dict()``); its context's champion score is the
    champion's AUROC on the candidate's own test split.
    """
    context = (gate or {}).get("context") or {}
    scored = context.get("champion") or {}
    rows = compare(candidate, champion, scored.get("auroc"))
    parts = [f"### {model_name}: candidate v{candidate_version}"]
    if champion is None:
        parts.append("There is no champion yet: this would be the first.")
    else:
        basis = scored.get("basis")
        if same_split(candidate, champion):
            where = "both on the same test split"
        elif basis == "rescored":
            where = (
                "the champion was re-scored on the candidate's test split for the AUROC; its other numbers are "
                "from its own test split"
            )
        else:
            where = "**different test splits**: compare with care"
        parts.append(f"Against champion v{champion_version} ({where}).")
    parts.append(
        markdown_table(rows, f"candidate v{candidate_version}", f"champion v{champion_version or '–'}")
    )
    verdict = "passed" if (gate or {}).get("passed") else "**did not pass**"
    parts.append(f"#### Gate checks ({verdict})\n{gate_checks_markdown(gate)}")
    if forced:
        keys = ", ".join(f"`{k}`" for k in forced.get("changed_keys") or []) or "none"
        parts.append(
            f"**Forced publish** by {forced.get('by')}: {forced.get('reason')} (gate keys changed: {keys})"
        )
    parts.append(f"[Models page]({models_url}): decision history, plots and every version.")
    return "\n\n".join(parts)
