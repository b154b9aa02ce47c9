"""ONNX export: tf2onnx from a ``tf.function`` with dynamic batch, height and width (``docs/export.md#formats``).

Input ``"input"`` (N, H, W, C) float32 in [0, 1], output ``"output"``
(N, s·H, s·W, 1); opset 17 by default (tf2onnx 1.17 goes up to 18). The run's
configuration and its input normalisation are stored in the model's metadata
(``dfcan_tf.config``), so a consumer can read the scale and normalise as the
network was trained (``export/onnx_predict.py`` does).
"""

from __future__ import annotations

import json
import tempfile
from pathlib import Path
from typing import Any

from dfcan_tf.errors import DfcanError
from dfcan_tf.export import verify
from dfcan_tf.export.records import record, sha256_of
from dfcan_tf.inference.backends import INPUT_NAME, OUTPUT_NAME, onnx_runner

DEFAULT_OPSET = 17
MAX_OPSET = 18  # the highest tf2onnx 1.17 converts to on this stack
METADATA_KEY = "dfcan_tf.config"


CONVERSION_ATTEMPTS = 3


def _probe_shapes(proto: Any, model: Any, channels: int) -> tuple[tuple, tuple]:
    """Output shapes of the converted graph (onnxruntime) and of ``model`` on a 2×16×16 zero batch."""
    import numpy as np
    import onnxruntime as ort

    x = np.zeros((2, 16, 16, channels), np.float32)
    session = ort.InferenceSession(proto.SerializeToString(), providers=["CPUExecutionProvider"])
    got = session.run(None, {session.get_inputs()[0].name: x})[0].shape
    return tuple(got), tuple(np.asarray(model(x, training=False)).shape)


def to_onnx_proto(model: Any, channels: int, *, opset: int = DEFAULT_OPSET, metadata: dict | None = None):
    """Convert a (portable) Keras SR network to an ONNX ``ModelProto`` with dynamic N, H, W.

    tf2onnx writes a model even when some ops have no ONNX equivalent, so the
    graph is checked for leftover TensorFlow ops here and the result must
    still be run (:func:`write_onnx` does both).
    """
    import tensorflow as tf
    import tf2onnx

    if not DEFAULT_OPSET <= opset <= MAX_OPSET:
        raise DfcanError(f"opset must be between {DEFAULT_OPSET} and {MAX_OPSET}. Received: opset={opset}")
    spec = (tf.TensorSpec((None, None, None, channels), tf.float32, name=INPUT_NAME),)
    # tf2onnx now and then gives the output an extra leading axis of 1 (seen as (1, N, sH, sW, 1) from
    # onnxruntime; the order of its graph rewrites is not fixed from one conversion to the next). The
    # conversion is checked on a small batch and redone, at most CONVERSION_ATTEMPTS times.
    for attempt in range(1, CONVERSION_ATTEMPTS + 1):
        proto, _ = tf2onnx.convert.from_function(verify.serving_function(model, channels), input_signature=spec,
                                                 opset=opset)
        got, want = _probe_shapes(proto, model, channels)
        if got == want:
            break
        if attempt == CONVERSION_ATTEMPTS:
            raise DfcanError(f"tf2onnx produced an ONNX graph whose output has shape {got} for a {want} Keras "
                             f"output, {attempt} times; nothing was written")
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


def write_onnx(src: verify.Source, out: Path, *, opset: int = DEFAULT_OPSET,
               sizes=verify.VERIFY_SIZES, tolerance: float = verify.TOLERANCE, quantize: str | None = None,
               min_psnr: float | None = None) -> verify.ExportResult:
    """Convert ``src``'s portable network to ``out`` (.onnx), verify it against Keras, record it.

    ``quantize="float16"`` stores the weights as float16
    (:func:`dfcan_tf.export.quantize.onnx_float16_weights`) and accepts the
    model on PSNR against the Keras float output (``min_psnr`` dB) instead of
    ``tolerance``.
    """
    proto = to_onnx_proto(src.portable, src.channels, opset=opset, metadata=src.metadata())
    if quantize:
        from dfcan_tf.export.quantize import (
            Budget,
            check_budget,
            check_quantize,
            onnx_float16_weights,
        )

        budget = Budget(quantize, check_quantize("onnx", quantize, min_psnr),
                        float_size_bytes=proto.ByteSize())
        float_data = proto.SerializeToString()
        onnx_float16_weights(proto)
        data = proto.SerializeToString()
        budget.size_bytes = len(data)
        with verify.staged(out) as tmp, tempfile.TemporaryDirectory(prefix="dfcan-float-") as scratch:
            tmp.write_bytes(data)
            float_path = Path(scratch) / "float32.onnx"  # timed next to the quantised model, then removed
            float_path.write_bytes(float_data)
            checks = check_budget(onnx_runner(tmp), src, sizes, budget, f"ONNX {quantize} export of {src.run.path}",
                                  float_artefact=onnx_runner(float_path))
            sha = sha256_of(tmp)
        extra = {"opset": opset, "quantization": budget.to_record()}
        return record(src, verify.ExportResult(out, "onnx", checks, None, extra), sha)
    with verify.staged(out) as tmp:
        tmp.write_bytes(proto.SerializeToString())
        checks = verify.compare(onnx_runner(tmp), verify.keras_reference(src.reference), src.channels, src.scale,
                                sizes, tolerance, what=f"ONNX export of {src.run.path}", twin=src.twin())
        sha = sha256_of(tmp)
    return record(src, verify.ExportResult(out, "onnx", checks, tolerance, {"opset": opset}), sha)
