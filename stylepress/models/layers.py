"""Normalisation shared by the generator and discriminator."""

from __future__ import annotations

import torch
from torch import nn


class StyleNorm(nn.Module):
    """Instance/batch/no normalisation, conditioned on a style index when num_styles > 1.

    With one style this is exactly CycleGAN's layer (InstanceNorm2d without affine, BatchNorm2d
    with affine), so published checkpoints keep their keys. With several styles the affine
    parameters come from per-style tables (conditional instance norm, Dumoulin et al. 2017).
    A published family's layer made per-style (models.styled) wraps its own instance, batch or
    group norm and gets its style from the `StyleRouter` (`routed`).
    """

    def __init__(self, channels: int, norm: str = "instance", num_styles: int = 1):
        super().__init__()
        conditional = num_styles > 1
        if norm == "instance":
            self.norm = nn.InstanceNorm2d(channels, affine=False)
        elif norm == "batch":
            self.norm = nn.BatchNorm2d(channels, affine=not conditional)
        elif norm == "none":
            self.norm = nn.Identity()
        else:
            raise ValueError(f"unknown norm {norm!r}")
        self.num_styles, self.channels = num_styles, channels  # channels: kept current by the pruner
        self.routed: torch.Tensor | None = None  # the style a `styled.StyleRouter` hands a family's layer
        if conditional:
            self.weight = nn.Parameter(torch.ones(num_styles, channels))
            self.bias = nn.Parameter(torch.zeros(num_styles, channels))

    def forward(self, x: torch.Tensor, style: torch.Tensor | None = None) -> torch.Tensor:
        x = self.norm(x)
        if self.num_styles == 1:
            return x
        style = self.routed if style is None else style
        if style is None:
            raise ValueError("this model has several styles: pass a `style` index tensor")
        return x * self.weight[style][:, :, None, None] + self.bias[style][:, :, None, None]
