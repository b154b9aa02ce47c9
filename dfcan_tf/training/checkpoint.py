"""Checkpoints of a run folder, written so that a kill at any moment leaves a resumable run (``docs/training.md``).

Files under ``RUN/weights/``::

    ckpt-NNNNNNN.weights.h5                 network (DFGAN: generator) of the checkpoint's step
    ckpt-NNNNNNN.discriminator.weights.h5   DFGAN only
    ckpt-NNNNNNN.optimizer.h5               optimizer variables (step count, lr, Adam moments)
    last.state.json                         step, checkpoint name, plateau counters, best NRMSE, losses since
                                            the last validation: the commit point
    last.weights.h5, last.*.h5              copies of the committed checkpoint's files

:meth:`Checkpointer.commit` writes the history, a step-stamped set of files,
then the state naming it (an atomic rename: the commit point), then refreshes
the ``last.*`` copies and drops older sets. The state therefore always names
complete files, and the history holds every validation up to its step (rows
beyond it are dropped on resume).
"""

from __future__ import annotations

import csv
import math
import os
import re
import shutil
from pathlib import Path
from typing import Any

import keras
import numpy as np

from dfcan_tf.config import load_json, save_json
from dfcan_tf.data.files import atomic_path
from dfcan_tf.errors import DfcanError
from dfcan_tf.runs import load_weights_checked, save_weights

HISTORY_FIELDS = ("step", "time_s", "lr", "d_lr", "loss", "d_loss", "g_adv", "val_mse", "val_nrmse", "val_psnr",
                  "val_ssim", "best_nrmse")
STATE_NAME = "last.state.json"
# What a checkpoint state file may name: a plain file-name stem inside weights/.
_CHECKPOINT_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_-]*")

__all__ = ["HISTORY_FIELDS", "Checkpointer", "load_optimizer", "read_history", "read_state", "save_optimizer",
           "write_history"]


def save_optimizer(optimizers: dict[str, keras.optimizers.Optimizer], path: str | os.PathLike) -> None:
    """Save the variables of each optimizer (iterations, learning rate, moments) to one HDF5 file, atomically."""
    import h5py

    with atomic_path(path) as tmp, h5py.File(tmp, "w") as f:
        for key, opt in optimizers.items():
            g = f.create_group(key)
            for i, v in enumerate(opt.variables):
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
            variables = list(opt.variables)
            stored = [f[key][name] for name in sorted(f[key])]
            if len(stored) != len(variables):
                raise DfcanError(f"{path}: the {key} optimizer has {len(variables)} variables, the file {len(stored)}")
            for v, d in zip(variables, stored, strict=True):
                if tuple(v.shape) != d.shape:
                    raise DfcanError(f"{path}: {d.attrs.get('path', d.name)} has shape {d.shape}, "
                                     f"{v.path} expects {tuple(v.shape)}")
            for v, d in zip(variables, stored, strict=True):
                v.assign(np.asarray(d))


def read_history(path: Path, upto: int) -> list[dict]:
    """The rows of ``history.csv`` up to step ``upto`` (numbers as floats, ``step`` as int; empty cells None)."""
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


def write_history(path: Path, rows: list[dict]) -> None:
    """Write ``history.csv`` atomically."""
    with atomic_path(path) as tmp, tmp.open("w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=HISTORY_FIELDS)
        w.writeheader()
        for r in rows:
            w.writerow({k: ("" if r.get(k) is None else r[k]) for k in HISTORY_FIELDS})


def read_state(path: Path) -> dict:
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


class Checkpointer:
    """Writes and restores the checkpoints of one run folder (or of one worker's folder).

    Parameters
    ----------
    out_dir
        The folder holding ``weights/`` and ``history.csv``.
    networks
        File suffix → network, e.g. ``{"weights": net, "discriminator.weights": disc}``.
    optimizers
        Name → optimizer, all saved in one ``optimizer.h5``.
    write_history_file
        Whether :meth:`commit` writes ``history.csv`` (the chief only).
    """

    def __init__(self, out_dir: Path, networks: dict[str, keras.Model],
                 optimizers: dict[str, keras.optimizers.Optimizer], *, write_history_file: bool = True):
        self.out_dir = Path(out_dir)
        self.wdir = self.out_dir / "weights"
        self.state_path = self.wdir / STATE_NAME
        self.networks = dict(networks)
        self.optimizers = optimizers
        self.write_history_file = write_history_file

    def commit(self, step: int, history: list[dict], state: dict[str, Any]) -> None:
        """Write checkpoint ``step``: history, step-stamped files, the state naming them, then the ``last.*`` copies.

        ``state`` is stored in the state file together with ``step`` and the checkpoint's name.
        """
        if self.write_history_file:
            write_history(self.out_dir / "history.csv", history)
        tag = f"ckpt-{step:07d}"
        for suffix, network in self.networks.items():
            save_weights(network, self.wdir / f"{tag}.{suffix}.h5")
        save_optimizer(self.optimizers, self.wdir / f"{tag}.optimizer.h5")
        save_json(self.state_path, {**state, "step": step, "checkpoint": tag})  # the commit point
        for name in [f"{suffix}.h5" for suffix in self.networks] + ["optimizer.h5"]:
            with atomic_path(self.wdir / f"last.{name}") as tmp:
                shutil.copyfile(self.wdir / f"{tag}.{name}", tmp)
        # Older checkpoints: only the files this method writes (ckpt-NNNNNNN.<network|optimizer>.h5).
        ours = re.compile(r"ckpt-\d{7}\.(%s)\.h5" % "|".join(map(re.escape, [*self.networks, "optimizer"])))
        for old in self.wdir.glob("ckpt-*"):
            if ours.fullmatch(old.name) and not old.name.startswith(tag + ".") and old.is_file():
                old.unlink(missing_ok=True)

    def exists(self) -> bool:
        """Whether a checkpoint was committed."""
        return self.state_path.exists()

    def read_state(self) -> dict:
        """The committed state (checked)."""
        return read_state(self.state_path)

    def restore(self, expected: str) -> dict:
        """Load the committed checkpoint into the networks and optimizers; return its state.

        ``expected`` describes the network for mismatch messages (e.g. ``the network of RUN/config.json``).
        """
        if not self.exists():
            raise DfcanError(f"{self.state_path}: no checkpoint state; cannot resume exactly")
        state = self.read_state()
        prefix = self.wdir / state["checkpoint"]
        for suffix, network in self.networks.items():
            path = Path(f"{prefix}.{suffix}.h5")
            if not path.is_file():
                raise DfcanError(f"{path}: missing; {self.state_path} names checkpoint {state['checkpoint']!r}, "
                                 f"whose files must all be in {self.wdir}")
            load_weights_checked(network, path, expected)
        load_optimizer(self.optimizers, f"{prefix}.optimizer.h5")
        return state
