"""``dfcan benchmark train``: DFCAN training speed at the paper's size next to the machine's sgemm rate.

FLOPs come from :mod:`dfcan_tf.benchmark.flops` (the one counter: convolutions
and the DFT matrix products, a training step ≈ 3 × the forward pass); measured
figures are in ``docs/README.md``.
"""

from __future__ import annotations

import argparse
import time

__all__ = ["benchmark_train"]


def benchmark_train(args: argparse.Namespace, sgemm: float) -> dict:
    """Print DFCAN training speed at the paper's size (128×128 patches, batch 4) next to the sgemm rate.

    Parameters
    ----------
    args
        ``quick`` (fewer timed steps).
    sgemm
        The machine's measured sgemm rate in GFLOP/s.

    Returns
    -------
    dict
        ``steps_per_s``, ``gflop_per_step``, ``achieved_gflops``, ``sgemm_fraction``.
    """
    import keras
    import numpy as np
    import tensorflow as tf

    from dfcan_tf.benchmark.flops import training_flops
    from dfcan_tf.nets.dfcan import DFCANConfig
    from dfcan_tf.training.config import TrainConfig
    from dfcan_tf.training.trainers import build_trainer

    quick = bool(getattr(args, "quick", False))
    patch, batch = 128, 4
    mc = DFCANConfig.dfcan()
    cfg = TrainConfig.dfcan(mc, patch_size=patch, batch_size=batch)
    keras.utils.set_random_seed(0)
    trainer = build_trainer(cfg)
    rng = np.random.default_rng(0)
    x = tf.constant(rng.random((1, batch, patch, patch, 1), dtype=np.float32))
    y = tf.constant(rng.random((1, batch, 2 * patch, 2 * patch, 1), dtype=np.float32))
    step = tf.function(trainer.train_step)
    t0 = time.perf_counter()
    float(step((x, y))["loss"])  # trace + first step
    warm = time.perf_counter() - t0
    n = 2 if quick else 8
    t0 = time.perf_counter()
    for _ in range(n):
        loss = step((x, y))["loss"]
    float(loss)
    dt = (time.perf_counter() - t0) / n
    flops = training_flops(mc, patch, patch, batch)
    achieved = flops / dt / 1e9
    print(f"train: DFCAN x2 ({mc.width}ch, {mc.n_groups}x{mc.n_blocks} FCABs), {patch}x{patch} patches, batch {batch}: "
          f"{1 / dt:.3f} steps/s ({dt:.2f} s/step; first step incl. tracing {warm:.1f} s); "
          f"{flops / 1e9:.1f} GFLOP/step -> {achieved:.1f} GFLOP/s = {100 * achieved / sgemm:.1f}% of sgemm "
          f"({sgemm:.1f} GFLOP/s)")
    return {"steps_per_s": 1 / dt, "gflop_per_step": flops / 1e9, "achieved_gflops": achieved,
            "sgemm_fraction": achieved / sgemm}
