"""Reading images and label maps robustly.

:func:`read_image` returns HxWx3 uint8 RGB for any common input: EXIF-rotated, grayscale,
palette, RGBA/LA (composited on white), CMYK, 16-bit and animated (first frame) images. The
header size is checked against ``max_pixels`` before any pixel is decoded. Unreadable input
raises :class:`ImageReadError` (a ``ValueError``) with a one-line message naming the file.
"""

from __future__ import annotations

import io
import os
import threading
import warnings
from typing import BinaryIO, Union

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

__all__ = [
    "ImageReadError",
    "ImageTooLargeError",
    "DEFAULT_MAX_PIXELS",
    "read_image",
    "as_rgb_array",
    "read_label_png",
    "read_panoptic_png",
    "resolve_in_root",
]

# Default pixel limit (INPUT.MAX_PIXELS has the same default).
DEFAULT_MAX_PIXELS = 100_000_000

ImageSource = Union[str, os.PathLike, bytes, bytearray, BinaryIO]

_OPEN_LOCK = threading.Lock()


class ImageReadError(ValueError):
    """An image cannot be read: missing, empty, truncated, not an image, or too large."""


class ImageTooLargeError(ImageReadError):
    """The image header declares more pixels than allowed (checked before decoding)."""


def _describe(src: ImageSource, name: str | None) -> str:
    if name:
        return name
    if isinstance(src, (str, os.PathLike)):
        return os.fspath(src)
    if isinstance(src, (bytes, bytearray)):
        return f"<{len(src)} bytes>"
    return str(getattr(src, "name", "<stream>"))


def _as_stream(src: ImageSource, label: str) -> BinaryIO:
    if isinstance(src, (bytes, bytearray)):
        data = bytes(src)
    elif isinstance(src, (str, os.PathLike)):
        path = os.fspath(src)
        if not os.path.exists(path):
            raise ImageReadError(f"{label}: file not found")
        if os.path.isdir(path):
            raise ImageReadError(f"{label}: is a directory, not an image")
        try:
            with open(path, "rb") as f:
                data = f.read()
        except OSError as e:
            raise ImageReadError(f"{label}: cannot be read ({e.strerror or e})") from None
    else:
        data = src.read()
    if not data:
        raise ImageReadError(f"{label}: empty file (0 bytes), not an image")
    return io.BytesIO(data)


def _open_header(stream: BinaryIO, label: str) -> Image.Image:
    """``Image.open`` (header only), without PIL's own decompression-bomb refusal: the caller
    checks the size against its own limit right after."""
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            return Image.open(stream)
    except Image.DecompressionBombError:
        stream.seek(0)
        with _OPEN_LOCK:  # read the header once more only to report the declared size
            old = Image.MAX_IMAGE_PIXELS
            Image.MAX_IMAGE_PIXELS = None
            try:
                return Image.open(stream)
            finally:
                Image.MAX_IMAGE_PIXELS = old
    except UnidentifiedImageError:
        raise ImageReadError(f"{label}: not an image (unknown or corrupt format)") from None
    except (OSError, SyntaxError, ValueError, EOFError) as e:
        raise ImageReadError(f"{label}: corrupt image header ({e})") from None


def _check_size(im: Image.Image, max_pixels: int | None, label: str) -> None:
    w, h = im.size
    if w <= 0 or h <= 0:
        raise ImageReadError(f"{label}: image has an empty size {w} x {h}")
    if max_pixels is not None and w * h > max_pixels:
        raise ImageTooLargeError(
            f"{label}: image is {w} x {h} = {w * h} pixels, more than the limit of {max_pixels} "
            f"(INPUT.MAX_PIXELS)"
        )


def _load(im: Image.Image, label: str) -> None:
    try:
        im.seek(0)  # animated images: the first frame
        im.load()
    except (OSError, SyntaxError, ValueError, EOFError, IndexError) as e:
        msg = str(e).splitlines()[0] if str(e) else type(e).__name__
        raise ImageReadError(f"{label}: truncated or corrupt image ({msg})") from None


def _high_depth_to_uint8(im: Image.Image) -> np.ndarray:
    """Modes I;16*, I and F (single channel, >8 bit) -> HxW uint8, scaled, not clipped."""
    arr = np.asarray(im)
    if im.mode.startswith("I;16") or (im.mode == "I" and arr.min() >= 0 and arr.max() <= 65535):
        return (arr.astype(np.uint32) * 255 // 65535).astype(np.uint8)  # full 16-bit range
    arr = arr.astype(np.float64)
    lo, hi = float(np.nanmin(arr)), float(np.nanmax(arr))
    if im.mode == "F" and lo >= 0.0 and hi <= 1.0:
        lo, hi = 0.0, 1.0
    elif lo >= 0.0 and hi <= 255.0:
        lo, hi = 0.0, 255.0
    scaled = (np.nan_to_num(arr, nan=lo) - lo) / max(hi - lo, 1e-12) * 255.0
    return np.clip(np.round(scaled), 0, 255).astype(np.uint8)


def _to_rgb(im: Image.Image, background: tuple[int, int, int]) -> np.ndarray:
    mode = im.mode
    if mode.startswith("I") and mode != "I" and not mode.startswith("I;16"):
        im, mode = im.convert("I"), "I"  # I;32 and other integer layouts
    if mode in ("I", "F") or mode.startswith("I;16"):
        gray = _high_depth_to_uint8(im)
        return np.repeat(gray[:, :, None], 3, axis=2)
    has_alpha = mode in ("RGBA", "LA", "PA", "RGBa", "La") or (
        mode in ("P", "L", "RGB") and "transparency" in im.info
    )
    if has_alpha:
        rgba = im.convert("RGBA")
        base = Image.new("RGBA", rgba.size, (*background, 255))
        return np.asarray(Image.alpha_composite(base, rgba).convert("RGB"))
    if mode != "RGB":
        im = im.convert("RGB")  # L, 1, P, CMYK, YCbCr, LAB, HSV
    return np.asarray(im)


def read_image(src: ImageSource, max_pixels: int | None = DEFAULT_MAX_PIXELS, *,
               name: str | None = None,
               background: tuple[int, int, int] = (255, 255, 255)) -> np.ndarray:
    """Read an image file, bytes or binary stream as an HxWx3 uint8 RGB array.

    Args:
        src: path, bytes or a binary file object.
        max_pixels: images whose header declares more pixels are refused before decoding
            (``ImageTooLargeError``); ``None`` disables the check.
        name: how the image is named in errors (default: the path).
        background: colour that transparent pixels are composited on.

    Raises:
        ImageReadError: missing, empty, truncated, corrupt or non-image input (one line).
        ImageTooLargeError: more than ``max_pixels`` pixels.
    """
    label = _describe(src, name)
    stream = _as_stream(src, label)
    im = _open_header(stream, label)
    try:
        _check_size(im, max_pixels, label)
        _load(im, label)
        try:
            rotated = ImageOps.exif_transpose(im)
        except Exception:  # malformed EXIF: keep the pixels as stored
            rotated = None
        out = _to_rgb(rotated if rotated is not None else im, background)
    finally:
        im.close()
    return np.array(out, dtype=np.uint8, order="C")  # writable copy


def _array_to_uint8(arr: np.ndarray) -> np.ndarray:
    """Pixel values -> uint8: bool, uint16 (full range), floats in 0..1 or 0..255, small ints."""
    if arr.dtype == np.uint8:
        return arr
    if arr.dtype == np.bool_:
        return arr.astype(np.uint8) * 255
    if arr.dtype == np.uint16:
        return (arr.astype(np.uint32) * 255 // 65535).astype(np.uint8)
    if not (np.issubdtype(arr.dtype, np.floating) or np.issubdtype(arr.dtype, np.integer)):
        raise ValueError(f"Image arrays must hold numbers, got dtype {arr.dtype}")
    if arr.size and not np.isfinite(arr).all():
        raise ValueError("The image array holds NaN or infinite values")
    lo, hi = (float(arr.min()), float(arr.max())) if arr.size else (0.0, 0.0)
    if lo < 0 or hi > 255:
        raise ValueError(f"Image values span {lo:g}..{hi:g}; expected 0..255 (or 0..1 floats)")
    if np.issubdtype(arr.dtype, np.floating) and hi <= 1.0:
        arr = arr * 255.0
    return np.round(arr).astype(np.uint8)


def as_rgb_array(image, background: tuple[int, int, int] = (255, 255, 255)) -> np.ndarray:
    """An in-memory image as HxWx3 uint8 RGB (what the predictor takes).

    Accepts a PIL image or an array HxW / HxWx1 (grayscale), HxWx3 (RGB) or HxWx4 (RGBA,
    composited on ``background``) of uint8, uint16, bool, integers in 0..255 or floats in 0..1
    or 0..255. Anything else raises ``ValueError`` naming the shape or dtype.
    """
    if isinstance(image, Image.Image):
        return np.array(_to_rgb(image, background), dtype=np.uint8, order="C")
    if not isinstance(image, np.ndarray):
        raise ValueError(f"Expected an image array (HxWx3 uint8 RGB), got {type(image).__name__}")
    arr = image[:, :, None] if image.ndim == 2 else image
    if arr.ndim != 3 or arr.shape[2] not in (1, 3, 4):
        raise ValueError(f"Expected an HxWx3 RGB image (or HxW, HxWx1, HxWx4), got shape "
                         f"{tuple(image.shape)}")
    arr = _array_to_uint8(arr)
    if arr.shape[2] == 1:
        arr = np.repeat(arr, 3, axis=2)
    elif arr.shape[2] == 4:
        alpha = arr[:, :, 3:].astype(np.float32) / 255.0
        rgb = arr[:, :, :3] * alpha + np.asarray(background, np.float32) * (1.0 - alpha)
        arr = np.round(rgb).astype(np.uint8)
    return np.ascontiguousarray(arr)


def read_label_png(path: str | os.PathLike) -> np.ndarray:
    """Read a single-channel label map: HxW uint8 (8-bit, palette) or uint16 (16-bit) ids.

    Palette PNGs give their palette indices (the usual label-PNG convention).
    """
    label = os.fspath(path)
    im = _open_header(_as_stream(path, label), label)
    try:
        _load(im, label)
        if im.mode in ("L", "P"):
            return np.array(im, dtype=np.uint8)
        if im.mode == "1":
            return np.array(im, dtype=np.uint8)
        if im.mode.startswith("I"):
            arr = np.array(im)
            if arr.min() < 0 or arr.max() > 65535:
                raise ImageReadError(f"{label}: label ids outside 0..65535")
            return arr.astype(np.uint16)
        raise ImageReadError(
            f"{label}: a label map must be a single-channel PNG (8 or 16 bit), got mode {im.mode}"
        )
    finally:
        im.close()


def read_panoptic_png(path: str | os.PathLike) -> np.ndarray:
    """Read a COCO panoptic PNG: HxW int64 segment ids ``R + 256 * G + 256**2 * B``."""
    label = os.fspath(path)
    im = _open_header(_as_stream(path, label), label)
    try:
        _load(im, label)
        if im.mode != "RGB":
            im = im.convert("RGB")
        rgb = np.asarray(im).astype(np.int64)
    finally:
        im.close()
    return rgb[..., 0] + 256 * rgb[..., 1] + 256 * 256 * rgb[..., 2]


def resolve_in_root(root: str | os.PathLike, rel: str | os.PathLike) -> str:
    """``root/rel`` as a real path, refusing anything that escapes ``root``.

    Absolute paths, ``..`` components leading outside, and symlinks pointing outside ``root``
    raise ``ValueError`` (annotation files must not read arbitrary files).
    """
    rel_s = os.fspath(rel)
    if not rel_s or "\x00" in rel_s:
        raise ValueError(f"Invalid path {rel_s!r} inside {os.fspath(root)!r}")
    if os.path.isabs(rel_s) or os.path.splitdrive(rel_s)[0]:
        raise ValueError(f"Path {rel_s!r} must be relative to {os.fspath(root)!r}")
    real_root = os.path.realpath(root)
    full = os.path.realpath(os.path.join(real_root, rel_s))
    if os.path.commonpath([real_root, full]) != real_root:
        raise ValueError(f"Path {rel_s!r} escapes the dataset root {os.fspath(root)!r}")
    return full
