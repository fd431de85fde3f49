"""A GPU proxy: our model's forward and fine-tune speed on whatever Keras 3 backend is active.

    .venv/bin/python bench/gpu.py [--base resnet50] [--size 512] [--batch 32] [--steps 30] [--precision mixed]
    KERAS_BACKEND=jax python bench/gpu.py ...      # on a GPU host with JAX and the keras wheel, no TensorFlow

Builds the model exactly as training does (``training.networks``: base with its preprocessing inside, the report's
head, the last ``--unfreeze`` base layers trainable, BatchNorm frozen), then times, after ``--warmup`` steps that
pay for compilation:
  * forward images/s (``predict_on_batch`` on random 0..255 images),
  * fine-tune steps/s and images/s (``train_on_batch`` with SGD),
and prints the fine-tune/forward ratio measured in the same run.  A JAX figure is a proxy for the TensorFlow path
the pipeline runs, not a measurement of it: same model, same precision policy, another compiler.

Without a visible GPU it says so and exits 0 having measured nothing, unless ``--allow-cpu`` (the tests run it
that way on a tiny size).  The last stdout line is a JSON summary.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))


def visible_gpus(backend: str) -> list[str]:
    """Names of the GPUs the active Keras backend can use (empty on a CPU-only host)."""
    if backend == "jax":
        import jax

        return [str(d) for d in jax.devices() if d.platform == "gpu"]
    if backend == "tensorflow":
        import tensorflow as tf

        return [d.name for d in tf.config.list_physical_devices("GPU")]
    if backend == "torch":
        import torch

        return [torch.cuda.get_device_name(i) for i in range(torch.cuda.device_count())]
    return []


def build(base: str, size: int, unfreeze: int):
    """Base + head, assembled and with the last ``unfreeze`` layers trainable, as fine-tuning builds it."""
    import keras

    from xray_tasks.config import HeadConfig
    from xray_tasks.training import networks

    net = networks.build_base(base, size, None, seed=0)
    head = networks.build_head(int(net.output.shape[-1]), HeadConfig())
    model = networks.assemble(net, head)
    networks.unfreeze_last(model, unfreeze)
    model.compile(
        optimizer=keras.optimizers.SGD(learning_rate=1e-4, momentum=0.9),
        loss={"triage": keras.losses.BinaryCrossentropy()},
    )
    return model


def timed(step, warmup: int, steps: int) -> float:
    """Seconds per call of ``step`` after ``warmup`` calls; ``step`` must block until its result is ready."""
    for _ in range(warmup):
        step()
    started = time.perf_counter()
    for _ in range(steps):
        step()
    return (time.perf_counter() - started) / steps


def measure(args: argparse.Namespace) -> dict:
    import keras
    import numpy as np

    keras.mixed_precision.set_global_policy("mixed_float16" if args.precision == "mixed" else "float32")
    model = build(args.base, args.size, args.unfreeze)
    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, (args.batch, args.size, args.size, 3)).astype("float32")
    targets = {"triage": np.eye(2, dtype="float32")[rng.integers(0, 2, args.batch)]}

    def forward():
        np.asarray(model.predict_on_batch(images)["triage"])

    def finetune():
        float(np.asarray(model.train_on_batch(images, targets, return_dict=True)["loss"]))

    forward_s = timed(forward, args.warmup, args.steps)
    train_s = timed(finetune, args.warmup, args.steps)
    return {
        "forward_images_per_s": round(args.batch / forward_s, 2),
        "finetune_steps_per_s": round(1 / train_s, 3),
        "finetune_images_per_s": round(args.batch / train_s, 2),
        "finetune_to_forward": round(forward_s / train_s, 4),
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--base", default="resnet50", choices=["resnet50", "efficientnetb0", "mobilenetv3small"]
    )
    parser.add_argument("--size", type=int, default=512)
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--steps", type=int, default=30)
    parser.add_argument("--warmup", type=int, default=3)
    parser.add_argument("--unfreeze", type=int, default=10)
    parser.add_argument("--precision", choices=["mixed", "float32"], default="mixed")
    parser.add_argument(
        "--allow-cpu", action="store_true", help="measure even without a GPU (tests, dry runs)"
    )
    args = parser.parse_args(argv)
    for name in ("size", "batch", "steps"):
        if getattr(args, name) < 1:
            parser.error(f"--{name} must be >= 1, got {getattr(args, name)}")

    import keras

    backend = keras.backend.backend()
    gpus = visible_gpus(backend)
    summary = {
        "backend": backend,
        "keras": keras.__version__,
        "gpus": gpus,
        "host": platform.node(),
        "base": args.base,
        "size": args.size,
        "batch": args.batch,
        "precision": args.precision,
        "proxy_for_tensorflow": backend != "tensorflow",
    }
    if not gpus and not args.allow_cpu:
        print(
            f"no GPU is visible to Keras' {backend} backend: nothing measured (--allow-cpu measures the CPU)",
            file=sys.stderr,
        )
        print(json.dumps({**summary, "measured": False}))
        return 0
    summary.update(measure(args), measured=True, device="gpu" if gpus else "cpu")
    print(
        f"{args.base} at {args.size} px, batch {args.batch}, {args.precision} on {backend} "
        f"({', '.join(gpus) or 'CPU'}): forward {summary['forward_images_per_s']} images/s, fine-tune "
        f"{summary['finetune_steps_per_s']} steps/s ({summary['finetune_images_per_s']} images/s, "
        f"{summary['finetune_to_forward']:.2f}x the forward rate)",
        file=sys.stderr,
    )
    if summary["proxy_for_tensorflow"]:
        print(
            "note: this is a proxy for the pipeline's TensorFlow path, not a measurement of it",
            file=sys.stderr,
        )
    print(json.dumps(summary))
    return 0


if __name__ == "__main__":
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    sys.exit(main())
