"""The load suite: N requests of real portraits from C concurrent clients through the served repository,
half over HTTP and half over gRPC at the same time, every response checked; errors by kind, latency
percentiles, throughput, and the resident memory of tritonserver and every process it started (its
Python-backend stubs) over time.

`python -m stylepress.benchmarks load CONFIG [--requests 10000] [--concurrency 16] [--format png]`
writes report/load.{json,md}. Leaks show as RSS growth between the first and second half of the run.
"""

from __future__ import annotations

import io
import itertools
import threading
import time
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
from PIL import Image

from stylepress import prepost, serving
from stylepress.config import Config
from stylepress.data import val_image_paths
from stylepress.errors import StylepressError
from stylepress.fsutil import write_json, write_text
from stylepress.layout import RunLayout
from stylepress.machine import describe, now
from stylepress.progress import progress_bar

SIGNATURES = {"png": b"\x89PNG", "jpeg": b"\xff\xd8\xff", "webp": b"RIFF"}


def process_tree(root: int) -> dict[int, str]:
    """pid -> command name of `root` and all its descendants, from /proc."""
    parents: dict[int, list[int]] = {}
    names = {}
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            text = stat.read_text()
        except OSError:
            continue
        pid, rest = int(text.split(" ", 1)[0]), text.rsplit(")", 1)[1].split()
        names[pid] = text[text.index("(") + 1:text.rindex(")")]
        parents.setdefault(int(rest[1]), []).append(pid)
    tree, todo = {}, [root]
    while todo:
        pid = todo.pop()
        tree[pid] = names.get(pid, "?")
        todo += parents.get(pid, [])
    return tree


def rss_mb(pid: int) -> tuple[float, float] | None:
    """(resident MiB, of which shared memory MiB): the Python backend's shared-memory pool is mapped by
    tritonserver and by every stub, and counts in both as its pages are first touched."""
    try:
        status = dict(line.split(":", 1) for line in Path(f"/proc/{pid}/status").read_text().splitlines())
        return int(status["VmRSS"].split()[0]) / 1024, int(status["RssShmem"].split()[0]) / 1024
    except (OSError, KeyError, ValueError):
        return None


class MemorySampler(threading.Thread):
    """RSS of a process tree every `every_s` seconds, until stopped."""

    def __init__(self, root: int, every_s: float = 1.0):
        super().__init__(daemon=True)
        self.root, self.every_s, self.samples, self.halt = root, every_s, [], threading.Event()
        self.start_time = time.perf_counter()

    def run(self) -> None:
        while not self.halt.is_set():
            tree = process_tree(self.root)
            self.samples.append({"t": time.perf_counter() - self.start_time,
                                 "rss_mb": {f"{name}[{pid}]": rss_mb(pid) for pid, name in tree.items()}})
            self.halt.wait(self.every_s)

def _halves(series: list[float | None]) -> dict:
    """Mean of the first and second half, their ratio, and the drift between the last two quarters (a
    leak keeps climbing there; a warm-up that outlasted the discarded start does not)."""
    half, quarter = len(series) // 2, len(series) // 4
    first, second = [v for v in series[:half] if v], [v for v in series[half:] if v]
    q3, q4 = [v for v in series[half:half + quarter] if v], [v for v in series[half + quarter:] if v]
    if not (first and second):
        return {}
    return {"first_half_mb": float(np.mean(first)), "second_half_mb": float(np.mean(second)),
            "growth": float(np.mean(second) / np.mean(first) - 1),
            "last_quarters_drift": float(np.mean(q4) / np.mean(q3) - 1) if q3 and q4 else None}


def growth(samples: list[dict], warmup: float = 0.1) -> dict[str, dict]:
    """Per process, over the samples after the first `warmup` fraction (sessions, buffers and connections
    are made then): resident memory by halves, and the same for its private part (resident minus shared:
    where a leak shows) and its shared part (the Python backend's pool, which grows to the peak in flight)."""
    steady = samples[int(len(samples) * warmup):]
    out = {}
    for proc in {p for s in steady for p in s["rss_mb"]}:
        values = [s["rss_mb"].get(proc) for s in steady]
        total = _halves([v and v[0] for v in values])
        if total:
            out[proc] = {**total, "private": _halves([v and v[0] - v[1] for v in values]),
                         "shared": _halves([v and v[1] for v in values])}
    return out


def _check(data: bytes, fmt: str, size: tuple[int, int]) -> str | None:
    """None for a correct response (the format asked, the portrait's own size), else what is wrong."""
    if not data.startswith(SIGNATURES[fmt]):
        return f"not {fmt}"
    try:
        got = Image.open(io.BytesIO(data)).size
    except OSError:
        return "undecodable"
    return None if got == size else "wrong size"


def drive(url: str, protocol: str, portraits: list[tuple[bytes, tuple[int, int]]], styles: list[str] | None,
          requests: int, concurrency: int, fmt: str, bar=None) -> dict:
    """`requests` requests from `concurrency` clients, each checked; latencies and errors by kind."""
    counter = itertools.count()
    latencies, errors, lock = [], Counter(), threading.Lock()
    ready = threading.Barrier(concurrency)

    def worker(_):
        try:
            client = serving.Client(url, grpc=protocol == "grpc")  # one per thread (the HTTP client is per thread)
        except StylepressError:
            ready.abort()  # the others stop waiting for this one
            raise
        with client:
            ready.wait()
            while (i := next(counter)) < requests:
                data, size = portraits[i % len(portraits)]
                style = styles[i % len(styles)] if styles else None
                start = time.perf_counter()
                try:
                    problem = _check(client.stylize(data, style, fmt=fmt), fmt, size)
                except StylepressError as exc:  # the server's message is the kind
                    problem = str(exc).split("rejected it: ")[-1][:80]
                elapsed = (time.perf_counter() - start) * 1000
                with lock:
                    latencies.append(elapsed)
                    if problem:
                        errors[problem] += 1
                if bar is not None:
                    bar.advance()

    start = time.perf_counter()
    with ThreadPoolExecutor(concurrency) as pool:
        list(pool.map(worker, range(concurrency)))
    wall = time.perf_counter() - start
    p50, p95, p99 = np.percentile(latencies, [50, 95, 99])
    return {"protocol": protocol, "requests": len(latencies), "concurrency": concurrency, "errors": dict(errors),
            "p50_ms": float(p50), "p95_ms": float(p95), "p99_ms": float(p99), "throughput": len(latencies) / wall,
            "wall_s": wall}


def run(cfg: Config, run_dir: str | Path, requests: int = 10_000, concurrency: int = 16, fmt: str | None = None,
        protocols: tuple[str, ...] = ("http", "grpc")) -> dict:
    layout = RunLayout(run_dir)
    serving.check_repository(layout.repository)
    fmt = fmt or cfg.serving.output_format
    portraits = []
    for path in val_image_paths(cfg.data):
        data = path.read_bytes()
        h, w = prepost.decode(data).shape[:2]  # upright (EXIF): the size the server returns
        portraits.append((data, (w, h)))
    per_protocol, clients = requests // len(protocols), max(1, concurrency // len(protocols))
    with serving.local_server(layout.repository, layout.server_log) as server:
        server.wait_ready()
        with serving.Client(server.http_url) as client:
            styles = client.styles
        sampler = MemorySampler(server.process.pid)
        sampler.start()
        # The protocols at once, each with its share of the clients: both halves of the run see the same mix.
        with progress_bar(per_protocol * len(protocols), f"load {clients * len(protocols)} clients") as bar, \
                ThreadPoolExecutor(len(protocols)) as pool:
            results = list(pool.map(lambda p: drive(server.grpc_url if p == "grpc" else server.http_url, p, portraits,
                                                    styles, per_protocol, clients, fmt, bar), protocols))
        sampler.halt.set()
        sampler.join()
        ready_after = server.is_ready()
    by_process = growth(sampler.samples)
    report = {
        "what": f"{per_protocol} requests per protocol from {clients} concurrent clients each, "
                f"{'/'.join(protocols)} at once, {len(portraits)} val portraits in turn"
                f"{' and every style' if styles else ''}, {fmt} out; every response checked (format and the "
                "portrait's size); RSS of tritonserver and each process it started, sampled every second, first "
                "half against second half after the first 10 % (warm-up), in all and its private part (resident minus "
                "shared memory)",
        "date": now(), "machine": describe(), "format": fmt, "protocols": results,
        "errors": sum(sum(r["errors"].values()) for r in results), "ready_after": ready_after, "rss_growth": by_process,
        "max_rss_growth": max((g["growth"] for g in by_process.values()), default=0.0),
        "rss_timeline": sampler.samples,
    }
    write_json(layout.report / "load.json", report)
    write_text(layout.report / "load.md", markdown(report))
    return report


def _pct(value: float | None) -> str:
    return "n/a" if value is None else f"{value:+.1%}"


def markdown(report: dict) -> str:
    lines = [f"{report['what']}; {report['machine']['cpu']}, {report['date'][:10]}", "",
             "| protocol | requests | errors | p50 ms | p95 ms | p99 ms | images/s |",
             "|---|---:|---:|---:|---:|---:|---:|",
             *(f"| {r['protocol']} | {r['requests']} | {sum(r['errors'].values())} | {r['p50_ms']:.1f} | "
               f"{r['p95_ms']:.1f} | {r['p99_ms']:.1f} | {r['throughput']:.1f} |" for r in report["protocols"]), "",
             "| process | RSS MiB, first half | second half | growth | drift, last two quarters | private growth | "
             "shared MiB, first half | second half |",
             "|---|---:|---:|---:|---:|---:|---:|---:|",
             *(f"| {p} | {g['first_half_mb']:.0f} | {g['second_half_mb']:.0f} | {g['growth']:+.1%} | "
               f"{_pct(g['last_quarters_drift'])} | {_pct(g['private'].get('growth'))} | "
               f"{g['shared'].get('first_half_mb', 0):.0f} | {g['shared'].get('second_half_mb', 0):.0f} |"
               for p, g in sorted(report["rss_growth"].items()))]
    return "\n".join(lines) + "\n"
