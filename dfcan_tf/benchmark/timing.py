"""``dfcan benchmark``: speed figures measured on this machine, never asserted by timers.

Every figure is printed next to the machine's measured single-precision
matrix-multiply rate (:func:`sgemm_gflops`), so results from different machines
compare as fractions of what the hardware does on the best-case kernel.

Kinds: ``sgemm`` (the reference rate), ``data`` (input pipeline, patches/s;
:func:`dfcan_tf.data.pipeline.benchmark_data`), ``train`` (steps/s at the paper's
size; :func:`dfcan_tf.training.loop.benchmark_train`), ``predict`` (tiled-prediction
memory, :func:`dfcan_tf.inference.predict.benchmark_predict`, and per-backend inference
speed, :func:`dfcan_tf.export.run.benchmark_backends`), ``all``.
"""

from __future__ import annotations

import argparse
import importlib
import os
import time

import numpy as np

from dfcan_tf.errors import DfcanError

KINDS: dict[str, list[tuple[str, str]]] = {
    "data": [("dfcan_tf.data.pipeline", "benchmark_data")],
    "train": [("dfcan_tf.training.loop", "benchmark_train")],
    "predict": [("dfcan_tf.inference.predict", "benchmark_predict"), ("dfcan_tf.export.run", "benchmark_backends")],
}


def sgemm_gflops(n: int = 2048, repeats: int = 5, threads: int | None = None) -> float:
    """Measure the best float32 matrix-multiply rate (GFLOP/s) over ``repeats`` runs.

    Uses TensorFlow's ``MatMul`` (the kernel its convolutions are built on) on
    ``n × n`` matrices; ``threads`` limits intra-op threads when given (must be
    called before TensorFlow runs anything else in the process).

    Raises
    ------
    DfcanError
        ``n`` or ``repeats`` below 1, or ``threads`` given and below 1 (checked
        before TensorFlow is configured: a negative thread count aborts it).
    """
    check_positive(n=n, repeats=repeats)
    if threads is not None:
        check_positive(threads=threads)
    import tensorflow as tf

    if threads:
        try:
            tf.config.threading.set_intra_op_parallelism_threads(threads)
            tf.config.threading.set_inter_op_parallelism_threads(1)
        except RuntimeError:
            pass  # already initialised: use whatever is set
    rng = np.random.default_rng(0)
    a = tf.constant(rng.standard_normal((n, n), dtype=np.float32))
    b = tf.constant(rng.standard_normal((n, n), dtype=np.float32))
    matmul = tf.function(lambda x, y: tf.linalg.matmul(x, y))
    matmul(a, b).numpy()
    best = float("inf")
    for _ in range(repeats):
        t0 = time.perf_counter()
        matmul(a, b).numpy()
        best = min(best, time.perf_counter() - t0)
    return 2.0 * n**3 / best / 1e9


def check_positive(**values: object) -> None:
    """Raise :class:`DfcanError` unless every value is an integer ≥ 1 (named like its flag in the message)."""
    for name, value in values.items():
        if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 1:
            raise DfcanError(f"--{name.replace('_', '-')} must be a whole number ≥ 1. Received: {value!r}")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("kind", choices=["sgemm", *KINDS, "all"], help="what to measure")
    parser.add_argument("--threads", type=int, default=os.cpu_count() or 1, help="CPU threads (default: all cores)")
    parser.add_argument("--quick", action="store_true", help="fewer repeats and smaller sizes (smoke run)")


def run_from_args(args: argparse.Namespace) -> int:
    check_positive(threads=args.threads)
    rate = sgemm_gflops(threads=args.threads, repeats=2 if args.quick else 5)
    print(f"sgemm: {rate:.1f} GFLOP/s (float32, {args.threads} threads, TensorFlow MatMul 2048x2048)")
    kinds = list(KINDS) if args.kind == "all" else ([] if args.kind == "sgemm" else [args.kind])
    for kind in kinds:
        for module_name, func_name in KINDS[kind]:
            func = getattr(importlib.import_module(module_name), func_name)
            func(args, sgemm=rate)
    return 0
