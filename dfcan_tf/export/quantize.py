"""Quantised exports: float16 weights (TFLite, ONNX) and int8 TFLite, checked against an accuracy budget.

A quantised artefact cannot match Keras to :data:`dfcan_tf.export.verify.TOLERANCE`; it is verified like a
float export (same inputs, same output shape) but accepted on PSNR instead: the PSNR (data range 1) of its
output against the Keras float output on the simulated verification images must reach the budget
(:data:`DEFAULT_MIN_PSNR`, ``--min-psnr``), otherwise nothing is written. See
``docs/export.md#quantised-exports``.

- ``float16``: weights stored as float16, computation in float32 (TFLite ``supported_types = [tf.float16]``;
  ONNX: float16 initialisers each followed by a ``Cast`` to float32, :func:`onnx_float16_weights`).
- ``int8`` (TFLite only): dynamic-range quantisation, int8 weights; LiteRT quantises activations on the
  fly per tensor for convolutions and matrix products and keeps the rest in float32.
- ``int8-full`` (TFLite only): full-integer, weights and activations in int8 where LiteRT has int8 kernels,
  with activation ranges calibrated on simulated microscopy-like patches (:func:`representative_patches`).
  The Fourier attention's power spectrum spans orders of magnitude that one fixed int8 range per tensor
  cannot hold, so for DFCAN this usually misses the 30 dB budget (measured figures in
  ``docs/export.md#quantised-exports``); it is meant for integer-only accelerators with a knowingly lowered
  ``--min-psnr``.

Input and output stay float32 in [0, 1] in every case, so the interface is that of the float model.
"""

from __future__ import annotations

import math
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from dfcan_tf.errors import DfcanError
from dfcan_tf.export import verify

QUANTIZATIONS = {"tflite": ("float16", "int8", "int8-full"), "onnx": ("float16",)}
DEFAULT_MIN_PSNR = {"float16": 40.0, "int8": 30.0, "int8-full": 30.0}
CALIBRATION_PATCHES = 16
CALIBRATION_SIZE = 64
MIN_FP16_ELEMENTS = 16  # smaller ONNX initialisers (shapes, axes, scalars) stay as they are


def check_quantize(format: str, quantize: str | None, min_psnr: float | None) -> float | None:
    """Validate ``--quantize`` / ``--min-psnr`` for ``format``; return the PSNR budget in dB (None unquantised)."""
    if quantize is None:
        if min_psnr is not None:
            raise DfcanError(f"--min-psnr applies to quantised exports only (--quantize). Received: "
                             f"--min-psnr {min_psnr}")
        return None
    allowed = QUANTIZATIONS.get(format, ())
    if quantize not in allowed:
        hint = f"use one of {list(allowed)}" if allowed else "quantised exports are tflite and onnx only"
        raise DfcanError(f"--quantize {quantize} is not available for --format {format}; {hint}")
    if min_psnr is None:
        return DEFAULT_MIN_PSNR[quantize]
    if isinstance(min_psnr, bool) or not isinstance(min_psnr, (int, float, np.floating)) \
            or not math.isfinite(min_psnr) or min_psnr <= 0:
        raise DfcanError(f"--min-psnr must be a finite number of dB > 0 (default {DEFAULT_MIN_PSNR[quantize]:g} "
                         f"for {quantize}). Received: --min-psnr {min_psnr!r}")
    return float(min_psnr)


def psnr(got: np.ndarray, want: np.ndarray) -> float:
    """PSNR in dB with data range 1 over a whole batch (outputs in [0, 1]); inf when identical."""
    err = float(np.mean((np.asarray(got, np.float64) - np.asarray(want, np.float64)) ** 2))
    return float("inf") if err == 0.0 else 10.0 * math.log10(1.0 / err)


@dataclass
class Budget:
    """A quantised artefact's accuracy: PSNR per verification input and the budget it met."""

    quantize: str
    min_psnr: float
    psnr: dict[str, float] = field(default_factory=dict)  # "kind HxW" -> dB
    size_bytes: int = 0
    float_size_bytes: int = 0
    seconds: float = float("nan")  # one call on the largest simulated verification image (warm)
    float_seconds: float = float("nan")  # the same for the float32 artefact
    timed_size: int = 0

    @property
    def worst_psnr(self) -> float:
        """Lowest PSNR on the simulated images (the budgeted inputs)."""
        values = [v for k, v in self.psnr.items() if k.startswith("simulated")]
        return min(values, default=float("nan"))

    def to_record(self) -> dict[str, Any]:
        return {"type": self.quantize, "psnr_db": self.worst_psnr, "min_psnr_db": self.min_psnr,
                "psnr_db_per_input": dict(self.psnr), "size_bytes": self.size_bytes,
                "float_size_bytes": self.float_size_bytes, "seconds": self.seconds,
                "float_seconds": self.float_seconds, "timed_size": self.timed_size}


def _seconds(runner: verify.Runner, x: np.ndarray) -> float:
    """Wall seconds of one warm call of ``runner`` on ``x`` (the best of two)."""
    best = float("inf")
    for _ in range(2):
        t0 = time.perf_counter()
        runner(x)
        best = min(best, time.perf_counter() - t0)
    return best


def check_budget(artefact: verify.Runner, src: verify.Source, sizes: Sequence[int], budget: Budget, what: str,
                 random_batch: int = 2, float_artefact: verify.Runner | None = None) -> list[verify.Check]:
    """Run ``artefact`` and ``src``'s Keras float network on the verification inputs; raise if the PSNR misses.

    Output shapes must be right for every input; the PSNR (data range 1) is
    recorded for every input and must reach ``budget.min_psnr`` on each
    simulated image (uniform noise is far outside what a calibrated int8
    model is meant for, so it is reported, not budgeted).
    """
    reference = verify.keras_reference(src.reference)
    checks = []
    timed = None
    for kind, x in verify.verification_inputs(src.channels, sizes, random_batch=random_batch):
        want = reference(x)
        try:
            got = np.asarray(artefact(x))
        except DfcanError:
            raise
        except Exception as exc:  # noqa: BLE001 - runtimes raise RuntimeError and others
            # Seen: LiteRT's XNNPACK cannot prepare the full DFCAN as int8-full ("failed to create XNNPACK runtime").
            raise DfcanError(f"{what}: the runtime cannot run the quantised model on a {kind} "
                             f"{x.shape[1]}x{x.shape[2]} input ({type(exc).__name__}: {str(exc)[:200]}); "
                             f"nothing was written") from None
        expected_shape = (x.shape[0], src.scale * x.shape[1], src.scale * x.shape[2], 1)
        if got.shape != expected_shape:
            raise DfcanError(f"{what}: output shape {got.shape} for input {x.shape}; expected {expected_shape}")
        got = got.astype(np.float64)
        if not np.all(np.isfinite(got)):
            raise DfcanError(f"{what}: non-finite outputs on a {kind} {x.shape[1]}x{x.shape[2]} input; "
                             f"nothing was written")
        value = psnr(got, want)
        budget.psnr[f"{kind} {x.shape[1]}x{x.shape[2]}"] = value
        if kind == "simulated" and value < budget.min_psnr:
            raise DfcanError(f"{what}: PSNR {value:.2f} dB against the Keras float output on a simulated "
                             f"{x.shape[1]}x{x.shape[2]} image is below the budget --min-psnr {budget.min_psnr:g} "
                             f"dB; nothing was written. Use a gentler quantisation (float16) or lower "
                             f"--min-psnr knowingly")
        checks.append(verify.Check(kind, tuple(x.shape), float(np.max(np.abs(got - want)))))
        if kind == "simulated" and x.shape[1] >= budget.timed_size:
            timed = x
            budget.timed_size = int(x.shape[1])
    # Speed next to the float model's, on the largest simulated image (the runtime already warm).
    if timed is None:
        return checks
    budget.seconds = _seconds(artefact, timed)
    if float_artefact is not None:
        budget.float_seconds = _seconds(float_artefact, timed)
    return checks


# --------------------------------------------------------------------------------------------
# TFLite
# --------------------------------------------------------------------------------------------

def representative_patches(channels: int, *, size: int = CALIBRATION_SIZE, count: int = CALIBRATION_PATCHES,
                           batch: int = 1) -> Iterator[list[np.ndarray]]:
    """Calibration data for ``int8-full``: ``count`` simulated patches ``(batch, size, size, C)`` in [0, 1].

    Seeds differ from the verification images' (:func:`dfcan_tf.export.verify.verification_inputs`), so the
    budget is checked on images the calibration never saw.
    """
    for i in range(count):
        x = np.stack([verify.simulated_image(size, channels, seed=10_000 + i * batch + b) for b in range(batch)])
        yield [x.astype(np.float32)]


def configure_tflite(converter: Any, quantize: str, channels: int, fixed_size: int | None = None) -> None:
    """Set a ``TFLiteConverter`` up for ``quantize`` (:data:`QUANTIZATIONS`); input/output stay float32."""
    import tensorflow as tf

    converter.optimizations = [tf.lite.Optimize.DEFAULT]
    if quantize == "float16":
        converter.target_spec.supported_types = [tf.float16]
        return
    if quantize == "int8":  # dynamic range: nothing to calibrate
        return
    size = fixed_size or CALIBRATION_SIZE
    converter.representative_dataset = lambda: representative_patches(channels, size=size)
    # int8 kernels where LiteRT has them; float builtins for the rest (no Select TF ops either way).
    converter.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS_INT8, tf.lite.OpsSet.TFLITE_BUILTINS]
    converter.inference_input_type = tf.float32
    converter.inference_output_type = tf.float32


# --------------------------------------------------------------------------------------------
# ONNX
# --------------------------------------------------------------------------------------------

def onnx_float16_weights(proto: Any, *, min_elements: int = MIN_FP16_ELEMENTS) -> int:
    """Store ``proto``'s float32 initialisers with ``min_elements`` or more as float16, in place; return how many.

    Each one becomes a float16 initialiser ``NAME/fp16`` and a ``Cast`` to
    float32 named as the original, placed first in the graph, so every
    consumer still sees float32 and the computation is unchanged apart from
    the weights' rounding (what a float16-weights TFLite model does too).
    """
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    graph = proto.graph
    graph_inputs = {i.name for i in graph.input}
    keep, casts, count = [], [], 0
    for init in graph.initializer:
        if init.data_type != TensorProto.FLOAT or init.name in graph_inputs:
            keep.append(init)
            continue
        array = numpy_helper.to_array(init)
        if array.size < min_elements or np.max(np.abs(array), initial=0.0) > np.finfo(np.float16).max:
            keep.append(init)
            continue
        half = numpy_helper.from_array(array.astype(np.float16), name=f"{init.name}/fp16")
        keep.append(half)
        casts.append(helper.make_node("Cast", [half.name], [init.name], name=f"{init.name}/to_fp32",
                                      to=TensorProto.FLOAT))
        count += 1
    del graph.initializer[:]
    graph.initializer.extend(keep)
    nodes = list(graph.node)
    del graph.node[:]
    graph.node.extend(casts + nodes)
    onnx.checker.check_model(proto)
    return count
