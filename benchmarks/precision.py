"""Every exported precision on every CPU execution provider: latency against quality.

For each model (teacher, student) and precision (fp32, fp16, int8) on each provider this
onnxruntime build has (default CPU, OpenVINO): batch 1 at the serving size, a fixed thread count,
p50/p95 after warm-up; PSNR/SSIM against the model's fp32 output on val portraits; file size.
All variants are timed in one run, so ratios between them are comparable on a noisy machine.
The headline ratio: int8 on the configured provider against fp32 on the default provider. When it
is under `target_speedup`, ONNX Runtime's per-operator profile of both shows where the time goes.
"""

from __future__ import annotations

import json
import multiprocessing
import platform
from collections import defaultdict
from pathlib import Path

import numpy as np
import onnxruntime as ort
import torch

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
    time_call,
)
from stylepress.fsutil import write_json, write_text
from stylepress.machine import describe, now
from stylepress.models import ARCH_FILE, load_generator
from stylepress.progress import progress_bar

PRECISIONS = ("fp32", "fp16", "int8")


def run(cfg: Config, run_dir: str | Path, repeats: int = 30, threads: int = 2, target_speedup: float = 4.0) -> dict:
    run_dir, size, bc = Path(run_dir), cfg.serving_resolution, cfg.bench
    export = run_dir / "export"
    variants = [(m, p) for m in MODELS for p in PRECISIONS if (export / onnx_name(m, p)).is_file()]
    providers = available_cpu_providers()
    chosen = resolve_cpu_provider(cfg.export.cpu_provider)
    paths = val_image_paths(cfg.data)
    val = serving_inputs(paths[:cfg.export.int8.val_images], size)
    points = sorted({(1, size)} | {(b, r) for r in bc.resolutions for b in bc.batches},
                    key=lambda p: (p != (1, size), p[1], p[0]))  # the serving point first: the headline
    images = {r: serving_inputs(paths[:1], r) for r in {r for _, r in points}}
    eager = [m for m in MODELS if (run_dir / m / ARCH_FILE).is_file()]
    rows, refs = [], {}
    with progress_bar(len(variants) * len(providers) + len(eager), "precision bench") as bar:
        for model, precision in variants:
            path = export / onnx_name(model, precision)
            for provider in providers:
                bar.update(f"{model} {precision} {provider}")
                if model not in refs:  # the reference: fp32 on the default provider
                    ref = session(export / onnx_name(model), "default", threads)
                    n_styles = len(json.loads((run_dir / model / ARCH_FILE).read_text())["styles"])
                    refs[model] = {s: run_batched(ref, val, s) for s in range(n_styles)}
                outs = {s: run_batched(session(path, provider, threads), val, s) for s in refs[model]}

                def onnx_runner(batch, res, path=path, provider=provider):
                    sess = session(path, provider, threads, shape=(batch, res, res))  # compiled for its one shape
                    feeds = feeds_for(sess, np.repeat(images[res], batch, axis=0))
                    return lambda: sess.run(None, feeds)

                rows.append(_row(model, precision, provider, path.stat().st_size, refs, outs, points, onnx_runner,
                                 ("onnx", str(path), provider, threads), repeats, bc.budget_s))
                bar.advance()
        for model in eager:  # the PyTorch model itself, as trained: the baseline users start from
            bar.update(f"{model} pytorch eager")
            net, spec = load_generator(run_dir / model)
            torch.set_num_threads(threads)
            with torch.inference_mode():
                outs = {s: net(torch.from_numpy(val), torch.full((len(val),), s)).numpy() for s in refs.get(model, {})}

            def eager_runner(batch, res, net=net):
                x, style = torch.from_numpy(np.repeat(images[res], batch, axis=0)), torch.zeros(batch, dtype=torch.long)

                def call():
                    with torch.inference_mode():
                        net(x, style)
                return call

            rows.append(_row(model, "fp32", "eager", (run_dir / model / "weights.safetensors").stat().st_size,
                             refs, outs, points, eager_runner, ("eager", str(run_dir / model), "eager", threads),
                             repeats, bc.budget_s))
            bar.advance()
    report = {
        "what": f"{threads} threads; headline batch 1 at {size}x{size} ({repeats} runs), other points {repeats} runs "
                f"or {bc.budget_s:g} s; quality vs the same model's fp32 and vs the teacher's fp32 (ONNX Runtime "
                f"default provider) on {len(val)} val portraits (worst style); peak memory: a fresh process loading "
                f"the model and running batch 1 at {size}x{size}",
        "date": now(),
        "machine": describe(),
        "versions": {"onnxruntime": ort.__version__, "torch": torch.__version__, "python": platform.python_version()},
        "repeats": repeats, "provider": chosen, "variants": rows, "speedups": {}, "profiles": {},
    }
    x = val[:1]
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


def _row(model, precision, provider, size_bytes, refs, outs, points, runner, peak_args, repeats, budget_s) -> dict:
    """One variant: quality, then latency at each (batch, resolution) point; the first point's figures
    are also the row's own (p50_ms ...)."""
    timed = []
    for i, (batch, res) in enumerate(points):
        t = time_call(runner(batch, res), repeats=repeats, warmup=5 if i == 0 else 1,
                      budget_s=None if i == 0 else budget_s)
        timed.append({"resolution": res, "batch": batch, **t, "throughput": 1000.0 * batch / t["p50_ms"]})
    first = {k: v for k, v in timed[0].items() if k not in ("resolution", "batch", "throughput")}
    return {"model": model, "precision": precision, "provider": provider, "size_bytes": size_bytes,
            **(_quality(refs[model], outs, "") if model in refs else {}),
            **(_quality(refs["teacher"], outs, "_vs_teacher") if "teacher" in refs else {}),
            **first, "points": timed, "peak_memory_mb": peak_memory_mb(*peak_args, timed[0]["resolution"])}


def peak_memory_mb(kind: str, path: str, provider: str, threads: int, size: int) -> float:
    """Resident memory a fresh process adds to load the model and run batch 1 at `size`² once (MB)."""
    with multiprocessing.get_context("spawn").Pool(1) as pool:
        return pool.apply(_peak_child, (kind, path, provider, threads, size))


def _peak_child(kind: str, path: str, provider: str, threads: int, size: int) -> float:
    def status_mb(field: str) -> float:  # VmHWM is this process's own peak (ru_maxrss survives fork + exec)
        line = next(x for x in Path("/proc/self/status").read_text().splitlines() if x.startswith(field))
        return int(line.split()[1]) / 1024

    x = np.zeros((1, 3, size, size), np.float32)
    before = status_mb("VmRSS:")  # imports done
    if kind == "eager":
        torch.set_num_threads(threads)
        net, _ = load_generator(path)
        with torch.inference_mode():
            net(torch.from_numpy(x), torch.zeros(1, dtype=torch.long))
    else:
        sess = session(path, provider, threads, shape=(1, size, size))
        sess.run(None, feeds_for(sess, x))
    return status_mb("VmHWM:") - before


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
    sess = session(path, provider, threads, profile_prefix=str(run_dir / "report" / "ort_profile"),
                   shape=(len(x), *x.shape[2:]))  # as timed
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
