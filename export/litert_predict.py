"""Super-resolve an image with an exported DFCAN/DFGAN TFLite model in the LiteRT interpreter.

Uses only ai-edge-litert, numpy and tifffile:

    python export/litert_predict.py model.tflite input.tif output.tif [--threads 2]

The model is converted with a dynamic input shape ``[-1, -1, -1, C]``: before
running an image of another size, the input tensor is resized with
``resize_tensor_input`` and the interpreter re-allocated (what :func:`predict`
does). Pre- and post-processing as in ``onnx_predict.py``: a TFLite file
carries no run metadata, so the run's normalisation is read from export's
record next to the model (``.dfcan-outputs.json``, written by ``dfcan export``);
without it, min-max over the whole stack (docs/data.md#normalisation).
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np
import tifffile
from ai_edge_litert.interpreter import Interpreter


def load(path: str, threads: int | None = None) -> Interpreter:
    """Open the model (builtin ops only, so the plain interpreter runs it)."""
    return Interpreter(model_path=path, num_threads=threads)


def model_config(path: str) -> dict:
    """Export's record of the model (``.dfcan-outputs.json`` beside it); empty if absent."""
    manifest = Path(path).with_name(".dfcan-outputs.json")
    try:
        entry = json.loads(manifest.read_text()).get(Path(path).name)
    except (OSError, ValueError):
        return {}
    return entry if isinstance(entry, dict) else {}


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


def predict(interpreter: Interpreter, image: np.ndarray, norm: dict | None = None) -> np.ndarray:
    """Run the network on one image normalised by ``norm`` (default min-max); return the (s·H, s·W) output."""
    inp = interpreter.get_input_details()[0]
    channels = int(inp["shape_signature"][-1])
    x = to_batch(image, channels, norm or normalization({}))
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
    norm = normalization(model_config(args.model))
    y = predict(load(args.model, args.threads), tifffile.imread(args.input), norm)
    if args.float32:
        tifffile.imwrite(args.output, y.astype(np.float32), imagej=True)
    else:
        tifffile.imwrite(args.output, to_uint16(y, norm), imagej=True)
    print(f"{args.input} -> {args.output} ({y.shape[0]}x{y.shape[1]})")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
