"""Physics of the simulated BioSR-like data, its BioSR layout, and BioSR discovery."""

from __future__ import annotations

import json
import warnings

import mrcfile
import numpy as np
import pytest
from skimage.metrics import peak_signal_noise_ratio

from dfcan_tf.cli import main
from dfcan_tf.data.biosr import discover, parse_cells
from dfcan_tf.data.files import read_mrc
from dfcan_tf.data.simulate import (
    SPECIMENS,
    detection_cutoff,
    pupil_otf,
    simulate_cell,
    simulate_dataset,
)
from dfcan_tf.errors import DfcanError

RAW_NM = 62.6
FC = detection_cutoff(1.3, 525.0)


@pytest.fixture(scope="module", params=["Microtubules", "F-actin_Nonlinear"])
def cell(request):
    return simulate_cell(request.param, size=64, n_levels=9, seed=7)


@pytest.fixture(scope="module")
def dataset(tmp_path_factory):
    root = tmp_path_factory.mktemp("biosr")
    simulate_dataset(root, specimens=SPECIMENS, cells=2, n_levels=3, size=48, seed=1, progress=False)
    return root


def _power(img: np.ndarray, pixel_nm: float) -> tuple[np.ndarray, np.ndarray]:
    """Hann-windowed power spectrum (the window stops edge leakage) and radial frequency."""
    n = img.shape[0]
    w = np.hanning(n)
    p = np.abs(np.fft.fft2((img - img.mean()) * w[:, None] * w[None, :])) ** 2
    f = np.hypot(np.fft.fftfreq(n, pixel_nm)[:, None], np.fft.fftfreq(n, pixel_nm)[None, :])
    return p, f


def test_otf_is_the_circular_pupil():
    assert pupil_otf(0.0, 1.0) == pytest.approx(1.0)
    assert pupil_otf(0.5, 1.0) == pytest.approx(0.3910, abs=1e-4)  # (2/π)(acos .5 − .5·√.75)
    assert pupil_otf(1.0, 1.0) == 0.0 and pupil_otf(2.0, 1.0) == 0.0
    assert FC == pytest.approx(2 * 1.3 / 525)


def test_shapes_and_sizes(cell):
    s = cell.scale
    frames = 25 if cell.specimen == "F-actin_Nonlinear" else 9
    assert s == (3 if cell.specimen == "F-actin_Nonlinear" else 2)
    assert cell.raw.shape == (9, frames, 64, 64) and cell.raw.dtype == np.uint16
    assert cell.gt.shape == (64 * s, 64 * s) and cell.gt.dtype == np.uint16
    assert cell.structure.shape == cell.gt_clean.shape == (64 * s, 64 * s)
    assert cell.params["gt_pixel_nm"] == pytest.approx(RAW_NM / s)


def test_wf_is_the_sum_of_the_frames(cell):
    np.testing.assert_array_equal(cell.wf, cell.raw.astype(np.float64).sum(axis=1))
    np.testing.assert_allclose(cell.wf_clean, cell.clean_frames.sum(axis=0), rtol=1e-5)
    # and the frames' patterns cancel in the sum: WF is the pattern-free image × number of frames
    per_orientation = cell.clean_frames.reshape(-1, 5 if cell.scale == 3 else 3, 64, 64).sum(axis=1)
    np.testing.assert_allclose(per_orientation, per_orientation[:1].repeat(len(per_orientation), 0),
                               rtol=1e-3, atol=1e-3 * per_orientation.max())


def test_wf_band_limited_gt_sim_extended(cell):
    p_wf, f_wf = _power(cell.wf_clean, RAW_NM)
    p_gt, f_gt = _power(cell.gt_clean, RAW_NM / cell.scale)
    s = cell.scale
    beyond = p_wf[f_wf > 1.02 * FC].sum() / p_wf.sum()
    assert beyond < 1e-4, beyond  # nothing passes the detection OTF
    band = (f_gt > 1.15 * FC) & (f_gt < (s - 0.1) * FC)
    assert p_gt[band].sum() / p_gt.sum() > 2e-3  # GT-SIM carries what WF cannot
    assert p_gt[f_gt > (s + 0.05) * FC].sum() / p_gt.sum() < 1e-4  # ... up to scale × the cutoff
    # on the noisy data too: the WF high band is only noise, far below GT-SIM's
    p_noisy, _ = _power(cell.wf[-1], RAW_NM)
    assert p_noisy[f_wf > 1.05 * FC].mean() < 1e-2 * p_noisy[(f_wf > 0.2 * FC) & (f_wf < 0.6 * FC)].mean()


def _peak_ratio(frame: np.ndarray, k: float, theta: float) -> float:
    """Spectral amplitude at +k(θ) over the median of the annulus |f| ≈ k."""
    n = frame.shape[0]
    w = np.hanning(n)
    a = np.abs(np.fft.fft2((frame - frame.mean()) * w[:, None] * w[None, :]))
    fy = np.fft.fftfreq(n, RAW_NM)[:, None]
    fx = np.fft.fftfreq(n, RAW_NM)[None, :]
    bin_ = 1.0 / (n * RAW_NM)
    near = np.hypot(fy - k * np.sin(theta), fx - k * np.cos(theta)) < 1.5 * bin_
    mirror = np.hypot(fy + k * np.sin(theta), fx + k * np.cos(theta)) < 1.5 * bin_
    ring = (np.abs(np.hypot(fy, fx) - k) < 0.15 * k) & ~near & ~mirror
    return float(a[near].max() / np.median(a[ring]))


def test_each_raw_frame_shows_the_illumination_peak(cell):
    k = cell.params["pattern_frequency_per_um"] / 1000.0
    assert k == pytest.approx(0.9 * FC)
    n_phases = 5 if cell.scale == 3 else 3
    wrong = np.pi / (2 * len(cell.params["orientations_deg"]))  # half-way between orientations
    for frames in (cell.clean_frames, cell.raw[-1].astype(np.float64)):
        for i, frame in enumerate(frames):
            theta = np.radians(cell.params["orientations_deg"][i // n_phases])
            at_peak = _peak_ratio(frame, k, theta)
            assert at_peak > 5.0, i
            # and the peak sits at this frame's orientation, not anywhere on the ring
            assert at_peak > 2.0 * _peak_ratio(frame, k, theta + wrong), i


def test_psnr_rises_with_signal_level(cell):
    n_frames = cell.raw.shape[1]
    offset = cell.params["camera"]["offset_adu"]
    psnr = []
    for lev in range(cell.raw.shape[0]):
        # back to clean units: remove offset and background, divide by the photon scale
        wf = (cell.wf[lev] - n_frames * (offset + cell.background[lev])) / cell.signal_scale[lev]
        psnr.append(peak_signal_noise_ratio(cell.wf_clean, wf, data_range=float(cell.wf_clean.max())))
    assert np.all(np.diff(psnr) > 0.5), psnr
    photons = [lv["photons"] for lv in cell.params["levels"]]
    assert photons[0] == pytest.approx(15) and photons[-1] == pytest.approx(600)


def test_noise_statistics_match_the_camera_model():
    c = simulate_cell("Microtubules", size=64, n_levels=2, seed=3, photons=(50, 200))
    mean = c.params["camera"]["offset_adu"] + c.signal_scale[1] * c.clean_frames + c.background[1]
    resid = c.raw[1].astype(np.float64) - mean
    # Poisson + read noise: standardised residuals have unit variance and zero mean
    z = resid / np.sqrt(mean - 100 + 1.5**2)
    assert abs(z.mean()) < 0.02 and z.std() == pytest.approx(1.0, abs=0.03)


def test_same_seed_same_data_other_seed_other_data():
    a = simulate_cell("CCPs", size=32, n_levels=2, seed=5)
    b = simulate_cell("CCPs", size=32, n_levels=2, seed=5)
    c = simulate_cell("CCPs", size=32, n_levels=2, seed=6)
    np.testing.assert_array_equal(a.raw, b.raw)
    assert not np.array_equal(a.structure, c.structure)


def test_dataset_layout_and_discovery(dataset):
    recs = discover(dataset)
    # 4 linear specimens + nonlinear, 2 cells, 3 levels each
    assert len(recs) == 5 * 2 * 3
    assert {r.specimen for r in recs} == set(SPECIMENS)
    er = [r for r in recs if r.specimen == "ER"]
    assert all(r.raw_path.parent.name == "RawSIMData" and r.gt_path.name == f"GTSIM_level_{r.level:02d}.mrc"
               for r in er)
    nl = [r for r in recs if r.specimen == "F-actin_Nonlinear"]
    assert all(r.gt_path.name == "SIM_gt_a.mrc" for r in nl)  # never SIM_gt_b
    assert (nl[0].gt_path.parent / "SIM_gt_b.mrc").is_file()
    mt = [r for r in recs if r.specimen == "Microtubules"]
    assert all(r.gt_path.name == "SIM_gt.mrc" and r.raw_gt_path.name == "RawSIMData_gt.mrc" for r in mt)
    for r in recs:
        raw, gt = r.load()
        s = 3 if r.specimen == "F-actin_Nonlinear" else 2
        assert raw.shape == ((25 if s == 3 else 9), 48, 48) and gt.shape == (48 * s, 48 * s)
        assert r.scale() == s
    params = json.loads((dataset / "CCPs" / "Cell_002" / "simulation.json").read_text())
    assert params["cell"] == 2 and len(params["levels"]) == 3 and params["frames"] == 9
    # filters
    sel = discover(dataset, specimens=["er", "CCPs"], cells="2", levels=[1, 3])
    assert [(r.specimen, r.cell, r.level) for r in sel] == [("CCPs", 2, 1), ("CCPs", 2, 3), ("ER", 2, 1), ("ER", 2, 3)]
    assert len(discover(dataset / "Microtubules")) == 6  # a specimen folder works as root


def test_simulated_files_open_in_mrcfile_with_same_values(dataset):
    for path in [dataset / "CCPs" / "Cell_001" / "RawSIMData_level_02.mrc",
                 dataset / "ER" / "Cell_001" / "GTSIM" / "GTSIM_level_01.mrc"]:
        ours, meta = read_mrc(path)
        assert meta["flavour"] == "priism" and meta["wavelength_nm"] == 525
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", RuntimeWarning)
            with mrcfile.open(path, permissive=True) as mrc:
                np.testing.assert_array_equal(np.asarray(mrc.data).reshape(ours.shape), ours)
    assert read_mrc(dataset / "CCPs" / "Cell_001" / "SIM_gt.mrc")[1]["pixel_size_nm"] == pytest.approx(31.3)


def test_discovery_errors(tmp_path, dataset):
    with pytest.raises(DfcanError, match="no such folder"):
        discover(tmp_path / "nope")
    with pytest.raises(DfcanError, match="no BioSR data"):
        discover(tmp_path)
    with pytest.raises(DfcanError, match="no specimen folder"):
        discover(dataset, specimens=["Mitochondria"])
    with pytest.raises(DfcanError, match="no raw/GT pairs"):
        discover(dataset, cells="9")
    assert parse_cells("1-3,7") == [1, 2, 3, 7]
    with pytest.raises(DfcanError, match="Received"):
        parse_cells("one")


def test_cli_simulate(tmp_path):
    out = tmp_path / "sim"
    argv = ["simulate", str(out), "--specimens", "CCPs,F-actin", "--cells", "1", "--levels", "1-2",
            "--size", "32", "--no-progress"]
    assert main(argv) == 0
    assert len(discover(out)) == 4
    assert main(argv) == 2  # exists: refuses without --overwrite
    assert main([*argv, "--overwrite"]) == 0
    assert main(["simulate", str(out), "--specimens", "ER", "--cells", "36-37", "--levels", "1", "--size", "32",
                 "--no-progress"]) == 0
    assert [(r.specimen, r.cell) for r in discover(out, specimens=["ER"])] == [("ER", 36), ("ER", 37)]


@pytest.mark.parametrize("bad", [["--size", "33"], ["--size", "16"], ["--levels", "0"],
                                 ["--specimens", "Mitochondria"], ["--cells", "0"], ["--modulation", "1.5"]])
def test_cli_simulate_bad_arguments_write_nothing(tmp_path, bad):
    out = tmp_path / "sim"
    assert main(["simulate", str(out), "--no-progress", *bad]) == 2
    assert not out.exists()
