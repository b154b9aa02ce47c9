"""Evaluate a run folder on a BioSR-layout test set: ``dfcan evaluate RUN DATA``.

For every (specimen, cell, signal level) found by :func:`dfcan_tf.data.biosr.discover`
the run's network super-resolves the raw data — the wide-field image (sum of the
raw SIM frames) for a one-channel SISR model, the raw frames themselves for a
SIM model — and the result is compared with the GT-SIM image using
:func:`dfcan_tf.evaluation.metrics.evaluate_pair` (per-image min-max normalisation, see
``docs/metrics.md``). The same metrics are computed for the wide-field image upsampled
bicubically, the baseline every network has to beat.

Outputs in ``out_dir``:

* ``metrics.csv``: one row per (specimen, cell, level, method) with ``method``
  ``"model"`` or ``"bicubic"`` and the columns of :data:`METRICS`. Pixel
  metrics compare with GT-SIM; ``resolution_nm`` is the decorrelation
  resolution of the model output (on the SR grid) and, for ``"bicubic"``, of
  the wide-field image on its own grid (interpolation adds no information,
  and the spectral replicas it leaves read as signal to decorrelation
  analysis: on noisy data an upsampled image "resolves" 75 nm);
* ``summary.csv``: mean and standard deviation over cells per (specimen, level,
  method), with ``n``, the number of cells averaged;
* ``missing.csv``: every (specimen, cell, level) of the selection whose raw or
  GT file is absent (a cell lacking one level would otherwise silently pull
  that level's mean over fewer cells), with the file that is missing;
* ``<specimen>.png``: metric-versus-signal-level curves (mean ± s.d. over
  cells) of model and bicubic input;
* with ``save_predictions``: ``predictions/<specimen>/Cell_NNN_level_LL.tif``.

The output folder is checked before any work (see :mod:`dfcan_tf.safety`):
it must be new, empty, or — with ``overwrite`` — a previous ``dfcan evaluate``
output, and it may not hold or lie inside the run or the data. Everything is
written into a staged folder that replaces the output only once all records
are done, so a failed evaluation leaves nothing behind.
"""

from __future__ import annotations

import csv
import io
import math
import os
import time
from collections import defaultdict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from dfcan_tf import safety
from dfcan_tf.data.normalize import Normalizer, minmax
from dfcan_tf.errors import DfcanError
from dfcan_tf.evaluation.metrics import evaluate_pair
from dfcan_tf.evaluation.resolution import decorrelation_resolution
from dfcan_tf.inference.predict import predict_image, resolve_run

METRICS = ("mse", "nrmse", "psnr", "ssim", "ms_ssim", "resolution_nm")
METHODS = ("model", "bicubic")
BIOSR_RAW_PIXEL_NM = 62.6
_LABELS = {
    "mse": "MSE",
    "nrmse": "NRMSE",
    "psnr": "PSNR (dB)",
    "ssim": "SSIM",
    "ms_ssim": "MS-SSIM",
    "resolution_nm": "resolution (nm, decorrelation)",
}

__all__ = ["METRICS", "EvaluationResult", "bicubic_upsample", "evaluate_run", "score_records"]


@dataclass
class EvaluationResult:
    """What :func:`evaluate_run` produced."""

    rows: list[dict[str, Any]] = field(default_factory=list)
    csv_path: Path | None = None
    summary_path: Path | None = None
    plots: list[Path] = field(default_factory=list)
    failures: list[tuple[Path, str]] = field(default_factory=list)
    missing: list[dict[str, Any]] = field(default_factory=list)
    missing_path: Path | None = None
    seconds: float = 0.0

    @property
    def ok(self) -> bool:
        return not self.failures

    def mean(self, metric: str, method: str = "model", specimen: str | None = None) -> float:
        """Mean of ``metric`` over all rows of ``method`` (and ``specimen``), NaN-aware."""
        vals = [r[metric] for r in self.rows
                if r["method"] == method and (specimen is None or r["specimen"] == specimen)]
        vals = [v for v in vals if np.isfinite(v)]
        return float(np.mean(vals)) if vals else float("nan")


def bicubic_upsample(image: np.ndarray, scale: int) -> np.ndarray:
    """Upsample a 2-D image ``scale``× with bicubic interpolation (Keys, a = −0.5, half-pixel centres).

    The convention of MATLAB's ``imresize`` and ``tf.image.resize(method="bicubic")``
    without antialiasing, which is what the latter computes here.
    """
    import tensorflow as tf

    h, w = image.shape
    x = tf.constant(np.asarray(image, np.float32)[None, :, :, None])
    return tf.image.resize(x, (scale * h, scale * w), method="bicubic", antialias=False).numpy()[0, :, :, 0]


def _network_input(raw: np.ndarray, channels: int, path: Path) -> np.ndarray:
    if channels == 1:
        return raw.sum(axis=0)  # wide-field image: the sum of the raw SIM frames
    if raw.shape[0] != channels:
        raise DfcanError(
            f"{path}: the model takes {channels} raw SIM frames, the file holds {raw.shape[0]}; "
            "evaluate a linear-SIM model (9) on linear data and a nonlinear one (25) on F-actin_Nonlinear"
        )
    return raw


def write_csv(path: Path, rows: list[dict[str, Any]], columns: Sequence[str], *, digits: int = 6) -> None:
    """Write ``rows`` (only ``columns``) as CSV atomically, floats to ``digits`` significant digits."""
    from dfcan_tf.data.files import atomic_path

    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=list(columns), extrasaction="ignore", lineterminator="\n")
    writer.writeheader()
    for row in rows:
        writer.writerow({k: (f"{v:.{digits}g}" if isinstance(v, float) else v) for k, v in row.items()})
    with atomic_path(path) as tmp:
        tmp.write_text(buf.getvalue())


def _summarise(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    groups: dict[tuple, list[dict]] = defaultdict(list)
    for r in rows:
        groups[(r["specimen"], r["level"], r["method"])].append(r)
    out = []
    for (specimen, level, method), rs in sorted(groups.items()):
        row: dict[str, Any] = {"specimen": specimen, "level": level, "method": method, "n": len(rs)}
        for m in METRICS:
            vals = np.array([r[m] for r in rs], dtype=float)
            vals = vals[np.isfinite(vals)]
            row[f"{m}_mean"] = float(vals.mean()) if vals.size else float("nan")
            row[f"{m}_std"] = float(vals.std()) if vals.size else float("nan")
        out.append(row)
    return out


def find_missing(records: list, *, cells: str | Iterable[int] | None = None,
                 levels: str | Iterable[int] | None = None) -> list[dict[str, Any]]:
    """Every (specimen, cell, level) of the selection that has no complete raw/GT pair on disk.

    The expected set per specimen is every ``Cell_NNN`` folder of its specimen
    folder (within ``cells``) times every signal level any of its cells has
    (within ``levels``). Returns rows with ``specimen``, ``cell``, ``level`` and
    ``missing_file`` (the raw stack when it is absent, else the GT).
    """
    from dfcan_tf.data.biosr import parse_cells

    keep_cells, keep_levels = parse_cells(cells), parse_cells(levels)
    folders: dict[str, Path] = {}
    for rec in records:
        cell_dir = rec.raw_path.parent
        if cell_dir.name == "RawSIMData":
            cell_dir = cell_dir.parent
        folders.setdefault(rec.specimen, cell_dir.parent)
    raw_re = "RawSIMData_level_"
    out: list[dict[str, Any]] = []
    for specimen, folder in sorted(folders.items()):
        cell_dirs: dict[int, Path] = {}
        for p in folder.iterdir():
            if p.is_dir() and p.name.lower().startswith("cell_") and p.name[5:].isdigit():
                c = int(p.name[5:])
                if keep_cells is None or c in keep_cells:
                    cell_dirs[c] = p
        present: dict[int, set[int]] = {}
        all_levels: set[int] = set()
        for c, d in cell_dirs.items():
            raw_dir = d / "RawSIMData" if (d / "RawSIMData").is_dir() else d
            found = set()
            for f in raw_dir.iterdir():
                name = f.name
                if name.startswith(raw_re) and name.endswith(".mrc") and name[len(raw_re):-4].isdigit():
                    found.add(int(name[len(raw_re):-4]))
            present[c] = found
            all_levels |= {lv for lv in found if keep_levels is None or lv in keep_levels}
        have = {(r.cell, r.level) for r in records if r.specimen == specimen}
        gt_name = next((r.gt_path.name for r in records if r.specimen == specimen), "SIM_gt.mrc")
        for c, d in sorted(cell_dirs.items()):
            er = (d / "RawSIMData").is_dir()
            for lv in sorted(all_levels):
                if (c, lv) in have:
                    continue
                raw = (d / "RawSIMData" if er else d) / f"{raw_re}{lv:02d}.mrc"
                if not raw.is_file():
                    missing = raw
                elif er:
                    missing = d / "GTSIM" / f"GTSIM_level_{lv:02d}.mrc"
                else:
                    missing = d / (gt_name if not gt_name.startswith("GTSIM") else "SIM_gt.mrc")
                out.append({"specimen": specimen, "cell": c, "level": lv, "missing_file": str(missing)})
    return out


def output_names(specimens: Iterable[str], save_predictions: bool) -> dict[str, bool]:
    """The names :func:`evaluate_run` writes in its output folder, mapped to True for folders."""
    names = {"metrics.csv": False, "summary.csv": False, "missing.csv": False}
    names.update({f"{s}.png": False for s in sorted(set(specimens))})
    if save_predictions:
        names["predictions"] = True
    return names


def check_output(out_dir: str | os.PathLike, names: dict[str, bool], *, overwrite: bool,
                 inputs: Iterable[str | os.PathLike] = ()) -> None:
    """Refuse an output folder evaluate may not write (before any work).

    ``out_dir`` must be new, empty, or a previous ``dfcan evaluate`` output
    (replaced only with ``overwrite``); none of ``names`` may be taken by the
    wrong kind of entry (a folder where a file goes, or the reverse).
    """
    out_dir = Path(out_dir)
    if out_dir.is_dir():
        for name, is_dir in names.items():
            p = out_dir / name
            if p.exists() and p.is_dir() != is_dir:
                kind = "folder" if p.is_dir() else "file"
                raise DfcanError(f"{p}: evaluate writes a {'folder' if is_dir else 'file'} {name} there, but a "
                                 f"{kind} of that name exists; move it away or choose another output folder")
    safety.check_output_dir(out_dir, command="evaluate", overwrite=overwrite, inputs=inputs)


def _plot(path: Path, specimen: str, summary: list[dict[str, Any]], title: str) -> Path:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.ticker import MaxNLocator

    from dfcan_tf.data.files import atomic_path

    rows = [r for r in summary if r["specimen"] == specimen]
    metrics = [m for m in METRICS if any(np.isfinite(r[f"{m}_mean"]) for r in rows)]
    ncols = 3
    nrows = math.ceil(len(metrics) / ncols)
    fig, axes = plt.subplots(nrows, ncols, figsize=(4.2 * ncols, 3.2 * nrows), squeeze=False)
    for ax, metric in zip(axes.ravel(), metrics):
        for method, style in zip(METHODS, ("o-", "s--")):
            rs = sorted((r for r in rows if r["method"] == method), key=lambda r: r["level"])
            if not rs:
                continue
            ax.errorbar([r["level"] for r in rs], [r[f"{metric}_mean"] for r in rs],
                        yerr=[r[f"{metric}_std"] for r in rs], fmt=style, capsize=3, label=method)
        ax.set_xlabel("signal level")
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax.set_ylabel(_LABELS[metric])
        ax.grid(alpha=0.3)
    for ax in axes.ravel()[len(metrics):]:
        ax.axis("off")
    axes[0, 0].legend()
    fig.suptitle(f"{specimen}: {title}")
    fig.tight_layout()
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", dpi=100)
    plt.close(fig)
    return path


def score_records(
    run: str | Any,
    records: list,
    *,
    which: str = "best",
    backend: str = "keras",
    tile_size: int | None = None,
    overlap: int | None = None,
    resolution: bool = True,
    progress: bool = True,
    desc: str = "evaluate",
    predictions: list | None = None,
) -> tuple[list[dict[str, Any]], list[tuple[Path, str]]]:
    """Predict every record with ``run`` and score model and bicubic wide-field against GT-SIM; write nothing.

    Parameters
    ----------
    run
        Run folder (or a loaded :class:`dfcan_tf.runs.Run`) of any registered architecture.
    records
        :class:`dfcan_tf.data.biosr.BioSRRecord` list (from :func:`dfcan_tf.data.biosr.discover`).
    which, backend, tile_size, overlap
        As :func:`dfcan_tf.inference.files.predict_files` (``overlap=None``:
        the network's measured receptive field).
    resolution
        Also compute the decorrelation resolution (nm); NaN otherwise.
    progress, desc
        tqdm bar over records and its label.
    predictions
        A list to append ``(record, prediction, SR pixel size in nm)`` to (for
        callers that write them).

    Returns
    -------
    rows, failures
        One row per (record, method) with the columns of :data:`METRICS`, and
        ``(raw path, message)`` of every record that failed (the others continue).
    """
    from dfcan_tf.data.files import read_mrc_header

    model, data, scale, channels, config = resolve_run(run, backend, which)
    normalizer = Normalizer.from_config(data.get("normalization"))
    rows: list[dict[str, Any]] = []
    failures: list[tuple[Path, str]] = []
    iterator: Iterable = records
    if progress:
        from tqdm.auto import tqdm

        iterator = tqdm(records, desc=desc, unit="image")
    for rec in iterator:
        try:
            raw, gt = rec.load()
            if raw.shape[1] * scale != gt.shape[0] or raw.shape[2] * scale != gt.shape[1]:
                raise DfcanError(
                    f"{rec.gt_path}: GT of {gt.shape[0]}x{gt.shape[1]} is not {scale}x the raw "
                    f"{raw.shape[1]}x{raw.shape[2]} of {rec.raw_path.name}; the run's scale is {scale}"
                )
            x = _network_input(raw, channels, rec.raw_path)
            per_image = normalizer.per_image
            pred = predict_image(model, x if per_image else normalizer.normalize(x), scale=scale,
                                 tile_size=tile_size, overlap=overlap, normalize=per_image, normalizer=normalizer,
                                 name=str(rec.raw_path), config=config)
            wf = raw.sum(axis=0)
            bicubic = bicubic_upsample(minmax(wf), scale)
            raw_px = read_mrc_header(rec.raw_path).get("pixel_size_nm") or data.get("pixel_size_nm") \
                or BIOSR_RAW_PIXEL_NM
            raw_px = float(raw_px)
            sr_px = raw_px / scale
            # The baseline's resolution is the wide-field image's own: interpolation adds no
            # information, and its spectral replicas read as signal to decorrelation analysis.
            for method, image, res_image, px in (("model", pred, pred, sr_px), ("bicubic", bicubic, wf, raw_px)):
                row: dict[str, Any] = {"specimen": rec.specimen, "cell": rec.cell, "level": rec.level,
                                       "method": method, **evaluate_pair(image, gt)}
                row["resolution_nm"] = decorrelation_resolution(res_image, px) if resolution else float("nan")
                rows.append(row)
            if predictions is not None:
                predictions.append((rec, pred, sr_px))
        except DfcanError as exc:
            failures.append((rec.raw_path, str(exc)))
        except Exception as exc:  # noqa: BLE001 -- any failure is reported per record; the others continue
            failures.append((rec.raw_path, f"{rec.raw_path}: {type(exc).__name__}: {exc}"))
    return rows, failures


def evaluate_run(
    run_dir: str | Any,
    data_root: str | Path,
    out_dir: str | Path,
    *,
    specimens: Iterable[str] | None = None,
    cells: str | Iterable[int] | None = None,
    levels: str | Iterable[int] | None = None,
    which: str = "best",
    backend: str = "keras",
    tile_size: int | None = None,
    overlap: int | None = None,
    resolution: bool = True,
    save_predictions: bool = False,
    overwrite: bool = False,
    progress: bool = True,
) -> EvaluationResult:
    """Predict every (cell, level) of a BioSR-layout test set and score it against GT-SIM.

    Parameters
    ----------
    run_dir
        Run folder (or a loaded :class:`dfcan_tf.runs.Run`).
    data_root
        BioSR-layout root (specimen folders) or one specimen folder.
    out_dir
        Where ``metrics.csv``, ``summary.csv`` and the plots go.
    specimens, cells, levels
        Selection (see :func:`dfcan_tf.data.biosr.discover`); e.g. ``cells="36-50"``,
        the public recipe's test cells.
    which, backend, tile_size, overlap
        As :func:`dfcan_tf.inference.files.predict_files` (scored by :func:`score_records`).
    resolution
        Also compute the decorrelation resolution (nm) of model and bicubic outputs.
    save_predictions
        Write every prediction as 16-bit TIFF under ``out_dir/predictions``.
    overwrite
        Replace ``out_dir`` when it holds a previous ``dfcan evaluate`` output
        (never any other non-empty folder).
    progress
        tqdm bar over records.

    Returns
    -------
    EvaluationResult
        Rows (also in ``metrics.csv``), output paths and per-record failures
        (a failing record is reported, the others continue).

    Raises
    ------
    DfcanError
        Bad run folder, no data found, an output folder that may not be
        written (checked before any work), or every record failed; nothing is
        written then.
    """
    from dfcan_tf.data.biosr import discover
    from dfcan_tf.data.files import write_tiff

    t0 = time.perf_counter()
    records = discover(data_root, specimens=specimens, cells=cells, levels=levels)
    out_dir = Path(out_dir)
    run_path = Path(getattr(run_dir, "path", run_dir))
    names = output_names((r.specimen for r in records), save_predictions)
    check_output(out_dir, names, overwrite=overwrite, inputs=[data_root, run_path])
    result = EvaluationResult(missing=find_missing(records, cells=cells, levels=levels))
    found: list = []
    result.rows, result.failures = score_records(
        run_dir, records, which=which, backend=backend, tile_size=tile_size, overlap=overlap,
        resolution=resolution, progress=progress, predictions=found if save_predictions else None)
    predictions = [(Path("predictions") / rec.specimen / f"Cell_{rec.cell:03d}_level_{rec.level:02d}.tif", pred, px)
                   for rec, pred, px in found]
    if not result.rows:
        details = "; ".join(m for _, m in result.failures[:3])
        raise DfcanError(f"{data_root}: no record could be evaluated ({details})")

    # Everything goes into a staged folder next to the output, which replaces it only when complete.
    with safety.staged_dir(out_dir, command="evaluate") as staged:
        summary = _summarise(result.rows)
        write_csv(staged / "metrics.csv", result.rows, ["specimen", "cell", "level", "method", *METRICS])
        write_csv(staged / "summary.csv", summary,
                   ["specimen", "level", "method", "n", *(f"{m}_{s}" for m in METRICS for s in ("mean", "std"))])
        write_csv(staged / "missing.csv", result.missing, ["specimen", "cell", "level", "missing_file"])
        title = f"{run_path.name} vs bicubic wide-field"
        plotted = sorted({r["specimen"] for r in result.rows})
        for specimen in plotted:
            _plot(staged / f"{specimen}.png", specimen, summary, title)
        for dest, pred, px in predictions:
            write_tiff(staged / dest, pred, pixel_size_nm=px)
    result.csv_path = out_dir / "metrics.csv"
    result.summary_path = out_dir / "summary.csv"
    result.missing_path = out_dir / "missing.csv"
    result.plots = [out_dir / f"{s}.png" for s in plotted]
    result.seconds = time.perf_counter() - t0
    return result

