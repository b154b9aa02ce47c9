"""Patch pairs (REFERENCE §5): alignment, foreground, split by cells, layout, errors, CLI."""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import time
from pathlib import Path

import numpy as np
import pytest
import tifffile
from scipy.ndimage import gaussian_filter

from dfcan_tf.cli import main
from dfcan_tf.data.files import write_mrc
from dfcan_tf.data.patches import crop_pair, foreground_mask, make_patches, minmax
from dfcan_tf.data.simulate import simulate_cell
from dfcan_tf.errors import DfcanError
from dfcan_tf.safety import MARKER, PART_PREFIX, read_marker

SIZE, PATCH = 64, 32


def _write_cell(d: Path, frames: np.ndarray, gt: np.ndarray, levels=(1, 2)) -> None:
    for lev in levels:
        write_mrc(d / f"RawSIMData_level_{lev:02d}.mrc", frames / frames.max() * 30000, pixel_size_nm=62.6)
    write_mrc(d / "SIM_gt.mrc", gt / gt.max() * 30000, pixel_size_nm=31.3)


@pytest.fixture(scope="module")
def clean_root(tmp_path_factory):
    """BioSR layout holding noise-free simulated frames and GT (alignment is then exact to test)."""
    root = tmp_path_factory.mktemp("clean")
    for sp in ("CCPs", "Microtubules", "ER", "F-actin"):
        for cell in (1, 2, 3):
            c = simulate_cell(sp, size=SIZE, n_levels=1, seed=cell)
            _write_cell(root / sp / f"Cell_{cell:03d}", c.clean_frames, c.gt_clean)
    return root


@pytest.fixture(scope="module")
def patches(clean_root):
    out = clean_root.parent / "patches"
    manifest = make_patches(clean_root, out, patch_size=PATCH, n_train=120, n_val=24, seed=3, progress=False)
    return out, manifest


def _corr(a: np.ndarray, b: np.ndarray) -> float:
    a, b = a - a.mean(), b - b.mean()
    return float((a * b).sum() / np.sqrt((a * a).sum() * (b * b).sum()))


def _read(out: Path, split: str, name: str):
    wf = tifffile.imread(out / f"{split}_wf" / f"{name}.tif").astype(np.float64) / 65535
    gt = tifffile.imread(out / f"{split}_gt" / f"{name}.tif").astype(np.float64) / 65535
    frames = np.stack([tifffile.imread(p) for p in sorted((out / split / name).glob("*.tif"))]) / 65535
    return frames, wf, gt


def test_layout_counts_and_split_by_cells(patches):
    out, m = patches
    for split, n in (("training", 120), ("validate", 24)):
        assert len(list((out / f"{split}_wf").glob("*.tif"))) == n
        assert len(list((out / f"{split}_gt").glob("*.tif"))) == n
        assert len([p for p in (out / split).iterdir() if p.is_dir()]) == n
        assert sum(p["split"] == split for p in m["patches"]) == n
    # 3 cells: the first validates, the others train; no cell in both
    assert m["cells"] == {"training": [2, 3], "validate": [1]}
    assert {p["cell"] for p in m["patches"] if p["split"] == "validate"} == {1}
    assert {p["cell"] for p in m["patches"] if p["split"] == "training"} == {2, 3}
    assert json.loads((out / "patches.json").read_text())["scale"] == 2
    frames, wf, gt = _read(out, "training", "000001")
    assert frames.shape == (9, PATCH, PATCH) and wf.shape == (PATCH, PATCH) and gt.shape == (2 * PATCH, 2 * PATCH)
    assert tifffile.imread(out / "training_wf" / "000001.tif").dtype == np.uint16
    # rotations are random whole degrees; flips come as 4 copies per crop
    angles = {p["angle"] for p in m["patches"]}
    assert len(angles) > 5 and all(float(a).is_integer() for a in angles)
    assert [p["flip"] for p in m["patches"][:4]] == ["none", "ud", "lr", "both"]


def test_wf_is_the_normalised_sum_of_the_frames(patches):
    out, m = patches
    for p in m["patches"][:20]:
        frames, wf, gt = _read(out, p["split"], p["name"])
        for arr in (frames, wf, gt):
            assert arr.min() == 0.0 and arr.max() == 1.0  # per-patch min-max
        np.testing.assert_allclose(wf, minmax(frames.sum(axis=0)), atol=2e-4)


def test_input_gt_alignment(patches):
    """GT downsampled (2×2 mean) and blurred to WF resolution matches WF, best at zero shift.

    σ 1.2 raw px is the quadrature difference of the WF and GT-SIM PSF widths.
    """
    out, m = patches
    corrs, best_at_zero = [], 0
    for p in m["patches"]:
        _, wf, gt = _read(out, p["split"], p["name"])
        down = gaussian_filter(gt.reshape(PATCH, 2, PATCH, 2).mean(axis=(1, 3)), 1.2)
        corrs.append(_corr(down, wf))
        shifted = {(dy, dx): _corr(np.roll(down, (dy, dx), axis=(0, 1))[2:-2, 2:-2], wf[2:-2, 2:-2])
                   for dy in (-1, 0, 1) for dx in (-1, 0, 1)}
        best_at_zero += max(shifted, key=shifted.get) == (0, 0)
    assert min(corrs) > 0.9, min(corrs)
    assert np.mean(corrs) > 0.95
    assert best_at_zero >= 0.9 * len(m["patches"])


@pytest.mark.parametrize("s", [2, 3])
def test_rotated_crop_keeps_alignment_on_a_point(s):
    """A bright spot lands on matching raw and GT positions for any angle."""
    yy, xx = np.mgrid[0:40, 0:40]
    raw = np.exp(-((yy - 23.3) ** 2 + (xx - 17.6) ** 2) / (2 * 1.5**2))[None]
    gyy, gxx = np.mgrid[0 : 40 * s, 0 : 40 * s]
    # raw pixel m sits on GT pixel s·m
    gt = np.exp(-((gyy - s * 23.3) ** 2 + (gxx - s * 17.6) ** 2) / (2 * (1.5 * s) ** 2))
    for angle in (0, 17, 90, 211):
        r, g = crop_pair(raw, gt, (20, 20), 16, s, angle)
        ry, rx = np.unravel_index(np.argmax(r[0]), r[0].shape)
        gy, gx = np.unravel_index(np.argmax(g), g.shape)
        # centroid of the bilinear footprint, compared on the GT grid
        yy, xx = np.mgrid[0:16, 0:16]
        cy, cx = (r[0] * yy).sum() / r[0].sum(), (r[0] * xx).sum() / r[0].sum()
        gyy, gxx = np.mgrid[0 : 16 * s, 0 : 16 * s]
        gcy, gcx = (g * gyy).sum() / g.sum(), (g * gxx).sum() / g.sum()
        assert abs(s * cy - gcy) < 0.03 * s and abs(s * cx - gcx) < 0.03 * s, (angle, cy, cx, gcy, gcx)
        assert (ry, rx) != (0, 0) and (gy, gx) != (0, 0)


def test_no_patch_is_empty_background(tmp_path):
    """Structure only in one corner of a noise-free GT: every GT patch must contain some of it."""
    rng = np.random.default_rng(0)
    gt = np.zeros((2 * SIZE, 2 * SIZE))
    ys, xs = rng.integers(6, 50, size=(2, 60))
    gt[ys, xs] = 1.0  # points in the top-left 50×50 GT pixels only
    gt = gaussian_filter(gt, 1.0)
    frames = np.repeat(gaussian_filter(gt.reshape(SIZE, 2, SIZE, 2).mean(axis=(1, 3)), 1.2)[None], 9, axis=0)
    for cell in (1, 2):
        _write_cell(tmp_path / "data" / "CCPs" / f"Cell_{cell:03d}", frames + 1e-3, gt)
    m = make_patches(tmp_path / "data", tmp_path / "out", patch_size=16, n_train=40, n_val=8, seed=1,
                     progress=False)
    for p in m["patches"]:
        g = tifffile.imread(tmp_path / "out" / f"{p['split']}_gt" / f"{p['name']}.tif")
        assert g.max() == 65535 and g.min() == 0, p  # an all-background patch would be constant
        assert p["centre"][0] < 30 and p["centre"][1] < 30  # centred on the structure (raw px)
    mask, thr = foreground_mask(gt, 2)
    assert mask[:25, :25].sum() > 0 and mask[35:, 35:].sum() == 0 and thr == pytest.approx(1e-2)


def test_recipe_split_for_many_cells():
    from dfcan_tf.data.patches import _split_cells

    train, val = _split_cells(list(range(1, 51)), None, None)
    assert val == [1, 2, 3, 4, 5] and train == list(range(6, 36))
    assert _split_cells([1, 2, 3, 4], "4", None) == ([1, 2, 3], [4])
    with pytest.raises(DfcanError, match="both"):
        _split_cells([1, 2, 3], "1-2", "2-3")


def test_bad_inputs_raise_and_write_nothing(tmp_path, clean_root):
    out = tmp_path / "out"
    cases = [
        (dict(data_root=tmp_path / "missing"), "no such folder"),
        (dict(patch_size=60), "patch_size 60 needs images"),
        (dict(scale=3, specimens=["CCPs"]), "do not have scale 3"),
        (dict(val_cells="1-3"), "no cells left for training"),
        (dict(n_train=0), "n_train"),
    ]
    for kwargs, words in cases:
        args = dict(data_root=clean_root, patch_size=PATCH, n_train=8, n_val=4, progress=False) | kwargs
        with pytest.raises(DfcanError, match=words):
            make_patches(args.pop("data_root"), out, **args)
        assert not out.exists()
        assert not [p for p in tmp_path.iterdir() if p.name.startswith(".part")]  # no temp left behind
    # a corrupt file mid-way: the error names it, nothing appears
    bad = tmp_path / "bad"
    _write_cell(bad / "CCPs" / "Cell_001", np.ones((9, SIZE, SIZE)), np.ones((2 * SIZE, 2 * SIZE)))
    _write_cell(bad / "CCPs" / "Cell_002", np.ones((9, SIZE, SIZE)), np.ones((2 * SIZE, 2 * SIZE)))
    victim = bad / "CCPs" / "Cell_002" / "RawSIMData_level_02.mrc"
    victim.write_bytes(victim.read_bytes()[:-100])
    with pytest.raises(DfcanError, match="truncated"):
        make_patches(bad, out, patch_size=PATCH, n_train=8, n_val=4, progress=False)
    assert not out.exists()


def test_cli_patches(tmp_path, clean_root):
    out = tmp_path / "p"
    argv = ["patches", str(clean_root), str(out), "--patch-size", "16", "--n-train", "8", "--n-val", "4",
            "--specimens", "ER,CCPs", "--no-rotate", "--no-progress"]
    assert main(argv) == 0
    m = json.loads((out / "patches.json").read_text())
    assert {p["specimen"] for p in m["patches"]} <= {"ER", "CCPs"} and all(p["angle"] == 0 for p in m["patches"])
    assert main(argv) == 2  # exists
    assert main([*argv, "--overwrite"]) == 0
    assert main(["patches", str(clean_root), str(tmp_path / "q"), "--patch-size", "100", "--no-progress"]) == 2
    assert not (tmp_path / "q").exists()


# ----------------------------------------------------------------- the user's files are never destroyed
FAST = ["--patch-size", "16", "--n-train", "4", "--n-val", "4", "--specimens", "CCPs", "--no-rotate",
        "--no-progress"]


def _hashes(folder: Path) -> dict[str, str]:
    """Relative path -> SHA-256 of every file under ``folder``."""
    return {str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(folder.rglob("*")) if p.is_file()}


@pytest.fixture
def data_copy(tmp_path, clean_root):
    """A private copy of the BioSR data (two specimens), at tmp/parent/data."""
    data = tmp_path / "parent" / "data"
    for sp in ("CCPs", "ER"):
        shutil.copytree(clean_root / sp, data / sp)
    return data


@pytest.mark.parametrize("where", ["same", "parent", "inside"])
def test_output_never_is_holds_or_lies_in_the_data(data_copy, where, capsys):
    """`dfcan patches DATA DATA --overwrite` used to delete every input MRC; now refused, data untouched."""
    out = {"same": data_copy, "parent": data_copy.parent, "inside": data_copy / "patches"}[where]
    before = _hashes(data_copy.parent)
    assert main(["patches", str(data_copy), str(out), "--overwrite", *FAST]) == 2
    err = capsys.readouterr().err
    assert err.startswith("dfcan patches: error: ") and "Traceback" not in err
    assert str(out) in err and "input" in err
    assert _hashes(data_copy.parent) == before  # byte-identical, nothing added or removed
    assert not (data_copy / "patches").exists()


def test_overwrite_replaces_only_a_marked_patches_folder(data_copy, tmp_path, capsys):
    foreign = tmp_path / "results"
    (foreign / "sub").mkdir(parents=True)
    (foreign / "thesis.docx").write_bytes(b"years of work")
    (foreign / "sub" / "notes.txt").write_text("keep me")
    before = _hashes(foreign)
    for extra in ([], ["--overwrite"]):
        assert main(["patches", str(data_copy), str(foreign), *extra, *FAST]) == 2
        err = capsys.readouterr().err
        assert str(foreign) in err and "Traceback" not in err
        assert _hashes(foreign) == before
    assert "not written by 'dfcan patches'" in err
    # a folder marked by another command is not ours either
    other = tmp_path / "pred"
    other.mkdir()
    (other / "a.tif").write_bytes(b"x")
    (other / MARKER).write_text(json.dumps({"command": "predict"}))
    assert main(["patches", str(data_copy), str(other), "--overwrite", *FAST]) == 2
    assert "dfcan predict" in capsys.readouterr().err and (other / "a.tif").read_bytes() == b"x"

    # our own output: marked on success, refused without --overwrite, replaced with it
    out = tmp_path / "p"
    assert main(["patches", str(data_copy), str(out), *FAST]) == 0
    assert read_marker(out)["command"] == "patches"
    first = _hashes(out)
    assert main(["patches", str(data_copy), str(out), *FAST]) == 2
    assert "--overwrite" in capsys.readouterr().err and _hashes(out) == first
    assert main(["patches", str(data_copy), str(out), "--overwrite", "--seed", "9", *FAST]) == 0
    assert read_marker(out)["command"] == "patches" and _hashes(out) != first
    assert json.loads((out / "patches.json").read_text())["seed"] == 9
    # an empty folder is filled (and kept)
    empty = tmp_path / "empty"
    empty.mkdir()
    assert main(["patches", str(data_copy), str(empty), *FAST]) == 0
    assert (empty / "patches.json").is_file() and read_marker(empty)["command"] == "patches"
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".part")]


def test_stale_parts_of_a_killed_run_are_cleaned(data_copy, tmp_path):
    stale = tmp_path / (PART_PREFIX + "p-abc123")
    (stale / "training").mkdir(parents=True)
    (stale / "training" / "x.tif").write_bytes(b"half")
    fresh = tmp_path / (PART_PREFIX + "p-running")  # another run still writing: left alone
    fresh.mkdir()
    old = time.time() - 2 * 3600
    os.utime(stale, (old, old))
    assert main(["patches", str(data_copy), str(tmp_path / "p"), *FAST]) == 0
    assert not stale.exists() and fresh.is_dir()
