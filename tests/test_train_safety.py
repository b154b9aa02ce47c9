"""Training and run folders under misuse: concurrent runs, bad data, divergence, interrupted validations, bad state."""

import csv
import fcntl
import hashlib
import json
import warnings

import numpy as np
import pytest

from dfcan_tf import cli
from dfcan_tf.errors import DfcanError
from dfcan_tf.nets import registry
from dfcan_tf.nets.dfcan import DFCANConfig
from dfcan_tf.nets.discriminators import DiscriminatorConfig
from dfcan_tf.runs import load_run, write_config, write_run
from dfcan_tf.training.config import TrainConfig
from dfcan_tf.training.loop import LOCK_NAME, train

TINY_NET = {"width": 8, "n_groups": 1, "n_blocks": 1, "size_psc": 16, "reduction": 4}
TINY_FLAGS = ["--width", "8", "--n-groups", "1", "--n-blocks", "1", "--size-psc", "16", "--reduction", "4",
              "--patch-size", "16", "--batch-size", "2", "--validate-every", "2", "--no-progress"]


def _cfg(**kw):
    base = {"patch_size": 16, "batch_size": 2, "steps": 12, "lr": 1e-3, "validate_every": 3, "validate_patches": 4,
            "sample_every": 6, "log_every": 2, "plateau_patience": 1, "plateau_min_delta": 1.0, "min_lr_ratio": 0.2}
    return TrainConfig.dfcan(DFCANConfig.dfcan(1, 2, **TINY_NET), **{**base, **kw})


@pytest.fixture(scope="module")
def data():
    rng = np.random.default_rng(11)
    xt = rng.random((6, 20, 20, 1), dtype=np.float32)
    yt = rng.random((6, 40, 40, 1), dtype=np.float32)
    xv = rng.random((3, 16, 16, 1), dtype=np.float32)
    yv = rng.random((3, 32, 32, 1), dtype=np.float32)
    return xt, yt, xv, yv


@pytest.fixture(scope="module")
def full(tmp_path_factory, data):
    """The uninterrupted 12-step run (validations at 3, 6, 9, 12)."""
    run = tmp_path_factory.mktemp("full") / "run"
    return train(_cfg(), run, data=data, progress=False)


def _history(run):
    with open(run / "history.csv") as f:
        return list(csv.DictReader(f))


def _digest(path):
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _npz(path, data):
    np.savez(path, x_train=data[0], y_train=data[1], x_val=data[2], y_val=data[3])
    return path


# --------------------------------------------------------------------------- one trainer per run folder


def _hold_lock(folder, pid="4242"):
    folder.mkdir(parents=True, exist_ok=True)
    f = open(folder / LOCK_NAME, "a+")  # noqa: SIM115
    fcntl.flock(f.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
    f.seek(0)
    f.truncate()
    f.write(pid + "\n")
    f.flush()
    return f


def test_second_trainer_on_the_same_run_is_refused(tmp_path, data, capsys):
    run = tmp_path / "run"
    held = _hold_lock(run)
    try:
        with pytest.raises(DfcanError, match=r"in use by another dfcan train \(pid 4242\)"):
            train(_cfg(steps=2), run, data=data, progress=False)
        assert sorted(p.name for p in run.iterdir()) == [LOCK_NAME]  # nothing written next to the holder
    finally:
        held.close()
    train(_cfg(steps=3), run, data=data, progress=False)
    state = (run / "weights/last.state.json").read_bytes()
    held = _hold_lock(run, "777")
    try:
        npz = _npz(tmp_path / "d.npz", data)
        assert cli.main(["train", "--resume", str(run), "--data", str(npz), "--steps", "6", "--no-progress"]) == 2
        assert "in use by another dfcan train (pid 777)" in capsys.readouterr().err
        assert (run / "weights/last.state.json").read_bytes() == state
    finally:
        held.close()
    # Released: the run resumes, and the lock names the process that holds it while it runs.
    assert train(None, run, data=data, resume=True, progress=False).step == 3
    assert (run / LOCK_NAME).read_text().strip().isdigit()


def test_failed_new_run_leaves_no_folder(tmp_path, data):
    bad = (data[0][:, :4, :4], data[1][:, :8, :8], data[2], data[3])  # smaller than the patch size
    run = tmp_path / "a" / "run"
    with pytest.raises(DfcanError, match="smaller than"):
        train(_cfg(), run, data=bad, progress=False)
    assert not (tmp_path / "a").exists()
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(DfcanError, match="smaller than"):
        train(_cfg(), empty, data=bad, progress=False)
    assert empty.is_dir() and not any(empty.iterdir())  # an existing folder stays, without our lock file


# --------------------------------------------------------------------------- non-finite data and divergence


def test_non_finite_arrays_and_npz_are_refused(tmp_path, data):
    xt = data[0].copy()
    xt[2, 3, 4, 0] = np.nan
    with pytest.raises(DfcanError, match=r"training arrays: the inputs hold 1 NaN or infinite"):
        train(_cfg(), tmp_path / "r1", data=(xt, *data[1:]), progress=False)
    yv = data[3].copy()
    yv[0, 0, 0, 0] = np.inf
    npz = _npz(tmp_path / "inf.npz", (*data[:3], yv))
    before = _digest(npz)
    with pytest.raises(DfcanError, match=r"inf\.npz \(validation\): the GT hold 1 NaN or infinite"):
        train(_cfg(), tmp_path / "r2", data=npz, progress=False)
    assert _digest(npz) == before and not (tmp_path / "r2").exists()


def test_non_finite_patch_in_folder_names_the_file(tmp_path, capsys):
    import tifffile

    rng = np.random.default_rng(2)
    root = tmp_path / "patches"
    for split, n in (("training", 2), ("validate", 1)):
        for sub in (f"{split}_wf", f"{split}_gt"):
            (root / sub).mkdir(parents=True)
        for i in range(n):
            tifffile.imwrite(root / f"{split}_wf" / f"{i}.tif", rng.random((16, 16), dtype=np.float32))
            tifffile.imwrite(root / f"{split}_gt" / f"{i}.tif", rng.random((32, 32), dtype=np.float32))
    bad_gt = rng.random((32, 32), dtype=np.float32)
    bad_gt[5, 5] = np.nan
    tifffile.imwrite(root / "training_gt" / "1.tif", bad_gt)
    args = ["train", "--data", str(root), "--run", str(tmp_path / "run"), *TINY_FLAGS, "--steps", "8"]
    assert cli.main(args) == 2
    err = capsys.readouterr().err
    assert "training_gt/1.tif: the GT hold 1 NaN or infinite value(s)" in err and "Traceback" not in err


def test_divergence_stops_and_keeps_the_last_good_checkpoint(tmp_path, data, monkeypatch):
    import tensorflow as tf

    from dfcan_tf.training.trainers import DFCANTrainer

    original = DFCANTrainer.train_step

    def diverging(self, batch):  # from the 5th update on, the weights and the loss become NaN
        logs = original(self, batch)
        bad = self.optimizer.iterations >= 5
        for v in self.network.trainable_variables:
            v.assign(tf.where(bad, v * np.nan, v))
        return {"loss": tf.where(bad, tf.constant(np.nan, tf.float32), logs["loss"])}

    monkeypatch.setattr(DFCANTrainer, "train_step", diverging)
    run = tmp_path / "run"
    with pytest.raises(DfcanError, match=r"step 5: training diverged.*loss=nan.*last good checkpoint \(step 3\)"):
        train(_cfg(), run, data=data, progress=False)
    assert json.loads((run / "weights/last.state.json").read_text())["step"] == 3
    assert [int(r["step"]) for r in _history(run)] == [3]
    for which in ("best", "last"):
        assert all(np.isfinite(w).all() for w in load_run(run, which).model.get_weights())


def test_load_run_refuses_non_finite_weights(tmp_path):
    mc = DFCANConfig.dfcan(1, 2, **TINY_NET)
    model = registry.build(mc)
    model.set_weights([np.full_like(w, np.nan) if i == 3 else w for i, w in enumerate(model.get_weights())])
    write_run(tmp_path / "run", model, mc)
    with pytest.raises(DfcanError, match=r"best\.weights\.h5: 1 weight tensor\(s\) hold NaN or infinite"):
        load_run(tmp_path / "run")


def test_load_run_with_another_architecture_is_short_and_quiet(tmp_path):
    mc = DFCANConfig.dfcan(1, 2, **TINY_NET)
    write_run(tmp_path / "run", registry.build(mc), mc)
    write_config(tmp_path / "run", mc.replace(n_blocks=2))
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        with pytest.raises(DfcanError) as info:
            load_run(tmp_path / "run")
    msg = str(info.value)
    assert msg.startswith(str(tmp_path / "run/weights/best.weights.h5"))
    assert "n_groups 1, n_blocks 2" in msg and "config.json" in msg and "\n" not in msg and len(msg) < 600
    assert not [w for w in caught if "keras" in str(w.filename)]


# --------------------------------------------------------------------------- interrupted validations


def _interrupted_run(tmp_path, data, monkeypatch, module_attr, fail_on):
    """Run until the patched ``module_attr`` is called ``fail_on`` times, raise Ctrl-C there (once), resume."""
    owner, name = module_attr
    original = getattr(owner, name)
    calls = []

    def patched(*args, **kwargs):
        calls.append(1)
        if len(calls) == fail_on:
            raise KeyboardInterrupt
        return original(*args, **kwargs)

    monkeypatch.setattr(owner, name, patched)
    run = tmp_path / "int"
    with pytest.raises(KeyboardInterrupt):
        train(_cfg(), run, data=data, progress=False)
    monkeypatch.undo()
    assert json.loads((run / "weights/last.state.json").read_text())["step"] == 6
    return train(None, run, data=data, resume=True, progress=False)


@pytest.mark.parametrize("where", ["before_history_write", "inside_validation"])
def test_interrupted_validation_history_equals_uninterrupted(tmp_path, data, monkeypatch, full, where):
    import dfcan_tf.training.checkpoint as checkpoint_module
    import dfcan_tf.training.loop as train_module

    if where == "before_history_write":  # validation done, Ctrl-C before its row reached the disk
        target, fail_on = (checkpoint_module, "write_history"), 2
    else:  # Ctrl-C while the validation of step 6 computes its metrics (calls: val 3, sample 6, val 6)
        target, fail_on = (train_module.losses, "image_metrics"), 3
    resumed = _interrupted_run(tmp_path, data, monkeypatch, target, fail_on)
    a, b = _history(full.run_dir), _history(tmp_path / "int")
    assert [r["step"] for r in b] == [r["step"] for r in a] == ["3", "6", "9", "12"]
    for col in ("lr", "loss", "val_nrmse", "best_nrmse"):
        np.testing.assert_allclose([float(r[col]) for r in b], [float(r[col]) for r in a], rtol=1e-5, err_msg=col)
    assert resumed.lr == pytest.approx(full.lr)
    assert (tmp_path / "int/samples/step_0000006.png").is_file()


# --------------------------------------------------------------------------- damaged files and flags


@pytest.mark.parametrize("name", [None, "../../escape", "/etc/passwd", "ckpt-0000003/../x", ""])
def test_bad_checkpoint_name_in_state_is_refused(tmp_path, data, name):
    run = tmp_path / "run"
    train(_cfg(steps=3), run, data=data, progress=False)
    state_path = run / "weights/last.state.json"
    state = json.loads(state_path.read_text())
    state_path.write_text(json.dumps({**state, "checkpoint": name}))
    with pytest.raises(DfcanError, match=r"last\.state\.json: 'checkpoint' must be the plain name"):
        train(None, run, data=data, resume=True, progress=False)


def test_truncated_npz_names_the_file(tmp_path, data, capsys):
    npz = _npz(tmp_path / "data.npz", data)
    raw = npz.read_bytes()
    npz.write_bytes(raw[: len(raw) // 2])
    before = _digest(npz)
    with pytest.raises(DfcanError, match=r"data\.npz: not a readable \.npz file"):
        train(_cfg(), tmp_path / "r", data=npz, progress=False)
    assert cli.main(["train", "--data", str(npz), "--run", str(tmp_path / "r2"), *TINY_FLAGS, "--steps", "2"]) == 2
    assert f"{npz}: cannot read x_train / y_train" in capsys.readouterr().err
    assert _digest(npz) == before and not (tmp_path / "r").exists() and not (tmp_path / "r2").exists()


def test_resume_refuses_flags_that_would_change_the_run(capsys, tmp_path):
    assert cli.main(["train", "--resume", str(tmp_path / "run"), "--width", "16", "--lr", "5"]) == 2
    err = capsys.readouterr().err
    assert "architecture flags --width cannot change" in err and "--lr cannot change" in err
    assert "Traceback" not in err
    for extra in (["--mode", "dfgan"], ["--normalization", "minmax"], ["--mixed-precision"], ["--precision", "bf16"],
                  ["--seed", "1"]):
        assert cli.main(["train", "--resume", str(tmp_path / "run"), *extra]) == 2
        assert extra[0] in capsys.readouterr().err


def test_config_upper_bounds():
    for key, value in (("width", 100_000), ("n_groups", 65), ("n_blocks", 100), ("size_psc", 10_000)):
        with pytest.raises(DfcanError, match=f"{key} must be an integer between .* Received: {key}={value}"):
            DFCANConfig.dfcan(**{key: value})
    for key, value in (("patch_size", 5000), ("batch_size", 2000)):
        with pytest.raises(DfcanError, match=f"{key} must be at most"):
            TrainConfig.dfcan(**{key: value})
    with pytest.raises(DfcanError, match="discriminator sizes"):
        DiscriminatorConfig(widths=(8, 100_000))
    assert DFCANConfig.dfcan(width=1024, n_groups=64).width == 1024  # the bounds themselves are allowed


def test_ctrl_c_during_start_up_is_one_line(monkeypatch, capsys):
    import importlib

    def interrupted(name, *args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(importlib, "import_module", interrupted)
    assert cli.main(["train", "--run", "x", "--data", "y"]) == 130
    err = capsys.readouterr().err
    assert err == "dfcan train: interrupted\n"
