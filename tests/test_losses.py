"""The training loss and the TF validation metrics against numpy / scikit-image / dfcan_tf.evaluation.metrics."""

import keras
import numpy as np
import pytest
import tensorflow as tf
from scipy.ndimage import gaussian_filter
from skimage.metrics import normalized_root_mse, peak_signal_noise_ratio

from dfcan_tf.evaluation import metrics
from dfcan_tf.training import losses


def _images(rng, n=3, size=48, channels=1):
    """Smooth random images with different offsets and ranges (so normalisation matters)."""
    out = []
    for i in range(n):
        img = gaussian_filter(rng.random((size, size)), 2.0) * (3.0 + 5 * i) + 10.0 * i
        out.append(img)
    return np.stack(out)[..., None].astype(np.float32).repeat(channels, axis=-1)


def _pairs(rng):
    gt = _images(rng)
    pred = gt + 0.05 * rng.standard_normal(gt.shape).astype(np.float32) * gt.std()
    return gt, pred


def test_loss_matches_numpy_recipe(rng):
    gt, pred = _pairs(rng)
    # The recipe by hand: one min/max per batch tensor, then MSE + 0.1 (1 - mean SSIM).
    g = (gt - gt.min()) / (gt.max() - gt.min())
    p = (pred - pred.min()) / (pred.max() - pred.min())
    ssim = np.mean([metrics.ssim(p[i, ..., 0], g[i, ..., 0], normalize=False) for i in range(len(g))])
    expected = np.mean((p - g) ** 2) + 0.1 * (1.0 - ssim)
    got = float(losses.mse_ssim_loss(gt, pred))
    assert got == pytest.approx(expected, rel=1e-4, abs=1e-6)
    assert float(losses.MSESSIMLoss()(gt, pred)) == pytest.approx(got, rel=1e-6)


def test_loss_is_batch_normalised_not_per_image(rng):
    gt, pred = _pairs(rng)
    # Invariant to one affine change of the whole batch ...
    a = float(losses.mse_ssim_loss(gt, pred))
    b = float(losses.mse_ssim_loss(3.0 * gt + 7.0, 0.5 * pred - 2.0))
    assert b == pytest.approx(a, rel=1e-4)
    # ... but not to rescaling a single image of the batch (per-image normalisation would be).
    pred2 = pred.copy()
    pred2[0] *= 4.0
    assert float(losses.mse_ssim_loss(gt, pred2)) > a + 1e-3


def test_loss_zero_for_identical_and_finite_gradient_for_flat_batch():
    x = tf.random.uniform((2, 24, 24, 1), seed=1)
    assert float(losses.mse_ssim_loss(x, x)) == pytest.approx(0.0, abs=1e-6)
    flat = tf.Variable(tf.fill((2, 24, 24, 1), 0.5))
    with tf.GradientTape() as tape:
        loss = losses.mse_ssim_loss(x, flat)
    grad = tape.gradient(loss, flat)
    assert np.isfinite(float(loss)) and np.all(np.isfinite(grad.numpy()))


def test_metrics_agree_with_numpy_module_and_skimage(rng):
    gt, pred = _pairs(rng)
    m = {k: v.numpy() for k, v in losses.image_metrics(gt, pred).items()}
    for i in range(len(gt)):
        g, p = gt[i, ..., 0], pred[i, ..., 0]
        ref = metrics.evaluate_pair(p, g)
        assert m["mse"][i] == pytest.approx(ref["mse"], rel=1e-4)
        assert m["nrmse"][i] == pytest.approx(ref["nrmse"], rel=1e-4)
        assert m["psnr"][i] == pytest.approx(ref["psnr"], abs=1e-3)
        assert m["ssim"][i] == pytest.approx(ref["ssim"], abs=1e-4)
        gn, pn = metrics.minmax_norm(g), metrics.minmax_norm(p)
        assert m["nrmse"][i] == pytest.approx(normalized_root_mse(gn, pn), rel=1e-4)
        assert m["psnr"][i] == pytest.approx(peak_signal_noise_ratio(gn, pn, data_range=1.0), abs=1e-3)
    # The single-metric functions give the same values as the combined one.
    np.testing.assert_allclose(losses.image_nrmse(gt, pred).numpy(), m["nrmse"], rtol=1e-6)
    np.testing.assert_allclose(losses.image_psnr(gt, pred).numpy(), m["psnr"], rtol=1e-6)
    np.testing.assert_allclose(losses.image_ssim(gt, pred).numpy(), m["ssim"], rtol=1e-6)
    np.testing.assert_allclose(losses.image_mse(gt, pred).numpy(), m["mse"], rtol=1e-6)


def test_keras_metric_classes_average_and_reload(rng):
    gt, pred = _pairs(rng)
    per_image = losses.image_nrmse(gt, pred).numpy()
    metric = losses.ImageNRMSE()
    metric.update_state(gt[:2], pred[:2])
    metric.update_state(gt[2:], pred[2:])
    assert float(metric.result()) == pytest.approx(per_image.mean(), rel=1e-5)
    for cls, name in [(losses.ImageMSE, "mse"), (losses.ImageNRMSE, "nrmse"),
                      (losses.ImagePSNR, "psnr"), (losses.ImageSSIM, "ssim")]:
        again = keras.saving.deserialize_keras_object(keras.saving.serialize_keras_object(cls()))
        assert type(again) is cls and again.name == name
    loss = keras.saving.deserialize_keras_object(
        keras.saving.serialize_keras_object(losses.MSESSIMLoss(ssim_weight=0.2)))
    assert isinstance(loss, losses.MSESSIMLoss) and loss.ssim_weight == 0.2


def test_loss_drives_a_compiled_model(rng):
    # The registered loss and metric work in compile/fit and the loss falls.
    gt = _images(rng, n=8, size=16)
    gt = (gt - gt.min(axis=(1, 2, 3), keepdims=True)) / np.ptp(gt, axis=(1, 2, 3), keepdims=True)
    x = keras.Input((16, 16, 1))
    model = keras.Model(x, keras.layers.Conv2D(1, 3, padding="same")(x))
    model.compile(optimizer=keras.optimizers.Adam(1e-2), loss=losses.MSESSIMLoss(), metrics=[losses.ImageNRMSE()])
    noisy = gt + 0.2 * rng.standard_normal(gt.shape).astype(np.float32)
    hist = model.fit(noisy, gt, epochs=20, batch_size=8, verbose=0).history
    assert hist["loss"][-1] < 0.7 * hist["loss"][0]
    assert hist["nrmse"][-1] < hist["nrmse"][0]


@pytest.mark.parametrize("shape", [(4, 64, 64, 1), (3, 37, 50, 2), (2, 11, 11, 1)])
def test_separable_ssim_equals_tf_image_ssim(rng, shape):
    """The loss's SSIM (two banded matrix products) equals tf.image.ssim per image within 2e-6, and its gradient
    within 2e-5 of the largest gradient (measured: ≤ 8.4e-7 and ≤ 3.4e-6 on these shapes)."""
    x = tf.constant(rng.random(shape, dtype=np.float32))
    y = tf.constant(np.clip(x.numpy() + 0.1 * rng.standard_normal(shape).astype(np.float32), 0, 1))
    with tf.GradientTape(persistent=True) as tape:
        tape.watch(y)
        ref = tf.image.ssim(x, y, max_val=1.0)
        ours = losses.gaussian_ssim(x, y, max_val=1.0)
        ref_mean, ours_mean = tf.reduce_mean(ref), tf.reduce_mean(ours)
    assert ours.shape == (shape[0],)
    np.testing.assert_allclose(ours.numpy(), ref.numpy(), atol=2e-6)
    g_ref, g_ours = tape.gradient(ref_mean, y).numpy(), tape.gradient(ours_mean, y).numpy()
    assert np.abs(g_ours - g_ref).max() <= 2e-5 * np.abs(g_ref).max()
    # identical images: SSIM 1
    np.testing.assert_allclose(losses.gaussian_ssim(x, x).numpy(), 1.0, atol=1e-5)
    with pytest.raises(ValueError, match="at least 11"):
        losses.gaussian_ssim(x[:, :10], y[:, :10])
