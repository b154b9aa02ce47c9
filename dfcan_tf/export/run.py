"""Export a run folder to ONNX, TFLite (LiteRT), SavedModel or a bioimage.io package, verified against Keras.

Every exporter follows the same contract:

1. rebuild the run's network with the *portable* Fourier attention
   (``spectrum="dft"``, the sampled DFT as matrix products: see
   :mod:`dfcan_tf.nets.layers`) and the same weights;
2. convert it into a temporary file or folder next to the destination;
3. run the artefact in its own runtime on a random batch and on a simulated,
   microscopy-like image at two sizes, one of them not a power of two, and
   compare with the Keras reference (the run's network as trained);
4. rename the artefact onto the destination only if every comparison is
   within ``tolerance`` (max abs difference on the [0, 1] output, 1e-4 by
   default); otherwise delete it and raise :class:`DfcanError`.

Formats
-------
``onnx``
    tf2onnx from a ``tf.function`` with the signature
    ``TensorSpec((None, None, None, C))``: batch, height and width are
    dynamic; opset 17 by default (tf2onnx 1.17 goes up to 18). Input
    ``"input"`` (N, H, W, C) float32 in [0, 1], output ``"output"``
    (N, s·H, s·W, 1). The run's configuration is stored in the model's
    metadata (``dfcan_tf.config``), so a consumer can read the scale.
``tflite``
    ``TFLiteConverter`` from the same concrete function, builtin ops only
    (no Select TF ops). The input's shape signature is ``[-1, -1, -1, C]``:
    before running another size, call
    ``interpreter.resize_tensor_input(0, [N, H, W, C])`` and
    ``allocate_tensors()`` (what :func:`load_backend` does). ``--tflite-size N``
    converts for a fixed ``(1, N, N, C)`` input instead (for accelerator
    delegates that need static shapes); on the CPU it is no faster (502²:
    5.97 s fixed vs 6.23 s dynamic).
``saved_model``
    A TF2 SavedModel with one signature, ``serving_default``:
    ``{"input": (N, H, W, C)} -> {"output": (N, s·H, s·W, 1)}``.
``bioimageio``
    A bioimage.io model package (``.zip``, format 0.5): ``rdf.yaml``, ONNX and
    SavedModel weights, test input/output tensors, a cover and a model card.
    The input pre-processing (min-max normalisation, ``scale_range`` 0–100 %)
    is declared in the RDF; the output is the network's sigmoid in (0, 1)
    (the min-max stretch ``dfcan predict`` applies for 16-bit TIFF is
    described in the card, see :func:`export_bioimageio`). Validated with
    ``bioimageio.spec`` and test-run with ``bioimageio.core`` before it is kept.

Your files and the run folder
-----------------------------
The destination is checked before any work starts: an existing folder where
a file is expected is always refused; an existing output is replaced only
with ``overwrite`` / ``--overwrite`` and only if an earlier ``dfcan export``
wrote it (the manifest :data:`dfcan_tf.safety.MANIFEST` next to a file, the
marker inside a SavedModel folder). An output never is, holds or lies above
the run folder; inside it, only ``RUN/export/`` is written.

Every export records, in the manifest next to the artefact (for the default
outputs that is ``RUN/export/.dfcan-outputs.json``, in the run folder), the
format, the SHA-256 of the weights file it was made from, the artefact's own
SHA-256 and the verification result. :func:`load_backend` uses an artefact of
a run folder only when that record matches the current weights and the file
on disk, so a copied-in, stale or edited artefact is refused, never run.

Timings and the FLOP count of the network are printed by
:func:`benchmark_backends` (``dfcan benchmark predict``).
"""

from __future__ import annotations

import argparse
import hashlib
import json
import math
import os
import shutil
import tempfile
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from dfcan_tf import safety
from dfcan_tf.errors import DfcanError
from dfcan_tf.nets import registry

COMMAND = "export"
FORMATS = ("onnx", "tflite", "saved_model", "bioimageio")
BACKENDS = ("keras", "onnx", "tflite", "saved_model")
SUFFIXES = {"onnx": ".onnx", "tflite": ".tflite", "saved_model": "", "bioimageio": ".zip"}
DEFAULT_OPSET = 17
MAX_OPSET = 18  # the highest tf2onnx 1.17 converts to on this stack
TOLERANCE = 1e-4
# 64: a power of two below size_psc=128 (the spectrum resize upsamples); 150: not a power of
# two and above size_psc (the resize downsamples, so the sampled DFT really samples).
VERIFY_SIZES = (64, 150)
MIN_VERIFY_SIZE, MAX_VERIFY_SIZE = 8, 2048
INPUT_NAME = "input"
OUTPUT_NAME = "output"
METADATA_KEY = "dfcan_tf.config"


# --------------------------------------------------------------------------------------------
# results
# --------------------------------------------------------------------------------------------

@dataclass
class Check:
    """One comparison of an artefact with Keras."""

    kind: str  # "random" or "simulated"
    shape: tuple[int, ...]
    max_abs_diff: float


@dataclass
class ExportResult:
    """What :func:`export_run` wrote and how well it matched Keras."""

    path: Path
    format: str
    checks: list[Check] = field(default_factory=list)
    tolerance: float = TOLERANCE
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def max_abs_diff(self) -> float:
        return max((c.max_abs_diff for c in self.checks), default=float("nan"))

    def summary(self) -> str:
        sizes = ", ".join(f"{c.kind} {c.shape[1]}x{c.shape[2]}: {c.max_abs_diff:.1e}" for c in self.checks)
        return (f"wrote {self.path} ({self.format}); max |artefact - keras| = {self.max_abs_diff:.2e} "
                f"<= {self.tolerance:g} [{sizes}]")


# --------------------------------------------------------------------------------------------
# inputs used for verification
# --------------------------------------------------------------------------------------------

def simulated_image(size: int | tuple[int, int], channels: int = 1, *, seed: int = 0) -> np.ndarray:
    """A microscopy-like test image ``(H, W, C)`` in [0, 1].

    Filaments and puncta blurred by a Gaussian PSF with shot-like noise; for
    ``channels > 1`` the frames are the same object under sinusoidal
    illumination (``channels`` orientations × phases, as raw SIM frames), so
    the spectrum has the side bands Fourier attention sees on SIM data.
    Normalised to [0, 1] over the whole stack, as the reference does.
    """
    from scipy import ndimage

    h, w = (size, size) if isinstance(size, int) else size
    rng = np.random.default_rng(seed)
    obj = np.zeros((h, w), np.float64)
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float64)
    for _ in range(max(3, (h * w) // 600)):  # filaments: random smooth curves
        x0, y0 = rng.uniform(0, w), rng.uniform(0, h)
        angle, curve = rng.uniform(0, np.pi), rng.normal(0, 0.02)
        for t in np.linspace(-0.7, 0.7, 4 * max(h, w)) * max(h, w):
            a = angle + curve * t
            px, py = round(x0 + t * np.cos(a)), round(y0 + t * np.sin(a))
            if 0 <= px < w and 0 <= py < h:
                obj[py, px] = 1.0
    spots = rng.integers(0, [h, w], size=(max(2, (h * w) // 300), 2))
    obj[spots[:, 0], spots[:, 1]] += rng.uniform(0.5, 2.0, len(spots))
    frames = []
    n_orient = max(1, round(np.sqrt(channels)))
    for c in range(channels):
        if channels == 1:
            illum = 1.0
        else:
            theta = np.pi * (c // n_orient) / n_orient
            phase = 2 * np.pi * (c % n_orient) / n_orient
            k = 2 * np.pi / 5.0  # period of 5 px, near the band edge
            illum = 1.0 + 0.8 * np.cos(k * (xx * np.cos(theta) + yy * np.sin(theta)) + phase)
        frame = ndimage.gaussian_filter(obj * illum, 1.6, mode="reflect") + 0.02
        frames.append(rng.poisson(frame * 200.0) / 200.0)
    stack = np.stack(frames, axis=-1)
    stack = (stack - stack.min()) / max(stack.max() - stack.min(), 1e-12)
    return stack.astype(np.float32)


def verification_inputs(channels: int, sizes: Sequence[int] = VERIFY_SIZES, *, seed: int = 0,
                        random_batch: int = 2) -> Iterator[tuple[str, np.ndarray]]:
    """Yield ``(kind, batch)``: per size a random batch (2 images) and a simulated image (batch of 1)."""
    rng = np.random.default_rng(seed)
    for size in sizes:
        yield "random", rng.random((random_batch, size, size, channels), dtype=np.float32)
        yield "simulated", simulated_image(size, channels, seed=seed + size)[None]


def compare(artefact: Callable[[np.ndarray], np.ndarray], reference: Callable[[np.ndarray], np.ndarray],
            channels: int, scale: int, sizes: Sequence[int] = VERIFY_SIZES, tolerance: float = TOLERANCE,
            what: str = "artefact", twin: Callable[[np.ndarray], np.ndarray] | None = None,
            random_batch: int = 2) -> list[Check]:
    """Run ``artefact`` and ``reference`` on :func:`verification_inputs`; raise if any differs by > tolerance.

    ``twin`` (optional) is another exact formulation of the reference (the
    Keras network with the other spectrum method). On failure the message
    also gives how far ``twin`` is from ``reference`` on the same input: when
    that is of the same order, the network itself amplifies float32
    round-off (seen with the untrained 50-block DFGAN generator on uniform
    noise), not the export.
    """
    checks = []
    for kind, x in verification_inputs(channels, sizes, random_batch=random_batch):
        want = reference(x)
        got = np.asarray(artefact(x))
        expected_shape = (x.shape[0], scale * x.shape[1], scale * x.shape[2], 1)
        if got.shape != expected_shape:
            raise DfcanError(f"{what}: output shape {got.shape} for input {x.shape}; expected {expected_shape}")
        diff = float(np.max(np.abs(got.astype(np.float64) - want)))
        if not np.isfinite(diff) or diff > tolerance:
            note = ""
            if twin is not None:
                floor = float(np.max(np.abs(np.asarray(twin(x), np.float64) - want)))
                note = (f" (for scale: Keras with the FFT and with the DFT spectrum differ by {floor:.3g} on this "
                        f"input; if that is of the same order, the network amplifies float32 round-off and "
                        f"--tolerance may be raised knowingly)")
            raise DfcanError(f"{what}: does not match Keras on a {kind} {x.shape[1]}x{x.shape[2]} input: "
                             f"max abs difference {diff:.3g} > tolerance {tolerance:g}; nothing was written{note}")
        checks.append(Check(kind, tuple(x.shape), diff))
    return checks


# --------------------------------------------------------------------------------------------
# the model to export
# --------------------------------------------------------------------------------------------

@dataclass
class _Source:
    """A run folder opened for export: reference (as trained) and portable networks, same weights."""

    run: Any  # dfcan_tf.runs.Run
    reference: Any  # keras.Model with the run's own spectrum method
    portable: Any  # keras.Model with spectrum="dft"
    weights_file: Path | None = None  # the weights file loaded
    weights_sha256: str | None = None  # its SHA-256, read before and after loading

    @property
    def channels(self) -> int:
        return self.run.model_config.input_channels

    @property
    def scale(self) -> int:
        return self.run.model_config.scale

    def twin(self) -> Callable[[np.ndarray], np.ndarray] | None:
        """Keras with the other spectrum method (for the failure message of :func:`compare`)."""
        if self.portable is not self.reference:
            return _compiled(self.portable, self.channels)
        built: list[Callable[[np.ndarray], np.ndarray]] = []

        def run(x: np.ndarray) -> np.ndarray:  # built only if a comparison fails
            if not built:
                from dfcan_tf.nets.dfcan import with_spectrum

                built.append(_compiled(with_spectrum(self.reference, self.run.model_config, "fft"), self.channels))
            return built[0](x)

        return run

    def metadata(self) -> dict[str, Any]:
        return {"model": self.run.model_config.to_dict(), "data": dict(self.run.data),
                "source_run": str(Path(self.run.path).resolve()), "weights": self.run.which}


def _open_run(run_dir: str | os.PathLike, which: str = "best") -> _Source:
    """Load a run for export, with the checksum of the weights file actually loaded.

    The weights file is hashed before and after loading: a file replaced in
    between (training still writing the run) would otherwise be recorded as
    the source of an artefact made from other weights.
    """
    from dfcan_tf.nets.dfcan import with_spectrum
    from dfcan_tf.runs import load_run, weights_path

    candidate = _weights_file(run_dir, which)
    before = sha256_of(candidate) if candidate.is_file() else None
    run = load_run(run_dir, which)
    loaded = weights_path(run_dir, run.which)
    after = sha256_of(loaded)
    if before != after:
        raise DfcanError(f"{loaded}: the weights changed while they were read (is training still writing "
                         f"{run_dir}?); export again when it is done")
    if any(not np.all(np.isfinite(np.asarray(w))) for w in run.model.get_weights()):
        raise DfcanError(f"{loaded}: the weights hold NaN or infinite values (the training diverged); "
                         f"nothing was exported. Use the other checkpoint (--weights) or retrain")
    portable = with_spectrum(run.model, run.model_config, "dft")
    return _Source(run, run.model, portable, loaded, after)


def _weights_file(run_dir: str | os.PathLike, which: str = "best") -> Path:
    """The weights file :func:`dfcan_tf.runs.load_run` reads for ``which`` (the other one if it is missing)."""
    from dfcan_tf.runs import weights_path

    path = weights_path(run_dir, which)
    if path.is_file():
        return path
    other = weights_path(run_dir, "last" if which == "best" else "best")
    return other if other.is_file() else path


def sha256_of(path: str | os.PathLike) -> str:
    """SHA-256 (hex) of a file, or of a folder's files (relative names and contents, in sorted order).

    In a folder, the output marker (:data:`dfcan_tf.safety.MARKER`) at the top
    is left out: it is written when the folder is moved into place.
    """
    path = Path(path)

    def file_digest(f: Path) -> str:
        h = hashlib.sha256()
        with open(f, "rb") as fh:
            for block in iter(lambda: fh.read(1 << 20), b""):
                h.update(block)
        return h.hexdigest()

    if not path.is_dir():
        return file_digest(path)
    h = hashlib.sha256()
    for f in sorted(path.rglob("*")):
        rel = f.relative_to(path).as_posix()
        if f.is_dir() or rel == safety.MARKER:
            continue
        h.update(f"{rel}\0{file_digest(f)}\n".encode())
    return h.hexdigest()


def _keras_reference(model) -> Callable[[np.ndarray], np.ndarray]:
    return _compiled(model, model.inputs[0].shape[-1])


def _compiled(model, channels: int):
    """``f(x) -> numpy`` running ``model`` through one ``tf.function`` traced for every shape."""
    import tensorflow as tf

    fn = tf.function(lambda x: model(x, training=False),
                     input_signature=[tf.TensorSpec((None, None, None, channels), tf.float32)])
    return lambda x: fn(tf.constant(np.asarray(x, np.float32))).numpy()


def _serving_function(model, channels: int, *, as_dict: bool = False):
    import tensorflow as tf

    spec = tf.TensorSpec((None, None, None, channels), tf.float32, name=INPUT_NAME)

    @tf.function(input_signature=[spec])
    def serve(x):
        y = model(x, training=False)
        return {OUTPUT_NAME: y} if as_dict else y

    return serve


@contextmanager
def _staged(path: Path, *, folder: bool = False) -> Iterator[Path]:
    """Yield a temporary path (file or folder, not yet created) beside ``path``; move it onto ``path`` on success.

    The temporary lives in a private folder in the destination's folder, so the
    final rename stays on one file system and a failure leaves nothing behind.
    Leftovers of killed exports (``.part-*`` older than an hour) are removed
    first. A ``folder`` output is moved with :func:`dfcan_tf.safety.replace_dir`
    (marked as export's, replacing only a folder export marked); a file output
    never replaces a folder.
    """
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        safety.clean_stale_parts(path.parent)
        tmp_dir = Path(tempfile.mkdtemp(prefix=f"{safety.PART_PREFIX}{path.name}-", dir=path.parent))
    except OSError as exc:
        raise DfcanError(f"{path}: cannot write here ({exc.strerror or exc})") from None
    tmp = tmp_dir / path.name
    try:
        yield tmp
        if folder:
            safety.replace_dir(tmp, path, command=COMMAND)
        elif path.is_dir():
            raise DfcanError(f"{path} became a folder while 'dfcan export' ran; left untouched, nothing written")
        else:
            os.replace(tmp, path)
    finally:
        shutil.rmtree(tmp_dir, ignore_errors=True)


def check_options(sizes: Sequence[int] = VERIFY_SIZES, tolerance: float = TOLERANCE, opset: int = DEFAULT_OPSET,
                  fixed_size: int | None = None, threads: int | None = None) -> None:
    """Raise :class:`DfcanError` for a numeric option that would make the export or its check meaningless.

    ``sizes``: at least two different whole numbers of pixels in
    [:data:`MIN_VERIFY_SIZE`, :data:`MAX_VERIFY_SIZE`], one not a power of two;
    ``tolerance``: finite, > 0 and < 1 (outputs are in [0, 1], so 1 accepts
    anything); ``opset``: :data:`DEFAULT_OPSET`–:data:`MAX_OPSET`;
    ``fixed_size``: None or ≥ 8; ``threads``: None or ≥ 1.
    """
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
    if threads is not None and (not whole(threads) or threads < 1):
        raise DfcanError(f"threads must be a whole number ≥ 1. Received: threads={threads!r}")


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


def _record(src: _Source, result: ExportResult, sha256: str) -> ExportResult:
    """Record ``result`` in the manifest next to the artefact: what it was made from, its checksum, its check."""
    run_dir = Path(src.run.path)
    weights = src.weights_file
    try:
        weights_name = weights.relative_to(run_dir).as_posix() if weights is not None else None
    except ValueError:
        weights_name = str(weights)
    result.extra["sha256"] = sha256
    safety.record_output(
        result.path, COMMAND, format=result.format, sha256=sha256, run=str(run_dir.resolve()),
        weights_file=weights_name, weights_sha256=src.weights_sha256,
        verification={"passed": True, "max_abs_diff": result.max_abs_diff, "tolerance": result.tolerance,
                      "checks": [{"kind": c.kind, "shape": list(c.shape), "max_abs_diff": c.max_abs_diff}
                                 for c in result.checks]},
        **{k: v for k, v in result.extra.items() if k != "sha256"})
    return result


# --------------------------------------------------------------------------------------------
# ONNX
# --------------------------------------------------------------------------------------------

def to_onnx_proto(model, channels: int, *, opset: int = DEFAULT_OPSET, metadata: dict | None = None):
    """Convert a (portable) Keras SR network to an ONNX ``ModelProto`` with dynamic N, H, W.

    tf2onnx writes a model even when some ops have no ONNX equivalent, so the
    graph is checked for leftover TensorFlow ops here and the result must
    still be run (:func:`export_onnx` does both).
    """
    import tensorflow as tf
    import tf2onnx

    if not DEFAULT_OPSET <= opset <= MAX_OPSET:
        raise DfcanError(f"opset must be between {DEFAULT_OPSET} and {MAX_OPSET}. Received: opset={opset}")
    spec = (tf.TensorSpec((None, None, None, channels), tf.float32, name=INPUT_NAME),)
    proto, _ = tf2onnx.convert.from_function(_serving_function(model, channels), input_signature=spec, opset=opset)
    graph = proto.graph
    unsupported = sorted({n.op_type for n in graph.node if n.domain not in ("", "ai.onnx")})
    if unsupported:
        raise DfcanError(f"ONNX conversion left unsupported ops {unsupported}; is the model built with spectrum='dft'?")
    # Stable tensor names for consumers ("input" / "output").
    old = graph.output[0].name
    for node in graph.node:
        node.output[:] = [OUTPUT_NAME if o == old else o for o in node.output]
        node.input[:] = [OUTPUT_NAME if i == old else i for i in node.input]
    graph.output[0].name = OUTPUT_NAME
    if graph.input[0].name != INPUT_NAME:
        raise DfcanError(f"unexpected ONNX input name {graph.input[0].name!r}")
    proto.producer_name = "dfcan_tf"
    if metadata:
        entry = proto.metadata_props.add()
        entry.key, entry.value = METADATA_KEY, json.dumps(metadata)
    return proto


def export_onnx(run_dir: str | os.PathLike, out: str | os.PathLike, *, which: str = "best",
                opset: int = DEFAULT_OPSET, sizes: Sequence[int] = VERIFY_SIZES,
                tolerance: float = TOLERANCE, overwrite: bool = False, _source: _Source | None = None) -> ExportResult:
    """Export a run folder to ONNX (dynamic batch/height/width), verified against Keras. See :func:`export_run`."""
    out = Path(out)
    check_options(sizes, tolerance, opset)
    check_destination(run_dir, out, "onnx", overwrite=overwrite)
    src = _source or _open_run(run_dir, which)
    proto = to_onnx_proto(src.portable, src.channels, opset=opset, metadata=src.metadata())
    with _staged(out) as tmp:
        tmp.write_bytes(proto.SerializeToString())
        checks = compare(_onnx_runner(tmp), _keras_reference(src.reference), src.channels, src.scale, sizes,
                         tolerance, what=f"ONNX export of {src.run.path}", twin=src.twin())
        sha = sha256_of(tmp)
    return _record(src, ExportResult(out, "onnx", checks, tolerance, {"opset": opset}), sha)


def _onnx_runner(path: Path, threads: int | None = None):
    import onnxruntime as ort

    options = ort.SessionOptions()
    if threads:
        options.intra_op_num_threads = threads
        options.inter_op_num_threads = 1
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    try:
        session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
    except Exception as exc:  # noqa: BLE001 - onnxruntime raises its own exception types
        raise DfcanError(f"{path}: onnxruntime cannot load the model ({type(exc).__name__}: {exc})") from None
    name = session.get_inputs()[0].name
    return lambda x: session.run(None, {name: np.ascontiguousarray(x, np.float32)})[0]


# --------------------------------------------------------------------------------------------
# TFLite / LiteRT
# --------------------------------------------------------------------------------------------

def to_tflite_bytes(model, channels: int, fixed_size: int | None = None) -> bytes:
    """Convert a (portable) Keras SR network to a TFLite flatbuffer with builtin ops only.

    By default the input's shape signature stays ``[-1, -1, -1, C]``; resize
    it at run time with ``resize_tensor_input``. ``fixed_size=N`` converts for
    ``(1, N, N, C)`` only (for delegates that need static shapes; tile larger
    images). The concrete function is converted without passing the Keras
    model (passing it loses the weights with Keras 3).
    """
    import tensorflow as tf

    serve = _serving_function(model, channels)
    if fixed_size:
        inner = tf.function(lambda x: model(x, training=False))
        concrete = inner.get_concrete_function(
            tf.TensorSpec((1, fixed_size, fixed_size, channels), tf.float32, name=INPUT_NAME))
    else:
        concrete = serve.get_concrete_function()
    converter = tf.lite.TFLiteConverter.from_concrete_functions([concrete])
    converter.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS]
    try:
        return converter.convert()
    except Exception as exc:  # noqa: BLE001 - the converter raises ConverterError and others
        raise DfcanError(f"TFLite conversion with builtin ops only failed: {exc}") from None


def export_tflite(run_dir: str | os.PathLike, out: str | os.PathLike, *, which: str = "best",
                  sizes: Sequence[int] = VERIFY_SIZES, tolerance: float = TOLERANCE, fixed_size: int | None = None,
                  overwrite: bool = False, _source: _Source | None = None) -> ExportResult:
    """Export a run folder to TFLite (builtin ops), verified against Keras. See :func:`export_run`.

    Dynamic shape by default. ``fixed_size=N`` writes a ``(1, N, N, C)`` model
    instead, verified at that one size (a random and a simulated image); at
    502² it measured the same speed in LiteRT as the dynamic model resized to
    502² (5.97 vs 6.23 s), so it is only worth it for accelerators that need
    static shapes.
    """
    out = Path(out)
    if fixed_size is not None and (isinstance(fixed_size, bool) or not isinstance(fixed_size, (int, np.integer))
                                   or fixed_size < 8):
        raise DfcanError(f"fixed_size must be at least 8 pixels. Received: fixed_size={fixed_size!r}")
    check_options(sizes, tolerance, fixed_size=fixed_size)
    check_destination(run_dir, out, "tflite", overwrite=overwrite)
    src = _source or _open_run(run_dir, which)
    data = to_tflite_bytes(src.portable, src.channels, fixed_size)
    if fixed_size:
        sizes = (fixed_size,)
    with _staged(out) as tmp:
        tmp.write_bytes(data)
        checks = compare(_tflite_runner(tmp), _keras_reference(src.reference), src.channels, src.scale, sizes,
                         tolerance, what=f"TFLite export of {src.run.path}", twin=src.twin(),
                         random_batch=1 if fixed_size else 2)
        sha = sha256_of(tmp)
    return _record(src, ExportResult(out, "tflite", checks, tolerance, {"fixed_size": fixed_size}), sha)


def _tflite_runner(path: Path, threads: int | None = None):
    from ai_edge_litert.interpreter import Interpreter

    try:
        interpreter = Interpreter(model_path=str(path), num_threads=threads)
    except Exception as exc:  # noqa: BLE001 - LiteRT raises ValueError/RuntimeError
        raise DfcanError(f"{path}: LiteRT cannot load the model ({type(exc).__name__}: {exc})") from None
    detail = interpreter.get_input_details()[0]
    inp = detail["index"]
    out = interpreter.get_output_details()[0]["index"]
    fixed = tuple(int(d) for d in detail["shape"]) if -1 not in detail["shape_signature"] else None
    current: list[tuple[int, ...] | None] = [None]

    def run(x: np.ndarray) -> np.ndarray:
        x = np.ascontiguousarray(x, np.float32)
        if fixed is not None and x.shape != fixed:
            raise DfcanError(f"{path}: this TFLite model was exported for input shape {fixed} only "
                             f"(--tflite-size). Received: shape={x.shape}")
        if current[0] != x.shape:
            # Dynamic shape: resize, then re-plan memory (cheap next to inference).
            interpreter.resize_tensor_input(inp, list(x.shape), strict=False)
            interpreter.allocate_tensors()
            current[0] = x.shape
        interpreter.set_tensor(inp, x)
        interpreter.invoke()
        return interpreter.get_tensor(out).copy()

    return run


# --------------------------------------------------------------------------------------------
# SavedModel
# --------------------------------------------------------------------------------------------

def _write_saved_model(model, channels: int, path: Path) -> None:
    import keras

    archive = keras.export.ExportArchive()
    archive.track(model)
    archive.add_endpoint("serving_default", _serving_function(model, channels, as_dict=True))
    archive.write_out(str(path), verbose=False)


def _saved_model_runner(path: Path):
    import tensorflow as tf

    try:
        loaded = tf.saved_model.load(str(path))
        signature = loaded.signatures["serving_default"]
    except Exception as exc:  # noqa: BLE001 - tf.saved_model.load raises many types
        raise DfcanError(f"{path}: not a SavedModel with a serving_default signature ({exc})") from None
    return lambda x: signature(**{INPUT_NAME: tf.constant(np.asarray(x, np.float32))})[OUTPUT_NAME].numpy()


def export_saved_model(run_dir: str | os.PathLike, out: str | os.PathLike, *, which: str = "best",
                       sizes: Sequence[int] = VERIFY_SIZES, tolerance: float = TOLERANCE,
                       overwrite: bool = False, _source: _Source | None = None) -> ExportResult:
    """Export a run folder to a TF2 SavedModel (``serving_default``), verified. See :func:`export_run`.

    The folder carries export's marker (:data:`dfcan_tf.safety.MARKER`), so
    ``overwrite`` may replace it later; no other folder is ever replaced.
    """
    out = Path(out)
    check_options(sizes, tolerance)
    check_destination(run_dir, out, "saved_model", overwrite=overwrite)
    src = _source or _open_run(run_dir, which)
    with _staged(out, folder=True) as tmp:
        _write_saved_model(src.portable, src.channels, tmp)
        checks = compare(_saved_model_runner(tmp), _keras_reference(src.reference), src.channels, src.scale,
                         sizes, tolerance, what=f"SavedModel export of {src.run.path}", twin=src.twin())
        sha = sha256_of(tmp)
    return _record(src, ExportResult(out, "saved_model", checks, tolerance), sha)


# --------------------------------------------------------------------------------------------
# bioimage.io model package
# --------------------------------------------------------------------------------------------

_PAPER = {"text": "Qiao, C. et al. Evaluation and development of deep neural networks for image "
                  "super-resolution in optical microscopy. Nature Methods 18, 194-202 (2021).",
          "doi": "10.1038/s41592-020-01048-5"}
BIOIMAGEIO_TEST_SIZE = 64


def _minmax(x: np.ndarray, axes: tuple[int, ...], eps: float = 1e-6) -> np.ndarray:
    """bioimage.io ``scale_range`` with percentiles 0 and 100: ``(x - min) / (max - min + eps)``."""
    lo = x.min(axis=axes, keepdims=True)
    hi = x.max(axis=axes, keepdims=True)
    return ((x - lo) / (hi - lo + eps)).astype(np.float32)


def _model_card(src: _Source, name: str, checks: dict[str, list[Check]], opset: int) -> str:
    import keras
    import tensorflow as tf

    from dfcan_tf import __version__

    cfg = src.run.model_config
    train = src.run.config.get("train") or {}
    data = src.run.data
    task = data.get("task", "sim" if cfg.input_channels > 1 else "sisr")
    lines = [
        f"# {name}", "",
        (f"{'DFGAN generator' if cfg.architecture == 'dfgan_generator' else 'DFCAN'} (Deep Fourier Channel "
        f"Attention Network, Qiao et al., Nature Methods 2021) for "
        f"{'SIM reconstruction' if task == 'sim' else 'single-image super-resolution'} of fluorescence "
        f"microscopy images: {cfg.input_channels} input channel(s) "
        f"({'raw SIM frames' if cfg.input_channels > 1 else 'a wide-field image'}), "
        f"output {cfg.scale}x larger, one channel."), "",
        "## Architecture", "",
        f"- width {cfg.width}, {cfg.n_groups} residual groups x {cfg.n_blocks} Fourier channel attention blocks,",
        f"  spectrum gamma {cfg.gamma}, spectrum resized to {cfg.size_psc}x{cfg.size_psc}, reduction {cfg.reduction};",
        f"- {src.reference.count_params():,} parameters; sigmoid output in (0, 1).", "",
        "## Pre- and post-processing", "",
        "- input: min-max normalisation to [0, 1] over the whole image (all channels jointly),",
        "  `scale_range` with percentiles 0 and 100, as the authors' prediction code does;",
        "- output: the network's sigmoid output in (0, 1), not post-processed in this package; `dfcan predict`",
        "  (and the authors' code) additionally stretch it to [0, 1] by min-max before writing 16-bit TIFF.",
        "- The network sees the whole image: Fourier channel attention pools over the full field,",
        "  so tiles give slightly different results from whole-image prediction.", "",
        "## How the weights were made", "",
        f"- trained with dfcan_tf {__version__} (TensorFlow {tf.__version__}, Keras {keras.__version__});",
        f"- run folder `{Path(src.run.path).name}`, `{src.run.which}` weights;",
    ]
    for key in ("steps", "iterations", "batch_size", "lr", "loss", "dataset", "specimen", "seed"):
        if key in train:
            lines.append(f"- {key}: {train[key]}")
    for key in ("task", "normalization", "pixel_size_nm", "specimen", "dataset"):
        if key in data:
            lines.append(f"- data {key}: {data[key]}")
    if not train:
        lines.append("- the run folder records no training settings (untrained or externally trained weights);")
    lines += [
        "- Fourier attention in these weights is computed by a sampled DFT written as matrix products",
        "  (only the frequencies the spectrum resize reads), equal to the FFT used in training to ~1e-6;",
        f"- TensorFlow SavedModel written by Keras' ExportArchive; ONNX converted from it with tf2onnx (opset {opset}).",
        "", "## Validation", "",
        "Each weight format was run on random inputs and simulated microscopy images at two sizes and compared",
        "with the Keras model (max abs difference on the [0, 1] output):", "",
    ]
    for fmt, cs in checks.items():
        lines.append(f"- {fmt}: " + ", ".join(f"{c.kind} {c.shape[1]}x{c.shape[2]} {c.max_abs_diff:.1e}" for c in cs))
    lines += ["", "## Reference", "", _PAPER["text"], f"https://doi.org/{_PAPER['doi']}", ""]
    return "\n".join(lines)


def _cover(x: np.ndarray, y: np.ndarray, path: Path) -> None:
    """Input (nearest-upsampled, channel mean) beside the min-max stretched output, as an 8-bit PNG."""
    import imageio.v3 as iio

    scale = y.shape[0] // x.shape[0]
    wf = np.repeat(np.repeat(x.mean(axis=-1), scale, axis=0), scale, axis=1)
    wf = (wf - wf.min()) / max(float(wf.max() - wf.min()), 1e-12)
    sr = (y[..., 0] - y.min()) / max(float(y.max() - y.min()), 1e-12)
    pair = np.concatenate([wf, np.ones((wf.shape[0], 4)), sr], axis=1)
    iio.imwrite(path, (np.clip(pair, 0, 1) * 255).astype(np.uint8))


def _bioimageio_rdf(src: _Source, name: str, authors: list[dict], opset: int, test_size: int) -> dict:
    import tensorflow as tf

    cfg = src.run.model_config
    pixel_um = float(src.run.data.get("pixel_size_nm", 62.6)) / 1000.0
    c = cfg.input_channels
    channel_names = ["wide_field"] if c == 1 else [f"frame{i}" for i in range(c)]
    space = {"type": "space", "unit": "micrometer"}
    return {
        "format_version": "0.5.4",
        "type": "model",
        "name": name,
        "description": (f"{'DFGAN generator' if cfg.architecture == 'dfgan_generator' else 'DFCAN'} "
                        f"super-resolution ({c} channel(s) in, x{cfg.scale}), exported by dfcan_tf"),
        "authors": authors,
        "cite": [_PAPER],
        "license": "BSD-3-Clause",
        "tags": ["super-resolution", "fluorescence-light-microscopy", "structured-illumination-microscopy",
                 "dfcan", "2d", "onnx", "tensorflow"],
        "documentation": "README.md",
        "covers": ["cover.png"],
        "inputs": [{
            "id": INPUT_NAME,
            "description": "raw image, any intensity range; normalised to [0, 1] by min-max",
            "axes": [
                {"type": "batch"},
                {**space, "id": "y", "size": {"min": 16, "step": 1}, "scale": pixel_um},
                {**space, "id": "x", "size": {"min": 16, "step": 1}, "scale": pixel_um},
                {"type": "channel", "channel_names": channel_names},
            ],
            "test_tensor": {"source": "test_input.npy"},
            "data": {"type": "float32"},
            "preprocessing": [{"id": "scale_range",
                               "kwargs": {"axes": ["y", "x", "channel"], "min_percentile": 0.0,
                                          "max_percentile": 100.0}}],
        }],
        "outputs": [{
            "id": OUTPUT_NAME,
            "description": f"super-resolved image, {cfg.scale}x the input size, in (0, 1) (sigmoid)",
            "axes": [
                {"type": "batch"},
                {**space, "id": "y", "size": {"tensor_id": INPUT_NAME, "axis_id": "y"},
                 "scale": pixel_um / cfg.scale},
                {**space, "id": "x", "size": {"tensor_id": INPUT_NAME, "axis_id": "x"},
                 "scale": pixel_um / cfg.scale},
                {"type": "channel", "channel_names": ["super_resolution"]},
            ],
            "test_tensor": {"source": "test_output.npy"},
            "data": {"type": "float32", "range": [0.0, 1.0]},
            # No post-processing op: a sample-statistics `scale_range` on the output fails in
            # bioimageio.core 0.11 (it computes output statistics during pre-processing). The
            # output is a sigmoid in (0, 1); min-max stretching for display is described in the card.
        }],
        "weights": {
            "tensorflow_saved_model_bundle": {
                "source": "tf_saved_model.zip",
                "tensorflow_version": tf.__version__.split("-")[0],
                "comment": "Keras model exported with keras.export.ExportArchive, signature serving_default",
            },
            "onnx": {
                "source": "weights.onnx",
                "opset_version": opset,
                "parent": "tensorflow_saved_model_bundle",
                "comment": "converted with tf2onnx; dynamic batch, height and width",
            },
        },
        "config": {"dfcan_tf": src.metadata()},
    }


def _check_bioimageio(package: Path, *, test_run: bool, workdir: Path) -> None:
    """Validate with bioimageio.spec and (``test_run``) test-run with bioimageio.core; raise on failure."""
    from bioimageio.spec import InvalidDescr, load_description

    package = package.resolve()
    descr = load_description(package, perform_io_checks=True)
    if isinstance(descr, InvalidDescr):
        raise DfcanError(f"{package}: bioimageio.spec rejects the package:\n{descr.validation_summary.format()}")
    if test_run:
        from bioimageio.core import test_model

        # bioimageio.core unzips SavedModel weights into a folder relative to the working
        # directory: run it from a scratch folder so nothing is left behind.
        cwd = os.getcwd()
        os.chdir(workdir)
        try:
            summary = test_model(package)
        finally:
            os.chdir(cwd)
        if summary.status != "passed":
            raise DfcanError(f"{package}: bioimageio.core test run failed:\n{summary.format()}")


def export_bioimageio(run_dir: str | os.PathLike, out: str | os.PathLike, *, which: str = "best",
                      opset: int = DEFAULT_OPSET, sizes: Sequence[int] = VERIFY_SIZES,
                      tolerance: float = TOLERANCE, name: str | None = None,
                      authors: Sequence[dict] | None = None, test_size: int = BIOIMAGEIO_TEST_SIZE,
                      test_run: bool = True, overwrite: bool = False, _source: _Source | None = None) -> ExportResult:
    """Write a bioimage.io model package (``.zip``): rdf.yaml, ONNX + SavedModel weights, test tensors, card.

    Both weight formats are verified against Keras as :func:`export_onnx` and
    :func:`export_saved_model` do; the package is then validated by
    ``bioimageio.spec`` and (``test_run=True``) test-run by
    ``bioimageio.core``, offline, before it is moved onto ``out``.

    Parameters
    ----------
    name
        Model name (default: from the architecture and the run folder's name).
    authors
        ``[{"name": ..., "affiliation": ...}]`` (default: the dfcan_tf contributors).
    test_size
        Side of the test input tensor (a simulated image).
    test_run
        Run ``bioimageio.core``'s model test (every weight format, several sizes).
    """
    import zipfile

    out = Path(out)
    check_options(sizes, tolerance, opset)
    check_destination(run_dir, out, "bioimageio", overwrite=overwrite)
    src = _source or _open_run(run_dir, which)
    cfg = src.run.model_config
    name = name or f"{'DFGAN' if cfg.architecture == 'dfgan_generator' else 'DFCAN'} x{cfg.scale} " \
                   f"{cfg.input_channels}-channel {Path(src.run.path).resolve().name}"
    authors = list(authors or [{"name": "dfcan_tf contributors"}])
    reference = _keras_reference(src.reference)
    with _staged(out) as tmp, tempfile.TemporaryDirectory(prefix=f"{safety.PART_PREFIX}bioimageio-",
                                                          dir=out.parent) as work:
        work = Path(work)
        checks: dict[str, list[Check]] = {}
        _write_saved_model(src.portable, src.channels, work / "saved_model")
        checks["tensorflow_saved_model_bundle"] = compare(
            _saved_model_runner(work / "saved_model"), reference, src.channels, src.scale, sizes, tolerance,
            what=f"bioimage.io SavedModel weights of {src.run.path}", twin=src.twin())
        proto = to_onnx_proto(src.portable, src.channels, opset=opset, metadata=src.metadata())
        (work / "weights.onnx").write_bytes(proto.SerializeToString())
        checks["onnx"] = compare(_onnx_runner(work / "weights.onnx"), reference, src.channels, src.scale, sizes,
                                 tolerance, what=f"bioimage.io ONNX weights of {src.run.path}", twin=src.twin())
        with zipfile.ZipFile(work / "tf_saved_model.zip", "w", zipfile.ZIP_DEFLATED) as zf:
            for f in sorted((work / "saved_model").rglob("*")):
                zf.write(f, f.relative_to(work / "saved_model"))
        # Test tensors: a raw-intensity simulated image, and what pre-processing + model + post-processing make of it.
        raw = (simulated_image(test_size, src.channels, seed=7) * 4000.0 + 100.0)[None].astype(np.float32)
        expected = reference(_minmax(raw, (1, 2, 3)))
        np.save(work / "test_input.npy", raw)
        np.save(work / "test_output.npy", expected)
        _cover(raw[0], expected[0], work / "cover.png")
        (work / "README.md").write_text(_model_card(src, name, checks, opset))
        rdf = _bioimageio_rdf(src, name, authors, opset, test_size)
        # JSON is valid YAML; no YAML writer needed.
        (work / "rdf.yaml").write_text(json.dumps(rdf, indent=2) + "\n")
        with zipfile.ZipFile(tmp, "w", zipfile.ZIP_DEFLATED) as zf:
            for member in ("rdf.yaml", "README.md", "cover.png", "weights.onnx", "tf_saved_model.zip",
                           "test_input.npy", "test_output.npy"):
                zf.write(work / member, member)
        _check_bioimageio(tmp, test_run=test_run, workdir=work)
        sha = sha256_of(tmp)
    short = {"tensorflow_saved_model_bundle": "savedmodel", "onnx": "onnx"}
    flat = [Check(f"{short[fmt]} {c.kind}", c.shape, c.max_abs_diff) for fmt, cs in checks.items() for c in cs]
    return _record(src, ExportResult(out, "bioimageio", flat, tolerance, {"opset": opset, "test_run": test_run}), sha)


# --------------------------------------------------------------------------------------------
# dispatch
# --------------------------------------------------------------------------------------------

def default_output(run_dir: str | os.PathLike, format: str) -> Path:
    """``RUN/export/model.onnx`` and the like (``RUN/export/bioimageio.zip`` for a package)."""
    name = "bioimageio" if format == "bioimageio" else "model"
    return Path(run_dir) / "export" / f"{name}{SUFFIXES[format]}"


def export_run(run_dir: str | os.PathLike, out: str | os.PathLike | None = None, format: str = "onnx", *,
               which: str = "best", opset: int = DEFAULT_OPSET, sizes: Sequence[int] = VERIFY_SIZES,
               tolerance: float = TOLERANCE, overwrite: bool = False, **kwargs: Any) -> ExportResult:
    """Export a run folder's network, verify the artefact against Keras, and write it atomically.

    Parameters
    ----------
    run_dir
        A run folder (``config.json`` + ``weights/``).
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
    **kwargs
        ``tflite``: ``fixed_size`` (see :func:`export_tflite`); ``bioimageio``:
        passed to :func:`export_bioimageio` (``name``, ``authors``, ``test_run``...).

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
        not match Keras (nothing is left on disk then).
    """
    if format not in FORMATS:
        raise DfcanError(f"format must be one of {FORMATS}. Received: format={format!r}")
    check_options(sizes, tolerance, opset, fixed_size=kwargs.get("fixed_size"))
    out = Path(out) if out is not None else default_output(run_dir, format)
    check_destination(run_dir, out, format, overwrite=overwrite)
    src = _open_run(run_dir, which)
    common = {"sizes": sizes, "tolerance": tolerance, "overwrite": overwrite, "_source": src}
    if format == "onnx":
        return export_onnx(run_dir, out, opset=opset, **common)
    if format == "tflite":
        return export_tflite(run_dir, out, **common, **kwargs)
    if format == "saved_model":
        return export_saved_model(run_dir, out, **common)
    return export_bioimageio(run_dir, out, opset=opset, **common, **kwargs)


# --------------------------------------------------------------------------------------------
# backends for prediction
# --------------------------------------------------------------------------------------------

@dataclass
class Backend:
    """A loaded network: ``backend(batch)`` maps (N, H, W, C) float32 to (N, s·H, s·W, 1)."""

    name: str
    path: Path
    run: Callable[[np.ndarray], np.ndarray]
    input_channels: int | None = None
    scale: int | None = None

    def __call__(self, batch: np.ndarray) -> np.ndarray:
        batch = np.asarray(batch, np.float32)
        if batch.ndim != 4:
            raise DfcanError(f"{self.name} backend expects a batch (N, H, W, C). Received: shape={batch.shape}")
        if self.input_channels is not None and batch.shape[-1] != self.input_channels:
            raise DfcanError(f"{self.path}: the model takes {self.input_channels} channel(s). "
                             f"Received: shape={batch.shape}")
        return self.run(batch)


def _is_run_folder(path: Path) -> bool:
    return path.is_dir() and (path / "config.json").is_file()


def load_backend(path_or_run: Any, backend: str = "keras", *, threads: int | None = None,
                 which: str = "best", spectrum: str | None = None) -> Backend:
    """Open a network for inference with ``backend``.

    Parameters
    ----------
    path_or_run
        A run folder (or :class:`dfcan_tf.runs.Run`), or an exported artefact
        (``.onnx`` file, ``.tflite`` file, SavedModel folder). With a run
        folder and ``backend`` ``"onnx"``/``"tflite"``/``"saved_model"``, the
        run's default export (``RUN/export/model.onnx``, ``.tflite``,
        ``model/``) is used, exported (and verified) first if missing. An
        existing one is used only if export's record of it (see
        :func:`check_recorded_export`) matches the current weights and the
        artefact on disk; otherwise :class:`DfcanError` says to re-export.
    backend
        ``"keras"``, ``"onnx"``, ``"tflite"`` (LiteRT) or ``"saved_model"``.
    threads
        Intra-op threads for onnxruntime / LiteRT (their default when None).
    which
        ``"best"`` or ``"last"`` weights of a run folder.
    spectrum
        Keras only: ``"fft"`` or ``"dft"`` to override how Fourier attention is
        computed (same weights; ``"dft"`` is faster in TensorFlow for images
        much larger than ``size_psc``); default: as the run was trained.

    Returns
    -------
    Backend
        Callable ``f(batch NHWC float32) -> NHWC``.
    """
    from dfcan_tf.runs import Run, weights_path

    if backend not in BACKENDS:
        raise DfcanError(f"backend must be one of {BACKENDS}. Received: backend={backend!r}")
    check_options(threads=threads)
    if isinstance(path_or_run, Run):
        if backend == "keras":
            cfg = path_or_run.model_config
            return Backend("keras", Path(path_or_run.path), _compiled(path_or_run.model, cfg.input_channels),
                           cfg.input_channels, cfg.scale)
        path_or_run = path_or_run.path
    path = Path(path_or_run)
    if not path.exists():
        raise DfcanError(f"{path}: no such run folder or exported model")
    channels = scale = None
    if _is_run_folder(path):
        from dfcan_tf.runs import load_run, read_run_config

        _, cfg = read_run_config(path)
        channels, scale = cfg.input_channels, cfg.scale
        if backend == "keras":
            run = load_run(path, which, spectrum=spectrum)
            return Backend("keras", path, _compiled(run.model, channels), channels, scale)
        weights_path(path, which)  # validates ``which``
        artefact = default_output(path, backend)
        if not artefact.exists() and not artefact.is_symlink():
            export_run(path, artefact, backend, which=which)
        check_recorded_export(path, artefact, backend, which)
        path = artefact
    elif backend == "keras":
        raise DfcanError(f"{path}: the keras backend needs a run folder (config.json + weights/)")
    if backend == "onnx":
        if path.suffix != ".onnx":
            raise DfcanError(f"{path}: the onnx backend needs a .onnx file or a run folder")
        runner = _onnx_runner(path, threads)
        channels = channels or _onnx_channels(path)
    elif backend == "tflite":
        if path.suffix != ".tflite":
            raise DfcanError(f"{path}: the tflite backend needs a .tflite file or a run folder")
        runner = _tflite_runner(path, threads)
    else:
        runner = _saved_model_runner(path)
    return Backend(backend, path, runner, channels, scale)


def check_recorded_export(run_dir: str | os.PathLike, artefact: str | os.PathLike, format: str,
                          which: str = "best") -> dict:
    """Return export's record of ``artefact`` if it may be used for ``run_dir``'s current ``which`` weights.

    The record (the manifest entry :func:`export_run` writes next to the
    artefact) must say ``dfcan export`` wrote it in ``format``, name the
    SHA-256 of the run's current weights file and the artefact's own SHA-256,
    and a passed verification. Anything else raises :class:`DfcanError` (an
    unrecorded artefact is never loaded: it could be anyone's model).
    """
    run_dir, artefact = Path(run_dir), Path(artefact)
    redo = f"dfcan export {run_dir} --format {format} --weights {which} --overwrite"
    entry = safety.output_record(artefact)
    if entry is None or entry.get("command") != COMMAND or entry.get("format") != format:
        raise DfcanError(f"{artefact}: not recorded as a verified '{format}' export of this run (copied in or "
                         f"written by something else?), so it is not loaded. Move it out of the way and run "
                         f"'dfcan export {run_dir} --format {format} --weights {which}'")
    weights = _weights_file(run_dir, which)
    if not weights.is_file():
        raise DfcanError(f"{run_dir}: no weights found (expected {weights})")
    if entry.get("weights_sha256") != sha256_of(weights):
        made_from = entry.get("weights_file") or "other weights"
        raise DfcanError(f"{artefact} is stale: it was exported from {made_from} with other contents than the "
                         f"current {weights} (retrained, or exported from another run). Re-export: {redo}")
    if entry.get("sha256") != sha256_of(artefact):
        raise DfcanError(f"{artefact} changed after it was exported and verified; it is not loaded. "
                         f"Re-export: {redo}")
    verification = entry.get("verification") or {}
    if verification.get("passed") is not True:
        raise DfcanError(f"{artefact}: its record holds no passed verification against Keras. Re-export: {redo}")
    return entry


def _onnx_channels(path: Path) -> int | None:
    import onnx

    model = onnx.load(str(path), load_external_data=False)
    dim = model.graph.input[0].type.tensor_type.shape.dim[-1]
    return dim.dim_value or None


# --------------------------------------------------------------------------------------------
# FLOPs and the inference benchmark
# --------------------------------------------------------------------------------------------

def count_flops(config, height: int, width: int) -> dict[str, float]:
    """FLOPs (multiply + add = 2) of one image through the SR network, as the portable graph computes it.

    Counted: every convolution (3×3 and 1×1, including the attention convs
    at ``size_psc²``) and the sampled-DFT matrix products of each Fourier
    attention as :func:`dfcan_tf.nets.layers._sampled_dft_spectrum` computes them:
    ``M_h = min(H, 2S)`` row frequencies (``S = size_psc``) and ``K`` distinct
    folded column frequencies; stage W ``(2K, W) × (W, C)`` per row, stage H
    ``(2·M_h, H) × (H, 2K·C)``. Not counted: bias adds, activations, the
    gathers and bilinear blend and other element-wise work (memory-bound,
    O(H·W·C) each).
    """
    import tensorflow as tf

    from dfcan_tf.nets.layers import _sample_plan, folded_frequencies

    c = config
    hw = height * width
    s = c.size_psc
    conv = 2 * hw * 9 * c.input_channels * c.width  # head
    per_block = 2 * (2 * hw * 9 * c.width * c.width)  # conv1, conv2
    attention = 2 * s * s * 9 * c.width * c.width + 2 * 2 * c.width * (c.width // c.reduction)
    fw = _sample_plan(tf.constant(width), s)[0]
    k = int(folded_frequencies(fw, tf.constant(width))[0].shape[0])
    m_h = min(height, 2 * s)
    dft = 2 * c.width * height * width * 2 * k + 2 * c.width * 2 * m_h * height * 2 * k
    n = c.n_groups * c.n_blocks
    conv += n * (per_block + attention)
    conv += 2 * hw * 9 * c.width * c.width * c.scale**2  # upsampling conv
    conv += 2 * hw * c.scale**2 * 9 * c.width  # output conv at the SR size
    return {"conv": float(conv), "dft": float(n * dft), "total": float(conv + n * dft)}


def _time(fn: Callable[[], Any], repeats: int) -> float:
    """Best of ``repeats`` timed calls after a warm-up (the least disturbed by other load on the machine)."""
    fn()  # warm-up: graph building, allocation, LiteRT planning
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return float(min(times))


def benchmark_backends(args: argparse.Namespace, sgemm: float) -> list[dict[str, Any]]:
    """Time Keras, onnxruntime and LiteRT on the same weights and inputs; print seconds and sgemm fractions.

    Full-size DFCAN (64 channels, 4×4 blocks, ×2, one input channel, seeded
    random weights) at 128², 256² and 502² (``args.quick``: a width-16 1×2
    DFCAN, 32² spectrum, at 64² and 96²), batch 1, ``args.threads`` threads, best of
    repeats after a warm-up, on a simulated microscopy image. Rows:

    - ``keras fft``: the network as trained (``tf.signal.fft2d`` spectrum);
    - ``keras``, ``onnxruntime``, ``litert``: the exported (sampled-DFT) network.

    The FLOP count is :func:`count_flops`
    (convolutions + DFT matmuls as implemented; the FFT row is given the
    sampled-DFT count for comparison); GFLOP/s is that count over the time and
    ``/sgemm`` its ratio to the measured matrix-multiply rate ``sgemm``.
    """
    import keras

    from dfcan_tf.nets.dfcan import DFCANConfig
    from dfcan_tf.runs import write_run

    threads = int(getattr(args, "threads", 2) or 2)
    quick = bool(getattr(args, "quick", False))
    if quick:
        cfg, sizes, repeats = DFCANConfig.dfcan(1, 2, width=16, n_groups=1, n_blocks=2, size_psc=32, reduction=4), \
            (64, 96), 1
    else:
        cfg, sizes, repeats = DFCANConfig.dfcan(1, 2), (128, 256, 502), 2
    keras.utils.set_random_seed(0)
    rows = []
    with tempfile.TemporaryDirectory(prefix="dfcan-bench-") as tmp:
        tmp = Path(tmp)
        run_dir = tmp / "run"
        write_run(run_dir, registry.build(cfg), cfg, which=("best",))
        src = _open_run(run_dir)
        verify = (32, 45)
        print("exporting (ONNX, TFLite)...", flush=True)
        onnx_path = export_onnx(run_dir, tmp / "m.onnx", sizes=verify, _source=src).path
        tflite_path = export_tflite(run_dir, tmp / "m.tflite", sizes=verify, _source=src).path
        reference = _compiled(src.reference, 1)
        runners = {
            "keras fft": (reference, count_flops),
            "keras": (_compiled(src.portable, 1), count_flops),
            "onnxruntime": (_onnx_runner(onnx_path, threads), count_flops),
            "litert": (_tflite_runner(tflite_path, threads), count_flops),
        }
        print(f"predict backends: {cfg.architecture} width {cfg.width}, {cfg.n_groups}x{cfg.n_blocks} blocks, "
              f"x{cfg.scale}, batch 1, {threads} threads, best of {repeats}; sgemm {sgemm:.1f} GFLOP/s")
        print("FLOPs: convolutions + DFT matmuls as implemented (2 per multiply-add); element-wise work not counted")
        print(f"{'backend':<20}{'size':>6}{'seconds':>10}{'GFLOP':>9}{'GFLOP/s':>9}{'/sgemm':>8}{'max|diff|':>11}")
        for size in sizes:
            x = simulated_image(size, 1, seed=size)[None]
            want = reference(x)
            # Other load on the machine slows sgemm and the networks alike: take the best rate
            # seen so far as the machine's, so fractions are never flattered by a slow sgemm.
            sgemm = max(sgemm, _sgemm_now(threads))
            for name, (fn, counter) in runners.items():
                flops = counter(cfg, size, size)["total"]
                seconds = _time(lambda fn=fn, x=x: fn(x), repeats)
                diff = float(np.max(np.abs(fn(x) - want)))
                rate = flops / seconds / 1e9
                rows.append({"backend": name, "size": size, "seconds": seconds, "gflop": flops / 1e9,
                             "gflops": rate, "fraction": rate / sgemm, "max_abs_diff": diff})
                print(f"{name:<20}{size:>6}{seconds:>10.3f}{flops / 1e9:>9.1f}{rate:>9.1f}{rate / sgemm:>8.2f}"
                      f"{diff:>11.1e}", flush=True)
    best = min((r for r in rows if r["size"] == sizes[-1]), key=lambda r: r["seconds"])
    for r in rows:  # restate every fraction against the best sgemm rate measured during the run
        r["fraction"] = r["gflops"] / sgemm
    print(f"fastest at {sizes[-1]}x{sizes[-1]}: {best['backend']} {best['seconds']:.3g} s, "
          f"{best['fraction']:.2f} of the best sgemm rate measured ({sgemm:.1f} GFLOP/s)")
    return rows


def _sgemm_now(threads: int) -> float:
    from dfcan_tf.benchmark.timing import sgemm_gflops

    return sgemm_gflops(repeats=2, threads=threads)


# --------------------------------------------------------------------------------------------
# `dfcan export`
# --------------------------------------------------------------------------------------------

def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("run", help="run folder (config.json + weights/)")
    parser.add_argument("--format", choices=FORMATS, default="onnx")
    parser.add_argument("-o", "--output", default=None,
                        help="destination (default: RUN/export/model.onnx, model.tflite, model/ or bioimageio.zip); "
                             "never the run folder, inside it only RUN/export/")
    parser.add_argument("--weights", choices=["best", "last"], default="best")
    parser.add_argument("--opset", type=int, default=DEFAULT_OPSET, help=f"ONNX opset ({DEFAULT_OPSET}-{MAX_OPSET})")
    parser.add_argument("--verify-sizes", type=int, nargs="+", default=list(VERIFY_SIZES), metavar="N",
                        help="square input sizes the artefact is checked at against Keras (default: %(default)s)")
    parser.add_argument("--tolerance", type=float, default=TOLERANCE,
                        help="largest max abs difference from Keras accepted (default: %(default)s)")
    parser.add_argument("--tflite-size", type=int, default=None, metavar="N",
                        help="tflite: convert for a fixed (1, N, N, C) input instead of a dynamic shape")
    parser.add_argument("--name", default=None, help="bioimage.io: model name")
    parser.add_argument("--no-test-run", action="store_true",
                        help="bioimage.io: skip the bioimageio.core test run (validation still runs)")
    parser.add_argument("--overwrite", action="store_true",
                        help="replace the output if an earlier 'dfcan export' wrote it (never another file or folder)")


def run_from_args(args: argparse.Namespace) -> int:
    extra: dict[str, Any] = {}
    if args.format == "bioimageio":
        extra = {"name": args.name, "test_run": not args.no_test_run}
    elif args.format == "tflite" and args.tflite_size is not None:
        extra = {"fixed_size": args.tflite_size}
    elif args.tflite_size is not None:
        raise DfcanError(f"--tflite-size applies to --format tflite only. Received: --format {args.format}")
    result = export_run(args.run, args.output, args.format, which=args.weights, opset=args.opset,
                        sizes=args.verify_sizes, tolerance=args.tolerance, overwrite=args.overwrite, **extra)
    print(result.summary())
    return 0
