"""Secure serving against the real tritonserver and the real nginx: keys on Triton's APIs (HTTP and
gRPC), shared memory closed by default, keys kept out of `ps` and the log, and the proxy in front."""

import io
import subprocess
import urllib.request

import numpy as np
import pytest
import tritonclient.grpc as grpcclient
import tritonclient.http as httpclient
from conftest import run_cli
from PIL import Image
from tritonclient.utils import InferenceServerException

from stylepress import serving
from stylepress.errors import StylepressError
from stylepress.serving.proxy import Proxy

ADMIN, INFERENCE = "admin-" + "a1" * 16, "infer-" + "b2" * 16


def _photo(served) -> bytes:
    buf = io.BytesIO()
    Image.open(sorted(served.photos.iterdir())[0]).convert("RGB").save(buf, format="JPEG", quality=92)
    return buf.getvalue()


def _exact(served, data: bytes, png: bytes, style: str) -> None:
    got = np.asarray(Image.open(io.BytesIO(png)).convert("RGB")).astype(int)
    assert np.abs(got - served.offline(data, style).astype(int)).max() <= 1


def _calls(client, grpc: bool) -> dict:
    """One call per Triton API category, as tritonclient makes it (headers added by the caller)."""
    kw = {"as_json": True} if grpc else {}
    return {
        "model-repository": lambda h: client.get_model_repository_index(headers=h, **kw),
        "model-config": lambda h: client.get_model_config("tiny", headers=h, **kw),
        "shared-memory": lambda h: client.get_system_shared_memory_status(headers=h, **kw),
        "statistics": lambda h: client.get_inference_statistics("tiny", headers=h, **kw),
        "trace": lambda h: client.get_trace_settings(headers=h, **kw),
        "logging": lambda h: client.get_log_settings(headers=h, **kw),
        "metadata": lambda h: client.get_model_metadata("tiny", headers=h, **kw),
    }


def _header(name: str, grpc: bool) -> str:
    return f"triton-grpc-protocol-{name}" if grpc else name


@pytest.fixture(scope="module")
def tls(tmp_path_factory):
    folder = tmp_path_factory.mktemp("tls")
    cert, key = folder / "tls.crt", folder / "tls.key"
    subprocess.run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", key, "-out", cert,
                    "-days", "1", "-subj", "/CN=127.0.0.1", "-addext", "subjectAltName=IP:127.0.0.1"],
                   check=True, capture_output=True)
    return cert, key


@pytest.fixture(scope="module")
def guarded(served, tls, tmp_path_factory):
    """The served repository behind an admin key and an inference key, gRPC over TLS."""
    log = tmp_path_factory.mktemp("guarded") / "tritonserver.log"
    access = serving.Access(ADMIN, INFERENCE, grpc_cert=tls[0], grpc_key=tls[1])
    with serving.local_server(served.repo, log, access=access) as server:
        server.wait_ready()
        yield server


@pytest.mark.parametrize("grpc", [False, True], ids=["http", "grpc"])
def test_without_the_key_every_restricted_api_is_refused_and_with_it_every_api_works(served, guarded, tls, grpc):
    ca = str(tls[0])
    if grpc:
        client = grpcclient.InferenceServerClient(guarded.grpc_url, ssl=True, root_certificates=ca)
        with pytest.raises(StylepressError, match="no Triton server"):  # plain gRPC to a TLS port
            serving.Client(guarded.grpc_url, model="tiny", grpc=True, key=INFERENCE, timeout=5)
    else:
        client = httpclient.InferenceServerClient(guarded.http_url.removeprefix("http://"))
    refused = "StatusCode.UNAVAILABLE" if grpc else "403"
    assert client.is_server_live() and client.is_server_ready()  # health stays open for probes
    admin, inference = {_header("admin-key", grpc): ADMIN}, {_header("inference-key", grpc): INFERENCE}
    for api, call in _calls(client, grpc).items():
        for headers in ({}, inference if api != "metadata" else admin):
            with pytest.raises(InferenceServerException) as info:
                call(headers)
            assert str(info.value.status()) == refused, api
        assert call(inference if api == "metadata" else admin) is not None, api  # no exception: allowed
    # inference needs the inference key; the stylepress client sends it in the protocol's header
    url = f"grpcs://{guarded.grpc_url}" if grpc else guarded.http_url
    with pytest.raises(StylepressError, match="inference-key"):
        serving.Client(url, model="tiny", tls_ca=ca)
    keyed = serving.Client(url, model="tiny", key=INFERENCE, tls_ca=ca)
    assert keyed.styles == []  # the style names are in the model configs, behind the admin key
    with pytest.raises(StylepressError, match="name a style"):
        keyed.stylize(_photo(served))
    _exact(served, _photo(served), keyed.stylize(_photo(served), "oil"), "oil")
    both = serving.Client(url, key=INFERENCE, admin_key=ADMIN, tls_ca=ca)
    assert both.model == "tiny" and both.styles == ["sketch", "oil"]


def test_no_key_text_in_ps_or_the_server_log(guarded):
    ps = subprocess.run(["ps", "-ef", "-ww"], capture_output=True, text=True, check=True).stdout  # full lines
    line = next(line for line in ps.splitlines() if f"--http-port={guarded.http_port}" in line)
    assert "--http-restricted-api=" in line and "@STYLEPRESS_KEY_ADMIN_KEY@" in line
    for text in (ps, guarded.log_path.read_text(errors="replace")):
        assert ADMIN not in text and INFERENCE not in text
    environ = open(f"/proc/{guarded.process.pid}/environ", "rb").read()
    assert ADMIN.encode() not in environ and b"LD_PRELOAD" not in environ


def test_shared_memory_registration_is_refused_by_default(served):
    """The default server: admin APIs other than shared memory stay open on loopback."""
    client = httpclient.InferenceServerClient(served.server.http_url.removeprefix("http://"))
    assert client.get_model_config("tiny")["name"] == "tiny"
    with pytest.raises(InferenceServerException) as info:
        client.register_system_shared_memory("own", "/triton_python_backend_shm_region_1", 1 << 20)
    assert info.value.status() == "403"
    grpc = grpcclient.InferenceServerClient(served.server.grpc_url)
    with pytest.raises(InferenceServerException, match="restricted"):
        grpc.register_system_shared_memory("own", "/triton_python_backend_shm_region_1", 1 << 20)
    assert served.server.is_ready()


def test_composing_models_keep_the_ensembles_limits(served):
    """Callable directly, the generator takes only the serving size and postprocess refuses a box over
    the pixel limit (it returned an 8000x8000 PNG before)."""
    client = httpclient.InferenceServerClient(served.server.http_url.removeprefix("http://"))

    def tensor(name, value, dtype):
        t = httpclient.InferInput(name, list(value.shape), dtype)
        t.set_data_from_numpy(value)
        return t
    s = served.size
    big = np.zeros((1, 3, 2 * s, 2 * s), np.float32)
    with pytest.raises(InferenceServerException, match="unexpected shape|shape"):
        client.infer("tiny_generator", [tensor("image", big, "FP32"), tensor("style", np.zeros((1, 1), np.int64),
                                                                            "INT64")])
    raw = np.zeros((1, 3, s, s), np.float32)
    box = np.array([[8000, 8000, 0, 0, s, s]], np.int64)
    with pytest.raises(InferenceServerException, match="pixel limit") as info:
        client.infer("tiny_postprocess", [tensor("STYLED_RAW", raw, "FP32"), tensor("BOX", box, "INT64")])
    assert info.value.status() == "400"
    ok = np.array([[30, 20, 0, 0, s, s]], np.int64)
    png = client.infer("tiny_postprocess", [tensor("STYLED_RAW", raw, "FP32"), tensor("BOX", ok, "INT64")])
    assert Image.open(io.BytesIO(png.as_numpy("STYLED").reshape(-1)[0])).size == (20, 30)


def _post(url: str, body: bytes, headers: dict, cafile=None) -> int:
    import ssl

    context = ssl.create_default_context(cafile=cafile) if cafile else None
    try:
        with urllib.request.urlopen(urllib.request.Request(url, data=body, headers=headers), timeout=30,
                                    context=context) as r:
            return r.status
    except urllib.error.HTTPError as exc:
        return exc.code


def test_the_proxy_refuses_what_crashes_triton_and_passes_keyed_inference(served, tmp_path, tls):
    """Triton with only admin APIs restricted (inference open on loopback), nginx in front with TLS and
    the inference key. One >= 4 MiB form-encoded POST crashed tritonserver; the proxy refuses it."""
    access = serving.Access(admin_key=ADMIN)
    with serving.local_server(served.repo, tmp_path / "tritonserver.log", access=access) as server:
        server.wait_ready()
        photo = _photo(served)
        _exact(served, photo, serving.Client(server.http_url, model="tiny").stylize(photo, "oil"), "oil")
        port = serving.free_port()
        with Proxy(server.http_url, f"127.0.0.1:{port}", ["tiny"], 20 << 20, INFERENCE, tls) as proxy:
            base, ca = f"https://127.0.0.1:{port}", str(tls[0])
            infer = f"{base}/v2/models/tiny/infer"
            form = {"Content-Type": "application/x-www-form-urlencoded", "inference-key": INFERENCE}
            assert _post(infer, b"a=" + b"x" * (4 << 20), form, ca) == 415
            assert _post(infer, b"x" * (21 << 20), {"inference-key": INFERENCE}, ca) == 413  # over the upload limit
            assert server.is_ready()
            assert _post(infer, b"{}", {"Content-Type": "application/json"}, ca) == 401  # no key
            for wrong in (INFERENCE.upper(), INFERENCE[:-1], INFERENCE + "x"):  # exact, case-sensitive match
                assert _post(infer, b"{}", {"inference-key": wrong, "Content-Type": "application/json"}, ca) == 401
            assert _post(f"{base}/v2/repository/index", b"{}", {"inference-key": INFERENCE}, ca) == 404
            assert _post(f"{base}/v2/models/tiny_postprocess/infer", b"{}", {"inference-key": INFERENCE}, ca) == 404
            with pytest.raises(StylepressError):
                serving.Client(base, model="tiny", tls_ca=ca).stylize(photo, "oil")
            client = serving.Client(base, model="tiny", key=INFERENCE, tls_ca=ca)
            _exact(served, photo, client.stylize(photo, "sketch"), "sketch")
            assert INFERENCE not in (proxy.folder / "nginx.conf").read_text()
            assert (proxy.folder / "inference-key.map").stat().st_mode & 0o077 == 0
        assert server.is_ready()


def test_cli_refuses_exposed_servers_without_keys_and_writes_a_proxy_config(served, tmp_path):
    result = run_cli("serve", served.repo, "--address", "0.0.0.0")
    assert result.returncode == 2 and "--inference-key-file" in result.stderr and result.stderr.count("\n") == 1
    weak = tmp_path / "weak.key"
    weak.write_text("short\n")
    result = run_cli("serve", served.repo, "--admin-key-file", weak)
    assert result.returncode == 2 and "16-512 characters" in result.stderr and "short" not in result.stderr
    key = tmp_path / "inference.key"
    key.write_text(INFERENCE + "\n")
    result = run_cli("proxy", served.repo, "--key-file", key, "--write", tmp_path / "deploy")
    assert result.returncode == 0, result.stderr
    conf = (tmp_path / "deploy" / "nginx.conf").read_text()
    assert INFERENCE not in conf and "client_max_body_size" in conf and "tiny" in conf
    result = run_cli("proxy", served.repo, "--listen", "0.0.0.0:8443", "--key-file", key)
    assert result.returncode == 2 and "--tls-cert" in result.stderr


def test_a_server_exposed_without_an_admin_key_closes_every_admin_api():
    args, keys = serving.Access(admin_open=False).server_args()
    restricted = next(a for a in args if a.startswith("--http-restricted-api="))
    assert restricted.split("=", 1)[1].split(":")[0].split(",") == list(serving.runtime.ADMIN_APIS)
    args, _ = serving.Access().server_args()  # loopback default: only shared memory
    assert next(a for a in args if a.startswith("--http-restricted-api=")).startswith(
        "--http-restricted-api=shared-memory:")
