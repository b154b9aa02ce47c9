"""dfcan_tf.inference.tiling: layouts, partition-of-unity blending, exact stitching of a local operator."""

from __future__ import annotations

import itertools

import numpy as np
import pytest
from scipy import ndimage as ndi

from dfcan_tf.errors import DfcanError
from dfcan_tf.inference.tiling import (
    Stitcher,
    axis_tiles,
    blend_weights_1d,
    predict_tiled,
    tile_specs,
)


@pytest.mark.parametrize(
    ("length", "tile", "overlap"),
    [(100, 32, 8), (64, 64, 16), (65, 64, 16), (1000, 256, 64), (257, 128, 64), (50, 100, 10), (97, 31, 0)],
)
def test_axis_tiles_cover_with_overlap(length, tile, overlap):
    spans = axis_tiles(length, tile, overlap)
    size = min(tile, length)
    assert spans[0][0] == 0 and spans[-1][1] == length
    assert all(b - a == size for a, b in spans)
    for (a0, b0), (a1, b1) in itertools.pairwise(spans):
        assert b0 - a1 >= overlap  # at least the requested overlap
        assert a1 > a0


def test_axis_tiles_rejects_bad_values():
    with pytest.raises(DfcanError, match="half the tile"):
        axis_tiles(100, 32, 20)
    with pytest.raises(DfcanError, match="tile size must be positive"):
        axis_tiles(100, 0, 0)


@pytest.mark.parametrize(("length", "tile", "overlap", "scale"), [(100, 32, 8, 2), (300, 128, 64, 3), (97, 31, 0, 1)])
def test_blend_weights_partition_of_unity(length, tile, overlap, scale):
    spans = [(scale * a, scale * b) for a, b in axis_tiles(length, tile, overlap)]
    weights = blend_weights_1d(spans)
    total = np.zeros(scale * length)
    for (a, b), w in zip(spans, weights):
        assert w.shape == (b - a,) and np.all(w >= 0) and np.all(w <= 1 + 1e-12)
        total[a:b] += w
    np.testing.assert_allclose(total, 1.0, atol=1e-12)
    if len(spans) > 1 and overlap >= 4:
        # The outermost quarter of an overlap band (next to a tile's inner edge) is discarded.
        a1 = spans[1][0]
        q = (spans[0][1] - a1) // 4
        assert np.all(weights[1][:q] == 0.0)
        assert np.all(weights[0][-q:] == 0.0)


def test_stitching_a_local_operator_is_exact_with_enough_overlap():
    """A local, translation-invariant ×2 'network' gives the same output tiled and whole."""
    rng = np.random.default_rng(0)
    image = rng.random((70, 90, 1)).astype(np.float32)
    halo = 3  # radius of the operator below, in input pixels

    def network(batch):
        assert batch.shape[1] <= 32 and batch.shape[2] <= 32  # memory bounded by the tile
        blurred = ndi.uniform_filter(batch, size=(1, 2 * halo + 1, 2 * halo + 1, 1), mode="constant")
        return blurred.repeat(2, axis=1).repeat(2, axis=2)

    full = ndi.uniform_filter(image[None], size=(1, 7, 7, 1), mode="constant").repeat(2, 1).repeat(2, 2)[0, ..., 0]
    # Overlap 4·halo: the zero-weight outer quarter covers the halo, so only exact pixels are kept.
    tiled = predict_tiled(network, image, scale=2, tile_size=32, overlap=4 * halo, batch_size=3)
    assert tiled.shape == (140, 180) and tiled.dtype == np.float32
    np.testing.assert_allclose(tiled, full, atol=1e-6)
    # Too little overlap: border effects of the zero padding leak into the result.
    leaky = predict_tiled(network, image, scale=2, tile_size=32, overlap=2, batch_size=1)
    assert np.max(np.abs(leaky - full)) > 1e-2


def test_tile_specs_grid_and_single_tile():
    specs = tile_specs((100, 60), 48, 16, scale=3)
    assert {s.input_shape for s in specs} == {(48, 48)}
    rows = sorted({s.index[0] for s in specs})
    cols = sorted({s.index[1] for s in specs})
    assert len(specs) == len(rows) * len(cols) == 3 * 2
    for s in specs:
        r, c = s.output_slices
        assert (r.stop - r.start, c.stop - c.start) == (144, 144)
        assert s.weights().shape == (144, 144)
    one = tile_specs((40, 30), 64, 16, scale=2)
    assert len(one) == 1 and one[0].input_shape == (40, 30)
    np.testing.assert_array_equal(one[0].weights(), 1.0)


def test_stitcher_rejects_wrong_tile_shape():
    spec = tile_specs((32, 32), 16, 4, scale=2)[0]
    st = Stitcher((64, 64))
    with pytest.raises(DfcanError, match="expected"):
        st.add(spec, np.zeros((16, 16)))
