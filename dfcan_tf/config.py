"""Configuration files: JSON reading and writing, and the validation helpers every config class uses.

The configurations themselves are pure data and live with what they describe:
network configs in :mod:`dfcan_tf.nets` (one per architecture, tagged by
``architecture`` and looked up in :mod:`dfcan_tf.nets.registry`), the training
recipe in :mod:`dfcan_tf.training.config`. Validation happens on construction
and messages say what to change.
"""

from __future__ import annotations

import dataclasses
import json
import os
from pathlib import Path
from typing import Any

from dfcan_tf.errors import DfcanError


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
