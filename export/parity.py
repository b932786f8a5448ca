"""The parity gate: ONNX Runtime must reproduce PyTorch on real portraits, at several sizes and
batch sizes, within a tolerance; otherwise the export fails naming the size."""

from __future__ import annotations

import numpy as np
import onnxruntime as ort
import torch
from PIL import Image

from stylepress.models.spec import ArchSpec

# (height, width): square sizes around the serving size, and a non-square one
SIZES = ((128, 128), (256, 256), (384, 384), (256, 192))
BATCHES = (1, 3)


def parity_inputs(photos: list[Image.Image], h: int, w: int, batch: int) -> np.ndarray:
    """`batch` portraits resized to h x w, float32 NCHW in [-1, 1]."""
    arrs = [np.asarray(photos[i % len(photos)].resize((w, h), Image.BICUBIC)) for i in range(batch)]
    return np.stack(arrs).transpose(0, 3, 1, 2).astype(np.float32) / np.float32(127.5) - np.float32(1.0)


@torch.no_grad()
def check_parity(model: torch.nn.Module, spec: ArchSpec, onnx_path, photos: list[Image.Image], tolerance: float,
                 sizes=SIZES, batches=BATCHES) -> dict:
    """Compare the two runtimes on every (size, batch); the result says whether all are within `tolerance`."""
    m = spec.size_multiple  # e.g. 256 for pix2pix's unet_256: sizes rounded up to what the model takes
    sizes = list(dict.fromkeys((-(-h // m) * m, -(-w // m) * m) for h, w in sizes))
    session = ort.InferenceSession(str(onnx_path), providers=["CPUExecutionProvider"])
    inputs = [i.name for i in session.get_inputs()]
    n_styles = spec.num_styles
    cases = []
    for h, w in sizes:
        for batch in batches:
            x = parity_inputs(photos, h, w, batch)
            style = np.arange(batch, dtype=np.int64) % n_styles
            feeds = {"image": x, "style": style} if len(inputs) == 2 else {"image": x}
            got = session.run(None, feeds)[0]
            want = model.eval()(torch.from_numpy(x), torch.from_numpy(style) if len(inputs) == 2 else None).numpy()
            err = np.abs(got - want)
            cases.append({"height": h, "width": w, "batch": batch, "max_abs_err": float(err.max()),
                          "mean_abs_err": float(err.mean())})
    worst = max(cases, key=lambda c: c["max_abs_err"])
    return {"passed": worst["max_abs_err"] <= tolerance, "tolerance": tolerance, "max_abs_err": worst["max_abs_err"],
            "worst": f"{worst['height']}x{worst['width']}, batch {worst['batch']}", "onnxruntime": ort.__version__,
            "provider": "CPUExecutionProvider", "photos": len(photos), "cases": cases}
