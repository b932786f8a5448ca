"""Stylize image files, offline (PyTorch, `checkpoint`) or through a Triton server (`url`).

Both paths share `prepost`: the same decoding, limits, letterbox to `size` and un-letterboxing,
so an image stylized offline and through Triton's ensemble gives the same pixels.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from . import prepost
from .errors import StylepressError
from .fsutil import write_bytes
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


SUFFIX_FORMAT = {".png": "png", ".jpg": "jpeg", ".jpeg": "jpeg", ".webp": "webp"}


def output_paths(images: list[Path], out: Path, fmt: str | None = None) -> tuple[list[Path], str]:
    """OUT is a file for one input when it has an image extension (its suffix gives the format unless
    `fmt` does), else a folder of <stem>.<format>. Returns the paths and the format (default png)."""
    if len(images) == 1 and out.suffix.lower() in SUFFIX_FORMAT:
        implied = SUFFIX_FORMAT[out.suffix.lower()]
        if fmt is not None and fmt != implied:
            raise StylepressError(f"--format {fmt} does not match the output file {out.name}")
        return [out], implied
    fmt = fmt or "png"
    if fmt not in prepost.OUTPUT_FORMATS:
        raise StylepressError(f"--format {prepost.quote(fmt)}: png, jpeg or webp")
    ext = "jpg" if fmt == "jpeg" else fmt
    return [out / f"{p.stem}.{ext}" for p in images], fmt


def run(images: list[Path], out: Path, style: str | None = None, checkpoint: str | Path | None = None,
        size: int = 256, url: str | None = None, grpc: bool = False, model: str | None = None,
        key: str | None = None, tls_ca: Path | None = None, fmt: str | None = None,
        quality: int | None = None) -> list[Path]:
    """Stylize offline or through Triton; every output is encoded by prepost.encode (the server's code)."""
    if (checkpoint is None) == (url is None):
        raise StylepressError("give exactly one of --checkpoint (offline) or --url (a Triton server)")
    for p in images:  # fail before any work on a missing input
        if not p.is_file():
            raise StylepressError(f"image not found: {p}")
    if quality is not None and not 1 <= quality <= 100:
        raise StylepressError(f"--quality {quality}: between 1 and 100")
    targets, fmt = output_paths(images, out, fmt)
    with progress_bar(len(images), "stylize", enabled=len(images) > 1) as bar:
        if url is not None:
            from stylepress.serving import Client  # the core composes stages; only this path needs it

            with Client(url, model=model, grpc=grpc, key=key, tls_ca=str(tls_ca) if tls_ca else None) as client:
                for i in range(0, len(images), CHUNK):
                    encoded = client.stylize_many([p.read_bytes() for p in images[i:i + CHUNK]], style, fmt, quality)
                    for dst, data in zip(targets[i:i + CHUNK], encoded, strict=True):
                        write_bytes(dst, data)
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
            write_bytes(dst, prepost.encode(stylize_rgb(net, rgb, idx, size), fmt, quality))
            bar.advance()
    return targets
