"""What every exporter shares: the run opened for export, the Keras reference, verification, staged writes.

The contract (``docs/export.md#contract``, ``docs/export.md#verification``):

1. rebuild the run's network in its *portable* form — for a network with a
   ``spectrum`` field (DFCAN, DFGAN generator) that is ``spectrum="dft"``, the
   sampled DFT as matrix products; any other registered network is exported
   as it is — with the same weights;
2. convert it into a temporary file or folder next to the destination
   (:func:`staged`);
3. run the artefact in its own runtime on a random batch and on a simulated,
   microscopy-like image at two sizes, one of them not a power of two, and
   compare with the Keras reference (the run's network as trained,
   :func:`compare`);
4. rename the artefact onto the destination only if every comparison is
   within ``tolerance``; otherwise delete it and raise :class:`DfcanError`.
"""

from __future__ import annotations

import dataclasses
import os
import shutil
import tempfile
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from dfcan_tf import safety
from dfcan_tf.errors import DfcanError
from dfcan_tf.export.records import COMMAND, sha256_of, weights_file
from dfcan_tf.inference.backends import INPUT_NAME, OUTPUT_NAME, compiled

TOLERANCE = 1e-4
# 64: a power of two below size_psc=128 (the spectrum resize upsamples); 150: not a power of
# two and above size_psc (the resize downsamples, so the sampled DFT really samples).
VERIFY_SIZES = (64, 150)
MIN_VERIFY_SIZE, MAX_VERIFY_SIZE = 8, 2048
PORTABLE_SPECTRUM = "dft"

Runner = Callable[[np.ndarray], np.ndarray]


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
    """What an export wrote and how well it matched Keras."""

    path: Path
    format: str
    checks: list[Check] = field(default_factory=list)
    tolerance: float | None = TOLERANCE  # None for a quantised export (accepted on PSNR, extra["quantization"])
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def max_abs_diff(self) -> float:
        return max((c.max_abs_diff for c in self.checks), default=float("nan"))

    def summary(self) -> str:
        sizes = ", ".join(f"{c.kind} {c.shape[1]}x{c.shape[2]}: {c.max_abs_diff:.1e}" for c in self.checks)
        quant = self.extra.get("quantization")
        if quant:
            ratio = quant["size_bytes"] / quant["float_size_bytes"] if quant.get("float_size_bytes") else float("nan")
            return (f"wrote {self.path} ({self.format}, {quant['type']}): {quant['size_bytes'] / 1e6:.3f} MB "
                    f"(float32 {quant['float_size_bytes'] / 1e6:.3f} MB, x{ratio:.2f}); PSNR vs Keras float "
                    f"{quant['psnr_db']:.1f} dB >= {quant['min_psnr_db']:g} dB; {_speed(quant)}max |artefact - keras| = "
                    f"{self.max_abs_diff:.2e} [{sizes}]")
        return (f"wrote {self.path} ({self.format}); max |artefact - keras| = {self.max_abs_diff:.2e} "
                f"<= {self.tolerance:g} [{sizes}]")


def _speed(quant: dict) -> str:
    """``"0.123 s per 150x150 image (float32 0.234 s, x1.90); "`` when the export was timed, else ``""``."""
    seconds, base, n = quant.get("seconds"), quant.get("float_seconds"), quant.get("timed_size")
    if not n or seconds is None or not np.isfinite(seconds):
        return ""
    if base is None or not np.isfinite(base):
        return f"{seconds:.3f} s per {n}x{n} image; "
    return f"{seconds:.3f} s per {n}x{n} image (float32 {base:.3f} s, x{base / seconds:.2f} faster); "


# --------------------------------------------------------------------------------------------
# inputs used for verification
# --------------------------------------------------------------------------------------------

def simulated_image(size: int | tuple[int, int], channels: int = 1, *, seed: int = 0) -> np.ndarray:
    """A microscopy-like test image ``(H, W, C)`` in [0, 1].

    Filaments and puncta blurred by a Gaussian PSF with shot-like noise; for
    ``channels > 1`` the frames are the same object under sinusoidal
    illumination (``channels`` orientations × phases, as raw SIM frames), so
    the spectrum has the side bands Fourier attention sees on SIM data.
    Min-max normalised over the whole stack (``docs/data.md#normalisation``).
    """
    from scipy import ndimage

    from dfcan_tf.data.normalize import Normalizer

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
    return Normalizer(eps=1e-12).normalize(np.stack(frames, axis=-1))


def verification_inputs(channels: int, sizes: Sequence[int] = VERIFY_SIZES, *, seed: int = 0,
                        random_batch: int = 2) -> Iterator[tuple[str, np.ndarray]]:
    """Yield ``(kind, batch)``: per size a random batch (2 images) and a simulated image (batch of 1)."""
    rng = np.random.default_rng(seed)
    for size in sizes:
        yield "random", rng.random((random_batch, size, size, channels), dtype=np.float32)
        yield "simulated", simulated_image(size, channels, seed=seed + size)[None]


def compare(artefact: Runner, reference: Runner, channels: int, scale: int, sizes: Sequence[int] = VERIFY_SIZES,
            tolerance: float = TOLERANCE, what: str = "artefact", twin: Runner | None = None,
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

def with_spectrum(model: Any, config: Any, spectrum: str) -> Any:
    """``model`` with Fourier attention computed by ``spectrum``, same weights; ``model`` itself if it has none."""
    from dfcan_tf.nets import registry

    if getattr(config, "spectrum", spectrum) == spectrum:
        return model
    twin = registry.build(dataclasses.replace(config, spectrum=spectrum))
    twin.set_weights(model.get_weights())
    return twin


@dataclass
class Source:
    """A run folder opened for export: reference (as trained) and portable networks, same weights."""

    run: Any  # dfcan_tf.runs.Run
    reference: Any  # keras.Model as trained
    portable: Any  # keras.Model in its exportable form (spectrum="dft" where the config has a spectrum)
    weights_file: Path | None = None  # the weights file loaded
    weights_sha256: str | None = None  # its SHA-256, read before and after loading

    @property
    def config(self) -> Any:
        return self.run.model_config

    @property
    def channels(self) -> int:
        return self.config.input_channels

    @property
    def scale(self) -> int:
        return self.config.scale

    def twin(self) -> Runner | None:
        """Keras with the other spectrum method (for the failure message of :func:`compare`); None without one."""
        if not hasattr(self.config, "spectrum"):
            return None
        if self.portable is not self.reference:
            return compiled(self.portable, self.channels)
        built: list[Runner] = []

        def run(x: np.ndarray) -> np.ndarray:  # built only if a comparison fails
            if not built:
                built.append(compiled(with_spectrum(self.reference, self.config, "fft"), self.channels))
            return built[0](x)

        return run

    def normalization(self) -> dict[str, Any]:
        """The run's input normalisation, every field spelled out (``docs/data.md#normalisation``)."""
        from dfcan_tf.data.normalize import Normalizer

        return dataclasses.asdict(Normalizer.from_config(self.run.data.get("normalization")))

    def metadata(self) -> dict[str, Any]:
        """What an artefact carries about its run: model config, data settings, normalisation, source."""
        return {"model": self.config.to_dict(), "data": dict(self.run.data), "normalization": self.normalization(),
                "source_run": str(Path(self.run.path).resolve()), "weights": self.run.which}


def open_run(run_dir: str | os.PathLike, which: str = "best") -> Source:
    """Load a run for export, with the checksum of the weights file actually loaded.

    The weights file is hashed before and after loading: a file replaced in
    between (training still writing the run) would otherwise be recorded as
    the source of an artefact made from other weights.
    """
    from dfcan_tf.runs import load_run, weights_path

    candidate = weights_file(run_dir, which)
    before = sha256_of(candidate) if candidate.is_file() else None
    run = load_run(run_dir, which)
    loaded = weights_path(run_dir, run.which)
    after = sha256_of(loaded)
    if before != after:
        raise DfcanError(f"{loaded}: the weights changed while they were read (is training still writing "
                         f"{run_dir}?); export again when it is done")
    if any(not np.all(np.isfinite(np.asarray(w))) for w in run.model.get_weights()):
        raise DfcanError(f"{loaded}: the weights hold NaN or infinite values (the training diverged); "
                         f"nothing was exported. Use the other checkpoint (--which) or retrain")
    portable = with_spectrum(run.model, run.model_config, PORTABLE_SPECTRUM)
    return Source(run, run.model, portable, loaded, after)


def keras_reference(model: Any) -> Runner:
    """The Keras reference an artefact is compared with: ``model`` (as trained) as a numpy function."""
    return compiled(model, model.inputs[0].shape[-1])


def serving_function(model: Any, channels: int, *, as_dict: bool = False):
    """A ``tf.function`` with input ``(None, None, None, channels)`` named ``"input"`` (output dict for SavedModel)."""
    import tensorflow as tf

    spec = tf.TensorSpec((None, None, None, channels), tf.float32, name=INPUT_NAME)

    @tf.function(input_signature=[spec])
    def serve(x):
        y = model(x, training=False)
        return {OUTPUT_NAME: y} if as_dict else y

    return serve


@contextmanager
def staged(path: Path, *, folder: bool = False) -> Iterator[Path]:
    """Yield a temporary path (file or folder, not yet created) beside ``path``; move it onto ``path`` on success.

    The temporary lives in a private folder in the destination's folder, so the
    final rename stays on one file system and a failure leaves nothing behind.
    Leftovers of killed exports (``.dfcan-part-*`` older than an hour) are removed
    first. A ``folder`` output is moved with :func:`dfcan_tf.safety.replace_dir`
    (marked as export's, replacing only a folder export marked); a file output
    never replaces a folder, nor a file that is not a recorded export.
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
        elif path.exists() and safety.written_by(path) != COMMAND:
            raise DfcanError(f"{path} appeared while 'dfcan export' ran and is not its output; left untouched, "
                             "nothing written")
        else:
            os.replace(tmp, path)
    finally:
        shutil.rmtree(tmp_dir, ignore_errors=True)
