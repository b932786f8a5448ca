"""The pre/post-processing shared by offline inference and Triton's Python backend."""

import io

import numpy as np
import pytest
from conftest import raw_png
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
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
    with pytest.raises(prepost.ImageError):
        prepost.decode(raw_png(0, 10, pixels=b""))


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


def _seeds() -> list[bytes]:
    """Small valid images of every decoded kind: the fuzz mutates these."""
    rng = np.random.default_rng(0)
    im = Image.fromarray(rng.integers(0, 255, (24, 32, 3), dtype=np.uint8))
    grey16 = Image.fromarray((rng.integers(0, 65535, (24, 32))).astype(np.uint16))
    exif = Image.Exif()
    exif[0x0112] = 6
    return [_encode(im, "JPEG", quality=90), _encode(im, "JPEG", exif=exif.tobytes()), _encode(im, "PNG"),
            _encode(im.convert("RGBA"), "PNG"), _encode(grey16, "PNG"), _encode(im, "WEBP", quality=80),
            _encode(im.convert("CMYK"), "JPEG"), _encode(im.convert("P"), "PNG")]


SEEDS = _seeds()


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(seed=st.integers(0, len(SEEDS) - 1), edits=st.lists(st.tuples(st.integers(0, 1 << 16), st.integers(0, 255)),
                                                          max_size=6),
       cut=st.one_of(st.none(), st.integers(0, 1 << 16)))
def test_decode_never_crashes_on_mutated_images(seed, edits, cut):
    """Mutated JPEG/PNG/WebP bytes: an ImageError with a one-line message, or a correct RGB image."""
    data = bytearray(SEEDS[seed])
    for pos, value in edits:
        data[pos % len(data)] = value
    if cut is not None:
        data = data[: cut % (len(data) + 1)]
    try:
        rgb = prepost.decode(bytes(data), max_pixels=1 << 20)
    except prepost.ImageError as exc:
        assert "\n" not in str(exc) and len(str(exc)) < 400
        return
    assert rgb.dtype == np.uint8 and rgb.ndim == 3 and rgb.shape[2] == 3 and rgb.shape[0] * rgb.shape[1] <= 1 << 20
