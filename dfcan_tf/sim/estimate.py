"""Blind estimation of the SIM pattern: wave vector, phase and modulation per orientation (steps 2 and 3
of :mod:`dfcan_tf.sim.reconstruct`)."""

from __future__ import annotations

import math

import numpy as np
import scipy.fft as sfft
from scipy.optimize import minimize

from dfcan_tf.data.simulate.optics import detection_cutoff, pupil_otf
from dfcan_tf.errors import DfcanError
from dfcan_tf.sim.bands import _check_stack, _orders, separate_bands
from dfcan_tf.sim.parameters import OrientationParameters, SIMParameters


def _pad_frames(frames: np.ndarray, n_orientations: int, pad: int) -> tuple[np.ndarray, np.ndarray]:
    """Mirror-pad every frame by ``pad`` pixels, fading the border to the orientation's mean.

    Returns the padded frames and the per-orientation means.
    """
    _, h, w = frames.shape
    n_pha = len(frames) // n_orientations
    padded = np.pad(frames, ((0, 0), (pad, pad), (pad, pad)), mode="reflect" if pad < min(h, w) else "symmetric")

    def fade(n: int) -> np.ndarray:
        d = np.minimum(np.arange(n + 2 * pad) - pad, n + pad - 1 - np.arange(n + 2 * pad))  # <0 in the border
        t = np.clip((d + pad) / max(pad, 1), 0.0, 1.0)
        return np.where(d >= 0, 1.0, np.sin(0.5 * np.pi * t) ** 2)

    win = fade(h)[:, None] * fade(w)[None, :]
    means = frames.reshape(n_orientations, n_pha, h, w).mean(axis=(1, 2, 3))
    mu = np.repeat(means, n_pha)[:, None, None]
    return mu + (padded - mu) * win, means


def _fourier_upsample(spec: np.ndarray, scale: int) -> np.ndarray:
    """Zero-pad an fft2 spectrum (…, H, W) to (…, scale·H, scale·W) (H, W even), values kept as in real space."""
    h, w = spec.shape[-2:]
    big = np.zeros((*spec.shape[:-2], scale * h, scale * w), complex)
    oy, ox = (scale - 1) * h // 2, (scale - 1) * w // 2
    big[..., oy:oy + h, ox:ox + w] = sfft.fftshift(spec, axes=(-2, -1))
    return sfft.ifftshift(big, axes=(-2, -1)) * scale * scale


class _Grid:
    """Coordinates and frequencies of the padded field on a scale× grid, in raw-pixel units."""

    def __init__(self, shape: tuple[int, int], scale: int, pad: int, cutoff_px: float):
        self.scale = scale
        h, w = shape
        self.y = np.arange(scale * h) / scale - pad
        self.x = np.arange(scale * w) / scale - pad
        self.fy = sfft.fftfreq(scale * h, d=1.0 / scale)[:, None]
        self.fx = sfft.fftfreq(scale * w, d=1.0 / scale)[None, :]
        self.cutoff = cutoff_px

    def otf(self, ky: float = 0.0, kx: float = 0.0) -> np.ndarray:
        return pupil_otf(np.hypot(self.fy - ky, self.fx - kx), self.cutoff)

    def radius(self, ky: float = 0.0, kx: float = 0.0) -> np.ndarray:
        return np.hypot(self.fy - ky, self.fx - kx)

    def shift(self, band_real: np.ndarray, ky: float, kx: float) -> np.ndarray:
        """Spectrum of ``band_real · e^{2πi k·r}``: the band moved by +k (exact for any sub-pixel k).

        Band m holds ``S(f − m k)``; it is moved by −m k to put the specimen
        frequencies at their true positions.
        """
        ramp = np.exp(2j * np.pi * ky * self.y)[:, None] * np.exp(2j * np.pi * kx * self.x)[None, :]
        return sfft.fft2(band_real * ramp)


def _cutoff_px(pixel_nm: float, na: float, emission_nm: float) -> float:
    for name, v in (("pixel_nm", pixel_nm), ("na", na), ("emission_nm", emission_nm)):
        if not (isinstance(v, (int, float, np.floating)) and math.isfinite(v) and v > 0):
            raise DfcanError(f"{name} must be a positive number. Received: {name}={v!r}")
    cutoff = detection_cutoff(na, emission_nm) * pixel_nm
    if cutoff >= 0.5:
        raise DfcanError(f"the detection cutoff 2·NA/λ = {cutoff:.3f} cycles/pixel is above the raw Nyquist "
                         f"frequency; check na={na}, emission_nm={emission_nm}, pixel_nm={pixel_nm}")
    return cutoff


def _default_pad(shape: tuple[int, ...]) -> int:
    n = max(shape[-2:])
    pad = max(8, int(round(0.08 * n)))
    return pad + (pad % 2)


# --------------------------------------------------------------------------- estimation
def _real_bands(bands: np.ndarray, scale: int) -> np.ndarray:
    """Band spectra (…, H, W) to complex real-space bands on the scale× grid."""
    return sfft.ifft2(_fourier_upsample(bands, scale))


def _find_k(bands: np.ndarray, orders: np.ndarray, grid: _Grid, *, k_range: tuple[float, float],
            max_order: int) -> tuple[float, float, float]:
    """Wave vector of one orientation from its band spectra (raw grid); returns (ky, kx, peak height).

    Coarse: the cross-correlation coefficient of OTF-normalised bands 0 and
    +1 over their overlap (so that the small overlap far from DC counts as
    much as the strong low frequencies) on the integer frequency grid of the
    padded field, searched in the annulus ``k_range`` (cycles per raw pixel). Fine: Nelder–Mead on
    the magnitude of the least-squares band ratio |c₁(q)| (band +1 shifted by
    −q exactly, each band weighted by the other's OTF) as a correlation
    coefficient, plus that of bands +2 and +1 for nonlinear SIM; both peak at
    the true k.
    """
    j = {int(m): i for i, m in enumerate(orders)}
    raw_grid = _Grid(bands.shape[-2:], 1, 0, grid.cutoff)
    otf = raw_grid.otf()
    mask = otf > 0.08
    x0 = np.where(mask, bands[j[0]] / np.maximum(otf, 0.08), 0.0)
    x1 = np.where(mask, bands[j[1]] / np.maximum(otf, 0.08), 0.0)
    m = mask.astype(float)

    def xcorr(a: np.ndarray, b: np.ndarray) -> np.ndarray:
        """Σ_f a(f) b*(f + q) for every q of the (scale×) grid, via real space (no wrap-around)."""
        ra, rb = _real_bands(np.stack([a, b]), grid.scale)
        return sfft.ifft2(ra * np.conj(rb)) * float(a.size) ** 2

    corr = np.abs(xcorr(x0, x1))
    # Normalised by the band energies inside the overlap at each q, so the large overlap of small shifts
    # (and the strong low frequencies) does not win over the true, small overlap at |k| near the cutoff.
    n0 = np.abs(xcorr(np.abs(x0) ** 2, m))
    n1 = np.abs(xcorr(m, np.abs(x1) ** 2))
    area = np.abs(xcorr(m, m))
    rad = grid.radius()
    ok = (rad >= k_range[0]) & (rad <= k_range[1]) & (area > 0.02 * m.sum())
    score = np.where(ok, corr / np.sqrt(np.maximum(n0 * n1, 1e-300)), 0.0)
    iy, ix = np.unravel_index(int(np.argmax(score)), score.shape)
    ky0, kx0 = float(grid.fy[iy, 0]), float(grid.fx[0, ix])
    height = float(score[iy, ix])

    real = _real_bands(bands, grid.scale)
    b0 = sfft.fft2(real[j[0]])
    otf0 = grid.otf()
    dc = grid.radius() < 0.15 * grid.cutoff

    def objective(q: np.ndarray) -> float:
        s1 = grid.shift(real[j[1]], -q[0], -q[1])
        otf1 = grid.otf(-q[0], -q[1])
        value = abs(_band_ratio(s1, b0, otf1, otf0, dc, coefficient=True))
        if max_order >= 2:
            s2 = grid.shift(real[j[2]], -2 * q[0], -2 * q[1])
            value += abs(_band_ratio(s2, s1, grid.otf(-2 * q[0], -2 * q[1]), otf1, None, coefficient=True))
        return -value

    step = 0.25 / (len(grid.y) / grid.scale)  # a quarter of a frequency bin of the padded field
    simplex = np.array([[ky0, kx0], [ky0 + step, kx0], [ky0, kx0 + step]])
    res = minimize(objective, np.array([ky0, kx0]), method="Nelder-Mead",
                   options={"initial_simplex": simplex, "xatol": 2e-6, "fatol": 1e-7, "maxiter": 200})
    ky, kx = (float(v) for v in res.x)
    if math.hypot(ky - ky0, kx - kx0) > 8 * step:  # the optimiser ran off: keep the grid peak
        ky, kx = ky0, kx0
    return ky, kx, height


def _band_ratio(hi: np.ndarray, lo: np.ndarray, otf_hi: np.ndarray, otf_lo: np.ndarray,
                exclude: np.ndarray | None, coefficient: bool = False) -> complex:
    """Least-squares c_hi / c_lo from two shifted bands where both OTFs are significant.

    With ``coefficient`` the normalised correlation coefficient instead (|·| ≤ 1, symmetric in the two
    bands, so its maximum over the shift is not pulled by how the overlap changes).
    """
    mask = (otf_hi > 0.05) & (otf_lo > 0.05)
    if exclude is not None:
        mask &= ~exclude
    x_hi = hi[mask] * otf_lo[mask]
    x_lo = lo[mask] * otf_hi[mask]
    den = float(np.sum(np.abs(x_lo) ** 2))
    if coefficient:
        den = math.sqrt(den * float(np.sum(np.abs(x_hi) ** 2)))
    if den <= 0:
        return 0j
    return complex(np.sum(x_hi * np.conj(x_lo)) / den)


def _shifted_bands(real_bands: np.ndarray, orders: np.ndarray, grid: _Grid, ky: float, kx: float,
                   max_order: int) -> dict[int, np.ndarray]:
    out = {}
    for j, m in enumerate(orders):
        if abs(m) <= max_order:
            out[int(m)] = grid.shift(real_bands[j], -m * ky, -m * kx) if m else sfft.fft2(real_bands[j])
    return out


def _estimate_weights(shifted: dict[int, np.ndarray], grid: _Grid, ky: float, kx: float,
                      max_order: int) -> tuple[complex, complex]:
    """Complex band weights c_1 and c_2 (0 for linear SIM) from overlapping shifted bands."""
    dc = grid.radius() < 0.15 * grid.cutoff  # band 0 carries the background around DC
    c1 = _band_ratio(shifted[1], shifted[0], grid.otf(-ky, -kx), grid.otf(), dc)
    c2 = 0j
    if max_order >= 2 and 2 in shifted:
        c2 = c1 * _band_ratio(shifted[2], shifted[1], grid.otf(-2 * ky, -2 * kx), grid.otf(-ky, -kx), None)
    return c1, c2


def _prepare(frames, n_orientations, n_phases, pixel_nm, na, emission_nm, pad, background):
    frames = _check_stack(frames, n_orientations, n_phases)
    cutoff = _cutoff_px(pixel_nm, na, emission_nm)
    if background is None:
        bg = 0.0
    elif isinstance(background, str):
        if background != "auto":
            raise DfcanError(f"background must be a number, None or 'auto'. Received: background={background!r}")
        bg = float(np.percentile(frames.mean(axis=0), 0.5))
    else:
        bg = float(background)
    pad = _default_pad(frames.shape) if pad is None else int(pad)
    if pad < 0:
        raise DfcanError(f"pad must be ≥ 0. Received: pad={pad}")
    h, w = frames.shape[1:]
    p = pad
    padded, means = _pad_frames(frames - bg, n_orientations, p)
    # Even padded sizes (Fourier upsampling places the spectrum symmetrically).
    if padded.shape[1] % 2 or padded.shape[2] % 2:
        padded = np.pad(padded, ((0, 0), (0, padded.shape[1] % 2), (0, padded.shape[2] % 2)), mode="edge")
    return padded, means, cutoff, p, _estimation_window(padded.shape[1:], (h, w), p)


def _estimation_window(shape: tuple[int, int], inner: tuple[int, int], pad: int) -> np.ndarray:
    """Window for parameter estimation: 1 inside the image, a cosine taper to 0 at its edges, 0 in the padding.

    The mirrored padding carries mirrored patterns; leaving it out (and tapering
    the image so its edges do not ring) keeps the estimates unbiased.
    """
    def taper(n_total: int, n: int) -> np.ndarray:
        width = max(min(pad, n // 4), 1)
        i = np.arange(n_total) - pad
        d = np.minimum(i, n - 1 - i)
        return np.where(d < 0, 0.0, np.sin(0.5 * np.pi * np.clip((d + 0.5) / width, 0.0, 1.0)) ** 2)

    return taper(shape[0], inner[0])[:, None] * taper(shape[1], inner[1])[None, :]


def _estimate(padded, means, window, n_orientations, n_phases, cutoff, pad, pixel_nm, na, emission_nm, max_order,
              known: SIMParameters | None) -> SIMParameters:
    """Estimate (or complete) the parameters of every orientation."""
    orders = _orders(n_phases)
    # The grid must hold band products (|f| < 2·cutoff) and bands shifted by max_order·k (|k| < cutoff).
    grid = _Grid(padded.shape[1:], 2 if (max_order + 1) * cutoff < 1.0 else 3, pad, cutoff)
    out: list[OrientationParameters] = []
    for o in range(n_orientations):
        stack = (padded[o * n_phases:(o + 1) * n_phases] - means[o]) * window
        bands = separate_bands(stack, n_orientations=1, n_phases=n_phases)[0]
        if known is not None:
            kp = known.orientations[o]
            ky, kx, corr = kp.ky, kp.kx, 0.0
        else:
            ky, kx, corr = _find_k(bands, orders, grid, k_range=(0.2 * cutoff, 0.995 * cutoff),
                                   max_order=max_order)
        if known is not None and all(math.isfinite(v) for v in (kp.phase_rad, kp.modulation)):
            out.append(OrientationParameters(kx, ky, kp.phase_rad, kp.modulation, kp.harmonic,
                                             kp.harmonic_phase_rad, 0.0))
            continue
        shifted = _shifted_bands(_real_bands(bands, grid.scale), orders, grid, ky, kx, max_order)
        c1, c2 = _estimate_weights(shifted, grid, ky, kx, max_order)
        phase = float(np.angle(c1))
        harm_phase = float(np.angle(c2 * np.exp(-2j * phase))) if c2 else 0.0
        out.append(OrientationParameters(kx, ky, phase, 2.0 * abs(c1), 2.0 * abs(c2), harm_phase, corr))
    src = "estimated" if known is None else known.source
    return SIMParameters(out, n_phases, pixel_nm, na, emission_nm, src)


def estimate_parameters(frames: np.ndarray, *, pixel_nm: float, na: float, emission_nm: float,
                        n_orientations: int = 3, n_phases: int = 3, max_order: int | None = None,
                        known: SIMParameters | None = None, pad: int | None = None,
                        background: float | str | None = "auto") -> SIMParameters:
    """Estimate the illumination parameters of a raw SIM stack blind.

    Parameters
    ----------
    frames
        (n_orientations·n_phases, H, W) raw frames, orientation-major.
    pixel_nm, na, emission_nm
        Raw pixel size (nm), numerical aperture and emission wavelength (nm).
    n_orientations, n_phases
        3 × 3 (linear SIM) or 5 × 5 (nonlinear SIM).
    max_order
        Highest harmonic to estimate (default ``n_phases // 2``, at most 2).
    known
        Wave vectors to use instead of estimating them (phase and modulation
        are then estimated); see :func:`parameters_from_simulation`.
    pad, background
        Border padding (pixels, default 8% of the side) and a constant
        subtracted first (``"auto"``: the 0.5th percentile of the mean frame).

    Returns
    -------
    SIMParameters
    """
    max_order = min(n_phases // 2, 2) if max_order is None else int(max_order)
    padded, means, cutoff, pad, window = _prepare(frames, n_orientations, n_phases, pixel_nm, na, emission_nm, pad,
                                             background)
    _check_known(known, n_orientations, n_phases)
    params = _estimate(padded, means, window, n_orientations, n_phases, cutoff, pad, pixel_nm, na, emission_nm,
                          max_order, known)
    return params


def _check_known(known: SIMParameters | None, n_orientations: int, n_phases: int) -> None:
    if known is None:
        return
    if not isinstance(known, SIMParameters):
        raise DfcanError(f"params must be SIMParameters. Received: {type(known).__name__}")
    if known.n_orientations != n_orientations or known.n_phases != n_phases:
        raise DfcanError(f"the given SIM parameters describe {known.n_orientations} orientations × "
                         f"{known.n_phases} phases, the data {n_orientations} × {n_phases}")


# --------------------------------------------------------------------------- reconstruction
