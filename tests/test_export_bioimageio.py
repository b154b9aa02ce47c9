"""The bioimage.io package: bioimageio.spec validates it and bioimageio.core test-runs it (offline),
with ONNX and TF SavedModel weights, test and sample tensors, pre-processing, training data, and a model card;
nothing in it names a local path."""

import io
import json
import zipfile
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest

from dfcan_tf import __version__, cli
from dfcan_tf.export.bioimageio_meta import (
    BIOSR_DOI,
    DFCAN_DOI,
    GIT_REPO_PLACEHOLDER,
    data_origin,
    portable,
    training_data,
)
from dfcan_tf.nets import registry
from dfcan_tf.nets.dfcan import DFCANConfig
from dfcan_tf.runs import load_run, write_run

TINY = {"width": 8, "n_groups": 1, "n_blocks": 1, "size_psc": 16, "reduction": 4}
# The only validation warnings accepted, both about the inline training-data description: its authors
# have no GitHub user names (the spec alerts; none is invented), and the spec's own union of dataset
# formats also tries format 0.2 on it. Anything else (e.g. a FAIR "needs to be filled") fails.
ACCEPTED_WARNINGS = ("Missing `maintainers` or any author in `authors` with a specified `github_user` name.",
                     "future format_version '0.3.4' treated as '0.2.4'")


def _bioSR_tree(root: Path, simulated: bool) -> Path:
    """A BioSR-layout data root and a patch folder made from it, as far as provenance goes:
    ``patches.json`` naming the root, and per cell the ``simulation.json`` 'dfcan simulate' writes."""
    cell = root / "data" / "Microtubules" / "Cell_001"
    cell.mkdir(parents=True)
    (cell / "RawSIMData_level_01.mrc").write_bytes(b"")
    if simulated:
        (cell / "simulation.json").write_text("{}")
    patches = root / "patches"
    patches.mkdir()
    (patches / "patches.json").write_text(json.dumps({"data_root": str(root / "data"), "patches": []}))
    return patches


@pytest.fixture(scope="module")
def sim_run(tmp_path_factory):
    import keras

    keras.utils.set_random_seed(5)
    cfg = DFCANConfig.dfgan_generator(9, 2, **TINY)
    base = tmp_path_factory.mktemp("bio")
    patches = _bioSR_tree(base, simulated=True)
    return write_run(base / "run", registry.build(cfg), cfg,
                     train={"steps": 10, "batch_size": 2, "init_generator": str(base / "gen.weights.h5")},
                     data={"task": "sim", "normalization": "minmax", "pixel_size_nm": 62.6,
                           "source": "patch_folders", "path": str(patches), "train_dir": str(patches / "training"),
                           "validate_dir": str(patches / "validate")})


def _strings(tree):
    if isinstance(tree, dict):
        for k, v in tree.items():
            yield str(k)
            yield from _strings(v)
    elif isinstance(tree, list):
        for v in tree:
            yield from _strings(v)
    elif isinstance(tree, str):
        yield tree


def _members(zf: zipfile.ZipFile, prefix: str = ""):
    """(name, bytes) of every file in the zip, and of the zips inside it."""
    for name in zf.namelist():
        data = zf.read(name)
        yield prefix + name, data
        if name.endswith(".zip"):
            with zipfile.ZipFile(io.BytesIO(data)) as inner:
                yield from _members(inner, prefix + name + "/")


def test_bioimageio_package_validates_and_test_runs(sim_run, tmp_path, tmp_path_factory, monkeypatch):
    import tifffile
    from bioimageio.core import test_model
    from bioimageio.spec import InvalidDescr, load_description

    monkeypatch.chdir(tmp_path)  # bioimageio.core unzips relative to the working directory
    out = tmp_path / "pkg" / "dfgan_sim.zip"
    status = cli.main(["export", str(sim_run), "--format", "bioimageio", "-o", str(out), "--verify-sizes", "32", "45"])
    assert status == 0 and out.is_file()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["pkg"]  # no scratch left behind
    # the zip, and export's record of what it wrote (safety.MANIFEST)
    assert sorted(p.name for p in (tmp_path / "pkg").iterdir()) == [".dfcan-outputs.json", "dfgan_sim.zip"]

    with zipfile.ZipFile(out) as zf:
        names = set(zf.namelist())
        members = dict(_members(zf))
    rdf = json.loads(members["rdf.yaml"])  # written as JSON, which is YAML
    card = members["README.md"].decode()
    x = np.load(io.BytesIO(members["test_input.npy"]))
    y = np.load(io.BytesIO(members["test_output.npy"]))
    assert {"rdf.yaml", "README.md", "weights.onnx", "tf_saved_model.zip", "test_input.npy",
            "test_output.npy", "sample_input.tif", "sample_output.tif", "cover.png"} <= names
    assert set(rdf["weights"]) == {"onnx", "tensorflow_saved_model_bundle"}
    assert rdf["weights"]["onnx"]["opset_version"] >= 17
    assert rdf["inputs"][0]["preprocessing"][0]["id"] == "scale_range"
    assert [a["type"] for a in rdf["inputs"][0]["axes"]] == ["batch", "space", "space", "channel"]
    assert "How the weights were made" in card and "steps: 10" in card and "Pre- and post-processing" in card

    # The test tensors are raw data and what pre-processing + the Keras model make of it.
    assert x.shape == (1, 64, 64, 9) and x.max() > 1000
    xn = (x - x.min()) / (x.max() - x.min())
    assert np.max(np.abs(load_run(sim_run).model(xn).numpy() - y)) <= 1e-4
    # Sample tensors: the same pair as float32 TIFF (y, x, channel) and (y, x), as the spec wants (not .npy).
    assert rdf["inputs"][0]["sample_tensor"]["source"] == "sample_input.tif"
    assert rdf["outputs"][0]["sample_tensor"]["source"] == "sample_output.tif"
    sx = tifffile.imread(io.BytesIO(members["sample_input.tif"]))
    sy = tifffile.imread(io.BytesIO(members["sample_output.tif"]))
    assert sx.shape == (64, 64, 9) and np.array_equal(sx, x[0])
    assert sy.shape == (128, 128) and np.array_equal(sy, y[0, ..., 0])

    # Metadata: version, placeholder repository, no invented maintainer, cited paper, training data.
    assert rdf["version"] == __version__
    assert rdf["git_repo"] == GIT_REPO_PLACEHOLDER and "maintainers" not in rdf
    assert DFCAN_DOI == "10.1038/s41592-020-01048-5" and [c["doi"] for c in rdf["cite"]] == [DFCAN_DOI]
    td = rdf["training_data"]
    assert td["type"] == "dataset" and td["name"] == "dfcan_tf simulated SIM data"
    assert "Training data" in card and "No real cell images were used" in card
    assert "pip install bioimageio.core==0.11.0 bioimageio.spec==0.5.12.0 pydantic==2.12.5" in card
    meta = rdf["config"]["dfcan_tf"]
    assert "source_run" not in meta and meta["run_name"] == "run"
    assert (meta["data"]["path"], meta["data"]["train_dir"]) == ("patches", "training")

    # No local path anywhere: no YAML string starts with '/', and no file (text or binary, nested zips
    # included) holds the pytest temporary folders, the run folder, the training data or the home folder.
    leaks = [s for s in _strings(rdf) if s.startswith(("/", "~"))]
    assert not leaks, leaks
    assert not [w for w in card.replace("`", " ").split() if w.startswith("/")]
    needles = {str(tmp_path_factory.getbasetemp().resolve()), str(tmp_path.resolve()), str(sim_run.resolve()),
               str(Path(sim_run).resolve().parent)}
    if len(Path.home().resolve().parts) > 1:
        needles.add(str(Path.home().resolve()))
    for name, data in members.items():
        for needle in needles:
            assert needle.encode() not in data, (name, needle)
    assert any(b"run_name" in data for name, data in members.items() if name == "weights.onnx")

    descr = load_description(out, perform_io_checks=True)
    assert not isinstance(descr, InvalidDescr), descr.validation_summary.format()
    assert str(descr.format_version).startswith("0.5.") and descr.training_data.name == td["name"]
    warnings = [(w.loc, w.msg) for d in descr.validation_summary.details for w in d.warnings]
    unexpected = [(loc, msg) for loc, msg in warnings if loc[:1] != ("training_data",) or msg not in ACCEPTED_WARNINGS]
    assert not unexpected, unexpected
    summary = test_model(out, weight_format="onnx")
    assert summary.status == "passed", summary.format()


def test_training_data_origin_and_description(tmp_path):
    """BioSR-layout folders are told apart by the simulator's records; each description is a valid
    bioimage.io dataset (format 0.3) and BioSR is cited by its DOI."""
    from bioimageio.spec import ValidationContext
    from bioimageio.spec.dataset.v0_3 import DatasetDescr

    sim = _bioSR_tree(tmp_path / "sim", simulated=True)
    real = _bioSR_tree(tmp_path / "real", simulated=False)
    assert data_origin({"path": str(sim)}) == "simulated"
    assert data_origin({"path": str(real)}) == "biosr"
    assert data_origin({"path": str(tmp_path / "gone")}) == "unknown"
    assert data_origin({"source": "arrays"}) == "unknown"
    assert data_origin({"dataset": "BioSR"}) == "biosr"
    (tmp_path / "other").mkdir()
    (tmp_path / "other" / "patches.json").write_text(json.dumps({"data_root": str(tmp_path / "sim" / "patches")}))
    assert data_origin({"path": str(tmp_path / "other")}) == "unknown"  # neither simulated nor BioSR's names

    names = {}
    for origin in ("biosr", "simulated", "unknown"):
        src = SimpleNamespace(run=SimpleNamespace(data={"source": "npz", "path": str(tmp_path / "x.npz")}))
        td = training_data(src, origin)
        with ValidationContext(perform_io_checks=False):
            descr = DatasetDescr.model_validate(td)
        names[origin] = descr.name
        assert str(tmp_path) not in json.dumps(td)
    assert names == {"biosr": "BioSR", "simulated": "dfcan_tf simulated SIM data", "unknown": "unrecorded training data"}
    biosr = training_data(SimpleNamespace(run=SimpleNamespace(data={})), "biosr")
    assert [c["doi"] for c in biosr["cite"]] == [BIOSR_DOI, DFCAN_DOI] and biosr["source"].endswith(BIOSR_DOI)


def test_portable_reduces_every_path_to_its_name():
    tree = {"a": "/home/u/data/mt_patches/", "b": ["~/x/y.npz", "C:\\Users\\u\\run", "\\\\server\\share\\d"],
            "c": {"d": "file:///tmp/z"}, "e": "minmax", "f": 62.6, "g": "x/y"}
    assert portable(tree) == {"a": "mt_patches", "b": ["y.npz", "run", "d"], "c": {"d": "z"}, "e": "minmax",
                              "f": 62.6, "g": "x/y"}


def test_maintainers_come_from_the_caller_never_invented():
    """No GitHub user, no maintainer; given ones pass through and satisfy the spec's Maintainer (checked with
    io checks on, offline, with a user name bioimageio.spec itself lists as known)."""
    from bioimageio.spec import ValidationContext
    from bioimageio.spec.generic.v0_3 import Maintainer

    from dfcan_tf.errors import DfcanError
    from dfcan_tf.export.bioimageio_meta import maintainer_entries

    assert maintainer_entries([{"name": "dfcan_tf contributors"}]) == []
    authors = [{"name": "A", "affiliation": "X"}, {"name": "B Bot", "github_user": "bioimageiobot"}]
    assert maintainer_entries(authors) == [{"name": "B Bot", "github_user": "bioimageiobot"}]
    given = maintainer_entries(authors, [{"github_user": "bioimageiobot"}])
    assert given == [{"github_user": "bioimageiobot"}]
    with ValidationContext(perform_io_checks=True):
        assert Maintainer.model_validate(given[0]).github_user == "bioimageiobot"
    with pytest.raises(DfcanError, match="github_user"):
        maintainer_entries(authors, [{"name": "No Handle"}])
