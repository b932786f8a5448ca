"""`stylepress demo`: the whole job on photos shipped inside installed packages: the build (the
bundled reference teacher, or with `--train` a small teacher trained on the two photos; prune and
distil a student, export fp32/INT8, write the Triton repository, benchmark and report), then
serve the repository with a real tritonserver on free local ports, stylize the photos through it,
and stop the server."""

from __future__ import annotations

import io
import json
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
from .layout import RunLayout

DEMO_PHOTOS = {
    "grace_hopper.jpg": Path(matplotlib.get_data_path()) / "sample_data" / "grace_hopper.jpg",
    "astronaut.png": Path(skimage.__file__).parent / "data" / "astronaut.png",
}


def prepare(run_dir: Path, train: bool = False) -> Path:
    """Copy the embedded photos and the demo config into `run_dir`; return the config's path."""
    photos = run_dir / "photos"
    photos.mkdir(parents=True, exist_ok=True)
    for name, src in DEMO_PHOTOS.items():
        if not (photos / name).exists():
            shutil.copyfile(src, photos / name)
    config = run_dir / "demo.toml"
    source = "configs/demo-train.toml" if train else "configs/demo.toml"
    write_text(config, files("stylepress").joinpath(source).read_text())
    return config


@dataclass
class DemoResult:
    stages: list  # stylepress.build.StageResult per stage
    run_dir: Path
    repository: Path | None = None
    outputs: list[Path] = field(default_factory=list)  # stylized through Triton
    grid: Path | None = None
    summary: str = ""  # teacher against the selected variant

    @property
    def signal(self) -> int | None:
        return self.stages[-1].signal if self.stages else None


def run(run_dir: Path, steps: int | None = None, train: bool = False, log=print) -> DemoResult:
    """`steps`: the teacher's training steps with `train`, else the student's distillation steps."""
    from stylepress import build, serving  # the core composes the stages

    config = prepare(run_dir, train)
    if train:
        cfg = with_steps(load_config(config), steps)
    else:
        cfg = load_config(config, [f"compress.distill_steps={steps}"] if steps is not None else [])
    layout = RunLayout(run_dir)
    result = DemoResult(build.run(cfg, run_dir, log=log), run_dir)
    if result.signal is not None:
        return result
    result.summary = summary(json.loads(layout.report_json.read_text()))
    result.repository = layout.repository
    server = serving.local_server(result.repository, layout.server_log, log=log)
    log("starting tritonserver")
    with server:
        server.wait_ready()
        log(f"serving at {server.http_url}")
        client = serving.Client(server.http_url)  # closed before the server stops: it waits for open connections
        photos = sorted((run_dir / "photos").iterdir())
        rows = [[Image.open(p).convert("RGB")] for p in photos]
        for style in client.styles:
            pngs = client.stylize_many([p.read_bytes() for p in photos], style)
            for photo, png, row in zip(photos, pngs, rows, strict=True):
                path = run_dir / "served" / f"{photo.stem}.{style}.png"
                write_bytes(path, png)
                result.outputs.append(path)
                row.append(Image.open(io.BytesIO(png)).convert("RGB"))
        client.close()
    result.grid = run_dir / "served" / "grid.png"
    save_image(grid(rows, ["input", *(f"{s} (via Triton)" for s in client.styles)]), result.grid)
    return result


def summary(report: dict) -> str:
    """One line: the served variant and its gated figures (speedup at concurrency 1 over the teacher's
    full path, quality of what the server returned against the teacher, each gate's verdict)."""
    gates = {g["name"]: g for g in report["gates"]}
    speedup = report["speedup_vs_teacher"]
    psnr, ssim = gates.get("min_psnr_db", {}).get("value"), gates.get("min_ssim", {}).get("value")
    verdict = "gates passed" if all(g["passed"] for g in report["gates"]) else "gates FAILED: " + ", ".join(
        name for name, g in gates.items() if not g["passed"])
    figures = [f"PSNR to the teacher {psnr:.1f} dB" if psnr is not None else "PSNR not measured",
               f"SSIM {ssim:.3f}" if ssim is not None else "SSIM not measured"]
    if speedup is not None:
        figures.insert(0, f"{speedup:.1f}x the teacher's speed")
    return f"served {report['selected']} (gated {report['gated']}): {', '.join(figures)}; {verdict}"
