"""``dfcan sim-reconstruct DATA -o OUT``: conventional SIM reconstruction of raw SIM stacks.

DATA is a BioSR-layout folder (every raw stack :func:`dfcan_tf.data.biosr.discover`
finds) or one or more MRC/TIFF raw stacks. A 9-frame stack is reconstructed
as linear SIM on the 2× grid, a 25-frame stack as nonlinear SIM on the 3×
grid (:mod:`dfcan_tf.sim.reconstruct`). For every stack OUT receives

* ``<name>.tif``: the reconstruction, 16-bit (scaled so its maximum is
  65535), with its pixel size;
* ``<name>.json``: the illumination parameters (estimated, or given), per
  orientation k in cycles/pixel, period in nm, angle in degrees, phase and
  modulation, and the factor ``tiff_scale`` from TIFF values back to the
  intensity units of one raw frame.

BioSR inputs are named ``<specimen>/Cell_NNN_level_LL``. OUT is checked
before any work (:mod:`dfcan_tf.safety`) and written as a staged folder that
replaces it only when every stack is done; the inputs are only read.
"""

from __future__ import annotations

import argparse
import json
import os
from pathlib import Path
from typing import TYPE_CHECKING

from dfcan_tf import safety
from dfcan_tf.errors import DfcanError

if TYPE_CHECKING:
    import numpy as np

    from dfcan_tf.sim.reconstruct import SIMParameters

# The same values as dfcan_tf.sim.reconstruct (a test checks they agree); kept here so that --help does not
# import scipy (dfcan assess uses them too).
APODISATIONS = ("otf", "triangle", "cosine", "none")
DEFAULT_WIENER = 0.1
COMMAND = "sim-reconstruct"
STACK_SUFFIXES = (".mrc", ".dv", ".tif", ".tiff")
FRAMES = {9: "linear", 25: "nonlinear"}


def _jobs(data: list[Path], *, specimens, cells, levels) -> list[tuple[Path, Path]]:
    """(input stack, output name without suffix) for every stack to reconstruct."""
    from dfcan_tf.data.biosr import discover

    if len(data) == 1 and data[0].is_dir():
        folder = data[0]
        direct = sorted(p for p in folder.iterdir() if p.is_file() and p.suffix.lower() in STACK_SUFFIXES)
        if direct and not any(p.is_dir() for p in folder.iterdir()):
            return [(p, Path(p.stem)) for p in direct]
        specs = [s for s in specimens.split(",") if s] if specimens else None
        records = discover(folder, specimens=specs, cells=cells, levels=levels)
        return [(r.raw_path, Path(r.specimen) / f"Cell_{r.cell:03d}_level_{r.level:02d}") for r in records]
    jobs = []
    for p in data:
        if p.is_dir():
            raise DfcanError(f"{p}: give one BioSR-layout folder alone, or stack files")
        if not p.is_file():
            raise DfcanError(f"{p}: no such file")
        jobs.append((p, Path(p.stem)))
    names = [str(n) for _, n in jobs]
    dup = next((n for n in names if names.count(n) > 1), None)
    if dup:
        raise DfcanError(f"two inputs would both be written as {dup}.tif; reconstruct them into separate folders")
    return jobs


def reconstruct_file(path: str | os.PathLike, *, pixel_nm: float | None = None, na: float = 1.3,
                     emission_nm: float | None = None, wiener: float = DEFAULT_WIENER,
                     apodisation: str = "otf", params: SIMParameters | None = None,
                     use_simulation: bool = False) -> tuple[np.ndarray, SIMParameters, float]:
    """Reconstruct one raw stack file; return (image, parameters, output pixel size in nm).

    Pixel size and emission wavelength default to the file's metadata (MRC
    header, TIFF resolution), else 62.6 nm and 525 nm (BioSR). With
    ``use_simulation`` a ``simulation.json`` next to the stack supplies the
    known wave vectors.

    Raises
    ------
    DfcanError
        Naming the file: unreadable, not 9 or 25 frames, or frames too small.
    """
    import numpy as np

    from dfcan_tf.data.files import read_image
    from dfcan_tf.sim.reconstruct import (
        parameters_from_simulation,
        reconstruct_linear,
        reconstruct_nonlinear,
    )

    path = Path(path)
    frames, meta = read_image(path)
    n = frames.shape[0]
    if n not in FRAMES:
        raise DfcanError(f"{path}: {n} frames of {frames.shape[1]}×{frames.shape[2]}; expected 9 (linear SIM, "
                         "3 orientations × 3 phases) or 25 (nonlinear SIM, 5 × 5) frames per stack")
    if min(frames.shape[1:]) < 32:
        raise DfcanError(f"{path}: frames of {frames.shape[1]}×{frames.shape[2]} pixels are too small (≥ 32)")
    px = float(pixel_nm or meta.get("pixel_size_nm") or 62.6)
    em = float(emission_nm or meta.get("wavelength_nm") or 525.0)
    if use_simulation and params is None:
        sim_json = path.parent / "simulation.json"
        if not sim_json.is_file():
            sim_json = path.parent.parent / "simulation.json"  # ER layout: RawSIMData/ one level down
        if not sim_json.is_file():
            raise DfcanError(f"{path}: --known given but there is no simulation.json next to it")
        params = parameters_from_simulation(sim_json)
    fn = reconstruct_linear if n == 9 else reconstruct_nonlinear
    try:
        image, est = fn(frames.astype(np.float64), pixel_nm=px, na=na, emission_nm=em, wiener=wiener,
                        params=params, apodisation=apodisation)
    except DfcanError as exc:
        raise DfcanError(f"{path}: {exc}") from None
    return image, est, px / (2 if n == 9 else 3)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Register the ``dfcan sim-reconstruct`` flags on ``parser``."""
    parser.add_argument("data", nargs="+", help="BioSR-layout folder, or raw SIM stacks (MRC/TIFF, 9 or 25 frames)")
    parser.add_argument("-o", "--output", required=True, help="output folder (new, empty, or a previous output "
                                                              "with --overwrite)")
    parser.add_argument("--pixel-nm", type=float, default=None,
                        help="raw pixel size in nm (default: from the file, else 62.6)")
    parser.add_argument("--na", type=float, default=1.3, help="detection numerical aperture")
    parser.add_argument("--emission-nm", type=float, default=None,
                        help="emission wavelength in nm (default: from the file, else 525)")
    parser.add_argument("--wiener", type=float, default=DEFAULT_WIENER,
                        help="Wiener parameter w, larger is smoother")
    parser.add_argument("--apodisation", choices=APODISATIONS, default="otf",
                        help="apodisation to the extended support")
    parser.add_argument("--params", default=None,
                        help="JSON of known parameters (an output .json of this command, or a simulation.json) "
                             "used for every stack instead of estimating them")
    parser.add_argument("--known", action="store_true",
                        help="use the simulation.json next to each stack for the pattern wave vectors")
    parser.add_argument("--specimens", default=None, help="BioSR: comma-separated specimen folders (default: all)")
    parser.add_argument("--cells", default=None, help="BioSR: cell numbers, e.g. 1-5,8 (default: all)")
    parser.add_argument("--levels", default=None, help="BioSR: which signal levels, e.g. 9, 1-3 or 1,3,5 (default: all)")
    parser.add_argument("--overwrite", action="store_true",
                        help="replace a previous 'dfcan sim-reconstruct' output folder")
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")


def _load_params(path: str | None) -> SIMParameters | None:
    from dfcan_tf.sim.reconstruct import SIMParameters, parameters_from_simulation

    if path is None:
        return None
    p = Path(path)
    try:
        doc = json.loads(p.read_text())
    except (OSError, ValueError) as exc:
        raise DfcanError(f"--params {p}: cannot read a JSON file ({exc})") from None
    if not isinstance(doc, dict):
        raise DfcanError(f"--params {p}: expected a JSON object")
    if "orientations_deg" in doc:
        return parameters_from_simulation(doc)
    try:
        return SIMParameters.from_dict(doc)
    except DfcanError as exc:
        raise DfcanError(f"--params {p}: {exc}") from None


def run_from_args(args: argparse.Namespace) -> int:
    """Run ``dfcan sim-reconstruct`` with parsed ``args``; return the exit status."""
    import numpy as np
    from tqdm import tqdm

    from dfcan_tf.data.files import write_tiff
    from dfcan_tf.sim.reconstruct import parameters_to_json

    for flag, v in (("--na", args.na), ("--wiener", args.wiener), ("--pixel-nm", args.pixel_nm),
                    ("--emission-nm", args.emission_nm)):
        if v is not None and not (np.isfinite(v) and v > 0):
            raise DfcanError(f"{flag} must be a positive number. Received: {v}")
    if args.params and args.known:
        raise DfcanError("--params and --known exclude each other; give one source of known parameters")
    data = [Path(d) for d in args.data]
    out = Path(args.output)
    params = _load_params(args.params)
    inputs = [*data, *([args.params] if args.params else [])]
    safety.check_output_dir(out, command=COMMAND, overwrite=args.overwrite, inputs=inputs)
    jobs = _jobs(data, specimens=args.specimens, cells=args.cells, levels=args.levels)
    with safety.staged_dir(out, command=COMMAND) as staged:
        for src, name in tqdm(jobs, desc=COMMAND, unit="stack", disable=args.no_progress):
            image, est, out_px = reconstruct_file(src, pixel_nm=args.pixel_nm, na=args.na,
                                                  emission_nm=args.emission_nm, wiener=args.wiener,
                                                  apodisation=args.apodisation, params=params,
                                                  use_simulation=args.known)
            peak = float(image.max())
            scale = peak if peak > 0 else 1.0
            write_tiff(staged / name.with_suffix(".tif"), image / scale, pixel_size_nm=out_px)
            est.extra.update({"input": str(src), "output_pixel_nm": out_px, "tiff_scale": scale / 65535.0})
            (staged / name.with_suffix(".json")).write_text(parameters_to_json(est) + "\n")
    print(f"reconstructed {len(jobs)} stack(s) into {out}")
    return 0
