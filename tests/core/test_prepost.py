"""The pre/post-processing shared by offline inference and Triton's Python backend."""

import io
import struct
import zlib

import numpy as np
import pytest
from PIL import Image

from stylepress import prepost


def _encode(im: Image.Image, fmt: str = "PNG", **kw) -> bytes:
    buf = io.BytesIO()
    im.save(buf, format=fmt, **kw)
    return buf.getvalue()


def test_decode_applies_exif_orientation():
    im = Image.new("RGB", (40, 20), "red")
    exif = Image.Exif()
    exif[0x0112] = 6  # rotate 90° on display
    rgb = prepost.decode(_encode(im, "JPEG", exif=exif))
    assert rgb.shape == (40, 20, 3)


@pytest.mark.parametrize("mode", ["L", "RGBA", "LA", "P"])
def test_decode_gives_rgb_and_composites_transparency_on_white(mode):
    im = Image.new("RGBA", (8, 8), (0, 0, 0, 0)).convert(mode) if mode != "P" else Image.new("P", (8, 8))
    rgb = prepost.decode(_encode(im))
    assert rgb.shape == (8, 8, 3) and rgb.dtype == np.uint8
    if mode in ("RGBA", "LA"):
        assert (rgb == 255).all()


@pytest.mark.parametrize("data, limits, message", [
    (b"", {}, "empty image payload"),
    (b"\x00" * 100, {}, "not a valid JPEG, PNG or WebP"),
    (_encode(Image.new("RGB", (10, 10)), "BMP"), {}, "not a valid JPEG, PNG or WebP"),
    (_encode(Image.new("RGB", (300, 200)), "PNG"), {"max_pixels": 50_000}, "60000 pixels, over the 50000"),
    (b"x" * 2048, {"max_bytes": 1024}, "over the 1024-byte limit"),
])
def test_decode_rejects_bad_input_with_one_line(data, limits, message):
    with pytest.raises(prepost.ImageError, match=message) as info:
        prepost.decode(data, **limits)
    assert "\n" not in str(info.value)


def test_zero_size_png_is_rejected():
    def chunk(kind: bytes, body: bytes) -> bytes:
        return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))
    data = b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", 0, 10, 8, 2, 0, 0, 0)) + chunk(b"IEND", b"")
    with pytest.raises(prepost.ImageError):
        prepost.decode(data)


def test_truncated_jpeg_is_rejected():
    data = _encode(Image.effect_noise((64, 64), 50).convert("RGB"), "JPEG")
    with pytest.raises(prepost.ImageError, match="cannot decode"):
        prepost.decode(data[: len(data) // 2])


@pytest.mark.parametrize("h, w", [(100, 100), (90, 160), (301, 187), (60, 500)])
def test_letterbox_then_unletterbox_restores_size_and_content(h, w):
    rng = np.random.default_rng(0)
    small = rng.integers(0, 256, (8, 8, 3), dtype=np.uint8)
    rgb = np.asarray(Image.fromarray(small).resize((w, h), Image.BILINEAR))  # smooth, so resampling is mild
    x, box = prepost.letterbox(rgb, 128)
    assert x.shape == (3, 128, 128) and x.dtype == np.float32 and -1 <= x.min() and x.max() <= 1
    back = prepost.unletterbox(x, box)  # an identity "network"
    assert back.shape == rgb.shape
    assert np.abs(back.astype(int) - rgb.astype(int)).mean() < 12
