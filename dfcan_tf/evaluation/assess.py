"""The paper's assessment matrix: networks versus conventional SIM, ``dfcan assess RUN... DATA -o OUT``.

For every (specimen, cell, signal level) of a BioSR-layout test set
(:func:`dfcan_tf.data.biosr.discover`) three kinds of method are scored against
GT-SIM with :func:`dfcan_tf.evaluation.metrics.evaluate_pair` (per-image min-max
normalisation):

* every given run folder (method name: the folder's name), through
  :func:`dfcan_tf.evaluation.evaluate.score_records`, so input, normalisation, tiling and
  metrics are exactly those of ``dfcan evaluate``;
* conventional SIM (``"conventional_sim"``): linear SIM on the 2× grid for a
  9-frame raw stack, nonlinear SIM on the 3× grid for a 25-frame one
  (:mod:`dfcan_tf.sim`, parameters estimated from the raw data, as
  ``dfcan sim-reconstruct`` does);
* the wide-field image upsampled bicubically (``"bicubic_wf"``), the
  baseline of ``dfcan evaluate``.

The **priority region** of a network is the set of (specimen, level) cells of
the matrix where the network is at least as good as conventional SIM on the
same raw acquisitions. Means are taken over the cells (biological cells)
scored by both methods. The rule (``rule``, ``--rule``) decides "at least as
good":

* ``psnr+ssim`` (default): mean PSNR of the network ≥ that of conventional SIM
  **and** mean SSIM of the network ≥ that of conventional SIM;
* ``psnr``: mean PSNR only (≥);
* ``ssim``: mean SSIM only (≥);
* ``nrmse``: mean NRMSE of the network ≤ that of conventional SIM (lower is better).

A matrix cell without any scored pair is never in the region.

Outputs in ``out_dir`` (checked before any work by
:func:`dfcan_tf.safety.check_output_dir` with command ``"assess"``: new,
empty, or a previous ``dfcan assess`` output replaced only with
``overwrite``; never holding or inside a run or the data):

* ``metrics.csv``: one row per method × record: ``method, specimen, cell,
  level, mse, nrmse, psnr, ssim`` (and ``resolution_nm``, the decorrelation
  resolution, with ``resolution``);
* ``matrix.csv``: one row per network × specimen × level: ``n`` (cells
  averaged), mean PSNR/SSIM/NRMSE of the network, of conventional SIM and of
  bicubic wide-field, ``psnr_diff`` (network − conventional SIM, dB), ``rule``
  and ``in_priority_region``;
* ``matrix.png``: one panel per network, rows specimens, columns signal
  levels, cells coloured in/out of the priority region and annotated with the
  PSNR difference.

Everything is written into a staged folder that replaces ``out_dir`` only when
complete; the runs and the data are only read.
"""

from __future__ import annotations

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
from dfcan_tf.errors import DfcanError

COMMAND = "assess"
CONVENTIONAL = "conventional_sim"
BICUBIC = "bicubic_wf"
PIXEL_METRICS = ("mse", "nrmse", "psnr", "ssim")
RULES = ("psnr+ssim", "psnr", "ssim", "nrmse")
RULE_TEXT = {
    "psnr+ssim": "network mean PSNR ≥ conventional SIM and mean SSIM ≥ conventional SIM",
    "psnr": "network mean PSNR ≥ conventional SIM",
    "ssim": "network mean SSIM ≥ conventional SIM",
    "nrmse": "network mean NRMSE ≤ conventional SIM",
}
MATRIX_COLUMNS = (
    "network", "specimen", "level", "n",
    "psnr_network", "psnr_sim", "psnr_bicubic",
    "ssim_network", "ssim_sim", "ssim_bicubic",
    "nrmse_network", "nrmse_sim", "nrmse_bicubic",
    "psnr_diff", "rule", "in_priority_region",
)
_FRAMES = {9: 2, 25: 3}  # raw frames -> scale of conventional SIM

__all__ = ["RULES", "RULE_TEXT", "AssessmentResult", "assess", "build_matrix", "in_priority_region",
           "plot_matrix"]


@dataclass
class AssessmentResult:
    """What :func:`assess` produced."""

    rows: list[dict[str, Any]] = field(default_factory=list)
    matrix: list[dict[str, Any]] = field(default_factory=list)
    networks: list[str] = field(default_factory=list)
    rule: str = "psnr+ssim"
    metrics_path: Path | None = None
    matrix_path: Path | None = None
    plot_path: Path | None = None
    failures: list[tuple[str, str]] = field(default_factory=list)
    seconds: float = 0.0

    @property
    def ok(self) -> bool:
        return not self.failures


def in_priority_region(network: dict[str, float], sim: dict[str, float], rule: str = "psnr+ssim") -> bool:
    """Whether a network's means are at least as good as conventional SIM's under ``rule``.

    Parameters
    ----------
    network, sim
        Mean metrics (keys ``psnr``, ``ssim``, ``nrmse``) over the same cells.
    rule
        One of :data:`RULES` (see the module docstring). NaN never qualifies.
    """
    if rule not in RULES:
        raise DfcanError(f"--rule must be one of {', '.join(RULES)}. Received: {rule!r}")
    checks = {"psnr+ssim": (("psnr", True), ("ssim", True)), "psnr": (("psnr", True),),
              "ssim": (("ssim", True),), "nrmse": (("nrmse", False),)}[rule]
    for metric, higher_is_better in checks:
        a, b = float(network[metric]), float(sim[metric])
        if math.isnan(a) or math.isnan(b):
            return False
        if not (a >= b if higher_is_better else a <= b):
            return False
    return True


def _mean(values: list[float]) -> float:
    vals = np.asarray(values, dtype=float)
    vals = vals[~np.isnan(vals)]
    return float(vals.mean()) if vals.size else float("nan")


def build_matrix(rows: Iterable[dict[str, Any]], networks: Sequence[str], rule: str = "psnr+ssim"
                 ) -> list[dict[str, Any]]:
    """The assessment matrix from per-record rows (as in ``metrics.csv``).

    For each network, specimen and level the means run over the cells scored
    by both the network and conventional SIM (``n`` of them); the bicubic
    means over the same cells when it has them.

    Parameters
    ----------
    rows
        Dicts with ``method, specimen, cell, level`` and the metrics.
    networks
        Method names of the networks, in output order.
    rule
        One of :data:`RULES`.

    Returns
    -------
    list of dict
        One row per network × specimen × level with :data:`MATRIX_COLUMNS`.
    """
    if rule not in RULES:
        raise DfcanError(f"--rule must be one of {', '.join(RULES)}. Received: {rule!r}")
    by: dict[tuple[str, str, int], dict[int, dict[str, Any]]] = defaultdict(dict)
    for r in rows:
        by[(r["method"], r["specimen"], int(r["level"]))][int(r["cell"])] = r
    cells_of = sorted({(s, lv) for (_, s, lv) in by})
    out: list[dict[str, Any]] = []
    for net in networks:
        for specimen, level in cells_of:
            net_rows, sim_rows = by.get((net, specimen, level), {}), by.get((CONVENTIONAL, specimen, level), {})
            bic_rows = by.get((BICUBIC, specimen, level), {})
            cells = sorted(set(net_rows) & set(sim_rows))
            means: dict[str, dict[str, float]] = {}
            for key, source in (("network", net_rows), ("sim", sim_rows), ("bicubic", bic_rows)):
                means[key] = {m: _mean([float(source[c][m]) for c in cells if c in source])
                              for m in ("psnr", "ssim", "nrmse")}
            row: dict[str, Any] = {"network": net, "specimen": specimen, "level": level, "n": len(cells)}
            for m in ("psnr", "ssim", "nrmse"):
                for key in ("network", "sim", "bicubic"):
                    row[f"{m}_{key}"] = means[key][m]
            row["psnr_diff"] = means["network"]["psnr"] - means["sim"]["psnr"] if cells else float("nan")
            row["rule"] = rule
            row["in_priority_region"] = bool(cells) and in_priority_region(means["network"], means["sim"], rule)
            out.append(row)
    return out


CSV_DIGITS = 8  # metrics.csv keeps 8 significant digits; the matrix is computed from those


def _rounded(v: float) -> float:
    """The value as ``metrics.csv`` holds it, so the matrix is computed from the file's numbers."""
    return float(f"{float(v):.{CSV_DIGITS}g}")


def plot_matrix(matrix: list[dict[str, Any]], path: str | os.PathLike, networks: Sequence[str],
                rule: str = "psnr+ssim") -> Path:
    """Draw the assessment matrix: one panel per network, rows specimens, columns signal levels.

    A cell is coloured when it is in the priority region, grey when not, white
    when nothing was scored; its text is the PSNR difference network −
    conventional SIM in dB. Written atomically as PNG.
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.colors import ListedColormap
    from matplotlib.patches import Patch

    from dfcan_tf.data.files import atomic_path

    path = Path(path)
    specimens = sorted({r["specimen"] for r in matrix})
    levels = sorted({int(r["level"]) for r in matrix})
    n = max(len(networks), 1)
    ncols = min(n, 2)
    nrows = math.ceil(n / ncols)
    panel_w = 1.6 + 0.62 * len(levels) + 0.09 * max((len(s) for s in specimens), default=4)
    panel_h = 1.1 + 0.5 * len(specimens)
    fig, axes = plt.subplots(nrows, ncols, figsize=(panel_w * ncols, panel_h * nrows + 0.8), squeeze=False)
    colours = {"in": "#f2a65a", "out": "#d9d9d9"}
    cmap = ListedColormap([colours["out"], colours["in"]]).with_extremes(bad="white")
    lookup = {(r["network"], r["specimen"], int(r["level"])): r for r in matrix}
    for ax, net in zip(axes.ravel(), networks):
        grid = np.full((len(specimens), len(levels)), np.nan)
        for i, s in enumerate(specimens):
            for j, lv in enumerate(levels):
                r = lookup.get((net, s, lv))
                if r is None or not r["n"]:
                    ax.text(j, i, "–", ha="center", va="center", fontsize=9, color="0.5")
                    continue
                grid[i, j] = 1.0 if r["in_priority_region"] else 0.0
                diff = r["psnr_diff"]
                ax.text(j, i, f"{diff:+.1f}" if np.isfinite(diff) else "n/a", ha="center", va="center",
                        fontsize=8.5, color="black")
        ax.imshow(np.ma.masked_invalid(grid), cmap=cmap, vmin=0, vmax=1, aspect="auto")
        ax.set_xticks(range(len(levels)), [str(lv) for lv in levels])
        ax.set_yticks(range(len(specimens)), specimens)
        ax.set_xticks(np.arange(-0.5, len(levels)), minor=True)
        ax.set_yticks(np.arange(-0.5, len(specimens)), minor=True)
        ax.grid(which="minor", color="white", linewidth=2)
        ax.tick_params(which="minor", length=0)
        ax.set_xlabel("signal level")
        ax.set_title(net, fontsize=10)
    for ax in axes.ravel()[len(networks):]:
        ax.axis("off")
    handles = [Patch(color=colours["in"], label="priority region (network ≥ conventional SIM)"),
               Patch(color=colours["out"], label="outside (conventional SIM better by the rule)")]
    fig.legend(handles=handles, loc="lower center", ncol=2, fontsize=8.5, frameon=False)
    fig.suptitle(f"Assessment matrix; numbers: PSNR network − conventional SIM (dB)\nrule: {RULE_TEXT[rule]}",
                 fontsize=9.5)
    fig.tight_layout(rect=(0, 0.06, 1, 1))
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", dpi=110)
    plt.close(fig)
    return path


def _network_names(runs: Sequence[Path]) -> list[str]:
    names = []
    for run in runs:
        if not run.is_dir():
            raise DfcanError(f"{run}: run folder not found (expected a folder holding config.json and weights/)")
        name = Path(os.path.abspath(run)).name
        if name in (CONVENTIONAL, BICUBIC):
            raise DfcanError(f"{run}: a run folder may not be named {name!r}, the name of a baseline in "
                             "metrics.csv; rename it (or use a symbolic link with another name)")
        if name in names:
            raise DfcanError(f"{run}: two run folders are named {name!r}; their rows would be indistinguishable. "
                             "Give run folders with distinct names (a symbolic link with another name works)")
        names.append(name)
    return names


def _check_compatible(runs: Sequence[Path], records: list) -> None:
    """Refuse runs whose scale or input does not fit the data, and raw stacks conventional SIM cannot use."""
    from dfcan_tf.runs import read_run_config

    stacks: dict[str, tuple[Any, int, int]] = {}
    for rec in records:
        try:
            (frames, _, _), _ = rec.shapes()
            scale = rec.scale()
        except DfcanError:
            continue  # an unreadable record fails on its own later (reported, the others continue)
        if frames not in _FRAMES:
            raise DfcanError(f"{rec.raw_path}: {frames} raw frames; conventional SIM needs 9 (linear) or "
                             "25 (nonlinear) frames per stack")
        if _FRAMES[frames] != scale:
            raise DfcanError(f"{rec.gt_path}: GT is {scale}× the raw size, but {frames}-frame SIM reconstructs "
                             f"on the {_FRAMES[frames]}× grid")
        stacks.setdefault(rec.specimen, (rec, frames, scale))
    for run in runs:
        _, cfg = read_run_config(run)
        for specimen, (rec, frames, scale) in stacks.items():
            if cfg.scale != scale:
                raise DfcanError(
                    f"{run}: the run super-resolves ×{cfg.scale}, but {specimen} ({rec.gt_path}) is ×{scale}; "
                    f"assess ×{scale} runs on it, or select other specimens with --specimens")
            if cfg.input_channels not in (1, frames):
                raise DfcanError(f"{run}: the run takes {cfg.input_channels} input channels, {specimen} has "
                                 f"{frames}-frame raw stacks ({rec.raw_path}); give a matching run")


def _conventional_rows(records: list, *, wiener: float, known: bool, resolution: bool, progress: bool,
                       failures: list[tuple[str, str]]) -> list[dict[str, Any]]:
    from tqdm.auto import tqdm

    from dfcan_tf.cli.sim_reconstruct import reconstruct_file
    from dfcan_tf.evaluation.metrics import evaluate_pair
    from dfcan_tf.evaluation.resolution import decorrelation_resolution

    rows = []
    for rec in tqdm(records, desc="conventional SIM", unit="image", disable=not progress):
        try:
            image, _, px = reconstruct_file(rec.raw_path, wiener=wiener, use_simulation=known)
            _, gt = rec.load()
            if image.shape != gt.shape:
                raise DfcanError(f"{rec.gt_path}: GT of {gt.shape[0]}×{gt.shape[1]} does not match the "
                                 f"conventional SIM image of {image.shape[0]}×{image.shape[1]}")
            row: dict[str, Any] = {"method": CONVENTIONAL, "specimen": rec.specimen, "cell": rec.cell,
                                   "level": rec.level, **evaluate_pair(image, gt)}
            if resolution:
                row["resolution_nm"] = decorrelation_resolution(image, px)
            rows.append(row)
        except DfcanError as exc:
            failures.append((str(rec.raw_path), f"conventional SIM: {exc}"))
        except Exception as exc:  # noqa: BLE001 -- reported per record; the others continue
            failures.append((str(rec.raw_path), f"conventional SIM: {rec.raw_path}: {type(exc).__name__}: {exc}"))
    return rows


def assess(
    runs: Sequence[str | os.PathLike],
    data_root: str | os.PathLike,
    out_dir: str | os.PathLike,
    *,
    rule: str = "psnr+ssim",
    specimens: Iterable[str] | None = None,
    cells: str | Iterable[int] | None = None,
    levels: str | Iterable[int] | None = None,
    which: str = "best",
    backend: str = "keras",
    tile_size: int | None = None,
    overlap: int | None = None,
    resolution: bool = False,
    wiener: float | None = None,
    known: bool = False,
    overwrite: bool = False,
    progress: bool = True,
) -> AssessmentResult:
    """Score networks, conventional SIM and bicubic wide-field on a BioSR-layout test set; draw the matrix.

    Parameters
    ----------
    runs
        Run folders (config.json + weights/); each is a network of the matrix,
        named by its folder name.
    data_root
        BioSR-layout root (specimen folders) or one specimen folder.
    out_dir
        Output folder for ``metrics.csv``, ``matrix.csv`` and ``matrix.png``.
    rule
        Priority-region rule, one of :data:`RULES` (see the module docstring).
    specimens, cells, levels
        Selection (see :func:`dfcan_tf.data.biosr.discover`).
    which, backend, tile_size, overlap
        Inference of the runs, as :func:`dfcan_tf.evaluation.evaluate.score_records` (``overlap=None``: measured).
    resolution
        Also compute the decorrelation resolution (nm) of every method.
    wiener
        Wiener parameter of conventional SIM (default that of :mod:`dfcan_tf.sim`).
    known
        Conventional SIM uses the pattern wave vectors of a ``simulation.json``
        next to each stack (simulated data) instead of estimating them.
    overwrite
        Replace ``out_dir`` when it holds a previous ``dfcan assess`` output.
    progress
        tqdm bars (one per network, one for conventional SIM).

    Returns
    -------
    AssessmentResult
        Per-record rows, matrix rows, output paths and per-record failures.

    Raises
    ------
    DfcanError
        A missing run folder or duplicate run names, a run whose scale or
        input channels do not fit the data, no records, an output folder that
        may not be written (checked before any work), or a method that scored
        no record; nothing is written then.
    """
    from dfcan_tf.data.biosr import discover
    from dfcan_tf.evaluation.evaluate import score_records, write_csv
    from dfcan_tf.sim.reconstruct import DEFAULT_WIENER

    t0 = time.perf_counter()
    if rule not in RULES:
        raise DfcanError(f"--rule must be one of {', '.join(RULES)}. Received: {rule!r}")
    run_paths = [Path(r) for r in runs]
    if not run_paths:
        raise DfcanError("give at least one run folder to assess")
    wiener = DEFAULT_WIENER if wiener is None else float(wiener)
    if not (np.isfinite(wiener) and wiener > 0):
        raise DfcanError(f"--wiener must be a positive number. Received: {wiener}")
    data_root = Path(data_root)
    out_dir = Path(out_dir)
    names = _network_names(run_paths)
    specimens = list(specimens) if specimens is not None else None
    safety.check_output_dir(out_dir, command=COMMAND, overwrite=overwrite, inputs=[data_root, *run_paths])
    records = discover(data_root, specimens=specimens, cells=cells, levels=levels)
    _check_compatible(run_paths, records)

    result = AssessmentResult(networks=names, rule=rule)
    with safety.staged_dir(out_dir, command=COMMAND) as staged:
        rows: list[dict[str, Any]] = []
        for i, (run, name) in enumerate(zip(run_paths, names)):
            scored, failures = score_records(run, records, which=which, backend=backend, tile_size=tile_size,
                                             overlap=overlap, resolution=resolution, progress=progress, desc=name)
            result.failures.extend((str(p), f"{name}: {msg}") for p, msg in failures)
            if not scored:
                details = "; ".join(m for _, m in failures[:3])
                raise DfcanError(f"{data_root}: no record could be evaluated with {run} ({details})")
            for r in scored:
                if r["method"] == "bicubic" and i > 0:
                    continue  # the wide-field baseline does not depend on the run: take it once
                rows.append({**r, "method": name if r["method"] == "model" else BICUBIC})
        conventional = _conventional_rows(records, wiener=wiener, known=known, resolution=resolution,
                                          progress=progress, failures=result.failures)
        if not conventional:
            details = "; ".join(m for _, m in result.failures[-3:])
            raise DfcanError(f"{data_root}: conventional SIM failed on every record ({details})")
        rows.extend(conventional)
        metric_cols = [*PIXEL_METRICS, *(("resolution_nm",) if resolution else ())]
        order = {n: k for k, n in enumerate([*names, CONVENTIONAL, BICUBIC])}
        result.rows = sorted(
            ({"method": r["method"], "specimen": r["specimen"], "cell": int(r["cell"]), "level": int(r["level"]),
              **{m: _rounded(r[m]) for m in metric_cols}} for r in rows),
            key=lambda r: (order[r["method"]], r["specimen"], r["cell"], r["level"]))
        result.matrix = build_matrix(result.rows, names, rule)
        write_csv(staged / "metrics.csv", result.rows, ["method", "specimen", "cell", "level", *metric_cols],
                  digits=CSV_DIGITS)
        write_csv(staged / "matrix.csv", result.matrix, MATRIX_COLUMNS, digits=CSV_DIGITS)
        plot_matrix(result.matrix, staged / "matrix.png", names, rule)
    result.metrics_path = out_dir / "metrics.csv"
    result.matrix_path = out_dir / "matrix.csv"
    result.plot_path = out_dir / "matrix.png"
    result.seconds = time.perf_counter() - t0
    return result
