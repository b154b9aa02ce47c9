"""``dfcan predict`` on files: folders and globs of TIFF/MRC in, ImageJ TIFFs named after the inputs out.

:func:`predict_files` checks every destination before the network is loaded
(:mod:`dfcan_tf.safety`), then super-resolves each file with
:func:`predict_file` (frames grouped by the model's input channels); a failing
file is reported and the others continue. The command is :mod:`dfcan_tf.cli.predict`.
"""

from __future__ import annotations

import glob
import os
import sys
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from dfcan_tf import safety
from dfcan_tf.data.normalize import Normalizer
from dfcan_tf.errors import DfcanError
from dfcan_tf.inference.predict import check_image, predict_image, resolve_run

INPUT_SUFFIXES = (".tif", ".tiff", ".mrc", ".dv")
INTENSITIES = ("raw", "stretch")

__all__ = ["INPUT_SUFFIXES", "INTENSITIES", "PredictSummary", "encode_uint16", "expand_inputs", "predict_file",
           "predict_files", "raw_sim_group"]


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


_IMAGEJ_AXES = "TZC"
_RAW_SIM_FRAMES = (9, 25)


def _log(message: str) -> None:
    print(message, file=sys.stderr)


def raw_sim_group(path: Path, frames: int, input_channels: int, sim_frames: int | None) -> int | None:
    """Frames per raw SIM image to sum to wide-field for a one-channel model, or None (a time series).

    A file is taken as raw SIM when ``sim_frames`` (9 or 25) is given, or when it
    is an MRC file of BioSR's layout (named ``RawSIMData*`` or in a
    ``RawSIMData`` folder; 9 frames per image, else 25).

    Raises
    ------
    DfcanError
        ``sim_frames`` is not 9 or 25, does not match a SIM model's input
        channels, or the frame count is not a multiple of the group.
    """
    if sim_frames is not None and sim_frames not in _RAW_SIM_FRAMES:
        raise DfcanError(f"--sim-frames must be 9 or 25. Received: sim_frames={sim_frames}")
    if input_channels > 1:
        if sim_frames is not None and sim_frames != input_channels:
            raise DfcanError(f"{path}: --sim-frames {sim_frames} given, but the run's SIM model takes "
                             f"{input_channels} raw frames per image; drop --sim-frames or use another run")
        return None
    biosr = path.suffix.lower() in (".mrc", ".dv") and (
        path.name.lower().startswith("rawsimdata") or path.parent.name.lower() == "rawsimdata")
    if sim_frames is None and not biosr:
        return None
    group = sim_frames or next((g for g in _RAW_SIM_FRAMES if frames % g == 0), None)
    if group is None or frames % group:
        why = f"--sim-frames {sim_frames}" if sim_frames else "a BioSR raw SIM file (RawSIMData*)"
        raise DfcanError(
            f"{path}: has {frames} frames, which do not split into raw SIM images of {group or '9 or 25'} "
            f"frames ({why}); expected a multiple of {group or '9 or 25'} frames"
        )
    return group


def _output_axes(meta: dict, frames: int) -> tuple[str | None, tuple[int, ...]]:
    """ImageJ axes and non-YX shape for ``frames`` output frames when they are the file's own frames."""
    axes, shape = meta.get("axes"), tuple(meta.get("shape") or ())
    if axes and len(axes) == len(shape) and axes.endswith("YX"):
        lead, lead_shape = axes[:-2], shape[:-2]
        if int(np.prod(lead_shape, dtype=np.int64)) == frames and all(a in _IMAGEJ_AXES for a in lead):
            return (lead + "YX" if lead else None), lead_shape
    return None, ()


def _series_axes(images: int) -> str | None:
    """``TYX`` for several output images made from groups of frames (a time series); None for one."""
    return "TYX" if images > 1 else None


def encode_uint16(values: np.ndarray, integer_input: bool) -> tuple[np.ndarray, tuple[float, float, str]]:
    """Store intensities as uint16 with ONE linear map for the whole array: ``value = c0 + c1 · stored``.

    Integer input whose outputs fit 0–65535 is stored as is (``c0 = 0``,
    ``c1 = 1``, unit ``counts``); anything else is mapped from its
    [min, max] to 0–65535. Returns the stored array and ``(c0, c1, unit)``.
    """
    lo, hi = float(np.min(values)), float(np.max(values))
    unit = "counts" if integer_input else "input units"
    if integer_input and lo >= -0.5 and hi <= 65535.5:
        return np.clip(np.round(values), 0, 65535).astype(np.uint16), (0.0, 1.0, unit)
    gain = (hi - lo) / 65535.0 if hi > lo else 1.0
    stored = np.clip(np.round((np.asarray(values, np.float64) - lo) / gain), 0, 65535).astype(np.uint16)
    return stored, (lo, gain, unit)


def _pixel_size(path: Path, meta: dict, data: dict, log: Callable[[str], None]) -> float | None:
    """The input's pixel size (file, else run) with a log line saying which; warns on a > 10 % mismatch."""
    run_px = float(data["pixel_size_nm"]) if data.get("pixel_size_nm") else None
    file_px = meta.get("pixel_size_nm")
    if file_px:
        log(f"{path.name}: pixel size {file_px:.4g} nm (from the file's {meta.get('pixel_size_source', 'metadata')})")
        if run_px and abs(file_px - run_px) > 0.10 * run_px:
            log(f"warning: {path}: pixel size {file_px:.4g} nm differs by {abs(file_px / run_px - 1):.0%} from "
                f"the run's training pixel size {run_px:.4g} nm; the network expects structures at the "
                "training scale: resample the image or use a run trained at this pixel size")
        return float(file_px)
    if run_px:
        log(f"{path.name}: pixel size {run_px:g} nm (from the run; file has none)")
        return run_px
    log(f"{path.name}: pixel size unknown (neither the file nor the run states one); output uncalibrated")
    return None


def predict_file(
    model: Any,
    path: str | os.PathLike,
    out_path: str | os.PathLike,
    *,
    scale: int,
    input_channels: int,
    data: dict | None = None,
    tile_size: int | None = None,
    overlap: int | None = None,
    batch_size: int = 1,
    dtype: str = "uint16",
    remove_outliers: bool = False,
    progress: bool = False,
    config: Any = None,
    intensity: str = "stretch",
    sim_frames: int | None = None,
    log: Callable[[str], None] | None = None,
) -> Path:
    """Predict one TIFF/MRC file and write the result to ``out_path`` (atomically).

    Frames are grouped by ``input_channels``: a SISR model predicts every
    frame of a time-lapse; a SIM model takes consecutive groups of 9 (or 25)
    raw frames as one time point. A one-channel model given a raw SIM file
    (:func:`raw_sim_group`) gets each group of 9/25 frames summed to
    wide-field. The T/Z/C axes of a TIFF hyperstack are kept (only Y and X
    are scaled) and written in ImageJ order. See
    ``docs/own-data.md#pixel-size-and-intensities``.

    Parameters
    ----------
    model, scale, input_channels, tile_size, overlap, batch_size, remove_outliers, progress, config
        As :func:`dfcan_tf.inference.predict.predict_image`.
    data
        The run's data section: ``normalization``
        (:meth:`dfcan_tf.data.normalize.Normalizer.from_config`) and
        ``pixel_size_nm`` (used when the file states none; a file pixel size
        more than 10 % off it is warned about).
    intensity
        ``"raw"``: the input is normalised with ONE mapping computed over the
        whole file and the network output mapped back through it
        (:meth:`~dfcan_tf.data.normalize.Normalizer.after`), so intensities
        are in the input's units and comparable between frames and files;
        ``uint16`` output stores them with one linear map written as ImageJ
        calibration (:func:`encode_uint16`). ``"stretch"``: every output image
        min-max stretched to [0, 1] (0–65535 in uint16).
    dtype
        ``"uint16"`` or ``"float32"``.
    sim_frames
        9 or 25: the file is raw SIM with that many frames per image.
    log
        Receives the messages (pixel size, warnings, SIM summing); default: stderr.
    """
    from dfcan_tf.data.files import read_image, write_tiff

    path = Path(path)
    data = data or {}
    log = log or _log
    if dtype not in ("uint16", "float32"):
        raise DfcanError(f"unsupported output type. Received: dtype={dtype!r}; expected 'uint16' or 'float32'")
    if intensity not in INTENSITIES:
        raise DfcanError(f"unknown intensity mode. Received: intensity={intensity!r}; expected one of {INTENSITIES}")
    stack, meta = read_image(path)
    _reject_colour_tiff(path)
    if stack.ndim != 3:
        raise DfcanError(f"{path}: expected an image or a stack of frames. Received: shape={stack.shape}")
    check_image(stack, str(path))
    integer_input = stack.dtype.kind in "iu"
    n = stack.shape[0]
    group = raw_sim_group(path, n, input_channels, sim_frames)
    axes, lead_shape = _output_axes(meta, n)
    if group:
        stack = stack.reshape(n // group, group, *stack.shape[1:]).sum(axis=1, dtype=np.float64)
        log(f"{path.name}: raw SIM, {n} frames summed to {n // group} wide-field image(s) of {group} frames "
            "each for the one-channel model")
        n, axes, lead_shape, integer_input = stack.shape[0], _series_axes(n // group), (n // group,), True
    if n % input_channels:
        kind = "SIM raw frames" if input_channels > 1 else "frames"
        raise DfcanError(
            f"{path}: has {n} frames, which do not split into groups of {input_channels} {kind} "
            f"(the model's input channels); expected a multiple of {input_channels}"
        )
    if input_channels > 1:
        axes, lead_shape = _series_axes(n // input_channels), (n // input_channels,)
    pixel = _pixel_size(path, meta, data, log)
    normalizer = Normalizer.from_config(data.get("normalization"))
    groups = stack.reshape(n // input_channels, input_channels, *stack.shape[1:])
    scaling = None
    if intensity == "raw":
        scaling = normalizer.scaling(np.asarray(stack, dtype=np.float64))  # ONE mapping for the whole file
        if normalizer.per_image and float(np.max(scaling.hi)) <= float(np.min(scaling.lo)):
            raise DfcanError(f"{path}: image is constant (value {float(np.min(stack)):g}); nothing to super-resolve")
    outputs = []
    for g in groups:
        if scaling is not None:
            x, norm = normalizer.before(g, scaling=scaling)[0], False
        elif normalizer.per_image:
            x, norm = g, True
        else:  # divide65535: absolute intensities in, raw network output out
            x, norm = normalizer.normalize(g), False
        y = predict_image(model, x, scale=scale, tile_size=tile_size, overlap=overlap, batch_size=batch_size,
                          normalize=norm, normalizer=normalizer, remove_outliers=remove_outliers,
                          progress=progress, name=str(path), config=config)
        outputs.append(normalizer.after(y, scaling) if scaling is not None else y)
    result = np.stack(outputs)
    result = result.reshape(*lead_shape, *result.shape[-2:]) if axes else (result[0] if len(result) == 1 else result)
    calibration = None
    if scaling is not None and dtype == "uint16":
        result, calibration = encode_uint16(result, integer_input)
    write_tiff(out_path, result, pixel_size_nm=(pixel / scale) if pixel else None, dtype=dtype, axes=axes,
               z_spacing_nm=meta.get("z_spacing_nm") if axes and "Z" in axes else None, intensity=calibration)
    return Path(out_path)


def predict_files(
    run: Any,
    inputs: str | os.PathLike | Iterable[str | os.PathLike],
    out_dir: str | os.PathLike,
    *,
    backend: str = "keras",
    which: str = "best",
    tile_size: int | None = None,
    overlap: int | None = None,
    batch_size: int = 1,
    dtype: str = "uint16",
    remove_outliers: bool = False,
    overwrite: bool = False,
    progress: bool = True,
    intensity: str = "stretch",
    sim_frames: int | None = None,
    log: Callable[[str], None] | None = None,
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
        As :func:`predict_image`; the default overlap is the run's network's
        measured receptive field (:func:`overlap_for`).
    dtype
        ``"uint16"`` (default; [0, 1] mapped to 0–65535) or ``"float32"``.
    overwrite
        Replace existing outputs, and only those a previous ``dfcan predict``
        wrote (recorded in the output folder's manifest, see
        :mod:`dfcan_tf.safety`); any other existing file is refused.
    progress
        tqdm bars over files and tiles.
    intensity, sim_frames, log
        As :func:`predict_file` (``dfcan predict`` defaults to ``"raw"``).

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
    if intensity not in INTENSITIES:
        raise DfcanError(f"unknown intensity mode. Received: intensity={intensity!r}; expected one of {INTENSITIES}")
    if sim_frames is not None and sim_frames not in (9, 25):
        raise DfcanError(f"--sim-frames must be 9 or 25. Received: sim_frames={sim_frames}")
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
    model, data, scale, channels, config = resolve_run(run, backend, which)

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
                progress=progress, config=config, intensity=intensity, sim_frames=sim_frames, log=log,
            ))
            safety.record_output(targets[f], "predict")
        except DfcanError as exc:
            summary.failures.append((f, str(exc)))
        except Exception as exc:  # noqa: BLE001 -- any failure is reported per file; the others continue
            summary.failures.append((f, f"{f}: {type(exc).__name__}: {exc}"))
    summary.seconds = time.perf_counter() - t0
    return summary
