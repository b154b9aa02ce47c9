"""The reference rate of ``dfcan benchmark``: the machine's best float32 matrix-multiply speed.

Every figure ``dfcan benchmark`` prints is put next to :func:`sgemm_gflops`, so
results from different machines compare as fractions of what the hardware does
on the best-case kernel (``docs/README.md`` lists measured figures). The
command itself is :mod:`dfcan_tf.cli.benchmark`; the measurements live in
:mod:`dfcan_tf.benchmark.data`, :mod:`dfcan_tf.benchmark.train`,
:mod:`dfcan_tf.benchmark.predict` and :mod:`dfcan_tf.benchmark.backends`.
"""

from __future__ import annotations

import time

import numpy as np

from dfcan_tf.errors import DfcanError


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
