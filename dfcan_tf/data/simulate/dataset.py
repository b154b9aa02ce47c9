"""Simulated BioSR-like cells and datasets: camera noise, signal levels, BioSR layout (``dfcan simulate``).

A forward model of the SIM microscope BioSR was acquired on, so that networks
trained here face the same problem as on BioSR:

1. **Structure** on the fine (GT) grid: CCPs (sparse hollow rings 50–150 nm
   across), microtubules (long smooth crossing filaments), ER (tubular network
   with three-way junctions and a few fenestrated sheets) and F-actin (dense
   meshwork of thin filaments plus bundles), each object with its own
   brightness, inside a cell with a soft edge and slow brightness variation.
2. **Optics**: incoherent wide-field OTF of a circular pupil (emission 525 nm,
   NA 1.3, cutoff 2·NA/λ). Linear SIM frames are structure × sinusoidal
   illumination (3 orientations × 3 phases, modulation 0.8, pattern frequency
   0.9 × cutoff), blurred by the OTF and sampled on the raw grid (62.6 nm) by
   Fourier cropping, which is exact for a band-limited image. Nonlinear SIM
   (F-actin_Nonlinear) adds the second harmonic of the pattern (5 × 5 frames)
   and has a 3× GT grid. The WF image is the sum of the frames. GT-SIM is the
   structure imaged with an OTF of scale × the detection support (2× for
   linear, 3× for nonlinear SIM) at high photon counts on the fine grid.
3. **Camera**: per signal level a mean photon count (geometric from 15 to 600
   over the foreground across ``n_levels`` = 9 levels, level 1 lowest),
   out-of-focus background, Poisson shot noise, Gaussian read noise, camera
   offset, 16-bit. ``levels`` selects which of the levels are written (all by
   default); a level's photon count and noise do not depend on that choice.

Everything runs on numpy/scipy FFTs on a field padded by a margin that is
cropped away, so circular convolution never wraps structure across the edges.
Files are written in BioSR's layout and Priism MRC flavour, so
:func:`dfcan_tf.data.biosr.discover` and :func:`dfcan_tf.data.files.read_mrc` are the only
read path for simulated and real data alike.
"""


from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import scipy.fft as sfft

from dfcan_tf import safety
from dfcan_tf.data.simulate.optics import (
    PAD_RAW,
    RAW_PIXEL_NM,
    _freq_grid,
    detection_cutoff,
    illumination_patterns,
    image_frames,
    pupil_otf,
)
from dfcan_tf.data.simulate.structures import NONLINEAR, SPECIMENS, render_structure
from dfcan_tf.errors import DfcanError

__all__ = ["N_LEVELS", "SimulatedCell", "check_output", "level_photons", "select_levels", "simulate_cell",
           "simulate_dataset", "write_cell"]

N_LEVELS = 9  # signal levels the photon range is divided into (BioSR's linear-SIM specimens have 9)


# ----------------------------------------------------------------- one cell
@dataclass
class SimulatedCell:
    """All arrays of one simulated cell (in memory; :func:`write_cell` writes them).

    Attributes
    ----------
    structure
        (sN, sN) ground-truth fluorophore density on the fine grid.
    clean_frames
        (frames, N, N) noise-free raw SIM frames (relative units).
    raw
        (len(levels), frames, N, N) uint16 noisy raw stacks, one per selected
        level, lowest first.
    raw_gt
        (frames, N, N) uint16 high-SNR raw stack (BioSR's RawSIMData_gt).
    gt, gt_clean
        (sN, sN) GT-SIM: uint16 at high SNR, and its noise-free float version.
    wf_clean
        (N, N) noise-free WF (sum of the clean frames).
    signal_scale, background
        Per selected level: photo-electrons per clean unit, and background photons per
        pixel per frame, so that ``E[raw] = offset + gain·(signal_scale·clean
        + background)``.
    params
        JSON-able description of everything above.
    levels
        The level numbers of ``raw`` (1 = lowest signal of ``n_levels``).
    """

    specimen: str
    scale: int
    structure: np.ndarray
    clean_frames: np.ndarray
    raw: np.ndarray
    raw_gt: np.ndarray
    gt: np.ndarray
    gt_clean: np.ndarray
    wf_clean: np.ndarray
    signal_scale: np.ndarray
    background: np.ndarray
    params: dict = field(default_factory=dict)
    levels: list[int] = field(default_factory=list)

    @property
    def wf(self) -> np.ndarray:
        """(len(levels), N, N) float32 WF images: the sum of each level's raw frames."""
        return self.raw.astype(np.float32).sum(axis=1)


def level_photons(n_levels: int = N_LEVELS, photons: tuple[float, float] = (15.0, 600.0)) -> np.ndarray:
    """Mean foreground photons per raw pixel per frame of levels 1..n_levels (geometric, level 1 lowest)."""
    lo, hi = photons
    return np.geomspace(lo, hi, n_levels) if n_levels > 1 else np.array([hi], float)


def select_levels(levels, n_levels: int = N_LEVELS) -> list[int]:
    """The level numbers ``levels`` selects out of 1..``n_levels``, sorted.

    ``levels`` is ``None`` (all), a level number, an iterable of numbers or a
    string like ``"9"``, ``"1-3"`` or ``"1,3,5"`` (as ``dfcan evaluate --levels``).

    Raises
    ------
    DfcanError
        A malformed selection, or a level outside 1..``n_levels``.
    """
    from dfcan_tf.data.biosr import parse_cells

    if not isinstance(n_levels, (int, np.integer)) or not 1 <= n_levels <= 99:
        raise DfcanError(f"n_levels must be between 1 and 99. Received: n_levels={n_levels!r}")
    if levels is None:
        return list(range(1, int(n_levels) + 1))
    try:
        chosen = parse_cells(int(levels) if isinstance(levels, np.integer) else levels)
    except (DfcanError, TypeError, ValueError):
        raise DfcanError(f"levels must be level numbers and ranges like '9', '1-3' or '1,3,5'. "
                         f"Received: {levels!r}") from None
    if not chosen:
        raise DfcanError(f"levels selects no level. Received: {levels!r}")
    bad = [v for v in chosen if not 1 <= v <= n_levels]
    if bad:
        raise DfcanError(f"level {bad[0]} is outside 1-{n_levels}: the photon range is divided into "
                         f"n_levels={n_levels} levels (--n-levels), level 1 lowest. Received: levels={levels!r}")
    return chosen


def _camera(rng, expected, gain, read_noise, offset) -> np.ndarray:
    counts = gain * rng.poisson(expected) + rng.normal(0.0, read_noise * gain, size=expected.shape) + offset
    return np.clip(np.round(counts), 0, 65535).astype(np.uint16)


def simulate_cell(
    specimen: str,
    *,
    size: int = 128,
    levels: int | str | list[int] | None = None,
    n_levels: int = N_LEVELS,
    seed: int | np.random.SeedSequence = 0,
    photons: tuple[float, float] = (15.0, 600.0),
    background: float = 0.1,
    read_noise: float = 1.5,
    offset: float = 100.0,
    gain: float = 1.0,
    gt_photons: float = 1000.0,
    raw_gt_photons: float = 2000.0,
    na: float = 1.3,
    emission_nm: float = 525.0,
    raw_pixel_nm: float = RAW_PIXEL_NM,
    modulation: float = 0.8,
    pattern_ratio: float = 0.9,
    harmonic: float = 0.35,
) -> SimulatedCell:
    """Simulate one cell: structure, raw SIM stacks at the selected signal levels, WF and GT-SIM.

    Parameters
    ----------
    specimen
        One of :data:`SPECIMENS`; ``"F-actin_Nonlinear"`` gives 25-frame
        nonlinear SIM with a 3× GT, the others 9-frame linear SIM with a 2× GT.
    size
        Raw image side N in pixels (even, ≥ 32). GT side is scale·N.
    levels
        Which signal levels to simulate (:func:`select_levels`; default all).
    n_levels
        Levels the photon range is divided into (geometric over ``photons``):
        level L always gets the same photon count and noise, whichever levels
        are selected.
    seed
        Seed (or SeedSequence) of every random choice.
    photons
        Mean signal photons per raw pixel per frame over the foreground at
        level 1 and at level ``n_levels``.
    background
        Out-of-focus background per pixel, as a fraction of the level's photons.
    read_noise, offset, gain
        Camera: Gaussian read noise (electrons rms), offset (ADU), ADU per electron.
    gt_photons, raw_gt_photons
        Foreground photons of the GT-SIM image and of the high-SNR raw stack.
    na, emission_nm, raw_pixel_nm
        Detection optics and camera pixel size in the sample.
    modulation, pattern_ratio, harmonic
        Pattern modulation depth, pattern frequency / detection cutoff, and
        second-harmonic depth (nonlinear SIM only).

    Returns
    -------
    SimulatedCell
    """
    _check_sizes(size, photons)
    chosen = select_levels(levels, n_levels)
    rng = np.random.default_rng(seed)
    nonlinear = specimen == NONLINEAR
    scale = 3 if nonlinear else 2
    n_raw = size + 2 * PAD_RAW
    m = scale * n_raw
    px = raw_pixel_nm / scale
    cutoff = detection_cutoff(na, emission_nm)
    if cutoff >= 1.0 / (2.0 * raw_pixel_nm):
        raise DfcanError(
            f"the detection cutoff {cutoff * 1000:.2f}/µm exceeds the raw Nyquist frequency; "
            f"raw pixels must be below λ/(4NA) = {emission_nm / (4 * na):.1f} nm. "
            f"Received: raw_pixel_nm={raw_pixel_nm}"
        )

    structure, info = render_structure(specimen, m, px, rng)
    freq = pattern_ratio * cutoff
    n_ori, n_pha = (5, 5) if nonlinear else (3, 3)
    patterns, angles, phases = illumination_patterns(
        m, px, frequency=freq, n_orientations=n_ori, n_phases=n_pha, modulation=modulation,
        harmonic=harmonic if nonlinear else 0.0, angle0=rng.uniform(0, np.pi / n_ori),
    )
    fr = _freq_grid(m, px)
    frames = image_frames(structure, patterns, pupil_otf(fr, cutoff), n_raw)
    gt_clean = sfft.irfft2(sfft.rfft2(structure) * pupil_otf(fr, scale * cutoff), s=(m, m))

    inner = slice(PAD_RAW, PAD_RAW + size)
    fine = slice(scale * PAD_RAW, scale * (PAD_RAW + size))
    frames = np.clip(frames[:, inner, inner], 0, None)
    gt_clean = np.clip(gt_clean[fine, fine], 0, None).astype(np.float32)
    structure = structure[fine, fine].astype(np.float32)
    wf_clean = frames.sum(axis=0)

    # Photon budget: "photons" is the mean over the foreground (where the cell's signal is).
    fg = wf_clean > 0.2 * np.percentile(wf_clean, 99)
    mean_fg = float(frames[:, fg].mean())
    idx = [lv - 1 for lv in chosen]
    photons_per_level = level_photons(n_levels, photons)
    signal_scale = photons_per_level / mean_fg
    bg = background * photons_per_level
    raw = np.empty((len(chosen), len(frames), size, size), np.uint16)
    # Every level draws its noise in turn, kept or not: a level's data do not depend on the selection.
    for i in range(n_levels):
        stack = _camera(rng, signal_scale[i] * frames + bg[i], gain, read_noise, offset)
        if i in idx:
            raw[idx.index(i)] = stack
    raw_gt = _camera(rng, raw_gt_photons / mean_fg * frames + background * raw_gt_photons, gain, read_noise, offset)
    gt_fg = gt_clean > 0.2 * np.percentile(gt_clean, 99)
    gt_scale = gt_photons / float(gt_clean[gt_fg].mean())
    gt = np.clip(rng.poisson(gt_scale * gt_clean.astype(np.float64)), 0, 65535).astype(np.uint16)

    params = {
        "specimen": specimen,
        "size": size,
        "scale": scale,
        "frames": int(len(frames)),
        "raw_pixel_nm": raw_pixel_nm,
        "gt_pixel_nm": px,
        "na": na,
        "emission_nm": emission_nm,
        "detection_cutoff_per_um": cutoff * 1000.0,
        "pattern_frequency_per_um": freq * 1000.0,
        "pattern_period_nm": 1.0 / freq,
        "orientations_deg": np.degrees(angles).tolist(),
        "phases_rad": phases.tolist(),
        "modulation": modulation,
        "second_harmonic": harmonic if nonlinear else 0.0,
        "gt_otf_support": f"{scale} x detection cutoff",
        "gt_photons": gt_photons,
        "raw_gt_photons": raw_gt_photons,
        "camera": {"offset_adu": offset, "read_noise_e": read_noise, "gain_adu_per_e": gain},
        "n_levels": int(n_levels),
        "photons_range": [float(photons[0]), float(photons[1])],
        "levels": [
            {"level": i + 1, "photons": float(photons_per_level[i]), "background_photons": float(bg[i]),
             "signal_scale": float(signal_scale[i])}
            for i in idx
        ],
        "structure": info,
    }
    return SimulatedCell(specimen, scale, structure, frames.astype(np.float32), raw, raw_gt, gt, gt_clean,
                         wf_clean.astype(np.float32), signal_scale[idx], bg[idx], params, chosen)


def _check_sizes(size: int, photons: tuple[float, float]) -> None:
    if not isinstance(size, (int, np.integer)) or size < 32 or size % 2:
        raise DfcanError(f"size must be an even number of raw pixels ≥ 32. Received: size={size!r}")
    lo, hi = photons
    if not 0 < lo <= hi:
        raise DfcanError(f"photons must be 0 < low ≤ high. Received: photons={photons!r}")


# ----------------------------------------------------------------- writing
def write_cell(cell: SimulatedCell, cell_dir: str | os.PathLike) -> list[Path]:
    """Write one simulated cell into ``cell_dir`` in BioSR's layout and MRC flavour.

    Linear SIM specimens get ``RawSIMData_level_LL.mrc``, ``RawSIMData_gt.mrc``
    and ``SIM_gt.mrc``; F-actin_Nonlinear ``SIM_gt_a.mrc`` (the target) and
    ``SIM_gt_b.mrc`` (gamma-0.6 overview); ER ``RawSIMData/`` and ``GTSIM/`` with
    one GT per level. Every cell also gets ``simulation.json``.
    """
    from dfcan_tf.data.files import atomic_path, write_mrc

    cell_dir = Path(cell_dir)
    p = cell.params
    raw_kw = {"pixel_size_nm": p["raw_pixel_nm"], "wavelength_nm": p["emission_nm"], "mode": 6}
    gt_kw = {"pixel_size_nm": p["gt_pixel_nm"], "wavelength_nm": p["emission_nm"], "mode": 6}
    written = []
    numbers = cell.levels or list(range(1, len(cell.raw) + 1))
    if cell.specimen == "ER":
        for i, stack in zip(numbers, cell.raw):
            written.append(write_mrc(cell_dir / "RawSIMData" / f"RawSIMData_level_{i:02d}.mrc", stack, **raw_kw))
            written.append(write_mrc(cell_dir / "GTSIM" / f"GTSIM_level_{i:02d}.mrc", cell.gt, **gt_kw))
    else:
        for i, stack in zip(numbers, cell.raw):
            written.append(write_mrc(cell_dir / f"RawSIMData_level_{i:02d}.mrc", stack, **raw_kw))
        written.append(write_mrc(cell_dir / "RawSIMData_gt.mrc", cell.raw_gt, **raw_kw))
        if cell.specimen == NONLINEAR:
            written.append(write_mrc(cell_dir / "SIM_gt_a.mrc", cell.gt, **gt_kw))
            g = cell.gt.astype(np.float64)
            overview = ((g - g.min()) / max(np.ptp(g), 1e-12)) ** 0.6 * 65535.0
            written.append(write_mrc(cell_dir / "SIM_gt_b.mrc", overview, **gt_kw))
        else:
            written.append(write_mrc(cell_dir / "SIM_gt.mrc", cell.gt, **gt_kw))
    with atomic_path(cell_dir / "simulation.json") as tmp:
        tmp.write_text(json.dumps(p, indent=2))
    written.append(cell_dir / "simulation.json")
    return written


def _resolve_specimens(specimens) -> list[str]:
    if specimens is None:
        return list(SPECIMENS)
    if isinstance(specimens, str):
        specimens = [s for s in specimens.split(",") if s]
    by_lower = {s.lower(): s for s in SPECIMENS}
    out = []
    for s in specimens:
        if s.lower() not in by_lower:
            raise DfcanError(f"unknown specimen. Received: {s!r}; expected some of {', '.join(SPECIMENS)}")
        out.append(by_lower[s.lower()])
    return out


def check_output(out_dir: str | os.PathLike, cell_dirs: list[Path], *, overwrite: bool) -> None:
    """Refuse a dataset root or cell folders that ``dfcan simulate`` may not write (before any work).

    The root must be new, empty, or a previous ``dfcan simulate`` output (its
    marker), to which cells are added. An existing cell folder is replaced
    only with ``overwrite`` and only when it holds the ``simulation.json`` that
    :func:`write_cell` leaves.
    """
    out_dir = Path(out_dir)
    if out_dir.exists() and not out_dir.is_dir():
        raise DfcanError(f"{out_dir}: the output folder is an existing file; give a folder path")
    if out_dir.is_dir() and any(out_dir.iterdir()):
        marker = safety.read_marker(out_dir)
        if marker is None or marker.get("command") != "simulate":
            what = "no dfcan output marker" if marker is None else f"the output of 'dfcan {marker.get('command')}'"
            raise DfcanError(f"{out_dir} is not empty and was not written by 'dfcan simulate' ({what}); "
                             "simulate into a new or empty folder, or into a previous simulate output to add cells")
        if not os.access(out_dir, os.W_OK | os.X_OK):
            raise DfcanError(f"{out_dir}: the output folder is not writable")
    else:
        safety.check_output_dir(out_dir, command="simulate", overwrite=False)
    existing = []
    for d in cell_dirs:
        for p in (d.parent, d):
            if p.exists() and not p.is_dir():
                raise DfcanError(f"{p}: a file is in the way of the cell folder {d}; move it away")
        if d.exists():
            if not overwrite:
                existing.append(d)
            elif not (d / "simulation.json").is_file():
                raise DfcanError(f"{d} has no simulation.json, so it was not written by 'dfcan simulate'; "
                                 "--overwrite replaces only simulated cells. Move it away or choose another folder")
        if d.parent.is_dir() and not os.access(d.parent, os.W_OK | os.X_OK):
            raise DfcanError(f"{d.parent}: the specimen folder is not writable")
    if existing:
        raise DfcanError(f"{existing[0]} exists ({len(existing)} cell folders in all); pass overwrite / --overwrite "
                         "to replace simulated cells")


def _write_cell_atomic(cell: SimulatedCell, cell_dir: Path) -> None:
    """Write a cell into a staged folder, then put it in place of ``cell_dir`` (replacing an old one)."""
    # simulate_dataset has checked that an existing cell folder is its own (simulation.json)
    with safety.staged_dir(cell_dir, command=None) as staged:
        write_cell(cell, staged)


def simulate_dataset(
    out_dir: str | os.PathLike,
    *,
    specimens=None,
    cells: int | str = 4,
    levels: int | str | list[int] | None = None,
    n_levels: int = N_LEVELS,
    size: int = 128,
    seed: int = 0,
    overwrite: bool = False,
    progress: bool = True,
    **cell_kwargs,
) -> list[Path]:
    """Simulate a BioSR-like dataset under ``out_dir``.

    Parameters
    ----------
    out_dir
        Dataset root; specimen folders are created in it.
    specimens
        Names (list or comma-separated string) from :data:`SPECIMENS`; default all.
    cells
        Number of cells per specimen (numbered from 1) or a selection such as
        ``"36-50"`` (to add a test set with other cell numbers).
    levels, n_levels
        Which signal levels to write (``None``: all; ``9``, ``"1-3"``,
        ``"1,3,5"``) out of the ``n_levels`` the photon range is divided into
        (:func:`simulate_cell`).
    size
        Raw image side (pixels).
    seed
        Master seed; each (specimen, cell) draws from its own child seed, so a
        cell's data do not depend on which other cells are simulated.
    overwrite
        Replace existing simulated cell folders instead of refusing. ``out_dir``
        itself must be new, empty or a previous simulate output (see
        :func:`check_output`); each cell is written in a staged folder and
        moved in place when complete.
    progress
        Show a tqdm progress bar.
    **cell_kwargs
        Passed to :func:`simulate_cell` (photons, noise, optics).

    Returns
    -------
    list of pathlib.Path
        The cell folders written.

    Raises
    ------
    DfcanError
        Bad argument, an output that may not be written, or a cell folder
        exists and ``overwrite`` is false; in all cases nothing is written.
    """
    from tqdm import tqdm

    from dfcan_tf.data.biosr import parse_cells

    names = _resolve_specimens(specimens)
    if isinstance(cells, (int, np.integer)):
        if cells < 1:
            raise DfcanError(f"cells must be at least 1. Received: cells={cells}")
        cell_ids = list(range(1, int(cells) + 1))
    else:
        cell_ids = parse_cells(cells) or []
        if not cell_ids or min(cell_ids) < 1:
            raise DfcanError(f"cells must select cell numbers ≥ 1. Received: cells={cells!r}")
    _check_sizes(size, cell_kwargs.get("photons", (15.0, 600.0)))
    select_levels(levels, n_levels)  # a bad selection fails before anything is written
    out_dir = Path(out_dir)
    jobs = [(s, c, out_dir / s / f"Cell_{c:03d}") for s in names for c in cell_ids]
    check_output(out_dir, [d for _, _, d in jobs], overwrite=overwrite)
    out_dir.mkdir(parents=True, exist_ok=True)
    if safety.read_marker(out_dir) is None:
        safety.write_marker(out_dir, "simulate")
    written = []
    for specimen, cell, cell_dir in tqdm(jobs, desc="simulate", unit="cell", disable=not progress):
        ss = np.random.SeedSequence([int(seed), SPECIMENS.index(specimen), cell])
        sim = simulate_cell(specimen, size=size, levels=levels, n_levels=n_levels, seed=ss, **cell_kwargs)
        sim.params.update({"cell": cell, "seed": int(seed)})
        _write_cell_atomic(sim, cell_dir)
        written.append(cell_dir)
    return written

