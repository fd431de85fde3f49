"""Helpers for the retraining tests: a synthetic source on a local folder or the suite's S3 server, relabelled
metadata, archives that arrive later."""

from __future__ import annotations

import dataclasses
import shutil
from pathlib import Path

from xray_tasks import storage
from xray_tasks.data.synth import generate, make_studies, write_metadata


def make_source(tmp: Path, root: str, *, patients: int = 24, archives: int = 3, hold_back: int = 1) -> dict:
    """A synthetic NIH tree written at ``root`` (a folder or ``s3://`` prefix) without its last ``hold_back``
    archives, which stay in ``tmp`` for :func:`add_archive`."""
    tree = tmp / "tree"
    generate(tree, patients=patients, archives=archives, image_size=32)
    held = sorted(tree.glob("images_*.tar.gz"))[archives - hold_back :]
    for path in sorted(tree.iterdir()):
        if path not in held:
            put(path, root)
    return {"tree": tree, "held": held, "patients": patients, "root": root}


def put(path: Path, root: str, name: str | None = None) -> str:
    uri = storage.join(root, name or path.name)
    if storage.is_s3(root):
        storage.put_file(path, uri)
    else:
        Path(root).mkdir(parents=True, exist_ok=True)
        shutil.copyfile(path, uri)
    return uri


def add_archive(source: dict) -> str:
    """The next held-back archive arrives at the source; returns its URI."""
    return put(source["held"].pop(0), source["root"])


def relabel(source: dict, tmp: Path, studies: int = 6) -> str:
    """The 2020 metadata appears beside the 2017 file with other labels for the first ``studies`` healthy
    studies (``find_metadata`` prefers the 2020 release); returns its URI."""
    rows = make_studies(source["patients"], 0)
    changed, done = [], 0
    for study in rows:
        if not study.findings and done < studies:
            study = dataclasses.replace(study, findings=("Effusion",))
            done += 1
        changed.append(study)
    out = tmp / "relabelled"
    out.mkdir(exist_ok=True)
    path = write_metadata(out, changed, "2020")
    return put(path, source["root"])
