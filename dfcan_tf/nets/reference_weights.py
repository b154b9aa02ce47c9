"""The authors' published Keras 2.2.4 weight files (``weights.best``), loaded into this package's networks.

See ``docs/architecture.md#weight-order`` for the layer order the mapping relies on.
"""

from __future__ import annotations

import os
import re
from pathlib import Path

import keras

from dfcan_tf.errors import DfcanError
from dfcan_tf.nets.layers import FourierChannelAttention

_REF_LAYER = re.compile(r"^(conv2d|dense)_(\d+)$")


def _weighted_layers(model: keras.Model) -> list[keras.layers.Layer]:
    """Conv2D layers in data-flow order (each attention's conv, squeeze, excite in place), then Dense layers."""
    convs, denses = [], []
    for layer in model.layers:
        if isinstance(layer, FourierChannelAttention):
            convs += [layer.attention_conv, layer.squeeze, layer.excite]
        elif isinstance(layer, keras.layers.Conv2D):
            convs.append(layer)
        elif isinstance(layer, keras.layers.Dense):
            denses.append(layer)
    return convs + denses


def load_reference_weights(model: keras.Model, path: str | os.PathLike) -> keras.Model:
    """Load the authors' published Keras 2.2.4 weights (``weights.best``, HDF5) into ``model``.

    The file's layers are named ``conv2d_N`` / ``dense_N`` with ``N`` counting
    creation in the authors' session; they are sorted by ``N`` (convs, then
    denses) and mapped in that order onto this model's convolutions in data
    flow order, then its dense layers. Every kernel and bias shape is checked
    before anything is assigned; the first mismatch raises
    :class:`DfcanError` naming both layers and shapes, and the model is left
    untouched. Files written by ``model.save`` (with a ``model_weights`` group)
    are accepted too.
    """
    import h5py
    import numpy as np

    path = Path(path)
    try:
        f = h5py.File(path, "r")
    except FileNotFoundError:
        raise DfcanError(f"{path}: no such file") from None
    except OSError as exc:
        raise DfcanError(f"{path}: not an HDF5 weights file ({exc})") from None
    with f:
        root = f["model_weights"] if "model_weights" in f else f
        if "layer_names" not in root.attrs:
            raise DfcanError(f"{path}: no 'layer_names' attribute; not a Keras 2 weights file")
        entries = []
        for raw in root.attrs["layer_names"]:
            lname = raw.decode() if isinstance(raw, bytes) else str(raw)
            group = root[lname]
            wnames = [w.decode() if isinstance(w, bytes) else str(w) for w in group.attrs.get("weight_names", [])]
            if not wnames:
                continue
            m = _REF_LAYER.match(lname)
            if not m:
                raise DfcanError(f"{path}: layer {lname!r} has weights but is neither conv2d_N nor dense_N")
            arrays = [np.asarray(group[w]) for w in wnames]
            entries.append((0 if m.group(1) == "conv2d" else 1, int(m.group(2)), lname, arrays))
    entries.sort(key=lambda e: (e[0], e[1]))
    targets = _weighted_layers(model)
    if len(entries) != len(targets):
        raise DfcanError(
            f"{path}: the file has {len(entries)} layers with weights but model {model.name!r} has "
            f"{len(targets)}; is it the right architecture, channel count and scale?"
        )
    for (_, _, lname, arrays), layer in zip(entries, targets, strict=True):
        expected = [tuple(w.shape) for w in layer.weights]
        found = [tuple(a.shape) for a in arrays]
        if expected != found:
            raise DfcanError(
                f"{path}: layer {lname!r} holds shapes {found} but {layer.path or layer.name!r} expects {expected}"
            )
    for (_, _, _, arrays), layer in zip(entries, targets, strict=True):
        layer.set_weights(arrays)
    return model
