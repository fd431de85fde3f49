"""The synthetic data's look: hidden findings (the demo's realistic AUROC), a new scanner (the drift demo), both
deterministic; the default look stays the easy one the learning tests use."""

from __future__ import annotations

import numpy as np
import pandas as pd

from xray_tasks.data.synth import NEW_SCANNER, REALISTIC, Study, generate
from xray_tasks.data.synth_images import Look, render

SICK = Study("00000001_000.png", 1, 0, 50, "M", "PA", ("Mass",))


def test_a_subtle_finding_renders_without_its_signal():
    hidden = render(SICK, 64, 1.0, 0, Look(subtle=1.0))
    assert np.array_equal(hidden, render(SICK, 64, 0.0, 0))  # every finding hidden: as if no signal
    assert not np.array_equal(render(SICK, 64, 1.0, 0), hidden)
    assert np.array_equal(render(SICK, 64, 1.0, 0, Look(subtle=0.0)), render(SICK, 64, 1.0, 0))


def test_the_share_of_hidden_findings_is_about_subtle_and_deterministic():
    studies = [Study(f"{i:08d}_000.png", i, 0, 50, "F", "AP", ("Mass",)) for i in range(400)]
    look = Look(subtle=REALISTIC["subtle"])
    hidden = [np.array_equal(render(s, 32, 1.0, 0, look), render(s, 32, 0.0, 0)) for s in studies]
    assert abs(np.mean(hidden) - REALISTIC["subtle"]) < 0.05
    again = [np.array_equal(render(s, 32, 1.0, 0, look), render(s, 32, 0.0, 0)) for s in studies[:50]]
    assert again == hidden[:50]


def test_the_new_scanner_is_brighter_with_less_contrast():
    plain, shifted = render(SICK, 64), render(SICK, 64, look=NEW_SCANNER)
    assert shifted.mean() > plain.mean() + 30 and shifted.std() < 0.75 * plain.std()


def test_generate_records_its_look_and_real_image_sizes(tmp_path):
    info = generate(tmp_path, patients=4, archives=1, image_size=64, look=Look(subtle=0.5, brightness=10))
    assert info["look"] == {"subtle": 0.5, "contrast": 1.0, "brightness": 10}
    meta = pd.read_csv(tmp_path / "Data_Entry_2017.csv")
    assert set(meta["OriginalImage[Width"]) == {64} and set(meta["Height]"]) == {64}
