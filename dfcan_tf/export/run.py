"""Export a run folder to ONNX, TFLite (LiteRT), SavedModel or a bioimage.io package, verified against Keras.

:func:`export_run` is the entry point (``dfcan export``, :mod:`dfcan_tf.cli.export`).
Any registered network exports; the contract every format follows (portable
network, staged write, verification against Keras, record) is in
:mod:`dfcan_tf.export.verify` and ``docs/export.md#contract``; the formats are
:mod:`~dfcan_tf.export.onnx`, :mod:`~dfcan_tf.export.tflite`,
:mod:`~dfcan_tf.export.saved_model` and :mod:`~dfcan_tf.export.bioimageio`.

Your files and the run folder
-----------------------------
The destination is checked before any work starts (:func:`check_destination`):
an existing folder where a file is expected is always refused; an existing
output is replaced only with ``overwrite`` / ``--overwrite`` and only if an
earlier ``dfcan export`` wrote it (the manifest :data:`dfcan_tf.safety.MANIFEST`
next to a file, the marker inside a SavedModel folder). An output never is,
holds or lies above the run folder; inside it, only ``RUN/export/`` is
written. Every export is recorded with checksums (:mod:`dfcan_tf.export.records`).
"""

from __future__ import annotations

import math
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from dfcan_tf import safety
from dfcan_tf.errors import DfcanError
from dfcan_tf.export.onnx import DEFAULT_OPSET, MAX_OPSET
from dfcan_tf.export.records import COMMAND
from dfcan_tf.export.verify import (
    MAX_VERIFY_SIZE,
    MIN_VERIFY_SIZE,
    TOLERANCE,
    VERIFY_SIZES,
    ExportResult,
    open_run,
)

FORMATS = ("onnx", "tflite", "saved_model", "bioimageio")
SUFFIXES = {"onnx": ".onnx", "tflite": ".tflite", "saved_model": "", "bioimageio": ".zip"}
LABELS = {"onnx": "ONNX", "tflite": "TFLite", "saved_model": "a SavedModel",
          "bioimageio": "a bioimage.io package (ONNX and SavedModel weights)"}
STAGES = 4


def check_options(sizes: Sequence[int] = VERIFY_SIZES, tolerance: float = TOLERANCE, opset: int = DEFAULT_OPSET,
                  fixed_size: int | None = None, threads: int | None = None) -> None:
    """Raise :class:`DfcanError` for a numeric option that would make the export or its check meaningless.

    ``sizes``: at least two different whole numbers of pixels in
    [:data:`MIN_VERIFY_SIZE`, :data:`MAX_VERIFY_SIZE`], one not a power of two;
    ``tolerance``: finite, > 0 and < 1 (outputs are in [0, 1], so 1 accepts
    anything); ``opset``: :data:`DEFAULT_OPSET`–:data:`MAX_OPSET`;
    ``fixed_size``: None or ≥ 8; ``threads``: None or ≥ 1.
    """
    from dfcan_tf.inference.backends import check_threads

    def whole(v: Any) -> bool:
        return isinstance(v, (int, np.integer)) and not isinstance(v, bool)

    sizes = tuple(sizes)
    bad = [v for v in sizes if not whole(v) or not MIN_VERIFY_SIZE <= v <= MAX_VERIFY_SIZE]
    if bad:
        raise DfcanError(f"--verify-sizes must be whole numbers of pixels from {MIN_VERIFY_SIZE} to "
                         f"{MAX_VERIFY_SIZE}. Received: --verify-sizes {' '.join(str(v) for v in sizes)}")
    if len(set(sizes)) < 2 or all(v & (v - 1) == 0 for v in sizes):
        raise DfcanError(f"verify at two sizes or more (one not a power of two), e.g. --verify-sizes 64 150. "
                         f"Received: sizes={sizes}")
    if isinstance(tolerance, bool) or not isinstance(tolerance, (int, float, np.floating)) \
            or not math.isfinite(tolerance) or not 0 < tolerance < 1:
        raise DfcanError(f"--tolerance must be a number > 0 and < 1 (the largest accepted max abs difference on "
                         f"outputs in [0, 1]; default {TOLERANCE:g}). Received: --tolerance {tolerance!r}")
    if not whole(opset) or not DEFAULT_OPSET <= opset <= MAX_OPSET:
        raise DfcanError(f"opset must be between {DEFAULT_OPSET} and {MAX_OPSET}. Received: opset={opset!r}")
    if fixed_size is not None and (not whole(fixed_size) or fixed_size < 8):
        raise DfcanError(f"--tflite-size must be a whole number of pixels, at least 8. Received: {fixed_size!r}")
    check_threads(threads)


def check_destination(run_dir: str | os.PathLike, out: str | os.PathLike, format: str, *,
                      overwrite: bool = False) -> None:
    """Refuse an output path that would destroy anything export did not write; called before any work.

    The output may not be, hold or lie above the run folder; inside it, it
    must lie in ``RUN/export/``; it may not be or hold ``config.json`` or
    ``weights/``. A file output (ONNX, TFLite, bioimage.io zip) that is an
    existing folder is always refused, an existing file is replaced only with
    ``overwrite`` and only if an earlier export recorded it; a SavedModel
    folder likewise needs ``overwrite`` and export's marker.
    """
    run_dir, out = Path(run_dir), Path(out)
    suffix = SUFFIXES[format]
    if suffix and out.suffix != suffix:
        what = "a bioimage.io package is a .zip file" if format == "bioimageio" else \
            f"a {format} export is a {suffix} file"
        raise DfcanError(f"{what}; give an output path ending in {suffix}. Received: out={str(out)!r}")
    if not suffix and out.suffix in (".onnx", ".tflite", ".zip", ".h5", ".json"):
        raise DfcanError(f"a SavedModel is a folder; give a folder path, not a {out.suffix} file. "
                         f"Received: out={str(out)!r}")
    if out.name in (safety.MARKER, safety.MANIFEST):
        raise DfcanError(f"{out}: this name is reserved for dfcan's own records; choose another output")
    export_dir = run_dir / "export"
    if safety.is_within(run_dir, out):
        raise DfcanError(f"{out}: the output is or holds the run folder {run_dir}; writing it would replace the "
                         f"run. Choose a path in {export_dir}/ or outside the run folder")
    if safety.is_within(out, run_dir) and (not safety.is_within(out, export_dir) or safety.is_within(export_dir, out)):
        raise DfcanError(f"{out}: inside the run folder {run_dir}, exports go in {export_dir}/ only (the run's "
                         f"configuration, weights and logs are never replaced). Choose a path there or elsewhere")
    inputs = [run_dir / "config.json", run_dir / "weights"]
    if format == "saved_model":
        safety.check_output_dir(out, command=COMMAND, overwrite=overwrite, inputs=inputs)
    else:
        safety.check_output_file(out, command=COMMAND, overwrite=overwrite, inputs=inputs)


def default_output(run_dir: str | os.PathLike, format: str, quantize: str | None = None) -> Path:
    """``RUN/export/model.onnx`` and the like (``RUN/export/bioimageio.zip`` for a package).

    A quantised export is ``model-float16.tflite``, ``model-int8.tflite`` …, so
    it never takes the float model's place (the one ``--backend`` loads).
    """
    name = "bioimageio" if format == "bioimageio" else "model"
    if quantize:
        name = f"{name}-{quantize}"
    return Path(run_dir) / "export" / f"{name}{SUFFIXES[format]}"


def _say(progress: bool, stage: int, text: str) -> None:
    if progress:
        print(f"[{stage}/{STAGES}] {text}", flush=True)


def _conversion_text(format: str, opset: int, quantize: str | None, sizes: Sequence[int], fixed_size: int | None,
                     bioimageio_test: bool) -> str:
    """Stage 2's line: what is converted, and what it will be checked on."""
    label = LABELS[format] + (f" (opset {opset})" if format in ("onnx", "bioimageio") else "")
    if quantize:
        label += f", {quantize}-quantised"
    sizes = (fixed_size,) if fixed_size else tuple(sizes)
    check = "its PSNR against the Keras float output" if quantize else "it against Keras"
    text = f"converting to {label}, then checking {check} on random and simulated images at {_sizes(sizes)}"
    if format == "bioimageio":
        text += "; validating the package" + (" and test-running it with bioimageio.core" if bioimageio_test else "")
    return text


def _sizes(sizes: Sequence[int]) -> str:
    return ", ".join(f"{n}x{n}" for n in dict.fromkeys(sizes))


def _verified_text(result: ExportResult) -> str:
    """Stage 3's line, from the checks the export made."""
    images = sum(c.shape[0] for c in result.checks)
    simulated = sum(c.shape[0] for c in result.checks if c.kind == "simulated")
    where = (f"verified against Keras on {images} images ({simulated} simulated) at "
             f"{_sizes([c.shape[1] for c in result.checks])}")
    worst = f"max |diff| {result.max_abs_diff:.2e}"
    quant = result.extra.get("quantization")
    if quant:
        return f"{where}: PSNR {quant['psnr_db']:.1f} dB >= {quant['min_psnr_db']:g} dB, {worst}"
    return f"{where}: {worst} <= tolerance {result.tolerance:g}"


def export_run(run_dir: str | os.PathLike, out: str | os.PathLike | None = None, format: str = "onnx", *,
               which: str = "best", opset: int = DEFAULT_OPSET, sizes: Sequence[int] = VERIFY_SIZES,
               tolerance: float = TOLERANCE, overwrite: bool = False, quantize: str | None = None,
               min_psnr: float | None = None, progress: bool = False, **kwargs: Any) -> ExportResult:
    """Export a run folder's network, verify the artefact against Keras, and write it atomically.

    Parameters
    ----------
    run_dir
        A run folder (``config.json`` + ``weights/``) of any registered network.
    out
        Destination file (folder for ``saved_model``); default
        :func:`default_output`. Never the run folder or above it; inside it,
        only ``RUN/export/``.
    format
        ``"onnx"``, ``"tflite"``, ``"saved_model"`` or ``"bioimageio"``.
    which
        ``"best"`` or ``"last"`` weights.
    opset
        ONNX opset (17 or 18).
    sizes
        Two (or more) square input sizes to verify at; use one that is not a
        power of two.
    tolerance
        Largest accepted max abs difference from Keras on the [0, 1] output
        (finite, > 0, < 1).
    overwrite
        Replace an existing output, only if an earlier export wrote it (see
        :func:`check_destination`).
    quantize
        ``"float16"`` (tflite, onnx), ``"int8"`` or ``"int8-full"`` (tflite): a quantised
        artefact, accepted on PSNR against the Keras float output instead of
        ``tolerance`` (:mod:`dfcan_tf.export.quantize`).
    min_psnr
        The PSNR budget in dB for ``quantize`` (default 40 for float16, 30
        for int8 and int8-full); an artefact below it is refused and nothing is written.
    progress
        Print one line per stage (``[1/4] loading …`` to ``[4/4] wrote …``),
        as ``dfcan export`` does.
    **kwargs
        ``tflite``: ``fixed_size`` (see :func:`dfcan_tf.export.tflite.write_tflite`);
        ``bioimageio``: passed to :func:`dfcan_tf.export.bioimageio.write_bioimageio`
        (``name``, ``authors``, ``test_run``...).

    Returns
    -------
    ExportResult
        Path, format and the measured differences.

    Raises
    ------
    DfcanError
        Missing, corrupt or mismatched run folder (or non-finite weights);
        bad option values; an output that may not be written or replaced
        (checked before any work); conversion failure; an artefact that does
        not match Keras or misses its PSNR budget (nothing is left on disk then).
    """
    if format not in FORMATS:
        raise DfcanError(f"format must be one of {FORMATS}. Received: format={format!r}")
    allowed = {"tflite": {"fixed_size"}, "bioimageio": {"name", "authors", "test_size", "test_run"}}.get(format, set())
    unknown = sorted(set(kwargs) - allowed)
    if unknown:
        raise DfcanError(f"options {unknown} do not apply to format {format!r}")
    check_options(sizes, tolerance, opset, fixed_size=kwargs.get("fixed_size"))
    from dfcan_tf.export.quantize import check_quantize

    check_quantize(format, quantize, min_psnr)
    out = Path(out) if out is not None else default_output(run_dir, format, quantize)
    check_destination(run_dir, out, format, overwrite=overwrite)
    _say(progress, 1, f"loading {run_dir} ({which} weights) and building the network")
    src = open_run(run_dir, which)
    if progress:
        print(f"      {src.config.architecture}, {src.reference.count_params():,} parameters, {src.channels} input "
              f"channel{'s' if src.channels > 1 else ''}, scale x{src.scale}; weights {src.weights_file}", flush=True)
    _say(progress, 2, _conversion_text(format, opset, quantize, sizes, kwargs.get("fixed_size"),
                                       kwargs.get("test_run", True)))
    result = _write(src, out, format, opset=opset, sizes=tuple(sizes), tolerance=tolerance, quantize=quantize,
                    min_psnr=min_psnr, **kwargs)
    _say(progress, 3, _verified_text(result))
    sha = result.extra.get("sha256")
    _say(progress, 4, f"wrote {result.path}" + (f" (SHA-256 {sha[:16]}…, recorded with its verification)" if sha else ""))
    return result


def _write(src, out: Path, format: str, *, opset: int, sizes: tuple[int, ...], tolerance: float,
           quantize: str | None, min_psnr: float | None, **kwargs: Any) -> ExportResult:
    """Convert, verify and write with the format's writer (nothing is left on disk on failure)."""
    common = {"sizes": sizes, "tolerance": tolerance}
    if format == "onnx":
        from dfcan_tf.export.onnx import write_onnx

        return write_onnx(src, out, opset=opset, quantize=quantize, min_psnr=min_psnr, **common)
    if format == "tflite":
        from dfcan_tf.export.tflite import write_tflite

        return write_tflite(src, out, quantize=quantize, min_psnr=min_psnr, **common, **kwargs)
    if format == "saved_model":
        from dfcan_tf.export.saved_model import write_saved_model

        return write_saved_model(src, out, **common)
    from dfcan_tf.export.bioimageio import write_bioimageio

    return write_bioimageio(src, out, opset=opset, **common, **kwargs)
