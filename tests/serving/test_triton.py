"""End to end through a real tritonserver: HTTP and gRPC, concurrency, bad input, metrics."""

import io
import re
import struct
import urllib.request
import zlib

import numpy as np
import pytest
from conftest import run_cli
from PIL import Image

from stylepress.errors import StylepressError
from stylepress.serving import Client


def _png(rgb: np.ndarray) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(rgb).save(buf, format="PNG")
    return buf.getvalue()


def _decoded(png: bytes) -> np.ndarray:
    im = Image.open(io.BytesIO(png))
    assert im.format == "PNG"
    return np.asarray(im.convert("RGB"))


def _portraits(served) -> list[bytes]:
    """The real portraits, plus a non-square crop of one, as JPEG."""
    photos = [Image.open(p).convert("RGB") for p in sorted(served.photos.iterdir())]
    photos.append(photos[0].crop((20, 10, 20 + 301, 10 + 187)))
    out = []
    for im in photos:
        buf = io.BytesIO()
        im.save(buf, format="JPEG", quality=92)
        out.append(buf.getvalue())
    return out


def _assert_matches_offline(served, data: bytes, png: bytes, style: str) -> None:
    got, want = _decoded(png), served.offline(data, style)
    assert got.shape == np.asarray(Image.open(io.BytesIO(data))).shape  # the original size
    assert np.abs(got.astype(int) - want.astype(int)).max() <= 1


def _metric(served, name: str, model: str) -> float:
    text = urllib.request.urlopen(served.server.metrics_url, timeout=10).read().decode()
    match = re.search(rf'^{name}{{model="{model}",version="1"}} (\S+)$', text, re.M)
    return float(match.group(1)) if match else 0.0


@pytest.mark.parametrize("grpc", [False, True], ids=["http", "grpc"])
def test_served_png_equals_offline_onnxruntime_at_the_original_size(served, grpc):
    client = Client(served.server.grpc_url if grpc else served.server.http_url, grpc=grpc)
    assert client.model == "tiny" and client.styles == ["sketch", "oil"]
    for data in _portraits(served):
        for style in ("sketch", "oil"):
            _assert_matches_offline(served, data, client.stylize(data, style), style)


@pytest.mark.parametrize("grpc", [False, True], ids=["http", "grpc"])
def test_concurrent_requests_are_batched_and_still_exact(served, grpc):
    client = Client(served.server.grpc_url if grpc else served.server.http_url, grpc=grpc, concurrency=16)
    images = _portraits(served) * 4  # 12 requests in flight at once
    executions = _metric(served, "nv_inference_exec_count", "tiny_generator")
    requests = _metric(served, "nv_inference_request_success", "tiny_generator")
    pngs = client.stylize_many(images, "oil")
    for data, png in zip(images, pngs, strict=True):
        _assert_matches_offline(served, data, png, "oil")
    executions = _metric(served, "nv_inference_exec_count", "tiny_generator") - executions
    requests = _metric(served, "nv_inference_request_success", "tiny_generator") - requests
    assert requests == len(images)
    assert executions < requests  # the dynamic batcher ran several requests per execution


def _huge_png_header() -> bytes:
    """A valid PNG signature and IHDR claiming 50000 x 50000 pixels, with a token of data."""
    def chunk(kind: bytes, body: bytes) -> bytes:
        return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))
    ihdr = struct.pack(">IIBBBBB", 50000, 50000, 8, 2, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(b"\0" * 100)) + \
        chunk(b"IEND", b"")


@pytest.mark.parametrize("grpc", [False, True], ids=["http", "grpc"])
def test_bad_inputs_get_clear_errors_and_the_server_keeps_serving(served, grpc):
    client = Client(served.server.grpc_url if grpc else served.server.http_url, grpc=grpc)
    good = _portraits(served)[0]
    cases = {
        b"this is not an image": ("sketch", "not a valid JPEG, PNG or WebP"),
        good[: len(good) // 2]: ("sketch", "cannot decode image"),  # truncated JPEG
        b"": ("sketch", "empty image payload"),
        _huge_png_header(): ("sketch", "pixel limit"),
        good: ("watercolour", "unknown style 'watercolour'"),
    }
    for data, (style, message) in cases.items():
        with pytest.raises(StylepressError, match=message):
            client.stylize(data, style)
        assert served.server.is_ready()
    _assert_matches_offline(served, good, client.stylize(good, "oil"), "oil")


def test_bad_input_is_a_400_over_http(served):
    import tritonclient.http as httpclient
    from tritonclient.utils import InferenceServerException

    client = httpclient.InferenceServerClient(served.server.http_url.removeprefix("http://"))
    inputs = []
    for name, value in (("IMAGE", b"garbage"), ("STYLE", b"oil")):
        tensor = httpclient.InferInput(name, [1, 1], "BYTES")
        tensor.set_data_from_numpy(np.array([[value]], dtype=np.object_))
        inputs.append(tensor)
    with pytest.raises(InferenceServerException) as info:
        client.infer("tiny", inputs)
    assert info.value.status() == "400"


def test_metrics_count_the_requests_sent(served):
    client = Client(served.server.http_url)
    before = _metric(served, "nv_inference_request_success", "tiny")
    client.stylize_many(_portraits(served)[:2], "sketch")
    assert _metric(served, "nv_inference_request_success", "tiny") - before == 2


def test_stylize_cli_through_the_server_writes_pngs(served, tmp_path):
    photos = sorted(served.photos.iterdir())
    out = tmp_path / "out"
    result = run_cli("stylize", "--url", served.server.http_url, *photos, "-o", out, "--style", "oil")
    assert result.returncode == 0, result.stderr
    for p in photos:
        _assert_matches_offline(served, p.read_bytes(), (out / f"{p.stem}.png").read_bytes(), "oil")
    result = run_cli("stylize", "--url", served.server.grpc_url, "--grpc", photos[0], "-o", tmp_path / "x.png",
                     "--style", "nope")
    assert result.returncode == 2 and "unknown style 'nope'" in result.stderr
    assert result.stderr.count("\n") == 1
