"""The ONNX conversion is checked on a small batch and redone when tf2onnx gives the output a wrong shape."""

from __future__ import annotations

import numpy as np
import pytest

from dfcan_tf.errors import DfcanError
from dfcan_tf.export import onnx as onnx_export
from dfcan_tf.nets import registry
from dfcan_tf.nets.dfcan import DFCANConfig


@pytest.fixture(scope="module")
def model():
    cfg = DFCANConfig.dfcan(1, 2, width=8, n_groups=1, n_blocks=1, size_psc=16, reduction=4, spectrum="dft")
    return registry.build(cfg)


def test_probe_reads_the_converted_output_shape(model):
    proto = onnx_export.to_onnx_proto(model, 1)
    got, want = onnx_export._probe_shapes(proto, model, 1)
    assert got == want == (2, 32, 32, 1)


def test_a_wrong_output_shape_is_converted_again_then_refused(model, monkeypatch):
    import tf2onnx

    calls = []
    real = tf2onnx.convert.from_function

    def counting(*args, **kwargs):
        calls.append(1)
        return real(*args, **kwargs)

    monkeypatch.setattr(tf2onnx.convert, "from_function", counting)
    real_probe = onnx_export._probe_shapes
    # the first conversion comes out with tf2onnx's stray leading axis, the second is right
    answers = iter([((1, 2, 32, 32, 1), (2, 32, 32, 1))])
    monkeypatch.setattr(onnx_export, "_probe_shapes", lambda *a: next(answers, None) or real_probe(*a))
    proto = onnx_export.to_onnx_proto(model, 1)
    assert len(calls) == 2 and proto.graph.output[0].name == "output"
    x = np.random.default_rng(0).random((1, 20, 24, 1), dtype=np.float32)
    import onnxruntime as ort

    session = ort.InferenceSession(proto.SerializeToString(), providers=["CPUExecutionProvider"])
    np.testing.assert_allclose(session.run(None, {"input": x})[0], np.asarray(model(x)), atol=1e-5)
    # always wrong: refused after CONVERSION_ATTEMPTS conversions
    calls.clear()
    monkeypatch.setattr(onnx_export, "_probe_shapes", lambda *a: ((1, 2, 32, 32, 1), (2, 32, 32, 1)))
    with pytest.raises(DfcanError, match=r"output has shape \(1, 2, 32, 32, 1\) .* 3 times"):
        onnx_export.to_onnx_proto(model, 1)
    assert len(calls) == onnx_export.CONVERSION_ATTEMPTS == 3
