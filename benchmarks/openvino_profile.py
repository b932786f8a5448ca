"""Where OpenVINO spends a model's time, per layer type and kernel: the CPU plugin's own profile
(PERF_COUNT). ONNX Runtime's profiler sees the OpenVINO execution provider's work as one fused
node, so this reads OpenVINO directly.

The `openvino` Python package is not a project dependency (onnxruntime-openvino bundles the
runtime without its Python API, and two copies in one environment conflict): run this in an
environment of its own, standalone (it imports nothing from stylepress):

  python -m venv /tmp/ov && /tmp/ov/bin/pip install openvino numpy
  /tmp/ov/bin/python benchmarks/openvino_profile.py runs/cyclegan/export/student.int8.onnx [--size 256]

Prints a Markdown table: ms per run by (layer type, kernel), with the kernel's precision, over
`--runs` runs after warm-up, at batch 1 and a fixed --size (compiled for that shape).
"""

from __future__ import annotations

import argparse
from collections import defaultdict

import numpy as np
import openvino as ov


def profile(path: str, size: int, threads: int, runs: int, hint: str | None) -> tuple[dict, float, str]:
    core = ov.Core()
    model = core.read_model(path)
    names = [i.get_any_name() for i in model.inputs]
    model.reshape({n: [1, 3, size, size] if n == "image" else [1] for n in names})
    config = {"PERF_COUNT": "YES", "INFERENCE_NUM_THREADS": threads, "PERFORMANCE_HINT": "LATENCY"}
    if hint:
        config["INFERENCE_PRECISION_HINT"] = hint
    compiled = core.compile_model(model, "CPU", config)
    request = compiled.create_infer_request()
    feeds = {n: np.zeros((1, 3, size, size), np.float32) if n == "image" else np.zeros(1, np.int64) for n in names}
    for _ in range(5):
        request.infer(feeds)
    totals: dict[tuple[str, str], float] = defaultdict(float)
    for _ in range(runs):
        request.infer(feeds)
        for info in request.profiling_info:
            if info.status == info.Status.EXECUTED:
                totals[info.node_type, info.exec_type] += info.real_time.total_seconds() * 1000 / runs
    return dict(sorted(totals.items(), key=lambda kv: -kv[1])), sum(totals.values()), ov.__version__


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("model")
    parser.add_argument("--size", type=int, default=256)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--runs", type=int, default=20)
    parser.add_argument("--hint", choices=["f32", "bf16"], default=None, help="INFERENCE_PRECISION_HINT")
    args = parser.parse_args()
    totals, total, version = profile(args.model, args.size, args.threads, args.runs, args.hint)
    print(f"{args.model}: batch 1, {args.size}x{args.size}, {args.threads} threads, OpenVINO {version}, "
          f"precision hint {args.hint or 'default'}; {total:.1f} ms per run in executed layers\n")
    print("| layer type | kernel | ms per run | share |\n|---|---|---:|---:|")
    for (node, kernel), ms in totals.items():
        if ms >= 0.05 * total / 10:
            print(f"| {node} | {kernel} | {ms:.2f} | {100 * ms / total:.0f}% |")


if __name__ == "__main__":
    main()
