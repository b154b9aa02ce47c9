"""Inference speed per backend (``dfcan benchmark predict``): Keras, onnxruntime and LiteRT on the same weights.

Figures are printed next to the machine's measured matrix-multiply rate
(:func:`dfcan_tf.benchmark.timing.sgemm_gflops`); measured numbers are in
``export/README.md`` (Speed), never asserted by tests.
"""

from __future__ import annotations

import argparse
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np


def _time(fn: Callable[[], Any], repeats: int) -> float:
    """Best of ``repeats`` timed calls after a warm-up (the least disturbed by other load on the machine)."""
    fn()  # warm-up: graph building, allocation, LiteRT planning
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return float(min(times))


def _sgemm_now(threads: int) -> float:
    from dfcan_tf.benchmark.timing import sgemm_gflops

    return sgemm_gflops(repeats=2, threads=threads)


def benchmark_backends(args: argparse.Namespace, sgemm: float) -> list[dict[str, Any]]:
    """Time Keras, onnxruntime and LiteRT on the same weights and inputs; print seconds and sgemm fractions.

    Full-size DFCAN (64 channels, 4×4 blocks, ×2, one input channel, seeded
    random weights) at 128², 256² and 502² (``args.quick``: a width-16 1×2
    DFCAN, 32² spectrum, at 64² and 96²), batch 1, ``args.threads`` threads,
    best of repeats after a warm-up, on a simulated microscopy image. Rows:

    - ``keras fft``: the network as trained (``tf.signal.fft2d`` spectrum);
    - ``keras``, ``onnxruntime``, ``litert``: the exported (sampled-DFT) network.

    The FLOP count is :func:`dfcan_tf.benchmark.flops.count_flops` of the
    sampled-DFT network (convolutions + DFT matmuls as implemented; the FFT
    row is given the same count for comparison); GFLOP/s is that count over
    the time and ``/sgemm`` its ratio to the matrix-multiply rate ``sgemm``.
    With ``args.architecture`` set (per-network speeds,
    :func:`dfcan_tf.benchmark.predict.benchmark_architectures`) nothing is measured here.
    """
    if getattr(args, "architecture", None):
        print("predict backends: measured for DFCAN only; run without --architecture for them")
        return []
    import keras

    from dfcan_tf.benchmark.flops import count_flops
    from dfcan_tf.export.onnx import write_onnx
    from dfcan_tf.export.tflite import write_tflite
    from dfcan_tf.export.verify import keras_reference, open_run, simulated_image
    from dfcan_tf.inference.backends import compiled, onnx_runner, tflite_runner
    from dfcan_tf.nets import registry
    from dfcan_tf.nets.dfcan import DFCANConfig
    from dfcan_tf.runs import write_run

    threads = int(getattr(args, "threads", 2) or 2)
    quick = bool(getattr(args, "quick", False))
    if quick:
        cfg = DFCANConfig.dfcan(1, 2, width=16, n_groups=1, n_blocks=2, size_psc=32, reduction=4)
        sizes, repeats = (64, 96), 1
    else:
        cfg, sizes, repeats = DFCANConfig.dfcan(1, 2), (128, 256, 502), 2
    counted = cfg.replace(spectrum="dft")  # the FLOPs as the exported graph computes them
    keras.utils.set_random_seed(0)
    rows = []
    with tempfile.TemporaryDirectory(prefix="dfcan-bench-") as tmp:
        tmp = Path(tmp)
        run_dir = tmp / "run"
        write_run(run_dir, registry.build(cfg), cfg, which=("best",))
        src = open_run(run_dir)
        verify_sizes = (32, 45)
        print("exporting (ONNX, TFLite)...", flush=True)
        onnx_path = write_onnx(src, tmp / "m.onnx", sizes=verify_sizes).path
        tflite_path = write_tflite(src, tmp / "m.tflite", sizes=verify_sizes).path
        reference = keras_reference(src.reference)
        runners = {
            "keras fft": reference,
            "keras": compiled(src.portable, 1),
            "onnxruntime": onnx_runner(onnx_path, threads),
            "litert": tflite_runner(tflite_path, threads),
        }
        print(f"predict backends: {cfg.architecture} width {cfg.width}, {cfg.n_groups}x{cfg.n_blocks} blocks, "
              f"x{cfg.scale}, batch 1, {threads} threads, best of {repeats}; sgemm {sgemm:.1f} GFLOP/s")
        print("FLOPs: convolutions + DFT matmuls as implemented (2 per multiply-add); element-wise work not counted")
        print(f"{'backend':<20}{'size':>6}{'seconds':>10}{'GFLOP':>9}{'GFLOP/s':>9}{'/sgemm':>8}{'max|diff|':>11}")
        for size in sizes:
            x = simulated_image(size, 1, seed=size)[None]
            want = reference(x)
            flops = count_flops(counted, size, size)["total"]
            # Other load on the machine slows sgemm and the networks alike: take the best rate
            # seen so far as the machine's, so fractions are never flattered by a slow sgemm.
            sgemm = max(sgemm, _sgemm_now(threads))
            for name, fn in runners.items():
                seconds = _time(lambda fn=fn, x=x: fn(x), repeats)
                diff = float(np.max(np.abs(fn(x) - want)))
                rate = flops / seconds / 1e9
                rows.append({"backend": name, "size": size, "seconds": seconds, "gflop": flops / 1e9,
                             "gflops": rate, "fraction": rate / sgemm, "max_abs_diff": diff})
                print(f"{name:<20}{size:>6}{seconds:>10.3f}{flops / 1e9:>9.1f}{rate:>9.1f}{rate / sgemm:>8.2f}"
                      f"{diff:>11.1e}", flush=True)
    best = min((r for r in rows if r["size"] == sizes[-1]), key=lambda r: r["seconds"])
    for r in rows:  # restate every fraction against the best sgemm rate measured during the run
        r["fraction"] = r["gflops"] / sgemm
    print(f"fastest at {sizes[-1]}x{sizes[-1]}: {best['backend']} {best['seconds']:.3g} s, "
          f"{best['fraction']:.2f} of the best sgemm rate measured ({sgemm:.1f} GFLOP/s)")
    return rows
