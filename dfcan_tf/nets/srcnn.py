"""SRCNN (Dong et al., ECCV 2014 / TPAMI 2016): three convolutions on the bicubic-upsampled image.

Architecture (the paper's basic 9-1-5 network, ``n1 = 64``, ``n2 = 32``)::

    bicubic ×s → conv 9×9 (64) → ReLU → conv 1×1 (32) → ReLU → conv 5×5 (1)

The paper trains and tests without padding (the output is 12 pixels smaller
per side pair); here every convolution is "same"-padded so the output covers
the whole ``s·H × s·W`` grid, as every other network of the comparison does.
For SIM input (9 frames) the first convolution takes all upsampled frames.
The output is linear, as in the paper.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, ClassVar

import keras

from dfcan_tf.nets.base import BicubicUpsample, NetConfig, conv, sr_input

PAPER = {
    "authors": "Chao Dong, Chen Change Loy, Kaiming He, Xiaoou Tang",
    "title": "Image Super-Resolution Using Deep Convolutional Networks",
    "venue": "IEEE Transactions on Pattern Analysis and Machine Intelligence 38(2):295-307 (first version ECCV 2014)",
    "year": 2016,
    "doi": "10.1109/TPAMI.2015.2439281",
}

# The source paper's training recipe. patch_size is on the super-resolution grid (33×33 sub-images).
RECIPE: dict[str, Any] = {
    "loss": "mse",
    "optimizer": "sgd",
    "learning_rate": 1e-4,
    "batch_size": 128,
    "patch_size": 33,
    "patch_grid": "sr",
    "notes": "learning rate 1e-5 for the last layer; weights from N(0, 0.001); "
             "no padding in the paper (21×21 output per 33×33 sub-image)",
}


@dataclass(frozen=True)
class SRCNNConfig(NetConfig):
    """SRCNN: filters ``n1``, ``n2`` and kernel sizes ``f1``, ``f2``, ``f3`` (paper: 64, 32, 9-1-5).

    ``f2 = 5`` gives the paper's better-performing 9-5-5 variant.
    """

    ARCHITECTURES: ClassVar[tuple[str, ...]] = ("srcnn",)

    architecture: str = "srcnn"
    n1: int = 64
    n2: int = 32
    f1: int = 9
    f2: int = 1
    f3: int = 5

    def __post_init__(self) -> None:
        super().__post_init__()
        for name in ("n1", "n2"):
            self._check_int(name)
        for name in ("f1", "f2", "f3"):
            self._check_odd_kernel(name)


def build(config: SRCNNConfig) -> keras.Model:
    """Build SRCNN: input ``(None, None, C_in)`` on the raw grid, output ``(N, s·H, s·W, 1)``."""
    c = config
    inputs = sr_input(c)
    x = BicubicUpsample(c.scale, name="bicubic")(inputs)
    x = conv(c.n1, c.f1, "patch_extraction", activation="relu")(x)
    x = conv(c.n2, c.f2, "nonlinear_mapping", activation="relu")(x)
    outputs = conv(1, c.f3, "reconstruction")(x)
    return keras.Model(inputs, outputs, name=c.architecture)
