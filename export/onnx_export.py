"""PyTorch generator -> ONNX with dynamic batch, height and width, weights embedded.

torch.onnx's dynamo exporter fixes a dimension whose example size is 1 and writes external data
by default (DESIGN.md): export from a batch of 2 with `external_data=False`, and declare H and W
as multiples of the model's `size_multiple`.
"""

from __future__ import annotations

import contextlib
import logging
import warnings
from pathlib import Path

import onnx
import torch

from stylepress.fsutil import atomic_path
from stylepress.models.spec import ArchSpec

INPUT, STYLE, OUTPUT = "image", "style", "styled"


def export_onnx(model: torch.nn.Module, spec: ArchSpec, path: Path, opset: int) -> None:
    """Write `model` to `path` (atomically) and run onnx's full checker and shape inference."""
    m = spec.size_multiple
    batch = torch.export.Dim("batch", min=1, max=1024)
    h, w = torch.export.Dim("h", min=1, max=8192 // m), torch.export.Dim("w", min=1, max=8192 // m)
    image = torch.zeros(2, 3, 16 * m, 12 * m)
    args, dynamic = (image,), {"image": {0: batch, 2: m * h, 3: m * w}}
    names = [INPUT]
    if spec.num_styles > 1:
        args += (torch.tensor([0, spec.num_styles - 1]),)
        dynamic["style"] = {0: batch}
        names.append(STYLE)
    with atomic_path(path) as tmp, _quiet():
        torch.onnx.export(model.eval(), args, str(tmp), dynamo=True, dynamic_shapes=dynamic, opset_version=opset,
                          input_names=names, output_names=[OUTPUT], external_data=False, verbose=False)
        _strip_debug_metadata(tmp)
        onnx.checker.check_model(str(tmp), full_check=True)
        onnx.shape_inference.infer_shapes_path(str(tmp), check_type=True, strict_mode=True)


def _strip_debug_metadata(path: Path) -> None:
    """The exporter's debug metadata makes the bytes vary: torch.export's range_constraints come out in
    an order set by the string-hash seed (new per process), and node stack traces hold source paths
    and line numbers. Nothing reads it; without it the same network always exports to the same bytes
    (the pipeline hashes them)."""
    model = onnx.load(str(path))
    del model.graph.metadata_props[:]
    for node in model.graph.node:
        del node.metadata_props[:]
    onnx.save(model, str(path))


@contextlib.contextmanager
def _quiet():
    """The exporter and its graph optimizer log every step: keep the terminal for our own messages."""
    loggers = [logging.getLogger(name) for name in ("torch.onnx", "onnxscript", "onnx_ir")]
    levels = [logger.level for logger in loggers]
    for logger in loggers:
        logger.setLevel(logging.ERROR)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            yield
    finally:
        for logger, level in zip(loggers, levels, strict=True):
            logger.setLevel(level)
