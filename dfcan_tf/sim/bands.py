"""Band separation of a raw SIM stack and its inverse (step 1 of :mod:`dfcan_tf.sim.reconstruct`)."""

from __future__ import annotations

import numpy as np
import scipy.fft as sfft

from dfcan_tf.errors import DfcanError


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
