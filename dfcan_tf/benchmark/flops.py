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


def _op_tensors(op) -> tuple[str, list]:
    """("conv" | "matmul" | "", the tensors whose shapes give the op's FLOPs)."""
    if op.type in ("Conv2D", "DepthwiseConv2dNative"):
        return "conv", [op.outputs[0], op.inputs[1]]
    if op.type == "Conv2DBackpropInput":  # a transposed convolution in a forward pass
        return "conv", [op.inputs[2], op.inputs[1]]
    if op.type in _MATMUL_OPS:
        return "matmul", [op.inputs[0], op.outputs[0]]
    return "", []


def _flops_from_shapes(op, shapes: list[list[int]]) -> float:
    if op.type in ("Conv2D", "DepthwiseConv2dNative"):
        out, kernel = shapes
        per_output = kernel[0] * kernel[1] * (kernel[2] if op.type == "Conv2D" else 1)
        return 2.0 * _prod(out) * per_output
    if op.type == "Conv2DBackpropInput":
        grad, kernel = shapes
        return 2.0 * _prod(grad) * kernel[0] * kernel[1] * kernel[2]
    a, out = shapes
    adj_a = op.get_attr("transpose_a" if op.type == "MatMul" else "adj_x")
    k = a[-2] if adj_a else a[-1]
    return 2.0 * _prod(out) * k


def count_model_flops(model: Any, height: int, width: int, channels: int | None = None) -> dict[str, float]:
    """FLOPs of one ``height × width`` image through ``model``: ``{"conv", "matmul", "total"}``.

    Shapes come from the traced graph; where a shape is only known at run time
    (the sampled-DFT attention's frequency count comes out of ``tf.unique``),
    the sub-graph computing those tensors is run once on a zero image.
    """
    import tensorflow as tf

    channels = int(channels if channels is not None else model.inputs[0].shape[-1])
    spec = tf.TensorSpec([1, int(height), int(width), channels], tf.float32)
    wrapped = tf.compat.v1.wrap_function(lambda x: model(x, training=False), signature=[spec])
    counted, dynamic = [], []
    for op in wrapped.graph.get_operations():
        kind, tensors = _op_tensors(op)
        if not kind:
            continue
        shapes = [_dims(t.shape) for t in tensors]
        (counted if all(s is not None for s in shapes) else dynamic).append((kind, op, tensors, shapes))
    if dynamic:
        fetches = [t for _, _, tensors, _ in dynamic for t in tensors]
        values = wrapped.prune(feeds=wrapped.inputs[0], fetches=fetches)(tf.zeros(spec.shape))
        it = iter(values)
        dynamic = [(kind, op, tensors, [list(next(it).shape) for _ in tensors]) for kind, op, tensors, _ in dynamic]
    counts = {"conv": 0.0, "matmul": 0.0}
    for kind, op, _, shapes in counted + dynamic:
        counts[kind] += _flops_from_shapes(op, shapes)
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
