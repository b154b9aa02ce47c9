"""Reading and writing images: MRC (BioSR's Priism/DV flavour and MRC2014), TIFF.

Every writer here is atomic: data go to a temporary file in the destination
folder, which is renamed over the target only when complete, so an interrupted
or failed write never leaves a half-written output.
"""

from __future__ import annotations

import contextlib
import os
import tempfile
from collections.abc import Iterator
from pathlib import Path

import numpy as np

from dfcan_tf.errors import DfcanError


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike) -> Iterator[Path]:
    """Yield a temporary path next to ``path``; rename it onto ``path`` on success.

    On any exception the temporary file is removed and ``path`` is untouched.
    The temporary name keeps the suffix so that writers choosing a format by
    extension (tifffile, imageio, matplotlib) behave as for ``path``.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.stem}.", suffix=f".part{path.suffix}", dir=path.parent)
    os.close(fd)
    tmp_path = Path(tmp)
    try:
        yield tmp_path
        os.replace(tmp_path, path)
    except BaseException:
        tmp_path.unlink(missing_ok=True)
        raise


def write_tiff(
    path: str | os.PathLike,
    image: np.ndarray,
    *,
    pixel_size_nm: float | None = None,
    dtype: str = "uint16",
) -> Path:
    """Write ``image`` as an ImageJ-readable TIFF, atomically.

    Parameters
    ----------
    path
        Destination file.
    image
        2-D ``(H, W)`` or 3-D ``(frames, H, W)`` array. For ``dtype="uint16"``
        floating input is taken as [0, 1] and scaled to 0..65535 (clipped);
        integer input is written as is (clipped to the uint16 range).
    pixel_size_nm
        Pixel size in nanometres, written as ImageJ resolution tags (unit µm).
    dtype
        ``"uint16"`` (default) or ``"float32"``.
    """
    import tifffile

    arr = np.asarray(image)
    if arr.ndim not in (2, 3):
        raise DfcanError(f"{path}: cannot write an image of shape {arr.shape}; expected (H, W) or (frames, H, W)")
    if dtype == "uint16":
        if np.issubdtype(arr.dtype, np.floating):
            arr = np.round(np.clip(arr, 0.0, 1.0) * 65535.0)
        arr = np.clip(arr, 0, 65535).astype(np.uint16)
    elif dtype == "float32":
        arr = arr.astype(np.float32)
    else:
        raise DfcanError(f"unsupported TIFF dtype. Received: dtype={dtype!r}; expected 'uint16' or 'float32'")
    kwargs: dict = {"imagej": True, "metadata": {"axes": "YX" if arr.ndim == 2 else "ZYX"}}
    if pixel_size_nm:
        px_um = float(pixel_size_nm) / 1000.0
        kwargs["resolution"] = (1.0 / px_um, 1.0 / px_um)
        kwargs["metadata"]["unit"] = "um"
    with atomic_path(path) as tmp:
        tifffile.imwrite(tmp, arr, **kwargs)
    return Path(path)


def read_tiff(path: str | os.PathLike) -> tuple[np.ndarray, dict]:
    """Read a TIFF as ``(array, metadata)``; metadata holds ``pixel_size_nm`` when present."""
    import tifffile

    path = Path(path)
    try:
        with tifffile.TiffFile(path) as tif:
            arr = tif.asarray()
            meta: dict = {}
            page = tif.pages[0]
            tag = page.tags.get("XResolution")
            if tag is not None:
                num, den = tag.value
                if num:
                    unit = (tif.imagej_metadata or {}).get("unit", "um")
                    scale = {"um": 1000.0, "micron": 1000.0, "\\u00B5m": 1000.0, "µm": 1000.0, "nm": 1.0}.get(unit, 1000.0)
                    meta["pixel_size_nm"] = den / num * scale
    except FileNotFoundError:
        raise DfcanError(f"{path}: no such file") from None
    except Exception as exc:  # tifffile raises many types on corrupt files
        raise DfcanError(f"{path}: not a readable TIFF ({exc})") from None
    return arr, meta
