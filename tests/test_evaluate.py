"""dfcan_tf.evaluation.evaluate: every (cell, level) of a simulated BioSR-layout test set, CSV and plots."""

from __future__ import annotations

import csv
from pathlib import Path

import keras
import matplotlib.image as mpimg
import numpy as np
import pytest

from dfcan_tf import cli
from dfcan_tf.data.biosr import discover
from dfcan_tf.data.simulate import simulate_dataset
from dfcan_tf.errors import DfcanError
from dfcan_tf.evaluation.evaluate import METRICS, bicubic_upsample, evaluate_run
from dfcan_tf.evaluation.metrics import evaluate_pair
from dfcan_tf.inference.predict import predict_image
from dfcan_tf.nets import registry
from dfcan_tf.nets.dfcan import DFCANConfig
from dfcan_tf.runs import load_run, write_run

TINY = {"width": 8, "n_groups": 1, "n_blocks": 1, "size_psc": 16, "reduction": 4}


def _run(path: Path, channels: int, scale: int = 2) -> Path:
    keras.utils.set_random_seed(7)
    cfg = DFCANConfig.dfcan(channels, scale, **TINY)
    return write_run(path, registry.build(cfg), cfg, data={"input_channels": channels, "scale": scale,
                                                   "normalization": "minmax", "pixel_size_nm": 62.6})


@pytest.fixture(scope="module")
def dataset(tmp_path_factory):
    root = tmp_path_factory.mktemp("biosr")
    simulate_dataset(root, specimens="Microtubules,ER", cells="36-37", n_levels=3, size=64, progress=False)
    return root


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    base = tmp_path_factory.mktemp("runs")
    return {"sisr": _run(base / "sisr", 1), "sim": _run(base / "sim", 9), "x3": _run(base / "x3", 1, 3)}


def _read_csv(path: Path) -> list[dict[str, str]]:
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


def test_bicubic_upsample_reproduces_a_ramp():
    ramp = np.add.outer(np.arange(20.0), 0.5 * np.arange(16.0)).astype(np.float32)
    up = bicubic_upsample(ramp, 2)
    assert up.shape == (40, 32)
    # Half-pixel centres: output pixel i samples input coordinate (i + 0.5) / 2 - 0.5.
    yy = (np.arange(40) + 0.5) / 2 - 0.5
    xx = (np.arange(32) + 0.5) / 2 - 0.5
    expected = np.add.outer(yy, 0.5 * xx)
    np.testing.assert_allclose(up[4:-4, 4:-4], expected[4:-4, 4:-4], atol=1e-4)  # Keys cubic is exact on lines


def test_evaluate_run_sisr_csv_summary_plots(dataset, runs, tmp_path):
    out = tmp_path / "eval"
    result = evaluate_run(runs["sisr"], dataset, out, save_predictions=True, progress=False)
    assert result.ok
    rows = _read_csv(out / "metrics.csv")
    assert list(rows[0]) == ["specimen", "cell", "level", "method", *METRICS]
    keys = {(r["specimen"], int(r["cell"]), int(r["level"]), r["method"]) for r in rows}
    assert keys == {(s, c, lv, m) for s in ("ER", "Microtubules") for c in (36, 37) for lv in (1, 2, 3)
                    for m in ("model", "bicubic")}
    # The CSV holds the numbers dfcan_tf.evaluation.metrics gives for the same prediction.
    rec = next(r for r in discover(dataset) if r.specimen == "ER" and r.cell == 37 and r.level == 2)
    raw, gt = rec.load()
    pred = predict_image(load_run(runs["sisr"]).model, raw.sum(0), scale=2)
    ref = evaluate_pair(pred, gt)
    row = next(r for r in rows if (r["specimen"], r["cell"], r["level"], r["method"]) == ("ER", "37", "2", "model"))
    for m in ("mse", "nrmse", "psnr", "ssim"):
        assert float(row[m]) == pytest.approx(ref[m], rel=1e-4)
    assert row["ms_ssim"] == "nan"  # 128-px GT is below MS-SSIM's 176-px minimum
    bic = next(r for r in rows if (r["specimen"], r["cell"], r["level"], r["method"]) == ("ER", "37", "2", "bicubic"))
    wf = raw.sum(0)
    assert float(bic["psnr"]) == pytest.approx(
        evaluate_pair(bicubic_upsample((wf - wf.min()) / (wf.max() - wf.min()), 2), gt)["psnr"], rel=1e-4)
    # Resolution in nm: the model's on the 31.3 nm SR grid, the baseline's on the 62.6 nm wide-field grid,
    # each at least its Nyquist limit.
    for r in rows:
        assert float(r["resolution_nm"]) >= (2 * 31.3 if r["method"] == "model" else 2 * 62.6) - 1e-6
    summary = _read_csv(out / "summary.csv")
    assert len(summary) == 2 * 3 * 2 and {int(r["n"]) for r in summary} == {2}
    assert _read_csv(out / "missing.csv") == []  # complete data set: header only
    for name in ("ER.png", "Microtubules.png"):
        img = mpimg.imread(out / name)
        assert img.ndim == 3 and img.shape[0] > 200 and img.shape[1] > 600
    assert len(list((out / "predictions" / "ER").glob("Cell_03*_level_0*.tif"))) == 6
    assert not list(out.rglob("*.part*"))


def test_evaluate_sim_model_and_cli(dataset, runs, tmp_path, capsys):
    status = cli.main(["evaluate", str(runs["sim"]), str(dataset), "-o", str(tmp_path / "o"), "--no-progress",
                       "--specimens", "Microtubules", "--cells", "36", "--levels", "1-2", "--no-resolution"])
    captured = capsys.readouterr()
    assert status == 0, captured.err
    rows = _read_csv(tmp_path / "o" / "metrics.csv")
    assert len(rows) == 4 and all(r["resolution_nm"] == "nan" for r in rows)
    assert "Microtubules: psnr" in captured.out and str(tmp_path / "o" / "metrics.csv") in captured.out


def test_evaluate_reports_bad_records_and_mismatched_runs(dataset, runs, tmp_path, capsys):
    import shutil

    data = tmp_path / "data"
    shutil.copytree(dataset / "Microtubules", data / "Microtubules")
    bad = data / "Microtubules" / "Cell_036" / "RawSIMData_level_02.mrc"
    bad.write_bytes(bad.read_bytes()[:-100])  # truncated file
    status = cli.main(["evaluate", str(runs["sisr"]), str(data), "-o", str(tmp_path / "o"), "--no-progress"])
    err = capsys.readouterr().err
    assert status == 1
    assert f"{bad}: truncated" in err
    rows = _read_csv(tmp_path / "o" / "metrics.csv")
    assert len(rows) == 2 * (2 * 3 - 1)  # every other record is there
    # A ×3 model on ×2 data: every record fails, nothing is written.
    status = cli.main(["evaluate", str(runs["x3"]), str(dataset), "-o", str(tmp_path / "o3"), "--no-progress"])
    err = capsys.readouterr().err
    assert status == 2 and "the run's scale is 3" in err
    assert not (tmp_path / "o3").exists()
    with pytest.raises(DfcanError, match="no such folder"):
        evaluate_run(runs["sisr"], tmp_path / "nowhere", tmp_path / "o4", progress=False)
