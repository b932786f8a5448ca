"""Offline PyTorch inference on images of any size: pad to `size_multiple`, run, crop back."""

from __future__ import annotations

from pathlib import Path

import torch
import torch.nn.functional as F
from PIL import Image

from .data import read_rgb
from .errors import StylepressError
from .images import SAVE_FORMATS, from_image, save_image, to_image
from .models import load_generator
from .progress import progress_bar


def style_index(spec: dict, name: str | None) -> int:
    styles = spec["styles"]
    if name is None:
        return 0
    if name not in styles:
        raise StylepressError(f"unknown style {name!r}: this model has {', '.join(styles)}")
    return styles.index(name)


@torch.no_grad()
def stylize_image(model: torch.nn.Module, im: Image.Image, style: int, multiple: int) -> Image.Image:
    x = from_image(im).unsqueeze(0)
    h, w = x.shape[-2:]
    x = F.pad(x, (0, (-w) % multiple, 0, (-h) % multiple), mode="replicate")
    y = model(x, torch.tensor([style]))
    return to_image(y[0, :, :h, :w])


def output_paths(images: list[Path], out: Path) -> list[Path]:
    """OUT is a file for one input when it has an image extension, else a folder of <stem>.png."""
    if len(images) == 1 and out.suffix.lower() in SAVE_FORMATS:
        return [out]
    return [out / f"{p.stem}.png" for p in images]


def run(checkpoint: str | Path, images: list[Path], out: Path, style: str | None = None) -> list[Path]:
    model, spec = load_generator(checkpoint)
    idx = style_index(spec, style)
    for p in images:  # fail before any work on a missing input
        if not p.is_file():
            raise StylepressError(f"image not found: {p}")
    targets = output_paths(images, out)
    with progress_bar(len(images), "stylize", enabled=len(images) > 1) as bar:
        for src, dst in zip(images, targets, strict=True):
            save_image(stylize_image(model, read_rgb(src), idx, spec["size_multiple"]), dst)
            bar.advance()
    return targets
