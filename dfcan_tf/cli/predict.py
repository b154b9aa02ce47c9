"""``dfcan predict``: super-resolve images with a run folder (:mod:`dfcan_tf.inference.predict`).

Also the flag parsers shared by ``dfcan evaluate`` and ``dfcan assess``
(:func:`parse_tile_size`, :func:`parse_overlap`, :data:`BACKENDS`). Nothing
heavy is imported until the command runs, so ``--help`` never loads TensorFlow.
"""

from __future__ import annotations

import argparse
import sys

# The same values as dfcan_tf.inference.predict (a test checks they agree); kept here so --help stays light.
BACKENDS = ("keras", "onnx", "tflite", "saved_model")
DEFAULT_TILE_SIZE = 512
WHOLE_IMAGE_SIDE = 1024

OVERLAP_HELP = ("tile overlap in input pixels (default auto: the network's measured receptive field, "
                "rounded up to a multiple of 8)")


def parse_tile_size(value: str) -> int | None:
    """``--tile-size`` values: ``auto`` (None), 0 (never tile) or a positive side."""
    if value == "auto":
        return None
    try:
        n = int(value)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected 'auto', 0 or a pixel count, got {value!r}") from None
    if n < 0:
        raise argparse.ArgumentTypeError(f"tile size must be 'auto', 0 or positive, got {n}")
    return n


def parse_overlap(value: str) -> int | None:
    """``--overlap`` values: ``auto`` (None: from the network's receptive field) or pixels ≥ 0."""
    if value == "auto":
        return None
    try:
        n = int(value)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected 'auto' or a pixel count, got {value!r}") from None
    if n < 0:
        raise argparse.ArgumentTypeError(f"overlap must be 'auto' or ≥ 0, got {n}")
    return n


def add_tiling_arguments(parser: argparse.ArgumentParser, tile_help: str | None = None) -> None:
    """``--tile-size`` and ``--overlap``, as predict, evaluate and assess take them."""
    parser.add_argument("--tile-size", type=parse_tile_size, default=None, metavar="auto|0|N",
                        help=tile_help or f"tile side in input pixels; auto (default): whole image up to "
                                          f"{WHOLE_IMAGE_SIDE}², else {DEFAULT_TILE_SIZE}; 0: never tile")
    parser.add_argument("--overlap", type=parse_overlap, default=None, metavar="auto|N", help=OVERLAP_HELP)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Register the ``dfcan predict`` flags on ``parser``."""
    parser.add_argument("run", help="run folder (config.json + weights/)")
    parser.add_argument("inputs", nargs="+", help="TIFF/MRC files, folders or glob patterns")
    parser.add_argument("-o", "--output", required=True, help="output folder (outputs are <input name>.tif)")
    parser.add_argument("--backend", choices=BACKENDS, default="keras", help="inference backend")
    parser.add_argument("--which", choices=("best", "last"), default="best", help="weights of the run to use")
    add_tiling_arguments(parser)
    parser.add_argument("--batch-size", type=int, default=1, help="tiles per network call")
    parser.add_argument("--dtype", choices=("uint16", "float32"), default="uint16",
                        help="output type (with --intensity raw the stored values map to intensities by one linear "
                             "map, written as ImageJ calibration)")
    parser.add_argument("--intensity", choices=("raw", "stretch"), default="raw",
                        help="raw: output in the input's intensity units, one normalisation for the "
                             "whole file so frames and files stay comparable; stretch: every output image "
                             "min-max stretched to the full range (docs/own-data.md#pixel-size-and-intensities)")
    parser.add_argument("--sim-frames", type=int, choices=(9, 25), default=None,
                        help="the inputs are raw SIM stacks of 9 or 25 frames per image: a wide-field model gets "
                             "each group summed to wide-field (BioSR RawSIMData*.mrc files are recognised "
                             "without it)")
    parser.add_argument("--remove-outliers", action="store_true", help="replace hot pixels of the output")
    parser.add_argument("--overwrite", action="store_true",
                        help="replace existing outputs written by a previous 'dfcan predict'")
    parser.add_argument("--no-progress", action="store_true", help="no progress bars")


def run_from_args(args: argparse.Namespace) -> int:
    """Run ``dfcan predict`` with parsed ``args``; return the exit status."""
    from dfcan_tf.inference.files import predict_files

    summary = predict_files(
        args.run, args.inputs, args.output, backend=args.backend, which=args.which, tile_size=args.tile_size,
        overlap=args.overlap, batch_size=args.batch_size, dtype=args.dtype, remove_outliers=args.remove_outliers,
        overwrite=args.overwrite, progress=not args.no_progress, intensity=args.intensity,
        sim_frames=args.sim_frames,
    )
    for path in summary.outputs:
        print(path)
    for _path, message in summary.failures:
        print(f"dfcan predict: error: {message}", file=sys.stderr)
    print(f"dfcan predict: {summary}", file=sys.stderr)
    return 0 if summary.ok else 1
