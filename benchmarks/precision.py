"""Every exported precision on every CPU execution provider: latency against quality.

For each model (teacher, student) and precision (fp32, fp16, int8) on each provider this
onnxruntime build has (default CPU, OpenVINO): batch 1 at the serving size, a fixed thread count,
p50/p95 after warm-up; PSNR/SSIM against the model's fp32 output on val portraits; file size.
All variants are timed in one run, so ratios between them are comparable on a noisy machine.
The headline ratio: int8 on the configured provider against fp32 on the default provider. When it
is under `target_speedup`, ONNX Runtime's per-operator profile of both shows where the time goes.
"""

from __future__ import annotations

import datetime
import json
import os
import platform
from collections import defaultdict
from pathlib import Path

import numpy as np
import onnxruntime as ort

from stylepress.config import Config
from stylepress.data import val_image_paths
from stylepress.export import MODELS, onnx_name, serving_inputs
from stylepress.export.quantize import compare
from stylepress.export.runtime import (
    available_cpu_providers,
    feeds_for,
    resolve_cpu_provider,
    run_batched,
    session,
    time_session,
)
from stylepress.fsutil import write_json, write_text
from stylepress.models import ARCH_FILE
from stylepress.progress import progress_bar

from .serving_latency import _cpu_name

PRECISIONS = ("fp32", "fp16", "int8")


def run(cfg: Config, run_dir: str | Path, repeats: int = 30, threads: int = 2, target_speedup: float = 4.0) -> dict:
    run_dir, size = Path(run_dir), cfg.serving_resolution
    export = run_dir / "export"
    variants = [(m, p) for m in MODELS for p in PRECISIONS if (export / onnx_name(m, p)).is_file()]
    providers = available_cpu_providers()
    chosen = resolve_cpu_provider(cfg.export.cpu_provider)
    val = serving_inputs(val_image_paths(cfg.data)[:cfg.export.int8.val_images], size)
    x = val[:1]
    rows, refs = [], {}
    with progress_bar(len(variants) * len(providers), "precision bench") as bar:
        for model, precision in variants:
            path = export / onnx_name(model, precision)
            for provider in providers:
                bar.update(f"{model} {precision} {provider}")
                if model not in refs:  # the reference: fp32 on the default provider
                    ref = session(export / onnx_name(model), "default", threads)
                    n_styles = len(json.loads((run_dir / model / ARCH_FILE).read_text())["styles"])
                    refs[model] = {s: run_batched(ref, val, s) for s in range(n_styles)}
                sess = session(path, provider, threads)
                outs = {s: run_batched(sess, val, s) for s in refs[model]}
                rows.append({"model": model, "precision": precision, "provider": provider,
                             "size_bytes": path.stat().st_size,
                             **_quality(refs[model], outs, ""),
                             **(_quality(refs["teacher"], outs, "_vs_teacher") if "teacher" in refs else {}),
                             **time_session(sess, feeds_for(sess, x), repeats=repeats, warmup=5)})
                bar.advance()
    report = {
        "what": f"batch 1, {size}x{size}, {threads} threads; quality vs the same model's fp32 and vs the teacher's "
                f"fp32 (default provider) on {len(val)} val portraits (worst style)",
        "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "machine": {"cpu": _cpu_name(), "cores": os.cpu_count(), "platform": platform.platform()},
        "versions": {"onnxruntime": ort.__version__, "python": platform.python_version()},
        "repeats": repeats, "provider": chosen, "variants": rows, "speedups": {}, "profiles": {},
    }
    for model in MODELS:
        base = _find(rows, model, "fp32", "default")
        fast = _find(rows, model, "int8", chosen)
        if base and fast:
            speedup = base["p50_ms"] / fast["p50_ms"]
            report["speedups"][model] = {"int8_provider": chosen, "int8_vs_fp32_default": speedup}
            if speedup < target_speedup:  # show where the time goes
                report["profiles"][model] = {
                    "fp32/default": _op_profile(export / onnx_name(model), "default", threads, x, run_dir),
                    f"int8/{chosen}": _op_profile(export / onnx_name(model, "int8"), chosen, threads, x, run_dir)}
    write_json(run_dir / "report" / "precision.json", report)
    write_text(run_dir / "report" / "precision.md", markdown(report))
    return report


def _quality(ref: dict, outs: dict, suffix: str) -> dict:
    """PSNR (None when identical) and SSIM, the worst over styles."""
    scores = [compare(ref[s], outs[s]) for s in outs]
    psnr = min(q["psnr_db"] for q in scores)
    return {f"psnr_db{suffix}": psnr if np.isfinite(psnr) else None, f"ssim{suffix}": min(q["ssim"] for q in scores)}


def _find(rows, model, precision, provider):
    return next((r for r in rows if (r["model"], r["precision"], r["provider"]) == (model, precision, provider)), None)


def _op_profile(path: Path, provider: str, threads: int, x: np.ndarray, run_dir: Path, runs: int = 10) -> dict:
    """Share of node time per operator type from ONNX Runtime's profiler (ms per run)."""
    (run_dir / "report").mkdir(parents=True, exist_ok=True)
    sess = session(path, provider, threads, profile_prefix=str(run_dir / "report" / "ort_profile"))
    feeds = feeds_for(sess, x)
    for _ in range(runs):
        sess.run(None, feeds)
    trace = Path(sess.end_profiling())
    totals: dict[str, float] = defaultdict(float)
    for event in json.loads(trace.read_text()):
        if event.get("cat") == "Node" and event["name"].endswith("_kernel_time"):
            totals[event["args"].get("op_name", "?")] += event["dur"] / 1000 / runs
    trace.unlink()
    return dict(sorted(((k, round(v, 3)) for k, v in totals.items()), key=lambda kv: -kv[1]))


def markdown(report: dict) -> str:
    lines = [f"{report['what']}; {report['machine']['cpu']}, onnxruntime {report['versions']['onnxruntime']}, "
             f"{report['date'][:10]}", "",
             "| model | precision | provider | p50 ms | p95 ms | PSNR / SSIM vs own fp32 | PSNR / SSIM vs teacher "
             "| size MB |", "|---|---|---|---:|---:|---:|---:|---:|"]

    def score(r, suffix):
        psnr = r.get(f"psnr_db{suffix}", "n/a")
        return "exact" if psnr is None else f"{psnr:.1f} dB / {r[f'ssim{suffix}']:.4f}"

    for r in report["variants"]:
        lines.append(f"| {r['model']} | {r['precision']} | {r['provider']} | {r['p50_ms']:.1f} | {r['p95_ms']:.1f} | "
                     f"{score(r, '')} | {score(r, '_vs_teacher')} | {r['size_bytes'] / 1e6:.2f} |")
    for model, s in report["speedups"].items():
        lines.append(f"\n{model}: int8 on {s['int8_provider']} is {s['int8_vs_fp32_default']:.2f}x fp32 on the "
                     "default provider")
    for model, profiles in report["profiles"].items():
        for variant, ops in profiles.items():
            top = ", ".join(f"{op} {ms:.1f} ms" for op, ms in list(ops.items())[:6])
            lines.append(f"\n{model} {variant} per-operator time per run: {top}")
    return "\n".join(lines) + "\n"
