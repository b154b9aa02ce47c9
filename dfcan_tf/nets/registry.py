"""The architecture registry: one line per network family, the only place builders are looked up.

A configuration is pure data tagged by its ``architecture`` field (a
discriminated union over the registered config classes). The registry maps
that tag to the config class, the builder, the source paper and its training
recipe; everything else (training, prediction, tiling, export, ``dfcan info``)
goes through :func:`build` and :func:`config_from_dict`, so adding a network
is one module plus one :func:`register` call below.

The receptive field is *measured*: :func:`receptive_field` sends an impulse
through the built network and reports how far the response reaches; the
default tile overlap comes from it (see ``docs/architecture.md#global-attention-and-tiling``).
"""

from __future__ import annotations

import importlib
from collections.abc import Callable
from dataclasses import dataclass, field
from functools import lru_cache
from typing import Any

from dfcan_tf.errors import DfcanError


@dataclass(frozen=True)
class Architecture:
    """A registered network: its name, config class, builder and provenance.

    ``module`` is imported only when the architecture is used, so the registry
    itself is cheap to import (``dfcan --help`` never loads TensorFlow).
    """

    name: str
    module: str
    config_class: str
    builder: str = "build"
    description: str = ""
    adversarial: bool = False  # trained with a discriminator (DFGAN, Pix2Pix)
    defaults: dict[str, Any] = field(default_factory=dict)

    def _module(self):
        return importlib.import_module(self.module)

    @property
    def config_cls(self) -> type:
        return getattr(self._module(), self.config_class)

    def build(self, config: Any):
        return getattr(self._module(), self.builder)(config)

    @property
    def paper(self) -> dict[str, Any]:
        mod = self._module()
        papers = getattr(mod, "PAPERS", None)
        return dict(papers[self.name]) if papers and self.name in papers else dict(getattr(mod, "PAPER", {}))

    @property
    def recipe(self) -> dict[str, Any]:
        mod = self._module()
        recipes = getattr(mod, "RECIPES", None)
        return dict(recipes[self.name]) if recipes and self.name in recipes else dict(getattr(mod, "RECIPE", {}))


_REGISTRY: dict[str, Architecture] = {}


def register(arch: Architecture, *, replace: bool = False) -> Architecture:
    """Add ``arch`` to the registry (``replace`` to redefine a name, e.g. in tests)."""
    if arch.name in _REGISTRY and not replace:
        raise ValueError(f"architecture {arch.name!r} is already registered")
    _REGISTRY[arch.name] = arch
    _cached_receptive_field.cache_clear()
    return arch


def unregister(name: str) -> None:
    """Remove ``name`` from the registry (tests)."""
    _REGISTRY.pop(name, None)
    _cached_receptive_field.cache_clear()


def names() -> list[str]:
    """Registered architecture names, in registration order."""
    return list(_REGISTRY)


def get(name: str) -> Architecture:
    """The registered architecture ``name``; an unknown name is a :class:`DfcanError` listing the known ones."""
    try:
        return _REGISTRY[name]
    except KeyError:
        raise DfcanError(f"unknown architecture {name!r}; known architectures are {names()}") from None


def config_class(name: str) -> type:
    """The config class of architecture ``name``."""
    return get(name).config_cls


def make_config(name: str, input_channels: int = 1, scale: int = 2, **overrides: Any) -> Any:
    """A config of architecture ``name`` with its paper's defaults, overridable by keyword."""
    arch = get(name)
    return arch.config_cls(architecture=name, input_channels=input_channels, scale=scale,
                           **{**arch.defaults, **overrides})


def config_from_dict(data: Any) -> Any:
    """Rebuild a config from its ``to_dict()`` form, dispatching on ``data["architecture"]``."""
    if not isinstance(data, dict):
        raise DfcanError(f"model configuration must be a JSON object. Received: {type(data).__name__}")
    if "architecture" not in data:
        raise DfcanError(f"model configuration has no 'architecture'; known architectures are {names()}")
    return get(data["architecture"]).config_cls.from_dict(dict(data))


def build(config: Any):
    """Build the Keras network ``config`` describes."""
    return get(config.architecture).build(config)


def describe(config: Any) -> str:
    """One line naming the network and its size, for logs and error messages."""
    fields = {k: v for k, v in config.to_dict().items() if k not in ("architecture", "input_channels", "scale")}
    inner = ", ".join(f"{k} {v}" for k, v in fields.items())
    return f"{config.architecture} ({config.input_channels} input channel(s), x{config.scale}" \
           + (f", {inner})" if inner else ")")


# --- receptive field ----------------------------------------------------------------------------

# Per-convolution gain of the probe: the response's centre grows as GAIN**n and
# its far edge as (GAIN/9)**n after n 3×3 convolutions; 4 keeps both inside
# float32 for the ~40 convolutions of DFCAN (deeper networks saturate to inf at
# the centre, which still counts as reached).
PROBE_GAIN = 4.0


def _positive_probe(model: Any) -> Any:
    """A copy of ``model`` whose impulse response is non-zero exactly where the network can reach.

    Kernels become their absolute values normalised to sum :data:`PROBE_GAIN`
    per output channel, biases and
    shifts zero, scales and variances one, and a saturating output activation (sigmoid,
    tanh) linear. On a zero image every feature away from the impulse is then
    exactly zero, so global operations (the average pooling inside channel
    attention) only rescale features that are already zero there, and the
    extent of the response is the network's receptive field. ``model`` is not
    touched.
    """
    import keras
    import numpy as np

    probe = keras.models.clone_model(model)
    # Only the output layer: a saturating output would hide small far responses; saturating
    # activations inside (attention gates) must stay bounded.
    outputs = {id(t) for t in probe.outputs}
    for layer in probe.layers:
        if id(layer.output) in outputs:
            act = getattr(layer, "activation", None)
            if act is not None and getattr(act, "__name__", "") in ("sigmoid", "tanh", "hard_sigmoid"):
                layer.activation = keras.activations.linear
    for var in probe.weights:
        name = var.path.rsplit("/", 1)[-1]
        value = np.asarray(var.numpy(), dtype=np.float64)
        if name in ("bias", "beta", "moving_mean"):
            value = np.zeros_like(value)
        elif name in ("gamma", "moving_variance"):
            value = np.ones_like(value)
        else:
            value = np.abs(value)
            if value.ndim >= 2:  # conv/dense kernel: the last axis is the output channel
                value = PROBE_GAIN * value / np.maximum(value.reshape(-1, value.shape[-1]).sum(axis=0), 1e-30)
        var.assign(value.astype(var.dtype))
    return probe


MAX_RF_IMAGE = 256  # the impulse image never grows beyond this; larger fields are reported as its half-width


def measure_receptive_field(model: Any, channels: int, scale: int, *, size: int = 0) -> int:
    """Half-width, in input pixels, of the region a centre impulse reaches: measured, not derived.

    A positive copy of ``model`` (:func:`_positive_probe`) gets a unit impulse
    on a zero image; the farthest output row/column that changes (float32
    resolution), converted back to the input grid, is the receptive field.
    The image grows (up to :data:`MAX_RF_IMAGE`) until the response stays clear
    of its border; a field still reaching the border is reported as the
    largest half-width measured.
    """
    import numpy as np

    probe = _positive_probe(model)
    size = size or 64
    while True:
        base = np.zeros((1, size, size, channels), np.float32)
        c = size // 2
        with np.errstate(invalid="ignore", over="ignore"):
            out0 = np.asarray(probe(base, training=False), dtype=np.float64)[0, ..., 0]
            # The probe's gain compounds over depth (PROBE_GAIN per layer): a deep network can overflow
            # float32 on a unit impulse (inf, then NaN across a whole-image transform), which would read as
            # reach everywhere. A smaller impulse keeps the same support.
            for amplitude in (1.0, 1e-20):
                poked = base.copy()
                poked[0, c, c, :] = amplitude
                out1 = np.asarray(probe(poked, training=False), dtype=np.float64)[0, ..., 0]
                if np.isfinite(out1).all() or not np.isfinite(out0).all():
                    break
            reached = (out1 != out0) & ~(np.isnan(out0) & np.isnan(out1))
        ys, xs = np.nonzero(reached)
        if ys.size == 0:
            return 0
        centre = (c + 0.5) * scale - 0.5
        reach = max(np.abs(ys - centre).max(), np.abs(xs - centre).max())
        rf = int(np.ceil(reach / scale))
        if rf < c - 2 or size >= MAX_RF_IMAGE:
            return min(rf, c)
        size *= 2


_KNOWN_FIELDS: dict[Any, int] = {}


def _field_key(config: Any) -> Any:
    """The configuration whose field stands for ``config``'s: DFCAN's two spectrum forms are one function."""
    if getattr(config, "spectrum", "fft") != "fft":
        return config.replace(spectrum="fft")
    return config


def remember_receptive_field(config: Any, value: int) -> None:
    """Record a receptive field measured earlier (a run folder stores it), so it is not measured again."""
    _KNOWN_FIELDS[_field_key(config)] = int(value)


@lru_cache(maxsize=64)
def _cached_receptive_field(config: Any) -> int:
    return measure_receptive_field(build(config), config.input_channels, config.scale)


def receptive_field(config: Any) -> int:
    """Measured receptive-field half-width of ``config``'s network in input pixels (cached per config).

    Run folders store the value measured when they were written (``config.json``'s
    ``receptive_field``), so prediction does not measure a large network again.
    """
    config = _field_key(config)
    if config in _KNOWN_FIELDS:
        return _KNOWN_FIELDS[config]
    return _cached_receptive_field(config)


def default_overlap(config: Any) -> int:
    """Tile overlap for ``config``: the measured receptive field, rounded up to a multiple of 8."""
    rf = receptive_field(config)
    return int(-(-rf // 8) * 8)


# --- the registered networks: one line each -------------------------------------------------------

_NETS = "dfcan_tf.nets."
register(Architecture("dfcan", _NETS + "dfcan", "DFCANConfig", description="DFCAN (Qiao et al. 2021)"))
register(Architecture("dfgan_generator", _NETS + "dfcan", "DFCANConfig", adversarial=True,
                      description="DFGAN generator (Qiao et al. 2021)"))
register(Architecture("srcnn", _NETS + "srcnn", "SRCNNConfig", description="SRCNN (Dong et al. 2016)"))
register(Architecture("edsr", _NETS + "edsr", "EDSRConfig", description="EDSR baseline (Lim et al. 2017)"))
register(Architecture("edsr_paper", _NETS + "edsr", "EDSRConfig", description="EDSR paper size (Lim et al. 2017)"))
register(Architecture("rcan", _NETS + "rcan", "RCANConfig", description="RCAN (Zhang et al. 2018)"))
register(Architecture("rcan_small", _NETS + "rcan", "RCANConfig", description="RCAN with DFCAN's 4×4 blocks"))
register(Architecture("unet", _NETS + "unet", "UNetConfig", description="U-Net as in CARE (Weigert et al. 2018)"))
register(Architecture("scunet", _NETS + "unet", "ScUNetConfig", description="scU-Net (Jin et al. 2020)"))
register(Architecture("pix2pix", _NETS + "pix2pix", "Pix2PixConfig", adversarial=True,
                      description="Pix2Pix U-Net generator (Isola et al. 2017)"))

Builder = Callable[[Any], Any]
