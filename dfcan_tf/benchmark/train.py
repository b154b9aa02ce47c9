"""``dfcan benchmark train``: DFCAN training speed at the paper's size, both precisions, next to the machine's sgemm rate.

FLOPs come from :mod:`dfcan_tf.benchmark.flops` (the one counter: convolutions
and the DFT matrix products, a training step ≈ 3 × the forward pass). The step
is timed in float32 and, where the CPU has bfloat16 instructions (or a GPU is
present), in bf16 (``--precision bf16``); the PyTorch peer's published step
times are scaled to this machine by the sgemm ratio. Measured figures and the
effect of each speed-up are in ``docs/training.md#speed``.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

__all__ = ["PEER", "benchmark_train", "cpu_features", "time_training_step"]

# The PyTorch DFCAN peer, same step (128² patches, batch 4, ×2, MSE + 0.1·(1 − SSIM), Adam), measured on a
# 2-core machine whose TensorFlow sgemm ran at 205 GFLOP/s (issue 15): float32 and bf16 autocast.
PEER = {"sgemm": 205.0, "float32": 7.5, "bf16": 5.3}
TARGET_SPEEDUP = 1.5
_FEATURES = ("avx2", "fma", "avx512f", "avx512_vnni", "avx512_bf16", "amx_tile", "amx_bf16")


def cpu_features(cpuinfo: str | Path = "/proc/cpuinfo") -> list[str]:
    """The vector-instruction flags of :data:`_FEATURES` the CPU reports (empty when unknown)."""
    try:
        text = Path(cpuinfo).read_text()
    except OSError:
        return []
    flags: set[str] = set()
    for line in text.splitlines():
        if line.startswith("flags"):
            flags.update(line.split(":", 1)[1].split())
            break
    return [f for f in _FEATURES if f in flags]


def time_training_step(precision: str = "float32", *, patch: int = 128, batch: int = 4, steps: int = 8,
                       model=None, reference: bool = False) -> tuple[float, float, list[float]]:
    """Seconds per DFCAN training step at ``precision``: the median of ``steps`` timed steps, the first step
    (with tracing), and every timed step (their spread shows how steady the machine was).

    ``model`` defaults to the paper's DFCAN; ``reference`` traces the plain
    formulas' autodiff instead of the hand-written gradients
    (:func:`dfcan_tf.nets.layers.reference_gradients`), to measure what they save.
    """
    import contextlib

    import keras
    import numpy as np
    import tensorflow as tf

    from dfcan_tf.nets.dfcan import DFCANConfig
    from dfcan_tf.nets.layers import reference_gradients
    from dfcan_tf.training.config import PRECISIONS, TrainConfig
    from dfcan_tf.training.trainers import build_trainer

    mc = model or DFCANConfig.dfcan()
    cfg = TrainConfig.dfcan(mc, patch_size=patch, batch_size=batch).replace(precision=precision)
    previous = keras.mixed_precision.global_policy()
    keras.mixed_precision.set_global_policy(PRECISIONS[precision])
    try:
        with reference_gradients() if reference else contextlib.nullcontext():
            keras.utils.set_random_seed(0)
            trainer = build_trainer(cfg)
            rng = np.random.default_rng(0)
            x = tf.constant(rng.random((1, batch, patch, patch, mc.input_channels), dtype=np.float32))
            y = tf.constant(rng.random((1, batch, mc.scale * patch, mc.scale * patch, 1), dtype=np.float32))
            step = tf.function(trainer.train_step)
            t0 = time.perf_counter()
            float(step((x, y))["loss"])  # trace + first step
            warm = time.perf_counter() - t0
            float(step((x, y))["loss"])
            times = []
            for _ in range(steps):
                t0 = time.perf_counter()
                float(step((x, y))["loss"])
                times.append(time.perf_counter() - t0)
            return float(np.median(times)), warm, times
    finally:
        keras.mixed_precision.set_global_policy(previous)


def benchmark_train(args: argparse.Namespace, sgemm: float) -> dict:
    """Print DFCAN training speed at the paper's size (128×128 patches, batch 4), float32 and bf16, next to sgemm.

    Parameters
    ----------
    args
        ``quick`` (fewer timed steps), ``reference`` (also time the plain-autodiff step).
    sgemm
        The machine's measured float32 sgemm rate in GFLOP/s.

    Returns
    -------
    dict
        Per precision: ``s_per_step``, ``gflop_per_step``, ``achieved_gflops``, ``sgemm_fraction``,
        ``peer_speedup``; and ``cpu_features``.
    """
    import tensorflow as tf

    from dfcan_tf.benchmark.flops import training_flops
    from dfcan_tf.nets.dfcan import DFCANConfig

    quick = bool(getattr(args, "quick", False))
    steps = 2 if quick else 8
    patch, batch = 128, 4
    mc = DFCANConfig.dfcan()
    flops = training_flops(mc, patch, patch, batch)
    features = cpu_features()
    gpu = bool(tf.config.list_physical_devices("GPU"))
    print(f"train: CPU features {' '.join(features) or 'unknown'}; GPU {'yes' if gpu else 'none'}; "
          f"DFCAN x2 ({mc.width}ch, {mc.n_groups}x{mc.n_blocks} FCABs), {patch}x{patch} patches, batch {batch}, "
          f"{flops / 1e9:.1f} GFLOP/step; sgemm {sgemm:.1f} GFLOP/s")
    result: dict = {"cpu_features": features, "gflop_per_step": flops / 1e9}
    precisions = ["float32"]
    if gpu or "avx512_bf16" in features or "amx_bf16" in features:
        precisions.append("bf16")
    else:
        print("train: bf16 skipped: no AVX512-BF16/AMX instructions and no GPU (Keras would emulate it, slowly)")
    for precision in precisions:
        dt, warm, times = time_training_step(precision, patch=patch, batch=batch, steps=steps, model=mc)
        achieved = flops / dt / 1e9
        peer = PEER[precision] * PEER["sgemm"] / sgemm  # the peer's step, scaled to this machine's sgemm
        speedup = peer / dt
        verdict = "meets" if speedup >= TARGET_SPEEDUP else "below"
        print(f"train [{precision:7s}]: {dt:.2f} s/step (median of {len(times)} steps, {min(times):.2f}-{max(times):.2f} s;"
              f" {1 / dt:.3f} steps/s; first step incl. tracing {warm:.1f} s)"
              f" -> {achieved:.1f} GFLOP/s = {100 * achieved / sgemm:.1f}% of sgemm; PyTorch peer "
              f"{PEER[precision]:.1f} s at sgemm {PEER['sgemm']:.0f} ≈ {peer:.2f} s here: {speedup:.2f}x "
              f"({verdict} the {TARGET_SPEEDUP}x goal)")
        result[precision] = {"s_per_step": dt, "step_times": times, "achieved_gflops": achieved,
                             "sgemm_fraction": achieved / sgemm, "peer_speedup": speedup}
        if getattr(args, "reference", False):
            ref, _, _ = time_training_step(precision, patch=patch, batch=batch, steps=steps, model=mc, reference=True)
            print(f"train [{precision:7s}]: plain autodiff of the reference formulas {ref:.2f} s/step "
                  f"(the hand-written gradients save {100 * (1 - dt / ref):.0f}%)")
            result[precision]["reference_s_per_step"] = ref
    return result
