"""``dfcan patches``: cut training/validation patch pairs (:mod:`dfcan_tf.data.patches`, :mod:`dfcan_tf.data.pairs`).

From BioSR-layout data (``dfcan patches DATA -o OUT``; the older ``dfcan
patches DATA OUT`` still works) or from a microscopist's own registered pairs
(``dfcan patches --pairs WF_DIR GT_DIR -o OUT`` or ``--pairs-csv PAIRS.csv -o
OUT``, ``docs/own-data.md#training-on-your-own-pairs``).
"""

from __future__ import annotations

import argparse

from dfcan_tf.errors import DfcanError


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Register the ``dfcan patches`` flags on ``parser``."""
    parser.add_argument("data_root", nargs="?", default=None,
                        help="BioSR-layout folder (real BioSR or dfcan simulate output); omit with --pairs/--pairs-csv")
    parser.add_argument("out_dir", nargs="?", default=None, metavar="OUT",
                        help="output folder, as a second argument instead of -o (BioSR data only)")
    parser.add_argument("--pairs", nargs=2, metavar=("WF_DIR", "GT_DIR"), default=None,
                        help="your own registered pairs: wide-field TIFFs in WF_DIR, their ground truth (scale × "
                             "larger) in GT_DIR, matched by identical file name")
    parser.add_argument("--pairs-csv", metavar="PAIRS.csv", default=None,
                        help="your own registered pairs listed in a CSV with columns wf,gt (paths relative to the "
                             "CSV's folder)")
    parser.add_argument("-o", "--output", default=None,
                        help="output folder (DL-SR layout), outside the inputs; must not exist or be empty unless "
                             "--overwrite")
    parser.add_argument("--scale", type=int, default=None,
                        help="GT/input size ratio; taken from the data when not given (all images must agree)")
    parser.add_argument("--patch-size", type=int, default=128, help="input patch side in pixels")
    parser.add_argument("--n-train", type=int, default=1000, help="number of training patches")
    parser.add_argument("--n-val", type=int, default=100, help="number of validation patches")
    parser.add_argument("--specimens", default=None, help="BioSR: comma-separated specimen folders; all when not given")
    parser.add_argument("--levels", default=None, help="BioSR: signal levels, e.g. 1-9; all when not given")
    parser.add_argument("--val-cells", default=None,
                        help="validation cells (BioSR) or pair numbers (pairs, 1 = first by name or CSV row), "
                             "e.g. 1-5; when not given see docs/data.md#split-recipe (BioSR) or "
                             "docs/own-data.md#split (pairs)")
    parser.add_argument("--train-cells", default=None,
                        help="training cells or pair numbers, e.g. 6-35; the others when not given")
    parser.add_argument("--no-rotate", action="store_true", help="no random rotation")
    parser.add_argument("--no-flips", action="store_true", help="no flipped copies")
    parser.add_argument("--seed", type=int, default=0, help="seed of crop positions and rotation angles")
    parser.add_argument("--overwrite", action="store_true",
                        help="replace the output folder if an earlier 'dfcan patches' wrote it (never any other folder)")
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")


def _output(args: argparse.Namespace) -> str:
    """The output folder (``-o`` or the legacy second positional argument) and the one data source, checked."""
    own = args.pairs is not None or args.pairs_csv is not None
    if own and args.data_root is not None and args.out_dir is None and args.output is None:
        raise DfcanError(f"unexpected argument {args.data_root!r}; with --pairs or --pairs-csv give the output "
                         f"folder as -o {args.data_root}")
    sources = [s for s, v in (("DATA_ROOT", args.data_root), ("--pairs", args.pairs), ("--pairs-csv", args.pairs_csv))
               if v is not None]
    if len(sources) != 1:
        raise DfcanError("give one data source: a BioSR-layout DATA_ROOT, --pairs WF_DIR GT_DIR or --pairs-csv "
                         f"PAIRS.csv. Received: {', '.join(sources) or 'none'}")
    if args.out_dir is not None and args.data_root is None:
        raise DfcanError(f"unexpected argument {args.out_dir!r}; with --pairs or --pairs-csv give the output "
                         "folder as -o OUT")
    if args.output is not None and args.out_dir is not None:
        raise DfcanError(f"two output folders given ({args.out_dir} and -o {args.output}); give one, with -o")
    out = args.output or args.out_dir
    if out is None:
        raise DfcanError("no output folder: give -o OUT")
    if args.data_root is None:
        for flag, value in (("--specimens", args.specimens), ("--levels", args.levels)):
            if value is not None:
                raise DfcanError(f"{flag} selects BioSR data; it does not apply to --pairs / --pairs-csv")
    return out


def run_from_args(args: argparse.Namespace) -> int:
    """Run ``dfcan patches`` with parsed ``args``; return the exit status."""
    from dfcan_tf.data.patches import SPLITS, make_patches

    out = _output(args)
    common = dict(scale=args.scale, patch_size=args.patch_size, n_train=args.n_train, n_val=args.n_val,
                  val_cells=args.val_cells, train_cells=args.train_cells, rotate=not args.no_rotate,
                  flips=not args.no_flips, seed=args.seed, overwrite=args.overwrite, progress=not args.no_progress)
    if args.data_root is not None:
        manifest = make_patches(args.data_root, out, specimens=args.specimens.split(",") if args.specimens else None,
                                levels=args.levels, **common)
    else:
        from dfcan_tf.data.pairs import make_pair_patches

        manifest = make_pair_patches(out, pairs_dirs=tuple(args.pairs) if args.pairs else None,
                                     pairs_csv=args.pairs_csv, **common)
    counts = {s: sum(p["split"] == s for p in manifest["patches"]) for s in SPLITS}
    px = manifest.get("pixel_size_nm")
    print(f"wrote {counts['training']} training and {counts['validate']} validation patch pairs "
          f"(scale {manifest['scale']}, {manifest['frames']} frame(s), {manifest['patch_size']}-px inputs, "
          f"input pixel size {f'{px:.4g} nm' if px else 'unknown'}) to {out}")
    return 0
