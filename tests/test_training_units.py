"""Units of the training package: plateau rule, checkpoint commit, sources' normalisation, loss min-max, FLOPs."""

import argparse
import hashlib
import json

import numpy as np
import pytest
import tifffile

from dfcan_tf.errors import DfcanError
from dfcan_tf.nets.dfcan import DFCANConfig
from dfcan_tf.training.config import TrainConfig
from dfcan_tf.training.schedule import PlateauSchedule

TINY_NET = {"width": 8, "n_groups": 1, "n_blocks": 1, "size_psc": 16, "reduction": 4}


# --------------------------------------------------------------------------- plateau rule


def test_plateau_halves_after_exactly_patience_non_improving_validations():
    s = PlateauSchedule(factor=0.5, patience=3, min_delta=0.0, floor=1e-5, lr=1e-4)
    assert s.update(0.5) == 1e-4 and s.best == 0.5 and s.wait == 0
    assert [s.update(0.6) for _ in range(2)] == [1e-4, 1e-4]
    assert s.wait == 2
    assert s.update(0.6) == pytest.approx(5e-5) and s.wait == 0  # the 3rd non-improving validation
    assert [s.update(0.55) for _ in range(3)] == pytest.approx([5e-5, 5e-5, 2.5e-5])


def test_plateau_floors_at_min_lr():
    s = PlateauSchedule(factor=0.5, patience=1, min_delta=0.0, floor=3e-5, lr=1e-4, best=0.1)
    assert [s.update(0.2) for _ in range(4)] == pytest.approx([5e-5, 3e-5, 3e-5, 3e-5])


def test_plateau_respects_min_delta():
    s = PlateauSchedule(factor=0.5, patience=2, min_delta=0.01, floor=0.0, lr=1.0, best=0.5)
    assert s.update(0.495) == 1.0 and s.wait == 1 and s.best == 0.5  # better, but by less than min_delta
    assert s.update(0.495) == 0.5 and s.wait == 0
    assert s.update(0.48) == 0.5 and s.best == 0.48 and s.wait == 0  # better by more than min_delta
    c = s.copy()
    c.update(1.0)
    assert s.wait == 0 and c.wait == 1  # copies are independent


# --------------------------------------------------------------------------- checkpoint commit


def _hashes(folder):
    return {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(folder.rglob("*")) if p.is_file()}


def test_interrupted_commit_leaves_previous_checkpoint_loadable(tmp_path, monkeypatch):
    import keras

    import dfcan_tf.training.checkpoint as ck
    from dfcan_tf.nets import registry

    net = registry.build(DFCANConfig.dfcan(1, 2, **TINY_NET))
    opt = keras.optimizers.Adam(1e-3)
    opt.build(net.trainable_variables)
    c = ck.Checkpointer(tmp_path, {"weights": net}, {"network": opt})
    (tmp_path / "weights").mkdir()
    c.commit(3, [{"step": 3, "lr": 1e-3}], {"best_nrmse": 0.5, "plateau_wait": 1})
    w3 = [w.copy() for w in net.get_weights()]
    before = _hashes(tmp_path / "weights")
    net.set_weights([w + 1.0 for w in w3])

    def killed(*a, **k):
        raise KeyboardInterrupt

    monkeypatch.setattr(ck, "save_json", killed)  # dies at the commit point, after the step-6 files were written
    with pytest.raises(KeyboardInterrupt):
        c.commit(6, [{"step": 3}, {"step": 6}], {"best_nrmse": 0.4, "plateau_wait": 0})
    monkeypatch.undo()
    after = _hashes(tmp_path / "weights")
    assert {k: v for k, v in after.items() if k in before} == before  # step-3 files and state untouched
    state = c.restore("the test network")
    assert state["step"] == 3 and state["checkpoint"] == "ckpt-0000003" and state["plateau_wait"] == 1
    for a, b in zip(net.get_weights(), w3, strict=True):
        np.testing.assert_array_equal(a, b)
    # The next commit completes and drops the stale set, and only that: names it does not write are left alone.
    (tmp_path / "weights/ckpt-notes.txt").write_text("mine")
    (tmp_path / "weights/ckpt-0000001.weights.h5.bak").write_text("mine too")
    (tmp_path / "weights/ckpt-0000002.weights.h5").mkdir()
    c.commit(9, [], {"best_nrmse": 0.3})
    assert sorted(p.name for p in (tmp_path / "weights").glob("ckpt-*")) == sorted([
        "ckpt-0000002.weights.h5", "ckpt-0000009.optimizer.h5", "ckpt-0000009.weights.h5",
        "ckpt-0000001.weights.h5.bak", "ckpt-notes.txt"])
    assert (tmp_path / "weights/ckpt-notes.txt").read_text() == "mine"
    assert json.loads((tmp_path / "weights/last.state.json").read_text())["step"] == 9


# --------------------------------------------------------------------------- sources


@pytest.mark.parametrize("normalization", ["minmax", "divide65535"])
def test_folder_source_train_and_validation_batches_of_one_patch_agree(tmp_path, normalization):
    from dfcan_tf.training.sources import FolderSource

    rng = np.random.default_rng(0)
    for split in ("training", "validate"):
        (tmp_path / f"{split}_wf").mkdir()
        (tmp_path / f"{split}_gt").mkdir()
        tifffile.imwrite(tmp_path / f"{split}_wf/p0.tif", rng.integers(100, 30000, (16, 16), dtype=np.uint16))
        tifffile.imwrite(tmp_path / f"{split}_gt/p0.tif", rng.integers(100, 30000, (32, 32), dtype=np.uint16))
    src = FolderSource(tmp_path, "training", "sisr", normalization=normalization)
    x, y = src.sample(0, slice(0, 2), 2, 0, 16)  # patch_size = patch size: the crop is the whole patch
    vx, vy = src.head(1)
    np.testing.assert_allclose(x[0], vx[0], atol=1e-6)
    np.testing.assert_allclose(y[0], vy[0], atol=1e-6)
    raw = tifffile.imread(tmp_path / "training_wf/p0.tif").astype(np.float64)
    expected = raw / 65535 if normalization == "divide65535" else (raw - raw.min()) / np.ptp(raw)
    np.testing.assert_allclose(vx[0, ..., 0], expected, atol=1e-6)


# --------------------------------------------------------------------------- losses


def test_loss_minmax_matches_the_former_formulas():
    import tensorflow as tf

    from dfcan_tf.training import losses

    x = np.random.default_rng(1).random((3, 8, 8, 1)).astype(np.float32) * 5 - 1
    lo, hi = x.min(), x.max()
    np.testing.assert_allclose(losses.batch_minmax(tf.constant(x)).numpy(), (x - lo) / max(hi - lo, 1e-12),
                               atol=1e-6)
    lo_i, hi_i = x.min(axis=(1, 2, 3), keepdims=True), x.max(axis=(1, 2, 3), keepdims=True)
    np.testing.assert_allclose(losses.per_image_minmax(tf.constant(x)).numpy(),
                               np.clip((x - lo_i) / (hi_i - lo_i + 1e-7), 0, 1), atol=1e-6)
    assert np.all(losses.batch_minmax(tf.zeros((1, 4, 4, 1))).numpy() == 0)


# --------------------------------------------------------------------------- FLOPs


def _former_dfcan_training_flops(c, height, width, batch):
    """The analytic count the training benchmark used before (convolutions only)."""
    k2, hw = 9, height * width
    fwd = 2 * hw * k2 * c.input_channels * c.width
    per_block = 2 * (2 * hw * k2 * c.width * c.width)
    per_block += 2 * c.size_psc**2 * k2 * c.width * c.width
    per_block += 2 * 2 * c.width * (c.width // c.reduction)
    fwd += c.n_groups * c.n_blocks * per_block
    fwd += 2 * hw * k2 * c.width * c.width * c.scale**2
    fwd += 2 * hw * c.scale**2 * k2 * c.width
    return 3.0 * fwd * batch


def test_flop_counter_agrees_with_the_former_analytic_dfcan_count():
    from dfcan_tf.benchmark.flops import count_flops, training_flops

    mc = DFCANConfig.dfcan()  # the benchmark's network at its patch size and batch
    new = training_flops(mc, 128, 128, 4)
    old = _former_dfcan_training_flops(mc, 128, 128, 4)
    counts = count_flops(mc, 128, 128)
    assert counts["total"] == counts["conv"] + counts["dft"]  # DFT products (if matmuls) are part of the total
    assert new == pytest.approx(old, rel=0.05)


# --------------------------------------------------------------------------- CLI: any registered architecture


def _npz(tmp_path):
    rng = np.random.default_rng(0)
    npz = tmp_path / "d.npz"
    np.savez(npz, x_train=rng.random((4, 16, 16, 1), np.float32), y_train=rng.random((4, 32, 32, 1), np.float32),
             x_val=rng.random((2, 16, 16, 1), np.float32), y_val=rng.random((2, 32, 32, 1), np.float32))
    return npz


def _args(**kw):
    import dfcan_tf.cli.train as cli_train

    parser = argparse.ArgumentParser()
    cli_train.add_arguments(parser)
    argv = ["--run", "r"]
    for k, v in kw.items():
        argv += [f"--{k.replace('_', '-')}"] + ([] if v is True else [str(v)])
    return cli_train, parser.parse_args(argv)


def test_cli_config_for_other_architectures_and_refused_flags(tmp_path):
    npz = _npz(tmp_path)
    cli_train, args = _args(data=npz, architecture="srcnn", recipe="dfcan")
    cfg = cli_train.config_from_args(args)
    assert isinstance(cfg, TrainConfig) and cfg.model.architecture == "srcnn" and cfg.mode == "dfcan"
    assert (cfg.mse_weight, cfg.ssim_weight, cfg.batch_size) == (1.0, 0.1, 4)
    cli_train, args = _args(data=npz, architecture="srcnn", width=8)
    with pytest.raises(DfcanError, match="--width.*DFCAN-family.*srcnn"):
        cli_train.config_from_args(args)
    cli_train, args = _args(data=npz, architecture="pix2pix", mode="dfcan")
    with pytest.raises(DfcanError, match="adversarially"):
        cli_train.config_from_args(args)
    cli_train, args = _args(data=npz, architecture="srcnn", mode="dfgan")
    with pytest.raises(DfcanError, match="--mode dfgan"):
        cli_train.config_from_args(args)
    cli_train, args = _args(data=npz, architecture="nosuchnet")
    with pytest.raises(DfcanError, match="unknown architecture"):
        cli_train.config_from_args(args)


def test_cli_trains_a_non_dfcan_architecture(tmp_path):
    from dfcan_tf import cli
    from dfcan_tf.runs import load_run

    npz = _npz(tmp_path)
    run = tmp_path / "run"
    assert cli.main(["train", "--architecture", "srcnn", "--data", str(npz), "--run", str(run), "--patch-size", "16",
                     "--batch-size", "2", "--steps", "2", "--validate-every", "2", "--no-progress"]) == 0
    doc = json.loads((run / "config.json").read_text())
    assert doc["model"]["architecture"] == "srcnn"
    assert load_run(run, "best").model_config.architecture == "srcnn"
    assert (run / "weights/best.weights.h5").is_file() and (run / "history.csv").is_file()
