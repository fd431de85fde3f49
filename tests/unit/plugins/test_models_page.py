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
    row = html.split("<tr class=decision>", 1)[1].split("</tr>", 1)[0]
    assert "forced" in row and "<td>ana</td>" in row and "hotfix" in row


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


HISTORY = [
    {"decided_at": "2026-11-03T10:00:00Z", "decision": "candidate", "reasons": [], "actor": "airflow:ana"},
    {
        "decided_at": "2026-11-03T11:00:00Z",
        "decision": "approved",
        "reasons": [],
        "actor": "airflow:rev",
        "comment": "better AUROC",
        "champion_before": "000001",
    },
    {
        "decided_at": "2026-11-04T09:00:00Z",
        "decision": "forced",
        "reasons": ["auroc below floor"],
        "forced": {"by": "airflow:ana", "reason": "hotfix"},
        "changed_keys": ["gate.min_auroc"],
    },
    {
        "decided_at": "2026-11-05T09:00:00Z",
        "decision": "rejected_by_reviewer",
        "reasons": [],
        "actor": "airflow:rev",
        "comment": "too few <b>healthy</b> cleared",
    },
    {
        "decided_at": "2026-11-06T09:00:00Z",
        "decision": "approval_timed_out",
        "actor": "airflow:approval-timeout",
    },
    {
        "decided_at": "2026-11-07T09:00:00Z",
        "decision": "rolled_back",
        "actor": "airflow:oncall",
        "comment": "v3 misses effusions",
        "champion_before": "000003",
    },
]


def _decision_rows(html: str) -> list[str]:
    return [part.split("</tr>", 1)[0] for part in html.split("<tr class=decision>")[1:]]


def test_the_decision_history_says_what_who_when_and_why_for_every_kind():
    html = xray_models_page.version_section("xray-triage", {**DETAILS, "decisions": HISTORY})
    rows = _decision_rows(html)
    assert len(rows) == len(HISTORY)
    expected = [
        ("staged as candidate", "airflow:ana", ""),
        ("approved", "airflow:rev", "better AUROC; champion before: 000001"),
        ("forced", "airflow:ana", "hotfix; auroc below floor; gate keys changed: gate.min_auroc"),
        ("rejected by reviewer", "airflow:rev", "too few &lt;b&gt;healthy&lt;/b&gt; cleared"),
        ("approval timed out", "airflow:approval-timeout", ""),
        ("rolled back to this version", "airflow:oncall", "v3 misses effusions; champion before: 000003"),
    ]
    for row, (label, who, why) in zip(rows, expected, strict=True):
        assert f">{label}</span>" in row and f"<td>{who}</td>" in row, row
        assert why in row and HISTORY[rows.index(row)]["decided_at"] in row
    assert "<b>healthy</b>" not in html


def test_the_signature_status_is_shown_for_each_case():
    status = xray_models_page.signature_status
    assert "verified</b>, key <code>k1</code>" in status({"signed": True, "key_id": "k1", "verified": True})
    bad = status({"signed": True, "key_id": "k9", "verified": False, "reason": "unknown key k9"})
    assert "invalid" in bad and "unknown key k9" in bad and "class=rejected" in bad
    assert "<b>unsigned</b>" in status(
        {"signed": False, "key_id": None, "verified": False, "reason": "no keys"}
    )
    assert "not checked" in status(
        {"signed": True, "key_id": "k1", "verified": None, "reason": "no trusted keys"}
    )
    html = xray_models_page.version_section(
        "m", {**DETAILS, "signature": {"signed": True, "key_id": "k1", "verified": True}}
    )
    assert "signature: <b>verified</b>" in html


def _model(approvals):
    champion = {**DETAILS, "version": "000002", "champion": True}
    gate_record = {
        "decision": "candidate",
        "gate": {"context": {"champion": {"version": "000002", "auroc": 0.73, "basis": "rescored"}}},
    }
    candidate = {
        **DETAILS,
        "version": "000004",
        "champion": False,
        "metrics": metrics_json(auroc=0.81, ci=(0.7, 0.9), recall=0.97, healthy_cleared=0.2, test_digest="b"),
        "decisions": [gate_record],
    }
    versions = [*VERSIONS, {**VERSIONS[0], "version": "000004", "champion": False, "pending": True}]
    return {
        "name": "xray-triage",
        "champion": "000002",
        "versions": versions,
        "details": [candidate, champion],
        "problems": [],
        "approvals": approvals,
    }


def test_a_pending_candidate_links_to_its_approval_in_airflow():
    link = "dags/xray_train/runs/manual__2026/tasks/approval/required_actions"
    html = xray_models_page.page("s3://reg", [_model({"000004": link})])
    assert f'<a target=_top href="../{link}">approve or reject in Airflow</a>' in html
    assert "candidate <b>000004</b> awaits sign-off" in html
    # Pending, but its approval task is not found (another deployment's Airflow): the general list instead.
    html = xray_models_page.page("s3://reg", [_model({"000004": None})])
    assert 'href="../required_actions?response_received=false"' in html


def test_champion_against_challenger_side_by_side_on_the_same_split():
    html = xray_models_page.champion_vs_challenger(_model({"000004": None}))
    assert "champion 000002" in html and "challenger 000004" in html
    auroc = html.split("<th>test AUROC</th>", 1)[1].split("</tr>", 1)[0]
    # The champion's AUROC is the one measured on the challenger's split (0.73), not its own 0.74.
    assert "0.730" in auroc and "0.810" in auroc and "+0.080" in auroc and "class=better" in auroc
    assert "re-scored on the challenger's test split" in html
    same = _model({})
    same["details"][0]["metrics"] = metrics_json(auroc=0.70, test_digest="digest-a")
    same["details"][0]["decisions"] = []
    html = xray_models_page.champion_vs_challenger(same)
    assert "same test split" in html
    assert "class=worse" in html.split("<th>test AUROC</th>", 1)[1].split("</tr>", 1)[0]
    # Only a champion: nothing to compare.
    alone = {**same, "details": [same["details"][1]]}
    assert xray_models_page.champion_vs_challenger(alone) == ""


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
