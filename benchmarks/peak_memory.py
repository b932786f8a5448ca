"""Peak memory of one model in a fresh process: the resident memory that loading it and running
batch 1 once adds (MB).

Each measurement spawns a new interpreter, which imports only this module and the runtime it
measures: importing the benchmark suites too (torch, onnx, matplotlib) took ~8 s per variant.
"""

from __future__ import annotations

import multiprocessing
from pathlib import Path

import numpy as np


def peak_memory_mb(kind: str, path: str, size: int, threads: int, providers: list | None = None) -> float:
    """`kind` "onnx" (an ONNX Runtime session on `providers`, as `export.runtime.providers_for` gives)
    or "eager" (a checkpoint folder in PyTorch)."""
    with multiprocessing.get_context("spawn").Pool(1) as pool:
        return pool.apply(_child, (kind, path, size, threads, providers))


def _status_mb(field: str) -> float:  # VmHWM is this process's own peak (ru_maxrss survives fork + exec)
    line = next(x for x in Path("/proc/self/status").read_text().splitlines() if x.startswith(field))
    return int(line.split()[1]) / 1024


def _child(kind: str, path: str, size: int, threads: int, providers: list | None) -> float:
    x = np.zeros((1, 3, size, size), np.float32)
    if kind == "eager":
        import torch

        from stylepress.models import load_generator

        torch.set_num_threads(threads)
        before = _status_mb("VmRSS:")  # imports done
        net, _ = load_generator(path)
        with torch.inference_mode():
            net(torch.from_numpy(x), torch.zeros(1, dtype=torch.long))
    else:
        import onnxruntime as ort

        before = _status_mb("VmRSS:")
        options = ort.SessionOptions()  # the measured settings of export.runtime.session
        options.log_severity_level = 3
        options.intra_op_num_threads, options.inter_op_num_threads = threads, 1
        sess = ort.InferenceSession(path, options, providers=providers)
        feeds = {"image": x} | ({"style": np.zeros(1, np.int64)} if len(sess.get_inputs()) == 2 else {})
        sess.run(None, feeds)
    return _status_mb("VmHWM:") - before
