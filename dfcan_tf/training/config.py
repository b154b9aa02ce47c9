"""The training recipe: :class:`TrainConfig`, saved in a run folder's ``config.json`` (``docs/training.md#recipe``).

A DFCAN run stores only the fields DFCAN uses; the adversarial fields
(discriminator, its learning rate, generator updates, adversarial weight,
initial generator) are written only for adversarial runs. Version 1 files,
which always carried them, are migrated on read.

Every run records its ``recipe`` (``"dfcan"``: MSE + 0.1·(1 − SSIM) and Adam
1e-4, like for like; ``"own"``: the loss and optimiser of the network's own
paper, from its ``RECIPE``), its content ``loss``, ``loss_weight`` and
``optimizer``; a run written before these fields existed reads as the DFCAN
recipe (``docs/networks.md#training-recipes``). :func:`recipe_config` builds
either recipe for any registered network.
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
from dfcan_tf.nets.pix2pix import PatchGANConfig
from dfcan_tf.nets.registry import config_from_dict, get

CONFIG_VERSION = 2
READABLE_VERSIONS = (1, 2)
# Upper bounds: far beyond any sensible recipe, low enough that a typo fails at once
# instead of exhausting memory (the paper: 128-pixel patches, batch 4).
TRAIN_LIMITS = {"patch_size": 4096, "batch_size": 1024, "g_updates": 100}
GAN_FIELDS = ("discriminator", "d_lr", "g_updates", "adversarial_weight", "init_generator")


def _check_max(name: str, value: int, limit: int) -> None:
    _check(value <= limit, f"{name} must be at most {limit}. Received: {name}={value!r}")


TRAIN_MODES = ("dfcan", "dfgan")  # one network, or adversarial (generator + discriminator)
STRATEGIES = ("default", "mirrored", "multi-worker")
# Training precision (docs/training.md#precision) -> the Keras dtype policy it trains under.
PRECISIONS = {"float32": "float32", "bf16": "mixed_bfloat16", "float16": "mixed_float16"}
RECIPES = ("dfcan", "own")
LOSSES = ("mse_ssim", "mse", "mae")  # training.losses.content_loss
OPTIMIZERS = ("adam", "sgd")
SGD_MOMENTUM = 0.9  # SRCNN's solver (Dong et al.)
DFCAN_FAMILY = ("dfcan", "dfgan_generator")

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
        ``"dfcan"`` (one network) or ``"dfgan"`` (adversarial: generator +
        discriminator; DFGAN, and Pix2Pix with its PatchGAN).
    model
        The SR network (for adversarial training, the generator).
    discriminator
        Adversarial mode only: a :class:`DiscriminatorConfig` (DFGAN's; default
        at the SR patch size ``patch_size · scale``) or, for ``pix2pix``, a
        :class:`~dfcan_tf.nets.pix2pix.PatchGANConfig` (the default; conditional,
        patch-wise logits). Must be ``None`` in mode ``"dfcan"``.
    patch_size
        Input patch side in pixels (128 in the paper); the GT patch is ``scale`` times larger.
    batch_size
        *Global* batch (4 for DFCAN, 2 for DFGAN); split evenly across replicas.
    steps
        Training iterations (DFGAN: one discriminator and ``g_updates`` generator updates each).
    lr, beta_1, beta_2
        Adam of the SR network / generator (1e-4, 0.9, 0.999); ``lr`` is SGD's
        learning rate with ``optimizer="sgd"``.
    recipe
        ``"dfcan"`` (the DFCAN/DFGAN paper's loss and optimiser) or ``"own"``
        (the network's own paper's); recorded, the fields below say what it is.
    loss, loss_weight
        Content loss (``"mse_ssim"``, ``"mse"`` or ``"mae"``) and its weight
        (1; Pix2Pix's own recipe: ``"mae"`` × 100).
    optimizer
        ``"adam"`` or ``"sgd"`` (momentum 0.9, SRCNN's own recipe).
    mse_weight, ssim_weight
        Weights of MSE and (1 − SSIM) in the ``"mse_ssim"`` loss (1 and 0.1).
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
    precision
        ``"float32"`` (default), ``"bf16"`` (Keras ``mixed_bfloat16``: bfloat16
        compute, float32 weights, no loss scaling; for CPUs with AVX512-BF16 or
        AMX and for recent GPUs) or ``"float16"`` (``mixed_float16`` with loss
        scaling; GPUs). See ``docs/training.md#precision`` for the measured
        speed and accuracy.
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
    recipe: str = "dfcan"
    loss: str = "mse_ssim"
    loss_weight: float = 1.0
    optimizer: str = "adam"
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
    precision: str = "float32"
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
        for name in ("lr", "d_lr", "adversarial_weight", "loss_weight"):
            _positive_float(name, getattr(self, name))
        for name, choices in (("recipe", RECIPES), ("loss", LOSSES), ("optimizer", OPTIMIZERS)):
            _check(getattr(self, name) in choices,
                   f"{name} must be one of {choices}. Received: {name}={getattr(self, name)!r}")
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
        _check(self.precision in PRECISIONS,
               f"precision must be one of {tuple(PRECISIONS)}. Received: precision={self.precision!r}")
        _check(self.version == CONFIG_VERSION,
               f"unsupported training configuration version {self.version}; this dfcan_tf reads version {CONFIG_VERSION}")
        sr_size = self.patch_size * self.model.scale
        if self.mode == "dfcan":
            _check(self.discriminator is None, "discriminator is only used with mode='dfgan'")
            _check(self.init_generator is None, "init_generator is only used with mode='dfgan'")
        elif self.model.architecture == "pix2pix":
            if self.discriminator is None:
                object.__setattr__(self, "discriminator", PatchGANConfig(
                    architecture="patchgan", input_channels=self.model.input_channels, scale=self.model.scale))
            _check(isinstance(self.discriminator, PatchGANConfig),
                   f"pix2pix trains with a PatchGAN discriminator. Received: {type(self.discriminator).__name__}")
            _check(self.discriminator.input_channels == self.model.input_channels,
                   f"the PatchGAN is conditioned on the generator's {self.model.input_channels} input channel(s). "
                   f"Received: discriminator.input_channels={self.discriminator.input_channels}")
        else:
            if self.discriminator is None:
                object.__setattr__(self, "discriminator", DiscriminatorConfig(input_size=sr_size))
            _check(isinstance(self.discriminator, DiscriminatorConfig),
                   f"discriminator must be a DiscriminatorConfig. Received: {type(self.discriminator).__name__}")
            _check(self.discriminator.input_size == sr_size,
                   f"the discriminator sees SR patches of patch_size × scale = {sr_size} pixels. "
                   f"Received: discriminator.input_size={self.discriminator.input_size}")
        for name in ("lr", "d_lr", "beta_1", "beta_2", "mse_weight", "ssim_weight", "adversarial_weight", "loss_weight",
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
    def adversarial(self) -> bool:
        """Whether a discriminator is trained alongside the network."""
        return self.mode == "dfgan"

    @property
    def min_lr(self) -> float:
        return self.lr * self.min_lr_ratio

    @property
    def min_d_lr(self) -> float:
        return self.d_lr * self.min_lr_ratio

    def replace(self, **changes: Any) -> TrainConfig:
        """A copy with ``changes`` applied (validated again)."""
        return dataclasses.replace(self, **changes)

    @property
    def mixed_precision(self) -> bool:
        """Whether training uses ``mixed_float16`` with loss scaling (``precision == "float16"``)."""
        return self.precision == "float16"

    def to_dict(self) -> dict[str, Any]:
        """The fields as JSON-ready data.

        A DFCAN-mode config leaves out the adversarial fields, a plain MSE/MAE
        loss the MSE/SSIM weights (they would read back as their defaults).
        """
        d = {f.name: getattr(self, f.name) for f in dataclasses.fields(self)}
        d["model"] = self.model.to_dict()
        d["discriminator"] = None if self.discriminator is None else self.discriminator.to_dict()
        if self.mode != "dfgan":
            for name in GAN_FIELDS:
                d.pop(name)
        if self.loss != "mse_ssim" and (self.mse_weight, self.ssim_weight) == (1.0, 0.1):
            d.pop("mse_weight")
            d.pop("ssim_weight")
        return d

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> TrainConfig:
        """Rebuild from :meth:`to_dict` output; unknown keys are an error."""
        if isinstance(data, dict) and "mixed_precision" in data:
            # Runs recorded before ``precision`` existed say ``mixed_precision`` (true: float16).
            data = dict(data)
            old_switch = data.pop("mixed_precision")
            _check(old_switch in (True, False),
                   f"mixed_precision must be true or false. Received: mixed_precision={old_switch!r}")
            if old_switch:
                _check(data.get("precision", "float16") == "float16",
                       f"mixed_precision (float16) contradicts precision={data.get('precision')!r}")
                data["precision"] = "float16"
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
            data["discriminator"] = discriminator_from_dict(data["discriminator"])
        try:
            return cls(**data)
        except TypeError as exc:
            raise DfcanError(f"bad training configuration ({exc})") from None


def discriminator_from_dict(data: Any) -> DiscriminatorConfig | PatchGANConfig:
    """DFGAN's discriminator, or a PatchGAN when ``data`` is tagged ``"architecture": "patchgan"``."""
    if isinstance(data, dict) and "architecture" in data:
        _check(data["architecture"] == "patchgan",
               f"unknown discriminator architecture {data['architecture']!r}; known: 'patchgan' or DFGAN's (untagged)")
        return PatchGANConfig.from_dict(dict(data))
    _check(isinstance(data, dict), f"discriminator must be a JSON object. Received: {type(data).__name__}")
    return DiscriminatorConfig.from_dict(data)


def recipe_config(model: NetConfig, recipe: str = "own", **overrides: Any) -> TrainConfig:
    """The :class:`TrainConfig` training ``model`` with ``recipe`` (``docs/networks.md#training-recipes``).

    Parameters
    ----------
    model
        Any registered network's configuration.
    recipe
        ``"own"``: the loss and optimiser of the network's own paper, read from
        its module's ``RECIPE`` (loss, weight, optimiser, learning rate, Adam
        β₁; a module without a ``RECIPE`` trains with DFCAN's); Pix2Pix trains adversarially with its PatchGAN (cGAN loss + 100·L1,
        Adam 2e-4 / β₁ 0.5 for both networks, one discriminator step per
        generator step). ``"dfcan"``: MSE + 0.1·(1 − SSIM) and Adam 1e-4 for any
        network; Pix2Pix then takes DFGAN's adversarial recipe with its PatchGAN.
        For ``dfcan`` and ``dfgan_generator`` both are the DFCAN/DFGAN paper's.
    overrides
        Any other :class:`TrainConfig` field (patch size, batch, steps …): the
        paper's patch sizes and batches stay in ``RECIPE`` as documentation; the
        defaults here are DFCAN's (DFGAN's for adversarial training).
    """
    _check(recipe in RECIPES, f"recipe must be one of {RECIPES}. Received: recipe={recipe!r}")
    arch = get(model.architecture)
    adversarial = arch.adversarial
    fields: dict[str, Any] = {"recipe": recipe}
    own = arch.recipe
    if recipe == "own" and model.architecture not in DFCAN_FAMILY and "loss" in own:
        # a network whose module states no recipe trains with DFCAN's
        fields.update(loss=own["loss"], loss_weight=float(own.get("loss_weight", 1.0)),
                      optimizer=own.get("optimizer", "adam"), lr=float(own["learning_rate"]),
                      beta_1=float(own.get("beta_1", 0.9)))
        if adversarial:
            fields.update(adversarial_weight=float(own.get("adversarial_weight", 1.0)),
                          d_lr=float(own["learning_rate"]), g_updates=1)
    base = TrainConfig.dfgan if adversarial else TrainConfig.dfcan
    return base(model, **{**fields, **overrides})


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
