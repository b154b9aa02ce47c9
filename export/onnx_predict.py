"""Super-resolve an image with an exported DFCAN/DFGAN ONNX model.

Uses only onnxruntime, numpy and tifffile (no TensorFlow):

    python export/onnx_predict.py model.onnx input.tif output.tif [--threads 2]

Input: a 2-D wide-field image (H, W) for a 1-channel model, or a stack of raw
SIM frames (C, H, W) or (H, W, C) for a C-channel model, any intensity range.
It is normalised as the network was trained (the run's normalisation, read
from the model's metadata ``dfcan_tf.config``; min-max over the whole stack by
default, see docs/data.md#normalisation), run at full size (the ONNX model has
dynamic batch, height and width), and the output is min-max stretched and
written as a 16-bit TIFF (``--float32`` writes the raw network output instead).
"""

from __future__ import annotations

import argparse
import json

import numpy as np
import onnxruntime as ort
import tifffile


def load(path: str, threads: int | None = None) -> ort.InferenceSession:
    """Open the model for CPU inference."""
    options = ort.SessionOptions()
    if threads:
        options.intra_op_num_threads = threads
    return ort.InferenceSession(path, options, providers=["CPUExecutionProvider"])


def model_config(session: ort.InferenceSession) -> dict:
    """The dfcan_tf run configuration stored in the model's metadata (empty if absent)."""
    meta = session.get_modelmeta().custom_metadata_map
    return json.loads(meta.get("dfcan_tf.config", "{}"))


def normalization(config: dict) -> dict:
    """The run's input normalisation from the exported model's metadata (default: min-max, the paper's).

    ``config["normalization"]`` is the full setting written by ``dfcan export``;
    older exports only carry the run's ``data.normalization`` (a mode name or a dict).
    """
    value = config.get("normalization") or (config.get("data") or {}).get("normalization") or "minmax"
    norm = {"mode": "minmax", "pmin": 1.0, "pmax": 99.8, "eps": 1e-7, "clip": False}
    norm.update({"mode": value} if isinstance(value, str) else value)
    return norm


def normalize(x: np.ndarray, norm: dict) -> np.ndarray:
    """Bring a raw image (whole stack jointly) to the network's input range, as in training.

    The formula of dfcan_tf's ``Normalizer`` (docs/data.md#normalisation), restated here so that this
    script needs no dfcan_tf: ``(x - lo) / (hi - lo + eps)`` with ``lo, hi`` = min and max (``minmax``),
    the ``pmin``/``pmax`` percentiles (``percentile``, clipped to [0, 1] when ``clip``), or 0 and 65535
    with ``eps`` 0 (``divide65535``). Computed in float64.
    """
    x = np.asarray(x, np.float64)
    if norm["mode"] == "divide65535":
        lo, hi, eps = 0.0, 65535.0, 0.0
    elif norm["mode"] == "percentile":
        lo, hi, eps = np.percentile(x, norm["pmin"]), np.percentile(x, norm["pmax"]), norm["eps"]
    else:
        lo, hi, eps = x.min(), x.max(), norm["eps"]
    y = (x - lo) / (hi - lo + eps)
    if norm.get("clip"):
        y = np.clip(y, 0.0, 1.0)
    return y.astype(np.float32)


def to_batch(image: np.ndarray, channels: int, norm: dict) -> np.ndarray:
    """(H, W), (C, H, W) or (H, W, C) → a normalised (1, H, W, C) float32 batch."""
    x = np.asarray(image, np.float32)
    if x.ndim == 2:
        x = x[..., None]
    elif x.ndim == 3 and x.shape[0] == channels and x.shape[-1] != channels:
        x = np.moveaxis(x, 0, -1)
    if x.ndim != 3 or x.shape[-1] != channels:
        raise SystemExit(f"the model takes {channels} channel(s); got an image of shape {np.shape(image)}")
    return normalize(x, norm)[None]


def to_uint16(y: np.ndarray, norm: dict) -> np.ndarray:
    """The output as 16-bit: min-max stretched (``minmax``/``percentile``), or x 65535 (``divide65535``)."""
    if norm["mode"] != "divide65535":
        y = normalize(y, {"mode": "minmax", "eps": 1e-12})
    return np.round(np.clip(y, 0.0, 1.0) * 65535).astype(np.uint16)


def predict(session: ort.InferenceSession, image: np.ndarray) -> np.ndarray:
    """Run the network on one image, normalised as in training; return the (s·H, s·W) output."""
    inp = session.get_inputs()[0]
    channels = int(inp.shape[-1])
    x = to_batch(image, channels, normalization(model_config(session)))
    return session.run(None, {inp.name: x})[0][0, ..., 0]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("model", help="exported .onnx file")
    parser.add_argument("input", help="input TIFF")
    parser.add_argument("output", help="output TIFF")
    parser.add_argument("--threads", type=int, default=None)
    parser.add_argument("--float32", action="store_true", help="write the raw network output as float32")
    args = parser.parse_args(argv)
    session = load(args.model, args.threads)
    norm = normalization(model_config(session))
    y = predict(session, tifffile.imread(args.input))
    if args.float32:
        tifffile.imwrite(args.output, y.astype(np.float32), imagej=True)
    else:
        tifffile.imwrite(args.output, to_uint16(y, norm), imagej=True)
    print(f"{args.input} -> {args.output} ({y.shape[0]}x{y.shape[1]})")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
