"""The reference profile's inputs from the workspace: original image sizes from the source metadata."""

from __future__ import annotations

import json

from xray_tasks.data.synth import make_studies, write_metadata
from xray_tasks.evaluation.profile import original_sides
from xray_tasks.workspace import Workspace


def test_original_sizes_come_from_the_metadata_the_manifest_was_built_from(tmp_path):
    studies = make_studies(3)
    meta = write_metadata(tmp_path, studies, "2017", image_size=300)  # the 2017 file: CRLF, trailing comma
    ws = Workspace(str(tmp_path / "ws"))
    summary = tmp_path / "ws" / "manifest" / "summary.json"
    summary.parent.mkdir(parents=True)
    summary.write_text(json.dumps({"metadata": {"uri": str(meta)}}))
    assert ws.manifest_summary == str(summary)
    names = [s.image_index for s in studies[:2]] + ["unknown.png"]
    assert original_sides(ws.root, names) == [300.0, 300.0, None]
    assert original_sides(str(tmp_path / "elsewhere"), names) == [None, None, None]
