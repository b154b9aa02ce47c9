"""Super-resolve an image with an exported DFCAN/DFGAN TFLite model in the LiteRT interpreter.

Uses only ai-edge-litert, numpy and tifffile:

    python export/litert_predict.py model.tflite input.tif output.tif [--threads 2]

The model is converted with a dynamic input shape ``[-1, -1, -1, C]``: before
running an image of another size, the input tensor is resized with
``resize_tensor_input`` and the interpreter re-allocated (what :func:`predict`
does). Pre- and post-processing as in ``onnx_predict.py``.
"""

from __future__ import annotations

import argparse

import numpy as np
import tifffile
from ai_edge_litert.interpreter import Interpreter


def load(path: str, threads: int | None = None) -> Interpreter:
    """Open the model (builtin ops only, so the plain interpreter runs it)."""
    return Interpreter(model_path=path, num_threads=threads)


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


def predict(interpreter: Interpreter, image: np.ndarray) -> np.ndarray:
    """Run the network on one image; return the (s·H, s·W) output in (0, 1)."""
    inp = interpreter.get_input_details()[0]
    channels = int(inp["shape_signature"][-1])
    x = to_batch(image, channels)
    interpreter.resize_tensor_input(inp["index"], list(x.shape), strict=False)
    interpreter.allocate_tensors()
    interpreter.set_tensor(inp["index"], x)
    interpreter.invoke()
    return interpreter.get_tensor(interpreter.get_output_details()[0]["index"])[0, ..., 0].copy()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("model", help="exported .tflite file")
    parser.add_argument("input", help="input TIFF")
    parser.add_argument("output", help="output TIFF")
    parser.add_argument("--threads", type=int, default=None)
    parser.add_argument("--float32", action="store_true", help="write the raw network output as float32")
    args = parser.parse_args(argv)
    y = predict(load(args.model, args.threads), tifffile.imread(args.input))
    if args.float32:
        tifffile.imwrite(args.output, y.astype(np.float32), imagej=True)
    else:
        y = (y - y.min()) / max(float(y.max() - y.min()), 1e-12)
        tifffile.imwrite(args.output, np.round(y * 65535).astype(np.uint16), imagej=True)
    print(f"{args.input} -> {args.output} ({y.shape[0]}x{y.shape[1]})")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
