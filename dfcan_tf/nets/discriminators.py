"""The DFGAN discriminator: configuration and builder (``docs/architecture.md#dfgan-discriminator``)."""

from __future__ import annotations

import dataclasses
import itertools
from dataclasses import dataclass, field
from typing import Any

import keras

from dfcan_tf.config import _check, _check_keys
from dfcan_tf.errors import DfcanError


def _conv(filters: int, name: str, kernel_size: int = 3, **kwargs) -> keras.layers.Conv2D:
    return keras.layers.Conv2D(filters, kernel_size, padding="same", name=name, **kwargs)


@dataclass(frozen=True)
class DiscriminatorConfig:
    """DFGAN discriminator (docs/architecture.md#dfgan-discriminator): widths per block, LeakyReLU slope, optional striding.

    ``downsample=False`` is the authors' network (every conv at stride 1);
    ``downsample=True`` is a named cheaper variant that strides the second
    conv of each block by 2 (same parameter count).
    """

    input_size: int = 256
    widths: tuple[int, ...] = field(default=(32, 64, 128, 256, 512))
    head_width: int = 32
    dense_width: int = 256
    leaky_slope: float = 0.1
    downsample: bool = False
    version: int = 1

    def __post_init__(self) -> None:
        object.__setattr__(self, "widths", tuple(int(w) for w in self.widths))
        _check(self.input_size >= 8, f"input_size must be at least 8. Received: input_size={self.input_size}")
        _check(len(self.widths) >= 1 and all(w >= 1 for w in self.widths),
               f"widths must be positive integers. Received: widths={self.widths}")
        _check(self.input_size <= 16384, f"input_size must be at most 16384. Received: input_size={self.input_size}")
        _check(len(self.widths) <= 16 and max(self.widths) <= 4096 and 1 <= self.head_width <= 4096
               and 1 <= self.dense_width <= 65536,
               f"discriminator sizes out of range (at most 16 blocks of width <= 4096, head_width <= 4096, "
               f"dense_width <= 65536). Received: widths={self.widths}, head_width={self.head_width}, "
               f"dense_width={self.dense_width}")
        _check(0 <= self.leaky_slope < 1, f"leaky_slope must be in [0, 1). Received: leaky_slope={self.leaky_slope}")

    def to_dict(self) -> dict[str, Any]:
        d = dataclasses.asdict(self)
        d["widths"] = list(self.widths)
        return d

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> DiscriminatorConfig:
        """Rebuild from :meth:`to_dict` output; unknown keys are an error."""
        return cls(**_check_keys(cls, data, "discriminator"))


@keras.saving.register_keras_serializable(package="dfcan_tf")
class MaxLeakyReLU(keras.layers.Layer):
    """LeakyReLU written as ``max(x, slope·x)`` (0 < slope < 1): the same function.

    DFGAN's discriminator uses it instead of ``keras.layers.LeakyReLU``:
    TF's Grappler remapper fails on Conv2D + BiasAdd + LeakyRelu in the
    generator update's graph ("remapper failed: ... LeakyReluGrad") and then
    optimises none of that graph.
    """

    def __init__(self, slope: float = 0.1, **kwargs):
        super().__init__(**kwargs)
        self.slope = float(slope)

    def call(self, inputs):
        return keras.ops.maximum(inputs, self.slope * inputs)

    def compute_output_shape(self, input_shape):
        return input_shape

    def get_config(self):
        return {**super().get_config(), "slope": self.slope}


def build_dfgan_discriminator(
    input_shape: tuple[int, int, int] = (256, 256, 1),
    *,
    widths: tuple[int, ...] = (32, 64, 128, 256, 512),
    head_width: int = 32,
    dense_width: int = 256,
    leaky_slope: float = 0.1,
    downsample: bool = False,
) -> keras.Model:
    """Build the DFGAN discriminator on SR-size images (``docs/architecture.md#dfgan-discriminator``).

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
    names = itertools.count(1)

    def lrelu(t):
        return MaxLeakyReLU(leaky_slope, name=f"lrelu{next(names)}")(t)

    x = lrelu(_conv(head_width, "head_conv")(inputs))
    for i, w in enumerate(widths):
        x = lrelu(_conv(w, f"block{i}_conv1")(x))
        x = lrelu(_conv(w, f"block{i}_conv2", strides=2 if downsample else 1)(x))
    x = keras.layers.GlobalAveragePooling2D(name="pool")(x)
    x = lrelu(keras.layers.Dense(dense_width, name="dense")(x))
    outputs = keras.layers.Dense(1, activation="sigmoid", name="output")(x)
    return keras.Model(inputs, outputs, name="dfgan_discriminator")


def build_discriminator(config: DiscriminatorConfig) -> keras.Model:
    """Build the discriminator ``config`` describes, on ``input_size``² SR patches."""
    return build_dfgan_discriminator(
        (config.input_size, config.input_size, 1), widths=config.widths, head_width=config.head_width,
        dense_width=config.dense_width, leaky_slope=config.leaky_slope, downsample=config.downsample,
    )
