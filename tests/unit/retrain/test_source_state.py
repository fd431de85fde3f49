"""check-source: news is a new archive, changed bytes under a name, or changed metadata; nothing else."""

from __future__ import annotations

import time

from support.retrain import add_archive, make_source, put, relabel

from xray_tasks import storage
from xray_tasks.config import IngestConfig
from xray_tasks.data import source_state
from xray_tasks.data.ingest import ingest_archive
from xray_tasks.data.manifest import read_manifest, run_manifest
from xray_tasks.data.validate import validate
from xray_tasks.workspace import Workspace

CFG = IngestConfig(image_size=32, shard_target_mb=0.02)


def ingest(check, source: str, workspace: str) -> None:
    """What the ingest DAG does with a check's answer."""
    if check.rebuild_manifest:
        run_manifest(source, workspace, CFG)
    for archive in check.ingest:
        if archive in check.replace:
            source_state.retire(workspace, archive)
        ingest_archive(archive, workspace, CFG)
    validate(workspace)
    source_state.record(workspace, check.state)


def names(uris) -> list[str]:
    return [storage.basename(u) for u in uris]


def test_unchanged_source_is_no_news_and_a_new_archive_is_ingested_alone(where, tmp_path):
    source, workspace = storage.join(where, "source"), storage.join(where, "ws")
    src = make_source(tmp_path, source)
    first = source_state.check(source, workspace, CFG)
    assert first.news and first.rebuild_manifest
    assert names(first.ingest) == ["images_001.tar.gz", "images_002.tar.gz"] and first.replace == ()
    ingest(first, source, workspace)

    again = source_state.check(source, workspace, CFG)
    assert not again.news and again.ingest == () and not again.rebuild_manifest and again.reasons == ()
    assert "2 archive(s)" in again.compared and "3 metadata/list file(s)" in again.compared
    assert Workspace(workspace).source_state in again.compared

    add_archive(src)
    third = source_state.check(source, workspace, CFG)
    assert third.news and names(third.ingest) == ["images_003.tar.gz"] and third.replace == ()
    assert not third.rebuild_manifest and third.reasons == ("new archive images_003.tar.gz",)


def test_changed_bytes_under_the_same_name_are_ingested_again(where, tmp_path):
    source, workspace = storage.join(where, "source"), storage.join(where, "ws")
    src = make_source(tmp_path, source)
    ingest(source_state.check(source, workspace, CFG), source, workspace)
    time.sleep(0.01)  # a local file is told apart by its modification time too
    put(src["held"][0], source, "images_002.tar.gz")  # other bytes, same name
    check = source_state.check(source, workspace, CFG)
    assert check.news and names(check.ingest) == names(check.replace) == ["images_002.tar.gz"]
    assert "images_002.tar.gz changed under the same name" in check.reasons[0]
    ingest(check, source, workspace)
    marker = storage.read_json(Workspace(workspace).marker("images_002"))
    held = {
        m.name for m in __import__("tarfile").open(src["held"][0]).getmembers() if m.name.endswith(".png")
    }
    assert {n for s in marker["shards"] for n in s["images"]} <= {h.rsplit("/", 1)[-1] for h in held}
    assert not source_state.check(source, workspace, CFG).news


def test_relabelled_metadata_rebuilds_the_manifest_and_reshards_the_archives_it_touches(where, tmp_path):
    source, workspace = storage.join(where, "source"), storage.join(where, "ws")
    src = make_source(tmp_path, source, hold_back=0)
    ingest(source_state.check(source, workspace, CFG), source, workspace)
    before = read_manifest(workspace).set_index("image_index")["label"]
    relabel(src, tmp_path)
    check = source_state.check(source, workspace, CFG)
    assert check.news and check.rebuild_manifest
    assert any("Data_Entry_2017_v2020.csv" in r for r in check.reasons)
    assert check.replace and set(check.replace) == set(check.ingest)
    ingest(check, source, workspace)
    after = read_manifest(workspace).set_index("image_index")["label"]
    assert int((after != before).sum()) == 6
    assert not source_state.check(source, workspace, CFG).news


def test_an_archive_gone_from_the_source_stays_committed_and_is_no_news(tmp_path):
    source, workspace = str(tmp_path / "source"), str(tmp_path / "ws")
    make_source(tmp_path, source, hold_back=0)
    ingest(source_state.check(source, workspace, CFG), source, workspace)
    storage.delete(storage.join(source, "images_003.tar.gz"))
    check = source_state.check(source, workspace, CFG)
    assert not check.news and check.removed == ("images_003.tar.gz",)
    assert storage.exists(Workspace(workspace).marker("images_003"))


def test_a_source_without_archives_is_an_error_not_quiet_news(tmp_path):
    import pytest

    from xray_tasks.errors import MissingInput

    with pytest.raises(MissingInput, match="no such source folder"):
        source_state.check(str(tmp_path / "nowhere"), str(tmp_path / "ws"), CFG)
    (tmp_path / "empty").mkdir()
    with pytest.raises(MissingInput, match=r"no images_\*.tar.gz archives"):
        source_state.check(str(tmp_path / "empty"), str(tmp_path / "ws"), CFG)


def test_retiring_an_archive_drops_the_features_cached_for_its_shards(where, tmp_path):
    from xray_tasks.data import shards

    source, workspace = storage.join(where, "source"), storage.join(where, "ws")
    make_source(tmp_path, source, hold_back=0)
    ingest(source_state.check(source, workspace, CFG), source, workspace)
    ws = Workspace(workspace)
    marker = shards.read_marker(ws.marker("images_002"))
    other = shards.read_marker(ws.marker("images_001")).shards[0]
    for entry in (*marker.shards, other):
        storage.write_bytes(ws.feature_file("mobilenetv3small", 128, entry.split, entry.path), b"cached")
    assert source_state.retire(workspace, storage.join(source, "images_002.tar.gz"))
    assert not storage.exists(ws.marker("images_002"))
    assert not any(
        storage.exists(ws.feature_file("mobilenetv3small", 128, e.split, e.path)) for e in marker.shards
    )
    assert storage.exists(ws.feature_file("mobilenetv3small", 128, other.split, other.path))
    assert not source_state.retire(workspace, storage.join(source, "images_002.tar.gz"))
