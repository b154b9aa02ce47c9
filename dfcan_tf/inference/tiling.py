"""Data-side tiling for prediction: tile specs with overlap, smooth blending, stitching.

The network never sees more than one tile (or one batch of tiles), so memory
for activations is bounded by the tile size, not by the image; only the input
and the output array themselves are image-sized.

How tiles are laid out
----------------------
Along each axis, tiles of ``tile`` pixels with at least ``overlap`` pixels in
common are spread evenly from the first to the last pixel (so every tile has
the same size and the last one ends exactly at the border). Each tile's output
is weighted by a separable window that is 0 in the outer quarter of every
overlap band (the pixels most affected by the network's zero padding), rises
as a raised cosine across the middle half and is 1 elsewhere; windows are then
divided by their sum so that they form a partition of unity. Weighted tile
outputs are simply added into the output array: no weight-sum image is needed.

How much overlap
----------------
Enough to cover the reach of the network's convolutions, so the zero padding
at tile borders does not show: the default is the network's *measured*
receptive field (:func:`dfcan_tf.nets.registry.receptive_field`, an impulse
sent through the built network), rounded up to a multiple of 8
(:func:`dfcan_tf.nets.registry.default_overlap`); prediction picks it
(:func:`dfcan_tf.inference.predict.overlap_for`). The blending discards the
outer quarter of each overlap band on top of that.

Speed
-----
All tiles have one shape, so a Keras network runs them through one graph
traced for that shape (:class:`dfcan_tf.inference.backends.KerasPredictor`);
tiles are cut into a batch with one copy and stitched in place. Per computed
tile pixel, tiled prediction runs at the whole-image rate; per image pixel it
pays the overlap (``dfcan benchmark predict`` prints both; figures in
``docs/architecture.md#tiling-speed``).

Global operations (DFCAN's Fourier channel attention: an FFT of the whole
feature map and a global average pool) make a tile's channel weights depend on
its whole content, so tiled output can never equal whole-image output exactly;
larger tiles see statistics closer to the whole image. See
``docs/architecture.md#global-attention-and-tiling``.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterator
from dataclasses import dataclass

import numpy as np

from dfcan_tf.errors import DfcanError

__all__ = ["TILE_BATCH_PIXELS", "Stitcher", "TileSpec", "axis_tiles", "blend_weights_1d", "default_batch_size",
           "predict_tiled", "tile_specs"]

# Input pixels per network call when the batch size is left to predict_tiled: one 512² tile (the default
# tile), sixteen 128² ones. Activation memory grows with the pixels of a batch, not with the image.
TILE_BATCH_PIXELS = 512 * 512


@dataclass(frozen=True)
class TileSpec:
    """One tile: where it is read from the input and where its output goes.

    Attributes
    ----------
    index
        ``(row, col)`` of the tile in the grid.
    input_slices
        ``(rows, cols)`` slices of the input image.
    output_slices
        ``(rows, cols)`` slices of the output image (``scale`` × the input ones).
    weight_rows, weight_cols
        1-D blending weights along the output rows and columns of the tile;
        the tile's weight image is their outer product.
    """

    index: tuple[int, int]
    input_slices: tuple[slice, slice]
    output_slices: tuple[slice, slice]
    weight_rows: np.ndarray
    weight_cols: np.ndarray

    @property
    def input_shape(self) -> tuple[int, int]:
        return (self.input_slices[0].stop - self.input_slices[0].start,
                self.input_slices[1].stop - self.input_slices[1].start)

    def weights(self) -> np.ndarray:
        """The 2-D blending weights of the tile's output."""
        return np.outer(self.weight_rows, self.weight_cols)


def axis_tiles(length: int, tile: int, overlap: int) -> list[tuple[int, int]]:
    """``(start, stop)`` of evenly spread tiles covering ``range(length)``.

    Every tile is ``min(tile, length)`` long; neighbours share at least
    ``overlap`` pixels.
    """
    if length < 1:
        raise DfcanError(f"cannot tile an empty axis. Received: length={length}")
    if tile < 1 or overlap < 0:
        raise DfcanError(f"tile size must be positive and overlap non-negative. Received: tile={tile}, overlap={overlap}")
    if tile >= length:
        return [(0, length)]
    if 2 * overlap > tile:
        raise DfcanError(f"overlap must be at most half the tile size. Received: tile={tile}, overlap={overlap}")
    n = math.ceil((length - overlap) / (tile - overlap))
    starts = np.round(np.linspace(0, length - tile, n)).astype(int)
    return [(int(s), int(s) + tile) for s in starts]


def _ramp(n: int) -> np.ndarray:
    """0 → 1 over ``n`` pixels: 0 for the first quarter, raised cosine, 1 for the last quarter."""
    q = n // 4
    mid = n - 2 * q
    t = (np.arange(mid) + 0.5) / mid if mid else np.zeros(0)
    return np.concatenate([np.zeros(q), 0.5 - 0.5 * np.cos(np.pi * t), np.ones(q)])


def blend_weights_1d(spans: list[tuple[int, int]]) -> list[np.ndarray]:
    """Blending weights for tiles ``spans`` along one axis, forming a partition of unity.

    Parameters
    ----------
    spans
        ``(start, stop)`` of each tile, sorted, covering ``[spans[0][0], spans[-1][1])``.

    Returns
    -------
    list of numpy.ndarray
        One float64 array per tile, of the tile's length; summed at every
        position they give exactly 1.
    """
    raw = []
    for i, (start, stop) in enumerate(spans):
        w = np.ones(stop - start)
        if i > 0:
            n = spans[i - 1][1] - start  # shared with the previous tile
            if n > 0:
                w[:n] *= _ramp(n)
        if i < len(spans) - 1:
            n = stop - spans[i + 1][0]  # shared with the next tile
            if n > 0:
                w[stop - start - n :] *= _ramp(n)[::-1]
        raw.append(w)
    end = spans[-1][1]
    total = np.zeros(end)
    for (start, stop), w in zip(spans, raw):
        total[start:stop] += w
    if np.any(total[spans[0][0] :] <= 0):  # cannot happen with overlap <= tile / 2; kept as a guard
        raise DfcanError(f"tile layout leaves pixels without weight: {spans}")
    return [w / total[start:stop] for (start, stop), w in zip(spans, raw)]


def tile_specs(
    shape: tuple[int, int],
    tile_size: int | tuple[int, int],
    overlap: int | tuple[int, int],
    *,
    scale: int = 1,
) -> list[TileSpec]:
    """Tile an image of ``shape`` (H, W) for a network that upsamples by ``scale``.

    Parameters
    ----------
    shape
        Input image size ``(H, W)``.
    tile_size, overlap
        Tile side and minimum overlap in input pixels (one value or per axis).
        A tile larger than the image is clipped to it (one tile on that axis).
    scale
        Output/input size ratio; output slices and weights are on the output grid.

    Returns
    -------
    list of TileSpec
        Row-major; all tiles have the same input shape.
    """
    ts = (tile_size, tile_size) if np.isscalar(tile_size) else tuple(tile_size)
    ov = (overlap, overlap) if np.isscalar(overlap) else tuple(overlap)
    axes = []
    for length, t, o in zip(shape, ts, ov):
        spans = axis_tiles(int(length), int(t), int(o))
        out_spans = [(scale * a, scale * b) for a, b in spans]
        axes.append((spans, out_spans, blend_weights_1d(out_spans)))
    (rs, ro, rw), (cs, co, cw) = axes
    specs = []
    for i in range(len(rs)):
        for j in range(len(cs)):
            specs.append(TileSpec(
                index=(i, j),
                input_slices=(slice(*rs[i]), slice(*cs[j])),
                output_slices=(slice(*ro[i]), slice(*co[j])),
                weight_rows=rw[i].astype(np.float32),
                weight_cols=cw[j].astype(np.float32),
            ))
    return specs


class Stitcher:
    """Accumulate weighted tile outputs into one output image.

    Parameters
    ----------
    shape
        Output image size ``(sH, sW)``.
    """

    def __init__(self, shape: tuple[int, int]):
        self.output = np.zeros(shape, dtype=np.float32)
        self._buffer: np.ndarray | None = None

    def add(self, spec: TileSpec, tile_output: np.ndarray) -> None:
        """Add one tile's output ``(sh, sw)`` at its place, weighted by its blending window."""
        rows, cols = spec.output_slices
        expected = (rows.stop - rows.start, cols.stop - cols.start)
        tile_output = np.asarray(tile_output, dtype=np.float32).reshape(tile_output.shape[:2])
        if tile_output.shape != expected:
            raise DfcanError(
                f"tile {spec.index}: network output has shape {tile_output.shape}, expected {expected} "
                "(does the scale match the model?)"
            )
        # (tile · w_rows) · w_cols, in place in one tile-sized buffer: same rounding as the plain expression.
        if self._buffer is None or self._buffer.shape != expected:
            self._buffer = np.empty(expected, dtype=np.float32)
        np.multiply(tile_output, spec.weight_rows[:, None], out=self._buffer)
        self._buffer *= spec.weight_cols[None, :]
        self.output[rows, cols] += self._buffer

    def result(self) -> np.ndarray:
        """The stitched output image (float32)."""
        return self.output


def _batches(items: list, size: int) -> Iterator[list]:
    for i in range(0, len(items), size):
        yield items[i : i + size]


def default_batch_size(tile_shape: tuple[int, int], n_tiles: int | None = None) -> int:
    """Tiles per network call when none is given: as many ``tile_shape`` tiles as fit in :data:`TILE_BATCH_PIXELS`.

    At least 1 and at most ``n_tiles``. On a CPU a batch does not raise the
    per-pixel rate of a 512² tile (measured: ``docs/architecture.md#tiling-speed``);
    it saves per-call overhead for small tiles, at memory proportional to the
    batch's pixels.
    """
    batch = max(1, TILE_BATCH_PIXELS // max(1, int(tile_shape[0]) * int(tile_shape[1])))
    return batch if n_tiles is None else max(1, min(batch, int(n_tiles)))


def predict_tiled(
    predict_batch: Callable[[np.ndarray], np.ndarray],
    image: np.ndarray,
    *,
    scale: int,
    tile_size: int | tuple[int, int],
    overlap: int | tuple[int, int],
    batch_size: int | None = None,
    progress: bool = False,
) -> np.ndarray:
    """Run ``predict_batch`` tile by tile over ``image`` and stitch the outputs.

    Parameters
    ----------
    predict_batch
        Maps a float32 batch ``(N, h, w, C)`` to ``(N, scale·h, scale·w[, 1])``.
    image
        ``(H, W, C)`` network input (already normalised).
    scale, tile_size, overlap
        As :func:`tile_specs`.
    batch_size
        Tiles per network call (all tiles have the same shape); ``None``:
        :func:`default_batch_size`.
    progress
        Show a tqdm bar over tiles.

    Returns
    -------
    numpy.ndarray
        ``(scale·H, scale·W)`` float32.
    """
    if image.ndim != 3:
        raise DfcanError(f"tiled prediction needs an (H, W, C) input. Received: shape={image.shape}")
    h, w = image.shape[:2]
    specs = tile_specs((h, w), tile_size, overlap, scale=scale)
    stitcher = Stitcher((scale * h, scale * w))
    bar = None
    if progress and len(specs) > 1:
        from tqdm.auto import tqdm

        bar = tqdm(total=len(specs), desc="tiles", unit="tile", leave=False)
    if batch_size is None:
        batch_size = default_batch_size(specs[0].input_shape, len(specs))
    for group in _batches(specs, max(1, int(batch_size))):
        # One copy: the tiles are cut straight into a contiguous float32 batch.
        batch = np.empty((len(group), *group[0].input_shape, image.shape[2]), dtype=np.float32)
        for k, spec in enumerate(group):
            batch[k] = image[spec.input_slices]
        out = np.asarray(predict_batch(batch))
        for spec, tile_out in zip(group, out):
            stitcher.add(spec, tile_out[..., 0] if tile_out.ndim == 3 else tile_out)
        if bar is not None:
            bar.update(len(group))
    if bar is not None:
        bar.close()
    return stitcher.result()
