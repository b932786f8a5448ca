"""Pre- and post-processing around a generator, shared by offline inference and Triton's Python
backend so that both give the same pixels.

This file is copied verbatim into the Triton model repository, where it runs under another
interpreter (numpy < 2, no torch, no stylepress): it imports only numpy and Pillow.
"""

from __future__ import annotations

import io
import warnings

import numpy as np
from PIL import Image, ImageOps

FORMATS = ("JPEG", "PNG", "WEBP")
MAX_BYTES = 20 * 1024 * 1024  # default upload limit
MAX_PIXELS = 40_000_000  # default decoded-pixel limit (e.g. 8000 x 5000)
OUTPUT_FORMATS = {"png": "PNG", "jpeg": "JPEG", "webp": "WEBP"}  # what the server can return
DEFAULT_QUALITY = {"jpeg": 92, "webp": 90}
PNG_LEVEL = 1


class ImageError(ValueError):
    """Bad input image; the message is one line, fit for an error response."""


def quote(value, limit: int = 40) -> str:
    """User input in an error message, bounded: a 10 MB style name must not come back as a 10 MB error."""
    text = value.decode("utf-8", "replace") if isinstance(value, bytes) else str(value)
    return repr(text[:limit]) + (f" … ({len(text)} characters)" if len(text) > limit else "")


def decode(data: bytes, max_bytes: int = MAX_BYTES, max_pixels: int = MAX_PIXELS) -> np.ndarray:
    """Encoded JPEG/PNG/WebP bytes -> RGB uint8 HxWx3, EXIF-oriented; limits checked before decoding."""
    if not data:
        raise ImageError("empty image payload")
    if len(data) > max_bytes:
        raise ImageError(f"image is {len(data)} bytes, over the {max_bytes}-byte limit")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            im = Image.open(io.BytesIO(data), formats=FORMATS)  # reads the header only
    except Image.DecompressionBombError:
        raise ImageError(f"image dimensions are over the {max_pixels}-pixel limit") from None
    except Exception:  # Pillow raises several types for undecodable bytes
        raise ImageError("not a valid JPEG, PNG or WebP image") from None
    w, h = im.size
    if w == 0 or h == 0:
        raise ImageError(f"zero-size image ({w}x{h})")
    if w * h > max_pixels:
        raise ImageError(f"image is {w}x{h} = {w * h} pixels, over the {max_pixels}-pixel limit")
    try:
        im.load()
    except Exception as exc:  # truncated or corrupt data
        raise ImageError(f"cannot decode image: {' '.join(str(exc).split())}") from None
    im = ImageOps.exif_transpose(im)
    if im.mode in ("I", "I;16", "I;16B", "I;16L"):  # 16-bit greyscale: convert("RGB") would clip it to white
        im = Image.fromarray(np.clip(np.rint(np.asarray(im, dtype=np.float64) / 257), 0, 255).astype(np.uint8))
    if im.mode in ("RGBA", "LA", "PA") or (im.mode == "P" and "transparency" in im.info):
        rgba = im.convert("RGBA")
        im = Image.new("RGB", rgba.size, "white")
        im.paste(rgba, mask=rgba.getchannel("A"))  # transparent areas become white, not black
    return np.asarray(im.convert("RGB"))


def letterbox(rgb: np.ndarray, size: int) -> tuple[np.ndarray, np.ndarray]:
    """Fit an image into size x size keeping its aspect ratio, edge-padded.

    Returns the network input (float32 [3, size, size] in [-1, 1]) and the box
    (orig_h, orig_w, top, left, inner_h, inner_w) that `unletterbox` needs.
    """
    h, w = rgb.shape[:2]
    scale = size / max(h, w)
    ih, iw = max(1, round(h * scale)), max(1, round(w * scale))
    inner = np.asarray(Image.fromarray(rgb).resize((iw, ih), Image.BICUBIC))
    top, left = (size - ih) // 2, (size - iw) // 2
    canvas = np.pad(inner, ((top, size - ih - top), (left, size - iw - left), (0, 0)), mode="edge")
    x = canvas.transpose(2, 0, 1).astype(np.float32) / np.float32(127.5) - np.float32(1.0)
    return x, np.array([h, w, top, left, ih, iw], dtype=np.int64)


def check_box(box: np.ndarray, size: int, max_pixels: int = MAX_PIXELS) -> None:
    """A box from a caller (the postprocess model is reachable directly) within the upload limits."""
    h, w, top, left, ih, iw = (int(v) for v in np.asarray(box).reshape(-1)[:6])
    if np.asarray(box).size != 6 or min(h, w, ih, iw) < 1 or top < 0 or left < 0:
        raise ImageError("BOX must be (orig_h, orig_w, top, left, inner_h, inner_w) with positive sizes")
    if h * w > max_pixels:
        raise ImageError(f"BOX asks for {w}x{h} = {w * h} pixels, over the {max_pixels}-pixel limit")
    if top + ih > size or left + iw > size:
        raise ImageError(f"BOX's inner region does not fit the {size}x{size} network output")


def unletterbox(y: np.ndarray, box: np.ndarray) -> np.ndarray:
    """Network output (float [3, S, S] in [-1, 1]) -> RGB uint8 at the original size."""
    h, w, top, left, ih, iw = (int(v) for v in box)
    rgb = np.clip(np.rint((y.astype(np.float32) + 1) * 127.5), 0, 255).astype(np.uint8).transpose(1, 2, 0)
    inner = Image.fromarray(np.ascontiguousarray(rgb[top:top + ih, left:left + iw]))
    return np.asarray(inner.resize((w, h), Image.BICUBIC))


def encode(rgb: np.ndarray, fmt: str = "png", quality: int | None = None) -> bytes:
    """RGB uint8 -> PNG (lossless, zlib level 1: about 4x faster than Pillow's default 6 for a few % more
    bytes), JPEG or WebP at `quality` (default 92 / 90)."""
    if fmt not in OUTPUT_FORMATS:
        raise ImageError(f"unknown output format {quote(fmt)}: png, jpeg or webp")
    if quality is not None and not 1 <= quality <= 100:
        raise ImageError(f"output quality {quality} is not between 1 and 100")
    buf = io.BytesIO()
    try:
        if fmt == "png":
            Image.fromarray(rgb).save(buf, format="PNG", compress_level=PNG_LEVEL)
        else:
            Image.fromarray(rgb).save(buf, format=OUTPUT_FORMATS[fmt], quality=quality or DEFAULT_QUALITY[fmt])
    except (OSError, ValueError) as exc:  # e.g. WebP over 16383 px, JPEG over 65500 px wide
        h, w = rgb.shape[:2]
        raise ImageError(f"cannot encode a {w}x{h} image as {fmt}: {' '.join(str(exc).split())}") from None
    return buf.getvalue()
