"""Is a CPU-specific INT8 placement worth adding? Times the exported TensorRT-style Q/DQ model
against ONNX Runtime's own CPU-oriented quantizations of the same fp32 model, on every CPU
provider, with PSNR to fp32. Usage: python -m stylepress.benchmarks.int8_placements CONFIG [MODEL]

Candidates: "trt-qdq" (what `export` writes), "ort-qdq-default" (quantize_static's defaults: QDQ,
asymmetric UINT8 activations, every supported op), "ort-qoperator" (QLinearConv operators, per-channel
weights: ONNX Runtime's classic CPU integer path).
"""

from __future__ import annotations

import sys
import tempfile
from pathlib import Path

from onnxruntime.quantization import QuantFormat, QuantType, quantize_static

from stylepress.config import load_config
from stylepress.data import find_images, val_image_paths
from stylepress.export import serving_inputs
from stylepress.export.quantize import _Reader, compare
from stylepress.export.runtime import available_cpu_providers, feeds_for, run_batched, session, time_session
from stylepress.layout import RunLayout
from stylepress.models.spec import read_spec


def run(cfg, run_dir: Path, model: str = "student", repeats: int = 20) -> list[dict]:
    """Every candidate on every CPU provider: p50 at batch 1 and PSNR to fp32 (style 0)."""
    layout, size = RunLayout(run_dir), cfg.serving_resolution
    n_styles = len(read_spec(layout.model_dir(model)).styles)  # calibration feeds each style in turn
    fp32 = layout.onnx(model)
    calib = serving_inputs(find_images(cfg.data.photos)[:cfg.export.int8.samples], size)
    val = serving_inputs(val_image_paths(cfg.data)[:8], size)
    ref = run_batched(session(fp32), val)
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        candidates = {"fp32": fp32}
        if layout.onnx(model, "int8").is_file():
            candidates["trt-qdq"] = layout.onnx(model, "int8")
        for name, fmt, per_channel in (("ort-qdq-default", QuantFormat.QDQ, False),
                                       ("ort-qoperator", QuantFormat.QOperator, True)):
            candidates[name] = Path(tmp) / f"{name}.onnx"
            quantize_static(str(fp32), str(candidates[name]), _Reader(calib, n_styles), quant_format=fmt,
                            per_channel=per_channel, activation_type=QuantType.QUInt8, weight_type=QuantType.QInt8)
        for name, path in candidates.items():
            for provider in available_cpu_providers():
                sess = session(path, provider, threads=2)
                quality = compare(ref, run_batched(sess, val))
                t = time_session(sess, feeds_for(sess, val[:1]), repeats=repeats, warmup=min(5, repeats))
                rows.append({"candidate": name, "provider": provider, "p50_ms": t["p50_ms"],
                             "psnr_db": quality["psnr_db"]})
    return rows


def main(config: str, model: str = "student") -> None:
    cfg = load_config(config)
    print(f"{model}, batch 1, {cfg.serving_resolution}² , 2 threads; PSNR vs fp32 on 8 val portraits (style 0)")
    for r in run(cfg, Path("runs") / cfg.name, model):
        print(f"{r['candidate']:16s} {r['provider']:9s} p50 {r['p50_ms']:7.1f} ms  PSNR {r['psnr_db']:6.2f} dB")


if __name__ == "__main__":
    main(*sys.argv[1:])
