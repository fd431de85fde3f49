"""The determinism switch (``repro.deterministic``): runs with one fingerprint give the same predictions.

On: Python's, NumPy's and TensorFlow's global seeds are set from ``repro.seed``; TensorFlow runs deterministic
kernels (``tf.config.experimental.enable_op_determinism``), which also makes ``tf.data`` keep its element order
(``data.dataset`` then interleaves shards deterministically even when it shuffles, with the per-epoch seeds the
stages already pass).  On a CPU that gives bit-identical predictions for the same inputs and config
(``tests/integration/test_determinism.py``).  On a GPU some kernels have no deterministic implementation:
TensorFlow raises for those instead of running them, and XLA and mixed precision may still reorder float sums,
so equality there is not promised (docs/model.md).  The fingerprint prevents needless retrains either way.

Call :func:`apply` once per process, before any model or dataset is built.
"""

from __future__ import annotations

import logging
import os
import random

from xray_tasks.config import ReproConfig

logger = logging.getLogger(__name__)


def apply(cfg: ReproConfig) -> bool:
    """Switch this process to deterministic, seeded execution when ``cfg.deterministic``; returns whether it did."""
    if not cfg.deterministic:
        return False
    import numpy as np
    import tensorflow as tf

    os.environ.setdefault("PYTHONHASHSEED", str(cfg.seed))  # for child processes; this one's is fixed already
    random.seed(cfg.seed)
    np.random.seed(cfg.seed)
    tf.random.set_seed(cfg.seed)
    tf.config.experimental.enable_op_determinism()
    logger.info("determinism: on (seed %d, deterministic TensorFlow ops and tf.data order)", cfg.seed)
    return True


def enabled() -> bool:
    """Whether TensorFlow's op determinism is on in this process (``tf.data`` pipelines then keep their order)."""
    from tensorflow.python.framework import config as tf_config

    return bool(tf_config.is_op_determinism_enabled())
