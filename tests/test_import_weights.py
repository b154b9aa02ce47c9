"""``dfcan import-weights``: a run folder from a Keras 2 ``weights.best`` (generated here with the authors' layout)."""

from __future__ import annotations

import contextlib
import hashlib
import io
import json
import re
import subprocess
import sys

import h5py
import keras
import numpy as np
import pytest

from dfcan_tf.cli.main import main
from dfcan_tf.data.files import read_image, write_tiff
from dfcan_tf.nets.dfcan import build_dfcan
from dfcan_tf.runs import load_run
from dfcan_tf.safety import PART_PREFIX

N_LAYERS = 1 + 4 * 4 * 5 + 2  # head, 16 FCABs x (conv1, conv2, attention conv, squeeze, excite), upsample, output
ARGS = ["--architecture", "dfcan", "--input-channels", "9", "--scale", "2"]


def _keras2_file(path, arrays_per_layer, *, start=3, extra_conv=None):
    """A Keras 2 ``save_weights`` file: ``conv2d_N`` layers numbered in creation order from ``start``,
    listed in ``layer_names`` shuffled among weightless layers, datasets ``conv2d_N/conv2d_N/kernel:0``."""
    named = [(f"conv2d_{start + i}", arrays) for i, arrays in enumerate(arrays_per_layer)]
    if extra_conv is not None:
        named.append((f"conv2d_{start + len(named)}", extra_conv))
    listed = [named[i] for i in np.random.default_rng(0).permutation(len(named))]
    with h5py.File(path, "w") as f:
        f.attrs["layer_names"] = np.array([b"input_1", b"lambda_1"] + [n.encode() for n, _ in listed])
        f.attrs["keras_version"] = b"2.2.4"
        f.attrs["backend"] = b"tensorflow"
        for name in ("input_1", "lambda_1"):
            f.create_group(name).attrs["weight_names"] = np.array([], dtype="S1")
        for name, arrays in listed:
            wnames = [f"{name}/kernel:0", f"{name}/bias:0"]
            g = f.create_group(name)
            g.attrs["weight_names"] = np.array([w.encode() for w in wnames])
            for wn, a in zip(wnames, arrays):
                g.create_dataset(wn, data=a)


def _sha(path):
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _dfcan(*args):
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        rc = main(["import-weights", *map(str, args)])
    return rc, out.getvalue(), err.getvalue()


@pytest.fixture(scope="module")
def imported(tmp_path_factory):
    """The paper's DFCAN for linear SIM (9 channels, x2) with random weights, its file, and the import."""
    root = tmp_path_factory.mktemp("import")
    keras.utils.set_random_seed(3)
    reference = build_dfcan(9, 2)
    rng = np.random.default_rng(5)
    for w in reference.weights:  # non-zero biases too, so a swapped kernel/bias or layer would show
        w.assign(np.asarray(w.numpy()) + 0.01 * rng.standard_normal(w.shape).astype(np.float32))
    from dfcan_tf.nets.reference_weights import _weighted_layers

    arrays = [[np.asarray(w.numpy()) for w in layer.weights] for layer in _weighted_layers(reference)]
    path = root / "weights.best"
    _keras2_file(path, arrays)
    sha = _sha(path)
    rc, out, err = _dfcan(path, root / "run", *ARGS)
    return {"root": root, "path": path, "sha": sha, "reference": reference, "arrays": arrays,
            "rc": rc, "out": out, "err": err, "run": root / "run"}


def test_import_prints_the_mapping_and_writes_an_equivalent_run(imported):
    assert imported["rc"] == 0, imported["err"]
    rows = [line for line in imported["out"].splitlines() if " -> " in line]
    assert len(rows) == len(imported["arrays"]) == N_LAYERS
    assert rows[0].split() == ["conv2d_3", "->", "head_conv", "(3,", "3,", "9,", "64)", "+", "(64,)"]
    assert rows[4].split()[:3] == ["conv2d_7", "->", "group0_block0_fca/squeeze"]
    assert rows[-2].split()[:7] == ["conv2d_84", "->", "upsample_conv", "(3,", "3,", "64,", "256)"]
    assert rows[-1].split()[:3] == ["conv2d_85", "->", "output_conv"]
    run = imported["run"]
    assert _sha(imported["path"]) == imported["sha"]
    assert sorted(p.name for p in (run / "weights").iterdir()) == ["best.weights.h5", "last.weights.h5"]
    assert not [p for p in imported["root"].iterdir() if p.name.startswith(PART_PREFIX)]
    doc = json.loads((run / "config.json").read_text())
    assert doc["imported"]["source"] == "weights.best"
    assert doc["imported"]["sha256"] == imported["sha"]
    assert doc["imported"]["layers"] == N_LAYERS and doc["imported"]["keras_version"] == "2.2.4"
    assert doc["imported"]["parameters"] == imported["reference"].count_params()
    assert str(imported["root"]) not in (run / "config.json").read_text()
    assert doc["model"]["architecture"] == "dfcan" and doc["model"]["n_groups"] == 4
    assert doc["data"] == {"task": "sim", "input_channels": 9, "scale": 2, "normalization": "minmax",
                           "pixel_size_nm": 62.6}
    x = np.random.default_rng(6).random((1, 64, 64, 9), dtype=np.float32)
    expected = np.asarray(imported["reference"](x))
    assert float(np.ptp(expected)) > 1e-3  # not a saturated output
    for which in ("best", "last"):
        got = np.asarray(load_run(run, which).model(x))
        assert got.shape == (1, 128, 128, 1)
        np.testing.assert_allclose(got, expected, atol=1e-5, rtol=0)


def test_predict_accepts_the_imported_run(imported, tmp_path):
    assert imported["rc"] == 0, imported["err"]
    stack = np.random.default_rng(8).integers(100, 4000, (9, 64, 64)).astype(np.uint16)
    write_tiff(tmp_path / "cell.tif", stack)
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        rc = main(["predict", str(imported["run"]), str(tmp_path / "cell.tif"), "-o", str(tmp_path / "sr"),
                   "--dtype", "float32", "--intensity", "stretch", "--no-progress"])
    assert rc == 0, err.getvalue()
    sr, _ = read_image(tmp_path / "sr" / "cell.tif")
    x = stack.astype(np.float64)
    x = ((x - x.min()) / (x.max() - x.min())).astype(np.float32)
    y = np.asarray(imported["reference"](np.moveaxis(x, 0, -1)[None]), np.float64)[0, ..., 0]
    y = (y - y.min()) / (y.max() - y.min())
    np.testing.assert_allclose(np.squeeze(sr), y, atol=2e-4, rtol=0)


def test_overwrite_replaces_only_its_own_output(imported):
    assert imported["rc"] == 0, imported["err"]
    rc, _, err = _dfcan(imported["path"], imported["run"], *ARGS)
    assert rc == 2 and "--overwrite" in err
    rc, _, err = _dfcan(imported["path"], imported["run"], *ARGS, "--overwrite")
    assert rc == 0, err
    assert _sha(imported["path"]) == imported["sha"]


@pytest.mark.parametrize("flags, message", [
    (["--scale", "3"], r"'conv2d_84' holds shapes \[\(3, 3, 64, 256\), \(256,\)\] but 'upsample_conv' expects "
                       r"\[\(3, 3, 64, 576\), \(576,\)\]"),
    (["--input-channels", "1"], r"'conv2d_3' holds shapes \[\(3, 3, 9, 64\), \(64,\)\] but 'head_conv' "
                                r"expects \[\(3, 3, 1, 64\), \(64,\)\]"),
    (["--architecture", "dfgan"], r"has 83 layers with weights but model 'dfgan_generator' has 253 "
                                  r"\(our layers from 'group1_block6_fca/conv' on get no weights\)"),
])
def test_wrong_configuration_is_refused_naming_the_layer(imported, tmp_path, flags, message):
    args = dict(zip(ARGS[::2], ARGS[1::2]))
    args.update(dict(zip(flags[::2], flags[1::2])))
    rc, out, err = _dfcan(imported["path"], tmp_path / "run", *[t for kv in args.items() for t in kv])
    assert rc == 2 and "Traceback" not in err
    assert err.startswith("dfcan import-weights: error: ") and str(imported["path"]) in err
    assert re.search(message, err), err
    assert not (tmp_path / "run").exists() and " -> " not in out
    assert _sha(imported["path"]) == imported["sha"]


def test_bad_files_are_refused(imported, tmp_path):
    cases = {}
    junk = tmp_path / "junk.best"
    junk.write_bytes(b"\x89HDF but not really" * 10)
    cases[junk] = "not an HDF5 weights file"
    keras3 = tmp_path / "keras3.weights.h5"
    with h5py.File(keras3, "w") as f:
        f.create_group("layers").create_dataset("x", data=np.zeros(3))
    cases[keras3] = "no 'layer_names' attribute; not a Keras 2 weights file (it looks like a Keras 3"
    extra = tmp_path / "extra.best"
    _keras2_file(extra, imported["arrays"], extra_conv=imported["arrays"][-1])
    cases[extra] = "has 84 layers with weights but model 'dfcan' has 83 (the file's layers from 'conv2d_86' on"
    missing = tmp_path / "missing.best"
    _keras2_file(missing, imported["arrays"])
    with h5py.File(missing, "a") as f:
        del f["conv2d_10/conv2d_10/bias:0"]
    cases[missing] = "layer 'conv2d_10' lists weight 'conv2d_10/bias:0' but holds no such dataset"
    for path, message in cases.items():
        sha = _sha(path)
        rc, out, err = _dfcan(path, tmp_path / "run", *ARGS)
        assert rc == 2 and message in err and str(path) in err and "Traceback" not in err, err
        assert _sha(path) == sha and not (tmp_path / "run").exists()
    rc, _, err = _dfcan(tmp_path / "absent.best", tmp_path / "run", *ARGS)
    assert rc == 2 and "absent.best: no such file" in err


def test_help_does_not_import_tensorflow():
    code = ("import sys\nfrom dfcan_tf.cli.main import main\ntry:\n    main(['import-weights', '--help'])\n"
            "except SystemExit as exc:\n    print('RESULT', exc.code, 'tensorflow' in sys.modules, 'keras' in sys.modules)")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert proc.stdout.strip().splitlines()[-1] == "RESULT 0 False False", proc.stderr
    for flag in ("--architecture", "--input-channels", "--scale", "--pixel-size", "--overwrite"):
        assert flag in proc.stdout


def test_dfgan_generator_file_maps_layer_for_layer(tmp_path):
    """The paper's DFGAN generator (5 x 10 FCABs): 253 layers mapped in creation order, conv2d_1 first."""
    from dfcan_tf.nets.dfcan import build_dfgan_generator
    from dfcan_tf.nets.reference_weights import _weighted_layers, map_reference_weights

    model = build_dfgan_generator(1, 3)
    arrays = [[np.asarray(w.numpy()) for w in layer.weights] for layer in _weighted_layers(model)]
    _keras2_file(tmp_path / "weights.best", arrays, start=1)
    mapping = map_reference_weights(build_dfgan_generator(1, 3), tmp_path / "weights.best")
    rows = mapping.rows()
    assert len(rows) == 1 + 5 * 10 * 5 + 2 == 253
    assert rows[0] == ("conv2d_1", "head_conv", "(3, 3, 1, 64) + (64,)")
    assert rows[-3] == ("conv2d_251", "group4_block9_fca/excite", "(1, 1, 4, 64) + (64,)")
    assert rows[-2] == ("conv2d_252", "upsample_conv", "(3, 3, 64, 576) + (576,)")
    assert mapping.n_parameters == model.count_params()
    assert len(mapping.table().splitlines()) == 254
