"""The three networks of the paper: parameter counts, shapes, weight order, config and save/load."""

import itertools
import json
import re

import keras
import numpy as np
import pytest

from dfcan_tf.errors import DfcanError
from dfcan_tf.nets import registry
from dfcan_tf.nets.dfcan import (
    DFCANConfig,
    build_dfcan,
    build_dfgan_generator,
    with_spectrum,
)
from dfcan_tf.nets.discriminators import (
    DiscriminatorConfig,
    build_dfgan_discriminator,
    build_discriminator,
)

# docs/architecture.md#parameter-counts: exact parameter counts.
DFCAN_PARAMS = {(1, 2): 1_930_753, (1, 3): 2_115_393, (9, 2): 1_935_361, (9, 3): 2_120_001}
DFGAN_G_PARAMS = {(1, 2): 5_717_129, (1, 3): 5_901_769, (9, 2): 5_721_737, (9, 3): 5_906_377}


@pytest.mark.parametrize("channels,scale", sorted(DFCAN_PARAMS))
def test_parameter_counts(channels, scale):
    assert build_dfcan(channels, scale).count_params() == DFCAN_PARAMS[(channels, scale)]
    assert build_dfgan_generator(channels, scale).count_params() == DFGAN_G_PARAMS[(channels, scale)]


def test_discriminator_parameter_count_any_size():
    assert build_dfgan_discriminator().count_params() == 4_852_481
    assert build_dfgan_discriminator((96, 64, 1)).count_params() == 4_852_481
    assert build_dfgan_discriminator(downsample=True).count_params() == 4_852_481
    out = build_dfgan_discriminator((32, 32, 1))(np.random.default_rng(0).random((3, 32, 32, 1), dtype=np.float32))
    assert out.shape == (3, 1)
    assert np.all((out.numpy() > 0) & (out.numpy() < 1))


def test_output_shapes_any_size_without_rebuilding(tiny_kwargs, rng):
    model = build_dfcan(1, 2, **tiny_kwargs)
    for h, w in itertools.product([37, 50, 64, 128], repeat=2):
        out = model(rng.random((2, h, w, 1), dtype=np.float32)).numpy()
        assert out.shape == (2, 2 * h, 2 * w, 1)
        assert out.min() > 0 and out.max() < 1


@pytest.mark.parametrize("builder,channels,scale", [(build_dfcan, 9, 3), (build_dfgan_generator, 1, 2)])
def test_full_size_networks_run(builder, channels, scale, rng):
    model = builder(channels, scale)
    out = model(rng.random((1, 37, 50, channels), dtype=np.float32)).numpy()
    assert out.shape == (1, 37 * scale, 50 * scale, 1)
    assert out.min() > 0 and out.max() < 1


def test_weights_follow_data_flow(tiny_kwargs):
    model = build_dfcan(1, 2, **{**tiny_kwargs, "n_blocks": 2})
    names = [w.path for w in model.weights]
    block = ["conv1", "conv2", "fca/conv", "fca/squeeze", "fca/excite"]
    expected = ["head_conv"]
    expected += [f"group0_block{b}_{n}" for b in range(2) for n in block]
    expected += ["upsample_conv", "output_conv"]
    assert names == [f"{e}/{k}" for e in expected for k in ("kernel", "bias")]


def test_config_json_round_trip_rebuilds_same_model(tmp_path, tiny_kwargs, rng):
    cfg = DFCANConfig.dfcan(9, 3, **tiny_kwargs)
    path = tmp_path / "model.json"
    path.write_text(json.dumps(cfg.to_dict()))
    again = DFCANConfig.from_dict(json.loads(path.read_text()))
    assert again == cfg
    a, b = registry.build(cfg), registry.build(again)
    b.set_weights(a.get_weights())
    x = rng.random((1, 20, 24, 9), dtype=np.float32)
    np.testing.assert_array_equal(a(x).numpy(), b(x).numpy())
    assert a.count_params() == b.count_params()
    d = DiscriminatorConfig(input_size=64)
    assert DiscriminatorConfig.from_dict(json.loads(json.dumps(d.to_dict()))) == d
    assert build_discriminator(d).count_params() == 4_852_481


@pytest.mark.parametrize("bad,needle", [
    (dict(scale=5), "scale=5"),
    (dict(width=8, reduction=16), "width // reduction"),
    (dict(input_channels=0), "input_channels=0"),
    (dict(spectrum="fast"), "spectrum='fast'"),
    (dict(gamma=-1.0), "gamma=-1.0"),
])
def test_config_validation_names_the_value(bad, needle):
    with pytest.raises(DfcanError, match=re.escape(needle)):
        DFCANConfig.dfcan(**bad)
    with pytest.raises(DfcanError, match="unknown DFCANConfig keys"):
        DFCANConfig.from_dict({"architecture": "dfcan", "widht": 3})


def test_save_load_round_trip_safe_mode(tmp_path, tiny_kwargs, rng):
    model = build_dfcan(9, 2, **tiny_kwargs)
    x = rng.random((2, 33, 40, 9), dtype=np.float32)
    before = model(x).numpy()
    path = tmp_path / "dfcan.keras"
    model.save(path)
    loaded = keras.models.load_model(path, safe_mode=True)
    np.testing.assert_array_equal(loaded(x).numpy(), before)
    assert loaded.count_params() == model.count_params()
    assert [w.path for w in loaded.weights] == [w.path for w in model.weights]


def test_with_spectrum_keeps_outputs(tiny_kwargs, rng):
    cfg = DFCANConfig.dfcan(1, 2, **tiny_kwargs)
    model = registry.build(cfg)
    twin = with_spectrum(model, cfg, "dft")
    x = rng.random((1, 45, 61, 1), dtype=np.float32)
    assert np.max(np.abs(twin(x).numpy() - model(x).numpy())) <= 1e-5
