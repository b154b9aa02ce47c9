"""RCAN (Zhang et al., ECCV 2018): residual-in-residual groups of channel-attention blocks.

Architecture::

    conv 3×3 (F) ─┬─ G × RG → conv 3×3 ─ + → upsampler (as EDSR) → conv 3×3 (1)
                  └───────────────────────┘
    RG   = x + conv 3×3(B × RCAB(x))
    RCAB = x + CA(conv 3×3(ReLU(conv 3×3(x))))
    CA   = y · sigmoid(conv 1×1 (F) (ReLU(conv 1×1 (F/r) (GAP(y)))))

``"rcan"`` is the paper's network (10 groups × 20 RCAB × 64, reduction 16);
``"rcan_small"`` has DFCAN's 4 groups × 4 blocks × 64, so the two attention
mechanisms (spatial-frequency vs. plain global pooling) can be compared at the
same depth. The RGB mean shift is left out; output is linear.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, ClassVar

import keras

from dfcan_tf.nets.base import MAX_BLOCKS, NetConfig, conv, sr_input
from dfcan_tf.nets.edsr import upsampler

PAPER = {
    "authors": "Yulun Zhang, Kunpeng Li, Kai Li, Lichen Wang, Bineng Zhong, Yun Fu",
    "title": "Image Super-Resolution Using Very Deep Residual Channel Attention Networks",
    "venue": "European Conference on Computer Vision (ECCV)",
    "year": 2018,
    "doi": "10.1007/978-3-030-01234-2_18",
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
    "rcan": {"n_groups": 10, "n_blocks": 20},
    "rcan_small": {"n_groups": 4, "n_blocks": 4},
}


@dataclass(frozen=True)
class RCANConfig(NetConfig):
    """RCAN: ``n_groups`` residual groups of ``n_blocks`` RCAB, ``width`` features, CA ``reduction``.

    ``None`` fields take the variant's values (:data:`VARIANTS`).
    """

    ARCHITECTURES: ClassVar[tuple[str, ...]] = tuple(VARIANTS)

    architecture: str = "rcan"
    width: int = 64
    n_groups: int | None = None
    n_blocks: int | None = None
    reduction: int = 16

    def __post_init__(self) -> None:
        super().__post_init__()
        self._resolve_defaults(VARIANTS)
        self._check_int("width")
        self._check_int("n_groups", 1, MAX_BLOCKS)
        self._check_int("n_blocks", 1, MAX_BLOCKS)
        self._check_int("reduction", 1, self.width)

    @classmethod
    def paper(cls, input_channels: int = 1, scale: int = 2, **overrides: Any) -> RCANConfig:
        """RCAN with the paper's 10 groups × 20 blocks."""
        return cls(architecture="rcan", input_channels=input_channels, scale=scale, **overrides)

    @classmethod
    def small(cls, input_channels: int = 1, scale: int = 2, **overrides: Any) -> RCANConfig:
        """RCAN with DFCAN's 4 groups × 4 blocks."""
        return cls(architecture="rcan_small", input_channels=input_channels, scale=scale, **overrides)


def channel_attention(y: keras.KerasTensor, width: int, reduction: int, prefix: str) -> keras.KerasTensor:
    """RCAN's channel attention: global average pool → 1×1 squeeze/excite → rescale ``y``."""
    w = keras.layers.GlobalAveragePooling2D(keepdims=True, name=f"{prefix}_pool")(y)
    w = keras.layers.Conv2D(width // reduction, 1, activation="relu", name=f"{prefix}_squeeze")(w)
    w = keras.layers.Conv2D(width, 1, activation="sigmoid", name=f"{prefix}_excite")(w)
    return keras.layers.Multiply(name=f"{prefix}_scale")([y, w])


def build(config: RCANConfig) -> keras.Model:
    """Build RCAN: input ``(None, None, C_in)`` on the raw grid, output ``(N, s·H, s·W, 1)``."""
    c = config
    inputs = sr_input(c)
    head = conv(c.width, 3, "head_conv")(inputs)
    x = head
    for g in range(c.n_groups):
        group_in = x
        for b in range(c.n_blocks):
            p = f"group{g}_block{b}"
            y = conv(c.width, 3, f"{p}_conv1", activation="relu")(x)
            y = conv(c.width, 3, f"{p}_conv2")(y)
            y = channel_attention(y, c.width, c.reduction, f"{p}_ca")
            x = keras.layers.Add(name=f"{p}_add")([x, y])
        x = conv(c.width, 3, f"group{g}_conv")(x)
        x = keras.layers.Add(name=f"group{g}_add")([x, group_in])
    x = conv(c.width, 3, "body_conv")(x)
    x = keras.layers.Add(name="global_add")([x, head])
    x = upsampler(x, c.width, c.scale)
    outputs = conv(1, 3, "tail_conv")(x)
    return keras.Model(inputs, outputs, name=c.architecture)
