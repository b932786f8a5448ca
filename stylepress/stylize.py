"""Stylize image files, offline (PyTorch, `checkpoint`) or through a Triton server (`url`).

Both paths share `prepost`: the same decoding, limits, letterbox to `size` and un-letterboxing,
so an image stylized offline and through Triton's ensemble gives the same pixels.
"""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from . import prepost
from .errors import StylepressError
from .fsutil import write_bytes
from .images import SAVE_FORMATS, save_image
from .models.spec import ArchSpec
from .progress import progress_bar

CHUNK = 8  # images in flight at once through the server


def style_index(spec: ArchSpec, name: str | None) -> int:
    styles = spec.styles
    if name is None:
        return 0
    if name not in styles:
        raise StylepressError(f"unknown style {prepost.quote(name)}: this model has {', '.join(styles)}")
    return styles.index(name)


@torch.no_grad()
def stylize_rgb(model: torch.nn.Module, rgb: np.ndarray, style: int, size: int) -> np.ndarray:
    """RGB uint8 HxWx3 -> stylized RGB uint8, same size, through the serving letterbox."""
    x, box = prepost.letterbox(rgb, size)
    y = model(torch.from_numpy(x)[None], torch.tensor([style]))
    return prepost.unletterbox(y[0].numpy(), box)


def output_paths(images: list[Path], out: Path) -> list[Path]:
    """OUT is a file for one input when it has an image extension, else a folder of <stem>.png."""
    if len(images) == 1 and out.suffix.lower() in SAVE_FORMATS:
        return [out]
    return [out / f"{p.stem}.png" for p in images]


def run(images: list[Path], out: Path, style: str | None = None, checkpoint: str | Path | None = None,
        size: int = 256, url: str | None = None, grpc: bool = False, model: str | None = None,
        key: str | None = None, tls_ca: Path | None = None) -> list[Path]:
    if (checkpoint is None) == (url is None):
        raise StylepressError("give exactly one of --checkpoint (offline) or --url (a Triton server)")
    for p in images:  # fail before any work on a missing input
        if not p.is_file():
            raise StylepressError(f"image not found: {p}")
    targets = output_paths(images, out)
    with progress_bar(len(images), "stylize", enabled=len(images) > 1) as bar:
        if url is not None:
            from stylepress.serving import Client  # the core composes stages; only this path needs it

            client = Client(url, model=model, grpc=grpc, key=key, tls_ca=str(tls_ca) if tls_ca else None)
            for i in range(0, len(images), CHUNK):
                pngs = client.stylize_many([p.read_bytes() for p in images[i:i + CHUNK]], style)
                for dst, png in zip(targets[i:i + CHUNK], pngs, strict=True):
                    _save_png(png, dst)
                    bar.advance()
            return targets
        from .models import load_generator

        net, spec = load_generator(checkpoint)
        if size % spec.size_multiple:
            raise StylepressError(f"--size {size} is not a multiple of {spec.size_multiple}")
        idx = style_index(spec, style)
        for src, dst in zip(images, targets, strict=True):
            try:
                rgb = prepost.decode(src.read_bytes())
            except prepost.ImageError as exc:
                raise StylepressError(f"cannot read image {src}: {exc}") from None
            save_image(Image.fromarray(stylize_rgb(net, rgb, idx, size)), dst)
            bar.advance()
    return targets


def _save_png(png: bytes, dst: Path) -> None:
    if dst.suffix.lower() == ".png":
        write_bytes(dst, png)
    else:
        save_image(Image.open(io.BytesIO(png)), dst)
