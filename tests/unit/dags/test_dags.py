"""Every DAG file imports cleanly, follows Airflow 3 (ruff AIR3), stays thin, and documents itself in the UI."""

from __future__ import annotations

import ast
import re
import subprocess
import sys
from pathlib import Path

import jsonschema
import pytest
from support.airflow_env import DAGS, PLUGINS, airflow_home  # noqa: F401

from xray_tasks.registry import layout
from xray_tasks.settings import MODEL_NAME_PATTERN

pytestmark = pytest.mark.airflow

HELPERS = ("xray_common.py", "xray_governance.py")
DAG_FILES = sorted(p for p in DAGS.glob("*.py") if p.name not in HELPERS)
DAG_IDS = ("xray_ingest", "xray_train", "xray_score", "xray_promote")


@pytest.fixture(scope="module")
def bag(airflow_home):  # noqa: F811
    return airflow_home.dagbag()


def test_dagbag_imports_every_dag_file_without_errors(bag):
    assert bag["import_errors"] == {}
    assert {p.name for p in DAG_FILES} <= set(bag["files"])
    assert set(DAG_IDS) <= set(bag["dags"])
    # The helper modules are listed in .airflowignore, so the processor never parses them as DAG files.
    assert not set(HELPERS) & set(bag["files"])


def test_dag_and_plugin_files_pass_ruff_airflow3_rules():
    ruff = Path(sys.executable).with_name("ruff")
    proc = subprocess.run(
        [str(ruff), "check", "--no-cache", "--preview", "--select", "AIR3", str(DAGS), str(PLUGINS)],
        check=False,
        capture_output=True,
        text=True,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr


@pytest.mark.parametrize("path", DAG_FILES + [DAGS / h for h in HELPERS], ids=lambda p: p.name)
def test_dag_files_import_nothing_heavy_at_top_level(path):
    tree = ast.parse(path.read_text())
    top_level = set()
    for node in tree.body:
        if isinstance(node, ast.Import):
            top_level.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module:
            top_level.add(node.module)
    # xray_tasks.settings is the one module of the package the parser may load: names and rules, stdlib only
    # (tests/test_settings.py checks that it imports nothing else).
    roots = {name.split(".")[0] for name in top_level - {"xray_tasks.settings"}}
    assert not roots & {"tensorflow", "keras", "tensorflow_io", "pandas", "pyarrow", "numpy", "xray_tasks"}


@pytest.mark.parametrize("dag_id", DAG_IDS)
def test_every_dag_and_task_is_documented_in_the_ui(bag, dag_id):
    docs = bag["docs"][dag_id]
    # What a user reads on the DAG's page: what it does, its params, its assets.
    assert docs["dag"] and "#### Params" in docs["dag"] and "#### Assets" in docs["dag"]
    for param in bag["params"][dag_id]:
        assert f"`{param}`" in docs["dag"], f"{dag_id}: param {param!r} is not in the DAG's documentation"
    undocumented = sorted(task for task, doc in docs["tasks"].items() if not (doc or "").strip())
    assert docs["tasks"] and undocumented == []


def test_the_model_name_param_and_the_registry_share_one_rule(bag):
    schema = bag["params"]["xray_train"]["model_name"]
    assert schema["pattern"] == f"^$|{MODEL_NAME_PATTERN}"
    assert layout._NAME.pattern is MODEL_NAME_PATTERN
    for name, ok in (("", True), ("a" * 64, True), ("a" * 65, False), ("Upper", False)):
        # jsonschema is what Airflow's Param.resolve validates a run's params with.
        valid = jsonschema.Draft202012Validator(schema).is_valid(name)
        assert valid is ok, name
        if name:
            assert bool(re.fullmatch(MODEL_NAME_PATTERN, name)) is ok
            assert (layout._NAME.fullmatch(name) is not None) is ok


def test_training_stages_a_candidate_then_asks_a_reviewer_before_promoting(bag):
    tasks = bag["tasks"]["xray_train"]
    assert tasks["stage_candidate"]["upstream"] == ["evaluate", "plan"]
    approval = tasks["approval"]
    # Airflow's own human-in-the-loop approval: the required-actions page answers it.
    assert "ApprovalOperator" in approval["classes"] and "HITLOperator" in approval["classes"]
    assert approval["upstream"] == ["stage_candidate"]
    assert tasks["promote"]["upstream"] == ["approval", "plan", "stage_candidate"]
    assert tasks["announce_champion"]["upstream"] == ["promote"]
    assert tasks["announce_champion"]["outlets"] == ["xray_model"]
    # Only the promoted version is announced; a Reject skips promote, and record_rejection still runs.
    assert [t for t, info in tasks.items() if info["outlets"]] == ["announce_champion"]
    assert tasks["record_rejection"]["upstream"] == ["plan", "promote"]
    assert tasks["record_rejection"]["trigger_rule"] == "all_done"
    assert "gate_and_publish" not in tasks


def test_the_promote_dag_moves_the_champion_and_announces_it(bag):
    tasks = bag["tasks"]["xray_promote"]
    assert tasks["announce_champion"]["upstream"] == ["promote"]
    assert tasks["announce_champion"]["outlets"] == ["xray_model"]
    params = bag["params"]["xray_promote"]
    assert params["decision"]["enum"] == ["rolled_back", "approved"]
    for version, ok in (("7", True), ("000007", True), ("", False), ("7; rm", False)):
        assert jsonschema.Draft202012Validator(params["version"]).is_valid(version) is ok, version
    assert not jsonschema.Draft202012Validator(params["reason"]).is_valid("")
