"""``dfcan benchmark predict`` (first half): peak memory and time of a large tiled prediction, speed per network.

:func:`measure_tiled_prediction` predicts a random image tiled with a freshly
built network of any registered architecture and samples the process memory
while it runs; :func:`benchmark_predict` prints it for the paper's DFCAN on a
2048² input, or, with ``--architecture NAME|all``, the whole-image speed of
each named network at 502² (:func:`benchmark_architectures`; the per-backend speeds are
:func:`dfcan_tf.benchmark.backends.benchmark_backends`). FLOPs come from the one
counter, :func:`dfcan_tf.benchmark.flops.count_flops`. Measured figures are in
``docs/README.md``.
"""

from __future__ import annotations

import argparse
import os
import time
from typing import Any

import numpy as np

from dfcan_tf.benchmark.flops import count_flops
from dfcan_tf.inference.predict import DEFAULT_TILE_SIZE, predict_image, predictor
from dfcan_tf.inference.tiling import tile_specs
from dfcan_tf.nets import registry

PEAK_MEMORY_2048_MB = 1500  # stated bound of dfcan benchmark predict for the paper's DFCAN (2048² input, 512² tiles)

ARCHITECTURE_SIDE = 502  # the paper's 502² test images
QUICK_SIDE = 48

__all__ = ["ARCHITECTURE_SIDE", "PEAK_MEMORY_2048_MB", "benchmark_architectures", "benchmark_predict",
           "measure_tiled_prediction", "prediction_gflop"]


def _rss_mb() -> float:
    """Resident memory of this process in MB (Linux ``/proc/self/statm``)."""
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20


def prediction_gflop(config: Any, side: int, tile: int, n_tiles: int) -> float:
    """GFLOP of one ``side``² prediction: per tile when tiled, else of the whole image (convolutions and matmuls)."""
    if n_tiles > 1:
        return n_tiles * count_flops(config, tile, tile)["total"] / 1e9
    return count_flops(config, side, side)["total"] / 1e9


def measure_tiled_prediction(config: Any, side: int, tile: int, overlap: int | None = None) -> dict[str, Any]:
    """Predict a random ``side``² image tiled with a freshly built ``config`` network; measure memory and time.

    Peak memory is the process RSS, sampled every 5 ms while tracing and
    predicting, minus the RSS once the model is built (measured before the
    first network call: TensorFlow's allocator keeps the first tile's buffers,
    so a later baseline would hide them; tracing is thus included, a
    conservative bound, but excluded from the time). ``overlap`` defaults to
    the network's measured receptive field (:func:`dfcan_tf.nets.registry.default_overlap`).

    Returns
    -------
    dict
        ``seconds``, ``peak_mb`` (increase), ``base_mb``, ``maxrss_mb``
        (lifetime maximum), ``n_tiles``, ``overlap``, ``output_shape`` and ``gflop``.
    """
    import resource
    import threading

    import keras

    overlap = registry.default_overlap(config) if overlap is None else int(overlap)
    keras.utils.set_random_seed(0)
    model = registry.build(config)
    image = np.random.default_rng(0).random((side, side), dtype=np.float32)
    n_tiles = len(tile_specs((side, side), tile, min(overlap, tile // 2), scale=config.scale))
    base = _rss_mb()
    run, _ = predictor(model)
    peak = [base]
    stop = threading.Event()

    def sample() -> None:
        while not stop.is_set():
            peak[0] = max(peak[0], _rss_mb())
            stop.wait(0.005)

    thread = threading.Thread(target=sample, daemon=True)
    thread.start()
    try:
        run(np.zeros((1, min(tile, side), min(tile, side), config.input_channels), np.float32))  # trace once
        t0 = time.perf_counter()
        out = predict_image(model, image, scale=config.scale, tile_size=tile, overlap=overlap, progress=False)
        seconds = time.perf_counter() - t0
    finally:
        stop.set()
        thread.join()
    peak[0] = max(peak[0], _rss_mb())
    maxrss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0
    gflop = prediction_gflop(config, side, tile, n_tiles)  # after the memory measurement: tracing costs memory
    return {
        "seconds": seconds,
        "peak_mb": peak[0] - base,
        "base_mb": base,
        "maxrss_mb": maxrss,
        "n_tiles": n_tiles,
        "overlap": overlap,
        "output_shape": out.shape,
        "gflop": gflop,
    }


def benchmark_architectures(names: list[str], *, side: int = ARCHITECTURE_SIDE, sgemm: float,
                            repeats: int = 2, channels: int = 1, scale: int = 2) -> list[dict[str, Any]]:
    """Whole-image forward-pass time of each architecture in ``names`` at ``side``², against ``sgemm``.

    Each network is built at its paper's size (seeded random weights: weights
    do not change the cost), run once through one ``tf.function`` to trace,
    then timed as the best of ``repeats`` calls on a random ``side``² image
    (``channels`` input channels, ×``scale``). FLOPs are
    :func:`~dfcan_tf.benchmark.flops.count_flops` of the same configuration.

    Returns
    -------
    list of dict
        Per architecture: ``architecture``, ``size``, ``params``, ``seconds``,
        ``gflop``, ``gflops`` (= ``gflop / seconds``) and ``fraction``
        (= ``gflops / sgemm``).
    """
    import keras

    from dfcan_tf.inference.backends import compiled

    rows = []
    print(f"{'architecture':<17}{'size':>6}{'seconds':>10}{'GFLOP':>10}{'GFLOP/s':>9}{'/sgemm':>8}{'params':>13}")
    for name in names:
        cfg = registry.make_config(name, channels, scale)
        keras.utils.set_random_seed(0)
        model = registry.build(cfg)
        run = compiled(model, channels)
        x = np.random.default_rng(0).random((1, side, side, channels), dtype=np.float32)
        run(x)  # trace and allocate
        seconds = float("inf")
        for _ in range(max(1, repeats)):
            t0 = time.perf_counter()
            run(x)
            seconds = min(seconds, time.perf_counter() - t0)
        gflop = count_flops(cfg, side, side)["total"] / 1e9
        rate = gflop / seconds
        row = {"architecture": name, "size": side, "params": int(model.count_params()), "seconds": seconds,
               "gflop": gflop, "gflops": rate, "fraction": rate / sgemm}
        rows.append(row)
        print(f"{name:<17}{side:>6}{seconds:>10.3f}{gflop:>10.2f}{rate:>9.1f}{rate / sgemm:>8.2f}{row['params']:>13,}",
              flush=True)
        del model, run
        keras.backend.clear_session()
    return rows


def benchmark_predict(args: argparse.Namespace, sgemm: float) -> list[dict[str, Any]] | None:
    """``dfcan benchmark predict``: peak memory and time of a 2048² → 4096² tiled prediction.

    Uses the paper's DFCAN (randomly initialised; weights do not change the
    cost), 512² tiles and the default overlap (:func:`measure_tiled_prediction`);
    the stated bound is :data:`PEAK_MEMORY_2048_MB`. ``args.quick``: a 512²
    input and a smaller network (width 32, 2 × 2 blocks), tiled at 256.
    ``args.architecture`` (a registered name or ``"all"``): instead, the
    whole-image speed of those networks at 502² (``args.quick``: 48²), rows
    returned (:func:`benchmark_architectures`).
    """
    arch = getattr(args, "architecture", None)
    if arch:
        names = registry.names() if arch == "all" else [registry.get(arch).name]
        side = QUICK_SIDE if args.quick else ARCHITECTURE_SIDE
        print(f"predict per architecture: whole {side}x{side} image, batch 1, best of "
              f"{1 if args.quick else 2} after a warm-up; FLOPs: convolutions and matmuls (2 per multiply-add); "
              f"sgemm {sgemm:.1f} GFLOP/s")
        return benchmark_architectures(names, side=side, sgemm=sgemm, repeats=1 if args.quick else 2)
    if args.quick:
        cfg, side, tile = registry.make_config("dfcan", 1, 2, width=32, n_groups=2, n_blocks=2), 512, 256
    else:
        cfg, side, tile = registry.make_config("dfcan", 1, 2), 2048, DEFAULT_TILE_SIZE
    m = measure_tiled_prediction(cfg, side, tile)
    rate = m["gflop"] / m["seconds"]
    bound = "" if args.quick else f" (stated bound {PEAK_MEMORY_2048_MB} MB)"
    print(
        f"predict: {side}x{side} -> {m['output_shape'][0]}x{m['output_shape'][1]} tiled ({m['n_tiles']} tiles of "
        f"{tile}, overlap {m['overlap']}), {registry.describe(cfg)}: "
        f"{m['seconds']:.1f} s, peak memory +{m['peak_mb']:.0f} MB{bound} over the built model's "
        f"{m['base_mb']:.0f} MB (process max RSS {m['maxrss_mb']:.0f} MB); "
        f"~{m['gflop']:.0f} GFLOP, {rate:.1f} GFLOP/s = {rate / sgemm:.0%} of sgemm"
    )
