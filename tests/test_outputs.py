"""Output paths of simulate, evaluate, demo, predict and benchmark flags: clear refusals, checked before any work.

Every refusal is exit status 2 with a message naming the path, no traceback, the
inputs byte-identical afterwards and nothing half-written. Tests run as root
in CI, where a chmod'ed folder stays writable, so "read-only" is simulated by
making ``os.access`` answer False for that folder (the check the commands use),
on top of the chmod.
"""

from __future__ import annotations

import csv
import hashlib
import os
import shutil
from pathlib import Path

import keras
import numpy as np
import pytest

from dfcan_tf import cli, safety
from dfcan_tf.data.files import write_tiff
from dfcan_tf.data.simulate import simulate_dataset
from dfcan_tf.nets import registry
from dfcan_tf.nets.dfcan import DFCANConfig
from dfcan_tf.runs import write_run

TINY = {"width": 8, "n_groups": 1, "n_blocks": 1, "size_psc": 16, "reduction": 4}
SIM_ARGS = ["--specimens", "Microtubules", "--cells", "1", "--levels", "1", "--size", "32", "--no-progress"]


def _tree(path: Path) -> dict[str, str]:
    """Name -> sha256 of every file (and '<dir>' for folders) under ``path`` (or of ``path`` itself)."""
    path = Path(path)
    if path.is_file():
        return {path.name: hashlib.sha256(path.read_bytes()).hexdigest()}
    out = {}
    for p in sorted(path.rglob("*")):
        out[str(p.relative_to(path))] = hashlib.sha256(p.read_bytes()).hexdigest() if p.is_file() else "<dir>"
    return out


def _read_csv(path: Path) -> list[dict[str, str]]:
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory):
    keras.utils.set_random_seed(11)
    cfg = DFCANConfig.dfcan(1, 2, **TINY)
    return write_run(tmp_path_factory.mktemp("runs") / "sisr", registry.build(cfg), cfg,
                     data={"input_channels": 1, "scale": 2, "normalization": "minmax", "pixel_size_nm": 62.6})


@pytest.fixture(scope="module")
def dataset(tmp_path_factory):
    root = tmp_path_factory.mktemp("data") / "biosr"
    simulate_dataset(root, specimens="Microtubules", cells="36-37", n_levels=2, size=32, progress=False)
    return root


@pytest.fixture
def read_only(monkeypatch):
    """Make folders read-only: chmod 0o555 and ``os.access`` False for them (root ignores the chmod)."""
    folders: list[Path] = []
    real = os.access

    def access(path, mode, *args, **kwargs):
        if mode & os.W_OK and any(Path(path).resolve() == f for f in folders):
            return False
        return real(path, mode, *args, **kwargs)

    monkeypatch.setattr(os, "access", access)

    def make(folder: Path) -> Path:
        folder.mkdir(parents=True, exist_ok=True)
        folder.chmod(0o555)
        folders.append(folder.resolve())
        return folder

    yield make
    for f in folders:
        f.chmod(0o755)


def _refused(argv: list[str], capsys, *names: Path) -> str:
    """Run the CLI, expect exit 2 with a message (no traceback) naming every path in ``names``."""
    status = cli.main(argv)
    err = capsys.readouterr().err
    assert status == 2, err
    assert "Traceback" not in err
    for name in names:
        assert str(name) in err, (name, err)
    return err


# --------------------------------------------------------------------------- simulate


def test_simulate_refuses_file_parent_file_read_only_and_foreign_folders(tmp_path, capsys, read_only):
    blocker = tmp_path / "file.txt"
    blocker.write_text("mine")
    _refused(["simulate", str(blocker), *SIM_ARGS], capsys, blocker)
    _refused(["simulate", str(blocker / "sim"), *SIM_ARGS], capsys, blocker)
    assert blocker.read_text() == "mine"

    ro = read_only(tmp_path / "ro")
    _refused(["simulate", str(ro / "sim"), *SIM_ARGS], capsys, ro)
    assert not (ro / "sim").exists()

    foreign = tmp_path / "foreign"
    (foreign / "Microtubules" / "Cell_001").mkdir(parents=True)
    (foreign / "notes.txt").write_text("lab notes")
    before = _tree(foreign)
    for extra in ([], ["--overwrite"]):
        err = _refused(["simulate", str(foreign), *SIM_ARGS, *extra], capsys, foreign)
        assert "not written by 'dfcan simulate'" in err
    assert _tree(foreign) == before


def test_simulate_overwrite_replaces_only_simulated_cells(tmp_path, capsys):
    out = tmp_path / "sim"
    assert cli.main(["simulate", str(out), *SIM_ARGS, "--levels", "2"]) == 0
    assert safety.read_marker(out)["command"] == "simulate"
    cell = out / "Microtubules" / "Cell_001"
    assert (cell / "RawSIMData_level_02.mrc").is_file()
    # --overwrite with fewer levels replaces the whole cell: no stale level 2 is left behind.
    assert cli.main(["simulate", str(out), *SIM_ARGS, "--overwrite"]) == 0
    assert not (cell / "RawSIMData_level_02.mrc").exists() and (cell / "RawSIMData_level_01.mrc").is_file()
    assert not [p for p in out.rglob("*") if p.name.startswith(safety.PART_PREFIX)]
    # A cell folder the user put there (no simulation.json) is never replaced.
    (cell / "simulation.json").unlink()
    (cell / "mine.txt").write_text("keep")
    before = _tree(cell)
    err = _refused(["simulate", str(out), *SIM_ARGS, "--overwrite"], capsys, cell)
    assert "simulation.json" in err
    assert _tree(cell) == before
    # A file where a cell folder goes.
    (out / "Microtubules" / "Cell_002").write_text("x")
    _refused(["simulate", str(out), *SIM_ARGS, "--cells", "2"], capsys, out / "Microtubules" / "Cell_002")


# --------------------------------------------------------------------------- evaluate


def _no_network(monkeypatch, module):
    """Make loading the network fail loudly: a refusal must come before it."""
    def boom(*args, **kwargs):
        raise AssertionError("the network was loaded before the output was checked")

    monkeypatch.setattr(module, "resolve_run", boom)


def test_evaluate_refuses_bad_outputs_before_any_work(dataset, run_dir, tmp_path, capsys, monkeypatch, read_only):
    import dfcan_tf.evaluation.evaluate as evaluate

    base = ["evaluate", str(run_dir), str(dataset), "--no-progress", "--no-resolution"]
    inputs = {"data": _tree(dataset), "run": _tree(run_dir)}
    _no_network(monkeypatch, evaluate)
    blocker = tmp_path / "file.txt"
    blocker.write_text("mine")
    _refused([*base, "-o", str(blocker)], capsys, blocker)
    _refused([*base, "-o", str(blocker / "eval")], capsys, blocker)
    assert blocker.read_text() == "mine"
    ro = read_only(tmp_path / "ro")
    _refused([*base, "-o", str(ro / "eval")], capsys, ro)
    _refused([*base, "-o", str(ro)], capsys, ro)
    # Inside the data folder, or holding it.
    _refused([*base, "-o", str(dataset / "eval")], capsys, dataset)
    _refused([*base, "-o", str(dataset.parent)], capsys, dataset.parent)
    # A non-empty folder evaluate did not write: refused with and without --overwrite.
    foreign = tmp_path / "foreign"
    foreign.mkdir()
    (foreign / "results.txt").write_text("other work")
    for extra in ([], ["--overwrite"]):
        _refused([*base, "-o", str(foreign), *extra], capsys, foreign)
    assert _tree(foreign) == {"results.txt": hashlib.sha256(b"other work").hexdigest()}
    assert {"data": _tree(dataset), "run": _tree(run_dir)} == inputs


def test_evaluate_output_name_taken_by_a_folder_and_rerun(dataset, run_dir, tmp_path, capsys, monkeypatch):
    import dfcan_tf.evaluation.evaluate as evaluate

    out = tmp_path / "eval"
    out.mkdir()  # an empty folder the user made is fine, and kept
    argv = ["evaluate", str(run_dir), str(dataset), "-o", str(out), "--no-progress", "--no-resolution"]
    assert cli.main(argv) == 0
    first = _tree(out)
    assert {"metrics.csv", "summary.csv", "missing.csv", "Microtubules.png", safety.MARKER} <= set(first)
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(safety.PART_PREFIX)]
    # A previous output is replaced only with --overwrite.
    _refused(argv, capsys, out)
    assert cli.main([*argv, "--overwrite"]) == 0
    assert set(_tree(out)) == set(first)
    # metrics.csv (or a plot name) taken by a folder: refused before any work, nothing written or removed.
    _no_network(monkeypatch, evaluate)
    for name in ("metrics.csv", "Microtubules.png"):
        (out / name).unlink()
        (out / name).mkdir()
        (out / name / "keep.txt").write_text("mine")
        before = _tree(out)
        err = _refused([*argv, "--overwrite"], capsys, out / name)
        assert "folder" in err
        assert _tree(out) == before
        shutil.rmtree(out / name)
    assert not (out / "metrics.csv").exists()


def test_evaluate_reports_missing_records(dataset, run_dir, tmp_path, capsys):
    data = tmp_path / "data"
    shutil.copytree(dataset, data)
    gone = data / "Microtubules" / "Cell_036" / "RawSIMData_level_02.mrc"
    gone.unlink()
    out = tmp_path / "eval"
    assert cli.main(["evaluate", str(run_dir), str(data), "-o", str(out), "--no-progress", "--no-resolution"]) == 0
    printed = capsys.readouterr().out
    assert "missing records" in printed and str(gone) in printed
    assert _read_csv(out / "missing.csv") == [
        {"specimen": "Microtubules", "cell": "36", "level": "2", "missing_file": str(gone)}]
    n = {(r["level"], r["method"]): int(r["n"]) for r in _read_csv(out / "summary.csv")}
    assert n == {("1", "model"): 2, ("1", "bicubic"): 2, ("2", "model"): 1, ("2", "bicubic"): 1}
    # A missing ground truth is named as such.
    gt = data / "Microtubules" / "Cell_037" / "SIM_gt.mrc"
    gt.unlink()
    with pytest.warns(RuntimeWarning, match="no SIM_gt"):
        assert cli.main(["evaluate", str(run_dir), str(data), "-o", str(out), "--no-progress", "--no-resolution",
                         "--overwrite"]) == 0
    missing = _read_csv(out / "missing.csv")
    assert [(m["cell"], m["level"], m["missing_file"]) for m in missing] == [
        ("36", "2", str(gone)), ("37", "1", str(gt)), ("37", "2", str(gt))]
    assert {int(r["n"]) for r in _read_csv(out / "summary.csv")} == {1}


# --------------------------------------------------------------------------- predict


def test_predict_checks_outputs_before_the_network(run_dir, tmp_path, capsys, monkeypatch, read_only):
    import dfcan_tf.inference.files as predict

    src = tmp_path / "in"
    write_tiff(src / "a.tif", np.random.default_rng(0).integers(0, 4000, (24, 24)).astype(np.uint16))
    inputs = _tree(src)
    base = ["predict", str(run_dir), str(src), "--no-progress"]
    with monkeypatch.context() as m:
        _no_network(m, predict)
        blocker = tmp_path / "file.txt"
        blocker.write_text("mine")
        err = _refused([*base, "-o", str(blocker)], capsys, blocker)
        assert "existing file" in err
        _refused([*base, "-o", str(blocker / "out")], capsys, blocker)
        ro = read_only(tmp_path / "ro")
        _refused([*base, "-o", str(ro)], capsys, ro)
        # An existing file predict did not write: refused with and without --overwrite.
        user = tmp_path / "user"
        user.mkdir()
        (user / "a.tif").write_bytes(b"user's own a.tif")
        for extra in ([], ["--overwrite"]):
            _refused([*base, "-o", str(user), *extra], capsys, user / "a.tif")
        assert (user / "a.tif").read_bytes() == b"user's own a.tif"
        # A folder where the output file goes.
        (tmp_path / "d" / "a.tif").mkdir(parents=True)
        _refused([*base, "-o", str(tmp_path / "d")], capsys, tmp_path / "d" / "a.tif")
        assert blocker.read_text() == "mine" and _tree(src) == inputs
    # Its own previous output: replaced only with --overwrite.
    out = tmp_path / "out"
    assert cli.main([*base, "-o", str(out)]) == 0
    assert safety.written_by(out / "a.tif") == "predict"
    first = (out / "a.tif").read_bytes()
    _refused([*base, "-o", str(out)], capsys, out / "a.tif")
    assert cli.main([*base, "-o", str(out), "--overwrite"]) == 0
    assert (out / "a.tif").read_bytes() == first and _tree(src) == inputs


# --------------------------------------------------------------------------- demo


def test_demo_refuses_foreign_folders_and_reruns_into_its_own(run_dir, tmp_path, capsys, monkeypatch, read_only):
    import dfcan_tf.cli.demo as demo
    import dfcan_tf.export.run as export

    blocker = tmp_path / "file.txt"
    blocker.write_text("mine")
    base = ["demo", "--run", str(run_dir), "--cells", "1", "--size", "32", "--no-progress"]
    _refused([*base, "--out", str(blocker)], capsys, blocker)
    _refused([*base, "--out", str(blocker / "demo")], capsys, blocker)
    ro = read_only(tmp_path / "ro")
    _refused([*base, "--out", str(ro / "demo")], capsys, ro)
    foreign = tmp_path / "foreign"
    foreign.mkdir()
    (foreign / "thesis.tex").write_text("years of work")
    err = _refused([*base, "--out", str(foreign)], capsys, foreign)
    assert "not written by 'dfcan demo'" in err
    assert (foreign / "thesis.tex").read_text() == "years of work" and blocker.read_text() == "mine"
    assert not demo.check_output(tmp_path / "new", run_dir)  # a new folder is fine
    with pytest.raises(Exception, match="holds the input"):
        demo.check_output(run_dir.parent, run_dir)

    # The ONNX step is tested in test_export; here a stand-in keeps the two full demo runs fast.
    def fake_export(run, out, format="onnx", **kwargs):
        Path(out).parent.mkdir(parents=True, exist_ok=True)
        Path(out).write_bytes(b"onnx")
        return Path(out)

    monkeypatch.setattr(export, "export_run", fake_export)
    monkeypatch.setattr("dfcan_tf.inference.backends.load_backend", lambda path, backend: lambda x: np.zeros((1, 64, 64, 1), np.float32))
    out = tmp_path / "demo"
    assert cli.main([*base, "--out", str(out)]) == 0
    assert safety.read_marker(out)["command"] == "demo"
    assert (out / "evaluation" / "metrics.csv").is_file() and (out / "predictions" / "Cell_036_wf.tif").is_file()
    assert cli.main([*base, "--out", str(out)]) == 0  # a rerun replaces its own previous output
    assert not [p for p in out.rglob("*") if p.name.startswith(safety.PART_PREFIX)]


# --------------------------------------------------------------------------- benchmark


@pytest.mark.parametrize("threads", ["-2", "0"])
def test_benchmark_rejects_bad_thread_counts(threads, capsys):
    err = _refused(["benchmark", "sgemm", "--threads", threads], capsys)
    assert "--threads" in err and threads in err


def test_sgemm_validates_before_tensorflow():
    from dfcan_tf.benchmark.timing import sgemm_gflops
    from dfcan_tf.errors import DfcanError

    for kwargs in ({"n": 0}, {"repeats": 0}, {"threads": -2}):
        with pytest.raises(DfcanError, match=f"--{next(iter(kwargs))}"):
            sgemm_gflops(**kwargs)
