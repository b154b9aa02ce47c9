"""Tiled prediction without overhead: one graph per tile shape, batched tiles, unchanged stitching, the rates report."""

from __future__ import annotations

import keras
import numpy as np
import pytest
import tensorflow as tf

from dfcan_tf.benchmark.predict import (
    ACTIVATION_MAPS,
    measure_tiled_prediction,
    predict_report,
    prediction_rates,
    tiled_memory_bound_mb,
)
from dfcan_tf.inference.predict import KerasPredictor, predict_image, predictor
from dfcan_tf.inference.tiling import (
    TILE_BATCH_PIXELS,
    default_batch_size,
    predict_tiled,
    tile_specs,
)
from dfcan_tf.nets import registry
from dfcan_tf.nets.dfcan import DFCANConfig

TINY = {"width": 8, "n_groups": 1, "n_blocks": 1, "size_psc": 16, "reduction": 4, "spectrum": "dft"}


@pytest.fixture(scope="module")
def tiny_model():
    keras.utils.set_random_seed(3)
    return registry.build(DFCANConfig.dfcan(1, 2, **TINY))


@pytest.fixture(scope="module")
def image():
    return np.random.default_rng(5).random((80, 104, 1), dtype=np.float32)


def _reference_loop(model, image, tile, overlap):
    """The previous implementation, written out: one shape-polymorphic graph, batch 1, plain weighted sum."""
    fn = tf.function(lambda b: model(b, training=False),
                     input_signature=[tf.TensorSpec([None, None, None, 1], tf.float32)])
    specs = tile_specs(image.shape[:2], tile, overlap, scale=2)
    out = np.zeros((2 * image.shape[0], 2 * image.shape[1]), np.float32)
    for s in specs:
        y = fn(tf.constant(image[s.input_slices][None])).numpy()[0, ..., 0]
        out[s.output_slices] += y * s.weight_rows[:, None] * s.weight_cols[None, :]
    return out, len(specs)


def test_one_trace_for_many_tiles_and_batches_match_batch_one(tiny_model, image):
    run = KerasPredictor(tiny_model, 1)
    single = predict_tiled(run, image, scale=2, tile_size=32, overlap=8, batch_size=1)
    n = len(tile_specs(image.shape[:2], 32, 8))
    assert n == 12 and run.traces == 1  # 12 tiles of one shape: traced once
    again = predict_tiled(run, image[::-1].copy(), scale=2, tile_size=32, overlap=8, batch_size=1)
    assert run.traces == 1 and again.shape == (160, 208)
    batched = predict_tiled(run, image, scale=2, tile_size=32, overlap=8, batch_size=5)
    assert run.traces == 3  # batches of 5, and the last one of 12 - 10 = 2
    np.testing.assert_allclose(batched, single, atol=1e-6)
    auto = predict_tiled(run, image, scale=2, tile_size=32, overlap=8)  # default: all 12 in one call
    assert run.traces == 4
    np.testing.assert_allclose(auto, single, atol=1e-6)
    assert np.max(np.abs(single)) > 1e-3  # not a trivially zero output


def test_stitched_output_matches_the_previous_implementation(tiny_model, image):
    want, n = _reference_loop(tiny_model, image, 40, 12)
    assert n == 12
    got = predict_tiled(KerasPredictor(tiny_model, 1), image, scale=2, tile_size=40, overlap=12, batch_size=5)
    np.testing.assert_allclose(got, want, atol=1e-6)
    # Stitching alone, with a deterministic numpy "network": bit-identical to the plain weighted sum.
    rng = np.random.default_rng(1)
    table = rng.random((160, 208)).astype(np.float32)

    def lookup(batch):  # output depends on where the tile came from (its first pixel)
        return np.stack([table[:2 * b.shape[0], :2 * b.shape[1]] * (1 + b[0, 0, 0]) for b in batch])[..., None]

    specs = tile_specs(image.shape[:2], 40, 12, scale=2)
    plain = np.zeros((160, 208), np.float32)
    for s in specs:
        y = lookup(image[s.input_slices][None])[0, ..., 0]
        plain[s.output_slices] += y * s.weight_rows[:, None] * s.weight_cols[None, :]
    np.testing.assert_array_equal(predict_tiled(lookup, image, scale=2, tile_size=40, overlap=12, batch_size=4), plain)


def test_predictor_is_cached_and_polymorphic_beyond_its_shape_budget(tiny_model):
    run, channels = predictor(tiny_model)
    assert channels == 1 and predictor(tiny_model)[0] is run and isinstance(run, KerasPredictor)
    bounded = KerasPredictor(tiny_model, 1, max_shapes=2)
    rng = np.random.default_rng(2)
    for shape in [(1, 16, 16, 1), (2, 16, 16, 1), (1, 24, 20, 1), (1, 17, 33, 1), (1, 16, 16, 1)]:
        x = rng.random(shape, dtype=np.float32)
        y = bounded(x)
        assert y.shape == (shape[0], 2 * shape[1], 2 * shape[2], 1)
        np.testing.assert_allclose(y, tiny_model(x, training=False).numpy(), atol=1e-5)
    assert bounded.traces == 3  # two exact shapes, then one polymorphic graph for the rest


def test_default_batch_size_bounds_pixels_per_call():
    assert TILE_BATCH_PIXELS == 512 * 512
    assert default_batch_size((512, 512)) == 1 and default_batch_size((1024, 1024)) == 1
    assert default_batch_size((128, 128)) == 16 and default_batch_size((128, 128), 5) == 5
    assert default_batch_size((100, 300)) == 8  # 262144 // 30000


def test_prediction_rates_from_timings():
    m = {"n_tiles": 25, "tile": 512, "side": 2048, "seconds": 100.0, "whole_seconds": 3.5,
         "cpu_seconds": 180.0, "whole_cpu_seconds": 7.0}
    r = prediction_rates(m)
    assert r["whole_rate"] == pytest.approx(0.262144 / 3.5)
    assert r["tiled_rate"] == pytest.approx(25 * 0.262144 / 100)
    assert r["image_rate"] == pytest.approx(2048 ** 2 / 1e6 / 100)
    assert r["tiled_ratio"] == pytest.approx(25 * 3.5 / 100)
    assert r["cpu_tiled_ratio"] == pytest.approx(25 * 7.0 / 180)
    assert r["cpu_image_ratio"] == pytest.approx(r["cpu_tiled_ratio"] * 2048 ** 2 / (25 * 512 ** 2))


def test_benchmark_measures_and_reports_both_rates():
    cfg = DFCANConfig.dfcan(1, 2, **{**TINY, "spectrum": "fft"})
    m = measure_tiled_prediction(cfg, 64, 32, whole_repeats=2)
    assert m["output_shape"] == (128, 128) and m["tile"] == 32 and m["side"] == 64
    n = len(tile_specs((64, 64), 32, min(m["overlap"], 16)))
    assert m["n_tiles"] == n > 1 and m["batch_size"] == n  # 32² tiles: all in one call
    assert m["traces"] == 2  # batch of n for the tiles, batch of 1 for the whole images
    assert m["whole_repeats"] == 2 and m["whole_seconds"] > 0 and m["cpu_seconds"] > 0
    assert m["tiled_rate"] == pytest.approx(n * 32 ** 2 / 1e6 / m["seconds"])
    assert m["tiled_ratio"] == pytest.approx(m["tiled_rate"] / m["whole_rate"])
    assert m["image_ratio"] == pytest.approx(m["tiled_ratio"] * 64 ** 2 / (n * 32 ** 2))
    expected_bound = (64 ** 2 * 12 + 128 ** 2 * 24 + n * 32 ** 2 * 8 * 4 * ACTIVATION_MAPS) / 2 ** 20
    assert m["bound_mb"] == pytest.approx(expected_bound)
    assert tiled_memory_bound_mb(cfg, 64, 32, 1) < m["bound_mb"]
    text = "\n".join(predict_report(m, 100.0, cfg))
    assert "whole 32x32 images" in text and "tiled 64x64 per computed tile pixel" in text
    assert "per image pixel" in text and "tiled/whole" in text and "documented bound" in text
    assert f"{m['tiled_ratio']:.2f} | {m['cpu_tiled_ratio']:.2f}" in text


def test_predict_image_default_batch_equals_batch_one(tiny_model, image):
    x = image[..., 0]
    one = predict_image(tiny_model, x, scale=2, tile_size=32, overlap=8, batch_size=1, normalize=False)
    auto = predict_image(tiny_model, x, scale=2, tile_size=32, overlap=8, normalize=False)
    np.testing.assert_allclose(auto, one, atol=1e-6)
    # Min-max normalised, the ~1e-7 round-off of batched convolutions is stretched by 1 / (max - min).
    normalised = predict_image(tiny_model, x, scale=2, tile_size=32, overlap=8)
    np.testing.assert_allclose(normalised, (auto - auto.min()) / (auto.max() - auto.min()), atol=1e-5)
