"""Export to ONNX (fp32; FP16/INT8 and TensorRT to come). Entry point: `run(cfg, run_dir)`.

export/
  <model>.fp32.onnx   teacher / student, dynamic batch, height and width, weights embedded
  parity.json         ONNX Runtime vs PyTorch on val portraits, per model, size and batch
"""

from __future__ import annotations

import json
import logging
from pathlib import Path

from stylepress.config import Config
from stylepress.data import read_rgb, val_image_paths
from stylepress.errors import StylepressError
from stylepress.fsutil import atomic_path, write_json
from stylepress.models import ARCH_FILE, load_generator
from stylepress.progress import progress_bar

from .onnx_export import export_onnx
from .parity import check_parity

log = logging.getLogger(__name__)
MODELS = ("teacher", "student")
PARITY_PHOTOS = 3


def onnx_name(model: str, precision: str = "fp32") -> str:
    return f"{model}.{precision}.onnx"


def run(cfg: Config, run_dir: str | Path, show_progress: bool = True) -> dict[str, Path]:
    """Export every trained model in the run; returns {model: onnx path}. Fails if parity fails."""
    run_dir = Path(run_dir)
    models = [m for m in MODELS if (run_dir / m / ARCH_FILE).is_file()]
    if not models:
        raise StylepressError(f"nothing to export: {run_dir} has no teacher/ (run `stylepress train` first)")
    out = run_dir / "export"
    photos = [read_rgb(p) for p in val_image_paths(cfg.data)[:PARITY_PHOTOS]]
    parity_path = out / "parity.json"
    parity = json.loads(parity_path.read_text()) if parity_path.is_file() else {}
    written = {}
    with progress_bar(len(models), "export", enabled=show_progress) as bar:
        for name in models:
            model, spec = load_generator(run_dir / name)
            path = out / onnx_name(name)
            bar.update(name)
            with atomic_path(path) as tmp:  # a model that fails parity never lands
                export_onnx(model, spec, tmp, cfg.export.opset)
                parity[name] = check_parity(model, spec, tmp, photos, cfg.export.parity_tolerance)
                write_json(parity_path, parity)
                if not parity[name]["passed"]:
                    path.unlink(missing_ok=True)
                    raise StylepressError(
                        f"{name}: ONNX Runtime differs from PyTorch by {parity[name]['max_abs_err']:.2e} "
                        f"(tolerance {cfg.export.parity_tolerance:g}) at {parity[name]['worst']}; see {parity_path}")
            log.info("%s: %s (parity max abs err %.1e)", name, path, parity[name]["max_abs_err"])
            written[name] = path
            bar.advance()
    return written
