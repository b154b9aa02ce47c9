"""Training DFCAN and DFGAN at the paper's recipe (REFERENCE §4): resumable, observable, distributable.

:func:`train` turns a :class:`~dfcan_tf.config.TrainConfig` and training data
into a run folder (see :mod:`dfcan_tf.runs`)::

    RUN/
      config.json                      model, training recipe, data (paths, normalisation)
      weights/best.weights.h5          SR network (DFGAN: generator) at the best validation NRMSE
      weights/last.weights.h5          ... at the latest checkpoint
      weights/last.optimizer.h5        optimizer variables (step count, lr, Adam moments)
      weights/last.discriminator.weights.h5   DFGAN only
      weights/ckpt-NNNNNNN.*           the same three files, step-stamped (what resume loads)
      weights/last.state.json          step, checkpoint name, plateau counters, best NRMSE, losses since the
                                       last validation (the commit point)
      history.csv                      one row per validation (written with each checkpoint)
      .dfcan-train.lock                flock held by the `dfcan train` writing the folder (holds its pid)
      logs/                            TensorBoard: losses, metrics, learning rates, sample images
      samples/step_NNNNNNN.png         input | output | GT with metrics

How it works
------------
* The SR network is wrapped in a small :class:`keras.Model` whose
  ``train_step`` does one update (:class:`DFCANTrainer`), or two networks in
  :class:`DFGAN`, whose ``train_step`` updates the discriminator once and the
  generator ``g_updates`` times. Both also work with ``model.fit``; the
  driver here calls ``train_step`` itself through ``strategy.run`` so that it
  controls validation, checkpoints and the step counter.
* Training batches are a pure function of ``(seed, step)``: the patches and
  crops of step ``s`` are drawn from ``numpy.random.default_rng([seed, s])``.
  A resumed run therefore sees exactly the batches an uninterrupted one
  would, and with the weights, the optimizer variables (iterations, learning
  rate, moments) and the plateau counters restored it continues the same
  trajectory.
* The global batch is split across replicas with
  ``strategy.distribute_datasets_from_function``: every replica fetches its own
  rows of the global batch, so ``--strategy mirrored`` and ``multi-worker``
  train on the same global batches as one device. Each replica's loss is
  divided by the number of replicas; the Keras optimizer sums the gradients.
* Validation runs every ``validate_every`` iterations on up to
  ``validate_patches`` patches (all of them, on every worker, so plateau
  decisions agree across workers). Only the chief writes the run folder;
  other workers write their checkpoints under ``RUN/.worker-<id>/``.
* Safety: one ``dfcan train`` per run folder (an exclusive, non-blocking
  ``flock``); NaN or infinite training data are refused naming the file; a
  non-finite loss or validation metric stops training with the last good
  checkpoint untouched; a Ctrl-C that cuts a validation short rolls it back
  and the resumed run redoes it, so its history equals an uninterrupted one.
"""

from __future__ import annotations

import argparse
import csv
import fcntl
import io as _io
import json
import math
import os
import re
import shutil
import sys
import time
import zipfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import keras
import numpy as np
import tensorflow as tf

from dfcan_tf.config import load_json, save_json
from dfcan_tf.data.files import atomic_path
from dfcan_tf.errors import DfcanError
from dfcan_tf.nets import registry
from dfcan_tf.nets.dfcan import DFCANConfig
from dfcan_tf.nets.discriminators import DiscriminatorConfig, build_discriminator
from dfcan_tf.runs import (
    load_weights_checked,
    read_run_config,
    save_weights,
    weights_path,
    write_config,
)
from dfcan_tf.training import losses
from dfcan_tf.training.config import STRATEGIES, TrainConfig

NORMALIZATIONS = ("minmax", "divide65535")
# What may differ between the sessions of one run: how long, and on which devices.
RESUMABLE_CHANGES = ("steps", "strategy")
# Held (flock, exclusive) by the `dfcan train` writing a run folder; holds that process's pid.
LOCK_NAME = ".dfcan-train.lock"
# What a checkpoint state file may name: a plain file-name stem inside weights/.
_CHECKPOINT_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_-]*")
# `dfcan train` flags that architecture and recipe are made of (refused with --resume).
ARCHITECTURE_FLAGS = ("width", "n_groups", "n_blocks", "size_psc", "reduction", "gamma")
RESUME_FLAGS = ("resume", "data", "steps", "strategy", "no_progress")
HISTORY_FIELDS = ("step", "time_s", "lr", "d_lr", "loss", "d_loss", "g_adv", "val_mse", "val_nrmse", "val_psnr",
                  "val_ssim", "best_nrmse")

__all__ = [
    "DFGAN",
    "ArraySource",
    "DFCANTrainer",
    "FolderSource",
    "TrainResult",
    "add_arguments",
    "benchmark_train",
    "build_trainer",
    "config_from_args",
    "load_optimizer",
    "make_strategy",
    "run_from_args",
    "save_optimizer",
    "train",
    "training_flops",
]


# --------------------------------------------------------------------------- data


def _check_normalization(how: str) -> None:
    if how not in NORMALIZATIONS:
        raise DfcanError(f"normalization must be one of {NORMALIZATIONS}. Received: normalization={how!r}")


def _check_finite(name: str, what: str, a: np.ndarray) -> None:
    """Refuse NaN or infinite values in training data (they make every loss and metric NaN)."""
    a = np.asarray(a)
    if a.dtype.kind in "fc" and not np.all(np.isfinite(a)):
        bad = int(np.size(a) - np.count_nonzero(np.isfinite(a)))
        raise DfcanError(f"{name}: the {what} hold {bad} NaN or infinite value(s); training needs finite data. "
                         f"Fix or drop those images")


def _normalize(x: np.ndarray, how: str) -> np.ndarray:
    """Normalise each patch of a batch ``(n, h, w, C)`` (the whole stack of a patch at once)."""
    x = x.astype(np.float32)
    if how == "divide65535":
        return x / np.float32(65535.0)
    lo = x.min(axis=(1, 2, 3), keepdims=True)
    hi = x.max(axis=(1, 2, 3), keepdims=True)
    return (x - lo) / np.maximum(hi - lo, np.float32(1e-7))


class ArraySource:
    """Patch pairs held in memory: inputs ``(N, h, w, C)`` and GT ``(N, s·h, s·w)`` or ``(N, s·h, s·w, 1)``.

    :meth:`sample` draws the patches of one training step from
    ``default_rng([seed, step])`` (random patch, random ``patch_size`` crop
    when the arrays are larger), normalised per patch.
    """

    def __init__(self, inputs: np.ndarray, targets: np.ndarray, *, normalization: str = "minmax",
                 name: str = "arrays"):
        _check_normalization(normalization)
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

    def _rows(self, step: int, n: int, seed: int, patch: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        rng = np.random.default_rng([seed, step])
        h, w = self.size
        idx = rng.integers(0, len(self), size=n)
        oy = rng.integers(0, h - patch + 1, size=n)
        ox = rng.integers(0, w - patch + 1, size=n)
        return idx, oy, ox

    def sample(self, step: int, rows: slice, n: int, seed: int, patch: int) -> tuple[np.ndarray, np.ndarray]:
        """Rows ``rows`` of the ``n``-patch global batch of ``step`` (inputs, GT), normalised."""
        idx, oy, ox = (a[rows] for a in self._rows(step, n, seed, patch))
        s = self.scale
        x = np.stack([self.inputs[i, a:a + patch, b:b + patch] for i, a, b in zip(idx, oy, ox, strict=True)])
        y = np.stack([self.targets[i, a * s:(a + patch) * s, b * s:(b + patch) * s]
                      for i, a, b in zip(idx, oy, ox, strict=True)])
        return _normalize(x, self.normalization), _normalize(y, self.normalization)

    def head(self, limit: int) -> tuple[np.ndarray, np.ndarray]:
        """The first ``limit`` pairs, whole, normalised (validation)."""
        n = min(limit, len(self))
        return (_normalize(self.inputs[:n], self.normalization),
                _normalize(self.targets[:n], self.normalization))


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

    Same contract as :class:`ArraySource`; files are listed and decoded by
    :func:`dfcan_tf.data.pipeline.list_patches` / :func:`~dfcan_tf.data.pipeline.load_pair`,
    which normalise each patch (min-max, or ÷65535).
    """

    def __init__(self, root: str | os.PathLike, split: str, task: str, *, normalization: str = "minmax"):
        from dfcan_tf.data import pipeline

        _check_normalization(normalization)
        self.pairs = pipeline.list_patches(root, split, task)
        self.normalization = normalization
        self.name = f"{root} ({split}, {task})"
        x0, y0 = self._load(0)
        scale = y0.shape[0] // x0.shape[0]
        if scale < 1 or y0.shape[0] != scale * x0.shape[0] or y0.shape[1] != scale * x0.shape[1]:
            raise DfcanError(f"{self.pairs[0][1]}: GT {y0.shape[:2]} is not an integer multiple of the input "
                             f"{x0.shape[:2]}")
        self._shape = x0.shape
        self.scale = scale

    def _load(self, i: int) -> tuple[np.ndarray, np.ndarray]:
        from dfcan_tf.data.pipeline import load_pair

        inputs, gt = self.pairs[i]
        x, y = load_pair(inputs, gt, normalize=self.normalization == "minmax")
        if not (x.any() and y.any()):  # min-max turns a patch holding NaN into zeros: look at the raw values
            raw_x, raw_y = load_pair(inputs, gt, normalize=False)
        else:
            raw_x, raw_y = x, y
        _check_finite(str(inputs[0].parent if len(inputs) > 1 else inputs[0]), "input frames", raw_x)
        _check_finite(str(gt), "GT", raw_y)
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

    def sample(self, step: int, rows: slice, n: int, seed: int, patch: int) -> tuple[np.ndarray, np.ndarray]:
        idx, oy, ox = (a[rows] for a in self._rows(step, n, seed, patch))
        s = self.scale
        xs, ys = [], []
        for i, a, b in zip(idx, oy, ox, strict=True):
            x, y = self._load(int(i))
            xs.append(x[a:a + patch, b:b + patch])
            ys.append(y[a * s:(a + patch) * s, b * s:(b + patch) * s])
        # Re-normalising a crop of a min-max normalised patch is the min-max of the raw crop.
        return _normalize(np.stack(xs), self.normalization), _normalize(np.stack(ys), self.normalization)

    def head(self, limit: int) -> tuple[np.ndarray, np.ndarray]:
        loaded = [self._load(i) for i in range(min(limit, len(self)))]
        return np.stack([x for x, _ in loaded]), np.stack([y for _, y in loaded])


def _resolve_data(data: Any, normalization: str, task: str) -> tuple[ArraySource, ArraySource, dict]:
    """``data`` is a DL-SR patch folder, an ``.npz`` file or ``(x_train, y_train, x_val, y_val)`` arrays."""
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
            return tr, va, {"source": "patch_folders", "path": str(path.resolve()),
                            "train_dir": str(path.resolve() / ("training_wf" if task == "sisr" else "training")),
                            "validate_dir": str(path.resolve() / ("validate_wf" if task == "sisr" else "validate"))}
        raise DfcanError(f"{path}: training data not found (expected a DL-SR patch folder or an .npz file)")
    raise DfcanError("data must be a patch folder, an .npz file or a tuple (x_train, y_train, x_val, y_val). "
                     f"Received: {type(data).__name__}")


def _train_dataset(source: ArraySource, cfg: TrainConfig, start_step: int, strategy,
                   errors: list[str] | None = None) -> Any:
    """Distributed dataset whose replica ``r`` receives rows ``r·b … (r+1)·b`` of each global batch.

    Elements are ``(x, y)`` of shapes ``(U, b, p, p, C)`` and ``(U, b, s·p, s·p, 1)`` with
    ``U`` = 1 (DFCAN) or ``1 + g_updates`` (DFGAN: one batch per network update).
    A :class:`DfcanError` while reading a patch (unreadable or non-finite) is appended to
    ``errors`` and that batch is zeros: the caller checks ``errors`` after each step.
    """
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


# --------------------------------------------------------------------------- models


def _bce(target: float, prob: tf.Tensor) -> tf.Tensor:
    """Mean binary cross-entropy of probabilities against a constant label (Keras' epsilon clipping)."""
    prob = tf.cast(prob, tf.float32)
    return tf.reduce_mean(keras.losses.binary_crossentropy(tf.fill(tf.shape(prob), target), prob))


def _replicas() -> int:
    return tf.distribute.get_strategy().num_replicas_in_sync


class DFCANTrainer(keras.Model):
    """DFCAN training wrapper: ``train_step`` is one Adam update on ``MSE + 0.1·(1 − SSIM)``.

    Parameters
    ----------
    network
        The SR network (``input → SR``).
    mse_weight, ssim_weight
        Loss weights (1 and 0.1).

    Notes
    -----
    ``compile(optimizer=...)`` before use. ``train_step`` takes ``(x, y)`` of
    shapes ``(N, h, w, C)`` / ``(N, sh, sw, 1)`` or, as the training driver
    feeds it, ``(1, N, ...)``.
    """

    def __init__(self, network: keras.Model, *, mse_weight: float = 1.0, ssim_weight: float = 0.1, **kwargs):
        super().__init__(**kwargs)
        self.network = network
        self.mse_weight = float(mse_weight)
        self.ssim_weight = float(ssim_weight)

    def call(self, inputs, training=False):
        return self.network(inputs, training=training)

    def training_optimizers(self) -> dict[str, keras.optimizers.Optimizer]:
        return {"network": self.optimizer}

    def train_step(self, data):
        x, y = data
        if x.shape.rank == 5:
            x, y = x[0], y[0]
        with tf.GradientTape() as tape:
            sr = self.network(x, training=True)
            loss = losses.mse_ssim_loss(y, sr, self.mse_weight, self.ssim_weight)
            scaled = self.optimizer.scale_loss(loss / _replicas())
        grads = tape.gradient(scaled, self.network.trainable_variables)
        self.optimizer.apply_gradients(zip(grads, self.network.trainable_variables))
        return {"loss": loss}


class DFGAN(keras.Model):
    """DFGAN: generator and discriminator trained adversarially (REFERENCE §3–4).

    Per ``train_step`` (one iteration): the discriminator is updated once on
    real GT (label 1) and generated images (label 0) with binary
    cross-entropy; then the generator is updated ``g_updates`` times on
    ``adversarial_weight · BCE(D(G(x)), 1) + MSE + ssim_weight · (1 − SSIM)``
    with the discriminator fixed. Each update uses its own batch: ``data`` is
    ``(x, y)`` of shapes ``(1 + g_updates, N, ...)``; a plain ``(N, ...)`` batch is
    reused for every update.

    ``compile(g_optimizer=..., d_optimizer=...)`` before use.
    """

    def __init__(self, generator: keras.Model, discriminator: keras.Model, *, g_updates: int = 3,
                 adversarial_weight: float = 0.1, mse_weight: float = 1.0, ssim_weight: float = 0.1, **kwargs):
        super().__init__(**kwargs)
        self.generator = generator
        self.discriminator = discriminator
        self.g_updates = int(g_updates)
        self.adversarial_weight = float(adversarial_weight)
        self.mse_weight = float(mse_weight)
        self.ssim_weight = float(ssim_weight)

    @property
    def network(self) -> keras.Model:
        return self.generator

    def call(self, inputs, training=False):
        return self.generator(inputs, training=training)

    def compile(self, g_optimizer=None, d_optimizer=None, **kwargs):
        super().compile(optimizer=g_optimizer, **kwargs)
        self.g_optimizer = g_optimizer
        self.d_optimizer = d_optimizer

    def training_optimizers(self) -> dict[str, keras.optimizers.Optimizer]:
        return {"generator": self.g_optimizer, "discriminator": self.d_optimizer}

    def train_step(self, data):
        x, y = data
        if x.shape.rank == 4:
            x = tf.stack([x] * (1 + self.g_updates))
            y = tf.stack([y] * (1 + self.g_updates))
        n_rep = _replicas()
        d_vars = self.discriminator.trainable_variables
        g_vars = self.generator.trainable_variables

        fake = tf.stop_gradient(self.generator(x[0], training=False))
        with tf.GradientTape() as tape:
            real_p = self.discriminator(y[0], training=True)
            fake_p = self.discriminator(fake, training=True)
            # Mean over the concatenated real+fake batch, as the authors' train_on_batch.
            d_loss = 0.5 * (_bce(1.0, real_p) + _bce(0.0, fake_p))
            scaled = self.d_optimizer.scale_loss(d_loss / n_rep)
        grads = tape.gradient(scaled, d_vars)
        self.d_optimizer.apply_gradients(zip(grads, d_vars))

        g_total = g_adv = 0.0
        for u in range(1, 1 + self.g_updates):
            with tf.GradientTape() as tape:
                sr = self.generator(x[u], training=True)
                adv = _bce(1.0, self.discriminator(sr, training=False))
                content = losses.mse_ssim_loss(y[u], sr, self.mse_weight, self.ssim_weight)
                g_loss = self.adversarial_weight * adv + content
                scaled = self.g_optimizer.scale_loss(g_loss / n_rep)
            grads = tape.gradient(scaled, g_vars)
            self.g_optimizer.apply_gradients(zip(grads, g_vars))
            g_total += g_loss
            g_adv += adv
        return {"loss": g_total / self.g_updates, "g_adv": g_adv / self.g_updates, "d_loss": d_loss}


# --------------------------------------------------------------------------- optimizer state


def _opt_variables(opt: keras.optimizers.Optimizer) -> list:
    return list(opt.variables)


def save_optimizer(optimizers: dict[str, keras.optimizers.Optimizer], path: str | os.PathLike) -> None:
    """Save the variables of each optimizer (iterations, learning rate, moments) to one HDF5 file, atomically."""
    import h5py

    with atomic_path(path) as tmp, h5py.File(tmp, "w") as f:
        for key, opt in optimizers.items():
            g = f.create_group(key)
            for i, v in enumerate(_opt_variables(opt)):
                d = g.create_dataset(f"{i:04d}", data=np.asarray(keras.ops.convert_to_numpy(v)))
                d.attrs["path"] = v.path


def load_optimizer(optimizers: dict[str, keras.optimizers.Optimizer], path: str | os.PathLike) -> None:
    """Assign the variables saved by :func:`save_optimizer` to built optimizers; mismatches raise DfcanError."""
    import h5py

    path = Path(path)
    if not path.exists():
        raise DfcanError(f"{path}: optimizer state not found; cannot resume exactly")
    try:
        f = h5py.File(path, "r")
    except OSError as exc:
        raise DfcanError(f"{path}: not an optimizer state file ({exc})") from None
    with f:
        for key, opt in optimizers.items():
            if key not in f:
                raise DfcanError(f"{path}: no state for the {key} optimizer")
            variables = _opt_variables(opt)
            stored = [f[key][name] for name in sorted(f[key])]
            if len(stored) != len(variables):
                raise DfcanError(f"{path}: the {key} optimizer has {len(variables)} variables, the file {len(stored)}")
            for v, d in zip(variables, stored, strict=True):
                if tuple(v.shape) != d.shape:
                    raise DfcanError(f"{path}: {d.attrs.get('path', d.name)} has shape {d.shape}, "
                                     f"{v.path} expects {tuple(v.shape)}")
            for v, d in zip(variables, stored, strict=True):
                v.assign(np.asarray(d))


def _set_lr(opt: keras.optimizers.Optimizer, value: float) -> None:
    opt.learning_rate = value


def _get_lr(opt: keras.optimizers.Optimizer) -> float:
    return float(keras.ops.convert_to_numpy(opt.learning_rate))


# --------------------------------------------------------------------------- strategy


def make_strategy(name: str) -> tf.distribute.Strategy:
    """``default`` (one device), ``mirrored`` (all local GPUs, else all logical CPUs) or ``multi-worker``.

    ``multi-worker`` is ``MultiWorkerMirroredStrategy``; the cluster comes from ``TF_CONFIG``.
    """
    if name == "default":
        return tf.distribute.get_strategy()
    if name == "mirrored":
        gpus = tf.config.list_logical_devices("GPU")
        if gpus:
            return tf.distribute.MirroredStrategy()
        cpus = [d.name for d in tf.config.list_logical_devices("CPU")]
        # NCCL is GPU-only; on CPUs reduce through one device.
        return tf.distribute.MirroredStrategy(devices=cpus, cross_device_ops=tf.distribute.ReductionToOneDevice())
    if name == "multi-worker":
        if "TF_CONFIG" not in os.environ:
            raise DfcanError("strategy 'multi-worker' needs the cluster in the TF_CONFIG environment variable "
                             '(e.g. {"cluster": {"worker": ["host1:port", "host2:port"]}, '
                             '"task": {"type": "worker", "index": 0}})')
        try:
            json.loads(os.environ["TF_CONFIG"])
        except json.JSONDecodeError as exc:
            raise DfcanError(f"TF_CONFIG is not valid JSON ({exc})") from None
        return tf.distribute.MultiWorkerMirroredStrategy()
    raise DfcanError(f"strategy must be one of {STRATEGIES}. Received: strategy={name!r}")


def _worker(strategy) -> tuple[bool, int]:
    """(is_chief, task id) of this process."""
    resolver = getattr(strategy, "cluster_resolver", None)
    if resolver is None or not getattr(resolver, "task_type", None):
        return True, 0
    task_type, task_id = resolver.task_type, int(resolver.task_id or 0)
    return task_type == "chief" or (task_type == "worker" and task_id == 0
                                    and "chief" not in resolver.cluster_spec().as_dict()), task_id


# --------------------------------------------------------------------------- run folder pieces


@dataclass
class TrainResult:
    """What :func:`train` returns."""

    run_dir: Path
    step: int
    lr: float
    best_nrmse: float
    bicubic_nrmse: float
    history: list[dict] = field(default_factory=list)
    d_lr: float | None = None


def _train_section(cfg: TrainConfig) -> dict:
    d = cfg.to_dict()
    d.pop("model")
    d.pop("discriminator")
    return d


def _config_from_doc(doc: dict) -> TrainConfig:
    train = dict(doc.get("train") or {})
    try:
        return TrainConfig.from_dict({**train, "model": doc["model"], "discriminator": doc.get("discriminator")})
    except DfcanError as exc:
        raise DfcanError(f"config.json: {exc}") from None


def _read_history(path: Path, upto: int) -> list[dict]:
    if not path.exists():
        return []
    with path.open(newline="") as f:
        rows = list(csv.DictReader(f))
    out = []
    for r in rows:
        row = {k: (float(v) if v not in ("", None) else None) for k, v in r.items()}
        row["step"] = int(row["step"])
        if row["step"] <= upto:
            out.append(row)
    return out


def _write_history(path: Path, rows: list[dict]) -> None:
    with atomic_path(path) as tmp, tmp.open("w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=HISTORY_FIELDS)
        w.writeheader()
        for r in rows:
            w.writerow({k: ("" if r.get(k) is None else r[k]) for k in HISTORY_FIELDS})


def _wf(x: np.ndarray) -> np.ndarray:
    """The wide-field view of inputs ``(N, h, w, C)``: the frame for SISR, the mean of the raw frames for SIM."""
    return x.mean(axis=-1, keepdims=True)


def _bicubic_nrmse(x: np.ndarray, y: np.ndarray) -> float:
    up = tf.image.resize(_wf(x), y.shape[1:3], method="bicubic")
    return float(np.mean(losses.image_nrmse(y, up).numpy()))


def _sample_figure(x: np.ndarray, sr: np.ndarray, gt: np.ndarray, step: int) -> tuple[bytes, dict]:
    """PNG bytes of input | output | GT (first validation patch) with the output's metrics."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    m = {k: float(v[0]) for k, v in losses.image_metrics(gt[None], sr[None]).items()}
    fig, axes = plt.subplots(1, 3, figsize=(9, 3.3))
    panels = [(_wf(x[None])[0, ..., 0], "input" + (" (WF)" if x.shape[-1] > 1 else "")),
              (sr[..., 0], f"output  NRMSE {m['nrmse']:.3f}\nSSIM {m['ssim']:.3f}  PSNR {m['psnr']:.2f} dB"),
              (gt[..., 0], "ground truth")]
    for ax, (img, title) in zip(axes, panels, strict=True):
        ax.imshow(img, cmap="gray", interpolation="nearest")
        ax.set_title(title, fontsize=9)
        ax.axis("off")
    fig.suptitle(f"step {step}", fontsize=10)
    fig.tight_layout()
    buf = _io.BytesIO()
    fig.savefig(buf, format="png", dpi=80)
    plt.close(fig)
    return buf.getvalue(), m


def _load_init_generator(generator: keras.Model, source: str) -> None:
    path = Path(source)
    if path.is_dir():
        path = weights_path(path, "best") if weights_path(path, "best").exists() else weights_path(path, "last")
    if not path.exists():
        raise DfcanError(f"{source}: no weights to start the generator from")
    try:
        generator.load_weights(path)
    except Exception as exc:  # noqa: BLE001 - keras/h5py raise several types on mismatch
        raise DfcanError(f"{path}: cannot start the generator from these weights; the network must have the "
                         f"generator's shape ({type(exc).__name__}: {exc})") from None


def _lock_run(folder: Path, *, create: bool) -> _io.TextIOWrapper:
    """Take the run folder's exclusive, non-blocking training lock; return the open lock file (close to release).

    The lock is a ``flock`` on :data:`LOCK_NAME` inside ``folder`` (released by the kernel when the
    process ends, however it ends); the file holds the owner's pid for the message of the next comer.
    """
    try:
        if create:
            folder.mkdir(parents=True, exist_ok=True)
        f = open(folder / LOCK_NAME, "a+")  # noqa: SIM115 - held open for the whole training
    except FileExistsError:
        raise DfcanError(f"{folder}: exists and is not a folder; choose another run folder") from None
    except OSError as exc:
        raise DfcanError(f"{folder}: cannot create the run folder's lock file ({exc.strerror})") from None
    try:
        fcntl.flock(f.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
        # A lock file removed and recreated between our open and flock is not the lock everybody else sees.
        if os.fstat(f.fileno()).st_ino != os.stat(folder / LOCK_NAME).st_ino:
            raise BlockingIOError
    except (BlockingIOError, FileNotFoundError):
        f.seek(0)
        pid = f.read().strip() or "unknown"
        f.close()
        raise DfcanError(f"{folder} is in use by another dfcan train (pid {pid}); wait for it to finish, "
                         f"or train into another folder") from None
    f.seek(0)
    f.truncate()
    f.write(f"{os.getpid()}\n")
    f.flush()
    return f


def _missing_ancestor(folder: Path) -> Path | None:
    """The outermost of ``folder`` and its parents that does not exist yet (what ``mkdir -p`` creates)."""
    top = None
    p = folder.absolute()
    while not p.exists():
        top = p
        if p.parent == p:
            break
        p = p.parent
    return top


def _undo_new_run(out_dir: Path, created_from: Path | None) -> None:
    """After a new run failed before writing its configuration: remove the lock file and the folders it made."""
    (out_dir / LOCK_NAME).unlink(missing_ok=True)
    if created_from is None:
        return
    p = out_dir.absolute()
    while True:
        try:
            p.rmdir()  # only ever removes an empty folder
        except OSError:
            return
        if p == created_from or p.parent == p:
            return
        p = p.parent


def _read_state(path: Path) -> dict:
    """Read and check a checkpoint state file (``weights/last.state.json``)."""
    raw = load_json(path)
    name = raw.get("checkpoint", "last")
    if not isinstance(name, str) or not _CHECKPOINT_NAME.fullmatch(name):
        raise DfcanError(f"{path}: 'checkpoint' must be the plain name of a checkpoint in {path.parent} "
                         f"(like 'ckpt-0001000'). Received: checkpoint={name!r}; the state file is damaged")
    step = raw.get("step")
    if not isinstance(step, int) or isinstance(step, bool) or step < 0:
        raise DfcanError(f"{path}: 'step' must be a non-negative integer. Received: step={step!r}")
    for key in ("best_nrmse", "plateau_best", "elapsed_s"):
        v = raw.get(key, 0.0)
        if not isinstance(v, (int, float)) or isinstance(v, bool) or math.isnan(v):
            raise DfcanError(f"{path}: '{key}' must be a number. Received: {key}={v!r}")
    wait = raw.get("plateau_wait", 0)
    if not isinstance(wait, int) or isinstance(wait, bool) or wait < 0:
        raise DfcanError(f"{path}: 'plateau_wait' must be a non-negative integer. Received: plateau_wait={wait!r}")
    window = raw.get("window", {})
    if not isinstance(window, dict) or not all(
            isinstance(v, list) and all(isinstance(x, (int, float)) for x in v) for v in window.values()):
        raise DfcanError(f"{path}: 'window' must map loss names to lists of numbers")
    if not isinstance(raw.get("pending_validation", False), bool):
        raise DfcanError(f"{path}: 'pending_validation' must be true or false")
    return {**raw, "checkpoint": name}


# --------------------------------------------------------------------------- training


def train(
    config: TrainConfig | None,
    run_dir: str | os.PathLike,
    *,
    data: Any = None,
    resume: bool = False,
    normalization: str = "minmax",
    task: str | None = None,
    pixel_size_nm: float | None = None,
    stop_at: int | None = None,
    progress: bool = True,
) -> TrainResult:
    """Train DFCAN or DFGAN into the run folder ``run_dir`` (REFERENCE §4).

    Parameters
    ----------
    config
        The recipe and the network. The model's ``input_channels`` and
        ``scale`` must match the data. With ``resume=True`` it may be ``None``
        (the run's own configuration is used) or differ from it only in
        ``steps`` (to train longer) and ``strategy`` (other devices).
    run_dir
        The run folder; must not exist (or be empty) unless ``resume``.
    data
        A DL-SR patch folder (``training_wf/`` or ``training/``, ``training_gt/``,
        ``validate_wf/`` or ``validate/``, ``validate_gt/``), an ``.npz`` file
        with ``x_train, y_train, x_val, y_val``, or those four arrays as a
        tuple (inputs ``(N, h, w, C)``, GT ``(N, s·h, s·w[, 1])``). On resume,
        defaults to the path recorded in ``config.json``.
    resume
        Continue ``run_dir`` from its last checkpoint: same step count,
        learning rates, optimizer moments and plateau counters.
    normalization
        ``"minmax"`` (per patch, 0–100th percentile) or ``"divide65535"``.
    task
        Patch folders only: ``"sisr"`` (wide-field input, ``training_wf/``) or
        ``"sim"`` (raw frames, ``training/``); default from the model's input channels.
    pixel_size_nm
        Input pixel size, recorded in ``config.json`` for prediction and export.
    stop_at
        Stop after this global step as if interrupted (a ``last`` checkpoint is
        written); ``resume=True`` continues from there.
    progress
        Show the progress bar and per-validation summary lines.

    Returns
    -------
    TrainResult
        Final step, learning rate(s), best validation NRMSE, the bicubic
        baseline NRMSE on the same validation patches, and the history rows.
    """
    run_dir = Path(run_dir)
    doc = None
    if stop_at is not None and (not isinstance(stop_at, int) or stop_at < 1):
        raise DfcanError(f"stop_at must be a positive step number. Received: stop_at={stop_at!r}")
    if resume:
        doc, _ = read_run_config(run_dir)
        saved = _config_from_doc(doc)
        if config is None:
            config = saved
        else:
            diff = sorted(k for k, v in config.to_dict().items()
                          if k not in RESUMABLE_CHANGES and saved.to_dict()[k] != v)
            if diff:
                raise DfcanError(f"{run_dir}: cannot resume with a different configuration (differs in {diff}); "
                                 f"only {RESUMABLE_CHANGES} may change")
        saved_data = doc.get("data") or {}
        normalization = saved_data.get("normalization", normalization)
        task = saved_data.get("task", task)
        if data is None:
            if saved_data.get("path") is None:
                raise DfcanError(f"{run_dir}: this run was trained on in-memory arrays; pass data= to resume it")
            data = saved_data["path"]
    elif config is None:
        raise DfcanError("config is required for a new run")
    if data is None:
        raise DfcanError("no training data given")
    cfg = config

    # The strategy comes first: MultiWorkerMirroredStrategy must exist before other TF work.
    strategy = make_strategy(cfg.strategy)
    is_chief, task_id = _worker(strategy)
    out_dir = run_dir if is_chief else run_dir / f".worker-{task_id}"
    created_from = None if resume else _missing_ancestor(out_dir)
    # One `dfcan train` per run folder: a second one (new run or --resume) is refused, not interleaved.
    lock = _lock_run(out_dir, create=not resume)
    try:
        return _train_locked(cfg, run_dir, out_dir, is_chief, strategy, doc, data, resume, normalization,
                             task, pixel_size_nm, stop_at, progress)
    except BaseException:
        if not resume and not (out_dir / "config.json").exists():
            _undo_new_run(out_dir, created_from)
        raise
    finally:
        lock.close()


def _train_locked(cfg, run_dir, out_dir, is_chief, strategy, doc, data, resume, normalization, task,
                  pixel_size_nm, stop_at, progress) -> TrainResult:
    """:func:`train` once the run folder's lock is held."""
    if not resume and any(not p.name.startswith(".worker-") and p.name != LOCK_NAME for p in out_dir.iterdir()):
        raise DfcanError(f"{out_dir}: run folder exists and is not empty; resume it or choose a new folder")

    if task is None:
        task = "sisr" if cfg.model.input_channels == 1 else "sim"
    if task not in ("sisr", "sim"):
        raise DfcanError(f"task must be 'sisr' or 'sim'. Received: task={task!r}")
    train_src, val_src, data_info = _resolve_data(data, normalization, task)
    for src in (train_src, val_src):
        if src.channels != cfg.model.input_channels or src.scale != cfg.model.scale:
            raise DfcanError(f"{src.name}: data have {src.channels} input channel(s) at scale {src.scale}, the model "
                             f"expects {cfg.model.input_channels} at scale {cfg.model.scale}")
    if min(train_src.size) < cfg.patch_size:
        raise DfcanError(f"{train_src.name}: training patches of {train_src.size} are smaller than "
                         f"patch_size={cfg.patch_size}")
    data_info.update({
        "task": task,
        "input_channels": cfg.model.input_channels, "scale": cfg.model.scale,
        "normalization": normalization, "pixel_size_nm": pixel_size_nm,
        "n_train": len(train_src), "n_validate": min(len(val_src), cfg.validate_patches),
    })
    if resume and doc is not None:
        data_info = {**data_info, **{k: v for k, v in (doc.get("data") or {}).items() if k == "pixel_size_nm"}}

    previous_policy = keras.mixed_precision.global_policy()
    if cfg.mixed_precision:
        keras.mixed_precision.set_global_policy("mixed_float16")
    try:
        return _run(cfg, run_dir, out_dir, is_chief, strategy, train_src, val_src, data_info, resume,
                    stop_at, progress)
    finally:
        keras.mixed_precision.set_global_policy(previous_policy)


def _make_optimizer(lr: float, cfg: TrainConfig) -> keras.optimizers.Optimizer:
    opt = keras.optimizers.Adam(learning_rate=lr, beta_1=cfg.beta_1, beta_2=cfg.beta_2)
    if cfg.mixed_precision:
        opt = keras.optimizers.LossScaleOptimizer(opt)
    return opt


def _fourier_attention_in_float32(network: keras.Model) -> None:
    """Under mixed precision, run Fourier channel attention in float32.

    ``tf.signal.fft2d`` has no half-precision kernel, and the spectrum's
    dynamic range (gamma-compressed magnitudes summed over the patch) is what
    float32 is for; the convolutions around it stay in float16.
    """
    from dfcan_tf.nets.layers import FourierChannelAttention

    for layer in network._flatten_layers(include_self=False, recursive=True):
        if isinstance(layer, FourierChannelAttention):
            for sub in layer._flatten_layers(include_self=True, recursive=True):
                sub.dtype_policy = "float32"


def build_trainer(cfg: TrainConfig) -> keras.Model:
    """The compiled :class:`DFCANTrainer` or :class:`DFGAN` for ``cfg`` (build inside a strategy scope)."""
    network = registry.build(cfg.model)
    if keras.mixed_precision.global_policy().name == "mixed_float16":
        _fourier_attention_in_float32(network)
    if cfg.mode == "dfcan":
        trainer = DFCANTrainer(network, mse_weight=cfg.mse_weight, ssim_weight=cfg.ssim_weight)
        trainer.compile(optimizer=_make_optimizer(cfg.lr, cfg))
    else:
        disc = build_discriminator(cfg.discriminator)
        trainer = DFGAN(network, disc, g_updates=cfg.g_updates, adversarial_weight=cfg.adversarial_weight,
                        mse_weight=cfg.mse_weight, ssim_weight=cfg.ssim_weight)
        trainer.compile(g_optimizer=_make_optimizer(cfg.lr, cfg), d_optimizer=_make_optimizer(cfg.d_lr, cfg))
        trainer.d_optimizer.build(disc.trainable_variables)
    opts = trainer.training_optimizers()
    first = next(iter(opts.values()))
    first.build(network.trainable_variables)
    return trainer


def _run(cfg, run_dir, out_dir, is_chief, strategy, train_src, val_src, data_info, resume, stop_at,
         progress) -> TrainResult:
    from tqdm.auto import tqdm

    wdir = out_dir / "weights"
    state_path = wdir / "last.state.json"
    keras.utils.set_random_seed(cfg.seed)
    with strategy.scope():
        trainer = build_trainer(cfg)
    network = trainer.network
    opts = trainer.training_optimizers()
    is_gan = cfg.mode == "dfgan"

    state = {"step": 0, "best_nrmse": math.inf, "plateau_best": math.inf, "plateau_wait": 0, "elapsed_s": 0.0}
    window: dict[str, list[float]] = {}  # training losses since the last validation
    pending = False  # resumed from a Ctrl-C that cut short the validation of the checkpoint's step
    if resume:
        if not state_path.exists():
            raise DfcanError(f"{state_path}: no checkpoint state; cannot resume exactly")
        state = {**state, **_read_state(state_path)}
        window = {k: [float(x) for x in v] for k, v in state.pop("window", {}).items()}
        pending = bool(state.pop("pending_validation", False))
        # The state names the complete set of files of its checkpoint (see checkpoint() below).
        prefix = wdir / state["checkpoint"]
        files = [(network, Path(f"{prefix}.weights.h5"))]
        if is_gan:
            files.append((trainer.discriminator, Path(f"{prefix}.discriminator.weights.h5")))
        for model, path in files:
            if not path.is_file():
                raise DfcanError(f"{path}: missing; {state_path} names checkpoint {state['checkpoint']!r}, "
                                 f"whose files must all be in {wdir}")
            load_weights_checked(model, path, f"the network of {run_dir / 'config.json'}")
        load_optimizer(opts, f"{prefix}.optimizer.h5")
        iters = int(keras.ops.convert_to_numpy(next(iter(opts.values())).iterations))
        expected = state["step"] * (cfg.g_updates if is_gan else 1)
        if iters != expected:
            raise DfcanError(f"{state_path}: the checkpoint is inconsistent (step {state['step']} but the optimizer "
                             f"made {iters} updates)")
    else:
        if is_gan and cfg.init_generator:
            _load_init_generator(network, cfg.init_generator)
        out_dir.mkdir(parents=True, exist_ok=True)
        extra = {"discriminator": cfg.discriminator.to_dict()} if is_gan else None
        write_config(out_dir, cfg.model, train=_train_section(cfg), data=data_info, extra=extra)
    if resume and is_chief and cfg != _config_from_doc(read_run_config(run_dir)[0]):
        doc, _ = read_run_config(run_dir)  # steps or strategy changed: record what this session runs
        write_config(run_dir, cfg.model, train=_train_section(cfg), data=doc.get("data"),
                     extra={"discriminator": doc["discriminator"]} if "discriminator" in doc else None)

    start = int(state["step"])
    history = _read_history(out_dir / "history.csv", start) if is_chief else []
    if pending:  # its row, if any, is redone below
        history = [r for r in history if r["step"] < start]
    val_x, val_y = val_src.head(cfg.validate_patches)
    bicubic = _bicubic_nrmse(val_x, val_y)

    writer = (tf.summary.create_file_writer(str(out_dir / "logs")) if is_chief
              else tf.summary.create_noop_writer())
    data_errors: list[str] = []
    dist_ds = _train_dataset(train_src, cfg, start, strategy, data_errors)
    iterator = iter(dist_ds)

    @tf.function
    def train_fn(it):
        logs = strategy.run(trainer.train_step, args=(next(it),))
        return {k: strategy.reduce(tf.distribute.ReduceOp.MEAN, v, axis=None) for k, v in logs.items()}

    @tf.function(reduce_retracing=True)
    def predict_fn(x):
        return tf.cast(network(x, training=False), tf.float32)

    def validate() -> tuple[dict, np.ndarray]:
        bs = max(1, cfg.batch_size)
        outs = [predict_fn(tf.constant(val_x[i:i + bs])).numpy() for i in range(0, len(val_x), bs)]
        sr = np.concatenate(outs)
        m = losses.image_metrics(val_y, sr)
        return {k: float(np.mean(v.numpy())) for k, v in m.items()}, sr

    def checkpoint(step: int, pending_validation: bool = False) -> None:
        # Kill-safe: write the history, a step-stamped set of files, then the state naming it (atomic
        # rename: the commit point), then refresh last.weights.h5 and drop older sets. A kill at any moment
        # leaves a state that names complete files, and a history holding every validation up to its step
        # (rows beyond it are dropped on resume).
        if is_chief:
            _write_history(out_dir / "history.csv", history)
        tag = f"ckpt-{step:07d}"
        save_weights(network, wdir / f"{tag}.weights.h5")
        if is_gan:
            save_weights(trainer.discriminator, wdir / f"{tag}.discriminator.weights.h5")
        save_optimizer(opts, wdir / f"{tag}.optimizer.h5")
        elapsed = state["elapsed_s"] + (time.perf_counter() - t_session)
        save_json(state_path, {**state, "step": step, "checkpoint": tag, "elapsed_s": elapsed,
                               "window": window, "pending_validation": pending_validation,
                               "replicas": int(strategy.num_replicas_in_sync),
                               "lr": _get_lr(opts[next(iter(opts))]),
                               **({"d_lr": _get_lr(opts["discriminator"])} if is_gan else {})})
        for name in ("weights.h5", "optimizer.h5") + (("discriminator.weights.h5",) if is_gan else ()):
            with atomic_path(wdir / f"last.{name}") as tmp:
                shutil.copyfile(wdir / f"{tag}.{name}", tmp)
        for old in wdir.glob("ckpt-*"):
            if not old.name.startswith(tag + "."):
                old.unlink(missing_ok=True)

    g_key = next(iter(opts))
    t_session = time.perf_counter()
    # What the last completed validation left (state and learning rates): restored if Ctrl-C cuts one short.
    committed = {"state": dict(state), "lrs": {k: _get_lr(o) for k, o in opts.items()}}

    def is_validation_step(s: int) -> bool:
        return s % cfg.validate_every == 0 or s == cfg.steps

    def write_sample(step: int) -> None:
        sr0 = predict_fn(tf.constant(val_x[:1])).numpy()[0]
        png, _ = _sample_figure(val_x[0], sr0, val_y[0], step)
        with atomic_path(out_dir / "samples" / f"step_{step:07d}.png") as tmp:
            tmp.write_bytes(png)
        tf.summary.image("samples/input_output_gt", tf.image.decode_png(png)[None], step=step)

    def validation(step: int) -> None:
        # Everything is computed first and committed at the end, in memory (state, learning rates, then the
        # history row: the marker of a completed validation) and on disk (checkpoint(), which writes the
        # history with the weights), so that an interrupted validation is either wholly done or wholly redone.
        metrics, _ = validate()
        nrmse = metrics["nrmse"]
        if not math.isfinite(nrmse):
            raise DfcanError(f"step {step}: the validation NRMSE is {nrmse} (the network outputs non-finite "
                             f"values); training diverged. {last_good()} Start a new run with a lower --lr")
        new = dict(state)
        lrs = {k: _get_lr(o) for k, o in opts.items()}
        improved = nrmse < new["best_nrmse"]
        if improved:
            new["best_nrmse"] = nrmse
        # Reduce on plateau (Keras ReduceLROnPlateau semantics, mode "min").
        if nrmse < new["plateau_best"] - cfg.plateau_min_delta:
            new["plateau_best"] = nrmse
            new["plateau_wait"] = 0
        else:
            new["plateau_wait"] += 1
            if new["plateau_wait"] >= cfg.plateau_patience:
                lrs = {k: max(v * cfg.plateau_factor, cfg.min_d_lr if k == "discriminator" else cfg.min_lr)
                       for k, v in lrs.items()}
                new["plateau_wait"] = 0
        row = {"step": step, "time_s": state["elapsed_s"] + time.perf_counter() - t_session,
               "lr": lrs[g_key], "d_lr": lrs["discriminator"] if is_gan else None,
               "loss": float(np.mean(window["loss"])) if window.get("loss") else float("nan"),
               "d_loss": float(np.mean(window["d_loss"])) if window.get("d_loss") else None,
               "g_adv": float(np.mean(window["g_adv"])) if window.get("g_adv") else None,
               **{f"val_{k}": v for k, v in metrics.items()}, "best_nrmse": new["best_nrmse"]}
        for k, v in metrics.items():
            tf.summary.scalar(f"val/{k}", v, step=step)
        tf.summary.scalar("val/lr", row["lr"], step=step)
        writer.flush()
        if is_chief and improved:
            save_weights(network, wdir / "best.weights.h5")
        state.update(new)
        for k, v in lrs.items():
            _set_lr(opts[k], v)
        history.append(row)
        window.clear()
        committed.update(state=dict(state), lrs=lrs)
        checkpoint(step)
        if progress and is_chief:
            tqdm.write(f"step {step}/{cfg.steps}: val NRMSE {nrmse:.4f}  SSIM {metrics['ssim']:.4f}  "
                       f"PSNR {metrics['psnr']:.2f} dB  MSE {metrics['mse']:.2e}  loss {row['loss']:.4f}  "
                       f"lr {row['lr']:.2e}" + ("  (best)" if improved else ""))

    def last_good() -> str:
        if not state_path.exists():
            return "No checkpoint was written."
        return f"The run keeps its last good checkpoint (step {_read_state(state_path)['step']})."

    step = start
    bar = tqdm(total=cfg.steps, initial=start, unit="step", dynamic_ncols=True, disable=not (progress and is_chief),
               desc="dfgan" if is_gan else "dfcan")
    if progress and is_chief and start == 0:
        tqdm.write(f"validation: {len(val_x)} patches; bicubic-upsampled input NRMSE {bicubic:.4f}")
    try:
        with writer.as_default():
            if pending:  # finish what the interrupted session left undone at `start`
                if start % cfg.sample_every == 0 and is_chief:
                    write_sample(start)
                validation(start)
            while step < cfg.steps:
                logs = {k: float(v) for k, v in train_fn(iterator).items()}
                if data_errors:
                    raise DfcanError(f"{data_errors[0]}. {last_good()}")
                bad = {k: v for k, v in logs.items() if not math.isfinite(v)}
                if bad:
                    raise DfcanError(f"step {step + 1}: training diverged, the training loss is not finite "
                                     f"({', '.join(f'{k}={v}' for k, v in bad.items())}). {last_good()} "
                                     f"Start a new run with a lower --lr, or check the training data")
                step += 1
                for k, v in logs.items():
                    window.setdefault(k, []).append(v)
                bar.update(1)
                bar.set_postfix({k: f"{v:.4f}" for k, v in logs.items()} | {"lr": f"{_get_lr(opts[g_key]):.1e}"},
                                refresh=False)
                if step % cfg.log_every == 0:
                    for k, v in logs.items():
                        tf.summary.scalar(f"train/{k}", v, step=step)
                    tf.summary.scalar("train/lr", _get_lr(opts[g_key]), step=step)
                    if is_gan:
                        tf.summary.scalar("train/d_lr", _get_lr(opts["discriminator"]), step=step)
                if step % cfg.sample_every == 0 and is_chief:
                    write_sample(step)
                if is_validation_step(step):
                    validation(step)
                if stop_at is not None and step >= stop_at and step < cfg.steps:
                    checkpoint(step)
                    break
    except KeyboardInterrupt:
        # A step's tf.function call is never cut short, but Ctrl-C may land after it returned and before
        # `step` was counted: the optimizer's own counter says how many steps were applied.
        done = int(keras.ops.convert_to_numpy(opts[g_key].iterations)) // (cfg.g_updates if is_gan else 1)
        unfinished = is_validation_step(done) and not (history and history[-1]["step"] == done)
        if unfinished:  # the validation of `done` did not complete: undo its part, resume redoes it
            state.clear()
            state.update(committed["state"])
            for k, v in committed["lrs"].items():
                _set_lr(opts[k], v)
        elif history and history[-1]["step"] == done:
            window.clear()
        checkpoint(done, pending_validation=unfinished)
        if is_chief:
            tqdm.write(f"interrupted: checkpoint at step {done}; continue with --resume {run_dir}", file=sys.stderr)
        raise
    finally:
        bar.close()
        writer.close()
    return TrainResult(run_dir=run_dir, step=step, lr=_get_lr(opts[g_key]), best_nrmse=state["best_nrmse"],
                       bicubic_nrmse=bicubic, history=history,
                       d_lr=_get_lr(opts["discriminator"]) if is_gan else None)


# --------------------------------------------------------------------------- benchmark


def training_flops(model_config: DFCANConfig, height: int, width: int, batch: int) -> float:
    """Floating-point operations of one training step (forward + backward ≈ 3 × forward) of a DFCAN-family net.

    Counts the convolutions (2·k²·C_in·C_out per output pixel), which dominate;
    the FFTs, GELUs and pooling add a few percent and are left out.
    """
    c = model_config
    k2 = 9
    hw = height * width
    fwd = 2 * hw * k2 * c.input_channels * c.width  # head conv
    per_block = 2 * (2 * hw * k2 * c.width * c.width)  # two 3×3 convs
    per_block += 2 * c.size_psc**2 * k2 * c.width * c.width  # attention conv on the resized spectrum
    per_block += 2 * 2 * c.width * (c.width // c.reduction)  # squeeze + excite on 1×1
    fwd += c.n_groups * c.n_blocks * per_block
    fwd += 2 * hw * k2 * c.width * c.width * c.scale**2  # upsampling conv
    fwd += 2 * hw * c.scale**2 * k2 * c.width  # output conv on the SR grid
    return 3.0 * fwd * batch


def benchmark_train(args: argparse.Namespace, sgemm: float) -> dict:
    """Print DFCAN training speed at the paper's size (128×128 patches, batch 4) next to the sgemm rate."""
    quick = bool(getattr(args, "quick", False))
    patch, batch = 128, 4
    mc = DFCANConfig.dfcan()
    cfg = TrainConfig.dfcan(mc, patch_size=patch, batch_size=batch)
    keras.utils.set_random_seed(0)
    trainer = build_trainer(cfg)
    rng = np.random.default_rng(0)
    x = tf.constant(rng.random((1, batch, patch, patch, 1), dtype=np.float32))
    y = tf.constant(rng.random((1, batch, 2 * patch, 2 * patch, 1), dtype=np.float32))
    step = tf.function(trainer.train_step)
    t0 = time.perf_counter()
    float(step((x, y))["loss"])  # trace + first step
    warm = time.perf_counter() - t0
    n = 2 if quick else 8
    t0 = time.perf_counter()
    for _ in range(n):
        loss = step((x, y))["loss"]
    float(loss)
    dt = (time.perf_counter() - t0) / n
    flops = training_flops(mc, patch, patch, batch)
    achieved = flops / dt / 1e9
    print(f"train: DFCAN x2 ({mc.width}ch, {mc.n_groups}x{mc.n_blocks} FCABs), {patch}x{patch} patches, batch {batch}: "
          f"{1 / dt:.3f} steps/s ({dt:.2f} s/step; first step incl. tracing {warm:.1f} s); "
          f"{flops / 1e9:.1f} GFLOP/step -> {achieved:.1f} GFLOP/s = {100 * achieved / sgemm:.1f}% of sgemm "
          f"({sgemm:.1f} GFLOP/s)")
    return {"steps_per_s": 1 / dt, "gflop_per_step": flops / 1e9, "achieved_gflops": achieved,
            "sgemm_fraction": achieved / sgemm}


# --------------------------------------------------------------------------- `dfcan train`


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--data", help="DL-SR patch folder (training_wf/ or training/, training_gt/, validate_wf/ "
                                       "or validate/, validate_gt/; see --task) or an .npz with x_train, y_train, "
                                       "x_val, y_val; with --resume, defaults to the run's own")
    where = parser.add_mutually_exclusive_group(required=True)
    where.add_argument("--run", help="new run folder to create")
    where.add_argument("--resume", metavar="RUN", help="continue RUN from its last checkpoint")
    parser.add_argument("--mode", choices=["dfcan", "dfgan"], default=None, help="default: dfcan")
    parser.add_argument("--config", help="TrainConfig JSON (TrainConfig.to_dict()); flags given override it")
    parser.add_argument("--task", choices=["sisr", "sim"], default=None,
                        help="patch folders: wide-field input (training_wf/) or SIM frames (training/); default: sisr")
    parser.add_argument("--normalization", choices=NORMALIZATIONS, default=None, help="default: minmax")
    parser.add_argument("--pixel-size-nm", type=float, default=None, help="input pixel size, recorded in the run")
    g = parser.add_argument_group("network (defaults: the paper's for --mode)")
    for name in ("width", "n-groups", "n-blocks", "size-psc", "reduction"):
        g.add_argument(f"--{name}", type=int, default=None)
    g.add_argument("--gamma", type=float, default=None)
    t = parser.add_argument_group("recipe (defaults: the paper's for --mode)")
    for name, typ in (("steps", int), ("batch-size", int), ("patch-size", int), ("lr", float), ("d-lr", float),
                      ("validate-every", int), ("validate-patches", int), ("sample-every", int),
                      ("log-every", int), ("plateau-patience", int), ("seed", int), ("g-updates", int)):
        t.add_argument(f"--{name}", type=typ, default=None)
    t.add_argument("--init-generator", help="DFGAN: run folder or weights of a DFCAN-shaped net to start from")
    t.add_argument("--strided-discriminator", action="store_true",
                   help="DFGAN: the cheaper discriminator variant striding each block by 2 (not the paper's)")
    parser.add_argument("--strategy", choices=STRATEGIES, default=None,
                        help="default: one device; mirrored: all local devices; multi-worker: TF_CONFIG cluster "
                             "(new run: default; --resume: the run's own)")
    parser.add_argument("--mixed-precision", action="store_true", help="mixed_float16 (GPUs); off by default")
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")


def _data_shape(data: str, task: str) -> tuple[int, int]:
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


def config_from_args(args: argparse.Namespace) -> TrainConfig:
    """The TrainConfig ``dfcan train`` flags describe (data shape gives channels and scale)."""
    if args.config:
        base = TrainConfig.from_dict(load_json(args.config))
    else:
        mode = args.mode or "dfcan"
        channels, scale = _data_shape(args.data, args.task or "sisr")
        model = (DFCANConfig.dfcan if mode == "dfcan" else DFCANConfig.dfgan_generator)(channels, scale)
        base = TrainConfig.dfcan(model) if mode == "dfcan" else TrainConfig.dfgan(model)
    net = {k: getattr(args, k) for k in ("width", "n_groups", "n_blocks", "size_psc", "reduction", "gamma")
           if getattr(args, k) is not None}
    model = base.model.replace(**net) if net else base.model
    changes = {k: getattr(args, k) for k in ("steps", "batch_size", "patch_size", "lr", "d_lr", "validate_every",
                                             "validate_patches", "sample_every", "log_every", "plateau_patience",
                                             "seed", "g_updates", "init_generator") if getattr(args, k) is not None}
    changes.update(model=model)
    if args.strategy is not None:
        changes["strategy"] = args.strategy
    if args.mixed_precision:
        changes["mixed_precision"] = True
    if base.mode == "dfgan":
        disc = {**base.discriminator.to_dict(), "input_size": changes.get("patch_size", base.patch_size) * model.scale}
        if args.strided_discriminator:
            disc["downsample"] = True
        changes["discriminator"] = DiscriminatorConfig.from_dict(disc)
    elif args.strided_discriminator:
        raise DfcanError("--strided-discriminator applies to --mode dfgan only")
    return base.replace(**changes)


def _refuse_resume_flags(args: argparse.Namespace) -> None:
    """``--resume`` continues the recorded run: flags that would change it are refused, by name."""
    given = [k for k, v in vars(args).items()
             if not k.startswith("_") and k not in ("command", "run", *RESUME_FLAGS) and v not in (None, False)]
    if not given:
        return
    arch = [f"--{k.replace('_', '-')}" for k in given if k in ARCHITECTURE_FLAGS]
    other = [f"--{k.replace('_', '-')}" for k in given if k not in ARCHITECTURE_FLAGS]
    parts = []
    if arch:
        parts.append(f"the architecture flags {', '.join(arch)} cannot change the network of a run")
    if other:
        parts.append(f"{', '.join(other)} cannot change a run's recorded recipe and data settings")
    raise DfcanError(f"--resume {args.resume}: {'; '.join(parts)}. With --resume only --steps, --strategy, --data "
                     f"and --no-progress may be given; start a new run (--run) to train something else")


def run_from_args(args: argparse.Namespace) -> int:
    if args.resume:
        _refuse_resume_flags(args)
        doc, _ = read_run_config(args.resume)
        saved = _config_from_doc(doc)
        cfg = saved.replace(strategy=args.strategy or saved.strategy,
                            steps=args.steps if args.steps is not None else saved.steps)
        result = train(cfg, args.resume, data=args.data, resume=True, progress=not args.no_progress)
    else:
        if not args.data:
            raise DfcanError("--data is required for a new run")
        cfg = config_from_args(args)
        result = train(cfg, args.run, data=args.data, normalization=args.normalization or "minmax",
                       task=args.task or "sisr",
                       pixel_size_nm=args.pixel_size_nm, progress=not args.no_progress)
    print(f"{result.run_dir}: step {result.step}, best validation NRMSE {result.best_nrmse:.4f} "
          f"(bicubic {result.bicubic_nrmse:.4f}), lr {result.lr:.2e}")
    return 0

