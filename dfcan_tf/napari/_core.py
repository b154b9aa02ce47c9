"""What the napari widget computes, without Qt: open a model, check a layer against it, predict, QC, SIM.

Everything here runs in the widget's worker thread (:mod:`dfcan_tf.napari.widget`)
and is tested without a display. Prediction is :func:`dfcan_tf.inference.predict.predict_image`
on each image of the layer, exactly as ``dfcan predict`` does for a file
(:func:`dfcan_tf.inference.files.predict_file`): same normalisation, same tiles,
same default overlap. See ``docs/napari.md``.
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from dfcan_tf.errors import DfcanError

SOURCES = ("shipped model", "run folder", "ONNX file")
QC_AVAILABLE: bool
try:  # the forward-consistency QC map (``dfcan qc``); optional so the widget works without it
    from dfcan_tf.evaluation import qc as _qc

    QC_AVAILABLE = True
except ImportError:  # pragma: no cover -- a build without dfcan_tf.evaluation.qc
    _qc = None
    QC_AVAILABLE = False

DEFAULT_PIXEL_NM = 62.6
DEFAULT_NA = 1.3
DEFAULT_EMISSION_NM = 525.0

__all__ = [
    "QC_AVAILABLE",
    "SOURCES",
    "LoadedModel",
    "count_calls",
    "group_frames",
    "load_model",
    "output_geometry",
    "predict_groups",
    "qc_maps",
    "sim_reconstruct",
]


@dataclass
class LoadedModel:
    """A network ready for the widget, and what prediction needs to know about it.

    Attributes
    ----------
    model
        A ``keras.Model`` or a :class:`dfcan_tf.inference.backends.Backend`.
    scale, input_channels
        Upsampling factor and input frames per image.
    config
        The network configuration (None for an ONNX file without metadata).
    data
        The run's ``data`` section (``normalization``, ``pixel_size_nm`` …).
    label
        Short name for layer names (run folder or file name).
    """

    model: Any
    scale: int
    input_channels: int
    config: Any
    data: dict = field(default_factory=dict)
    label: str = "model"


def _onnx_data(path: Path) -> dict:
    """The run's ``data`` section stored in an ONNX file by ``dfcan export`` (empty when absent)."""
    import onnx

    try:
        proto = onnx.load(str(path), load_external_data=False)
    except Exception as exc:  # noqa: BLE001 -- onnx raises DecodeError, OSError …
        raise DfcanError(f"{path}: not a readable ONNX file ({type(exc).__name__}: {exc})") from None
    for prop in proto.metadata_props:
        if prop.key == "dfcan_tf.config":
            try:
                doc = json.loads(prop.value)
            except json.JSONDecodeError:
                return {}
            data = dict(doc.get("data") or {})
            if "normalization" in doc:
                data["normalization"] = doc["normalization"]
            return data
    return {}


def _probe_scale(backend: Any, channels: int, path: Path) -> int:
    """The upsampling factor of a network with no metadata, from the output of one 16×16 input."""
    out = np.asarray(backend(np.zeros((1, 16, 16, channels), np.float32)))
    factor = out.shape[1] // 16
    if out.ndim != 4 or factor < 1 or out.shape[1:3] != (16 * factor, 16 * factor):
        raise DfcanError(f"{path}: the network maps a 16x16 input to {out.shape[1:3]}; expected an integer "
                         "upsampling of both sides")
    return int(factor)


def load_model(source: str, path: str | Path | None = None) -> LoadedModel:
    """Open a network as the widget offers it.

    Parameters
    ----------
    source
        One of :data:`SOURCES`: ``"shipped model"`` (``path`` is the model's
        name, default :data:`dfcan_tf.shipped.DEFAULT_MODEL`), ``"run folder"``
        (a folder with ``config.json`` and ``weights/``, Keras, best weights)
        or ``"ONNX file"`` (written by ``dfcan export``; onnxruntime).

    Raises
    ------
    DfcanError
        Unknown source, missing or unreadable folder/file.
    """
    from dfcan_tf.inference.predict import resolve_run

    if source == "shipped model":
        from dfcan_tf.shipped import DEFAULT_MODEL, shipped_model

        folder = shipped_model(str(path) if path else DEFAULT_MODEL)
        r = resolve_run(folder, "keras", "best")
        return LoadedModel(r.model, r.scale, r.input_channels, r.config, r.data, folder.name)
    if path is None or str(path) in ("", "."):
        raise DfcanError(f"choose a {source} first")
    path = Path(path)
    if source == "run folder":
        if not (path / "config.json").is_file():
            raise DfcanError(f"{path}: not a run folder (no config.json); choose the folder `dfcan train` wrote")
        r = resolve_run(path, "keras", "best")
        return LoadedModel(r.model, r.scale, r.input_channels, r.config, r.data, path.name)
    if source == "ONNX file":
        if path.suffix.lower() != ".onnx" or not path.is_file():
            raise DfcanError(f"{path}: not an .onnx file; choose one written by `dfcan export`")
        from dfcan_tf.inference.backends import load_backend
        from dfcan_tf.inference.predict import config_for_artefact

        backend = load_backend(path, "onnx")
        config = config_for_artefact(path)
        channels = backend.input_channels or (config.input_channels if config is not None else None)
        if channels is None:
            raise DfcanError(f"{path}: the ONNX file fixes no input channel count and carries no dfcan_tf metadata")
        scale = config.scale if config is not None else _probe_scale(backend, channels, path)
        return LoadedModel(backend, int(scale), int(channels), config, _onnx_data(path), path.stem)
    raise DfcanError(f"unknown model source. Received: {source!r}; expected one of {SOURCES}")


def group_frames(data: np.ndarray, channels: int, name: str) -> tuple[np.ndarray, bool]:
    """Split layer data into the model's images: ``(groups, channels, H, W)`` and whether there is one image.

    A 2-D layer is one wide-field image (one-channel models). A 3-D layer is a
    stack of frames along its first axis: for a C-channel SIM model, groups of
    C raw frames (one 9- or 25-frame stack, or several time points one after
    the other); for a one-channel model, a time-lapse predicted frame by frame.

    Raises
    ------
    DfcanError
        The layer is RGB or has another number of dimensions, a 2-D image for
        a SIM model, or a frame count that does not split into groups of C.
    """
    data = np.asarray(data)
    if data.ndim == 2:
        if channels != 1:
            raise DfcanError(f"layer {name!r} is a single 2-D image but the model takes {channels} raw SIM frames "
                             f"per image; choose a layer with {channels} frames along its first axis")
        return data[None, None], True
    if data.ndim != 3:
        raise DfcanError(f"layer {name!r} has {data.ndim} dimensions {data.shape}; expected a 2-D image or a "
                         "(frames, H, W) stack")
    n = data.shape[0]
    if n % channels:
        what = "raw SIM frames" if channels > 1 else "frames"
        raise DfcanError(f"layer {name!r} has {n} frames along its first axis, which do not split into groups of "
                         f"{channels} {what} (the model's input channels); choose a model for {n}-frame stacks "
                         f"or a layer with a multiple of {channels} frames")
    groups = data.reshape(n // channels, channels, *data.shape[1:])
    return groups, channels > 1 and groups.shape[0] == 1


def _tile_plan(loaded: LoadedModel, shape: tuple[int, int], tile_size: int | None) -> tuple[int, int]:
    """``(tile, overlap)`` as :func:`~dfcan_tf.inference.predict.predict_image` picks them (tile 0: whole)."""
    from dfcan_tf.inference import predict as p

    h, w = shape
    tile = (0 if h * w <= p.WHOLE_IMAGE_MAX_PIXELS else p.DEFAULT_TILE_SIZE) if tile_size is None else int(tile_size)
    if tile == 0 or tile >= max(h, w):
        return 0, 0
    return tile, min(p.overlap_for(loaded.model, config=loaded.config, scale=loaded.scale), tile // 2)


def count_calls(loaded: LoadedModel, shape: tuple[int, int], groups: int, tile_size: int | None,
                batch_size: int = 1) -> int:
    """Network calls :func:`predict_groups` makes: the progress bar's length."""
    from dfcan_tf.inference.tiling import tile_specs

    tile, overlap = _tile_plan(loaded, shape, tile_size)
    if tile == 0:
        return groups
    tiles = len(tile_specs(shape, tile, overlap, scale=loaded.scale))
    return groups * math.ceil(tiles / max(1, batch_size))


class _Counting:
    """A model callable that reports every batch it runs (for the progress bar)."""

    def __init__(self, run: Callable[[np.ndarray], np.ndarray], channels: int, on_call: Callable[[], None]):
        self.run, self.input_channels, self.on_call = run, channels, on_call

    def __call__(self, batch: np.ndarray) -> np.ndarray:
        out = self.run(batch)
        self.on_call()
        return out


def predict_groups(loaded: LoadedModel, groups: np.ndarray, *, tile_size: int | None = None, batch_size: int = 1,
                   name: str = "layer", on_call: Callable[[], None] | None = None) -> np.ndarray:
    """Super-resolve every image of ``groups`` (``(G, C, H, W)`` from :func:`group_frames`) → ``(G, sH, sW)``.

    Each image goes through :func:`dfcan_tf.inference.predict.predict_image`
    with the run's normalisation (as :func:`dfcan_tf.inference.files.predict_file`):
    min-max or percentile in, min-max out; ``divide65535`` runs get their input
    divided by 65535 and their raw output. ``on_call`` is called after each
    network call (tile batch or whole image).
    """
    from dfcan_tf.data.normalize import Normalizer
    from dfcan_tf.inference.predict import overlap_for, predict_image, predictor

    run, _ = predictor(loaded.model)
    model = _Counting(run, loaded.input_channels, on_call or (lambda: None))
    normalizer = Normalizer.from_config(loaded.data.get("normalization"))
    tile, _ = _tile_plan(loaded, groups.shape[-2:], tile_size)
    # The default overlap of the real model: the counting wrapper carries neither its configuration nor its file.
    overlap = overlap_for(loaded.model, config=loaded.config, scale=loaded.scale) if tile else None
    outputs = []
    for group in groups:
        if normalizer.per_image:
            x, norm = group, True
        else:
            x, norm = normalizer.normalize(group), False
        outputs.append(predict_image(model, x, scale=loaded.scale, tile_size=tile_size, overlap=overlap,
                                     batch_size=batch_size, normalize=norm, normalizer=normalizer, name=name,
                                     config=loaded.config))
    return np.stack(outputs)


def output_geometry(scale: tuple[float, ...], translate: tuple[float, ...], factor: int,
                    stacked: bool) -> tuple[tuple[float, ...], tuple[float, ...]]:
    """Layer ``scale`` and ``translate`` of an image ``factor`` × finer than a layer with ``scale``/``translate``.

    The pixel size is divided by ``factor``; the origin moves so that the fine
    pixels tile the coarse ones exactly (fine pixel j's centre sits at coarse
    coordinate (j + ½)/factor − ½). ``stacked``: the result keeps a first
    (time/group) axis, with the layer's first-axis scale.
    """
    sy, sx = float(scale[-2]), float(scale[-1])
    ty, tx = float(translate[-2]), float(translate[-1])
    shift = 0.5 / factor - 0.5
    plane_scale = (sy / factor, sx / factor)
    plane_translate = (ty + sy * shift, tx + sx * shift)
    if not stacked:
        return plane_scale, plane_translate
    first_scale = float(scale[0]) if len(scale) == 3 else 1.0
    first_translate = float(translate[0]) if len(translate) == 3 else 0.0
    return (first_scale, *plane_scale), (first_translate, *plane_translate)


def qc_maps(sr: np.ndarray, groups: np.ndarray, scale: int, *, pixel_nm: float = DEFAULT_PIXEL_NM,
            na: float = DEFAULT_NA, emission_nm: float = DEFAULT_EMISSION_NM) -> tuple[np.ndarray, list[dict]]:
    """Forward-consistency QC maps (noise units, on the SR grid) of ``sr`` ``(G, sH, sW)`` against ``groups``.

    :func:`dfcan_tf.evaluation.qc.forward_consistency` per image (a SIM stack
    is compared through its wide-field sum); returns the maps ``(G, sH, sW)``
    and the scores of each image.
    """
    if _qc is None:  # pragma: no cover -- see QC_AVAILABLE
        raise DfcanError("this installation has no dfcan_tf.evaluation.qc; the QC map is unavailable")
    maps, scores = [], []
    for out, group in zip(sr, groups):
        measured = group[0] if group.shape[0] == 1 else group
        result = _qc.forward_consistency(out, measured, scale=scale, pixel_nm=pixel_nm, na=na,
                                         emission_nm=emission_nm)
        maps.append(result.z_sr)
        scores.append(result.scores)
    return np.stack(maps), scores


def sim_reconstruct(groups: np.ndarray, *, pixel_nm: float = DEFAULT_PIXEL_NM, na: float = DEFAULT_NA,
                    emission_nm: float = DEFAULT_EMISSION_NM) -> tuple[np.ndarray, int]:
    """Conventional SIM reconstruction of every 9- or 25-frame group: ``(G, fH, fW)`` and the factor f (2 or 3).

    9 frames: :func:`dfcan_tf.sim.reconstruct_linear` (2×); 25 frames:
    :func:`dfcan_tf.sim.reconstruct_nonlinear` (3×); parameters estimated
    blind from each stack.
    """
    from dfcan_tf.sim import reconstruct_linear, reconstruct_nonlinear

    n = groups.shape[1]
    if n not in (9, 25):
        raise DfcanError(f"conventional SIM reconstruction needs 9 or 25 raw frames per image; the layer gives {n}")
    method, factor = (reconstruct_linear, 2) if n == 9 else (reconstruct_nonlinear, 3)
    images = [method(np.asarray(g, np.float64), pixel_nm=pixel_nm, na=na, emission_nm=emission_nm)[0]
              for g in groups]
    return np.stack(images).astype(np.float32), factor
