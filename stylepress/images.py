"""Tensor <-> image conversion, sample grids and atomic image writes."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from PIL import Image, ImageDraw

from .fsutil import atomic_write

SAVE_FORMATS = {".png": "PNG", ".jpg": "JPEG", ".jpeg": "JPEG", ".webp": "WEBP"}


def to_image(t: torch.Tensor) -> Image.Image:
    """[3,H,W] in [-1, 1] -> RGB image."""
    arr = ((t.detach().float().cpu().clamp(-1, 1) + 1) * 127.5).round().byte().permute(1, 2, 0).numpy()
    return Image.fromarray(np.ascontiguousarray(arr))


def from_image(im: Image.Image) -> torch.Tensor:
    """RGB image -> [3,H,W] float in [-1, 1]."""
    return torch.from_numpy(np.asarray(im.convert("RGB")).copy()).permute(2, 0, 1).float() / 127.5 - 1.0


def save_image(im: Image.Image, path: str | Path) -> None:
    path = Path(path)
    fmt = SAVE_FORMATS.get(path.suffix.lower(), "PNG")
    atomic_write(path, lambda tmp: im.save(tmp, format=fmt))


def grid(rows: list[list[Image.Image]], labels: list[str], cell: int = 192) -> Image.Image:
    """A labelled grid: one row per example, one column per label (e.g. input | style outputs)."""
    header = 20
    out = Image.new("RGB", (cell * len(labels), header + cell * len(rows)), "white")
    draw = ImageDraw.Draw(out)
    for c, label in enumerate(labels):
        draw.text((c * cell + 6, 4), label, fill="black")
    for r, row in enumerate(rows):
        for c, im in enumerate(row):
            out.paste(im.resize((cell, cell), Image.BICUBIC), (c * cell, header + r * cell))
    return out
