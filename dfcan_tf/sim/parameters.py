"""SIM pattern parameters per orientation (wave vector, phase, modulation), their JSON form, and the
simulator's known values (see :mod:`dfcan_tf.sim.reconstruct` for the method)."""

from __future__ import annotations

import json
import math
import os
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from dfcan_tf.errors import DfcanError


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
