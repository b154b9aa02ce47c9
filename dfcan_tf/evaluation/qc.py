"""Forward-consistency quality control of a super-resolved image (``dfcan qc``), in noise units.

A super-resolved (SR) image must, imaged back through the microscope, give the
measurement it was made from. This module re-images the SR image with the
wide-field optics, fits it to the measured image, and expresses the residual in
units of the measurement's own noise, so that a map value of 3 means "three
standard deviations of the camera noise", whatever the signal level. See
``docs/qc.md`` for the method, its calibration and its limits; the idea of a
resolution-scaled error map comes from NanoJ-SQUIRREL (Culley et al., Nat.
Methods 2018), which compares in intensity units without a noise model.

Steps (:func:`forward_consistency`):

1. **Re-imaging** (:func:`reimage`): the SR image is blurred with the
   wide-field OTF (circular pupil, cutoff 2·NA/λ) computed on the SR grid, and
   sampled on the raw grid by Fourier cropping, exactly as
   :func:`dfcan_tf.data.simulate.image_frames` makes raw frames (raw pixel m
   samples SR pixel scale·m). An SR image that approximates GT-SIM already
   carries the extended OTF of ``scale × cutoff``; the transfer applied is then
   OTF_wf / OTF_sr inside the wide-field support (``sr_support``).
2. **Noise model** (:func:`estimate_noise`): ``var = a·μ + b`` (shot noise plus
   read noise, camera offset folded into b), with a and b fitted to the part
   of the measured spectrum beyond the detection cutoff, which holds noise
   only; or given camera parameters.
3. **Intensity map** (:func:`fit_intensity`): gain and offset between the
   re-imaged SR and the measurement, weighted least squares followed by
   biweight reweighting passes, so inserted or erased structures do not bias it.
4. **Residual** z = (measured − gain·reimaged − offset) / √var, optionally
   smoothed by a PSF-sized Gaussian and rescaled so that white unit noise
   stays unit-variance; upsampled to the SR grid.
5. **Raw SIM input** (9 or 25 frames): steps 1–4 on the WF sum, and frame by
   frame with the SR image (divided by its own OTF) multiplied by each
   illumination pattern estimated with :func:`dfcan_tf.sim.estimate_parameters`
   (:func:`sim_illumination`); this also tests the super-resolved band, which
   the WF sum cannot.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np
import scipy.fft as sfft
from scipy import ndimage

from dfcan_tf.data.simulate import RAW_PIXEL_NM, detection_cutoff
from dfcan_tf.errors import DfcanError
from dfcan_tf.evaluation.forward_model import (
    psf_sigma_px,
    reimage,
    sim_illumination,
)

DEFAULT_K = 3.0
# Spectrum margin beyond the detection cutoff left out of the noise estimate (the OTF
# is tiny but not zero just below the cutoff; real optics are not quite ideal).
NOISE_MARGIN = 1.05


# --------------------------------------------------------------------------- noise
@dataclass
class NoiseModel:
    """Per-pixel noise variance ``var = a·μ + b`` of a measured image (its units squared).

    Attributes
    ----------
    a
        Variance per unit of expected signal: the camera gain (ADU per photo-electron) for an image in ADU.
    b
        Intercept: read-noise variance minus a × the camera offset (the offset is folded in).
    source
        ``"estimated"`` (both from the data), ``"given"`` (both from camera parameters) or
        ``"gain given"`` (a given, b estimated).
    floor
        Smallest variance used (guards against a negative extrapolation in dark pixels).
    """

    a: float
    b: float
    source: str = "estimated"
    floor: float = 1e-6
    extra: dict = field(default_factory=dict)

    def variance(self, mu: np.ndarray) -> np.ndarray:
        """The variance at expected signal ``mu``."""
        return np.maximum(self.a * np.asarray(mu, np.float64) + self.b, self.floor)

    def to_dict(self) -> dict:
        return {"a_variance_per_signal": self.a, "b_variance_intercept": self.b, "source": self.source,
                "variance_floor": self.floor, **self.extra}


def _split_spectrum(image: np.ndarray, cutoff_px: float, margin: float) -> tuple[np.ndarray, np.ndarray, float,
                                                                                     np.ndarray]:
    """Split ``image`` into its part inside ``margin``·cutoff and the rest (mirror-padded FFTs).

    Returns the low part, the high part, the fraction ρ of the spectrum in the
    high part, and the normalised squared high-pass kernel (rfft2 of h²/ρ on the padded grid).
    """
    h, w = image.shape
    padded = np.pad(image, ((0, h), (0, w)), mode="symmetric")  # even extension: no jumps at the edges
    freq = np.hypot(np.fft.fftfreq(2 * h)[:, None], np.fft.rfftfreq(2 * w)[None, :])
    hi_mask = freq > margin * cutoff_px
    spec = sfft.rfft2(padded)
    high = sfft.irfft2(spec * hi_mask, s=padded.shape)
    kernel = sfft.irfft2(hi_mask.astype(np.float64), s=padded.shape)  # the high-pass impulse response h
    rho = float(np.sum(kernel ** 2))
    k2 = sfft.rfft2(kernel ** 2 / rho)
    return (padded - high)[:h, :w], high[:h, :w], rho, k2


def estimate_noise(image: np.ndarray, *, pixel_nm: float = RAW_PIXEL_NM, na: float = 1.3,
                   emission_nm: float = 525.0, gain: float | None = None, read_noise: float | None = None,
                   offset: float | None = None, frames: int = 1, border: int = 4,
                   margin: float = NOISE_MARGIN) -> NoiseModel:
    """Estimate the noise model ``var = a·μ + b`` of a wide-field image from its own data.

    Beyond the detection cutoff the spectrum of a wide-field image holds noise
    only. The high-passed image r has E[r²(x)] = Σ_y h²(x − y) var(y) for the
    high-pass kernel h (Σ h² = ρ, the fraction of the spectrum beyond the
    cutoff), so r²/ρ regressed on the equally weighted local mean of the
    low-passed image gives a and b (weighted least squares, iterated).

    Parameters
    ----------
    image
        (H, W) measured image (camera units; a WF sum of raw frames is fine).
    pixel_nm, na, emission_nm
        Optics; the cutoff 2·NA/λ must lie below the Nyquist frequency.
    gain, read_noise, offset
        Camera parameters per raw frame, in the image's units (ADU per
        photo-electron, ADU rms, ADU). ``gain`` fixes a; ``read_noise`` and
        ``offset`` (both, with a) fix b = frames·read_noise² − a·frames·offset.
    frames
        Raw frames summed into ``image`` (9 or 25 for a WF sum of SIM frames).
    border
        Pixels at the edges left out of the fit.
    margin
        The noise part of the spectrum starts at margin × cutoff.

    Returns
    -------
    NoiseModel
    """
    image = np.asarray(image, np.float64)
    if (read_noise is None) != (offset is None):
        raise DfcanError("--read-noise and --offset go together (the offset is needed to turn the read noise into "
                         f"a variance at a given signal). Received: read_noise={read_noise}, offset={offset}")
    for name, v in (("gain", gain), ("read_noise", read_noise)):
        if v is not None and not (math.isfinite(v) and v >= 0):
            raise DfcanError(f"--{name.replace('_', '-')} must be a finite number ≥ 0. Received: {v}")
    if gain is not None and read_noise is not None:
        b = frames * read_noise ** 2 - gain * frames * offset
        floor = max(frames * read_noise ** 2, 1e-6)
        return NoiseModel(float(gain), float(b), "given", floor)
    cutoff_px = detection_cutoff(na, emission_nm) * pixel_nm
    if margin * cutoff_px >= 0.45:
        raise DfcanError(f"the detection cutoff {cutoff_px:.3f} cycles/pixel leaves no noise-only part of the "
                         f"spectrum at pixel size {pixel_nm} nm; give --gain, --read-noise and --offset")
    low, high, rho, k2 = _split_spectrum(image, cutoff_px, margin)
    h, w = image.shape
    mu = sfft.irfft2(sfft.rfft2(np.pad(low, ((0, h), (0, w)), mode="symmetric")) * k2, s=(2 * h, 2 * w))[:h, :w]
    y = high ** 2 / rho
    sl = (slice(border, h - border), slice(border, w - border)) if min(h, w) > 4 * border + 4 else np.s_[:, :]
    mu, y = mu[sl].ravel(), y[sl].ravel()
    floor = max(1e-6, 1e-6 * float(np.mean(y)))
    if gain is not None:
        a = float(gain)
        b = float(np.mean(y - a * mu))
        for _ in range(4):
            wgt = 1.0 / np.maximum(a * mu + b, floor) ** 2
            b = float(np.sum(wgt * (y - a * mu)) / np.sum(wgt))
        return NoiseModel(a, b, "gain given", floor, {"noise_fraction_of_spectrum": rho})
    design = np.stack([mu, np.ones_like(mu)], axis=1)
    a, b = np.linalg.lstsq(design, y, rcond=None)[0]
    for _ in range(5):
        wgt = 1.0 / np.maximum(a * mu + b, max(floor, 0.05 * float(np.mean(y)))) ** 2
        sw = np.sqrt(wgt)
        a, b = np.linalg.lstsq(design * sw[:, None], y * sw, rcond=None)[0]
    return NoiseModel(float(a), float(b), "estimated", floor, {"noise_fraction_of_spectrum": rho})


# --------------------------------------------------------------------------- intensity fit
def fit_intensity(model: np.ndarray, measured: np.ndarray, variance: np.ndarray, *, mask: np.ndarray | None = None,
                  passes: int = 3, tuning: float = 4.685) -> tuple[float, float, np.ndarray]:
    """Fit ``measured ≈ gain·model + offset`` by weighted least squares, robust to outliers.

    The first fit weights pixels by 1/variance; each further pass multiplies
    these weights by Tukey's biweight of the residual in noise units (zero
    beyond ``tuning``, scaled by the residuals' median absolute deviation when
    that exceeds 1), so structures present in only one image drop out.

    Returns
    -------
    gain, offset : float
    weights : numpy.ndarray
        The robustness weights of the last pass (1 = fully used, 0 = rejected).
    """
    m = np.asarray(model, np.float64).ravel()
    d = np.asarray(measured, np.float64).ravel()
    iv = 1.0 / np.asarray(variance, np.float64).ravel()
    use = np.ones_like(m, bool) if mask is None else np.asarray(mask, bool).ravel()
    robust = np.ones_like(m)
    gain, offset = 1.0, 0.0
    for i in range(passes + 1):
        wgt = iv * robust * use
        sw = np.sqrt(wgt)
        design = np.stack([m, np.ones_like(m)], axis=1) * sw[:, None]
        if np.count_nonzero(wgt) < 3 or np.ptp(m[wgt > 0]) == 0:
            raise DfcanError("the re-imaged SR image is constant over the compared pixels; cannot fit its "
                             "intensity to the measurement (an empty or flat SR image?)")
        gain, offset = np.linalg.lstsq(design, d * sw, rcond=None)[0]
        if i == passes:
            break
        z = (d - gain * m - offset) * np.sqrt(iv)
        spread = max(1.4826 * float(np.median(np.abs(z[use] - np.median(z[use])))), 1.0)
        u = z / (tuning * spread)
        robust = np.where(np.abs(u) < 1.0, (1.0 - u ** 2) ** 2, 0.0)
    return float(gain), float(offset), robust.reshape(np.shape(model))


# --------------------------------------------------------------------------- map
def smooth_z(z: np.ndarray, sigma_px: float) -> np.ndarray:
    """Gaussian-smooth a z map and rescale so white unit-variance noise stays unit-variance.

    For white z the smoothed value has variance Σ g² (g the discrete kernel),
    so dividing by √Σ g² keeps the noise scale: a |z| > 3 threshold means the
    same false-alarm rate with and without smoothing.
    """
    if sigma_px <= 0:
        return np.asarray(z, np.float64)
    half = int(math.ceil(4.0 * sigma_px)) + 1
    impulse = np.zeros((2 * half + 1, 2 * half + 1))
    impulse[half, half] = 1.0
    norm = math.sqrt(float(np.sum(ndimage.gaussian_filter(impulse, sigma_px, mode="constant") ** 2)))
    return ndimage.gaussian_filter(np.asarray(z, np.float64), sigma_px, mode="reflect") / norm


def upsample_map(z: np.ndarray, scale: int, sampling: str = "fourier") -> np.ndarray:
    """Bilinearly interpolate a raw-grid map onto the SR grid, aligned as :func:`reimage` samples it."""
    h, w = z.shape
    shift = (scale - 1) / 2.0 if sampling == "bin" else 0.0
    yy = (np.arange(h * scale) - shift) / scale
    xx = (np.arange(w * scale) - shift) / scale
    coords = np.meshgrid(yy, xx, indexing="ij")
    return ndimage.map_coordinates(np.asarray(z, np.float64), coords, order=1, mode="nearest")


def roc_auc(scores: np.ndarray, labels: np.ndarray) -> float:
    """Area under the ROC curve of ``scores`` for binary ``labels`` (rank formula, ties averaged)."""
    from scipy.stats import rankdata

    s = np.asarray(scores, np.float64).ravel()
    y = np.asarray(labels, bool).ravel()
    n_pos, n_neg = int(y.sum()), int((~y).sum())
    if n_pos == 0 or n_neg == 0:
        raise ValueError("roc_auc needs both positive and negative labels")
    ranks = rankdata(s)
    return float((ranks[y].sum() - n_pos * (n_pos + 1) / 2.0) / (n_pos * n_neg))


@dataclass
class QCResult:
    """What :func:`forward_consistency` computed.

    Attributes
    ----------
    z
        (H, W) residual in noise units on the raw grid, smoothed when asked.
    z_unsmoothed
        (H, W) the per-pixel residual in noise units.
    z_sr
        (scale·H, scale·W) ``z`` upsampled to the SR grid (the map written to TIFF).
    predicted
        (H, W) gain·reimaged + offset: the measurement the SR image predicts.
    measured
        (H, W) the compared measurement (the WF sum for a SIM stack).
    variance
        (H, W) noise variance of ``measured``.
    scores
        ``fraction_above_k``, ``k``, ``rms_ratio`` (residual RMS / noise RMS),
        ``z_rms``, ``expected_fraction_noise``, ``scored_pixels``.
    params
        Fitted intensity map, noise model, optics and settings (JSON-able).
    z_frames
        (frames, H, W) per-frame z of a raw SIM stack (see ``frames`` of :func:`forward_consistency`), else None.
    """

    z: np.ndarray
    z_unsmoothed: np.ndarray
    z_sr: np.ndarray
    predicted: np.ndarray
    measured: np.ndarray
    variance: np.ndarray
    scores: dict
    params: dict
    z_frames: np.ndarray | None = None

    def to_dict(self) -> dict:
        return {"scores": self.scores, **self.params}


def forward_consistency(sr: np.ndarray, measured: np.ndarray, *, scale: int, pixel_nm: float = RAW_PIXEL_NM,
                        na: float = 1.3, emission_nm: float = 525.0, sr_support: float | None = -1.0,
                        sampling: str = "fourier", gain: float | None = None, read_noise: float | None = None,
                        offset: float | None = None, k: float = DEFAULT_K, smooth: bool = True,
                        border: int | None = None, frames: bool = True, sim_params=None) -> QCResult:
    """Compare an SR image with the measurement it came from, in noise units.

    Parameters
    ----------
    sr
        (scale·H, scale·W) SR image (any intensity units).
    measured
        (H, W) wide-field image, or (frames, H, W) raw SIM stack (9 or 25
        frames: compared through its WF sum) or a single-frame stack.
    scale
        SR grid factor.
    pixel_nm, na, emission_nm
        Raw pixel size (nm), numerical aperture, emission wavelength (nm).
    sr_support
        OTF support of the SR image in detection cutoffs (see :func:`reimage`);
        the default -1 means ``scale`` (an image like GT-SIM), None the object itself.
    sampling
        How raw pixels sample the SR grid (see :func:`reimage`).
    gain, read_noise, offset
        Camera parameters per raw frame (see :func:`estimate_noise`); default estimated.
    k
        Threshold in noise units for ``fraction_above_k``.
    smooth
        Smooth z with the PSF-sized Gaussian (σ = 0.21 λ/NA) before thresholding.
    border
        Raw pixels at each edge left out of the scores (default: one PSF
        width λ/NA, rounded up): there the measurement holds light from outside
        the field, which the SR image cannot know (it is continued by mirroring).
    frames
        For a raw SIM stack, also compare frame by frame: the illumination is
        estimated with :func:`dfcan_tf.sim.estimate_parameters` (or taken from
        ``sim_params``, a :class:`dfcan_tf.sim.SIMParameters`) and the SR image
        re-imaged through each pattern (``z_frames``, ``scores["frames"]``).

    Returns
    -------
    QCResult
    """
    sr = np.asarray(sr, np.float64)
    meas = np.asarray(measured, np.float64)
    stack = None
    if meas.ndim == 3:
        n_frames = meas.shape[0]
        if n_frames not in (1, 9, 25):
            raise DfcanError(f"the measured input has {n_frames} frames; expected 1 (wide-field) or 9 / 25 raw SIM "
                             "frames")
        stack = meas if n_frames > 1 else None
        meas = meas.sum(axis=0)
    else:
        n_frames = 1
    if meas.ndim != 2 or sr.ndim != 2:
        raise DfcanError(f"expected 2-D images. Received: SR shape {sr.shape}, measured shape {meas.shape}")
    if not (isinstance(scale, (int, np.integer)) and scale >= 1):
        raise DfcanError(f"scale must be an integer ≥ 1. Received: scale={scale!r}")
    if sr.shape != (scale * meas.shape[0], scale * meas.shape[1]):
        raise DfcanError(f"the SR image is {sr.shape[0]}×{sr.shape[1]} but the measured image is "
                         f"{meas.shape[0]}×{meas.shape[1]}; at scale {scale} the SR image must be "
                         f"{scale * meas.shape[0]}×{scale * meas.shape[1]}")
    if min(meas.shape) < 16:
        raise DfcanError(f"the measured image of {meas.shape[0]}×{meas.shape[1]} pixels is too small (≥ 16)")
    if not (k > 0 and math.isfinite(k)):
        raise DfcanError(f"k must be a positive number of noise units. Received: k={k}")
    support = float(scale) if sr_support is not None and sr_support == -1.0 else sr_support
    if support is not None and support <= 1.0:
        support = None  # scale 1: the SR image has the wide-field support; nothing to divide out
    sigma = psf_sigma_px(pixel_nm=pixel_nm, na=na, emission_nm=emission_nm)
    if border is None:
        border = int(math.ceil(emission_nm / na / pixel_nm))
    h, w = meas.shape
    if 2 * border >= min(h, w) - 4:
        raise DfcanError(f"border {border} leaves no pixels of the {h}×{w} image to score")

    model = reimage(sr, scale, pixel_nm=pixel_nm, na=na, emission_nm=emission_nm, sr_support=support,
                    sampling=sampling)
    noise = estimate_noise(meas, pixel_nm=pixel_nm, na=na, emission_nm=emission_nm, gain=gain,
                           read_noise=read_noise, offset=offset, frames=n_frames)
    low, _, _, _ = _split_spectrum(meas, detection_cutoff(na, emission_nm) * pixel_nm, NOISE_MARGIN)
    var = noise.variance(low)
    inner = np.zeros_like(meas, bool)
    inner[border:h - border, border:w - border] = True
    g, o, robust = fit_intensity(model, meas, var, mask=inner)
    predicted = g * model + o
    resid = meas - predicted
    z0 = resid / np.sqrt(var)
    z = smooth_z(z0, sigma) if smooth else z0
    z_sr = upsample_map(z, scale, sampling).astype(np.float32)
    above = float(np.mean(np.abs(z[inner]) > k))
    scores = {
        "k": float(k),
        "fraction_above_k": above,
        "expected_fraction_noise": float(math.erfc(k / math.sqrt(2.0))),
        "rms_ratio": float(math.sqrt(np.sum(resid[inner] ** 2) / np.sum(var[inner]))),
        "z_rms": float(math.sqrt(np.mean(z0[inner] ** 2))),
        "max_abs_z": float(np.max(np.abs(z[inner]))),
        "scored_pixels": int(inner.sum()),
    }
    params = {
        "intensity_map": {"gain": g, "offset": o, "rejected_fraction": float(np.mean(robust[inner] < 0.5))},
        "noise": noise.to_dict(),
        "optics": {"pixel_nm": pixel_nm, "sr_pixel_nm": pixel_nm / scale, "na": na, "emission_nm": emission_nm,
                   "cutoff_per_um": detection_cutoff(na, emission_nm) * 1000.0},
        "settings": {"scale": int(scale), "sr_support_cutoffs": support, "sampling": sampling,
                     "smooth_sigma_px": sigma if smooth else 0.0, "border_px": border, "input_frames": n_frames,
                     "compared": "wide-field" if n_frames == 1 else f"WF sum of {n_frames} raw SIM frames"},
    }
    result = QCResult(z, z0, z_sr, predicted, meas, var, scores, params)
    if stack is not None and frames:
        _compare_frames(result, sr, stack, scale=scale, pixel_nm=pixel_nm, na=na, emission_nm=emission_nm,
                        support=support, sampling=sampling, noise=noise, inner=inner, sigma=sigma if smooth else 0.0,
                        sim_params=sim_params)
    return result


def _compare_frames(result: QCResult, sr, stack, *, scale, pixel_nm, na, emission_nm, support, sampling, noise,
                    inner, sigma, sim_params) -> None:
    """Frame-by-frame comparison of a raw SIM stack with the SR image re-imaged through its patterns.

    Adds ``z_frames`` (frames, H, W) and ``scores["frames"]`` to ``result``.
    The noise model of the WF sum applies per frame with its intercept divided
    by the number of frames; gain and offset are fitted per frame (frames may
    differ in brightness).
    """
    from dfcan_tf.sim.reconstruct import estimate_parameters

    n = len(stack)
    n_pha = 3 if n == 9 else 5
    if sim_params is None:
        sim_params = estimate_parameters(stack, pixel_nm=pixel_nm, na=na, emission_nm=emission_nm,
                                         n_orientations=n // n_pha, n_phases=n_pha)
    models = reimage(sr, scale, pixel_nm=pixel_nm, na=na, emission_nm=emission_nm, sr_support=support,
                     sampling=sampling, illumination=sim_illumination(sim_params))
    frame_noise = NoiseModel(noise.a, noise.b / n, noise.source, noise.floor / n)
    cutoff_px = detection_cutoff(na, emission_nm) * pixel_nm
    z_frames = np.empty_like(models)
    res2 = var_sum = 0.0
    per_frame = []
    for i, (model, frame) in enumerate(zip(models, stack)):
        var = frame_noise.variance(_split_spectrum(frame, cutoff_px, NOISE_MARGIN)[0])
        g, o, _ = fit_intensity(model, frame, var, mask=inner)
        resid = frame - g * model - o
        z_frames[i] = smooth_z(resid / np.sqrt(var), sigma)
        per_frame.append(float(math.sqrt(np.sum(resid[inner] ** 2) / np.sum(var[inner]))))
        res2 += float(np.sum(resid[inner] ** 2))
        var_sum += float(np.sum(var[inner]))
    result.z_frames = z_frames
    k = result.scores["k"]
    result.scores["frames"] = {
        "rms_ratio": math.sqrt(res2 / var_sum),
        "rms_ratio_per_frame": per_frame,
        "fraction_above_k": float(np.mean(np.abs(z_frames[:, inner]) > k)),
    }
    result.params["sim_parameters"] = sim_params.to_dict()
