import pandas as pd
import pytest

from xray_tasks.config import IngestConfig
from xray_tasks.data.manifest import build_manifest, counts, read_manifest, run_manifest
from xray_tasks.data.metadata import MetadataError
from xray_tasks.data.splits import LeakageError, assign_grouped, assign_official, check_no_leakage
from xray_tasks.data.synth import make_studies, write_lists, write_metadata


def _table(n_patients=200):
    rows = [(s.image_index, s.patient_id) for s in make_studies(n_patients, seed=3)]
    return pd.DataFrame(rows, columns=["image_index", "patient_id"])


def test_grouped_split_is_patient_wise_deterministic_and_proportional():
    table = _table()
    split, _ = assign_grouped(table, (0.7, 0.1, 0.2), seed=1)
    again, _ = assign_grouped(table, (0.7, 0.1, 0.2), seed=1)
    assert split.tolist() == again.tolist()
    other, _ = assign_grouped(table, (0.7, 0.1, 0.2), seed=2)
    assert split.tolist() != other.tolist()
    per_patient = table.assign(split=split).groupby("patient_id")["split"].nunique()
    assert (per_patient == 1).all()
    shares = (
        table.assign(split=split).groupby("split")["patient_id"].nunique() / table["patient_id"].nunique()
    )
    assert shares["train"] == pytest.approx(0.7, abs=0.01) and shares["test"] == pytest.approx(0.2, abs=0.01)


def test_patient_keeps_its_split_when_data_grows():
    small, big = _table(100), _table(200)
    s_small, _ = assign_grouped(small, (0.7, 0.1, 0.2), seed=0)
    s_big, _ = assign_grouped(big, (0.7, 0.1, 0.2), seed=0)
    merged = small.assign(a=s_small.to_numpy()).merge(big.assign(b=s_big.to_numpy()), on="image_index")
    assert (merged["a"] == merged["b"]).mean() > 0.9  # only patients near the share boundaries move


def test_official_lists_with_validation_carved_by_patient():
    table = _table()
    patients = sorted(table["patient_id"].unique())
    test_p = set(patients[::4])
    test = table.loc[table["patient_id"].isin(test_p), "image_index"].tolist()
    train_val = table.loc[~table["patient_id"].isin(test_p), "image_index"].tolist() + ["ghost.png"]
    split, report = assign_official(table, train_val, test, val_fraction=0.1, seed=0)
    t = table.assign(split=split)
    check_no_leakage(t)
    assert set(t.loc[t["split"] == "test", "image_index"]) == set(test)
    val_patients = t.loc[t["split"] == "val", "patient_id"].nunique()
    train_val_patients = t.loc[t["split"].isin(["train", "val"]), "patient_id"].nunique()
    assert val_patients == round(0.1 * train_val_patients)
    assert report["listed_not_in_metadata"]["train_val_list.txt"] == {"count": 1, "examples": ["ghost.png"]}


def test_image_on_both_lists_fails_loudly():
    table = _table(10)
    name = table["image_index"].iloc[0]
    with pytest.raises(LeakageError, match="on both"):
        assign_official(table, [name], [name], 0.1, 0)


def test_patient_in_two_splits_fails_loudly():
    t = pd.DataFrame(
        {
            "image_index": ["a.png", "b.png", "c.png"],
            "patient_id": [7, 7, 8],
            "split": ["train", "test", "test"],
        }
    )
    with pytest.raises(
        LeakageError, match=r"1 patient\(s\) have images in more than one split, e.g. patient ids \[7\]"
    ):
        check_no_leakage(t)
    check_no_leakage(t.assign(split=["test", "test", "train"]))


def test_manifest_without_lists_and_with_one_list_missing(tmp_path):
    studies = make_studies(50, seed=0)
    write_metadata(tmp_path, studies, "2020")
    table, summary = build_manifest(str(tmp_path), IngestConfig(split_fractions=(0.6, 0.2, 0.2)))
    assert summary["splits"]["lists"] is None
    assert set(table["split"]) == {"train", "val", "test"}
    (tmp_path / "test_list.txt").write_text(studies[0].image_index + "\n")
    with pytest.raises(MetadataError, match="test_list.txt is present but train_val_list.txt is missing"):
        build_manifest(str(tmp_path), IngestConfig())


def test_manifest_reports_unlisted_images_and_round_trips(tmp_path):
    studies = make_studies(40, seed=0)
    write_metadata(tmp_path, studies, "2017")
    write_lists(tmp_path, studies[1:], seed=0)  # the first study is on neither list
    summary = run_manifest(str(tmp_path), str(tmp_path / "ws"), IngestConfig())
    assert summary.excluded == 1
    frame = read_manifest(str(tmp_path / "ws"))
    assert studies[0].image_index not in set(frame["image_index"])
    assert counts(frame)["total"]["images"] == len(studies) - 1
    assert frame["Cardiomegaly"].dtype == "int8"


@pytest.mark.real_data
@pytest.mark.parametrize("name", ["Data_Entry_2017.csv", "Data_Entry_2017_v2020.csv"])
def test_official_split_on_the_full_real_metadata(nih_dir, tmp_path, name):
    for f in (name, "train_val_list.txt", "test_list.txt"):
        (tmp_path / f).symlink_to(nih_dir / "meta" / f)
    table, summary = build_manifest(str(tmp_path), IngestConfig())
    c = summary["counts"]
    assert c["total"]["images"] == 112_120
    assert c["train"]["images"] + c["val"]["images"] == 86_524
    assert c["test"]["images"] == 25_596
    assert summary["excluded"]["count"] == 0
    per_patient = table.groupby("patient_id")["split"].nunique()
    assert int((per_patient > 1).sum()) == 0
    assert c["val"]["patients"] == round(0.1 * (c["train"]["patients"] + c["val"]["patients"]))
