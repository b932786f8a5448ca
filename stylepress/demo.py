"""`stylepress demo`: train a small multi-style teacher on photos shipped inside installed packages."""

from __future__ import annotations

import shutil
from importlib.resources import files
from pathlib import Path

import matplotlib
import skimage

from .config import load_config, with_steps
from .fsutil import write_text

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


def run(run_dir: Path, steps: int | None = None):
    from stylepress import train  # the core composes the stages

    cfg = with_steps(load_config(prepare(run_dir)), steps)
    return train.run(cfg, run_dir, force=True)
