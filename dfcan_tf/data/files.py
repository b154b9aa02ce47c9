"""Reading and writing images: MRC (BioSR's Priism/DV flavour and MRC2014), TIFF.

Every writer here is atomic: data go to a temporary file in the destination
folder, which is renamed over the target only when complete, so an interrupted
or failed write never leaves a half-written output.
"""

from __future__ import annotations

import contextlib
import logging
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
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    # The temporary name ends with the target's full name, so writers that
    # choose a format by extension (tifffile, matplotlib, keras' ".weights.h5")
    # behave as for ``path``.
    fd, tmp = tempfile.mkstemp(prefix=".part-", suffix=f".{path.name}", dir=path.parent)
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


class _TiffLog(logging.Handler):
    """Collects what tifffile logs while a file is read (it logs, not raises, on many corruptions)."""

    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.records: list[logging.LogRecord] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.records.append(record)


# Pixel types a reader may return; anything else (bool from 1-bit TIFFs, complex, 64-bit
# integers, structured) is refused.
_SUPPORTED_DTYPES = frozenset(np.dtype(t) for t in ("u1", "i1", "u2", "i2", "u4", "i4", "f2", "f4", "f8"))


def _check_dtype(path: Path, dtype: np.dtype) -> None:
    if dtype.kind == "b":
        raise DfcanError(f"{path}: 1-bit (black and white) image; expected 8/16/32-bit grayscale pixels")
    if np.dtype(dtype).newbyteorder("=") not in _SUPPORTED_DTYPES:
        raise DfcanError(
            f"{path}: unsupported pixel type {dtype}; expected 8/16/32-bit integers or 16/32/64-bit floats"
        )


def _read_tiff_checked(path: Path, tif, size: int) -> tuple[np.ndarray, dict, str]:
    """Read series 0 of an open ``tifffile.TiffFile`` after checking it against the file's own claims."""
    import tifffile

    if not len(tif.pages) or not tif.series:
        raise DfcanError(f"{path}: not a readable TIFF (it holds no image)")
    series = tif.series[0]
    page = tif.pages.first
    frame_shape = tuple(n for n, ax in zip(series.shape, series.axes) if ax in "YXS")
    frames_read = int(np.prod(series.shape)) // max(int(np.prod(frame_shape)), 1) if frame_shape else 0

    # Frame count: the ImageJ description (images=, channels × slices × frames) and the shaped
    # description ({"shape": [...]}) say how many frames the file holds.
    ij = tif.imagej_metadata if tif.is_imagej else None
    if ij:
        images = int(ij.get("images", 1))
        czt = [int(ij[k]) for k in ("channels", "slices", "frames") if k in ij]
        if czt and int(np.prod(czt)) != images:
            raise DfcanError(
                f"{path}: corrupt ImageJ metadata: images={images} but channels × slices × frames = "
                f"{' × '.join(map(str, czt))}"
            )
        if (series.kind == "imagej" and frames_read != images) or (series.kind != "imagej" and images > 1):
            raise DfcanError(
                f"{path}: truncated or corrupt TIFF: its ImageJ metadata says {images} images, "
                f"{frames_read} can be read"
            )
    shaped = tif.shaped_metadata if tif.is_shaped else None
    if shaped and "shape" in shaped[0]:
        claimed = [int(n) for n in shaped[0]["shape"]]
        if int(np.prod(claimed)) != int(np.prod(series.shape)):
            raise DfcanError(
                f"{path}: truncated or corrupt TIFF: its description says shape {tuple(claimed)}, "
                f"the pages hold {series.shape}"
            )
    if series.kind in ("generic", "uniform"):
        # No metadata: every full-resolution page must belong to the image, else a page was
        # damaged (a different size or type, or missing tags) and would be silently dropped.
        full = [p for p in tif.pages if not getattr(p, "is_reduced", False)]
        if len(series.pages) != len(full):
            shapes = ", ".join(f"{s.shape} {s.dtype}" for s in tif.series)
            raise DfcanError(
                f"{path}: corrupt TIFF: {len(series.pages)} of its {len(full)} pages make an image ({shapes}); "
                "expected one image or a stack of equal frames"
            )

    # Data: every strip/tile must lie inside the file and, uncompressed, hold the whole frame.
    _check_dtype(path, series.dtype)
    if series.dataoffset is not None:  # contiguous, uncompressed (ImageJ stacks): one block
        if series.dataoffset + series.nbytes > size:
            raise DfcanError(
                f"{path}: truncated: the TIFF's {frames_read} frame(s) need bytes {series.dataoffset}–"
                f"{series.dataoffset + series.nbytes}, the file has {size}"
            )
    else:
        for i, p in enumerate(series.pages):
            if p is None:
                raise DfcanError(f"{path}: truncated or corrupt TIFF: page {i} of the image is missing")
            offsets, counts = p.dataoffsets, p.databytecounts
            if not offsets or any(c <= 0 for c in counts) or any(o + c > size for o, c in zip(offsets, counts)):
                raise DfcanError(
                    f"{path}: truncated or corrupt TIFF: the data of page {i} lie outside the file "
                    f"({size} bytes) or are missing"
                )
            if p.compression == tifffile.COMPRESSION.NONE and sum(counts) < p.nbytes:
                raise DfcanError(
                    f"{path}: truncated or corrupt TIFF: page {i} is {p.shape} {p.dtype} ({p.nbytes} bytes) "
                    f"but holds {sum(counts)} bytes of data"
                )
    arr = series.asarray()
    if arr.shape != series.shape:
        raise DfcanError(f"{path}: corrupt TIFF: read {arr.shape} where the pages say {series.shape}")

    meta: dict = {}
    tag = page.tags.get("XResolution")
    if tag is not None:
        num, den = tag.value
        if num and den:
            unit = (ij or {}).get("unit", "um")
            per_unit = {"um": 1000.0, "micron": 1000.0, "\\u00B5m": 1000.0, "µm": 1000.0, "nm": 1.0}
            size_nm = den / num * per_unit.get(unit, 1000.0)
            if np.isfinite(size_nm) and size_nm > 0:
                meta["pixel_size_nm"] = size_nm
    colour = page.photometric in (tifffile.PHOTOMETRIC.RGB, tifffile.PHOTOMETRIC.YCBCR)
    return arr, meta, "colour" if colour else series.axes


def _read_tiff(path: Path) -> tuple[np.ndarray, dict, str]:
    import tifffile

    path = Path(path)
    if not path.is_file():
        raise DfcanError(f"{path}: no such file")
    size = path.stat().st_size
    logger = logging.getLogger("tifffile")
    log = _TiffLog()
    propagate, level, effective = logger.propagate, logger.level, logger.getEffectiveLevel()
    logger.addHandler(log)
    logger.propagate = False
    logger.setLevel(logging.WARNING)  # errors must reach the check below whatever the application set
    try:
        try:
            with tifffile.TiffFile(path) as tif:
                arr, meta, axes = _read_tiff_checked(path, tif, size)
        finally:
            logger.removeHandler(log)
            logger.propagate = propagate
            logger.setLevel(level)
        errors = [r for r in log.records if r.levelno >= logging.ERROR]
        if errors:  # tifffile logs (and works around) broken IFD chains, tags and series metadata
            raise DfcanError(f"{path}: corrupt TIFF ({errors[0].getMessage()})")
    except DfcanError:
        raise
    except FileNotFoundError:
        raise DfcanError(f"{path}: no such file") from None
    except Exception as exc:  # tifffile raises many types on corrupt files (and MemoryError on absurd sizes)
        raise DfcanError(f"{path}: not a readable TIFF ({type(exc).__name__}: {exc})") from None
    for record in log.records:  # warnings that did not make the file unreadable are passed on
        if record.levelno >= effective:
            logger.handle(record)
    return arr, meta, axes


def read_tiff(path: str | os.PathLike) -> tuple[np.ndarray, dict]:
    """Read a TIFF as ``(array, metadata)``; metadata holds ``pixel_size_nm`` when present.

    The first image series is read (all frames of an ImageJ or tifffile stack, or
    all equal pages of a plain multi-page TIFF) after checking it against what the
    file says about itself.

    Raises
    ------
    DfcanError
        Naming the file, when it is missing or not a TIFF; when it holds fewer
        frames than its ImageJ metadata (``images=``, ``channels`` × ``slices`` ×
        ``frames``) or its shape description says, or its IFD chain is broken
        (a truncated stack); when pixel data lie beyond the end of the file or
        are shorter than the page; when its pages differ in size or type; when
        tifffile reports any other corruption; or when the pixels are 1-bit,
        complex or otherwise not 8/16/32-bit integers or 16/32/64-bit floats.
    """
    arr, meta, _ = _read_tiff(Path(path))
    return arr, meta


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
        ``pixel_size_nm`` (and ``wavelength_nm`` for MRC) where present.

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
    else:
        raise DfcanError(f"{path}: not a TIFF file (bad magic bytes {magic!r})")
    if arr.size == 0:
        raise DfcanError(f"{path}: empty image of shape {arr.shape}; expected at least one pixel")
    _check_dtype(path, arr.dtype)
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
