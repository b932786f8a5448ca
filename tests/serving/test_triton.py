"""End to end through a real tritonserver: HTTP and gRPC, concurrency, metrics (bad input: test_bad_input.py)."""

import io
import re
import urllib.request

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


@pytest.mark.parametrize("grpc", [False, True], ids=["http", "grpc"])
def test_output_formats_are_chosen_per_request(served, grpc):
    """FORMAT/QUALITY are optional ensemble inputs: PNG (lossless) by default, JPEG and WebP on request."""
    client = Client(served.server.grpc_url if grpc else served.server.http_url, grpc=grpc)
    data = _portraits(served)[0]
    want = served.offline(data, "oil").astype(float)
    for fmt, signature, min_db in (("png", b"\x89PNG", None), ("jpeg", b"\xff\xd8\xff", 30), ("webp", b"RIFF", 30)):
        out = client.stylize(data, "oil", fmt=fmt, quality=90)
        assert out.startswith(signature), fmt
        got = np.asarray(Image.open(io.BytesIO(out)).convert("RGB")).astype(float)
        mse = np.mean((got - want) ** 2)
        assert (mse <= 1) if min_db is None else 10 * np.log10(255 ** 2 / mse) > min_db, fmt
    assert client.stylize(data, "oil").startswith(b"\x89PNG")  # no FORMAT: the repository's default
    small, large = (len(client.stylize(data, "oil", fmt="jpeg", quality=q)) for q in (20, 95))
    assert small < large
    with pytest.raises(StylepressError, match="unknown output format 'gif'"):
        client.stylize(data, "oil", fmt="gif")
    with pytest.raises(StylepressError, match="quality 0 is not between 1 and 100"):
        client.stylize(data, "oil", fmt="jpeg", quality=0)
    assert served.server.is_ready()
