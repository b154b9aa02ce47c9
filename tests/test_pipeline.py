"""tf.data input pipeline over DL-SR patch folders: shapes, normalisation, augmentation, errors."""

from __future__ import annotations

import shutil

import numpy as np
import pytest
import tifffile

from dfcan_tf.data.patches import make_patches
from dfcan_tf.data.pipeline import list_patches, load_patch_arrays, make_dataset
from dfcan_tf.data.simulate import simulate_dataset
from dfcan_tf.errors import DfcanError


@pytest.fixture(scope="module")
def folder(tmp_path_factory):
    root = tmp_path_factory.mktemp("pipe")
    simulate_dataset(root / "data", specimens=["F-actin"], cells=2, n_levels=2, size=48, seed=2, progress=False)
    make_patches(root / "data", root / "patches", patch_size=16, n_train=12, n_val=6, seed=0, progress=False)
    return root / "patches"


def _all(ds):
    xs, ys = zip(*[(x.numpy(), y.numpy()) for x, y in ds])
    return np.concatenate(xs), np.concatenate(ys)


@pytest.mark.parametrize("task, channels", [("sisr", 1), ("sim", 9)])
def test_batches_shapes_and_normalisation(folder, task, channels):
    ds = make_dataset(folder, "training", task, batch_size=5, shuffle=False)
    batches = list(ds)
    assert [b[0].shape[0] for b in batches] == [5, 5, 2]
    x, y = _all(ds)
    assert x.shape == (12, 16, 16, channels) and y.shape == (12, 32, 32, 1)
    assert x.dtype == np.float32 and y.dtype == np.float32
    # per patch min-max (docs/data.md#normalisation): every patch spans exactly [0, 1]
    np.testing.assert_allclose(x.min(axis=(1, 2, 3)), 0.0)
    np.testing.assert_allclose(x.max(axis=(1, 2, 3)), 1.0)
    np.testing.assert_allclose(y.max(axis=(1, 2, 3)), 1.0)
    # values and channel order are those of the files
    name = "000003"
    if task == "sisr":
        raw = tifffile.imread(folder / "training_wf" / f"{name}.tif")[..., None].astype(np.float64)
    else:
        raw = np.stack([tifffile.imread(folder / "training" / name / f"{i:02d}.tif") for i in range(1, 10)], -1)
    expect = (raw - raw.min()) / (raw.max() - raw.min())
    np.testing.assert_allclose(x[2], expect, atol=1e-6)
    # normalisation off: divide by 65535
    x_raw, _ = _all(make_dataset(folder, "training", task, batch_size=4, shuffle=False, normalize=False))
    np.testing.assert_allclose(x_raw[2], raw / 65535.0, atol=1e-6)
    # the in-memory helper gives the same arrays
    xa, ya = load_patch_arrays(folder, "training", task)
    np.testing.assert_array_equal(xa, x)
    np.testing.assert_array_equal(ya, y)
    assert load_patch_arrays(folder, "validate", task, limit=4)[0].shape == (4, 16, 16, channels)


def test_shuffle_reshuffles_each_epoch_and_is_seeded(folder):
    ds = make_dataset(folder, "training", "sisr", batch_size=12, shuffle=True, seed=1)
    e1, e2 = (next(iter(ds))[0].numpy() for _ in range(2))
    base = load_patch_arrays(folder, "training", "sisr")[0]

    def order(e):
        return [int(np.argmin(np.abs(base - p).sum(axis=(1, 2, 3)))) for p in e]

    assert sorted(order(e1)) == list(range(12))  # a permutation of all patches
    assert order(e1) != order(e2) and order(e1) != list(range(12))
    again = make_dataset(folder, "training", "sisr", batch_size=12, shuffle=True, seed=1)
    assert order(next(iter(again))[0].numpy()) == order(e1)


def _d4(a):
    """The 8 flips/rotations of (h, w, c) arrays."""
    out = []
    for k in range(4):
        r = np.rot90(a, k, axes=(0, 1))
        out += [r, r[:, ::-1]]
    return out


def test_augmentation_is_the_same_symmetry_for_input_and_gt(folder):
    x0, y0 = load_patch_arrays(folder, "training", "sim")
    x, y = _all(make_dataset(folder, "training", "sim", batch_size=4, shuffle=False, augment=True, repeat=True,
                             seed=5).take(6))  # two epochs
    used = set()
    for i in range(len(x)):
        j = i % 12
        tx = [t for t, c in enumerate(_d4(x0[j])) if np.array_equal(c, x[i])]
        ty = [t for t, c in enumerate(_d4(y0[j])) if np.array_equal(c, y[i])]
        assert tx and set(tx) & set(ty), i  # input and GT got the same transform
        used.update(set(tx) & set(ty))
    assert len(used) >= 4


def test_cache_and_repeat(folder):
    ds = make_dataset(folder, "validate", "sisr", batch_size=4, shuffle=True, cache=True, repeat=True,
                      drop_remainder=True)
    batches = [b[0].numpy() for b in ds.take(5)]
    assert all(b.shape == (4, 16, 16, 1) for b in batches)


def test_bad_folders_and_arguments(folder, tmp_path):
    with pytest.raises(DfcanError, match="no such folder"):
        make_dataset(tmp_path / "none", "training", "sisr")
    with pytest.raises(DfcanError, match="split"):
        list_patches(folder, "test", "sisr")
    with pytest.raises(DfcanError, match="task"):
        list_patches(folder, "training", "rgb")
    with pytest.raises(DfcanError, match="batch_size"):
        make_dataset(folder, "training", "sisr", batch_size=0)
    broken = tmp_path / "broken"
    shutil.copytree(folder, broken)
    (broken / "validate_gt" / "000002.tif").unlink()
    with pytest.raises(DfcanError, match="missing GT"):
        list_patches(broken, "validate", "sisr")
    for d in ("validate_wf", "validate_gt"):
        shutil.rmtree(broken / d)
        (broken / d).mkdir()
    with pytest.raises(DfcanError, match="no patches"):
        list_patches(broken, "validate", "sisr")
    (broken / "training_wf" / "000001.tif").write_bytes(b"II*\x00junk")
    with pytest.raises(DfcanError, match="unreadable"):
        load_patch_arrays(broken, "training", "sisr")


def test_benchmark_data_cli_prints_patches_per_second(capsys):
    import re

    from dfcan_tf.cli import main

    assert main(["benchmark", "data", "--quick", "--threads", "2"]) == 0
    out = capsys.readouterr().out
    assert "sgemm:" in out
    rates = [float(v) for v in re.findall(r"(\d+) patches/s \(input", out)]
    assert len(rates) == 2 and min(rates) > 0  # sisr, sim: what training consumes
    bound = float(re.search(r"consumes at most ~([\d.]+) patches/s", out).group(1))
    # the pipeline must be far faster than DFCAN training can consume patches at this sgemm rate
    assert min(rates) > 20 * bound


def test_nonlinear_sim_end_to_end(tmp_path):
    """F-actin_Nonlinear: 25 frames in, 3× GT out, through simulate → patches → pipeline."""
    simulate_dataset(tmp_path / "data", specimens=["F-actin_Nonlinear"], cells=2, n_levels=1, size=48, seed=4,
                     progress=False)
    m = make_patches(tmp_path / "data", tmp_path / "p", patch_size=16, n_train=4, n_val=2, progress=False)
    assert m["scale"] == 3 and m["frames"] == 25
    x, y = next(iter(make_dataset(tmp_path / "p", "training", "sim", batch_size=4, shuffle=False)))
    assert x.shape == (4, 16, 16, 25) and y.shape == (4, 48, 48, 1)
    frame_10 = tifffile.imread(tmp_path / "p" / "training" / "000001" / "10.tif").astype(np.float64)
    stack = np.stack([tifffile.imread(p) for p in sorted((tmp_path / "p" / "training" / "000001").glob("*.tif"))])
    lo, hi = stack.min(), stack.max()
    np.testing.assert_allclose(x[0, ..., 9].numpy(), (frame_10 - lo) / (hi - lo), atol=1e-6)  # 10th channel
