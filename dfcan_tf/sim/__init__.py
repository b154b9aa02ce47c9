"""Conventional SIM reconstruction (numpy/scipy): linear SIM 2× and nonlinear SIM 3×.

See :mod:`dfcan_tf.sim.reconstruct` for the method and :mod:`dfcan_tf.cli.sim_reconstruct`
for ``dfcan sim-reconstruct``.
"""

from dfcan_tf.sim.reconstruct import (
    APODISATIONS,
    DEFAULT_WIENER,
    OrientationParameters,
    SIMParameters,
    combine_bands,
    estimate_parameters,
    parameters_from_simulation,
    parameters_to_json,
    reconstruct_linear,
    reconstruct_nonlinear,
    separate_bands,
)

__all__ = [
    "APODISATIONS",
    "DEFAULT_WIENER",
    "OrientationParameters",
    "SIMParameters",
    "combine_bands",
    "estimate_parameters",
    "parameters_from_simulation",
    "parameters_to_json",
    "reconstruct_linear",
    "reconstruct_nonlinear",
    "separate_bands",
]
