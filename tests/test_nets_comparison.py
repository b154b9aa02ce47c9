"""The paper's comparison networks (dfcan_tf.nets): configurations, shapes at any size, safe save/load,
a falling loss with the source paper's loss, ONNX/TFLite parity, and the documented full-size parameter counts.
"""

import keras
import numpy as np
import pytest

from dfcan_tf.errors import DfcanError
from dfcan_tf.export.onnx import to_onnx_proto
from dfcan_tf.export.tflite import to_tflite_bytes
from dfcan_tf.nets import base, edsr, pix2pix, rcan, srcnn, unet

MODULES = {"srcnn": srcnn, "edsr": edsr, "edsr_paper": edsr, "rcan": rcan, "rcan_small": rcan, "unet": unet,
           "scunet": unet, "pix2pix": pix2pix, "patchgan": pix2pix}
CLASSES = {"srcnn": srcnn.SRCNNConfig, "edsr": edsr.EDSRConfig, "edsr_paper": edsr.EDSRConfig,
           "rcan": rcan.RCANConfig, "rcan_small": rcan.RCANConfig, "unet": unet.UNetConfig,
           "scunet": unet.ScUNetConfig, "pix2pix": pix2pix.Pix2PixConfig, "patchgan": pix2pix.PatchGANConfig}

# Tiny versions of every SR network (same topology, few channels).
TINY = {
    "srcnn": dict(n1=8, n2=4, f1=5, f3=3),
    "edsr": dict(width=8, n_blocks=2),
    "edsr_paper": dict(width=8, n_blocks=2),  # keeps residual scaling 0.1
    "rcan": dict(width=8, n_groups=2, n_blocks=1, reduction=4),
    "unet": dict(first_filters=4, kernel_size=3),
    "scunet": dict(depth=2, first_filters=4),
    "pix2pix": dict(depth=4, width=4),
}
# (input channels, scale) per network in the slower tests: both SISR and SIM, ×2 and ×3, are covered.
SETUP = {"srcnn": (9, 3), "edsr": (1, 2), "edsr_paper": (9, 3), "rcan": (9, 2), "unet": (9, 3), "scunet": (9, 2),
         "pix2pix": (1, 3)}
SIZES = ((20, 20), (17, 23))  # one odd
EXPORT_SIZES = ((16, 16), (13, 21))  # 13×21: not a multiple of 8
TOL = 1e-4


def tiny(arch: str, channels: int | None = None, scale: int | None = None):
    c, s = SETUP[arch]
    cfg = CLASSES[arch](architecture=arch, input_channels=channels or c, scale=scale or s, **TINY[arch])
    keras.utils.set_random_seed(0)
    return cfg, MODULES[arch].build(cfg)


# --------------------------------------------------------------------------------------------
# configurations
# --------------------------------------------------------------------------------------------

def test_paper_defaults_and_variants():
    assert (srcnn.SRCNNConfig().n1, srcnn.SRCNNConfig().n2, srcnn.SRCNNConfig().f1) == (64, 32, 9)
    base_cfg, paper_cfg = edsr.EDSRConfig(), edsr.EDSRConfig(architecture="edsr_paper")
    assert (base_cfg.n_blocks, base_cfg.width, base_cfg.res_scale) == (16, 64, 1.0)
    assert (paper_cfg.n_blocks, paper_cfg.width, paper_cfg.res_scale) == (32, 256, 0.1)
    assert edsr.EDSRConfig.paper(9, 3) == edsr.EDSRConfig(architecture="edsr_paper", input_channels=9, scale=3,
                                                          width=256, n_blocks=32, res_scale=0.1)
    assert (rcan.RCANConfig().n_groups, rcan.RCANConfig().n_blocks, rcan.RCANConfig().reduction) == (10, 20, 16)
    assert (rcan.RCANConfig.small().n_groups, rcan.RCANConfig.small().n_blocks) == (4, 4)
    care = unet.UNetConfig()
    assert (care.depth, care.first_filters, care.kernel_size, care.residual) == (2, 32, 5, True)
    assert (pix2pix.Pix2PixConfig().depth, pix2pix.PatchGANConfig().n_layers) == (8, 3)
    for module in (srcnn, edsr, rcan, unet, pix2pix):
        assert set(module.PAPER) == {"authors", "title", "venue", "year", "doi"}
        assert module.RECIPE["loss"] in ("mse", "mae") and module.RECIPE["optimizer"] in ("sgd", "adam")
    assert srcnn.RECIPE["loss"] == "mse" and edsr.RECIPE["loss"] == rcan.RECIPE["loss"] == "mae"
    assert pix2pix.RECIPE["loss_weight"] == 100.0


@pytest.mark.parametrize("arch", list(CLASSES))
def test_config_round_trip(arch):
    cls = CLASSES[arch]
    cfg = cls(architecture=arch, input_channels=9, scale=3)
    assert cls.from_dict(cfg.to_dict()) == cfg
    assert cfg.replace(scale=2).scale == 2 and cfg.replace(scale=2).input_channels == 9
    assert cfg.to_dict()["architecture"] == arch


@pytest.mark.parametrize(("cls", "kwargs", "message"), [
    (srcnn.SRCNNConfig, {"scale": 5}, r"scale must be an integer between 1 and 4\. Received: scale=5"),
    (srcnn.SRCNNConfig, {"input_channels": 0}, r"Received: input_channels=0"),
    (srcnn.SRCNNConfig, {"f1": 4}, r"f1 must be odd\. Received: f1=4"),
    (srcnn.SRCNNConfig, {"architecture": "edsr"}, r"Received: architecture='edsr'"),
    (edsr.EDSRConfig, {"width": 2000}, r"Received: width=2000"),
    (edsr.EDSRConfig, {"n_blocks": 300}, r"Received: n_blocks=300"),
    (edsr.EDSRConfig, {"res_scale": 0}, r"Received: res_scale=0"),
    (rcan.RCANConfig, {"reduction": 128}, r"Received: reduction=128"),
    (rcan.RCANConfig, {"width": 2.5}, r"Received: width=2\.5"),
    (unet.UNetConfig, {"pad_mode": "wrap"}, r"Received: pad_mode='wrap'"),
    (unet.UNetConfig, {"residual": "yes"}, r"Received: residual='yes'"),
    (unet.ScUNetConfig, {"first_filters": 128, "depth": 4}, r"Received: first_filters=128, depth=4"),
    (pix2pix.Pix2PixConfig, {"output_activation": "relu"}, r"Received: output_activation='relu'"),
    (pix2pix.PatchGANConfig, {"n_layers": 0}, r"Received: n_layers=0"),
])
def test_config_rejects_bad_values(cls, kwargs, message):
    with pytest.raises(DfcanError, match=message):
        cls(**kwargs)


def test_unknown_keys_are_listed():
    with pytest.raises(DfcanError, match=r"unknown EDSRConfig keys \['depth'\]; known keys are \[.*'n_blocks'"):
        edsr.EDSRConfig.from_dict({"architecture": "edsr", "depth": 3})
    with pytest.raises(DfcanError, match=r"unknown RCANConfig keys \['blocks'\]"):
        rcan.RCANConfig().replace(blocks=3)
    with pytest.raises(DfcanError, match="JSON object"):
        unet.UNetConfig.from_dict(["unet"])


# --------------------------------------------------------------------------------------------
# registered layers
# --------------------------------------------------------------------------------------------

@pytest.mark.parametrize("scale", [2, 3, 4])
def test_bicubic_upsample_matches_tensorflow_inside(scale, rng):
    import tensorflow as tf

    x = rng.random((2, 17, 23, 3), dtype=np.float32)
    got = base.BicubicUpsample(scale)(x).numpy()
    want = tf.image.resize(x, (17 * scale, 23 * scale), method="bicubic").numpy()
    b = 2 * scale  # TF renormalises out-of-image taps at the border; we repeat the edge pixel
    # ×3: TF reads its cubic weights from a 1024-entry table (positions k/3 are not on the grid).
    assert np.abs(got - want)[:, b:-b, b:-b].max() <= (1e-6 if scale != 3 else 1e-3)
    assert np.allclose(base.BicubicUpsample(scale)(np.full((1, 5, 7, 2), 0.3, np.float32)).numpy(), 0.3, atol=1e-6)
    ramp = np.tile(np.arange(9, dtype=np.float32), (1, 6, 1))[..., None]  # linear along W: cubic keeps it
    up = base.BicubicUpsample(scale)(ramp).numpy()[0, :, 2 * scale:-2 * scale, 0]
    expected = (np.arange(9 * scale) + 0.5) / scale - 0.5
    assert np.allclose(up, expected[2 * scale:-2 * scale][None], atol=1e-5)


def test_pad_and_crop(rng):
    x = rng.random((1, 13, 21, 2), dtype=np.float32)
    padded = base.PadToMultiple(8)(x).numpy()
    assert padded.shape == (1, 16, 24, 2)
    assert np.array_equal(padded[:, :13, :21], x) and np.array_equal(padded[:, 13, :21], x[:, 11])  # reflected
    zeros = base.PadToMultiple(8, "zeros")(x).numpy()
    assert zeros[:, 13:].max() == 0 and zeros[:, :, 21:].max() == 0
    assert np.array_equal(base.CropLike()([padded, x]).numpy(), x)
    assert np.allclose(base.ChannelMean()(x).numpy(), x.mean(-1, keepdims=True))


# --------------------------------------------------------------------------------------------
# models
# --------------------------------------------------------------------------------------------

@pytest.mark.parametrize("arch", list(TINY))
def test_output_shape_any_size(arch, rng):
    for channels, scale in ((1, 2), (9, 3)):
        _, model = tiny(arch, channels, scale)
        assert model.inputs[0].shape[1:] == (None, None, channels)
        for h, w in SIZES:
            y = model(rng.random((2, h, w, channels), dtype=np.float32), training=False).numpy()
            assert y.shape == (2, scale * h, scale * w, 1)
            assert np.isfinite(y).all() and y.std() > 0


@pytest.mark.parametrize("arch", list(TINY) + ["patchgan"])
def test_save_load_safe_mode(arch, tmp_path, rng):
    if arch == "patchgan":
        cfg = pix2pix.PatchGANConfig(input_channels=9, width=4)
        model = pix2pix.build(cfg)
        x = rng.random((2, 40, 40, 10), dtype=np.float32)
    else:
        cfg, model = tiny(arch)
        x = rng.random((2, 17, 23, cfg.input_channels), dtype=np.float32)
    path = tmp_path / "m.keras"
    model.save(path)
    loaded = keras.saving.load_model(path, safe_mode=True)
    assert loaded.count_params() == model.count_params()
    assert np.allclose(loaded(x, training=False).numpy(), model(x, training=False).numpy(), atol=1e-6)


def _loss(name: str):
    return keras.losses.MeanAbsoluteError() if name == "mae" else keras.losses.MeanSquaredError()


@pytest.mark.parametrize("arch", list(TINY))
def test_training_loss_falls(arch, rng):
    """20 Adam steps with the source paper's loss on a tiny task (target: an affine map of the upsampled mean)."""
    import tensorflow as tf

    cfg, model = tiny(arch)
    recipe = MODULES[arch].RECIPES[arch] if hasattr(MODULES[arch], "RECIPES") else MODULES[arch].RECIPE
    x = rng.random((8, 12, 12, cfg.input_channels), dtype=np.float32)
    mean = x.mean(-1, keepdims=True)
    y = 0.1 + 0.5 * tf.image.resize(mean, (12 * cfg.scale, 12 * cfg.scale), method="bilinear").numpy()
    model.compile(optimizer=keras.optimizers.Adam(5e-3), loss=_loss(recipe["loss"]))
    history = model.fit(x, y, batch_size=2, epochs=5, shuffle=False, verbose=0).history["loss"]  # 20 steps
    assert np.isfinite(history).all()
    assert history[-1] < 0.6 * history[0], history


def test_patchgan_learns_to_tell_real_from_fake(rng):
    cfg = pix2pix.PatchGANConfig(input_channels=1, width=4)
    keras.utils.set_random_seed(0)
    disc = pix2pix.build(cfg)
    assert disc(np.zeros((1, 256, 256, 2), np.float32)).shape == (1, 30, 30, 1)  # 70×70 patches on 256²
    cond = rng.random((8, 32, 32, 1), dtype=np.float32)
    real = np.concatenate([cond, cond], -1)[:4]
    fake = np.concatenate([cond, rng.random((8, 32, 32, 1), dtype=np.float32)], -1)[4:]
    x = np.concatenate([real, fake])
    labels = np.concatenate([np.ones((4, 2, 2, 1)), np.zeros((4, 2, 2, 1))]).astype(np.float32)
    assert disc(x).shape == (8, 2, 2, 1)
    disc.compile(optimizer=keras.optimizers.Adam(2e-3), loss=keras.losses.BinaryCrossentropy(from_logits=True))
    history = disc.fit(x, labels, batch_size=8, epochs=20, verbose=0).history["loss"]
    assert history[-1] < 0.5 * history[0], history


# --------------------------------------------------------------------------------------------
# export
# --------------------------------------------------------------------------------------------

def _onnx(model, channels):
    import onnxruntime as ort

    proto = to_onnx_proto(model, channels)
    session = ort.InferenceSession(proto.SerializeToString(), providers=["CPUExecutionProvider"])
    return lambda x: session.run(None, {"input": x})[0]


def _tflite(model, channels):
    from ai_edge_litert.interpreter import Interpreter

    interpreter = Interpreter(model_content=to_tflite_bytes(model, channels))
    ops = {d["op_name"] for d in interpreter._get_ops_details()}
    assert not [op for op in ops if op.startswith("Flex") or op == "CUSTOM"], ops

    def run(x):
        interpreter.resize_tensor_input(0, list(x.shape), strict=False)
        interpreter.allocate_tensors()
        interpreter.set_tensor(interpreter.get_input_details()[0]["index"], x)
        interpreter.invoke()
        return interpreter.get_tensor(interpreter.get_output_details()[0]["index"])

    return run


@pytest.mark.parametrize("fmt", ["onnx", "tflite"])
@pytest.mark.parametrize("arch", list(TINY))
def test_export_parity(arch, fmt, rng):
    cfg, model = tiny(arch)
    run = (_onnx if fmt == "onnx" else _tflite)(model, cfg.input_channels)
    for h, w in EXPORT_SIZES:
        x = rng.random((2, h, w, cfg.input_channels), dtype=np.float32)
        want = model(x, training=False).numpy()
        got = run(x)
        assert got.shape == (2, cfg.scale * h, cfg.scale * w, 1)
        assert want.std() > 1e-3 and np.abs(got - want).max() <= TOL


# --------------------------------------------------------------------------------------------
# full-size parameter counts (docs/networks.md)
# --------------------------------------------------------------------------------------------

# model.count_params() at the paper's sizes, (input channels, scale) -> count; BN moving statistics included.
FULL_COUNTS = {
    "srcnn": {(1, 2): 8_129, (9, 3): 49_601},
    "edsr": {(1, 2): 1_367_553, (9, 3): 1_556_801},
    "edsr_paper": {(1, 2): 40_720_385, (9, 3): 43_689_217},
    "rcan": {(1, 2): 15_442_337, (9, 3): 15_631_585},
    "rcan_small": {(1, 2): 1_524_545, (9, 3): 1_713_793},
    "unet": {(1, 2): 922_977, (9, 3): 929_377},
    "scunet": {(1, 2): 62_061_186, (9, 3): 62_070_922},
    "pix2pix": {(1, 2): 54_417_665, (9, 3): 54_425_857},
    "patchgan": {(1, 2): 2_766_401, (9, 3): 2_774_593},
}


@pytest.mark.parametrize("arch", list(CLASSES))
def test_full_size_parameter_counts(arch):
    cls = CLASSES[arch]
    for (channels, scale), count in FULL_COUNTS[arch].items():
        model = MODULES[arch].build(cls(architecture=arch, input_channels=channels, scale=scale))
        assert model.count_params() == count, (arch, channels, scale)
        keras.backend.clear_session()
