"""The latency-versus-quality report and the CI gates, from the benchmark results of a run.

report/report.json (schema 1):
  {"schema": 1, "date", "machine", "versions", "objective", "selected": NAME | null,
   "gates": [{"name", "threshold", "value", "margin", "passed"}],
   "variants": [{"name", "model", "runtime", "provider", "precision", "macs", "params", "size_bytes",
                 "quality": {"psnr_db", "ssim"},          # against the teacher's fp32 output; psnr null = identical
                 "points": [{"resolution", "batch", "concurrency", "p50_ms", "p95_ms", "p99_ms", "throughput"}]}]}
report/report.md (tables), report/pareto.png (p50 latency against PSNR to the teacher, frontier drawn).
"""

from __future__ import annotations

import json
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

from stylepress.config import Config  # noqa: E402
from stylepress.fsutil import atomic_path, write_json, write_text  # noqa: E402
from stylepress.models import load_generator  # noqa: E402

SCHEMA = 1
EXACT_DB = 100.0  # where an identical output is drawn and compared (PSNR is infinite)
RUNTIMES = {"default": "onnxruntime", "openvino": "onnxruntime-openvino"}


def _counts(run_dir: Path, model: str, resolution: int) -> tuple[int, int]:
    from stylepress.compress.pruning import count  # torch-pruning's counter, as prune.json uses

    net, spec = load_generator(run_dir / model)
    return count(net, spec, resolution)


def variants(run_dir: Path, precision_report: dict, resolution: int) -> list[dict]:
    counts = {m: _counts(run_dir, m, resolution) for m in {r["model"] for r in precision_report["variants"]}}
    out = []
    for r in precision_report["variants"]:
        psnr = r.get("psnr_db_vs_teacher", r["psnr_db"] if r["model"] == "teacher" else None)
        ssim = r.get("ssim_vs_teacher", r["ssim"] if r["model"] == "teacher" else None)
        out.append({
            "name": f"{r['model']}-{r['precision']}-{r['provider']}", "model": r["model"],
            "runtime": RUNTIMES[r["provider"]], "provider": r["provider"], "precision": r["precision"],
            "macs": counts[r["model"]][0], "params": counts[r["model"]][1], "size_bytes": r["size_bytes"],
            "quality": {"psnr_db": psnr, "ssim": ssim},
            "points": [{"resolution": resolution, "batch": 1, "concurrency": 1, "p50_ms": r["p50_ms"],
                        "p95_ms": r["p95_ms"], "p99_ms": r["p99_ms"], "throughput": 1000.0 / r["p50_ms"]}],
        })
    return out


def _psnr(v: dict) -> float:
    return EXACT_DB if v["quality"]["psnr_db"] is None else v["quality"]["psnr_db"]


def _meets_quality(v: dict, gates) -> bool:
    return _psnr(v) >= gates.min_psnr_db and (v["quality"]["ssim"] or 0) >= gates.min_ssim


def select(vs: list[dict], cfg: Config) -> dict | None:
    """[bench] objective: "fastest" (lowest p50 meeting the quality gates) or "quality" (best
    PSNR within max_p95_ms, when set)."""
    g = cfg.gates
    if cfg.bench.objective == "quality":
        ok = [v for v in vs if g.max_p95_ms is None or v["points"][0]["p95_ms"] <= g.max_p95_ms]
        return max(ok, key=_psnr, default=None)
    ok = [v for v in vs if _meets_quality(v, g)]
    return min(ok, key=lambda v: v["points"][0]["p50_ms"], default=None)


def gates(selected: dict | None, vs: list[dict], cfg: Config) -> list[dict]:
    """Every configured gate on the selected variant: threshold, value, margin, passed."""
    g = cfg.gates
    teacher = next((v for v in vs if v["name"] == "teacher-fp32-default"), None)
    p = selected["points"][0] if selected else None
    checks = [
        ("min_psnr_db", g.min_psnr_db, _psnr(selected) if selected else None, +1),
        ("min_ssim", g.min_ssim, selected["quality"]["ssim"] if selected else None, +1),
        ("max_p95_ms", g.max_p95_ms, p["p95_ms"] if p else None, -1),
        ("min_speedup_vs_teacher", g.min_speedup_vs_teacher,
         teacher["points"][0]["p50_ms"] / p["p50_ms"] if p and teacher else None, +1),
        ("min_throughput", g.min_throughput, p["throughput"] if p else None, +1),
    ]
    out = []
    for name, threshold, value, sign in checks:
        if threshold is None:
            continue
        margin = None if value is None else sign * (value - threshold)
        out.append({"name": name, "threshold": threshold, "value": value, "margin": margin,
                    "passed": margin is not None and margin >= 0})
    return out


def pareto_front(vs: list[dict]) -> list[dict]:
    """Variants no other variant beats on both latency (p50) and PSNR, fastest first."""
    ordered = sorted(vs, key=lambda v: (v["points"][0]["p50_ms"], -_psnr(v)))
    front, best = [], float("-inf")
    for v in ordered:
        if _psnr(v) > best:
            front.append(v)
            best = _psnr(v)
    return front


def plot(vs: list[dict], selected: dict | None, path: Path) -> None:
    fig, ax = plt.subplots(figsize=(7, 4.5), dpi=120)
    for v in vs:
        ax.scatter(v["points"][0]["p50_ms"], _psnr(v), s=30,
                   marker="o" if v["provider"] == "default" else "s", color="tab:blue" if v["model"] == "teacher"
                   else "tab:orange")
    front = pareto_front(vs)
    ax.plot([v["points"][0]["p50_ms"] for v in front], [_psnr(v) for v in front], color="tab:green", lw=1.2,
            label="Pareto frontier")
    for v in front:
        ax.annotate(v["name"], (v["points"][0]["p50_ms"], _psnr(v)), fontsize=7, xytext=(4, 3),
                    textcoords="offset points")
    if selected:
        ax.scatter(selected["points"][0]["p50_ms"], _psnr(selected), s=140, facecolors="none", edgecolors="red",
                   label=f"selected: {selected['name']}")
    ax.set_xscale("log")
    ax.set_xlabel("p50 latency, batch 1 (ms, log scale)")
    ax.set_ylabel(f"PSNR to the teacher (dB; identical drawn at {EXACT_DB:g})")
    ax.set_title("latency against quality (circles: default CPU provider, squares: OpenVINO)", fontsize=9)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8, loc="lower right")
    fig.tight_layout()
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png")
    plt.close(fig)


def markdown(report: dict) -> str:
    lines = [f"# stylepress report ({report['date'][:10]})", "",
             f"Machine: {report['machine']['cpu']}, {report['machine']['cores']} cores; "
             f"onnxruntime {report['versions']['onnxruntime']}. Objective: {report['objective']}; "
             f"selected: **{report['selected'] or 'none (no variant meets the quality gates)'}**.", "",
             "| variant | runtime | precision | GMACs | params (M) | size MB | PSNR dB | SSIM | p50 ms | p95 ms |",
             "|---|---|---|---:|---:|---:|---:|---:|---:|---:|"]
    for v in report["variants"]:
        p, q = v["points"][0], v["quality"]
        psnr = "identical" if q["psnr_db"] is None else f"{q['psnr_db']:.2f}"
        lines.append(f"| {v['name']} | {v['runtime']} | {v['precision']} | {v['macs'] / 1e9:.2f} | "
                     f"{v['params'] / 1e6:.2f} | {v['size_bytes'] / 1e6:.2f} | {psnr} | {q['ssim']:.4f} | "
                     f"{p['p50_ms']:.1f} | {p['p95_ms']:.1f} |")
    if report["gates"]:
        lines += ["", "| gate | threshold | measured | margin | |", "|---|---:|---:|---:|---|"]
        for g in report["gates"]:
            value = "n/a" if g["value"] is None else f"{g['value']:.3f}"
            margin = "n/a" if g["margin"] is None else f"{g['margin']:+.3f}"
            lines.append(f"| {g['name']} | {g['threshold']:g} | {value} | {margin} | "
                         f"{'pass' if g['passed'] else '**FAIL**'} |")
    return "\n".join(lines) + "\n"


def run(cfg: Config, run_dir: str | Path) -> dict:
    """Assemble report/ from report/precision.json; returns the report."""
    run_dir = Path(run_dir)
    precision_report = json.loads((run_dir / "report" / "precision.json").read_text())
    vs = variants(run_dir, precision_report, cfg.serving_resolution)
    selected = select(vs, cfg)
    report = {"schema": SCHEMA, "date": precision_report["date"], "machine": precision_report["machine"],
              "versions": precision_report["versions"], "objective": cfg.bench.objective,
              "selected": selected["name"] if selected else None, "gates": gates(selected, vs, cfg), "variants": vs}
    write_json(run_dir / "report" / "report.json", report)
    write_text(run_dir / "report" / "report.md", markdown(report))
    plot(vs, selected, run_dir / "report" / "pareto.png")
    return report
