"""Calibrated, quantitative outputs for a microscopist's own files (docs/own-data.md#pixel-size-and-intensities).

Pixel size from OME-XML, ImageJ metadata, TIFF resolution tags and MRC headers;
the run's pixel size when the file has none; a warning on a mismatch; raw
intensities (one normalisation per file); hyperstack axes kept; raw SIM summed
to wide-field for a one-channel model.
"""

from __future__ import annotations

import hashlib
from pathlib import Path

import keras
import numpy as np
import pytest
import tifffile

from dfcan_tf import cli
from dfcan_tf.data.files import read_image, read_tiff, write_mrc, write_tiff
from dfcan_tf.errors import DfcanError
from dfcan_tf.inference.files import (
    encode_uint16,
    predict_file,
    predict_files,
    raw_sim_group,
)
from dfcan_tf.nets import registry
from dfcan_tf.nets.dfcan import DFCANConfig
from dfcan_tf.runs import write_run

TINY = {"width": 8, "n_groups": 1, "n_blocks": 1, "size_psc": 16, "reduction": 4}
RUN_DATA = {"input_channels": 1, "scale": 2, "normalization": "minmax", "pixel_size_nm": 62.6}


def _net(batch: np.ndarray) -> np.ndarray:
    """A nonlinear ×2 'network' on [0, 1] input: nearest upsampling, squared (shows the mapping is undone)."""
    up = np.repeat(np.repeat(batch[..., :1], 2, axis=1), 2, axis=2)
    return up**2 * 0.8 + 0.1


def _predict(src: Path, out: Path, **kw) -> tuple[np.ndarray, dict, list[str]]:
    messages: list[str] = []
    predict_file(_net, src, out, scale=2, input_channels=1, data=dict(RUN_DATA), log=messages.append, **kw)
    arr, meta = read_tiff(out)
    return arr, meta, messages


def _scene(rng: np.random.Generator, shape=(24, 24)) -> np.ndarray:
    return rng.uniform(20.0, 300.0, size=shape)


def _sha(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


# --------------------------------------------------------------------------- pixel size


def test_pixel_size_from_every_source(tmp_path):
    img = np.arange(16 * 16, dtype=np.uint16).reshape(16, 16)
    write_tiff(tmp_path / "ij.tif", img, pixel_size_nm=62.6)
    tifffile.imwrite(tmp_path / "inch.tif", img, resolution=(254000, 254000), resolutionunit="INCH")
    tifffile.imwrite(tmp_path / "cm.tif", img, resolution=(125000, 125000), resolutionunit="CENTIMETER")
    tifffile.imwrite(tmp_path / "none.tif", img, resolution=(5, 5), resolutionunit="NONE")
    tifffile.imwrite(tmp_path / "one.tif", img, resolution=(1, 1), resolutionunit="INCH")
    tifffile.imwrite(tmp_path / "ome.ome.tif", img[None, None], ome=True,
                     metadata={"axes": "ZCYX", "PhysicalSizeX": 0.05, "PhysicalSizeXUnit": "µm"})
    tifffile.imwrite(tmp_path / "ome_nm.ome.tif", img, ome=True,
                     metadata={"axes": "YX", "PhysicalSizeX": 80, "PhysicalSizeXUnit": "nm"})
    tifffile.imwrite(tmp_path / "ij_nm.tif", img, imagej=True, resolution=(0.02, 0.02),
                     metadata={"axes": "YX", "unit": "nm"})
    write_mrc(tmp_path / "a.mrc", img, pixel_size_nm=31.3)
    expected = {"ij.tif": (62.6, "ImageJ metadata"), "inch.tif": (100.0, "TIFF resolution tags"),
                "cm.tif": (80.0, "TIFF resolution tags"), "none.tif": (None, None), "one.tif": (None, None),
                "ome.ome.tif": (50.0, "OME-XML PhysicalSizeX"), "ome_nm.ome.tif": (80.0, "OME-XML PhysicalSizeX"),
                "ij_nm.tif": (50.0, "ImageJ metadata"), "a.mrc": (31.3, "MRC header")}
    for name, (size, source) in expected.items():
        _, meta = read_image(tmp_path / name)
        if size is None:
            assert "pixel_size_nm" not in meta, name
        else:
            assert meta["pixel_size_nm"] == pytest.approx(size, rel=1e-3), name
            assert meta["pixel_size_source"] == source, name


def test_run_pixel_size_used_and_mismatch_warned(tmp_path):
    rng = np.random.default_rng(0)
    tifffile.imwrite(tmp_path / "bare.tif", _scene(rng).astype(np.uint16))
    write_tiff(tmp_path / "fine.tif", _scene(rng).astype(np.uint16), pixel_size_nm=65.0)  # within 10 %
    write_tiff(tmp_path / "coarse.tif", _scene(rng).astype(np.uint16), pixel_size_nm=100.0)
    _, meta, log = _predict(tmp_path / "bare.tif", tmp_path / "o" / "bare.tif")
    assert any("pixel size 62.6 nm (from the run; file has none)" in m for m in log)
    assert meta["pixel_size_nm"] == pytest.approx(31.3, rel=1e-3)
    _, meta, log = _predict(tmp_path / "fine.tif", tmp_path / "o" / "fine.tif")
    assert not any("warning" in m for m in log) and any("ImageJ metadata" in m for m in log)
    assert meta["pixel_size_nm"] == pytest.approx(32.5, rel=1e-3)
    _, meta, log = _predict(tmp_path / "coarse.tif", tmp_path / "o" / "coarse.tif")
    (warning,) = [m for m in log if m.startswith("warning")]
    assert "100 nm" in warning and "62.6 nm" in warning
    assert meta["pixel_size_nm"] == pytest.approx(50.0, rel=1e-3)


# --------------------------------------------------------------------------- intensities


def test_raw_intensities_follow_exposure_stretch_does_not(tmp_path):
    rng = np.random.default_rng(1)
    a = _scene(rng, (2, 24, 24)).astype(np.float32)
    a[1] *= 0.5  # a dimmer second frame: raw keeps it dimmer (one mapping per file)
    write_tiff(tmp_path / "a.tif", a, dtype="float32", axes="TYX")
    write_tiff(tmp_path / "b.tif", 2 * a, dtype="float32", axes="TYX")
    raw_a, _, _ = _predict(tmp_path / "a.tif", tmp_path / "raw" / "a.tif", intensity="raw", dtype="float32")
    raw_b, _, _ = _predict(tmp_path / "b.tif", tmp_path / "raw" / "b.tif", intensity="raw", dtype="float32")
    assert raw_a.shape == (2, 48, 48) and raw_a.dtype == np.float32
    np.testing.assert_allclose(raw_b / raw_a, 2.0, rtol=0.01)
    # In input units: the brighter frame's output spans about the input's range, the dim one about half.
    assert raw_a[0].max() == pytest.approx(0.9 * (a.max() - a.min()) + a.min(), rel=0.01)
    assert raw_a[1].mean() < 0.7 * raw_a[0].mean()
    st_a, _, _ = _predict(tmp_path / "a.tif", tmp_path / "st" / "a.tif", intensity="stretch", dtype="float32")
    st_b, _, _ = _predict(tmp_path / "b.tif", tmp_path / "st" / "b.tif", intensity="stretch", dtype="float32")
    np.testing.assert_allclose(st_a, st_b, atol=1e-5)
    assert st_a[1].max() == pytest.approx(1.0) and st_a[0].max() == pytest.approx(1.0)  # per frame

    # uint16 with raw: one linear map per file, stated as ImageJ calibration (c0 + c1 * stored).
    u_a, _, _ = _predict(tmp_path / "a.tif", tmp_path / "u16" / "a.tif", intensity="raw")
    u_b, _, _ = _predict(tmp_path / "b.tif", tmp_path / "u16" / "b.tif", intensity="raw")
    calibrated = []
    for name, stored in (("a.tif", u_a), ("b.tif", u_b)):
        with tifffile.TiffFile(tmp_path / "u16" / name) as tif:
            ij = tif.imagej_metadata
        assert stored.dtype == np.uint16 and ij["cf"] == 0 and stored.max() == 65535
        calibrated.append(ij["c0"] + ij["c1"] * stored.astype(np.float64))
    np.testing.assert_allclose(calibrated[1] / calibrated[0], 2.0, rtol=0.01)
    np.testing.assert_allclose(calibrated[0], raw_a, rtol=1e-3)


def test_uint16_counts_stay_counts():
    values = np.array([[0.2, 1000.4], [65535.0, 12.0]])
    stored, (c0, c1, unit) = encode_uint16(values, integer_input=True)
    assert (c0, c1, unit) == (0.0, 1.0, "counts")
    np.testing.assert_array_equal(stored, [[0, 1000], [65535, 12]])
    stored, (c0, c1, _) = encode_uint16(values * 2, integer_input=True)  # beyond 16 bits: scaled
    assert stored.max() == 65535 and stored.min() == 0
    np.testing.assert_allclose(c0 + c1 * stored, values * 2, atol=c1)


# --------------------------------------------------------------------------- axes


def test_tzyx_hyperstack_round_trip(tmp_path):
    rng = np.random.default_rng(2)
    stack = rng.uniform(10, 500, size=(2, 3, 16, 20)).astype(np.uint16)
    tifffile.imwrite(tmp_path / "tz.tif", stack, imagej=True, resolution=(1 / 0.0626, 1 / 0.0626),
                     metadata={"axes": "TZYX", "unit": "um", "spacing": 0.25})
    out, meta, _ = _predict(tmp_path / "tz.tif", tmp_path / "o" / "tz.tif", intensity="stretch", dtype="float32")
    with tifffile.TiffFile(tmp_path / "o" / "tz.tif") as tif:
        axes, shape, ij = tif.series[0].axes, tif.series[0].shape, tif.imagej_metadata
    assert axes == "TZYX" and shape == (2, 3, 32, 40) and ij["frames"] == 2 and ij["slices"] == 3
    assert ij["spacing"] == pytest.approx(0.25)  # z step kept, only Y and X scaled
    assert meta["pixel_size_nm"] == pytest.approx(31.3, rel=1e-3)
    # Frame (t, z) of the output is the prediction of frame (t, z) of the input.
    x = stack[1, 2].astype(np.float64)
    expected = _net(((x - x.min()) / (x.max() - x.min()))[None, ..., None])[0, ..., 0]
    expected = (expected - expected.min()) / (expected.max() - expected.min())
    np.testing.assert_allclose(out.reshape(2, 3, 32, 40)[1, 2], expected, atol=1e-5)


def test_ome_tczyx_written_in_imagej_order(tmp_path):
    stack = np.random.default_rng(3).uniform(10, 500, size=(2, 2, 3, 8, 8)).astype(np.float32)
    tifffile.imwrite(tmp_path / "c.ome.tif", stack, ome=True, metadata={"axes": "TCZYX"})
    _predict(tmp_path / "c.ome.tif", tmp_path / "o" / "c.tif", intensity="raw", dtype="float32")
    with tifffile.TiffFile(tmp_path / "o" / "c.tif") as tif:
        axes, out = tif.series[0].axes, tif.series[0].asarray()
    assert axes == "TZCYX" and out.shape == (2, 3, 2, 16, 16)
    # (t=1, c=0, z=2) of the input is (t=1, z=2, c=0) of the output, through ONE whole-file mapping.
    lo, hi = float(stack.min()), float(stack.max())
    x = (stack[1, 0, 2].astype(np.float64) - lo) / (hi - lo)
    np.testing.assert_allclose(out[1, 2, 0, ::2, ::2], (x**2 * 0.8 + 0.1) * (hi - lo) + lo, rtol=1e-4)


# --------------------------------------------------------------------------- raw SIM to wide-field


def test_raw_sim_group_rules(tmp_path):
    assert raw_sim_group(tmp_path / "cell.tif", 9, 1, None) is None  # a time series
    assert raw_sim_group(tmp_path / "cell.tif", 18, 1, 9) == 9
    assert raw_sim_group(tmp_path / "RawSIMData_level_01.mrc", 9, 1, None) == 9
    assert raw_sim_group(tmp_path / "RawSIMData_level_01.mrc", 25, 1, None) == 25
    assert raw_sim_group(tmp_path / "cell.tif", 9, 9, None) is None  # a SIM model groups frames itself
    with pytest.raises(DfcanError, match="10 frames.*9 frames"):
        raw_sim_group(tmp_path / "cell.tif", 10, 1, 9)
    with pytest.raises(DfcanError, match="RawSIMData"):
        raw_sim_group(tmp_path / "RawSIMData_gt.mrc", 10, 1, None)
    with pytest.raises(DfcanError, match="takes 9 raw frames"):
        raw_sim_group(tmp_path / "cell.tif", 25, 9, 25)


@pytest.fixture(scope="module")
def sisr_run(tmp_path_factory):
    keras.utils.set_random_seed(5)
    cfg = DFCANConfig.dfcan(1, 2, **TINY)
    return write_run(tmp_path_factory.mktemp("runs") / "sisr", registry.build(cfg), cfg,
                     data={"task": "sisr", **RUN_DATA})


def test_nine_frame_sim_stack_summed_for_a_sisr_model(sisr_run, tmp_path, capsys):
    rng = np.random.default_rng(4)
    frames = rng.poisson(_scene(rng, (9, 24, 24)) / 9).astype(np.uint16)
    write_tiff(tmp_path / "in" / "sim.tif", frames, pixel_size_nm=62.6)
    write_tiff(tmp_path / "wf" / "sim.tif", frames.sum(axis=0, dtype=np.uint32).astype(np.uint16),
               pixel_size_nm=62.6)
    write_tiff(tmp_path / "bad" / "ten.tif", np.concatenate([frames, frames[:1]]), pixel_size_nm=62.6)
    before = _sha(tmp_path / "bad" / "ten.tif")

    assert cli.main(["predict", str(sisr_run), str(tmp_path / "in"), "-o", str(tmp_path / "out"),
                     "--sim-frames", "9", "--no-progress", "--dtype", "float32"]) == 0
    err = capsys.readouterr().err
    assert "9 frames summed to 1 wide-field image" in err
    summed, _ = read_tiff(tmp_path / "out" / "sim.tif")
    assert predict_files(sisr_run, tmp_path / "wf", tmp_path / "wf_out", dtype="float32", intensity="raw",
                         progress=False).ok
    np.testing.assert_allclose(summed, read_tiff(tmp_path / "wf_out" / "sim.tif")[0], rtol=1e-4, atol=1e-3)
    assert summed.shape == (48, 48)

    # Without --sim-frames a 9-frame TIFF is a time series of 9 frames.
    assert cli.main(["predict", str(sisr_run), str(tmp_path / "in"), "-o", str(tmp_path / "ts"),
                     "--no-progress"]) == 0
    assert read_tiff(tmp_path / "ts" / "sim.tif")[0].shape == (9, 48, 48)

    # A BioSR raw SIM MRC is recognised by its name; 18 frames give 2 wide-field images.
    write_mrc(tmp_path / "cell" / "RawSIMData_level_01.mrc", np.concatenate([frames, frames]), pixel_size_nm=62.6)
    assert predict_files(sisr_run, tmp_path / "cell", tmp_path / "cell_out", progress=False).ok
    assert read_tiff(tmp_path / "cell_out" / "RawSIMData_level_01.tif")[0].shape == (2, 48, 48)

    # A frame count that does not fit is refused by name; the input is untouched, nothing written.
    assert cli.main(["predict", str(sisr_run), str(tmp_path / "bad"), "-o", str(tmp_path / "bad_out"),
                     "--sim-frames", "9", "--no-progress"]) == 1
    err = capsys.readouterr().err
    assert "ten.tif" in err and "10 frames" in err and "--sim-frames 9" in err
    assert _sha(tmp_path / "bad" / "ten.tif") == before and not (tmp_path / "bad_out" / "ten.tif").exists()
    with pytest.raises(SystemExit) as exc:
        cli.main(["predict", str(sisr_run), str(tmp_path / "in"), "-o", str(tmp_path / "x"), "--sim-frames", "7"])
    assert exc.value.code == 2
