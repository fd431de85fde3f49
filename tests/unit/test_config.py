import json

import pytest

from xray_tasks.config import IngestConfig, PipelineConfig, from_dict, override, profile, to_dict


def test_round_trip_through_json():
    cfg = profile("demo", workspace="/w")
    again = from_dict(PipelineConfig, json.loads(json.dumps(to_dict(cfg))))
    assert again == cfg


def test_override_coerces_strings_and_rejects_unknown_keys():
    cfg = override(
        PipelineConfig(),
        {"head.epochs": "7", "head.class_weight": "true", "ingest.split_fractions": "0.6,0.2,0.2"},
    )
    assert cfg.head.epochs == 7 and cfg.head.class_weight is True
    assert cfg.ingest.split_fractions == (0.6, 0.2, 0.2)
    with pytest.raises(ValueError, match="unknown config key 'head.epoch'"):
        override(cfg, {"head.epoch": "1"})
    with pytest.raises(ValueError, match="expected int"):
        override(cfg, {"head.epochs": "many"})


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"encoding": "jpeg"}, "encoding"),
        ({"val_fraction": 0.0}, "val_fraction"),
        ({"split_fractions": (0.5, 0.5, 0.5)}, "split_fractions"),
        ({"image_size": 8}, "image_size"),
    ],
)
def test_ingest_config_validates(kwargs, message):
    with pytest.raises(ValueError, match=message):
        IngestConfig(**kwargs)


def test_unknown_profile():
    with pytest.raises(ValueError, match="allowed: 'demo', 'full'"):
        profile("huge")
