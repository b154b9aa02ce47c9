"""``dfcan simulate``: simulate BioSR-like SIM data in BioSR's layout (:mod:`dfcan_tf.data.simulate`)."""

from __future__ import annotations

import argparse

from dfcan_tf.errors import DfcanError

# Kept here (not imported) so that `dfcan simulate --help` loads no numpy/scipy; a test checks they equal
# dfcan_tf.data.simulate.SPECIMENS and N_LEVELS.
SPECIMENS = ("CCPs", "ER", "Microtubules", "F-actin", "F-actin_Nonlinear")
N_LEVELS = 9


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Register the ``dfcan simulate`` flags on ``parser``."""
    parser.add_argument("out_dir", help="dataset root to write (BioSR layout)")
    parser.add_argument("--specimens", default=",".join(SPECIMENS), help="comma-separated specimens")
    parser.add_argument("--cells", default="4", help="cells per specimen (a count), or cell numbers like 36-50")
    parser.add_argument("--levels", default=None, metavar="SPEC",
                        help="which signal levels to write, as for patches/evaluate: '9' (level 9 only), '1-3', "
                             f"'1,3,5' (default: all, 1-{N_LEVELS}); a level's photons and noise do not depend on "
                             "which others are written")
    parser.add_argument("--n-levels", type=int, default=N_LEVELS,
                        help="signal levels the photon range is divided into (geometric, level 1 lowest)")
    parser.add_argument("--size", type=int, default=128, help="raw image side in pixels, even")
    parser.add_argument("--photons", type=float, nargs=2, default=(15.0, 600.0), metavar=("LOW", "HIGH"),
                        help="mean foreground photons per pixel per frame at level 1 and at level N_LEVELS")
    parser.add_argument("--background", type=float, default=0.1, help="background as a fraction of the photons")
    parser.add_argument("--read-noise", type=float, default=1.5, help="camera read noise, electrons rms")
    parser.add_argument("--offset", type=float, default=100.0, help="camera offset, ADU")
    parser.add_argument("--gt-photons", type=float, default=1000.0, help="foreground photons of GT-SIM")
    parser.add_argument("--na", type=float, default=1.3, help="detection numerical aperture")
    parser.add_argument("--emission-nm", type=float, default=525.0, help="emission wavelength, nm")
    parser.add_argument("--modulation", type=float, default=0.8, help="illumination modulation depth")
    parser.add_argument("--pattern-ratio", type=float, default=0.9, help="pattern frequency / detection cutoff")
    parser.add_argument("--seed", type=int, default=0,
                        help="master seed (each specimen and cell draws from its own child seed)")
    parser.add_argument("--overwrite", action="store_true",
                        help="replace cell folders of a previous 'dfcan simulate' output")
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")


def run_from_args(args: argparse.Namespace) -> int:
    """Run ``dfcan simulate`` with parsed ``args``; return the exit status."""
    from dfcan_tf.data.simulate import select_levels, simulate_dataset

    cells = int(args.cells) if str(args.cells).isdigit() else args.cells
    for name, lo, hi in (("na", 0.1, 1.7), ("modulation", 0.0, 1.0), ("pattern_ratio", 0.0, 1.0)):
        v = getattr(args, name)
        if not lo < v <= hi:
            raise DfcanError(f"--{name.replace('_', '-')} must be in ({lo}, {hi}]. Received: {v}")
    levels = select_levels(args.levels, args.n_levels)
    written = simulate_dataset(
        args.out_dir, specimens=args.specimens, cells=cells, levels=levels, n_levels=args.n_levels, size=args.size,
        seed=args.seed,
        overwrite=args.overwrite, progress=not args.no_progress, photons=tuple(args.photons),
        background=args.background, read_noise=args.read_noise, offset=args.offset, gt_photons=args.gt_photons,
        na=args.na, emission_nm=args.emission_nm, modulation=args.modulation, pattern_ratio=args.pattern_ratio,
    )
    shown = f"levels 1-{args.n_levels}" if levels == list(range(1, args.n_levels + 1)) else \
        f"level{'s' if len(levels) > 1 else ''} {','.join(map(str, levels))} of {args.n_levels}"
    print(f"simulated {len(written)} cells ({shown}) into {args.out_dir}")
    return 0
