"""model and devices: bases with their preprocessing, weights resolution, the report's head, assembly, unfreezing,
the GPU switches forced on a CPU."""

from __future__ import annotations

import numpy as np
import pytest

from xray_tasks.config import PATHOLOGIES, HeadConfig
from xray_tasks.training import devices, networks

keras = pytest.importorskip("keras")


@pytest.fixture(autouse=True)
def float32_afterwards():
    yield
    keras.mixed_precision.set_global_policy("float32")


def images(n: int, size: int, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).uniform(0, 255, (n, size, size, 3)).astype(np.float32)


@pytest.mark.parametrize("base,size", [("mobilenetv3small", 64), ("efficientnetb0", 32), ("resnet50", 32)])
def test_each_base_pools_to_its_feature_width(base, size):
    net = networks.build_base(base, size, None, seed=0)
    assert net.input.name == "image"
    out = net.predict(images(2, size), verbose=0)
    assert out.shape == (2, networks.BASES[base].feature_dim)
    assert np.isfinite(out).all()


def test_caffe_layer_is_resnet50_preprocess_input():
    from keras.applications.resnet50 import preprocess_input

    x = images(3, 8)
    np.testing.assert_allclose(
        networks.caffe_preprocessing()(x).numpy(), preprocess_input(x.copy()), atol=1e-4
    )


def test_random_base_is_reproducible_from_its_seed():
    a = networks.build_base("mobilenetv3small", 32, None, seed=3).get_weights()
    b = networks.build_base("mobilenetv3small", 32, None, seed=3).get_weights()
    c = networks.build_base("mobilenetv3small", 32, None, seed=4).get_weights()
    assert all(np.array_equal(x, y) for x, y in zip(a, b))
    assert not all(np.array_equal(x, y) for x, y in zip(a, c))


def test_weights_resolution_never_downloads(tmp_path, monkeypatch):
    monkeypatch.setenv("KERAS_HOME", str(tmp_path / "keras"))
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    monkeypatch.setattr(networks.tempfile, "gettempdir", lambda: str(tmp_path / "tmp"))
    assert networks.resolve_weights("resnet50", "none", seed=7) == (None, "random:seed=7")
    with pytest.raises(FileNotFoundError, match="not in the Keras cache.*nothing is downloaded"):
        networks.resolve_weights("resnet50", "imagenet")
    cached = tmp_path / "keras" / "models" / networks.BASES["resnet50"].imagenet_notop_file
    cached.parent.mkdir(parents=True)
    cached.write_bytes(b"weights")
    path, weights_id = networks.resolve_weights("resnet50", "imagenet")
    assert path == str(cached) and weights_id.startswith("imagenet:")
    with pytest.raises(FileNotFoundError, match="no file at"):
        networks.resolve_weights("resnet50", str(tmp_path / "absent.h5"))
    with pytest.raises(ValueError, match="unknown base 'vgg16'"):
        networks.resolve_weights("vgg16", "none")


def test_local_weights_file_is_loaded(tmp_path):
    source = networks.build_base("mobilenetv3small", 32, None, seed=5)
    app = networks.application(source)
    path = tmp_path / "mnv3.weights.h5"
    app.save_weights(path)
    resolved, weights_id = networks.resolve_weights("mobilenetv3small", str(path))
    assert weights_id.startswith("file:")
    loaded = networks.build_base("mobilenetv3small", 32, resolved, seed=99)
    x = images(2, 32)
    np.testing.assert_allclose(
        loaded.predict(x, verbose=0), source.predict(x, verbose=0), rtol=1e-5, atol=1e-12
    )


def test_head_is_the_reports_top_with_optional_pathologies():
    head = networks.build_head(16, HeadConfig())
    assert [type(layer).__name__ for layer in head.layers] == ["InputLayer", "Dense", "Dropout", "Dense"]
    assert head.get_layer("hidden").units == 512 and head.get_layer("hidden").activation.__name__ == "tanh"
    assert head.get_layer("dropout").rate == 0.4
    out = head.predict(np.random.default_rng(0).normal(size=(4, 16)).astype(np.float32), verbose=0)
    assert set(out) == {"triage"} and out["triage"].shape == (4, 2)
    np.testing.assert_allclose(out["triage"].sum(axis=1), 1.0, rtol=1e-5)
    multi = networks.build_head(16, HeadConfig(multilabel=True))
    out = multi.predict(np.zeros((3, 16), np.float32), verbose=0)
    assert out["pathologies"].shape == (3, len(PATHOLOGIES))


def test_standardising_head_rescales_vanishing_features():
    features = np.random.default_rng(1).normal(5e-11, 2e-11, (200, 8)).astype(np.float32)
    scale, offset = networks.feature_scaling(features)
    head = networks.build_head(8, HeadConfig(standardize=True), (scale, offset))
    standardised = head.get_layer("standardize")(features).numpy()
    np.testing.assert_allclose(standardised.mean(axis=0), 0, atol=1e-3)
    np.testing.assert_allclose(standardised.std(axis=0), 1, atol=1e-3)
    with pytest.raises(ValueError, match="pass scaling"):
        networks.build_head(8, HeadConfig(standardize=True))


def test_assembled_model_round_trips_with_stock_keras(tmp_path):
    base = networks.build_base("resnet50", 32, None, seed=0)
    head = networks.build_head(2048, HeadConfig(hidden_units=8, multilabel=True))
    full = networks.assemble(base, head)
    assert full.input.name == "image" and sorted(full.output_names) == ["pathologies", "triage"]
    uri = str(tmp_path / "model.keras")
    networks.save_model(full, uri)
    loaded = networks.load_model(uri)
    x = images(2, 32)
    a, b = full.predict(x, verbose=0), loaded.predict(x, verbose=0)
    np.testing.assert_allclose(a["triage"], b["triage"], rtol=1e-6)
    assert networks.triage_probability(b).shape == (2,)
    with pytest.raises(ValueError, match="must end in .keras"):
        networks.save_model(full, str(tmp_path / "model.h5"))


def test_unfreeze_last_counts_back_from_the_pool_and_keeps_batchnorm_frozen():
    base = networks.build_base("resnet50", 32, None, seed=0)
    full = networks.assemble(base, networks.build_head(2048, HeadConfig(hidden_units=8)))
    trained = networks.unfreeze_last(full, 10)
    # ResNet50's last ten layers before the pool are conv5_block3: three convolutions train, three BNs do not.
    assert trained == ["conv5_block3_1_conv", "conv5_block3_2_conv", "conv5_block3_3_conv"]
    app = networks.application(base)
    assert not app.get_layer("conv5_block3_1_bn").trainable
    assert not app.get_layer("conv5_block2_3_conv").trainable
    head_weights = 4
    assert len(full.trainable_weights) == 2 * len(trained) + head_weights
    assert networks.unfreeze_last(full, 0) == [] and len(full.trainable_weights) == head_weights


def test_switch_resolution():
    assert devices.resolve("auto", True) and not devices.resolve("auto", False)
    assert devices.resolve("on", False) and not devices.resolve("off", True)
    with pytest.raises(ValueError, match="must be one of"):
        devices.resolve("maybe", False)
    with pytest.raises(ValueError, match="device must be one of"):
        devices.configure(device="tpu")


def test_mixed_precision_and_xla_forced_on_cpu_keep_float32_finite_outputs():
    import tensorflow as tf

    settings = devices.configure(mixed_precision="on", xla="on")
    assert settings.mixed_precision and settings.xla and settings.policy == "mixed_float16"
    base = networks.build_base("mobilenetv3small", 32, None, seed=0)
    full = networks.assemble(base, networks.build_head(576, HeadConfig(hidden_units=8, multilabel=True)))
    assert networks.application(base).layers[5].compute_dtype == "float16"
    forward = tf.function(lambda x: full(x, training=False), jit_compile=True)
    out = forward(tf.constant(images(2, 32)))
    for name in ("triage", "pathologies"):
        assert out[name].dtype == tf.float32 and np.isfinite(out[name].numpy()).all()
    with devices.float32_policy():
        assert keras.mixed_precision.global_policy().name == "float32"
    assert keras.mixed_precision.global_policy().name == "mixed_float16"


def test_device_gpu_without_a_gpu_fails_clearly():
    import tensorflow as tf

    if tf.config.get_visible_devices("GPU"):
        pytest.skip("a GPU is visible here: the failure path cannot be exercised")
    with pytest.raises(RuntimeError, match="sees no GPU"):
        devices.configure(device="gpu")


def test_the_stored_pixels_wrapper_is_the_model_after_the_pipelines_last_step():
    import tensorflow as tf

    from xray_tasks.data.dataset import to_model_pixels
    from xray_tasks.training.head import compile_model

    model = networks.assemble(
        networks.build_base("mobilenetv3small", 32, None, 0),
        networks.build_head(576, HeadConfig(hidden_units=8)),
    )
    fed = networks.fed_stored_pixels(model, 48)
    stored = np.random.default_rng(1).integers(0, 256, (3, 48, 48, 1), dtype=np.uint8)
    expected = model(tf.cast(to_model_pixels(tf.constant(stored), 32, 3), tf.float32), training=False)
    got = fed(tf.constant(stored), training=False)
    np.testing.assert_array_equal(
        got["triage"].numpy(), expected["triage"].numpy()
    )  # the same ops, bit for bit
    assert fed.inputs[0].shape[1:] == (48, 48, 1) and fed.inputs[0].dtype == "uint8"
    assert {id(v) for v in fed.weights} == {id(v) for v in model.weights}  # nothing of its own
    # Trained through the wrapper with the model's optimizer: the model's weights move, and its optimizer state
    # (what the model's checkpoint saves) is the one that moved.
    compile_model(model, "sgd", 0.1, 0.9, False)
    compile_model(fed, model.optimizer, 0.1, 0.9, False)
    before = [w.copy() for w in model.get_weights()]
    fed.fit(stored, {"triage": np.eye(2, dtype=np.float32)[[0, 1, 1]]}, epochs=1, verbose=0)
    assert fed.optimizer is model.optimizer and int(model.optimizer.iterations) == 1
    assert any(np.abs(a - b).max() > 0 for a, b in zip(before, model.get_weights()))
    assert model.inputs[0].shape[1:] == (32, 32, 3)  # what is saved and published keeps its RGB input
