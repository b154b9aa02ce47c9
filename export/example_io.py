"""Pre- and post-processing shared by the stand-alone examples (``onnx_predict.py``, ``litert_predict.py``).

numpy only: no TensorFlow, no dfcan_tf. The scripts import it from their own
folder (``python export/onnx_predict.py ...`` puts ``export/`` on ``sys.path``).
"""

from __future__ import annotations

import numpy as np


def normalization(config: dict) -> dict:
    """The run's input normalisation from the exported model's metadata (default: min-max, the paper's).

    ``config["normalization"]`` is the full setting written by ``dfcan export``;
    older exports only carry the run's ``data.normalization`` (a mode name or a dict).
    """
    value = config.get("normalization") or (config.get("data") or {}).get("normalization") or "minmax"
    norm = {"mode": "minmax", "pmin": 1.0, "pmax": 99.8, "eps": 1e-7, "clip": False}
    norm.update({"mode": value} if isinstance(value, str) else value)
    return norm


def normalize(x: np.ndarray, norm: dict) -> np.ndarray:
    """Bring a raw image (whole stack jointly) to the network's input range, as in training.

    The formula of dfcan_tf's ``Normalizer`` (docs/data.md#normalisation), restated here so that the
    examples need no dfcan_tf: ``(x - lo) / (hi - lo + eps)`` with ``lo, hi`` = min and max (``minmax``),
    the ``pmin``/``pmax`` percentiles (``percentile``, clipped to [0, 1] when ``clip``), or 0 and 65535
    with ``eps`` 0 (``divide65535``). Computed in float64.
    """
    x = np.asarray(x, np.float64)
    if norm["mode"] == "divide65535":
        lo, hi, eps = 0.0, 65535.0, 0.0
    elif norm["mode"] == "percentile":
        lo, hi, eps = np.percentile(x, norm["pmin"]), np.percentile(x, norm["pmax"]), norm["eps"]
    else:
        lo, hi, eps = x.min(), x.max(), norm["eps"]
    y = (x - lo) / (hi - lo + eps)
    if norm.get("clip"):
        y = np.clip(y, 0.0, 1.0)
    return y.astype(np.float32)


def to_batch(image: np.ndarray, channels: int, norm: dict) -> np.ndarray:
    """(H, W), (C, H, W) or (H, W, C) → a normalised (1, H, W, C) float32 batch."""
    x = np.asarray(image, np.float32)
    if x.ndim == 2:
        x = x[..., None]
    elif x.ndim == 3 and x.shape[0] == channels and x.shape[-1] != channels:
        x = np.moveaxis(x, 0, -1)
    if x.ndim != 3 or x.shape[-1] != channels:
        raise SystemExit(f"the model takes {channels} channel(s); got an image of shape {np.shape(image)}")
    return normalize(x, norm)[None]


def to_uint16(y: np.ndarray, norm: dict) -> np.ndarray:
    """The output as 16-bit: min-max stretched (``minmax``/``percentile``), or x 65535 (``divide65535``)."""
    if norm["mode"] != "divide65535":
        y = normalize(y, {"mode": "minmax", "eps": 1e-12})
    return np.round(np.clip(y, 0.0, 1.0) * 65535).astype(np.uint16)
