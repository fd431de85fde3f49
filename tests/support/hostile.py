"""Hostile inputs built on the fly, and the child-process measure of what ingesting them costs.

``long_name_archive`` writes a small ``.tar.gz`` whose first member carries a GNU long-name header of any size
(streamed through gzip, never held in memory); ``measure_cli`` runs one ``xray-tasks`` command in a fresh wrapper
process and returns its peak RSS (its VmHWM, polled: that command alone) with its stdout and stderr sizes.  ``hostile_csv`` writes a metadata CSV made to blow up a per-label-string expansion.
"""

from __future__ import annotations

import gzip
import io
import json
import subprocess
import sys
import tarfile
from pathlib import Path

BLOCK = tarfile.BLOCKSIZE

_WRAPPER = """
import subprocess, sys, time

def hwm(pid):
    try:
        with open(f"/proc/{pid}/status") as fh:
            return next(int(line.split()[1]) for line in fh if line.startswith("VmHWM:"))
    except (OSError, StopIteration):
        return 0

with open(sys.argv[1], "wb") as out, open(sys.argv[2], "wb") as err:
    child = subprocess.Popen(sys.argv[3:], stdout=out, stderr=err)
    peak = 0
    while child.poll() is None:
        peak = max(peak, hwm(child.pid))
        time.sleep(0.02)
print(child.returncode, peak)
"""
"""Runs a command and polls its VmHWM (its own address space's peak RSS, in kB) until it exits.  Not
``ru_maxrss``: on Linux a child started by vfork/exec inherits its parent's high-water mark in it."""


FROM_CHECKOUT = """
import runpy, sys
sys.meta_path[:] = [f for f in sys.meta_path if "editable" not in getattr(f, "__module__", "")]
sys.path.insert(0, sys.argv.pop(1))
runpy.run_module("xray_tasks.cli", run_name="__main__", alter_sys=True)
"""
"""Runs ``xray_tasks.cli`` from the checkout named by the first argument (the editable install set aside)."""


def _header(name: str, size: int, kind: bytes = tarfile.REGTYPE) -> bytes:
    info = tarfile.TarInfo(name)
    info.size, info.type, info.mode = size, kind, 0o644
    return info.tobuf(format=tarfile.USTAR_FORMAT)


def _pad(size: int) -> bytes:
    return b"\0" * (-size % BLOCK)


def long_name_archive(
    path: Path, name_bytes: int, members: list[tuple[str, bytes]] = (), level: int = 9
) -> Path:
    """A ``.tar.gz``: one member ``images/x.png`` whose GNU long name is ``name_bytes`` long, then ``members``."""
    chunk = b"a" * (1 << 20)
    with gzip.open(path, "wb", compresslevel=level) as gz:
        gz.write(_header("././@LongLink", name_bytes + 1, tarfile.GNUTYPE_LONGNAME))
        left = name_bytes
        while left:
            piece = chunk[: min(left, len(chunk))]
            gz.write(piece)
            left -= len(piece)
        gz.write(b"\0" + _pad(name_bytes + 1))
        gz.write(_header("images/x.png", 4) + b"\x89PNG" + _pad(4))
        for name, data in members:
            gz.write(_header(name, len(data)) + data + _pad(len(data)))
        gz.write(b"\0" * BLOCK * 2)
    return path


def pax_archive(path: Path, pax_bytes: int, members: list[tuple[str, bytes]] = ()) -> Path:
    """Like :func:`long_name_archive` with an oversized pax extended header instead."""
    record = b"path=" + b"b" * pax_bytes + b"\n"
    length = len(record) + 1
    length += len(str(length + len(str(length))))
    body = str(length).encode() + b" " + record
    with gzip.open(path, "wb") as gz:
        gz.write(_header("././@PaxHeader", len(body), tarfile.XHDTYPE) + body + _pad(len(body)))
        gz.write(_header("images/y.png", 4) + b"\x89PNG" + _pad(4))
        for name, data in members:
            gz.write(_header(name, len(data)) + data + _pad(len(data)))
        gz.write(b"\0" * BLOCK * 2)
    return path


def plain_tar(members: list[tuple[str, bytes]]) -> bytes:
    out = io.BytesIO()
    with tarfile.open(fileobj=out, mode="w") as tar:
        for name, data in members:
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    return out.getvalue()


def measure_cli(
    args: list[str], workdir: Path, env: dict | None = None, code_from: str | None = None
) -> dict:
    """Run ``python -m xray_tasks.cli ARGS`` in a fresh wrapper; peak RSS (MB), exit code, output sizes.

    ``code_from``: a checkout whose ``xray_tasks`` runs instead of the installed one (for before/after figures).
    """
    cli = [sys.executable, "-m", "xray_tasks.cli"]
    if code_from:
        cli = [sys.executable, "-c", FROM_CHECKOUT, code_from]
    out, err = workdir / "stdout.txt", workdir / "stderr.txt"
    proc = subprocess.run(
        [sys.executable, "-c", _WRAPPER, str(out), str(err), *cli, *args],
        check=True,
        capture_output=True,
        text=True,
        timeout=600,
        env=env,
    )
    rc, maxrss_kb = map(int, proc.stdout.split())  # VmHWM polled every 20 ms
    return {
        "rc": rc,
        "peak_rss_mb": round(maxrss_kb / 1024, 1),
        "stdout_bytes": out.stat().st_size,
        "stderr_bytes": err.stat().st_size,
        "stdout": out.read_text(errors="replace"),
        "stderr": err.read_text(errors="replace"),
    }


def last_json(text: str) -> dict:
    return json.loads(text.strip().splitlines()[-1])


HEADER = "Image Index,Finding Labels,Follow-up #,Patient ID,Patient Age,Patient Gender,View Position\n"


def hostile_csv(path: Path, target_bytes: int = 1 << 20) -> Path:
    """About ``target_bytes`` of metadata rows, each with its own unknown label string (and some bad ids)."""
    lines, size, i = [HEADER], len(HEADER), 0
    bad = ("1.5", "1e30", "inf", "-3", " ", "0x10", "99999999999999999999999")
    while size < target_bytes:
        pid = bad[i % len(bad)] if i % 50 == 0 else str(i + 1)
        line = f"{i:08d}_000.png,Mass|L{i:07d}x|Nodule,0,{pid},058Y,M,PA\n"
        lines.append(line)
        size += len(line)
        i += 1
    path.write_text("".join(lines))
    return path
