"""``dfcan benchmark data``: input-pipeline throughput next to what DFCAN training can consume.

Times exactly what training consumes: :func:`dfcan_tf.training.sources.train_dataset`
over a :class:`~dfcan_tf.training.sources.FolderSource`, on a small simulated
patch set (one path: the benchmark and ``dfcan train`` read patches the same way).
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

__all__ = ["benchmark_data"]


def benchmark_data(args: argparse.Namespace, sgemm: float) -> dict:
    """``dfcan benchmark data``: input-pipeline throughput in patches/s.

    Simulates a small BioSR-like set in a temporary folder, cuts 128-px patch
    pairs and times the training input (:func:`dfcan_tf.training.sources.train_dataset`, SISR and SIM),
    next to an upper bound of what DFCAN training can consume on this machine
    (its FLOPs, :mod:`dfcan_tf.benchmark.flops`, at the measured sgemm rate).
    """
    import tempfile

    import tensorflow as tf

    from dfcan_tf.benchmark.flops import training_flops
    from dfcan_tf.data.patches import make_patches
    from dfcan_tf.data.pipeline import TASKS
    from dfcan_tf.data.simulate import simulate_dataset
    from dfcan_tf.nets.dfcan import DFCANConfig
    from dfcan_tf.training.config import TrainConfig
    from dfcan_tf.training.sources import FolderSource, train_dataset

    quick = bool(getattr(args, "quick", False))
    # quick: a smoke run on 64-px patches; full: the paper's 128-px patches
    n_patches, patch, size = (64, 64, 128) if quick else (512, 128, 256)
    batch = 4
    results: dict = {}
    with tempfile.TemporaryDirectory(prefix="dfcan-bench-data-") as tmp:
        t0 = time.perf_counter()
        simulate_dataset(Path(tmp) / "data", specimens=["Microtubules"], cells=3, n_levels=2, size=size,
                         seed=0, progress=False)
        make_patches(Path(tmp) / "data", Path(tmp) / "patches", patch_size=patch, n_train=n_patches, n_val=8,
                     val_cells="1", progress=False)
        print(f"data: prepared {n_patches} patch pairs of {patch} px in {time.perf_counter() - t0:.1f} s")
        strategy = tf.distribute.get_strategy()
        for task in TASKS:
            source = FolderSource(Path(tmp) / "patches", "training", task)
            cfg = TrainConfig.dfcan(DFCANConfig.dfcan(source.channels, source.scale), patch_size=patch,
                                    batch_size=batch)
            it = iter(train_dataset(source, cfg, 0, strategy))
            for _ in range(4):  # warm-up
                next(it)
            steps = (n_patches // batch) * (1 if quick else 2)
            t0 = time.perf_counter()
            for _ in range(steps):
                x, _ = next(it)
            rate = steps * batch / (time.perf_counter() - t0)
            results[task] = rate
            print(f"data: {task:4s} from disk {rate:8.0f} patches/s "
                  f"(input {tuple(x.shape[2:])}, batch {batch}; {rate / sgemm:.2f} patches/s per sgemm GFLOP/s)")
    gflop = training_flops(DFCANConfig.dfcan(9, 2), patch, patch, 1) / 1e9  # one SIM patch
    need = sgemm / gflop
    results["train_bound"] = need
    print(f"data: DFCAN training at {patch} px consumes at most ~{need:.2f} patches/s here "
          f"({gflop:.0f} GFLOP per patch at {sgemm:.0f} GFLOP/s); "
          f"the slowest pipeline is {min(v for k, v in results.items() if k != 'train_bound') / need:.0f}× faster")
    return results
