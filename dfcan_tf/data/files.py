"""Reading and writing images: one entry point, :func:`read_image`, for TIFF and MRC.

The formats live in :mod:`dfcan_tf.data.tiff` (ImageJ/OME/plain TIFF, pixel
size, hyperstack axes) and :mod:`dfcan_tf.data.mrc` (BioSR's Priism/DV flavour
and MRC2014); this module re-exports their readers and writers, and
:func:`atomic_path` (:mod:`dfcan_tf.data.atomic`), so
``from dfcan_tf.data.files import read_tiff, write_mrc, atomic_path`` works.
Every writer is atomic. See ``docs/data.md`` and ``docs/own-data.md``.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from dfcan_tf.data.atomic import atomic_path, check_dtype
from dfcan_tf.data.mrc import read_mrc, read_mrc_header, write_mrc
from dfcan_tf.data.tiff import _read_tiff, read_tiff, write_tiff
from dfcan_tf.errors import DfcanError

__all__ = ["atomic_path", "read_image", "read_mrc", "read_mrc_header", "read_tiff", "write_mrc", "write_tiff"]

_MRC_SUFFIXES = {".mrc", ".dv", ".st", ".map", ".mrcs", ".ali", ".rec"}
_TIFF_MAGIC = (b"II*\x00", b"MM\x00*", b"II+\x00", b"MM\x00+")


def read_image(path: str | os.PathLike) -> tuple[np.ndarray, dict]:
    """Read a TIFF or MRC image as ``(frames, H, W)`` plus metadata.

    The format is chosen by the file's first bytes (TIFF magic) and else by its
    suffix, so a mis-named file is still read correctly.

    Parameters
    ----------
    path
        A ``.tif``/``.tiff`` or ``.mrc``/``.dv`` file.

    Returns
    -------
    array : numpy.ndarray
        ``(frames, H, W)``; a single 2-D image has one frame.
    meta : dict
        ``pixel_size_nm`` and ``pixel_size_source`` (``"ImageJ metadata"``,
        ``"OME-XML PhysicalSizeX"``, ``"TIFF resolution tags"``, ``"MRC
        header"``) where the file states a pixel size (see
        :func:`dfcan_tf.data.tiff.calibration`), ``wavelength_nm`` for MRC;
        for TIFF also ``axes`` and ``shape`` of the file's series (e.g.
        ``"TZYX"``), from which the frames were flattened.

    Raises
    ------
    DfcanError
        Missing, empty (0 bytes or 0 pixels), malformed, truncated or colour file;
        pixels that are not 8/16/32-bit integers or 16/32/64-bit floats; NaN or
        infinite pixel values. See :func:`read_tiff` and :func:`read_mrc_header`.
    """
    path = Path(path)
    if not path.is_file():
        raise DfcanError(f"{path}: no such file")
    with open(path, "rb") as f:
        magic = f.read(4)
    if not magic:
        raise DfcanError(f"{path}: empty file (0 bytes); expected a TIFF or MRC image")
    if magic in _TIFF_MAGIC:
        arr, meta, axes = _read_tiff(path)
        if axes == "colour" or ("S" in axes and arr.shape[axes.index("S")] in (3, 4) and axes.endswith("S")):
            raise DfcanError(f"{path}: colour TIFF of shape {arr.shape}; expected a grayscale image or stack")
        if arr.ndim < 2:
            raise DfcanError(f"{path}: TIFF of shape {arr.shape} is not an image")
    elif path.suffix.lower() in _MRC_SUFFIXES or path.suffix.lower() not in {".tif", ".tiff"}:
        arr, meta = read_mrc(path)
        if meta.get("pixel_size_nm"):
            meta["pixel_size_source"] = "MRC header"
    else:
        raise DfcanError(f"{path}: not a TIFF file (bad magic bytes {magic!r})")
    if arr.size == 0:
        raise DfcanError(f"{path}: empty image of shape {arr.shape}; expected at least one pixel")
    check_dtype(path, arr.dtype)
    if arr.dtype.kind == "f":
        finite = np.isfinite(arr)
        if not finite.all():
            bad = int(arr.size - np.count_nonzero(finite))
            first = tuple(int(i) for i in np.argwhere(~finite)[0])
            raise DfcanError(
                f"{path}: {bad} pixel value(s) are NaN or infinite (the first at index {first}); "
                "a damaged file, or not an intensity image"
            )
    return arr.reshape((-1, *arr.shape[-2:])), meta
