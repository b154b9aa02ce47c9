"""Exports match Keras: ONNX and TFLite (LiteRT) for DFCAN and the DFGAN generator, SISR (1 channel)
and SIM (9 channels), at two sizes (one not a power of two), and for another registered network (EDSR);
the ONNX example runs without TensorFlow; bad run folders fail with a clear message and leave nothing
behind; failed verification writes nothing.
"""

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from dfcan_tf import cli, safety
from dfcan_tf.errors import DfcanError
from dfcan_tf.export import verify as V
from dfcan_tf.export.run import export_run
from dfcan_tf.inference import backends as B
from dfcan_tf.nets import registry
from dfcan_tf.nets.dfcan import DFCANConfig
from dfcan_tf.runs import load_run, write_run
from dfcan_tf.safety import PART_PREFIX

ROOT = Path(__file__).resolve().parents[1]
TINY = {"width": 8, "n_groups": 1, "n_blocks": 1, "size_psc": 16, "reduction": 4}
SIZES = (32, 45)  # 45: not a power of two; both above size_psc, so the spectrum resize samples
TOL = 1e-4

CASES = {
    "dfcan_sisr": DFCANConfig.dfcan(1, 2, **TINY),
    "dfcan_sim": DFCANConfig.dfcan(9, 2, **TINY),
    "dfgan_sisr": DFCANConfig.dfgan_generator(1, 2, **TINY),
    "dfgan_sim": DFCANConfig.dfgan_generator(9, 2, **TINY),
}


def _make_run(path: Path, cfg: DFCANConfig, seed: int = 0, perturb: float = 0.2) -> Path:
    import keras

    keras.utils.set_random_seed(seed)
    model = registry.build(cfg)
    # Tiny nets: larger weights than the default init, so the Fourier branch visibly moves the
    # output (in a full-size net this would overflow float32; keep perturb=0 there).
    rng = np.random.default_rng(seed)
    model.set_weights([w + rng.normal(0, perturb, w.shape).astype(np.float32) for w in model.get_weights()])
    return write_run(path, model, cfg, data={"task": "sim" if cfg.input_channels > 1 else "sisr",
                                              "normalization": "minmax", "pixel_size_nm": 62.6})


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    base = tmp_path_factory.mktemp("runs")
    return {name: _make_run(base / name, cfg, seed=i) for i, (name, cfg) in enumerate(CASES.items())}


def _inputs(channels: int, rng):
    for h, w in ((SIZES[0], SIZES[0]), (SIZES[1], SIZES[1]), (SIZES[1], SIZES[0])):
        yield rng.random((2, h, w, channels), dtype=np.float32)
    yield V.simulated_image((SIZES[1], SIZES[1]), channels, seed=3)[None]


@pytest.mark.parametrize("fmt", ["onnx", "tflite"])
@pytest.mark.parametrize("case", list(CASES))
def test_export_matches_keras(runs, case, fmt, tmp_path, rng):
    run_dir = runs[case]
    out = tmp_path / f"model.{fmt}"
    result = export_run(run_dir, out, fmt, sizes=SIZES)
    assert out.is_file() and result.path == out
    assert len(result.checks) == 4 and result.max_abs_diff <= TOL
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".part")]

    reference = load_run(run_dir).model  # the run's own network (FFT spectrum)
    backend = B.load_backend(out, fmt, threads=2)
    channels = CASES[case].input_channels
    for x in _inputs(channels, rng):
        want = reference(x).numpy()
        got = backend(x)
        assert got.shape == (x.shape[0], 2 * x.shape[1], 2 * x.shape[2], 1)
        assert np.max(np.abs(got - want)) <= TOL
        assert want.std() > 1e-3  # a non-trivial output, so parity means something


def test_onnx_graph_is_portable(runs, tmp_path):
    import onnx

    out = export_run(runs["dfcan_sisr"], tmp_path / "m.onnx", "onnx", sizes=SIZES, opset=18).path
    model = onnx.load(str(out))
    assert model.opset_import[0].version == 18
    ops = {n.op_type for n in model.graph.node}
    assert not ops & {"DFT", "Erfc"} and all(n.domain in ("", "ai.onnx") for n in model.graph.node)
    dims = [d.dim_param or d.dim_value for d in model.graph.input[0].type.tensor_type.shape.dim]
    assert [isinstance(d, str) for d in dims] == [True, True, True, False] and dims[3] == 1
    assert [model.graph.input[0].name, model.graph.output[0].name] == ["input", "output"]
    meta = json.loads({p.key: p.value for p in model.metadata_props}["dfcan_tf.config"])
    assert meta["model"]["scale"] == 2 and meta["model"]["architecture"] == "dfcan"


def test_tflite_uses_builtin_ops_only(runs, tmp_path):
    from ai_edge_litert.interpreter import Interpreter

    out = export_run(runs["dfcan_sim"], tmp_path / "m.tflite", "tflite", sizes=SIZES).path
    interpreter = Interpreter(model_path=str(out))
    ops = {d["op_name"] for d in interpreter._get_ops_details()}
    assert not [op for op in ops if op.startswith("Flex") or op == "CUSTOM"]
    assert list(interpreter.get_input_details()[0]["shape_signature"]) == [-1, -1, -1, 9]


def test_tflite_fixed_size(runs, tmp_path, rng, capsys):
    out = tmp_path / "fixed.tflite"
    assert cli.main(["export", str(runs["dfcan_sisr"]), "--format", "tflite", "-o", str(out),
                     "--tflite-size", "40"]) == 0
    assert "40x40" in capsys.readouterr().out
    backend = B.load_backend(out, "tflite")
    x = rng.random((1, 40, 40, 1), dtype=np.float32)
    assert np.max(np.abs(backend(x) - load_run(runs["dfcan_sisr"]).model(x).numpy())) <= TOL
    with pytest.raises(DfcanError, match=r"exported for input shape \(1, 40, 40, 1\) only"):
        backend(rng.random((1, 48, 40, 1), dtype=np.float32))


def test_saved_model_matches_keras(runs, tmp_path, rng):
    out = tmp_path / "sm"
    export_run(runs["dfgan_sim"], out, "saved_model", sizes=SIZES)
    backend = B.load_backend(out, "saved_model")
    x = rng.random((1, 37, 29, 9), dtype=np.float32)
    want = load_run(runs["dfgan_sim"]).model(x).numpy()
    assert np.max(np.abs(backend(x) - want)) <= TOL


@pytest.mark.parametrize("fmt", ["onnx", "tflite"])
def test_other_registered_network_exports(fmt, tmp_path, rng):
    """Export is generic over the registry: a tiny EDSR (no Fourier attention, no spectrum twin) exports and
    verifies; the model card's citation and description come from the registry."""
    from dfcan_tf.export.bioimageio import citation

    cfg = registry.make_config("edsr", 1, 2, width=8, n_blocks=1)
    run_dir = _make_run(tmp_path / "edsr", cfg, seed=3, perturb=0.05)
    out = tmp_path / f"m.{fmt}"
    result = export_run(run_dir, out, fmt, sizes=SIZES)
    assert out.is_file() and len(result.checks) == 4 and result.max_abs_diff <= TOL
    x = rng.random((1, 29, 37, 1), dtype=np.float32)
    want = load_run(run_dir).model(x).numpy()
    assert np.max(np.abs(B.load_backend(out, fmt)(x) - want)) <= TOL and want.std() > 1e-3
    assert V.open_run(run_dir).twin() is None
    cite = citation(cfg)
    assert cite["doi"] == "10.1109/CVPRW.2017.151" and "Enhanced Deep Residual Networks" in cite["text"]


def test_onnx_example_runs_without_tensorflow(runs, tmp_path, rng):
    """export/onnx_predict.py in a fresh interpreter: TensorFlow is never imported."""
    import tifffile

    model = export_run(runs["dfgan_sim"], tmp_path / "m.onnx", "onnx", sizes=SIZES).path
    raw = (rng.random((9, 40, 33)) * 3000 + 200).astype(np.uint16)  # a raw SIM stack, frames first
    tifffile.imwrite(tmp_path / "in.tif", raw)
    code = f"""
import sys
sys.path.insert(0, {str(ROOT / 'export')!r})
import numpy as np, tifffile, onnx_predict
session = onnx_predict.load({str(model)!r}, threads=1)
np.save({str(tmp_path / 'y.npy')!r}, onnx_predict.predict(session, tifffile.imread({str(tmp_path / 'in.tif')!r})))
assert onnx_predict.model_config(session)["model"]["input_channels"] == 9
assert onnx_predict.main([{str(model)!r}, {str(tmp_path / 'in.tif')!r}, {str(tmp_path / 'out.tif')!r}]) == 0
assert "tensorflow" not in sys.modules and "keras" not in sys.modules, "TensorFlow was imported"
"""
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120, check=False)
    assert proc.returncode == 0, proc.stderr[-2000:]
    x = np.moveaxis(raw.astype(np.float32), 0, -1)
    x = ((x - x.min()) / (x.max() - x.min()))[None]
    want = load_run(runs["dfgan_sim"]).model(x).numpy()[0, ..., 0]
    assert np.max(np.abs(np.load(tmp_path / "y.npy") - want)) <= TOL
    out = tifffile.imread(tmp_path / "out.tif")
    assert out.shape == (80, 66) and out.dtype == np.uint16 and out.max() == 65535 and out.min() == 0


def test_litert_example(runs, tmp_path, rng):
    sys.path.insert(0, str(ROOT / "export"))
    try:
        import litert_predict
    finally:
        sys.path.remove(str(ROOT / "export"))
    import tifffile

    model = export_run(runs["dfcan_sisr"], tmp_path / "m.tflite", "tflite", sizes=SIZES).path
    image = (rng.random((30, 51)) * 1000).astype(np.float32)
    interpreter = litert_predict.load(str(model), threads=1)
    y = litert_predict.predict(interpreter, image)
    x = ((image - image.min()) / (image.max() - image.min()))[None, ..., None]
    want = load_run(runs["dfcan_sisr"]).model(x).numpy()[0, ..., 0]
    assert np.max(np.abs(y - want)) <= TOL
    tifffile.imwrite(tmp_path / "in.tif", image)
    assert litert_predict.main([str(model), str(tmp_path / "in.tif"), str(tmp_path / "o.tif"), "--float32"]) == 0
    assert np.max(np.abs(tifffile.imread(tmp_path / "o.tif") - want)) <= TOL


def test_load_backend_from_run_folder(runs, rng):
    run_dir = runs["dfcan_sisr"]
    x = rng.random((1, 24, 35, 1), dtype=np.float32)
    outputs = {b: B.load_backend(run_dir, b, threads=1)(x) for b in ("keras", "onnx", "tflite")}
    assert (run_dir / "export" / "model.onnx").is_file() and (run_dir / "export" / "model.tflite").is_file()
    for b in ("onnx", "tflite"):
        assert np.max(np.abs(outputs[b] - outputs["keras"])) <= TOL
    with pytest.raises(DfcanError, match=r"takes 1 channel\(s\)"):
        B.load_backend(run_dir, "onnx")(rng.random((1, 24, 24, 9), dtype=np.float32))
    with pytest.raises(DfcanError, match="backend must be one of"):
        B.load_backend(run_dir, "torch")


def test_failed_verification_leaves_nothing(runs, tmp_path, monkeypatch):
    real = V.keras_reference
    monkeypatch.setattr(V, "keras_reference", lambda model: (lambda x: real(model)(x) + 1e-3))
    for fmt, name in (("onnx", "m.onnx"), ("tflite", "m.tflite"), ("saved_model", "sm")):
        with pytest.raises(DfcanError, match=r"does not match Keras.*nothing was written \(for scale: Keras with"):
            export_run(runs["dfcan_sisr"], tmp_path / name, fmt, sizes=SIZES)
    assert list(tmp_path.iterdir()) == []


def _corrupt_cases(base: Path, good: Path):
    import shutil

    missing = base / "missing"
    bad_json = base / "bad_json"
    shutil.copytree(good, bad_json)
    (bad_json / "config.json").write_text("{ not json")
    wrong_arch = base / "wrong_arch"
    shutil.copytree(good, wrong_arch)
    doc = json.loads((wrong_arch / "config.json").read_text())
    doc["model"]["width"] = 16  # weights were saved for width 8
    (wrong_arch / "config.json").write_text(json.dumps(doc))
    truncated = base / "truncated"
    shutil.copytree(good, truncated)
    for w in (truncated / "weights").iterdir():
        w.write_bytes(w.read_bytes()[:500])
    no_weights = base / "no_weights"
    shutil.copytree(good, no_weights)
    shutil.rmtree(no_weights / "weights")
    return [(missing, "run folder not found"), (bad_json, "config.json: not valid JSON"),
            (wrong_arch, "cannot load weights"), (truncated, "cannot load weights"),
            (no_weights, "no weights found")]


def test_cli_export_of_bad_run_folder_fails_clearly(runs, tmp_path, capsys):
    for run_dir, message in _corrupt_cases(tmp_path, runs["dfcan_sisr"]):
        out = tmp_path / f"{run_dir.name}.onnx"
        status = cli.main(["export", str(run_dir), "--format", "onnx", "-o", str(out)])
        err = capsys.readouterr().err
        assert status == 2, run_dir
        assert err.startswith("dfcan export: error: ") and message in err and str(run_dir.name) in err
        assert "Traceback" not in err and not out.exists()
    assert not list(tmp_path.glob("**/.part*"))


def test_cli_export_writes_and_reports(runs, tmp_path, capsys):
    out = tmp_path / "cli.tflite"
    status = cli.main(["export", str(runs["dfgan_sisr"]), "--format", "tflite", "-o", str(out),
                       "--verify-sizes", "32", "45"])
    assert status == 0 and out.is_file()
    assert "max |artefact - keras|" in capsys.readouterr().out
    assert cli.main(["export", str(runs["dfgan_sisr"]), "--verify-sizes", "32"]) == 2
    assert "two sizes" in capsys.readouterr().err


def _analytic_flops(c, height: int, width: int) -> float:
    """The FLOPs of a DFCAN as the sampled-DFT graph computes them, written out by hand (the count the
    export module used to print): convolutions (head, 2 per FCAB, attention convs at size_psc², upsampling
    and output convs) plus per FCAB the two DFT matmul stages, (2K, W)·(W, C) per row and
    (2·M_h, H)·(H, 2K·C), with K the distinct folded column frequencies and M_h = min(H, 2·size_psc)."""
    import tensorflow as tf

    from dfcan_tf.nets.layers import _sample_plan

    hw, s = height * width, c.size_psc
    conv = 2 * hw * 9 * c.input_channels * c.width
    per_block = 2 * (2 * hw * 9 * c.width * c.width)
    attention = 2 * s * s * 9 * c.width * c.width + 2 * 2 * c.width * (c.width // c.reduction)
    fw = _sample_plan(tf.constant(width), s)[0].numpy()
    k = len(np.unique(np.minimum(fw, width - fw)))
    m_h = min(height, 2 * s)
    dft = 2 * c.width * height * width * 2 * k + 2 * c.width * 2 * m_h * height * 2 * k
    n = c.n_groups * c.n_blocks
    conv += n * (per_block + attention)
    conv += 2 * hw * 9 * c.width * c.width * c.scale**2 + 2 * hw * c.scale**2 * 9 * c.width
    return float(conv + n * dft)


def test_count_flops_matches_tensorflow_profiler():
    """Convolutions: the package's one FLOP counter equals TF's own profiler count on the graph."""
    import tensorflow as tf

    from dfcan_tf.benchmark.flops import count_flops

    cfg = DFCANConfig.dfcan(1, 2, **TINY).replace(spectrum="dft")
    model = registry.build(cfg)
    h, w = 40, 45
    fn = tf.function(lambda x: model(x, training=False))
    graph = fn.get_concrete_function(tf.TensorSpec((1, h, w, 1), tf.float32)).graph
    opts = (tf.compat.v1.profiler.ProfileOptionBuilder(tf.compat.v1.profiler.ProfileOptionBuilder.float_operation())
            .with_empty_output().build())
    opts["account_type_regexes"] = ["Conv2D"]
    prof = tf.compat.v1.profiler.profile(graph, options=opts)
    flops = count_flops(cfg, h, w)
    assert abs(prof.total_float_ops - flops["conv"]) / flops["conv"] < 0.01


def test_count_flops_of_full_dfcan_at_502_matches_the_analytic_count():
    """benchmark_backends' FLOPs (dfcan_tf.benchmark.flops, read off the graph) equal the hand count of the
    paper's DFCAN with the sampled-DFT spectrum at 502² within 1% (960.7 GFLOP; 130 of 256 W folded)."""
    from dfcan_tf.benchmark.flops import count_flops

    cfg = DFCANConfig.dfcan(1, 2).replace(spectrum="dft")
    want = _analytic_flops(cfg, 502, 502)
    assert 955e9 < want < 965e9
    assert abs(count_flops(cfg, 502, 502)["total"] - want) / want < 0.01


def test_benchmark_backends_quick(capsys):
    import argparse

    from dfcan_tf.benchmark.backends import benchmark_backends

    rows = benchmark_backends(argparse.Namespace(quick=True, threads=2), sgemm=100.0)
    assert {r["backend"] for r in rows} >= {"keras", "onnxruntime", "litert"} and {r["size"] for r in rows} == {64, 96}
    assert all(r["seconds"] > 0 and r["gflop"] > 0 and r["max_abs_diff"] <= TOL for r in rows)
    out = capsys.readouterr().out
    assert "/sgemm" in out and "fastest at 96x96" in out


@pytest.mark.slow
def test_full_size_dfcan_exports_match_at_502(tmp_path):
    """The paper's DFCAN (random weights): ONNX and TFLite match Keras up to the authors' 502×502 input."""
    cfg = DFCANConfig.dfcan(1, 2)
    run_dir = _make_run(tmp_path / "run", cfg, perturb=0.0)
    onnx_result = export_run(run_dir, tmp_path / "m.onnx", "onnx", sizes=(96, 257))
    tflite_result = export_run(run_dir, tmp_path / "m.tflite", "tflite", sizes=(128, 502))
    assert max(onnx_result.max_abs_diff, tflite_result.max_abs_diff) <= TOL


# --------------------------------------------------------------------------------------------
# the user's files, the run folder, and which artefacts may be loaded
# --------------------------------------------------------------------------------------------

def _hashes(folder: Path) -> dict[str, str]:
    """Relative path -> SHA-256 of every file under ``folder``."""
    import hashlib

    return {str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(folder.rglob("*")) if p.is_file()}


@pytest.fixture
def own_run(tmp_path):
    """A tiny SISR run of this test's own (tests below change its weights and its export folder)."""
    return _make_run(tmp_path / "run", CASES["dfcan_sisr"], seed=7)


def _export(run_dir, *args) -> list[str]:
    return ["export", str(run_dir), "--verify-sizes", *map(str, SIZES), *map(str, args)]


def _refused(capsys, *words) -> str:
    err = capsys.readouterr().err
    assert err.startswith("dfcan export: error: ") and "Traceback" not in err, err
    for w in words:
        assert str(w) in err, (w, err)
    return err


def test_an_existing_folder_is_never_replaced_by_a_file(runs, tmp_path, capsys):
    """`dfcan export RUN --format onnx -o FOLDER` used to replace the folder by the .onnx file."""
    for name in ("results", "results.onnx"):
        folder = tmp_path / name
        (folder / "sub").mkdir(parents=True)
        (folder / "sub" / "data.tif").write_bytes(b"precious")
        before = _hashes(folder)
        for extra in ([], ["--overwrite"]):
            assert cli.main(_export(runs["dfcan_sisr"], "--format", "onnx", "-o", folder, *extra)) == 2
            err = _refused(capsys, folder)
            assert "existing folder" in err or "ending in .onnx" in err
            assert _hashes(folder) == before
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".part")]


@pytest.mark.parametrize("fmt", ["tflite", "saved_model"])
def test_the_run_folder_is_never_an_output(own_run, fmt, capsys):
    """`dfcan export RUN --format tflite -o RUN` would have replaced the run; so would its parent or its files."""
    before = _hashes(own_run.parent)
    suffix = ".tflite" if fmt == "tflite" else ""
    for out in (own_run, own_run.parent, own_run / "weights" / f"best{suffix}", own_run / f"model{suffix}",
                own_run / "export", own_run / "config.json", own_run / "weights"):
        assert cli.main(_export(own_run, "--format", fmt, "-o", out, "--overwrite")) == 2, out
        _refused(capsys, out)
        assert _hashes(own_run.parent) == before
    assert cli.main(_export(own_run, "--format", "saved_model", "-o", own_run, "--overwrite")) == 2
    assert "holds the run folder" in _refused(capsys, own_run)


def test_overwrite_replaces_only_exports_own_output(own_run, tmp_path, capsys):
    out = tmp_path / "m.onnx"
    assert cli.main(_export(own_run, "-o", out)) == 0
    first = out.read_bytes()
    assert cli.main(_export(own_run, "-o", out)) == 2
    _refused(capsys, out, "--overwrite")
    assert cli.main(_export(own_run, "-o", out, "--overwrite", "--opset", "18")) == 0
    assert out.read_bytes() != first  # replaced (opset 18)
    # a file export did not write: never replaced, even with --overwrite
    foreign = tmp_path / "theirs.onnx"
    foreign.write_bytes(b"someone's model")
    assert cli.main(_export(own_run, "-o", foreign, "--overwrite")) == 2
    _refused(capsys, foreign, "not written by 'dfcan export'")
    assert foreign.read_bytes() == b"someone's model"
    # SavedModel folders: replaced only when export's marker is in them
    sm = tmp_path / "sm"
    assert cli.main(_export(own_run, "--format", "saved_model", "-o", sm)) == 0
    assert json.loads((sm / ".dfcan-output.json").read_text())["command"] == "export"
    assert cli.main(_export(own_run, "--format", "saved_model", "-o", sm, "--overwrite")) == 0
    other = tmp_path / "other_sm"
    (other / "variables").mkdir(parents=True)
    (other / "saved_model.pb").write_bytes(b"pb")
    before = _hashes(other)
    assert cli.main(_export(own_run, "--format", "saved_model", "-o", other, "--overwrite")) == 2
    _refused(capsys, other)
    assert _hashes(other) == before
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".part")]


def test_every_export_is_recorded_with_checksums_and_verification(own_run, tmp_path):
    import hashlib

    from dfcan_tf import safety

    result = export_run(own_run, tmp_path / "m.tflite", "tflite", sizes=SIZES)
    entry = safety.output_record(result.path)
    weights = own_run / "weights" / "best.weights.h5"
    assert entry["command"] == "export" and entry["format"] == "tflite"
    assert entry["weights_file"] == "weights/best.weights.h5"
    assert entry["weights_sha256"] == hashlib.sha256(weights.read_bytes()).hexdigest()
    assert entry["sha256"] == hashlib.sha256(result.path.read_bytes()).hexdigest() == result.extra["sha256"]
    v = entry["verification"]
    assert v["passed"] is True and v["tolerance"] == TOL and v["max_abs_diff"] == pytest.approx(result.max_abs_diff)
    assert 0 <= v["max_abs_diff"] <= TOL and len(v["checks"]) == 4
    # the default output's record lives in the run folder
    export_run(own_run, None, "onnx", sizes=SIZES)
    assert safety.output_record(own_run / "export" / "model.onnx")["format"] == "onnx"
    assert (own_run / "export" / safety.MANIFEST).is_file()


def test_load_backend_runs_only_recorded_current_artefacts(own_run, runs, tmp_path, rng, monkeypatch, capsys):
    import shutil

    from dfcan_tf import safety

    x = rng.random((1, 24, 24, 1), dtype=np.float32)
    export_dir = own_run / "export"
    # 1. a SavedModel planted in RUN/export (here: another run's, verified there) is never loaded
    planted = export_run(runs["dfgan_sisr"], tmp_path / "elsewhere" / "model", "saved_model", sizes=SIZES).path
    shutil.copytree(planted, export_dir / "model")
    monkeypatch.setattr(B, "saved_model_runner", lambda path: pytest.fail(f"loaded the planted {path}"))
    with pytest.raises(DfcanError, match="not recorded as a verified 'saved_model' export"):
        B.load_backend(own_run, "saved_model")
    monkeypatch.undo()
    # 2. another run's ONNX, with or without its record: refused
    other = export_run(runs["dfcan_sisr"], tmp_path / "other" / "model.onnx", "onnx", sizes=SIZES).path
    shutil.copy(other, export_dir / "model.onnx")
    with pytest.raises(DfcanError, match="not recorded"):
        B.load_backend(own_run, "onnx")
    shutil.copy(other.parent / safety.MANIFEST, export_dir / safety.MANIFEST)
    with pytest.raises(DfcanError, match=r"stale.*Re-export: dfcan export .* --format onnx"):
        B.load_backend(own_run, "onnx")
    # ... and --overwrite does not replace what this run's export did not write
    (export_dir / safety.MANIFEST).unlink()
    assert cli.main(["export", str(own_run), "--overwrite", "--verify-sizes", "32", "45"]) == 2
    _refused(capsys, export_dir / "model.onnx", "not written by")
    (export_dir / "model.onnx").unlink()
    shutil.rmtree(export_dir / "model")
    # 3. missing: exported (verified and recorded), then used
    want = load_run(own_run).model(x).numpy()
    assert np.max(np.abs(B.load_backend(own_run, "onnx")(x) - want)) <= TOL
    # 4. retrained (the weights file changed): the old export is refused, re-export fixes it
    _make_run(own_run, CASES["dfcan_sisr"], seed=8)
    with pytest.raises(DfcanError, match=r"stale.*best.weights.h5.*--overwrite"):
        B.load_backend(own_run, "onnx")
    assert cli.main(["predict", str(own_run), str(tmp_path / "none.tif"), "-o", str(tmp_path / "p"),
                     "--backend", "onnx"]) == 2
    assert "Traceback" not in capsys.readouterr().err and not (tmp_path / "p").exists()
    assert cli.main(["export", str(own_run), "--overwrite", "--verify-sizes", "32", "45"]) == 0
    want = load_run(own_run).model(x).numpy()
    assert np.max(np.abs(B.load_backend(own_run, "onnx")(x) - want)) <= TOL
    # 5. an artefact edited after export is refused
    with open(export_dir / "model.onnx", "ab") as fh:
        fh.write(b"\0")
    with pytest.raises(DfcanError, match="changed after it was exported"):
        B.load_backend(own_run, "onnx")
    # 6. weights "last" differ from the "best" the export was made from
    export_run(own_run, None, "tflite", sizes=SIZES)
    _make_run(tmp_path / "scratch", CASES["dfcan_sisr"], seed=9)
    shutil.copy(tmp_path / "scratch" / "weights" / "last.weights.h5", own_run / "weights" / "last.weights.h5")
    B.load_backend(own_run, "tflite", which="best")
    with pytest.raises(DfcanError, match="stale"):
        B.load_backend(own_run, "tflite", which="last")


@pytest.mark.parametrize("flags, words", [
    (["--tolerance", "nan"], "--tolerance"),
    (["--tolerance", "inf"], "--tolerance"),
    (["--tolerance", "0"], "--tolerance"),
    (["--tolerance=-1e-4"], "--tolerance"),
    (["--tolerance", "1"], "--tolerance"),
    (["--verify-sizes", "0", "0"], "--verify-sizes 0 0"),
    (["--verify-sizes", "-5", "64"], "--verify-sizes -5 64"),
    (["--verify-sizes", "64", "128"], "not a power of two"),
    (["--verify-sizes", "45", "45"], "two sizes"),
    (["--verify-sizes", "100000", "45"], "--verify-sizes"),
    (["--opset", "5"], "opset"),
    (["--format", "tflite", "--tflite-size", "0"], "--tflite-size"),
    (["--format", "tflite", "--tflite-size", "-3"], "--tflite-size"),
    (["--format", "onnx", "--tflite-size", "64"], "--tflite-size"),
])
def test_bad_numbers_are_clear_errors(runs, tmp_path, flags, words, capsys):
    out = tmp_path / ("m.tflite" if "tflite" in flags else "m.onnx")
    argv = ["export", str(runs["dfcan_sisr"]), "-o", str(out), *flags]
    if "--verify-sizes" not in flags:
        argv += ["--verify-sizes", "32", "45"]
    assert cli.main(argv) == 2
    _refused(capsys, words)
    assert list(tmp_path.iterdir()) == []


def test_bad_threads_are_refused(runs):
    for threads in (0, -2, 1.5):
        with pytest.raises(DfcanError, match="threads"):
            B.load_backend(runs["dfcan_sisr"], "onnx", threads=threads)


def test_nan_weights_are_not_exported(own_run, tmp_path, capsys):
    import keras

    cfg = CASES["dfcan_sisr"]
    model = registry.build(cfg)
    model.load_weights(own_run / "weights" / "best.weights.h5")
    weights = model.get_weights()
    weights[0][0, 0, 0, 0] = np.nan
    model.set_weights(weights)
    keras.utils.set_random_seed(0)
    write_run(own_run, model, cfg)
    before = _hashes(own_run)
    assert cli.main(_export(own_run, "-o", tmp_path / "m.onnx")) == 2
    _refused(capsys, "best.weights.h5", "NaN")
    assert _hashes(own_run) == before and not (tmp_path / "m.onnx").exists()


def test_stale_parts_of_a_killed_export_are_cleaned(own_run, tmp_path):
    import os
    import time

    stale = tmp_path / (PART_PREFIX + "m.onnx-k1ll3d")
    stale.mkdir()
    (stale / "m.onnx").write_bytes(b"half written")
    fresh = tmp_path / (PART_PREFIX + "m.onnx-running")  # a concurrent export's: left alone
    fresh.mkdir()
    old = time.time() - 2 * 3600
    os.utime(stale, (old, old))
    export_run(own_run, tmp_path / "m.onnx", "onnx", sizes=SIZES)
    assert not stale.exists() and fresh.is_dir()


def test_staged_file_never_replaces_a_file_that_appeared_meanwhile(tmp_path):
    """A file output that someone else created while the export ran is left byte-identical and nothing is written;
    a recorded previous export is replaced."""
    target = tmp_path / "m.onnx"
    with pytest.raises(DfcanError, match="appeared while 'dfcan export' ran"):
        with V.staged(target) as tmp:
            tmp.write_bytes(b"new model")
            target.write_bytes(b"the user's file")
    assert target.read_bytes() == b"the user's file"
    assert not list(tmp_path.glob(PART_PREFIX + "*"))
    safety.record_output(target, "export")
    with V.staged(target) as tmp:
        tmp.write_bytes(b"new model")
    assert target.read_bytes() == b"new model"
