"""Super-resolve whole acquisitions with a run folder: ``dfcan predict`` (:mod:`dfcan_tf.cli.predict`).

:func:`predict_image` runs a network on one image (SISR) or one raw SIM stack,
whole or tiled; :func:`dfcan_tf.inference.files.predict_files` does it for
files, folders and globs of TIFF/MRC and writes 16-bit (or float32) ImageJ
TIFFs named after the inputs.
Any registered architecture works: the run's configuration comes from
:func:`dfcan_tf.runs.load_run` (or its ``config.json`` for the other backends).

Normalisation (``docs/data.md#normalisation``): the input is normalised as the
run's ``data.normalization`` says (:class:`dfcan_tf.data.normalize.Normalizer`;
min-max by default, with the exact range and constant images refused), the
output is min-max normalised, optional hot-pixel removal, and the result is
written as 16-bit TIFF. Runs trained with ``"divide65535"`` get their input
divided by 65535 and their output written as is.

Whole image or tiles
--------------------
By default (``tile_size=None``) an image of up to :data:`WHOLE_IMAGE_MAX_PIXELS`
input pixels (1024 × 1024) is predicted whole, a larger one in tiles of
:data:`DEFAULT_TILE_SIZE` (512); the tile, not the image, sets the memory
(``dfcan benchmark predict``; measured figures in
``docs/architecture.md#tiling-speed``).

The default overlap (``overlap=None``) is the network's *measured* receptive
field, rounded up to a multiple of 8 (:func:`dfcan_tf.nets.registry.default_overlap`;
see ``docs/architecture.md#global-attention-and-tiling``), so it covers the
zero-padding effects of the convolutions of whatever architecture the run
holds. A network known only as a callable with no configuration falls back to
:data:`FALLBACK_OVERLAP`. Global operations (DFCAN's Fourier channel attention)
make tiled output differ slightly from whole-image output whatever the overlap;
the tile/image size ratio, not the overlap, sets that difference.
"""

from __future__ import annotations

import os
import weakref
from collections.abc import Callable
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np

from dfcan_tf.data.normalize import Normalizer, minmax_scale
from dfcan_tf.errors import DfcanError
from dfcan_tf.inference.backends import BACKENDS, MAX_TRACED_SHAPES, KerasPredictor
from dfcan_tf.inference.tiling import predict_tiled
from dfcan_tf.nets import registry

DEFAULT_TILE_SIZE = 512
# Overlap used only when nothing is known about the network (a bare callable without a configuration or
# artefact): 32 px covers the 3×3-convolution reach of small and mid-sized networks; see overlap_for().
FALLBACK_OVERLAP = 32
WHOLE_IMAGE_MAX_PIXELS = 1024 * 1024
MIN_IMAGE_SIZE = 8
OUTLIER_THRESHOLD = 0.2

__all__ = [
    "DEFAULT_TILE_SIZE",
    "FALLBACK_OVERLAP",
    "MAX_TRACED_SHAPES",
    "KerasPredictor",
    "WHOLE_IMAGE_MAX_PIXELS",
    "ResolvedRun",
    "overlap_for",
    "predict_image",
    "remove_hot_pixels",
    "resolve_run",
    "config_for_artefact",
]


# --------------------------------------------------------------------------- helpers


def remove_hot_pixels(image: np.ndarray, threshold: float = OUTLIER_THRESHOLD) -> np.ndarray:
    """Replace hot pixels by the mean of their 4 neighbours (``docs/metrics.md``).

    A pixel is a hot pixel when it exceeds the mean of its 4 neighbours by more
    than ``threshold`` (on the [0, 1] normalised output), i.e. when the
    discrete Laplacian ``x - mean(up, down, left, right)`` is above it. Border
    pixels use the neighbours they have. Only isolated positive spikes are touched:
    real structures are at least as wide as the PSF, so their neighbours are
    bright too.
    """
    x = np.asarray(image, dtype=np.float32)

    def four_sum(a: np.ndarray) -> np.ndarray:
        p = np.pad(a, 1)
        return p[:-2, 1:-1] + p[2:, 1:-1] + p[1:-1, :-2] + p[1:-1, 2:]

    # Border pixels average only the neighbours that exist (2 or 3).
    neighbours = four_sum(x) / four_sum(np.ones_like(x))
    hot = (x - neighbours) > threshold
    return np.where(hot, neighbours, x).astype(np.float32)


_EXACT_MINMAX = Normalizer(mode="minmax", eps=0.0)


def _minmax(x: np.ndarray, name: str = "image", what: str = "input") -> np.ndarray:
    """Min-max normalise ``x`` to [0, 1] as float32 with the exact range, computing in float64.

    :class:`~dfcan_tf.data.normalize.Normalizer` ``("minmax", eps=0)``: no
    epsilon, so a constant ``x`` is refused instead of mapped to zeros.

    Float64 arithmetic keeps inputs of any magnitude (float32 up to ±3.4e38,
    float64 up to ±1e300) exact enough; the result is checked to be finite.

    Parameters
    ----------
    x
        Array of any real dtype.
    name
        The file (or label) for error messages.
    what
        ``"input"`` (the image) or ``"output"`` (the network's prediction).

    Raises
    ------
    DfcanError
        ``x`` holds NaN or infinite values, is constant (min = max: there is
        nothing to normalise, hence nothing to super-resolve), or normalises to
        non-finite values.
    """
    x64 = np.asarray(x, dtype=np.float64)
    scaling = _EXACT_MINMAX.scaling(x64)
    lo, hi = float(scaling.lo), float(scaling.hi)
    if not (np.isfinite(lo) and np.isfinite(hi)):
        source = "pixel values" if what == "input" else "values produced by the model"
        raise DfcanError(f"{name}: the {what} has NaN or infinite {source}; cannot normalise it")
    if hi == lo:
        if what == "input":
            raise DfcanError(f"{name}: image is constant (value {lo:g}); nothing to super-resolve")
        raise DfcanError(
            f"{name}: the model's output is constant (value {lo:g}) for a non-constant input; "
            "the model does not respond to this image (untrained or collapsed weights?)"
        )
    if np.isfinite(hi - lo):
        out = minmax_scale(x64, lo, hi, eps=0.0)
    else:  # lo and hi near ±1.8e308: their difference overflows float64, halves do not
        out = minmax_scale(x64 * 0.5, lo * 0.5, hi * 0.5, eps=0.0)
    if not np.all(np.isfinite(out)):
        raise DfcanError(
            f"{name}: min-max normalisation of the {what} gave non-finite values (range {lo:g} to {hi:g})"
        )
    return out.astype(np.float32)


def _normalize_other(image: np.ndarray, normalizer: Normalizer, name: str) -> np.ndarray:
    """Normalise an input with a non-min-max ``normalizer`` (percentile), refusing what cannot be normalised."""
    x64 = np.asarray(image, dtype=np.float64)
    if float(np.min(x64)) == float(np.max(x64)):
        raise DfcanError(f"{name}: image is constant (value {float(np.min(x64)):g}); nothing to super-resolve")
    out = normalizer.normalize(x64)
    if not np.all(np.isfinite(out)):
        raise DfcanError(f"{name}: {normalizer.mode} normalisation of the input gave non-finite values")
    return out


_PREDICTORS: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()


def predictor(model: Any) -> tuple[Callable[[np.ndarray], np.ndarray], int | None]:
    """A numpy → numpy batch function for ``model`` and its input channel count.

    Keras models run through a :class:`KerasPredictor` (one graph per input
    shape, cached per model); any other callable is returned as is.
    """
    import keras

    if isinstance(model, keras.Model):
        cached = _PREDICTORS.get(model)
        if cached is not None:
            return cached
        channels = int(model.input_shape[-1])
        run = KerasPredictor(model, channels)
        _PREDICTORS[model] = (run, channels)
        return run, channels
    if callable(model):
        return model, getattr(model, "input_channels", None)
    raise DfcanError(f"cannot predict with an object of type {type(model).__name__}; expected a keras.Model or a callable")


_MEASURED_OVERLAPS: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()


def _round_overlap(receptive_field: int) -> int:
    return int(-(-int(receptive_field) // 8) * 8)


def config_for_artefact(path: str | os.PathLike) -> Any | None:
    """The network configuration of an exported artefact, or None when nothing tells it.

    Read from the ONNX metadata (``dfcan_tf.config``, written by ``dfcan export``)
    of a ``.onnx`` file, else from the run folder the artefact sits in or next
    to (``RUN/export/model.onnx``: the folder holding ``config.json``).
    """
    path = Path(path)
    if path.suffix.lower() == ".onnx" and path.is_file():
        try:
            import json

            import onnx

            proto = onnx.load(str(path), load_external_data=False)
            for prop in proto.metadata_props:
                if prop.key == "dfcan_tf.config":
                    return registry.config_from_dict(json.loads(prop.value)["model"])
        except Exception:  # noqa: BLE001 -- no readable metadata: look for the run folder instead
            pass
    from dfcan_tf import runs

    for folder in (path, path.parent, path.parent.parent):
        if (folder / "config.json").is_file():
            try:
                return runs.read_run_config(folder)[1]
            except DfcanError:
                continue
    return None


def overlap_for(model: Any, *, config: Any = None, scale: int | None = None) -> int:
    """The default tile overlap for ``model``, in input pixels (a multiple of 8).

    In order: the measured receptive field of ``config``'s network
    (:func:`dfcan_tf.nets.registry.default_overlap`); of the configuration of
    the artefact ``model.path`` (:func:`config_for_artefact`); of ``model``
    itself when it is a Keras model (measured once per model); else
    :data:`FALLBACK_OVERLAP`.
    """
    if config is not None:
        return registry.default_overlap(config)
    path = getattr(model, "path", None)
    if path is not None:
        found = config_for_artefact(path)
        if found is not None:
            return registry.default_overlap(found)
    import keras

    if isinstance(model, keras.Model) and scale:
        cached = _MEASURED_OVERLAPS.get(model)
        if cached is None:
            channels = int(model.input_shape[-1])
            cached = _round_overlap(registry.measure_receptive_field(model, channels, int(scale)))
            _MEASURED_OVERLAPS[model] = cached
        return cached
    return FALLBACK_OVERLAP


def check_image(image: np.ndarray, name: str) -> None:
    if image.dtype.kind not in "uif":
        raise DfcanError(f"{name}: unsupported pixel type {image.dtype}; expected 8/16/32-bit integers or floats")
    if image.ndim < 2 or image.size == 0:
        raise DfcanError(f"{name}: empty image of shape {image.shape}; expected (H, W) or (frames, H, W) pixels")
    if image.shape[-1] < MIN_IMAGE_SIZE or image.shape[-2] < MIN_IMAGE_SIZE:
        raise DfcanError(
            f"{name}: image of {image.shape[-2]}x{image.shape[-1]} pixels is too small; "
            f"at least {MIN_IMAGE_SIZE}x{MIN_IMAGE_SIZE} is needed"
        )
    if image.dtype.kind == "f" and not np.all(np.isfinite(image)):
        bad = int(np.size(image) - np.count_nonzero(np.isfinite(image)))
        raise DfcanError(
            f"{name}: contains {bad} NaN or infinite pixel values (or values too large for 32-bit floats)"
        )


# --------------------------------------------------------------------------- one image


def predict_image(
    model: Any,
    image: np.ndarray,
    *,
    scale: int,
    tile_size: int | None = None,
    overlap: int | None = None,
    batch_size: int | None = None,
    normalize: bool = True,
    normalizer: Normalizer | None = None,
    remove_outliers: bool = False,
    progress: bool = False,
    name: str = "image",
    config: Any = None,
) -> np.ndarray:
    """Super-resolve one image (SISR) or one raw SIM stack.

    Parameters
    ----------
    model
        A ``keras.Model`` (input ``(None, None, C)``) or a callable mapping a
        float32 batch ``(N, h, w, C)`` to ``(N, scale·h, scale·w, 1)``.
    image
        ``(H, W)`` for a one-channel model, or ``(C, H, W)`` raw frames (the
        order in which files store them) for a C-channel model.
    scale
        The model's upsampling factor.
    tile_size
        ``None``: whole image up to :data:`WHOLE_IMAGE_MAX_PIXELS` input pixels,
        else tiles of :data:`DEFAULT_TILE_SIZE`. ``0``: always whole. A positive
        number: tiles of that side (whole if the image is not larger).
    overlap
        Minimum overlap of neighbouring tiles in input pixels; ``None`` (default):
        :func:`overlap_for` the model (the measured receptive field).
    batch_size
        Tiles per network call; ``None``: as many as fit in
        :data:`~dfcan_tf.inference.tiling.TILE_BATCH_PIXELS` input pixels (one
        512² tile, sixteen 128² ones), so memory is bounded by tile size × batch.
    normalize
        Min-max normalise the input (whole stack) and the output, as the reference
        (computed in float64, so any finite float input works). A constant input
        (all pixels equal, e.g. an all-zero frame) is refused: min-max
        normalisation is undefined for it and there is nothing to super-resolve;
        stretching it would only show the network's border and checkerboard
        response. Without ``normalize`` the input is used as given (it must fit
        float32) and the raw network output returned.
    normalizer
        The run's input normalisation when it is not min-max (``"percentile"``);
        the output is min-max normalised all the same. ``None``: min-max.
    remove_outliers
        Replace hot pixels in the output (:func:`remove_hot_pixels`).
    progress
        tqdm bar over tiles.
    name
        Used in error messages (the file name).
    config
        The network's configuration, for the default overlap (any registered
        architecture); measured only when the image is tiled.

    Returns
    -------
    numpy.ndarray
        ``(scale·H, scale·W)`` float32, in [0, 1] when ``normalize``.

    Raises
    ------
    DfcanError
        Naming ``name``: an empty image, one smaller than :data:`MIN_IMAGE_SIZE`
        pixels per side, a non-numeric pixel type, NaN or infinite pixels, a
        constant image (``"image is constant (value V); nothing to
        super-resolve"``) when ``normalize``, or a constant or non-finite network
        output.
    """
    image = np.asarray(image)
    if image.ndim == 2:
        image = image[None]
    if image.ndim != 3:
        raise DfcanError(f"{name}: expected an (H, W) image or a (frames, H, W) stack. Received: shape={image.shape}")
    check_image(image, name)
    run, channels = predictor(model)
    if channels is not None and image.shape[0] != channels:
        raise DfcanError(
            f"{name}: the model takes {channels} input frame(s) per image, the input has {image.shape[0]}"
        )
    if normalize and normalizer is not None and normalizer.mode != "minmax":
        x = np.moveaxis(_normalize_other(image, normalizer, name), 0, -1)
    elif normalize:  # in float64: float64 input beyond 3.4e38 is inf in float32, and x - min overflows near it
        x = np.moveaxis(_minmax(image, name, "input"), 0, -1)
    else:
        with np.errstate(over="ignore"):
            x = np.moveaxis(image.astype(np.float32), 0, -1)
        if not np.all(np.isfinite(x)):
            raise DfcanError(
                f"{name}: pixel values up to {float(np.max(np.abs(image))):g} do not fit 32-bit floats; "
                "rescale the image or use a run trained with min-max normalisation"
            )
    h, w = x.shape[:2]

    if tile_size is None:
        tile = 0 if h * w <= WHOLE_IMAGE_MAX_PIXELS else DEFAULT_TILE_SIZE
    else:
        tile = int(tile_size)
        if tile < 0:
            raise DfcanError(f"tile size must be 0 (whole image) or positive. Received: tile_size={tile_size}")
    if tile and tile < 2 * MIN_IMAGE_SIZE:
        raise DfcanError(f"tile size must be at least {2 * MIN_IMAGE_SIZE} pixels. Received: tile_size={tile_size}")

    def whole() -> np.ndarray:
        return np.asarray(run(x[None]))[0, ..., 0]

    def tiled(side: int) -> np.ndarray:
        ov = overlap_for(model, config=config, scale=scale) if overlap is None else int(overlap)
        return predict_tiled(run, x, scale=scale, tile_size=side, overlap=min(ov, side // 2),
                             batch_size=batch_size, progress=progress)

    if tile == 0 or tile >= max(h, w):
        try:
            out = whole()
        except Exception as exc:  # retry in tiles when a whole image does not fit (as CSBDeep does)
            if tile_size is not None or type(exc).__name__ != "ResourceExhaustedError":
                raise
            out = tiled(DEFAULT_TILE_SIZE if max(h, w) > DEFAULT_TILE_SIZE else max(h, w) // 2)
    else:
        out = tiled(tile)
    if out.shape != (scale * h, scale * w):
        raise DfcanError(f"{name}: the model produced {out.shape} from a {h}x{w} input; expected scale {scale}")
    if normalize:
        out = _minmax(out, name, "output")
    if remove_outliers:
        out = remove_hot_pixels(out)
    return out.astype(np.float32, copy=False)


# --------------------------------------------------------------------------- files


class ResolvedRun(NamedTuple):
    """A network ready to predict with, and what prediction needs to know about it."""

    model: Any
    data: dict
    scale: int
    input_channels: int
    config: Any  # the network configuration (any registered architecture)


def resolve_run(run: Any, backend: str, which: str) -> ResolvedRun:
    """Return ``(model, data config, scale, input channels, network config)`` of a run folder or a loaded Run.

    ``backend="keras"`` loads the Keras network; ``"onnx"``, ``"tflite"`` and
    ``"saved_model"`` ask :func:`dfcan_tf.inference.backends.load_backend` for a callable
    on the same run (it exports the run first when needed).
    """
    if backend not in BACKENDS:
        raise DfcanError(f"unknown backend. Received: backend={backend!r}; expected one of {BACKENDS}")
    from dfcan_tf import runs

    if isinstance(run, runs.Run):
        if backend != "keras":
            run = run.path
        else:
            return ResolvedRun(run.model, dict(run.data), run.scale, run.input_channels, run.model_config)
    if backend == "keras":
        # The sampled-DFT spectrum equals the FFT one to ~1e-6 and is faster for inference
        # (`dfcan benchmark predict`).
        loaded = runs.load_run(run, which=which, spectrum="dft")
        return ResolvedRun(loaded.model, dict(loaded.data), loaded.scale, loaded.input_channels,
                           loaded.model_config)
    doc, model_config = runs.read_run_config(run)
    # Imported here: only non-Keras backends need onnxruntime / LiteRT.
    from dfcan_tf.inference.backends import load_backend

    return ResolvedRun(load_backend(run, backend, which=which), dict(doc.get("data") or {}), model_config.scale,
                       model_config.input_channels, model_config)
