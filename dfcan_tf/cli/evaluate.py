"""``dfcan evaluate RUN DATA -o OUT``: score a run folder on a BioSR-layout test set.

See :mod:`dfcan_tf.evaluation.evaluate` for what is computed and written.
"""

from __future__ import annotations

import argparse
import sys
from collections import defaultdict

from dfcan_tf.cli.predict import BACKENDS, add_tiling_arguments


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Register the ``dfcan evaluate`` flags on ``parser``."""
    parser.add_argument("run", help="run folder (config.json + weights/)")
    parser.add_argument("data", help="BioSR-layout test set (root or one specimen folder)")
    parser.add_argument("-o", "--output", required=True, help="output folder for metrics.csv, summary.csv, plots")
    parser.add_argument("--specimens", help="comma-separated specimen folders (default: all)")
    parser.add_argument("--cells", help="cell numbers, e.g. 36-50 (default: all)")
    parser.add_argument("--levels", help="which signal levels, e.g. 9, 1-3 or 1,3,5 (default: all)")
    parser.add_argument("--which", choices=("best", "last"), default="best", help="weights of the run to use")
    parser.add_argument("--backend", choices=BACKENDS, default="keras", help="inference backend")
    add_tiling_arguments(parser, "tile side in input pixels (default auto: whole image when it fits)")
    parser.add_argument("--no-resolution", action="store_true", help="skip the decorrelation resolution")
    parser.add_argument("--save-predictions", action="store_true", help="also write every prediction as TIFF")
    parser.add_argument("--overwrite", action="store_true",
                        help="replace the output folder if it holds a previous 'dfcan evaluate' output")
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")


def run_from_args(args: argparse.Namespace) -> int:
    """Run ``dfcan evaluate`` with parsed ``args``; 0 on success, 1 when some records failed."""
    from dfcan_tf.evaluation.evaluate import evaluate_run

    specimens = [s for s in args.specimens.split(",") if s] if args.specimens else None
    result = evaluate_run(
        args.run, args.data, args.output, specimens=specimens, cells=args.cells, levels=args.levels,
        which=args.which, backend=args.backend, tile_size=args.tile_size, overlap=args.overlap,
        resolution=not args.no_resolution, save_predictions=args.save_predictions, overwrite=args.overwrite,
        progress=not args.no_progress,
    )
    for specimen in sorted({r["specimen"] for r in result.rows}):
        print(f"{specimen}: " + ", ".join(
            f"{m} {result.mean(m, 'model', specimen):.4g} (bicubic {result.mean(m, 'bicubic', specimen):.4g})"
            for m in ("psnr", "ssim", "nrmse", "resolution_nm")))
    if result.missing:
        counts: dict[str, int] = defaultdict(int)
        for m in result.missing:
            counts[m["specimen"]] += 1
        print("missing records (their levels are averaged over fewer cells; column n of summary.csv): "
              + ", ".join(f"{s} {k}" for s, k in sorted(counts.items())) + f"; listed in {result.missing_path}")
        for m in result.missing[:5]:
            print(f"  {m['specimen']} cell {m['cell']} level {m['level']}: no {m['missing_file']}")
        if len(result.missing) > 5:
            print(f"  ... and {len(result.missing) - 5} more")
    print(result.csv_path)
    print(result.summary_path)
    for path in result.plots:
        print(path)
    for _path, message in result.failures:
        print(f"dfcan evaluate: error: {message}", file=sys.stderr)
    return 0 if result.ok else 1
