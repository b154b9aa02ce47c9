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
from example_io import normalization, to_batch, to_uint16


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
