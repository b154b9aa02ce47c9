"""Training patches from a microscopist's own registered pairs (``dfcan patches --pairs``); see ``docs/own-data.md``.

A pair is a wide-field (WF) image and its ground truth (GT, e.g. a SIM
reconstruction of the same field) on a grid ``scale`` times finer, registered
so that WF pixel m sits on GT pixel scale·m. Pairs come from two folders whose
TIFFs are matched by identical file name (:func:`pairs_from_dirs`) or from a
CSV file with columns ``wf,gt`` (:func:`pairs_from_csv`).

:func:`check_pairs` reads every pair before anything is cut and refuses, naming
the file: a GT that is not the same integer multiple (1–4) of its WF in both
axes for every pair; WF and GT pixel sizes whose ratio is more than 10 % off
the scale; inputs whose pixel sizes differ by more than 10 % between pairs;
stacks of different frame counts; and whatever :func:`dfcan_tf.data.files.read_image`
refuses (colour, non-numeric pixels, NaN). A file may hold one image or a stack
of frames (a time-lapse or z-stack, any hyperstack flattened): frame i of the WF
pairs with frame i of the GT, and every frame is one image to crop from.

:func:`make_pair_patches` then cuts with the same foreground mask, augmentation,
normalisation, split and folder layout as the BioSR path
(:func:`dfcan_tf.data.patches.cut_patches`); each file pair is one split unit
(a "cell"), so frames of one field never land in both splits.
"""

from __future__ import annotations

import csv
import os
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from dfcan_tf.data.files import read_image
from dfcan_tf.data.patches import COMMAND, Source, check_numbers, cut_patches
from dfcan_tf.errors import DfcanError

__all__ = ["PIXEL_TOLERANCE", "TIFF_SUFFIXES", "check_pairs", "make_pair_patches", "pairs_from_csv",
           "pairs_from_dirs"]

TIFF_SUFFIXES = (".tif", ".tiff")
PIXEL_TOLERANCE = 0.10  # relative: WF/GT pixel-size ratio vs the scale, and input pixel sizes between pairs


@dataclass(frozen=True)
class Pair:
    """One registered (WF, GT) file pair, numbered (``cell``) in name order (folders) or row order (CSV)."""

    name: str
    wf: Path
    gt: Path
    cell: int


def _is_tiff(p: Path) -> bool:
    return p.is_file() and not p.name.startswith(".") and p.suffix.lower() in TIFF_SUFFIXES


def pairs_from_dirs(wf_dir: str | os.PathLike, gt_dir: str | os.PathLike) -> list[Pair]:
    """Match the TIFFs (``.tif``/``.tiff``) of ``wf_dir`` and ``gt_dir`` by identical file name.

    Raises
    ------
    DfcanError
        A folder is missing, both are the same folder, no TIFF is found, or a
        file has no namesake in the other folder (all such files are named).
    """
    wf_dir, gt_dir = Path(wf_dir), Path(gt_dir)
    for d, what in ((wf_dir, "WF"), (gt_dir, "GT")):
        if not d.is_dir():
            raise DfcanError(f"{d}: no such folder (the {what} folder of --pairs WF_DIR GT_DIR)")
    if wf_dir.resolve() == gt_dir.resolve():
        raise DfcanError(f"{wf_dir}: WF_DIR and GT_DIR are the same folder; the GT images must be in their own folder")
    wf = {p.name: p for p in wf_dir.iterdir() if _is_tiff(p)}
    gt = {p.name: p for p in gt_dir.iterdir() if _is_tiff(p)}
    if not wf:
        raise DfcanError(f"{wf_dir}: no TIFF files (.tif, .tiff) in the WF folder")
    only_wf, only_gt = sorted(set(wf) - set(gt)), sorted(set(gt) - set(wf))
    if only_wf or only_gt:
        parts = []
        if only_wf:
            parts.append(f"{', '.join(str(wf[n]) for n in only_wf)} (no file of that name in {gt_dir})")
        if only_gt:
            parts.append(f"{', '.join(str(gt[n]) for n in only_gt)} (no file of that name in {wf_dir})")
        raise DfcanError(f"unmatched files: {'; '.join(parts)}. WF and GT files are paired by identical file name")
    return [Pair(name, wf[name], gt[name], i) for i, name in enumerate(sorted(wf), start=1)]


def pairs_from_csv(csv_path: str | os.PathLike) -> list[Pair]:
    """Pairs listed in a CSV file with a header row naming the columns ``wf`` and ``gt``.

    Relative paths are relative to the CSV file's folder; pairs are numbered in
    row order and named by their ``wf`` entry. Other columns are ignored.

    Raises
    ------
    DfcanError
        Unreadable CSV, missing columns, an empty cell, or a WF file listed twice
        (naming the CSV and its line).
    """
    csv_path = Path(csv_path)
    if not csv_path.is_file():
        raise DfcanError(f"{csv_path}: no such file (the --pairs-csv file)")
    try:
        with open(csv_path, newline="", encoding="utf-8-sig") as fh:
            reader = csv.DictReader(fh)
            header = [str(c).strip().lower() for c in (reader.fieldnames or [])]
            rows = list(reader)
    except (OSError, UnicodeDecodeError, csv.Error) as exc:
        raise DfcanError(f"{csv_path}: not a readable CSV file ({type(exc).__name__}: {exc})") from None
    if not {"wf", "gt"} <= set(header):
        raise DfcanError(f"{csv_path}: the header row must name the columns wf and gt. "
                         f"Received: {header or 'an empty file'}")
    if not rows:
        raise DfcanError(f"{csv_path}: no pairs; expected a header row 'wf,gt' and one row per pair")
    base = csv_path.parent
    pairs: list[Pair] = []
    seen: dict[Path, int] = {}
    for line, row in enumerate(rows, start=2):
        cells = {str(k).strip().lower(): (v or "").strip() for k, v in row.items() if k is not None}
        if not cells["wf"] or not cells["gt"]:
            raise DfcanError(f"{csv_path}, line {line}: empty wf or gt entry")
        wf, gt = base / cells["wf"], base / cells["gt"]
        key = wf.resolve()
        if key in seen:
            raise DfcanError(f"{csv_path}, line {line}: {wf} is listed twice (first on line {seen[key]})")
        seen[key] = line
        pairs.append(Pair(cells["wf"], wf, gt, len(pairs) + 1))
    return pairs


@dataclass
class _Reader:
    """Reads a pair's files once for all their frames (frames of one file are cropped one after another)."""

    key: tuple | None = None
    arrays: tuple = field(default_factory=tuple)

    def frame(self, pair: Pair, index: int) -> tuple[np.ndarray, np.ndarray]:
        if self.key != (pair.wf, pair.gt):
            self.arrays = (read_image(pair.wf)[0], read_image(pair.gt)[0])
            self.key = (pair.wf, pair.gt)
        wf, gt = self.arrays
        return wf[index : index + 1].astype(np.float32), gt[index].astype(np.float32)


def _rel(a: float, b: float) -> float:
    return abs(a / b - 1.0)


def check_pairs(pairs: list[Pair], scale: int | None = None) -> tuple[list[dict], int, float | None]:
    """Read every pair and check it (see the module docstring).

    Parameters
    ----------
    pairs
        From :func:`pairs_from_dirs` or :func:`pairs_from_csv`.
    scale
        The GT / WF ratio every pair must have; default: the first pair's.

    Returns
    -------
    facts : list of dict
        Per pair: ``frames``, ``shape`` (WF height, width), ``pixel_size_nm`` (the
        WF's, or the GT's × scale, or None).
    scale : int
    pixel_size_nm : float or None
        The input (WF) pixel size of the data (the first pair's that states one).
    """
    facts: list[dict] = []
    first_px: tuple[float, Path] | None = None
    given = f"--scale {scale}" if scale is not None else None
    for pair in pairs:
        wf, wf_meta = read_image(pair.wf)
        gt, gt_meta = read_image(pair.gt)
        if len(wf) != len(gt):
            hint = (" (a raw SIM stack is not a WF image: sum its frames into one first, or use the BioSR layout "
                    "for the SIM task)") if len(gt) == 1 and len(wf) in (9, 25) else ""
            raise DfcanError(f"{pair.gt}: {len(gt)} frame(s), but the WF {pair.wf} has {len(wf)}; a stack pairs "
                             f"frame by frame, so both need the same number of frames{hint}")
        (h, w), (gh, gw) = wf.shape[1:], gt.shape[1:]
        if gh % h or gw % w or gh // h != gw // w or not 1 <= gh // h <= 4:
            raise DfcanError(f"{pair.gt}: GT size {gh}×{gw} is not the same integer multiple (1–4) of the WF size "
                             f"{h}×{w} ({pair.wf}) in both axes")
        s = gh // h
        if scale is None:
            scale = s
        elif s != scale:
            other = given or f"the first pair ({pairs[0].gt}) has scale {scale}"
            raise DfcanError(f"{pair.gt}: GT is {s}× its WF {pair.wf}, but {other}; every pair must have the same "
                             "scale")
        px_wf, px_gt = wf_meta.get("pixel_size_nm"), gt_meta.get("pixel_size_nm")
        if px_wf and px_gt and _rel(px_wf / px_gt, s) > PIXEL_TOLERANCE:
            raise DfcanError(
                f"{pair.gt}: pixel size {px_gt:.4g} nm, WF {pair.wf} {px_wf:.4g} nm: ratio {px_wf / px_gt:.3g}, "
                f"but the GT is {s}× the WF's size (more than {PIXEL_TOLERANCE:.0%} off). Fix the calibration of "
                "one of them or check that the pair belongs together")
        px = px_wf or (px_gt * s if px_gt else None)
        if px and first_px is None:
            first_px = (px, pair.wf)
        elif px and _rel(px, first_px[0]) > PIXEL_TOLERANCE:
            raise DfcanError(
                f"{pair.wf}: input pixel size {px:.4g} nm differs by {_rel(px, first_px[0]):.0%} from "
                f"{first_px[0]:.4g} nm of {first_px[1]}; a network learns structures at one pixel size, so "
                "resample the images to one pixel size or cut separate patch folders")
        facts.append({"frames": len(wf), "shape": (h, w), "pixel_size_nm": px})
    if scale is None:
        raise DfcanError("no pairs given")
    return facts, scale, first_px[0] if first_px else None


def make_pair_patches(
    out_dir: str | os.PathLike,
    *,
    pairs_dirs: tuple[str | os.PathLike, str | os.PathLike] | None = None,
    pairs_csv: str | os.PathLike | None = None,
    scale: int | None = None,
    patch_size: int = 128,
    n_train: int = 1000,
    n_val: int = 100,
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
    """Cut training and validation patch pairs from registered (WF, GT) files.

    Exactly one of ``pairs_dirs`` (``(WF_DIR, GT_DIR)``, files matched by name)
    and ``pairs_csv`` (a CSV with columns ``wf,gt``) is given. The other
    parameters are those of :func:`dfcan_tf.data.patches.make_patches`;
    ``val_cells`` / ``train_cells`` number the pairs (1 = the first in name
    order, or the CSV's first row). Default split: the first fifth of the
    pairs (at least one) validates, the rest trains; with ``n_val=0`` every
    pair trains.

    Returns
    -------
    dict
        The manifest written to ``out_dir/patches.json``: as the BioSR path's,
        with ``"source": "pairs"``, the input ``pixel_size_nm`` (None when no
        file states one), and ``pairs`` (name, files, frames, pixel size).

    Raises
    ------
    DfcanError
        Bad pairs (see :func:`check_pairs`) or arguments, or an output folder
        that may not be replaced; nothing is written and no input is touched.
    """
    from dfcan_tf import safety

    if (pairs_dirs is None) == (pairs_csv is None):
        raise DfcanError("give exactly one of pairs_dirs (--pairs WF_DIR GT_DIR) and pairs_csv (--pairs-csv)")
    check_numbers(patch_size, n_train, n_val, scale)
    out_dir = Path(out_dir)
    if pairs_dirs is not None:
        pairs = pairs_from_dirs(*pairs_dirs)
        inputs: list = list(pairs_dirs)
        where = {"wf_dir": str(pairs_dirs[0]), "gt_dir": str(pairs_dirs[1])}
    else:
        pairs = pairs_from_csv(pairs_csv)
        inputs = [pairs_csv, *(p.wf for p in pairs), *(p.gt for p in pairs)]
        where = {"pairs_csv": str(pairs_csv)}
    # Before reading any image: the output may not be, hold or lie inside an input.
    safety.check_output_dir(out_dir, command=COMMAND, overwrite=overwrite, inputs=inputs)
    facts, scale, pixel_size = check_pairs(pairs, scale)

    reader = _Reader()
    sources = []
    for pair, fact in zip(pairs, facts, strict=True):
        for i in range(fact["frames"]):
            sources.append(Source(
                load=lambda pair=pair, i=i: reader.frame(pair, i), cell=pair.cell, shape=fact["shape"],
                pixel_size_nm=fact["pixel_size_nm"], gt_path=pair.gt,
                info={"pair": pair.name, "cell": pair.cell, "frame": i, "wf": str(pair.wf), "gt": str(pair.gt)}))
    manifest = {
        "source": "pairs", **where, "scale": scale, "patch_size": patch_size, "pixel_size_nm": pixel_size,
        "frames": 1,
        "pairs": [{"name": p.name, "cell": p.cell, "wf": str(p.wf), "gt": str(p.gt), **{
            k: f[k] for k in ("frames", "pixel_size_nm")}, "wf_shape": list(f["shape"])} for p, f in zip(pairs, facts)],
    }
    return cut_patches(
        sources, out_dir, manifest, scale=scale, patch_size=patch_size, n_train=n_train, n_val=n_val,
        val_cells=val_cells, train_cells=train_cells, unit="pairs", rotate=rotate, flips=flips,
        threshold=threshold, min_foreground=min_foreground, seed=seed, progress=progress)
