"""Trained teachers in a published family's architecture, for the README's per-family compression
figure: one style of a trained stylepress teacher distilled into a freshly initialised
`cyclegan-resnet`, `animegan2`, … generator (output distillation: L1 + (1 − SSIM) to the teacher).

No published checkpoint can be downloaded here, and a random-initialised teacher would make the
compression figure meaningless; this gives each family a teacher that does a real style. Its
`weights.safetensors` carries the family's published key layout, so `stylepress import` reads it
like any checkpoint of that family.

  <run>/family/<arch>-<style>/weights.safetensors, arch.json, log.jsonl, samples.png, state.pt
"""

from __future__ import annotations

from pathlib import Path

import torch
from torch import nn

from stylepress.compress.distill import STATE_FILE, distill
from stylepress.config import Config
from stylepress.data import PortraitData
from stylepress.errors import StylepressError
from stylepress.layout import RunLayout
from stylepress.models import load_generator
from stylepress.models.published import new_generator


class OneStyle(nn.Module):
    """A multi-style generator answering one style whatever `style` it is given."""

    def __init__(self, model: nn.Module, index: int):
        super().__init__()
        self.model, self.index = model, index

    def forward(self, image, style=None):
        return self.model(image, torch.full((len(image),), self.index, dtype=torch.long, device=image.device))


def run(cfg: Config, run_dir: Path, arch: str, style: str, options: dict, teacher_dir: Path | None = None,
        resume: bool = False) -> dict:
    layout = RunLayout(run_dir)
    teacher, teacher_spec = load_generator(teacher_dir or layout.teacher)
    if style not in teacher_spec.styles:
        raise StylepressError(f"--style {style!r}: the teacher's styles are {list(teacher_spec.styles)}")
    student, spec = new_generator(arch, options, style)
    if cfg.crop % spec.size_multiple:
        raise StylepressError(f"train.crop {cfg.crop} must be a multiple of {spec.size_multiple} for {arch}")
    out = layout.family / f"{arch}-{style}"
    if not resume and (out / STATE_FILE).exists():
        raise StylepressError(f"{out} already holds a distillation checkpoint: pass --resume to continue it")
    result = distill(cfg, OneStyle(teacher, teacher_spec.styles.index(style)), student, spec,
                     PortraitData(cfg.data, cfg.crop), out, None, resume)
    return {"arch": arch, "style": style, "dir": str(out), **result}
