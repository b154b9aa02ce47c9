"""Super-resolve an image with an exported DFCAN/DFGAN TFLite model in the LiteRT interpreter.

Uses only ai-edge-litert, numpy and tifffile:

    python export/litert_predict.py model.tflite input.tif output.tif [--threads 2]

The model is converted with a dynamic input shape ``[-1, -1, -1, C]``: before
running an image of another size, the input tensor is resized with
``resize_tensor_input`` and the interpreter re-allocated (what :func:`predict`
does). Pre- and post-processing as in ``onnx_predict.py`` (shared in ``example_io.py``): a TFLite file
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
from example_io import normalization, to_batch, to_uint16


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
