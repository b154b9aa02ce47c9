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


def _check(condition: bool, message: str) -> None:
    if not condition:
        raise DfcanError(message)


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
        if not isinstance(data, dict):
            raise DfcanError(f"model configuration must be a JSON object. Received: {type(data).__name__}")
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(data) - known)
        _check(not unknown, f"unknown model configuration keys {unknown}; known keys are {sorted(known)}")
        return cls(**data)

    def build(self):
        """Build the Keras model this configuration describes."""
        from dfcan_tf.models import build_from_config

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
        _check(0 <= self.leaky_slope < 1, f"leaky_slope must be in [0, 1). Received: leaky_slope={self.leaky_slope}")

    def to_dict(self) -> dict[str, Any]:
        d = dataclasses.asdict(self)
        d["widths"] = list(self.widths)
        return d

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> DiscriminatorConfig:
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(data) - known)
        _check(not unknown, f"unknown discriminator configuration keys {unknown}; known keys are {sorted(known)}")
        return cls(**data)

    def build(self):
        from dfcan_tf.models import build_dfgan_discriminator

        return build_dfgan_discriminator(
            (self.input_size, self.input_size, 1), widths=self.widths, head_width=self.head_width,
            dense_width=self.dense_width, leaky_slope=self.leaky_slope, downsample=self.downsample,
        )


def save_json(path: str | os.PathLike, data: dict[str, Any]) -> None:
    """Write ``data`` as indented JSON, atomically."""
    from dfcan_tf.io import atomic_path

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
