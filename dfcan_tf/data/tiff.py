"""TIFF files: checked reading (ImageJ, OME, plain), calibration, ImageJ hyperstack writing.

:func:`read_tiff` reads the first image series after checking it against what
the file says about itself; :func:`calibration` finds the pixel size in the
file's OME-XML, ImageJ metadata or TIFF resolution tags
(``docs/own-data.md#pixel-size-and-intensities``); :func:`write_tiff` writes an
ImageJ TIFF (a hyperstack when given T/Z/C axes), atomically.
"""

from __future__ import annotations

import logging
import os
import re
import xml.etree.ElementTree as ET
from pathlib import Path

import numpy as np

from dfcan_tf.data.atomic import atomic_path, check_dtype
from dfcan_tf.errors import DfcanError

__all__ = ["IMAGEJ_ORDER", "calibration", "length_to_nm", "read_tiff", "write_tiff"]

IMAGEJ_ORDER = "TZCYX"
"""ImageJ's hyperstack axis order (a file's axes are written as a subsequence of it)."""

# Length units as OME-XML and ImageJ spell them, in nanometres.
_NM_PER_UNIT = {
    "nm": 1.0, "nanometer": 1.0, "nanometre": 1.0,
    "um": 1e3, "µm": 1e3, "μm": 1e3, r"\u00b5m": 1e3, r"\u00B5m": 1e3, "micron": 1e3, "microns": 1e3, "micrometer": 1e3,
    "micrometre": 1e3, "mm": 1e6, "millimeter": 1e6, "cm": 1e7, "centimeter": 1e7, "m": 1e9, "meter": 1e9,
    "å": 0.1, "angstrom": 0.1, "pm": 1e-3,
}
_RESOLUTION_UNIT_NM = {2: 25.4e6, 3: 1e7}  # TIFF ResolutionUnit INCH, CENTIMETER (1 = NONE: uncalibrated)


def length_to_nm(value: float, unit: str | None) -> float | None:
    """``value`` in ``unit`` as nanometres; None when the unit is not a length (``pixel``) or the value not > 0."""
    if unit is None:
        return None
    key = unit.strip()
    factor = _NM_PER_UNIT.get(key, _NM_PER_UNIT.get(key.lower()))
    if factor is None or key.lower() in ("pixel", "pixels"):
        return None
    size = float(value) * factor
    return size if np.isfinite(size) and size > 0 else None


def _ome_calibration(xml: str) -> dict:
    """``PhysicalSizeX``/``PhysicalSizeZ`` (with their units, default µm) of the first OME ``Pixels``."""
    try:
        root = ET.fromstring(xml)
    except ET.ParseError:
        return {}
    pixels = next((el for el in root.iter() if re.sub(r"^\{.*\}", "", el.tag) == "Pixels"), None)
    if pixels is None:
        return {}
    out: dict = {}
    for axis, key in (("X", "pixel_size_nm"), ("Z", "z_spacing_nm")):
        value = pixels.get(f"PhysicalSize{axis}")
        try:
            size = length_to_nm(float(value), pixels.get(f"PhysicalSize{axis}Unit", "µm")) if value else None
        except ValueError:
            size = None
        if size:
            out[key] = size
    if "pixel_size_nm" in out:
        out["pixel_size_source"] = "OME-XML PhysicalSizeX"
    return out


def calibration(tif) -> dict:
    """The pixel size an open ``tifffile.TiffFile`` states, and where it says it.

    Looked for in this order: OME-XML ``PhysicalSizeX`` + ``PhysicalSizeXUnit``
    (default µm); ImageJ metadata (``unit`` with the XResolution tag, pixels per
    unit; ``spacing`` is ImageJ's z step); the TIFF XResolution tag with
    ResolutionUnit inch or centimetre. ResolutionUnit NONE, a resolution of
    1/1 or a non-length unit (``pixel``) mean uncalibrated.

    Returns
    -------
    dict
        ``pixel_size_nm`` and ``pixel_size_source`` (e.g. ``"ImageJ metadata"``)
        when calibrated, ``z_spacing_nm`` when stated; empty otherwise.
    """
    if getattr(tif, "is_ome", False) and tif.ome_metadata:
        found = _ome_calibration(tif.ome_metadata)
        if "pixel_size_nm" in found:
            return found
    page = tif.pages.first
    ij = (tif.imagej_metadata if tif.is_imagej else None) or {}
    out: dict = {}
    tag = page.tags.get("XResolution")
    num, den = tag.value if tag is not None else (0, 0)
    if not (num and den):
        return out
    if ij.get("unit"):  # ImageJ: pixels per `unit` (a length unit means calibrated, even 1/1)
        size = length_to_nm(den / num, str(ij["unit"]))
        if size:
            out.update(pixel_size_nm=size, pixel_size_source="ImageJ metadata")
        z = length_to_nm(float(ij["spacing"]), str(ij["unit"])) if ij.get("spacing") else None
        if z:
            out["z_spacing_nm"] = z
        return out
    unit = page.tags.get("ResolutionUnit")
    per_unit = _RESOLUTION_UNIT_NM.get(int(unit.value) if unit is not None else 2)  # TIFF default: inch
    if per_unit and (num, den) != (1, 1):
        size = den / num * per_unit
        if np.isfinite(size) and size > 0:
            out.update(pixel_size_nm=size, pixel_size_source="TIFF resolution tags")
    return out


class _TiffLog(logging.Handler):
    """Collects what tifffile logs while a file is read (it logs, not raises, on many corruptions)."""

    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.records: list[logging.LogRecord] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.records.append(record)


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
    check_dtype(path, series.dtype)
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

    meta = calibration(tif)
    meta["axes"], meta["shape"] = series.axes, tuple(int(n) for n in series.shape)
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


def write_tiff(
    path: str | os.PathLike,
    image: np.ndarray,
    *,
    pixel_size_nm: float | None = None,
    dtype: str = "uint16",
    axes: str | None = None,
    z_spacing_nm: float | None = None,
    intensity: tuple[float, float, str] | None = None,
) -> Path:
    """Write ``image`` as an ImageJ-readable TIFF (a hyperstack with T/Z/C axes), atomically.

    Parameters
    ----------
    path
        Destination file.
    image
        2-D ``(H, W)``, 3-D ``(frames, H, W)``, or any array whose ``axes`` are
        given. For ``dtype="uint16"`` floating input is taken as [0, 1] and
        scaled to 0..65535 (clipped); integer input is written as is (clipped
        to the uint16 range).
    pixel_size_nm
        Pixel size in nanometres, written as ImageJ resolution tags (unit µm).
    dtype
        ``"uint16"`` (default) or ``"float32"``.
    axes
        The axes of ``image``, letters of ``TZCYX`` ending in ``YX`` in any
        order; written transposed into ImageJ's order with ImageJ ``axes``
        metadata. Default ``YX`` (2-D) or ``ZYX`` (3-D).
    z_spacing_nm
        The z step, written as ImageJ ``spacing``.
    intensity
        ``(offset, gain, unit)``: the stored values map to ``offset + gain ·
        value`` in ``unit``, written as ImageJ's straight-line calibration
        (``cf=0``, ``c0``, ``c1``, ``vunit``), which ImageJ/Fiji show as the
        pixel values.
    """
    import tifffile

    arr = np.asarray(image)
    if axes is None:
        if arr.ndim not in (2, 3):
            raise DfcanError(f"{path}: cannot write an image of shape {arr.shape}; expected (H, W) or (frames, H, W)")
        axes = "YX" if arr.ndim == 2 else "ZYX"
    axes = axes.upper()
    if (len(axes) != arr.ndim or not axes.endswith("YX") or len(set(axes)) != len(axes)
            or any(a not in IMAGEJ_ORDER for a in axes)):
        raise DfcanError(f"{path}: cannot write an image of shape {arr.shape} with axes {axes!r}; expected "
                         f"distinct letters of {IMAGEJ_ORDER!r} ending in 'YX', one per dimension")
    order = sorted(range(arr.ndim), key=lambda i: IMAGEJ_ORDER.index(axes[i]))
    arr = np.transpose(arr, order)
    axes = "".join(axes[i] for i in order)
    if dtype == "uint16":
        if np.issubdtype(arr.dtype, np.floating):
            arr = np.round(np.clip(arr, 0.0, 1.0) * 65535.0)
        arr = np.clip(arr, 0, 65535).astype(np.uint16)
    elif dtype == "float32":
        arr = arr.astype(np.float32)
    else:
        raise DfcanError(f"unsupported TIFF dtype. Received: dtype={dtype!r}; expected 'uint16' or 'float32'")
    metadata: dict = {"axes": axes}
    kwargs: dict = {"imagej": True, "metadata": metadata}
    if pixel_size_nm:
        px_um = float(pixel_size_nm) / 1000.0
        kwargs["resolution"] = (1.0 / px_um, 1.0 / px_um)
        metadata["unit"] = "um"
    if z_spacing_nm and "Z" in axes:
        metadata["unit"] = "um"
        metadata["spacing"] = float(z_spacing_nm) / 1000.0
    if intensity is not None:
        offset, gain, unit = intensity
        metadata.update(cf=0, c0=float(offset), c1=float(gain), vunit=str(unit))
    with atomic_path(path) as tmp:
        tifffile.imwrite(tmp, arr, **kwargs)
    return Path(path)
