"""``dfcan export``: write a run folder's network as ONNX, TFLite, SavedModel or a bioimage.io package.

Every artefact is verified against Keras before it is kept; see
:func:`dfcan_tf.export.run.export_run` and ``docs/export.md``.
"""

from __future__ import annotations

import argparse
from typing import Any


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Register the ``dfcan export`` flags on ``parser``."""
    from dfcan_tf.cli.main import DeprecatedAlias

    # These modules import TensorFlow only inside their functions: `dfcan export --help` stays light.
    from dfcan_tf.export.onnx import DEFAULT_OPSET, MAX_OPSET
    from dfcan_tf.export.run import FORMATS
    from dfcan_tf.export.verify import TOLERANCE, VERIFY_SIZES

    parser.add_argument("run", help="run folder (config.json + weights/)")
    parser.add_argument("--format", choices=FORMATS, default="onnx",
                        help="artefact: ONNX file, TFLite (LiteRT) flatbuffer, SavedModel folder or bioimage.io zip")
    parser.add_argument("-o", "--output", default=None,
                        help="destination (default: RUN/export/model.onnx, model.tflite, model/ or bioimageio.zip; "
                             "quantised: model-float16.tflite, model-int8.tflite, model-float16.onnx); "
                             "never the run folder, inside it only RUN/export/")
    parser.add_argument("--which", choices=("best", "last"), default="best", help="weights of the run to export")
    parser.add_argument("--weights", action=DeprecatedAlias, new="--which", dest="which", choices=("best", "last"))
    parser.add_argument("--opset", type=int, default=DEFAULT_OPSET, help=f"ONNX opset ({DEFAULT_OPSET}-{MAX_OPSET})")
    parser.add_argument("--verify-sizes", type=int, nargs="+", default=list(VERIFY_SIZES), metavar="N",
                        help="square input sizes the artefact is checked at against Keras")
    parser.add_argument("--tolerance", type=float, default=TOLERANCE,
                        help="largest max abs difference from Keras accepted")
    parser.add_argument("--tflite-size", type=int, default=None, metavar="N",
                        help="tflite: convert for a fixed (1, N, N, C) input instead of a dynamic shape")
    parser.add_argument("--quantize", choices=["float16", "int8", "int8-full"], default=None,
                        help="quantised export, float input/output: float16 weights (tflite, onnx), int8 "
                             "dynamic-range (tflite) or int8-full, full-integer calibrated on simulated patches "
                             "(tflite); accepted on PSNR against Keras (default: float32, matched to --tolerance)")
    parser.add_argument("--min-psnr", type=float, default=None, metavar="DB",
                        help="with --quantize: the least PSNR (dB, data range 1) against the Keras float output on "
                             "the simulated verification images (default: 40 for float16, 30 for int8 and int8-full); "
                             "below it nothing is written")
    parser.add_argument("--name", default=None, help="bioimage.io: model name")
    parser.add_argument("--no-test-run", action="store_true",
                        help="bioimage.io: skip the bioimageio.core test run (validation still runs)")
    parser.add_argument("--overwrite", action="store_true",
                        help="replace the output if an earlier 'dfcan export' wrote it (never another file or folder)")
    parser.add_argument("--no-progress", action="store_true", help="no stage lines, only the final summary")


def run_from_args(args: argparse.Namespace) -> int:
    """Run ``dfcan export`` with parsed ``args``; return the exit status."""
    from dfcan_tf.errors import DfcanError
    from dfcan_tf.export.run import export_run

    extra: dict[str, Any] = {}
    if args.format == "bioimageio":
        extra = {"name": args.name, "test_run": not args.no_test_run}
    elif args.format == "tflite" and args.tflite_size is not None:
        extra = {"fixed_size": args.tflite_size}
    elif args.tflite_size is not None:
        raise DfcanError(f"--tflite-size applies to --format tflite only. Received: --format {args.format}")
    result = export_run(args.run, args.output, args.format, which=args.which, opset=args.opset,
                        sizes=args.verify_sizes, tolerance=args.tolerance, overwrite=args.overwrite,
                        quantize=args.quantize, min_psnr=args.min_psnr, progress=not args.no_progress, **extra)
    print(result.summary())
    return 0
