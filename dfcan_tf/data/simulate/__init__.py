"""Physically simulated BioSR-like SIM data (``dfcan simulate``); see ``docs/data.md#simulator``.

A forward model of the SIM microscope BioSR was acquired on, in three parts:

- :mod:`~dfcan_tf.data.simulate.optics`: OTF, detection cutoff, illumination
  patterns and image formation (also used by :mod:`dfcan_tf.sim.reconstruct`);
- :mod:`~dfcan_tf.data.simulate.structures`: the specimen renderers;
- :mod:`~dfcan_tf.data.simulate.dataset`: camera noise, signal levels, one
  simulated cell, and datasets written in BioSR's layout.

The public names of all three are available here. The dataset module (and the
file writers it needs) is imported only when one of its names is used, so
``import dfcan_tf.data.simulate.optics`` stays light.
"""

from __future__ import annotations

import importlib
from typing import Any

from dfcan_tf.data.simulate.optics import (
    PAD_RAW,
    RAW_PIXEL_NM,
    detection_cutoff,
    illumination_patterns,
    image_frames,
    pupil_otf,
)
from dfcan_tf.data.simulate.structures import NONLINEAR, SPECIMENS, render_structure

_DATASET_NAMES = ("N_LEVELS", "SimulatedCell", "check_output", "level_photons", "select_levels", "simulate_cell",
                  "simulate_dataset", "write_cell")

__all__ = [
    "NONLINEAR",
    "PAD_RAW",
    "RAW_PIXEL_NM",
    "SPECIMENS",
    "detection_cutoff",
    "illumination_patterns",
    "image_frames",
    "pupil_otf",
    "render_structure",
    *_DATASET_NAMES,
]


def __getattr__(name: str) -> Any:
    if name in _DATASET_NAMES:
        return getattr(importlib.import_module("dfcan_tf.data.simulate.dataset"), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
