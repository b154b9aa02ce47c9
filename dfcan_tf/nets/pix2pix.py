"""Pix2Pix (Isola et al., CVPR 2017): U-Net generator and 70×70 PatchGAN discriminator.

Generator (``"pix2pix"``, the paper's "U-Net 256", 8 levels)
    The raw input is upsampled bicubically inside the model (Pix2Pix maps
    images of equal size), zero-padded to a multiple of ``2**depth`` and
    cropped back at the end. Encoder ``C64-C128-C256-C512-C512-C512-C512-C512``:
    4×4 convolutions with stride 2, LeakyReLU(0.2) before each (except the
    first), batch norm after each except the first and the innermost.
    Decoder mirrors it with ReLU → 4×4 transposed convolution (stride 2) →
    batch norm, dropout 0.5 on the three levels below the innermost, and each
    level's output concatenated with that level's input (skip). As in the
    authors' code, convolutions followed by batch norm have no bias. The
    paper ends with tanh on images in [-1, 1]; here the data are in [0, 1] and
    the default ``output_activation="sigmoid"`` equals ``(tanh(z/2) + 1)/2``,
    the same map rescaled (``"tanh"`` and ``"linear"`` are available).
PatchGAN (``"patchgan"``, 70×70 receptive field for ``n_layers=3``)
    ``C64-C128-C256-C512`` 4×4 convolutions (stride 2, 2, 2, 1; padding 1 as
    in the authors' code), LeakyReLU(0.2), batch norm except on the first,
    then a 4×4 convolution to one channel of logits per patch. Input: the
    condition (the bicubic-upsampled raw input, ``C_in`` channels)
    concatenated with an SR-grid image (1 channel); on 256×256 the output is
    30×30.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, ClassVar

import keras

from dfcan_tf.nets.base import (
    BicubicUpsample,
    CropLike,
    NetConfig,
    PadToMultiple,
    sr_input,
)

PAPER = {
    "authors": "Phillip Isola, Jun-Yan Zhu, Tinghui Zhou, Alexei A. Efros",
    "title": "Image-to-Image Translation with Conditional Adversarial Networks",
    "venue": "IEEE Conference on Computer Vision and Pattern Recognition (CVPR)",
    "year": 2017,
    "doi": "10.1109/CVPR.2017.632",
}

RECIPE: dict[str, Any] = {
    "loss": "mae",
    "loss_weight": 100.0,
    "adversarial_loss": "binary_crossentropy_from_logits",
    "adversarial_weight": 1.0,
    "optimizer": "adam",
    "learning_rate": 2e-4,
    "beta_1": 0.5,
    "batch_size": 1,
    "patch_size": 256,
    "patch_grid": "sr",
    "notes": "generator loss = cGAN loss + 100 × L1; discriminator loss halved; one D step per G step; "
             "random jitter (resize to 286, crop 256) and mirroring",
}
PAPERS = {"pix2pix": PAPER, "patchgan": PAPER}
RECIPES = {"pix2pix": RECIPE, "patchgan": RECIPE}
OUTPUT_ACTIVATIONS = ("sigmoid", "tanh", "linear")


@dataclass(frozen=True)
class Pix2PixConfig(NetConfig):
    """Pix2Pix U-Net generator: ``depth`` levels (8 = "U-Net 256"), ``width`` first filters (64, ×2 up to ×8)."""

    ARCHITECTURES: ClassVar[tuple[str, ...]] = ("pix2pix",)

    architecture: str = "pix2pix"
    depth: int = 8
    width: int = 64
    dropout: float = 0.5
    output_activation: str = "sigmoid"

    def __post_init__(self) -> None:
        super().__post_init__()
        self._check_int("depth", 2, 10)
        self._check_int("width", 1, 128)
        value = self.dropout
        if isinstance(value, (int, float)) and not isinstance(value, bool) and value == 0:
            object.__setattr__(self, "dropout", 0.0)
        else:
            self._check_float("dropout", 0.0, 0.9)
        self._check_choice("output_activation", OUTPUT_ACTIVATIONS)


@dataclass(frozen=True)
class PatchGANConfig(NetConfig):
    """PatchGAN discriminator: ``n_layers`` strided convolutions (3 = 70×70 patches), ``width`` first filters.

    ``input_channels`` is the generator's input channels (the condition); the
    discriminator sees ``input_channels + 1`` channels. ``scale`` is the
    generator's and does not change the discriminator.
    """

    ARCHITECTURES: ClassVar[tuple[str, ...]] = ("patchgan",)

    architecture: str = "patchgan"
    width: int = 64
    n_layers: int = 3

    def __post_init__(self) -> None:
        super().__post_init__()
        self._check_int("width", 1, 128)
        self._check_int("n_layers", 1, 6)


def _width(base: int, level: int) -> int:
    return base * min(2**level, 8)


def build_generator(config: Pix2PixConfig) -> keras.Model:
    """Build the U-Net generator: input ``(None, None, C_in)`` on the raw grid, output ``(N, s·H, s·W, 1)``."""
    c = config
    inputs = sr_input(c)
    up = BicubicUpsample(c.scale, name="bicubic")(inputs)
    x = PadToMultiple(2**c.depth, "zeros", name="pad")(up)
    # Encoder: level l maps its input to _width(width, l) channels at half the size.
    skips = []
    for level in range(c.depth):
        skips.append(x)
        if level > 0:
            x = keras.layers.LeakyReLU(0.2, name=f"down{level}_lrelu")(x)
        x = keras.layers.Conv2D(_width(c.width, level), 4, strides=2, padding="same", use_bias=False,
                                name=f"down{level}_conv")(x)
        if 0 < level < c.depth - 1:
            x = keras.layers.BatchNormalization(epsilon=1e-5, momentum=0.9, name=f"down{level}_bn")(x)
    # Decoder: level l maps back to the channels of its input and concatenates that input.
    for level in reversed(range(c.depth)):
        x = keras.layers.ReLU(name=f"up{level}_relu")(x)
        if level == 0:
            x = keras.layers.Conv2DTranspose(1, 4, strides=2, padding="same", name="up0_conv")(x)
            break
        x = keras.layers.Conv2DTranspose(_width(c.width, level - 1), 4, strides=2, padding="same", use_bias=False,
                                         name=f"up{level}_conv")(x)
        x = keras.layers.BatchNormalization(epsilon=1e-5, momentum=0.9, name=f"up{level}_bn")(x)
        if c.dropout > 0 and 4 <= level < c.depth - 1:
            x = keras.layers.Dropout(c.dropout, name=f"up{level}_dropout")(x)
        x = keras.layers.Concatenate(name=f"up{level}_concat")([skips[level], x])
    x = keras.layers.Activation(c.output_activation, name="output_activation")(x)
    outputs = CropLike(name="crop")([x, up])
    return keras.Model(inputs, outputs, name=c.architecture)


def build_discriminator(config: PatchGANConfig) -> keras.Model:
    """Build the PatchGAN: input ``(None, None, C_in + 1)`` on the SR grid, output patch logits ``(N, h, w, 1)``."""
    c = config
    inputs = keras.Input((None, None, c.input_channels + 1), name="input")

    def conv4(t, filters, stride, name, bias):
        t = keras.layers.ZeroPadding2D(1, name=f"{name}_pad")(t)
        return keras.layers.Conv2D(filters, 4, strides=stride, use_bias=bias, name=f"{name}_conv")(t)

    x = keras.layers.LeakyReLU(0.2, name="layer0_lrelu")(conv4(inputs, c.width, 2, "layer0", True))
    for n in range(1, c.n_layers + 1):
        stride = 2 if n < c.n_layers else 1
        x = conv4(x, _width(c.width, n), stride, f"layer{n}", False)
        x = keras.layers.BatchNormalization(epsilon=1e-5, momentum=0.9, name=f"layer{n}_bn")(x)
        x = keras.layers.LeakyReLU(0.2, name=f"layer{n}_lrelu")(x)
    outputs = conv4(x, 1, 1, "logits", True)
    return keras.Model(inputs, outputs, name=c.architecture)


def build(config: Pix2PixConfig | PatchGANConfig) -> keras.Model:
    """Build the generator for a :class:`Pix2PixConfig`, the discriminator for a :class:`PatchGANConfig`."""
    if isinstance(config, PatchGANConfig):
        return build_discriminator(config)
    return build_generator(config)
