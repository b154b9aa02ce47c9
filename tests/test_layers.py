"""Layer-level parity: FFT magnitude vs numpy, quadrant shift vs the reference slicing,
legacy bilinear resize vs TF1's op, and the sampled DFT vs the FFT path."""

import numpy as np
import pytest
import tensorflow as tf

from dfcan_tf.nets import layers as L


@pytest.mark.parametrize("shape", [(2, 16, 16, 3), (1, 37, 50, 2), (1, 7, 9, 1)])
def test_fourier_magnitude_matches_numpy(shape, rng):
    x = rng.standard_normal(shape).astype(np.float32)
    got = tf.reshape(L._fft_magnitude(tf.constant(x), 0.8), shape).numpy()
    ref = (np.abs(np.fft.fft2(x.astype(np.float64), axes=(1, 2))) + 1e-8) ** 0.8
    assert got.shape == shape
    # relative to the spectrum's peak: float32 transforms lose ~1e-7..1e-6
    assert np.max(np.abs(got - ref)) / ref.max() <= 1e-5


def _reference_shift(s):
    """The authors' slicing, with Python's floor division on the negative index."""
    h, w = s.shape[1], s.shape[2]
    rows = np.concatenate([s[:, -h // 2:], s[:, : h // 2]], axis=1)
    return np.concatenate([rows[:, :, -w // 2:], rows[:, :, : w // 2]], axis=2)


@pytest.mark.parametrize("h,w", [(8, 8), (7, 7), (6, 9), (128, 5)])
def test_quadrant_shift_matches_reference_slicing(h, w, rng):
    x = rng.standard_normal((2, h, w, 3)).astype(np.float32)
    got = L.quadrant_shift(tf.constant(x)).numpy()
    np.testing.assert_array_equal(got, _reference_shift(x))
    # even sizes: fftshift; odd sizes: ifftshift (what the slicing does)
    expect = np.fft.fftshift(x, axes=1) if h % 2 == 0 else np.fft.ifftshift(x, axes=1)
    expect = np.fft.fftshift(expect, axes=2) if w % 2 == 0 else np.fft.ifftshift(expect, axes=2)
    np.testing.assert_array_equal(got, expect)


def _numpy_legacy_bilinear(x, size):
    """TF1 resize_bilinear, align_corners=False, half_pixel_centers=False, written from its definition."""
    n, h, w, c = x.shape
    def axis(length):
        pos = np.arange(size, dtype=np.float32) * np.float32(length / size)
        i0 = np.floor(pos).astype(int)
        return i0, np.minimum(i0 + 1, length - 1), (pos - i0).astype(np.float32)
    y0, y1, ly = axis(h)
    x0, x1, lx = axis(w)
    top = x[:, y0][:, :, x0] + (x[:, y0][:, :, x1] - x[:, y0][:, :, x0]) * lx[None, None, :, None]
    bot = x[:, y1][:, :, x0] + (x[:, y1][:, :, x1] - x[:, y1][:, :, x0]) * lx[None, None, :, None]
    return top + (bot - top) * ly[None, :, None, None]


@pytest.mark.parametrize("h,w", [(128, 128), (502, 502), (37, 50), (200, 64)])
def test_spectrum_resize_is_tf1_legacy_bilinear(h, w, rng):
    x = rng.random((1, h, w, 2)).astype(np.float32)
    got = L.legacy_resize_bilinear(tf.constant(x), 128).numpy()
    ref = tf.compat.v1.image.resize_bilinear(x, [128, 128], align_corners=False, half_pixel_centers=False).numpy()
    np.testing.assert_array_equal(got, ref)
    np.testing.assert_allclose(got, _numpy_legacy_bilinear(x, 128), atol=1e-6)
    if (h, w) == (128, 128):
        np.testing.assert_array_equal(got, x)  # identity at the training size
    # and it is *not* the TF2 default (half-pixel centres) at other sizes
    if (h, w) == (502, 502):
        tf2 = tf.image.resize(x, [128, 128], method="bilinear").numpy()
        assert np.max(np.abs(tf2 - got)) > 1e-2


@pytest.mark.parametrize("h,w", [(128, 128), (502, 502), (37, 50), (64, 200), (7, 9), (64, 33), (100, 99)])
def test_sampled_dft_equals_fft_path(h, w, rng):
    x = tf.constant(rng.standard_normal((2, h, w, 4)).astype(np.float32))
    size = 32
    ref = L.legacy_resize_bilinear(L.quadrant_shift(L._fft_magnitude(x, 0.8)), size).numpy()
    got = L._sampled_dft_spectrum(x, 0.8, size).numpy()
    assert got.shape == (2, size, size, 4)
    assert np.max(np.abs(got - ref)) / ref.max() <= 5e-6


@pytest.mark.parametrize("length,distinct", [(502, 130), (256, 129), (128, 65), (37, 19)])
def test_folded_frequencies_halve_the_transform(length, distinct):
    fw = L._sample_plan(tf.constant(length), 128)[0]
    uniq, column = L.folded_frequencies(fw, tf.constant(length))
    f, u, col = fw.numpy(), uniq.numpy(), column.numpy()
    assert len(u) == distinct == len(set(np.minimum(f, length - f)))
    # each sampled frequency reads its own folded transform, mirrored ones the second half
    mirrored = f > length - f
    np.testing.assert_array_equal(u[col % len(u)], np.minimum(f, length - f))
    np.testing.assert_array_equal(col >= len(u), mirrored)


def test_fca_spectrum_methods_agree(rng):
    x = rng.standard_normal((2, 45, 60, 8)).astype(np.float32)
    fft = L.FourierChannelAttention(8, reduction=4, gamma=0.8, size_psc=16, spectrum="fft")
    dft = L.FourierChannelAttention(8, reduction=4, gamma=0.8, size_psc=16, spectrum="dft")
    out_fft = fft(x)
    dft(x)
    dft.set_weights(fft.get_weights())
    out_dft = dft(x).numpy()
    assert out_dft.shape == x.shape
    assert np.max(np.abs(out_dft - out_fft.numpy())) <= 1e-5


def test_gelu_is_exact_erf_form(rng):
    from scipy.special import erf

    x = rng.standard_normal(1000).astype(np.float32) * 4
    ref = 0.5 * x * (1 + erf(x / np.sqrt(2)))
    np.testing.assert_allclose(L.GELU()(x).numpy(), ref, atol=1e-6)


def test_pixel_shuffle_channel_order(rng):
    x = rng.standard_normal((1, 3, 4, 8)).astype(np.float32)
    got = L.PixelShuffle(2)(x).numpy()
    assert got.shape == (1, 6, 8, 2)
    # TF/ONNX DCR order: out[2i+a, 2j+b, c] = in[i, j, (a*2+b)*C + c]
    for a in range(2):
        for b in range(2):
            np.testing.assert_array_equal(got[0, a::2, b::2, :], x[0, :, :, (a * 2 + b) * 2:(a * 2 + b) * 2 + 2])
