"""EDSR (Lim et al., CVPRW 2017): residual blocks without batch norm, sub-pixel upsampling at the end.

Architecture::

    conv 3×3 (F) ─┬─ B × [conv 3×3 → ReLU → conv 3×3 → ×res_scale → + input] → conv 3×3 ─ + ─→
                  └──────────────────────────────────────────────────────────────────────┘
    → upsampler (×2, ×3: conv 3×3 (s²F) → pixel shuffle; ×4: twice ×2) → conv 3×3 (1)

Two variants with the paper's sizes: ``"edsr"`` is the baseline (16 blocks ×
64 features, no residual scaling), ``"edsr_paper"`` the full model (32 blocks
× 256 features, residual scaling 0.1). Fields left ``None`` take the
variant's values. The RGB mean shift of the original code is left out
(single-channel microscopy data, normalised to [0, 1]); output is linear.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, ClassVar

import keras

from dfcan_tf.nets.base import MAX_BLOCKS, NetConfig, conv, sr_input
from dfcan_tf.nets.layers import PixelShuffle

PAPER = {
    "authors": "Bee Lim, Sanghyun Son, Heewon Kim, Seungjun Nah, Kyoung Mu Lee",
    "title": "Enhanced Deep Residual Networks for Single Image Super-Resolution",
    "venue": "IEEE Conference on Computer Vision and Pattern Recognition Workshops (CVPRW)",
    "year": 2017,
    "doi": "10.1109/CVPRW.2017.151",
}

RECIPE: dict[str, Any] = {
    "loss": "mae",
    "optimizer": "adam",
    "learning_rate": 1e-4,
    "batch_size": 16,
    "patch_size": 48,
    "patch_grid": "input",
    "notes": "Adam beta1 0.9, beta2 0.999, eps 1e-8; learning rate halved every 2e5 updates; "
             "random flips and 90-degree rotations",
}

VARIANTS: dict[str, dict[str, Any]] = {
    "edsr": {"width": 64, "n_blocks": 16, "res_scale": 1.0},
    "edsr_paper": {"width": 256, "n_blocks": 32, "res_scale": 0.1},
}


@dataclass(frozen=True)
class EDSRConfig(NetConfig):
    """EDSR: ``width`` features, ``n_blocks`` residual blocks, residual scaling ``res_scale``.

    ``None`` fields take the variant's values (:data:`VARIANTS`).
    """

    ARCHITECTURES: ClassVar[tuple[str, ...]] = tuple(VARIANTS)

    architecture: str = "edsr"
    width: int | None = None
    n_blocks: int | None = None
    res_scale: float | None = None

    def __post_init__(self) -> None:
        super().__post_init__()
        self._resolve_defaults(VARIANTS)
        self._check_int("width")
        self._check_int("n_blocks", 1, MAX_BLOCKS)
        self._check_float("res_scale", 0.0, 1.0)

    @classmethod
    def baseline(cls, input_channels: int = 1, scale: int = 2, **overrides: Any) -> EDSRConfig:
        """The baseline EDSR (16 × 64)."""
        return cls(architecture="edsr", input_channels=input_channels, scale=scale, **overrides)

    @classmethod
    def paper(cls, input_channels: int = 1, scale: int = 2, **overrides: Any) -> EDSRConfig:
        """The full-size EDSR (32 × 256, residual scaling 0.1)."""
        return cls(architecture="edsr_paper", input_channels=input_channels, scale=scale, **overrides)


def upsampler(x: keras.KerasTensor, width: int, scale: int, prefix: str = "upsample") -> keras.KerasTensor:
    """EDSR/RCAN upsampler: conv to ``s²·width`` + pixel shuffle (×4 as two ×2 stages; ×1 nothing)."""
    stages = [2, 2] if scale == 4 else ([] if scale == 1 else [scale])
    for i, s in enumerate(stages):
        x = conv(width * s * s, 3, f"{prefix}{i}_conv")(x)
        x = PixelShuffle(s, name=f"{prefix}{i}_shuffle")(x)
    return x


def build(config: EDSRConfig) -> keras.Model:
    """Build EDSR: input ``(None, None, C_in)`` on the raw grid, output ``(N, s·H, s·W, 1)``."""
    c = config
    inputs = sr_input(c)
    head = conv(c.width, 3, "head_conv")(inputs)
    x = head
    for b in range(c.n_blocks):
        y = conv(c.width, 3, f"block{b}_conv1", activation="relu")(x)
        y = conv(c.width, 3, f"block{b}_conv2")(y)
        if c.res_scale != 1.0:
            y = keras.layers.Rescaling(c.res_scale, name=f"block{b}_scale")(y)
        x = keras.layers.Add(name=f"block{b}_add")([x, y])
    x = conv(c.width, 3, "body_conv")(x)
    x = keras.layers.Add(name="global_add")([x, head])
    x = upsampler(x, c.width, c.scale)
    outputs = conv(1, 3, "tail_conv")(x)
    return keras.Model(inputs, outputs, name=c.architecture)
