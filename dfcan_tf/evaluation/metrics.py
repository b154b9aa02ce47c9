"""Pixel image-quality measures of the paper, in numpy: MSE, NRMSE, PSNR, SSIM, MS-SSIM.

Conventions (as the authors compute them)
-----------------------------------------
* Every comparison first min-max normalises the ground truth and the output
  *per image* to [0, 1] (:func:`minmax_norm`, the authors' 0–100th
  percentile normalisation with its ``1e-7`` guard against flat images).
* ``mse`` is the mean squared difference; ``nrmse`` is scikit-image's default
  (``normalization="euclidean"``): ``sqrt(mse) / sqrt(mean(gt**2))``; ``psnr``
  uses a data range of 1.
* ``ssim`` follows ``tf.image.ssim`` (the training loss and the validation
  metric): an 11×11 Gaussian window with σ = 1.5, K1 = 0.01, K2 = 0.03, data
  range 1, population (not sample) covariances and the mean over the *valid*
  part of the SSIM map. In scikit-image this is
  ``structural_similarity(gt, pred, data_range=1, gaussian_weights=True,
  sigma=1.5, use_sample_covariance=False)`` (its ``truncate=3.5`` gives the
  same 11-tap window and it crops the 5-pixel border of the map before
  averaging, which is the valid region). The authors' evaluation script called
  scikit-image without ``data_range`` on float images, i.e. a data range of 2
  and a 7×7 uniform window; that is not what the training optimised, so this
  package reports the TF convention.
* ``ms_ssim`` follows ``tf.image.ssim_multiscale``: five scales with weights
  (0.0448, 0.2856, 0.3001, 0.2363, 0.1333), 2×2 average pooling between scales
  (odd sizes padded symmetrically at the end), contrast-structure terms of the
  first four scales and the full SSIM of the last, each clipped at 0. It needs
  images of at least 176×176 pixels (11 × 2⁴); smaller images give NaN.

Resolution measures (decorrelation analysis, FRC) are in
:mod:`dfcan_tf.evaluation.resolution`. See ``docs/metrics.md``.
"""

from __future__ import annotations

import math

import numpy as np

from dfcan_tf.data.normalize import Normalizer
from dfcan_tf.errors import DfcanError

SSIM_WINDOW = 11
SSIM_SIGMA = 1.5
SSIM_K1 = 0.01
SSIM_K2 = 0.03
MS_SSIM_WEIGHTS = (0.0448, 0.2856, 0.3001, 0.2363, 0.1333)

__all__ = [
    "evaluate_pair",
    "minmax_norm",
    "ms_ssim",
    "mse",
    "nrmse",
    "psnr",
    "ssim",
]


# --------------------------------------------------------------------------- normalisation


_METRIC_NORMALIZER = Normalizer(mode="minmax", eps=1e-7, clip=True)


def minmax_norm(image: np.ndarray) -> np.ndarray:
    """Min-max normalise ``image`` to [0, 1] as the authors do (float64).

    ``(x - min) / (max - min + 1e-7)``, clipped to [0, 1]; a flat image maps to
    zeros (:class:`dfcan_tf.data.normalize.Normalizer` with ``eps=1e-7, clip=True``).
    """
    return _METRIC_NORMALIZER.normalize(image, dtype=np.float64)


def _pair(pred: np.ndarray, gt: np.ndarray, normalize: bool) -> tuple[np.ndarray, np.ndarray]:
    pred = np.squeeze(np.asarray(pred))
    gt = np.squeeze(np.asarray(gt))
    if pred.shape != gt.shape or pred.ndim != 2:
        raise DfcanError(
            f"metrics compare two 2-D images of the same shape. Received: pred.shape={pred.shape}, gt.shape={gt.shape}"
        )
    if not (np.all(np.isfinite(pred)) and np.all(np.isfinite(gt))):
        raise DfcanError("metrics need finite images; the prediction or the ground truth contains NaN or inf")
    if normalize:
        return minmax_norm(pred), minmax_norm(gt)
    return pred.astype(np.float64), gt.astype(np.float64)


# --------------------------------------------------------------------------- pixel metrics


def mse(pred: np.ndarray, gt: np.ndarray, *, normalize: bool = True) -> float:
    """Mean squared error after per-image min-max normalisation."""
    p, g = _pair(pred, gt, normalize)
    return float(np.mean((p - g) ** 2))


def nrmse(pred: np.ndarray, gt: np.ndarray, *, normalize: bool = True) -> float:
    """Normalised RMSE, ``sqrt(mse) / sqrt(mean(gt**2))`` (scikit-image's "euclidean")."""
    p, g = _pair(pred, gt, normalize)
    denom = math.sqrt(float(np.mean(g * g)))
    if denom == 0.0:
        return float("inf")
    return math.sqrt(float(np.mean((p - g) ** 2))) / denom


def psnr(pred: np.ndarray, gt: np.ndarray, *, normalize: bool = True, data_range: float = 1.0) -> float:
    """Peak signal-to-noise ratio in dB with ``data_range`` (1 after normalisation)."""
    p, g = _pair(pred, gt, normalize)
    err = float(np.mean((p - g) ** 2))
    if err == 0.0:
        return float("inf")
    return 10.0 * math.log10(data_range**2 / err)


# --------------------------------------------------------------------------- SSIM family


def _gaussian_taps(size: int, sigma: float) -> np.ndarray:
    x = np.arange(size, dtype=np.float64) - (size - 1) / 2.0
    g = np.exp(-(x * x) / (2.0 * sigma * sigma))
    return g / g.sum()


def _filter_valid(image: np.ndarray, taps: np.ndarray) -> np.ndarray:
    """Separable 'valid' correlation with a symmetric 1-D kernel along both axes."""
    from numpy.lib.stride_tricks import sliding_window_view

    rows = sliding_window_view(image, taps.size, axis=0) @ taps
    return sliding_window_view(rows, taps.size, axis=1) @ taps


def _ssim_terms(x: np.ndarray, y: np.ndarray, data_range: float, taps: np.ndarray) -> tuple[float, float]:
    """Return (mean SSIM, mean contrast-structure) over the valid window positions."""
    c1 = (SSIM_K1 * data_range) ** 2
    c2 = (SSIM_K2 * data_range) ** 2
    mu_x = _filter_valid(x, taps)
    mu_y = _filter_valid(y, taps)
    sxx = _filter_valid(x * x, taps) - mu_x * mu_x
    syy = _filter_valid(y * y, taps) - mu_y * mu_y
    sxy = _filter_valid(x * y, taps) - mu_x * mu_y
    luminance = (2.0 * mu_x * mu_y + c1) / (mu_x * mu_x + mu_y * mu_y + c1)
    cs = (2.0 * sxy + c2) / (sxx + syy + c2)
    return float(np.mean(luminance * cs)), float(np.mean(cs))


def ssim(pred: np.ndarray, gt: np.ndarray, *, normalize: bool = True, data_range: float = 1.0) -> float:
    """Structural similarity with the ``tf.image.ssim`` conventions (see the module docstring).

    Raises
    ------
    DfcanError
        If an image is smaller than the 11×11 window.
    """
    p, g = _pair(pred, gt, normalize)
    if min(p.shape) < SSIM_WINDOW:
        raise DfcanError(f"SSIM needs images of at least {SSIM_WINDOW}x{SSIM_WINDOW} pixels. Received: shape={p.shape}")
    return _ssim_terms(g, p, data_range, _gaussian_taps(SSIM_WINDOW, SSIM_SIGMA))[0]


def _downsample2(image: np.ndarray) -> np.ndarray:
    """2×2 average pooling; odd sizes are first padded symmetrically at the end (as TF)."""
    pad = [(0, image.shape[0] % 2), (0, image.shape[1] % 2)]
    if any(p for _, p in pad):
        image = np.pad(image, pad, mode="symmetric")
    h, w = image.shape
    return image.reshape(h // 2, 2, w // 2, 2).mean(axis=(1, 3))


def ms_ssim(pred: np.ndarray, gt: np.ndarray, *, normalize: bool = True, data_range: float = 1.0) -> float:
    """Multi-scale SSIM with the ``tf.image.ssim_multiscale`` conventions; NaN below 176×176."""
    p, g = _pair(pred, gt, normalize)
    n = len(MS_SSIM_WEIGHTS)
    if min(p.shape) < SSIM_WINDOW * 2 ** (n - 1):
        return float("nan")
    taps = _gaussian_taps(SSIM_WINDOW, SSIM_SIGMA)
    values = []
    for k in range(n):
        if k:
            p, g = _downsample2(p), _downsample2(g)
        s, cs = _ssim_terms(g, p, data_range, taps)
        values.append(max(s if k == n - 1 else cs, 0.0))
    return float(np.prod(np.power(values, MS_SSIM_WEIGHTS)))


def evaluate_pair(pred: np.ndarray, gt: np.ndarray) -> dict[str, float]:
    """All pixel metrics of ``pred`` against ``gt`` after per-image min-max normalisation.

    Parameters
    ----------
    pred, gt
        2-D images of the same shape (any dtype; both are normalised).

    Returns
    -------
    dict
        ``mse``, ``nrmse``, ``psnr``, ``ssim``, ``ms_ssim`` (NaN below
        176×176); the resolution is :mod:`dfcan_tf.evaluation.resolution`'s.
    """
    p, g = _pair(pred, gt, True)
    out = {
        "mse": mse(p, g, normalize=False),
        "nrmse": nrmse(p, g, normalize=False),
        "psnr": psnr(p, g, normalize=False),
        "ssim": ssim(p, g, normalize=False) if min(p.shape) >= SSIM_WINDOW else float("nan"),
        "ms_ssim": ms_ssim(p, g, normalize=False),
    }
    return out
