"""The one FLOP counter: floating-point operations of a network, read off its traced graph.

The network is traced once at a concrete input size; every convolution and
matrix product in the graph is counted from its static shapes (multiply and
add count 2). Element-wise work (bias adds, activations, pooling, resizes,
gathers) is memory-bound and left out. The same count serves every
architecture, so benchmarks compare networks on equal terms; a training step
costs about 3× the forward pass (the backward pass computes two products of
the same size per forward product).
"""

from __future__ import annotations

from functools import lru_cache
from typing import Any

_CONV_OPS = ("Conv2D", "DepthwiseConv2dNative", "Conv2DBackpropInput")
_MATMUL_OPS = ("MatMul", "BatchMatMulV2", "BatchMatMulV3", "BatchMatMul")
TRAINING_FACTOR = 3.0


def _dims(shape) -> list[int] | None:
    try:
        dims = shape.as_list()
    except ValueError:
        return None
    return None if any(d is None for d in dims) else dims


def _prod(values) -> int:
    out = 1
    for v in values:
        out *= int(v)
    return out


def _op_flops(op) -> tuple[str, float]:
    """("conv" | "matmul" | "", FLOPs) of one graph operation."""
    kind = op.type
    if kind in ("Conv2D", "DepthwiseConv2dNative"):
        out = _dims(op.outputs[0].shape)
        kernel = _dims(op.inputs[1].shape)
        if out is None or kernel is None:
            return "", 0.0
        kh, kw, cin = kernel[0], kernel[1], kernel[2]
        per_output = kh * kw * (cin if kind == "Conv2D" else 1)
        return "conv", 2.0 * _prod(out) * per_output
    if kind == "Conv2DBackpropInput":  # a transposed convolution in a forward pass
        grad = _dims(op.inputs[2].shape)
        kernel = _dims(op.inputs[1].shape)
        if grad is None or kernel is None:
            return "", 0.0
        kh, kw, cout = kernel[0], kernel[1], kernel[2]
        return "conv", 2.0 * _prod(grad) * kh * kw * cout
    if kind in _MATMUL_OPS:
        a, b = _dims(op.inputs[0].shape), _dims(op.inputs[1].shape)
        out = _dims(op.outputs[0].shape)
        if a is None or b is None or out is None:
            return "", 0.0
        adj_a = op.get_attr("adj_x" if kind != "MatMul" else "transpose_a")
        k = a[-2] if adj_a else a[-1]
        return "matmul", 2.0 * _prod(out) * k
    return "", 0.0


def _graph_flops(graph) -> dict[str, float]:
    counts = {"conv": 0.0, "matmul": 0.0}
    for op in graph.get_operations():
        kind, flops = _op_flops(op)
        if kind:
            counts[kind] += flops
    # Keras layers inside tf.function bodies: While/If sub-graphs do not occur in these networks.
    for fn in getattr(graph, "_functions", {}).values():
        sub = getattr(fn, "graph", None)
        if sub is not None:
            inner = _graph_flops(sub)
            counts["conv"] += inner["conv"]
            counts["matmul"] += inner["matmul"]
    return counts


def count_model_flops(model: Any, height: int, width: int, channels: int | None = None) -> dict[str, float]:
    """FLOPs of one ``height × width`` image through ``model``: ``{"conv", "matmul", "total"}``."""
    import tensorflow as tf

    channels = int(channels if channels is not None else model.inputs[0].shape[-1])
    spec = tf.TensorSpec([1, int(height), int(width), channels], tf.float32)
    graph = tf.function(lambda x: model(x, training=False)).get_concrete_function(spec).graph
    counts = _graph_flops(graph)
    counts["total"] = counts["conv"] + counts["matmul"]
    return counts


@lru_cache(maxsize=64)
def _config_flops(config: Any, height: int, width: int) -> tuple[float, float]:
    from dfcan_tf.nets.registry import build

    counts = count_model_flops(build(config), height, width, config.input_channels)
    return counts["conv"], counts["matmul"]


def count_flops(config: Any, height: int, width: int) -> dict[str, float]:
    """FLOPs of one ``height × width`` image through the network ``config`` describes (cached per config)."""
    conv, matmul = _config_flops(config, int(height), int(width))
    return {"conv": conv, "matmul": matmul, "dft": matmul, "total": conv + matmul}


def training_flops(config: Any, height: int, width: int, batch: int) -> float:
    """FLOPs of one training step on ``batch`` patches of ``height × width`` (≈ 3 × forward)."""
    return TRAINING_FACTOR * batch * count_flops(config, height, width)["total"]
