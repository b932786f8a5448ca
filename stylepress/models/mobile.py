"""A student built for fast kernels (`[compress] student = "mobile"`): the ResNet generator's layout
with GAN Compression's mobile blocks (Li et al. 2020): residual blocks of depthwise-separable
convolutions, and upsampling by nearest resize + convolution instead of a transposed convolution,
so that every learned layer is a plain Conv that INT8 runtimes have kernels for. Its norms are the
teacher's StyleNorm (per-style tables) and its skip path the same ColourSkip, so styles, transfer
and serving treat it like the teacher. Same model contract (DESIGN.md); sized by `ngf`.
"""

from __future__ import annotations

import torch
from torch import nn

from .generator import ConvNormReLU
from .layers import ColourSkip, StyleNorm


class SeparableConv(nn.Module):
    """Depthwise 3x3 then pointwise 1x1, about 1/9 of a full 3x3 convolution's MACs at equal width. No
    norm between them (GAN Compression has one): an instance norm of a single depthwise channel
    amplifies float rounding, and ONNX Runtime then missed the 1e-4 parity gate at 384²."""

    def __init__(self, cin: int, cout: int):
        super().__init__()
        self.pad = nn.ReflectionPad2d(1)
        self.depthwise = nn.Conv2d(cin, cin, 3, groups=cin)
        self.pointwise = nn.Conv2d(cin, cout, 1)

    def forward(self, x):
        return self.pointwise(self.depthwise(self.pad(x)))


class MobileResnetBlock(nn.Module):
    def __init__(self, dim: int, norm: str, num_styles: int):
        super().__init__()
        self.conv1 = SeparableConv(dim, dim)
        self.norm1 = StyleNorm(dim, norm, num_styles)
        self.act = nn.ReLU()
        self.conv2 = SeparableConv(dim, dim)
        self.norm2 = StyleNorm(dim, norm, num_styles)

    def forward(self, x, style=None):
        h = self.act(self.norm1(self.conv1(x), style))
        return x + self.norm2(self.conv2(h), style)


class ResizeConv(nn.Module):
    """x2 nearest-neighbour resize, then a 3x3 convolution, norm and ReLU: an upsampling INT8 runs
    (a transposed convolution has no INT8 kernel on the CPU runtimes) and free of checkerboards."""

    def __init__(self, cin: int, cout: int, norm: str, num_styles: int):
        super().__init__()
        self.resize = nn.Upsample(scale_factor=2, mode="nearest")
        self.conv = ConvNormReLU(cin, cout, 3, reflect_pad=1, norm=norm, num_styles=num_styles)

    def forward(self, x, style=None):
        return self.conv(self.resize(x), style)


class MobileResnetGenerator(nn.Module):
    size_multiple = 4  # two stride-2 stages

    def __init__(self, ngf: int = 32, n_blocks: int = 6, norm: str = "instance", num_styles: int = 1,
                 residual: bool = False, colour_skip: bool = False, detail_skip: bool = False):
        super().__init__()
        self.num_styles, self.residual = num_styles, residual
        kw = dict(norm=norm, num_styles=num_styles)
        self.stem = ConvNormReLU(3, ngf, 7, reflect_pad=3, **kw)
        self.down = nn.ModuleList([ConvNormReLU(ngf, ngf * 2, 3, stride=2, **kw),
                                   ConvNormReLU(ngf * 2, ngf * 4, 3, stride=2, **kw)])
        self.blocks = nn.ModuleList([MobileResnetBlock(ngf * 4, **kw) for _ in range(n_blocks)])
        self.up = nn.ModuleList([ResizeConv(ngf * 4, ngf * 2, **kw), ResizeConv(ngf * 2, ngf, **kw)])
        self.head = nn.Sequential(nn.ReflectionPad2d(3), nn.Conv2d(ngf, 3, 7), nn.Tanh())
        self.skip = ColourSkip(num_styles, detail_skip) if residual and colour_skip else None

    def forward(self, image: torch.Tensor, style: torch.Tensor | None = None) -> torch.Tensor:
        x = self.stem(image, style)
        for layer in (*self.down, *self.blocks, *self.up):
            x = layer(x, style)
        if self.residual:
            skip = image if self.skip is None else self.skip(image, style)
            return (skip + self.head(x)).clamp(-1, 1)
        return self.head(x)
