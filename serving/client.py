"""Stylize through a running Triton server: `Client(url).stylize(image_bytes, style)` -> PNG bytes.

HTTP or gRPC through tritonclient; several images go out as concurrent requests so that the
server's dynamic batcher can group them. Keys go in the header each protocol wants (runtime.Access):
with only the inference key the model and its styles are found from metadata, which needs no admin key.
"""

from __future__ import annotations

import json
from concurrent.futures import Future

import numpy as np
import tritonclient.grpc as grpcclient
import tritonclient.http as httpclient
from tritonclient.utils import InferenceServerException

from stylepress.errors import StylepressError

from .runtime import ADMIN_HEADER, GRPC_HEADER, INFERENCE_HEADER


class Client:
    def __init__(self, url: str, model: str | None = None, grpc: bool | None = None, concurrency: int = 8,
                 timeout: float = 120.0, key: str | None = None, admin_key: str | None = None,
                 tls_ca: str | None = None):
        scheme, _, address = url.rpartition("://")
        self.grpc = grpc if grpc is not None else scheme in ("grpc", "grpcs")
        self.timeout, self.url = timeout, url
        headers = {INFERENCE_HEADER: key, ADMIN_HEADER: admin_key}
        self._headers = {GRPC_HEADER.format(h) if self.grpc else h: v for h, v in headers.items() if v}
        try:
            if self.grpc:
                self._client = grpcclient.InferenceServerClient(address, ssl=scheme == "grpcs" or tls_ca is not None,
                                                                 root_certificates=tls_ca)
            else:
                tls = {}
                if scheme == "https":  # verified (tritonclient's own default skips verification)
                    import gevent.ssl

                    tls = dict(ssl=True, ssl_context_factory=gevent.ssl.create_default_context,
                               ssl_options={"ca_certs": tls_ca} if tls_ca else {})
                self._client = httpclient.InferenceServerClient(address, concurrency=concurrency,
                                                                 connection_timeout=timeout, network_timeout=timeout,
                                                                 **tls)
            live = self._client.is_server_ready(headers=self._headers)
        except (InferenceServerException, OSError) as exc:
            raise StylepressError(f"no Triton server at {url}: {_message(exc)}") from None
        if not live:
            raise StylepressError(f"the Triton server at {url} is not ready")
        self._lib = grpcclient if self.grpc else httpclient
        self.model = model or self._find_ensemble()
        self.styles = self._styles()

    def close(self) -> None:
        """Close the connections. A server's graceful shutdown waits for open HTTP connections (Triton:
        up to its exit timeout, 30 s), so whoever stops a server closes its clients first."""
        self._client.close()

    def __enter__(self) -> Client:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def stylize(self, image: bytes, style: str | None = None, fmt: str | None = None,
                quality: int | None = None) -> bytes:
        return self.stylize_many([image], style, fmt, quality)[0]

    def stylize_many(self, images: list[bytes], style: str | None = None, fmt: str | None = None,
                     quality: int | None = None) -> list[bytes]:
        """One request per image, all in flight at once; results in input order, encoded as `fmt` (png,
        jpeg, webp; default: the repository's) at `quality`. A rejected image raises StylepressError
        with the server's message."""
        pending = [self._submit(image, style, fmt, quality) for image in images]
        results = []
        for i, wait in enumerate(pending):
            try:
                results.append(wait().as_numpy("STYLED").reshape(-1)[0])
            except InferenceServerException as exc:
                raise StylepressError(f"image {i + 1}: the server rejected it: {_message(exc)}") from None
        return results

    def _submit(self, image: bytes, style: str | None, fmt: str | None = None, quality: int | None = None):
        """Send one request; return a function that waits for its result."""
        inputs = [self._bytes_input("IMAGE", image)]
        if fmt is not None:
            inputs.append(self._bytes_input("FORMAT", fmt.encode()))
        if quality is not None:
            tensor = self._lib.InferInput("QUALITY", [1, 1], "INT32")
            tensor.set_data_from_numpy(np.array([[quality]], dtype=np.int32))
            inputs.append(tensor)
        if self.styles is not None:
            if style is None and not self.styles:
                raise StylepressError(f"the server at {self.url} shows its style names only to admin-key holders: "
                                      "name a style")
            inputs.append(self._bytes_input("STYLE", (style or self.styles[0]).encode()))
        outputs = [self._lib.InferRequestedOutput("STYLED")]
        if not self.grpc:  # gevent-based: results are collected on this thread
            request = self._client.async_infer(self.model, inputs, outputs=outputs, headers=self._headers)
            return lambda: request.get_result(timeout=self.timeout)
        future: Future = Future()

        def done(result, error):
            future.set_exception(error) if error is not None else future.set_result(result)
        self._client.async_infer(self.model, inputs, done, outputs=outputs, client_timeout=self.timeout,
                                 headers=self._headers)
        return lambda: future.result(timeout=self.timeout)

    def statistics(self, model: str) -> dict:
        """Triton's statistics for one model (cumulative counters), as a dict on both protocols."""
        if self.grpc:
            from google.protobuf.json_format import MessageToDict

            stats = MessageToDict(self._client.get_inference_statistics(model, headers=self._headers),
                                  preserving_proto_field_name=True)
        else:
            stats = self._client.get_inference_statistics(model, headers=self._headers)
        return stats["model_stats"][0]

    def _bytes_input(self, name: str, data: bytes):
        tensor = self._lib.InferInput(name, [1, 1], "BYTES")
        tensor.set_data_from_numpy(np.array([[data]], dtype=np.object_))
        return tensor

    def _config(self, model: str) -> dict:
        if self.grpc:  # as_json gives the protobuf as a dict, wrapped in {"config": ...}
            return self._client.get_model_config(model, as_json=True, headers=self._headers)["config"]
        return self._client.get_model_config(model, headers=self._headers)

    def _find_ensemble(self) -> str:
        try:
            if self.grpc:
                models = self._client.get_model_repository_index(as_json=True, headers=self._headers).get("models", [])
            else:
                models = self._client.get_model_repository_index(headers=self._headers)
        except InferenceServerException as exc:
            raise StylepressError(f"the server at {self.url} does not list its models ({_message(exc)}): pass "
                                  "--model") from None
        names = [m["name"] for m in models]
        ensembles = [n for n in names if self._config(n).get("platform") == "ensemble"]
        if len(ensembles) != 1:
            raise StylepressError(f"cannot tell which model to call (ensembles: {ensembles or 'none'}): pass --model")
        return ensembles[0]

    def _styles(self) -> list[str] | None:
        """The style names, from the preprocess model's parameters; None for a single-style model; [] when
        only an admin-key holder may read them (the caller then names the style)."""
        try:
            if self.grpc:
                meta = self._client.get_model_metadata(self.model, as_json=True, headers=self._headers)
            else:
                meta = self._client.get_model_metadata(self.model, headers=self._headers)
        except InferenceServerException as exc:
            raise StylepressError(f"model {self.model!r} at {self.url}: {_message(exc)}") from None
        if "STYLE" not in [i["name"] for i in meta.get("inputs", [])]:
            return None
        try:
            params = self._config(f"{self.model}_preprocess").get("parameters", {})
        except InferenceServerException:  # the model configs are behind the admin key
            return []
        return json.loads(params["styles"]["string_value"])


def _message(exc: Exception) -> str:
    text = exc.message() if isinstance(exc, InferenceServerException) else str(exc)
    return " ".join(str(text).split())
