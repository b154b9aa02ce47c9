"""The ``dfcan_tf`` napari dock widget: super-resolve an image layer with a DFCAN model (``docs/napari.md``).

Pick a model (the shipped one, a run folder, or an ONNX file written by
``dfcan export``), an image layer (a 2-D wide-field image, or raw SIM frames
along the first axis), and press *Super-resolve*: the model is opened and the
layer predicted in a worker thread (:func:`napari.qt.threading.create_worker`),
tile by tile with a progress bar, so the viewer stays responsive. The result is
added as a new image layer whose pixel size is the input layer's divided by the
model's scale; optionally the forward-consistency QC map
(:mod:`dfcan_tf.evaluation.qc`) and a conventional SIM reconstruction
(:mod:`dfcan_tf.sim`) are added beside it. Mistakes (no layer, a layer that does
not match the model's input frames, a folder that is not a run) show as a
napari notification and in the widget's status line.
"""

from __future__ import annotations

import os
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
from magicgui.widgets import (
    CheckBox,
    ComboBox,
    Container,
    FileEdit,
    FloatSpinBox,
    Label,
    ProgressBar,
    PushButton,
    SpinBox,
)
from qtpy.QtCore import QObject, Signal, Slot

from dfcan_tf.errors import DfcanError
from dfcan_tf.napari import _core

__all__ = ["DfcanWidget"]

QC_UNAVAILABLE = "QC map unavailable: this installation has no dfcan_tf.evaluation.qc"


def _keep_qt_objects_at_exit() -> None:
    """Leave Qt's C++ objects to the OS at interpreter exit (PyQt's ``sip.setdestroyonexit(False)``).

    With TensorFlow loaded, PyQt5 destroying shown X11 widgets at exit aborts
    the process (``free(): invalid pointer``) after napari has closed; skipping
    that destruction is what PyQt documents for crashes on exit.
    """
    import qtpy

    if qtpy.API_NAME == "PyQt5":
        from PyQt5 import sip
    elif qtpy.API_NAME == "PyQt6":
        from PyQt6 import sip
    else:
        return
    sip.setdestroyonexit(False)


_keep_qt_objects_at_exit()

# Mesa's software OpenGL (llvmpipe) JIT-compiles shaders with LLVM, whose symbols then resolve into the LLVM inside
# TensorFlow and crash; softpipe without LLVM vertex processing draws the same canvas with no LLVM. Only takes
# effect when set before napari creates its first canvas (docs/napari.md#starting-napari).
os.environ.setdefault("GALLIUM_DRIVER", "softpipe")
os.environ.setdefault("DRAW_USE_LLVM", "0")

TF_AFTER_CANVAS = ("TensorFlow was not loaded before napari's canvas: loading it now would crash napari (TensorFlow "
                   "and the OpenGL driver both carry LLVM). Start napari with `python -m dfcan_tf.napari` "
                   "(docs/napari.md#starting-napari)")


def tensorflow_loaded() -> bool:
    """True when TensorFlow is already imported, the only order in which it and napari's OpenGL canvas coexist."""
    return "tensorflow" in sys.modules


class _Relay(QObject):
    """Carries progress from the worker thread to the widget (queued into the main thread by Qt)."""

    total = Signal(int)
    step = Signal()

    def __init__(self, bar: ProgressBar):
        super().__init__()
        self.bar = bar
        self.total.connect(self._on_total)
        self.step.connect(self._on_step)

    @Slot(int)
    def _on_total(self, n: int) -> None:
        self.bar.max = max(1, n)
        self.bar.value = 0

    @Slot()
    def _on_step(self) -> None:
        self.bar.value = min(self.bar.max, self.bar.value + 1)


class DfcanWidget(Container):
    """Dock widget: model + image layer → super-resolved layer (and QC map, SIM reconstruction).

    Parameters
    ----------
    napari_viewer
        The viewer whose image layers are offered and which receives the results.

    Attributes
    ----------
    worker
        The last prediction worker (None before the first run).
    last_scores
        QC scores of the last run's images (empty without QC).
    """

    def __init__(self, napari_viewer: Any):
        super().__init__(labels=True)
        from dfcan_tf.shipped import shipped_models

        self.viewer = napari_viewer
        shipped = shipped_models()
        self.source = ComboBox(label="model", choices=list(_core.SOURCES), value=_core.SOURCES[0 if shipped else 1])
        self.shipped = ComboBox(label="shipped model", choices=shipped or ["(none installed)"])
        self.run_dir = FileEdit(label="run folder", mode="d")
        self.onnx_file = FileEdit(label="ONNX file", mode="r", filter="*.onnx")
        self.layer = ComboBox(label="image layer", choices=self._image_layers)
        self.tile_size = SpinBox(label="tile size", min=0, max=8192, step=8, value=0,
                                 tooltip="input pixels per tile side; 0: whole image up to 1024x1024, else 512")
        self.qc = CheckBox(text="QC map (forward consistency)", value=False, enabled=_core.QC_AVAILABLE,
                           tooltip="residual of the re-imaged result against the input, in noise units"
                           if _core.QC_AVAILABLE else QC_UNAVAILABLE)
        self.sim = CheckBox(text="conventional SIM reconstruction", value=False,
                            tooltip="9 frames: linear SIM 2x; 25 frames: nonlinear SIM 3x")
        self.pixel_nm = FloatSpinBox(label="raw pixel (nm)", min=1.0, max=10000.0, step=0.1,
                                     value=_core.DEFAULT_PIXEL_NM)
        self.na = FloatSpinBox(label="NA", min=0.1, max=1.7, step=0.05, value=_core.DEFAULT_NA)
        self.emission_nm = FloatSpinBox(label="emission (nm)", min=200.0, max=2000.0, step=1.0,
                                        value=_core.DEFAULT_EMISSION_NM)
        self.button = PushButton(text="Super-resolve")
        self.progress = ProgressBar(label="progress", min=0, max=1, value=0)
        self.status = Label(label="status", value="" if _core.QC_AVAILABLE else QC_UNAVAILABLE)
        self.extend([self.source, self.shipped, self.run_dir, self.onnx_file, self.layer, self.tile_size, self.qc,
                     self.sim, self.pixel_nm, self.na, self.emission_nm, self.button, self.progress, self.status])

        self.worker = None
        self.last_scores: list[dict] = []
        self._models: dict[tuple, _core.LoadedModel] = {}
        self._relay = _Relay(self.progress)
        self.source.changed.connect(self._show_source)
        self.button.changed.connect(self._start)
        events = self.viewer.layers.events
        events.inserted.connect(self._refresh_layers)
        events.removed.connect(self._refresh_layers)
        self._show_source()
        if not tensorflow_loaded():
            self.button.enabled = False
            self.status.value = f"error: {TF_AFTER_CANVAS}"

    # ------------------------------------------------------------------ choices

    def _image_layers(self, _widget: Any = None) -> list[tuple[str, Any]]:
        import napari

        return [(layer.name, layer) for layer in self.viewer.layers if isinstance(layer, napari.layers.Image)]

    def _refresh_layers(self, _event: Any = None) -> None:
        self.layer.reset_choices()

    def _show_source(self, _value: Any = None) -> None:
        source = self.source.value
        self.shipped.visible = source == "shipped model"
        self.run_dir.visible = source == "run folder"
        self.onnx_file.visible = source == "ONNX file"

    def _model_key(self) -> tuple[str, str]:
        source = self.source.value
        if source == "shipped model":
            return source, str(self.shipped.value)
        field = self.run_dir if source == "run folder" else self.onnx_file
        value = field.value
        return source, "" if value is None or str(value) in ("", ".") else str(Path(value).resolve())

    # ------------------------------------------------------------------ running

    def _fail(self, message: str) -> None:
        from napari.utils.notifications import show_error

        self.status.value = f"error: {message}"
        show_error(f"dfcan_tf: {message}")

    def run(self):
        """Check the inputs and return a worker (not started) that predicts the chosen layer; None on a mistake.

        The worker's ``returned`` signal adds the layers; ``errored`` shows the
        message. The *Super-resolve* button calls this and starts the worker.
        """
        if not tensorflow_loaded():
            self._fail(TF_AFTER_CANVAS)
            return None
        layer = self.layer.value
        if layer is None:
            self._fail("no image layer: open an image (File > Open) or choose one in 'image layer'")
            return None
        if getattr(layer, "rgb", False):
            self._fail(f"layer {layer.name!r} is RGB; choose a grayscale image or a stack of raw frames")
            return None
        key = self._model_key()
        if not key[1]:
            self._fail(f"choose a {key[0]} first")
            return None
        from napari.qt.threading import create_worker

        settings = {
            "key": key,
            "data": layer.data,
            "name": layer.name,
            "scale": tuple(layer.scale),
            "translate": tuple(layer.translate),
            "tile_size": int(self.tile_size.value) or None,
            "qc": bool(self.qc.value and self.qc.enabled),
            "sim": bool(self.sim.value),
            "optics": {"pixel_nm": float(self.pixel_nm.value), "na": float(self.na.value),
                       "emission_nm": float(self.emission_nm.value)},
        }
        worker = create_worker(self._compute, settings, _start_thread=False, _ignore_errors=True)
        worker.returned.connect(self._add_layers)
        worker.errored.connect(self._on_error)
        worker.finished.connect(self._on_finished)
        self.worker = worker
        self.button.enabled = False
        self.status.value = f"predicting {layer.name!r} …"
        return worker

    def _start(self, _value: Any = None) -> None:
        worker = self.run()
        if worker is not None:
            worker.start()

    def _compute(self, s: dict) -> dict:
        """Worker thread: open (or reuse) the model, predict every image, QC and SIM when asked."""
        start = time.perf_counter()
        loaded = self._models.get(s["key"])
        if loaded is None:
            loaded = _core.load_model(*s["key"])
            self._models[s["key"]] = loaded
        groups, single = _core.group_frames(np.asarray(s["data"]), loaded.input_channels, s["name"])
        self._relay.total.emit(_core.count_calls(loaded, groups.shape[-2:], groups.shape[0], s["tile_size"]))
        sr = _core.predict_groups(loaded, groups, tile_size=s["tile_size"], name=s["name"],
                                  on_call=self._relay.step.emit)
        stacked = not (single or np.ndim(s["data"]) == 2)
        out = {"settings": s, "label": loaded.label, "factor": loaded.scale, "sr": sr, "stacked": stacked}
        if s["qc"]:
            out["qc"], out["scores"] = _core.qc_maps(sr, groups, loaded.scale, **s["optics"])
        if s["sim"]:
            out["sim"], out["sim_factor"] = _core.sim_reconstruct(groups, **s["optics"])
        out["seconds"] = time.perf_counter() - start
        return out

    def _add_layers(self, out: dict) -> None:
        s = out["settings"]
        stacked = out["stacked"]

        def image(a: np.ndarray) -> np.ndarray:
            return a if stacked else a[0]

        scale, translate = _core.output_geometry(s["scale"], s["translate"], out["factor"], stacked)
        self.viewer.add_image(image(out["sr"]), name=f"{s['name']} {out['label']} x{out['factor']}", scale=scale,
                              translate=translate, contrast_limits=(0.0, 1.0), colormap="gray")
        if "qc" in out:
            from napari.utils.colormaps import Colormap

            diverging = Colormap([[0.1, 0.3, 1.0, 1.0], [0.0, 0.0, 0.0, 1.0], [1.0, 0.2, 0.1, 1.0]],
                                 name="dfcan qc (noise units)")
            k = float(out["scores"][0]["k"])
            self.viewer.add_image(image(out["qc"]), name=f"{s['name']} QC (noise units)", scale=scale,
                                  translate=translate, colormap=diverging, contrast_limits=(-2 * k, 2 * k),
                                  opacity=0.6, blending="additive")
            self.last_scores = out["scores"]
        if "sim" in out:
            sim_scale, sim_translate = _core.output_geometry(s["scale"], s["translate"], out["sim_factor"], stacked)
            sim = image(out["sim"])
            self.viewer.add_image(sim, name=f"{s['name']} SIM x{out['sim_factor']}", scale=sim_scale,
                                  translate=sim_translate)
        note = f"done in {out['seconds']:.1f} s"
        if "scores" in out:
            note += "; QC: " + ", ".join(f"{100 * sc['fraction_above_k']:.2f}% of pixels beyond {sc['k']:g} σ"
                                         for sc in out["scores"])
        self.status.value = note

    def _on_error(self, exc: BaseException) -> None:
        if isinstance(exc, DfcanError):
            self._fail(str(exc))
        else:
            self._fail(f"{type(exc).__name__}: {exc}")

    def _on_finished(self) -> None:
        self.button.enabled = True
