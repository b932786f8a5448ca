"""Stylize through a running Triton server: `Client(url).stylize(image_bytes, style)` -> PNG bytes.

HTTP or gRPC through tritonclient; several images go out as concurrent requests so that the
server's dynamic batcher can group them.
"""

from __future__ import annotations

import json
from concurrent.futures import Future

import numpy as np
import tritonclient.grpc as grpcclient
import tritonclient.http as httpclient
from tritonclient.utils import InferenceServerException

from stylepress.errors import StylepressError


class Client:
    def __init__(self, url: str, model: str | None = None, grpc: bool | None = None, concurrency: int = 8,
                 timeout: float = 120.0):
        scheme, _, address = url.rpartition("://")
        self.grpc = grpc if grpc is not None else scheme == "grpc"
        self.timeout = timeout
        try:
            if self.grpc:
                self._client = grpcclient.InferenceServerClient(address)
            else:
                self._client = httpclient.InferenceServerClient(address, concurrency=concurrency,
                                                                 connection_timeout=timeout, network_timeout=timeout)
            live = self._client.is_server_ready()
        except (InferenceServerException, OSError) as exc:
            raise StylepressError(f"no Triton server at {url}: {_message(exc)}") from None
        if not live:
            raise StylepressError(f"the Triton server at {url} is not ready")
        self._lib = grpcclient if self.grpc else httpclient
        self.model = model or self._find_ensemble()
        self.styles = self._styles()

    def stylize(self, image: bytes, style: str | None = None) -> bytes:
        return self.stylize_many([image], style)[0]

    def stylize_many(self, images: list[bytes], style: str | None = None) -> list[bytes]:
        """One request per image, all in flight at once; results in input order. A rejected image
        raises StylepressError with the server's message."""
        pending = [self._submit(image, style) for image in images]
        results = []
        for i, wait in enumerate(pending):
            try:
                results.append(wait().as_numpy("STYLED").reshape(-1)[0])
            except InferenceServerException as exc:
                raise StylepressError(f"image {i + 1}: the server rejected it: {_message(exc)}") from None
        return results

    def _submit(self, image: bytes, style: str | None):
        """Send one request; return a function that waits for its result."""
        inputs = [self._bytes_input("IMAGE", image)]
        if self.styles is not None:
            inputs.append(self._bytes_input("STYLE", (style or self.styles[0]).encode()))
        outputs = [self._lib.InferRequestedOutput("STYLED")]
        if not self.grpc:  # gevent-based: results are collected on this thread
            request = self._client.async_infer(self.model, inputs, outputs=outputs)
            return lambda: request.get_result(timeout=self.timeout)
        future: Future = Future()

        def done(result, error):
            future.set_exception(error) if error is not None else future.set_result(result)
        self._client.async_infer(self.model, inputs, done, outputs=outputs, client_timeout=self.timeout)
        return lambda: future.result(timeout=self.timeout)

    def statistics(self, model: str) -> dict:
        """Triton's statistics for one model (cumulative counters), as a dict on both protocols."""
        if self.grpc:
            from google.protobuf.json_format import MessageToDict

            stats = MessageToDict(self._client.get_inference_statistics(model), preserving_proto_field_name=True)
        else:
            stats = self._client.get_inference_statistics(model)
        return stats["model_stats"][0]

    def _bytes_input(self, name: str, data: bytes):
        tensor = self._lib.InferInput(name, [1, 1], "BYTES")
        tensor.set_data_from_numpy(np.array([[data]], dtype=np.object_))
        return tensor

    def _config(self, model: str) -> dict:
        if self.grpc:  # as_json gives the protobuf as a dict, wrapped in {"config": ...}
            return self._client.get_model_config(model, as_json=True)["config"]
        return self._client.get_model_config(model)

    def _find_ensemble(self) -> str:
        if self.grpc:
            models = self._client.get_model_repository_index(as_json=True).get("models", [])
        else:
            models = self._client.get_model_repository_index()
        names = [m["name"] for m in models]
        ensembles = [n for n in names if self._config(n).get("platform") == "ensemble"]
        if len(ensembles) != 1:
            raise StylepressError(f"cannot tell which model to call (ensembles: {ensembles or 'none'}): pass --model")
        return ensembles[0]

    def _styles(self) -> list[str] | None:
        """The style names, from the preprocess model's parameters; None for a single-style model."""
        inputs = [i["name"] for i in self._config(self.model).get("input", [])]
        if "STYLE" not in inputs:
            return None
        params = self._config(f"{self.model}_preprocess").get("parameters", {})
        return json.loads(params["styles"]["string_value"])


def _message(exc: Exception) -> str:
    text = exc.message() if isinstance(exc, InferenceServerException) else str(exc)
    return " ".join(str(text).split())
