"""Super-resolve whole acquisitions with a run folder: ``dfcan predict``.

:func:`predict_image` runs a network on one image (SISR) or one raw SIM stack,
whole or tiled; :func:`predict_files` does it for files, folders and globs of
TIFF/MRC and writes 16-bit (or float32) ImageJ TIFFs named after the inputs.

Normalisation follows the reference (REFERENCE §6): the input is min-max
normalised, the output is min-max normalised, optional hot-pixel removal, and
the result is written as 16-bit TIFF. Runs trained with ``"divide65535"``
normalisation get their input divided by 65535 and their output written as is.

Whole image or tiles
--------------------
By default (``tile_size=None``) an image of up to :data:`WHOLE_IMAGE_MAX_PIXELS`
input pixels (1024 × 1024) is predicted whole, a larger one in tiles of
:data:`DEFAULT_TILE_SIZE` (512) with :data:`DEFAULT_OVERLAP` (32) pixels of
overlap. Measured on this project's CI machine with the paper's DFCAN (1.93 M
parameters, ×2, graph mode): peak memory above the idle process is 0.8 GB for a
whole 512² input, 3.2 GB for a whole 1024² input, and 0.25 GB (256² tiles) or
1.0 GB (512² tiles, ``dfcan benchmark predict``: +988 MB, process maximum
1.7 GB; stated bound :data:`PEAK_MEMORY_2048_MB`, asserted by a slow test) for a 2048² input predicted tiled to 4096² — the tile, not the image,
sets it. (Eager calls of the Keras model instead keep every intermediate
tensor: 7.7 GB for a whole 512² input; hence the ``tf.function``.)

Tiled versus whole
------------------
DFCAN's Fourier channel attention is global over its input (FFT magnitude,
then a global average pool), and the spectrum magnitude grows with the input
size, so a tile's attention weights differ from the whole image's and tiled
output can never equal whole output. The overlap does not matter for this
(16, 32 or 64 pixels give the same figures); the tile/image size ratio does.
NRMSE between min-max normalised tiled and whole outputs, overlap 32:

=========================================  =====  =====  ===========  ========
model, image                               side   tile   NRMSE        max diff
=========================================  =====  =====  ===========  ========
trained DFCAN (250 steps), simulated       512    256    0.50 %       0.0064
microtubules at 60 and 600 photons         512    128    0.79–0.90 %  0.011
random-init DFCAN, simulated filaments     384    256    0.26–0.54 %  0.012
random-init DFCAN, simulated filaments     1024   512    0.71 %       0.019
random-init DFCAN, simulated filaments     1024   256    1.67 %       0.038
=========================================  =====  =====  ===========  ========

What is visible is set by the data: predicting a second acquisition of the
same scene (a new Poisson draw) changes the trained model's whole-image
output by 1.8 % NRMSE (max 0.023) at 600 photons and 5.0 % (max 0.083) at 60
photons, 3–10× the tiling difference; and tiling moved the NRMSE against the
GT-SIM image from 0.2946 to 0.2950 (tile 256) — far below anything a reader
of the metrics or of the image would notice. Hence the defaults: whole image
up to 1024² input pixels (no difference at all), 512-pixel tiles with 32
pixels overlap beyond (a 2048² image is a tile/image ratio of 4: about 0.9 %
with the trained model, 1.7 % with the random one). Smaller tiles
(``tile_size=256``) cut memory and time further at about twice the difference.
The overlap only has to hide the zero padding of the convolutions (local halo
:func:`dfcan_tf.inference.tiling.dfcan_halo` = 35 px; the blending window discards the
outer quarter of each overlap band).
"""

from __future__ import annotations

import argparse
import glob
import os
import sys
import time
import weakref
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from dfcan_tf import safety
from dfcan_tf.errors import DfcanError
from dfcan_tf.inference.tiling import predict_tiled, tile_specs
from dfcan_tf.nets import registry

DEFAULT_TILE_SIZE = 512
DEFAULT_OVERLAP = 32
WHOLE_IMAGE_MAX_PIXELS = 1024 * 1024
MIN_IMAGE_SIZE = 8
OUTLIER_THRESHOLD = 0.2
INPUT_SUFFIXES = (".tif", ".tiff", ".mrc", ".dv")
BACKENDS = ("keras", "onnx", "tflite", "saved_model")

__all__ = [
    "DEFAULT_OVERLAP",
    "DEFAULT_TILE_SIZE",
    "WHOLE_IMAGE_MAX_PIXELS",
    "PredictSummary",
    "benchmark_predict",
    "expand_inputs",
    "measure_tiled_prediction",
    "predict_file",
    "predict_files",
    "predict_image",
    "remove_hot_pixels",
    "resolve_run",
]


# --------------------------------------------------------------------------- helpers


def remove_hot_pixels(image: np.ndarray, threshold: float = OUTLIER_THRESHOLD) -> np.ndarray:
    """Replace hot pixels by the mean of their 4 neighbours (REFERENCE §6).

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


def _minmax(x: np.ndarray, name: str = "image", what: str = "input") -> np.ndarray:
    """Min-max normalise ``x`` to [0, 1] as float32, computing in float64.

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
    lo, hi = float(np.min(x64)), float(np.max(x64))
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
    span = hi - lo
    if np.isfinite(span):
        out = (x64 - lo) / span
    else:  # lo and hi near ±1.8e308: their difference overflows float64, halves do not
        out = (x64 * 0.5 - lo * 0.5) / (hi * 0.5 - lo * 0.5)
    if not np.all(np.isfinite(out)):
        raise DfcanError(
            f"{name}: min-max normalisation of the {what} gave non-finite values (range {lo:g} to {hi:g})"
        )
    return out.astype(np.float32)


_PREDICTORS: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()


def _predictor(model: Any) -> tuple[Callable[[np.ndarray], np.ndarray], int | None]:
    """A numpy → numpy batch function for ``model`` and its input channel count.

    Keras models run through one ``tf.function`` with a shape-polymorphic
    signature: graph execution frees intermediate tensors as soon as they are
    used (eager calls of the functional model keep them all, ~10× the memory)
    and does not retrace for every tile or image size.
    """
    import keras

    if isinstance(model, keras.Model):
        cached = _PREDICTORS.get(model)
        if cached is not None:
            return cached
        import tensorflow as tf

        channels = int(model.input_shape[-1])
        fn = tf.function(
            lambda b: model(b, training=False),
            input_signature=[tf.TensorSpec([None, None, None, channels], tf.float32)],
        )

        def run(batch: np.ndarray) -> np.ndarray:
            return fn(tf.constant(batch, tf.float32)).numpy()

        _PREDICTORS[model] = (run, channels)
        return run, channels
    if callable(model):
        return model, getattr(model, "input_channels", None)
    raise DfcanError(f"cannot predict with an object of type {type(model).__name__}; expected a keras.Model or a callable")


def _check_image(image: np.ndarray, name: str) -> None:
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
    overlap: int = DEFAULT_OVERLAP,
    batch_size: int = 1,
    normalize: bool = True,
    remove_outliers: bool = False,
    progress: bool = False,
    name: str = "image",
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
        Minimum overlap of neighbouring tiles in input pixels.
    batch_size
        Tiles per network call.
    normalize
        Min-max normalise the input (whole stack) and the output, as the reference
        (computed in float64, so any finite float input works). A constant input
        (all pixels equal, e.g. an all-zero frame) is refused: min-max
        normalisation is undefined for it and there is nothing to super-resolve;
        stretching it would only show the network's border and checkerboard
        response. Without ``normalize`` the input is used as given (it must fit
        float32) and the raw network output returned.
    remove_outliers
        Replace hot pixels in the output (:func:`remove_hot_pixels`).
    progress
        tqdm bar over tiles.
    name
        Used in error messages (the file name).

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
    _check_image(image, name)
    run, channels = _predictor(model)
    if channels is not None and image.shape[0] != channels:
        raise DfcanError(
            f"{name}: the model takes {channels} input frame(s) per image, the input has {image.shape[0]}"
        )
    if normalize:  # in float64: float64 input beyond 3.4e38 is inf in float32, and x - min overflows near it
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
        return predict_tiled(run, x, scale=scale, tile_size=side, overlap=min(overlap, side // 2),
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


@dataclass
class PredictSummary:
    """What :func:`predict_files` did: written outputs and per-file failures."""

    outputs: list[Path] = field(default_factory=list)
    failures: list[tuple[Path, str]] = field(default_factory=list)
    seconds: float = 0.0

    @property
    def ok(self) -> bool:
        return not self.failures

    def __str__(self) -> str:
        return f"{len(self.outputs)} written, {len(self.failures)} failed in {self.seconds:.1f} s"


def expand_inputs(inputs: str | os.PathLike | Iterable[str | os.PathLike]) -> list[Path]:
    """Files named by ``inputs``: files, folders (their TIFF/MRC files) and glob patterns.

    Raises
    ------
    DfcanError
        When an entry matches nothing.
    """
    if isinstance(inputs, (str, os.PathLike)):
        inputs = [inputs]
    files: list[Path] = []
    for entry in inputs:
        p = Path(entry)
        if p.is_dir():
            found = sorted(f for f in p.iterdir() if f.is_file() and f.suffix.lower() in INPUT_SUFFIXES)
            if not found:
                raise DfcanError(f"{p}: folder holds no TIFF or MRC files ({', '.join(INPUT_SUFFIXES)})")
            files.extend(found)
        elif p.exists():
            files.append(p)
        elif glob.has_magic(str(entry)):
            found = sorted(Path(f) for f in glob.glob(str(entry)) if Path(f).is_file())
            if not found:
                raise DfcanError(f"{entry}: pattern matches no files")
            files.extend(found)
        else:
            raise DfcanError(f"{p}: no such file or folder")
    unique = list(dict.fromkeys(files))
    return unique


def resolve_run(run: Any, backend: str, which: str) -> tuple[Any, dict, int, int]:
    """Return ``(model, data config, scale, input channels)`` of a run folder or a loaded Run.

    ``backend="keras"`` loads the Keras network; ``"onnx"``, ``"tflite"`` and
    ``"saved_model"`` ask :func:`dfcan_tf.export.run.load_backend` for a callable
    on the same run (it exports the run first when needed).
    """
    if backend not in BACKENDS:
        raise DfcanError(f"unknown backend. Received: backend={backend!r}; expected one of {BACKENDS}")
    from dfcan_tf import runs

    if isinstance(run, runs.Run):
        if backend != "keras":
            run = run.path
        else:
            return run.model, dict(run.data), run.scale, run.input_channels
    if backend == "keras":
        # The sampled-DFT spectrum equals the FFT one to ~1e-6 and is faster for inference
        # (502²: 2.6 s vs 4.7 s for the paper's DFCAN on 2 cores; `dfcan benchmark predict`).
        loaded = runs.load_run(run, which=which, spectrum="dft")
        return loaded.model, dict(loaded.data), loaded.scale, loaded.input_channels
    doc, model_config = runs.read_run_config(run)
    # Imported here: only non-Keras backends need the export machinery.
    from dfcan_tf.export.run import load_backend

    return (load_backend(run, backend, which=which), dict(doc.get("data") or {}), model_config.scale,
            model_config.input_channels)


def _reject_colour_tiff(path: Path) -> None:
    """Raise if ``path`` is a TIFF tagged as colour (RGB samples, chunky or planar)."""
    with open(path, "rb") as f:
        if f.read(2) not in (b"II", b"MM"):
            return  # not a TIFF (read_image has accepted it as MRC)
    import tifffile

    with tifffile.TiffFile(path) as tif:
        axes = tif.series[0].axes if tif.series else ""
        photometric = tif.pages[0].photometric if len(tif.pages) else None
    if "S" in axes or photometric == tifffile.PHOTOMETRIC.RGB:
        raise DfcanError(
            f"{path}: colour (RGB) TIFF with axes {axes}; expected a grayscale image or stack of frames"
        )


def predict_file(
    model: Any,
    path: str | os.PathLike,
    out_path: str | os.PathLike,
    *,
    scale: int,
    input_channels: int,
    data: dict | None = None,
    tile_size: int | None = None,
    overlap: int = DEFAULT_OVERLAP,
    batch_size: int = 1,
    dtype: str = "uint16",
    remove_outliers: bool = False,
    progress: bool = False,
) -> Path:
    """Predict one TIFF/MRC file and write the result to ``out_path`` (atomically).

    Frames are grouped by ``input_channels``: a SISR model predicts every
    frame of a time-lapse; a SIM model takes consecutive groups of 9 (or 25)
    raw frames as one time point. The pixel size (file metadata, else the run's
    ``data.pixel_size_nm``) is divided by ``scale``.
    """
    from dfcan_tf.data.files import read_image, write_tiff

    path = Path(path)
    data = data or {}
    if dtype not in ("uint16", "float32"):
        raise DfcanError(f"unsupported output type. Received: dtype={dtype!r}; expected 'uint16' or 'float32'")
    stack, meta = read_image(path)
    _reject_colour_tiff(path)
    if stack.ndim != 3:
        raise DfcanError(f"{path}: expected an image or a stack of frames. Received: shape={stack.shape}")
    _check_image(stack, str(path))
    n = stack.shape[0]
    if n % input_channels:
        kind = "SIM raw frames" if input_channels > 1 else "frames"
        raise DfcanError(
            f"{path}: has {n} frames, which do not split into groups of {input_channels} {kind} "
            f"(the model's input channels); expected a multiple of {input_channels}"
        )
    normalization = data.get("normalization", "minmax")
    groups = stack.reshape(n // input_channels, input_channels, *stack.shape[1:])
    outputs = []
    for group in groups:
        if normalization == "divide65535":
            x, norm = group.astype(np.float32) / 65535.0, False
        else:
            x, norm = group, True
        outputs.append(predict_image(model, x, scale=scale, tile_size=tile_size, overlap=overlap,
                                     batch_size=batch_size, normalize=norm, remove_outliers=remove_outliers,
                                     progress=progress, name=str(path)))
    result = outputs[0] if len(outputs) == 1 else np.stack(outputs)
    pixel = meta.get("pixel_size_nm") or data.get("pixel_size_nm")
    write_tiff(out_path, result, pixel_size_nm=(float(pixel) / scale) if pixel else None, dtype=dtype)
    return Path(out_path)


def predict_files(
    run: Any,
    inputs: str | os.PathLike | Iterable[str | os.PathLike],
    out_dir: str | os.PathLike,
    *,
    backend: str = "keras",
    which: str = "best",
    tile_size: int | None = None,
    overlap: int = DEFAULT_OVERLAP,
    batch_size: int = 1,
    dtype: str = "uint16",
    remove_outliers: bool = False,
    overwrite: bool = False,
    progress: bool = True,
) -> PredictSummary:
    """Super-resolve files, folders and globs of TIFF/MRC with a run folder.

    Parameters
    ----------
    run
        Run folder path or a loaded :class:`dfcan_tf.runs.Run`.
    inputs
        A file, folder or glob pattern, or a list of them.
    out_dir
        Output folder; each output is ``<input stem>.tif``.
    backend
        ``"keras"`` (default), ``"onnx"``, ``"tflite"`` or ``"saved_model"``
        (via :func:`dfcan_tf.export.run.load_backend`).
    which
        ``"best"`` or ``"last"`` weights (Keras backend).
    tile_size, overlap, batch_size, remove_outliers
        As :func:`predict_image`.
    dtype
        ``"uint16"`` (default; [0, 1] mapped to 0–65535) or ``"float32"``.
    overwrite
        Replace existing outputs, and only those a previous ``dfcan predict``
        wrote (recorded in the output folder's manifest, see
        :mod:`dfcan_tf.safety`); any other existing file is refused.
    progress
        tqdm bars over files and tiles.

    Returns
    -------
    PredictSummary
        Outputs written and ``(file, message)`` for every file that failed;
        a failing file does not stop the others and leaves no output.

    Raises
    ------
    DfcanError
        For problems before any file is read or the network is loaded: bad run
        folder, inputs that match nothing, outputs that would overwrite inputs
        or each other, an output folder that is a file or not writable, or
        existing outputs (without ``overwrite``, or not written by predict).
    """
    t0 = time.perf_counter()
    files = expand_inputs(inputs)
    out_dir = Path(out_dir)
    targets: dict[Path, Path] = {}
    for f in files:
        out = out_dir / f"{f.stem}.tif"
        if out in targets.values():
            other = next(k for k, v in targets.items() if v == out)
            raise DfcanError(f"{f} and {other} would both be written to {out}; predict them into different folders")
        if out.exists() and out.resolve() == f.resolve():
            raise DfcanError(f"{f}: the output {out} would overwrite the input; choose another output folder")
        targets[f] = out
    # Every destination is checked before the network is loaded or run.
    if out_dir.exists() and not out_dir.is_dir():
        raise DfcanError(f"{out_dir}: the output folder is an existing file; give a folder path "
                         "(outputs are <input name>.tif)")
    run_path = Path(getattr(run, "path", run))
    for out in targets.values():
        safety.check_output_file(out, command="predict", overwrite=overwrite, inputs=[*files, run_path])
    model, data, scale, channels = resolve_run(run, backend, which)

    summary = PredictSummary()
    iterator: Iterable[Path] = files
    if progress:
        from tqdm.auto import tqdm

        iterator = tqdm(files, desc="files", unit="file")
    for f in iterator:
        try:
            summary.outputs.append(predict_file(
                model, f, targets[f], scale=scale, input_channels=channels, data=data, tile_size=tile_size,
                overlap=overlap, batch_size=batch_size, dtype=dtype, remove_outliers=remove_outliers,
                progress=progress,
            ))
            safety.record_output(targets[f], "predict")
        except DfcanError as exc:
            summary.failures.append((f, str(exc)))
        except Exception as exc:  # noqa: BLE001 -- any failure is reported per file; the others continue
            summary.failures.append((f, f"{f}: {type(exc).__name__}: {exc}"))
    summary.seconds = time.perf_counter() - t0
    return summary


# --------------------------------------------------------------------------- CLI


def parse_tile_size(value: str) -> int | None:
    """``--tile-size`` values: ``auto`` (None), 0 (never tile) or a positive side."""
    if value == "auto":
        return None
    try:
        n = int(value)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected 'auto', 0 or a pixel count, got {value!r}") from None
    if n < 0:
        raise argparse.ArgumentTypeError(f"tile size must be 'auto', 0 or positive, got {n}")
    return n


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("run", help="run folder (config.json + weights/)")
    parser.add_argument("inputs", nargs="+", help="TIFF/MRC files, folders or glob patterns")
    parser.add_argument("-o", "--output", required=True, help="output folder (outputs are <input name>.tif)")
    parser.add_argument("--backend", choices=BACKENDS, default="keras", help="inference backend (default: keras)")
    parser.add_argument("--which", choices=("best", "last"), default="best", help="weights to use (default: best)")
    parser.add_argument("--tile-size", type=parse_tile_size, default=None, metavar="auto|0|N",
                        help=f"tile side in input pixels; auto (default): whole image up to "
                             f"{int(WHOLE_IMAGE_MAX_PIXELS ** 0.5)}², else {DEFAULT_TILE_SIZE}; 0: never tile")
    parser.add_argument("--overlap", type=int, default=DEFAULT_OVERLAP, help=f"tile overlap (default {DEFAULT_OVERLAP})")
    parser.add_argument("--batch-size", type=int, default=1, help="tiles per network call (default 1)")
    parser.add_argument("--dtype", choices=("uint16", "float32"), default="uint16", help="output type (default uint16)")
    parser.add_argument("--remove-outliers", action="store_true", help="replace hot pixels of the output")
    parser.add_argument("--overwrite", action="store_true",
                        help="replace existing outputs written by a previous 'dfcan predict'")
    parser.add_argument("--no-progress", action="store_true", help="no progress bars")


def run_from_args(args: argparse.Namespace) -> int:
    summary = predict_files(
        args.run, args.inputs, args.output, backend=args.backend, which=args.which, tile_size=args.tile_size,
        overlap=args.overlap, batch_size=args.batch_size, dtype=args.dtype, remove_outliers=args.remove_outliers,
        overwrite=args.overwrite, progress=not args.no_progress,
    )
    for path in summary.outputs:
        print(path)
    for _path, message in summary.failures:
        print(f"dfcan predict: error: {message}", file=sys.stderr)
    print(f"dfcan predict: {summary}", file=sys.stderr)
    return 0 if summary.ok else 1


# --------------------------------------------------------------------------- benchmark


def _rss_mb() -> float:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20


def _dfcan_gflop(cfg: Any, h: int, w: int, n_tiles: int, tile: int) -> float:
    """Approximate GFLOP of one prediction (convolutions only; FFTs and pointwise ops ignored)."""
    c, s, k = cfg.width, cfg.scale, 9
    per_px = 2 * k * (cfg.input_channels * c + 2 * cfg.n_groups * cfg.n_blocks * c * c + c * c * s * s)
    per_px += 2 * k * c * s * s  # output conv on the SR grid
    pixels = n_tiles * tile * tile if n_tiles > 1 else h * w
    attention = 2 * k * c * c * cfg.size_psc**2 * cfg.n_groups * cfg.n_blocks * max(n_tiles, 1)
    return (per_px * pixels + attention) / 1e9


PEAK_MEMORY_2048_MB = 1500  # stated bound for dfcan benchmark predict (measured: +988 MB)


def measure_tiled_prediction(config: Any, side: int, tile: int, overlap: int = DEFAULT_OVERLAP) -> dict[str, Any]:
    """Predict a random ``side``² image tiled with a freshly built ``config`` network; measure memory and time.

    Peak memory is the process RSS, sampled every 5 ms while tracing and
    predicting, minus the RSS once the model is built (measured before the
    first network call: TensorFlow's allocator keeps the first tile's buffers,
    so a later baseline would hide them; tracing is thus included, a
    conservative bound, but excluded from the time).

    Returns
    -------
    dict
        ``seconds``, ``peak_mb`` (increase), ``base_mb``, ``maxrss_mb``
        (lifetime maximum), ``n_tiles``, ``output_shape`` and ``gflop``.
    """
    import resource
    import threading

    import keras

    keras.utils.set_random_seed(0)
    model = registry.build(config)
    image = np.random.default_rng(0).random((side, side), dtype=np.float32)
    n_tiles = len(tile_specs((side, side), tile, overlap, scale=config.scale))
    base = _rss_mb()
    run, _ = _predictor(model)
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
    return {
        "seconds": seconds,
        "peak_mb": peak[0] - base,
        "base_mb": base,
        "maxrss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0,
        "n_tiles": n_tiles,
        "output_shape": out.shape,
        "gflop": _dfcan_gflop(config, side, side, n_tiles, tile),
    }


def benchmark_predict(args: argparse.Namespace, sgemm: float) -> None:
    """``dfcan benchmark predict``: peak memory and time of a 2048² → 4096² tiled prediction.

    Uses the paper's DFCAN (randomly initialised; weights do not change the
    cost) and the default tiling (:func:`measure_tiled_prediction`); the
    stated bound is :data:`PEAK_MEMORY_2048_MB`. ``args.quick``: a 512² input
    and a smaller network (width 32, 2 × 2 blocks), tiled at 256.
    """
    from dfcan_tf.nets.dfcan import DFCANConfig

    if args.quick:
        cfg, side, tile = DFCANConfig.dfcan(1, 2, width=32, n_groups=2, n_blocks=2), 512, 256
    else:
        cfg, side, tile = DFCANConfig.dfcan(1, 2), 2048, DEFAULT_TILE_SIZE
    m = measure_tiled_prediction(cfg, side, tile)
    rate = m["gflop"] / m["seconds"]
    bound = "" if args.quick else f" (stated bound {PEAK_MEMORY_2048_MB} MB)"
    print(
        f"predict: {side}x{side} -> {m['output_shape'][0]}x{m['output_shape'][1]} tiled ({m['n_tiles']} tiles of "
        f"{tile}, overlap {DEFAULT_OVERLAP}), {cfg.width}-wide {cfg.n_groups}x{cfg.n_blocks} DFCAN: "
        f"{m['seconds']:.1f} s, peak memory +{m['peak_mb']:.0f} MB{bound} over the built model's "
        f"{m['base_mb']:.0f} MB (process max RSS {m['maxrss_mb']:.0f} MB); "
        f"~{m['gflop']:.0f} GFLOP, {rate:.1f} GFLOP/s = {rate / sgemm:.0%} of sgemm"
    )
