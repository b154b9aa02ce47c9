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
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import keras

from dfcan_tf.config import ModelConfig, load_json, save_json
from dfcan_tf.errors import DfcanError
from dfcan_tf.io import atomic_path

RUN_FORMAT = "dfcan_tf.run"
RUN_VERSION = 1
WEIGHTS = ("best", "last")


@dataclass
class Run:
    """A loaded run folder."""

    path: Path
    config: dict[str, Any]
    model_config: ModelConfig
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


def write_config(run_dir: str | os.PathLike, model_config: ModelConfig, *, train: dict | None = None,
                 data: dict | None = None, extra: dict | None = None) -> Path:
    """Write ``config.json`` of a run folder (atomically) and return its path."""
    path = Path(run_dir) / "config.json"
    doc = {"format": RUN_FORMAT, "version": RUN_VERSION, "model": model_config.to_dict(),
           "train": dict(train or {}), "data": dict(data or {}), **(extra or {})}
    save_json(path, doc)
    return path


def write_run(run_dir: str | os.PathLike, model: keras.Model, model_config: ModelConfig, *,
              train: dict | None = None, data: dict | None = None, which: tuple[str, ...] = WEIGHTS) -> Path:
    """Write a run folder holding ``model``'s weights under ``which`` and its ``config.json``."""
    run_dir = Path(run_dir)
    for w in which:
        save_weights(model, weights_path(run_dir, w))
    write_config(run_dir, model_config, train=train, data=data)
    return run_dir


def read_run_config(run_dir: str | os.PathLike) -> tuple[dict[str, Any], ModelConfig]:
    """Read and validate ``config.json``; return the document and its :class:`ModelConfig`."""
    run_dir = Path(run_dir)
    if not run_dir.is_dir():
        raise DfcanError(f"{run_dir}: run folder not found")
    path = run_dir / "config.json"
    doc = load_json(path)
    if doc.get("format") != RUN_FORMAT:
        raise DfcanError(f"{path}: not a dfcan_tf run configuration (format={doc.get('format')!r})")
    if doc.get("version") != RUN_VERSION:
        raise DfcanError(f"{path}: run version {doc.get('version')!r} is not supported (expected {RUN_VERSION})")
    try:
        model_config = ModelConfig.from_dict(doc.get("model"))
    except DfcanError as exc:
        raise DfcanError(f"{path}: {exc}") from None
    except TypeError as exc:
        raise DfcanError(f"{path}: bad model configuration ({exc})") from None
    return doc, model_config


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
    if spectrum is not None:
        model_config = model_config.replace(spectrum=spectrum)
    path = weights_path(run_dir, which)
    if not path.exists():
        other = weights_path(run_dir, "last" if which == "best" else "best")
        if not other.exists():
            raise DfcanError(f"{run_dir}: no weights found (expected {path.relative_to(run_dir)})")
        path, which = other, other.name.split(".")[0]
    model = model_config.build()
    try:
        model.load_weights(path)
    except Exception as exc:  # h5py/keras raise various types for corrupt or mismatched files
        raise DfcanError(f"{path}: cannot load weights into the {model_config.architecture} described by "
                         f"config.json ({type(exc).__name__}: {exc})") from None
    return Run(path=run_dir, config=doc, model_config=model_config, model=model, which=which)
