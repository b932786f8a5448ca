"""Triton Python backend: network output + letterbox box -> PNG (or the requested FORMAT: jpeg, webp, at
QUALITY) bytes at the original size; without FORMAT, the repository's default (parameter output_format).

Reachable directly, not only through the ensemble: the box is checked against the same pixel limit as
uploads, so a caller cannot ask for an 8000x8000 PNG.

Runs inside Triton's Python-backend stub (numpy < 2, no torch); `prepost.py` is copied beside it.
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
        self.size, self.max_pixels = int(params["resolution"]), int(params["max_pixels"])
        self.format, quality = params["output_format"], params.get("output_quality", "")
        self.quality = int(quality) if quality else None

    def execute(self, requests):
        return [self._one(request) for request in requests]

    def _one(self, request):
        try:
            styled = pb_utils.get_input_tensor_by_name(request, "STYLED_RAW").as_numpy()
            boxes = pb_utils.get_input_tensor_by_name(request, "BOX").as_numpy()
            for box in boxes:
                prepost.check_box(box, self.size, self.max_pixels)
            fmt, quality = self.format, self.quality
            requested = pb_utils.get_input_tensor_by_name(request, "FORMAT")  # optional inputs: None if absent
            if requested is not None:
                value = requested.as_numpy().reshape(-1)[0]
                fmt = (value.decode("utf-8", "replace") if isinstance(value, bytes) else str(value)).lower()
            requested = pb_utils.get_input_tensor_by_name(request, "QUALITY")
            if requested is not None:
                quality = int(requested.as_numpy().reshape(-1)[0])
            images = [[prepost.encode(prepost.unletterbox(y, box), fmt, quality)]
                      for y, box in zip(styled, boxes, strict=True)]
            styled_out = pb_utils.Tensor("STYLED", np.array(images, dtype=np.object_))
            return pb_utils.InferenceResponse(output_tensors=[styled_out])
        except prepost.ImageError as exc:
            return pb_utils.InferenceResponse(error=pb_utils.TritonError(str(exc), pb_utils.TritonError.INVALID_ARG))
