"""Triton Python backend: the generator through ONNX Runtime, for the CPU Triton runtime (whose
build has no ONNX Runtime backend). Dynamic batching hands several requests to one `execute`:
they run as one batch.
"""

import json
import os

import numpy as np
import onnxruntime as ort
import triton_python_backend_utils as pb_utils


class TritonPythonModel:
    def initialize(self, args):
        params = {k: v["string_value"] for k, v in json.loads(args["model_config"])["parameters"].items()}
        options = ort.SessionOptions()
        options.intra_op_num_threads = int(params.get("intra_op_threads", "0"))
        path = os.path.join(os.path.dirname(os.path.abspath(__file__)), params["model_file"])
        providers = ["CPUExecutionProvider"]
        if params.get("provider") == "openvino":  # INT8 Q/DQ runs on integer kernels there
            providers.insert(0, ("OpenVINOExecutionProvider", {"device_type": "CPU"}))
        self.session = ort.InferenceSession(path, options, providers=providers)
        self.has_style = len(self.session.get_inputs()) == 2

    def execute(self, requests):
        try:
            return self._run(requests)
        except Exception as exc:  # e.g. a tensor client's bad shape: answer every request, stay up
            error = pb_utils.TritonError(" ".join(str(exc).split()), pb_utils.TritonError.INVALID_ARG)
            return [pb_utils.InferenceResponse(error=error) for _ in requests]

    def _run(self, requests):
        images = [pb_utils.get_input_tensor_by_name(r, "image").as_numpy() for r in requests]
        feeds = {"image": np.concatenate(images)}
        if self.has_style:
            feeds["style"] = np.concatenate(
                [pb_utils.get_input_tensor_by_name(r, "style").as_numpy().reshape(-1) for r in requests])
        styled = self.session.run(None, feeds)[0]
        bounds = np.cumsum([0] + [len(x) for x in images])
        return [pb_utils.InferenceResponse(output_tensors=[pb_utils.Tensor("styled", styled[a:b])])
                for a, b in zip(bounds[:-1], bounds[1:], strict=True)]
