"""MRC / TIFF reading and writing: round trips, hand-built Priism headers, malformed files."""

from __future__ import annotations

import struct
import warnings
from pathlib import Path

import mrcfile
import numpy as np
import pytest
import tifffile

from dfcan_tf.data.files import (
    read_image,
    read_mrc,
    read_mrc_header,
    read_tiff,
    write_mrc,
    write_tiff,
)
from dfcan_tf.errors import DfcanError


def _priism_file(path: Path, data: np.ndarray, *, order: str, mode: int, ext_bytes: int = 0,
                 dx_um: float = 0.0626, wave: int = 525, mx: int = 1) -> None:
    """Build a Priism/DV file byte by byte, independently of write_mrc."""
    nz, ny, nx = data.shape
    h = bytearray(1024)
    struct.pack_into(f"{order}4i", h, 0, nx, ny, nz, mode)
    struct.pack_into(f"{order}3i", h, 28, mx, mx, 1)  # sampling: dx is the cell size of mx pixels
    struct.pack_into(f"{order}3f", h, 40, dx_um * mx, dx_um * mx, 0.1)
    struct.pack_into(f"{order}i", h, 92, ext_bytes)
    struct.pack_into(f"{order}h", h, 96, -16224)
    struct.pack_into(f"{order}2h", h, 128, ext_bytes // 4, 0)
    struct.pack_into(f"{order}h", h, 180, 1)
    struct.pack_into(f"{order}h", h, 196, 1)
    struct.pack_into(f"{order}h", h, 198, wave)
    struct.pack_into(f"{order}3f", h, 208, 1.5, -2.0, 0.0)  # x0, y0, z0 where MRC2014 has "MAP "
    dtype = {0: "u1", 1: "i2", 2: "f4", 6: "u2"}[mode]
    ext = bytes(range(256)) * (ext_bytes // 256) + b"\x7f" * (ext_bytes % 256)  # junk to skip
    path.write_bytes(bytes(h) + ext + data.astype(f"{order}{dtype}").tobytes())


@pytest.mark.parametrize("big_endian", [False, True])
@pytest.mark.parametrize("mode", [0, 1, 2, 6])
def test_write_read_round_trip(tmp_path, big_endian, mode):
    rng = np.random.default_rng(mode)
    hi = {0: 255, 1: 30000, 2: 1e4, 6: 65535}[mode]
    lo = {0: 0, 1: -30000, 2: -1e4, 6: 0}[mode]
    a = rng.uniform(lo, hi, size=(9, 12, 17))
    if mode != 2:
        a = np.round(a)
    path = tmp_path / f"x_{mode}_{big_endian}.mrc"
    write_mrc(path, a, pixel_size_nm=62.6, wavelength_nm=525, big_endian=big_endian, mode=mode)
    b, meta = read_mrc(path)
    assert b.shape == (9, 12, 17)
    assert b.dtype == {0: np.uint8, 1: np.int16, 2: np.float32, 6: np.uint16}[mode]
    assert b.dtype.isnative
    np.testing.assert_array_equal(b, a.astype(b.dtype))
    assert meta["byte_order"] == (">" if big_endian else "<")
    assert meta["flavour"] == "priism" and meta["mode"] == mode
    assert meta["pixel_size_nm"] == pytest.approx(62.6, abs=1e-3)
    assert meta["wavelength_nm"] == 525
    # The Priism file is not MRC2014: mrcfile opens it only permissively, with the same values.
    if mode in (1, 2, 6):  # mrcfile reads mode 0 as signed bytes
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", RuntimeWarning)
            with mrcfile.open(path, permissive=True) as mrc:
                np.testing.assert_array_equal(np.asarray(mrc.data, dtype=b.dtype), b)
        with pytest.raises(ValueError):
            mrcfile.open(path, permissive=False)


@pytest.mark.parametrize("order", ["<", ">"])
@pytest.mark.parametrize("mode", [2, 6])
@pytest.mark.parametrize("mx", [1, 6])
def test_hand_built_priism_header(tmp_path, order, mode, mx):
    rng = np.random.default_rng(1)
    data = rng.integers(0, 4000, size=(5, 8, 6)).astype(np.float32 if mode == 2 else np.uint16)
    path = tmp_path / "hand.mrc"
    _priism_file(path, data, order=order, mode=mode, ext_bytes=300, dx_um=0.0313, wave=488, mx=mx)
    arr, meta = read_mrc(path)
    np.testing.assert_array_equal(arr, data)
    assert meta["extended_header_bytes"] == 300 and meta["data_offset"] == 1324
    assert meta["pixel_size_nm"] == pytest.approx(31.3, abs=1e-3)
    assert meta["wavelength_nm"] == 488
    assert read_image(path)[0].shape == (5, 8, 6)


def test_mrc2014_read_via_mrcfile(tmp_path):
    data = np.arange(2 * 6 * 4, dtype=np.float32).reshape(2, 6, 4)
    path = tmp_path / "std.mrc"
    with mrcfile.new(path) as mrc:
        mrc.set_data(data)
        mrc.voxel_size = 313.0  # Å
    arr, meta = read_mrc(path)
    assert meta["flavour"] == "mrc2014"
    np.testing.assert_array_equal(arr, data)
    assert meta["pixel_size_nm"] == pytest.approx(31.3)
    # 2-D MRC2014 comes back as one frame
    with mrcfile.new(tmp_path / "flat.mrc") as mrc:
        mrc.set_data(data[0].astype(np.int16))
    assert read_mrc(tmp_path / "flat.mrc")[0].shape == (1, 6, 4)


def _good(tmp_path) -> Path:
    path = tmp_path / "good.mrc"
    write_mrc(path, np.ones((3, 4, 5)), mode=6)
    return path


@pytest.mark.parametrize(
    "damage, words",
    [
        ("empty", "empty"),
        ("short_header", "truncated"),
        ("truncated", "truncated"),
        ("trailing", "wrong size in header"),
        ("bad_dims", "wrong size in header"),
        ("bad_mode", "unknown MRC mode 7"),
        ("text", "not an MRC image"),
        ("missing", "no such file"),
    ],
)
def test_malformed_mrc_raises(tmp_path, damage, words):
    path = _good(tmp_path)
    raw = path.read_bytes()
    if damage == "empty":
        path.write_bytes(b"")
    elif damage == "short_header":
        path.write_bytes(raw[:500])
    elif damage == "truncated":
        path.write_bytes(raw[:-7])
    elif damage == "trailing":
        path.write_bytes(raw + b"\0" * 10)
    elif damage == "bad_dims":
        path.write_bytes(struct.pack("<i", -4) + raw[4:])
    elif damage == "bad_mode":
        path.write_bytes(raw[:12] + struct.pack("<i", 7) + raw[16:])
    elif damage == "text":
        path.write_bytes(b"hello, this is not an image\n" * 100)
    elif damage == "missing":
        path.unlink()
    with pytest.raises(DfcanError) as err:
        read_mrc(path)
    assert str(path) in str(err.value) and words in str(err.value)


def test_write_mrc_bad_input_writes_nothing(tmp_path):
    with pytest.raises(DfcanError, match="mode=5"):
        write_mrc(tmp_path / "a.mrc", np.zeros((4, 4)), mode=5)
    with pytest.raises(DfcanError, match="shape"):
        write_mrc(tmp_path / "b.mrc", np.zeros((2, 3, 4, 4)))
    assert list(tmp_path.iterdir()) == []


def test_uint16_clipping_and_2d(tmp_path):
    path = write_mrc(tmp_path / "c.mrc", np.array([[-5.0, 70000.0], [1.4, 1.6]]), mode=6)
    arr, _ = read_mrc(path)
    np.testing.assert_array_equal(arr, [[[0, 65535], [1, 2]]])


def test_read_image_tiff_and_mrc(tmp_path):
    img = np.random.default_rng(0).random((10, 12)).astype(np.float32)
    write_tiff(tmp_path / "a.tif", img, pixel_size_nm=31.3)
    arr, meta = read_image(tmp_path / "a.tif")
    assert arr.shape == (1, 10, 12) and arr.dtype == np.uint16
    np.testing.assert_array_equal(arr[0], np.round(img * 65535).astype(np.uint16))
    assert meta["pixel_size_nm"] == pytest.approx(31.3, rel=1e-4)
    stack = np.arange(3 * 4 * 5, dtype=np.uint16).reshape(3, 4, 5)
    write_tiff(tmp_path / "s.tif", stack)
    np.testing.assert_array_equal(read_tiff(tmp_path / "s.tif")[0], stack)
    # a TIFF with an .mrc name is still read as TIFF; an MRC with any name as MRC
    (tmp_path / "s.tif").rename(tmp_path / "s.mrc")
    np.testing.assert_array_equal(read_image(tmp_path / "s.mrc")[0], stack)
    write_mrc(tmp_path / "m.dat", stack)
    np.testing.assert_array_equal(read_image(tmp_path / "m.dat")[0], stack)
    (tmp_path / "e.tif").write_bytes(b"")
    with pytest.raises(DfcanError, match="empty"):
        read_image(tmp_path / "e.tif")
    (tmp_path / "bad.tif").write_bytes(b"II*\x00garbage")
    with pytest.raises(DfcanError, match="bad.tif"):
        read_image(tmp_path / "bad.tif")


def test_header_only_is_cheap_and_consistent(tmp_path):
    path = write_mrc(tmp_path / "h.mrc", np.zeros((9, 20, 30), np.uint16), pixel_size_nm=62.6)
    meta = read_mrc_header(path)
    assert meta["shape"] == (9, 20, 30) and meta["mode"] == 6


# --------------------------------------------------------------------------- damaged and unusual TIFFs


def _imagej_stack(tmp_path: Path, frames: int = 5) -> tuple[Path, np.ndarray]:
    stack = np.random.default_rng(7).integers(0, 65535, size=(frames, 12, 10), dtype=np.uint16)
    return write_tiff(tmp_path / "stack.tif", stack), stack


def test_truncated_imagej_stack_is_refused_not_shortened(tmp_path):
    """Cutting a 5-frame stack inside frame 3 or in its IFD chain raises; it never reads as 1 frame."""
    path, stack = _imagej_stack(tmp_path)
    raw = path.read_bytes()
    with tifffile.TiffFile(path) as tif:
        data_start = tif.series[0].dataoffset
    cut = tmp_path / "cut.tif"
    for end in (data_start + 2 * stack[0].nbytes + 17, data_start + stack.nbytes, len(raw) - 300):
        cut.write_bytes(raw[:end])
        with pytest.raises(DfcanError) as err:
            read_image(cut)
        assert str(cut) in str(err.value)
        assert any(w in str(err.value) for w in ("truncated", "corrupt")), str(err.value)


def test_imagej_frame_count_must_match_metadata(tmp_path):
    path, stack = _imagej_stack(tmp_path)
    raw = path.read_bytes()
    assert raw.count(b"images=5") == 1
    (tmp_path / "more.tif").write_bytes(raw.replace(b"images=5", b"images=7"))
    with pytest.raises(DfcanError, match=r"more\.tif.*(7 images|truncated|corrupt)"):
        read_image(tmp_path / "more.tif")
    # channels × slices × frames must make images=
    (tmp_path / "czt.tif").write_bytes(raw.replace(b"slices=5", b"slices=4"))
    with pytest.raises(DfcanError, match=r"czt\.tif: corrupt ImageJ metadata: images=5"):
        read_image(tmp_path / "czt.tif")
    np.testing.assert_array_equal(read_image(path)[0], stack)  # the original is fine


def test_plain_multipage_tiff_with_a_damaged_page_is_refused(tmp_path):
    frames = np.arange(4 * 9 * 11, dtype=np.uint16).reshape(4, 9, 11)
    path = tmp_path / "pages.tif"
    with tifffile.TiffWriter(path) as tif:
        for i, frame in enumerate(frames):
            tif.write(frame if i != 2 else frame[:, :10], metadata=None, contiguous=False)
    with pytest.raises(DfcanError, match=r"pages\.tif: corrupt TIFF: 3 of its 4 pages make an image"):
        read_image(path)


@pytest.mark.parametrize(
    "array, words",
    [
        (np.ones((16, 16), bool), "1-bit"),
        (np.ones((16, 16), np.complex64), "unsupported pixel type complex64"),
        (np.ones((16, 16), np.int64), "unsupported pixel type int64"),
    ],
)
def test_unsupported_tiff_pixel_types_are_refused(tmp_path, array, words):
    path = tmp_path / "odd.tif"
    tifffile.imwrite(path, array)
    with pytest.raises(DfcanError) as err:
        read_image(path)
    assert str(path) in str(err.value) and words in str(err.value)


def test_non_finite_and_empty_images_are_refused(tmp_path):
    img = np.ones((3, 16, 16), np.float32)
    img[1, 4, 5] = np.inf
    img[2, 0, 0] = np.nan
    write_tiff(tmp_path / "inf.tif", img, dtype="float32")
    first_bad = r"inf\.tif: 2 pixel value\(s\) are NaN or infinite \(the first at index \(1, 4, 5\)\)"
    with pytest.raises(DfcanError, match=first_bad):
        read_image(tmp_path / "inf.tif")
    write_mrc(tmp_path / "nan.mrc", np.ones((2, 8, 8)), mode=2)
    raw = bytearray((tmp_path / "nan.mrc").read_bytes())
    struct.pack_into("<f", raw, 1024 + 4 * 7, float("nan"))
    (tmp_path / "nan.mrc").write_bytes(bytes(raw))
    with pytest.raises(DfcanError, match=r"nan\.mrc: 1 pixel value\(s\) are NaN"):
        read_image(tmp_path / "nan.mrc")
    # a TIFF page of width 0: an empty image, not a reshape error
    tifffile.imwrite(tmp_path / "w.tif", np.ones((4, 6), np.uint16), metadata=None)
    raw = bytearray((tmp_path / "w.tif").read_bytes())
    ifd = struct.unpack_from("<I", raw, 4)[0]
    for i in range(struct.unpack_from("<H", raw, ifd)[0]):
        if struct.unpack_from("<H", raw, ifd + 2 + 12 * i)[0] == 256:  # ImageWidth
            struct.pack_into("<H", raw, ifd + 2 + 12 * i + 8, 0)
    (tmp_path / "w.tif").write_bytes(bytes(raw))
    with pytest.raises(DfcanError, match=r"w\.tif"):
        read_image(tmp_path / "w.tif")


def test_huge_float_values_read_exactly(tmp_path):
    """Finite extremes (float32 ±3e38, float64 1e300) are data, not errors, for the reader."""
    f32 = np.array([[-3e38, 3e38], [0, 1]], np.float32)
    tifffile.imwrite(tmp_path / "f32.tif", f32)
    np.testing.assert_array_equal(read_image(tmp_path / "f32.tif")[0][0], f32)
    f64 = np.array([[1e300, 0], [-1e300, 5]], np.float64)
    tifffile.imwrite(tmp_path / "f64.tif", f64)
    np.testing.assert_array_equal(read_image(tmp_path / "f64.tif")[0][0], f64)


def test_mrc_header_claiming_more_frames_is_refused(tmp_path):
    path = _good(tmp_path)  # 3 frames of 4x5 uint16
    raw = bytearray(path.read_bytes())
    struct.pack_into("<i", raw, 8, 5)  # nz = 5
    path.write_bytes(bytes(raw))
    with pytest.raises(DfcanError, match=r"good\.mrc: truncated: the header says 5×4×5"):
        read_image(path)


def test_corrupt_mrc2014_fields_give_dfcan_error(tmp_path):
    path = tmp_path / "std.mrc"
    with mrcfile.new(path) as mrc:
        mrc.set_data(np.arange(2 * 6 * 4, dtype=np.float32).reshape(2, 6, 4))
    raw = path.read_bytes()
    for offset, value in [(12, 4), (92, -5), (92, 1 << 30), (0, 0), (8, 1 << 21), (212, 0x7F7F7F7F)]:
        damaged = bytearray(raw)
        struct.pack_into("<i", damaged, offset, value)
        path.write_bytes(bytes(damaged))
        try:
            arr, meta = read_image(path)
        except DfcanError as exc:
            assert str(path) in str(exc)
            continue
        assert arr.shape == (2, 6, 4) and np.all(np.isfinite(arr)), (offset, value)


# --------------------------------------------------------------------------- what predict does with read images


class _Upsample:
    """A stand-in model: ×2 nearest-neighbour upsampling plus a fixed smooth ramp (a 'network')."""

    input_channels = 1

    def __call__(self, batch: np.ndarray) -> np.ndarray:
        up = np.repeat(np.repeat(batch[..., :1], 2, axis=1), 2, axis=2)
        ramp = np.linspace(0.0, 0.01, up.shape[2], dtype=np.float32)
        return up + ramp[None, None, :, None]


def test_predict_normalises_huge_floats_in_float64(tmp_path):
    """float64 up to 1e300 and float32 ±3e38 normalise like the same image at any scale, without warnings."""
    from dfcan_tf.inference.predict import predict_image

    img = np.random.default_rng(3).random((16, 16))
    expected = predict_image(_Upsample(), img, scale=2)
    assert expected.max() == pytest.approx(1.0) and expected.min() == pytest.approx(0.0)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        for huge in (img * 1e300, (img * 6e38 - 3e38).astype(np.float32), img * 1.7e308 - 0.85e308):
            out = predict_image(_Upsample(), huge, scale=2, name="huge.tif")
            assert np.all(np.isfinite(out))
            np.testing.assert_allclose(out, expected, atol=1e-5)
    with pytest.raises(DfcanError, match=r"huge\.tif: pixel values up to 9\.998\d*e\+299 do not fit 32-bit floats"):
        predict_image(_Upsample(), img * 1e300, scale=2, normalize=False, name="huge.tif")


@pytest.mark.parametrize("value", [0, 7])
def test_predict_refuses_constant_image(tmp_path, value):
    from dfcan_tf.inference.files import predict_file
    from dfcan_tf.inference.predict import predict_image

    with pytest.raises(DfcanError, match=rf"blank\.tif: image is constant \(value {value}\); nothing to super-resolve"):
        predict_image(_Upsample(), np.full((16, 16), value, np.uint16), scale=2, name="blank.tif")
    path = write_tiff(tmp_path / "blank.tif", np.full((2, 16, 16), value, np.uint16))
    before = path.read_bytes()
    with pytest.raises(DfcanError, match=r"blank\.tif: image is constant"):
        predict_file(_Upsample(), path, tmp_path / "out.tif", scale=2, input_channels=1)
    assert path.read_bytes() == before and not (tmp_path / "out.tif").exists()


def test_predict_refuses_empty_tiny_and_non_finite_images(tmp_path):
    from dfcan_tf.inference.files import predict_file
    from dfcan_tf.inference.predict import predict_image

    for shape, words in [((0, 0), "empty image"), ((0, 16, 16), "empty image"), ((16, 0), "empty image"),
                         ((3, 3), "too small"), ((16, 4), "too small")]:
        with pytest.raises(DfcanError, match=rf"x\.tif: .*{words}"):
            predict_image(_Upsample(), np.ones(shape, np.float32), scale=2, name="x.tif")
    img = np.random.default_rng(1).random((16, 16))
    img[2, 3] = np.nan
    with pytest.raises(DfcanError, match=r"x\.tif: contains 1 NaN or infinite"):
        predict_image(_Upsample(), img, scale=2, name="x.tif")
    # through the file reader: an image of 0 pixels is refused by name
    tifffile.imwrite(tmp_path / "zero.tif", np.ones((4, 6), np.uint16), metadata=None)
    raw = bytearray((tmp_path / "zero.tif").read_bytes())
    ifd = struct.unpack_from("<I", raw, 4)[0]
    for i in range(struct.unpack_from("<H", raw, ifd)[0]):
        if struct.unpack_from("<H", raw, ifd + 2 + 12 * i)[0] in (256, 257):  # ImageWidth, ImageLength
            struct.pack_into("<H", raw, ifd + 2 + 12 * i + 8, 0)
    (tmp_path / "zero.tif").write_bytes(bytes(raw))
    with pytest.raises(DfcanError, match=r"zero\.tif"):
        predict_file(_Upsample(), tmp_path / "zero.tif", tmp_path / "out.tif", scale=2, input_channels=1)
    assert not (tmp_path / "out.tif").exists()


def test_predict_file_float64_tiff_with_huge_values(tmp_path):
    from dfcan_tf.inference.files import predict_file

    img = np.random.default_rng(2).random((16, 16))
    tifffile.imwrite(tmp_path / "small.tif", img)
    tifffile.imwrite(tmp_path / "huge.tif", img * 1e300)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        predict_file(_Upsample(), tmp_path / "small.tif", tmp_path / "a.tif", scale=2, input_channels=1)
        predict_file(_Upsample(), tmp_path / "huge.tif", tmp_path / "b.tif", scale=2, input_channels=1)
    a, b = read_image(tmp_path / "a.tif")[0], read_image(tmp_path / "b.tif")[0]
    assert a.shape == (1, 32, 32) and a.max() == 65535 and a.min() == 0
    np.testing.assert_array_equal(a, b)
