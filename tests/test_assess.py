"""dfcan_tf.evaluation.assess: networks vs conventional SIM vs bicubic on a simulated test set, matrix CSV and plot."""

from __future__ import annotations

import argparse
import csv
import hashlib
from pathlib import Path

import keras
import matplotlib.image as mpimg
import numpy as np
import pytest

from dfcan_tf.cli.assess import add_arguments, run_from_args
from dfcan_tf.cli.sim_reconstruct import reconstruct_file
from dfcan_tf.data.biosr import discover
from dfcan_tf.data.simulate import simulate_dataset
from dfcan_tf.errors import DfcanError
from dfcan_tf.evaluation.assess import (
    BICUBIC,
    CONVENTIONAL,
    MATRIX_COLUMNS,
    RULES,
    assess,
    build_matrix,
    in_priority_region,
)
from dfcan_tf.evaluation.metrics import evaluate_pair
from dfcan_tf.nets import registry
from dfcan_tf.nets.dfcan import DFCANConfig
from dfcan_tf.runs import write_run
from dfcan_tf.safety import PART_PREFIX

TINY = {"width": 8, "n_groups": 1, "n_blocks": 1, "size_psc": 16, "reduction": 4}
SPECIMENS = ("CCPs", "Microtubules")
CELLS = (1, 2)
LEVELS = (1, 2, 3)
N_RECORDS = len(SPECIMENS) * len(CELLS) * len(LEVELS)


def _run(path: Path, channels: int, scale: int = 2, seed: int = 7) -> Path:
    keras.utils.set_random_seed(seed)
    cfg = DFCANConfig.dfcan(channels, scale, **TINY)
    return write_run(path, registry.build(cfg), cfg, data={"input_channels": channels, "scale": scale,
                                                   "normalization": "minmax", "pixel_size_nm": 62.6})


def _hashes(*folders: Path) -> dict[str, str]:
    return {str(p): hashlib.sha256(p.read_bytes()).hexdigest()
            for f in folders for p in sorted(f.rglob("*")) if p.is_file()}


def _read_csv(path: Path) -> list[dict[str, str]]:
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


def _parse(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="dfcan assess")
    add_arguments(parser)
    return parser.parse_args(argv)


@pytest.fixture(scope="module")
def dataset(tmp_path_factory):
    root = tmp_path_factory.mktemp("biosr") / "test"
    simulate_dataset(root, specimens=",".join(SPECIMENS), cells="1-2", n_levels=len(LEVELS), size=64, progress=False)
    return root


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    base = tmp_path_factory.mktemp("runs")
    return {"sisr": _run(base / "dfcan_wf", 1), "sim": _run(base / "dfcan_sim", 9),
            "x3": _run(base / "dfcan_x3", 1, 3)}


@pytest.fixture(scope="module")
def assessed(dataset, runs, tmp_path_factory):
    before = _hashes(dataset, runs["sisr"], runs["sim"])
    out = tmp_path_factory.mktemp("assess") / "out"
    args = _parse([str(runs["sisr"]), str(runs["sim"]), str(dataset), "-o", str(out), "--no-progress"])
    assert args.rule == "psnr+ssim"
    status = run_from_args(args)
    assert status == 0
    assert _hashes(dataset, runs["sisr"], runs["sim"]) == before
    return out


def _recompute(metrics: list[dict[str, str]], network: str, specimen: str, level: int) -> dict[str, dict]:
    out: dict[str, dict] = {}
    for method in (network, CONVENTIONAL, BICUBIC):
        rs = [r for r in metrics if (r["method"], r["specimen"], int(r["level"])) == (method, specimen, level)]
        out[method] = {m: float(np.mean([float(r[m]) for r in rs])) for m in ("psnr", "ssim", "nrmse")}
        out[method]["n"] = len(rs)
    return out


def _expected_flag(net: dict, sim: dict, rule: str) -> bool:
    return {"psnr+ssim": net["psnr"] >= sim["psnr"] and net["ssim"] >= sim["ssim"],
            "psnr": net["psnr"] >= sim["psnr"], "ssim": net["ssim"] >= sim["ssim"],
            "nrmse": net["nrmse"] <= sim["nrmse"]}[rule]


def test_metrics_csv_one_row_per_method_and_record(assessed, dataset):
    rows = _read_csv(assessed / "metrics.csv")
    assert list(rows[0]) == ["method", "specimen", "cell", "level", "mse", "nrmse", "psnr", "ssim"]
    assert len(rows) == (2 + 2) * N_RECORDS
    keys = {(r["method"], r["specimen"], int(r["cell"]), int(r["level"])) for r in rows}
    assert keys == {(m, s, c, lv) for m in ("dfcan_wf", "dfcan_sim", CONVENTIONAL, BICUBIC)
                    for s in SPECIMENS for c in CELLS for lv in LEVELS}
    for r in rows:
        assert 0 < float(r["mse"]) < 1 and np.isfinite(float(r["psnr"])) and -1 <= float(r["ssim"]) <= 1
    # Conventional SIM rows are the numbers sim-reconstruct + evaluate_pair give for that record.
    rec = next(r for r in discover(dataset) if (r.specimen, r.cell, r.level) == ("Microtubules", 2, 3))
    image, _, _ = reconstruct_file(rec.raw_path)
    ref = evaluate_pair(image, rec.load()[1])
    row = next(r for r in rows if (r["method"], r["specimen"], r["cell"], r["level"])
               == (CONVENTIONAL, "Microtubules", "2", "3"))
    for m in ("mse", "nrmse", "psnr", "ssim"):
        assert float(row[m]) == pytest.approx(ref[m], rel=1e-6)
    # On simulated data conventional SIM beats an untrained network at the highest level.
    net = next(r for r in rows if (r["method"], r["specimen"], r["cell"], r["level"])
               == ("dfcan_wf", "Microtubules", "2", "3"))
    assert float(row["psnr"]) > float(net["psnr"])
    assert sorted(p.name for p in assessed.iterdir()) == [".dfcan-output.json", "matrix.csv", "matrix.png",
                                                          "metrics.csv"]
    assert not list(assessed.parent.glob(PART_PREFIX + "*"))


def test_matrix_means_and_priority_flag_follow_metrics_csv(assessed):
    metrics = _read_csv(assessed / "metrics.csv")
    matrix = _read_csv(assessed / "matrix.csv")
    assert list(matrix[0]) == list(MATRIX_COLUMNS)
    assert len(matrix) == 2 * len(SPECIMENS) * len(LEVELS)
    assert {(r["network"], r["specimen"], int(r["level"])) for r in matrix} == {
        (n, s, lv) for n in ("dfcan_wf", "dfcan_sim") for s in SPECIMENS for lv in LEVELS}
    for row in matrix:
        ref = _recompute(metrics, row["network"], row["specimen"], int(row["level"]))
        net, sim, bic = ref[row["network"]], ref[CONVENTIONAL], ref[BICUBIC]
        assert int(row["n"]) == len(CELLS) == net["n"] == sim["n"]
        for m in ("psnr", "ssim", "nrmse"):
            assert float(row[f"{m}_network"]) == pytest.approx(net[m], rel=1e-7)
            assert float(row[f"{m}_sim"]) == pytest.approx(sim[m], rel=1e-7)
            assert float(row[f"{m}_bicubic"]) == pytest.approx(bic[m], rel=1e-7)
        assert float(row["psnr_diff"]) == pytest.approx(net["psnr"] - sim["psnr"], abs=1e-6)
        assert row["rule"] == "psnr+ssim"
        assert row["in_priority_region"] == str(_expected_flag(net, sim, "psnr+ssim"))


def test_matrix_png_opens(assessed):
    img = mpimg.imread(assessed / "matrix.png")
    assert img.ndim == 3 and img.shape[0] > 100 and img.shape[1] > 300
    assert img[..., :3].std() > 0.05  # not a blank canvas


def test_rule_flag_changes_only_the_region(assessed, dataset, runs, tmp_path):
    import shutil

    out = tmp_path / "again"
    shutil.copytree(assessed, out)
    # --overwrite replaces a previous assess output; the scores are the same, the region follows the new rule.
    status = run_from_args(_parse([str(runs["sisr"]), str(runs["sim"]), str(dataset), "-o", str(out),
                                   "--no-progress", "--overwrite", "--rule", "psnr"]))
    assert status == 0
    assert (out / "metrics.csv").read_text() == (assessed / "metrics.csv").read_text()
    first, second = _read_csv(assessed / "matrix.csv"), _read_csv(out / "matrix.csv")
    metrics = _read_csv(out / "metrics.csv")
    for a, b in zip(first, second):
        assert {k: v for k, v in a.items() if k not in ("rule", "in_priority_region")} == \
            {k: v for k, v in b.items() if k not in ("rule", "in_priority_region")}
        assert b["rule"] == "psnr"
        ref = _recompute(metrics, b["network"], b["specimen"], int(b["level"]))
        assert b["in_priority_region"] == str(_expected_flag(ref[b["network"]], ref[CONVENTIONAL], "psnr"))
        if a["in_priority_region"] == "True":  # psnr+ssim is stricter than psnr alone
            assert b["in_priority_region"] == "True"
    # Every rule on the file's numbers, through the public function.
    rows = [{**r, "cell": int(r["cell"]), "level": int(r["level"]),
             **{m: float(r[m]) for m in ("mse", "nrmse", "psnr", "ssim")}} for r in metrics]
    for rule in RULES:
        for row in build_matrix(rows, ["dfcan_wf", "dfcan_sim"], rule):
            ref = _recompute(metrics, row["network"], row["specimen"], row["level"])
            assert row["in_priority_region"] == _expected_flag(ref[row["network"]], ref[CONVENTIONAL], rule)


def test_rules_decide_differently_on_designed_numbers():
    # Network better in PSNR and NRMSE, worse in SSIM.
    net, sim = {"psnr": 30.0, "ssim": 0.80, "nrmse": 0.10}, {"psnr": 29.0, "ssim": 0.85, "nrmse": 0.12}
    assert [in_priority_region(net, sim, r) for r in RULES] == [False, True, False, True]
    assert in_priority_region(sim, sim, "psnr+ssim")  # a tie is "at least as good"
    assert not in_priority_region({**net, "psnr": float("nan")}, sim, "psnr")
    with pytest.raises(DfcanError, match="--rule"):
        in_priority_region(net, sim, "lpips")
    # build_matrix pairs cells: a cell only the network scored does not enter the means.
    rows = []
    for cell, (p_net, s_net, p_sim, s_sim) in enumerate([(30, .9, 28, .8), (20, .5, 29, .85), (40, .99, 0, 0)]):
        rows.append({"method": "net", "specimen": "ER", "cell": cell, "level": 1, "psnr": p_net, "ssim": s_net,
                     "nrmse": 0.1})
        if cell < 2:
            rows.append({"method": CONVENTIONAL, "specimen": "ER", "cell": cell, "level": 1, "psnr": p_sim,
                         "ssim": s_sim, "nrmse": 0.1})
    (row,) = build_matrix(rows, ["net"], "psnr")
    assert row["n"] == 2 and row["psnr_network"] == 25 and row["psnr_sim"] == 28.5
    assert row["in_priority_region"] is False and row["psnr_diff"] == -3.5
    assert np.isnan(row["psnr_bicubic"])


def test_refusals_leave_inputs_untouched(assessed, dataset, runs, tmp_path):
    net = [str(runs["sisr"]), str(runs["sim"])]
    before = _hashes(dataset, runs["sisr"], runs["sim"], assessed)
    for out in (dataset, dataset / "Microtubules", dataset.parent, runs["sisr"] / "assess"):
        with pytest.raises(DfcanError, match="input"):
            run_from_args(_parse([*net, str(dataset), "-o", str(out), "--no-progress", "--overwrite"]))
    # A non-empty folder is not replaced without --overwrite, nor an output of another command with it.
    with pytest.raises(DfcanError, match="--overwrite"):
        assess(net, dataset, assessed, progress=False)
    other = tmp_path / "other"
    other.mkdir()
    (other / "notes.txt").write_text("mine")
    with pytest.raises(DfcanError, match="not written by 'dfcan assess'"):
        assess(net, dataset, other, overwrite=True, progress=False)
    assert (other / "notes.txt").read_text() == "mine"
    # Runs that do not fit the data: refused before any work, nothing written.
    with pytest.raises(DfcanError, match=r"super-resolves ×3.*is ×2"):
        assess([runs["sisr"], runs["x3"]], dataset, tmp_path / "x3", progress=False)
    with pytest.raises(DfcanError, match="run folder not found"):
        assess([runs["sisr"], tmp_path / "no_run"], dataset, tmp_path / "o1", progress=False)
    with pytest.raises(DfcanError, match="distinct names"):
        assess([runs["sisr"], runs["sisr"]], dataset, tmp_path / "o2", progress=False)
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(DfcanError, match="no BioSR data"):
        assess([runs["sisr"]], empty, tmp_path / "o3", progress=False)
    with pytest.raises(DfcanError, match="no raw/GT pairs"):
        assess([runs["sisr"]], dataset, tmp_path / "o4", levels="7-9", progress=False)
    with pytest.raises(DfcanError, match="--rule"):
        assess([runs["sisr"]], dataset, tmp_path / "o5", rule="best", progress=False)
    assert not any((tmp_path / n).exists() for n in ("x3", "o1", "o2", "o3", "o4", "o5"))
    assert not list(tmp_path.glob(PART_PREFIX + "*"))
    assert _hashes(dataset, runs["sisr"], runs["sim"], assessed) == before
    with pytest.raises(SystemExit):  # argparse: the rule is one of the documented choices
        _parse([*net, str(dataset), "-o", str(tmp_path / "o6"), "--rule", "lpips"])
