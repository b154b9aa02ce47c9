"""Shared test set-up: quiet TensorFlow, deterministic seeds, tiny model configurations."""

import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
os.environ.setdefault("PYTHONHASHSEED", "0")

import numpy as np  # noqa: E402
import pytest  # noqa: E402

# A DFCAN small enough for tests: 8 channels, 1 group of 1 block, 16×16 spectrum.
TINY = dict(width=8, n_groups=1, n_blocks=1, size_psc=16, reduction=4)


@pytest.fixture
def rng():
    return np.random.default_rng(1234)


@pytest.fixture
def tiny_kwargs():
    return dict(TINY)
