"""The fastest-student levers measured on and off in one run: each run's student (pruned or mobile,
at its MACs) in fp32 and int8, on OpenVINO with float layers in f32 and in bf16, and fp32 on the
default CPU provider; against the teacher in PyTorch eager and on both providers. Batch 1 at the
serving size, every variant timed interleaved (round after round, one run of each, so drift on a
shared machine hits all alike). Quality: PSNR/SSIM to the teacher's fp32 (default provider) on val
portraits through the serving letterbox, per style. The teacher is the first run's.

  <first run>/report/levers.{json,md}
"""

from __future__ import annotations

import json
import platform
from pathlib import Path

import numpy as np
import onnxruntime as ort
import torch

from stylepress.compress import PRUNE_FILE
from stylepress.compress.pruning import count
from stylepress.config import Config
from stylepress.data import val_image_paths
from stylepress.errors import StylepressError
from stylepress.export import serving_inputs
from stylepress.export.quantize import compare
from stylepress.export.runtime import available_cpu_providers, cpu_has_bf16, feeds_for, run_batched, session
from stylepress.fsutil import write_json, write_text
from stylepress.layout import RunLayout
from stylepress.machine import describe, now
from stylepress.models import load_generator

from .precision import time_interleaved


def run(cfg: Config, run_dirs: list[Path], repeats: int | None = None, threads: int | None = None) -> dict:
    if "openvino" not in available_cpu_providers():
        raise StylepressError("this onnxruntime build has no OpenVINO execution provider: nothing to compare "
                              "(`pip install onnxruntime-openvino`)")
    layouts = [RunLayout(d) for d in run_dirs]
    size = cfg.serving_resolution
    repeats, threads = repeats or cfg.bench.repeats, threads or cfg.bench.threads
    for layout in layouts:
        for model in ("teacher", "student") if layout is layouts[0] else ("student",):
            if not layout.onnx(model).is_file():
                raise StylepressError(f"{layout.onnx(model)} is missing: run `stylepress export` on {layout.root}")
    teacher, spec = load_generator(layouts[0].teacher)
    val = serving_inputs(val_image_paths(cfg.data)[:cfg.export.int8.val_images], size)
    ref = session(layouts[0].onnx("teacher"), "default", threads)
    refs = {s: run_batched(ref, val, s) for s in range(spec.num_styles)}
    floats = ("f32", "bf16") if cpu_has_bf16() else ("f32",)
    one = val[:1]
    rows, calls = [], []

    def add(row: dict, outputs: dict, call) -> None:
        for s, name in enumerate(spec.styles):
            q = compare(refs[s], outputs[s])
            row[f"psnr_{name}"], row[f"ssim_{name}"] = q["psnr_db"], q["ssim"]
        rows.append(row)
        calls.append(call)

    torch.set_num_threads(threads)
    x = torch.from_numpy(one)
    with torch.inference_mode():
        eager = {s: teacher(torch.from_numpy(val), torch.full((len(val),), s)).numpy() for s in refs}
    macs, params = count(teacher, spec, size)
    base = {"run": str(layouts[0].root), "model": "teacher", "student": "-", "macs": macs, "params": params}

    def call_eager():
        with torch.inference_mode():
            teacher(x, torch.zeros(1, dtype=torch.long))
    add({**base, "precision": "fp32", "runtime": "eager"}, eager, call_eager)
    variants = [(layouts[0], "teacher", base, "fp32")]
    for layout in layouts:
        prune = json.loads((layout.student / PRUNE_FILE).read_text()) if (layout.student / PRUNE_FILE).is_file() else {}
        student, student_spec = load_generator(layout.student)
        s_macs, s_params = count(student, student_spec, size)
        info = {"run": str(layout.root), "model": "student", "student": prune.get("student", "pruned"),
                "macs": s_macs, "params": s_params}
        variants += [(layout, "student", info, p) for p in ("fp32", "int8") if layout.onnx("student", p).is_file()]
    for layout, model, info, precision in variants:
        path = layout.onnx(model, precision)
        runtimes = [("openvino", fp) for fp in floats] + ([("default", "f32")] if precision == "fp32" else [])
        for provider, fp in runtimes:
            sess = session(path, provider, threads, float_precision=fp)
            outs = {s: run_batched(sess, val, s) for s in refs}
            timed = session(path, provider, threads, shape=(1, size, size), float_precision=fp)
            feeds = feeds_for(timed, one)
            add({**info, "precision": precision, "runtime": provider if provider == "default" else f"openvino {fp}"},
                outs, lambda timed=timed, feeds=feeds: timed.run(None, feeds))
    for row, t in zip(rows, time_interleaved(calls, repeats), strict=True):
        row.update(p50_ms=t["p50_ms"], p95_ms=t["p95_ms"])
    eager_ms = rows[0]["p50_ms"]
    for row in rows:
        default_fp32 = next((r for r in rows if (r["run"], r["model"], r["precision"], r["runtime"]) ==
                             (row["run"], row["model"], "fp32", "default")), None)
        row["vs_teacher_eager"] = eager_ms / row["p50_ms"]
        row["vs_own_fp32_default"] = default_fp32["p50_ms"] / row["p50_ms"] if default_fp32 else None
    report = {"what": f"batch 1 at {size}x{size}, {threads} threads, {repeats} runs of every variant interleaved "
                      "after 5 warm-up rounds; quality vs the teacher's fp32 (ONNX Runtime default provider) on "
                      f"{len(val)} val portraits; MACs at {size}x{size}",
              "date": now(), "machine": describe(), "styles": list(spec.styles),
              "versions": {"onnxruntime": ort.__version__, "torch": torch.__version__,
                           "python": platform.python_version()}, "variants": rows}
    write_json(layouts[0].report / "levers.json", report)
    write_text(layouts[0].report / "levers.md", markdown(report))
    return report


def markdown(report: dict) -> str:
    lines = [f"{report['what']}; {report['machine']['cpu']}, onnxruntime {report['versions']['onnxruntime']}, "
             f"torch {report['versions']['torch']}, {report['date'][:10]}", "",
             "| run | model | student | GMACs | params | precision | runtime | p50 ms | p95 ms | × teacher eager | "
             "× own fp32 default | " + " | ".join(f"{s} PSNR / SSIM" for s in report["styles"]) + " |",
             "|---|---|---|---:|---:|---|---|---:|---:|---:|---:|" + "---:|" * len(report["styles"])]
    for r in report["variants"]:
        quality = []
        for s in report["styles"]:
            psnr = r[f"psnr_{s}"]
            quality.append(("exact" if not np.isfinite(psnr) or psnr > 99 else f"{psnr:.2f} dB")
                           + f" / {r[f'ssim_{s}']:.3f}")
        own = f"{r['vs_own_fp32_default']:.2f}" if r["vs_own_fp32_default"] else ""
        lines.append(f"| {Path(r['run']).name} | {r['model']} | {r['student']} | {r['macs'] / 1e9:.2f} | "
                     f"{r['params'] / 1e6:.2f} M | {r['precision']} | {r['runtime']} | {r['p50_ms']:.1f} | "
                     f"{r['p95_ms']:.1f} | {r['vs_teacher_eager']:.1f} | {own} | " + " | ".join(quality) + " |")
    return "\n".join(lines) + "\n"
