"""Latency of one portrait at the serving size: in-process ONNX Runtime against the same model
through Triton's ensemble (decode, letterbox, generator, un-letterbox, PNG) over HTTP.

Medians and tails over repeated sequential requests after warm-up, on one machine in one run, so
the two figures are comparable; the machine and library versions are recorded beside them.
"""

from __future__ import annotations

import platform
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import onnxruntime as ort

from stylepress import prepost, serving
from stylepress.config import Config
from stylepress.data import val_image_paths
from stylepress.export import onnx_name, runtime, served_precision
from stylepress.export.runtime import resolve_cpu_provider
from stylepress.fsutil import write_json, write_text
from stylepress.machine import describe, now
from stylepress.progress import progress_bar

CONCURRENCY = (1, 2, 4, 8)


def run(cfg: Config, run_dir: str | Path, repeats: int = 50, warmup: int = 5) -> dict:
    """Measure, write run_dir/report/serving_latency.json and return it."""
    run_dir = Path(run_dir)
    repo = run_dir / serving.REPOSITORY
    serving.check_repository(repo)
    model = serving.served_model(run_dir, cfg.serving.model)  # what the repository serves
    precision = served_precision(run_dir, model, cfg.serving.precision)
    provider = resolve_cpu_provider(cfg.export.cpu_provider)
    data = val_image_paths(cfg.data)[0].read_bytes()
    size = cfg.serving_resolution
    session = runtime.session(run_dir / "export" / onnx_name(model, precision), provider, shape=(1, size, size))
    x, box = prepost.letterbox(prepost.decode(data), size)
    feeds = {"image": x[None]}
    if len(session.get_inputs()) == 2:
        feeds["style"] = np.zeros(1, np.int64)

    def in_process_network():
        session.run(None, feeds)

    def in_process_full():
        x, box = prepost.letterbox(prepost.decode(data), size)
        prepost.encode_png(prepost.unletterbox(session.run(None, {**feeds, "image": x[None]})[0][0], box))

    results = {}
    with progress_bar(3, "latency") as bar:
        results["onnxruntime_network"] = _time(in_process_network, repeats, warmup)
        bar.advance()
        results["onnxruntime_full_path"] = _time(in_process_full, repeats, warmup)
        bar.advance()
        with serving.local_server(repo, run_dir / "tritonserver.log") as server:
            server.wait_ready()
            client = serving.Client(server.http_url)
            results["triton_http"] = _time(lambda: client.stylize(data), repeats, warmup)
            sweep = [concurrency_point(server, protocol, data, c, max(repeats, 4 * c), f"{cfg.model_name}_generator")
                     for protocol in ("http", "grpc") for c in CONCURRENCY]
        bar.advance()
    report = {
        "what": f"one {size}x{size} portrait, batch 1, sequential requests, {model} {precision} on {provider}",
        "date": now(),
        "machine": describe(),
        "versions": {"onnxruntime": ort.__version__, "tritonserver": "2.51 (nvidia-pytriton 0.7.0, CPU)",
                     "python": platform.python_version()},
        "served": [model, precision, provider], "resolution": size,
        "repeats": repeats, "warmup": warmup, "latency_ms": results, "concurrency": sweep,
        "triton_over_onnxruntime_full_path": results["triton_http"]["p50"] / results["onnxruntime_full_path"]["p50"],
    }
    write_json(run_dir / "report" / "serving_latency.json", report)
    write_text(run_dir / "report" / "serving_latency.md", markdown(report))
    return report


def markdown(report: dict) -> str:
    lines = [f"{report['what']}; {report['machine']['cpu']}, {report['date'][:10]}", "",
             "| path | p50 ms | p95 ms | p99 ms |", "|---|---:|---:|---:|",
             *(f"| {name} | {f['p50']:.1f} | {f['p95']:.1f} | {f['p99']:.1f} |"
               for name, f in report["latency_ms"].items()), "", *concurrency_table(report["concurrency"])]
    return "\n".join(lines) + "\n"


def concurrency_table(points: list[dict]) -> list[str]:
    lines = ["| protocol | concurrency | p50 ms | p95 ms | p99 ms | images/s | generator queue ms | "
             "generator compute ms | batches / requests |", "|---|---:|---:|---:|---:|---:|---:|---:|---:|"]
    for p in points:
        lines.append(f"| {p['protocol']} | {p['concurrency']} | {p['p50_ms']:.1f} | {p['p95_ms']:.1f} | "
                     f"{p['p99_ms']:.1f} | {p['throughput']:.2f} | {p['generator_queue_ms']:.1f} | "
                     f"{p['generator_compute_ms']:.1f} | {p['generator_batches']} / {p['requests']} |")
    return lines


def concurrency_point(server, protocol: str, data: bytes, concurrency: int, requests: int, generator: str) -> dict:
    """`concurrency` clients, each sending requests back to back (JPEG in, PNG out) until
    `requests` are done in all: per-request latency, throughput, and from the server's statistics
    API the generator's mean queue and compute time per request over the same requests."""
    url = server.grpc_url if protocol == "grpc" else server.http_url
    main = serving.Client(url, grpc=protocol == "grpc")
    main.stylize(data)  # warm-up
    before = _generator_stats(main, generator)
    spans: list[tuple[float, float]] = []
    counter = iter(range(requests))
    ready = threading.Barrier(concurrency)

    def worker(_):
        client = serving.Client(url, grpc=protocol == "grpc")  # the HTTP client is bound to its thread
        ready.wait()  # connections made: all start together
        for _ in counter:  # shared: the threads take requests until all are sent
            start = time.perf_counter()
            client.stylize(data)
            spans.append((start, time.perf_counter()))

    with ThreadPoolExecutor(concurrency) as pool:
        list(pool.map(worker, range(concurrency)))
    latencies = [(end - start) * 1000 for start, end in spans]
    wall = max(end for _, end in spans) - min(start for start, _ in spans)
    after = _generator_stats(main, generator)
    n = max(1, after["count"] - before["count"])
    p50, p95, p99 = np.percentile(latencies, [50, 95, 99])
    return {"protocol": protocol, "concurrency": concurrency, "requests": len(latencies),
            "p50_ms": float(p50), "p95_ms": float(p95), "p99_ms": float(p99), "throughput": len(latencies) / wall,
            "generator_queue_ms": (after["queue_ns"] - before["queue_ns"]) / n / 1e6,
            "generator_compute_ms": (after["compute_ns"] - before["compute_ns"]) / n / 1e6,
            "generator_batches": after["executions"] - before["executions"]}


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
