"""The "Models" page's HTML (plugins/xray_models_page.py): pure functions of what the registry API returns."""

from __future__ import annotations

import sys

from support import REPO
from support.registry import metrics_json

sys.path.insert(0, str(REPO / "plugins"))
import xray_models_page

VERSIONS = [
    {
        "version": "000001",
        "complete": True,
        "champion": False,
        "created_at": "2026-11-01T00:00:00Z",
        "summary": {
            "test_auroc": 0.71,
            "sensitivity": 0.95,
            "healthy_cleared": 0.2,
            "threshold": 0.3,
            "base": "r",
        },
        "decision": "approved",
        "reasons": [],
    },
    {
        "version": "000002",
        "complete": True,
        "champion": True,
        "created_at": "2026-11-02T00:00:00Z",
        "summary": {
            "test_auroc": 0.74,
            "sensitivity": 0.96,
            "healthy_cleared": 0.25,
            "threshold": 0.31,
            "base": "r",
        },
        "decision": "forced",
        "reasons": ["auroc <script>alert(1)</script> below floor"],
    },
    {"version": "000003", "complete": False, "champion": False, "problem": "no MANIFEST.json"},
]
DETAILS = {
    "version": "000002",
    "champion": True,
    "uri": "s3://reg/xray-triage/versions/000002",
    "metrics": metrics_json(auroc=0.74, ci=(0.6, 0.85), recall=0.96, healthy_cleared=0.25),
    "decisions": [
        {
            "decided_at": "2026-11-02",
            "decision": "forced",
            "reasons": [],
            "forced": {"by": "ana", "reason": "hotfix"},
        }
    ],
    "plots": {"roc.png": "s3://.../plots/roc.png", "notes.txt": "s3://.../plots/notes.txt"},
}


def test_page_lists_versions_marks_the_champion_and_escapes_stored_text():
    html = xray_models_page.page(
        "s3://reg",
        [
            {
                "name": "xray-triage",
                "champion": "000002",
                "versions": VERSIONS,
                "details": [DETAILS],
                "problems": [],
            }
        ],
    )
    assert html.count("<tr><td>0000") == 3
    row2 = html.split("<tr><td>000002</td>", 1)[1].split("</tr>", 1)[0]
    assert "champion" in row2 and "0.740" in row2 and "forced" in row2
    assert "<script>" not in html and "&lt;script&gt;" in html
    assert "incomplete" in html.split("<tr><td>000003</td>", 1)[1].split("</tr>", 1)[0]
    # Plots are relative links to the plugin's own plot route; non-PNG artifacts are not shown as images.
    assert 'src="plot/xray-triage/000002/roc.png"' in html and "notes.txt" not in html
    assert "by ana: hotfix" in html


def test_the_f_score_row_follows_the_runs_beta():
    # metrics.json written with evaluate.beta = 2: the page shows F2, never an empty F3 row.
    from xray_tasks.evaluation import metrics

    doc = metrics_json()
    rates = metrics.rates({"tn": 3, "fp": 7, "fn": 1, "tp": 19}, beta=2).to_dict()
    doc = {
        **doc,
        "schema": 2,
        "test": {
            **doc["test"],
            "at_0.5": rates,
            "at_operating_point": rates,
            "benchmark_always_unhealthy": metrics.rates(
                {"tn": 0, "fp": 10, "fn": 0, "tp": 20}, beta=2
            ).to_dict(),
        },
        "val": {**doc["val"], "at_operating_point": rates},
    }
    html = xray_models_page.version_section("xray-triage", {**DETAILS, "metrics": doc})
    row = html.split("<th>F2 (model / always-unhealthy)</th>", 1)[1].split("</tr>", 1)[0]
    assert f"{rates['f_beta']:.3f}" in row and "–" not in row and "F3" not in html


def test_page_without_models_says_so():
    assert "No model has been published yet" in xray_models_page.page("/r", [])


def test_a_version_shows_its_ladder_and_the_margin_over_the_baseline():
    import numpy as np
    import pandas as pd

    from xray_tasks.config import EvalConfig
    from xray_tasks.evaluation import ladder

    rng = np.random.default_rng(0)
    labels = rng.integers(0, 2, 300).astype(np.int8)

    def table(signal: float) -> pd.DataFrame:
        return pd.DataFrame(
            {
                "image_index": [f"{i}.png" for i in range(300)],
                "patient_id": np.arange(300),
                "probability": np.clip(rng.normal(0.4 + signal * labels, 0.2), 0, 1),
                "label": labels,
            }
        )

    model, base = table(0.3), table(0.05)
    climbed = ladder.build(model, 0.45, EvalConfig(bootstrap=100), base, base)
    html = xray_models_page.version_section(
        "xray-triage", {**DETAILS, "metrics": {**metrics_json(), "ladder": climbed.to_dict()}}
    )
    table_html = html.split("<table class=ladder>", 1)[1].split("</table>", 1)[0]
    names = [cell.split("</td>", 1)[0] for cell in table_html.split("<tr><td>")[1:]]
    assert names == ["always unhealthy", "metadata baseline", "this model"]
    baseline_row = table_html.split("<tr><td>metadata baseline</td>", 1)[1].split("</tr>", 1)[0]
    assert f"{climbed.rungs[1].auroc:.3f}" in baseline_row
    versus = climbed.model_vs_baseline
    assert f"margin over the metadata baseline: {versus.delta:.4f}" in html and "300 test studies" in html
    old = xray_models_page.version_section("xray-triage", DETAILS)  # a version evaluated before the ladder
    assert "no ladder: evaluated before the metadata baseline existed" in old
