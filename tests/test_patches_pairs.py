"""Own registered pairs (``dfcan patches --pairs / --pairs-csv``), their checks, and training on the result."""

from __future__ import annotations

import argparse
import hashlib
import json
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import tifffile

from dfcan_tf.cli import main
from dfcan_tf.data.simulate import simulate_cell
from dfcan_tf.data.tiff import read_tiff, write_tiff

N, S, PATCH = 48, 2, 16  # WF side, scale, input patch side
PX = 62.6  # WF pixel size (nm); the GT's is PX / S
FAST = ["--patch-size", str(PATCH), "--n-train", "12", "--n-val", "4", "--no-progress"]


def _cell(seed: int) -> tuple[np.ndarray, np.ndarray]:
    c = simulate_cell("Microtubules", size=N, levels=1, seed=seed)
    return c.wf_clean / c.wf_clean.max(), c.gt_clean / c.gt_clean.max()


def _write_pairs(root: Path) -> Path:
    """wf/ and gt/ holding a.tif, b.tif (float32 GT) and c.tif (a 2-frame stack in both), calibrated."""
    cells = [_cell(k) for k in (1, 2, 3, 4)]
    wf, gt = root / "wf", root / "gt"
    write_tiff(wf / "a.tif", cells[0][0], pixel_size_nm=PX)
    write_tiff(gt / "a.tif", cells[0][1], pixel_size_nm=PX / S)
    write_tiff(wf / "b.tif", cells[1][0], pixel_size_nm=PX)
    write_tiff(gt / "b.tif", cells[1][1].astype(np.float32), pixel_size_nm=PX / S, dtype="float32")
    write_tiff(wf / "c.tif", np.stack([cells[2][0], cells[3][0]]), pixel_size_nm=PX)
    write_tiff(gt / "c.tif", np.stack([cells[2][1], cells[3][1]]), pixel_size_nm=PX / S)
    (wf / "notes.txt").write_text("not an image: ignored")
    return root


def _hashes(folder: Path) -> dict[str, str]:
    return {str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(folder.rglob("*")) if p.is_file()}


@pytest.fixture(scope="module")
def pairs(tmp_path_factory) -> Path:
    return _write_pairs(tmp_path_factory.mktemp("pairs"))


@pytest.fixture(scope="module")
def cut(pairs, tmp_path_factory):
    """`dfcan patches --pairs` with rotation and flips, and the inputs' hashes before it."""
    before = _hashes(pairs)
    out = tmp_path_factory.mktemp("cut") / "patches"
    code = main(["patches", "--pairs", str(pairs / "wf"), str(pairs / "gt"), "-o", str(out), *FAST])
    return out, code, before


def test_pairs_cut_into_the_biosr_layout(pairs, cut):
    out, code, before = cut
    assert code == 0
    assert _hashes(pairs) == before  # inputs byte-identical
    m = json.loads((out / "patches.json").read_text())
    assert (m["source"], m["scale"], m["patch_size"], m["frames"]) == ("pairs", S, PATCH, 1)
    assert m["pixel_size_nm"] == pytest.approx(PX, rel=1e-6)
    # Three pairs: the first (a.tif) validates, b and c train; frames of c stay in one split.
    assert m["cells"] == {"training": [2, 3], "validate": [1]}
    assert [(p["name"], p["frames"]) for p in m["pairs"]] == [("a.tif", 1), ("b.tif", 1), ("c.tif", 2)]
    for split, n, names in (("training", 12, {"b.tif", "c.tif"}), ("validate", 4, {"a.tif"})):
        entries = [p for p in m["patches"] if p["split"] == split]
        assert len(entries) == n and {p["pair"] for p in entries} == names
        assert len(list((out / f"{split}_wf").glob("*.tif"))) == n
        assert len(list((out / f"{split}_gt").glob("*.tif"))) == n
        assert len(list((out / split).iterdir())) == n
    assert {p["frame"] for p in m["patches"] if p["pair"] == "c.tif"} <= {0, 1}
    assert [p["flip"] for p in m["patches"][:4]] == ["none", "ud", "lr", "both"]
    wf, wf_meta = read_tiff(out / "training_wf" / "000001.tif")
    gt, gt_meta = read_tiff(out / "training_gt" / "000001.tif")
    frame = tifffile.imread(out / "training" / "000001" / "01.tif")
    assert wf.shape == (PATCH, PATCH) and gt.shape == (S * PATCH, S * PATCH) and wf.dtype == np.uint16
    assert np.array_equal(frame, wf)  # one WF frame: the "raw frames" folder holds the same image
    assert wf_meta["pixel_size_nm"] == pytest.approx(PX, rel=1e-4)
    assert gt_meta["pixel_size_nm"] == pytest.approx(PX / S, rel=1e-4)
    assert (wf.min(), wf.max(), gt.min(), gt.max()) == (0, 65535, 0, 65535)  # per-patch min-max


def _uint16_minmax(a: np.ndarray) -> np.ndarray:
    a = a.astype(np.float64)
    return np.round((a - a.min()) / (a.max() - a.min()) * 65535)


def test_csv_pairs_are_cut_where_the_manifest_says(pairs, tmp_path):
    """CSV rows relative to the CSV's folder; unrotated crops equal the source images' crops."""
    csv = tmp_path / "list" / "pairs.csv"
    csv.parent.mkdir()
    shutil.copytree(pairs, tmp_path / "list" / "data")
    csv.write_text("wf,gt,comment\ndata/wf/c.tif,data/gt/c.tif,stack\ndata/wf/a.tif,data/gt/a.tif,\n"
                   "data/wf/b.tif,data/gt/b.tif,float GT\n")
    before = _hashes(tmp_path / "list")
    out = tmp_path / "out"
    assert main(["patches", "--pairs-csv", str(csv), "-o", str(out), "--val-cells", "3", "--no-rotate",
                 "--no-flips", *FAST]) == 0
    assert _hashes(tmp_path / "list") == before
    m = json.loads((out / "patches.json").read_text())
    assert m["pairs_csv"] == str(csv) and [p["name"] for p in m["pairs"]] == ["data/wf/c.tif", "data/wf/a.tif",
                                                                             "data/wf/b.tif"]
    assert m["cells"] == {"training": [1, 2], "validate": [3]}  # numbered in row order
    assert {p["pair"] for p in m["patches"] if p["split"] == "validate"} == {"data/wf/b.tif"}
    for p in m["patches"]:
        wf_src = tifffile.imread(p["wf"]).reshape(-1, N, N)[p["frame"]]
        gt_src = tifffile.imread(p["gt"]).reshape(-1, S * N, S * N)[p["frame"]]
        y0, x0 = p["centre"][0] - PATCH // 2, p["centre"][1] - PATCH // 2
        want_wf = _uint16_minmax(wf_src[y0:y0 + PATCH, x0:x0 + PATCH])
        want_gt = _uint16_minmax(gt_src[S * y0:S * (y0 + PATCH), S * x0:S * (x0 + PATCH)])
        got_wf = tifffile.imread(out / f"{p['split']}_wf" / f"{p['name']}.tif").astype(np.float64)
        got_gt = tifffile.imread(out / f"{p['split']}_gt" / f"{p['name']}.tif").astype(np.float64)
        assert np.abs(got_wf - want_wf).max() <= 1 and np.abs(got_gt - want_gt).max() <= 1
    # One pair and no validation patches: a training-only folder.
    one = tmp_path / "list" / "one.csv"
    one.write_text("WF,GT\ndata/wf/a.tif,data/gt/a.tif\n")
    assert main(["patches", "--pairs-csv", str(one), "-o", str(tmp_path / "one"), "--n-train", "4", "--n-val", "0",
                 "--patch-size", str(PATCH), "--no-progress"]) == 0
    m = json.loads((tmp_path / "one" / "patches.json").read_text())
    assert m["cells"] == {"training": [1], "validate": []} and len(m["patches"]) == 4
    assert not list((tmp_path / "one" / "validate_wf").iterdir())


def _spoil(root: Path, case: str) -> str:
    """Break a copy of the pairs; return the file name the error must name."""
    wf, gt = root / "wf", root / "gt"
    g = tifffile.imread(gt / "b.tif")
    if case == "ratio":
        write_tiff(gt / "b.tif", g[:, :90], pixel_size_nm=PX / S, dtype="float32")
        return "gt/b.tif"
    if case == "scale":
        write_tiff(gt / "b.tif", np.kron(tifffile.imread(wf / "b.tif"), np.ones((3, 3))), pixel_size_nm=PX / 3)
        return "gt/b.tif"
    if case == "pixel":  # GT calibrated like its WF: ratio 1, scale 2
        write_tiff(gt / "b.tif", g, pixel_size_nm=PX, dtype="float32")
        return "gt/b.tif"
    if case == "pixel_between_pairs":
        write_tiff(wf / "b.tif", tifffile.imread(wf / "b.tif"), pixel_size_nm=100.0)
        write_tiff(gt / "b.tif", g, pixel_size_nm=50.0, dtype="float32")
        return "wf/b.tif"
    if case == "frames":
        write_tiff(gt / "c.tif", tifffile.imread(gt / "c.tif")[0], pixel_size_nm=PX / S)
        return "gt/c.tif"
    if case == "unmatched":
        shutil.copy(wf / "a.tif", wf / "d.tif")
        (gt / "a.tif").rename(gt / "A.tif")
        return "wf/d.tif"
    raise AssertionError(case)


@pytest.mark.parametrize("case,message", [
    ("ratio", "is not the same integer multiple"), ("scale", "same scale"), ("pixel", "ratio 1, but the GT is 2×"),
    ("pixel_between_pairs", "differs by 60%"), ("frames", "same number of frames"), ("unmatched", "unmatched files"),
])
def test_bad_pairs_are_refused_and_untouched(pairs, tmp_path, capsys, case, message):
    root = tmp_path / "data"
    shutil.copytree(pairs, root)
    named = _spoil(root, case)
    before = _hashes(root)
    out = tmp_path / "out"
    assert main(["patches", "--pairs", str(root / "wf"), str(root / "gt"), "-o", str(out), *FAST]) == 2
    err = capsys.readouterr().err
    assert err.startswith("dfcan patches: error: ") and "Traceback" not in err
    assert str(root / named) in err and message in err, err
    if case == "unmatched":
        assert str(root / "wf" / "a.tif") in err and str(root / "gt" / "A.tif") in err
    assert _hashes(root) == before and not out.exists()
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]  # no staged leftovers


def test_source_and_output_flags_are_checked(pairs, tmp_path, capsys):
    wf, gt = str(pairs / "wf"), str(pairs / "gt")
    bad_csv = tmp_path / "p.csv"
    bad_csv.write_text("input,target\na.tif,a.tif\n")
    missing = tmp_path / "m.csv"
    missing.write_text(f"wf,gt\n{pairs}/wf/a.tif,{pairs}/gt/a.tif\n{pairs}/wf/b.tif,{pairs}/gt/zz.tif\n")
    for argv, message in (
        (["--pairs", wf, gt], "no output folder"),
        (["--pairs", wf, gt, str(tmp_path / "o")], "with --pairs or --pairs-csv give the output folder as -o"),
        (["--pairs", wf, gt, "--pairs-csv", str(bad_csv), "-o", str(tmp_path / "o")], "give one data source"),
        (["--pairs-csv", str(bad_csv), "-o", str(tmp_path / "o")], "must name the columns wf and gt"),
        (["--pairs", wf, wf, "-o", str(tmp_path / "o")], "the same folder"),
        (["--pairs", wf, gt, "-o", str(pairs / "wf" / "out")], "inside the input folder"),
        (["--pairs", wf, gt, "-o", str(tmp_path / "o"), "--specimens", "ER"], "--specimens selects BioSR"),
        (["--pairs", wf, gt, "-o", str(tmp_path / "o"), "--scale", "3"], f"{gt}/a.tif: GT is 2× its WF"),
        (["--pairs-csv", str(missing), "-o", str(tmp_path / "o")], f"{gt}/zz.tif: no such file"),
    ):
        assert main(["patches", *argv, *FAST]) == 2
        err = capsys.readouterr().err
        assert message in err and "Traceback" not in err, (argv, err)
    assert not (tmp_path / "o").exists() and not (pairs / "wf" / "out").exists()


def _train_args(data: Path, run: Path, *extra: str) -> list[str]:
    return ["train", "--data", str(data), "--run", str(run), "--width", "8", "--n-groups", "1", "--n-blocks", "1",
            "--size-psc", "16", "--reduction", "4", "--batch-size", "2", "--steps", "2", "--validate-every", "2",
            "--no-progress", *extra]


def test_folder_settings_decide_patch_and_pixel_size(cut):
    import dfcan_tf.cli.train as cli_train

    out = cut[0]
    parser = argparse.ArgumentParser()
    cli_train.add_arguments(parser)
    settings, notes = cli_train.folder_settings(parser.parse_args(["--data", str(out), "--run", "r"]))
    assert settings["patch_size"] == PATCH and settings["pixel_size_nm"] == pytest.approx(PX)
    assert len(notes) == 2 and "patches.json" in notes[0]
    settings, notes = cli_train.folder_settings(parser.parse_args(
        ["--data", str(out), "--run", "r", "--patch-size", "12", "--pixel-size-nm", "65"]))
    assert settings == {"patch_size": 12, "pixel_size_nm": 65.0}  # harmless: crops, within 10 %
    assert notes == [f"training on random 12-px crops of the {PATCH}-px patches of {out}"]


def test_train_infers_patch_and_pixel_size_and_predict_uses_them(cut, tmp_path, capsys):
    out = cut[0]
    assert main(_train_args(out, tmp_path / "big", "--patch-size", "32")) == 2
    assert f"--patch-size 32 is larger than the {PATCH}-px patches" in capsys.readouterr().err
    assert main(_train_args(out, tmp_path / "px", "--pixel-size-nm", "100")) == 2
    assert "--pixel-size-nm 100 differs by 60%" in capsys.readouterr().err
    assert not (tmp_path / "big").exists() and not (tmp_path / "px").exists()

    run = tmp_path / "run"
    assert main(_train_args(out, run)) == 0, capsys.readouterr().err
    assert "patch size 16 px (from" in capsys.readouterr().err
    doc = json.loads((run / "config.json").read_text())
    assert doc["train"]["patch_size"] == PATCH and doc["model"]["scale"] == S
    assert doc["data"]["pixel_size_nm"] == pytest.approx(PX)
    # Prediction on an uncalibrated image takes the run's pixel size: the output is calibrated at PX / S.
    img = tmp_path / "img" / "x.tif"
    img.parent.mkdir()
    tifffile.imwrite(img, (_cell(9)[0] * 4000).astype(np.uint16))
    assert main(["predict", str(run), str(img), "-o", str(tmp_path / "pred"), "--no-progress"]) == 0
    err = capsys.readouterr().err
    assert f"pixel size {PX:g} nm (from the run; file has none)" in err
    sr, meta = read_tiff(tmp_path / "pred" / "x.tif")
    assert sr.shape == (S * N, S * N) and meta["pixel_size_nm"] == pytest.approx(PX / S, rel=1e-4)


def test_train_help_and_refused_flags_import_no_tensorflow(cut, tmp_path):
    """`dfcan train --help` stays light, and a flag contradicting the folder is refused before TensorFlow loads."""
    refused = _train_args(cut[0], tmp_path / "run", "--patch-size", "32")
    code = ("import sys\nfrom dfcan_tf.cli import main\ntry:\n    main(['train', '--help'])\nexcept SystemExit as e:\n"
            "    code = e.code\nprint('RESULT', code, 'tensorflow' in sys.modules, 'keras' in sys.modules)\n"
            f"print('REFUSED', main({refused!r}), 'tensorflow' in sys.modules)")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    lines = proc.stdout.strip().splitlines()
    assert lines[-2].split() == ["RESULT", "0", "False", "False"]
    assert lines[-1].split() == ["REFUSED", "2", "False"] and "--patch-size 32 is larger" in proc.stderr
    assert "--pixel-size-nm" in proc.stdout and "patches.json" in proc.stdout
    assert not (tmp_path / "run").exists()


def test_biosr_path_records_the_same_facts(tmp_path):
    """The BioSR path goes through the same cutter and records source, scale, patch size and the MRC pixel size."""
    import dfcan_tf.cli.train as cli_train
    from dfcan_tf.data.files import write_mrc

    for cell in (1, 2):
        c = simulate_cell("Microtubules", size=N, levels=1, seed=cell)
        d = tmp_path / "biosr" / "Microtubules" / f"Cell_{cell:03d}"
        write_mrc(d / "RawSIMData_level_01.mrc", c.clean_frames / c.clean_frames.max() * 3e4, pixel_size_nm=65.0)
        write_mrc(d / "SIM_gt.mrc", c.gt_clean / c.gt_clean.max() * 3e4, pixel_size_nm=32.5)
    out = tmp_path / "out"
    assert main(["patches", str(tmp_path / "biosr"), "-o", str(out), "--n-train", "4", "--n-val", "4",
                 "--patch-size", str(PATCH), "--no-progress"]) == 0
    m = json.loads((out / "patches.json").read_text())
    assert (m["source"], m["scale"], m["patch_size"], m["frames"]) == ("biosr", S, PATCH, 9)
    assert m["pixel_size_nm"] == pytest.approx(65.0, rel=1e-5) and m["cells"] == {"training": [2], "validate": [1]}
    assert len(list((out / "training" / "000001").glob("*.tif"))) == 9
    parser = argparse.ArgumentParser()
    cli_train.add_arguments(parser)
    settings, _ = cli_train.folder_settings(parser.parse_args(["--data", str(out), "--run", "r"]))
    assert settings["patch_size"] == PATCH and settings["pixel_size_nm"] == pytest.approx(65.0, rel=1e-5)
