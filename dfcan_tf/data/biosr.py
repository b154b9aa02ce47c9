"""BioSR on disk: find specimens, cells, signal levels and their ground truth.

BioSR (Qiao et al., 2021) is laid out per specimen and cell::

    <root>/CCPs/Cell_001/RawSIMData_level_01.mrc ... _09.mrc   raw SIM stacks (9 frames)
                         RawSIMData_gt.mrc                     high-SNR raw stack
                         SIM_gt.mrc                            GT-SIM (2× grid): the target
    <root>/F-actin_Nonlinear/Cell_001/RawSIMData_level_01.mrc  25-frame nonlinear SIM
                         SIM_gt_a.mrc                          target (3× grid)
                         SIM_gt_b.mrc                          gamma-0.6 overview, never a target
    <root>/ER/Cell_001/RawSIMData/RawSIMData_level_01.mrc ... _06.mrc
                       GTSIM/GTSIM_level_01.mrc ... _06.mrc    one GT per level

:func:`discover` walks such a tree (real BioSR or the output of ``dfcan
simulate``) and returns one :class:`BioSRRecord` per (cell, level) pair;
:meth:`BioSRRecord.load` reads the raw stack and its GT through
:func:`dfcan_tf.data.files.read_mrc`.
"""

from __future__ import annotations

import os
import re
import warnings
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from dfcan_tf.data.files import read_mrc, read_mrc_header
from dfcan_tf.errors import DfcanError

_CELL_RE = re.compile(r"^cell_(\d+)$", re.IGNORECASE)
_RAW_RE = re.compile(r"^RawSIMData_level_(\d+)\.mrc$", re.IGNORECASE)
_ER_GT_RE = "GTSIM_level_{level:02d}.mrc"
# Ground-truth names tried in order for specimens that have one GT per cell.
_CELL_GT_NAMES = ("SIM_gt.mrc", "SIM_gt_a.mrc")


@dataclass(frozen=True)
class BioSRRecord:
    """One training example of BioSR: a raw SIM stack and its GT-SIM image.

    Attributes
    ----------
    raw_path
        ``RawSIMData_level_LL.mrc``: (frames, H, W) raw SIM stack.
    gt_path
        The GT-SIM image (``SIM_gt.mrc``, ``SIM_gt_a.mrc`` or ER's
        ``GTSIM_level_LL.mrc``) on the scale× grid.
    specimen
        Specimen folder name (``"CCPs"``, ``"ER"``, ``"Microtubules"``,
        ``"F-actin"``, ``"F-actin_Nonlinear"`` or any other folder name).
    cell
        Cell number from ``Cell_NNN``.
    level
        Signal level from ``..._level_LL`` (1 is the lowest signal).
    raw_gt_path
        ``RawSIMData_gt.mrc`` (high-SNR raw stack) when the cell has one.
    """

    raw_path: Path
    gt_path: Path
    specimen: str
    cell: int
    level: int
    raw_gt_path: Path | None = None

    def shapes(self) -> tuple[tuple[int, int, int], tuple[int, int, int]]:
        """Return the (frames, H, W) shapes of raw stack and GT from the headers alone."""
        return read_mrc_header(self.raw_path)["shape"], read_mrc_header(self.gt_path)["shape"]

    def scale(self) -> int:
        """Return the GT/raw size ratio (2 for linear SIM, 3 for nonlinear SIM), from the headers.

        Raises
        ------
        DfcanError
            The GT is not an integer multiple (1–4) of the raw size in both axes.
        """
        (_, h, w), (_, gh, gw) = self.shapes()
        return _scale_of(self, (h, w), (gh, gw))

    def load(self) -> tuple[np.ndarray, np.ndarray]:
        """Read the raw stack and the GT.

        Returns
        -------
        raw : numpy.ndarray
            (frames, H, W) float32, as stored (camera counts for BioSR).
        gt : numpy.ndarray
            (scale·H, scale·W) float32.
        """
        raw, _ = read_mrc(self.raw_path)
        gt, _ = read_mrc(self.gt_path)
        if gt.shape[0] != 1:
            # BioSR GT files hold one image; a stack here means the wrong file.
            raise DfcanError(f"{self.gt_path}: expected one GT-SIM image, found a stack of {gt.shape[0]} frames")
        _scale_of(self, raw.shape[1:], gt.shape[1:])
        return raw.astype(np.float32), gt[0].astype(np.float32)


def _scale_of(rec: BioSRRecord, raw_hw: tuple[int, ...], gt_hw: tuple[int, ...]) -> int:
    h, w = raw_hw
    gh, gw = gt_hw
    if gh % h or gw % w or gh // h != gw // w or not 1 <= gh // h <= 4:
        raise DfcanError(
            f"{rec.gt_path}: GT size {gh}×{gw} is not 2× or 3× the raw size {h}×{w} of {rec.raw_path}"
        )
    return gh // h


def parse_cells(spec: str | int | Iterable[int] | None) -> list[int] | None:
    """Turn a cell selection into a sorted list of cell numbers.

    Parameters
    ----------
    spec
        ``None`` (all), an int, an iterable of ints, or a string such as
        ``"1-5"``, ``"6-35,40"``.

    Raises
    ------
    DfcanError
        The string is not a list of numbers and ranges.
    """
    if spec is None:
        return None
    if isinstance(spec, int):
        return [spec]
    if not isinstance(spec, str):
        return sorted({int(c) for c in spec})
    cells: set[int] = set()
    for part in spec.replace(" ", "").split(","):
        if not part:
            continue
        m = re.fullmatch(r"(\d+)(?:-(\d+))?", part)
        if not m:
            raise DfcanError(f"cells must be numbers and ranges like '1-5,8'. Received: {spec!r}")
        lo, hi = int(m.group(1)), int(m.group(2) or m.group(1))
        if hi < lo:
            raise DfcanError(f"cell range {part!r} runs backwards. Received: {spec!r}")
        cells.update(range(lo, hi + 1))
    return sorted(cells)


def _cell_dirs(folder: Path) -> list[tuple[int, Path]]:
    out = []
    for p in folder.iterdir():
        m = _CELL_RE.match(p.name)
        if m and p.is_dir():
            out.append((int(m.group(1)), p))
    return sorted(out)


def _records_of_cell(specimen: str, cell: int, cell_dir: Path) -> list[BioSRRecord]:
    records = []
    raw_dir = cell_dir / "RawSIMData"
    if raw_dir.is_dir():  # ER layout: a GT per level in GTSIM/
        for p in sorted(raw_dir.iterdir()):
            m = _RAW_RE.match(p.name)
            if not m:
                continue
            level = int(m.group(1))
            gt = cell_dir / "GTSIM" / _ER_GT_RE.format(level=level)
            if not gt.is_file():
                warnings.warn(f"{p}: no ground truth {gt}; level skipped", RuntimeWarning, stacklevel=3)
                continue
            records.append(BioSRRecord(p, gt, specimen, cell, level))
        return records
    gt = next((cell_dir / n for n in _CELL_GT_NAMES if (cell_dir / n).is_file()), None)
    raw_gt = cell_dir / "RawSIMData_gt.mrc"
    raws = [(int(m.group(1)), p) for p in sorted(cell_dir.iterdir()) if (m := _RAW_RE.match(p.name))]
    if raws and gt is None:
        warnings.warn(f"{cell_dir}: raw SIM data but no SIM_gt.mrc / SIM_gt_a.mrc; cell skipped",
                      RuntimeWarning, stacklevel=3)
        return []
    for level, p in raws:
        records.append(BioSRRecord(p, gt, specimen, cell, level, raw_gt if raw_gt.is_file() else None))
    return records


def discover(
    root: str | os.PathLike,
    *,
    specimens: Iterable[str] | None = None,
    cells: str | Iterable[int] | None = None,
    levels: str | Iterable[int] | None = None,
) -> list[BioSRRecord]:
    """Find every (raw stack, GT) pair under a BioSR-layout folder.

    Parameters
    ----------
    root
        The dataset root (holding specimen folders) or one specimen folder
        (holding ``Cell_NNN`` folders).
    specimens
        Specimen folder names to keep (case-insensitive); default all.
    cells, levels
        Cell / level numbers to keep (see :func:`parse_cells`); default all.

    Returns
    -------
    list of BioSRRecord
        Sorted by specimen, cell and level.

    Raises
    ------
    DfcanError
        ``root`` is missing, a requested specimen is absent, or nothing matches.
    """
    root = Path(root)
    if not root.is_dir():
        raise DfcanError(f"{root}: no such folder (expected a BioSR-layout dataset)")
    if _cell_dirs(root):
        folders = {root.name: root}
    else:
        folders = {p.name: p for p in sorted(root.iterdir()) if p.is_dir() and _cell_dirs(p)}
    if not folders:
        raise DfcanError(
            f"{root}: no BioSR data found (expected <specimen>/Cell_NNN/RawSIMData_level_LL.mrc "
            "with SIM_gt.mrc, or ER's Cell_NNN/RawSIMData/ and GTSIM/)"
        )
    if specimens is not None:
        wanted = list(specimens)
        by_lower = {k.lower(): k for k in folders}
        missing = [s for s in wanted if s.lower() not in by_lower]
        if missing:
            raise DfcanError(f"{root}: no specimen folder {missing}; found {sorted(folders)}")
        folders = {by_lower[s.lower()]: folders[by_lower[s.lower()]] for s in wanted}
    keep_cells = parse_cells(cells)
    keep_levels = parse_cells(levels)
    records: list[BioSRRecord] = []
    for specimen, folder in folders.items():
        for cell, cell_dir in _cell_dirs(folder):
            if keep_cells is not None and cell not in keep_cells:
                continue
            for rec in _records_of_cell(specimen, cell, cell_dir):
                if keep_levels is None or rec.level in keep_levels:
                    records.append(rec)
    if not records:
        raise DfcanError(
            f"{root}: no raw/GT pairs match specimens={sorted(folders)}, cells={cells!r}, levels={levels!r}"
        )
    return sorted(records, key=lambda r: (r.specimen, r.cell, r.level))


def load_cell_raw_gt(record: BioSRRecord) -> np.ndarray | None:
    """Read the high-SNR raw stack (``RawSIMData_gt.mrc``) of a record's cell, if there is one."""
    if record.raw_gt_path is None:
        return None
    return read_mrc(record.raw_gt_path)[0].astype(np.float32)
