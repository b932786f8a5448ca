"""Every exported precision on every CPU execution provider: latency against quality.

For each model (teacher, student) and precision (fp32, fp16, int8) on each provider this
onnxruntime build has (default CPU, OpenVINO): batch 1 at the serving size, a fixed thread count,
p50/p95 after warm-up; PSNR/SSIM against the model's fp32 output on val portraits; file size.
All variants are timed in one run, so ratios between them are comparable on a noisy machine; the
headline point (batch 1 at the serving size), which selection decides on, is timed interleaved:
round after round, one run of each variant, so drift on a shared machine hits every variant alike.
The headline ratio: int8 on the configured provider against fp32 on the default provider. When it
is under `target_speedup`, ONNX Runtime's per-operator profile of both shows where the time goes.
"""

from __future__ import annotations

import json
import platform
import time
from collections import defaultdict
from pathlib import Path

import numpy as np
import onnxruntime as ort
import torch

from stylepress import prepost
from stylepress.config import Config
from stylepress.data import val_image_paths
from stylepress.errors import StylepressError
from stylepress.export import float_precision, serving_inputs
from stylepress.export.quantize import compare
from stylepress.export.runtime import (
    available_cpu_providers,
    feeds_for,
    percentiles,
    providers_for,
    resolve_cpu_provider,
    run_batched,
    session,
    time_call,
)
from stylepress.fsutil import write_json, write_text
from stylepress.layout import MODELS, PRECISIONS, RunLayout
from stylepress.machine import describe, now
from stylepress.models import load_generator, read_spec
from stylepress.progress import progress_bar

from .peak_memory import peak_memory_mb


def run(cfg: Config, run_dir: str | Path, repeats: int | None = None, threads: int | None = None,
        target_speedup: float = 4.0) -> dict:
    """Bench every variant; `repeats` and `threads` default to [bench]."""
    layout, size, bc = RunLayout(run_dir), cfg.serving_resolution, cfg.bench
    repeats, threads = repeats or bc.repeats, threads or bc.threads
    eager = layout.models()
    for model in eager:
        if not layout.onnx(model).is_file():
            raise StylepressError(f"{layout.model_dir(model)} has a checkpoint but {layout.onnx(model)} is missing: "
                                  "run `stylepress export` first")
    variants = [(m, p) for m in MODELS for p in PRECISIONS if layout.onnx(m, p).is_file()]
    if not variants:
        raise StylepressError(f"nothing to bench: {layout.export} has no ONNX models (run `stylepress export`)")
    providers = available_cpu_providers()
    chosen = resolve_cpu_provider(cfg.export.cpu_provider)
    paths = val_image_paths(cfg.data)
    val = serving_inputs(paths[:cfg.export.int8.val_images], size)
    points = sorted({(1, size)} | {(b, r) for r in bc.resolutions for b in bc.batches},
                    key=lambda p: (p != (1, size), p[1], p[0]))  # the serving point first: the headline
    images = {r: serving_inputs(paths[:1], r) for r in {r for _, r in points}}
    refs = {}  # per model and style: the fp32 output on the default provider, the quality reference
    for model in eager:
        ref = session(layout.onnx(model), "default", threads)
        n_styles = read_spec(layout.model_dir(model)).num_styles
        refs[model] = {s: run_batched(ref, val, s) for s in range(n_styles)}
    # Each variant: (model, precision, provider, size in bytes, outputs on val, a runner per point, peak args)
    entries = []
    for model, precision in variants:
        path = layout.onnx(model, precision)
        for provider in providers:
            fp = float_precision(layout, model, provider)
            outs = {s: run_batched(session(path, provider, threads, float_precision=fp), val, s) for s in refs[model]}

            def onnx_runner(batch, res, path=path, provider=provider, fp=fp):
                sess = session(path, provider, threads, shape=(batch, res, res),  # compiled for its one shape
                               float_precision=fp)
                feeds = feeds_for(sess, np.repeat(images[res], batch, axis=0))
                return lambda: sess.run(None, feeds)

            peak = ("onnx", str(path), size, threads, providers_for(path, provider, threads, (1, size, size), fp))
            entries.append((model, precision, provider, path.stat().st_size, outs, onnx_runner, peak))
    torch.set_num_threads(threads)
    for model in eager:  # the PyTorch model itself, as trained: the baseline users start from
        net, spec = load_generator(layout.model_dir(model))
        with torch.inference_mode():
            outs = {s: net(torch.from_numpy(val), torch.full((len(val),), s)).numpy() for s in refs[model]}

        def eager_runner(batch, res, net=net):
            x, style = torch.from_numpy(np.repeat(images[res], batch, axis=0)), torch.zeros(batch, dtype=torch.long)

            def call():
                with torch.inference_mode():
                    net(x, style)
            return call

        entries.append((model, "fp32", "eager", (layout.model_dir(model) / "weights.safetensors").stat().st_size,
                        outs, eager_runner, ("eager", str(layout.model_dir(model)), size, threads)))
    headline = time_interleaved([e[5](1, size) for e in entries], repeats)
    rows = []
    with progress_bar(len(entries), "precision bench") as bar:
        for (model, precision, provider, size_bytes, outs, runner, peak), first in zip(entries, headline, strict=True):
            bar.update(f"{model} {precision} {provider}")
            rows.append(_row(model, precision, provider, size_bytes, refs, outs, points, runner, peak, first,
                             bc.budget_s) | {"float_precision": float_precision(layout, model, provider)})
            bar.advance()
    report = {
        "what": f"{threads} threads; headline batch 1 at {size}x{size} ({repeats} runs of every variant, "
                f"interleaved), other points {repeats} runs "
                f"or {bc.budget_s:g} s; quality vs the same model's fp32 and vs the teacher's fp32 (ONNX Runtime "
                f"default provider) on {len(val)} val portraits (worst style); peak memory: a fresh process loading "
                f"the model and running batch 1 at {size}x{size}",
        "date": now(),
        "machine": describe(),
        "versions": {"onnxruntime": ort.__version__, "torch": torch.__version__, "python": platform.python_version()},
        "repeats": repeats, "provider": chosen, "variants": rows, "speedups": {}, "profiles": {},
        "prepost_ms": prepost_costs(paths[0].read_bytes(), size, repeats),
    }
    x = val[:1]
    for model in eager:
        base = _find(rows, model, "fp32", "default")
        fast = _find(rows, model, "int8", chosen)
        if base and fast:
            speedup = base["p50_ms"] / fast["p50_ms"]
            report["speedups"][model] = {"int8_provider": chosen, "int8_vs_fp32_default": speedup}
            if speedup < target_speedup:  # show where the time goes
                report["profiles"][model] = {
                    "fp32/default": _op_profile(layout.onnx(model), "default", threads, x, layout.report),
                    f"int8/{chosen}": _op_profile(layout.onnx(model, "int8"), chosen, threads, x, layout.report,
                                                  float_precision(layout, model, chosen))}
    write_json(layout.precision_json, report)
    write_text(layout.precision_md, markdown(report))
    return report


def prepost_costs(data: bytes, size: int, repeats: int) -> dict[str, float]:
    """p50 ms of the served path's own work on one val portrait: decode + letterbox (the preprocess model)
    and un-letterbox + encode in each output format (the postprocess model); the repository derives their
    instance counts from these against the generator's time."""
    x, box = prepost.letterbox(prepost.decode(data), size)
    costs = {"decode": time_call(lambda: prepost.letterbox(prepost.decode(data), size), repeats, 2)["p50_ms"]}
    for fmt in prepost.OUTPUT_FORMATS:
        costs[f"encode_{fmt}"] = time_call(lambda f=fmt: prepost.encode(prepost.unletterbox(x, box), f), repeats,
                                           2)["p50_ms"]
    return costs


def time_interleaved(calls: list, repeats: int, warmup: int = 5) -> list[dict]:
    """`time_call`'s figures for each call, timed round-robin: one run of each per round."""
    for _ in range(warmup):
        for fn in calls:
            fn()
    times: list[list[float]] = [[] for _ in calls]
    for _ in range(repeats):
        for fn, out in zip(calls, times, strict=True):
            t0 = time.perf_counter()
            fn()
            out.append((time.perf_counter() - t0) * 1000)
    return [percentiles(t) for t in times]


def _row(model, precision, provider, size_bytes, refs, outs, points, runner, peak_args, first, budget_s) -> dict:
    """One variant: quality, then latency at each (batch, resolution) point (the first, the headline,
    already timed interleaved); the first point's figures are also the row's own (p50_ms ...)."""
    timed = []
    for i, (batch, res) in enumerate(points):
        t = first if i == 0 else time_call(runner(batch, res), repeats=first["runs"], warmup=1, budget_s=budget_s)
        timed.append({"resolution": res, "batch": batch, **t, "throughput": 1000.0 * batch / t["p50_ms"]})
    first = {k: v for k, v in timed[0].items() if k not in ("resolution", "batch", "throughput")}
    return {"model": model, "precision": precision, "provider": provider, "size_bytes": size_bytes,
            **(_quality(refs[model], outs, "") if model in refs else {}),
            **(_quality(refs["teacher"], outs, "_vs_teacher") if "teacher" in refs else {}),
            **first, "points": timed, "peak_memory_mb": peak_memory_mb(*peak_args)}


def _quality(ref: dict, outs: dict, suffix: str) -> dict:
    """PSNR (None when identical) and SSIM, the worst over styles."""
    scores = [compare(ref[s], outs[s]) for s in outs]
    psnr = min(q["psnr_db"] for q in scores)
    return {f"psnr_db{suffix}": psnr if np.isfinite(psnr) else None, f"ssim{suffix}": min(q["ssim"] for q in scores)}


def _find(rows, model, precision, provider):
    return next((r for r in rows if (r["model"], r["precision"], r["provider"]) == (model, precision, provider)), None)


def _op_profile(path: Path, provider: str, threads: int, x: np.ndarray, folder: Path, fp: str = "f32",
                runs: int = 10) -> dict:
    """Share of node time per operator type from ONNX Runtime's profiler (ms per run)."""
    folder.mkdir(parents=True, exist_ok=True)
    sess = session(path, provider, threads, profile_prefix=str(folder / "ort_profile"),
                   shape=(len(x), *x.shape[2:]), float_precision=fp)  # as timed
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
        provider = r["provider"] + (" (bf16)" if r.get("float_precision") == "bf16" else "")
        lines.append(f"| {r['model']} | {r['precision']} | {provider} | {r['p50_ms']:.1f} | {r['p95_ms']:.1f} | "
                     f"{score(r, '')} | {score(r, '_vs_teacher')} | {r['size_bytes'] / 1e6:.2f} |")
    for model, s in report["speedups"].items():
        lines.append(f"\n{model}: int8 on {s['int8_provider']} is {s['int8_vs_fp32_default']:.2f}x fp32 on the "
                     "default provider")
    for model, profiles in report["profiles"].items():
        for variant, ops in profiles.items():
            top = ", ".join(f"{op} {ms:.1f} ms" for op, ms in list(ops.items())[:6])
            lines.append(f"\n{model} {variant} per-operator time per run: {top}")
    return "\n".join(lines) + "\n"
