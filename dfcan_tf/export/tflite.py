"""TFLite (LiteRT) export: builtin ops only, no Select TF ops (``docs/export.md#formats``).

The input's shape signature is ``[-1, -1, -1, C]``: before running another
size, call ``interpreter.resize_tensor_input(0, [N, H, W, C])`` and
``allocate_tensors()`` (what :func:`dfcan_tf.inference.backends.tflite_runner`
does). ``fixed_size=N`` converts for a fixed ``(1, N, N, C)`` input instead,
for accelerator delegates that need static shapes (on the CPU it is no faster;
see ``export/README.md``). A TFLite file carries no run metadata: the
normalisation is in export's record next to it (``export/litert_predict.py``
reads it there).
"""

from __future__ import annotations

import tempfile
from pathlib import Path
from typing import Any

from dfcan_tf.errors import DfcanError
from dfcan_tf.export import verify
from dfcan_tf.export.records import record, sha256_of
from dfcan_tf.inference.backends import INPUT_NAME, tflite_runner


def to_tflite_bytes(model: Any, channels: int, fixed_size: int | None = None, quantize: str | None = None) -> bytes:
    """Convert a (portable) Keras SR network to a TFLite flatbuffer with builtin ops only.

    ``quantize`` (``"float16"`` or ``"int8"``) sets the converter up as
    :func:`dfcan_tf.export.quantize.configure_tflite` describes; input and
    output stay float32.

    By default the input's shape signature stays ``[-1, -1, -1, C]``; resize
    it at run time with ``resize_tensor_input``. ``fixed_size=N`` converts for
    ``(1, N, N, C)`` only (tile larger images). The concrete function is
    converted without passing the Keras model (passing it loses the weights
    with Keras 3).
    """
    import tensorflow as tf

    if fixed_size:
        inner = tf.function(lambda x: model(x, training=False))
        concrete = inner.get_concrete_function(
            tf.TensorSpec((1, fixed_size, fixed_size, channels), tf.float32, name=INPUT_NAME))
    else:
        concrete = verify.serving_function(model, channels).get_concrete_function()
    converter = tf.lite.TFLiteConverter.from_concrete_functions([concrete])
    converter.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS]
    if quantize:
        from dfcan_tf.export.quantize import configure_tflite

        configure_tflite(converter, quantize, channels, fixed_size)
    try:
        return converter.convert()
    except Exception as exc:  # noqa: BLE001 - the converter raises ConverterError and others
        what = f" ({quantize} quantisation)" if quantize else ""
        raise DfcanError(f"TFLite conversion with builtin ops only{what} failed: {exc}") from None


def write_tflite(src: verify.Source, out: Path, *, sizes=verify.VERIFY_SIZES, tolerance: float = verify.TOLERANCE,
                 fixed_size: int | None = None, quantize: str | None = None,
                 min_psnr: float | None = None) -> verify.ExportResult:
    """Convert ``src``'s portable network to ``out`` (.tflite), verify it against Keras, record it.

    With ``fixed_size`` the model is verified at that one size (a random and a
    simulated image). With ``quantize`` (``"float16"``, ``"int8"``) it is
    accepted on PSNR against the Keras float output instead of ``tolerance``
    (``min_psnr`` dB, default per :data:`dfcan_tf.export.quantize.DEFAULT_MIN_PSNR`).
    """
    data = to_tflite_bytes(src.portable, src.channels, fixed_size, quantize)
    if fixed_size:
        sizes = (fixed_size,)
    if quantize:
        return _write_quantized(src, out, data, sizes=sizes, fixed_size=fixed_size, quantize=quantize,
                                min_psnr=min_psnr)
    with verify.staged(out) as tmp:
        tmp.write_bytes(data)
        checks = verify.compare(tflite_runner(tmp), verify.keras_reference(src.reference), src.channels,
                                src.scale, sizes, tolerance, what=f"TFLite export of {src.run.path}",
                                twin=src.twin(), random_batch=1 if fixed_size else 2)
        sha = sha256_of(tmp)
    return record(src, verify.ExportResult(out, "tflite", checks, tolerance, {"fixed_size": fixed_size}), sha)


def _write_quantized(src: verify.Source, out: Path, data: bytes, *, sizes, fixed_size: int | None, quantize: str,
                     min_psnr: float | None) -> verify.ExportResult:
    """Stage a quantised flatbuffer, check it against its PSNR budget, and record size and PSNR."""
    from dfcan_tf.export.quantize import Budget, check_budget, check_quantize

    float_data = to_tflite_bytes(src.portable, src.channels, fixed_size)
    budget = Budget(quantize, check_quantize("tflite", quantize, min_psnr), size_bytes=len(data),
                    float_size_bytes=len(float_data))
    with verify.staged(out) as tmp, tempfile.TemporaryDirectory(prefix="dfcan-float-") as scratch:
        tmp.write_bytes(data)
        float_path = Path(scratch) / "float32.tflite"  # timed next to the quantised model, then removed
        float_path.write_bytes(float_data)
        checks = check_budget(tflite_runner(tmp), src, sizes, budget, f"TFLite {quantize} export of {src.run.path}",
                              random_batch=1 if fixed_size else 2, float_artefact=tflite_runner(float_path))
        sha = sha256_of(tmp)
    result = verify.ExportResult(out, "tflite", checks, None,
                                 {"fixed_size": fixed_size, "quantization": budget.to_record()})
    return record(src, result, sha)

