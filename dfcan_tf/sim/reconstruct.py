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

The steps live in :mod:`dfcan_tf.sim.bands` (1), :mod:`dfcan_tf.sim.estimate` (2, 3) and here (4);
the parameters in :mod:`dfcan_tf.sim.parameters`.
"""

from __future__ import annotations

import numpy as np
import scipy.fft as sfft

from dfcan_tf.data.simulate.optics import pupil_otf
from dfcan_tf.errors import DfcanError
from dfcan_tf.sim.bands import _orders, combine_bands, separate_bands
from dfcan_tf.sim.estimate import (
    _check_known,
    _estimate,
    _Grid,
    _prepare,
    _real_bands,
    _shifted_bands,
    estimate_parameters,
)
from dfcan_tf.sim.parameters import (
    OrientationParameters,
    SIMParameters,
    parameters_from_simulation,
    parameters_to_json,
)

APODISATIONS = ("otf", "triangle", "cosine", "none")
DEFAULT_WIENER = 0.1


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


__all__ = [
    "APODISATIONS", "DEFAULT_WIENER", "OrientationParameters", "SIMParameters", "combine_bands",
    "estimate_parameters", "parameters_from_simulation", "parameters_to_json", "reconstruct_linear",
    "reconstruct_nonlinear", "separate_bands",
]
