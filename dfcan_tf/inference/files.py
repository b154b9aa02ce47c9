"""``dfcan predict`` on files: folders and globs of TIFF/MRC in, ImageJ TIFFs named after the inputs out.

:func:`predict_files` checks every destination before the network is loaded
(:mod:`dfcan_tf.safety`), then super-resolves each file with
:func:`predict_file` (frames grouped by the model's input channels); a failing
file is reported and the others continue. The command is :mod:`dfcan_tf.cli.predict`.
"""

from __future__ import annotations

import glob
import os
import time
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from dfcan_tf import safety
from dfcan_tf.data.normalize import Normalizer
from dfcan_tf.errors import DfcanError
from dfcan_tf.inference.predict import check_image, predict_image, resolve_run

INPUT_SUFFIXES = (".tif", ".tiff", ".mrc", ".dv")

__all__ = ["INPUT_SUFFIXES", "PredictSummary", "expand_inputs", "predict_file", "predict_files"]


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
) -> Path:
    """Predict one TIFF/MRC file and write the result to ``out_path`` (atomically).

    Frames are grouped by ``input_channels``: a SISR model predicts every
    frame of a time-lapse; a SIM model takes consecutive groups of 9 (or 25)
    raw frames as one time point. The pixel size (file metadata, else the run's
    ``data.pixel_size_nm``) is divided by ``scale``. ``data["normalization"]``
    is read with :meth:`dfcan_tf.data.normalize.Normalizer.from_config`;
    ``config`` (the network configuration) sets the default ``overlap``.
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
    check_image(stack, str(path))
    n = stack.shape[0]
    if n % input_channels:
        kind = "SIM raw frames" if input_channels > 1 else "frames"
        raise DfcanError(
            f"{path}: has {n} frames, which do not split into groups of {input_channels} {kind} "
            f"(the model's input channels); expected a multiple of {input_channels}"
        )
    normalizer = Normalizer.from_config(data.get("normalization"))
    groups = stack.reshape(n // input_channels, input_channels, *stack.shape[1:])
    outputs = []
    for group in groups:
        if normalizer.per_image:
            x, norm = group, True
        else:  # divide65535: absolute intensities in, raw network output out
            x, norm = normalizer.normalize(group), False
        outputs.append(predict_image(model, x, scale=scale, tile_size=tile_size, overlap=overlap,
                                     batch_size=batch_size, normalize=norm, normalizer=normalizer,
                                     remove_outliers=remove_outliers, progress=progress, name=str(path),
                                     config=config))
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
    overlap: int | None = None,
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
                progress=progress, config=config,
            ))
            safety.record_output(targets[f], "predict")
        except DfcanError as exc:
            summary.failures.append((f, str(exc)))
        except Exception as exc:  # noqa: BLE001 -- any failure is reported per file; the others continue
            summary.failures.append((f, f"{f}: {type(exc).__name__}: {exc}"))
    summary.seconds = time.perf_counter() - t0
    return summary
