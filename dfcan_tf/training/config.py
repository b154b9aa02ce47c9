"""The training recipe: :class:`TrainConfig`, saved in a run folder's ``config.json`` (``docs/training.md#recipe``).

A DFCAN run stores only the fields DFCAN uses; the adversarial fields
(discriminator, its learning rate, generator updates, adversarial weight,
initial generator) are written only for adversarial runs. Version 1 files,
which always carried them, are migrated on read.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any

from dfcan_tf.config import _check, _check_keys
from dfcan_tf.errors import DfcanError
from dfcan_tf.nets.base import NetConfig
from dfcan_tf.nets.dfcan import DFCANConfig
from dfcan_tf.nets.discriminators import DiscriminatorConfig
from dfcan_tf.nets.registry import config_from_dict

CONFIG_VERSION = 2
READABLE_VERSIONS = (1, 2)
# Upper bounds: far beyond any sensible recipe, low enough that a typo fails at once
# instead of exhausting memory (the paper: 128-pixel patches, batch 4).
TRAIN_LIMITS = {"patch_size": 4096, "batch_size": 1024, "g_updates": 100}
GAN_FIELDS = ("discriminator", "d_lr", "g_updates", "adversarial_weight", "init_generator")


def _check_max(name: str, value: int, limit: int) -> None:
    _check(value <= limit, f"{name} must be at most {limit}. Received: {name}={value!r}")


TRAIN_MODES = ("dfcan", "dfgan")
STRATEGIES = ("default", "mirrored", "multi-worker")

# The paper's recipe (docs/training.md#recipe) per mode; everything else is shared.
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
    """How a network is trained (``docs/training.md#recipe``); saved in a run folder's ``config.json``.

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
    model: NetConfig = field(default_factory=DFCANConfig)
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
        _check(isinstance(self.model, NetConfig),
               f"model must be a network configuration. Received: model={type(self.model).__name__}")
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
    def dfcan(cls, model: NetConfig | None = None, **overrides: Any) -> TrainConfig:
        """The paper's DFCAN recipe (batch 4, validation every 2,000 steps), overridable by keyword."""
        return cls(mode="dfcan", model=model or DFCANConfig.dfcan(), **{**DFCAN_TRAIN_DEFAULTS, **overrides})

    @classmethod
    def dfgan(cls, model: NetConfig | None = None, **overrides: Any) -> TrainConfig:
        """The paper's DFGAN recipe (batch 2, validation every 1,000 steps), overridable by keyword."""
        return cls(mode="dfgan", model=model or DFCANConfig.dfgan_generator(),
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
        """The fields as JSON-ready data; a DFCAN-mode config leaves out the adversarial fields."""
        d = {f.name: getattr(self, f.name) for f in dataclasses.fields(self)}
        d["model"] = self.model.to_dict()
        d["discriminator"] = None if self.discriminator is None else self.discriminator.to_dict()
        if self.mode != "dfgan":
            for name in GAN_FIELDS:
                d.pop(name)
        return d

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> TrainConfig:
        """Rebuild from :meth:`to_dict` output; unknown keys are an error."""
        data = _check_keys(cls, data, "training")
        version = data.get("version", CONFIG_VERSION)
        _check(version in READABLE_VERSIONS,
               f"unsupported training configuration version {version!r}; this dfcan_tf reads {READABLE_VERSIONS}")
        if version == 1 and data.get("mode", "dfcan") == "dfcan":
            # version 1 wrote the adversarial fields for every run; a DFCAN run never used them
            for name in GAN_FIELDS:
                data.pop(name, None)
        data["version"] = CONFIG_VERSION
        if "model" in data:
            data["model"] = config_from_dict(data["model"])
        if data.get("discriminator") is not None:
            data["discriminator"] = DiscriminatorConfig.from_dict(data["discriminator"])
        try:
            return cls(**data)
        except TypeError as exc:
            raise DfcanError(f"bad training configuration ({exc})") from None


def train_section(cfg: TrainConfig) -> dict:
    """The ``train`` section of a run's ``config.json``."""
    d = cfg.to_dict()
    d.pop("model")
    d.pop("discriminator", None)
    return d


def config_from_doc(doc: dict) -> TrainConfig:
    """The :class:`TrainConfig` a run's ``config.json`` records."""
    train = dict(doc.get("train") or {})
    try:
        return TrainConfig.from_dict({**train, "model": doc["model"], "discriminator": doc.get("discriminator")})
    except DfcanError as exc:
        raise DfcanError(f"config.json: {exc}") from None
