"""Training loss and validation metrics in TensorFlow (``docs/training.md``, ``docs/metrics.md``).

Loss
----
``MSE + 0.1 · (1 − SSIM)`` after min-max normalising ``y_true`` and ``y_pred``
*over the whole batch tensor* (one min and one max per tensor, as the authors'
``loss_mse_ssim``), SSIM as ``tf.image.ssim`` defines it with ``max_val=1`` and its
defaults (11×11 Gaussian window, σ 1.5, k1 0.01, k2 0.03, valid windows only).
The loss evaluates that SSIM with the Gaussian window applied as two banded
matrix products (:func:`gaussian_ssim`; the window is separable), which equals
``tf.image.ssim`` to float32 round-off and trains faster than its 11×11
depthwise convolutions (``docs/training.md#speed``). The comparison
networks' own recipes (``docs/networks.md#training-recipes``) use plain
``"mse"`` or ``"mae"`` on the data as the sources feed it (already normalised
to [0, 1]); :func:`content_loss` picks one of the three by name.

Metrics
-------
MSE, NRMSE, PSNR and SSIM computed *per image* after per-image min-max
normalisation (:func:`~dfcan_tf.data.normalize.minmax_scale` with eps 1e-7, clipped to [0, 1]), exactly
as :mod:`dfcan_tf.evaluation.metrics` computes them in numpy for evaluation: NRMSE is
``sqrt(mse) / sqrt(mean(gt²))`` (scikit-image's "euclidean"), PSNR uses a data
range of 1, SSIM the ``tf.image.ssim`` convention. The functions return one
value per image (shape ``(N,)``); the registered :class:`keras.metrics.Metric`
classes average them.

Everything is computed in float32 whatever the inputs' dtype, so the same code
serves mixed-precision training.
"""

from __future__ import annotations

import keras
import numpy as np
import tensorflow as tf

from dfcan_tf.data.normalize import minmax_scale

PACKAGE = "dfcan_tf"
_NORM_EPS = 1e-7  # the reference's guard against flat images (per-image normalisation)
_LOSS_EPS = 1e-12  # keeps a constant batch at zeros in the loss's normalisation

__all__ = [
    "ImageMSE",
    "ImageNRMSE",
    "ImagePSNR",
    "ImageSSIM",
    "LOSSES",
    "MSESSIMLoss",
    "batch_minmax",
    "content_loss",
    "gaussian_ssim",
    "image_metrics",
    "image_mse",
    "image_nrmse",
    "image_psnr",
    "image_ssim",
    "mse_ssim_loss",
    "per_image_minmax",
]


def _f32(x) -> tf.Tensor:
    return tf.cast(tf.convert_to_tensor(x), tf.float32)


def batch_minmax(x: tf.Tensor) -> tf.Tensor:
    """Min-max normalise a whole tensor to [0, 1] with one min and one max (the loss's normalisation).

    The reference divides by ``max − min`` unguarded; 1e-12 is added here
    only so that a constant batch gives zeros, not NaN.
    """
    x = _f32(x)
    return minmax_scale(x, tf.reduce_min(x), tf.reduce_max(x), _LOSS_EPS)


def per_image_minmax(x: tf.Tensor) -> tf.Tensor:
    """Min-max normalise each image of an ``(N, H, W, C)`` batch to [0, 1] (the metrics' normalisation)."""
    x = _f32(x)
    lo = tf.reduce_min(x, axis=[1, 2, 3], keepdims=True)
    hi = tf.reduce_max(x, axis=[1, 2, 3], keepdims=True)
    return tf.clip_by_value(minmax_scale(x, lo, hi, _NORM_EPS), 0.0, 1.0)


_SSIM_SIZE, _SSIM_SIGMA, _SSIM_K1, _SSIM_K2 = 11, 1.5, 0.01, 0.03  # tf.image.ssim's defaults


def _window_matrix(n: int) -> np.ndarray:
    """The ``(n, n - 10)`` banded matrix whose column j is the normalised 1-D Gaussian window at rows j … j + 10.

    ``tf.image.ssim``'s 2-D window is the softmax of ``-(i² + j²)/(2σ²)``
    over the 11×11 offsets, which is exactly the outer product of this 1-D
    window with itself.
    """
    offsets = np.arange(_SSIM_SIZE) - (_SSIM_SIZE - 1) / 2.0
    g = np.exp(-0.5 * offsets**2 / _SSIM_SIGMA**2)
    g /= g.sum()
    m = np.zeros((n, n - _SSIM_SIZE + 1))
    for j in range(m.shape[1]):
        m[j:j + _SSIM_SIZE, j] = g
    return m.astype(np.float32)


def gaussian_ssim(x: tf.Tensor, y: tf.Tensor, max_val: float = 1.0) -> tf.Tensor:
    """Per-image SSIM of two ``(N, H, W, C)`` float32 batches, as ``tf.image.ssim`` defines it (shape ``(N,)``).

    The 11×11 Gaussian window (σ 1.5, valid positions only) is applied as
    ``Gₕᵀ · m · G_w`` with the banded matrices of :func:`_window_matrix`, to
    the four maps x, y, x·y and x² + y² at once; luminance and contrast terms,
    constants (k1 0.01, k2 0.03) and the averaging over positions and channels
    follow ``tf.image.ssim``. H and W must be static and at least 11.
    """
    h, w = x.shape[1], x.shape[2]
    if h is None or w is None or h < _SSIM_SIZE or w < _SSIM_SIZE:
        raise ValueError(f"gaussian_ssim needs static image sizes of at least {_SSIM_SIZE}. Received: {x.shape}")
    channels_first = [tf.reshape(tf.transpose(m, [0, 3, 1, 2]), [-1, h, w])
                      for m in (x, y, x * y, tf.square(x) + tf.square(y))]
    maps = tf.concat(channels_first, axis=0)  # (4·N·C, H, W)
    rows = tf.matmul(tf.reshape(maps, [-1, w]), tf.constant(_window_matrix(w)))  # along W
    blurred = tf.matmul(tf.constant(_window_matrix(h)), tf.reshape(rows, [-1, h, w - _SSIM_SIZE + 1]),
                        transpose_a=True)  # along H
    mean_x, mean_y, xy, sq = tf.split(blurred, 4, axis=0)
    c1, c2 = (_SSIM_K1 * max_val) ** 2, (_SSIM_K2 * max_val) ** 2
    num0 = 2.0 * mean_x * mean_y
    den0 = tf.square(mean_x) + tf.square(mean_y)
    luminance = (num0 + c1) / (den0 + c1)
    contrast_structure = (2.0 * xy - num0 + c2) / (sq - den0 + c2)
    per_map = tf.reduce_mean(luminance * contrast_structure, axis=[1, 2])  # (N·C,)
    return tf.reduce_mean(tf.reshape(per_map, [-1, x.shape[3] or tf.shape(x)[3]]), axis=1)


@keras.saving.register_keras_serializable(package=PACKAGE)
def mse_ssim_loss(y_true: tf.Tensor, y_pred: tf.Tensor, mse_weight: float = 1.0,
                  ssim_weight: float = 0.1) -> tf.Tensor:
    """``mse_weight · MSE + ssim_weight · (1 − mean SSIM)`` of batch-normalised tensors (a scalar).

    Parameters
    ----------
    y_true, y_pred
        ``(N, H, W, 1)`` batches (any float dtype); each is min-max normalised
        over the whole batch tensor first.
    mse_weight, ssim_weight
        1 and 0.1 in the paper.
    """
    x = batch_minmax(y_true)
    y = batch_minmax(y_pred)
    ssim = tf.reduce_mean(gaussian_ssim(x, y, max_val=1.0))
    mse = tf.reduce_mean(tf.square(y - x))
    return mse_weight * mse + ssim_weight * (1.0 - ssim)


@keras.saving.register_keras_serializable(package=PACKAGE)
class MSESSIMLoss(keras.losses.Loss):
    """Registered Keras loss: :func:`mse_ssim_loss` (MSE + 0.1·(1 − SSIM) after batch min-max normalisation).

    The value is a property of the whole batch (one normalisation per
    tensor), so ``call`` returns a scalar and the reduction leaves it as is.
    """

    def __init__(self, mse_weight: float = 1.0, ssim_weight: float = 0.1, name: str = "mse_ssim",
                 reduction: str = "sum_over_batch_size", dtype=None):
        super().__init__(name=name, reduction=reduction, dtype=dtype)
        self.mse_weight = float(mse_weight)
        self.ssim_weight = float(ssim_weight)

    def call(self, y_true, y_pred):
        return mse_ssim_loss(y_true, y_pred, self.mse_weight, self.ssim_weight)

    def get_config(self):
        return {**super().get_config(), "mse_weight": self.mse_weight, "ssim_weight": self.ssim_weight}


LOSSES = ("mse_ssim", "mse", "mae")
"""Content losses by name: DFCAN's ``MSE + w·(1 − SSIM)``, and the plain MSE (L2) and MAE (L1) of other papers."""


def content_loss(name: str, y_true: tf.Tensor, y_pred: tf.Tensor, *, mse_weight: float = 1.0,
                 ssim_weight: float = 0.1) -> tf.Tensor:
    """The content loss ``name`` (one of :data:`LOSSES`) of a batch, a float32 scalar.

    Parameters
    ----------
    name
        ``"mse_ssim"``: :func:`mse_ssim_loss` with ``mse_weight`` and
        ``ssim_weight`` (batch min-max normalised first); ``"mse"`` / ``"mae"``:
        the mean squared / absolute difference of the tensors as given.
    y_true, y_pred
        ``(N, H, W, 1)`` batches of any float dtype.
    """
    if name == "mse_ssim":
        return mse_ssim_loss(y_true, y_pred, mse_weight, ssim_weight)
    diff = _f32(y_pred) - _f32(y_true)
    if name == "mse":
        return tf.reduce_mean(tf.square(diff))
    if name == "mae":
        return tf.reduce_mean(tf.abs(diff))
    raise ValueError(f"unknown loss {name!r}; known losses are {LOSSES}")


# --------------------------------------------------------------------------- per-image metrics


def _pair(y_true, y_pred) -> tuple[tf.Tensor, tf.Tensor]:
    return per_image_minmax(y_true), per_image_minmax(y_pred)


@keras.saving.register_keras_serializable(package=PACKAGE)
def image_mse(y_true: tf.Tensor, y_pred: tf.Tensor) -> tf.Tensor:
    """Per-image MSE after per-image min-max normalisation, shape ``(N,)``."""
    g, p = _pair(y_true, y_pred)
    return tf.reduce_mean(tf.square(p - g), axis=[1, 2, 3])


@keras.saving.register_keras_serializable(package=PACKAGE)
def image_nrmse(y_true: tf.Tensor, y_pred: tf.Tensor) -> tf.Tensor:
    """Per-image NRMSE ``sqrt(mse) / sqrt(mean(gt²))`` after normalisation, shape ``(N,)``."""
    g, p = _pair(y_true, y_pred)
    err = tf.reduce_mean(tf.square(p - g), axis=[1, 2, 3])
    return tf.sqrt(err) / tf.sqrt(tf.reduce_mean(tf.square(g), axis=[1, 2, 3]))


@keras.saving.register_keras_serializable(package=PACKAGE)
def image_psnr(y_true: tf.Tensor, y_pred: tf.Tensor) -> tf.Tensor:
    """Per-image PSNR in dB (data range 1) after normalisation, shape ``(N,)``."""
    err = image_mse(y_true, y_pred)
    return -10.0 * tf.math.log(err) / tf.math.log(10.0)


@keras.saving.register_keras_serializable(package=PACKAGE)
def image_ssim(y_true: tf.Tensor, y_pred: tf.Tensor) -> tf.Tensor:
    """Per-image SSIM (``tf.image.ssim``, max_val 1) after normalisation, shape ``(N,)``."""
    g, p = _pair(y_true, y_pred)
    return tf.image.ssim(g, p, max_val=1.0)


def image_metrics(y_true: tf.Tensor, y_pred: tf.Tensor) -> dict[str, tf.Tensor]:
    """All four per-image metrics ``{"mse", "nrmse", "psnr", "ssim"}``, each of shape ``(N,)``.

    Normalises once and derives everything from it (the validation loop's path).
    """
    g, p = _pair(y_true, y_pred)
    err = tf.reduce_mean(tf.square(p - g), axis=[1, 2, 3])
    return {
        "mse": err,
        "nrmse": tf.sqrt(err) / tf.sqrt(tf.reduce_mean(tf.square(g), axis=[1, 2, 3])),
        "psnr": -10.0 * tf.math.log(err) / tf.math.log(10.0),
        "ssim": tf.image.ssim(g, p, max_val=1.0),
    }


class _ImageMetric(keras.metrics.MeanMetricWrapper):
    _fn = None
    _default_name = ""

    def __init__(self, name: str | None = None, dtype=None):
        super().__init__(fn=type(self)._fn, name=name or self._default_name, dtype=dtype)

    def get_config(self):
        return {"name": self.name, "dtype": self.dtype}


@keras.saving.register_keras_serializable(package=PACKAGE)
class ImageMSE(_ImageMetric):
    """Mean over images of :func:`image_mse`."""

    _fn = staticmethod(image_mse)
    _default_name = "mse"


@keras.saving.register_keras_serializable(package=PACKAGE)
class ImageNRMSE(_ImageMetric):
    """Mean over images of :func:`image_nrmse`."""

    _fn = staticmethod(image_nrmse)
    _default_name = "nrmse"


@keras.saving.register_keras_serializable(package=PACKAGE)
class ImagePSNR(_ImageMetric):
    """Mean over images of :func:`image_psnr`."""

    _fn = staticmethod(image_psnr)
    _default_name = "psnr"


@keras.saving.register_keras_serializable(package=PACKAGE)
class ImageSSIM(_ImageMetric):
    """Mean over images of :func:`image_ssim`."""

    _fn = staticmethod(image_ssim)
    _default_name = "ssim"
