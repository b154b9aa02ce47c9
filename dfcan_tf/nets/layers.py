"""Registered Keras layers of DFCAN / DFGAN (no ``Lambda``: safe loading and export).

The Fourier channel attention (FCA) of Qiao et al. (2021) reads, per channel, the
magnitude spectrum of a feature map, swaps its quadrants, resizes it to
``size_psc × size_psc`` with TF1's legacy bilinear resize and derives channel
weights from it. Two numerically equivalent ways to compute that spectrum are
offered, chosen by the layer argument ``spectrum``:

``"fft"`` (default)
    The reference computation: ``tf.signal.fft2d`` of the complex cast,
    magnitude, gamma, quadrant swap by slicing, ``ResizeBilinear`` with
    ``align_corners=False, half_pixel_centers=False``. Fast in TensorFlow,
    especially at the 128×128 training size, but ``FFT2D`` converts neither to
    ONNX nor to TFLite builtins.
``"dft"``
    A *sampled* discrete Fourier transform written as matrix products. The
    legacy bilinear resize to ``S × S`` reads at most ``2S`` rows and ``2S``
    columns of the shifted spectrum (the two neighbours of each sample
    position), so only ``min(L, 2S)`` frequencies per axis are computed, and
    along W a frequency and its mirror share one transform (real input):
    cos/sin matrices are built from the runtime shape (angles as
    ``2π·((k·n) mod L)/L`` with the modulo in integers, so large sizes keep
    precision), the transform is two batched matmuls, and the four
    neighbours are blended with the same lerp formula as TF's kernel. It is
    exact (up to float32 round-off, ~1e-6 relative) at every size, uses only
    MatMul/Cos/Sin/Gather/Unique ops that convert to ONNX and TFLite builtins,
    and its cost grows as about ``H·W·min(W, 2S)`` instead of ``H·W·(H+W)``.

Both produce the same weights layout, so a model can be rebuilt with the other
formulation and given the same weights (see :func:`dfcan_tf.nets.dfcan.with_spectrum`).
"""

from __future__ import annotations

import contextlib
import math
from collections.abc import Iterator

import keras
import numpy as np
import tensorflow as tf

PACKAGE = "dfcan_tf"
_INV_SQRT2 = 1.0 / math.sqrt(2.0)
SPECTRUM_METHODS = ("fft", "dft")

# Training speed-ups (docs/training.md#speed): hand-written gradients for GELU
# and the FFT spectrum. Same functions; off only to measure or test against
# plain autodiff of the reference formulas (:func:`reference_gradients`).
_FAST_GRADIENTS = [True]


@contextlib.contextmanager
def reference_gradients() -> Iterator[None]:
    """Within this block, layers *traced* use autodiff of the plain formulas (GELU's erf form, ``fft2d`` + ``Pow``)."""
    _FAST_GRADIENTS.append(False)
    try:
        yield
    finally:
        _FAST_GRADIENTS.pop()


def gelu(x: tf.Tensor) -> tf.Tensor:
    """Exact GELU ``0.5·x·(1 + erf(x/√2))``.

    Written out rather than ``tf.nn.gelu``: the latter lowers to ``Erfc``,
    which onnxruntime has no kernel for.
    """
    return 0.5 * x * (1.0 + tf.math.erf(x * _INV_SQRT2))


_INV_SQRT_2PI = 1.0 / math.sqrt(2.0 * math.pi)


@tf.function(jit_compile=True, reduce_retracing=True)
def _gelu_fused(x: tf.Tensor) -> tf.Tensor:
    return x * (0.5 * (1.0 + tf.math.erf(x * _INV_SQRT2)))


@tf.function(jit_compile=True, reduce_retracing=True)
def _gelu_grad_fused(x: tf.Tensor, upstream: tf.Tensor) -> tf.Tensor:
    cdf = 0.5 * (1.0 + tf.math.erf(x * _INV_SQRT2))
    return upstream * (cdf + x * (_INV_SQRT_2PI * tf.exp(-0.5 * tf.square(x))))


@tf.custom_gradient
def gelu_trained(x: tf.Tensor):
    """:func:`gelu` for training: one fused pass forward, one backward.

    The same function; its derivative ``Φ(x) + x·φ(x)`` is written out, and
    both passes are compiled by XLA into a single element-wise loop each, so a
    GELU costs two reads of its input instead of the dozen element-wise passes
    autodiff makes of the erf form (XLA's ``erf`` differs from TF's kernel by
    ≤ 1e-6; ``docs/training.md#speed``).
    """
    def grad(upstream):
        return _gelu_grad_fused(x, upstream)

    return _gelu_fused(x), grad


@keras.saving.register_keras_serializable(package=PACKAGE)
class GELU(keras.layers.Layer):
    """Exact (erf) GELU activation, as in the authors' code.

    In training the derivative is hand-written (:func:`gelu_trained`); inference
    and export trace the plain erf form (:func:`gelu`), which every converter knows.
    """

    def call(self, inputs, training=None):
        return gelu_trained(inputs) if training and _FAST_GRADIENTS[-1] else gelu(inputs)

    def compute_output_shape(self, input_shape):
        return input_shape


def _fft_magnitude(x: tf.Tensor, gamma: float) -> tf.Tensor:
    """``(|FFT2(x)| + 1e-8) ** gamma`` per channel of ``x`` (N, H, W, C), via ``tf.signal.fft2d``.

    Computed in float32 whatever the input dtype (``tf.complex`` has no
    float16 form, and half precision would lose the 1e-8 floor anyway).
    """
    xt = tf.cast(tf.transpose(x, [0, 3, 1, 2]), tf.float32)
    spectrum = tf.signal.fft2d(tf.complex(xt, tf.zeros_like(xt)))
    mag = tf.pow(tf.abs(spectrum) + 1e-8, gamma)
    return tf.cast(tf.transpose(mag, [0, 2, 3, 1]), x.dtype)


def _split(x: tf.Tensor, at: tf.Tensor, axis: int) -> tuple[tf.Tensor, tf.Tensor]:
    """``x`` cut along ``axis`` (1, 2 or 3 of a 4-D tensor) before index ``at``: plain ``Slice`` ops (cheap to run and to differentiate)."""
    shape = tf.shape(x)
    begin, size = [0, 0, 0, 0], tf.unstack(shape)
    first_size = list(size)
    first_size[axis] = at
    second_begin = list(begin)
    second_begin[axis] = at
    second_size = list(size)
    second_size[axis] = shape[axis] - at
    return tf.slice(x, begin, tf.stack(first_size)), tf.slice(x, tf.stack(second_begin), tf.stack(second_size))


def _mirror_half(half: tf.Tensor, width: tf.Tensor) -> tf.Tensor:
    """The full (N, H, W, C) spectrum from its half (N, H, W//2 + 1, C): ``full[k1, k2] = half[−k1 mod H, W − k2]`` beyond W//2."""
    doubled = width - width // 2 - 1  # columns 1 … ⌈W/2⌉ − 1 stand for two frequencies
    _, rest = _split(half, 1, 2)
    rest, _ = _split(rest, doubled, 2)
    row0, rows = _split(tf.reverse(rest, axis=[2]), 1, 1)
    return tf.concat([half, tf.concat([row0, tf.reverse(rows, axis=[1])], axis=1)], axis=2)


def _fold_full(full: tf.Tensor, width: tf.Tensor) -> tf.Tensor:
    """The adjoint of :func:`_mirror_half`: a full (N, H, W, C) gradient summed onto the half spectrum."""
    n_half = width // 2 + 1
    doubled = width - n_half
    half, rest = _split(full, n_half, 2)
    row0, rows = _split(rest, 1, 1)
    back = tf.reverse(tf.concat([row0, tf.reverse(rows, axis=[1])], axis=1), axis=[2])
    return half + tf.pad(back, [[0, 0], [0, 0], [1, n_half - 1 - doubled], [0, 0]])


def _unshift(x: tf.Tensor) -> tf.Tensor:
    """The inverse of :func:`quadrant_shift` (the same for even sizes; the other split for odd ones)."""
    shape = tf.shape(x)
    top, bottom = _split(x, shape[1] - shape[1] // 2, 1)
    rows = tf.concat([bottom, top], axis=1)
    left, right = _split(rows, shape[2] - shape[2] // 2, 2)
    return tf.concat([right, left], axis=2)


def _shifted_magnitude(x: tf.Tensor, gamma: float) -> tf.Tensor:
    """``quadrant_shift((|FFT2(x)| + 1e-8) ** gamma)`` of ``x`` (N, H, W, C), float32, from a real-input transform, with a hand-written gradient.

    ``rfft2d`` computes half the spectrum that ``fft2d`` of the complex cast
    does; the other half is its mirror (:func:`_mirror_half`). ``exp(γ·log(·))``
    replaces ``pow`` (TF's CPU ``Pow`` costs several times more).

    The gradient is written out: the upstream gradient is un-shifted and folded
    onto the half spectrum (:func:`_fold_full`), multiplied by
    ``γ·s/(|X| + 1e-8)`` and by ``u = X/|X|`` (0 where ``|X| = 0``, as TF's
    ``Abs`` gradient), and ``∂L/∂x = H·W · irfft2d(·)`` with the columns that
    stand for two frequencies halved, because ``irfft2d`` counts them twice.
    One inverse transform and a few element-wise passes, instead of the
    complex FFT, strided-slice and ``Pow`` gradients autodiff builds
    (``docs/training.md#speed``).
    """

    h_static, w_static = x.shape[1], x.shape[2]
    # Even sizes (the training patches): modulating x by (−1)^(m+n) shifts its spectrum by half a period
    # on both axes, which is the quadrant swap, so the swap costs one multiply folded into the cast, and
    # its inverse one multiply folded into the gradient's scale (docs/training.md#speed).
    sign = None
    if h_static is not None and w_static is not None and h_static % 2 == 0 and w_static % 2 == 0:
        m = np.arange(h_static)[:, None] + np.arange(w_static)[None, :]
        sign = tf.constant(np.where(m % 2 == 0, 1.0, -1.0).astype(np.float32))

    @tf.custom_gradient
    def shifted(v):
        shape = tf.shape(v)
        h, w = shape[1], shape[2]
        xt = tf.transpose(tf.cast(v, tf.float32), [0, 3, 1, 2])
        spec = tf.signal.rfft2d(xt if sign is None else xt * sign)
        mag = tf.abs(spec)
        out = tf.exp(gamma * tf.math.log(mag + 1e-8))
        # Mirrored after the transpose back to channels-last: only the half spectrum is transposed.
        full = _mirror_half(tf.transpose(out, [0, 2, 3, 1]), w)

        def grad(upstream):
            up = tf.cast(upstream, tf.float32)
            g = tf.transpose(_fold_full(up if sign is not None else _unshift(up), w), [0, 3, 1, 2])
            g = tf.math.divide_no_nan(g * (gamma * out / (mag + 1e-8)), mag)
            n_half = w // 2 + 1
            doubled = w - n_half
            weight = tf.concat([tf.ones([1]), tf.fill([doubled], 0.5), tf.ones([n_half - 1 - doubled])], axis=0)
            y = tf.complex(g * weight, tf.zeros_like(g)) * spec
            scale = tf.cast(h * w, tf.float32) if sign is None else tf.cast(h * w, tf.float32) * sign
            dx = tf.signal.irfft2d(y, fft_length=tf.stack([h, w])) * scale
            return tf.cast(tf.transpose(dx, [0, 2, 3, 1]), v.dtype)

        return (full if sign is not None else quadrant_shift(full)), grad

    return shifted(x)


def rfft_spectrum(x: tf.Tensor, gamma: float, size: int) -> tf.Tensor:
    """The ``"fft"`` spectrum features: shifted, gamma-compressed magnitude, legacy-resized to ``size × size``.

    Equal to ``legacy_resize_bilinear(quadrant_shift(_fft_magnitude(x)), size)``
    to float32 round-off (a real-input transform of half the size, mirrored).
    When the map is statically ``size × size`` (the paper's 128² training
    patches with ``size_psc`` 128) the legacy resize reads every pixel at
    weight 1 — an exact copy — and is skipped.
    """
    shifted = tf.cast(_shifted_magnitude(x, gamma), x.dtype)
    if x.shape[1] == size and x.shape[2] == size:
        return shifted
    return legacy_resize_bilinear(shifted, size)


def _dft_matrices(freqs: tf.Tensor, length: tf.Tensor) -> tuple[tf.Tensor, tf.Tensor]:
    """cos and sin matrices ``(len(freqs), length)`` of ``2π·((k·n) mod L)/L``.

    The product is reduced modulo ``L`` in int32 before the float cast so that
    the angle stays in [0, 2π) and keeps full float32 precision at any size.
    """
    n = tf.range(length, dtype=tf.int32)
    kn = tf.math.floormod(freqs[:, None] * n[None, :], length)
    angle = tf.cast(kn, tf.float32) * (2.0 * math.pi / tf.cast(length, tf.float32))
    return tf.cos(angle), tf.sin(angle)


def quadrant_shift(x: tf.Tensor) -> tf.Tensor:
    """Swap spectrum quadrants exactly as the reference slices them.

    The reference takes ``cat([s[-H//2:], s[:H//2]])`` on rows, then columns,
    with Python floor division on the negative index: fftshift for even sizes,
    ifftshift for odd ones. ``-H//2`` keeps ``ceil(H/2)`` trailing rows, which
    is the same as splitting at ``H//2``. Slices + concat rather than
    ``tf.roll`` (not a TFLite builtin).
    """
    shape = tf.shape(x)
    n, h, w, c = shape[0], shape[1], shape[2], shape[3]
    top = h // 2
    rows = tf.concat(
        [tf.slice(x, [0, top, 0, 0], [n, h - top, w, c]), tf.slice(x, [0, 0, 0, 0], [n, top, w, c])], axis=1
    )
    left = w // 2
    return tf.concat(
        [tf.slice(rows, [0, 0, left, 0], [n, h, w - left, c]), tf.slice(rows, [0, 0, 0, 0], [n, h, left, c])],
        axis=2,
    )


def legacy_resize_bilinear(x: tf.Tensor, size: int) -> tf.Tensor:
    """TF1 ``resize_bilinear`` (``align_corners=False, half_pixel_centers=False``) to ``size × size``."""
    return tf.raw_ops.ResizeBilinear(images=x, size=[size, size], align_corners=False, half_pixel_centers=False)


def _legacy_sample_points(length: tf.Tensor, size: int) -> tuple[tf.Tensor, tf.Tensor, tf.Tensor]:
    """Source indices ``(i0, i1)`` and weight of ``i1`` for TF1 legacy bilinear resize along one axis.

    Mirrors TF's kernel: ``scale = float(L)/S``, ``pos = float(i)·scale``,
    ``i0 = floor(pos)``, ``i1 = min(i0 + 1, L - 1)``, ``lerp = pos - i0``, in float32.
    """
    scale = tf.cast(length, tf.float32) / float(size)
    pos = tf.cast(tf.range(size), tf.float32) * scale
    i0f = tf.floor(pos)
    i0 = tf.cast(i0f, tf.int32)
    i1 = tf.minimum(i0 + 1, length - 1)
    return i0, i1, pos - i0f


def _sample_plan(length: tf.Tensor, size: int) -> tuple[tf.Tensor, tf.Tensor, tf.Tensor, tf.Tensor]:
    """Which shifted positions to transform along one axis, and where the resize reads them.

    Returns ``(freqs, idx0, idx1, lerp)``: the DFT is evaluated at the ``M =
    min(L, 2S)`` frequencies ``freqs``; the resize then reads rows ``idx0`` and
    ``idx1`` of that ``M``-long result. Long axes (``L > 2S``) transform only
    the two neighbours of each of the ``S`` sample points; short ones transform
    every position once (cheaper than ``2S`` duplicates). Branch-free, so it
    exports as one static graph.
    """
    i0, i1, lerp = _legacy_sample_points(length, size)
    short = length <= 2 * size
    m = tf.minimum(length, 2 * size)
    j = tf.range(m)
    sampled = tf.gather(tf.concat([i0, i1], axis=0), j)
    positions = tf.where(short, j, sampled)
    k = tf.range(size)
    idx0 = tf.where(short, i0, k)
    idx1 = tf.where(short, i1, k + size)
    # Shifted position p holds frequency (p + L//2) mod L (see quadrant_shift).
    freqs = tf.math.floormod(positions + length // 2, length)
    return freqs, idx0, idx1, lerp


def folded_frequencies(freqs: tf.Tensor, length: tf.Tensor) -> tuple[tf.Tensor, tf.Tensor]:
    """Fold frequencies ``f`` to ``u = min(f, L - f)`` and keep the distinct ones.

    Returns ``(distinct, column)``: the DFT is evaluated at ``distinct`` (K
    values), and the magnitude of frequency ``freqs[j]`` is read from column
    ``column[j]`` of ``[|X(kh, u)| | |X(-kh, u)|]`` (width ``2K``): mirrored
    frequencies (``f > L - f``) read the second half, since for real input
    ``|X(kh, -u)| = |X(-kh, u)|``.
    """
    folded = tf.minimum(freqs, length - freqs)
    distinct, where = tf.unique(folded)
    k = tf.shape(distinct)[0]
    return distinct, where + k * tf.cast(freqs > length - freqs, tf.int32)


def _sampled_dft_spectrum(x: tf.Tensor, gamma: float, size: int) -> tf.Tensor:
    """Shifted, gamma-compressed magnitude spectrum resized to ``size × size``, computed at the sampled frequencies only.

    Equal to ``legacy_resize_bilinear(quadrant_shift(_fft_magnitude(x)), size)``
    (to float32 round-off). Three savings over a full DFT, all exact:

    * only the ``M = min(L, 2S)`` frequencies the legacy resize reads are
      transformed (:func:`_sample_plan`);
    * along W the input is real, so a frequency and its mirror share one
      transform: sampled W frequencies are folded to ``u = min(f, W - f)`` and
      only the ``K`` distinct ``u`` are computed (130 instead of 256 at 502).
      Stage H then gives both ``X(kh, u)`` and ``X(-kh, u)`` from the same four
      products (``re = cc ∓ ss``, ``im = cs ± sc``);
    * both matmul stages work on the NHWC tensor (no transposes): stage W is
      ``(2K, W) @ (N·H, W, C)``, stage H ``(2M_h, H) @ (N, H, 2K·C)``.

    ``exp(γ·log(·))`` replaces ``pow`` (onnxruntime's ``Pow`` kernel is slow).
    Ops used: Unique, Gather, MatMul, Cos, Sin, element-wise — ONNX opset 17
    and TFLite builtins. (Folding and the NHWC form were measured and proposed
    in the export work: 1,223 → 961 GFLOP for the paper's DFCAN at 502².)
    """
    shape = tf.shape(x)
    n, h, w, c = shape[0], shape[1], shape[2], shape[3]
    fh, h0, h1, ly = _sample_plan(h, size)
    fw, w0, w1, lx = _sample_plan(w, size)
    distinct, column = folded_frequencies(fw, w)
    k = tf.shape(distinct)[0]
    m_h = tf.shape(fh)[0]
    cos_w, sin_w = _dft_matrices(distinct, w)
    cos_h, sin_h = _dft_matrices(fh, h)
    a = tf.linalg.matmul(tf.concat([cos_w, sin_w], axis=0)[None], tf.reshape(x, [n * h, w, c]))  # (NH, 2K, C)
    a = tf.reshape(a, [n, h, 2 * k * c])
    b = tf.linalg.matmul(tf.concat([cos_h, sin_h], axis=0)[None], a)  # (N, 2M_h, 2K·C)
    b = tf.reshape(b, [n, 2 * m_h, 2 * k, c])
    # Explicit 4-D slices (ellipsis slicing trips tf2onnx).
    cc = tf.slice(b, [0, 0, 0, 0], [n, m_h, k, c])
    cs = tf.slice(b, [0, 0, k, 0], [n, m_h, k, c])
    sc = tf.slice(b, [0, m_h, 0, 0], [n, m_h, k, c])
    ss = tf.slice(b, [0, m_h, k, 0], [n, m_h, k, c])
    plus = tf.sqrt(tf.square(cc - ss) + tf.square(cs + sc))  # |X(kh, u)|
    minus = tf.sqrt(tf.square(cc + ss) + tf.square(cs - sc))  # |X(-kh, u)|
    mag = tf.exp(gamma * tf.math.log(tf.concat([plus, minus], axis=2) + 1e-8))  # (N, M_h, 2K, C)
    rows0 = tf.gather(mag, h0, axis=1)
    rows1 = tf.gather(mag, h1, axis=1)
    c0, c1 = tf.gather(column, w0), tf.gather(column, w1)
    v00, v01 = tf.gather(rows0, c0, axis=2), tf.gather(rows0, c1, axis=2)
    v10, v11 = tf.gather(rows1, c0, axis=2), tf.gather(rows1, c1, axis=2)
    lx = tf.reshape(lx, [1, 1, size, 1])
    ly = tf.reshape(ly, [1, size, 1, 1])
    # Same formula (and rounding order) as TF's ResizeBilinear kernel.
    top = v00 + (v01 - v00) * lx
    bottom = v10 + (v11 - v10) * lx
    return top + (bottom - top) * ly


@keras.saving.register_keras_serializable(package=PACKAGE)
class FourierChannelAttention(keras.layers.Layer):
    """Fourier channel attention (FCA) of DFCAN: ``y * sigmoid(excite(relu(squeeze(GAP(relu(conv(spectrum(y))))))))``.

    Parameters
    ----------
    channels
        Number of feature channels ``C`` of the input.
    reduction
        Squeeze ratio: the bottleneck has ``C // reduction`` channels (16 in the paper).
    gamma
        Spectrum compression exponent.
    size_psc
        Side of the resized spectrum (128 in the paper).
    spectrum
        ``"fft"`` or ``"dft"``: how the spectrum is computed (see module docstring);
        the weights are the same for both.

    Notes
    -----
    Weights, in order: attention conv 3×3 (C→C), squeeze 1×1 (C→C/r), excite 1×1
    (C/r→C), each with bias; the 1×1 layers are convolutions on the pooled
    ``(N, 1, 1, C)`` map as in the authors' code, so their kernels load unchanged.
    """

    def __init__(
        self,
        channels: int,
        reduction: int = 16,
        gamma: float = 0.8,
        size_psc: int = 128,
        spectrum: str = "fft",
        **kwargs,
    ):
        super().__init__(**kwargs)
        if spectrum not in SPECTRUM_METHODS:
            raise ValueError(f"spectrum must be one of {SPECTRUM_METHODS}. Received: spectrum={spectrum!r}")
        if channels // reduction < 1:
            raise ValueError(f"channels // reduction must be >= 1. Received: channels={channels}, reduction={reduction}")
        self.channels = int(channels)
        self.reduction = int(reduction)
        self.gamma = float(gamma)
        self.size_psc = int(size_psc)
        self.spectrum = spectrum
        self.attention_conv = keras.layers.Conv2D(self.channels, 3, padding="same", activation="relu", name="conv")
        self.squeeze = keras.layers.Conv2D(self.channels // self.reduction, 1, activation="relu", name="squeeze")
        self.excite = keras.layers.Conv2D(self.channels, 1, activation="sigmoid", name="excite")

    def build(self, input_shape):
        s = self.size_psc
        self.attention_conv.build((None, s, s, self.channels))
        self.squeeze.build((None, 1, 1, self.channels))
        self.excite.build((None, 1, 1, self.channels // self.reduction))
        self.built = True

    def spectrum_features(self, inputs):
        """The shifted, resized, gamma-compressed magnitude spectrum ``(N, S, S, C)``."""
        if self.spectrum == "fft" and not _FAST_GRADIENTS[-1]:
            return legacy_resize_bilinear(quadrant_shift(_fft_magnitude(inputs, self.gamma)), self.size_psc)
        if self.spectrum == "fft":
            return rfft_spectrum(inputs, self.gamma, self.size_psc)
        return _sampled_dft_spectrum(inputs, self.gamma, self.size_psc)

    def call(self, inputs):
        spec = self.spectrum_features(inputs)
        att = self.attention_conv(spec)
        pooled = tf.reduce_mean(att, axis=[1, 2], keepdims=True)
        weights = self.excite(self.squeeze(pooled))
        # Restating the input shape keeps static shapes for the converters.
        return tf.reshape(inputs * weights, tf.shape(inputs))

    def compute_output_shape(self, input_shape):
        return input_shape

    def get_config(self):
        return {
            **super().get_config(),
            "channels": self.channels,
            "reduction": self.reduction,
            "gamma": self.gamma,
            "size_psc": self.size_psc,
            "spectrum": self.spectrum,
        }


@keras.saving.register_keras_serializable(package=PACKAGE)
class PixelShuffle(keras.layers.Layer):
    """Sub-pixel upsampling: ``depth_to_space`` with TensorFlow's channel order (ONNX ``DepthToSpace`` DCR)."""

    def __init__(self, scale: int = 2, **kwargs):
        super().__init__(**kwargs)
        self.scale = int(scale)

    def call(self, inputs):
        return tf.nn.depth_to_space(inputs, self.scale)

    def compute_output_shape(self, input_shape):
        n, h, w, c = input_shape
        s = self.scale
        return (n, None if h is None else h * s, None if w is None else w * s, c // (s * s))

    def get_config(self):
        return {**super().get_config(), "scale": self.scale}
