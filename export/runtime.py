"""ONNX Runtime sessions on a chosen CPU execution provider, and latency medians.

On x86-64 Linux the project installs `onnxruntime-openvino` (it ships the `onnxruntime` module
itself): its OpenVINO execution provider runs Q/DQ INT8 models with integer kernels
(VNNI/AMX), where the default CPU provider leaves most of the work in float.
"""

from __future__ import annotations

import json
import statistics
import time
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort

from stylepress.errors import StylepressError

PROVIDERS = {"openvino": "OpenVINOExecutionProvider", "default": "CPUExecutionProvider"}
BF16_FLAGS = ("avx512_bf16", "amx_bf16")  # native bf16 arithmetic (Cooper Lake, Zen 4, Sapphire Rapids on)


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


def cpu_has_bf16(cpuinfo: str | None = None) -> bool:
    """Whether the CPU computes in bf16 natively (its /proc/cpuinfo flags); elsewhere OpenVINO would
    emulate it, slower than f32."""
    if cpuinfo is None:
        try:
            cpuinfo = Path("/proc/cpuinfo").read_text()
        except OSError:
            return False
    flags = next((line.split(":", 1)[1].split() for line in cpuinfo.splitlines() if line.startswith("flags")), [])
    return any(f in flags for f in BF16_FLAGS)


def resolve_float_precision(choice: str, provider: str, target: str = "cpu", has_bf16: bool | None = None) -> str:
    """export.cpu_float_precision for a provider and serving target: "bf16" or "f32". The hint is
    OpenVINO's (the default provider computes float layers in f32 only), and only the CPU Triton
    runtime's generator passes it (Triton's ONNX Runtime backend takes no OpenVINO options); "auto"
    is bf16 where all of that holds and the CPU has bf16 natively."""
    has_bf16 = cpu_has_bf16() if has_bf16 is None else has_bf16
    if choice == "f32" or (choice == "auto" and (provider != "openvino" or target != "cpu" or not has_bf16)):
        return "f32"
    if provider != "openvino":
        raise StylepressError("export.cpu_float_precision = 'bf16' needs export.cpu_provider = 'openvino' "
                              "(the default CPU provider has no bf16 kernels)")
    if target != "cpu":
        raise StylepressError(f"export.cpu_float_precision = 'bf16' with serving.target = {target!r}: only the "
                              "CPU Triton runtime ('cpu') passes OpenVINO's precision hint")
    if not has_bf16:
        raise StylepressError(f"export.cpu_float_precision = 'bf16': this CPU has none of {', '.join(BF16_FLAGS)} "
                              "(set 'auto' or 'f32')")
    return "bf16"


def session(path: str | Path, provider: str = "default", threads: int = 0,
            profile_prefix: str | None = None, shape: tuple[int, int, int] | None = None,
            float_precision: str = "f32") -> ort.InferenceSession:
    """A session on `provider` ("openvino" | "default"); threads 0 = the runtime's choice.
    With `profile_prefix`, ONNX Runtime writes a per-node profile (see `end_profiling`).
    `shape` = (batch, height, width) fixes OpenVINO's input shapes (its `reshape_input`): it then
    compiles for that shape instead of dynamic ones, about 2x faster here. Feed it only that shape:
    OpenVINO answers another one with wrong-sized outputs, not an error. The default provider ignores it.
    `float_precision` "bf16": OpenVINO runs the layers it keeps in float in bf16 (its inference
    precision hint); INT8 layers stay INT8."""
    options = ort.SessionOptions()
    options.log_severity_level = 3
    if profile_prefix:
        options.enable_profiling = True
        options.profile_file_prefix = profile_prefix
    if threads:
        options.intra_op_num_threads = threads
        options.inter_op_num_threads = 1
    return ort.InferenceSession(str(path), options,
                                providers=providers_for(path, provider, threads, shape, float_precision))


def providers_for(path: str | Path, provider: str, threads: int = 0,
                  shape: tuple[int, int, int] | None = None, float_precision: str = "f32") -> list:
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
    ov.update(openvino_precision(float_precision))
    return [("OpenVINOExecutionProvider", ov), "CPUExecutionProvider"]


def openvino_precision(float_precision: str) -> dict[str, str]:
    """The OpenVINO provider option for a float precision (none for f32: its CPU default in ONNX
    Runtime). serving/backend/generator.py writes the same string: it imports no stylepress."""
    if float_precision == "f32":
        return {}
    return {"load_config": json.dumps({"CPU": {"INFERENCE_PRECISION_HINT": float_precision}})}


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
