"""Atomic writes and the pixel types every reader accepts (:mod:`dfcan_tf.data.files`).

Every writer of the package goes through :func:`atomic_path`: data go to a
temporary file in the destination folder, renamed over the target only when
complete, so an interrupted or failed write never leaves a half-written output.
"""

from __future__ import annotations

import contextlib
import os
import tempfile
from collections.abc import Iterator
from pathlib import Path

import numpy as np

from dfcan_tf.errors import DfcanError
from dfcan_tf.safety import PART_PREFIX

__all__ = ["atomic_path", "check_dtype"]


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike) -> Iterator[Path]:
    """Yield a temporary path next to ``path``; rename it onto ``path`` on success.

    On any exception the temporary file is removed and ``path`` is untouched.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    # The temporary name ends with the target's full name, so writers that
    # choose a format by extension (tifffile, matplotlib, keras' ".weights.h5")
    # behave as for ``path``.
    fd, tmp = tempfile.mkstemp(prefix=PART_PREFIX, suffix=f".{path.name}", dir=path.parent)
    os.close(fd)
    # mkstemp creates 0600; give the output the permissions a plain open() would.
    umask = os.umask(0)
    os.umask(umask)
    os.chmod(tmp, 0o666 & ~umask)
    tmp_path = Path(tmp)
    try:
        yield tmp_path
        os.replace(tmp_path, path)
    except BaseException:
        tmp_path.unlink(missing_ok=True)
        raise

# Pixel types a reader may return; anything else (bool from 1-bit TIFFs, complex, 64-bit
# integers, structured) is refused.
_SUPPORTED_DTYPES = frozenset(np.dtype(t) for t in ("u1", "i1", "u2", "i2", "u4", "i4", "f2", "f4", "f8"))


def check_dtype(path: Path, dtype: np.dtype) -> None:
    """Refuse pixel types no reader returns (1-bit, complex, 64-bit integers, structured)."""
    if dtype.kind == "b":
        raise DfcanError(f"{path}: 1-bit (black and white) image; expected 8/16/32-bit grayscale pixels")
    if np.dtype(dtype).newbyteorder("=") not in _SUPPORTED_DTYPES:
        raise DfcanError(
            f"{path}: unsupported pixel type {dtype}; expected 8/16/32-bit integers or 16/32/64-bit floats"
        )

