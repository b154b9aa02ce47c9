"""Conventional SIM reconstruction on the project's simulated cells: estimation, identity, quality, CLI."""

import argparse
import hashlib
import json
import math

import numpy as np
import pytest

from dfcan_tf.cli import sim_reconstruct as command
from dfcan_tf.data.files import read_tiff, write_mrc
from dfcan_tf.data.simulate import PAD_RAW, simulate_cell, simulate_dataset
from dfcan_tf.errors import DfcanError
from dfcan_tf.evaluation.metrics import nrmse
from dfcan_tf.evaluation.resolution import decorrelation_resolution
from dfcan_tf.sim import (
    SIMParameters,
    combine_bands,
    estimate_parameters,
    parameters_from_simulation,
    reconstruct_linear,
    reconstruct_nonlinear,
    separate_bands,
)

OPTICS = dict(na=1.3, emission_nm=525.0)


@pytest.fixture(scope="module")
def linear_cell():
    return simulate_cell("Microtubules", size=128, n_levels=2, seed=3)


@pytest.fixture(scope="module")
def nonlinear_cell():
    return simulate_cell("F-actin_Nonlinear", size=96, n_levels=2, seed=5)


def _errors(est: SIMParameters, params: dict) -> tuple[float, float, float]:
    """Largest relative frequency error, angle error (degrees) and relative modulation error."""
    f_true = params["pattern_frequency_per_um"] / 1000.0 * params["raw_pixel_nm"]
    f_err = max(abs(o.frequency / f_true - 1.0) for o in est.orientations)
    pairs = zip(est.orientations, params["orientations_deg"])
    a_err = max(abs(math.remainder(o.angle_deg - a, 180.0)) for o, a in pairs)
    m_err = max(abs(o.modulation / params["modulation"] - 1.0) for o in est.orientations)
    return f_err, a_err, m_err


def test_blind_estimation_linear(linear_cell):
    p = linear_cell.params
    est = estimate_parameters(linear_cell.raw[-1], pixel_nm=p["raw_pixel_nm"], **OPTICS)
    f_err, a_err, m_err = _errors(est, p)
    print(f"linear estimation: frequency {100 * f_err:.3f}%, angle {a_err:.3f} deg, modulation {100 * m_err:.1f}%")
    assert f_err < 0.005 and a_err < 0.5 and m_err < 0.2, (f_err, a_err, m_err)
    # The phase refers to raw pixel (0, 0): the simulator's pattern there (its field starts PAD_RAW pixels earlier).
    f = p["pattern_frequency_per_um"] / 1000.0 * p["raw_pixel_nm"]
    for o, a in zip(est.orientations, p["orientations_deg"]):
        th = math.radians(a)
        true_phase = 2 * math.pi * f * PAD_RAW * (math.cos(th) + math.sin(th))
        assert abs(math.remainder(o.phase_rad - true_phase, 2 * math.pi)) < 0.3
    doc = est.to_dict()
    row = doc["orientations"][0]
    assert set(row) >= {"k_cycles_per_pixel", "period_nm", "angle_deg", "phase_rad", "modulation"}
    assert row["period_nm"] == pytest.approx(p["pattern_period_nm"], rel=0.005)


def test_band_separation_identity(linear_cell, nonlinear_cell):
    for frames, n in ((linear_cell.raw[0].astype(float), 3), (nonlinear_cell.raw[0].astype(float), 5)):
        bands = separate_bands(frames, n_orientations=n, n_phases=n)
        assert bands.shape == (n, n, *frames.shape[1:])
        np.testing.assert_allclose(combine_bands(bands), frames, atol=1e-8 * frames.max())
    # Band 0 is the mean of the phases (the WF spectrum / n_phases).
    f = linear_cell.raw[0].astype(float)
    np.testing.assert_allclose(np.fft.ifft2(separate_bands(f)[0, 1]).real, f[:3].mean(0), atol=1e-6)
    with pytest.raises(DfcanError, match="8 frames, expected 9"):
        separate_bands(f[:8])


def test_linear_beats_widefield(linear_cell):
    from dfcan_tf.evaluation.evaluate import bicubic_upsample

    p = linear_cell.params
    px = p["raw_pixel_nm"]
    raw = linear_cell.raw[-1]
    sim, est = reconstruct_linear(raw, pixel_nm=px, **OPTICS)
    assert sim.shape == (256, 256) and sim.dtype == np.float32 and sim.min() >= 0
    assert est.extra["output_pixel_nm"] == pytest.approx(px / 2)
    gt = linear_cell.gt.astype(np.float64)
    wf = raw.astype(np.float64).sum(0)
    e_sim, e_wf = nrmse(sim, gt), nrmse(bicubic_upsample(wf, 2), gt)
    r_sim, r_wf = decorrelation_resolution(sim, px / 2), decorrelation_resolution(wf, px)
    r_gt = decorrelation_resolution(gt, px / 2)
    print(f"linear: NRMSE SIM {e_sim:.3f} vs WF bicubic {e_wf:.3f}; resolution SIM {r_sim:.0f} nm, "
          f"WF {r_wf:.0f} nm, GT-SIM {r_gt:.0f} nm")
    assert e_sim < 0.5 * e_wf
    assert r_sim < 0.75 * r_wf
    # Known wave vectors (simulation.json) give the same image as blind estimation.
    known, _ = reconstruct_linear(raw, pixel_nm=px, params=parameters_from_simulation(p), **OPTICS)
    assert nrmse(known, gt) < e_sim + 0.01


def test_nonlinear_resolves_finer(nonlinear_cell):
    p = nonlinear_cell.params
    px = p["raw_pixel_nm"]
    raw = nonlinear_cell.raw[-1]
    nl, est = reconstruct_nonlinear(raw, pixel_nm=px, **OPTICS)
    assert nl.shape == (288, 288) and est.extra["output_pixel_nm"] == pytest.approx(px / 3)
    f_err, a_err, m_err = _errors(est, p)
    h_err = max(abs(o.harmonic / p["second_harmonic"] - 1.0) for o in est.orientations)
    assert f_err < 0.005 and a_err < 0.5 and m_err < 0.2 and h_err < 0.3, (f_err, a_err, m_err, h_err)
    lin, _ = reconstruct_nonlinear(raw, pixel_nm=px, params=est, orders=1, **OPTICS)
    gt = nonlinear_cell.gt.astype(np.float64)
    r_nl, r_lin = decorrelation_resolution(nl, px / 3), decorrelation_resolution(lin, px / 3)
    e_nl, e_lin = nrmse(nl, gt), nrmse(lin, gt)
    print(f"nonlinear: resolution {r_nl:.0f} nm vs linear orders {r_lin:.0f} nm; NRMSE {e_nl:.3f} vs {e_lin:.3f}; "
          f"errors f {f_err:.4f} angle {a_err:.3f} m {m_err:.3f} h {h_err:.3f}")
    assert r_nl < 0.85 * r_lin
    assert e_nl < e_lin


def _hashes(root):
    return {p: hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(root.rglob("*")) if p.is_file()}


def _run(argv):
    parser = argparse.ArgumentParser()
    command.add_arguments(parser)
    return command.run_from_args(parser.parse_args(argv))


def test_cli_biosr_folder(tmp_path):
    data = tmp_path / "data"
    simulate_dataset(data, specimens="CCPs", cells=1, n_levels=1, size=64, progress=False)
    before = _hashes(data)
    out = tmp_path / "out"
    assert _run([str(data), "-o", str(out), "--no-progress"]) == 0
    img, meta = read_tiff(out / "CCPs" / "Cell_001_level_01.tif")
    assert img.shape == (128, 128) and img.dtype == np.uint16 and img.max() == 65535
    assert meta["pixel_size_nm"] == pytest.approx(31.3, abs=0.01)
    doc = json.loads((out / "CCPs" / "Cell_001_level_01.json").read_text())
    assert len(doc["orientations"]) == 3 and doc["tiff_scale"] > 0
    sim = json.loads((data / "CCPs" / "Cell_001" / "simulation.json").read_text())
    assert doc["orientations"][0]["period_nm"] == pytest.approx(sim["pattern_period_nm"], rel=0.02)
    # A second run refuses without --overwrite; with it, replaces its own output.
    with pytest.raises(DfcanError, match="--overwrite"):
        _run([str(data), "-o", str(out), "--no-progress"])
    assert _run([str(data), "-o", str(out), "--no-progress", "--overwrite", "--known"]) == 0
    assert _hashes(data) == before


def test_cli_errors_name_the_file(tmp_path):
    bad = tmp_path / "stack.mrc"
    write_mrc(bad, np.ones((8, 64, 64), np.uint16), pixel_size_nm=62.6)
    before = _hashes(tmp_path)
    with pytest.raises(DfcanError, match=r"stack\.mrc: 8 frames"):
        _run([str(bad), "-o", str(tmp_path / "out"), "--no-progress"])
    assert not (tmp_path / "out").exists()
    with pytest.raises(DfcanError, match="holds the input"):
        _run([str(bad), "-o", str(tmp_path), "--no-progress", "--overwrite"])
    with pytest.raises(DfcanError, match="--wiener"):
        _run([str(bad), "-o", str(tmp_path / "o2"), "--wiener", "-1"])
    assert _hashes(tmp_path) == before
