"""Where training batches come from: patch pairs in memory, in an ``.npz`` file or in a DL-SR patch folder.

Training batches are a pure function of ``(seed, step)``: the patches and
crops of step ``s`` are drawn from ``numpy.random.default_rng([seed, s])``, so
a resumed run sees exactly the batches an uninterrupted one would (see
``docs/training.md``). Every source normalises its crops with the run's
:class:`~dfcan_tf.data.normalize.Normalizer` (one patch, all its channels, at a
time), the same for training and validation (``docs/data.md#normalisation``).
:func:`train_dataset` turns a source into the distributed ``tf.data`` dataset
the training loop consumes.
"""

from __future__ import annotations

import json
import os
import zipfile
from pathlib import Path
from typing import Any

import numpy as np

from dfcan_tf.data.normalize import Normalizer
from dfcan_tf.errors import DfcanError

NORMALIZATIONS = ("minmax", "divide65535")
_PATCH_AXES = (1, 2, 3)  # a batch (n, h, w, C) is normalised per patch, over all its channels

__all__ = ["NORMALIZATIONS", "ArraySource", "FolderSource", "data_shape", "folder_manifest", "resolve_data",
           "train_dataset"]
MANIFEST = "patches.json"  # written by dfcan patches (dfcan_tf.data.patches.cut_patches)


def _normalizer(how: str) -> Normalizer:
    if how not in NORMALIZATIONS:
        raise DfcanError(f"normalization must be one of {NORMALIZATIONS}. Received: normalization={how!r}")
    return Normalizer(mode=how)


def _check_finite(name: str, what: str, a: np.ndarray) -> None:
    """Refuse NaN or infinite values in training data (they make every loss and metric NaN)."""
    a = np.asarray(a)
    if a.dtype.kind in "fc" and not np.all(np.isfinite(a)):
        bad = int(np.size(a) - np.count_nonzero(np.isfinite(a)))
        raise DfcanError(f"{name}: the {what} hold {bad} NaN or infinite value(s); training needs finite data. "
                         f"Fix or drop those images")


class ArraySource:
    """Patch pairs held in memory: inputs ``(N, h, w, C)`` and GT ``(N, s·h, s·w)`` or ``(N, s·h, s·w, 1)``.

    :meth:`sample` draws the patches of one training step from
    ``default_rng([seed, step])`` (random patch, random ``patch_size`` crop
    when the arrays are larger), normalised per patch.
    """

    def __init__(self, inputs: np.ndarray, targets: np.ndarray, *, normalization: str = "minmax",
                 name: str = "arrays"):
        self.normalizer = _normalizer(normalization)
        x = np.asarray(inputs)
        y = np.asarray(targets)
        if x.ndim == 3:
            x = x[..., None]
        if y.ndim == 3:
            y = y[..., None]
        if x.ndim != 4 or y.ndim != 4 or y.shape[-1] != 1:
            raise DfcanError(f"{name}: expected inputs (N, h, w, C) and GT (N, H, W[, 1]). "
                             f"Received: inputs.shape={np.shape(inputs)}, gt.shape={np.shape(targets)}")
        if len(x) != len(y) or len(x) == 0:
            raise DfcanError(f"{name}: inputs and GT must hold the same, non-zero number of patches. "
                             f"Received: {len(x)} inputs, {len(y)} GT")
        scale = y.shape[1] // x.shape[1]
        if scale < 1 or y.shape[1] != scale * x.shape[1] or y.shape[2] != scale * x.shape[2]:
            raise DfcanError(f"{name}: GT must be an integer multiple of the input size. "
                             f"Received: inputs {x.shape[1:3]}, GT {y.shape[1:3]}")
        _check_finite(name, "inputs", x)
        _check_finite(name, "GT", y)
        self.inputs, self.targets = x, y
        self.scale = scale
        self.normalization = normalization
        self.name = name

    def __len__(self) -> int:
        return len(self.inputs)

    @property
    def channels(self) -> int:
        return self.inputs.shape[-1]

    @property
    def size(self) -> tuple[int, int]:
        return self.inputs.shape[1], self.inputs.shape[2]

    def _normalize(self, x: np.ndarray) -> np.ndarray:
        """Normalise each patch of a batch ``(n, h, w, C)`` (the whole stack of a patch at once)."""
        return self.normalizer.normalize(np.asarray(x, np.float32), _PATCH_AXES)

    def _rows(self, step: int, n: int, seed: int, patch: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        rng = np.random.default_rng([seed, step])
        h, w = self.size
        idx = rng.integers(0, len(self), size=n)
        oy = rng.integers(0, h - patch + 1, size=n)
        ox = rng.integers(0, w - patch + 1, size=n)
        return idx, oy, ox

    def _pair(self, i: int) -> tuple[np.ndarray, np.ndarray]:
        """Patch pair ``i`` in the data's own intensities."""
        return self.inputs[i], self.targets[i]

    def sample(self, step: int, rows: slice, n: int, seed: int, patch: int) -> tuple[np.ndarray, np.ndarray]:
        """Rows ``rows`` of the ``n``-patch global batch of ``step`` (inputs, GT), normalised."""
        idx, oy, ox = (a[rows] for a in self._rows(step, n, seed, patch))
        s = self.scale
        xs, ys = [], []
        for i, a, b in zip(idx, oy, ox, strict=True):
            x, y = self._pair(int(i))
            xs.append(x[a:a + patch, b:b + patch])
            ys.append(y[a * s:(a + patch) * s, b * s:(b + patch) * s])
        return self._normalize(np.stack(xs)), self._normalize(np.stack(ys))

    def head(self, limit: int) -> tuple[np.ndarray, np.ndarray]:
        """The first ``limit`` pairs, whole, normalised (validation)."""
        loaded = [self._pair(i) for i in range(min(limit, len(self)))]
        return (self._normalize(np.stack([x for x, _ in loaded])),
                self._normalize(np.stack([y for _, y in loaded])))


def _load_npz(path: Path, normalization: str) -> tuple[ArraySource, ArraySource]:
    try:
        with np.load(path) as f:
            arrays = {k: f[k] for k in ("x_train", "y_train", "x_val", "y_val") if k in f}
    except (OSError, ValueError, EOFError, zipfile.BadZipFile, KeyError) as exc:
        raise DfcanError(f"{path}: not a readable .npz file, truncated or damaged? "
                         f"({type(exc).__name__}: {exc})") from None
    missing = sorted({"x_train", "y_train", "x_val", "y_val"} - set(arrays))
    if missing:
        raise DfcanError(f"{path}: missing arrays {missing}; expected x_train, y_train, x_val, y_val")
    return (ArraySource(arrays["x_train"], arrays["y_train"], normalization=normalization, name=f"{path} (train)"),
            ArraySource(arrays["x_val"], arrays["y_val"], normalization=normalization, name=f"{path} (validation)"))


class FolderSource(ArraySource):
    """Patch pairs of a DL-SR patch folder (:mod:`dfcan_tf.data.pipeline` layout), read lazily per step.

    Same contract as :class:`ArraySource`; files are listed by
    :func:`dfcan_tf.data.pipeline.list_patches` and read in their own
    intensities by :func:`~dfcan_tf.data.pipeline.read_pair`; crops are
    normalised once, by the source's normaliser.
    """

    def __init__(self, root: str | os.PathLike, split: str, task: str, *, normalization: str = "minmax"):
        from dfcan_tf.data import pipeline

        self.normalizer = _normalizer(normalization)
        self.pairs = pipeline.list_patches(root, split, task)
        self.normalization = normalization
        self.name = f"{root} ({split}, {task})"
        x0, y0 = self._pair(0)
        scale = y0.shape[0] // x0.shape[0]
        if scale < 1 or y0.shape[0] != scale * x0.shape[0] or y0.shape[1] != scale * x0.shape[1]:
            raise DfcanError(f"{self.pairs[0][1]}: GT {y0.shape[:2]} is not an integer multiple of the input "
                             f"{x0.shape[:2]}")
        self._shape = x0.shape
        self.scale = scale

    def _pair(self, i: int) -> tuple[np.ndarray, np.ndarray]:
        from dfcan_tf.data.pipeline import read_pair

        inputs, gt = self.pairs[i]
        x, y = read_pair(inputs, gt)
        _check_finite(str(inputs[0].parent if len(inputs) > 1 else inputs[0]), "input frames", x)
        _check_finite(str(gt), "GT", y)
        if hasattr(self, "_shape") and x.shape != self._shape:
            raise DfcanError(f"{gt}: patch shape {x.shape} differs from the first patch's {self._shape}")
        return x, y

    def __len__(self) -> int:
        return len(self.pairs)

    @property
    def channels(self) -> int:
        return self._shape[-1]

    @property
    def size(self) -> tuple[int, int]:
        return self._shape[0], self._shape[1]


def _folder_info(path: Path, task: str) -> dict:
    root = path.resolve()
    return {"source": "patch_folders", "path": str(root),
            "train_dir": str(root / ("training_wf" if task == "sisr" else "training")),
            "validate_dir": str(root / ("validate_wf" if task == "sisr" else "validate"))}


def resolve_data(data: Any, normalization: str, task: str) -> tuple[ArraySource, ArraySource, dict]:
    """``data`` is a DL-SR patch folder, an ``.npz`` file or ``(x_train, y_train, x_val, y_val)`` arrays.

    Returns the training and validation sources and the ``data`` section of the run's ``config.json``.
    """
    if isinstance(data, (tuple, list)) and len(data) == 4:
        tr = ArraySource(data[0], data[1], normalization=normalization, name="training arrays")
        va = ArraySource(data[2], data[3], normalization=normalization, name="validation arrays")
        return tr, va, {"source": "arrays"}
    if isinstance(data, (str, os.PathLike)):
        path = Path(data)
        if path.is_file() and path.suffix == ".npz":
            tr, va = _load_npz(path, normalization)
            return tr, va, {"source": "npz", "path": str(path.resolve())}
        if path.is_dir():
            tr = FolderSource(path, "training", task, normalization=normalization)
            va = FolderSource(path, "validate", task, normalization=normalization)
            return tr, va, _folder_info(path, task)
        raise DfcanError(f"{path}: training data not found (expected a DL-SR patch folder or an .npz file)")
    raise DfcanError("data must be a patch folder, an .npz file or a tuple (x_train, y_train, x_val, y_val). "
                     f"Received: {type(data).__name__}")


def data_shape(data: str | os.PathLike, task: str) -> tuple[int, int]:
    """(input channels, scale) of an .npz file or patch folder, without loading all of it."""
    path = Path(data)
    if path.is_file() and path.suffix == ".npz":
        try:
            with np.load(path) as f:
                src = ArraySource(f["x_train"][:1], f["y_train"][:1], name=str(path))
        except (OSError, ValueError, KeyError, EOFError, zipfile.BadZipFile) as exc:
            raise DfcanError(f"{path}: cannot read x_train / y_train, truncated or damaged .npz? "
                             f"({type(exc).__name__}: {exc})") from None
    elif path.is_dir():
        src = FolderSource(path, "training", task)
    else:
        raise DfcanError(f"{path}: training data not found (expected a DL-SR patch folder or an .npz file)")
    return src.channels, src.scale


def folder_manifest(data: str | os.PathLike) -> dict:
    """What ``dfcan patches`` recorded about a patch folder: ``patch_size``, ``scale``, ``pixel_size_nm``.

    Read from the folder's ``patches.json``; empty for an ``.npz`` file or a
    folder without one (made by other tools). A ``pixel_size_nm`` of None means
    the source images stated none.

    Raises
    ------
    DfcanError
        ``patches.json`` exists but is unreadable or its values are not numbers.
    """
    path = Path(data) / MANIFEST
    if not Path(data).is_dir() or not path.is_file():
        return {}
    try:
        doc = json.loads(path.read_text())
    except (OSError, ValueError) as exc:
        raise DfcanError(f"{path}: unreadable patch-folder record ({type(exc).__name__}: {exc}); "
                         "pass --patch-size and --pixel-size-nm, or cut the patches again") from None
    out = {}
    for key, kind in (("patch_size", int), ("scale", int), ("pixel_size_nm", float)):
        value = doc.get(key) if isinstance(doc, dict) else None
        if value is None:
            continue
        if isinstance(value, bool) or not isinstance(value, (int, float)) or value <= 0 or (
                kind is int and value != int(value)):
            raise DfcanError(f"{path}: {key} must be a positive {'integer' if kind is int else 'number'}. "
                             f"Received: {key}={value!r}")
        out[key] = kind(value)
    if out:
        out["path"] = str(path)
    return out


def train_dataset(source: ArraySource, cfg: Any, start_step: int, strategy, errors: list[str] | None = None) -> Any:
    """Distributed dataset whose replica ``r`` receives rows ``r·b … (r+1)·b`` of each global batch.

    Elements are ``(x, y)`` of shapes ``(U, b, p, p, C)`` and ``(U, b, s·p, s·p, 1)`` with
    ``U`` = 1 (one network) or ``1 + g_updates`` (DFGAN: one batch per network update).
    A :class:`DfcanError` while reading a patch (unreadable or non-finite) is appended to
    ``errors`` and that batch is zeros: the caller checks ``errors`` after each step.
    """
    import tensorflow as tf

    updates = 1 if cfg.mode == "dfcan" else 1 + cfg.g_updates
    n_rep = strategy.num_replicas_in_sync
    if cfg.batch_size % n_rep:
        raise DfcanError(f"batch_size must be divisible by the number of replicas ({n_rep}). "
                         f"Received: batch_size={cfg.batch_size}")
    b = cfg.batch_size // n_rep
    p, s, c = cfg.patch_size, source.scale, source.channels

    def fetch(step, replica):
        step, replica = int(step), int(replica)
        xs, ys = [], []
        try:
            for u in range(updates):
                # Each update has its own batch, drawn from a distinct (seed, step, u) stream.
                x, y = source.sample(step * updates + u, slice(replica * b, (replica + 1) * b), cfg.batch_size,
                                     cfg.seed, p)
                xs.append(x)
                ys.append(y)
        except DfcanError as exc:  # raised here it would surface as an opaque tf.errors.UnknownError
            if errors is None:
                raise
            errors.append(str(exc))
            return (np.zeros((updates, b, p, p, c), np.float32), np.zeros((updates, b, s * p, s * p, 1), np.float32))
        return np.stack(xs), np.stack(ys)

    def dataset_fn(ctx: tf.distribute.InputContext):
        k = ctx.num_replicas_in_sync // ctx.num_input_pipelines  # local replicas of this worker
        first = ctx.input_pipeline_id * k

        def load(i):
            x, y = tf.numpy_function(fetch, [i // k, first + i % k], [tf.float32, tf.float32], stateful=False)
            x.set_shape((updates, b, p, p, c))
            y.set_shape((updates, b, s * p, s * p, 1))
            return x, y

        ds = tf.data.Dataset.range(start_step * k, cfg.steps * k)
        ds = ds.map(load, num_parallel_calls=tf.data.AUTOTUNE, deterministic=True)
        return ds.prefetch(tf.data.AUTOTUNE)

    return strategy.distribute_datasets_from_function(dataset_fn)
