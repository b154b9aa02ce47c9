"""``dfcan benchmark``: speed figures measured on this machine, never asserted by timers.

Every figure is printed next to the machine's measured single-precision
matrix-multiply rate (:func:`dfcan_tf.benchmark.timing.sgemm_gflops`), so
results from different machines compare as fractions of what the hardware does
on the best-case kernel.

Kinds: ``sgemm`` (the reference rate), ``data`` (input pipeline, patches/s;
:func:`dfcan_tf.benchmark.data.benchmark_data`), ``train`` (steps/s at the
paper's size; :func:`dfcan_tf.benchmark.train.benchmark_train`), ``predict``
(tiled-prediction memory, :func:`dfcan_tf.benchmark.predict.benchmark_predict`,
and per-backend inference speed,
:func:`dfcan_tf.benchmark.backends.benchmark_backends`), ``all``.
"""

from __future__ import annotations

import argparse
import importlib
import os

# kind -> the (module, function) pairs it runs, each called as function(args, sgemm_rate).
KINDS: dict[str, list[tuple[str, str]]] = {
    "data": [("dfcan_tf.benchmark.data", "benchmark_data")],
    "train": [("dfcan_tf.benchmark.train", "benchmark_train")],
    "predict": [("dfcan_tf.benchmark.predict", "benchmark_predict"),
                ("dfcan_tf.benchmark.backends", "benchmark_backends")],
}


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Register the ``dfcan benchmark`` flags on ``parser``."""
    parser.add_argument("kind", choices=["sgemm", *KINDS, "all"], help="what to measure")
    parser.add_argument("--threads", type=int, default=os.cpu_count() or 1, help="CPU threads (default: all cores)")
    parser.add_argument("--quick", action="store_true", help="fewer repeats and smaller sizes (smoke run)")
    parser.add_argument("--reference", action="store_true",
                        help="train: also time the step traced with plain autodiff of the reference formulas "
                             "(what the hand-written gradients save)")
    parser.add_argument("--architecture", metavar="NAME", default=None,
                        help="predict: seconds and GFLOP/s of this registered network (or 'all') on a whole "
                             "502x502 image instead of the DFCAN memory and backend figures")


def run_from_args(args: argparse.Namespace) -> int:
    """Run ``dfcan benchmark`` with parsed ``args``; return the exit status."""
    from dfcan_tf.benchmark.timing import check_positive, sgemm_gflops

    check_positive(threads=args.threads)
    if getattr(args, "architecture", None):
        from dfcan_tf.errors import DfcanError
        from dfcan_tf.nets import registry

        if args.kind not in ("predict", "all"):
            raise DfcanError(f"--architecture applies to `dfcan benchmark predict` (or all), not {args.kind}")
        if args.architecture != "all":
            registry.get(args.architecture)  # an unknown name fails before anything is measured
    rate = sgemm_gflops(threads=args.threads, repeats=2 if args.quick else 5)
    print(f"sgemm: {rate:.1f} GFLOP/s (float32, {args.threads} threads, TensorFlow MatMul 2048x2048)")
    kinds = list(KINDS) if args.kind == "all" else ([] if args.kind == "sgemm" else [args.kind])
    for kind in kinds:
        for module_name, func_name in KINDS[kind]:
            func = getattr(importlib.import_module(module_name), func_name)
            func(args, rate)
    return 0
