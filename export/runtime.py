"""ONNX Runtime sessions on a chosen CPU execution provider, and latency medians.

On x86-64 Linux the project installs `onnxruntime-openvino` (it ships the `onnxruntime` module
itself): its OpenVINO execution provider runs Q/DQ INT8 models with integer kernels
(VNNI/AMX), where the default CPU provider leaves most of the work in float.
"""

from __future__ import annotations

import statistics
import time
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort

from stylepress.errors import StylepressError

PROVIDERS = {"openvino": "OpenVINOExecutionProvider", "default": "CPUExecutionProvider"}


def available_cpu_providers() -> list[str]:
    return [name for name, ep in PROVIDERS.items() if ep in ort.get_available_providers()]


def resolve_cpu_provider(choice: str | None) -> str:
    """The configured provider, or OpenVINO when installed, else the default one."""
    have = available_cpu_providers()
    if choice is None:
        return "openvino" if "openvino" in have else "default"
    if choice not in have:
        raise StylepressError(f"export.cpu_provider = {choice!r}: not in this onnxruntime build "
                              f"(available: {', '.join(have)}; `pip install onnxruntime-openvino` provides openvino)")
    return choice


def session(path: str | Path, provider: str = "default", threads: int = 0,
            profile_prefix: str | None = None, shape: tuple[int, int, int] | None = None) -> ort.InferenceSession:
    """A session on `provider` ("openvino" | "default"); threads 0 = the runtime's choice.
    With `profile_prefix`, ONNX Runtime writes a per-node profile (see `end_profiling`).
    `shape` = (batch, height, width) fixes OpenVINO's input shapes (its `reshape_input`): it then
    compiles for that shape instead of dynamic ones, about 2x faster here. Feed it only that shape:
    OpenVINO answers another one with wrong-sized outputs, not an error. The default provider ignores it."""
    options = ort.SessionOptions()
    options.log_severity_level = 3
    if profile_prefix:
        options.enable_profiling = True
        options.profile_file_prefix = profile_prefix
    if threads:
        options.intra_op_num_threads = threads
        options.inter_op_num_threads = 1
    return ort.InferenceSession(str(path), options, providers=providers_for(path, provider, threads, shape))


def providers_for(path: str | Path, provider: str, threads: int = 0,
                  shape: tuple[int, int, int] | None = None) -> list:
    """ONNX Runtime's `providers` argument for `session` (plain data: it crosses to child processes)."""
    if provider != "openvino":
        return ["CPUExecutionProvider"]
    ov = {"device_type": "CPU"}
    if threads:  # OpenVINO sizes its own thread pool; "0" would mean one thread, not "auto"
        ov["num_of_threads"] = str(threads)
    if shape is not None:
        n, h, w = shape
        names = [i.name for i in onnx.load(str(path), load_external_data=False).graph.input]
        ov["reshape_input"] = ",".join(f"image[{n},3,{h},{w}]" if name == "image" else f"{name}[{n}]"
                                       for name in names)
    return [("OpenVINOExecutionProvider", ov), "CPUExecutionProvider"]


def feeds_for(sess: ort.InferenceSession, images: np.ndarray, style: int = 0) -> dict[str, np.ndarray]:
    """Inputs for a generator session: float32 NCHW images in [-1, 1] (+ the style index)."""
    feeds = {"image": images.astype(np.float32)}
    if len(sess.get_inputs()) == 2:
        feeds["style"] = np.full((len(images),), style, dtype=np.int64)
    return feeds


def run_batched(sess: ort.InferenceSession, images: np.ndarray, style: int = 0, batch: int = 8) -> np.ndarray:
    return np.concatenate([sess.run(None, feeds_for(sess, images[i:i + batch], style))[0]
                           for i in range(0, len(images), batch)])


def time_session(sess: ort.InferenceSession, feeds: dict, repeats: int = 20, warmup: int = 3,
                 budget_s: float | None = None) -> dict:
    """Latency in ms of `sess.run(feeds)`; see `time_call`."""
    return time_call(lambda: sess.run(None, feeds), repeats, warmup, budget_s)


def time_call(fn, repeats: int = 20, warmup: int = 3, budget_s: float | None = None) -> dict:
    """Latency in ms after warm-up: `repeats` runs, or with `budget_s` as many (at least 3) as fit
    in that many seconds when fewer; percentiles over the runs."""
    for _ in range(warmup):
        fn()
    times: list[float] = []
    start = time.perf_counter()
    while len(times) < repeats and not (budget_s and len(times) >= 3 and time.perf_counter() - start >= budget_s):
        t0 = time.perf_counter()
        fn()
        times.append((time.perf_counter() - t0) * 1000)
    return percentiles(times)


def percentiles(times: list[float]) -> dict:
    """p50/p90/p95/p99, mean and count of latencies in ms."""
    q = np.percentile(times, [50, 90, 95, 99])
    return {"p50_ms": float(q[0]), "p90_ms": float(q[1]), "p95_ms": float(q[2]), "p99_ms": float(q[3]),
            "mean_ms": statistics.fmean(times), "runs": len(times)}
