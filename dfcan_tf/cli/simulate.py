"""``dfcan simulate``: simulate BioSR-like SIM data in BioSR's layout (:mod:`dfcan_tf.data.simulate`)."""

from __future__ import annotations

import argparse

from dfcan_tf.errors import DfcanError

# Kept here (not imported) so that `dfcan simulate --help` loads no numpy/scipy; a test checks it equals
# dfcan_tf.data.simulate.SPECIMENS.
SPECIMENS = ("CCPs", "ER", "Microtubules", "F-actin", "F-actin_Nonlinear")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Register the ``dfcan simulate`` flags on ``parser``."""
    parser.add_argument("out_dir", help="dataset root to write (BioSR layout)")
    parser.add_argument("--specimens", default=",".join(SPECIMENS),
                        help=f"comma-separated specimens (default: all of {','.join(SPECIMENS)})")
    parser.add_argument("--cells", default="4", help="cells per specimen, or numbers like 36-50 (default: 4)")
    parser.add_argument("--levels", type=int, default=9, help="signal levels, level 1 lowest (default: 9)")
    parser.add_argument("--size", type=int, default=128, help="raw image side in pixels, even (default: 128)")
    parser.add_argument("--photons", type=float, nargs=2, default=(15.0, 600.0), metavar=("LOW", "HIGH"),
                        help="mean foreground photons per pixel per frame at level 1 and the last level")
    parser.add_argument("--background", type=float, default=0.1, help="background as a fraction of the photons")
    parser.add_argument("--read-noise", type=float, default=1.5, help="camera read noise, electrons rms")
    parser.add_argument("--offset", type=float, default=100.0, help="camera offset, ADU")
    parser.add_argument("--gt-photons", type=float, default=1000.0, help="foreground photons of GT-SIM")
    parser.add_argument("--na", type=float, default=1.3, help="detection numerical aperture")
    parser.add_argument("--emission-nm", type=float, default=525.0, help="emission wavelength, nm")
    parser.add_argument("--modulation", type=float, default=0.8, help="illumination modulation depth")
    parser.add_argument("--pattern-ratio", type=float, default=0.9, help="pattern frequency / detection cutoff")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--overwrite", action="store_true",
                        help="replace cell folders of a previous 'dfcan simulate' output")
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")


def run_from_args(args: argparse.Namespace) -> int:
    """Run ``dfcan simulate`` with parsed ``args``; return the exit status."""
    from dfcan_tf.data.simulate import simulate_dataset

    cells = int(args.cells) if str(args.cells).isdigit() else args.cells
    for name, lo, hi in (("na", 0.1, 1.7), ("modulation", 0.0, 1.0), ("pattern_ratio", 0.0, 1.0)):
        v = getattr(args, name)
        if not lo < v <= hi:
            raise DfcanError(f"--{name.replace('_', '-')} must be in ({lo}, {hi}]. Received: {v}")
    written = simulate_dataset(
        args.out_dir, specimens=args.specimens, cells=cells, levels=args.levels, size=args.size, seed=args.seed,
        overwrite=args.overwrite, progress=not args.no_progress, photons=tuple(args.photons),
        background=args.background, read_noise=args.read_noise, offset=args.offset, gt_photons=args.gt_photons,
        na=args.na, emission_nm=args.emission_nm, modulation=args.modulation, pattern_ratio=args.pattern_ratio,
    )
    print(f"simulated {len(written)} cells into {args.out_dir}")
    return 0
