"""Triton Python backend: network output + letterbox box -> PNG bytes at the original size.

Runs inside Triton's Python-backend stub (numpy < 2, no torch); `prepost.py` is copied beside it.
"""

import os
import sys

import numpy as np
import triton_python_backend_utils as pb_utils

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import prepost  # noqa: E402


class TritonPythonModel:
    def execute(self, requests):
        responses = []
        for request in requests:
            styled = pb_utils.get_input_tensor_by_name(request, "STYLED_RAW").as_numpy()
            boxes = pb_utils.get_input_tensor_by_name(request, "BOX").as_numpy()
            pngs = [[prepost.encode_png(prepost.unletterbox(y, box))] for y, box in zip(styled, boxes, strict=True)]
            responses.append(pb_utils.InferenceResponse(
                output_tensors=[pb_utils.Tensor("STYLED", np.array(pngs, dtype=np.object_))]))
        return responses
