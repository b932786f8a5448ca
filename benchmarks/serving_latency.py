"""The served bench: what the repository serves (selection.json), measured through a real Triton.

Latency of one portrait at the serving size: in-process ONNX Runtime (network alone, and the full
path: decode, letterbox, network, un-letterbox, PNG) against the same model through Triton's
ensemble over HTTP, then each protocol at concurrency 1-8; and the teacher's fp32 full path in
process, the baseline of `min_speedup_vs_teacher`.

Quality of what the server returns: each val portrait's encoded bytes sent through the running
repository for every style (encoded in, PNG out), against the teacher's fp32 output through the same
pre/post-processing offline (PNG in memory), PSNR/SSIM per style at the portrait's own size; and the
same figures for the selected variant in process, which the served ones must match.

Medians and tails over repeated sequential requests after warm-up, on one machine in one run, so
the figures are comparable; the machine and library versions are recorded beside them.
"""

from __future__ import annotations

import contextlib
import platform
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import onnxruntime as ort

from stylepress import prepost, selection, serving
from stylepress.config import Config
from stylepress.data import val_image_paths
from stylepress.export import float_precision, runtime
from stylepress.export.quantize import compare
from stylepress.fsutil import write_json, write_text
from stylepress.layout import RunLayout
from stylepress.machine import describe, now
from stylepress.models.spec import read_spec
from stylepress.progress import progress_bar

from .precision import time_interleaved

CONCURRENCY = (1, 2, 4, 8)


def run(cfg: Config, run_dir: str | Path, repeats: int | None = None, warmup: int = 5) -> dict:
    """Measure, write report/serving_latency.json and return it."""
    layout = RunLayout(run_dir)
    repeats = repeats or cfg.bench.repeats
    repo = layout.repository
    serving.check_repository(repo)
    served = selection.load(layout.root)["served"]  # what the repository serves
    model, precision, provider = served["model"], served["precision"], served["provider"]
    paths = val_image_paths(cfg.data)
    data = paths[0].read_bytes()
    size = cfg.serving_resolution
    styles = list(read_spec(layout.model_dir(model)).styles)
    session = runtime.session(layout.onnx(model, precision), provider, shape=(1, size, size),
                              float_precision=float_precision(layout, model, provider))
    teacher = runtime.session(layout.onnx("teacher"), "default")
    x, box = prepost.letterbox(prepost.decode(data), size)
    feeds = runtime.feeds_for(session, x[None])

    def in_process_network():
        session.run(None, feeds)

    def full_path(sess, image: bytes, style: int = 0) -> np.ndarray:
        x, box = prepost.letterbox(prepost.decode(image), size)
        return prepost.unletterbox(sess.run(None, runtime.feeds_for(sess, x[None], style))[0][0], box)

    results = {}
    with progress_bar(4, "served bench") as bar:
        results["onnxruntime_network"] = _time(in_process_network, repeats, warmup)
        results["onnxruntime_full_path"] = _time(lambda: prepost.encode(full_path(session, data)), repeats, warmup)
        results["teacher_fp32_full_path"] = _time(lambda: prepost.encode(full_path(teacher, data)), repeats, warmup)
        bar.advance()
        val = {p: p.read_bytes() for p in paths[:cfg.export.int8.val_images]}  # encoded, as clients send them
        reference = {(p, s): full_path(teacher, data, s) for p, data in val.items() for s in range(len(styles))}
        in_process = {(p, s): full_path(session, data, s) for p, data in val.items() for s in range(len(styles))}
        bar.advance()
        with serving.local_server(repo, layout.server_log) as server, contextlib.ExitStack() as stack:
            server.wait_ready()
            client = stack.enter_context(serving.Client(server.http_url))
            returned = {}
            for s, style in enumerate(styles):
                pngs = client.stylize_many(list(val.values()), style if len(styles) > 1 else None)
                returned.update({(p, s): prepost.decode(png) for p, png in zip(val, pngs, strict=True)})
            bar.advance()
            results["triton_http"] = _time(lambda: client.stylize(data), repeats, warmup)
            generator = f"{cfg.model_name}_generator"
            sweep = [concurrency_point(server, protocol, data, c, max(repeats, 4 * c), generator)
                     for protocol in ("http", "grpc") for c in CONCURRENCY]
            formats = {fmt: format_point(server, client, data, fmt, lambda f: prepost.encode(full_path(session, data),
                                                                                              f), repeats, warmup,
                                         generator) for fmt in prepost.OUTPUT_FORMATS}
        bar.advance()
    report = {
        "what": f"one {size}x{size} portrait, batch 1, sequential requests, {served['name']} as served; quality: "
                f"{len(val)} val portraits x {len(styles)} styles through the server (encoded in, PNG out) against "
                "the teacher's fp32 through the same pre/post-processing offline, worst style",
        "date": now(),
        "machine": describe(),
        "versions": {"onnxruntime": ort.__version__, "tritonserver": "2.51 (nvidia-pytriton 0.7.0, CPU)",
                     "python": platform.python_version()},
        "served": served, "resolution": size,
        "repeats": repeats, "warmup": warmup, "latency_ms": results, "concurrency": sweep, "formats": formats,
        "quality": {"served": quality(reference, returned, styles),
                    "in_process": quality(reference, in_process, styles)},
        "triton_over_onnxruntime_full_path": results["triton_http"]["p50"] / results["onnxruntime_full_path"]["p50"],
    }
    write_json(layout.served_json, report)
    write_text(layout.served_md, markdown(report))
    return report


def quality(reference: dict, outputs: dict, styles: list[str]) -> dict:
    """PSNR and SSIM of uint8 outputs against the reference: the mean over the portraits of each style
    (an identical portrait counts as selection.EXACT_DB; all identical: None), and the worst style's."""
    def nchw(rgb: np.ndarray) -> np.ndarray:  # uint8 HxWx3 -> [1, 3, H, W] in [-1, 1], the model range
        return (rgb.astype(np.float32) / 127.5 - 1).transpose(2, 0, 1)[None]

    per_style = {}
    for s, style in enumerate(styles):
        scores = [compare(nchw(reference[k]), nchw(outputs[k])) for k in reference if k[1] == s]
        db = [q["psnr_db"] for q in scores]
        per_style[style] = {"psnr_db": float(np.mean(np.minimum(db, selection.EXACT_DB))) if np.isfinite(db).any()
                            else None, "ssim": float(np.mean([q["ssim"] for q in scores]))}
    finite = [q["psnr_db"] for q in per_style.values() if q["psnr_db"] is not None]
    return {"psnr_db": min(finite) if finite else None, "ssim": min(q["ssim"] for q in per_style.values()),
            "per_style": per_style}


def markdown(report: dict) -> str:
    lines = [f"{report['what']}; {report['machine']['cpu']}, {report['date'][:10]}", "",
             "| path | p50 ms | p95 ms | p99 ms |", "|---|---:|---:|---:|",
             *(f"| {name} | {f['p50']:.1f} | {f['p95']:.1f} | {f['p99']:.1f} |"
               for name, f in report["latency_ms"].items()), "", *concurrency_table(report["concurrency"]), "",
             "| format | bytes | served p50 ms | in process p50 ms | ratio | served images/s at 8 | in process "
             "images/s at 8 | share |", "|---|---:|---:|---:|---:|---:|---:|---:|",
             *(f"| {fmt} | {f['bytes']} | {f['served_p50_ms']:.1f} | {f['in_process_p50_ms']:.1f} | "
               f"{f['served_over_in_process_p50']:.2f} | {f['served_throughput']:.1f} | "
               f"{f['in_process_throughput']:.1f} | {f['served_share_of_in_process_throughput']:.0%} |"
               for fmt, f in report["formats"].items()), "",
             "| quality to the teacher's fp32 | style | PSNR dB | SSIM |", "|---|---|---:|---:|"]
    for where, q in report["quality"].items():
        for style, f in q["per_style"].items():
            db = "identical" if f["psnr_db"] is None else f"{f['psnr_db']:.2f}"
            lines.append(f"| {where} | {style} | {db} | {f['ssim']:.4f} |")
    return "\n".join(lines) + "\n"


def concurrency_table(points: list[dict]) -> list[str]:
    lines = ["| protocol | concurrency | p50 ms | p95 ms | p99 ms | images/s | generator queue ms | "
             "generator compute ms | batches / requests |", "|---|---:|---:|---:|---:|---:|---:|---:|---:|"]
    for p in points:
        lines.append(f"| {p['protocol']} | {p['concurrency']} | {p['p50_ms']:.1f} | {p['p95_ms']:.1f} | "
                     f"{p['p99_ms']:.1f} | {p['throughput']:.2f} | {p['generator_queue_ms']:.1f} | "
                     f"{p['generator_compute_ms']:.1f} | {p['generator_batches']} / {p['requests']} |")
    return lines


def concurrency_point(server, protocol: str, data: bytes, concurrency: int, requests: int, generator: str,
                      fmt: str | None = None) -> dict:
    """`concurrency` clients, each sending requests back to back (JPEG in, PNG out) until
    `requests` are done in all: per-request latency, throughput, and from the server's statistics
    API the generator's mean queue and compute time per request over the same requests."""
    url = server.grpc_url if protocol == "grpc" else server.http_url
    spans: list[tuple[float, float]] = []
    counter = iter(range(requests))
    ready = threading.Barrier(concurrency)

    def worker(_):
        with serving.Client(url, grpc=protocol == "grpc") as client:  # the HTTP client is bound to its thread
            ready.wait()  # connections made: all start together
            for _ in counter:  # shared: the threads take requests until all are sent
                start = time.perf_counter()
                client.stylize(data, fmt=fmt)
                spans.append((start, time.perf_counter()))

    with serving.Client(url, grpc=protocol == "grpc") as main:
        main.stylize(data)  # warm-up
        before = _generator_stats(main, generator)
        with ThreadPoolExecutor(concurrency) as pool:
            list(pool.map(worker, range(concurrency)))
        after = _generator_stats(main, generator)
    latencies = [(end - start) * 1000 for start, end in spans]
    wall = max(end for _, end in spans) - min(start for start, _ in spans)
    n = max(1, after["count"] - before["count"])
    p50, p95, p99 = np.percentile(latencies, [50, 95, 99])
    return {"protocol": protocol, "concurrency": concurrency, "requests": len(latencies),
            "p50_ms": float(p50), "p95_ms": float(p95), "p99_ms": float(p99), "throughput": len(latencies) / wall,
            "generator_queue_ms": (after["queue_ns"] - before["queue_ns"]) / n / 1e6,
            "generator_compute_ms": (after["compute_ns"] - before["compute_ns"]) / n / 1e6,
            "generator_batches": after["executions"] - before["executions"]}


def format_point(server, client, data: bytes, fmt: str, in_process, repeats: int, warmup: int,
                 generator: str, concurrency: int = 8) -> dict:
    """One output format: the served p50 at concurrency 1 and throughput at `concurrency` (HTTP), against
    the in-process full path encoding the same format, sequentially and from as many threads."""
    requests = max(repeats, 2 * concurrency)
    # Interleaved, one of each per round: drift on a shared machine hits both alike.
    served, local = time_interleaved([lambda: client.stylize(data, fmt=fmt), lambda: in_process(fmt)], repeats,
                                     warmup)
    many = concurrency_point(server, "http", data, concurrency, requests, generator, fmt)
    with ThreadPoolExecutor(concurrency) as pool:  # ONNX Runtime and Pillow release the GIL
        list(pool.map(lambda _: in_process(fmt), range(concurrency)))  # warm-up
        start = time.perf_counter()
        list(pool.map(lambda _: in_process(fmt), range(requests)))
        local_throughput = requests / (time.perf_counter() - start)
    return {"served_p50_ms": served["p50_ms"], "in_process_p50_ms": local["p50_ms"],
            "served_over_in_process_p50": served["p50_ms"] / local["p50_ms"], "served_throughput": many["throughput"],
            "in_process_throughput": local_throughput,
            "served_share_of_in_process_throughput": many["throughput"] / local_throughput,
            "bytes": len(client.stylize(data, fmt=fmt))}


def _generator_stats(client, model: str) -> dict:
    """Cumulative counters of one model from Triton's statistics API."""
    stats = client.statistics(model)
    infer = stats.get("inference_stats", {})

    def field(name: str, key: str = "ns") -> int:  # protobuf's JSON form leaves out zeros
        return int(infer.get(name, {}).get(key, 0))

    return {"count": field("success", "count"), "queue_ns": field("queue"),
            "compute_ns": sum(field(k) for k in ("compute_input", "compute_infer", "compute_output")),
            "executions": int(stats.get("execution_count", 0))}


def _time(fn, repeats: int, warmup: int) -> dict:
    for _ in range(warmup):
        fn()
    samples = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        samples.append((time.perf_counter() - start) * 1000)
    p50, p95, p99 = np.percentile(samples, [50, 95, 99])
    return {"p50": float(p50), "p95": float(p95), "p99": float(p99), "min": float(min(samples))}
