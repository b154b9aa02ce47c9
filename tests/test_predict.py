"""dfcan_tf.inference.predict: whole and tiled prediction, file handling, bad inputs through the CLI."""

from __future__ import annotations

from pathlib import Path

import keras
import numpy as np
import pytest
import tifffile
from scipy import ndimage as ndi

from dfcan_tf import cli
from dfcan_tf.data.files import read_tiff, write_mrc, write_tiff
from dfcan_tf.errors import DfcanError
from dfcan_tf.evaluation.metrics import nrmse
from dfcan_tf.inference.files import expand_inputs, predict_files
from dfcan_tf.inference.predict import (
    FALLBACK_OVERLAP,
    overlap_for,
    predict_image,
    remove_hot_pixels,
)
from dfcan_tf.nets import registry
from dfcan_tf.nets.dfcan import DFCANConfig
from dfcan_tf.runs import write_run

TINY = {"width": 8, "n_groups": 1, "n_blocks": 1, "size_psc": 16, "reduction": 4}


def _make_run(path: Path, channels: int, scale: int = 2) -> Path:
    keras.utils.set_random_seed(channels)
    cfg = DFCANConfig.dfcan(channels, scale, **TINY)
    data = {"task": "sim" if channels > 1 else "sisr", "input_channels": channels, "scale": scale,
            "normalization": "minmax", "pixel_size_nm": 62.6}
    return write_run(path, registry.build(cfg), cfg, data=data)


@pytest.fixture(scope="module")
def sisr_run(tmp_path_factory):
    return _make_run(tmp_path_factory.mktemp("runs") / "sisr", 1)


@pytest.fixture(scope="module")
def sim_run(tmp_path_factory):
    return _make_run(tmp_path_factory.mktemp("runs") / "sim", 9)


@pytest.fixture(scope="module")
def tiny_model():
    keras.utils.set_random_seed(0)
    return registry.build(DFCANConfig.dfcan(1, 2, **TINY))


def _scene(n: int, rng: np.random.Generator) -> np.ndarray:
    """Expected wide-field photon counts of random filaments (2× finer object, blurred, binned)."""
    obj = np.zeros((2 * n, 2 * n))
    t = np.linspace(-2 * n, 2 * n, 8 * n)
    for _ in range(n // 3):
        x0, y0 = rng.random(2) * 2 * n
        a = rng.random() * np.pi
        xs, ys = (x0 + t * np.cos(a)).astype(int), (y0 + t * np.sin(a)).astype(int)
        ok = (xs >= 0) & (xs < 2 * n) & (ys >= 0) & (ys < 2 * n)
        obj[ys[ok], xs[ok]] += 1.0
    wf = ndi.gaussian_filter(obj, 3.0).reshape(n, 2, n, 2).mean(axis=(1, 3))
    return wf / wf.max() * 300.0 + 20.0


# --------------------------------------------------------------------------- predict_image


def test_predict_image_shape_range_and_normalisation(tiny_model):
    rng = np.random.default_rng(0)
    img = rng.poisson(_scene(40, rng)).astype(np.uint16)
    out = predict_image(tiny_model, img, scale=2)
    assert out.shape == (80, 80) and out.dtype == np.float32
    assert out.min() == pytest.approx(0.0, abs=1e-6) and out.max() == pytest.approx(1.0, abs=1e-5)
    # Min-max input normalisation: the absolute intensity scale does not matter.
    np.testing.assert_allclose(predict_image(tiny_model, img.astype(np.float32) * 7 + 3, scale=2), out, atol=1e-4)
    raw = predict_image(tiny_model, img / 65535.0, scale=2, normalize=False)
    assert 0.0 < raw.min() and raw.max() < 1.0  # the sigmoid output, not stretched
    with pytest.raises(DfcanError, match="takes 1 input frame"):
        predict_image(tiny_model, np.zeros((9, 32, 32)), scale=2, name="x.tif")


def test_tiled_matches_whole_within_shot_noise(tiny_model):
    """Tiled vs whole NRMSE is far below the change caused by re-acquiring the same scene."""
    rng = np.random.default_rng(1)
    lam = _scene(128, rng)
    a, b = rng.poisson(lam).astype(np.float32), rng.poisson(lam).astype(np.float32)
    whole = predict_image(tiny_model, a, scale=2, tile_size=0)
    tiled = predict_image(tiny_model, a, scale=2, tile_size=64, batch_size=2)  # default overlap: measured
    reacquired = predict_image(tiny_model, b, scale=2, tile_size=0)
    diff = nrmse(tiled, whole)
    noise = nrmse(reacquired, whole)
    assert diff < 1e-3, diff
    assert diff < noise / 10, (diff, noise)
    assert np.max(np.abs(tiled - whole)) < 2e-3
    # Default: a small image is predicted whole.
    np.testing.assert_array_equal(predict_image(tiny_model, a, scale=2), whole)


def test_whole_image_out_of_memory_falls_back_to_tiles():
    import tensorflow as tf

    calls = []

    def network(batch):
        calls.append(batch.shape)
        if batch.shape[1] > 40:
            raise tf.errors.ResourceExhaustedError(None, None, "OOM when allocating tensor")
        return batch.repeat(2, axis=1).repeat(2, axis=2)[..., :1]

    img = np.random.default_rng(0).random((64, 64)).astype(np.float32)
    out = predict_image(network, img, scale=2)
    assert out.shape == (128, 128) and calls[0] == (1, 64, 64, 1) and all(c[1] == 32 for c in calls[1:])
    up = np.kron(img, np.ones((2, 2)))
    np.testing.assert_allclose(out, (up - up.min()) / (up.max() - up.min()), atol=1e-5)  # a local op stitches exactly
    # An explicit tile size is respected: no silent retry.
    with pytest.raises(tf.errors.ResourceExhaustedError):
        predict_image(network, img, scale=2, tile_size=0)


def test_remove_hot_pixels():
    img = ndi.gaussian_filter(np.random.default_rng(0).random((32, 32)), 2).astype(np.float32)
    img = (img - img.min()) / (img.max() - img.min())
    spiky = img.copy()
    spiky[10, 12] += 0.6
    spiky[0, 0] += 0.6  # border pixel: replicated neighbours
    cleaned = remove_hot_pixels(spiky)
    assert abs(cleaned[10, 12] - img[10, 12]) < 0.05 and abs(cleaned[0, 0] - img[0, 0]) < 0.05
    mask = np.ones_like(img, bool)
    mask[10, 12] = mask[0, 0] = False
    np.testing.assert_array_equal(cleaned[mask], spiky[mask])  # smooth structure untouched
    np.testing.assert_array_equal(remove_hot_pixels(img), img)


# --------------------------------------------------------------------------- files


def test_predict_files_sisr_tiff_mrc_timelapse(sisr_run, tmp_path):
    rng = np.random.default_rng(2)
    lam = _scene(32, rng)
    src = tmp_path / "in"
    write_tiff(src / "cell1.tif", rng.poisson(lam).astype(np.uint16), pixel_size_nm=62.6)
    write_mrc(src / "movie.mrc", rng.poisson(np.stack([lam] * 3)).astype(np.uint16), pixel_size_nm=50.0)
    summary = predict_files(sisr_run, [src], tmp_path / "out", progress=False)
    assert summary.ok and len(summary.outputs) == 2
    out, meta = read_tiff(tmp_path / "out" / "cell1.tif")
    assert out.dtype == np.uint16 and out.shape == (64, 64) and out.max() == 65535
    assert meta["pixel_size_nm"] == pytest.approx(31.3, rel=1e-4)
    movie, meta = read_tiff(tmp_path / "out" / "movie.tif")
    assert movie.shape == (3, 64, 64) and meta["pixel_size_nm"] == pytest.approx(25.0, rel=1e-4)
    # float32 on request, glob input, explicit tiles (frames are predicted independently).
    s2 = predict_files(sisr_run, str(src / "*.tif"), tmp_path / "f32", dtype="float32", tile_size=16,
                       overlap=4, progress=False)
    f32, _ = read_tiff(tmp_path / "f32" / "cell1.tif")
    assert s2.ok and f32.dtype == np.float32 and f32.shape == (64, 64)
    assert 0.0 <= f32.min() and f32.max() <= 1.0


def test_predict_files_sim_groups_frames(sim_run, tmp_path):
    rng = np.random.default_rng(3)
    frames = rng.poisson(np.stack([_scene(24, rng)] * 18)).astype(np.uint16)
    write_tiff(tmp_path / "in" / "one.tif", frames[:9])
    write_tiff(tmp_path / "in" / "two_timepoints.tif", frames)
    write_tiff(tmp_path / "in" / "ten.tif", frames[:10])
    summary = predict_files(sim_run, tmp_path / "in", tmp_path / "out", progress=False)
    assert [p.name for p in summary.outputs] == ["one.tif", "two_timepoints.tif"]
    assert read_tiff(tmp_path / "out" / "one.tif")[0].shape == (48, 48)
    assert read_tiff(tmp_path / "out" / "two_timepoints.tif")[0].shape == (2, 48, 48)
    (failed, message), = summary.failures
    assert failed.name == "ten.tif" and "10 frames" in message and "groups of 9" in message
    assert not (tmp_path / "out" / "ten.tif").exists()


def test_bad_inputs_through_cli(sisr_run, tmp_path, capsys):
    """Each bad input is reported by name with its problem; good files are still written; exit 1."""
    src, out = tmp_path / "in", tmp_path / "out"
    src.mkdir()
    rng = np.random.default_rng(4)
    img = rng.poisson(_scene(24, rng))
    (src / "corrupt.tif").write_bytes(b"II*\x00" + rng.bytes(200))
    (src / "garbage.mrc").write_bytes(rng.bytes(3000))
    nan = img.astype(np.float32)
    nan[3, 4] = np.nan
    tifffile.imwrite(src / "nan.tif", nan)
    tifffile.imwrite(src / "tiny.tif", np.ones((1, 1), np.uint16))
    tifffile.imwrite(src / "rgb.tif", np.stack([img.astype(np.uint8)] * 3, -1), photometric="rgb")
    tifffile.imwrite(src / "planar.tif", np.stack([img.astype(np.uint8)] * 3), photometric="rgb",
                     planarconfig="separate")
    tifffile.imwrite(src / "good8.tif", np.clip(img, 0, 255).astype(np.uint8))
    tifffile.imwrite(src / "good16.tif", img.astype(np.uint16))
    tifffile.imwrite(src / "good32f.tif", img.astype(np.float32))
    tifffile.imwrite(src / "good32i.tif", img.astype(np.int32))

    status = cli.main(["predict", str(sisr_run), str(src), "-o", str(out), "--no-progress"])
    err = capsys.readouterr().err
    assert status == 1
    expected = {"corrupt.tif": "not a readable TIFF", "garbage.mrc": "MRC", "nan.tif": "NaN",
                "tiny.tif": "too small", "rgb.tif": "colour", "planar.tif": "colour"}
    for name, problem in expected.items():
        line = next((ln for ln in err.splitlines() if name in ln), "")
        assert problem in line, (name, err)
        assert not (out / name.replace(".mrc", ".tif")).exists()
    written = sorted(p.name for p in out.iterdir() if p.name != ".dfcan-outputs.json")  # manifest of predict
    assert written == ["good16.tif", "good32f.tif", "good32i.tif", "good8.tif"]  # no partial files either
    for name in written:
        arr, _ = read_tiff(out / name)
        assert arr.shape == (48, 48) and arr.dtype == np.uint16


def test_sim_wrong_frame_count_and_clean_run_through_cli(sim_run, sisr_run, tmp_path, capsys):
    rng = np.random.default_rng(5)
    write_tiff(tmp_path / "in" / "seven.tif", rng.integers(0, 1000, (7, 24, 24)).astype(np.uint16))
    assert cli.main(["predict", str(sim_run), str(tmp_path / "in" / "seven.tif"), "-o", str(tmp_path / "o"),
                     "--no-progress"]) == 1
    assert "seven.tif: has 7 frames" in capsys.readouterr().err
    assert not (tmp_path / "o" / "seven.tif").exists()
    # A 2-D image is one frame: a 9-channel model cannot take it.
    write_tiff(tmp_path / "in2" / "flat.tif", rng.integers(0, 1000, (24, 24)).astype(np.uint16))
    assert cli.main(["predict", str(sim_run), str(tmp_path / "in2"), "-o", str(tmp_path / "o"), "--no-progress"]) == 1
    assert "flat.tif: has 1 frames" in capsys.readouterr().err
    # All good: exit status 0 and the output path printed.
    assert cli.main(["predict", str(sisr_run), str(tmp_path / "in2"), "-o", str(tmp_path / "o"), "--no-progress",
                     "--tile-size", "16", "--overlap", "4", "--remove-outliers"]) == 0
    assert str(tmp_path / "o" / "flat.tif") in capsys.readouterr().out


def test_errors_before_any_file(sisr_run, tmp_path, capsys):
    write_tiff(tmp_path / "a" / "x.tif", np.ones((16, 16), np.uint16))
    write_tiff(tmp_path / "b" / "x.tif", np.ones((16, 16), np.uint16))
    assert cli.main(["predict", str(tmp_path / "no_run"), str(tmp_path / "a"), "-o", str(tmp_path / "o")]) == 2
    assert "run folder not found" in capsys.readouterr().err
    assert cli.main(["predict", str(sisr_run), str(tmp_path / "nothing*.tif"), "-o", str(tmp_path / "o")]) == 2
    assert "matches no files" in capsys.readouterr().err
    assert cli.main(["predict", str(sisr_run), str(tmp_path / "a"), str(tmp_path / "b"), "-o", str(tmp_path / "o")]) == 2
    assert "would both be written" in capsys.readouterr().err
    assert cli.main(["predict", str(sisr_run), str(tmp_path / "a"), "-o", str(tmp_path / "a")]) == 2
    assert "would overwrite the input" in capsys.readouterr().err
    assert not (tmp_path / "o").exists()
    with pytest.raises(DfcanError, match="no such file or folder"):
        expand_inputs([tmp_path / "missing.tif"])
    with pytest.raises(DfcanError, match="backend"):
        predict_files(sisr_run, tmp_path / "a", tmp_path / "o", backend="torch")


def test_onnx_backend_matches_keras(sisr_run, tmp_path):
    rng = np.random.default_rng(6)
    write_tiff(tmp_path / "in" / "a.tif", rng.poisson(_scene(32, rng)).astype(np.uint16))
    # --intensity stretch: both in [0, 1], so the tolerance is that of the network output.
    assert cli.main(["predict", str(sisr_run), str(tmp_path / "in"), "-o", str(tmp_path / "k"), "--no-progress",
                     "--dtype", "float32", "--intensity", "stretch"]) == 0
    assert cli.main(["predict", str(sisr_run), str(tmp_path / "in"), "-o", str(tmp_path / "x"), "--no-progress",
                     "--dtype", "float32", "--backend", "onnx", "--intensity", "stretch"]) == 0
    keras_out, _ = read_tiff(tmp_path / "k" / "a.tif")
    onnx_out, _ = read_tiff(tmp_path / "x" / "a.tif")
    np.testing.assert_allclose(onnx_out, keras_out, atol=1e-5)


def test_benchmark_predict_quick_prints_memory_and_time(capsys):
    import argparse

    from dfcan_tf.benchmark.predict import benchmark_predict

    benchmark_predict(argparse.Namespace(quick=True, threads=2), sgemm=50.0)
    line = capsys.readouterr().out
    assert "512x512 -> 1024x1024 tiled (9 tiles of 256" in line
    assert "peak memory +" in line and " MB" in line and "GFLOP/s" in line


def test_divide65535_runs_keep_the_raw_output(tmp_path):
    keras.utils.set_random_seed(3)
    cfg = DFCANConfig.dfcan(1, 2, **TINY)
    model = registry.build(cfg)
    run = write_run(tmp_path / "run", model, cfg, data={"normalization": "divide65535", "pixel_size_nm": 62.6})
    img = np.random.default_rng(7).integers(100, 3000, (24, 24)).astype(np.uint16)
    write_tiff(tmp_path / "in" / "a.tif", img)
    assert predict_files(run, tmp_path / "in", tmp_path / "out", dtype="float32", progress=False).ok
    out, _ = read_tiff(tmp_path / "out" / "a.tif")
    expected = model(img[None, :, :, None].astype(np.float32) / 65535.0, training=False).numpy()[0, ..., 0]
    np.testing.assert_allclose(out, expected, atol=1e-5)  # input / 65535, output not stretched


@pytest.mark.slow
def test_full_size_2048_tiled_prediction_stays_under_stated_memory():
    from dfcan_tf.benchmark.predict import PEAK_MEMORY_2048_MB, measure_tiled_prediction
    from dfcan_tf.inference.predict import DEFAULT_TILE_SIZE

    m = measure_tiled_prediction(DFCANConfig.dfcan(1, 2), 2048, DEFAULT_TILE_SIZE)
    assert m["output_shape"] == (4096, 4096)
    assert m["peak_mb"] < PEAK_MEMORY_2048_MB, m


# --------------------------------------------------------------------------- default overlap


def _analytic_conv_halo(model, scale: int) -> int:
    """Input pixels reached by the top-level 3×3 convolutions: 1 each on the input grid, 1/scale after upsampling."""
    convs = [layer for layer in model.layers
             if isinstance(layer, keras.layers.Conv2D) and tuple(layer.kernel_size) == (3, 3)]
    names = [layer.name for layer in convs]
    after = len(names) - names.index("output_conv")  # convolutions on the output grid
    return (len(convs) - after) + int(np.ceil(after / scale))


def test_default_overlap_covers_the_conv_halo_and_tiles_match_whole(tiny_model):
    cfg = DFCANConfig.dfcan(1, 2, **TINY)
    halo = _analytic_conv_halo(tiny_model, 2)
    assert halo == 5  # head, 2 in the one FCAB, upsampling conv, and the output conv (half an input pixel)
    rf = registry.receptive_field(cfg)
    assert rf >= halo, (rf, halo)
    overlap = registry.default_overlap(cfg)
    assert overlap >= rf and overlap % 8 == 0
    # The same figure from the configuration, the Keras model (measured on it) and a run's artefact folder.
    assert overlap_for(tiny_model, config=cfg) == overlap
    assert overlap_for(tiny_model, scale=2) == overlap
    assert overlap_for(lambda b: b) == FALLBACK_OVERLAP
    # Tiled with the default overlap vs whole: within the documented 1e-3 NRMSE (tiled vs whole above).
    img = _scene(96, np.random.default_rng(5)).astype(np.float32)
    whole = predict_image(tiny_model, img, scale=2, tile_size=0)
    tiled = predict_image(tiny_model, img, scale=2, tile_size=48, config=cfg)
    assert nrmse(tiled, whole) < 1e-3


def test_overlap_from_an_artefact_reads_its_run_config(sisr_run, tmp_path):
    from types import SimpleNamespace

    from dfcan_tf.inference.predict import config_for_artefact
    from dfcan_tf.runs import read_run_config

    cfg = read_run_config(sisr_run)[1]
    fake = sisr_run / "export" / "model.onnx"  # RUN/export/model.onnx: the run folder is two levels up
    assert config_for_artefact(fake) == cfg
    assert overlap_for(SimpleNamespace(path=fake)) == registry.default_overlap(cfg)
    assert config_for_artefact(tmp_path / "lonely.onnx") is None
    assert overlap_for(SimpleNamespace(path=tmp_path / "lonely.onnx")) == FALLBACK_OVERLAP


def test_predict_files_works_for_another_architecture(tmp_path):
    """An SRCNN run (no DFCAN fields) predicts whole and tiled; the default overlap comes from its receptive field."""
    keras.utils.set_random_seed(4)
    cfg = registry.make_config("srcnn", 1, 2, n1=8, n2=4)
    run = write_run(tmp_path / "run", registry.build(cfg), cfg, data={"normalization": "minmax"})
    rf = registry.receptive_field(cfg)
    assert rf >= (9 + 5) // 2 // 2  # 9×9 and 5×5 kernels after a 2× upsampling: at least 3 input pixels
    img = _scene(48, np.random.default_rng(9)).astype(np.uint16)
    write_tiff(tmp_path / "in" / "a.tif", img)
    whole = predict_files(run, tmp_path / "in", tmp_path / "whole", dtype="float32", tile_size=0, progress=False)
    tiled = predict_files(run, tmp_path / "in", tmp_path / "tiled", dtype="float32", tile_size=24, progress=False)
    assert whole.ok and tiled.ok, (whole.failures, tiled.failures)
    a, _ = read_tiff(tmp_path / "whole" / "a.tif")
    b, _ = read_tiff(tmp_path / "tiled" / "a.tif")
    assert a.shape == (96, 96)
    np.testing.assert_allclose(b, a, atol=1e-4)  # a purely local network stitches exactly with enough overlap
