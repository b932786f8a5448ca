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
            profile_prefix: str | None = None) -> ort.InferenceSession:
    """A session on `provider` ("openvino" | "default"); threads 0 = the runtime's choice.
    With `profile_prefix`, ONNX Runtime writes a per-node profile (see `end_profiling`)."""
    options = ort.SessionOptions()
    options.log_severity_level = 3
    if profile_prefix:
        options.enable_profiling = True
        options.profile_file_prefix = profile_prefix
    if threads:
        options.intra_op_num_threads = threads
        options.inter_op_num_threads = 1
    providers: list = ["CPUExecutionProvider"]
    if provider == "openvino":
        ov = {"device_type": "CPU"}
        if threads:  # OpenVINO sizes its own thread pool; "0" would mean one thread, not "auto"
            ov["num_of_threads"] = str(threads)
        providers = [("OpenVINOExecutionProvider", ov), "CPUExecutionProvider"]
    return ort.InferenceSession(str(path), options, providers=providers)


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
                 min_seconds: float = 0.0) -> dict:
    """Latency in ms after warm-up: at least `repeats` runs and `min_seconds` of timed work."""
    for _ in range(warmup):
        sess.run(None, feeds)
    times: list[float] = []
    start = time.perf_counter()
    while len(times) < repeats or time.perf_counter() - start < min_seconds:
        t0 = time.perf_counter()
        sess.run(None, feeds)
        times.append((time.perf_counter() - t0) * 1000)
    q = np.percentile(times, [50, 90, 95, 99])
    return {"p50_ms": float(q[0]), "p90_ms": float(q[1]), "p95_ms": float(q[2]), "p99_ms": float(q[3]),
            "mean_ms": statistics.fmean(times), "runs": len(times)}
