"""The models shipped with the package, and the one function that finds them.

They live in the repository's top-level ``weights/`` folder. ``dfcan_tf/_weights``
is a symlink to it, so a source checkout, an editable install and a regular
install (which copies the files into the package at build time) all find them
at the same place: next to this module.
"""

from __future__ import annotations

from pathlib import Path

from dfcan_tf.errors import DfcanError

SHIPPED_DIR = Path(__file__).resolve().parent / "_weights"
DEFAULT_MODEL = "dfcan_sisr_mt_x2"


def shipped_models() -> list[str]:
    """Names of the shipped run folders (empty when the install carries none)."""
    if not SHIPPED_DIR.is_dir():
        return []
    return sorted(p.name for p in SHIPPED_DIR.iterdir() if (p / "config.json").is_file())


def shipped_model(name: str = DEFAULT_MODEL) -> Path:
    """The run folder of the shipped model ``name``.

    Raises
    ------
    DfcanError
        When this installation has no such model (the message lists those it has).
    """
    path = SHIPPED_DIR / name
    if not (path / "config.json").is_file():
        have = shipped_models()
        raise DfcanError(f"no shipped model {name!r} in {SHIPPED_DIR}; this installation has "
                         f"{have if have else 'none (was the package built without its weights/ folder?)'}")
    return path
