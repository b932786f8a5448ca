"""The latency-versus-quality report and the CI gates, from the benchmark results of a run.

report/report.json (schema 2):
  {"schema": 2, "date", "machine", "versions", "objective", "selected": NAME (selection.json's served variant),
   "served": NAME of the variant measured through Triton | null, "gated": "served" | "in process",
   "speedup_vs_teacher": the gated p50 against the teacher's on the same path,
   "gates": [{"name", "threshold", "value", "margin", "passed", "measured"}],
   "variants": [{"name", "model", "runtime", "provider", "precision", "macs", "params", "size_bytes",
                 "quality": {"psnr_db", "ssim"},          # against the teacher's fp32 output; psnr null = identical
                 "peak_memory_mb",                        # in process: a fresh process, batch 1 at the serving size
                 "points": [{"resolution", "batch", "concurrency", "p50_ms", "p90_ms", "p95_ms", "p99_ms",
                             "runs", "throughput"}]}]}    # points[0]: batch 1 at the serving size (concurrency 1)
  Variants: each ONNX precision on each CPU provider, the PyTorch models in eager mode
  (runtime "pytorch", never selected: the repository serves ONNX), and the served model through Triton
  (its points: each protocol and concurrency, plus "protocol", queue and compute times; its quality: what
  the server returned, at the portraits' own size).

The gates judge the served path: quality (worst style) is what the server returned for the val
portraits against the teacher's fp32 through the same pre/post-processing; max_p95_ms, min_throughput
and min_speedup_vs_teacher use the HTTP figures at concurrency 1 (the speedup's baseline: the
teacher's fp32 full path in process, decode to PNG). Where the target cannot be served on this
machine (GPU targets), the selected variant's in-process figures are gated and the report says so.
  "not_computed": {"lpips", "fid_kid"}: why those metrics have no figure.
report/report.md (tables), report/pareto.png (p50 latency against PSNR to the teacher, frontier drawn),
report/samples.png (val portraits: input | teacher | each model and precision, per style) and
report/report.html (one self-contained page: the tables and both images embedded).
"""

from __future__ import annotations

import base64
import html
import json
from pathlib import Path

import numpy as np
import torch

from stylepress import selection
from stylepress.config import Config
from stylepress.data import val_image_paths
from stylepress.export import float_precision, serving_inputs
from stylepress.export.runtime import resolve_cpu_provider, session
from stylepress.fsutil import write_json, write_text
from stylepress.images import grid, save_image, to_image
from stylepress.layout import RunLayout
from stylepress.models import load_generator, read_spec
from stylepress.plots import pyplot, save_png

from .serving_latency import concurrency_table

SAMPLE_PHOTOS = 3

SCHEMA = 2
EXACT_DB = selection.EXACT_DB  # where an identical output is drawn and compared (PSNR is infinite)
# Perceptual metrics need pretrained networks (LPIPS: AlexNet/VGG; FID/KID: Inception) that this
# project neither ships nor downloads: said so, never a number from nowhere.
NOT_COMPUTED = {"lpips": "not computed: no local weights", "fid_kid": "not computed: no local weights"}
RUNTIMES = {"default": "onnxruntime", "openvino": "onnxruntime-openvino", "eager": "pytorch"}


def _counts(layout: RunLayout, model: str, resolution: int) -> tuple[int, int]:
    from stylepress.compress.pruning import count  # torch-pruning's counter, as prune.json uses

    net, spec = load_generator(layout.model_dir(model))
    return count(net, spec, resolution)


def variants(layout: RunLayout, precision_report: dict, resolution: int) -> list[dict]:
    counts = {m: _counts(layout, m, resolution) for m in {r["model"] for r in precision_report["variants"]}}
    out = []
    for r in precision_report["variants"]:
        psnr = r.get("psnr_db_vs_teacher", r["psnr_db"] if r["model"] == "teacher" else None)
        ssim = r.get("ssim_vs_teacher", r["ssim"] if r["model"] == "teacher" else None)
        out.append({
            "name": selection.variant_name(r["model"], r["precision"], r["provider"]), "model": r["model"],
            "runtime": RUNTIMES[r["provider"]], "provider": r["provider"], "precision": r["precision"],
            "macs": counts[r["model"]][0], "params": counts[r["model"]][1], "size_bytes": r["size_bytes"],
            "quality": {"psnr_db": psnr, "ssim": ssim}, "peak_memory_mb": r["peak_memory_mb"],
            "points": [{"resolution": p["resolution"], "batch": p["batch"], "concurrency": 1, "p50_ms": p["p50_ms"],
                        "p90_ms": p["p90_ms"], "p95_ms": p["p95_ms"], "p99_ms": p["p99_ms"], "runs": p["runs"],
                        "throughput": p["throughput"]} for p in r["points"]],
        })
    return out


def served_variant(serving_report: dict, vs: list[dict]) -> dict | None:
    """The variant the repository serves, measured end to end through Triton (encoded in, PNG out)
    at each protocol and concurrency; its quality is what the server returned; sizes are those of the
    same ONNX in process."""
    served = serving_report["served"]
    same = next((v for v in vs if v["name"] == served["name"]), None)
    if same is None or not serving_report.get("concurrency"):
        return None
    points = [{"resolution": serving_report["resolution"], "batch": 1, **p} for p in serving_report["concurrency"]]
    points.sort(key=lambda p: (p["protocol"] != "http", p["concurrency"]))  # HTTP at concurrency 1 first
    q = serving_report["quality"]["served"]
    return {**same, "name": f"triton-{served['name']}", "quality": {"psnr_db": q["psnr_db"], "ssim": q["ssim"]},
            "runtime": f"tritonserver (python backend, {RUNTIMES[served['provider']]})", "points": points}


def _psnr(v: dict) -> float:
    return selection.capped_db(v["quality"]["psnr_db"])


def gates(gated: dict | None, teacher_p50_ms: float | None, cfg: Config, measured: str) -> list[dict]:
    """Every configured gate on the gated variant (the served one): threshold, value, margin, passed.
    `teacher_p50_ms` is the speedup's baseline, measured on the same path as the gated figures."""
    g = cfg.gates
    p = gated["points"][0] if gated else None
    checks = [
        ("min_psnr_db", g.min_psnr_db, _psnr(gated) if gated else None, +1),
        ("min_ssim", g.min_ssim, gated["quality"]["ssim"] if gated else None, +1),
        ("max_p95_ms", g.max_p95_ms, p["p95_ms"] if p else None, -1),
        ("min_speedup_vs_teacher", g.min_speedup_vs_teacher,
         teacher_p50_ms / p["p50_ms"] if p and teacher_p50_ms else None, +1),
        ("min_throughput", g.min_throughput, p["throughput"] if p else None, +1),
    ]
    out = []
    for name, threshold, value, sign in checks:
        if threshold is None:
            continue
        margin = None if value is None else sign * (value - threshold)
        out.append({"name": name, "threshold": threshold, "value": value, "margin": margin,
                    "passed": margin is not None and margin >= 0, "measured": measured})
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


def plot(vs: list[dict], served: dict | None, path: Path) -> None:
    plt = pyplot()
    fig, ax = plt.subplots(figsize=(7, 4.5), dpi=120)
    for v in vs:
        marker = "^" if v["name"].startswith("triton-") else "o" if v["provider"] == "default" else "s"
        ax.scatter(v["points"][0]["p50_ms"], _psnr(v), s=30, marker=marker,
                   color="tab:blue" if v["model"] == "teacher" else "tab:orange")
    front = pareto_front(vs)
    ax.plot([v["points"][0]["p50_ms"] for v in front], [_psnr(v) for v in front], color="tab:green", lw=1.2,
            label="Pareto frontier")
    for v in front:
        ax.annotate(v["name"], (v["points"][0]["p50_ms"], _psnr(v)), fontsize=7, xytext=(4, 3),
                    textcoords="offset points")
    if served:
        ax.scatter(served["points"][0]["p50_ms"], _psnr(served), s=140, facecolors="none", edgecolors="red",
                   label=f"served: {served['name']}")
    latencies = [v["points"][0]["p50_ms"] for v in vs]
    log_x = max(latencies) > 10 * min(latencies)
    if log_x:
        ax.set_xscale("log")
    ax.set_xlabel(f"p50 latency, batch 1 (ms{', log scale' if log_x else ''})")
    ax.set_ylabel(f"PSNR to the teacher (dB; identical: {EXACT_DB:g})")
    ax.set_title("latency against quality (circles: default CPU provider, squares: OpenVINO, "
                 "triangle: through Triton)", fontsize=9)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8, loc="lower right")
    fig.tight_layout()
    save_png(fig, path)


def gate_cells(g: dict) -> tuple[str, str]:
    """A gate's measured value and margin as text ("n/a" when nothing was measured)."""
    value = "n/a" if g["value"] is None else f"{g['value']:.3f}"
    margin = "n/a" if g["margin"] is None else f"{g['margin']:+.3f}"
    return value, margin


def markdown(report: dict) -> str:
    lines = [f"# stylepress report ({report['date'][:10]})", "",
             f"Machine: {report['machine']['cpu']}, {report['machine']['cores']} cores; "
             f"onnxruntime {report['versions']['onnxruntime']}. Objective: {report['objective']}; "
             f"served: **{report['selected']}** (selection.json); gates judge it {report['gated']}.", "",
             "| variant | runtime | precision | GMACs | params (M) | size MB | peak MB | PSNR dB | SSIM | p50 ms "
             "| p95 ms |", "|---|---|---|---:|---:|---:|---:|---:|---:|---:|---:|"]
    for v in report["variants"]:
        p, q = v["points"][0], v["quality"]
        psnr = "identical" if q["psnr_db"] is None else f"{q['psnr_db']:.2f}"
        mark = " (served)" if v["name"] in (report["selected"], report["served"]) else ""
        lines.append(f"| {v['name']}{mark} | {v['runtime']} | {v['precision']} | {v['macs'] / 1e9:.2f} | "
                     f"{v['params'] / 1e6:.2f} | {v['size_bytes'] / 1e6:.2f} | {v['peak_memory_mb']:.0f} | {psnr} | "
                     f"{q['ssim']:.4f} | {p['p50_ms']:.1f} | {p['p95_ms']:.1f} |")
    lines += ["", "PSNR and SSIM against the teacher's fp32 output on val portraits (in process: network output "
              "at the serving size; through Triton: the returned PNG at the portrait's own size). "
              + "; ".join(f"{k.upper().replace('_', '/')}: {v}" for k, v in report["not_computed"].items()) + "."]
    in_process = [v for v in report["variants"] if "protocol" not in v["points"][0]]
    shapes = list(dict.fromkeys((p["resolution"], p["batch"]) for v in in_process for p in v["points"]))
    if len(shapes) > 1:
        lines += ["", "In process, p50 ms (images/s) at each resolution and batch:", "",
                  "| variant | " + " | ".join(f"{r}² batch {b}" for r, b in shapes) + " |",
                  "|---|" + "---:|" * len(shapes)]
        for v in in_process:
            at = {(p["resolution"], p["batch"]): p for p in v["points"]}
            lines.append(f"| {v['name']} | " + " | ".join(
                f"{at[k]['p50_ms']:.1f} ({at[k]['throughput']:.1f})" if k in at else "" for k in shapes) + " |")
    for v in report["variants"]:
        if "protocol" in v["points"][0]:
            lines += ["", f"{v['name']} through Triton, one portrait per request (JPEG in, PNG out):", "",
                      *concurrency_table(v["points"])]
    if report["gates"]:
        lines += ["", f"Gates on {report['served'] or report['selected']}, measured {report['gated']}"
                  + (" (latency: HTTP at concurrency 1)" if report["gated"] == "served" else "") + ":", "",
                  "| gate | threshold | measured | margin | |", "|---|---:|---:|---:|---|"]
        for g in report["gates"]:
            value, margin = gate_cells(g)
            lines.append(f"| {g['name']} | {g['threshold']:g} | {value} | {margin} | "
                         f"{'pass' if g['passed'] else '**FAIL**'} |")
    return "\n".join(lines) + "\n"


def samples(cfg: Config, layout: RunLayout, vs: list[dict], path: Path) -> None:
    """Val portraits per style: input | teacher fp32 | each other model and precision, on the
    configured CPU provider."""
    size = cfg.serving_resolution
    photos = serving_inputs(val_image_paths(cfg.data)[:SAMPLE_PHOTOS], size)
    styles = read_spec(layout.teacher).styles
    provider = resolve_cpu_provider(cfg.export.cpu_provider)
    columns = [("teacher", "fp32")] + sorted({(v["model"], v["precision"]) for v in vs} - {("teacher", "fp32")})

    outputs = {}
    for model, precision in columns:
        sess = session(layout.onnx(model, precision), provider,
                       float_precision=float_precision(layout, model, provider))
        for s in range(len(styles)):
            feeds = {"image": photos} | ({"style": np.full(len(photos), s, np.int64)} if len(styles) > 1 else {})
            outputs[model, precision, s] = sess.run(None, feeds)[0]
    def image(x):
        return to_image(torch.from_numpy(x))

    rows = [[image(photos[i])] + [image(outputs[m, p, s][i]) for m, p in columns]
            for s in range(len(styles)) for i in range(len(photos))]
    labels = ["input"] + [f"{m} {p}" for m, p in columns]
    save_image(grid(rows, labels, cell=160), path)


def _embed(path: Path) -> str:
    return "data:image/png;base64," + base64.b64encode(path.read_bytes()).decode()


def html_page(report: dict, md: str, pareto: Path, sample_grid: Path) -> str:
    """One self-contained page: the report's tables, the Pareto plot and the samples embedded."""
    body, table = [], []
    for line in md.splitlines():
        if line.startswith("|"):
            if set(line.replace("|", "").strip()) <= set("-: "):
                continue
            tag = "th" if not table else "td"
            cells = [html.escape(c.strip().strip("*")) for c in line.strip("|").split("|")]
            table.append("<tr>" + "".join(f"<{tag}>{c}</{tag}>" for c in cells) + "</tr>")
            continue
        if table:
            body.append("<table>" + "".join(table) + "</table>")
            table = []
        if line.startswith("# "):
            body.append(f"<h1>{html.escape(line[2:])}</h1>")
        elif line.strip():
            body.append(f"<p>{html.escape(line).replace('**', '')}</p>")
    if table:
        body.append("<table>" + "".join(table) + "</table>")
    body.append(f'<h2>Latency against quality</h2><img alt="Pareto plot" src="{_embed(pareto)}">')
    body.append(f'<h2>Samples</h2><img alt="sample grid" src="{_embed(sample_grid)}">')
    style = ("body{font-family:sans-serif;margin:2em;max-width:1400px}table{border-collapse:collapse;margin:1em 0}"
             "td,th{border:1px solid #bbb;padding:3px 8px;text-align:right}th{background:#eee}"
             "img{max-width:100%;border:1px solid #ddd}")
    # Marks the page once every embedded image has decoded (the report test reads it).
    script = ("window.addEventListener('load',()=>{document.body.dataset.imagesOk="
              "[...document.images].every(i=>i.complete&&i.naturalWidth>0)})")
    return (f"<!doctype html><html><head><meta charset='utf-8'><title>stylepress report</title>"
            f"<style>{style}</style></head><body>{''.join(body)}<script>{script}</script></body></html>\n")


def run(cfg: Config, run_dir: str | Path) -> dict:
    """Assemble report/ from the bench, the selection and the served bench; returns the report."""
    layout = RunLayout(run_dir)
    precision_report = json.loads(layout.precision_json.read_text())
    chosen = selection.load(layout.root)["served"]
    vs = variants(layout, precision_report, cfg.serving_resolution)
    served_report = json.loads(layout.served_json.read_text()) if layout.served_json.is_file() else None
    served = served_variant(served_report, vs) if served_report else None
    if served and served_report["served"] == chosen:
        vs.append(served)
        gated, measured = served, "served"
        teacher_p50 = served_report["latency_ms"]["teacher_fp32_full_path"]["p50"]
    else:  # not servable here (GPU targets): the selected variant in process, and said so
        served = None
        gated, measured = next((v for v in vs if v["name"] == chosen["name"]), None), "in process"
        teacher = next((v for v in vs if v["name"] == "teacher-fp32-default"), None)
        teacher_p50 = teacher["points"][0]["p50_ms"] if teacher else None
    report = {"schema": SCHEMA, "date": precision_report["date"], "machine": precision_report["machine"],
              "versions": precision_report["versions"], "objective": cfg.bench.objective,
              "selected": chosen["name"], "served": served["name"] if served else None, "gated": measured,
              "speedup_vs_teacher": teacher_p50 / gated["points"][0]["p50_ms"] if gated and teacher_p50 else None,
              "gates": gates(gated, teacher_p50, cfg, measured), "variants": vs, "not_computed": NOT_COMPUTED}
    md = markdown(report)
    write_json(layout.report_json, report)
    write_text(layout.report_md, md)
    plot(vs, gated, layout.pareto)
    samples(cfg, layout, vs, layout.samples)
    write_text(layout.report_html, html_page(report, md, layout.pareto, layout.samples))
    return report
