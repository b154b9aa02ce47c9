"""The one normaliser: how images go into a network and how its output comes back.

Every stage (patches, training, prediction, evaluation, export, the exported
models' examples) takes its numbers from :class:`Normalizer`, which a run
stores in its ``config.json`` (``data.normalization``). See
``docs/data.md#normalisation``.

Modes
-----
``minmax``
    ``(x - min) / (max - min + eps)`` over the image (or the whole stack of a
    patch), the authors' 0–100th percentile normalisation.
``percentile``
    The same with the ``pmin``/``pmax`` percentiles as low and high points
    (CSBDeep's default is 1 / 99.8), clipped to [0, 1] only when ``clip``.
``divide65535``
    ``x / 65535``: the authors' setting when normalisation is off, which keeps
    absolute intensities (16-bit camera counts).

:meth:`Normalizer.before` returns the normalised array together with the
:class:`Scaling` used, and :meth:`Normalizer.after` maps a network output back
to the input's intensity units with that scaling, so intensities of two images,
or of the frames of one time-lapse, stay comparable.

:func:`minmax_scale` is the formula itself, written once; it works on numpy
arrays and on TensorFlow tensors alike (the losses call it with tensors).
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any

import numpy as np

from dfcan_tf.errors import DfcanError

MODES = ("minmax", "percentile", "divide65535")
DEFAULT_EPS = 1e-7
UINT16_MAX = 65535.0


def minmax_scale(x: Any, lo: Any, hi: Any, eps: float = DEFAULT_EPS) -> Any:
    """``(x - lo) / (hi - lo + eps)``: the package's only min-max formula (numpy or tensors)."""
    return (x - lo) / (hi - lo + eps)


@dataclass(frozen=True)
class Scaling:
    """The low and high points one normalisation used (scalars or arrays broadcastable to the data)."""

    lo: Any
    hi: Any
    eps: float = DEFAULT_EPS

    def to_dict(self) -> dict[str, Any]:
        return {"lo": np.asarray(self.lo).tolist(), "hi": np.asarray(self.hi).tolist(), "eps": self.eps}


@dataclass(frozen=True)
class Normalizer:
    """How images are brought to [0, 1] before a network and back after it.

    Parameters
    ----------
    mode
        ``"minmax"`` (default, the paper's), ``"percentile"`` or ``"divide65535"``.
    pmin, pmax
        Percentiles of the ``percentile`` mode.
    eps
        Added to ``max - min``: a constant image maps to zeros, never NaN.
    clip
        Clip the normalised values to [0, 1] (``percentile`` mode).
    """

    mode: str = "minmax"
    pmin: float = 1.0
    pmax: float = 99.8
    eps: float = DEFAULT_EPS
    clip: bool = False

    def __post_init__(self) -> None:
        if self.mode not in MODES:
            raise DfcanError(f"normalization must be one of {MODES}. Received: normalization={self.mode!r}")
        if not (0.0 <= self.pmin < self.pmax <= 100.0):
            raise DfcanError(f"percentiles must satisfy 0 <= pmin < pmax <= 100. "
                             f"Received: pmin={self.pmin}, pmax={self.pmax}")
        if not (np.isfinite(self.eps) and self.eps >= 0):
            raise DfcanError(f"eps must be finite and >= 0. Received: eps={self.eps}")

    # -- configuration -------------------------------------------------------------------------
    @classmethod
    def from_config(cls, value: Any) -> Normalizer:
        """From a run config's ``normalization`` entry: a mode name (older runs) or a dict."""
        if value is None:
            return cls()
        if isinstance(value, Normalizer):
            return value
        if isinstance(value, str):
            return cls(mode=value)
        if isinstance(value, dict):
            known = {f.name for f in dataclasses.fields(cls)}
            unknown = sorted(set(value) - known)
            if unknown:
                raise DfcanError(f"unknown normalization keys {unknown}; known keys are {sorted(known)}")
            return cls(**value)
        raise DfcanError(f"normalization must be a mode name or an object. Received: {value!r}")

    def to_config(self) -> str | dict[str, Any]:
        """The ``normalization`` entry of a run config (a bare mode name when the other fields are defaults)."""
        if self == Normalizer(mode=self.mode):
            return self.mode
        return dataclasses.asdict(self)

    @property
    def per_image(self) -> bool:
        """True when the mapping depends on the image (min-max, percentile); False for ``divide65535``."""
        return self.mode != "divide65535"

    # -- numpy ---------------------------------------------------------------------------------
    def scaling(self, x: np.ndarray, axes: tuple[int, ...] | None = None) -> Scaling:
        """The low/high points of ``x`` (over ``axes``, default all) for this mode."""
        if self.mode == "divide65535":
            return Scaling(0.0, UINT16_MAX, 0.0)
        x = np.asarray(x)
        if self.mode == "minmax":
            lo = np.min(x, axis=axes, keepdims=axes is not None)
            hi = np.max(x, axis=axes, keepdims=axes is not None)
        else:
            lo = np.percentile(x, self.pmin, axis=axes, keepdims=axes is not None)
            hi = np.percentile(x, self.pmax, axis=axes, keepdims=axes is not None)
        lo = np.asarray(lo, dtype=np.float64)
        hi = np.asarray(hi, dtype=np.float64)
        return Scaling(lo if lo.ndim else float(lo), hi if hi.ndim else float(hi), self.eps)

    def before(self, x: np.ndarray, axes: tuple[int, ...] | None = None, *,
               scaling: Scaling | None = None, dtype=np.float32) -> tuple[np.ndarray, Scaling]:
        """Normalise ``x``; return ``(normalised, scaling)``.

        Computed in float64 so that huge values do not overflow; ``scaling``
        given reuses another image's mapping (one mapping for a whole stack).
        """
        s = scaling or self.scaling(x, axes)
        y = minmax_scale(np.asarray(x, dtype=np.float64), s.lo, s.hi, s.eps)
        if self.clip:
            y = np.clip(y, 0.0, 1.0)
        return y.astype(dtype, copy=False), s

    def normalize(self, x: np.ndarray, axes: tuple[int, ...] | None = None, *, dtype=np.float32) -> np.ndarray:
        """:meth:`before` without the scaling."""
        return self.before(x, axes, dtype=dtype)[0]

    def after(self, y: np.ndarray, scaling: Scaling) -> np.ndarray:
        """Map a [0, 1] output back to the input's intensity units (float32)."""
        y = np.asarray(y, dtype=np.float64)
        return (y * (np.asarray(scaling.hi) - np.asarray(scaling.lo) + scaling.eps)
                + np.asarray(scaling.lo)).astype(np.float32)


MINMAX = Normalizer()


def minmax(x: np.ndarray, axes: tuple[int, ...] | None = None, *, dtype=np.float32) -> np.ndarray:
    """Min-max normalise ``x`` (over ``axes``, default all) to [0, 1] with the default epsilon."""
    return MINMAX.normalize(x, axes, dtype=dtype)
