"""``dfcan assess RUN... DATA -o OUT``: the assessment matrix of networks versus conventional SIM.

See :mod:`dfcan_tf.evaluation.assess` for what is computed and written.
"""

from __future__ import annotations

import argparse
import sys

from dfcan_tf.cli.predict import BACKENDS, add_tiling_arguments
from dfcan_tf.evaluation.assess import RULE_TEXT, RULES


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Add the arguments of ``dfcan assess`` to ``parser``."""
    # The CLI's copy of the constant: --help imports no scipy.
    from dfcan_tf.cli.sim_reconstruct import DEFAULT_WIENER

    parser.add_argument("runs", nargs="+", metavar="RUN", help="run folders (config.json + weights/); each is "
                                                               "a network of the matrix, named by its folder")
    parser.add_argument("data", metavar="DATA", help="BioSR-layout test set (root or one specimen folder)")
    parser.add_argument("-o", "--output", required=True,
                        help="output folder for metrics.csv, matrix.csv and matrix.png")
    rules = "; ".join(f"'{r}': {RULE_TEXT[r]}" for r in RULES)
    parser.add_argument("--rule", choices=RULES, default="psnr+ssim",
                        help=f"when a (specimen, level) cell is in a network's priority region, from means over "
                             f"the cells both methods scored: {rules}")
    parser.add_argument("--specimens", help="comma-separated specimen folders (default: all)")
    parser.add_argument("--cells", help="cell numbers, e.g. 36-50 (default: all)")
    parser.add_argument("--levels", help="which signal levels, e.g. 9, 1-3 or 1,3,5 (default: all)")
    parser.add_argument("--which", choices=("best", "last"), default="best", help="weights of each run to use")
    parser.add_argument("--backend", choices=BACKENDS, default="keras", help="inference backend")
    add_tiling_arguments(parser, "tile side in input pixels (default auto: whole image when it fits)")
    parser.add_argument("--resolution", action="store_true",
                        help="also compute the decorrelation resolution (column resolution_nm of metrics.csv)")
    parser.add_argument("--wiener", type=float, default=DEFAULT_WIENER,
                        help="Wiener parameter of conventional SIM")
    parser.add_argument("--known", action="store_true",
                        help="conventional SIM: use the simulation.json next to each stack for the pattern wave "
                             "vectors (simulated data) instead of estimating them")
    parser.add_argument("--overwrite", action="store_true",
                        help="replace the output folder if it holds a previous 'dfcan assess' output")
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")


def run_from_args(args: argparse.Namespace) -> int:
    """Run ``dfcan assess``; 0 on success, 1 when some records failed (listed on stderr)."""
    from dfcan_tf.evaluation.assess import assess

    specimens = [s for s in args.specimens.split(",") if s] if args.specimens else None
    result = assess(args.runs, args.data, args.output, rule=args.rule, specimens=specimens, cells=args.cells,
                    levels=args.levels, which=args.which, backend=args.backend, tile_size=args.tile_size,
                    overlap=args.overlap, resolution=args.resolution, wiener=args.wiener, known=args.known,
                    overwrite=args.overwrite, progress=not args.no_progress)
    for net in result.networks:
        cells = [r for r in result.matrix if r["network"] == net]
        inside = sum(r["in_priority_region"] for r in cells)
        print(f"{net}: priority region {inside}/{len(cells)} (specimen, level) cells (rule {result.rule})")
    print(result.metrics_path)
    print(result.matrix_path)
    print(result.plot_path)
    for _path, message in result.failures:
        print(f"dfcan assess: error: {message}", file=sys.stderr)
    return 0 if result.ok else 1
