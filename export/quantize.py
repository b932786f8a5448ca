"""INT8 post-training quantization with ONNX Runtime's tools, in the one Q/DQ form that both
TensorRT (explicit quantization) and ONNX Runtime's OpenVINO provider accept, with an
accuracy-aware fallback that keeps the most sensitive layers in float.

The settings, each one of TensorRT's rules (see trt_rules.py):
  symmetric INT8 activations and weights (zero point 0), per-tensor activations, per-channel
  Conv weights on axis 0, ConvTranspose weights on axis 0 (ORT's default is 1), no bias
  quantization, Q/DQ only on Conv/ConvTranspose inputs (their outputs feed InstanceNorm, which
  stays float), and the output layer excluded.
"""

from __future__ import annotations

import logging
import math
import tempfile
from pathlib import Path

import numpy as np
import onnx
import torch
from onnxruntime.quantization import CalibrationDataReader, CalibrationMethod, QuantFormat, QuantType, quantize_static
from onnxruntime.quantization.qdq_loss_debug import (
    collect_activations,
    compute_activation_error,
    compute_weight_error,
    create_activation_matching,
    create_weight_matching,
    modify_model_output_intermediate_tensors,
)

from stylepress.errors import StylepressError
from stylepress.metrics import psnr, ssim

from .runtime import run_batched, session
from .trt_rules import LINEAR, check_trt, output_layers

log = logging.getLogger(__name__)
METHODS = {"minmax": CalibrationMethod.MinMax, "entropy": CalibrationMethod.Entropy,
           "percentile": CalibrationMethod.Percentile}


class _Reader(CalibrationDataReader):
    """Feeds calibration images one at a time (each style for multi-style models)."""

    def __init__(self, images: np.ndarray, n_styles: int):
        self.items = [(images[i:i + 1], i % max(1, n_styles)) for i in range(len(images))]
        self.multi = n_styles > 1
        self.pos = 0

    def get_next(self):
        if self.pos >= len(self.items):
            return None
        image, style = self.items[self.pos]
        self.pos += 1
        feeds = {"image": image}
        if self.multi:
            feeds["style"] = np.array([style], dtype=np.int64)
        return feeds

    def rewind(self):
        self.pos = 0


def linear_layers(model: onnx.ModelProto) -> list[str]:
    return [n.name for n in model.graph.node if n.op_type in LINEAR]


def int8_coverage(fp32: Path, int8: Path, size: int) -> dict:
    """Per layer type (Conv, ConvTranspose): layers and MACs at batch 1, size x size, and how many of
    them the int8 model quantizes (weights through a DequantizeLinear). Static: which of those a
    runtime then runs on INT8 kernels is its profile's to say (OpenVINO has none for transposed
    convolutions; benchmarks/openvino_profile.py)."""
    model = onnx.load(str(fp32))
    for value in model.graph.input:  # fix the dynamic dims so that shape inference gives every size
        for dim, n in zip(value.type.tensor_type.shape.dim, (1, 3, size, size) if value.name == "image" else (1,),
                          strict=True):
            dim.ClearField("dim_param")
            dim.dim_value = n
    model = onnx.shape_inference.infer_shapes(model, data_prop=True)
    graph = model.graph
    shapes = {v.name: [d.dim_value for d in v.type.tensor_type.shape.dim]
              for v in (*graph.value_info, *graph.input, *graph.output)}
    weights = {t.name: list(t.dims) for t in graph.initializer}
    quantized = onnx.load(str(int8)).graph
    dq = {n.output[0] for n in quantized.node if n.op_type == "DequantizeLinear"}
    int8_layers = {n.name for n in quantized.node if n.op_type in LINEAR and n.input[1] in dq}
    out: dict[str, dict] = {}
    for node in graph.node:
        if node.op_type not in LINEAR:
            continue
        w = weights[node.input[1]]  # Conv [Co, Ci/g, kh, kw]; ConvTranspose [Ci, Co/g, kh, kw]
        per_position = shapes[node.output[0] if node.op_type == "Conv" else node.input[0]]
        macs = math.prod(per_position[1:]) * math.prod(w[1:])
        t = out.setdefault(node.op_type, {"layers": 0, "int8_layers": 0, "macs": 0, "int8_macs": 0})
        t["layers"] += 1
        t["macs"] += macs
        if node.name in int8_layers:
            t["int8_layers"] += 1
            t["int8_macs"] += macs
    total = sum(t["macs"] for t in out.values())
    return {"resolution": size, "layer_types": out,
            "int8_macs_share": sum(t["int8_macs"] for t in out.values()) / total if total else 0.0}


def quantize_int8(fp32: Path, out: Path, calib: np.ndarray, n_styles: int, method: str = "minmax",
                  percentile: float = 99.999, exclude: tuple[str, ...] = ()) -> None:
    """Write the TensorRT-compatible Q/DQ model of `fp32` to `out`, keeping `exclude` in float."""
    model = onnx.load(str(fp32))
    transposed = {n.input[1] for n in model.graph.node if n.op_type == "ConvTranspose"}
    extra = {
        "ActivationSymmetric": True, "WeightSymmetric": True, "QuantizeBias": False,
        "QDQDisableWeightAdjustForInt32Bias": True,  # its per-channel walk assumes axis 1
        "OpTypesToExcludeOutputQuantization": list(LINEAR),
        "TensorQuantOverrides": {w: [{"axis": 0}] for w in transposed},
        "CalibPercentile": percentile,
    }
    root = logging.getLogger()
    level = root.level
    root.setLevel(logging.ERROR)  # its "consider pre-processing" advice: shapes are already inferred at export
    try:
        quantize_static(
            str(fp32), str(out), _Reader(calib, n_styles), quant_format=QuantFormat.QDQ,
            op_types_to_quantize=list(LINEAR), per_channel=True, activation_type=QuantType.QInt8,
            weight_type=QuantType.QInt8, nodes_to_exclude=sorted(set(exclude) | output_layers(model)),
            calibrate_method=METHODS[method], extra_options=extra)
    finally:
        root.setLevel(level)


def _db(ratio: float) -> float:
    return float(10 * math.log10(ratio)) if ratio > 0 else float("inf")


def layer_sqnr(fp32: Path, int8: Path, calib: np.ndarray, n_styles: int) -> dict[str, float]:
    """Per Conv/ConvTranspose: SQNR (dB) of its quantized input activation and weight combined
    (noise powers add), from ORT's qdq_loss_debug. Lower means more sensitive."""
    with tempfile.TemporaryDirectory() as tmp:
        aug_f, aug_q = Path(tmp) / "f.onnx", Path(tmp) / "q.onnx"
        modify_model_output_intermediate_tensors(str(fp32), str(aug_f))
        modify_model_output_intermediate_tensors(str(int8), str(aug_q))
        sample = calib[: min(4, len(calib))]
        float_acts = collect_activations(str(aug_f), _Reader(sample, n_styles))
        qdq_acts = collect_activations(str(aug_q), _Reader(sample, n_styles))
    act_err = compute_activation_error(create_activation_matching(qdq_acts, float_acts))
    weight_err = compute_weight_error(create_weight_matching(str(fp32), str(int8)))
    model = onnx.load(str(fp32))
    result = {}
    for node in model.graph.node:
        if node.op_type not in LINEAR:
            continue
        noise = 0.0
        a = act_err.get(node.input[0], {}).get("qdq_err")
        w = weight_err.get(node.input[1])
        for db in (a, w):
            if db is not None and np.isfinite(db):
                noise += 10 ** (-float(np.mean(db)) / 10)
        if a is not None or w is not None:
            result[node.name] = _db(1 / noise) if noise else float("inf")
    return result


def compare(fp32_out: np.ndarray, out: np.ndarray) -> dict:
    """PSNR/SSIM (torchmetrics) of `out` against the reference output, per image."""
    a, b = torch.from_numpy(fp32_out).float(), torch.from_numpy(out).float()
    return {"psnr_db": psnr(b, a).mean().item(), "ssim": ssim(b, a).mean().item()}


def quantize_with_fallback(fp32: Path, out: Path, calib: np.ndarray, val: np.ndarray, n_styles: int, *,
                           method: str, percentile: float, min_psnr_db: float, max_fallback: int,
                           provider: str, min_ssim: float = 0.0, float_precision: str = "f32") -> dict:
    """Quantize, then keep the most sensitive layers (lowest SQNR) in float, one more per round,
    until int8 vs fp32 on `val` reaches min_psnr_db and min_ssim, or `max_fallback` layers are
    excluded. The int8 model runs in `float_precision` (its float layers in bf16 or f32), fp32 in f32."""
    ref = {s: run_batched(session(fp32, provider), val, s) for s in range(max(1, n_styles))}

    def score(path: Path) -> dict:
        sess = session(path, provider, float_precision=float_precision)
        per_style = [compare(ref[s], run_batched(sess, val, s)) for s in ref]
        return {"psnr_db": min(p["psnr_db"] for p in per_style), "ssim": min(p["ssim"] for p in per_style)}

    def meets(r: dict) -> bool:
        return r["psnr_db"] >= min_psnr_db and r["ssim"] >= min_ssim

    quantize_int8(fp32, out, calib, n_styles, method, percentile)
    sqnr = layer_sqnr(fp32, out, calib, n_styles)
    order = sorted(sqnr, key=sqnr.get)  # most sensitive first
    rounds = [{"excluded": 0, **score(out)}]
    excluded: list[str] = []
    while not meets(rounds[-1]) and len(excluded) < min(max_fallback, len(order)):
        excluded.append(order[len(excluded)])
        quantize_int8(fp32, out, calib, n_styles, method, percentile, tuple(excluded))
        rounds.append({"excluded": len(excluded), "layer": excluded[-1], **score(out)})
        log.info("int8 fallback: %s kept in float -> %.2f dB, SSIM %.4f", excluded[-1], rounds[-1]["psnr_db"],
                 rounds[-1]["ssim"])
    met = meets(rounds[-1])
    problems = check_trt(out)
    if problems:
        raise StylepressError(f"{out.name} breaks TensorRT's quantization rules: {problems[0]}")
    return {
        "met": met,
        "reason": None if met else (f"PSNR {rounds[-1]['psnr_db']:.2f} dB / SSIM {rounds[-1]['ssim']:.4f} short of "
                                    f"{min_psnr_db} dB / {min_ssim} after {len(excluded)} layers in float "
                                    f"(max_fallback {max_fallback})"),
        "psnr_db": rounds[-1]["psnr_db"], "ssim": rounds[-1]["ssim"],
        "min_psnr_db": min_psnr_db, "min_ssim": min_ssim, "max_fallback": max_fallback,
        "excluded": excluded, "output_layers_float": sorted(output_layers(onnx.load(str(fp32)))),
        "layer_sqnr_db": {k: round(v, 2) for k, v in sqnr.items()}, "rounds": rounds,
    }
