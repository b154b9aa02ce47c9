"""Model builders: DFCAN, the DFGAN generator and the DFGAN discriminator (REFERENCE §2–3).

All three are Keras functional models made of registered layers, so
``model.save("x.keras")`` reloads with ``safe_mode=True``. The SR networks take
``(None, None, C)`` inputs: any spatial size runs without rebuilding.

``model.weights`` follow data flow: head conv; per FCAB conv1, conv2,
attention conv, squeeze, excite; upsampling conv; output conv — the order in
which the authors' Keras 2 code created its ``conv2d_N`` layers, which is what
:func:`load_reference_weights` relies on.
"""

from __future__ import annotations

import argparse
import os
import re
from pathlib import Path

import keras

from dfcan_tf.config import DFCAN_DEFAULTS, DFGAN_GENERATOR_DEFAULTS, ModelConfig
from dfcan_tf.errors import DfcanError
from dfcan_tf.nets.layers import GELU, FourierChannelAttention, PixelShuffle


def _conv(filters: int, name: str, kernel_size: int = 3, **kwargs) -> keras.layers.Conv2D:
    # Keras defaults (glorot-uniform kernel, zero bias) as in the authors' code.
    return keras.layers.Conv2D(filters, kernel_size, padding="same", name=name, **kwargs)


def _sr_network(config: ModelConfig, name: str) -> keras.Model:
    c = config
    inputs = keras.Input((None, None, c.input_channels), name="input")
    x = GELU(name="head_gelu")(_conv(c.width, "head_conv")(inputs))
    for g in range(c.n_groups):
        group_in = x
        for b in range(c.n_blocks):
            p = f"group{g}_block{b}"
            y = GELU(name=f"{p}_gelu1")(_conv(c.width, f"{p}_conv1")(x))
            y = GELU(name=f"{p}_gelu2")(_conv(c.width, f"{p}_conv2")(y))
            y = FourierChannelAttention(
                c.width, reduction=c.reduction, gamma=c.gamma, size_psc=c.size_psc,
                spectrum=c.spectrum, name=f"{p}_fca",
            )(y)
            x = keras.layers.Add(name=f"{p}_add")([y, x])
        x = keras.layers.Add(name=f"group{g}_add")([x, group_in])
    x = GELU(name="upsample_gelu")(_conv(c.width * c.scale**2, "upsample_conv")(x))
    x = PixelShuffle(c.scale, name="pixel_shuffle")(x)
    outputs = _conv(1, "output_conv", activation="sigmoid")(x)
    return keras.Model(inputs, outputs, name=name)


def build_dfcan(
    input_channels: int = 1,
    scale: int = 2,
    *,
    width: int = DFCAN_DEFAULTS["width"],
    n_groups: int = DFCAN_DEFAULTS["n_groups"],
    n_blocks: int = DFCAN_DEFAULTS["n_blocks"],
    gamma: float = DFCAN_DEFAULTS["gamma"],
    size_psc: int = DFCAN_DEFAULTS["size_psc"],
    reduction: int = DFCAN_DEFAULTS["reduction"],
    spectrum: str = "fft",
) -> keras.Model:
    """Build DFCAN (Qiao et al. 2021): 4 residual groups × 4 Fourier channel attention blocks.

    Parameters
    ----------
    input_channels
        1 (SISR, wide-field input), 9 (linear SIM raw frames) or 25 (nonlinear SIM).
    scale
        Output/input size ratio (2 or 3 in the paper).
    width, n_groups, n_blocks, gamma, size_psc, reduction
        Architecture; defaults are the paper's (64, 4, 4, 0.8, 128, 16).
    spectrum
        ``"fft"`` (reference, fast in TF) or ``"dft"`` (portable to ONNX/TFLite).

    Returns
    -------
    keras.Model
        Input ``(None, None, input_channels)``, output ``(N, scale·H, scale·W, 1)`` in (0, 1).
    """
    return ModelConfig.dfcan(input_channels, scale, width=width, n_groups=n_groups, n_blocks=n_blocks,
                             gamma=gamma, size_psc=size_psc, reduction=reduction, spectrum=spectrum).build()


def build_dfgan_generator(
    input_channels: int = 1,
    scale: int = 2,
    *,
    width: int = DFGAN_GENERATOR_DEFAULTS["width"],
    n_groups: int = DFGAN_GENERATOR_DEFAULTS["n_groups"],
    n_blocks: int = DFGAN_GENERATOR_DEFAULTS["n_blocks"],
    gamma: float = DFGAN_GENERATOR_DEFAULTS["gamma"],
    size_psc: int = DFGAN_GENERATOR_DEFAULTS["size_psc"],
    reduction: int = DFGAN_GENERATOR_DEFAULTS["reduction"],
    spectrum: str = "fft",
) -> keras.Model:
    """Build the DFGAN generator: DFCAN with 5 groups × 10 blocks and spectrum gamma 0.1.

    Same contract as :func:`build_dfcan`.
    """
    return ModelConfig.dfgan_generator(input_channels, scale, width=width, n_groups=n_groups, n_blocks=n_blocks,
                                       gamma=gamma, size_psc=size_psc, reduction=reduction,
                                       spectrum=spectrum).build()


def build_dfgan_discriminator(
    input_shape: tuple[int, int, int] = (256, 256, 1),
    *,
    widths: tuple[int, ...] = (32, 64, 128, 256, 512),
    head_width: int = 32,
    dense_width: int = 256,
    leaky_slope: float = 0.1,
    downsample: bool = False,
) -> keras.Model:
    """Build the DFGAN discriminator on SR-size images (REFERENCE §3).

    conv3×3(32) → LeakyReLU(0.1); per width in ``widths`` two conv3×3 each
    followed by LeakyReLU(0.1); global average pooling; dense(256) →
    LeakyReLU(0.1); dense(1) → sigmoid. The authors' network never
    downsamples (``downsample=False``, the default); ``downsample=True``
    strides each block's second conv by 2, a named cheaper variant with the
    same parameters. Output: probability that the input is a real GT image.
    """
    if len(input_shape) != 3 or input_shape[-1] != 1:
        raise DfcanError(f"input_shape must be (H, W, 1). Received: input_shape={tuple(input_shape)}")
    inputs = keras.Input(tuple(input_shape), name="image")
    act = 0
    def lrelu(t):
        nonlocal act
        act += 1
        return keras.layers.LeakyReLU(negative_slope=leaky_slope, name=f"lrelu{act}")(t)

    x = lrelu(_conv(head_width, "head_conv")(inputs))
    for i, w in enumerate(widths):
        x = lrelu(_conv(w, f"block{i}_conv1")(x))
        x = lrelu(_conv(w, f"block{i}_conv2", strides=2 if downsample else 1)(x))
    x = keras.layers.GlobalAveragePooling2D(name="pool")(x)
    x = lrelu(keras.layers.Dense(dense_width, name="dense")(x))
    outputs = keras.layers.Dense(1, activation="sigmoid", name="output")(x)
    return keras.Model(inputs, outputs, name="dfgan_discriminator")


def build_from_config(config: ModelConfig) -> keras.Model:
    """Build the SR network described by ``config``."""
    return _sr_network(config, name=config.architecture)


def with_spectrum(model: keras.Model, config: ModelConfig, spectrum: str) -> keras.Model:
    """The same network with Fourier attention computed by ``spectrum`` ("fft" or "dft"), same weights."""
    if config.spectrum == spectrum:
        return model
    twin = build_from_config(config.replace(spectrum=spectrum))
    twin.set_weights(model.get_weights())
    return twin


# --- the authors' Keras 2.2.4 weight files ---------------------------------------------------

_REF_LAYER = re.compile(r"^(conv2d|dense)_(\d+)$")


def _weighted_layers(model: keras.Model) -> list[keras.layers.Layer]:
    """Conv2D layers in data-flow order (each attention's conv, squeeze, excite in place), then Dense layers."""
    convs, denses = [], []
    for layer in model.layers:
        if isinstance(layer, FourierChannelAttention):
            convs += [layer.attention_conv, layer.squeeze, layer.excite]
        elif isinstance(layer, keras.layers.Conv2D):
            convs.append(layer)
        elif isinstance(layer, keras.layers.Dense):
            denses.append(layer)
    return convs + denses


def load_reference_weights(model: keras.Model, path: str | os.PathLike) -> keras.Model:
    """Load the authors' published Keras 2.2.4 weights (``weights.best``, HDF5) into ``model``.

    The file's layers are named ``conv2d_N`` / ``dense_N`` with ``N`` counting
    creation in the authors' session; they are sorted by ``N`` (convs, then
    denses) and mapped in that order onto this model's convolutions in data
    flow order, then its dense layers. Every kernel and bias shape is checked
    before anything is assigned; the first mismatch raises
    :class:`DfcanError` naming both layers and shapes, and the model is left
    untouched. Files written by ``model.save`` (with a ``model_weights`` group)
    are accepted too.
    """
    import h5py
    import numpy as np

    path = Path(path)
    try:
        f = h5py.File(path, "r")
    except FileNotFoundError:
        raise DfcanError(f"{path}: no such file") from None
    except OSError as exc:
        raise DfcanError(f"{path}: not an HDF5 weights file ({exc})") from None
    with f:
        root = f["model_weights"] if "model_weights" in f else f
        if "layer_names" not in root.attrs:
            raise DfcanError(f"{path}: no 'layer_names' attribute; not a Keras 2 weights file")
        entries = []
        for raw in root.attrs["layer_names"]:
            lname = raw.decode() if isinstance(raw, bytes) else str(raw)
            group = root[lname]
            wnames = [w.decode() if isinstance(w, bytes) else str(w) for w in group.attrs.get("weight_names", [])]
            if not wnames:
                continue
            m = _REF_LAYER.match(lname)
            if not m:
                raise DfcanError(f"{path}: layer {lname!r} has weights but is neither conv2d_N nor dense_N")
            arrays = [np.asarray(group[w]) for w in wnames]
            entries.append((0 if m.group(1) == "conv2d" else 1, int(m.group(2)), lname, arrays))
    entries.sort(key=lambda e: (e[0], e[1]))
    targets = _weighted_layers(model)
    if len(entries) != len(targets):
        raise DfcanError(
            f"{path}: the file has {len(entries)} layers with weights but model {model.name!r} has "
            f"{len(targets)}; is it the right architecture, channel count and scale?"
        )
    for (_, _, lname, arrays), layer in zip(entries, targets, strict=True):
        expected = [tuple(w.shape) for w in layer.weights]
        found = [tuple(a.shape) for a in arrays]
        if expected != found:
            raise DfcanError(
                f"{path}: layer {lname!r} holds shapes {found} but {layer.path or layer.name!r} expects {expected}"
            )
    for (_, _, _, arrays), layer in zip(entries, targets, strict=True):
        layer.set_weights(arrays)
    return model


# --- `dfcan info` -----------------------------------------------------------------------------

def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--architecture", choices=["dfcan", "dfgan_generator", "dfgan_discriminator"],
                        default="dfcan")
    parser.add_argument("--input-channels", type=int, default=1)
    parser.add_argument("--scale", type=int, default=2)
    parser.add_argument("--summary", action="store_true", help="print the full Keras summary")


def run_from_args(args: argparse.Namespace) -> int:
    if args.architecture == "dfgan_discriminator":
        model = build_dfgan_discriminator()
    elif args.architecture == "dfcan":
        model = ModelConfig.dfcan(args.input_channels, args.scale).build()
    else:
        model = ModelConfig.dfgan_generator(args.input_channels, args.scale).build()
    if args.summary:
        model.summary()
    print(f"{model.name}: {model.count_params():,} parameters")
    return 0
