"""Run folders: what training leaves and prediction, evaluation and export read.

Layout (one folder per trained model, as CSBDeep does it)::

    RUN/
      config.json              {"format": "dfcan_tf.run", "version": 1, "model": {...}, "train": {...}, "data": {...}}
      weights/best.weights.h5  best validation NRMSE
      weights/last.weights.h5  latest checkpoint
      history.csv, logs/ (TensorBoard), samples/  (written by training)

``load_run(RUN)`` rebuilds the network from ``config.json`` and loads weights;
every way a folder can be wrong raises :class:`DfcanError` naming the file.
"""

from __future__ import annotations

import os
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import keras
import numpy as np

from dfcan_tf.config import load_json, save_json
from dfcan_tf.data.files import atomic_path
from dfcan_tf.errors import DfcanError
from dfcan_tf.nets import registry
from dfcan_tf.nets.base import NetConfig

RUN_FORMAT = "dfcan_tf.run"
RUN_VERSION = 2
READABLE_RUN_VERSIONS = (1, 2)
WEIGHTS = ("best", "last")


@dataclass
class Run:
    """A loaded run folder."""

    path: Path
    config: dict[str, Any]
    model_config: NetConfig
    model: keras.Model
    which: str = "best"

    @property
    def data(self) -> dict[str, Any]:
        """The ``data`` section of ``config.json`` (task, normalisation, pixel size, ...)."""
        return dict(self.config.get("data") or {})

    @property
    def scale(self) -> int:
        return self.model_config.scale

    @property
    def input_channels(self) -> int:
        return self.model_config.input_channels


def weights_path(run_dir: str | os.PathLike, which: str = "best") -> Path:
    """Path of the ``best`` or ``last`` weights file of a run folder."""
    if which not in WEIGHTS:
        raise DfcanError(f"which must be one of {WEIGHTS}. Received: which={which!r}")
    return Path(run_dir) / "weights" / f"{which}.weights.h5"


def save_weights(model: keras.Model, path: str | os.PathLike) -> None:
    """``model.save_weights`` to ``path`` (a ``.weights.h5`` name) atomically."""
    with atomic_path(path) as tmp:
        model.save_weights(tmp)


def write_config(run_dir: str | os.PathLike, model_config: NetConfig, *, train: dict | None = None,
                 data: dict | None = None, extra: dict | None = None) -> Path:
    """Write ``config.json`` of a run folder (atomically) and return its path.

    The network's receptive field is measured once here and stored
    (``receptive_field``, input pixels), so prediction takes its tile overlap
    from it without measuring a large network again.
    """
    path = Path(run_dir) / "config.json"
    doc = {"format": RUN_FORMAT, "version": RUN_VERSION, "model": model_config.to_dict(),
           "receptive_field": registry.receptive_field(model_config),
           "train": dict(train or {}), "data": dict(data or {}), **(extra or {})}
    save_json(path, doc)
    return path


def write_run(run_dir: str | os.PathLike, model: keras.Model, model_config: NetConfig, *,
              train: dict | None = None, data: dict | None = None, which: tuple[str, ...] = WEIGHTS) -> Path:
    """Write a run folder holding ``model``'s weights under ``which`` and its ``config.json``."""
    run_dir = Path(run_dir)
    for w in which:
        save_weights(model, weights_path(run_dir, w))
    write_config(run_dir, model_config, train=train, data=data)
    return run_dir


def read_run_config(run_dir: str | os.PathLike) -> tuple[dict[str, Any], NetConfig]:
    """Read and validate ``config.json`` (migrated to the current version); return it and its network config."""
    run_dir = Path(run_dir)
    if not run_dir.is_dir():
        raise DfcanError(f"{run_dir}: run folder not found")
    path = run_dir / "config.json"
    doc = load_json(path)
    if doc.get("format") != RUN_FORMAT:
        raise DfcanError(f"{path}: not a dfcan_tf run configuration (format={doc.get('format')!r})")
    if doc.get("version") not in READABLE_RUN_VERSIONS:
        raise DfcanError(f"{path}: run version {doc.get('version')!r} is not supported "
                         f"(this dfcan_tf reads {READABLE_RUN_VERSIONS})")
    doc = migrate_run_config(doc)
    try:
        model_config = registry.config_from_dict(doc.get("model"))
        field = doc.get("receptive_field")
        if isinstance(field, int) and not isinstance(field, bool) and field >= 0:
            registry.remember_receptive_field(model_config, field)
    except DfcanError as exc:
        raise DfcanError(f"{path}: {exc}") from None
    except TypeError as exc:
        raise DfcanError(f"{path}: bad model configuration ({exc})") from None
    return doc, model_config


def migrate_run_config(doc: dict[str, Any]) -> dict[str, Any]:
    """A run document in the current version (the file on disk is not touched).

    Version 1 stored a ``version`` inside the model section and the adversarial
    training fields in every run; version 2 tags the model by ``architecture``
    only and keeps the adversarial fields for adversarial runs.
    """
    doc = dict(doc)
    if doc.get("version") == 1:
        model = dict(doc.get("model") or {})
        model.pop("version", None)
        doc["model"] = model
        train = dict(doc.get("train") or {})
        if train.get("mode", "dfcan") == "dfcan":
            for name in ("discriminator", "d_lr", "g_updates", "adversarial_weight", "init_generator"):
                train.pop(name, None)
        if train:
            train["version"] = 2
        doc["train"] = train
        doc["version"] = RUN_VERSION
    return doc


def load_run(run_dir: str | os.PathLike, which: str = "best", *, spectrum: str | None = None) -> Run:
    """Rebuild a run folder's network and load its ``best`` or ``last`` weights.

    Parameters
    ----------
    run_dir
        The run folder.
    which
        ``"best"`` (default) or ``"last"``; falls back to the other when only one exists.
    spectrum
        Override how Fourier attention is computed (``"fft"`` or ``"dft"``); same weights.
    """
    run_dir = Path(run_dir)
    doc, model_config = read_run_config(run_dir)
    if spectrum is not None and hasattr(model_config, "spectrum"):
        model_config = model_config.replace(spectrum=spectrum)
    path = weights_path(run_dir, which)
    if not path.exists():
        other = weights_path(run_dir, "last" if which == "best" else "best")
        if not other.exists():
            raise DfcanError(f"{run_dir}: no weights found (expected {path.relative_to(run_dir)})")
        path, which = other, other.name.split(".")[0]
    model = registry.build(model_config)
    load_weights_checked(model, path, f"the {_describe(model_config)} described by {run_dir / 'config.json'}")
    return Run(path=run_dir, config=doc, model_config=model_config, model=model, which=which)


def _describe(model_config: NetConfig) -> str:
    """One-line architecture summary, e.g. ``dfcan (1 input channel(s), x2, width 64, ...)``."""
    return registry.describe(model_config)


def _short_reason(exc: BaseException) -> str:
    """The first sentence of an exception's message, without Keras' dump of the offending tensors."""
    text = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
    text = text.split(" Example error message")[0]
    return text if len(text) <= 200 else text[:197] + "..."


def load_weights_checked(model: keras.Model, path: str | os.PathLike, expected: str) -> None:
    """``model.load_weights(path)`` quietly; a mismatch or non-finite weights raise a short :class:`DfcanError`.

    Parameters
    ----------
    model
        The built network.
    path
        A ``.weights.h5`` file.
    expected
        What the weights should fit, for the message (e.g. "the dfcan (...) described by RUN/config.json").
    """
    path = Path(path)
    try:
        with warnings.catch_warnings():
            # Keras warns once per skipped layer before raising; the error below says it in one line.
            warnings.simplefilter("ignore")
            model.load_weights(path)
    except Exception as exc:  # noqa: BLE001 - h5py/keras raise various types for corrupt or mismatched files
        raise DfcanError(f"{path}: cannot load weights into {expected} ({type(exc).__name__}: {_short_reason(exc)}); "
                         f"check that the weights and config.json belong to the same run") from None
    bad = [w.path for w in model.weights if not np.all(np.isfinite(keras.ops.convert_to_numpy(w)))]
    if bad:
        raise DfcanError(f"{path}: {len(bad)} weight tensor(s) hold NaN or infinite values (first: {bad[0]}); "
                         f"the training that wrote them diverged. Use another checkpoint or retrain")
