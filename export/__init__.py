"""Export to ONNX in each configured precision. Entry point: `run(cfg, run_dir)`.

export/
  <model>.fp32.onnx   teacher / student, dynamic batch, height and width, weights embedded
  <model>.fp16.onnx   fp16 weights and compute, fp32 inputs/outputs
  <model>.int8.onnx   Q/DQ INT8 that TensorRT's explicit quantization accepts (checked)
  parity.json         ONNX Runtime vs PyTorch on val portraits, per model, size and batch
  quant.json          per model and precision: quality vs fp32, whether it met its target (and why
                      not), fallback layers, per-layer SQNR, calibration settings, int8's coverage
                      (layers and MACs quantized, per layer type); the float
                      precision OpenVINO runs it in (bf16 or f32), which the bench and the served
                      generator use. No timings: this file is a deployment input, hashed by the
                      pipeline; latency is the bench's.

With bf16, every precision is checked on its bf16 output against fp32 in f32 (fp32 itself against
export.bf16_min_psnr_db). A precision that misses its quality target is written and recorded as missed
(`met: false`), and selection leaves it out; it does not fail the export. Export is
deterministic: the same inputs give the same bytes (the pipeline hashes them).
"""

from __future__ import annotations

import json
import logging
import os
from pathlib import Path

import numpy as np
import onnx
from onnxruntime.transformers.float16 import convert_float_to_float16

from stylepress import prepost
from stylepress.config import Config
from stylepress.data import find_images, read_rgb, val_image_paths
from stylepress.errors import StylepressError
from stylepress.fsutil import atomic_path, write_json
from stylepress.layout import RunLayout
from stylepress.models import load_generator
from stylepress.progress import progress_bar

from .onnx_export import export_onnx
from .parity import check_parity
from .quantize import compare, int8_coverage, quantize_with_fallback
from .runtime import resolve_cpu_provider, resolve_float_precision, run_batched, session
from .tensorrt import build_engine, profile, unavailable

log = logging.getLogger(__name__)
PARITY_PHOTOS = 3


def run(cfg: Config, run_dir: str | Path, show_progress: bool = True) -> dict[str, Path]:
    """Export every trained model in the run in every configured precision; returns
    {"<model>.<precision>": onnx path}. Fails if fp32 parity or the TensorRT rules fail."""
    layout = RunLayout(run_dir)
    models = layout.models()
    if not models:
        raise StylepressError(f"nothing to export: {layout.root} has no teacher/ (run `stylepress train` first)")
    ec = cfg.export
    provider = resolve_cpu_provider(ec.cpu_provider)
    fp = resolve_float_precision(ec.cpu_float_precision, provider, cfg.serving.target)
    photos = [read_rgb(p) for p in val_image_paths(cfg.data)[:PARITY_PHOTOS]]
    parity_path, quant_path = layout.parity, layout.quant
    parity = json.loads(parity_path.read_text()) if parity_path.is_file() else {}
    quant = json.loads(quant_path.read_text()) if quant_path.is_file() else {}
    size = cfg.serving_resolution
    val = serving_inputs(val_image_paths(cfg.data)[:ec.int8.val_images], size)
    written = {}
    with progress_bar(len(models) * len(ec.precisions), "export", enabled=show_progress) as bar:
        for name in models:
            model, spec = load_generator(layout.model_dir(name))
            n_styles = spec.num_styles
            fp32 = layout.onnx(name)
            bar.update(f"{name} fp32")
            with atomic_path(fp32) as tmp:  # a model that fails parity never lands
                export_onnx(model, spec, tmp, ec.opset)
                parity[name] = check_parity(model, spec, tmp, photos, ec.parity_tolerance)
                write_json(parity_path, parity)
                if not parity[name]["passed"]:
                    fp32.unlink(missing_ok=True)
                    raise StylepressError(
                        f"{name}: ONNX Runtime differs from PyTorch by {parity[name]['max_abs_err']:.2e} "
                        f"(tolerance {ec.parity_tolerance:g}) at {parity[name]['worst']}; see {parity_path}")
            log.info("%s: %s (parity max abs err %.1e)", name, fp32, parity[name]["max_abs_err"])
            written[f"{name}.fp32"] = fp32
            bar.advance()
            quant[name] = {"provider": provider, "float_precision": fp, "resolution": size, "val_images": len(val)}
            if fp == "bf16":
                quant[name]["fp32"] = _bf16(fp32, val, n_styles, provider, ec.bf16_min_psnr_db)
                if not quant[name]["fp32"]["met"]:
                    log.warning("%s: %s: recorded, left out of selection", fp32.name, quant[name]["fp32"]["reason"])
            write_json(quant_path, quant)  # also with fp32 alone: it says which float precision runs it
            for stale in (p for p in ("fp16", "int8") if p not in ec.precisions):  # from an earlier config
                layout.onnx(name, stale).unlink(missing_ok=True)
            for precision in (p for p in ec.precisions if p != "fp32"):
                bar.update(f"{name} {precision}")
                path = layout.onnx(name, precision)
                with atomic_path(path) as tmp:
                    if precision == "fp16":
                        report = _fp16(fp32, tmp, val, n_styles, provider, fp, ec.fp16_min_psnr_db)
                    else:
                        report = _int8(cfg, fp32, tmp, val, n_styles, provider, fp)
                    report["size_bytes"] = os.path.getsize(tmp)
                if not report["met"]:
                    log.warning("%s: %s: recorded, left out of selection", path.name, report["reason"])
                quant[name][precision] = report
                write_json(quant_path, quant)
                written[f"{name}.{precision}"] = path
                bar.advance()
    written.update(_engines(cfg, layout, models))
    return written


def _engines(cfg: Config, layout: RunLayout, models: list[str]) -> dict[str, Path]:
    """TensorRT engines for every exported precision, where TensorRT and a GPU exist."""
    why = unavailable()
    if why:
        log.info("TensorRT engines: skipped: %s", why)
        return {}
    prof, written = profile(cfg.export.tensorrt, cfg.serving_resolution), {}
    for name in models:
        for precision in cfg.export.precisions:
            plan = layout.plan(name, precision)
            build_engine(layout.onnx(name, precision), plan, prof, precision, cfg.export.tensorrt.workspace_mib)
            written[f"{name}.{precision}.plan"] = plan
    return written


def serving_inputs(paths: list[Path], size: int) -> np.ndarray:
    """Portraits through the serving preprocessing (letterbox to size x size), NCHW in [-1, 1]."""
    return np.stack([prepost.letterbox(np.asarray(read_rgb(p)), size)[0] for p in paths])


def float_precision(layout: RunLayout, model: str, provider: str) -> str:
    """The float precision `model` runs in on `provider`: on OpenVINO the one its export checked (the
    bench times it, serving runs it), elsewhere f32."""
    quant = json.loads(layout.quant.read_text()) if layout.quant.is_file() and provider == "openvino" else {}
    return quant.get(model, {}).get("float_precision", "f32")


def _vs_fp32(fp32: Path, path: Path, val: np.ndarray, n_styles: int, provider: str, fp: str) -> dict:
    """`path` run in float precision `fp` against the fp32 model in f32: the worst style's PSNR/SSIM."""
    ref, got = session(fp32, provider), session(path, provider, float_precision=fp)
    quality = [compare(run_batched(ref, val, s), run_batched(got, val, s)) for s in range(max(1, n_styles))]
    return {"psnr_db": min(q["psnr_db"] for q in quality), "ssim": min(q["ssim"] for q in quality)}


def _fp16(fp32: Path, out: Path, val: np.ndarray, n_styles: int, provider: str, fp: str,
          min_psnr_db: float) -> dict:
    # keep_io_types: clients and the pre/post-processing keep talking float32.
    onnx.save(convert_float_to_float16(onnx.load(str(fp32)), keep_io_types=True), str(out))
    q = _vs_fp32(fp32, out, val, n_styles, provider, fp)
    met = q["psnr_db"] >= min_psnr_db
    return {**q, "met": met, "min_psnr_db": min_psnr_db,
            "reason": None if met else f"fp16 output is {q['psnr_db']:.1f} dB from fp32 (export.fp16_min_psnr_db = "
                                       f"{min_psnr_db:g}): keep this model in fp32"}


def _bf16(fp32: Path, val: np.ndarray, n_styles: int, provider: str, min_psnr_db: float) -> dict:
    q = _vs_fp32(fp32, fp32, val, n_styles, provider, "bf16")
    met = q["psnr_db"] >= min_psnr_db
    return {**q, "met": met, "min_psnr_db": min_psnr_db,
            "reason": None if met else f"bf16 output is {q['psnr_db']:.1f} dB from fp32 (export.bf16_min_psnr_db = "
                                       f"{min_psnr_db:g}): set export.cpu_float_precision = 'f32'"}


def _int8(cfg: Config, fp32: Path, out: Path, val: np.ndarray, n_styles: int, provider: str, fp: str) -> dict:
    ic = cfg.export.int8
    folder = ic.calibration or cfg.data.photos
    paths = find_images(folder)
    if not paths:
        raise StylepressError(f"export.int8.calibration: no images in {folder}")
    # An even spread over the folder, deterministic: the same calibration set on every run.
    pick = [paths[i] for i in np.linspace(0, len(paths) - 1, min(ic.samples, len(paths))).round().astype(int)]
    calib = serving_inputs(pick, cfg.serving_resolution)
    report = quantize_with_fallback(fp32, out, calib, val, n_styles, method=ic.method, percentile=ic.percentile,
                                    min_psnr_db=ic.min_psnr_db, max_fallback=ic.max_fallback, provider=provider,
                                    min_ssim=ic.min_ssim, float_precision=fp)
    report["coverage"] = int8_coverage(fp32, out, cfg.serving_resolution)
    report["calibration"] = {"folder": str(folder), "samples": len(calib), "method": ic.method,
                             **({"percentile": ic.percentile} if ic.method == "percentile" else {})}
    return report
