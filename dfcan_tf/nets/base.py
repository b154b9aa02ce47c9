"""Shared parts of the comparison networks: the configuration base class and registered layers.

Every comparison network follows DFCAN's model contract: input
``keras.Input((None, None, C_in))`` on the raw grid (1 channel for wide-field
input, 9 for linear SIM raw frames), output ``(N, s·H, s·W, 1)``. Networks that
work on the super-resolution grid (SRCNN, the U-Nets, Pix2Pix) upsample inside
the model with :class:`BicubicUpsample`; U-Nets pad to a multiple of
``2**depth`` with :class:`PadToMultiple` and crop back with :class:`CropLike`.
All layers here are registered (``package="dfcan_tf"``), so models reload
with ``safe_mode=True`` and export to ONNX and TFLite builtins.

Bicubic upsampling
------------------
TFLite has no builtin bicubic resize (``tf.image.resize(..., "bicubic")``
needs the Select TF op ``ResizeBicubic``), so :class:`BicubicUpsample` writes
the integer-factor resize as a fixed convolution: for output pixel ``s·i + r``
the source position is ``i + (r + 0.5)/s - 0.5`` (half-pixel centres), whose
four Keys-cubic taps (``a = -0.5``) lie within ``i - 2 … i + 2``. The image is
edge-padded by 2, convolved with a constant 5×5 kernel giving ``s²`` phases per
channel, and rearranged with ``depth_to_space``. In the interior this equals
``tf.image.resize(method="bicubic")``; at the two outermost pixels TensorFlow
drops out-of-image taps and renormalises, whereas here the edge pixel is
repeated (as ONNX ``Resize`` with ``cubic`` / ``exclude_outside=0``).
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any, ClassVar

import keras
import numpy as np
import tensorflow as tf

from dfcan_tf.errors import DfcanError

PACKAGE = "dfcan_tf"
MAX_WIDTH = 1024
MAX_BLOCKS = 256
MAX_SCALE = 4
MAX_CHANNELS = 64
PAD_MODES = ("reflect", "zeros")


def _check(condition: bool, message: str) -> None:
    """Raise :class:`DfcanError` with ``message`` unless ``condition`` holds."""
    if not condition:
        raise DfcanError(message)


def _is_int(value: Any) -> bool:
    return isinstance(value, (int, np.integer)) and not isinstance(value, bool)


@dataclass(frozen=True)
class NetConfig:
    """Base of the comparison networks' configurations: architecture, input channels, scale.

    Subclasses add their own fields (with the source paper's defaults), list
    the architecture names they accept in ``ARCHITECTURES`` and validate their
    fields in ``__post_init__`` after calling this one.

    Parameters
    ----------
    architecture
        Name of the network (one of the subclass's ``ARCHITECTURES``).
    input_channels
        1 (wide-field input) or 9 (linear SIM raw frames); any 1 … 64.
    scale
        Output/input size ratio, 1 … 4 (the paper uses 2 and 3).
    """

    ARCHITECTURES: ClassVar[tuple[str, ...]] = ()

    architecture: str
    input_channels: int = 1
    scale: int = 2

    def __post_init__(self) -> None:
        known = type(self).ARCHITECTURES
        _check(isinstance(self.architecture, str) and (not known or self.architecture in known),
               f"architecture must be one of {known}. Received: architecture={self.architecture!r}")
        self._check_int("input_channels", 1, MAX_CHANNELS)
        self._check_int("scale", 1, MAX_SCALE)

    # --- validation helpers ------------------------------------------------------------------
    def _check_int(self, name: str, low: int = 1, high: int = MAX_WIDTH) -> None:
        """``getattr(self, name)`` must be an integer in ``[low, high]``."""
        value = getattr(self, name)
        _check(_is_int(value) and low <= value <= high,
               f"{name} must be an integer between {low} and {high}. Received: {name}={value!r}")
        object.__setattr__(self, name, int(value))

    def _check_float(self, name: str, low: float, high: float) -> None:
        """``getattr(self, name)`` must be a number in ``(low, high]``."""
        value = getattr(self, name)
        _check(isinstance(value, (int, float, np.floating)) and not isinstance(value, bool) and low < value <= high,
               f"{name} must be a number in ({low}, {high}]. Received: {name}={value!r}")
        object.__setattr__(self, name, float(value))

    def _check_choice(self, name: str, choices: tuple[Any, ...]) -> None:
        value = getattr(self, name)
        _check(value in choices, f"{name} must be one of {choices}. Received: {name}={value!r}")

    def _check_bool(self, name: str) -> None:
        value = getattr(self, name)
        _check(isinstance(value, (bool, np.bool_)), f"{name} must be true or false. Received: {name}={value!r}")
        object.__setattr__(self, name, bool(value))

    def _check_odd_kernel(self, name: str) -> None:
        self._check_int(name, 1, 15)
        _check(getattr(self, name) % 2 == 1, f"{name} must be odd. Received: {name}={getattr(self, name)}")

    def _resolve_defaults(self, defaults: dict[str, dict[str, Any]]) -> None:
        """Fill fields left ``None`` from ``defaults[self.architecture]`` (per-variant defaults)."""
        for name, value in defaults.get(self.architecture, {}).items():
            if getattr(self, name) is None:
                object.__setattr__(self, name, value)

    # --- (de)serialisation -------------------------------------------------------------------
    def to_dict(self) -> dict[str, Any]:
        """The fields as a JSON-ready dict (``from_dict`` inverts it)."""
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> NetConfig:
        """Rebuild from :meth:`to_dict` output; a non-dict or an unknown key is a :class:`DfcanError`."""
        if not isinstance(data, dict):
            raise DfcanError(f"{cls.__name__} must be built from a JSON object. Received: {type(data).__name__}")
        known = sorted(f.name for f in dataclasses.fields(cls))
        unknown = sorted(set(data) - set(known))
        _check(not unknown, f"unknown {cls.__name__} keys {unknown}; known keys are {known}")
        return cls(**data)

    def replace(self, **changes: Any) -> NetConfig:
        """A copy with ``changes`` applied (validated again); unknown names are a :class:`DfcanError`."""
        known = {f.name for f in dataclasses.fields(self)}
        unknown = sorted(set(changes) - known)
        _check(not unknown, f"unknown {type(self).__name__} keys {unknown}; known keys are {sorted(known)}")
        return dataclasses.replace(self, **changes)


# ---------------------------------------------------------------------------------------------
# registered layers
# ---------------------------------------------------------------------------------------------

def keys_cubic(t: np.ndarray, a: float = -0.5) -> np.ndarray:
    """Keys' cubic convolution kernel at distances ``t`` (``a = -0.5`` as in TF's half-pixel bicubic)."""
    t = np.abs(np.asarray(t, np.float64))
    near = ((a + 2) * t - (a + 3)) * t * t + 1
    far = ((a * t - 5 * a) * t + 8 * a) * t - 4 * a
    return np.where(t <= 1, near, np.where(t < 2, far, 0.0))


def bicubic_phase_taps(scale: int) -> np.ndarray:
    """``(scale, 5)`` taps: row ``r`` weights input pixels ``i-2 … i+2`` for output pixel ``scale·i + r``."""
    taps = np.zeros((scale, 5))
    for r in range(scale):
        pos = (r + 0.5) / scale - 0.5  # source position relative to i (half-pixel centres)
        base = int(np.floor(pos))
        for k in range(base - 1, base + 3):
            taps[r, k + 2] = keys_cubic(pos - k)
    return taps


def _edge_pad(x: tf.Tensor, pad: int) -> tf.Tensor:
    """Repeat the edge rows and columns ``pad`` times (slices + concat: portable to ONNX/TFLite)."""
    shape = tf.shape(x)
    n, h, w, c = shape[0], shape[1], shape[2], shape[3]
    top = tf.slice(x, [0, 0, 0, 0], [n, 1, w, c])
    bottom = tf.slice(x, [0, h - 1, 0, 0], [n, 1, w, c])
    x = tf.concat([top] * pad + [x] + [bottom] * pad, axis=1)
    h = h + 2 * pad
    left = tf.slice(x, [0, 0, 0, 0], [n, h, 1, c])
    right = tf.slice(x, [0, 0, w - 1, 0], [n, h, 1, c])
    return tf.concat([left] * pad + [x] + [right] * pad, axis=2)


@keras.saving.register_keras_serializable(package=PACKAGE)
class BicubicUpsample(keras.layers.Layer):
    """Integer-factor bicubic upsampling (Keys, ``a = -0.5``, half-pixel centres, edge replicated).

    A fixed (non-trainable, not stored) 5×5 convolution followed by
    ``depth_to_space``; see the module docstring for how it relates to
    ``tf.image.resize``. ``scale=1`` is the identity.
    """

    def __init__(self, scale: int = 2, **kwargs):
        super().__init__(**kwargs)
        self.scale = int(scale)
        if not 1 <= self.scale <= MAX_SCALE:
            raise ValueError(f"scale must be between 1 and {MAX_SCALE}. Received: scale={scale}")

    def build(self, input_shape):
        channels = int(input_shape[-1])
        s = self.scale
        taps = bicubic_phase_taps(s)
        kernel = np.zeros((5, 5, channels, s * s * channels), np.float32)
        for ry in range(s):
            for rx in range(s):
                k2d = np.outer(taps[ry], taps[rx])
                for c in range(channels):
                    # depth_to_space reads channel (ry·s + rx)·C + c for phase (ry, rx) of channel c.
                    kernel[:, :, c, (ry * s + rx) * channels + c] = k2d
        self._kernel = kernel
        self.built = True

    def call(self, inputs):
        if self.scale == 1:
            return inputs
        kernel = tf.constant(self._kernel, dtype=inputs.dtype)
        y = tf.nn.conv2d(_edge_pad(inputs, 2), kernel, strides=1, padding="VALID")
        return tf.nn.depth_to_space(y, self.scale)

    def compute_output_shape(self, input_shape):
        n, h, w, c = input_shape
        s = self.scale
        return (n, None if h is None else h * s, None if w is None else w * s, c)

    def get_config(self):
        return {**super().get_config(), "scale": self.scale}


@keras.saving.register_keras_serializable(package=PACKAGE)
class PadToMultiple(keras.layers.Layer):
    """Pad height and width at the bottom/right up to the next multiple of ``multiple``.

    ``mode="reflect"`` mirrors the image (needs each side longer than the
    padding, i.e. at least ``multiple`` pixels); ``"zeros"`` pads with 0.
    """

    def __init__(self, multiple: int = 4, mode: str = "reflect", **kwargs):
        super().__init__(**kwargs)
        if mode not in PAD_MODES:
            raise ValueError(f"mode must be one of {PAD_MODES}. Received: mode={mode!r}")
        self.multiple = int(multiple)
        self.mode = mode

    def call(self, inputs):
        shape = tf.shape(inputs)
        m = self.multiple
        # (m - h mod m) mod m: non-negative operands only (tf2onnx turns FloorMod into a truncating Mod).
        pad_h = tf.math.floormod(m - tf.math.floormod(shape[1], m), m)
        pad_w = tf.math.floormod(m - tf.math.floormod(shape[2], m), m)
        zero = tf.zeros_like(pad_h)
        paddings = tf.stack([tf.stack([zero, zero]), tf.stack([zero, pad_h]), tf.stack([zero, pad_w]),
                             tf.stack([zero, zero])])
        y = tf.pad(inputs, paddings, mode="REFLECT" if self.mode == "reflect" else "CONSTANT")
        # Dynamic paddings lose the static channel count, which TFLite's Conv2D needs: restate it.
        return tf.reshape(y, [shape[0], shape[1] + pad_h, shape[2] + pad_w, inputs.shape[-1]])

    def compute_output_shape(self, input_shape):
        n, h, w, c = input_shape
        m = self.multiple
        return (n, None if h is None else -(-h // m) * m, None if w is None else -(-w // m) * m, c)

    def get_config(self):
        return {**super().get_config(), "multiple": self.multiple, "mode": self.mode}


@keras.saving.register_keras_serializable(package=PACKAGE)
class CropLike(keras.layers.Layer):
    """``[x, reference] -> x[:, :H_ref, :W_ref, :]`` (undoes :class:`PadToMultiple`)."""

    def call(self, inputs):
        x, ref = inputs
        xs, rs = tf.shape(x), tf.shape(ref)
        # A static channel count in the size keeps the static shape for the converters.
        return tf.slice(x, [0, 0, 0, 0], [xs[0], rs[1], rs[2], x.shape[-1]])

    def compute_output_shape(self, input_shape):
        x, ref = input_shape
        return (x[0], ref[1], ref[2], x[3])


@keras.saving.register_keras_serializable(package=PACKAGE)
class ChannelMean(keras.layers.Layer):
    """Mean over channels, kept as one channel: the wide-field image of a stack of SIM frames."""

    def call(self, inputs):
        return tf.reduce_mean(inputs, axis=-1, keepdims=True)

    def compute_output_shape(self, input_shape):
        return (*input_shape[:-1], 1)


def conv(filters: int, kernel_size: int, name: str, **kwargs) -> keras.layers.Conv2D:
    """A "same"-padded convolution with Keras' default initialisers."""
    return keras.layers.Conv2D(filters, kernel_size, padding="same", name=name, **kwargs)


def sr_input(config: NetConfig) -> keras.KerasTensor:
    """The raw-grid input ``(None, None, C_in)`` named ``"input"``."""
    return keras.Input((None, None, config.input_channels), name="input")


def residual_source(x: keras.KerasTensor, channels: int, name: str) -> keras.KerasTensor:
    """``x`` itself for one channel; the channel mean (wide-field image) for a stack of frames."""
    return x if channels == 1 else ChannelMean(name=name)(x)
