"""An NIH-shaped demo and test dataset: archives, metadata in either release's style, split lists.

The images are synthetic radiographs (``synth_images``).  Switches inject each bad-input case the ingest stage
must survive.  ``pack_real`` builds the same tree from real NIH PNGs instead.
"""

from __future__ import annotations

import gzip
import io
import logging
import tarfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from xray_tasks.config import NO_FINDING, PATHOLOGIES
from xray_tasks.data.synth_images import MODES, PLAIN, Look, bomb_png, png_bytes, render
from xray_tasks.data.synth_images import rng as seeded
from xray_tasks.errors import BadInput

logger = logging.getLogger(__name__)

INJECTIONS = (
    "corrupt_png",
    "truncated_png",
    "non_image",
    "unsafe_path",
    "link_member",
    "device_member",
    "bomb",
    "image_without_metadata",
    "metadata_without_image",
    "unknown_label",
    "truncated_archive",
    "missing_column",
)
"""``missing_column`` makes the whole metadata unusable, and ``truncated_archive`` a whole archive: ``all`` in the
CLI means every case except those two."""
RECOVERABLE = tuple(i for i in INJECTIONS if i not in ("missing_column", "truncated_archive"))

REALISTIC = {"signal": 1.0, "subtle": 0.15}
"""The demo's calibration (``xray-tasks synth --realistic``): the demo profile's model lands at a test AUROC of
about 0.85-0.93, so ROC, threshold sweep and confusion plots show a trade-off.  The default (every finding
visible at full strength) stays what the tests that assert learning use."""
NEW_SCANNER = Look(contrast=0.6, brightness=45.0)
"""The demo's shifted sub-batch: a brighter scanner with less contrast (``--scanner new``)."""


@dataclass(frozen=True)
class Study:
    image_index: str
    patient_id: int
    follow_up: int
    age: int
    sex: str
    view: str
    findings: tuple[str, ...]

    @property
    def label(self) -> int:
        return int(bool(self.findings))


def make_studies(
    patients: int, seed: int = 0, healthy_share: float = 0.55, max_follow_ups: int = 3
) -> list[Study]:
    """Patients with 1..max_follow_ups studies each; a study is healthy with probability ``healthy_share``."""
    rng = seeded("studies", seed)
    studies = []
    for pid in range(1, patients + 1):
        age, sex = int(rng.integers(18, 90)), str(rng.choice(["M", "F"]))
        for follow in range(int(rng.integers(1, max_follow_ups + 1))):
            if rng.random() < healthy_share:
                findings: tuple[str, ...] = ()
            else:
                k = int(rng.integers(1, 3))
                findings = tuple(sorted(rng.choice(PATHOLOGIES, size=k, replace=False).tolist()))
            studies.append(
                Study(
                    f"{pid:08d}_{follow:03d}.png",
                    pid,
                    follow,
                    age + follow,
                    sex,
                    str(rng.choice(["PA", "AP"])),
                    findings,
                )
            )
    return studies


def _add(tar: tarfile.TarFile, path: str, data: bytes) -> None:
    info = tarfile.TarInfo(path)
    info.size, info.mtime, info.mode = len(data), 1_500_000_000, 0o644
    tar.addfile(info, io.BytesIO(data))


def _add_special(tar: tarfile.TarFile, path: str, kind: bytes, linkname: str = "") -> None:
    info = tarfile.TarInfo(path)
    info.type, info.linkname, info.mtime = kind, linkname, 1_500_000_000
    if kind == tarfile.CHRTYPE:
        info.devmajor, info.devminor = 1, 3
    tar.addfile(info)


def write_archive(
    path: Path,
    members: list[tuple[str, bytes]],
    specials: list[tuple[str, bytes, str]] = (),
    compresslevel: int = 1,
) -> None:
    """A deterministic ``.tar.gz`` (fixed mtimes, no gzip timestamp) holding ``images/`` and the members."""
    raw = io.BytesIO()
    with tarfile.open(fileobj=raw, mode="w", format=tarfile.GNU_FORMAT) as tar:
        folder = tarfile.TarInfo("images")
        folder.type, folder.mode, folder.mtime = tarfile.DIRTYPE, 0o755, 1_500_000_000
        tar.addfile(folder)
        for name, data in members:
            _add(tar, name, data)
        for name, kind, linkname in specials:
            _add_special(tar, name, kind, linkname)
    path.parent.mkdir(parents=True, exist_ok=True)
    with (
        open(path, "wb") as fh,
        gzip.GzipFile(fileobj=fh, mode="wb", mtime=0, compresslevel=compresslevel) as gz,
    ):
        gz.write(raw.getvalue())


_HEADER = (
    "Image Index,Finding Labels,Follow-up #,Patient ID,Patient Age,Patient Gender,View Position,"
    "OriginalImage[Width,Height],OriginalImagePixelSpacing[x,y]"
)


def _csv(studies: list[Study], style: str, image_size: int = 2500) -> bytes:
    """Metadata as NIH published it: the 2017 file has CRLF endings, a trailing comma on the header, zero-padded
    follow-up and patient ids and ages like ``058Y``; the 2020 file has LF endings and plain integers.  The
    original size column holds the size the images are rendered at (square)."""
    old = style == "2017"
    rows = [_HEADER + ("," if old else "")] + [
        f"{s.image_index},{'|'.join(s.findings) or NO_FINDING},"
        + (
            f"{s.follow_up:03d},{s.patient_id:08d},{s.age:03d}Y,"
            if old
            else f"{s.follow_up},{s.patient_id},{s.age},"
        )
        + f"{s.sex},{s.view},{image_size},{image_size},0.143,0.143"
        for s in studies
    ]
    newline = "\r\n" if old else "\n"
    return (newline.join(rows) + newline).encode()


def write_metadata(
    out: Path, studies: list[Study], style: str, drop_column: str | None = None, image_size: int = 2500
) -> Path:
    """Write ``Data_Entry_2017.csv`` (2017 style) or ``Data_Entry_2017_v2020.csv`` (2020 style)."""
    if style not in ("2017", "2020"):
        raise BadInput(f"csv style must be '2017' or '2020', got {style!r}")
    data = _csv(studies, style, image_size)
    if drop_column:
        lines = data.decode().splitlines()
        cols = lines[0].split(",")
        idx = cols.index(drop_column)
        data = (
            "\n".join(",".join(c for j, c in enumerate(line.split(",")) if j != idx) for line in lines) + "\n"
        ).encode()
    path = out / ("Data_Entry_2017.csv" if style == "2017" else "Data_Entry_2017_v2020.csv")
    path.write_bytes(data)
    return path


def write_lists(out: Path, studies: list[Study], test_share: float = 0.25, seed: int = 0) -> None:
    """Patient-wise official-style lists: ``test_share`` of the patients go to test_list.txt."""
    patients = sorted({s.patient_id for s in studies})
    rng = seeded("lists", seed)
    test = set(rng.choice(patients, size=max(1, round(test_share * len(patients))), replace=False).tolist())
    (out / "test_list.txt").write_text("".join(f"{s.image_index}\n" for s in studies if s.patient_id in test))
    (out / "train_val_list.txt").write_text(
        "".join(f"{s.image_index}\n" for s in studies if s.patient_id not in test)
    )


def generate(
    out: str | Path,
    *,
    patients: int = 60,
    archives: int = 2,
    image_size: int = 256,
    csv_style: str = "2017",
    lists: bool = True,
    inject: tuple[str, ...] = (),
    signal: float = 1.0,
    seed: int = 0,
    look: Look = PLAIN,
) -> dict:
    """Write the synthetic NIH tree under ``out``; returns counts and what was injected where.

    ``look``: invisible findings and the scanner's contrast and brightness (``synth_images.Look``)."""
    unknown = sorted(set(inject) - set(INJECTIONS))
    if unknown:
        raise BadInput(f"unknown injection(s) {unknown}; allowed: {list(INJECTIONS)}")
    if archives < 1 or patients < 1:
        raise BadInput(
            f"need at least one archive and one patient, got archives={archives}, patients={patients}"
        )
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    studies = make_studies(patients, seed)
    injected: dict[str, str] = {}
    meta_studies = _metadata_studies(studies, inject, injected)
    drop = "Patient ID" if "missing_column" in inject else None
    for style in ("2017", "2020") if csv_style == "both" else (csv_style,):
        write_metadata(out, meta_studies, style, drop, image_size)
    if lists:
        write_lists(out, meta_studies, seed=seed)
    chunks = np.array_split(np.arange(len(studies)), archives)
    for number, chunk in enumerate(chunks, start=1):
        members = [
            _member(
                studies[pos], pos, image_size, signal, seed, inject if number == 1 else (), injected, look
            )
            for pos in chunk
        ]
        specials: list[tuple[str, bytes, str]] = []
        if number == 1:
            members, specials = _bad_members(members, studies, chunk, image_size, inject, injected)
        path = out / f"images_{number:03d}.tar.gz"
        write_archive(path, members, specials)
        if "truncated_archive" in inject and number == len(chunks):
            data = path.read_bytes()
            path.write_bytes(data[: len(data) * 2 // 3])
            injected["truncated_archive"] = path.name
    logger.info(
        "synthetic NIH tree in %s: %d studies of %d patients in %d archive(s)",
        out,
        len(studies),
        patients,
        archives,
    )
    return {
        "out": str(out),
        "studies": len(studies),
        "patients": patients,
        "archives": archives,
        "healthy": sum(1 for s in studies if not s.label),
        "unhealthy": sum(s.label for s in studies),
        "image_size": image_size,
        "csv_style": csv_style,
        "lists": lists,
        "signal": signal,
        "look": {"subtle": look.subtle, "contrast": look.contrast, "brightness": look.brightness},
        "injected": injected,
    }


def _metadata_studies(studies: list[Study], inject: tuple[str, ...], injected: dict[str, str]) -> list[Study]:
    """The metadata rows: the studies, plus a row with no image and a row with an unknown label when asked."""
    rows = list(studies)
    if "metadata_without_image" in inject:
        ghost_id = max(s.patient_id for s in studies) + 1
        ghost = Study(f"{ghost_id:08d}_000.png", ghost_id, 0, 40, "F", "PA", ())
        rows.append(ghost)
        injected["metadata_without_image"] = ghost.image_index
    if "unknown_label" in inject:
        target = studies[1]
        rows[rows.index(target)] = Study(
            target.image_index,
            target.patient_id,
            target.follow_up,
            target.age,
            target.sex,
            target.view,
            ("Mystery_Disease",),
        )
        injected["unknown_label"] = target.image_index
    return rows


_BROKEN_AT = {2: "corrupt_png", 3: "truncated_png"}
"""Study position (in the first archive) -> the damage it gets when that injection is asked for."""


def _member(
    study: Study,
    pos: int,
    image_size: int,
    signal: float,
    seed: int,
    inject: tuple[str, ...],
    injected: dict[str, str],
    look: Look = PLAIN,
) -> tuple[str, bytes]:
    """One study's archive member, damaged when its position is one ``inject`` asks to break."""
    data = png_bytes(render(study, image_size, signal, seed, look), MODES[pos % len(MODES)])
    kind = _BROKEN_AT.get(int(pos))
    if kind in inject:
        if kind == "corrupt_png":
            mid = len(data) // 2
            data = data[:mid] + bytes(b ^ 0x5A for b in data[mid : mid + 64]) + data[mid + 64 :]
        else:
            data = data[: len(data) // 2]
        injected[kind] = study.image_index
    return f"images/{study.image_index}", data


def _bad_members(
    members: list[tuple[str, bytes]],
    studies: list[Study],
    chunk: np.ndarray,
    image_size: int,
    inject: tuple[str, ...],
    injected: dict[str, str],
) -> tuple[list, list]:
    """The first archive's members with the asked-for hostile ones added: a non-image, unsafe paths, a bomb in
    place of the last study, an image with no metadata row, a symlink and a device member."""
    members = list(members)
    specials: list[tuple[str, bytes, str]] = []
    if "non_image" in inject:
        members.append(("images/README.txt", b"not an image\n"))
        injected["non_image"] = "images/README.txt"
    if "unsafe_path" in inject:
        members.append(("../escape.png", png_bytes(render(studies[0], 32))))
        members.append(("/abs/escape.png", png_bytes(render(studies[0], 32))))
        injected["unsafe_path"] = "../escape.png, /abs/escape.png"
    if "bomb" in inject:
        name = studies[chunk[-1]].image_index
        members = [(n, bomb_png() if n == f"images/{name}" else d) for n, d in members]
        injected["bomb"] = name
    if "image_without_metadata" in inject:
        members.append(("images/99999999_000.png", png_bytes(render(studies[0], image_size))))
        injected["image_without_metadata"] = "99999999_000.png"
    if "link_member" in inject:
        specials.append(("images/link.png", tarfile.SYMTYPE, "/etc/passwd"))
        injected["link_member"] = "images/link.png"
    if "device_member" in inject:
        specials.append(("images/dev.png", tarfile.CHRTYPE, ""))
        injected["device_member"] = "images/dev.png"
    return members, specials


def pack_real(
    images_dir: str | Path,
    meta_dir: str | Path,
    out: str | Path,
    archives: int = 2,
    limit: int | None = None,
    metadata: str = "Data_Entry_2017_v2020.csv",
) -> dict:
    """NIH-style archives from loose real PNGs, with metadata and lists cut down to those images.

    The metadata rows are copied byte for byte from the original file (keeping its line endings and quirks).
    """
    images_dir, meta_dir, out = Path(images_dir), Path(meta_dir), Path(out)
    names = sorted(p.name for p in images_dir.glob("*.png"))[:limit]
    if not names:
        raise BadInput(f"{images_dir}: no .png files")
    out.mkdir(parents=True, exist_ok=True)
    wanted = set(names)
    raw = (meta_dir / metadata).read_bytes()
    newline = b"\r\n" if b"\r\n" in raw[:4096] else b"\n"
    lines = raw.split(newline)
    kept = [lines[0]] + [ln for ln in lines[1:] if ln.split(b",", 1)[0].decode() in wanted]
    (out / metadata).write_bytes(newline.join(kept) + newline)
    for list_name in ("train_val_list.txt", "test_list.txt"):
        listed = (meta_dir / list_name).read_text().split()
        (out / list_name).write_text("".join(f"{n}\n" for n in listed if n in wanted))
    for a, chunk in enumerate(np.array_split(np.array(names), archives), start=1):
        write_archive(
            out / f"images_{a:03d}.tar.gz",
            [(f"images/{n}", (images_dir / n).read_bytes()) for n in chunk],
            compresslevel=6,
        )
    logger.info("packed %d real images into %d archive(s) in %s", len(names), archives, out)
    return {"out": str(out), "images": len(names), "archives": archives, "metadata": metadata}
