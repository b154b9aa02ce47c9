"""Training: it learns, resumes exactly, writes a complete run folder, and the paper's sizes run."""

import csv
import json

import h5py
import keras
import numpy as np
import pytest
import tensorflow as tf
from scipy.ndimage import gaussian_filter

from dfcan_tf import cli
from dfcan_tf.benchmark.flops import training_flops
from dfcan_tf.errors import DfcanError
from dfcan_tf.nets.dfcan import DFCANConfig
from dfcan_tf.nets.discriminators import DiscriminatorConfig
from dfcan_tf.runs import load_run
from dfcan_tf.training.config import TrainConfig
from dfcan_tf.training.loop import train
from dfcan_tf.training.losses import image_nrmse
from dfcan_tf.training.sources import ArraySource
from dfcan_tf.training.trainers import DFGAN, DFCANTrainer, build_trainer


def simulate_pairs(n, size, rng, scale=2, filaments=40, sigma_gt=1.0, sigma_lo=2.0, noise=0.01):
    """Curvilinear filaments (microtubule-like): GT blurred by σ_gt, input by σ_lo then ``scale``× binned + noise."""
    big = size * scale
    xs, ys = [], []
    for _ in range(n):
        img = np.zeros((big, big))
        for _ in range(filaments):
            t = np.linspace(0, 1, 400)
            y0, x0 = rng.random(2) * big
            angle, bend = rng.random() * 2 * np.pi, rng.normal() * 2
            fy = y0 + np.sin(angle + bend * t) * t * big
            fx = x0 + np.cos(angle + bend * t) * t * big
            ok = (fy >= 0) & (fy < big) & (fx >= 0) & (fx < big)
            np.add.at(img, (fy[ok].astype(int), fx[ok].astype(int)), 0.3 * rng.uniform(0.5, 1))
        gt = gaussian_filter(img, sigma_gt)
        lo = gaussian_filter(img, sigma_lo).reshape(size, scale, size, scale).mean(axis=(1, 3))
        lo = lo + noise * lo.max() * rng.standard_normal(lo.shape)
        xs.append(lo)
        ys.append(gt)
    return np.array(xs, np.float32)[..., None], np.array(ys, np.float32)[..., None]


TINY_NET = {"width": 8, "n_groups": 1, "n_blocks": 1, "size_psc": 16, "reduction": 4}
TINY_D = {"widths": (8, 16), "head_width": 8, "dense_width": 16}


def _tiny_cfg(mode="dfcan", **kw):
    mc = DFCANConfig.dfcan(1, 2, **TINY_NET)
    base = {"patch_size": 16, "batch_size": 2, "steps": 12, "lr": 1e-3, "validate_every": 3, "validate_patches": 4,
                "sample_every": 6, "log_every": 2, "plateau_patience": 1, "plateau_min_delta": 1.0, "min_lr_ratio": 0.2}
    base.update(kw)
    if mode == "dfcan":
        return TrainConfig.dfcan(mc, **base)
    return TrainConfig.dfgan(mc, discriminator=DiscriminatorConfig(input_size=2 * base["patch_size"], **TINY_D),
                             d_lr=5e-4, **base)


@pytest.fixture(scope="module")
def small_data():
    rng = np.random.default_rng(7)
    xt, yt = simulate_pairs(12, 24, rng, filaments=15)
    xv, yv = simulate_pairs(4, 16, rng, filaments=10)
    return xt, yt, xv, yv


# --------------------------------------------------------------------------- configuration


def test_train_config_recipe_defaults_and_validation():
    c = TrainConfig.dfcan()
    assert (c.batch_size, c.lr, c.patch_size, c.validate_every, c.validate_patches, c.sample_every) == (
        4, 1e-4, 128, 2000, 500, 1000)
    assert (c.plateau_factor, c.plateau_patience, c.plateau_min_delta, c.min_lr) == (0.5, 10, 1e-4, pytest.approx(1e-5))
    g = TrainConfig.dfgan()
    assert (g.batch_size, g.lr, g.d_lr, g.g_updates, g.adversarial_weight, g.validate_every) == (
        2, 1e-4, 2e-5, 3, 0.1, 1000)
    assert g.model.architecture == "dfgan_generator" and g.discriminator.input_size == 256
    assert TrainConfig.from_dict(json.loads(json.dumps(g.to_dict()))) == g
    for bad, msg in [({"batch_size": 0}, "batch_size"), ({"strategy": "tpu"}, "strategy"),
                     ({"plateau_factor": 1.5}, "plateau_factor"), ({"lr": -1.0}, "lr")]:
        with pytest.raises(DfcanError, match=msg):
            TrainConfig.dfcan(**bad)
    with pytest.raises(DfcanError, match="input_size"):
        TrainConfig.dfgan(patch_size=64, discriminator=DiscriminatorConfig(input_size=256))
    with pytest.raises(DfcanError, match="unknown training configuration keys"):
        TrainConfig.from_dict({"stepz": 3})


def test_batches_are_a_function_of_seed_and_step(small_data):
    src = ArraySource(small_data[0], small_data[1])
    a = src.sample(5, slice(0, 4), 4, 0, 16)
    b = src.sample(5, slice(2, 4), 4, 0, 16)
    np.testing.assert_array_equal(a[0][2:], b[0])  # a replica's rows are rows of the global batch
    assert not np.array_equal(a[0], src.sample(6, slice(0, 4), 4, 0, 16)[0])
    assert a[0].shape == (4, 16, 16, 1) and a[1].shape == (4, 32, 32, 1)
    assert a[0].min() == 0.0 and np.allclose(a[0].max(axis=(1, 2, 3)), 1.0)  # per-patch min-max
    # The GT crop is the input crop's region on the fine grid.
    idx, oy, ox = src._rows(5, 4, 0, 16)
    raw = src.targets[idx[0], 2 * oy[0]:2 * oy[0] + 32, 2 * ox[0]:2 * ox[0] + 32]
    np.testing.assert_allclose(a[1][0], (raw - raw.min()) / np.ptp(raw), atol=1e-6)


# --------------------------------------------------------------------------- learning


def test_tiny_dfcan_beats_bicubic(tmp_path):
    rng = np.random.default_rng(0)
    xt, yt = simulate_pairs(48, 32, rng)
    xv, yv = simulate_pairs(16, 32, rng)
    mc = DFCANConfig.dfcan(1, 2, width=16, n_groups=1, n_blocks=2, size_psc=16, reduction=4)
    cfg = TrainConfig.dfcan(mc, patch_size=32, batch_size=4, steps=250, lr=1e-3, validate_every=50,
                            sample_every=125, log_every=25, validate_patches=16)
    run = tmp_path / "run"
    result = train(cfg, run, data=(xt, yt, xv, yv), pixel_size_nm=62.6, progress=False)

    # The bicubic baseline, computed here independently of the trainer.
    def mm(a):
        return (a - a.min(axis=(1, 2, 3), keepdims=True)) / np.ptp(a, axis=(1, 2, 3), keepdims=True)

    bicubic = float(np.mean(image_nrmse(yv, tf.image.resize(mm(xv), (64, 64), method="bicubic"))))
    assert result.bicubic_nrmse == pytest.approx(bicubic, rel=1e-4)
    nrmse = [r["val_nrmse"] for r in result.history]
    assert len(nrmse) == 5 and result.step == 250
    assert nrmse[-1] < 0.75 * bicubic, (nrmse, bicubic)
    assert nrmse[-1] < nrmse[0]

    # The run folder reloads and reproduces the best validation NRMSE.
    loaded = load_run(run, "best")
    sr = loaded.model.predict(mm(xv), verbose=0)
    assert float(np.mean(image_nrmse(mm(yv), sr))) == pytest.approx(result.best_nrmse, rel=1e-4)
    assert loaded.data["normalization"] == "minmax" and loaded.data["pixel_size_nm"] == 62.6
    assert loaded.data["source"] == "arrays" and loaded.data["task"] == "sisr"
    assert loaded.config["train"]["steps"] == 250 and loaded.config["train"]["lr"] == 1e-3


def test_run_folder_contents(tmp_path, small_data, capsys):
    run = tmp_path / "run"
    cfg = _tiny_cfg(steps=6)
    train(cfg, run, data=small_data, progress=True)
    out, err = capsys.readouterr()
    # Console: the bicubic baseline, one summary line per validation, a progress bar with rate and ETA.
    assert "bicubic-upsampled input NRMSE" in out
    assert "step 3/6: val NRMSE" in out and "step 6/6: val NRMSE" in out and "lr " in out
    assert "step/s" in err and "loss=" in err and "<" in err  # tqdm: rate, postfix, elapsed<remaining
    for name in ("config.json", "history.csv", "weights/best.weights.h5", "weights/last.weights.h5",
                 "weights/last.optimizer.h5", "weights/last.state.json", "samples/step_0000006.png"):
        assert (run / name).is_file(), name
    with open(run / "history.csv") as f:
        rows = list(csv.DictReader(f))
    assert [int(r["step"]) for r in rows] == [3, 6]
    assert {"lr", "loss", "val_nrmse", "val_ssim", "val_psnr", "val_mse"} <= set(rows[0])
    png = tf.io.decode_png(tf.io.read_file(str(run / "samples/step_0000006.png"))).numpy()
    assert png.ndim == 3 and png.shape[1] > 2 * png.shape[0]  # three panels side by side
    # TensorBoard: losses, metrics, learning rate and the sample image are logged.
    tags = set()
    for ev in (run / "logs").iterdir():
        for rec in tf.compat.v1.train.summary_iterator(str(ev)):
            tags |= {v.tag for v in rec.summary.value}
    assert {"train/loss", "train/lr", "val/nrmse", "val/ssim", "val/lr", "samples/input_output_gt"} <= tags
    # A non-empty folder is not overwritten.
    with pytest.raises(DfcanError, match="not empty"):
        train(cfg, run, data=small_data, progress=False)


# --------------------------------------------------------------------------- resume


def _opt_arrays(path):
    with h5py.File(path) as f:
        return {f"{g}/{k}": np.asarray(f[g][k]) for g in f for k in f[g]}


@pytest.fixture(scope="module")
def uninterrupted(tmp_path_factory, small_data):
    """The uninterrupted 12-step tiny runs that interrupted ones are compared with, per mode."""
    root = tmp_path_factory.mktemp("uninterrupted")
    return {mode: train(_tiny_cfg(mode), root / mode, data=small_data, progress=False) for mode in ("dfcan", "dfgan")}


@pytest.mark.parametrize("mode", ["dfcan", "dfgan"])
def test_resume_equals_uninterrupted(tmp_path, small_data, mode, uninterrupted):
    cfg = _tiny_cfg(mode)
    full = uninterrupted[mode]
    part = train(cfg, tmp_path / "part", data=small_data, stop_at=5, progress=False)
    assert part.step == 5
    state = json.loads((tmp_path / "part/weights/last.state.json").read_text())
    assert state["step"] == 5
    resumed = train(None, tmp_path / "part", data=small_data, resume=True, progress=False)

    assert resumed.step == full.step == 12
    # plateau_min_delta=1 makes every validation a plateau: lr halves at steps 3, 6, 9, 12 down to the floor.
    assert resumed.lr == pytest.approx(full.lr) and full.lr == pytest.approx(2e-4)
    if mode == "dfgan":
        assert resumed.d_lr == pytest.approx(full.d_lr) and full.d_lr == pytest.approx(1e-4)
    a = _opt_arrays(full.run_dir / "weights/last.optimizer.h5")
    b = _opt_arrays(tmp_path / "part/weights/last.optimizer.h5")
    assert a.keys() == b.keys() and len(a) > 4
    for k in a:  # iterations, learning rate and every Adam moment
        np.testing.assert_allclose(b[k], a[k], rtol=1e-5, atol=1e-7, err_msg=k)
    wa = load_run(full.run_dir, "last").model.get_weights()
    wb = load_run(tmp_path / "part", "last").model.get_weights()
    for x, y in zip(wa, wb, strict=True):
        np.testing.assert_allclose(y, x, rtol=1e-5, atol=1e-6)
    ha = [(r["step"], r["lr"]) for r in full.history]
    hb = [(r["step"], r["lr"]) for r in resumed.history]
    assert hb == ha
    np.testing.assert_allclose([r["val_nrmse"] for r in resumed.history], [r["val_nrmse"] for r in full.history],
                               rtol=1e-5)


def test_ctrl_c_checkpoints_the_applied_step_and_resumes(tmp_path, small_data, monkeypatch, uninterrupted):
    import dfcan_tf.training.checkpoint as train_module

    cfg = _tiny_cfg()
    full = uninterrupted["dfcan"]
    write_history = train_module.write_history

    fired = []

    def interrupted(path, rows):  # Ctrl-C (once) during the checkpoint of step 6, after its history was written
        write_history(path, rows)
        if rows[-1]["step"] == 6 and not fired:
            fired.append(6)
            raise KeyboardInterrupt

    monkeypatch.setattr(train_module, "write_history", interrupted)
    with pytest.raises(KeyboardInterrupt):
        train(cfg, tmp_path / "int", data=small_data, progress=False)
    monkeypatch.undo()
    assert json.loads((tmp_path / "int/weights/last.state.json").read_text())["step"] == 6
    resumed = train(None, tmp_path / "int", data=small_data, resume=True, progress=False)
    assert resumed.step == 12 and resumed.lr == pytest.approx(full.lr)
    assert [r["step"] for r in resumed.history] == [3, 6, 9, 12]
    for x, y in zip(load_run(full.run_dir, "last").model.get_weights(),
                    load_run(tmp_path / "int", "last").model.get_weights(), strict=True):
        np.testing.assert_allclose(y, x, rtol=1e-5, atol=1e-6)


def test_resume_refuses_changed_recipe(tmp_path, small_data):
    cfg = _tiny_cfg(steps=3)
    train(cfg, tmp_path / "r", data=small_data, progress=False)
    with pytest.raises(DfcanError, match="lr"):
        train(cfg.replace(lr=5e-4), tmp_path / "r", data=small_data, resume=True, progress=False)
    # Training longer is allowed.
    more = train(cfg.replace(steps=6), tmp_path / "r", data=small_data, resume=True, progress=False)
    assert more.step == 6


# --------------------------------------------------------------------------- DFGAN


def test_dfgan_train_step_updates_d_once_g_three_times(small_data):
    assert isinstance(build_trainer(_tiny_cfg()), DFCANTrainer)
    cfg = _tiny_cfg("dfgan")
    keras.utils.set_random_seed(0)
    gan = build_trainer(cfg)
    assert isinstance(gan, DFGAN)
    src = ArraySource(small_data[0], small_data[1])
    xs, ys = zip(*[src.sample(u, slice(0, 2), 2, 0, 16) for u in range(4)], strict=True)
    d0 = [w.numpy().copy() for w in gan.discriminator.trainable_variables]
    logs = tf.function(gan.train_step)((tf.constant(np.stack(xs)), tf.constant(np.stack(ys))))
    assert int(gan.d_optimizer.iterations.numpy()) == 1 and int(gan.g_optimizer.iterations.numpy()) == 3
    assert {"loss", "d_loss", "g_adv"} <= set(logs) and all(np.isfinite(float(v)) for v in logs.values())
    assert any(not np.allclose(a, b.numpy()) for a, b in zip(d0, gan.discriminator.trainable_variables, strict=True))
    # It is a plain Keras model too: fit drives the same train_step.
    gan.fit(np.stack(xs)[1], np.stack(ys)[1], batch_size=2, epochs=1, verbose=0)
    assert int(gan.d_optimizer.iterations.numpy()) == 2 and int(gan.g_optimizer.iterations.numpy()) == 6


def test_dfgan_starts_from_dfcan_checkpoint(tmp_path, small_data):
    dfcan = train(_tiny_cfg(steps=3), tmp_path / "dfcan", data=small_data, progress=False)
    cfg = _tiny_cfg("dfgan", steps=0 + 1, init_generator=str(dfcan.run_dir))
    keras.utils.set_random_seed(0)
    gan = build_trainer(cfg)
    from dfcan_tf.training.trainers import load_init_generator as _load_init_generator

    _load_init_generator(gan.generator, cfg.init_generator)
    ref = load_run(tmp_path / "dfcan", "best").model.get_weights()
    for a, b in zip(ref, gan.generator.get_weights(), strict=True):
        np.testing.assert_array_equal(a, b)
    run = train(cfg, tmp_path / "gan", data=small_data, progress=False)
    doc = json.loads((tmp_path / "gan/config.json").read_text())
    assert doc["train"]["mode"] == "dfgan" and doc["discriminator"]["input_size"] == 32
    assert run.step == 1 and (tmp_path / "gan/weights/last.discriminator.weights.h5").is_file()


# --------------------------------------------------------------------------- the paper's sizes


def test_full_size_dfcan_runs_one_step(tmp_path):
    rng = np.random.default_rng(3)
    xt, yt = simulate_pairs(2, 32, rng)
    cfg = TrainConfig.dfcan(patch_size=32, batch_size=1, steps=1, validate_patches=1)
    assert cfg.model == DFCANConfig.dfcan()
    result = train(cfg, tmp_path / "run", data=(xt, yt, xt[:1], yt[:1]), progress=False)
    assert result.step == 1 and np.isfinite(result.best_nrmse)
    assert load_run(tmp_path / "run").model.count_params() == 1_930_753


def test_full_size_dfgan_runs_one_step():
    # The paper's generator (5×10 FCABs) and discriminator; one iteration = D once, G three times.
    cfg = TrainConfig.dfgan(patch_size=16, batch_size=1, steps=1)
    keras.utils.set_random_seed(0)
    gan = build_trainer(cfg)
    assert gan.generator.count_params() == 5_717_129 and gan.discriminator.count_params() == 4_852_481
    rng = np.random.default_rng(0)
    x = tf.constant(rng.random((4, 1, 16, 16, 1), dtype=np.float32))
    y = tf.constant(rng.random((4, 1, 32, 32, 1), dtype=np.float32))
    # Eagerly: tracing the 50-block graph four times costs far more than the step itself.
    logs = gan.train_step((x, y))
    assert all(np.isfinite(float(v)) for v in logs.values())
    assert int(gan.g_optimizer.iterations.numpy()) == 3 and int(gan.d_optimizer.iterations.numpy()) == 1


def test_training_flops_counts_convolutions():
    mc = DFCANConfig.dfcan(1, 2, width=16, n_groups=1, n_blocks=1, size_psc=8, reduction=4)
    h = w = 10
    def conv(hw, cin, cout, k=9):
        return 2 * hw * k * cin * cout
    fwd = (conv(100, 1, 16) + 2 * conv(100, 16, 16) + conv(64, 16, 16) + conv(1, 16, 4, 1) + conv(1, 4, 16, 1)
           + conv(100, 16, 64) + conv(400, 16, 1))
    assert training_flops(mc, h, w, 2) == 3 * 2 * fwd


# --------------------------------------------------------------------------- command line


def test_cli_train_and_resume(tmp_path, small_data, capsys):
    npz = tmp_path / "data.npz"
    np.savez(npz, x_train=small_data[0], y_train=small_data[1], x_val=small_data[2], y_val=small_data[3])
    run = tmp_path / "run"
    args = ["train", "--data", str(npz), "--run", str(run), "--width", "8", "--n-groups", "1", "--n-blocks", "1",
            "--size-psc", "16", "--reduction", "4", "--patch-size", "16", "--batch-size", "2", "--steps", "2",
            "--validate-every", "2", "--sample-every", "2", "--no-progress", "--pixel-size-nm", "62.6"]
    assert cli.main(args) == 0
    doc = json.loads((run / "config.json").read_text())
    assert doc["model"]["width"] == 8 and doc["train"]["steps"] == 2
    assert doc["data"]["path"] == str(npz.resolve()) and doc["data"]["normalization"] == "minmax"
    # --resume continues from the recorded data path to a new step count.
    assert cli.main(["train", "--resume", str(run), "--steps", "4", "--no-progress"]) == 0
    assert json.loads((run / "weights/last.state.json").read_text())["step"] == 4
    assert "step 4" in capsys.readouterr().out
    # A TrainConfig JSON works as well as flags (flags override it).
    cfg_json = tmp_path / "train.json"
    cfg_json.write_text(json.dumps(_tiny_cfg(steps=3, validate_every=3).to_dict()))
    assert cli.main(["train", "--data", str(npz), "--run", str(tmp_path / "run2"), "--config", str(cfg_json),
                     "--steps", "2", "--no-progress"]) == 0
    doc2 = json.loads((tmp_path / "run2/config.json").read_text())
    assert doc2["train"]["steps"] == 2 and doc2["train"]["validate_every"] == 3 and doc2["model"]["width"] == 8
    # User mistakes: one line, exit status 2.
    assert cli.main(["train", "--data", str(tmp_path / "nope.npz"), "--run", str(tmp_path / "x")]) == 2
    assert "not found" in capsys.readouterr().err
    assert cli.main(["train", "--resume", str(tmp_path / "missing")]) == 2


def test_mixed_precision_step_runs(tmp_path, small_data):
    cfg = _tiny_cfg(steps=2, validate_every=2, precision="float16")
    result = train(cfg, tmp_path / "mp", data=small_data, progress=False)
    assert result.step == 2 and np.isfinite(result.best_nrmse)
    assert keras.mixed_precision.global_policy().name == "float32"  # restored afterwards
    assert all(w.dtype == "float32" for w in load_run(tmp_path / "mp").model.weights)


def _write_patch_folders(root, rng, n_train=6, n_val=2, size=16, frames=9):
    """A DL-SR patch folder (the layout dfcan patches writes) of simulated pairs, 16-bit TIFF."""
    from dfcan_tf.data.files import write_tiff

    for split, n in (("training", n_train), ("validate", n_val)):
        x, y = simulate_pairs(n, size, rng, filaments=10)
        for i in range(n):
            name = f"{i:05d}"
            wf = x[i, ..., 0] / x[i].max()
            write_tiff(root / f"{split}_wf" / f"{name}.tif", np.clip(wf, 0, 1))
            write_tiff(root / f"{split}_gt" / f"{name}.tif", y[i, ..., 0] / y[i].max())
            for f in range(frames):  # raw frames: the WF modulated differently per frame
                frame = np.clip(wf * (0.6 + 0.4 * np.cos(f + np.arange(size)[None, :] / 3.0)), 0, 1)
                write_tiff(root / split / name / f"{f + 1:02d}.tif", frame)


@pytest.mark.parametrize("task,channels", [("sisr", 1), ("sim", 9)])
def test_trains_from_patch_folders(tmp_path, task, channels, capsys):
    root = tmp_path / "patches"
    _write_patch_folders(root, np.random.default_rng(5))
    run = tmp_path / "run"
    args = ["train", "--data", str(root), "--task", task, "--run", str(run), "--width", "8", "--n-groups", "1",
            "--n-blocks", "1", "--size-psc", "16", "--reduction", "4", "--patch-size", "16", "--batch-size", "2",
            "--steps", "2", "--validate-every", "2", "--no-progress"]
    assert cli.main(args) == 0, capsys.readouterr().err
    doc = json.loads((run / "config.json").read_text())
    assert doc["model"]["input_channels"] == channels and doc["data"]["task"] == task
    assert doc["data"]["source"] == "patch_folders" and doc["data"]["path"] == str(root.resolve())
    assert doc["data"]["train_dir"].endswith("training_wf" if task == "sisr" else "training")
    assert doc["data"]["n_train"] == 6 and doc["data"]["n_validate"] == 2
    assert load_run(run).model.input_shape[-1] == channels


def test_hard_kill_then_resume_matches_uninterrupted(tmp_path, small_data):
    """SIGKILL a `dfcan train` process mid-run, resume it, and land where an uninterrupted run lands."""
    import os
    import subprocess
    import sys
    import time

    npz = tmp_path / "data.npz"
    np.savez(npz, x_train=small_data[0], y_train=small_data[1], x_val=small_data[2], y_val=small_data[3])
    common = ["--width", "8", "--n-groups", "1", "--n-blocks", "1", "--size-psc", "16", "--reduction", "4",
              "--patch-size", "16", "--batch-size", "2", "--steps", "120", "--validate-every", "5",
              "--sample-every", "60", "--lr", "1e-3", "--plateau-patience", "2", "--no-progress"]
    killed = tmp_path / "killed"
    env = {k: v for k, v in os.environ.items() if k != "TF_CONFIG"}
    env["TF_CPP_MIN_LOG_LEVEL"] = "2"
    proc = subprocess.Popen([sys.executable, "-m", "dfcan_tf.cli", "train", "--data", str(npz), "--run", str(killed),
                             *common], env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    state_file = killed / "weights/last.state.json"
    try:
        deadline = time.time() + 180
        while time.time() < deadline and proc.poll() is None:
            if state_file.exists() and json.loads(state_file.read_text())["step"] >= 10:
                break
            time.sleep(0.05)
    finally:
        proc.kill()
        proc.wait()
    k = json.loads(state_file.read_text())["step"]
    assert 10 <= k < 120, k  # killed mid-run, possibly while writing a checkpoint

    assert cli.main(["train", "--resume", str(killed), "--no-progress"]) == 0
    full = tmp_path / "full"
    assert cli.main(["train", "--data", str(npz), "--run", str(full), *common]) == 0
    sa = json.loads((full / "weights/last.state.json").read_text())
    sb = json.loads(state_file.read_text())
    assert sa["step"] == sb["step"] == 120
    assert sb["lr"] == pytest.approx(sa["lr"]) and sb["plateau_wait"] == sa["plateau_wait"]
    oa, ob = _opt_arrays(full / "weights/last.optimizer.h5"), _opt_arrays(killed / "weights/last.optimizer.h5")
    for key in oa:
        np.testing.assert_allclose(ob[key], oa[key], rtol=1e-4, atol=1e-6, err_msg=key)
    for x, y in zip(load_run(full, "last").model.get_weights(), load_run(killed, "last").model.get_weights(),
                    strict=True):
        np.testing.assert_allclose(y, x, rtol=1e-4, atol=1e-5)
    with open(full / "history.csv") as fa, open(killed / "history.csv") as fb:
        ra, rb = list(csv.DictReader(fa)), list(csv.DictReader(fb))
    assert [r["step"] for r in rb] == [r["step"] for r in ra]  # no duplicated or missing validations
    np.testing.assert_allclose([float(r["val_nrmse"]) for r in rb], [float(r["val_nrmse"]) for r in ra], rtol=1e-4)


@pytest.mark.slow
def test_benchmark_train_prints_rate_and_sgemm_fraction(capsys):
    import argparse

    from dfcan_tf.benchmark.train import benchmark_train

    out = benchmark_train(argparse.Namespace(quick=True, threads=2), sgemm=100.0)
    text = capsys.readouterr().out
    assert "steps/s" in text and "% of sgemm" in text and "128x128 patches, batch 4" in text
    assert out["float32"]["s_per_step"] > 0 and out["gflop_per_step"] == pytest.approx(
        training_flops(DFCANConfig.dfcan(), 128, 128, 4) / 1e9)


def test_cli_dfgan_run(tmp_path, small_data):
    npz = tmp_path / "data.npz"
    np.savez(npz, x_train=small_data[0], y_train=small_data[1], x_val=small_data[2], y_val=small_data[3])
    run = tmp_path / "gan"
    assert cli.main(["train", "--mode", "dfgan", "--data", str(npz), "--run", str(run), "--width", "8",
                     "--n-groups", "1", "--n-blocks", "1", "--size-psc", "16", "--reduction", "4", "--patch-size", "16",
                     "--steps", "2", "--validate-every", "2", "--strided-discriminator", "--no-progress"]) == 0
    doc = json.loads((run / "config.json").read_text())
    assert doc["train"]["mode"] == "dfgan" and doc["train"]["batch_size"] == 2 and doc["train"]["d_lr"] == 2e-5
    assert doc["model"]["architecture"] == "dfgan_generator" and doc["model"]["gamma"] == 0.1
    assert doc["discriminator"] == {**DiscriminatorConfig(input_size=32, downsample=True).to_dict()}
    with open(run / "history.csv") as f:
        row = next(csv.DictReader(f))
    assert float(row["d_lr"]) == pytest.approx(2e-5) and float(row["d_loss"]) > 0
    assert load_run(run).model_config.architecture == "dfgan_generator"
    assert cli.main(["train", "--data", str(npz), "--run", str(tmp_path / "x"), "--strided-discriminator"]) == 2
