"""Fuzz the image readers: damaged TIFF and MRC files read right or raise DfcanError.

Small valid files are written, then damaged with a fixed seed (truncated, bytes
flipped, header fields overwritten, chunks zeroed, digits changed). For every damaged file
:func:`dfcan_tf.data.files.read_image` must either

* return exactly the original image, or
* return an image consistent with the file's own header, checked here by an
  independent parser (MRC: nx, ny, nz, mode and the file size; TIFF: the first
  IFD's width, length and bits per sample, the ImageJ ``images=`` count or the
  number of IFDs in the chain), with a supported dtype and finite values, or
* raise :class:`DfcanError`.

Anything else (another exception type, fewer frames than the header says, a
bool array, NaN pixels) fails, and the failure names the seed, case and damage.
"""

from __future__ import annotations

import json
import re
import struct
import warnings
from pathlib import Path

import mrcfile
import numpy as np
import pytest
import tifffile

from dfcan_tf.data.files import read_image, write_mrc, write_tiff
from dfcan_tf.errors import DfcanError

SEED = 20240611
CASES_PER_MUTATION = 9  # x 5 mutations x 9 originals = 405 damaged files
MUTATIONS = ("truncate", "flip", "header", "zero", "digit")
SUPPORTED = {np.dtype(t) for t in ("u1", "i1", "u2", "i2", "u4", "i4", "f2", "f4", "f8")}


def _originals(folder: Path) -> dict[str, tuple[Path, np.ndarray]]:
    """Valid small files and the image each must read as."""
    rng = np.random.default_rng(SEED)
    out: dict[str, tuple[Path, np.ndarray]] = {}

    def add(name: str, arr: np.ndarray, write) -> None:
        path = folder / name
        write(path)
        out[name] = (path, arr)

    stack = rng.integers(0, 65535, size=(5, 12, 10), dtype=np.uint16)
    add("imagej_u16.tif", stack, lambda p: write_tiff(p, stack, pixel_size_nm=62.6))
    plain = rng.integers(0, 255, size=(16, 14), dtype=np.uint8)
    add("plain_u8.tif", plain[None], lambda p: tifffile.imwrite(p, plain, metadata=None))
    pages = rng.integers(0, 4000, size=(4, 9, 11), dtype=np.uint16)

    def generic(p: Path) -> None:  # one IFD per frame, no description: only the IFD chain tells the frames
        with tifffile.TiffWriter(p) as tif:
            for frame in pages:
                tif.write(frame, metadata=None, contiguous=False)

    add("generic_pages.tif", pages, generic)
    shaped = rng.integers(-300, 300, size=(2, 3, 8, 8), dtype=np.int16)
    add("shaped_i16.tif", shaped.reshape(6, 8, 8), lambda p: tifffile.imwrite(p, shaped, photometric="minisblack"))
    f32 = rng.normal(size=(3, 10, 12)).astype(np.float32)
    add("imagej_f32.tif", f32, lambda p: write_tiff(p, f32, dtype="float32"))
    raw = rng.integers(0, 65535, size=(4, 10, 12)).astype(np.uint16)
    add("priism_u16.mrc", raw, lambda p: write_mrc(p, raw, pixel_size_nm=62.6, wavelength_nm=488))
    add("priism_be_f32.mrc", f32, lambda p: write_mrc(p, f32, big_endian=True, mode=2))

    def mrc2014(p: Path, arr: np.ndarray) -> None:
        with mrcfile.new(p) as mrc:
            mrc.set_data(arr)
            mrc.voxel_size = 313.0

    add("mrc2014_f32.mrc", f32, lambda p: mrc2014(p, f32))
    i16 = rng.integers(-2000, 2000, size=(2, 8, 6)).astype(np.int16)
    add("mrc2014_i16.mrc", i16, lambda p: mrc2014(p, i16))
    return out


def _random_int(rng: np.random.Generator) -> int:
    """A header value: small, negative, huge or random bits."""
    kind = rng.integers(4)
    if kind == 0:
        return int(rng.integers(0, 40))
    if kind == 1:
        return -int(rng.integers(1, 1 << 31))
    if kind == 2:
        return int(rng.choice([1 << 20, 1 << 30, (1 << 31) - 1, 65535, 65536]))
    return int(rng.integers(-(1 << 31), 1 << 31))


def _tiff_field_offsets(raw: bytes) -> list[int]:
    """Byte offsets of the count and value fields of the first IFD's entries."""
    order = "<" if raw[:2] == b"II" else ">"
    ifd = struct.unpack_from(f"{order}I", raw, 4)[0]
    n = struct.unpack_from(f"{order}H", raw, ifd)[0]
    return [ifd + 2 + 12 * i + k for i in range(n) for k in (4, 8)] + [4, ifd + 2 + 12 * n]


def _mutate(raw: bytes, kind: str, name: str, rng: np.random.Generator) -> bytes:
    data = bytearray(raw)
    if kind == "truncate":
        return bytes(data[: int(rng.integers(0, len(data)))])
    if kind == "flip":
        for _ in range(int(rng.integers(1, 5))):
            i = int(rng.integers(0, len(data)))
            data[i] ^= int(rng.integers(1, 256))
        return bytes(data)
    if kind == "header":
        if name.endswith(".tif"):
            offsets = _tiff_field_offsets(raw)
            order = "<" if raw[:2] == b"II" else ">"
        else:
            # nx, ny, nz, mode, mx, cella, next, DV id, ntimes/nwaves, "MAP ", machine stamp
            offsets = [0, 4, 8, 12, 28, 40, 92, 96, 180, 196, 208, 212]
            order = ">" if "_be_" in name else "<"
        off = int(rng.choice(offsets))
        struct.pack_into(f"{order}i", data, off, _random_int(rng))
        return bytes(data)
    if kind == "digit":  # another number in a text field (ImageJ images=/slices=, the shaped JSON)
        digits = [i for i, b in enumerate(data) if 48 <= b <= 57]
        if digits:
            data[int(rng.choice(digits))] = int(rng.integers(48, 58))
        else:
            data[int(rng.integers(0, len(data)))] ^= 0x10
        return bytes(data)
    if kind == "zero":
        start = int(rng.integers(0, len(data)))
        length = int(rng.integers(1, 257))
        data[start : start + length] = bytes(len(data[start : start + length]))
        return bytes(data)
    raise AssertionError(kind)


def _mrc_header_shape(raw: bytes, order: str) -> tuple[int, int, int, int]:
    nx, ny, nz, mode = struct.unpack_from(f"{order}4i", raw, 0)
    return nx, ny, nz, mode


def _tiff_claims(raw: bytes) -> dict:
    """An independent, minimal reading of what a TIFF says it holds."""
    order = "<" if raw[:2] == b"II" else ">"
    claims: dict = {"ifds": 0, "chain_ok": True}
    offset = struct.unpack_from(f"{order}I", raw, 4)[0]
    seen = set()
    while offset:
        if offset in seen or offset + 2 > len(raw):
            claims["chain_ok"] = False
            break
        seen.add(offset)
        n = struct.unpack_from(f"{order}H", raw, offset)[0]
        if offset + 2 + 12 * n + 4 > len(raw):
            claims["chain_ok"] = False
            break
        if claims["ifds"] == 0:
            for i in range(n):
                code, typ, count = struct.unpack_from(f"{order}HHI", raw, offset + 2 + 12 * i)
                value = struct.unpack_from(f"{order}{'H' if typ == 3 else 'I'}", raw, offset + 2 + 12 * i + 8)[0]
                if code in (256, 257, 258) and count == 1:  # a duplicated tag: the first counts
                    claims.setdefault({256: "width", 257: "length", 258: "bits"}[code], value)
        claims["ifds"] += 1
        offset = struct.unpack_from(f"{order}I", raw, offset + 2 + 12 * n)[0]
    images = re.search(rb"ImageJ=[^\0]*?images=(\d+)", raw)
    if images:
        claims["images"] = int(images.group(1))
    shaped = re.search(rb'\{"shape": \[[0-9, ]*\]\}', raw)
    if shaped:
        claims["shape"] = tuple(json.loads(shaped.group(0))["shape"])
    return claims


def _check_consistent(name: str, raw: bytes, arr: np.ndarray, meta: dict) -> str | None:
    """Why ``arr`` is not what the damaged file ``raw`` says it holds (``None``: it is)."""
    if not isinstance(arr, np.ndarray) or arr.ndim != 3 or arr.size == 0:
        return f"not a non-empty (frames, H, W) array: {type(arr).__name__} {getattr(arr, 'shape', None)}"
    if arr.dtype not in SUPPORTED:
        return f"unsupported dtype {arr.dtype}"
    if arr.dtype.kind == "f" and not np.all(np.isfinite(arr)):
        return "non-finite pixel values"
    if name.endswith(".mrc"):
        nx, ny, nz, mode = _mrc_header_shape(raw, meta["byte_order"])
        if arr.shape != (nz, ny, nx):
            return f"shape {arr.shape}, header says {(nz, ny, nx)}"
        n_ext = struct.unpack_from(f"{meta['byte_order']}i", raw, 92)[0]
        if len(raw) != 1024 + n_ext + arr.nbytes:
            return f"file of {len(raw)} bytes, header + data make {1024 + n_ext + arr.nbytes}"
        return None
    claims = _tiff_claims(raw)
    if not claims["chain_ok"]:
        return "broken IFD chain accepted"
    if (claims.get("length"), claims.get("width")) != arr.shape[1:]:
        return f"shape {arr.shape}, first IFD says {claims.get('length')}x{claims.get('width')}"
    if claims.get("bits") is not None and not 4 * arr.dtype.itemsize < claims["bits"] <= 8 * arr.dtype.itemsize:
        return f"dtype {arr.dtype}, first IFD says {claims['bits']} bits per sample"
    frames = claims.get("images") or (int(np.prod(claims["shape"][:-2])) if "shape" in claims else claims["ifds"])
    if arr.shape[0] != frames:
        return f"{arr.shape[0]} frames, the file says {frames}"
    return None


def test_damaged_files_read_right_or_raise_dfcan_error(tmp_path):
    originals = _originals(tmp_path)
    rng = np.random.default_rng(SEED)
    failures: list[str] = []
    outcomes = {"identical": 0, "consistent": 0, "refused": 0}
    case = 0
    for name, (path, expected) in originals.items():
        raw = path.read_bytes()
        arr, _ = read_image(path)  # the undamaged file reads as written
        np.testing.assert_array_equal(arr, expected)
        assert arr.dtype == expected.dtype
        for kind in MUTATIONS:
            for _ in range(CASES_PER_MUTATION):
                case += 1
                damaged = _mutate(raw, kind, name, rng)
                target = tmp_path / f"case{case:04d}{path.suffix}"
                target.write_bytes(damaged)
                label = f"seed {SEED} case {case} ({name}, {kind})"
                try:
                    with warnings.catch_warnings():
                        warnings.simplefilter("error")  # a numpy/mrcfile warning is a failure too
                        arr, meta = read_image(target)
                except DfcanError as exc:
                    if str(target) not in str(exc):
                        failures.append(f"{label}: DfcanError does not name the file: {exc}")
                    outcomes["refused"] += 1
                    continue
                except Exception as exc:  # noqa: BLE001 - the point of the test
                    failures.append(f"{label}: {type(exc).__name__}: {exc}")
                    continue
                if arr.shape == expected.shape and arr.dtype == expected.dtype and np.array_equal(arr, expected):
                    outcomes["identical"] += 1
                    continue
                why = _check_consistent(name, damaged, arr, meta)
                if why:
                    failures.append(f"{label}: read without error but {why}")
                else:
                    outcomes["consistent"] += 1
    assert not failures, f"{len(failures)} of {case} damaged files:\n" + "\n".join(failures)
    # The damage must be real: most files are refused, some survive (damage to pixel data or unused tags).
    assert case == len(originals) * len(MUTATIONS) * CASES_PER_MUTATION
    assert outcomes["refused"] > case // 3, outcomes
    assert outcomes["identical"] + outcomes["consistent"] > 10, outcomes


@pytest.mark.parametrize("name", ["imagej_u16.tif", "generic_pages.tif", "priism_u16.mrc", "mrc2014_i16.mrc"])
def test_every_truncation_of_a_stack_is_refused(tmp_path, name):
    """A stack cut anywhere is refused: never fewer frames with no error."""
    path, expected = _originals(tmp_path)[name]
    raw = path.read_bytes()
    target = tmp_path / f"cut{path.suffix}"
    step = max(1, len(raw) // 150)
    for cut in range(0, len(raw), step):
        target.write_bytes(raw[:cut])
        try:
            arr, _ = read_image(target)
        except DfcanError as exc:
            assert str(target) in str(exc)
            continue
        # Only trailing bytes nothing points to (TIFF padding) may go.
        np.testing.assert_array_equal(arr, expected, err_msg=f"{name} cut at {cut} of {len(raw)} bytes")
