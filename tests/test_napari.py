"""dfcan_tf.napari: the dock widget under Xvfb (pytest-xvfb), against ``predict_image`` and ``dfcan predict``.

napari is installed by ``make test`` (the ``napari`` extra); without it this
module fails on import instead of being skipped.
"""

from __future__ import annotations

import atexit
import hashlib
import os
import subprocess
import sys
from pathlib import Path

import keras
import napari  # noqa: F401 -- fails (not skips) when the napari extra is missing
import numpy as np
import pytest

from dfcan_tf.errors import DfcanError
from dfcan_tf.evaluation.qc import forward_consistency
from dfcan_tf.inference.predict import predict_image, resolve_run
from dfcan_tf.napari import _core
from dfcan_tf.napari.widget import DfcanWidget
from dfcan_tf.nets import registry
from dfcan_tf.nets.dfcan import DFCANConfig
from dfcan_tf.runs import write_run


class _SkipStaticDestructorsAtExit:
    """End the pytest process with ``os._exit(status)`` once pytest is done.

    TensorFlow's ``libtensorflow_framework.so.2`` carries LLVM, and so does
    Mesa's OpenGL driver that napari's canvas loads under Xvfb; at exit both
    destroy the same ``llvm::cl::opt`` globals and glibc aborts
    (``free(): invalid pointer``, exit code 134) after every test passed.
    Skipping C++ static destructors keeps pytest's own exit status. xdist
    workers (``make test``) exit their own way and are left alone.
    """

    def __init__(self) -> None:
        self.status = 0

    @pytest.hookimpl(trylast=True)
    def pytest_sessionfinish(self, session, exitstatus) -> None:
        self.status = int(exitstatus)

    def pytest_unconfigure(self, config) -> None:
        atexit.register(self._exit)

    def _exit(self) -> None:
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(self.status)


@pytest.fixture(scope="module", autouse=True)
def _exit_without_llvm_clash(request):
    manager = request.config.pluginmanager
    if not hasattr(request.config, "workerinput") and not manager.has_plugin("dfcan-napari-exit"):
        manager.register(_SkipStaticDestructorsAtExit(), "dfcan-napari-exit")
    yield


TINY = {"width": 8, "n_groups": 1, "n_blocks": 1, "size_psc": 16, "reduction": 4}
TIMEOUT_MS = 120_000


def _make_run(path: Path, channels: int, scale: int = 2) -> Path:
    keras.utils.set_random_seed(10 + channels)
    cfg = DFCANConfig.dfcan(channels, scale, **TINY)
    data = {"task": "sim" if channels > 1 else "sisr", "input_channels": channels, "scale": scale,
            "normalization": "minmax", "pixel_size_nm": 62.6}
    return write_run(path, registry.build(cfg), cfg, data=data)


@pytest.fixture(scope="module")
def sisr_run(tmp_path_factory):
    return _make_run(tmp_path_factory.mktemp("runs") / "sisr", 1)


@pytest.fixture(scope="module")
def sim_run(tmp_path_factory):
    return _make_run(tmp_path_factory.mktemp("runs") / "sim", 9)


def _tree_hash(folder: Path) -> dict[str, str]:
    return {str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(folder.rglob("*")) if p.is_file()}


def _scene(n: int, seed: int) -> np.ndarray:
    """A noisy wide-field-like image: blurred random points plus background, Poisson counts."""
    from scipy import ndimage

    rng = np.random.default_rng(seed)
    obj = np.zeros((n, n))
    obj[rng.integers(0, n, 40), rng.integers(0, n, 40)] = 400.0
    return rng.poisson(ndimage.gaussian_filter(obj, 1.5) + 20.0).astype(np.uint16)


def _run_widget(qtbot, widget: DfcanWidget):
    worker = widget.run()
    assert worker is not None, widget.status.value
    with qtbot.waitSignal(worker.finished, timeout=TIMEOUT_MS):
        worker.start()
    return worker


def _widget(make_napari_viewer, qtbot, run_dir: Path) -> tuple[object, DfcanWidget]:
    viewer = make_napari_viewer()
    widget = DfcanWidget(viewer)
    viewer.window.add_dock_widget(widget, name="dfcan")
    widget.source.value = "run folder"
    widget.run_dir.value = run_dir
    return viewer, widget


def test_widget_predicts_tiled_layer_like_predict_image(make_napari_viewer, qtbot, sisr_run):
    viewer, widget = _widget(make_napari_viewer, qtbot, sisr_run)
    before = _tree_hash(sisr_run)
    img = _scene(64, 1)
    layer = viewer.add_image(img, name="wf", scale=(0.5, 0.25), translate=(3.0, 1.0))
    assert widget.layer.value is layer  # the new layer is offered
    widget.tile_size.value = 32
    widget.qc.value = True
    _run_widget(qtbot, widget)
    assert widget.status.value.startswith("done"), widget.status.value

    names = [ly.name for ly in viewer.layers]
    assert names == ["wf", "wf sisr x2", "wf QC (noise units)"]
    result, qc = viewer.layers["wf sisr x2"], viewer.layers["wf QC (noise units)"]
    assert result.data.shape == (128, 128)
    np.testing.assert_allclose(result.scale, (0.25, 0.125))
    # fine pixels tile the coarse ones: pixel 0 covers [-0.5, 0.5) coarse pixels → its centre at -0.25
    np.testing.assert_allclose(result.translate, (3.0 - 0.25 * 0.5, 1.0 - 0.25 * 0.25))

    resolved = resolve_run(sisr_run, "keras", "best")
    expected = predict_image(resolved.model, img, scale=2, tile_size=32, config=resolved.config)
    np.testing.assert_allclose(result.data, expected, atol=1e-5)
    assert float(result.data.min()) == 0.0 and float(result.data.max()) == 1.0

    # progress: one step per tile, 4 tiles of 32 px on a 64 px image with the measured overlap
    assert widget.progress.max == _core.count_calls(_core.load_model("run folder", sisr_run), (64, 64), 1, 32) > 1
    assert widget.progress.value == widget.progress.max

    z = forward_consistency(expected, img, scale=2).z_sr
    assert qc.data.shape == (128, 128)
    np.testing.assert_allclose(qc.data, z, atol=1e-4)
    np.testing.assert_allclose(qc.scale, result.scale)
    assert widget.last_scores and 0.0 <= widget.last_scores[0]["fraction_above_k"] <= 1.0
    assert _tree_hash(sisr_run) == before  # the run folder is only read


def test_widget_matches_dfcan_predict_on_a_time_lapse(make_napari_viewer, qtbot, sisr_run, tmp_path):
    from dfcan_tf import cli
    from dfcan_tf.data.files import read_tiff, write_tiff

    viewer, widget = _widget(make_napari_viewer, qtbot, sisr_run)
    stack = np.stack([_scene(40, 2), _scene(40, 3)])
    viewer.add_image(stack, name="movie", scale=(2.0, 0.1, 0.1))
    _run_widget(qtbot, widget)
    result = viewer.layers["movie sisr x2"]
    assert result.data.shape == (2, 80, 80)
    np.testing.assert_allclose(result.scale, (2.0, 0.05, 0.05))

    write_tiff(tmp_path / "in" / "movie.tif", stack)
    # the widget shows each frame stretched to [0, 1], as `dfcan predict --intensity stretch` writes it
    assert cli.main(["predict", str(sisr_run), str(tmp_path / "in"), "-o", str(tmp_path / "out"), "--no-progress",
                     "--dtype", "float32", "--intensity", "stretch"]) == 0
    written, _ = read_tiff(tmp_path / "out" / "movie.tif")
    np.testing.assert_allclose(result.data, written.reshape(result.data.shape), atol=1e-5)


def test_widget_onnx_file_matches_keras(make_napari_viewer, qtbot, sisr_run, tmp_path):
    onnx_path = tmp_path / "exported" / "tiny.onnx"
    # The export runs in a child process: its graph conversion initialises TensorFlow's LLVM-based passes, which
    # crash in a process where napari's canvas has already loaded Mesa's LLVM (docs/napari.md).
    child = "import sys; from dfcan_tf import cli; sys.exit(cli.main(sys.argv[1:]))"
    export = subprocess.run([sys.executable, "-c", child, "export", str(sisr_run), "--format", "onnx",
                             "-o", str(onnx_path)], capture_output=True, text=True, timeout=600)
    assert export.returncode == 0, export.stderr[-3000:]
    viewer, widget = _widget(make_napari_viewer, qtbot, sisr_run)
    widget.source.value = "ONNX file"
    widget.onnx_file.value = onnx_path
    img = _scene(48, 6)
    viewer.add_image(img, name="wf")
    _run_widget(qtbot, widget)
    result = viewer.layers["wf tiny x2"]  # scale 2 and normalisation read from the ONNX metadata
    assert result.data.shape == (96, 96)
    np.testing.assert_allclose(result.scale, (0.5, 0.5))
    resolved = resolve_run(sisr_run, "keras", "best")
    np.testing.assert_allclose(result.data, predict_image(resolved.model, img, scale=2, config=resolved.config),
                               atol=1e-5)


def test_widget_sim_stack_with_reconstruction(make_napari_viewer, qtbot, sim_run):
    from dfcan_tf.data.simulate import simulate_cell
    from dfcan_tf.sim import reconstruct_linear

    viewer, widget = _widget(make_napari_viewer, qtbot, sim_run)
    cell = simulate_cell("Microtubules", size=48, n_levels=1, seed=4)
    frames = cell.raw_gt
    assert frames.shape[0] == 9
    viewer.add_image(frames, name="raw", scale=(1.0, 0.0626, 0.0626))
    widget.sim.value = True
    _run_widget(qtbot, widget)
    assert widget.status.value.startswith("done"), widget.status.value
    result, sim = viewer.layers["raw sim x2"], viewer.layers["raw SIM x2"]
    n = frames.shape[-1]
    assert result.data.shape == sim.data.shape == (2 * n, 2 * n)
    np.testing.assert_allclose(result.scale, (0.0313, 0.0313))
    resolved = resolve_run(sim_run, "keras", "best")
    np.testing.assert_allclose(result.data, predict_image(resolved.model, frames, scale=2, config=resolved.config),
                               atol=1e-5)
    expected_sim, _ = reconstruct_linear(frames.astype(np.float64), pixel_nm=62.6, na=1.3, emission_nm=525.0)
    np.testing.assert_allclose(sim.data, expected_sim, rtol=1e-5, atol=1e-5 * float(np.max(expected_sim)))


def test_widget_reports_mismatch_and_missing_inputs(make_napari_viewer, qtbot, sim_run, tmp_path):
    viewer, widget = _widget(make_napari_viewer, qtbot, sim_run)
    assert widget.run() is None and "no image layer" in widget.status.value
    viewer.add_image(_scene(32, 5), name="wf")
    _run_widget(qtbot, widget)
    assert "single 2-D image but the model takes 9 raw SIM frames" in widget.status.value
    assert [ly.name for ly in viewer.layers] == ["wf"]
    widget.layer.value = viewer.add_image(np.stack([_scene(32, s) for s in range(5)]), name="five")
    _run_widget(qtbot, widget)
    assert "5 frames along its first axis, which do not split into groups of 9" in widget.status.value
    assert widget.button.enabled  # ready for another try

    widget.run_dir.value = tmp_path
    _run_widget(qtbot, widget)
    assert "not a run folder" in widget.status.value and str(tmp_path) in widget.status.value
    widget.source.value = "ONNX file"
    widget.onnx_file.value = tmp_path / "model.onnx"
    _run_widget(qtbot, widget)
    assert "not an .onnx file" in widget.status.value
    assert [ly.name for ly in viewer.layers] == ["wf", "five"]


def test_output_geometry_and_grouping():
    scale, translate = _core.output_geometry((1.0, 1.0), (0.0, 0.0), 3, stacked=False)
    assert scale == (1 / 3, 1 / 3) and translate == pytest.approx((-1 / 3, -1 / 3))
    scale, translate = _core.output_geometry((1.0, 1.0), (0.0, 0.0), 2, stacked=True)
    assert scale == (1.0, 0.5, 0.5) and translate == (0.0, -0.25, -0.25)
    groups, single = _core.group_frames(np.zeros((18, 16, 16)), 9, "x")
    assert groups.shape == (2, 9, 16, 16) and not single
    groups, single = _core.group_frames(np.zeros((25, 16, 16)), 25, "x")
    assert groups.shape == (1, 25, 16, 16) and single
    with pytest.raises(DfcanError, match="4 dimensions"):
        _core.group_frames(np.zeros((2, 9, 16, 16)), 9, "x")
