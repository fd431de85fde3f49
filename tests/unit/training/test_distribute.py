"""features.distribute: a MirroredStrategy over two logical CPUs gives the single-device features and fine-tune.

The CPU is split into two logical devices in a child process (``tf.config.set_logical_device_configuration``
only works before TensorFlow initialises, which other tests in this process may have done already).  There, with
the determinism switch on as in the demo profile, the same stage runs once with ``distribute=off`` and once with
``distribute=on`` (2 replicas), and the results are compared.

Measured (TF 2.17 / Keras 3.15 on two CPU cores, random MobileNetV3Small at 64 px, 80 synthetic patients):

* features (160 rows): row order identical, max |delta| 0.0 (bit-equal: each replica runs the same kernels on
  its contiguous slice of the batch); asserted within ``FEATURE_ATOL`` = 1e-5.
* fine-tuning, one epoch at global batch 16 (8 per replica), head dropout 0: max |delta| of the final weights
  7.5e-9 and of the validation probabilities 4.7e-9, while the epoch itself moved the weights by up to 3.7e-5
  and the probabilities by up to 3.5e-3; asserted within ``WEIGHT_ATOL`` = 1e-6 and ``PREDICTION_ATOL`` = 1e-5.
  Dropout is off because each replica draws its own masks, which no single-device run reproduces.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap

import pytest
from support.models import make_workspace, tiny_config

from xray_tasks.config import FeatureConfig, to_dict
from xray_tasks.errors import BadInput
from xray_tasks.training import devices

FEATURE_ATOL = 1e-5
WEIGHT_ATOL = 1e-6
PREDICTION_ATOL = 1e-5

CHILD = textwrap.dedent(
    """
    import json, shutil, sys
    import tensorflow as tf

    cpu = tf.config.list_physical_devices("CPU")[0]
    tf.config.set_logical_device_configuration(
        cpu, [tf.config.LogicalDeviceConfiguration(), tf.config.LogicalDeviceConfiguration()]
    )

    import numpy as np
    from xray_tasks.config import PipelineConfig, from_dict, override
    from xray_tasks.data import dataset
    from xray_tasks.training import determinism, devices, features, finetune, head, networks
    from xray_tasks.workspace import RunDir, Workspace

    ws, cfg_path, out_path = sys.argv[1:4]
    with open(cfg_path) as f:
        cfg = from_dict(PipelineConfig, json.load(f))
    determinism.apply(cfg.repro)
    out = {}

    # The switch as this process resolves it.
    for switch in ("auto", "off", "on"):
        settings = devices.configure("off", "off", "auto", switch)
        strategy = devices.strategy(settings)
        out[switch] = {
            "settings": settings.to_dict(),
            "replicas_in_sync": strategy.num_replicas_in_sync,
            "type": type(strategy).__name__,
            "devices": list(strategy.extended.worker_devices) if settings.replicas > 1 else [],
        }

    # Features: single device, then mirrored, into the same workspace.
    root = Workspace(ws).features(cfg.features.base, cfg.features.input_size)
    runs = {}
    for switch in ("off", "on"):
        shutil.rmtree(root, ignore_errors=True)
        summary = features.extract_features(ws, override(cfg.features, {"distribute": switch}))
        runs[switch] = {
            "devices": summary.devices.to_dict(),
            "splits": {s: features.load_features(ws, cfg.features.base, cfg.features.input_size, s)
                       for s in ("train", "val", "test")},
        }
    out["features"] = {
        "devices": {k: v["devices"] for k, v in runs.items()},
        "same_order": all(
            list(runs["off"]["splits"][s].image_index) == list(runs["on"]["splits"][s].image_index)
            for s in ("train", "val", "test")
        ),
        "max_abs_diff": max(
            float(np.max(np.abs(runs["off"]["splits"][s].features - runs["on"]["splits"][s].features)))
            for s in ("train", "val", "test")
        ),
        "rows": sum(len(v) for v in runs["off"]["splits"].values()),
    }

    # Fine-tuning: one head (trained once), then one epoch single-device and one mirrored.
    first, second = Workspace(ws).run("single").root, Workspace(ws).run("mirrored").root
    head.train_head(ws, first, cfg)
    fcfg = cfg.features
    start = networks.assemble(
        networks.build_base(fcfg.base, fcfg.input_size, None, fcfg.seed), networks.load_model(RunDir(first).head_model)
    )
    shutil.copytree(first, second)
    models = {}
    for switch, run in (("off", first), ("on", second)):
        run_cfg = override(cfg, {"features.distribute": switch})
        summary = finetune.run_finetune(ws, run, run_cfg)
        models[switch] = (networks.load_model(summary.model), summary)
    batch = next(iter(dataset.split_dataset(ws, "val", batch_size=64, output_size=cfg.features.input_size)))
    images = tf.cast(batch["image"], tf.float32)
    probs = {k: networks.triage_probability(m(images, training=False)) for k, (m, _) in models.items()}
    wa, wb = (m.get_weights() for m, _ in models.values())
    probs["start"] = networks.triage_probability(start(images, training=False))
    out["finetune"] = {
        "devices": {k: s.devices.to_dict() for k, (_, s) in models.items()},
        "epochs": {k: s.epochs_completed for k, (_, s) in models.items()},
        "max_weight_diff": max(float(np.max(np.abs(a - b))) for a, b in zip(wa, wb)),
        "max_weight_change": max(float(np.max(np.abs(a - b))) for a, b in zip(wa, start.get_weights())),
        "max_prediction_diff": float(np.max(np.abs(probs["off"] - probs["on"]))),
        "max_prediction_change": float(np.max(np.abs(probs["off"] - probs["start"]))),
        "predictions": len(probs["off"]),
    }
    with open(out_path, "w") as f:
        json.dump(out, f)
    """
)


@pytest.fixture(scope="module")
def measured(tmp_path_factory):
    """Run the child once: the switch, features off/on, fine-tuning off/on; returns what it measured."""
    root = tmp_path_factory.mktemp("distribute")
    ws = make_workspace(root, patients=80, signal=0.6, shard_mb=0.05)
    cfg = tiny_config(ws, head__dropout="0", head__epochs="5")
    cfg_path, out_path = root / "config.json", root / "measured.json"
    cfg_path.write_text(json.dumps(to_dict(cfg)))
    env = {**os.environ, "CUDA_VISIBLE_DEVICES": "", "TF_CPP_MIN_LOG_LEVEL": "2"}
    proc = subprocess.run(
        [sys.executable, "-c", CHILD, ws, str(cfg_path), str(out_path)],
        capture_output=True,
        text=True,
        check=False,
        env=env,
        timeout=900,
    )
    assert proc.returncode == 0, proc.stderr[-4000:]
    return json.loads(out_path.read_text())


def test_auto_means_mirrored_only_with_more_than_one_gpu():
    assert devices.resolve_distribute("auto", 0) is False
    assert devices.resolve_distribute("auto", 1) is False
    assert devices.resolve_distribute("auto", 2) is True
    assert devices.resolve_distribute("on", 0) is True
    assert devices.resolve_distribute("off", 4) is False


def test_a_bad_distribute_value_is_refused_with_the_allowed_ones():
    with pytest.raises(BadInput, match=r"distribute must be one of \['auto', 'on', 'off'\], got 'mirror'"):
        devices.resolve_distribute("mirror", 2)
    with pytest.raises(BadInput, match=r"features.distribute must be one of .*got 'yes'"):
        FeatureConfig(distribute="yes")


@pytest.mark.slow
def test_on_mirrors_over_the_two_logical_cpus_and_auto_stays_on_one_device(measured):
    on, auto, off = measured["on"], measured["auto"], measured["off"]
    assert on["type"] == "MirroredStrategy" and on["replicas_in_sync"] == 2 and len(on["devices"]) == 2
    assert all("CPU:" in d for d in on["devices"]) and on["devices"][0] != on["devices"][1]
    assert on["settings"]["strategy"] == "mirrored" and on["settings"]["replicas"] == 2
    for resolved in (auto, off):  # no GPU here: auto is off
        assert resolved["replicas_in_sync"] == 1 and resolved["type"] != "MirroredStrategy"
        assert resolved["settings"]["strategy"] == "default" and resolved["settings"]["replicas"] == 1


@pytest.mark.slow
def test_mirrored_features_equal_single_device_features_in_the_same_row_order(measured):
    found = measured["features"]
    assert found["devices"]["off"]["replicas"] == 1 and found["devices"]["on"]["replicas"] == 2
    assert found["devices"]["on"]["strategy"] == "mirrored" and found["rows"] > 0
    assert found["same_order"]
    assert found["max_abs_diff"] <= FEATURE_ATOL, found


@pytest.mark.slow
def test_mirrored_finetune_matches_single_device_weights_and_predictions(measured):
    found = measured["finetune"]
    assert found["devices"]["on"]["replicas"] == 2 and found["devices"]["off"]["replicas"] == 1
    assert found["epochs"] == {"off": 1, "on": 1} and found["predictions"] > 0
    # The epoch moved the weights far more than the two runs differ: the comparison is not vacuous.
    assert found["max_weight_change"] > 100 * found["max_weight_diff"], found
    assert found["max_weight_diff"] <= WEIGHT_ATOL, found
    assert found["max_prediction_diff"] <= PREDICTION_ATOL, found
