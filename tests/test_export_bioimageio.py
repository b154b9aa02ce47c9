"""The bioimage.io package: bioimageio.spec validates it and bioimageio.core test-runs it (offline),
with ONNX and TF SavedModel weights, test tensors, pre-processing and a model card."""

import json
import zipfile

import numpy as np
import pytest

from dfcan_tf import cli
from dfcan_tf.nets import registry
from dfcan_tf.nets.dfcan import DFCANConfig
from dfcan_tf.runs import load_run, write_run

TINY = {"width": 8, "n_groups": 1, "n_blocks": 1, "size_psc": 16, "reduction": 4}


@pytest.fixture(scope="module")
def sim_run(tmp_path_factory):
    import keras

    keras.utils.set_random_seed(5)
    cfg = DFCANConfig.dfgan_generator(9, 2, **TINY)
    return write_run(tmp_path_factory.mktemp("bio") / "run", registry.build(cfg), cfg,
                     train={"steps": 10, "batch_size": 2},
                     data={"task": "sim", "normalization": "minmax", "pixel_size_nm": 62.6})


def test_bioimageio_package_validates_and_test_runs(sim_run, tmp_path, monkeypatch):
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
        rdf = json.loads(zf.read("rdf.yaml"))  # written as JSON, which is YAML
        card = zf.read("README.md").decode()
        with zf.open("test_input.npy") as f:
            x = np.load(f)
        with zf.open("test_output.npy") as f:
            y = np.load(f)
    assert {"rdf.yaml", "README.md", "weights.onnx", "tf_saved_model.zip", "test_input.npy",
            "test_output.npy", "cover.png"} <= names
    assert set(rdf["weights"]) == {"onnx", "tensorflow_saved_model_bundle"}
    assert rdf["weights"]["onnx"]["opset_version"] >= 17
    assert rdf["inputs"][0]["preprocessing"][0]["id"] == "scale_range"
    assert [a["type"] for a in rdf["inputs"][0]["axes"]] == ["batch", "space", "space", "channel"]
    assert "How the weights were made" in card and "steps: 10" in card and "Pre- and post-processing" in card

    # The test tensors are raw data and what pre-processing + the Keras model make of it.
    assert x.shape == (1, 64, 64, 9) and x.max() > 1000
    xn = (x - x.min()) / (x.max() - x.min())
    assert np.max(np.abs(load_run(sim_run).model(xn).numpy() - y)) <= 1e-4

    descr = load_description(out, perform_io_checks=True)
    assert not isinstance(descr, InvalidDescr), descr.validation_summary.format()
    summary = test_model(out, weight_format="onnx")
    assert summary.status == "passed", summary.format()
