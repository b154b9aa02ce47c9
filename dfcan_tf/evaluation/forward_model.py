"""The acquisition's forward model for QC: an SR image re-imaged through the wide-field OTF onto the raw grid,
and through estimated SIM illumination patterns (see :mod:`dfcan_tf.evaluation.qc`, ``docs/qc.md``)."""

from __future__ import annotations

import math

import numpy as np
import scipy.fft as sfft

from dfcan_tf.data.simulate import RAW_PIXEL_NM, detection_cutoff, pupil_otf
from dfcan_tf.errors import DfcanError

SAMPLINGS = ("fourier", "bin")


# --------------------------------------------------------------------------- optics
def _fine_freq(shape: tuple[int, int], pixel_nm: float) -> np.ndarray:
    fy = np.fft.fftfreq(shape[0], d=pixel_nm)[:, None]
    fx = np.fft.rfftfreq(shape[1], d=pixel_nm)[None, :]
    return np.hypot(fy, fx)


def psf_sigma_px(*, pixel_nm: float, na: float, emission_nm: float) -> float:
    """Standard deviation of the Gaussian best matching the wide-field PSF (0.21 λ/NA), in pixels of ``pixel_nm``."""
    return 0.21 * emission_nm / na / pixel_nm


def reimage(sr: np.ndarray, scale: int, *, pixel_nm: float = RAW_PIXEL_NM, na: float = 1.3,
            emission_nm: float = 525.0, sr_support: float | None = None, sampling: str = "fourier",
            pad: int | None = None, illumination: list[tuple] | None = None) -> np.ndarray:
    """Image an SR image through the wide-field microscope onto the raw grid.

    Parameters
    ----------
    sr
        (scale·H, scale·W) SR image.
    scale
        SR grid factor (integer ≥ 1).
    pixel_nm, na, emission_nm
        Raw pixel size (nm), numerical aperture, emission wavelength (nm).
    sr_support
        The OTF support of the SR image in units of the detection cutoff
        (GT-SIM of the simulator: ``scale``); the transfer applied is then
        OTF(cutoff) / OTF(sr_support·cutoff). None: the SR image is taken as
        the object itself (transfer OTF(cutoff)). Must exceed 1.
    sampling
        ``"fourier"``: raw pixel m samples SR pixel scale·m, band-limited
        (the simulator's convention, exact for a band-limited image).
        ``"bin"``: blur on the SR grid, then average scale×scale blocks
        (a camera pixel integrating its area).
    pad
        Mirrored border in raw pixels added before the FFTs (default: two
        PSF widths λ/NA, at least 4), cropped afterwards.
    illumination
        SIM frames instead of wide-field: per frame ``(kx, ky, phase, a1, a2,
        psi)`` with k in cycles per raw pixel and the pattern
        ``1 + a1 cos(2π k·r + phase) + a2 cos(2(2π k·r + phase) + psi)``, r in
        raw pixels from raw pixel (0, 0) (:func:`sim_illumination`). The SR
        image, divided by its own OTF (``sr_support``), is multiplied by each
        pattern before the wide-field imaging.

    Returns
    -------
    numpy.ndarray
        (H, W) float64 in the SR image's intensity units, or (frames, H, W) with ``illumination``.
    """
    sr = np.asarray(sr, dtype=np.float64)
    if sampling not in SAMPLINGS:
        raise DfcanError(f"unknown sampling. Received: sampling={sampling!r}; expected one of {SAMPLINGS}")
    if sr_support is not None and not sr_support > 1.0:
        raise DfcanError(f"sr_support must exceed 1 (units of the detection cutoff) or be None. "
                         f"Received: {sr_support!r}")
    if sr.ndim != 2 or sr.shape[0] % scale or sr.shape[1] % scale:
        raise DfcanError(f"the SR image of shape {sr.shape} is not on a {scale}× grid (sides must be multiples "
                         f"of the scale)")
    h, w = sr.shape[0] // scale, sr.shape[1] // scale
    cutoff = detection_cutoff(na, emission_nm)
    if pad is None:
        pad = max(4, int(math.ceil(2.0 * emission_nm / na / pixel_nm)))
    pad = min(int(pad), h - 1, w - 1) if min(h, w) > 1 else 0
    # Raw padded sides even, so the Fourier crop is symmetric.
    ph, pw = h + 2 * pad + (h % 2), w + 2 * pad + (w % 2)
    p_s = pad * scale
    fine = np.pad(sr, ((p_s, (ph - h - pad) * scale), (p_s, (pw - w - pad) * scale)), mode="symmetric")
    fpx = pixel_nm / scale
    freq = _fine_freq(fine.shape, fpx)
    otf = pupil_otf(freq, cutoff)
    spec = sfft.rfft2(fine)
    if sr_support is not None:  # the object: divide out the SR image's own OTF (floored far out in its support)
        spec = spec * np.where(freq < sr_support * cutoff, 1.0 / np.maximum(pupil_otf(freq, sr_support * cutoff),
                                                                             1e-2), 0.0)
    if illumination is None:
        return _sample(spec * otf, fine.shape, scale, sampling, (ph, pw))[pad:pad + h, pad:pad + w]
    obj = sfft.irfft2(spec, s=fine.shape)
    yy = ((np.arange(fine.shape[0]) - p_s) / scale)[:, None]
    xx = ((np.arange(fine.shape[1]) - p_s) / scale)[None, :]
    out = np.empty((len(illumination), h, w))
    for i, (kx, ky, phase, a1, a2, psi) in enumerate(illumination):
        arg = 2.0 * np.pi * (kx * xx + ky * yy) + phase
        pattern = 1.0 + a1 * np.cos(arg) + (a2 * np.cos(2.0 * arg + psi) if a2 else 0.0)
        out[i] = _sample(sfft.rfft2(obj * pattern) * otf, fine.shape, scale, sampling, (ph, pw))[pad:pad + h,
                                                                                                   pad:pad + w]
    return out


def _sample(spec: np.ndarray, fine_shape: tuple[int, int], scale: int, sampling: str,
            raw_shape: tuple[int, int]) -> np.ndarray:
    """Raw-grid image from the blurred fine-grid rfft2 spectrum (Fourier crop, or block mean)."""
    (m, n), (ph, pw) = fine_shape, raw_shape
    if sampling == "fourier":
        crop = np.concatenate([spec[: ph // 2, : pw // 2 + 1], spec[m - ph // 2:, : pw // 2 + 1]], axis=0)
        return sfft.irfft2(crop, s=(ph, pw)) * (ph * pw) / (m * n)
    return sfft.irfft2(spec, s=fine_shape).reshape(ph, scale, pw, scale).mean(axis=(1, 3))


def sim_illumination(params) -> list[tuple]:
    """Per-frame pattern parameters for :func:`reimage` from :class:`dfcan_tf.sim.SIMParameters`.

    Frame ``o·n_phases + p`` has phase ``phase_o + 2π p / n_phases`` (the
    nominal phase steps that :func:`dfcan_tf.sim.estimate_parameters` assumes).
    """
    out = []
    for o in params.orientations:
        for p in range(params.n_phases):
            out.append((o.kx, o.ky, o.phase_rad + 2.0 * np.pi * p / params.n_phases, o.modulation,
                        o.harmonic, o.harmonic_phase_rad))
    return out
