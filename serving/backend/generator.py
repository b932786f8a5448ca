"""Triton Python backend: the generator through ONNX Runtime, for the CPU Triton runtime (whose
build has no ONNX Runtime backend). Dynamic batching hands several requests to one `execute`:
they run as one batch.
"""

import json
import os

import numpy as np
import onnxruntime as ort
import triton_python_backend_utils as pb_utils

MAX_SHAPES = 16  # OpenVINO sessions compiled for one input shape each; other shapes use the dynamic one


class TritonPythonModel:
    def initialize(self, args):
        params = {k: v["string_value"] for k, v in json.loads(args["model_config"])["parameters"].items()}
        self.options = ort.SessionOptions()
        self.options.intra_op_num_threads = int(params.get("intra_op_threads", "0"))
        self.path = os.path.join(os.path.dirname(os.path.abspath(__file__)), params["model_file"])
        self.openvino = params.get("provider") == "openvino"  # INT8 Q/DQ runs on integer kernels there
        self.float_precision = params.get("float_precision", "f32")  # bf16: as the export checked it
        self.session = self._session(None)
        self.inputs = [i.name for i in self.session.get_inputs()]
        self.has_style = len(self.inputs) == 2
        self.by_shape = {}

    def _session(self, shape):
        """OpenVINO compiles a fixed-shape model about 2x faster than a dynamic one (its
        `reshape_input`); Triton's model_warmup compiles the serving size for each batch size. The
        strings are export/runtime.session's: this file runs in Triton's Python and imports no stylepress."""
        providers = ["CPUExecutionProvider"]
        if self.openvino:
            ov = {"device_type": "CPU"}
            if shape is not None:
                n, _, h, w = shape
                ov["reshape_input"] = ",".join(f"image[{n},3,{h},{w}]" if name == "image" else f"{name}[{n}]"
                                               for name in self.inputs)
            if self.float_precision != "f32":
                ov["load_config"] = json.dumps({"CPU": {"INFERENCE_PRECISION_HINT": self.float_precision}})
            providers.insert(0, ("OpenVINOExecutionProvider", ov))
        return ort.InferenceSession(self.path, self.options, providers=providers)

    def _for(self, shape):
        if not self.openvino:
            return self.session
        if shape not in self.by_shape and len(self.by_shape) < MAX_SHAPES:
            self.by_shape[shape] = self._session(shape)
        return self.by_shape.get(shape, self.session)

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
        styled = self._for(feeds["image"].shape).run(None, feeds)[0]
        bounds = np.cumsum([0] + [len(x) for x in images])
        return [pb_utils.InferenceResponse(output_tensors=[pb_utils.Tensor("styled", styled[a:b])])
                for a, b in zip(bounds[:-1], bounds[1:], strict=True)]
