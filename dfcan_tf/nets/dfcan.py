"""DFCAN and the DFGAN generator: configuration and builder (``docs/architecture.md#dfcan``).

Both are Keras functional models made of registered layers, so
``model.save("x.keras")`` reloads with ``safe_mode=True``. They take
``(None, None, C)`` inputs: any spatial size runs without rebuilding.

``model.weights`` follow data flow: head conv; per FCAB conv1, conv2,
attention conv, squeeze, excite; upsampling conv; output conv, the order in
which the authors' Keras 2 code created its ``conv2d_N`` layers
(``docs/architecture.md#weight-order``), which
:func:`dfcan_tf.nets.reference_weights.load_reference_weights` relies on.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, ClassVar

import keras

from dfcan_tf.nets.base import NetConfig, _check
from dfcan_tf.nets.layers import GELU, FourierChannelAttention, PixelShuffle

PAPER = {
    "authors": "Chang Qiao, Di Li, Yuting Guo, Chong Liu, Tao Jiang, Qionghai Dai, Dong Li",
    "title": "Evaluation and development of deep neural networks for image super-resolution in optical microscopy",
    "venue": "Nature Methods 18:194-202",
    "year": 2021,
    "doi": "10.1038/s41592-020-01048-5",
}
RECIPES: dict[str, dict[str, Any]] = {
    "dfcan": {"loss": "mse_ssim", "optimizer": "adam", "learning_rate": 1e-4, "batch_size": 4, "patch_size": 128},
    "dfgan_generator": {"loss": "mse_ssim+adversarial", "optimizer": "adam", "learning_rate": 1e-4,
                        "batch_size": 2, "patch_size": 128},
}

# The paper's values (docs/architecture.md#dfcan, #dfgan-generator).
DFCAN_DEFAULTS = {"width": 64, "n_groups": 4, "n_blocks": 4, "gamma": 0.8, "size_psc": 128, "reduction": 16}
DFGAN_GENERATOR_DEFAULTS = {**DFCAN_DEFAULTS, "n_groups": 5, "n_blocks": 10, "gamma": 0.1}
VARIANTS = {"dfcan": DFCAN_DEFAULTS, "dfgan_generator": DFGAN_GENERATOR_DEFAULTS}
SPECTRA = ("fft", "dft")


@dataclass(frozen=True)
class DFCANConfig(NetConfig):
    """Architecture of a DFCAN-family network.

    Parameters
    ----------
    architecture
        ``"dfcan"`` or ``"dfgan_generator"`` (same topology; the generator is
        5 groups × 10 blocks with gamma 0.1).
    input_channels
        1 for SISR, 9 for linear SIM, 25 for nonlinear SIM.
    scale
        Upsampling factor (2 for linear SIM ground truth, 3 for nonlinear).
    width, n_groups, n_blocks, gamma, size_psc, reduction
        Feature channels, residual groups, FCABs per group, spectrum gamma,
        resized spectrum side, channel-attention reduction. Left ``None``,
        they take the paper's values for the architecture.
    spectrum
        ``"fft"`` or ``"dft"``: how Fourier attention computes the spectrum
        (numerically the same; ``"dft"`` converts to ONNX/TFLite).
    """

    ARCHITECTURES: ClassVar[tuple[str, ...]] = tuple(VARIANTS)

    architecture: str = "dfcan"
    width: int | None = None
    n_groups: int | None = None
    n_blocks: int | None = None
    gamma: float | None = None
    size_psc: int | None = None
    reduction: int | None = None
    spectrum: str = "fft"

    def __post_init__(self) -> None:
        super().__post_init__()
        self._resolve_defaults(VARIANTS)
        self._check_int("width", 1, 1024)
        self._check_int("n_groups", 1, 64)
        self._check_int("n_blocks", 1, 64)
        self._check_int("size_psc", 2, 4096)
        self._check_int("reduction", 1, 1024)
        self._check_float("gamma", 0.0, 4.0)
        _check(self.width // self.reduction >= 1,
               f"width // reduction must be at least 1; lower reduction or raise width. "
               f"Received: width={self.width}, reduction={self.reduction}")
        self._check_choice("spectrum", SPECTRA)

    @classmethod
    def dfcan(cls, input_channels: int = 1, scale: int = 2, **overrides: Any) -> DFCANConfig:
        """DFCAN with the paper's values, overridable by keyword."""
        return cls(architecture="dfcan", input_channels=input_channels, scale=scale, **overrides)

    @classmethod
    def dfgan_generator(cls, input_channels: int = 1, scale: int = 2, **overrides: Any) -> DFCANConfig:
        """DFGAN generator with the paper's values, overridable by keyword."""
        return cls(architecture="dfgan_generator", input_channels=input_channels, scale=scale, **overrides)



def _conv(filters: int, name: str, kernel_size: int = 3, **kwargs) -> keras.layers.Conv2D:
    # Keras defaults (glorot-uniform kernel, zero bias) as in the authors' code.
    return keras.layers.Conv2D(filters, kernel_size, padding="same", name=name, **kwargs)


def build(config: DFCANConfig) -> keras.Model:
    """Build the network ``config`` describes (DFCAN or the DFGAN generator).

    Returns
    -------
    keras.Model
        Input ``(None, None, input_channels)``, output ``(N, scale·H, scale·W, 1)`` in (0, 1).
    """
    c = config
    inputs = keras.Input((None, None, c.input_channels), name="input")
    x = GELU(name="head_gelu")(_conv(c.width, "head_conv")(inputs))
    for g in range(c.n_groups):
        group_in = x
        for b in range(c.n_blocks):
            p = f"group{g}_block{b}"
            y = GELU(name=f"{p}_gelu1")(_conv(c.width, f"{p}_conv1")(x))
            y = GELU(name=f"{p}_gelu2")(_conv(c.width, f"{p}_conv2")(y))
            y = FourierChannelAttention(
                c.width, reduction=c.reduction, gamma=c.gamma, size_psc=c.size_psc,
                spectrum=c.spectrum, name=f"{p}_fca",
            )(y)
            x = keras.layers.Add(name=f"{p}_add")([y, x])
        x = keras.layers.Add(name=f"group{g}_add")([x, group_in])
    x = GELU(name="upsample_gelu")(_conv(c.width * c.scale**2, "upsample_conv")(x))
    x = PixelShuffle(c.scale, name="pixel_shuffle")(x)
    outputs = _conv(1, "output_conv", activation="sigmoid")(x)
    return keras.Model(inputs, outputs, name=c.architecture)


def build_dfcan(input_channels: int = 1, scale: int = 2, **overrides: Any) -> keras.Model:
    """DFCAN with the paper's values (4 groups × 4 FCABs, gamma 0.8), overridable by keyword."""
    return build(DFCANConfig.dfcan(input_channels, scale, **overrides))


def build_dfgan_generator(input_channels: int = 1, scale: int = 2, **overrides: Any) -> keras.Model:
    """The DFGAN generator (5 groups × 10 FCABs, gamma 0.1), overridable by keyword."""
    return build(DFCANConfig.dfgan_generator(input_channels, scale, **overrides))


def with_spectrum(model: keras.Model, config: DFCANConfig, spectrum: str) -> keras.Model:
    """The same network with Fourier attention computed by ``spectrum`` ("fft" or "dft"), same weights."""
    if getattr(config, "spectrum", spectrum) == spectrum:
        return model
    twin = build(config.replace(spectrum=spectrum))
    twin.set_weights(model.get_weights())
    return twin
