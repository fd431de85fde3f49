"""What hostile input costs: memory, log and summary of ingest on crafted archives and metadata (issue 11).

    .venv/bin/python bench/hostile_input.py [--long-name-mb 200] [--csv-mb 1] [--before /path/to/old/checkout]

Prints, each against its bound (measured in child processes as their own VmHWM, so only the measured command
counts):
  * ``xray-tasks ingest-archive`` on a small ``.tar.gz`` whose first member has a GNU long name of
    ``--long-name-mb`` MB: peak RSS (bound 400 MB), log (stderr) and summary (stdout, the XCom) bytes (bound
    100 KB each), and that the other members were still sharded.
  * ``read_metadata`` on a ``--csv-mb`` MB CSV whose every row names its own unknown label (and some ids like
    ``1.5``, ``1e30``, ``inf``): peak RSS against the same child that only imports the module (the floor).
``--before DIR`` runs the same two measures with the ``xray_tasks`` of another checkout (e.g. main before the
fix) instead of the installed one.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tarfile
import tempfile
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent / "tests"))

from support.hostile import hostile_csv, last_json, long_name_archive, measure_cli

ARCHIVE_RSS_MB, OUTPUT_BYTES = 400, 100_000

_CSV_CHILD = """
import json, sys
if sys.argv[3:]:
    sys.meta_path[:] = [f for f in sys.meta_path if "editable" not in getattr(f, "__module__", "")]
    sys.path.insert(0, sys.argv[3])
from xray_tasks.data import metadata
if sys.argv[1] == "read":
    meta = metadata.read_metadata(sys.argv[2])
    out = {"rows": len(meta.table), "excluded": len(meta.excluded)}
else:
    out = {}
with open("/proc/self/status") as fh:  # VmHWM: this address space only (ru_maxrss inherits the parent's)
    out["peak_rss_mb"] = next(int(l.split()[1]) for l in fh if l.startswith("VmHWM:")) / 1024
print(json.dumps(out))
"""


def _env() -> dict:
    return dict(os.environ, XRAY_INGEST_MIN_SIDE="16")


def archive_case(root: Path, long_name_mb: int, before: str | None) -> dict:
    from xray_tasks.config import IngestConfig
    from xray_tasks.data.manifest import run_manifest
    from xray_tasks.data.synth import generate

    generate(root / "src", patients=3, archives=1, image_size=64)
    run_manifest(str(root / "src"), str(root / "ws"), IngestConfig(image_size=32, min_side=16))
    with tarfile.open(root / "src" / "images_001.tar.gz") as tar:
        good = [(m.name, tar.extractfile(m).read()) for m in tar if m.isfile()]
    archive = long_name_archive(root / "images_009.tar.gz", long_name_mb * 1024 * 1024, good, level=6)
    args = ["--log-level", "INFO", "ingest-archive", str(archive), "--workspace", str(root / "ws")]
    got = measure_cli([*args, "--set", "ingest.image_size=32"], root, env=_env(), code_from=before)
    sharded = last_json(got["stdout"])["members"]["sharded"] if got["rc"] == 0 else None
    return {
        "archive_bytes": archive.stat().st_size,
        "long_name_bytes": long_name_mb * 1024 * 1024,
        "rc": got["rc"],
        "peak_rss_mb": got["peak_rss_mb"],
        "log_bytes": got["stderr_bytes"],
        "summary_bytes": got["stdout_bytes"],
        "other_members": len(good),
        "other_members_sharded": sharded,
    }


def csv_case(root: Path, csv_mb: float, before: str | None) -> dict:
    path = hostile_csv(root / "Data_Entry_2017.csv", int(csv_mb * 1024 * 1024))

    def child(*args: str) -> dict:
        proc = subprocess.run(
            [sys.executable, "-c", _CSV_CHILD, *args, *([before] if before else [])],
            capture_output=True,
            text=True,
            timeout=900,
            env=_env(),
            check=False,
        )
        if proc.returncode:
            return {"error": proc.stderr.strip().splitlines()[-1][:300], "peak_rss_mb": None}
        return json.loads(proc.stdout.strip().splitlines()[-1])

    floor, read = child("import", "-"), child("read", str(path))
    return {"csv_bytes": path.stat().st_size, "floor_rss_mb": floor["peak_rss_mb"], **read}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--long-name-mb", type=int, default=200)
    parser.add_argument("--csv-mb", type=float, default=1.0)
    parser.add_argument("--before", help="another checkout whose xray_tasks to measure instead")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="xray-hostile-") as tmp:
        (Path(tmp) / "a").mkdir()
        (Path(tmp) / "c").mkdir()
        arc = archive_case(Path(tmp) / "a", args.long_name_mb, args.before)
        csv = csv_case(Path(tmp) / "c", args.csv_mb, args.before)
    print(json.dumps({"archive": arc, "csv": csv}, indent=2))
    print(
        f"long-name archive ({arc['archive_bytes']} bytes, name {arc['long_name_bytes']} bytes): "
        f"peak RSS {arc['peak_rss_mb']} MB = {arc['peak_rss_mb'] / ARCHIVE_RSS_MB:.2f} of the {ARCHIVE_RSS_MB} MB "
        f"bound; log {arc['log_bytes']} B = {arc['log_bytes'] / OUTPUT_BYTES:.4f} and summary "
        f"{arc['summary_bytes']} B = {arc['summary_bytes'] / OUTPUT_BYTES:.4f} of {OUTPUT_BYTES} B; "
        f"other members sharded {arc['other_members_sharded']} of {arc['other_members']}"
    )
    if csv.get("peak_rss_mb") is not None:
        print(
            f"hostile CSV ({csv['csv_bytes']} bytes): peak RSS {csv['peak_rss_mb']:.1f} MB, "
            f"{csv['peak_rss_mb'] - csv['floor_rss_mb']:.1f} MB over the import-only floor of "
            f"{csv['floor_rss_mb']:.1f} MB ({csv['peak_rss_mb'] / csv['floor_rss_mb']:.2f}x); "
            f"{csv.get('rows')} rows kept, {csv.get('excluded')} excluded"
        )
    else:
        print(f"hostile CSV ({csv['csv_bytes']} bytes): failed: {csv['error']}")


if __name__ == "__main__":
    main()
