"""A scanner for TensorRT's explicit-quantization rules on a Q/DQ ONNX model.

TensorRT builds an INT8 engine from Q/DQ nodes only when they follow its rules; ONNX Runtime's
quantizer defaults break several of them (asymmetric UINT8, INT32 bias). Checked here:
  - INT8 only, zero point 0 (a missing zero point means UINT8 in ONNX);
  - activations per-tensor (one scale);
  - weights per-tensor or per-channel on axis 0 (Conv: output channels; ConvTranspose: axis 0,
    never 1);
  - no quantized bias (a DequantizeLinear of INT32);
  - InstanceNormalization, Pad, Tanh and the output layer stay in float (no DQ feeding them).
`check_trt` returns one line per violation naming the node; no onnx library offers this check.
"""

from __future__ import annotations

from collections import defaultdict
from pathlib import Path

import numpy as np
import onnx
from onnx import numpy_helper

FLOAT_ONLY = {"InstanceNormalization": "InstanceNorm", "Pad": "Pad", "Tanh": "Tanh"}
LINEAR = ("Conv", "ConvTranspose")
# Ops walked through from a graph output back to the layer that produces it.
PASS_THROUGH = {"Tanh", "Add", "Sub", "Mul", "Div", "Clip", "Sigmoid", "Relu", "Identity", "Cast", "Reshape"}


def _constants(graph: onnx.GraphProto) -> dict[str, np.ndarray]:
    consts = {t.name: numpy_helper.to_array(t) for t in graph.initializer}
    for node in graph.node:
        if node.op_type == "Constant":
            attr = next((a for a in node.attribute if a.name == "value"), None)
            if attr is not None:
                consts[node.output[0]] = numpy_helper.to_array(attr.t)
    return consts


def _axis(node: onnx.NodeProto) -> int:
    return next((a.i for a in node.attribute if a.name == "axis"), 1)  # ONNX's default axis is 1


def output_layers(model: onnx.ModelProto) -> set[str]:
    """The Conv/ConvTranspose nodes nearest to each graph output (walking back through Tanh,
    Add, Clip and the like): the output layer, which stays in float."""
    producer = {out: node for node in model.graph.node for out in node.output}
    found, stack, seen = set(), [o.name for o in model.graph.output], set()
    while stack:
        node = producer.get(stack.pop())
        if node is None or node.name in seen:
            continue
        seen.add(node.name)
        if node.op_type in LINEAR:
            found.add(node.name)
        elif node.op_type in PASS_THROUGH:
            stack.extend(node.input)
    return found


def check_trt(model: onnx.ModelProto | str | Path) -> list[str]:
    """Every violation of TensorRT's explicit-quantization rules, as 'node: why' lines."""
    if not isinstance(model, onnx.ModelProto):
        model = onnx.load(str(model))
    graph = model.graph
    consts = _constants(graph)
    producer = {out: node for node in graph.node for out in node.output}
    consumers = defaultdict(list)
    for node in graph.node:
        for i, name in enumerate(node.input):
            consumers[name].append((node, i))
    float_layers = output_layers(model)
    problems = []

    for node in graph.node:
        if node.op_type not in ("QuantizeLinear", "DequantizeLinear"):
            continue
        name = node.name or node.output[0]
        x, scale = node.input[0], consts.get(node.input[1])
        zp = consts.get(node.input[2]) if len(node.input) > 2 and node.input[2] else None
        is_weight = x in consts
        if node.op_type == "DequantizeLinear" and is_weight and consts[x].dtype == np.int32:
            problems.append(f"{name}: quantized bias (DequantizeLinear of INT32): keep biases in float")
            continue
        zp_type = zp.dtype if zp is not None else (consts[x].dtype if is_weight and node.op_type ==
                                                   "DequantizeLinear" else np.dtype(np.uint8))
        if zp_type != np.int8:
            problems.append(f"{name}: {np.dtype(zp_type).name.upper()} quantization: TensorRT needs INT8")
        if zp is not None and np.any(zp != 0):
            problems.append(f"{name}: non-zero zero point: TensorRT needs symmetric quantization")
        per_channel = scale is not None and scale.size > 1
        if per_channel and not is_weight and not (node.op_type == "DequantizeLinear" and x in producer
                                                  and producer[x].input[0] in consts):
            problems.append(f"{name}: per-channel activation quantization: TensorRT needs one scale per tensor")
        elif per_channel:
            rank = (consts[x] if is_weight else consts[producer[x].input[0]]).ndim
            axis = _axis(node) % rank
            uses = consumers[node.output[0]] if node.op_type == "DequantizeLinear" else []
            for user, idx in uses:
                if user.op_type in LINEAR and idx == 1 and axis != 0:
                    problems.append(f"{name}: {user.op_type} weight quantized on axis {axis}: "
                                    "TensorRT needs per-tensor or axis 0")
        if node.op_type == "DequantizeLinear":
            for user, _ in consumers[node.output[0]]:
                if user.op_type in FLOAT_ONLY:
                    problems.append(f"{user.name or user.output[0]}: quantized {FLOAT_ONLY[user.op_type]} "
                                    f"(fed by {name}): keep it in float")
                elif user.name in float_layers:
                    problems.append(f"{user.name}: the output layer is quantized (fed by {name}): keep it in float")
    return problems
