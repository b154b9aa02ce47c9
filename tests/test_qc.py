"""Forward-consistency QC (dfcan_tf.evaluation.qc, ``dfcan qc``): calibration in noise units and detection.

All data come from the simulator (small cells, 9 signal levels). The SR image
standing for a perfect prediction is the simulator's noise-free GT-SIM
(``gt_clean``: the structure imaged with the OTF of 2× the detection cutoff);
``qc`` divides that OTF out inside the wide-field support (``sr_support``), so
its re-imaging equals the wide-field imaging of the structure itself.
"""

from __future__ import annotations

import argparse
import hashlib
import json

import numpy as np
import pytest
from scipy.stats import mannwhitneyu

from dfcan_tf.data.files import read_image, write_mrc, write_tiff
from dfcan_tf.data.simulate import detection_cutoff, simulate_cell
from dfcan_tf.errors import DfcanError
from dfcan_tf.evaluation.qc import (
    estimate_noise,
    forward_consistency,
    reimage,
    roc_auc,
    smooth_z,
)


@pytest.fixture(scope="module")
def cells():
    return {s: simulate_cell(s, size=64, n_levels=9, seed=3) for s in ("Microtubules", "CCPs")}


def _border_mask(shape, result, scale=2):
    b = scale * result.params["settings"]["border_px"]
    m = np.zeros(shape, bool)
    m[b:-b, b:-b] = True
    return m


def test_reimage_matches_simulator(cells):
    """Re-imaging the structure reproduces the simulator's noise-free WF (away from the mirrored edges)."""
    cell = cells["Microtubules"]
    wf = cell.wf_clean / len(cell.clean_frames)  # the pattern averages to 1 over the phases
    got = reimage(cell.structure, 2, sr_support=None)
    inner = (slice(8, -8), slice(8, -8))
    assert np.max(np.abs(got - wf)[inner]) < 0.01 * wf.max()
    # GT-SIM carries the 2× OTF; dividing it out gives the same image.
    got_gt = reimage(cell.gt_clean, 2, sr_support=2.0)
    assert np.max(np.abs(got_gt - wf)[inner]) < 0.02 * wf.max()


@pytest.mark.parametrize("specimen", ["Microtubules", "CCPs"])
def test_calibrated_at_every_level(cells, specimen):
    """GT-SIM against its own noisy WF: residual RMS / noise RMS within 10% of 1 at all 9 levels."""
    cell = cells[specimen]
    ratios = [forward_consistency(cell.gt_clean, cell.wf[lv], scale=2).scores["rms_ratio"] for lv in range(9)]
    assert np.all(np.abs(np.array(ratios) - 1.0) < 0.1), ratios
    # The object itself (no SR OTF) and the raw SIM stack (compared through its WF sum) are calibrated too.
    r_obj = forward_consistency(cell.structure, cell.wf[4], scale=2, sr_support=None).scores["rms_ratio"]
    r_sim = forward_consistency(cell.gt_clean, cell.raw[0], scale=2).scores["rms_ratio"]
    assert abs(r_obj - 1.0) < 0.1 and abs(r_sim - 1.0) < 0.1


def test_given_camera_parameters(cells):
    """The simulator's camera (gain 1, read noise 1.5 e⁻, offset 100 per frame) gives a calibrated z."""
    cell = cells["Microtubules"]
    for lv in (0, 8):
        r = forward_consistency(cell.gt_clean, cell.raw[lv], scale=2, gain=1.0, read_noise=1.5, offset=100.0)
        assert r.params["noise"]["source"] == "given"
        assert abs(r.scores["rms_ratio"] - 1.0) < 0.1
    est = estimate_noise(cell.wf[4])
    assert 0.7 < est.a < 1.3  # gain 1 ADU/e⁻ recovered from the spectrum beyond the cutoff
    with pytest.raises(DfcanError, match="--read-noise and --offset"):
        estimate_noise(cell.wf[4], read_noise=1.5)


def test_smoothing_keeps_unit_variance():
    z = np.random.default_rng(0).standard_normal((256, 256))
    s = smooth_z(z, 1.35)
    assert abs(s[10:-10, 10:-10].std() - 1.0) < 0.05
    assert np.mean(np.abs(s) > 3.0) < 0.006  # the |z| > 3 false-alarm rate stays near 0.27%


def test_auc_matches_mann_whitney():
    rng = np.random.default_rng(1)
    scores = np.round(rng.normal(size=500), 1)  # ties
    labels = rng.random(500) < 0.3
    scores[labels] += 0.7
    u = mannwhitneyu(scores[labels], scores[~labels]).statistic / (labels.sum() * (~labels).sum())
    assert roc_auc(scores, labels) == pytest.approx(u, abs=1e-12)


def _line_mask(n):
    yy, xx = np.mgrid[0:n, 0:n]
    d = np.abs((yy - 40) - 0.5 * (xx - 30)) / np.sqrt(1.25)
    return (d < 1.0) & (xx > 30) & (xx < 90)


def test_inserted_structure_flagged(cells):
    """A bright line absent from the sample: ROC AUC ≥ 0.9 for its pixels at every level; the fit ignores it."""
    cell = cells["Microtubules"]
    gt = cell.gt_clean.astype(np.float64)
    line = _line_mask(gt.shape[0])
    fake = gt.copy()
    fake[line] += np.percentile(gt, 99)
    aucs = []
    for lv in range(9):
        clean = forward_consistency(gt, cell.wf[lv], scale=2)
        r = forward_consistency(fake, cell.wf[lv], scale=2)
        m = _border_mask(gt.shape, r)
        score = np.abs(r.z_sr)[m]
        aucs.append(roc_auc(score, line[m]))
        u = mannwhitneyu(score[line[m]], score[~line[m]]).statistic / (line[m].sum() * (~line[m]).sum())
        assert aucs[-1] == pytest.approx(u, abs=1e-9)
        g0, g1 = clean.params["intensity_map"]["gain"], r.params["intensity_map"]["gain"]
        assert abs(g1 / g0 - 1.0) < 0.03  # the robust fit is not pulled by the fake line
        assert r.scores["fraction_above_k"] > 5 * clean.scores["fraction_above_k"]
    assert min(aucs) >= 0.9, aucs


def test_erased_structure_flagged(cells):
    """A bright structure set to background: AUC ≥ 0.9 for its erased pixels at every level."""
    cell = cells["Microtubules"]
    gt = cell.gt_clean.astype(np.float64)
    inner = gt[30:-30, 30:-30]
    cy, cx = (int(v) + 30 for v in np.unravel_index(np.argmax(inner), inner.shape))
    box = np.zeros(gt.shape, bool)
    box[cy - 8:cy + 8, cx - 8:cx + 8] = True
    erased = gt.copy()
    erased[box] = np.percentile(gt, 5)
    struct = box & (gt > np.percentile(gt, 75))
    aucs = []
    for lv in range(9):
        r = forward_consistency(erased, cell.wf[lv], scale=2)
        m = _border_mask(gt.shape, r)
        aucs.append(roc_auc(np.abs(r.z_sr)[m], struct[m]))
        assert r.z_sr[struct].mean() > 3.0  # positive: the measurement is brighter than the prediction
    assert min(aucs) >= 0.9, aucs


def test_sim_frames_calibrated(cells):
    """A raw SIM stack is also compared frame by frame through the estimated patterns; calibrated too."""
    cell = cells["Microtubules"]
    for lv in (0, 4, 8):
        r = forward_consistency(cell.gt_clean, cell.raw[lv], scale=2)
        ratios = np.array(r.scores["frames"]["rms_ratio_per_frame"])
        assert r.z_frames.shape == (9, 64, 64) and len(ratios) == 9
        assert abs(r.scores["frames"]["rms_ratio"] - 1.0) < 0.1 and np.all(np.abs(ratios - 1.0) < 0.1), ratios
        assert len(r.params["sim_parameters"]["orientations"]) == 3
    nl = simulate_cell("F-actin_Nonlinear", size=48, n_levels=2, seed=3)
    r = forward_consistency(nl.gt_clean, nl.raw[1], scale=3)
    assert r.z_frames.shape == (25, 48, 48)
    assert abs(r.scores["rms_ratio"] - 1.0) < 0.1 and abs(r.scores["frames"]["rms_ratio"] - 1.0) < 0.1
    assert forward_consistency(cell.gt_clean, cell.raw[0], scale=2, frames=False).z_frames is None


def test_frames_catch_missing_super_resolution(cells):
    """An SR image cut to the wide-field band is consistent with the WF sum, but not with the SIM frames."""
    cell = cells["Microtubules"]
    st = cell.structure.astype(np.float64)
    n = st.shape[0]
    f = np.hypot(np.fft.fftfreq(n, 31.3)[:, None], np.fft.rfftfreq(n, 31.3)[None, :])
    low = np.fft.irfft2(np.fft.rfft2(st) * (f < detection_cutoff()), s=st.shape)
    truth = forward_consistency(st, cell.raw[8], scale=2, sr_support=None)
    cut = forward_consistency(low, cell.raw[8], scale=2, sr_support=None)
    assert abs(cut.scores["rms_ratio"] - truth.scores["rms_ratio"]) < 0.02  # the WF sum cannot tell
    assert truth.scores["frames"]["rms_ratio"] < 1.1
    assert cut.scores["frames"]["rms_ratio"] > 1.3
    assert cut.scores["frames"]["fraction_above_k"] > 5 * truth.scores["frames"]["fraction_above_k"]


def test_shape_and_argument_errors(cells):
    cell = cells["Microtubules"]
    with pytest.raises(DfcanError, match="at scale 2 the SR image must be 128×128"):
        forward_consistency(cell.gt_clean[:120, :120], cell.wf[0], scale=2)
    with pytest.raises(DfcanError, match="expected 1 .wide-field. or 9 / 25"):
        forward_consistency(cell.gt_clean, cell.raw[0, :4], scale=2)
    with pytest.raises(DfcanError, match="k must be"):
        forward_consistency(cell.gt_clean, cell.wf[0], scale=2, k=0.0)


# --------------------------------------------------------------------------- CLI
def _parse(argv):
    from dfcan_tf.cli import qc as cli_qc

    parser = argparse.ArgumentParser(prog="dfcan qc")
    cli_qc.add_arguments(parser)
    return cli_qc, parser.parse_args(argv)


def _hash(path):
    return hashlib.sha256(path.read_bytes()).hexdigest()


def test_cli_writes_outputs(cells, tmp_path, capsys):
    cell = cells["Microtubules"]
    sr = write_tiff(tmp_path / "sr.tif", cell.gt_clean, pixel_size_nm=31.3, dtype="float32")
    raw = write_mrc(tmp_path / "raw.mrc", cell.raw[4], pixel_size_nm=62.6, wavelength_nm=525.0, mode=6)
    before = {p: _hash(p) for p in (sr, raw)}
    out = tmp_path / "qc"
    cli_qc, args = _parse([str(sr), str(raw), "-o", str(out)])
    assert cli_qc.run_from_args(args) == 0
    printed = capsys.readouterr().out
    assert "qc: residual RMS / noise RMS" in printed and "WF sum of 9 frames" in printed
    z, meta = read_image(out / "qc_map.tif")
    assert z.shape == (1, 128, 128) and z.dtype == np.float32
    assert meta["pixel_size_nm"] == pytest.approx(31.3, rel=1e-4)
    assert (out / "qc_overlay.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    zf, meta_f = read_image(out / "qc_frames.tif")
    assert zf.shape == (9, 128, 128) and meta_f["pixel_size_nm"] == pytest.approx(31.3, rel=1e-4)
    doc = json.loads((out / "qc.json").read_text())
    assert abs(doc["scores"]["rms_ratio"] - 1.0) < 0.1 and abs(doc["scores"]["frames"]["rms_ratio"] - 1.0) < 0.1
    assert len(doc["sim_parameters"]["orientations"]) == 3
    assert {"intensity_map", "noise", "optics", "settings"} <= set(doc)
    assert doc["settings"]["scale"] == 2 and doc["optics"]["pixel_nm"] == pytest.approx(62.6)
    assert {p: _hash(p) for p in (sr, raw)} == before
    # A second run needs --overwrite, then replaces its own output.
    with pytest.raises(DfcanError, match="--overwrite"):
        cli_qc.run_from_args(_parse([str(sr), str(raw), "-o", str(out)])[1])
    assert cli_qc.run_from_args(_parse([str(sr), str(raw), "-o", str(out), "--overwrite", "--quiet"])[1]) == 0


def test_cli_refuses_mismatch(cells, tmp_path):
    cell = cells["Microtubules"]
    sr = write_tiff(tmp_path / "sr.tif", cell.gt_clean[:120, :120], dtype="float32")
    wf = write_tiff(tmp_path / "wf.tif", cell.wf[0].astype(np.float32), dtype="float32")
    before = {p: _hash(p) for p in (sr, wf)}
    out = tmp_path / "qc"
    cli_qc, args = _parse([str(sr), str(wf), "-o", str(out), "--scale", "2"])
    with pytest.raises(DfcanError) as exc:
        cli_qc.run_from_args(args)
    msg = str(exc.value)
    assert "sr.tif" in msg and "wf.tif" in msg and "--scale 2" in msg
    with pytest.raises(DfcanError, match="not an integer multiple"):
        cli_qc.run_from_args(_parse([str(sr), str(wf), "-o", str(out)])[1])
    with pytest.raises(DfcanError, match="--sr-support"):
        cli_qc.run_from_args(_parse([str(sr), str(wf), "-o", str(out), "--sr-support", "0.5"])[1])
    assert not out.exists()
    assert {p: _hash(p) for p in (sr, wf)} == before
    # The output may not be an input.
    with pytest.raises(DfcanError, match="input"):
        cli_qc.run_from_args(_parse([str(sr), str(wf), "-o", str(tmp_path)])[1])


def test_cli_uncalibrated_tiff_uses_the_default_pixel_size(cells, tmp_path, capsys):
    """A TIFF without resolution tags is uncalibrated (no pixel size); qc uses the default 62.6 nm."""
    cell = cells["CCPs"]
    sr = write_tiff(tmp_path / "sr.tif", cell.gt_clean, dtype="float32")
    wf = write_tiff(tmp_path / "wf.tif", cell.wf[3].astype(np.float32), dtype="float32")
    cli_qc, args = _parse([str(sr), str(wf), "-o", str(tmp_path / "out")])
    assert cli_qc.run_from_args(args) == 0
    doc = json.loads((tmp_path / "out" / "qc.json").read_text())
    assert doc["optics"]["pixel_nm"] == pytest.approx(62.6) and abs(doc["scores"]["rms_ratio"] - 1.0) < 0.1
    assert not (tmp_path / "out" / "qc_frames.tif").exists()
