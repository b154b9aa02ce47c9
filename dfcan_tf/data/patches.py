"""Training patch pairs from BioSR-layout data (``dfcan patches``); see ``docs/data.md#patch-pairs``.

The authors cut their training pairs in MATLAB; this is the same recipe in
Python, for real BioSR, ``dfcan simulate`` output or a microscopist's own
registered pairs (:mod:`dfcan_tf.data.pairs`), all through :func:`cut_patches`:

1. normalise each raw stack and GT to [0, 1] (min-max, 0–100th percentile);
2. foreground mask (:func:`foreground_mask`) from the GT downsized by the scale
   (bicubic): 3×3 Gaussian blur (σ 3) minus a 100×100 (σ 50) background blur,
   both with replicated borders, thresholded at 1e-2, the threshold × 0.8 until
   at least 1,000 pixels are foreground;
3. crops centred on random foreground pixels; with rotation on, a random whole
   degree (bilinear), sampled from a region 1.5× the patch so no corner leaves
   the image; with flips on, every crop also gives its up-down, left-right and
   both-flipped copies;
4. raw frames, WF (their sum) and GT saved as 16-bit TIFF after per-patch
   min-max normalisation, split by cells into training and validation, in the
   DL-SR folder layout::

       out/training/<id>/01.tif .. 09.tif   raw SIM frames of one patch (SIM task)
       out/training_wf/<id>.tif             WF patch (SISR input)
       out/training_gt/<id>.tif             GT-SIM patch (scale × larger)
       out/validate/, validate_wf/, validate_gt/   the same for validation
       out/patches.json                     what was cut from where: source, scale,
                                            patch_size, input pixel_size_nm, every patch

The raw-to-GT geometry follows the data: raw pixel m sits on GT pixel scale·m
(Fourier-padding SIM reconstruction), and the GT is rotated about the same
physical point as the raw frames, so input and target stay aligned.
"""

from __future__ import annotations

import json
import math
import os
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from scipy import ndimage

from dfcan_tf import safety
from dfcan_tf.data.biosr import BioSRRecord, discover, parse_cells
from dfcan_tf.data.normalize import minmax_scale
from dfcan_tf.errors import DfcanError

COMMAND = "patches"
SPLITS = ("training", "validate")
RECIPE_VAL_CELLS = range(1, 6)  # BioSR public recipe: cells 1–5 validation,
RECIPE_TRAIN_CELLS = range(6, 36)  # 6–35 training, 36–50 test
BIOSR_PIXEL_NM = 62.6  # BioSR's raw pixel size, used when an MRC header states none


def minmax(x: np.ndarray) -> np.ndarray:
    """Min-max normalise to [0, 1] in float32 with the exact range (no epsilon); a constant array gives zeros.

    :func:`dfcan_tf.data.normalize.minmax_scale` with ``eps=0``: patches are
    written as 16-bit TIFF, and the exact range maps the extremes to exactly 0
    and 65535, as the authors' MATLAB ``mat2gray`` does.
    """
    x = np.asarray(x, dtype=np.float32)
    lo, hi = float(x.min()), float(x.max())
    return minmax_scale(x, lo, hi, eps=0.0) if hi > lo else np.zeros_like(x)


def _gaussian_kernel(size: int, sigma: float) -> np.ndarray:
    """1-D factor of MATLAB's ``fspecial('gaussian', [size size], sigma)`` (centre at (size+1)/2)."""
    x = np.arange(size) - (size - 1) / 2.0
    k = np.exp(-(x**2) / (2.0 * sigma**2))
    return k / k.sum()


def _filter_replicate(img: np.ndarray, kernel: np.ndarray) -> np.ndarray:
    """Separable correlation with replicated borders (MATLAB ``imfilter(..., 'replicate')``).

    Even-length kernels are centred as MATLAB does (the centre is the lower of
    the two middle taps), which scipy expresses with origin -1.
    """
    origin = -1 if len(kernel) % 2 == 0 else 0
    out = ndimage.correlate1d(img, kernel, axis=0, mode="nearest", origin=origin)
    return ndimage.correlate1d(out, kernel, axis=1, mode="nearest", origin=origin)


def foreground_mask(
    gt: np.ndarray,
    scale: int,
    *,
    threshold: float = 1e-2,
    min_pixels: int = 1000,
    valid: np.ndarray | None = None,
) -> tuple[np.ndarray, float]:
    """Foreground of a GT-SIM image on the raw grid (``docs/data.md#patch-pairs``).

    Parameters
    ----------
    gt
        (scale·H, scale·W) GT image (any range; it is min-max normalised).
    scale
        GT / raw size ratio.
    threshold
        Starting threshold of (detail − background).
    min_pixels
        Lower the threshold by × 0.8 until at least this many pixels (at most a
        tenth of the image) are foreground.
    valid
        (H, W) boolean region where crops can be centred; the threshold is
        lowered further until some foreground lies in it.

    Returns
    -------
    mask : numpy.ndarray
        (H, W) boolean.
    threshold : float
        The threshold used.
    """
    from skimage.transform import resize

    g = minmax(gt)
    h, w = g.shape[0] // scale, g.shape[1] // scale
    small = resize(g, (h, w), order=3, anti_aliasing=True, preserve_range=True).astype(np.float64)
    detail = _filter_replicate(small, _gaussian_kernel(3, 3.0)) - _filter_replicate(small, _gaussian_kernel(100, 50.0))
    # Counted over the whole image as the authors did, but never more than a tenth of a small image.
    need = min(min_pixels, detail.size // 10)
    mask = detail > threshold
    while mask.sum() < need and threshold > 1e-8:
        threshold *= 0.8
        mask = detail > threshold
    # Crops are centred only where they fit: keep lowering until some foreground lies there.
    while valid is not None and not (mask & valid).any() and threshold > 1e-8:
        threshold *= 0.8
        mask = detail > threshold
    if valid is not None and not (mask & valid).any() and valid.any() and detail[valid].max() > 0:
        # Only a sliver of the image can hold a crop centre (image barely larger than the crop):
        # take the most structured pixel there.
        mask = valid & (detail >= detail[valid].max())
    return mask, float(threshold)


def _half_extent(patch: int, rotate: bool) -> float:
    # With rotation the authors crop 1.5× the patch; the centre must be that far from the edges.
    return 0.75 * patch if rotate else patch / 2.0


def _valid_centres(shape: tuple[int, int], patch: int, rotate: bool) -> np.ndarray:
    """Pixels c whose crop (start c − patch//2) fits, with rotation margin when rotating."""
    e = _half_extent(patch, rotate)
    out = np.zeros(shape, bool)
    lo = [math.ceil(e - (patch - 1) / 2.0 + patch // 2 - 0.5) for _ in shape]
    hi = [n - 1 - math.ceil(e + (patch - 1) / 2.0 - patch // 2 - 0.5) for n in shape]
    if hi[0] >= lo[0] and hi[1] >= lo[1]:
        out[lo[0] : hi[0] + 1, lo[1] : hi[1] + 1] = True
    return out


def crop_pair(
    raw: np.ndarray,
    gt: np.ndarray,
    centre: tuple[int, int],
    patch: int,
    scale: int,
    angle_deg: float = 0.0,
) -> tuple[np.ndarray, np.ndarray]:
    """Cut an aligned (raw frames, GT) patch pair, rotated by ``angle_deg`` about its centre.

    Parameters
    ----------
    raw
        (frames, H, W) stack.
    gt
        (scale·H, scale·W) GT.
    centre
        Raw pixel (row, col); the crop starts at ``centre − patch//2``.
    patch, scale
        Raw patch side and GT / raw ratio (the GT patch is scale·patch).
    angle_deg
        Rotation (counter-clockwise, degrees); 0 crops exactly, otherwise
        bilinear sampling about the patch centre, the same physical point in
        both images.

    Returns
    -------
    raw_patch, gt_patch : numpy.ndarray
        (frames, patch, patch) and (scale·patch, scale·patch) float32.
    """
    y0, x0 = centre[0] - patch // 2, centre[1] - patch // 2
    if angle_deg == 0:
        r = raw[:, y0 : y0 + patch, x0 : x0 + patch]
        g = gt[scale * y0 : scale * (y0 + patch), scale * x0 : scale * (x0 + patch)]
        if r.shape[1:] != (patch, patch) or g.shape != (scale * patch, scale * patch):
            raise DfcanError(f"crop at {centre} of size {patch} leaves the {raw.shape[1:]} image")
        return r.astype(np.float32), g.astype(np.float32)
    t = np.radians(angle_deg)
    cos, sin = np.cos(t), np.sin(t)

    def sample(img: np.ndarray, start_y: float, start_x: float, n: int, cy: float, cx: float) -> np.ndarray:
        oy, ox = np.mgrid[0:n, 0:n].astype(np.float64)
        dy, dx = oy + start_y - cy, ox + start_x - cx
        coords = np.stack([cy + cos * dy - sin * dx, cx + sin * dy + cos * dx])
        return ndimage.map_coordinates(img, coords, order=1, mode="nearest")

    # Rotation centre: the crop's centre in raw coordinates, and scale× that on the GT grid
    # (raw pixel m sits on GT pixel scale·m).
    cy, cx = y0 + (patch - 1) / 2.0, x0 + (patch - 1) / 2.0
    r = np.stack([sample(f.astype(np.float64), y0, x0, patch, cy, cx) for f in raw])
    g = sample(gt.astype(np.float64), scale * y0, scale * x0, scale * patch, scale * cy, scale * cx)
    return r.astype(np.float32), g.astype(np.float32)


def _split_cells(cells: list[int], val_cells, train_cells, *, recipe: bool = True,
                 unit: str = "cells") -> tuple[list[int], list[int]]:
    """Training and validation cells: given, BioSR's public recipe (``recipe``, ≥ 35 cells) or the first fifth."""
    val = parse_cells(val_cells)
    train = parse_cells(train_cells)
    if val is None and train is None:
        if recipe and len(cells) >= max(RECIPE_TRAIN_CELLS):
            val, train = list(RECIPE_VAL_CELLS), list(RECIPE_TRAIN_CELLS)
        else:  # too few cells for the public recipe: first fifth (at least one) validates
            k = max(1, len(cells) // 5)
            val, train = cells[:k], cells[k:]
    elif train is None:
        train = [c for c in cells if c not in val]
    elif val is None:
        val = [c for c in cells if c not in train]
    both = sorted(set(val) & set(train))
    if both:
        raise DfcanError(f"{unit} {both} are in both training and validation; split by {unit}")
    return [c for c in cells if c in train], [c for c in cells if c in val]


def _select_specimens(records: list[BioSRRecord], scale: int | None, explicit: bool) -> tuple[list, int]:
    scales: dict[str, int] = {}
    for r in records:
        if r.specimen not in scales:
            scales[r.specimen] = r.scale()
    if scale is None:
        found = sorted(set(scales.values()))
        if len(found) > 1:
            detail = ", ".join(f"{s}: ×{v}" for s, v in scales.items())
            raise DfcanError(f"specimens have different scales ({detail}); pass scale / --scale or --specimens")
        return records, found[0]
    wrong = {s: v for s, v in scales.items() if v != scale}
    if wrong and explicit:
        raise DfcanError(f"specimens {wrong} do not have scale {scale}. Received: scale={scale}")
    kept = [r for r in records if r.specimen not in wrong]
    if not kept:
        raise DfcanError(f"no specimen has scale {scale} (found {scales}). Received: scale={scale}")
    return kept, scale


@dataclass(frozen=True)
class Source:
    """One image :func:`cut_patches` crops from: ``load()`` gives ``(raw (frames, H, W), gt (s·H, s·W))``.

    ``cell`` is its split unit (BioSR cell or own pair number), ``shape`` its raw
    ``(H, W)``, ``pixel_size_nm`` the input's (None: unknown), ``info`` the fields
    of its patches' manifest entries.
    """

    load: Callable[[], tuple[np.ndarray, np.ndarray]]
    cell: int
    shape: tuple[int, int]
    pixel_size_nm: float | None
    gt_path: Path
    info: dict = field(default_factory=dict)


def check_numbers(patch_size: int, n_train: int, n_val: int, scale: int | None) -> None:
    """Refuse a patch size, patch counts or scale no recipe can use (the BioSR and pairs paths alike)."""
    for name, value, low in (("patch_size", patch_size, 8), ("n_train", n_train, 1), ("n_val", n_val, 0)):
        if not isinstance(value, (int, np.integer)) or value < low:
            raise DfcanError(f"{name} must be an integer ≥ {low}. Received: {name}={value!r}")
    if scale is not None and scale not in (1, 2, 3, 4):
        raise DfcanError(f"scale must be 1–4 (BioSR: 2 linear, 3 nonlinear SIM). Received: scale={scale!r}")


def _check_fits(smallest: int, patch_size: int, rotate: bool) -> None:
    need = math.ceil(2 * _half_extent(patch_size, rotate))
    if need > smallest:
        hint = f"use patch_size ≤ {int(smallest / 1.5)}, or ≤ {smallest} without rotation" if rotate else \
            f"use patch_size ≤ {smallest}"
        raise DfcanError(
            f"patch_size {patch_size} needs images of at least {need} px{' (1.5× for rotation)' if rotate else ''}; "
            f"the smallest raw image is {smallest} px: {hint}. Received: patch_size={patch_size}"
        )


def _median_pixel_size(sources: list[Source]) -> float | None:
    known = [s.pixel_size_nm for s in sources if s.pixel_size_nm]
    return float(np.median(known)) if known else None


def cut_patches(
    sources: list[Source],
    out_dir: Path,
    manifest: dict,
    *,
    scale: int,
    patch_size: int,
    n_train: int,
    n_val: int,
    val_cells=None,
    train_cells=None,
    unit: str = "cells",
    rotate: bool = True,
    flips: bool = True,
    threshold: float = 1e-2,
    min_foreground: int = 1000,
    seed: int = 0,
    progress: bool = True,
) -> dict:
    """Split ``sources`` by cell, cut their patches into a staged ``out_dir`` and write ``patches.json``.

    The one code path of :func:`make_patches` (BioSR) and
    :func:`dfcan_tf.data.pairs.make_pair_patches` (own pairs): per-image min-max
    normalisation, foreground mask, crops, rotation and flips, 16-bit TIFFs in
    the DL-SR layout (module docstring). ``unit="pairs"`` names the split units
    in messages and skips BioSR's public cell recipe. ``manifest`` is completed
    (augmentation, split, one entry per patch) and returned; the caller has
    checked the output folder with :func:`dfcan_tf.safety.check_output_dir`.
    """
    from tqdm import tqdm

    from dfcan_tf.data.files import write_tiff

    _check_fits(min(min(s.shape) for s in sources), patch_size, rotate)
    cells = sorted({s.cell for s in sources})
    if unit == "pairs" and n_val == 0 and val_cells is None and train_cells is None:
        train_c, val_c = cells, []  # no validation patches wanted: every pair trains
    else:
        train_c, val_c = _split_cells(cells, val_cells, train_cells, recipe=unit == "cells", unit=unit)
    plan = {"training": (train_c, n_train), "validate": (val_c, n_val)}
    for split, (cs, n) in plan.items():
        if n > 0 and not cs:
            raise DfcanError(f"no {unit} left for {split} ({unit} found: {cells}); set val_cells / --val-cells "
                             "or train_cells / --train-cells")

    rng = np.random.default_rng(seed)
    copies = 4 if flips else 1
    manifest.setdefault("pixel_size_nm", _median_pixel_size(sources))
    manifest.update({"rotate": rotate, "flips": flips, "seed": seed, "threshold": threshold,
                     "cells": {"training": train_c, "validate": val_c}, "patches": []})
    # Marks the folder as ours and replaces out_dir only if it still is a marked patches folder.
    with safety.staged_dir(out_dir, command=COMMAND) as tmp:
        total = sum(n for _, n in plan.values())
        bar = tqdm(total=total, desc="patches", unit="patch", disable=not progress)
        for split, (cs, n) in plan.items():
            for d in (split, f"{split}_wf", f"{split}_gt"):
                (tmp / d).mkdir()
            recs = [s for s in sources if s.cell in cs]
            if n == 0:
                continue
            n_crops = math.ceil(n / copies)
            quota = np.full(len(recs), n_crops // len(recs))
            quota[rng.permutation(len(recs))[: n_crops % len(recs)]] += 1
            index = 0
            for rec, q in zip(recs, quota):
                if q == 0 or index >= n:
                    continue
                raw, gt = rec.load()
                raw, gt = minmax(raw), minmax(gt)
                valid = _valid_centres(raw.shape[1:], patch_size, rotate)
                mask, used = foreground_mask(gt, scale, threshold=threshold, min_pixels=min_foreground, valid=valid)
                ys, xs = np.nonzero(mask & valid)
                if len(ys) == 0:
                    raise DfcanError(f"{rec.gt_path}: no foreground where a {patch_size}-px crop fits")
                picks = rng.integers(0, len(ys), size=q)
                px_raw = rec.pixel_size_nm
                px_gt = px_raw / scale if px_raw else None
                for pick in picks:
                    angle = int(rng.integers(0, 360)) if rotate else 0
                    centre = (int(ys[pick]), int(xs[pick]))
                    r_p, g_p = crop_pair(raw, gt, centre, patch_size, scale, angle)
                    variants = [(r_p, g_p, "none")]
                    if flips:
                        variants += [(r_p[:, ::-1, :], g_p[::-1, :], "ud"), (r_p[:, :, ::-1], g_p[:, ::-1], "lr"),
                                     (r_p[:, ::-1, ::-1], g_p[::-1, ::-1], "both")]
                    for r_v, g_v, flip in variants:
                        if index >= n:
                            break
                        name = f"{index + 1:06d}"
                        for f_i, frame in enumerate(minmax(r_v), start=1):
                            write_tiff(tmp / split / name / f"{f_i:02d}.tif", frame, pixel_size_nm=px_raw)
                        write_tiff(tmp / f"{split}_wf" / f"{name}.tif", minmax(r_v.sum(axis=0)), pixel_size_nm=px_raw)
                        write_tiff(tmp / f"{split}_gt" / f"{name}.tif", minmax(g_v), pixel_size_nm=px_gt)
                        manifest["patches"].append({
                            "name": name, "split": split, **rec.info, "centre": list(centre), "angle": angle,
                            "flip": flip, "threshold": used,
                        })
                        index += 1
                        bar.update(1)
        bar.close()
        (tmp / "patches.json").write_text(json.dumps(manifest, indent=1))
    return manifest


def make_patches(
    data_root: str | os.PathLike,
    out_dir: str | os.PathLike,
    *,
    scale: int | None = None,
    patch_size: int = 128,
    n_train: int = 1000,
    n_val: int = 100,
    specimens: Iterable[str] | None = None,
    levels: str | Iterable[int] | None = None,
    val_cells: str | Iterable[int] | None = None,
    train_cells: str | Iterable[int] | None = None,
    rotate: bool = True,
    flips: bool = True,
    threshold: float = 1e-2,
    min_foreground: int = 1000,
    seed: int = 0,
    overwrite: bool = False,
    progress: bool = True,
) -> dict:
    """Cut training and validation patch pairs from BioSR-layout data.

    Parameters
    ----------
    data_root
        BioSR-layout folder (real BioSR or ``dfcan simulate`` output).
    out_dir
        Output folder (DL-SR layout); must not exist unless ``overwrite``. It
        appears only when complete.
    scale
        GT / raw ratio to use; default: the data's (all selected specimens must
        agree). With ``specimens`` unset, specimens of another scale are skipped.
    patch_size
        Raw (input) patch side; GT patches are scale × larger.
    n_train, n_val
        Number of patches (flip copies included), spread evenly over the
        (cell, level) pairs of each split.
    specimens, levels
        Subsets (default all).
    val_cells, train_cells
        Cell numbers (e.g. ``"1-5"``). Default: BioSR's public recipe (1–5
        validation, 6–35 training) when there are ≥ 35 cells, else the first
        fifth of the cells (at least one) validates and the rest trains.
    rotate, flips
        Random whole-degree rotation; up-down / left-right / both copies.
    threshold, min_foreground
        Foreground-mask threshold and the minimum number of foreground pixels.
    seed
        Seed of crop positions and angles.
    overwrite
        Replace an existing ``out_dir``, only if an earlier ``dfcan patches``
        wrote it (its marker file, :data:`dfcan_tf.safety.MARKER`, says so).
        ``out_dir`` may never be, hold or lie inside ``data_root``.
    progress
        Show a tqdm progress bar.

    Returns
    -------
    dict
        The manifest written to ``out_dir/patches.json``; ``pixel_size_nm`` is
        the raw pixel size (the median over the images; BioSR's 62.6 nm where a
        header states none) and ``patch_size``, ``scale`` what was cut.

    Raises
    ------
    DfcanError
        Bad data or arguments, or an output folder that may not be replaced;
        nothing is written and nothing is removed.
    """
    from dfcan_tf.data.files import read_mrc_header

    check_numbers(patch_size, n_train, n_val, scale)
    out_dir = Path(out_dir)
    # Before any work: the output must not be, hold or lie inside the data, and --overwrite replaces
    # only a folder an earlier `dfcan patches` marked as its own.
    safety.check_output_dir(out_dir, command=COMMAND, overwrite=overwrite, inputs=[data_root])

    records = discover(data_root, specimens=specimens, levels=levels)
    records, scale = _select_specimens(records, scale, explicit=specimens is not None)
    frames = {r.shapes()[0][0] for r in records}
    if len(frames) > 1:
        raise DfcanError(f"raw stacks have different frame counts {sorted(frames)}; select one kind with --specimens")
    sources = [
        Source(load=r.load, cell=r.cell, shape=tuple(r.shapes()[0][1:]), gt_path=r.gt_path,
               pixel_size_nm=read_mrc_header(r.raw_path).get("pixel_size_nm", BIOSR_PIXEL_NM),
               info={"specimen": r.specimen, "cell": r.cell, "level": r.level, "raw": str(r.raw_path),
                     "gt": str(r.gt_path)})
        for r in records
    ]
    manifest = {"source": "biosr", "data_root": str(data_root), "scale": scale, "patch_size": patch_size,
                "pixel_size_nm": _median_pixel_size(sources), "frames": frames.pop()}
    return cut_patches(
        sources, out_dir, manifest, scale=scale, patch_size=patch_size, n_train=n_train, n_val=n_val,
        val_cells=val_cells, train_cells=train_cells, rotate=rotate, flips=flips, threshold=threshold,
        min_foreground=min_foreground, seed=seed, progress=progress)
