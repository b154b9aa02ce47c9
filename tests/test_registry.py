"""The architecture registry: configs tagged by architecture, measured receptive fields, and a toy
network registered in a few lines that trains, predicts (tiled), and exports through the public commands."""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import ClassVar

import keras
import numpy as np
import pytest

from dfcan_tf import cli
from dfcan_tf.errors import DfcanError
from dfcan_tf.nets import registry
from dfcan_tf.nets.base import NetConfig
from dfcan_tf.nets.layers import PixelShuffle

# --- a toy architecture: one config class, one builder, one registry line -------------------------

@dataclass(frozen=True)
class ToyConfig(NetConfig):
    ARCHITECTURES: ClassVar[tuple[str, ...]] = ("toy",)
    architecture: str = "toy"
    width: int = 4


def build_toy(config: ToyConfig) -> keras.Model:
    inputs = keras.Input((None, None, config.input_channels), name="input")
    x = keras.layers.Conv2D(config.width, 3, padding="same", activation="relu", name="conv1")(inputs)
    x = keras.layers.Conv2D(config.width * config.scale**2, 3, padding="same", name="conv2")(x)
    x = PixelShuffle(config.scale, name="shuffle")(x)
    outputs = keras.layers.Conv2D(1, 3, padding="same", activation="sigmoid", name="out")(x)
    return keras.Model(inputs, outputs, name="toy")


@pytest.fixture
def toy():
    arch = registry.register(registry.Architecture("toy", __name__, "ToyConfig", builder="build_toy"), replace=True)
    yield arch
    registry.unregister("toy")


def test_every_registered_config_round_trips_through_its_tag():
    for name in registry.names():
        cfg = registry.make_config(name, 1, 2)
        back = registry.config_from_dict(json.loads(json.dumps(cfg.to_dict())))
        assert back == cfg and type(back) is type(cfg) and back.architecture == name


def test_unknown_architecture_and_missing_tag_are_clear():
    with pytest.raises(DfcanError, match="unknown architecture 'nope'.*dfcan"):
        registry.config_from_dict({"architecture": "nope"})
    with pytest.raises(DfcanError, match="no 'architecture'"):
        registry.config_from_dict({"scale": 2})


def test_receptive_field_of_a_linear_network_is_exact():
    keras.utils.set_random_seed(1)
    inputs = keras.Input((None, None, 1))
    x = keras.layers.Conv2D(3, 5, padding="same")(inputs)
    outputs = keras.layers.Conv2D(1, 3, padding="same")(x)
    model = keras.Model(inputs, outputs)
    # 5×5 then 3×3: an impulse reaches 2 + 1 = 3 pixels on each side.
    assert registry.measure_receptive_field(model, channels=1, scale=1) == 3


@pytest.mark.parametrize("groups, blocks", [(1, 2), (2, 3), (4, 4)])
def test_dfcan_receptive_field_equals_its_convolution_count(groups, blocks):
    cfg = registry.make_config("dfcan", 1, 2, width=8, n_groups=groups, n_blocks=blocks, size_psc=16, reduction=4)
    # head conv + 2 per FCAB + upsampling conv on the raw grid, then the output 3×3 conv on the ×2 grid
    # adds half a raw pixel (rounded up); the attention's global pooling must not count as reach.
    assert registry.receptive_field(cfg) == 1 + 2 * groups * blocks + 1 + 1
    assert registry.default_overlap(cfg) % 8 == 0 and registry.default_overlap(cfg) >= registry.receptive_field(cfg)



def test_the_dft_spectrum_measures_the_same_field_despite_overflow():
    # 4x4 FCABs compound the probe's gain to ~4^35: a unit impulse overflows float32, and the DFT
    # spectrum's matmuls turned that into NaN over the whole image (read as reach 128). The field is the
    # same function's, whichever spectrum computes it.
    for spectrum in ("fft", "dft"):
        cfg = registry.make_config("dfcan", 1, 2, width=8, n_groups=4, n_blocks=4, size_psc=16, reduction=4,
                                   spectrum=spectrum)
        assert registry.measure_receptive_field(registry.build(cfg), 1, 2) == 35, spectrum


def test_run_folder_stores_the_field_and_prediction_reuses_it(tmp_path, monkeypatch):
    from dfcan_tf.runs import read_run_config, write_run

    cfg = registry.make_config("dfcan", 1, 2, width=8, n_groups=1, n_blocks=1, size_psc=16, reduction=4)
    write_run(tmp_path / "run", registry.build(cfg), cfg)
    doc = json.loads((tmp_path / "run" / "config.json").read_text())
    assert doc["receptive_field"] == 5
    registry._KNOWN_FIELDS.clear()
    registry._cached_receptive_field.cache_clear()
    monkeypatch.setattr(registry, "measure_receptive_field", lambda *a, **k: pytest.fail("measured again"))
    _, again = read_run_config(tmp_path / "run")
    assert registry.receptive_field(again) == 5


def test_toy_architecture_trains_predicts_tiles_and_exports(toy, tmp_path):
    from dfcan_tf.data.files import read_tiff, write_tiff
    from dfcan_tf.runs import load_run

    rng = np.random.default_rng(0)
    x = rng.random((24, 16, 16, 1)).astype(np.float32)
    y = np.repeat(np.repeat(x, 2, axis=1), 2, axis=2)
    npz = tmp_path / "toy.npz"
    np.savez(npz, x_train=x[:20], y_train=y[:20], x_val=x[20:], y_val=y[20:])

    run = tmp_path / "run"
    assert cli.main(["train", "--architecture", "toy", "--data", str(npz), "--run", str(run), "--steps", "6",
                     "--batch-size", "2", "--patch-size", "16", "--validate-every", "3", "--validate-patches", "4",
                     "--sample-every", "3", "--no-progress"]) == 0
    loaded = load_run(run)
    assert isinstance(loaded.model_config, ToyConfig) and loaded.model.name == "toy"

    image = rng.random((45, 37)).astype(np.float32) * 1000 + 100
    write_tiff(tmp_path / "in.tif", image.astype(np.uint16))
    for tile, out in (("0", "whole"), ("24", "tiled")):
        assert cli.main(["predict", str(run), str(tmp_path / "in.tif"), "-o", str(tmp_path / out),
                         "--tile-size", tile, "--no-progress"]) == 0
    whole, _ = read_tiff(tmp_path / "whole" / "in.tif")
    tiled, _ = read_tiff(tmp_path / "tiled" / "in.tif")
    assert whole.shape == tiled.shape == (90, 74)
    assert np.abs(whole.astype(np.float64) - tiled.astype(np.float64)).max() <= 2  # 16-bit counts

    for fmt, suffix in (("onnx", ".onnx"), ("tflite", ".tflite")):
        out = tmp_path / f"toy{suffix}"
        assert cli.main(["export", str(run), "--format", fmt, "-o", str(out), "--verify-sizes", "16", "21"]) == 0
        assert out.is_file() and out.stat().st_size > 0
