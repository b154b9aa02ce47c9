"""Conventional SIM reconstruction: linear SIM (2×) and nonlinear SIM with a second harmonic (3×).

The raw stack holds ``n_orientations × n_phases`` frames, orientation-major
(BioSR's order, and :func:`dfcan_tf.data.simulate.optics.illumination_patterns`'): frame
``o·n_phases + p`` is orientation ``o`` at the nominal phase ``2π p / n_phases``.
For one orientation the frames are

    D_p(f) = OTF(f) · Σ_m c_m e^{i m φ_p} S(f − m k),   m = −M..M,

with S the specimen spectrum, k the pattern wave vector, c_0 = 1 and
c_{±m} = (a_m / 2) e^{±i m φ₀} for the modulation depth a_m of harmonic m
(Gustafsson, J. Microsc. 2000; nonlinear SIM: Rego et al., PNAS 2012,
Li et al., Science 2015). The steps are:

1. **Band separation**: with ``n_phases = 2M + 1`` equally spaced phases the
   mixing matrix ``e^{i m φ_p}`` is a DFT matrix; its inverse gives the bands
   ``B_m(f) = c_m OTF(f) S(f − m k)`` (:func:`separate_bands`).
2. **Wave vector** (blind): band 0 and band +1 overlap best when band +1 is
   shifted back by k, so the cross-correlation ``C(q) = Σ_f B_0(f) B_1*(f + q)``
   of the OTF-normalised bands, divided by the band energies inside the
   overlap, peaks at q = k. It is computed for all integer q with FFTs of
   real-space products (on a 2× grid so products do not alias), then refined
   off the grid with Nelder–Mead on the correlation coefficient of the bands
   shifted by −q exactly (phase ramp). Nonlinear SIM adds the coefficient of
   bands 2 and 1 (the order-2 vector is 2k) to the objective.
3. **Phase and modulation**: the bands, shifted to their true positions,
   agree where their OTF supports overlap after each is weighted by the
   other's OTF (as in fairSIM, Müller et al., Nat. Commun. 2016); a
   least-squares fit of ``c_m / c_{m−1}`` gives the complex band weight,
   i.e. the modulation depth ``2|c_m|`` and the phase.
4. **Reconstruction**: the bands are Fourier-interpolated onto the
   scale× grid, multiplied by the phase ramp ``e^{2πi m k·r}`` in real space
   (an exact sub-pixel shift), and combined by the generalised Wiener filter

       S(f) = A(f) · Σ c_m* OTF_m*(f) B̃_m(f) / (Σ |c_m|² |OTF_m(f)|² + w²),

   OTF_m(f) = OTF(f − m k), with apodisation A to the extended support
   (by default the incoherent OTF of that support, the transfer function a
   GT-SIM image has).

The raw frames are padded with a mirrored border fading to the orientation's
mean before any FFT, so the periodic continuation has no edges (no ringing
or cross artefacts); the padding is cropped from the result. Wave vectors are
in cycles per raw pixel, phases are referred to the centre of raw pixel (0, 0).
"""

from __future__ import annotations

import json
import math
import os
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import scipy.fft as sfft
from scipy.optimize import minimize

from dfcan_tf.data.simulate.optics import detection_cutoff, pupil_otf
from dfcan_tf.errors import DfcanError

APODISATIONS = ("otf", "triangle", "cosine", "none")
DEFAULT_WIENER = 0.1


# --------------------------------------------------------------------------- parameters
@dataclass
class OrientationParameters:
    """Illumination parameters of one pattern orientation.

    Attributes
    ----------
    kx, ky
        Wave vector of the first harmonic in cycles per raw pixel (x: columns, y: rows).
    phase_rad
        Pattern phase of the first frame at raw pixel (0, 0), radians.
    modulation
        First-harmonic modulation depth a₁ (pattern ``1 + a₁ cos(2π k·r + φ) + …``).
    harmonic, harmonic_phase_rad
        Second-harmonic depth a₂ and its phase relative to ``2 φ`` (nonlinear SIM; 0 for linear SIM).
    correlation
        Normalised height of the band cross-correlation peak at k (0 for known parameters):
        a measure of how clearly the pattern was found.
    """

    kx: float
    ky: float
    phase_rad: float = float("nan")
    modulation: float = float("nan")
    harmonic: float = 0.0
    harmonic_phase_rad: float = 0.0
    correlation: float = 0.0

    @property
    def frequency(self) -> float:
        """|k| in cycles per raw pixel."""
        return math.hypot(self.kx, self.ky)

    @property
    def angle_deg(self) -> float:
        """Orientation of k, degrees in [0, 180)."""
        return math.degrees(math.atan2(self.ky, self.kx)) % 180.0

    def band_weight(self, order: int) -> complex:
        """The complex weight c_m of band ``order`` (c_0 = 1, c_{−m} = c_m*)."""
        if order == 0:
            return 1.0 + 0.0j
        m = abs(order)
        if m == 1:
            c = 0.5 * self.modulation * np.exp(1j * self.phase_rad)
        elif m == 2:
            c = 0.5 * self.harmonic * np.exp(1j * (2.0 * self.phase_rad + self.harmonic_phase_rad))
        else:
            raise ValueError(f"order {order} is not supported")
        return complex(c if order > 0 else np.conj(c))


@dataclass
class SIMParameters:
    """Illumination parameters of one raw SIM stack, as estimated (or given).

    Attributes
    ----------
    orientations
        One :class:`OrientationParameters` per orientation, in frame order.
    n_phases
        Phases per orientation.
    pixel_nm, na, emission_nm
        Raw pixel size and detection optics.
    source
        ``"estimated"`` (blind), ``"known"`` (given) or ``"known k"`` (given
        wave vectors, phase and modulation estimated).
    """

    orientations: list[OrientationParameters]
    n_phases: int
    pixel_nm: float
    na: float
    emission_nm: float
    source: str = "estimated"
    extra: dict = field(default_factory=dict)

    @property
    def n_orientations(self) -> int:
        return len(self.orientations)

    def to_dict(self) -> dict:
        """JSON-able description: per orientation k (cycles/pixel), period (nm), angle (°), phase, modulation."""
        rows = []
        for o in self.orientations:
            f = o.frequency
            rows.append({
                "k_cycles_per_pixel": [o.kx, o.ky],
                "frequency_cycles_per_pixel": f,
                "frequency_per_um": f / self.pixel_nm * 1000.0,
                "period_nm": self.pixel_nm / f if f > 0 else float("inf"),
                "angle_deg": o.angle_deg,
                "phase_rad": o.phase_rad,
                "modulation": o.modulation,
                "harmonic": o.harmonic,
                "harmonic_phase_rad": o.harmonic_phase_rad,
                "correlation": o.correlation,
            })
        return {"source": self.source, "n_orientations": self.n_orientations, "n_phases": self.n_phases,
                "pixel_nm": self.pixel_nm, "na": self.na, "emission_nm": self.emission_nm,
                "orientations": rows, **self.extra}

    @classmethod
    def from_dict(cls, doc: dict) -> SIMParameters:
        """Inverse of :meth:`to_dict` (extra keys are ignored)."""
        try:
            ors = [OrientationParameters(kx=float(r["k_cycles_per_pixel"][0]), ky=float(r["k_cycles_per_pixel"][1]),
                                         phase_rad=float(r.get("phase_rad", float("nan"))),
                                         modulation=float(r.get("modulation", float("nan"))),
                                         harmonic=float(r.get("harmonic", 0.0)),
                                         harmonic_phase_rad=float(r.get("harmonic_phase_rad", 0.0)))
                   for r in doc["orientations"]]
            return cls(ors, int(doc["n_phases"]), float(doc["pixel_nm"]), float(doc["na"]),
                       float(doc["emission_nm"]), str(doc.get("source", "known")))
        except (KeyError, TypeError, ValueError, IndexError) as exc:
            raise DfcanError(f"SIM parameters are incomplete or malformed ({exc!r}); expected the JSON written by "
                             "'dfcan sim-reconstruct' or a simulation.json") from None


def parameters_from_simulation(doc: dict | str | os.PathLike) -> SIMParameters:
    """Known wave vectors and modulation depths from ``simulation.json`` (written by ``dfcan simulate``).

    The pattern phase is left to be estimated from the data (``nan``): the
    simulator's phase refers to its padded field, not to the raw image.

    Parameters
    ----------
    doc
        The parsed JSON or its path.
    """
    if not isinstance(doc, dict):
        path = Path(doc)
        try:
            doc = json.loads(path.read_text())
        except (OSError, ValueError) as exc:
            raise DfcanError(f"{path}: cannot read the simulation parameters ({exc})") from None
    try:
        px = float(doc["raw_pixel_nm"])
        f = float(doc["pattern_frequency_per_um"]) / 1000.0 * px
        m = float(doc["modulation"])
        h = float(doc.get("second_harmonic", 0.0))
        angles = [math.radians(a) for a in doc["orientations_deg"]]
        n_phases = len(doc["phases_rad"])
        ors = [OrientationParameters(kx=f * math.cos(a), ky=f * math.sin(a), modulation=m, harmonic=h)
               for a in angles]
        return SIMParameters(ors, n_phases, px, float(doc["na"]), float(doc["emission_nm"]), "known k")
    except (KeyError, TypeError, ValueError) as exc:
        raise DfcanError(f"simulation parameters lack {exc}; expected a simulation.json of 'dfcan simulate'") from None


# --------------------------------------------------------------------------- band separation
def _mixing_matrix(n_phases: int, orders: np.ndarray, phases: np.ndarray | None = None) -> np.ndarray:
    ph = 2.0 * np.pi * np.arange(n_phases) / n_phases if phases is None else np.asarray(phases, float)
    return np.exp(1j * ph[:, None] * orders[None, :])


def _orders(n_phases: int) -> np.ndarray:
    if n_phases < 3 or n_phases % 2 == 0:
        raise DfcanError(f"band separation needs an odd number of phases ≥ 3. Received: n_phases={n_phases}")
    m = n_phases // 2
    return np.arange(-m, m + 1)


def _check_stack(frames: np.ndarray, n_orientations: int, n_phases: int, name: str = "frames") -> np.ndarray:
    frames = np.asarray(frames)
    if frames.ndim != 3:
        raise DfcanError(f"{name}: expected a (frames, H, W) raw SIM stack. Received: shape={frames.shape}")
    if frames.shape[0] != n_orientations * n_phases:
        raise DfcanError(f"{name}: {frames.shape[0]} frames, expected {n_orientations * n_phases} "
                         f"({n_orientations} orientations × {n_phases} phases)")
    if min(frames.shape[1:]) < 16:
        raise DfcanError(f"{name}: frames of {frames.shape[1]}×{frames.shape[2]} pixels are too small (≥ 16)")
    if not np.all(np.isfinite(frames)):
        raise DfcanError(f"{name}: contains NaN or infinite pixel values")
    return frames.astype(np.float64)


def separate_bands(frames: np.ndarray, *, n_orientations: int = 3, n_phases: int = 3,
                   phases: np.ndarray | None = None) -> np.ndarray:
    """Separate the spectral bands of a raw SIM stack.

    Parameters
    ----------
    frames
        (n_orientations·n_phases, H, W) raw frames, orientation-major.
    n_orientations, n_phases
        3 × 3 for linear SIM, 5 × 5 for nonlinear SIM.
    phases
        Phase of each frame within an orientation (radians); default the
        nominal ``2π p / n_phases``.

    Returns
    -------
    numpy.ndarray
        (n_orientations, n_phases, H, W) complex128 band spectra (``numpy.fft.fft2``
        layout); index j holds order ``j − n_phases // 2`` (orders −M..M).
    """
    frames = _check_stack(frames, n_orientations, n_phases)
    orders = _orders(n_phases)
    inv = np.linalg.inv(_mixing_matrix(n_phases, orders, phases))
    spec = sfft.fft2(frames).reshape(n_orientations, n_phases, *frames.shape[1:])
    return np.einsum("jp,opyx->ojyx", inv, spec)


def combine_bands(bands: np.ndarray, phases: np.ndarray | None = None) -> np.ndarray:
    """Inverse of :func:`separate_bands`: mix the bands back into (frames, H, W) real frames."""
    n_ori, n_pha = bands.shape[:2]
    mix = _mixing_matrix(n_pha, _orders(n_pha), phases)
    spec = np.einsum("pj,ojyx->opyx", mix, bands).reshape(n_ori * n_pha, *bands.shape[2:])
    return sfft.ifft2(spec).real


# --------------------------------------------------------------------------- helpers
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
def _apodisation(grid: _Grid, support: float, kind: str, strength: float) -> np.ndarray:
    if kind not in APODISATIONS:
        raise DfcanError(f"unknown apodisation. Received: {kind!r}; expected one of {APODISATIONS}")
    r = grid.radius()
    if kind == "none":
        return np.ones_like(r)
    if kind == "otf":
        return pupil_otf(r, support) ** strength
    v = np.clip(r / support, 0.0, 1.0)
    if kind == "triangle":
        return (1.0 - v) ** strength
    return np.cos(0.5 * np.pi * v) ** strength


def _reconstruct(frames, *, n_orientations, n_phases, scale, max_order, pixel_nm, na, emission_nm, wiener,
                 params, apodisation, apodisation_strength, support_ratio, pad, background):
    if not (isinstance(wiener, (int, float)) and wiener > 0):
        raise DfcanError(f"the Wiener parameter must be positive. Received: wiener={wiener!r}")
    _check_known(params, n_orientations, n_phases)
    padded, means, cutoff, pad, window = _prepare(frames, n_orientations, n_phases, pixel_nm, na, emission_nm, pad,
                                             background)
    est = _estimate(padded, means, window, n_orientations, n_phases, cutoff, pad, pixel_nm, na, emission_nm,
                       min(max_order, 2), params)
    orders = _orders(n_phases)
    grid = _Grid(padded.shape[1:], scale, pad, cutoff)
    num = np.zeros(grid.radius().shape, complex)
    den = np.zeros(num.shape)
    for o, op in enumerate(est.orientations):
        bands = separate_bands(padded[o * n_phases:(o + 1) * n_phases], n_orientations=1, n_phases=n_phases)[0]
        real = _real_bands(bands, scale)
        shifted = _shifted_bands(real, orders, grid, op.ky, op.kx, max_order)
        for m, spec in shifted.items():
            c = op.band_weight(m)
            if m and abs(c) < 1e-6:
                continue
            otf = grid.otf(-m * op.ky, -m * op.kx)
            num += np.conj(c) * otf * spec
            den += abs(c) ** 2 * otf**2
    f_max = max(op.frequency for op in est.orientations) * max_order + cutoff
    apo = _apodisation(grid, support_ratio * f_max, apodisation, apodisation_strength)
    # Scale so that the DC matches one raw frame (the Wiener sum counts band 0 once per orientation).
    dc = den[0, 0] / (den[0, 0] + wiener**2)
    img = sfft.ifft2(apo * num / (den + wiener**2) / dc).real
    h, w = np.asarray(frames).shape[1:]
    img = img[scale * pad:scale * (pad + h), scale * pad:scale * (pad + w)]
    est.extra = {"scale": scale, "orders": max_order, "wiener": wiener, "apodisation": apodisation,
                 "apodisation_strength": apodisation_strength, "support_ratio": support_ratio,
                 "background": _prepare_background_note(background), "output_pixel_nm": pixel_nm / scale}
    return np.clip(img, 0.0, None).astype(np.float32), est


def _prepare_background_note(background) -> float | str | None:
    return background if background is None or isinstance(background, str) else float(background)


def reconstruct_linear(frames: np.ndarray, *, pixel_nm: float, na: float, emission_nm: float,
                       wiener: float = DEFAULT_WIENER, params: SIMParameters | None = None,
                       apodisation: str = "otf", apodisation_strength: float = 1.0, support_ratio: float = 1.0,
                       pad: int | None = None, background: float | str | None = "auto",
                       ) -> tuple[np.ndarray, SIMParameters]:
    """Linear SIM reconstruction of 9 raw frames (3 orientations × 3 phases) on the 2× grid.

    Parameters
    ----------
    frames
        (9, H, W) raw frames, orientation-major (BioSR order).
    pixel_nm, na, emission_nm
        Raw pixel size (nm), detection NA and emission wavelength (nm).
    wiener
        Wiener parameter w (relative to OTF 1; larger is smoother).
    params
        Known parameters: used as given where phase and modulation are finite
        (e.g. the estimates of an earlier call); with ``nan`` phases (see
        :func:`parameters_from_simulation`) only the wave vectors are used and
        phase and modulation are estimated.
        ``None`` estimates everything blind.
    apodisation, apodisation_strength, support_ratio
        Apodisation ``"otf"`` (incoherent OTF of the extended support; default),
        ``"triangle"``, ``"cosine"`` or ``"none"``, raised to ``apodisation_strength``,
        reaching zero at ``support_ratio × (|k| + cutoff)``.
    pad, background
        Border padding in raw pixels (default 8% of the side) and the constant
        subtracted first (``"auto"``: 0.5th percentile of the mean frame; ``None``: nothing).

    Returns
    -------
    image : numpy.ndarray
        (2H, 2W) float32, ≥ 0, in the intensity units of one raw frame.
    params : SIMParameters
        The parameters used (estimates unless given).
    """
    return _reconstruct(frames, n_orientations=3, n_phases=3, scale=2, max_order=1, pixel_nm=pixel_nm, na=na,
                        emission_nm=emission_nm, wiener=wiener, params=params, apodisation=apodisation,
                        apodisation_strength=apodisation_strength, support_ratio=support_ratio, pad=pad,
                        background=background)


def reconstruct_nonlinear(frames: np.ndarray, *, pixel_nm: float, na: float, emission_nm: float,
                          wiener: float = DEFAULT_WIENER, params: SIMParameters | None = None,
                          orders: int = 2, apodisation: str = "otf", apodisation_strength: float = 1.0,
                          support_ratio: float = 1.0, pad: int | None = None,
                          background: float | str | None = "auto") -> tuple[np.ndarray, SIMParameters]:
    """Nonlinear SIM reconstruction of 25 raw frames (5 orientations × 5 phases) on the 3× grid.

    Same as :func:`reconstruct_linear` with bands of orders 0, ±1 and ±2 (the
    second harmonic of a saturated or photoswitched pattern, at 2k).
    ``orders=1`` uses only orders 0 and ±1 (a linear reconstruction of the
    same data on the same grid, for comparison).

    Returns
    -------
    image : numpy.ndarray
        (3H, 3W) float32, ≥ 0.
    params : SIMParameters
    """
    if orders not in (1, 2):
        raise DfcanError(f"orders must be 1 or 2. Received: orders={orders!r}")
    return _reconstruct(frames, n_orientations=5, n_phases=5, scale=3, max_order=orders, pixel_nm=pixel_nm, na=na,
                        emission_nm=emission_nm, wiener=wiener, params=params, apodisation=apodisation,
                        apodisation_strength=apodisation_strength, support_ratio=support_ratio, pad=pad,
                        background=background)


def parameters_to_json(params: SIMParameters) -> str:
    """The parameters as indented JSON (NaN written as null)."""
    def clean(v):
        if isinstance(v, float) and not math.isfinite(v):
            return None
        if isinstance(v, dict):
            return {k: clean(x) for k, x in v.items()}
        if isinstance(v, list):
            return [clean(x) for x in v]
        return v

    return json.dumps(clean(params.to_dict()), indent=2)


__all__ = [
    "APODISATIONS", "DEFAULT_WIENER", "OrientationParameters", "SIMParameters", "combine_bands",
    "estimate_parameters", "parameters_from_simulation", "parameters_to_json", "reconstruct_linear",
    "reconstruct_nonlinear", "separate_bands",
]
