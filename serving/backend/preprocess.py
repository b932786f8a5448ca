"""Triton Python backend: encoded image bytes [+ style name] -> letterboxed network input.

Runs inside Triton's Python-backend stub (numpy < 2, no torch); `prepost.py` is copied beside it.
Bad input gets an INVALID_ARG error response for that request only; the server stays up.
"""

import json
import os
import sys

import numpy as np
import triton_python_backend_utils as pb_utils

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import prepost  # noqa: E402


class TritonPythonModel:
    def initialize(self, args):
        params = {k: v["string_value"] for k, v in json.loads(args["model_config"])["parameters"].items()}
        self.size = int(params["resolution"])
        self.styles = json.loads(params["styles"])
        self.max_bytes, self.max_pixels = int(params["max_bytes"]), int(params["max_pixels"])

    def execute(self, requests):
        return [self._one(request) for request in requests]

    def _one(self, request):
        try:
            images = pb_utils.get_input_tensor_by_name(request, "IMAGE").as_numpy().reshape(-1)
            inputs, boxes = [], []
            for i, data in enumerate(images):
                try:
                    x, box = prepost.letterbox(prepost.decode(bytes(data), self.max_bytes, self.max_pixels), self.size)
                except prepost.ImageError as exc:  # one response per request: say which image failed
                    raise prepost.ImageError(f"image {i + 1} of {len(images)}: {exc}" if len(images) > 1
                                             else str(exc)) from None
                inputs.append(x)
                boxes.append(box)
            outputs = [pb_utils.Tensor("INPUT", np.stack(inputs)), pb_utils.Tensor("BOX", np.stack(boxes))]
            if len(self.styles) > 1:
                names = pb_utils.get_input_tensor_by_name(request, "STYLE").as_numpy().reshape(-1)
                if len(names) != len(images):
                    raise prepost.ImageError(f"got {len(images)} images but {len(names)} styles")
                outputs.append(pb_utils.Tensor("STYLE_INDEX", np.array(
                    [[self._style(n)] for n in names], dtype=np.int64)))
            return pb_utils.InferenceResponse(output_tensors=outputs)
        except prepost.ImageError as exc:
            return pb_utils.InferenceResponse(error=pb_utils.TritonError(str(exc), pb_utils.TritonError.INVALID_ARG))

    def _style(self, name) -> int:
        name = name.decode("utf-8", "replace") if isinstance(name, bytes) else str(name)
        if name not in self.styles:
            raise prepost.ImageError(f"unknown style {prepost.quote(name)}: this model has {', '.join(self.styles)}")
        return self.styles.index(name)
