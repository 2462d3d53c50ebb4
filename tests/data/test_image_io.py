import io
import struct
import zlib

import numpy as np
import pytest
from PIL import Image

from mmmask.data.image_io import (
    ImageReadError,
    ImageTooLargeError,
    read_image,
    read_label_png,
    read_panoptic_png,
    resolve_in_root,
)


def _png_bytes(img: Image.Image, **kw) -> bytes:
    buf = io.BytesIO()
    img.save(buf, format=kw.pop("format", "PNG"), **kw)
    return buf.getvalue()


def _chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + kind + data + struct.pack(
        ">I", zlib.crc32(kind + data) & 0xFFFFFFFF)


def test_rgb_png_path_and_bytes(tmp_path):
    arr = np.random.default_rng(0).integers(0, 256, (5, 7, 3), dtype=np.uint8)
    p = tmp_path / "a.png"
    Image.fromarray(arr).save(p)
    out = read_image(p)
    assert out.dtype == np.uint8 and out.shape == (5, 7, 3) and out.flags.writeable
    np.testing.assert_array_equal(out, arr)
    np.testing.assert_array_equal(read_image(p.read_bytes()), arr)


@pytest.mark.parametrize("payload", [b"", b"not an image at all" * 10])
def test_empty_and_garbage(tmp_path, payload):
    p = tmp_path / "bad.jpg"
    p.write_bytes(payload)
    with pytest.raises(ImageReadError) as e:
        read_image(p)
    msg = str(e.value)
    assert "bad.jpg" in msg and "\n" not in msg
    assert isinstance(e.value, ValueError)


def test_missing_file(tmp_path):
    with pytest.raises(ImageReadError, match="not found"):
        read_image(tmp_path / "nope.png")


@pytest.mark.parametrize("fmt", ["PNG", "JPEG"])
def test_truncated(tmp_path, fmt):
    arr = np.random.default_rng(1).integers(0, 256, (64, 64, 3), dtype=np.uint8)
    data = _png_bytes(Image.fromarray(arr), format=fmt)
    p = tmp_path / f"cut.{fmt.lower()}"
    p.write_bytes(data[: len(data) // 2])
    with pytest.raises(ImageReadError) as e:
        read_image(p)
    assert "cut." in str(e.value) and "\n" not in str(e.value)


def test_huge_header_refused_before_decoding(tmp_path):
    ihdr = struct.pack(">IIBBBBB", 30000, 30000, 8, 2, 0, 0, 0)
    data = (b"\x89PNG\r\n\x1a\n" + _chunk(b"IHDR", ihdr)
            + _chunk(b"IDAT", zlib.compress(b"\x00" * 10)) + _chunk(b"IEND", b""))
    p = tmp_path / "bomb.png"
    p.write_bytes(data)
    with pytest.raises(ImageTooLargeError) as e:
        read_image(p)
    msg = str(e.value)
    assert "30000 x 30000 = 900000000 pixels" in msg and "bomb.png" in msg
    assert isinstance(e.value, ValueError)
    # PIL's own limit is restored afterwards
    assert Image.MAX_IMAGE_PIXELS is not None


def test_max_pixels_limit(tmp_path):
    data = _png_bytes(Image.new("RGB", (20, 10)))
    with pytest.raises(ImageTooLargeError, match="20 x 10 = 200 pixels"):
        read_image(data, max_pixels=199)
    assert read_image(data, max_pixels=200).shape == (10, 20, 3)


def test_16bit_grayscale_scaled():
    ramp = np.linspace(0, 65535, 256).astype(np.uint16).reshape(16, 16)
    im = Image.fromarray(ramp)
    assert im.mode.startswith("I;16")
    out = read_image(_png_bytes(im))
    assert out.shape == (16, 16, 3)
    assert out.min() == 0 and out.max() == 255
    assert np.all(out[..., 0] == out[..., 1])
    expected = (ramp.astype(np.uint32) * 255 // 65535).astype(np.uint8)
    np.testing.assert_array_equal(out[..., 0], expected)
    # mode I (32-bit) holding 16-bit values scales the same way
    out_i = read_image(_png_bytes(Image.fromarray(ramp.astype(np.int32))))
    np.testing.assert_array_equal(out_i[..., 0], expected)


def test_rgba_composited_on_white():
    arr = np.zeros((2, 3, 4), np.uint8)
    arr[0, 0] = (255, 0, 0, 255)  # opaque red
    arr[0, 1] = (255, 0, 0, 0)  # transparent -> white
    arr[0, 2] = (0, 0, 0, 128)  # half black -> grey
    out = read_image(_png_bytes(Image.fromarray(arr, "RGBA")))
    assert out.shape == (2, 3, 3)
    assert tuple(out[0, 0]) == (255, 0, 0)
    assert tuple(out[0, 1]) == (255, 255, 255)
    assert all(abs(int(v) - 127) <= 2 for v in out[0, 2])


def test_grayscale_la_palette_cmyk():
    gray = np.arange(12, dtype=np.uint8).reshape(3, 4) * 20
    out = read_image(_png_bytes(Image.fromarray(gray, "L")))
    assert out.shape == (3, 4, 3) and np.all(out == gray[..., None])
    la = Image.fromarray(np.stack([gray, np.full_like(gray, 255)], -1), "LA")
    assert np.all(read_image(_png_bytes(la)) == gray[..., None])
    pal = Image.fromarray(gray, "L").convert("P")
    assert read_image(_png_bytes(pal)).shape == (3, 4, 3)
    cmyk = Image.new("CMYK", (4, 3), (0, 255, 255, 0))  # red in CMYK
    out = read_image(_png_bytes(cmyk, format="JPEG", quality=95))
    assert out.shape == (3, 4, 3) and out[..., 0].mean() > 200 and out[..., 1].mean() < 60


def test_exif_rotation_applied():
    arr = np.zeros((10, 20, 3), np.uint8)  # H=10, W=20: left half red, right half blue
    arr[:, :10] = (255, 0, 0)
    arr[:, 10:] = (0, 0, 255)
    im = Image.fromarray(arr)
    exif = Image.Exif()
    exif[0x0112] = 6  # rotate 90 degrees clockwise to display
    out = read_image(_png_bytes(im, format="JPEG", quality=95, exif=exif.tobytes()))
    assert out.shape == (20, 10, 3)
    # clockwise rotation: the left half becomes the top half
    assert out[:8, :, 0].mean() > 200 and out[:8, :, 2].mean() < 60
    assert out[12:, :, 2].mean() > 200 and out[12:, :, 0].mean() < 60


def test_animated_gif_first_frame():
    frames = [Image.new("RGB", (8, 8), c) for c in ((255, 0, 0), (0, 0, 255))]
    buf = io.BytesIO()
    frames[0].save(buf, format="GIF", save_all=True, append_images=frames[1:], duration=50,
                   loop=0)
    out = read_image(buf.getvalue())
    assert out.shape == (8, 8, 3)
    assert out[..., 0].min() > 200 and out[..., 2].max() < 50


def test_read_label_png(tmp_path):
    lab = np.array([[0, 1, 255], [3, 4, 5]], np.uint8)
    Image.fromarray(lab).save(tmp_path / "l8.png")
    out = read_label_png(tmp_path / "l8.png")
    assert out.dtype == np.uint8
    np.testing.assert_array_equal(out, lab)
    lab16 = np.array([[0, 300], [1000, 65535]], np.uint16)
    Image.fromarray(lab16).save(tmp_path / "l16.png")
    out16 = read_label_png(tmp_path / "l16.png")
    assert out16.dtype == np.uint16
    np.testing.assert_array_equal(out16, lab16)
    Image.new("RGB", (2, 2)).save(tmp_path / "rgb.png")
    with pytest.raises(ImageReadError, match="single-channel"):
        read_label_png(tmp_path / "rgb.png")


def test_read_panoptic_png(tmp_path):
    ids = np.array([[0, 1], [300, 70000]], np.int64)
    rgb = np.stack([ids % 256, ids // 256 % 256, ids // 65536], -1).astype(np.uint8)
    Image.fromarray(rgb).save(tmp_path / "p.png")
    np.testing.assert_array_equal(read_panoptic_png(tmp_path / "p.png"), ids)


def test_resolve_in_root(tmp_path):
    root = tmp_path / "root"
    (root / "sub").mkdir(parents=True)
    (root / "sub" / "a.png").write_bytes(b"x")
    assert resolve_in_root(root, "sub/a.png").endswith("a.png")
    for bad in ("../secret.txt", "sub/../../secret.txt", "/etc/passwd", ""):
        with pytest.raises(ValueError):
            resolve_in_root(root, bad)
    (tmp_path / "outside.txt").write_text("x")
    (root / "link.txt").symlink_to(tmp_path / "outside.txt")
    with pytest.raises(ValueError, match="escapes"):
        resolve_in_root(root, "link.txt")
