"""The one deployment decision: which exported variant the repository serves, and why.

`run(cfg, run_dir)` reads the in-process bench (report/precision.json, every variant timed
interleaved in one run) and the export's quality checks (export/quant.json), and writes
selection.json:

  {"schema": 1, "target", "objective", "source": "objective" | "config", "rule",
   "served": {"name", "model", "precision", "provider"},
   "candidates": [{"name", "model", "precision", "provider", "p50_ms", "p95_ms", "psnr_db", "ssim",
                   "eligible", "why"}]}

The repository serves exactly `served`; the served bench and the gates judge it. Only `served`
(and the target) is a deployment input: the candidates' timings are there to read, and a rerun
whose decision is unchanged leaves the repository alone.

Rule on CPU targets, objective "fastest": among the eligible candidates (ONNX, not failed at
export, within the pins, meeting the quality gates against the teacher), those within MARGIN of
the fastest median are a tie, and the best quality among them wins: a ±10 % timing never flips
the choice between precisions. Objective "quality": the best PSNR within gates.max_p95_ms.
GPU targets cannot be timed here: the rule is stated in the file instead.
"""

from __future__ import annotations

import json
from pathlib import Path

from .config import Config
from .errors import StylepressError
from .fsutil import write_json
from .layout import PRECISIONS, RunLayout

SCHEMA = 1
MARGIN = 1.1  # medians within 10 % of the fastest count as a tie (shared, noisy machines)
EXACT_DB = 100.0  # PSNR of an identical output, for ranking (it is infinite)
GPU_TARGETS = ("tensorrt", "onnxruntime-tensorrt")


def variant_name(model: str, precision: str, provider: str) -> str:
    return f"{model}-{precision}-{provider}"


def run(cfg: Config, run_dir: str | Path) -> dict:
    layout = RunLayout(run_dir)
    bench = json.loads(layout.precision_json.read_text()) if layout.precision_json.is_file() else None
    quant = json.loads(layout.quant.read_text()) if layout.quant.is_file() else {}
    selection = decide(cfg, bench, quant, layout)
    write_json(layout.selection, selection)
    return selection


def load(run_dir: str | Path) -> dict:
    path = RunLayout(run_dir).selection
    if not path.is_file():
        raise StylepressError(f"{path} not found: run `stylepress select` (or `stylepress build`) first")
    selection = json.loads(path.read_text())
    if selection.get("schema") != SCHEMA:
        raise StylepressError(f"{path}: schema {selection.get('schema')!r}, this stylepress reads {SCHEMA}")
    return selection


def decision(selection: dict) -> dict:
    """The part of selection.json that deployment depends on (hashed by the pipeline)."""
    return {"target": selection["target"], "served": selection["served"]}


def decide(cfg: Config, bench: dict | None, quant: dict, layout: RunLayout) -> dict:
    from .export.runtime import resolve_cpu_provider

    sc = cfg.serving
    pinned = sc.model != "auto" or sc.precision != "auto"
    base = {"schema": SCHEMA, "target": sc.target, "objective": cfg.bench.objective,
            "source": "config" if pinned else "objective", "margin": MARGIN}
    if bench is None:
        # Without measurements only a full pin can be served: nothing else to decide from.
        if sc.model == "auto" or sc.precision == "auto":
            raise StylepressError(f"{layout.precision_json} not found: run `stylepress bench` first, or pin "
                                  "serving.model and serving.precision")
        provider = "tensorrt" if sc.target in GPU_TARGETS else resolve_cpu_provider(cfg.export.cpu_provider)
        _exists(layout, sc.model, sc.precision, sc.target)
        return {**base, "rule": "serving.model and serving.precision pinned; no bench figures",
                "served": _served(sc.model, sc.precision, provider), "candidates": []}
    candidates = [_candidate(row, cfg, quant, layout) for row in bench["variants"]]
    if sc.target in GPU_TARGETS:
        return _gpu_rule(cfg, base, candidates, layout)
    eligible = [c for c in candidates if c["eligible"]]
    if cfg.bench.objective == "quality":
        within = [c for c in eligible if cfg.gates.max_p95_ms is None or c["p95_ms"] <= cfg.gates.max_p95_ms]
        for c in eligible:
            if not any(c is w for w in within):
                c.update(eligible=False, why=f"p95 {c['p95_ms']:.2f} ms over gates.max_p95_ms")
        chosen = max(within, key=_quality_key, default=None)
        rule = "objective quality: the best PSNR (then SSIM) to the teacher within gates.max_p95_ms"
    else:
        fastest = min((c["p50_ms"] for c in eligible), default=None)
        ties = [c for c in eligible if c["p50_ms"] <= fastest * MARGIN] if eligible else []
        chosen = max(ties, key=_quality_key, default=None)
        rule = (f"objective fastest: among the eligible, medians within {MARGIN:g}x of the fastest are a tie; "
                "the best PSNR (then SSIM) to the teacher among them wins")
        for c in eligible:
            if c is not chosen:
                c["why"] = ("tie with the fastest, lower quality" if any(c is t for t in ties)
                            else f"slower than {MARGIN:g}x the fastest ({fastest:.2f} ms)")
    fallback = chosen is None
    if fallback:  # nothing meets the gates: serve the best the pins allow, and let the gates fail
        allowed = [c for c in candidates if c["allowed"]]
        if not allowed:
            raise StylepressError(f"no exported variant matches serving.model = {sc.model!r}, serving.precision = "
                                  f"{sc.precision!r} and export.cpu_provider (see {layout.precision_json})")
        chosen = max(allowed, key=_quality_key)
        rule += "; no candidate met the quality gates, so the best-quality allowed one is served and the gates fail"
    chosen["why"] = ("served (fallback: " if fallback else "served (") + base["source"] + ")"
    for c in candidates:
        c.pop("allowed")
    return {**base, "rule": rule, "fallback": fallback,
            "served": _served(chosen["model"], chosen["precision"], chosen["provider"]), "candidates": candidates}


def _candidate(row: dict, cfg: Config, quant: dict, layout: RunLayout) -> dict:
    """A bench row with its eligibility: `allowed` by the pins and the export, `eligible` if it also
    meets the quality gates."""
    sc, g = cfg.serving, cfg.gates
    model, precision, provider = row["model"], row["precision"], row["provider"]
    psnr = row.get("psnr_db_vs_teacher")
    c = {"name": variant_name(model, precision, provider), "model": model, "precision": precision,
         "provider": provider, "p50_ms": row["p50_ms"], "p95_ms": row["p95_ms"], "psnr_db": psnr,
         "ssim": row.get("ssim_vs_teacher")}
    # fp32's own check is of its bf16 output: it holds for OpenVINO (where bf16 runs), not for f32 elsewhere.
    export_check = quant.get(model, {}).get(precision, {}) if precision != "fp32" or provider == "openvino" else {}
    why = None
    if provider == "eager":
        why = "PyTorch eager: the repository serves ONNX"
    elif sc.model != "auto" and model != sc.model:
        why = f"serving.model pins {sc.model}"
    elif sc.precision != "auto" and precision != sc.precision:
        why = f"serving.precision pins {sc.precision}"
    elif cfg.export.cpu_provider is not None and sc.target not in GPU_TARGETS and provider != cfg.export.cpu_provider:
        why = f"export.cpu_provider pins {cfg.export.cpu_provider}"
    elif not export_check.get("met", True) and sc.precision == "auto":  # a pinned precision is served anyway
        why = f"{precision} missed its export target: {export_check.get('reason')}"
    elif not layout.onnx(model, precision).is_file():
        why = f"{layout.onnx(model, precision).name} is missing"
    c["allowed"] = why is None
    if why is None and _psnr(c) < g.min_psnr_db:
        why = f"PSNR to the teacher {_psnr(c):.2f} dB < gates.min_psnr_db {g.min_psnr_db:g}"
    elif why is None and (c["ssim"] or 0) < g.min_ssim:
        why = f"SSIM to the teacher {c['ssim']:.4f} < gates.min_ssim {g.min_ssim:g}"
    c["eligible"], c["why"] = why is None, why or "eligible"
    return c


def _gpu_rule(cfg: Config, base: dict, candidates: list[dict], layout: RunLayout) -> dict:
    """GPU targets: no GPU timing here, so a fixed rule on the CPU-measured quality of the same ONNX."""
    rule = ("GPU target, not timed here: the student when one of its precisions meets the quality gates, else the "
            "teacher; of that model, the lowest precision (int8, fp16, fp32) that met its export target and the "
            "quality gates (quality measured in process on the same ONNX)"
            + ("; an engine must exist (tensorrt_plan)" if cfg.serving.target == "tensorrt" else ""))
    ok = {(c["model"], c["precision"]) for c in candidates if c["eligible"]
          and (cfg.serving.target != "tensorrt" or layout.plan(c["model"], c["precision"]).is_file())}
    order = [(m, p) for m in ("student", "teacher") for p in reversed(PRECISIONS)]
    pick = next((mp for mp in order if mp in ok), None)
    fallback = pick is None
    if fallback:
        pins = [(m, p) for m, p in order if cfg.serving.model in ("auto", m) and cfg.serving.precision in ("auto", p)]
        pick = pins[-1] if pins else ("teacher", "fp32")
    for c in candidates:
        c.pop("allowed")
        if (c["model"], c["precision"]) == pick:
            c["why"] = "served precision (GPU rule)"
    _exists(layout, *pick, cfg.serving.target)
    return {**base, "rule": rule, "fallback": fallback, "served": _served(*pick, "tensorrt"), "candidates": candidates}


def _served(model: str, precision: str, provider: str) -> dict:
    return {"name": variant_name(model, precision, provider), "model": model, "precision": precision,
            "provider": provider}


def _exists(layout: RunLayout, model: str, precision: str, target: str) -> None:
    path = layout.plan(model, precision) if target == "tensorrt" else layout.onnx(model, precision)
    if not path.is_file():
        hint = ("TensorRT engines are built by `stylepress export` on a host with TensorRT and a CUDA GPU"
                if target == "tensorrt" else "run `stylepress export` first")
        raise StylepressError(f"{path} not found: {hint}")


def capped_db(psnr: float | None) -> float:
    """PSNR for ranking and plotting: identical (None) and near-identical outputs at EXACT_DB."""
    return EXACT_DB if psnr is None else min(EXACT_DB, psnr)


def _psnr(c: dict) -> float:
    return capped_db(c["psnr_db"])


def _quality_key(c: dict) -> tuple:
    return _psnr(c), c["ssim"] or 0, -c["p50_ms"]
