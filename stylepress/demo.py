"""`stylepress demo`: the whole job on photos shipped inside installed packages: train a small
multi-style teacher, export it to ONNX, write the Triton repository, serve it with a real
tritonserver on free local ports, stylize the photos through it, and stop the server."""

from __future__ import annotations

import io
import shutil
from dataclasses import dataclass, field
from importlib.resources import files
from pathlib import Path

import matplotlib
import skimage
from PIL import Image

from .config import load_config, with_steps
from .fsutil import write_bytes, write_text
from .images import grid, save_image

DEMO_PHOTOS = {
    "grace_hopper.jpg": Path(matplotlib.get_data_path()) / "sample_data" / "grace_hopper.jpg",
    "astronaut.png": Path(skimage.__file__).parent / "data" / "astronaut.png",
}


def prepare(run_dir: Path) -> Path:
    """Copy the embedded photos and the demo config into `run_dir`; return the config's path."""
    photos = run_dir / "photos"
    photos.mkdir(parents=True, exist_ok=True)
    for name, src in DEMO_PHOTOS.items():
        if not (photos / name).exists():
            shutil.copyfile(src, photos / name)
    config = run_dir / "demo.toml"
    write_text(config, files("stylepress").joinpath("configs/demo.toml").read_text())
    return config


@dataclass
class DemoResult:
    trained: object  # stylepress.train.TrainResult
    repository: Path | None = None
    outputs: list[Path] = field(default_factory=list)  # stylized through Triton
    grid: Path | None = None


def run(run_dir: Path, steps: int | None = None, log=print) -> DemoResult:
    from stylepress import export, serving, train  # the core composes the stages

    cfg = with_steps(load_config(prepare(run_dir)), steps)
    result = DemoResult(train.run(cfg, run_dir, force=True))
    if result.trained.signal is not None:
        return result
    export.run(cfg, run_dir)
    result.repository = serving.write_repository(cfg, run_dir)
    server = serving.local_server(result.repository, run_dir / "tritonserver.log", log=log)
    log("starting tritonserver")
    with server:
        server.wait_ready()
        log(f"serving at {server.http_url}")
        client = serving.Client(server.http_url)
        photos = sorted((run_dir / "photos").iterdir())
        rows = [[Image.open(p).convert("RGB")] for p in photos]
        for style in client.styles:
            pngs = client.stylize_many([p.read_bytes() for p in photos], style)
            for photo, png, row in zip(photos, pngs, rows, strict=True):
                path = run_dir / "served" / f"{photo.stem}.{style}.png"
                write_bytes(path, png)
                result.outputs.append(path)
                row.append(Image.open(io.BytesIO(png)).convert("RGB"))
    result.grid = run_dir / "served" / "grid.png"
    save_image(grid(rows, ["input", *(f"{s} (via Triton)" for s in client.styles)]), result.grid)
    return result
