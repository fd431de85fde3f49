"""An NIH-shaped demo and test dataset: archives, metadata in either release's style, split lists.

Images are synthetic chest-like radiographs (a bright mediastinum between two darker lung fields, soft ribs,
noise).  Unhealthy images carry a learnable signal whose strength is a parameter: bright nodular opacities in the
lung fields and, for some, a basal effusion-like haze.  Switches inject each bad-input case the ingest stage must
survive.  ``pack_real`` builds the same tree from real NIH PNGs instead.
"""

from __future__ import annotations

import gzip
import hashlib
import io
import logging
import tarfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image

from xray_tasks.config import NO_FINDING, PATHOLOGIES
from xray_tasks.errors import BadInput

logger = logging.getLogger(__name__)

INJECTIONS = (
    "corrupt_png", "truncated_png", "non_image", "unsafe_path", "link_member", "device_member", "bomb",
    "image_without_metadata", "metadata_without_image", "unknown_label", "truncated_archive", "missing_column",
)
"""``missing_column`` makes the whole metadata unusable, and ``truncated_archive`` a whole archive: ``all`` in the
CLI means every case except those two."""
RECOVERABLE = tuple(i for i in INJECTIONS if i not in ("missing_column", "truncated_archive"))
MODES = ("L", "L", "L", "L", "L", "L", "RGBA", "LA", "RGB", "I;16")
"""Pixel formats cycled through (mostly 8-bit gray, as in NIH, which also ships some RGBA files)."""


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


def _rng(*key: object) -> np.random.Generator:
    digest = hashlib.blake2b(":".join(map(str, key)).encode(), digest_size=8).digest()
    return np.random.default_rng(int.from_bytes(digest, "big"))


def make_studies(patients: int, seed: int = 0, healthy_share: float = 0.55, max_follow_ups: int = 3) -> list[Study]:
    """Patients with 1..max_follow_ups studies each; a study is healthy with probability ``healthy_share``."""
    rng = _rng("studies", seed)
    studies = []
    for pid in range(1, patients + 1):
        age, sex = int(rng.integers(18, 90)), str(rng.choice(["M", "F"]))
        for follow in range(int(rng.integers(1, max_follow_ups + 1))):
            if rng.random() < healthy_share:
                findings: tuple[str, ...] = ()
            else:
                k = int(rng.integers(1, 3))
                findings = tuple(sorted(rng.choice(PATHOLOGIES, size=k, replace=False).tolist()))
            studies.append(Study(f"{pid:08d}_{follow:03d}.png", pid, follow, age + follow, sex,
                                 str(rng.choice(["PA", "AP"])), findings))
    return studies


def render(study: Study, size: int, signal: float = 1.0, seed: int = 0) -> np.ndarray:
    """A synthetic radiograph (uint8, ``size`` x ``size``); unhealthy studies carry opacities."""
    rng = _rng("render", seed, study.image_index)
    y, x = np.mgrid[0:size, 0:size].astype(np.float32) / size
    img = 150 + 40 * y + rng.normal(0, 3, 1)[0]
    for cx in (0.3, 0.7):  # lung fields: darker ellipses
        cx += rng.normal(0, 0.015)
        lung = ((x - cx) / 0.17) ** 2 + ((y - 0.5) / 0.33) ** 2 < 1
        img = np.where(lung, img - 70, img)
    img += 12 * np.sin(y * 2 * np.pi * 9 + rng.uniform(0, np.pi)) * (np.abs(x - 0.5) > 0.08)  # ribs
    if study.findings and signal > 0:
        for _ in range(int(rng.integers(2, 5))):
            cx, cy = rng.choice([0.3, 0.7]) + rng.normal(0, 0.06), rng.uniform(0.3, 0.75)
            r = rng.uniform(0.05, 0.1)
            blob = np.exp(-(((x - cx) ** 2 + (y - cy) ** 2) / (2 * r * r)))
            img += signal * 80 * blob
        if rng.random() < 0.5:
            img += signal * 45 * np.clip((y - 0.62) / 0.2, 0, 1) * (np.abs(x - 0.5) > 0.1)
    img += rng.normal(0, 6, size=(size, size))
    return np.clip(img, 0, 255).astype(np.uint8)


def png_bytes(pixels: np.ndarray, mode: str = "L") -> bytes:
    """Encode gray pixels as a PNG in ``mode`` (L, LA, RGB, RGBA or 16-bit I;16)."""
    gray = Image.fromarray(pixels, mode="L")
    if mode == "I;16":
        img = Image.fromarray(pixels.astype(np.uint16) * 257)
    elif mode == "LA":
        img = Image.merge("LA", (gray, Image.new("L", gray.size, 255)))
    else:
        img = gray.convert(mode)
    out = io.BytesIO()
    img.save(out, format="PNG", compress_level=1)
    return out.getvalue()


def bomb_png(side: int = 100_000) -> bytes:
    """A tiny PNG whose header declares ``side`` x ``side`` pixels (a decompression bomb)."""
    import struct
    import zlib

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)

    header = struct.pack(">IIBBBBB", side, side, 8, 0, 0, 0, 0)
    idat = zlib.compress(b"\x00" * (side + 1) * 64, 9)  # a few rows; the header is what matters
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", idat) + chunk(b"IEND", b"")


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


def write_archive(path: Path, members: list[tuple[str, bytes]], specials: list[tuple[str, bytes, str]] = (),
                  compresslevel: int = 1) -> None:
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
    with open(path, "wb") as fh, gzip.GzipFile(fileobj=fh, mode="wb", mtime=0, compresslevel=compresslevel) as gz:
        gz.write(raw.getvalue())


_HEADER = ("Image Index,Finding Labels,Follow-up #,Patient ID,Patient Age,Patient Gender,View Position,"
           "OriginalImage[Width,Height],OriginalImagePixelSpacing[x,y]")


def _csv(studies: list[Study], style: str) -> bytes:
    """Metadata as NIH published it: the 2017 file has CRLF endings, a trailing comma on the header, zero-padded
    follow-up and patient ids and ages like ``058Y``; the 2020 file has LF endings and plain integers."""
    old = style == "2017"
    rows = [_HEADER + ("," if old else "")] + [
        f"{s.image_index},{'|'.join(s.findings) or NO_FINDING},"
        + (f"{s.follow_up:03d},{s.patient_id:08d},{s.age:03d}Y," if old else f"{s.follow_up},{s.patient_id},{s.age},")
        + f"{s.sex},{s.view},2500,2048,0.143,0.143"
        for s in studies
    ]
    newline = "\r\n" if old else "\n"
    return (newline.join(rows) + newline).encode()


def write_metadata(out: Path, studies: list[Study], style: str, drop_column: str | None = None) -> Path:
    """Write ``Data_Entry_2017.csv`` (2017 style) or ``Data_Entry_2017_v2020.csv`` (2020 style)."""
    if style not in ("2017", "2020"):
        raise BadInput(f"csv style must be '2017' or '2020', got {style!r}")
    data = _csv(studies, style)
    if drop_column:
        lines = data.decode().splitlines()
        cols = lines[0].split(",")
        idx = cols.index(drop_column)
        data = ("\n".join(",".join(c for j, c in enumerate(line.split(",")) if j != idx) for line in lines) + "\n").encode()
    path = out / ("Data_Entry_2017.csv" if style == "2017" else "Data_Entry_2017_v2020.csv")
    path.write_bytes(data)
    return path


def write_lists(out: Path, studies: list[Study], test_share: float = 0.25, seed: int = 0) -> None:
    """Patient-wise official-style lists: ``test_share`` of the patients go to test_list.txt."""
    patients = sorted({s.patient_id for s in studies})
    rng = _rng("lists", seed)
    test = set(rng.choice(patients, size=max(1, round(test_share * len(patients))), replace=False).tolist())
    (out / "test_list.txt").write_text("".join(f"{s.image_index}\n" for s in studies if s.patient_id in test))
    (out / "train_val_list.txt").write_text("".join(f"{s.image_index}\n" for s in studies if s.patient_id not in test))


def generate(out: str | Path, *, patients: int = 60, archives: int = 2, image_size: int = 256,
             csv_style: str = "2017", lists: bool = True, inject: tuple[str, ...] = (), signal: float = 1.0,
             seed: int = 0) -> dict:
    """Write the synthetic NIH tree under ``out``; returns counts and what was injected where."""
    unknown = sorted(set(inject) - set(INJECTIONS))
    if unknown:
        raise BadInput(f"unknown injection(s) {unknown}; allowed: {list(INJECTIONS)}")
    if archives < 1 or patients < 1:
        raise BadInput(f"need at least one archive and one patient, got archives={archives}, patients={patients}")
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    studies = make_studies(patients, seed)
    injected: dict[str, str] = {}

    meta_studies = list(studies)
    if "metadata_without_image" in inject:
        ghost = Study(f"{patients + 1:08d}_000.png", patients + 1, 0, 40, "F", "PA", ())
        meta_studies.append(ghost)
        injected["metadata_without_image"] = ghost.image_index
    if "unknown_label" in inject:
        target = studies[1]
        meta_studies[meta_studies.index(target)] = Study(
            target.image_index, target.patient_id, target.follow_up, target.age, target.sex, target.view,
            ("Mystery_Disease",))
        injected["unknown_label"] = target.image_index
    drop = "Patient ID" if "missing_column" in inject else None
    for style in (("2017", "2020") if csv_style == "both" else (csv_style,)):
        write_metadata(out, meta_studies, style, drop)
    if lists:
        write_lists(out, meta_studies, seed=seed)

    chunks = np.array_split(np.arange(len(studies)), archives)
    bad = {  # study position -> replacement bytes
        2: ("corrupt_png", None), 3: ("truncated_png", None),
    }
    for a, chunk in enumerate(chunks, start=1):
        members: list[tuple[str, bytes]] = []
        specials: list[tuple[str, bytes, str]] = []
        for pos in chunk:
            s = studies[pos]
            data = png_bytes(render(s, image_size, signal, seed), MODES[pos % len(MODES)])
            if a == 1 and pos in bad and bad[pos][0] in inject:
                kind = bad[pos][0]
                if kind == "corrupt_png":
                    mid = len(data) // 2
                    data = data[:mid] + bytes(b ^ 0x5A for b in data[mid:mid + 64]) + data[mid + 64:]
                else:
                    data = data[: len(data) // 2]
                injected[kind] = s.image_index
            members.append((f"images/{s.image_index}", data))
        if a == 1:
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
        path = out / f"images_{a:03d}.tar.gz"
        write_archive(path, members, specials)
        if "truncated_archive" in inject and a == len(chunks):
            data = path.read_bytes()
            path.write_bytes(data[: len(data) * 2 // 3])
            injected["truncated_archive"] = path.name
    summary = {
        "out": str(out), "studies": len(studies), "patients": patients, "archives": archives,
        "healthy": sum(1 for s in studies if not s.label), "unhealthy": sum(s.label for s in studies),
        "image_size": image_size, "csv_style": csv_style, "lists": lists, "injected": injected,
    }
    logger.info("synthetic NIH tree in %s: %d studies of %d patients in %d archive(s)",
                out, len(studies), patients, archives)
    return summary


def pack_real(images_dir: str | Path, meta_dir: str | Path, out: str | Path, archives: int = 2,
              limit: int | None = None, metadata: str = "Data_Entry_2017_v2020.csv") -> dict:
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
        write_archive(out / f"images_{a:03d}.tar.gz",
                      [(f"images/{n}", (images_dir / n).read_bytes()) for n in chunk], compresslevel=6)
    logger.info("packed %d real images into %d archive(s) in %s", len(names), archives, out)
    return {"out": str(out), "images": len(names), "archives": archives, "metadata": metadata}
