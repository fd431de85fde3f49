"""The DAGs and the Models page read the registry root from the same place, whatever mix of Airflow Variable,
Airflow config and environment is set.

Everything is real: the Variable is stored in the metadata database, the config option comes from
``AIRFLOW__XRAY__REGISTRY``, the DAG side is the ``plan`` task of ``xray_train`` run by ``dag.test()`` (the
Task SDK's Variable, through the execution API) and the page side is the plugin's own ``registry_root`` (the
api-server's ``airflow.models.Variable``).  The child process runs in a home of this module's own, so the
Variables it sets never reach the other Airflow tests.  Run as a script, this file is that child.
"""

from __future__ import annotations

import itertools
import json
import os
import subprocess
import sys
from pathlib import Path

from support import REPO
from support.airflow_env import DAGS, PLUGINS, migrated_home

try:
    import pytest
except ImportError:  # the child side needs no fixtures
    pytest = None

COMBOS = list(itertools.product([False, True], repeat=3))
"""Which of (Variable ``xray_registry``, config ``[xray] registry``, env ``XRAY_REGISTRY``) is set."""


def _label(variable: bool, config: bool, env: bool) -> str:
    return (
        "+".join(name for name, on in zip(("variable", "config", "env"), (variable, config, env)) if on)
        or "none"
    )


def _expected(home: Path, variable: bool, config: bool, env: bool) -> str:
    for name, on in zip(("variable", "config", "env"), (variable, config, env)):
        if on:
            return str(home / f"registry-from-{name}")
    return str(home / "xray" / "registry")


if pytest is not None:
    pytestmark = [pytest.mark.airflow, pytest.mark.slow]

    @pytest.fixture(scope="module")
    def roots(tmp_path_factory) -> tuple[Path, dict]:
        af = migrated_home(tmp_path_factory.mktemp("airflow-settings-home"))
        proc = subprocess.run(
            [sys.executable, __file__, "registry-roots"],
            env={**af.env, "PYTHONPATH": str(REPO / "tests")},
            check=False,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            timeout=600,
        )
        lines = [line for line in proc.stdout.splitlines() if line.startswith("{")]
        assert proc.returncode == 0 and lines, proc.stdout[-6000:]
        return af.home, json.loads(lines[-1])

    @pytest.mark.parametrize(("variable", "config", "env"), COMBOS, ids=[_label(*c) for c in COMBOS])
    def test_dags_and_models_page_agree_on_the_registry_root(roots, variable, config, env):
        home, report = roots
        seen = report[_label(variable, config, env)]
        assert seen["plan"] == "success", seen
        assert seen["dag"] == seen["page"] == _expected(home, variable, config, env)


# ----------------------------------------------------------------------------------------------------------------
# The child side: runs inside the migrated home's environment.


def _registry_roots() -> dict[str, dict[str, str]]:
    sys.path.insert(0, str(PLUGINS))
    import xray_models
    from airflow.dag_processing.dagbag import BundleDagBag
    from airflow.models import Variable
    from airflow.models.xcom import XComModel
    from airflow.utils.session import create_session

    home = Path(os.environ["AIRFLOW_HOME"])
    dag = BundleDagBag(dag_folder=str(DAGS), bundle_path=DAGS, bundle_name="dags-folder").get_dag(
        "xray_train"
    )
    report = {}
    for variable, config, env in COMBOS:
        Variable.delete("xray_registry")
        if variable:
            Variable.set("xray_registry", str(home / "registry-from-variable"))
        for key, on, name in (("AIRFLOW__XRAY__REGISTRY", config, "config"), ("XRAY_REGISTRY", env, "env")):
            os.environ.pop(key, None)
            if on:
                os.environ[key] = str(home / f"registry-from-{name}")
        page = xray_models.registry_root()
        # Only `plan` runs: it resolves every location, which is all this test is about.
        run = dag.test(mark_success_pattern="(?!plan$).*")
        with create_session() as session:
            states = {
                ti.task_id: str(getattr(ti.state, "value", ti.state))
                for ti in run.get_task_instances(session=session)
            }
            row = (
                session.query(XComModel)
                .filter_by(dag_id=dag.dag_id, run_id=run.run_id, task_id="plan", key="return_value")
                .one_or_none()
            )
            plan = XComModel.deserialize_value(row) if row is not None else {}
        report[_label(variable, config, env)] = {
            "page": page,
            "dag": plan.get("registry"),
            "plan": states["plan"],
        }
    return report


if __name__ == "__main__":
    if sys.argv[1:] != ["registry-roots"]:
        raise SystemExit(f"unknown command {sys.argv[1:]!r}; allowed: registry-roots")
    result = _registry_roots()
    sys.stdout.flush()
    print(json.dumps(result), flush=True)
