"""The bad-input suite: every class of bad or unusual input, through the real tritonserver (HTTP and
gRPC) and the offline path alike. Each case asserts the message and status, that the server stays
ready, and that the next correct request is answered exactly."""

import io

import numpy as np
import pytest
import tritonclient.grpc as grpcclient
import tritonclient.http as httpclient
from conftest import raw_png
from PIL import Image
from tritonclient.utils import InferenceServerException

from stylepress import prepost
from stylepress import stylize as stylize_mod
from stylepress.errors import StylepressError
from stylepress.serving import Client

pytestmark = pytest.mark.serving


def _encode(im: Image.Image, fmt: str, **kw) -> bytes:
    buf = io.BytesIO()
    im.save(buf, format=fmt, **kw)
    return buf.getvalue()


def _huge_png_header() -> bytes:
    """A valid PNG signature and IHDR claiming 50000 x 50000 pixels, with a token of data."""
    return raw_png(50000, 50000)


def _photo(served) -> Image.Image:
    return Image.open(sorted(served.photos.iterdir())[0]).convert("RGB").resize((96, 80))


def _grey16(served) -> tuple[bytes, bytes]:
    """The photo as a 16-bit greyscale PNG, and the same as 8-bit."""
    grey = np.asarray(_photo(served).convert("L"), dtype=np.uint16)
    return _encode(Image.fromarray(grey * 257), "PNG"), _encode(Image.fromarray(grey.astype(np.uint8)), "PNG")


def _errors(served) -> dict:
    """Inputs that must be refused: name -> (image bytes, style, message)."""
    good = _encode(_photo(served), "JPEG", quality=92)
    return {
        "not an image": (b"this is not an image", "sketch", "not a valid JPEG, PNG or WebP"),
        "truncated": (good[: len(good) // 2], "sketch", "cannot decode image"),
        "empty": (b"", "sketch", "empty image payload"),
        "pixel bomb": (_huge_png_header(), "sketch", "pixel limit"),
        "unknown style": (good, "watercolour", "unknown style 'watercolour'"),
        "10 MB style": (good, "x" * 10_000_000, r"unknown style 'xxxxxxxx.* \(10000000 characters\)"),
    }


def _unusual(served) -> dict:
    """Inputs that must come back as a correct image: name -> image bytes."""
    im = _photo(served)
    rgb16 = np.asarray(im, dtype=np.uint16) * 257
    la = im.convert("LA")
    la.putalpha(200)
    return {"16-bit grey PNG": _grey16(served)[0], "16-bit RGB PNG": _encode_rgb16(rgb16),
            "grey+alpha PNG": _encode(la, "PNG"), "CMYK JPEG": _encode(im.convert("CMYK"), "JPEG", quality=95),
            "WebP": _encode(im, "WEBP", quality=90), "palette PNG": _encode(im.convert("P"), "PNG")}


def _encode_rgb16(rgb16: np.ndarray) -> bytes:
    """A 16-bit RGB PNG (Pillow cannot write one): raw rows, filter 0, big-endian samples."""
    h, w, _ = rgb16.shape
    return raw_png(w, h, 16, b"".join(b"\0" + rgb16[y].astype(">u2").tobytes() for y in range(h)))


def _decoded(png: bytes) -> np.ndarray:
    return np.asarray(Image.open(io.BytesIO(png)).convert("RGB")).astype(int)


def test_16_bit_greyscale_decodes_like_its_8_bit_version(served):
    g16, g8 = _grey16(served)
    assert np.abs(prepost.decode(g16).astype(int) - prepost.decode(g8).astype(int)).max() <= 1
    assert prepost.decode(g16).mean() < 200  # not the all-white image of before


@pytest.mark.parametrize("grpc", [False, True], ids=["http", "grpc"])
def test_every_bad_input_class_through_the_server(served, grpc):
    client = Client(served.server.grpc_url if grpc else served.server.http_url, grpc=grpc)
    good = _encode(_photo(served), "JPEG", quality=92)
    for name, (data, style, message) in _errors(served).items():
        with pytest.raises(StylepressError, match=message) as info:
            client.stylize(data, style)
        assert len(str(info.value)) < 400, name  # user input is quoted only up to a bound
        assert served.server.is_ready(), name
        assert np.abs(_decoded(client.stylize(good, "oil")) - served.offline(good, "oil")).max() <= 1, name
    for name, data in _unusual(served).items():
        got = _decoded(client.stylize(data, "sketch"))
        assert np.abs(got - served.offline(data, "sketch")).max() <= 1, name
    g16, g8 = _grey16(served)
    assert np.abs(_decoded(client.stylize(g16, "oil")) - _decoded(client.stylize(g8, "oil"))).max() <= 2


def _raw_request(lib, images: list[bytes], styles: list[bytes]):
    inputs = []
    for name, values in (("IMAGE", images), ("STYLE", styles)):
        tensor = lib.InferInput(name, [len(values), 1], "BYTES")
        tensor.set_data_from_numpy(np.array([[v] for v in values], dtype=np.object_))
        inputs.append(tensor)
    return inputs


@pytest.mark.parametrize("grpc", [False, True], ids=["http", "grpc"])
def test_status_codes_and_a_batch_error_names_the_item(served, grpc):
    """A 10 MB style name is INVALID_ARGUMENT with a short message (it was RESOURCE_EXHAUSTED on gRPC and
    a 10 MB body on HTTP); one bad image of three says which."""
    lib = grpcclient if grpc else httpclient
    client = lib.InferenceServerClient(served.server.grpc_url if grpc else served.server.http_url[7:])
    good = _encode(_photo(served), "JPEG", quality=92)
    with pytest.raises(InferenceServerException) as info:
        client.infer("tiny", _raw_request(lib, [good], [b"y" * 10_000_000]))
    assert str(info.value.status()) == ("StatusCode.INVALID_ARGUMENT" if grpc else "400")
    assert len(info.value.message()) < 400
    with pytest.raises(InferenceServerException, match="image 2 of 3: not a valid JPEG"):
        client.infer("tiny", _raw_request(lib, [good, b"garbage", good], [b"oil"] * 3))
    assert served.server.is_ready()
    result = client.infer("tiny", _raw_request(lib, [good, good], [b"oil", b"sketch"]))
    pngs = result.as_numpy("STYLED").reshape(-1)
    for png, style in zip(pngs, ("oil", "sketch"), strict=True):
        assert np.abs(_decoded(png) - served.offline(good, style)).max() <= 1


def test_every_bad_input_class_offline(served, tmp_path):
    """The same classes through `stylize --checkpoint`'s code: one-line errors, correct images."""
    teacher = served.run_dir / "teacher"
    for name, (data, style, message) in _errors(served).items():
        path = tmp_path / f"{name}.bin"
        path.write_bytes(data)
        with pytest.raises(StylepressError, match=message) as info:
            stylize_mod.run([path], tmp_path / "out.png", style, checkpoint=teacher, size=served.size)
        assert len(str(info.value)) < 400 + len(str(path)), name
    for name, data in _unusual(served).items():
        path = tmp_path / f"{name.replace(' ', '_')}.img"
        path.write_bytes(data)
        (out,) = stylize_mod.run([path], tmp_path / f"{path.stem}.png", "sketch", checkpoint=teacher,
                                 size=served.size)
        assert _decoded(out.read_bytes()).shape == np.asarray(_photo(served)).shape, name
