"""Super-resolve an image with an exported DFCAN/DFGAN ONNX model.

Uses only onnxruntime, numpy and tifffile (no TensorFlow):

    python export/onnx_predict.py model.onnx input.tif output.tif [--threads 2]

Input: a 2-D wide-field image (H, W) for a 1-channel model, or a stack of raw
SIM frames (C, H, W) or (H, W, C) for a C-channel model, any intensity range.
As in the authors' code it is min-max normalised to [0, 1] (whole stack
jointly), run at full size (the ONNX model has dynamic batch, height and
width), and the output is min-max stretched and written as a 16-bit TIFF
(``--float32`` writes the raw (0, 1) network output instead).
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


def to_batch(image: np.ndarray, channels: int) -> np.ndarray:
    """(H, W), (C, H, W) or (H, W, C) → a normalised (1, H, W, C) float32 batch."""
    x = np.asarray(image, np.float32)
    if x.ndim == 2:
        x = x[..., None]
    elif x.ndim == 3 and x.shape[0] == channels and x.shape[-1] != channels:
        x = np.moveaxis(x, 0, -1)
    if x.ndim != 3 or x.shape[-1] != channels:
        raise SystemExit(f"the model takes {channels} channel(s); got an image of shape {np.shape(image)}")
    lo, hi = float(x.min()), float(x.max())
    return ((x - lo) / max(hi - lo, 1e-12))[None]


def predict(session: ort.InferenceSession, image: np.ndarray) -> np.ndarray:
    """Run the network on one image; return the (s·H, s·W) output in (0, 1)."""
    inp = session.get_inputs()[0]
    channels = int(inp.shape[-1])
    return session.run(None, {inp.name: to_batch(image, channels)})[0][0, ..., 0]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("model", help="exported .onnx file")
    parser.add_argument("input", help="input TIFF")
    parser.add_argument("output", help="output TIFF")
    parser.add_argument("--threads", type=int, default=None)
    parser.add_argument("--float32", action="store_true", help="write the raw network output as float32")
    args = parser.parse_args(argv)
    session = load(args.model, args.threads)
    y = predict(session, tifffile.imread(args.input))
    if args.float32:
        tifffile.imwrite(args.output, y.astype(np.float32), imagej=True)
    else:
        y = (y - y.min()) / max(float(y.max() - y.min()), 1e-12)
        tifffile.imwrite(args.output, np.round(y * 65535).astype(np.uint16), imagej=True)
    print(f"{args.input} -> {args.output} ({y.shape[0]}x{y.shape[1]})")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
