"""MRC files: BioSR's Priism/DV flavour (parsed here) and MRC2014 (via ``mrcfile``).

See ``docs/data.md``; :func:`dfcan_tf.data.files.read_image` chooses between
this module and :mod:`dfcan_tf.data.tiff`.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from dfcan_tf.data.atomic import atomic_path
from dfcan_tf.errors import DfcanError

__all__ = ["read_mrc", "read_mrc_header", "write_mrc"]

# --------------------------------------------------------------------------- MRC
#
# BioSR stores its stacks as Priism/DeltaVision-flavoured MRC: the classic
# 1024-byte header, but no "MAP " id at byte 208 (that slot holds the x/y/z
# origin) and no machine stamp; the byte order is told by the DV id -16224 at
# byte 96 instead. mrcfile only reads such files in permissive mode and then
# misreads mode 0 and the pixel size, so they are parsed here. MRC2014 files
# (with "MAP ") are read by mrcfile.

_DV_ID = -16224
_HEADER_BYTES = 1024
# Priism mode 0 is unsigned bytes; MRC2014 mode 0 is signed (mrcfile handles those).
_PRIISM_DTYPES: dict[int, np.dtype] = {
    0: np.dtype(np.uint8),
    1: np.dtype(np.int16),
    2: np.dtype(np.float32),
    6: np.dtype(np.uint16),
}
_MRC2014_DTYPES: dict[int, np.dtype] = {
    0: np.dtype(np.int8),
    1: np.dtype(np.int16),
    2: np.dtype(np.float32),
    6: np.dtype(np.uint16),
    12: np.dtype(np.float16),
}
_MAX_DIM = 1 << 20  # beyond this a header value is garbage, not an image size


def _header_ints(head: bytes, order: str) -> tuple[int, int, int, int]:
    return tuple(int(v) for v in np.frombuffer(head[:16], dtype=f"{order}i4"))  # type: ignore[return-value]


def _plausible(head: bytes, order: str, modes: dict[int, np.dtype]) -> bool:
    nx, ny, nz, mode = _header_ints(head, order)
    return mode in modes and all(0 < n < _MAX_DIM for n in (nx, ny, nz))


def read_mrc_header(path: str | os.PathLike) -> dict:
    """Parse and validate the header of an MRC file (Priism/DV flavour or MRC2014).

    Parameters
    ----------
    path
        The ``.mrc`` (or ``.dv``) file.

    Returns
    -------
    dict
        ``shape`` (frames, H, W), ``mode``, ``dtype``, ``byte_order`` (``"<"`` or
        ``">"``), ``flavour`` (``"priism"``, ``"mrc2014"`` or ``"legacy"``),
        ``data_offset`` (bytes), and ``pixel_size_nm`` / ``wavelength_nm`` when the
        header holds them.

    Raises
    ------
    DfcanError
        The file is missing, empty, shorter or longer than its header says, has a
        mode other than 0, 1, 2, 6 (and 12 for MRC2014) or is not an MRC file.
    """
    path = Path(path)
    if not path.exists():
        raise DfcanError(f"{path}: no such file")
    if not path.is_file():
        raise DfcanError(f"{path}: not a file")
    size = path.stat().st_size
    if size == 0:
        raise DfcanError(f"{path}: empty file (0 bytes); expected an MRC image")
    with open(path, "rb") as f:
        head = f.read(_HEADER_BYTES)
    if len(head) < _HEADER_BYTES:
        raise DfcanError(
            f"{path}: truncated MRC header: the file has {size} bytes, an MRC header alone has {_HEADER_BYTES}"
        )

    is_map = head[208:211] == b"MAP"
    dv_le = int(np.frombuffer(head[96:98], dtype="<i2")[0])
    dv_be = int(np.frombuffer(head[96:98], dtype=">i2")[0])
    if not is_map and _DV_ID in (dv_le, dv_be):
        flavour, modes = "priism", _PRIISM_DTYPES
        order = "<" if dv_le == _DV_ID else ">"
    elif is_map:
        flavour, modes = "mrc2014", _MRC2014_DTYPES
        stamp = head[212]
        if stamp == 0x44:
            order = "<"
        elif stamp == 0x11:
            order = ">"
        else:  # bad stamp seen in the wild: the byte order that gives a sane header wins
            order = "<" if _plausible(head, "<", modes) or not _plausible(head, ">", modes) else ">"
    else:
        # Neither id: an old-style MRC, or not an MRC at all. Accept only a header that
        # makes sense in one byte order, otherwise report "not an image".
        flavour, modes = "legacy", _PRIISM_DTYPES
        candidates = [o for o in ("<", ">") if _plausible(head, o, modes)]
        if not candidates:
            raise DfcanError(
                f"{path}: not an MRC image (no 'MAP ' id at byte 209, no Priism id -16224 at byte 97, "
                "and the header does not describe an image)"
            )
        order = candidates[0]

    nx, ny, nz, mode = _header_ints(head, order)
    if mode not in modes:
        known = ", ".join(str(m) for m in modes)
        raise DfcanError(f"{path}: unknown MRC mode {mode} (supported: {known})")
    if not all(0 < n < _MAX_DIM for n in (nx, ny, nz)):
        raise DfcanError(f"{path}: wrong size in header: nx={nx}, ny={ny}, nz={nz} is not an image size")
    n_ext = int(np.frombuffer(head[92:96], dtype=f"{order}i4")[0])
    if n_ext < 0:
        raise DfcanError(f"{path}: wrong size in header: extended header length {n_ext} is negative")
    dtype = modes[mode]
    expected = _HEADER_BYTES + n_ext + nx * ny * nz * dtype.itemsize
    if size < expected:
        raise DfcanError(
            f"{path}: truncated: the header says {nz}×{ny}×{nx} mode {mode} (+{n_ext} bytes extended header), "
            f"i.e. {expected} bytes, but the file has {size}"
        )
    if size > expected:
        raise DfcanError(
            f"{path}: wrong size in header: {nz}×{ny}×{nx} mode {mode} (+{n_ext} bytes extended header) "
            f"makes {expected} bytes, but the file has {size} ({size - expected} bytes unaccounted for)"
        )

    meta: dict = {
        "shape": (nz, ny, nx),
        "mode": mode,
        "dtype": dtype,
        "byte_order": order,
        "flavour": flavour,
        "data_offset": _HEADER_BYTES + n_ext,
        "extended_header_bytes": n_ext,
    }
    if flavour == "mrc2014":
        mx, my, mz = (int(v) for v in np.frombuffer(head[28:40], dtype=f"{order}i4"))
        cella = np.frombuffer(head[40:52], dtype=f"{order}f4").astype(float)
        if mx > 0 and cella[0] > 0:
            meta["pixel_size_nm"] = round(float(cella[0] / mx / 10.0), 4)  # MRC2014 cell lengths are in Å
    else:
        # Priism: dx is the cell size in µm = mx (sampling, usually 1) × pixel spacing; wave1 (nm) at byte 198.
        mx = int(np.frombuffer(head[28:32], dtype=f"{order}i4")[0])
        dx = float(np.frombuffer(head[40:44], dtype=f"{order}f4")[0])
        if mx > 1 and dx / mx >= 1e-3:  # a cell of mx pixels (but not a pixel size mislabelled as one)
            dx /= mx
        if np.isfinite(dx) and 0 < dx < 1e3:
            meta["pixel_size_nm"] = round(dx * 1000.0, 3)  # float32 µm: keep nm to 3 decimals
        if flavour == "priism":
            n_times, _seq, *_ = (int(v) for v in np.frombuffer(head[180:184], dtype=f"{order}i2"))
            n_waves = int(np.frombuffer(head[196:198], dtype=f"{order}i2")[0])
            wave1 = int(np.frombuffer(head[198:200], dtype=f"{order}i2")[0])
            meta["n_times"] = max(n_times, 1)
            meta["n_waves"] = max(n_waves, 1)
            if wave1 > 0:
                meta["wavelength_nm"] = float(wave1)
    return meta


def read_mrc(path: str | os.PathLike) -> tuple[np.ndarray, dict]:
    """Read an MRC stack (BioSR's Priism/DV flavour or MRC2014) as ``(frames, H, W)``.

    Parameters
    ----------
    path
        The file. Priism files (DV id -16224, either byte order, modes 0, 1, 2, 6,
        extended header skipped by its length) are parsed here; MRC2014 files are
        read with ``mrcfile``.

    Returns
    -------
    array : numpy.ndarray
        ``(frames, H, W)`` in native byte order (uint8, int16, float32 or uint16).
    meta : dict
        The header summary of :func:`read_mrc_header` (``pixel_size_nm``,
        ``wavelength_nm`` where present).

    Raises
    ------
    DfcanError
        Malformed file: the message names the file and the problem.
    """
    path = Path(path)
    meta = read_mrc_header(path)
    shape = meta["shape"]
    if meta["flavour"] == "mrc2014":
        import warnings

        import mrcfile

        try:
            with warnings.catch_warnings():
                warnings.simplefilter("error")  # an mrcfile warning here means a malformed file
                with mrcfile.open(path, mode="r", permissive=False) as mrc:
                    arr = np.array(mrc.data)
            arr = arr.reshape(shape)
        except Exception as exc:  # noqa: BLE001 - mrcfile raises ValueError, warnings, struct/Memory errors
            raise DfcanError(f"{path}: not a valid MRC2014 file ({type(exc).__name__}: {exc})") from None
    else:
        dtype = meta["dtype"].newbyteorder(meta["byte_order"])
        count = int(np.prod(shape))
        arr = np.fromfile(path, dtype=dtype, count=count, offset=meta["data_offset"]).reshape(shape)
    return arr.astype(arr.dtype.newbyteorder("="), copy=False), meta


def write_mrc(
    path: str | os.PathLike,
    array: np.ndarray,
    *,
    pixel_size_nm: float | None = None,
    wavelength_nm: float | None = None,
    big_endian: bool = False,
    mode: int = 6,
) -> Path:
    """Write ``array`` as a Priism/DV-flavoured MRC file (BioSR's format), atomically.

    Parameters
    ----------
    path
        Destination file.
    array
        ``(H, W)`` or ``(frames, H, W)``. Values are rounded and clipped to the
        range of the mode's integer type; they are not rescaled.
    pixel_size_nm
        Pixel size (written as dx = dy in µm, as Priism does).
    wavelength_nm
        Emission wavelength, written as wave1.
    big_endian
        Write big-endian data and header (Priism files from older acquisition
        machines are).
    mode
        0 (uint8), 1 (int16), 2 (float32) or 6 (uint16, BioSR's raw data).

    Returns
    -------
    pathlib.Path
        ``path``.
    """
    if mode not in _PRIISM_DTYPES:
        raise DfcanError(f"unsupported MRC mode. Received: mode={mode!r}; expected one of 0, 1, 2, 6")
    arr = np.asarray(array)
    if arr.ndim == 2:
        arr = arr[None]
    if arr.ndim != 3 or min(arr.shape) == 0:
        raise DfcanError(
            f"{path}: cannot write an image of shape {np.shape(array)} as MRC; expected (H, W) or (frames, H, W)"
        )
    dtype = _PRIISM_DTYPES[mode]
    if dtype.kind in "iu":
        info = np.iinfo(dtype)
        arr = np.clip(np.round(arr) if arr.dtype.kind == "f" else arr, info.min, info.max)
    order = ">" if big_endian else "<"
    data = np.ascontiguousarray(arr.astype(dtype.newbyteorder(order)))
    nz, ny, nx = data.shape

    header = bytearray(_HEADER_BYTES)

    def put(offset: int, fmt: str, values) -> None:
        raw = np.asarray(values, dtype=f"{order}{fmt}").tobytes()
        header[offset : offset + len(raw)] = raw

    put(0, "i4", [nx, ny, nz, mode])
    put(28, "i4", [1, 1, 1])  # mx, my, mz = 1: dx, dy are then the pixel spacing, as Priism writes
    px_um = float(pixel_size_nm) / 1000.0 if pixel_size_nm else 0.0
    put(40, "f4", [px_um, px_um, 0.0])
    put(52, "f4", [90.0, 90.0, 90.0])
    put(64, "i4", [1, 2, 3])
    finite = data.astype(np.float64)
    put(76, "f4", [finite.min(), finite.max(), finite.mean()])
    put(92, "i4", [0])  # no extended header
    put(96, "i2", [_DV_ID])
    put(180, "i2", [1, 0])  # NumTimes, ImgSequence ZTW
    put(196, "i2", [1])  # NumWaves
    put(198, "i2", [int(round(wavelength_nm)) if wavelength_nm else 0])
    put(220, "i4", [1])  # NumTitles
    title = b"dfcan_tf"
    header[224 : 224 + len(title)] = title

    with atomic_path(path) as tmp:
        with open(tmp, "wb") as f:
            f.write(bytes(header))
            f.write(data.tobytes())
    return Path(path)
