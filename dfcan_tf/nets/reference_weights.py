"""The authors' published Keras 2.2.4 weight files (``weights.best``), loaded into this package's networks.

A Keras 2 ``model.save_weights`` file lists its layers in the root attribute
``layer_names``; each layer is a group whose attribute ``weight_names`` lists
its datasets (``conv2d_7/kernel:0``, ``conv2d_7/bias:0``). Files written by
``model.save`` hold the same under a ``model_weights`` group.

:func:`map_reference_weights` reads such a file, pairs every layer of it with a
layer of a built network and checks the pairing (shapes, counts, every weight
used once, every network weight filled) without touching the network;
:meth:`ReferenceMapping.apply` then assigns. :func:`load_reference_weights`
does both. See ``docs/architecture.md#weight-order`` for the order the
mapping relies on and ``docs/architecture.md#using-the-authors-weights`` for
``dfcan import-weights``, which writes a run folder from such a file.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass
from pathlib import Path

import keras
import numpy as np

from dfcan_tf.errors import DfcanError
from dfcan_tf.nets.layers import FourierChannelAttention

_REF_LAYER = re.compile(r"^(conv2d|dense)_(\d+)$")
AUTHORS_COLUMN = "authors' layer"


@dataclass(frozen=True)
class ReferenceLayer:
    """One layer with weights of an authors' file: its name and its arrays in ``weight_names`` order."""

    name: str
    weight_names: tuple[str, ...]
    arrays: tuple[np.ndarray, ...]

    @property
    def kind(self) -> str:
        return _REF_LAYER.match(self.name).group(1)

    @property
    def index(self) -> int:
        return int(_REF_LAYER.match(self.name).group(2))


@dataclass(frozen=True)
class ReferenceFile:
    """The layers with weights of an authors' file, sorted by creation (convolutions, then dense layers)."""

    path: Path
    layers: tuple[ReferenceLayer, ...]
    attrs: dict[str, str]  # keras_version, backend when the file records them


@dataclass(frozen=True)
class LayerMatch:
    """One checked pair: an authors' layer, the network layer it fills, and the arrays in that layer's order."""

    source: ReferenceLayer
    target: keras.layers.Layer
    arrays: tuple[np.ndarray, ...]

    @property
    def target_name(self) -> str:
        return self.target.path or self.target.name

    @property
    def shapes(self) -> list[tuple[int, ...]]:
        return [tuple(a.shape) for a in self.arrays]


@dataclass(frozen=True)
class ReferenceMapping:
    """Every layer of an authors' file paired with a layer of ``model``; checked, not yet assigned."""

    file: ReferenceFile
    model: keras.Model
    matches: tuple[LayerMatch, ...]

    @property
    def n_weights(self) -> int:
        return sum(len(m.arrays) for m in self.matches)

    @property
    def n_parameters(self) -> int:
        return int(sum(a.size for m in self.matches for a in m.arrays))

    def rows(self) -> list[tuple[str, str, str]]:
        """(authors' layer, our layer, shapes) per pair, in mapping order."""
        return [(m.source.name, m.target_name, " + ".join(str(s) for s in m.shapes)) for m in self.matches]

    def table(self) -> str:
        """The mapping as aligned text, one line per layer: ``conv2d_7 -> head_conv  (3, 3, 9, 64) + (64,)``."""
        rows = self.rows()
        w1 = max(len(AUTHORS_COLUMN), *(len(r[0]) for r in rows))
        w2 = max(len("dfcan_tf layer"), *(len(r[1]) for r in rows))
        head = f"{AUTHORS_COLUMN:<{w1}}    {'dfcan_tf layer':<{w2}}  shapes (kernel + bias)"
        return "\n".join([head] + [f"{a:<{w1}} -> {b:<{w2}}  {c}" for a, b, c in rows])

    def apply(self) -> keras.Model:
        """Assign every array to its network weight; return the model."""
        for m in self.matches:
            m.target.set_weights(list(m.arrays))
        return self.model


def _text(value) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


def read_reference_file(path: str | os.PathLike) -> ReferenceFile:
    """Read the layers with weights of a Keras 2 weights file (the file is opened read-only).

    Raises
    ------
    DfcanError
        The file is missing, not HDF5, has no Keras 2 layout (``layer_names``,
        per-layer ``weight_names``), lists a layer or dataset it does not hold,
        holds weights it does not list, names a layer with weights other than
        ``conv2d_N`` / ``dense_N``, or holds non-finite values.
    """
    import h5py

    path = Path(path)
    if path.is_dir():
        raise DfcanError(f"{path}: is a folder; give the authors' weights file (weights.best)")
    try:
        f = h5py.File(path, "r")
    except FileNotFoundError:
        raise DfcanError(f"{path}: no such file") from None
    except OSError as exc:
        raise DfcanError(f"{path}: not an HDF5 weights file ({exc})") from None
    with f:
        root = f["model_weights"] if "model_weights" in f else f
        if "layer_names" not in root.attrs:
            hint = (" (it looks like a Keras 3 '.weights.h5' file, which belongs in a run folder's weights/)"
                    if "layers" in f or "vars" in f else "")
            raise DfcanError(f"{path}: no 'layer_names' attribute; not a Keras 2 weights file{hint}")
        try:
            return _read_layers(path, root)
        except (KeyError, TypeError, ValueError, OSError) as exc:
            raise DfcanError(f"{path}: unreadable Keras 2 weights file ({type(exc).__name__}: {exc})") from None


def _read_layers(path: Path, root) -> ReferenceFile:
    import h5py

    listed = [_text(raw) for raw in np.atleast_1d(root.attrs["layer_names"])]
    duplicates = sorted({n for n in listed if listed.count(n) > 1})
    if duplicates:
        raise DfcanError(f"{path}: layer_names lists {duplicates[0]!r} more than once")
    layers = []
    for lname in listed:
        if lname not in root or not isinstance(root[lname], h5py.Group):
            raise DfcanError(f"{path}: layer_names lists {lname!r} but the file holds no group of that name")
        group = root[lname]
        wnames = tuple(_text(w) for w in np.atleast_1d(group.attrs.get("weight_names", [])))
        held: list[str] = []
        group.visititems(lambda name, obj: held.append(name) if isinstance(obj, h5py.Dataset) else None)
        unused = sorted(set(held) - set(wnames))
        if unused:
            raise DfcanError(f"{path}: layer {lname!r} holds dataset(s) {unused} its weight_names does not list")
        if not wnames:
            continue
        if not _REF_LAYER.match(lname):
            raise DfcanError(f"{path}: layer {lname!r} has weights but is neither conv2d_N nor dense_N")
        missing = [w for w in wnames if w not in group or not isinstance(group[w], h5py.Dataset)]
        if missing:
            raise DfcanError(f"{path}: layer {lname!r} lists weight {missing[0]!r} but holds no such dataset")
        arrays = tuple(np.asarray(group[w]) for w in wnames)
        for w, a in zip(wnames, arrays, strict=True):
            if not np.issubdtype(a.dtype, np.floating) or not np.all(np.isfinite(a)):
                raise DfcanError(f"{path}: weight {lname}/{w} is not finite floating point (dtype {a.dtype})")
        layers.append(ReferenceLayer(lname, wnames, arrays))
    unlisted = sorted(k for k in root.keys() if k not in listed and k != "optimizer_weights"
                      and isinstance(root[k], h5py.Group) and len(root[k].attrs.get("weight_names", [])))
    if unlisted:
        raise DfcanError(f"{path}: group(s) {unlisted} hold weights but layer_names does not list them")
    kinds = {"conv2d": 0, "dense": 1}
    layers.sort(key=lambda r: (kinds[r.kind], r.index))
    attrs = {k: _text(root.attrs[k]) for k in ("keras_version", "backend") if k in root.attrs}
    return ReferenceFile(path, tuple(layers), attrs)


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


def _ordered_arrays(source: ReferenceLayer, layer: keras.layers.Layer) -> tuple[np.ndarray, ...]:
    """``source``'s arrays in ``layer``'s weight order, by name (``.../kernel:0`` → ``kernel``) when they all match."""
    by_name = {}
    for wname, arr in zip(source.weight_names, source.arrays, strict=True):
        by_name[wname.rsplit("/", 1)[-1].split(":")[0]] = arr
    ours = [w.name for w in layer.weights]
    if len(by_name) == len(source.arrays) and sorted(by_name) == sorted(ours):
        return tuple(by_name[n] for n in ours)
    return source.arrays


def match_reference_file(model: keras.Model, ref: ReferenceFile) -> ReferenceMapping:
    """Pair the layers of ``ref`` with ``model``'s and check everything; ``model`` is not touched."""
    path = ref.path
    targets = _weighted_layers(model)
    if len(ref.layers) != len(targets):
        n = min(len(ref.layers), len(targets))
        extra = (f"the file's layers from {ref.layers[n].name!r} on have no counterpart" if len(ref.layers) > n
                 else f"our layers from {targets[n].path or targets[n].name!r} on get no weights")
        raise DfcanError(
            f"{path}: the file has {len(ref.layers)} layers with weights but model {model.name!r} has "
            f"{len(targets)} ({extra}); is it the right architecture, channel count and scale?"
        )
    matches = []
    for source, layer in zip(ref.layers, targets, strict=True):
        arrays = _ordered_arrays(source, layer)
        expected = [tuple(w.shape) for w in layer.weights]
        found = [tuple(a.shape) for a in arrays]
        if expected != found:
            raise DfcanError(
                f"{path}: layer {source.name!r} holds shapes {found} but {layer.path or layer.name!r} expects "
                f"{expected}; is it the right architecture, channel count and scale?"
            )
        matches.append(LayerMatch(source, layer, arrays))
    filled = [id(w) for m in matches for w in m.target.weights]
    model_ids = [id(w) for w in model.weights]
    if len(set(filled)) != len(filled) or sorted(filled) != sorted(model_ids):
        left = [w.path for w in model.weights if id(w) not in set(filled)]
        raise DfcanError(f"{path}: the mapping onto {model.name!r} does not fill every weight exactly once"
                         f"{f' (unfilled: {left[0]})' if left else ''}")
    return ReferenceMapping(ref, model, tuple(matches))


def map_reference_weights(model: keras.Model, path: str | os.PathLike) -> ReferenceMapping:
    """Read an authors' weights file and pair it with ``model`` (checked, not assigned).

    The file's layers are named ``conv2d_N`` / ``dense_N`` with ``N`` counting
    creation in the authors' session; they are sorted by ``N`` (convs, then
    denses) and mapped in that order onto this model's convolutions in data
    flow order, then its dense layers. Every kernel and bias shape is checked;
    the first mismatch raises :class:`DfcanError` naming both layers and
    shapes.
    """
    return match_reference_file(model, read_reference_file(path))


def load_reference_weights(model: keras.Model, path: str | os.PathLike) -> keras.Model:
    """Load the authors' published Keras 2.2.4 weights (``weights.best``, HDF5) into ``model``.

    Everything is checked (:func:`map_reference_weights`) before anything is
    assigned, so on a :class:`DfcanError` the model is left untouched. Files
    written by ``model.save`` (with a ``model_weights`` group) are accepted too.
    """
    return map_reference_weights(model, path).apply()
