import gzip
import json
import shutil
import subprocess
import sys

import pytest
from support.hostile import hostile_csv

from xray_tasks.config import PATHOLOGIES
from xray_tasks.data.metadata import MetadataError, find_metadata, read_metadata
from xray_tasks.data.synth import Study, write_metadata

STUDIES = [
    Study("00000001_000.png", 1, 0, 58, "M", "PA", ("Cardiomegaly",)),
    Study("00000001_001.png", 1, 1, 58, "M", "PA", ("Cardiomegaly", "Emphysema")),
    Study("00000002_000.png", 2, 0, 81, "F", "AP", ()),
]


@pytest.mark.parametrize("style", ["2017", "2020"])
def test_both_releases_read_the_same(tmp_path, style):
    path = write_metadata(tmp_path, STUDIES, style)
    meta = read_metadata(str(path))
    t = meta.table
    assert t["image_index"].tolist() == [s.image_index for s in STUDIES]
    assert t["patient_id"].tolist() == [1, 1, 2]
    assert t["follow_up"].tolist() == [0, 1, 0]
    assert t["age"].tolist() == [58.0, 58.0, 81.0]
    assert t["label"].tolist() == [1, 1, 0]
    assert (
        t.loc[1, "Emphysema"] == 1
        and t.loc[1, "Cardiomegaly"] == 1
        and t.loc[2, list(PATHOLOGIES)].sum() == 0
    )
    assert meta.excluded == []


def test_2017_quirks_are_real(tmp_path):
    raw = write_metadata(tmp_path, STUDIES, "2017").read_bytes()
    assert b"\r\n" in raw and raw.split(b"\r\n")[0].endswith(b",") and b",058Y," in raw


def test_gzip_and_preference_for_2020(tmp_path):
    plain = write_metadata(tmp_path, STUDIES, "2017")
    with open(plain, "rb") as src, gzip.open(tmp_path / "Data_Entry_2017.csv.gz", "wb") as dst:
        shutil.copyfileobj(src, dst)
    plain.unlink()
    uri = find_metadata(str(tmp_path))
    assert uri.endswith("Data_Entry_2017.csv.gz")
    assert len(read_metadata(uri).table) == 3
    write_metadata(tmp_path, STUDIES, "2020")
    assert find_metadata(str(tmp_path)).endswith("Data_Entry_2017_v2020.csv")


def test_missing_column_names_file_and_column(tmp_path):
    path = write_metadata(tmp_path, STUDIES, "2020", drop_column="Patient ID")
    with pytest.raises(
        MetadataError, match=r"Data_Entry_2017_v2020.csv: missing column\(s\) \['Patient ID'\]"
    ):
        read_metadata(str(path))


def test_no_metadata_file(tmp_path):
    with pytest.raises(MetadataError, match="no metadata file"):
        find_metadata(str(tmp_path))


def test_bad_rows_are_excluded_with_reasons(tmp_path):
    bad = STUDIES + [
        Study("00000003_000.png", 3, 0, 40, "F", "PA", ("Mystery_Disease",)),
        Study("00000004_000.png", 4, 0, 40, "F", "PA", ("No Finding", "Mass")),
        Study("00000002_000.png", 2, 0, 81, "F", "AP", ("Mass",)),  # duplicate image
    ]
    meta = read_metadata(str(write_metadata(tmp_path, bad, "2020")))
    reasons = {row["image_index"]: row["reason"] for row in meta.excluded}
    assert "unknown pathology" in reasons["00000003_000.png"]
    assert "'No Finding' combined" in reasons["00000004_000.png"]
    assert "duplicate" in reasons["00000002_000.png"]
    assert len(meta.table) == 3 and all(r["file"] == "Data_Entry_2017_v2020.csv" for r in meta.excluded)


def test_age_units_and_implausible_ages(tmp_path):
    path = tmp_path / "Data_Entry_2017.csv"
    header = "Image Index,Finding Labels,Follow-up #,Patient ID,Patient Age,Patient Gender,View Position\n"
    rows = ["a.png,No Finding,0,1,006M,F,PA", "b.png,No Finding,0,2,414Y,F,PA", "c.png,No Finding,0,3,x,F,PA"]
    path.write_text(header + "\n".join(rows) + "\n")
    meta = read_metadata(str(path))
    assert meta.table["age"].iloc[0] == pytest.approx(0.5)
    assert meta.table["age"].iloc[1:].isna().all()
    assert meta.implausible_ages == 1
    assert meta.table["image_index"].tolist() == ["a.png", "b.png"]  # an unreadable age excludes its row
    assert meta.excluded[0]["reason"] == (
        "Patient Age is not a plain integer (with an optional Y/M/W/D unit) in 'x'"
    )


@pytest.mark.real_data
@pytest.mark.parametrize(
    "name, healthy", [("Data_Entry_2017.csv", 60412), ("Data_Entry_2017_v2020.csv", 60361)]
)
def test_full_real_metadata(nih_dir, name, healthy):
    meta = read_metadata(str(nih_dir / "meta" / name))
    assert len(meta.table) == 112_120
    assert meta.table["patient_id"].nunique() == 30_805
    assert int((meta.table["label"] == 0).sum()) == healthy
    assert meta.excluded == []


# -- strict numbers, bounded label parsing (issue 11) ------------------------------------------------------------

HEADER = "Image Index,Finding Labels,Follow-up #,Patient ID,Patient Age,Patient Gender,View Position\n"


@pytest.mark.parametrize(
    "column, value",
    [
        ("pid", "1.5"),
        ("pid", "1e30"),
        ("pid", "inf"),
        ("pid", "-3"),
        ("pid", "99999999999999999999"),
        ("pid", ""),
        ("follow", "0.5"),
        ("follow", "nan"),
        ("age", "1e3"),
        ("age", "58.5Y"),
        ("age", "inf"),
    ],
)
def test_a_value_that_is_not_a_plain_integer_excludes_its_row(tmp_path, column, value):
    row = {"pid": "7", "follow": "0", "age": "058Y"} | {column: value}
    path = tmp_path / "Data_Entry_2017.csv"
    path.write_text(
        HEADER + f"a.png,Mass,{row['follow']},{row['pid']},{row['age']},F,PA\nb.png,Mass,0,8,40,M,PA\n"
    )
    meta = read_metadata(str(path))
    assert meta.table["image_index"].tolist() == ["b.png"]
    (why,) = meta.excluded
    assert why["image_index"] == "a.png" and "is not a plain integer" in why["reason"]
    assert why["reason"].endswith(f"in '{value}'")


def test_labels_are_parsed_against_the_14_names_and_unknown_ones_counted(tmp_path):
    path = tmp_path / "Data_Entry_2017.csv"
    rows = [
        "a.png,Mass|Nodule,0,1,40,F,PA",
        "b.png,Mass|Weird,0,2,40,F,PA",
        "c.png,Weird|Odd,0,3,40,F,PA",
        "d.png, Effusion | Mass ,0,4,40,F,PA",
        "e.png,No Finding,0,5,40,F,PA",
    ]
    path.write_text(HEADER + "\n".join(rows) + "\n")
    meta = read_metadata(str(path))
    t = meta.table.set_index("image_index")
    assert list(t.index) == ["a.png", "d.png", "e.png"]
    assert t.loc["a.png", "Mass"] == 1 and t.loc["a.png", "Nodule"] == 1 and t.loc["a.png", "label"] == 1
    assert t.loc["d.png", ["Effusion", "Mass"]].tolist() == [1, 1] and t.loc["e.png", "label"] == 0
    assert meta.unknown_labels == {"Weird": 2, "Odd": 1}
    assert [r["reason"] for r in meta.excluded] == [
        "unknown pathology label(s) in 'Mass|Weird'",
        "unknown pathology label(s) in 'Weird|Odd'",
    ]
    assert set(t.columns) >= set(PATHOLOGIES) and not {"Weird", "Odd"} & set(t.columns)


def test_a_gzip_bomb_is_refused_unread(tmp_path, monkeypatch):
    from xray_tasks.data import metadata

    monkeypatch.setattr(metadata, "MAX_METADATA_BYTES", 1000)
    path = tmp_path / "Data_Entry_2017.csv.gz"
    path.write_bytes(gzip.compress((HEADER + "a.png,Mass,0,1,40,F,PA\n" * 100).encode()))
    with pytest.raises(MetadataError, match="Data_Entry_2017.csv.gz: larger than 1000 bytes"):
        read_metadata(str(path))


def test_a_hostile_1mb_csv_takes_bounded_memory(tmp_path):
    """Every row names its own unknown label: a per-label-string expansion needs rows x labels cells (about
    18,000 x 18,000 here); parsing against the 14 names stays near the import floor.  Figures: bench/hostile_input.py."""
    path = hostile_csv(tmp_path / "Data_Entry_2017.csv", 1 << 20)
    code = (
        "import json, sys\n"
        "from xray_tasks.data.metadata import read_metadata\n"
        "meta = read_metadata(sys.argv[1])\n"
        "hwm = next(int(l.split()[1]) for l in open('/proc/self/status') if l.startswith('VmHWM:'))\n"
        "print(json.dumps({'rows': len(meta.table), 'excluded': len(meta.excluded), 'peak_mb': hwm / 1024}))\n"
    )
    proc = subprocess.run(
        [sys.executable, "-c", code, str(path)], capture_output=True, text=True, timeout=300, check=False
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    got = json.loads(proc.stdout.strip().splitlines()[-1])
    print(f"hostile CSV {path.stat().st_size} bytes: peak RSS {got['peak_mb']:.1f} MB")
    assert got["rows"] == 0 and got["excluded"] > 18_000
    assert got["peak_mb"] < 400
