"""U-Nets of the comparison: CARE's U-Net (Weigert et al. 2018) and scU-Net (Jin et al. 2020).

Both work on the super-resolution grid: the raw input is upsampled bicubically
inside the model (:class:`~dfcan_tf.nets.base.BicubicUpsample`), padded to a
multiple of ``2**depth`` (:class:`~dfcan_tf.nets.base.PadToMultiple`) and the
result cropped back (:class:`~dfcan_tf.nets.base.CropLike`), so any input
size runs.

CARE (``"unet"``)
    CSBDeep's U-Net with CARE's defaults for 2D: depth 2, 32 first filters,
    kernel 5×5, two ReLU convolutions per level, 2×2 max pooling, nearest
    upsampling and concatenation; each level's last convolution (and the
    bottleneck's) has half the level's filters, so the upsampled map matches
    the skip. A 1×1 linear convolution gives the output, to which the
    (upsampled) input is added (``residual``), then a linear activation. For
    SIM input (9 frames) the residual term is the mean of the upsampled frames
    (the wide-field image), since CARE's identity residual needs as many input
    as output channels.
scU-Net (``"scunet"``)
    Two U-Nets in sequence: a denoising U-Net on the raw grid maps the
    ``C_in`` frames to ``C_in`` frames (residual), they are upsampled
    bicubically, and a reconstruction U-Net maps them to the SR image (linear
    output). Each is a classic U-Net (Ronneberger et al. 2015): depth 4, 64
    first filters doubling per level, two 3×3 ReLU convolutions per level,
    2×2 max pooling, 2×2 transposed-convolution upsampling to the level's
    filters, concatenation. ``denoise=False`` keeps only the reconstruction
    U-Net (Jin et al.'s U-Net-SIM). Jin et al. give the cascade but not all
    layer sizes; the choices here are listed in ``docs/networks.md``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, ClassVar

import keras

from dfcan_tf.nets.base import (
    MAX_WIDTH,
    PAD_MODES,
    BicubicUpsample,
    CropLike,
    NetConfig,
    PadToMultiple,
    _check,
    conv,
    residual_source,
    sr_input,
)

PAPER = {
    "authors": "Martin Weigert, Uwe Schmidt, Tobias Boothe, Andreas Müller, Alexandr Dibrov, Akanksha Jain, "
               "Benjamin Wilhelm, Deborah Schmidt, Coleman Broaddus, Siân Culley, Mauricio Rocha-Martins, "
               "Fabián Segovia-Miranda, Caren Norden, Ricardo Henriques, Marino Zerial, Michele Solimena, "
               "Jochen Rink, Pavel Tomancak, Loic Royer, Florian Jug, Eugene W. Myers",
    "title": "Content-aware image restoration: pushing the limits of fluorescence microscopy",
    "venue": "Nature Methods 15:1090-1097",
    "year": 2018,
    "doi": "10.1038/s41592-018-0216-7",
}

RECIPE: dict[str, Any] = {
    "loss": "mae",
    "optimizer": "adam",
    "learning_rate": 4e-4,
    "batch_size": 16,
    "patch_size": 128,
    "patch_grid": "sr",
    "notes": "CSBDeep defaults: MAE (MSE also offered), Adam 4e-4, batch 16, 100 epochs × 400 steps, "
             "learning rate reduced on plateau",
}

SCUNET_PAPER = {
    "authors": "Luhong Jin, Bei Liu, Fenqiang Zhao, Stephen Hahn, Bowei Dong, Ruiyan Song, Timothy C. Elston, "
               "Yingke Xu, Klaus M. Hahn",
    "title": "Deep learning enables structured illumination microscopy with low light levels and enhanced speed",
    "venue": "Nature Communications 11:1934",
    "year": 2020,
    "doi": "10.1038/s41467-020-15784-x",
}

SCUNET_RECIPE: dict[str, Any] = {
    "loss": "mse",
    "optimizer": "adam",
    "learning_rate": 1e-4,
    "batch_size": 4,
    "patch_size": 128,
    "patch_grid": "sr",
    "notes": "our reading of Jin et al.: each U-Net trained with MSE and Adam; the denoising U-Net on "
             "low/high-light raw frame pairs, then the reconstruction U-Net on its outputs",
}

PAPERS = {"unet": PAPER, "scunet": SCUNET_PAPER}
RECIPES = {"unet": RECIPE, "scunet": SCUNET_RECIPE}


@dataclass(frozen=True)
class UNetConfig(NetConfig):
    """CARE U-Net on the bicubic-upsampled input (defaults: CARE's 2D network).

    Parameters
    ----------
    depth, first_filters, kernel_size, convs_per_level
        U-Net depth, filters of the first level (doubling per level), kernel size, convolutions per level.
    residual
        Add the upsampled input (its channel mean for several channels) to the output.
    pad_mode
        ``"reflect"`` or ``"zeros"``: how the upsampled image is padded to a multiple of ``2**depth``.
    """

    ARCHITECTURES: ClassVar[tuple[str, ...]] = ("unet",)

    architecture: str = "unet"
    depth: int = 2
    first_filters: int = 32
    kernel_size: int = 5
    convs_per_level: int = 2
    residual: bool = True
    pad_mode: str = "reflect"

    def __post_init__(self) -> None:
        super().__post_init__()
        self._check_int("depth", 1, 6)
        self._check_int("first_filters")
        _check_widths(self.first_filters, self.depth)
        self._check_odd_kernel("kernel_size")
        self._check_int("convs_per_level", 1, 8)
        self._check_bool("residual")
        self._check_choice("pad_mode", PAD_MODES)


@dataclass(frozen=True)
class ScUNetConfig(NetConfig):
    """scU-Net: denoising U-Net on the raw frames, bicubic upsampling, reconstruction U-Net.

    Parameters
    ----------
    depth, first_filters, kernel_size, convs_per_level
        Shape of both U-Nets (classic U-Net: 4, 64, 3, 2).
    denoise
        Include the denoising U-Net (``False``: only the reconstruction U-Net, i.e. U-Net-SIM).
    pad_mode
        ``"reflect"`` or ``"zeros"`` padding to a multiple of ``2**depth``.
    """

    ARCHITECTURES: ClassVar[tuple[str, ...]] = ("scunet",)

    architecture: str = "scunet"
    depth: int = 4
    first_filters: int = 64
    kernel_size: int = 3
    convs_per_level: int = 2
    denoise: bool = True
    pad_mode: str = "reflect"

    def __post_init__(self) -> None:
        super().__post_init__()
        self._check_int("depth", 1, 6)
        self._check_int("first_filters")
        _check_widths(self.first_filters, self.depth)
        self._check_odd_kernel("kernel_size")
        self._check_int("convs_per_level", 1, 8)
        self._check_bool("denoise")
        self._check_choice("pad_mode", PAD_MODES)


def _check_widths(first: int, depth: int) -> None:
    _check(first * 2**depth <= MAX_WIDTH,
           f"first_filters · 2**depth must be at most {MAX_WIDTH}. Received: first_filters={first}, depth={depth}")


def care_unet(x, depth: int, first: int, kernel: int, convs: int, prefix: str):
    """CSBDeep's ``unet_block``: ReLU convs, max pooling, nearest upsampling, halved last conv per level."""
    skips = []
    for n in range(depth):
        for i in range(convs):
            x = conv(first * 2**n, kernel, f"{prefix}down{n}_conv{i}", activation="relu")(x)
        skips.append(x)
        x = keras.layers.MaxPooling2D(2, name=f"{prefix}down{n}_pool")(x)
    for i in range(convs - 1):
        x = conv(first * 2**depth, kernel, f"{prefix}middle_conv{i}", activation="relu")(x)
    x = conv(first * 2 ** max(0, depth - 1), kernel, f"{prefix}middle_conv{convs - 1}", activation="relu")(x)
    for n in reversed(range(depth)):
        x = keras.layers.UpSampling2D(2, name=f"{prefix}up{n}_upsample")(x)
        x = keras.layers.Concatenate(name=f"{prefix}up{n}_concat")([x, skips[n]])
        for i in range(convs - 1):
            x = conv(first * 2**n, kernel, f"{prefix}up{n}_conv{i}", activation="relu")(x)
        x = conv(first * 2 ** max(0, n - 1), kernel, f"{prefix}up{n}_conv{convs - 1}", activation="relu")(x)
    return x


def classic_unet(x, depth: int, first: int, kernel: int, convs: int, prefix: str):
    """Ronneberger's U-Net ("same" padding): ReLU convs, max pooling, 2×2 up-convolutions, concatenation."""
    skips = []
    for n in range(depth):
        for i in range(convs):
            x = conv(first * 2**n, kernel, f"{prefix}down{n}_conv{i}", activation="relu")(x)
        skips.append(x)
        x = keras.layers.MaxPooling2D(2, name=f"{prefix}down{n}_pool")(x)
    for i in range(convs):
        x = conv(first * 2**depth, kernel, f"{prefix}middle_conv{i}", activation="relu")(x)
    for n in reversed(range(depth)):
        x = keras.layers.Conv2DTranspose(first * 2**n, 2, strides=2, name=f"{prefix}up{n}_upconv")(x)
        x = keras.layers.Concatenate(name=f"{prefix}up{n}_concat")([skips[n], x])
        for i in range(convs):
            x = conv(first * 2**n, kernel, f"{prefix}up{n}_conv{i}", activation="relu")(x)
    return x


def build(config: UNetConfig | ScUNetConfig) -> keras.Model:
    """Build the CARE U-Net (scU-Net for a :class:`ScUNetConfig`).

    Input ``(None, None, C_in)`` on the raw grid, output ``(N, s·H, s·W, 1)``.
    """
    if isinstance(config, ScUNetConfig):
        return build_scunet(config)
    c = config
    inputs = sr_input(c)
    up = BicubicUpsample(c.scale, name="bicubic")(inputs)
    x = PadToMultiple(2**c.depth, c.pad_mode, name="pad")(up)
    x = care_unet(x, c.depth, c.first_filters, c.kernel_size, c.convs_per_level, "")
    x = conv(1, 1, "output_conv")(x)
    x = CropLike(name="crop")([x, up])
    if c.residual:
        x = keras.layers.Add(name="residual")([x, residual_source(up, c.input_channels, "input_mean")])
    return keras.Model(inputs, x, name=c.architecture)


def build_scunet(config: ScUNetConfig) -> keras.Model:
    """Build scU-Net: input ``(None, None, C_in)`` on the raw grid, output ``(N, s·H, s·W, 1)``."""
    c = config
    inputs = sr_input(c)
    frames = inputs
    if c.denoise:
        x = PadToMultiple(2**c.depth, c.pad_mode, name="denoise_pad")(inputs)
        x = classic_unet(x, c.depth, c.first_filters, c.kernel_size, c.convs_per_level, "denoise_")
        x = conv(c.input_channels, 1, "denoise_output_conv")(x)
        x = CropLike(name="denoise_crop")([x, inputs])
        frames = keras.layers.Add(name="denoise_residual")([x, inputs])
    up = BicubicUpsample(c.scale, name="bicubic")(frames)
    x = PadToMultiple(2**c.depth, c.pad_mode, name="sr_pad")(up)
    x = classic_unet(x, c.depth, c.first_filters, c.kernel_size, c.convs_per_level, "sr_")
    x = conv(1, 1, "sr_output_conv")(x)
    outputs = CropLike(name="sr_crop")([x, up])
    return keras.Model(inputs, outputs, name=c.architecture)
