"""Loading the authors' Keras 2.2.4 weight files (HDF5 with layer_names / weight_names, conv2d_N)."""

import h5py
import numpy as np
import pytest

from dfcan_tf.errors import DfcanError
from dfcan_tf.nets.dfcan import build_dfcan
from dfcan_tf.nets.discriminators import build_dfgan_discriminator
from dfcan_tf.nets.reference_weights import load_reference_weights


def _write_keras2_file(path, arrays_per_layer, kinds, *, start=7, shuffle_order=True, wrap=False):
    """Write a Keras 2.2.4-style weights file: layers conv2d_N / dense_N numbered from ``start``
    in creation order, listed in ``layer_names`` in a different (topological-ish) order, with
    weightless Lambda/Activation layers in between."""
    counters = {"conv2d": start, "dense": 1}
    entries = []
    for kind, arrays in zip(kinds, arrays_per_layer):
        name = f"{kind}_{counters[kind]}"
        counters[kind] += 1
        entries.append((name, arrays))
    listed = list(entries)
    if shuffle_order:
        rng = np.random.default_rng(0)
        listed = [listed[i] for i in rng.permutation(len(listed))]
    with h5py.File(path, "w") as f:
        root = f.create_group("model_weights") if wrap else f
        names = [b"input_1", b"lambda_1"] + [n.encode() for n, _ in listed] + [b"activation_1"]
        root.attrs["layer_names"] = np.array(names)
        root.attrs["keras_version"] = b"2.2.4"
        root.attrs["backend"] = b"tensorflow"
        for extra in ("input_1", "lambda_1", "activation_1"):
            root.create_group(extra).attrs["weight_names"] = np.array([], dtype="S1")
        for name, arrays in listed:
            g = root.create_group(name)
            wnames = [f"{name}/kernel:0".encode(), f"{name}/bias:0".encode()]
            g.attrs["weight_names"] = np.array(wnames)
            for wn, arr in zip(wnames, arrays):
                g.create_dataset(wn.decode(), data=arr)


def _layers_of(model):
    from dfcan_tf.nets.reference_weights import _weighted_layers

    return _weighted_layers(model)


@pytest.mark.parametrize("wrap", [False, True])
def test_dfcan_reference_weights_load_in_creation_order(tmp_path, rng, wrap):
    model = build_dfcan(1, 2, width=16, n_groups=2, n_blocks=2, size_psc=16, reduction=4)
    layers = _layers_of(model)
    arrays = [[rng.standard_normal(w.shape).astype(np.float32) * 0.05 for w in layer.weights] for layer in layers]
    path = tmp_path / "weights.best"
    _write_keras2_file(path, arrays, ["conv2d"] * len(layers), wrap=wrap)
    x = rng.random((1, 24, 24, 1), dtype=np.float32)
    before = model(x).numpy()
    load_reference_weights(model, path)
    flat = [a for per_layer in arrays for a in per_layer]
    assert len(model.weights) == len(flat) == 5 * 2 * 2 * 2 + 3 * 2  # 2 groups x 2 blocks x 5 layers x (kernel, bias) + head, upsample, output
    for w, a in zip(model.weights, flat):
        np.testing.assert_array_equal(w.numpy(), a)
    assert np.max(np.abs(model(x).numpy() - before)) > 1e-3


def test_discriminator_reference_weights_convs_then_dense(tmp_path, rng):
    model = build_dfgan_discriminator((32, 32, 1), widths=(4, 8), head_width=4, dense_width=6)
    layers = _layers_of(model)
    kinds = ["dense" if len(layer.weights[0].shape) == 2 else "conv2d" for layer in layers]
    arrays = [[rng.standard_normal(w.shape).astype(np.float32) for w in layer.weights] for layer in layers]
    path = tmp_path / "weights.best"
    _write_keras2_file(path, arrays, kinds)
    load_reference_weights(model, path)
    for w, a in zip(model.weights, [a for per in arrays for a in per]):
        np.testing.assert_array_equal(w.numpy(), a)


def test_first_mismatch_is_named_and_model_untouched(tmp_path, rng):
    model = build_dfcan(1, 2, width=16, n_groups=1, n_blocks=2, size_psc=16, reduction=4)
    layers = _layers_of(model)
    arrays = [[rng.standard_normal(w.shape).astype(np.float32) for w in layer.weights] for layer in layers]
    arrays[3][0] = np.zeros((3, 3, 16, 8), np.float32)  # 4th conv: wrong output width
    path = tmp_path / "weights.best"
    _write_keras2_file(path, arrays, ["conv2d"] * len(layers), start=1)
    snapshot = [w.numpy().copy() for w in model.weights]
    with pytest.raises(DfcanError, match=r"conv2d_4.*\(3, 3, 16, 8\).*group0_block0_fca/conv.*\(3, 3, 16, 16\)"):
        load_reference_weights(model, path)
    for w, s in zip(model.weights, snapshot):
        np.testing.assert_array_equal(w.numpy(), s)


def test_wrong_architecture_and_bad_files(tmp_path, rng):
    small = build_dfcan(1, 2, width=16, n_groups=1, n_blocks=1, size_psc=16, reduction=4)
    big = build_dfcan(1, 2, width=16, n_groups=1, n_blocks=2, size_psc=16, reduction=4)
    arrays = [[rng.standard_normal(w.shape).astype(np.float32) for w in layer.weights] for layer in _layers_of(small)]
    path = tmp_path / "weights.best"
    _write_keras2_file(path, arrays, ["conv2d"] * len(arrays))
    with pytest.raises(DfcanError, match="has 8 layers with weights but model 'dfcan' has 13"):
        load_reference_weights(big, path)
    junk = tmp_path / "junk.h5"
    junk.write_bytes(b"not hdf5 at all")
    with pytest.raises(DfcanError, match="junk.h5: not an HDF5 weights file"):
        load_reference_weights(big, junk)
    with pytest.raises(DfcanError, match="no such file"):
        load_reference_weights(big, tmp_path / "missing.h5")
