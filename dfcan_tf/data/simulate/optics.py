"""Optics of the simulated SIM microscope: OTF, detection cutoff, illumination patterns, image formation.

Incoherent wide-field OTF of a circular pupil (emission 525 nm, NA 1.3, cutoff
2·NA/λ); sinusoidal illumination (3 orientations × 3 phases for linear SIM,
5 × 5 with a second harmonic for nonlinear SIM); frames are structure ×
pattern blurred by the OTF and sampled on the raw grid by Fourier cropping,
which is exact for a band-limited image. Used by the dataset simulator
(:mod:`dfcan_tf.data.simulate.dataset`) and by conventional SIM reconstruction
(:mod:`dfcan_tf.sim.reconstruct`); it imports nothing that writes files. See
``docs/data.md#simulator``.
"""

from __future__ import annotations

import numpy as np

RAW_PIXEL_NM = 62.6
PAD_RAW = 8  # raw pixels of margin: the PSF and pattern edge effects die out within it

__all__ = ["PAD_RAW", "RAW_PIXEL_NM", "detection_cutoff", "illumination_patterns", "image_frames", "pupil_otf"]


def detection_cutoff(na: float = 1.3, emission_nm: float = 525.0) -> float:
    """Incoherent cutoff frequency 2·NA/λ in cycles per nm."""
    return 2.0 * na / emission_nm


def pupil_otf(freq: np.ndarray, cutoff: float) -> np.ndarray:
    """Incoherent OTF of an aberration-free circular pupil, 1 at 0, 0 from ``cutoff`` on.

    Parameters
    ----------
    freq
        Radial spatial frequency (any units, same as ``cutoff``).
    cutoff
        Frequency where the OTF reaches zero (2·NA/λ for wide-field).
    """
    v = np.clip(np.asarray(freq, dtype=np.float64) / cutoff, 0.0, 1.0)
    return (2.0 / np.pi) * (np.arccos(v) - v * np.sqrt(1.0 - v * v))


def _freq_grid(n: int, pixel_nm: float, real: bool = True) -> np.ndarray:
    """Radial frequency (cycles/nm) on the rfft2 (or fft2) grid of an n×n image."""
    fy = np.fft.fftfreq(n, d=pixel_nm)[:, None]
    fx = (np.fft.rfftfreq if real else np.fft.fftfreq)(n, d=pixel_nm)[None, :]
    return np.hypot(fy, fx)


def _gaussian_blur(img: np.ndarray, sigma_nm: float, pixel_nm: float) -> np.ndarray:
    """Circular Gaussian blur in Fourier space (the field is padded, so wrap-around is harmless)."""
    import scipy.fft as sfft  # here, not at import: the CLI's --help stays light
    if sigma_nm <= 0:
        return img
    f = _freq_grid(img.shape[0], pixel_nm)
    return sfft.irfft2(sfft.rfft2(img) * np.exp(-2.0 * (np.pi * sigma_nm * f) ** 2), s=img.shape)


def illumination_patterns(
    n: int,
    pixel_nm: float,
    *,
    frequency: float,
    n_orientations: int = 3,
    n_phases: int = 3,
    modulation: float = 0.8,
    harmonic: float = 0.0,
    angle0: float = 0.0,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Sinusoidal SIM illumination (effective emission) patterns on an n×n grid.

    ``I = 1 + m·cos(2π k·r + φ) + h·cos(2(2π k·r + φ))``; the second term is the
    harmonic a nonlinear (saturated / photoswitching) response adds.

    Parameters
    ----------
    n, pixel_nm
        Grid size and pixel size (nm).
    frequency
        Pattern frequency |k| in cycles/nm.
    n_orientations, n_phases
        3 × 3 for linear SIM, 5 × 5 for nonlinear SIM; orientations are spaced
        by π / n_orientations, phases by 2π / n_phases.
    modulation, harmonic
        First- and second-harmonic modulation depths.
    angle0
        Angle of the first orientation (radians).

    Returns
    -------
    patterns : numpy.ndarray
        (n_orientations·n_phases, n, n) float32, orientation-major (the frame
        order of a BioSR raw stack).
    angles, phases : numpy.ndarray
        Orientation angles and phases (radians).
    """
    y = (np.arange(n) * pixel_nm)[:, None]
    x = (np.arange(n) * pixel_nm)[None, :]
    angles = angle0 + np.arange(n_orientations) * np.pi / n_orientations
    phases = np.arange(n_phases) * 2.0 * np.pi / n_phases
    out = np.empty((n_orientations * n_phases, n, n), np.float32)
    for o, theta in enumerate(angles):
        arg0 = 2.0 * np.pi * frequency * (x * np.cos(theta) + y * np.sin(theta))
        for p, phi in enumerate(phases):
            arg = arg0 + phi
            pattern = 1.0 + modulation * np.cos(arg)
            if harmonic:
                pattern = pattern + harmonic * np.cos(2.0 * arg)
            out[o * n_phases + p] = pattern
    return out, angles, phases


def image_frames(structure: np.ndarray, patterns: np.ndarray, otf: np.ndarray, n_raw: int) -> np.ndarray:
    """Image ``structure × pattern`` through ``otf`` and sample it on the raw grid.

    Parameters
    ----------
    structure
        (M, M) fine-grid object, M = scale · n_raw.
    patterns
        (frames, M, M) illumination patterns (an all-ones pattern gives WF).
    otf
        rfft2-grid OTF of the fine grid (M, M//2 + 1).
    n_raw
        Raw grid size; must be even.

    Returns
    -------
    numpy.ndarray
        (frames, n_raw, n_raw) float32. Raw pixel m samples the fine pixel
        scale·m (the convention of Fourier-padding SIM reconstruction), so GT
        crops at scale× the raw coordinates align.
    """
    import scipy.fft as sfft  # here, not at import: the CLI's --help stays light
    m = structure.shape[0]
    half = n_raw // 2
    out = np.empty((len(patterns), n_raw, n_raw), np.float32)
    for i, pattern in enumerate(patterns):
        spec = sfft.rfft2(structure * pattern) * otf
        # Keep frequencies below the raw Nyquist: rows 0..half-1 and the last half rows.
        crop = np.concatenate([spec[:half, : half + 1], spec[m - half :, : half + 1]], axis=0)
        out[i] = sfft.irfft2(crop, s=(n_raw, n_raw)) * (n_raw * n_raw) / (m * m)
    return out

