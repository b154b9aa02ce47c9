"""Typed, validated model configuration, saved as JSON next to the weights.

A configuration rebuilds exactly the model it describes: ``ModelConfig.from_dict(
cfg.to_dict()).build()`` gives a network with the same architecture, so a run
folder's ``config.json`` is enough to restore a model from its weights file.
Validation happens on construction and messages say what to change.
"""

from __future__ import annotations

import dataclasses
import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from dfcan_tf.errors import DfcanError

CONFIG_VERSION = 1
ARCHITECTURES = ("dfcan", "dfgan_generator")

# The paper's values (REFERENCE §2–3).
DFCAN_DEFAULTS = {"width": 64, "n_groups": 4, "n_blocks": 4, "gamma": 0.8, "size_psc": 128, "reduction": 16}
DFGAN_GENERATOR_DEFAULTS = {**DFCAN_DEFAULTS, "n_groups": 5, "n_blocks": 10, "gamma": 0.1}


# Upper bounds: far beyond any sensible network or recipe, low enough that a typo fails at once
# instead of exhausting memory (REFERENCE sizes: width 64, 5x10 blocks, 128-pixel patches, batch 4).
MODEL_LIMITS = {"input_channels": 256, "width": 1024, "n_groups": 64, "n_blocks": 64, "size_psc": 4096,
                "reduction": 1024}
TRAIN_LIMITS = {"patch_size": 4096, "batch_size": 1024, "g_updates": 100}


def _check_max(name: str, value: int, limit: int) -> None:
    _check(value <= limit, f"{name} must be at most {limit}. Received: {name}={value!r}")


def _check(condition: bool, message: str) -> None:
    if not condition:
        raise DfcanError(message)


def _check_keys(cls: type, data: Any, what: str) -> dict[str, Any]:
    """``data`` as a dict of ``cls``'s fields; a non-object or an unknown key is a :class:`DfcanError`."""
    if not isinstance(data, dict):
        raise DfcanError(f"{what} configuration must be a JSON object. Received: {type(data).__name__}")
    known = {f.name for f in dataclasses.fields(cls)}
    unknown = sorted(set(data) - known)
    _check(not unknown, f"unknown {what} configuration keys {unknown}; known keys are {sorted(known)}")
    return dict(data)


@dataclass(frozen=True)
class ModelConfig:
    """Architecture of a DFCAN-family super-resolution network.

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
        resized spectrum side, channel-attention reduction. Default to the
        paper's values for the architecture.
    spectrum
        ``"fft"`` or ``"dft"``: how Fourier attention computes the spectrum
        (numerically the same; ``"dft"`` converts to ONNX/TFLite).
    """

    architecture: str = "dfcan"
    input_channels: int = 1
    scale: int = 2
    width: int = 64
    n_groups: int = 4
    n_blocks: int = 4
    gamma: float = 0.8
    size_psc: int = 128
    reduction: int = 16
    spectrum: str = "fft"
    version: int = CONFIG_VERSION

    def __post_init__(self) -> None:
        _check(self.architecture in ARCHITECTURES,
               f"architecture must be one of {ARCHITECTURES}. Received: architecture={self.architecture!r}")
        for name in ("input_channels", "scale", "width", "n_groups", "n_blocks", "size_psc", "reduction"):
            value = getattr(self, name)
            _check(isinstance(value, int) and not isinstance(value, bool) and value >= 1,
                   f"{name} must be a positive integer. Received: {name}={value!r}")
        for name, limit in MODEL_LIMITS.items():
            _check_max(name, getattr(self, name), limit)
        _check(self.scale <= 4, f"scale must be between 1 and 4 (the paper uses 2 and 3). Received: scale={self.scale}")
        _check(self.width // self.reduction >= 1,
               f"width // reduction must be at least 1; lower reduction or raise width. "
               f"Received: width={self.width}, reduction={self.reduction}")
        _check(isinstance(self.gamma, (int, float)) and 0 < self.gamma <= 4,
               f"gamma must be in (0, 4]. Received: gamma={self.gamma!r}")
        _check(self.size_psc >= 2, f"size_psc must be at least 2. Received: size_psc={self.size_psc}")
        _check(self.spectrum in ("fft", "dft"), f"spectrum must be 'fft' or 'dft'. Received: spectrum={self.spectrum!r}")
        _check(self.version == CONFIG_VERSION,
               f"unsupported model configuration version {self.version}; this dfcan_tf reads version {CONFIG_VERSION}")
        object.__setattr__(self, "gamma", float(self.gamma))

    @classmethod
    def dfcan(cls, input_channels: int = 1, scale: int = 2, **overrides: Any) -> ModelConfig:
        """DFCAN with the paper's values, overridable by keyword."""
        return cls(architecture="dfcan", input_channels=input_channels, scale=scale,
                   **{**DFCAN_DEFAULTS, **overrides})

    @classmethod
    def dfgan_generator(cls, input_channels: int = 1, scale: int = 2, **overrides: Any) -> ModelConfig:
        """DFGAN generator with the paper's values, overridable by keyword."""
        return cls(architecture="dfgan_generator", input_channels=input_channels, scale=scale,
                   **{**DFGAN_GENERATOR_DEFAULTS, **overrides})

    def replace(self, **changes: Any) -> ModelConfig:
        """A copy with ``changes`` applied (validated again)."""
        return dataclasses.replace(self, **changes)

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> ModelConfig:
        """Rebuild from :meth:`to_dict` output; unknown keys are an error."""
        return cls(**_check_keys(cls, data, "model"))

    def build(self):
        """Build the Keras model this configuration describes."""
        from dfcan_tf.nets.dfcan import build_from_config

        return build_from_config(self)


@dataclass(frozen=True)
class DiscriminatorConfig:
    """DFGAN discriminator (REFERENCE §3): widths per block, LeakyReLU slope, optional striding.

    ``downsample=False`` is the authors' network (every conv at stride 1);
    ``downsample=True`` is a named cheaper variant that strides the second
    conv of each block by 2 (same parameter count).
    """

    input_size: int = 256
    widths: tuple[int, ...] = field(default=(32, 64, 128, 256, 512))
    head_width: int = 32
    dense_width: int = 256
    leaky_slope: float = 0.1
    downsample: bool = False
    version: int = CONFIG_VERSION

    def __post_init__(self) -> None:
        object.__setattr__(self, "widths", tuple(int(w) for w in self.widths))
        _check(self.input_size >= 8, f"input_size must be at least 8. Received: input_size={self.input_size}")
        _check(len(self.widths) >= 1 and all(w >= 1 for w in self.widths),
               f"widths must be positive integers. Received: widths={self.widths}")
        _check(self.input_size <= 16384, f"input_size must be at most 16384. Received: input_size={self.input_size}")
        _check(len(self.widths) <= 16 and max(self.widths) <= 4096 and 1 <= self.head_width <= 4096
               and 1 <= self.dense_width <= 65536,
               f"discriminator sizes out of range (at most 16 blocks of width <= 4096, head_width <= 4096, "
               f"dense_width <= 65536). Received: widths={self.widths}, head_width={self.head_width}, "
               f"dense_width={self.dense_width}")
        _check(0 <= self.leaky_slope < 1, f"leaky_slope must be in [0, 1). Received: leaky_slope={self.leaky_slope}")

    def to_dict(self) -> dict[str, Any]:
        d = dataclasses.asdict(self)
        d["widths"] = list(self.widths)
        return d

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> DiscriminatorConfig:
        """Rebuild from :meth:`to_dict` output; unknown keys are an error."""
        return cls(**_check_keys(cls, data, "discriminator"))

    def build(self):
        from dfcan_tf.nets.dfcan import build_dfgan_discriminator

        return build_dfgan_discriminator(
            (self.input_size, self.input_size, 1), widths=self.widths, head_width=self.head_width,
            dense_width=self.dense_width, leaky_slope=self.leaky_slope, downsample=self.downsample,
        )


def save_json(path: str | os.PathLike, data: dict[str, Any]) -> None:
    """Write ``data`` as indented JSON, atomically."""
    from dfcan_tf.data.files import atomic_path

    with atomic_path(path) as tmp:
        tmp.write_text(json.dumps(data, indent=2, sort_keys=False) + "\n")


def load_json(path: str | os.PathLike) -> dict[str, Any]:
    """Read a JSON object; errors name the file."""
    path = Path(path)
    try:
        data = json.loads(path.read_text())
    except FileNotFoundError:
        raise DfcanError(f"{path}: no such file") from None
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise DfcanError(f"{path}: not valid JSON ({exc})") from None
    if not isinstance(data, dict):
        raise DfcanError(f"{path}: expected a JSON object, found {type(data).__name__}")
    return data


# --- training ---------------------------------------------------------------------------------

TRAIN_MODES = ("dfcan", "dfgan")
STRATEGIES = ("default", "mirrored", "multi-worker")

# The paper's recipe (REFERENCE §4) per mode; everything else is shared.
DFCAN_TRAIN_DEFAULTS = {"batch_size": 4, "validate_every": 2000}
DFGAN_TRAIN_DEFAULTS = {"batch_size": 2, "validate_every": 1000}


def _positive_int(name: str, value: Any) -> None:
    _check(isinstance(value, int) and not isinstance(value, bool) and value >= 1,
           f"{name} must be a positive integer. Received: {name}={value!r}")


def _positive_float(name: str, value: Any) -> None:
    _check(isinstance(value, (int, float)) and not isinstance(value, bool) and value > 0,
           f"{name} must be a positive number. Received: {name}={value!r}")


@dataclass(frozen=True)
class TrainConfig:
    """How a DFCAN or DFGAN is trained (REFERENCE §4); saved in a run folder's ``config.json``.

    Parameters
    ----------
    mode
        ``"dfcan"`` (one network, MSE/SSIM loss) or ``"dfgan"`` (generator +
        discriminator, adversarial training).
    model
        The SR network (for DFGAN, its generator).
    discriminator
        DFGAN only; defaults to the paper's discriminator at the SR patch size
        (``patch_size · scale``). Must be ``None`` for DFCAN.
    patch_size
        Input patch side in pixels (128 in the paper); the GT patch is ``scale`` times larger.
    batch_size
        *Global* batch (4 for DFCAN, 2 for DFGAN); split evenly across replicas.
    steps
        Training iterations (DFGAN: one discriminator and ``g_updates`` generator updates each).
    lr, beta_1, beta_2
        Adam of the SR network / generator (1e-4, 0.9, 0.999).
    mse_weight, ssim_weight
        Weights of MSE and (1 − SSIM) in the loss (1 and 0.1).
    d_lr, g_updates, adversarial_weight
        DFGAN: discriminator Adam learning rate (2e-5), generator updates per
        iteration (3), weight of the generator's adversarial BCE (0.1).
    validate_every, validate_patches
        Validation period in iterations (2000 DFCAN, 1000 DFGAN) and the maximum
        number of validation patches used (500).
    sample_every, log_every
        Period of the sample figure (1000) and of the TensorBoard training-loss scalars (100).
    plateau_factor, plateau_patience, plateau_min_delta, min_lr_ratio
        Reduce-on-plateau of the validation NRMSE: ×0.5 after 10 validations
        without an improvement larger than 1e-4, never below 0.1 × the start lr.
    seed
        Seeds initial weights and the order of training patches.
    strategy
        ``"default"`` (one device), ``"mirrored"`` (all local devices) or
        ``"multi-worker"`` (``MultiWorkerMirroredStrategy`` through ``TF_CONFIG``).
    mixed_precision
        Train in ``mixed_float16`` (GPUs); off by default.
    init_generator
        DFGAN: a run folder or ``.weights.h5`` file of a network shaped like
        ``model`` whose weights start the generator.
    """

    mode: str = "dfcan"
    model: ModelConfig = field(default_factory=ModelConfig)
    discriminator: DiscriminatorConfig | None = None
    patch_size: int = 128
    batch_size: int = 4
    steps: int = 200_000
    lr: float = 1e-4
    beta_1: float = 0.9
    beta_2: float = 0.999
    mse_weight: float = 1.0
    ssim_weight: float = 0.1
    d_lr: float = 2e-5
    g_updates: int = 3
    adversarial_weight: float = 0.1
    validate_every: int = 2000
    validate_patches: int = 500
    sample_every: int = 1000
    log_every: int = 100
    plateau_factor: float = 0.5
    plateau_patience: int = 10
    plateau_min_delta: float = 1e-4
    min_lr_ratio: float = 0.1
    seed: int = 0
    strategy: str = "default"
    mixed_precision: bool = False
    init_generator: str | None = None
    version: int = CONFIG_VERSION

    def __post_init__(self) -> None:
        _check(self.mode in TRAIN_MODES, f"mode must be one of {TRAIN_MODES}. Received: mode={self.mode!r}")
        _check(isinstance(self.model, ModelConfig),
               f"model must be a ModelConfig. Received: model={type(self.model).__name__}")
        for name in ("patch_size", "batch_size", "steps", "g_updates", "validate_every", "validate_patches",
                     "sample_every", "log_every", "plateau_patience"):
            _positive_int(name, getattr(self, name))
        for name, limit in TRAIN_LIMITS.items():
            _check_max(name, getattr(self, name), limit)
        for name in ("lr", "d_lr", "adversarial_weight"):
            _positive_float(name, getattr(self, name))
        _check(self.patch_size * self.model.scale >= 11,
               f"patch_size × scale must be at least 11 (the SSIM window). Received: patch_size={self.patch_size}")
        for name in ("beta_1", "beta_2"):
            value = getattr(self, name)
            _check(isinstance(value, (int, float)) and 0 <= value < 1, f"{name} must be in [0, 1). Received: {name}={value!r}")
        for name in ("mse_weight", "ssim_weight", "plateau_min_delta"):
            value = getattr(self, name)
            _check(isinstance(value, (int, float)) and value >= 0, f"{name} must be >= 0. Received: {name}={value!r}")
        _check(self.mse_weight + self.ssim_weight > 0, "mse_weight and ssim_weight cannot both be 0")
        _check(isinstance(self.plateau_factor, (int, float)) and 0 < self.plateau_factor < 1,
               f"plateau_factor must be in (0, 1). Received: plateau_factor={self.plateau_factor!r}")
        _check(isinstance(self.min_lr_ratio, (int, float)) and 0 < self.min_lr_ratio <= 1,
               f"min_lr_ratio must be in (0, 1]. Received: min_lr_ratio={self.min_lr_ratio!r}")
        _check(isinstance(self.seed, int) and not isinstance(self.seed, bool) and self.seed >= 0,
               f"seed must be a non-negative integer. Received: seed={self.seed!r}")
        _check(self.strategy in STRATEGIES, f"strategy must be one of {STRATEGIES}. Received: strategy={self.strategy!r}")
        _check(isinstance(self.mixed_precision, bool),
               f"mixed_precision must be true or false. Received: mixed_precision={self.mixed_precision!r}")
        _check(self.version == CONFIG_VERSION,
               f"unsupported training configuration version {self.version}; this dfcan_tf reads version {CONFIG_VERSION}")
        sr_size = self.patch_size * self.model.scale
        if self.mode == "dfcan":
            _check(self.discriminator is None, "discriminator is only used with mode='dfgan'")
            _check(self.init_generator is None, "init_generator is only used with mode='dfgan'")
        else:
            if self.discriminator is None:
                object.__setattr__(self, "discriminator", DiscriminatorConfig(input_size=sr_size))
            _check(isinstance(self.discriminator, DiscriminatorConfig),
                   f"discriminator must be a DiscriminatorConfig. Received: {type(self.discriminator).__name__}")
            _check(self.discriminator.input_size == sr_size,
                   f"the discriminator sees SR patches of patch_size × scale = {sr_size} pixels. "
                   f"Received: discriminator.input_size={self.discriminator.input_size}")
        for name in ("lr", "d_lr", "beta_1", "beta_2", "mse_weight", "ssim_weight", "adversarial_weight",
                     "plateau_factor", "plateau_min_delta", "min_lr_ratio"):
            object.__setattr__(self, name, float(getattr(self, name)))

    @classmethod
    def dfcan(cls, model: ModelConfig | None = None, **overrides: Any) -> TrainConfig:
        """The paper's DFCAN recipe (batch 4, validation every 2,000 steps), overridable by keyword."""
        return cls(mode="dfcan", model=model or ModelConfig.dfcan(), **{**DFCAN_TRAIN_DEFAULTS, **overrides})

    @classmethod
    def dfgan(cls, model: ModelConfig | None = None, **overrides: Any) -> TrainConfig:
        """The paper's DFGAN recipe (batch 2, validation every 1,000 steps), overridable by keyword."""
        return cls(mode="dfgan", model=model or ModelConfig.dfgan_generator(),
                   **{**DFGAN_TRAIN_DEFAULTS, **overrides})

    @property
    def min_lr(self) -> float:
        return self.lr * self.min_lr_ratio

    @property
    def min_d_lr(self) -> float:
        return self.d_lr * self.min_lr_ratio

    def replace(self, **changes: Any) -> TrainConfig:
        """A copy with ``changes`` applied (validated again)."""
        return dataclasses.replace(self, **changes)

    def to_dict(self) -> dict[str, Any]:
        d = {f.name: getattr(self, f.name) for f in dataclasses.fields(self)}
        d["model"] = self.model.to_dict()
        d["discriminator"] = None if self.discriminator is None else self.discriminator.to_dict()
        return d

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> TrainConfig:
        """Rebuild from :meth:`to_dict` output; unknown keys are an error."""
        data = _check_keys(cls, data, "training")
        if "model" in data:
            data["model"] = ModelConfig.from_dict(data["model"])
        if data.get("discriminator") is not None:
            data["discriminator"] = DiscriminatorConfig.from_dict(data["discriminator"])
        try:
            return cls(**data)
        except TypeError as exc:
            raise DfcanError(f"bad training configuration ({exc})") from None
