"""The Fourier-attention formulation converts: a tiny DFCAN with the portable (sampled-DFT)
spectrum goes through tf2onnx and onnxruntime matches Keras at two sizes, one not a power of two.

This is the early proof asked of the layer design (issue 2); the full export with its
verification, TFLite and the benchmark live in dfcan_tf.export and tests/test_export.py.
"""

import numpy as np
import onnxruntime as ort
import pytest
import tensorflow as tf
import tf2onnx

from dfcan_tf.nets import registry
from dfcan_tf.nets.dfcan import DFCANConfig


@pytest.fixture(scope="module")
def onnx_pair():
    cfg = DFCANConfig.dfcan(1, 2, width=8, n_groups=1, n_blocks=2, size_psc=16, reduction=4)
    keras_model = registry.build(cfg)
    portable = registry.build(cfg.replace(spectrum="dft"))
    portable.set_weights(keras_model.get_weights())
    spec = (tf.TensorSpec((None, None, None, 1), tf.float32, name="input"),)
    fn = tf.function(lambda x: portable(x, training=False))
    proto, _ = tf2onnx.convert.from_function(fn, input_signature=spec, opset=17)
    ops = {node.op_type for node in proto.graph.node}
    session = ort.InferenceSession(proto.SerializeToString(), providers=["CPUExecutionProvider"])
    return keras_model, session, ops


@pytest.mark.parametrize("h,w", [(32, 32), (37, 50)])
def test_onnxruntime_matches_keras(onnx_pair, h, w, rng):
    keras_model, session, ops = onnx_pair
    x = rng.random((2, h, w, 1), dtype=np.float32)
    ref = keras_model(x).numpy()  # the reference FFT path
    got = session.run(None, {session.get_inputs()[0].name: x})[0]
    assert got.shape == (2, 2 * h, 2 * w, 1)
    assert np.max(np.abs(got - ref)) <= 1e-4
    assert not ops & {"DFT", "Erfc"}  # portable ops only
