"""Inference backends: one callable ``f(batch NHWC float32) -> NHWC`` per runtime.

``keras`` runs the run folder's network in TensorFlow; ``onnx`` (onnxruntime),
``tflite`` (LiteRT) and ``saved_model`` run an artefact written by
``dfcan export`` (see ``docs/export.md#formats``). :data:`BACKENDS` is the one
list of backend names for the whole package (``dfcan predict``, ``dfcan
evaluate`` and ``dfcan assess`` offer it as ``--backend``).

With a run folder and a non-Keras backend, :func:`load_backend` uses the run's
default export (``RUN/export/model.onnx`` …), exporting and verifying it first
when missing, and refuses an artefact whose export record does not match the
current weights and file (``docs/export.md#contract``).
"""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from dfcan_tf.errors import DfcanError

BACKENDS = ("keras", "onnx", "tflite", "saved_model")
INPUT_NAME = "input"
OUTPUT_NAME = "output"

Runner = Callable[[np.ndarray], np.ndarray]
MAX_TRACED_SHAPES = 8  # input shapes per model given a graph of their own (KerasPredictor)


@dataclass
class Backend:
    """A loaded network: ``backend(batch)`` maps (N, H, W, C) float32 to (N, s·H, s·W, 1)."""

    name: str
    path: Path
    run: Runner
    input_channels: int | None = None
    scale: int | None = None

    def __call__(self, batch: np.ndarray) -> np.ndarray:
        batch = np.asarray(batch, np.float32)
        if batch.ndim != 4:
            raise DfcanError(f"{self.name} backend expects a batch (N, H, W, C). Received: shape={batch.shape}")
        if self.input_channels is not None and batch.shape[-1] != self.input_channels:
            raise DfcanError(f"{self.path}: the model takes {self.input_channels} channel(s). "
                             f"Received: shape={batch.shape}")
        return self.run(batch)


# --------------------------------------------------------------------------------------------
# runners
# --------------------------------------------------------------------------------------------

class KerasPredictor:
    """A numpy → numpy batch function of a Keras model: one concrete graph per input shape.

    The first :data:`MAX_TRACED_SHAPES` input shapes ``(N, h, w, C)`` each get
    a graph traced for exactly that shape: every op has static shapes, so
    Grappler folds what depends only on the shape (the sampled-DFT plan of
    Fourier attention). The tiles of an image share a shape, so a tiled
    prediction traces once per batch size. Further shapes (a folder of many
    sizes) share one shape-polymorphic graph: tracing and graph memory stay
    bounded. Graph execution frees each intermediate once used (eager calls
    of the functional model keep them all, ~10× the memory).

    ``traces`` counts the graphs traced so far (a Python side effect of tracing).
    """

    def __init__(self, model: Any, channels: int, max_shapes: int | None = None):
        import tensorflow as tf

        self.channels = int(channels)
        self.traces = 0
        self.max_shapes = MAX_TRACED_SHAPES if max_shapes is None else int(max_shapes)

        def forward(batch):
            self.traces += 1  # runs while tracing only
            return model(batch, training=False)

        self._exact = tf.function(forward)
        self._polymorphic = tf.function(forward, input_signature=[tf.TensorSpec([None, None, None, channels], tf.float32)])
        self._graphs: dict[tuple[int, ...], Any] = {}

    def graph_for(self, shape: tuple[int, ...]) -> Any:
        """The concrete function that runs a batch of ``shape`` (traced now if new)."""
        import tensorflow as tf

        shape = tuple(int(d) for d in shape)
        graph = self._graphs.get(shape)
        if graph is None:
            if len(self._graphs) >= self.max_shapes:
                return self._polymorphic
            graph = self._exact.get_concrete_function(tf.TensorSpec(shape, tf.float32))
            self._graphs[shape] = graph
        return graph

    def __call__(self, batch: np.ndarray) -> np.ndarray:
        import tensorflow as tf

        x = tf.convert_to_tensor(np.asarray(batch, dtype=np.float32))  # the one host copy (none if aligned)
        return self.graph_for(tuple(x.shape))(x).numpy()


def compiled(model: Any, channels: int) -> Runner:
    """``f(x) -> numpy`` running a Keras ``model``: a :class:`KerasPredictor` (one graph per input shape)."""
    return KerasPredictor(model, channels)


def onnx_runner(path: str | os.PathLike, threads: int | None = None) -> Runner:
    """Run an ``.onnx`` file with onnxruntime on the CPU (``threads`` intra-op threads when given)."""
    import onnxruntime as ort

    options = ort.SessionOptions()
    if threads:
        options.intra_op_num_threads = threads
        options.inter_op_num_threads = 1
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    try:
        session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
    except Exception as exc:  # noqa: BLE001 - onnxruntime raises its own exception types
        raise DfcanError(f"{path}: onnxruntime cannot load the model ({type(exc).__name__}: {exc})") from None
    name = session.get_inputs()[0].name
    return lambda x: session.run(None, {name: np.ascontiguousarray(x, np.float32)})[0]


def onnx_channels(path: str | os.PathLike) -> int | None:
    """Input channels of an ``.onnx`` file (None when the dimension is not fixed)."""
    import onnx

    model = onnx.load(str(path), load_external_data=False)
    dim = model.graph.input[0].type.tensor_type.shape.dim[-1]
    return dim.dim_value or None


def tflite_runner(path: str | os.PathLike, threads: int | None = None) -> Runner:
    """Run a ``.tflite`` file in LiteRT, resizing the input tensor for every new shape (dynamic models)."""
    from ai_edge_litert.interpreter import Interpreter

    try:
        interpreter = Interpreter(model_path=str(path), num_threads=threads)
    except Exception as exc:  # noqa: BLE001 - LiteRT raises ValueError/RuntimeError
        raise DfcanError(f"{path}: LiteRT cannot load the model ({type(exc).__name__}: {exc})") from None
    detail = interpreter.get_input_details()[0]
    inp = detail["index"]
    out = interpreter.get_output_details()[0]["index"]
    fixed = tuple(int(d) for d in detail["shape"]) if -1 not in detail["shape_signature"] else None
    current: list[tuple[int, ...] | None] = [None]

    def run(x: np.ndarray) -> np.ndarray:
        x = np.ascontiguousarray(x, np.float32)
        if fixed is not None and x.shape != fixed:
            raise DfcanError(f"{path}: this TFLite model was exported for input shape {fixed} only "
                             f"(--tflite-size). Received: shape={x.shape}")
        if current[0] != x.shape:
            # Dynamic shape: resize, then re-plan memory (cheap next to inference).
            interpreter.resize_tensor_input(inp, list(x.shape), strict=False)
            interpreter.allocate_tensors()
            current[0] = x.shape
        interpreter.set_tensor(inp, x)
        interpreter.invoke()
        return interpreter.get_tensor(out).copy()

    return run


def saved_model_runner(path: str | os.PathLike) -> Runner:
    """Run a SavedModel folder's ``serving_default`` signature (``{"input"} -> {"output"}``)."""
    import tensorflow as tf

    try:
        loaded = tf.saved_model.load(str(path))
        signature = loaded.signatures["serving_default"]
    except Exception as exc:  # noqa: BLE001 - tf.saved_model.load raises many types
        raise DfcanError(f"{path}: not a SavedModel with a serving_default signature ({exc})") from None
    return lambda x: signature(**{INPUT_NAME: tf.constant(np.asarray(x, np.float32))})[OUTPUT_NAME].numpy()


# --------------------------------------------------------------------------------------------
# loading
# --------------------------------------------------------------------------------------------

def check_threads(threads: Any) -> None:
    """Raise :class:`DfcanError` unless ``threads`` is None or a whole number ≥ 1."""
    whole = isinstance(threads, (int, np.integer)) and not isinstance(threads, bool)
    if threads is not None and (not whole or threads < 1):
        raise DfcanError(f"threads must be a whole number ≥ 1. Received: threads={threads!r}")


def is_run_folder(path: Path) -> bool:
    """True for a folder holding a ``config.json`` (a run folder)."""
    return path.is_dir() and (path / "config.json").is_file()


def _run_folder_artefact(path: Path, backend: str, which: str) -> Path:
    """The run's default export for ``backend``, exported first when missing, checked against its record.

    Exporting lives above inference (``dfcan_tf.export``), so it is imported
    here, only when a run folder is opened with a non-Keras backend.
    """
    from dfcan_tf.export.records import check_recorded_export
    from dfcan_tf.export.run import default_output, export_run
    from dfcan_tf.runs import weights_path

    weights_path(path, which)  # validates ``which``
    artefact = default_output(path, backend)
    if not artefact.exists() and not artefact.is_symlink():
        export_run(path, artefact, backend, which=which)
    check_recorded_export(path, artefact, backend, which)
    return artefact


def load_backend(path_or_run: Any, backend: str = "keras", *, threads: int | None = None,
                 which: str = "best", spectrum: str | None = None) -> Backend:
    """Open a network for inference with ``backend``.

    Parameters
    ----------
    path_or_run
        A run folder (or :class:`dfcan_tf.runs.Run`), or an exported artefact
        (``.onnx`` file, ``.tflite`` file, SavedModel folder). With a run
        folder and backend ``"onnx"``/``"tflite"``/``"saved_model"``, the
        run's default export (``RUN/export/model.onnx``, ``.tflite``,
        ``model/``) is used, exported (and verified) first if missing. An
        existing one is used only if export's record of it (see
        :func:`dfcan_tf.export.records.check_recorded_export`) matches the
        current weights and the artefact on disk; otherwise
        :class:`DfcanError` says to re-export.
    backend
        One of :data:`BACKENDS`: ``"keras"``, ``"onnx"``, ``"tflite"`` (LiteRT)
        or ``"saved_model"``.
    threads
        Intra-op threads for onnxruntime / LiteRT (their default when None).
    which
        ``"best"`` or ``"last"`` weights of a run folder.
    spectrum
        Keras only, networks with Fourier attention: ``"fft"`` or ``"dft"`` to
        override how the spectrum is computed (same weights); default: as the
        run was trained.

    Returns
    -------
    Backend
        Callable ``f(batch NHWC float32) -> NHWC``.
    """
    from dfcan_tf.runs import Run

    if backend not in BACKENDS:
        raise DfcanError(f"backend must be one of {BACKENDS}. Received: backend={backend!r}")
    check_threads(threads)
    if isinstance(path_or_run, Run):
        if backend == "keras":
            cfg = path_or_run.model_config
            return Backend("keras", Path(path_or_run.path), compiled(path_or_run.model, cfg.input_channels),
                           cfg.input_channels, cfg.scale)
        path_or_run = path_or_run.path
    path = Path(path_or_run)
    if not path.exists():
        raise DfcanError(f"{path}: no such run folder or exported model")
    channels = scale = None
    if is_run_folder(path):
        from dfcan_tf.runs import load_run, read_run_config

        _, cfg = read_run_config(path)
        channels, scale = cfg.input_channels, cfg.scale
        if backend == "keras":
            run = load_run(path, which, spectrum=spectrum)
            return Backend("keras", path, compiled(run.model, channels), channels, scale)
        path = _run_folder_artefact(path, backend, which)
    elif backend == "keras":
        raise DfcanError(f"{path}: the keras backend needs a run folder (config.json + weights/)")
    if backend == "onnx":
        if path.suffix != ".onnx":
            raise DfcanError(f"{path}: the onnx backend needs a .onnx file or a run folder")
        runner = onnx_runner(path, threads)
        channels = channels or onnx_channels(path)
    elif backend == "tflite":
        if path.suffix != ".tflite":
            raise DfcanError(f"{path}: the tflite backend needs a .tflite file or a run folder")
        runner = tflite_runner(path, threads)
    else:
        runner = saved_model_runner(path)
    return Backend(backend, path, runner, channels, scale)
