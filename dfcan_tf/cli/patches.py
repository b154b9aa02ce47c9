"""``dfcan patches``: cut training/validation patch pairs from BioSR-layout data (:mod:`dfcan_tf.data.patches`)."""

from __future__ import annotations

import argparse


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Register the ``dfcan patches`` flags on ``parser``."""
    parser.add_argument("data_root", help="BioSR-layout folder (real BioSR or dfcan simulate output)")
    parser.add_argument("out_dir", help="output folder (DL-SR layout), outside DATA_ROOT; must not exist or be "
                        "empty unless --overwrite")
    parser.add_argument("--scale", type=int, default=None, help="GT/raw ratio (default: from the data)")
    parser.add_argument("--patch-size", type=int, default=128, help="raw patch side (default: 128)")
    parser.add_argument("--n-train", type=int, default=1000, help="training patches (default: 1000)")
    parser.add_argument("--n-val", type=int, default=100, help="validation patches (default: 100)")
    parser.add_argument("--specimens", default=None, help="comma-separated specimen folders (default: all)")
    parser.add_argument("--levels", default=None, help="signal levels, e.g. 1-9 (default: all)")
    parser.add_argument("--val-cells", default=None, help="validation cells, e.g. 1-5 (default: see docs)")
    parser.add_argument("--train-cells", default=None, help="training cells, e.g. 6-35")
    parser.add_argument("--no-rotate", action="store_true", help="no random rotation")
    parser.add_argument("--no-flips", action="store_true", help="no flipped copies")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--overwrite", action="store_true",
                        help="replace OUT_DIR if an earlier 'dfcan patches' wrote it (never any other folder)")
    parser.add_argument("--no-progress", action="store_true")


def run_from_args(args: argparse.Namespace) -> int:
    """Run ``dfcan patches`` with parsed ``args``; return the exit status."""
    from dfcan_tf.data.patches import SPLITS, make_patches

    manifest = make_patches(
        args.data_root, args.out_dir, scale=args.scale, patch_size=args.patch_size, n_train=args.n_train,
        n_val=args.n_val, specimens=args.specimens.split(",") if args.specimens else None, levels=args.levels,
        val_cells=args.val_cells, train_cells=args.train_cells, rotate=not args.no_rotate, flips=not args.no_flips,
        seed=args.seed, overwrite=args.overwrite, progress=not args.no_progress,
    )
    counts = {s: sum(p["split"] == s for p in manifest["patches"]) for s in SPLITS}
    print(f"wrote {counts['training']} training and {counts['validate']} validation patch pairs "
          f"(scale {manifest['scale']}, {manifest['frames']} frames) to {args.out_dir}")
    return 0
