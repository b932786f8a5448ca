"""Normalisation shared by the generator and discriminator."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


class StyleNorm(nn.Module):
    """Instance/batch/no normalisation, conditioned on a style index when num_styles > 1.

    With one style this is exactly CycleGAN's layer (InstanceNorm2d without affine, BatchNorm2d
    with affine), so published checkpoints keep their keys. With several styles the affine
    parameters come from per-style tables (conditional instance norm, Dumoulin et al. 2017).
    A published family's layer made per-style (models.styled) wraps its own instance, batch or
    group norm and gets its style from the `StyleRouter` (`routed`).
    """

    def __init__(self, channels: int, norm: str = "instance", num_styles: int = 1, tables: bool = False):
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
        if conditional or tables:
            self.weight = nn.Parameter(torch.ones(num_styles, channels))
            self.bias = nn.Parameter(torch.zeros(num_styles, channels))

    @property
    def has_tables(self) -> bool:
        return "weight" in self._parameters

    def forward(self, x: torch.Tensor, style: torch.Tensor | None = None) -> torch.Tensor:
        x = self.norm(x)
        if not self.has_tables:
            return x
        style = self.routed if style is None else style
        if style is None and self.num_styles == 1:
            style = torch.zeros(len(x), dtype=torch.long, device=x.device)
        if style is None:
            raise ValueError("this model has several styles: pass a `style` index tensor")
        return x * self.weight[style][:, :, None, None] + self.bias[style][:, :, None, None]


# RGB -> YIQ: Y is luma (the weights OpenCV's BGR2GRAY uses), I and Q are chroma.
YIQ = torch.tensor([[0.299, 0.587, 0.114], [0.5959, -0.2746, -0.3213], [0.2115, -0.5227, 0.3112]])
YIQ_INV = torch.linalg.inv(YIQ)


class ColourSkip(StyleNorm):
    """The residual generator's skip path: the photo with a per-style scale and shift of its luma
    and chroma (rows start at 1 and 0: the photo itself). Instance norms remove every channel's mean
    and scale, so the generator alone cannot know a region's absolute colour: with a plain skip
    (output = photo + G) a sketch kept a blue sky blue, and a sketch's grey must come from here
    (chroma scale 0). A StyleNorm with tables even for one style, so adding styles, transfer and
    pruning treat its rows like every other norm's."""

    # Training moves the rows at lr x lr_mul: a sketch's chroma scale travels from 1 to 0, and Adam's
    # steps are about lr in size (400 fine-tuning steps at lr 1e-3 moved it only to 0.89).
    lr_mul = 25.0

    def __init__(self, num_styles: int = 1, detail: bool = False):
        """`detail`: the photo is split into a blur and its fine detail, each with its own rows, so a
        style can drop the photo's texture (oil's smooth paint). Without it the generator would have
        to rebuild every wrinkle at full resolution to cancel it, and smoothing styles stayed photos."""
        super().__init__(6 if detail else 3, "none", num_styles, tables=True)
        self.detail = detail
        self.register_buffer("to_yiq", YIQ[:, :, None, None].clone(), persistent=False)
        self.register_buffer("from_yiq", YIQ_INV[:, :, None, None].clone(), persistent=False)

    def forward(self, image: torch.Tensor, style: torch.Tensor | None = None) -> torch.Tensor:
        yiq = _mix(image, self.to_yiq)
        if not self.detail:
            return _mix(super().forward(yiq, style), self.from_yiq)
        base = _box_blur(_box_blur(yiq))  # about a Gaussian of sigma 2 px; pooling, so INT8 leaves it in float
        rows = super().forward(torch.cat([base, yiq - base], 1), style)
        return _mix(rows[:, :3] + rows[:, 3:], self.from_yiq)


def _box_blur(x: torch.Tensor) -> torch.Tensor:
    return F.avg_pool2d(x, 5, stride=1, padding=2, count_include_pad=False)


def _mix(x: torch.Tensor, matrix: torch.Tensor) -> torch.Tensor:
    """`matrix` [C, K, 1, 1] applied to the channels of x [N, K, H, W] as Mul and ReduceSum, not a
    Conv: INT8 export quantizes convolutions, and the photo's own path stays in float."""
    return (matrix[None] * x[:, None]).sum(2)
