"""``dfcan benchmark predict`` (first half): memory, time and per-pixel rates of tiled prediction, speed per network.

:func:`measure_tiled_prediction` predicts a random image tiled, and whole
tile-sized images, with a freshly built network of any registered architecture
and samples the process memory while it runs (per-pixel rates:
:func:`prediction_rates`; bound: :func:`tiled_memory_bound_mb`);
:func:`benchmark_predict` prints them for the paper's DFCAN on a 2048² input,
or, with ``--architecture NAME|all``, the whole-image speed of each named
network at 502² (:func:`benchmark_architectures`; the per-backend speeds are
:func:`dfcan_tf.benchmark.backends.benchmark_backends`). FLOPs come from the one
counter, :func:`dfcan_tf.benchmark.flops.count_flops`. Measured figures are in
``docs/architecture.md#tiling-speed`` and the top-level ``README.md``.
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
# Float32 feature maps of the network's width, at tile resolution, that one tile of a batch may hold at once
# (measured: 810-890 MB per 512² tile of the paper's DFCAN = 12.7-13.9 maps); see tiled_memory_bound_mb.
ACTIVATION_MAPS = 16

ARCHITECTURE_SIDE = 502  # the paper's 502² test images
QUICK_SIDE = 48

__all__ = ["ACTIVATION_MAPS", "ARCHITECTURE_SIDE", "PEAK_MEMORY_2048_MB", "benchmark_architectures",
           "benchmark_predict", "measure_tiled_prediction", "predict_report", "prediction_gflop", "prediction_rates",
           "tiled_memory_bound_mb"]


def _rss_mb() -> float:
    """Resident memory of this process in MB (Linux ``/proc/self/statm``)."""
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20


def prediction_gflop(config: Any, side: int, tile: int, n_tiles: int) -> float:
    """GFLOP of one ``side``² prediction: per tile when tiled, else of the whole image (convolutions and matmuls)."""
    if n_tiles > 1:
        return n_tiles * count_flops(config, tile, tile)["total"] / 1e9
    return count_flops(config, side, side)["total"] / 1e9


def tiled_memory_bound_mb(config: Any, side: int, tile: int, batch_size: int) -> float:
    """The documented bound on the memory a tiled prediction adds to the built model, in MB.

    Two parts (``docs/architecture.md#tiling-speed``): the image-sized arrays
    of :func:`~dfcan_tf.inference.predict.predict_image` (input: float64 for
    normalisation and its float32 copy; output: the stitched float32 image,
    float64 normalisation and the float32 result), and per tile of a batch
    :data:`ACTIVATION_MAPS` float32 feature maps of the network's width at tile
    resolution (graph execution frees each intermediate once used; measured
    810–890 MB per 512² tile of the paper's DFCAN, 16 maps = 1024 MB). The
    second part scales with tile size × batch, never with the image.
    """
    channels = int(getattr(config, "input_channels", 1))
    scale = int(getattr(config, "scale", 1))
    width = int(getattr(config, "width", 64))
    t = min(int(tile), int(side))
    image = side * side * channels * (8 + 4) + (scale * side) ** 2 * (4 + 8 + 8 + 4)
    tiles = int(batch_size) * t * t * width * 4 * ACTIVATION_MAPS
    return (image + tiles) / 2**20


def _timed(fn: Any) -> tuple[float, float, Any]:
    """``(wall seconds, process CPU seconds, result)`` of ``fn()``."""
    t0, c0 = time.perf_counter(), time.process_time()
    out = fn()
    return time.perf_counter() - t0, time.process_time() - c0, out


def measure_tiled_prediction(config: Any, side: int, tile: int, overlap: int | None = None, *,
                             batch_size: int | None = None, whole_repeats: int = 2) -> dict[str, Any]:
    """Predict a random ``side``² image tiled, and whole ``tile``² images, with one freshly built network.

    The network is ``config`` built with seeded random weights, with the
    sampled-DFT spectrum when it has Fourier attention (as ``dfcan predict``
    runs it). Both go through :func:`~dfcan_tf.inference.predict.predict_image`
    (normalisation included): the whole-image rate is the median of
    ``whole_repeats`` calls on a ``tile``² crop, half before and half after the
    tiled run so that a change of machine load hits both; wall and process CPU
    time are both kept (the CPU time is less sensitive to other processes).
    Every graph is traced before timing.

    Peak memory is the process RSS, sampled every 5 ms while tracing and
    predicting, minus the RSS once the model is built (measured before the
    first network call: TensorFlow's allocator keeps the first tile's buffers,
    so a later baseline would hide them; tracing is thus included, a
    conservative bound). ``overlap`` defaults to the network's measured
    receptive field (:func:`dfcan_tf.nets.registry.default_overlap`).

    Returns
    -------
    dict
        ``seconds`` and ``cpu_seconds`` (tiled run), ``whole_seconds`` and
        ``whole_cpu_seconds`` (median per ``tile``² image), ``peak_mb``
        (increase), ``bound_mb`` (:func:`tiled_memory_bound_mb`), ``base_mb``,
        ``maxrss_mb`` (lifetime maximum), ``n_tiles``, ``tile``, ``side``,
        ``batch_size``, ``overlap``, ``output_shape``, ``gflop``, ``traces``
        (graphs traced), and the rates in input Mpixel/s (:func:`prediction_rates`).
    """
    import resource
    import threading

    import keras

    from dfcan_tf.inference.tiling import default_batch_size

    if getattr(config, "spectrum", None) is not None:
        config = config.replace(spectrum="dft")
    overlap = registry.default_overlap(config) if overlap is None else int(overlap)
    keras.utils.set_random_seed(0)
    model = registry.build(config)
    image = np.random.default_rng(0).random((side, side), dtype=np.float32)
    t = min(tile, side)
    crop = np.ascontiguousarray(image[:t, :t])
    n_tiles = len(tile_specs((side, side), tile, min(overlap, tile // 2), scale=config.scale))
    batch = default_batch_size((t, t), n_tiles) if batch_size is None else max(1, min(int(batch_size), n_tiles))
    base = _rss_mb()
    run, _ = predictor(model)
    peak = [base]
    stop = threading.Event()

    def sample() -> None:
        while not stop.is_set():
            peak[0] = max(peak[0], _rss_mb())
            stop.wait(0.005)

    def whole() -> tuple[float, float]:
        wall, cpu, _ = _timed(lambda: predict_image(model, crop, scale=config.scale, tile_size=0, progress=False))
        return wall, cpu

    thread = threading.Thread(target=sample, daemon=True)
    thread.start()
    try:
        c = config.input_channels
        for n in sorted({1, batch, n_tiles % batch} - {0}):  # trace every shape the runs below use
            run(np.zeros((n, t, t, c), np.float32))
        whole_times = [whole() for _ in range(max(1, whole_repeats) // 2)]
        seconds, cpu_seconds, out = _timed(lambda: predict_image(
            model, image, scale=config.scale, tile_size=tile, overlap=overlap, batch_size=batch, progress=False))
        whole_times += [whole() for _ in range(max(1, whole_repeats) - len(whole_times))]
    finally:
        stop.set()
        thread.join()
    peak[0] = max(peak[0], _rss_mb())
    maxrss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0
    gflop = prediction_gflop(config, side, tile, n_tiles)  # after the memory measurement: tracing costs memory
    m = {
        "seconds": seconds,
        "cpu_seconds": cpu_seconds,
        "whole_seconds": float(np.median([w for w, _ in whole_times])),
        "whole_cpu_seconds": float(np.median([p for _, p in whole_times])),
        "whole_repeats": len(whole_times),
        "peak_mb": peak[0] - base,
        "bound_mb": tiled_memory_bound_mb(config, side, tile, batch),
        "base_mb": base,
        "maxrss_mb": maxrss,
        "n_tiles": n_tiles,
        "tile": t,
        "side": side,
        "batch_size": batch,
        "overlap": overlap,
        "output_shape": out.shape,
        "gflop": gflop,
        "traces": getattr(run, "traces", None),
    }
    m.update(prediction_rates(m))
    return m


def prediction_rates(m: dict[str, Any]) -> dict[str, float]:
    """Input Mpixel/s of whole-image and tiled prediction, and their ratios, by wall and by CPU time.

    From ``m`` (:func:`measure_tiled_prediction`'s timings): ``whole_rate``
    (``tile``² per whole-image call), ``tiled_rate`` (per *computed* tile
    pixel: ``n_tiles``·``tile``²), ``image_rate`` (per image pixel:
    ``side``²), ``tiled_ratio`` = tiled / whole and ``image_ratio`` = image /
    whole; the same with the ``cpu_`` prefix for process CPU time. The two
    ratios differ by the overlap redundancy ``side² / (n_tiles·tile²)``.
    """
    computed = m["n_tiles"] * m["tile"] ** 2 / 1e6
    pixels = m["side"] ** 2 / 1e6
    whole = m["tile"] ** 2 / 1e6
    rates = {}
    for prefix, tiled_s, whole_s in (("", m["seconds"], m["whole_seconds"]),
                                     ("cpu_", m["cpu_seconds"], m["whole_cpu_seconds"])):
        w = whole / whole_s
        rates.update({f"{prefix}whole_rate": w, f"{prefix}tiled_rate": computed / tiled_s,
                      f"{prefix}image_rate": pixels / tiled_s, f"{prefix}tiled_ratio": computed / tiled_s / w,
                      f"{prefix}image_ratio": pixels / tiled_s / w})
    return rates


def predict_report(m: dict[str, Any], sgemm: float, config: Any, *, stated_bound: bool = False) -> list[str]:
    """The lines ``dfcan benchmark predict`` prints for one :func:`measure_tiled_prediction` result."""
    rate = m["gflop"] / m["seconds"]
    side, tile = m["side"], m["tile"]
    bound = f" (stated bound {PEAK_MEMORY_2048_MB} MB)" if stated_bound else ""
    return [
        f"predict: {side}x{side} -> {m['output_shape'][0]}x{m['output_shape'][1]} tiled ({m['n_tiles']} tiles of "
        f"{tile}, overlap {m['overlap']}, batch {m['batch_size']}), {registry.describe(config)}: "
        f"{m['seconds']:.1f} s, peak memory +{m['peak_mb']:.0f} MB{bound} over the built model's "
        f"{m['base_mb']:.0f} MB (process max RSS {m['maxrss_mb']:.0f} MB); "
        f"~{m['gflop']:.0f} GFLOP, {rate:.1f} GFLOP/s = {rate / sgemm:.0%} of sgemm",
        f"predict rates, input Mpixel/s (wall | process CPU, the one other processes barely move): "
        f"whole {tile}x{tile} images "
        f"{m['whole_rate']:.4f} | {m['cpu_whole_rate']:.4f} (median of {m['whole_repeats']}); "
        f"tiled {side}x{side} per computed tile pixel {m['tiled_rate']:.4f} | {m['cpu_tiled_rate']:.4f}, "
        f"per image pixel {m['image_rate']:.4f} | {m['cpu_image_rate']:.4f}",
        f"predict tiled/whole: per computed tile pixel {m['tiled_ratio']:.2f} | {m['cpu_tiled_ratio']:.2f}, "
        f"per image pixel {m['image_ratio']:.2f} | {m['cpu_image_ratio']:.2f} (overlap: {m['n_tiles']} x {tile}^2 "
        f"computed for {side}^2 = {m['n_tiles'] * tile ** 2 / side ** 2:.2f}x); "
        f"{m['traces']} graph(s) traced",
        f"predict memory: peak +{m['peak_mb']:.0f} MB, documented bound {m['bound_mb']:.0f} MB for tile {tile}^2 x "
        f"batch {m['batch_size']} plus the image arrays ({'within' if m['peak_mb'] <= m['bound_mb'] else 'OVER'}; "
        "docs/architecture.md#tiling-speed)",
    ]


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
    """``dfcan benchmark predict``: peak memory, time and per-pixel rates of a 2048² → 4096² tiled prediction.

    Uses the paper's DFCAN (randomly initialised; weights do not change the
    cost; sampled-DFT spectrum, as ``dfcan predict``), 512² tiles, the default
    overlap and batch (:func:`measure_tiled_prediction`), and prints, measured
    in the same run, the whole-image rate on 512² images next to the tiled
    rate per computed tile pixel and per image pixel, their ratios, and the
    peak memory against :func:`tiled_memory_bound_mb` (:func:`predict_report`);
    the stated bound is :data:`PEAK_MEMORY_2048_MB`. Returns ``[measurement]``. ``args.quick``: a 512²
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
    m = measure_tiled_prediction(cfg, side, tile, batch_size=getattr(args, "batch_size", None),
                                 whole_repeats=2 if args.quick else 4)
    for line in predict_report(m, sgemm, cfg.replace(spectrum="dft"), stated_bound=not args.quick):
        print(line, flush=True)
    return [m]
