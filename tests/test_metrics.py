"""dfcan_tf.evaluation.metrics against scikit-image / TensorFlow, and dfcan_tf.evaluation.resolution estimates that track the blur."""

from __future__ import annotations

import itertools

import numpy as np
import pytest
from scipy import ndimage as ndi
from skimage import metrics as skm

from dfcan_tf.errors import DfcanError
from dfcan_tf.evaluation import metrics, resolution


def _pair(shape=(96, 80), seed=0, scale=1.0):
    rng = np.random.default_rng(seed)
    gt = ndi.gaussian_filter(rng.random(shape), 2) * scale
    pred = gt + 0.05 * scale * rng.standard_normal(shape)
    return pred, gt


def _filaments(n: int, rng: np.random.Generator, count: int = 50) -> np.ndarray:
    """Random straight one-pixel lines: structure at every frequency up to Nyquist."""
    img = np.zeros((n, n))
    t = np.linspace(-n, n, 4 * n)
    for _ in range(count):
        x0, y0 = rng.random(2) * n
        a = rng.random() * np.pi
        xs = (x0 + t * np.cos(a)).astype(int)
        ys = (y0 + t * np.sin(a)).astype(int)
        ok = (xs >= 0) & (xs < n) & (ys >= 0) & (ys < n)
        img[ys[ok], xs[ok]] += 1.0
    return img


def test_minmax_norm_matches_reference_formula():
    x = np.array([[2.0, 4.0], [6.0, 10.0]])
    np.testing.assert_allclose(metrics.minmax_norm(x), (x - 2.0) / (8.0 + 1e-7))
    assert np.all(metrics.minmax_norm(np.full((4, 4), 3.0)) == 0.0)


@pytest.mark.parametrize("scale", [1.0, 65535.0])
def test_pixel_metrics_match_skimage_after_minmax(scale):
    pred, gt = _pair(scale=scale)
    p, g = metrics.minmax_norm(pred), metrics.minmax_norm(gt)
    assert metrics.mse(pred, gt) == pytest.approx(skm.mean_squared_error(g, p), rel=1e-12)
    assert metrics.nrmse(pred, gt) == pytest.approx(skm.normalized_root_mse(g, p), rel=1e-12)
    assert metrics.psnr(pred, gt) == pytest.approx(skm.peak_signal_noise_ratio(g, p, data_range=1), rel=1e-12)


@pytest.mark.parametrize("shape", [(96, 80), (11, 11), (47, 130)])
def test_ssim_matches_skimage_with_tf_options(shape):
    pred, gt = _pair(shape=shape, seed=3)
    p, g = metrics.minmax_norm(pred), metrics.minmax_norm(gt)
    # The scikit-image options equivalent to tf.image.ssim (documented in the module).
    ref = skm.structural_similarity(
        g, p, data_range=1.0, gaussian_weights=True, sigma=1.5, use_sample_covariance=False
    )
    assert metrics.ssim(pred, gt) == pytest.approx(ref, abs=1e-10)
    assert metrics.ssim(gt, gt) == pytest.approx(1.0)


def test_ssim_and_ms_ssim_match_tensorflow():
    import tensorflow as tf
    for shape in [(192, 192), (181, 200)]:
        pred, gt = _pair(shape=shape, seed=5)
        p, g = metrics.minmax_norm(pred), metrics.minmax_norm(gt)
        tp, tg = (tf.constant(a[None, :, :, None], tf.float32) for a in (p, g))
        assert metrics.ssim(pred, gt) == pytest.approx(float(tf.image.ssim(tg, tp, 1.0)[0]), abs=2e-5)
        assert metrics.ms_ssim(pred, gt) == pytest.approx(float(tf.image.ssim_multiscale(tg, tp, 1.0)[0]), abs=2e-5)


def test_ms_ssim_small_image_is_nan_and_identity_is_one():
    pred, gt = _pair(shape=(64, 64))
    assert np.isnan(metrics.ms_ssim(pred, gt))
    big = _pair(shape=(180, 180))[1]
    assert metrics.ms_ssim(big, big) == pytest.approx(1.0)


def test_evaluate_pair_keys_and_errors():
    pred, gt = _pair(shape=(64, 64))
    out = metrics.evaluate_pair(pred, gt)
    assert set(out) == {"mse", "nrmse", "psnr", "ssim", "ms_ssim"}
    assert out["psnr"] == pytest.approx(-10 * np.log10(out["mse"]))
    with pytest.raises(DfcanError, match="same shape"):
        metrics.evaluate_pair(pred, gt[:-1])
    bad = pred.copy()
    bad[0, 0] = np.nan
    with pytest.raises(DfcanError, match="NaN"):
        metrics.evaluate_pair(bad, gt)
    with pytest.raises(DfcanError, match="at least 11x11"):
        metrics.ssim(pred[:8, :8], gt[:8, :8])


def test_decorrelation_resolution_tracks_the_blur():
    rng = np.random.default_rng(0)
    obj = _filaments(192, rng)
    pixel = 30.0
    results = []
    for sigma in (1.0, 2.0, 3.0, 4.5):
        blurred = ndi.gaussian_filter(obj, sigma)
        noisy = rng.poisson(blurred / blurred.max() * 200 + 10).astype(float)
        res = resolution.decorrelation_resolution(noisy, pixel)
        fwhm = 2.355 * sigma * pixel
        # Decorrelation resolution is close to the PSF FWHM for a dense, noisy object.
        assert 0.8 * fwhm < res < 1.5 * fwhm, (sigma, res, fwhm)
        results.append(res)
    assert all(a < b for a, b in itertools.pairwise(results)), results


def test_decorrelation_scales_with_pixel_size_and_rejects_noise():
    rng = np.random.default_rng(1)
    img = ndi.gaussian_filter(_filaments(96, rng), 2.0) + 0.01 * rng.random((96, 96))
    r1 = resolution.decorrelation_resolution(img, 10.0)
    assert resolution.decorrelation_resolution(img, 30.0) == pytest.approx(3 * r1)
    # White noise has no signal/noise transition: no peak, infinite resolution.
    assert resolution.decorrelation_resolution(rng.random((96, 96)), 30.0) == float("inf")
    radii, d = resolution.decorrelation_curve(img)
    assert radii.shape == d.shape == (50,) and np.all((d >= 0) & (d <= 1))
    with pytest.raises(DfcanError, match="16x16"):
        resolution.decorrelation_resolution(np.ones((8, 8)), 30.0)


def test_frc_resolution_tracks_the_blur():
    rng = np.random.default_rng(2)
    obj = _filaments(160, rng)
    pixel = 30.0
    results = []
    for sigma in (1.0, 2.0, 4.0):
        blurred = ndi.gaussian_filter(obj, sigma)
        blurred = blurred / blurred.max() * 200 + 10
        a, b = (rng.poisson(blurred).astype(float) for _ in range(2))
        res = resolution.frc_resolution(a, b, pixel)
        assert 0.6 * 2.355 * sigma * pixel < res < 1.5 * 2.355 * sigma * pixel, (sigma, res)
        results.append(res)
    assert results[0] < results[1] < results[2]
    # The same image twice correlates up to Nyquist; independent noise not at all.
    assert resolution.frc_resolution(a, a, pixel) == pytest.approx(2 * pixel)
    assert resolution.frc_resolution(rng.random((64, 64)), rng.random((64, 64)), pixel) == float("inf")
    half = resolution.frc_resolution(a, b, pixel, threshold="halfbit")
    assert np.isfinite(half)
    with pytest.raises(DfcanError, match="threshold"):
        resolution.frc_resolution(a, b, pixel, threshold="bogus")
    with pytest.raises(DfcanError, match="same shape"):
        resolution.frc_resolution(a, b[:-2], pixel)
