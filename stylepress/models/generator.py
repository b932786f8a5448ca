"""The ResNet generator of the CycleGAN family (Johnson et al. 2016; Zhu et al. 2017).

Model contract (DESIGN.md): `image` float32 NCHW in [-1, 1] -> same shape in [-1, 1]; H and W
multiples of `size_multiple`; a second input `style` (int64, [N]) when num_styles > 1.
Activations are out-of-place so that torch-pruning's tracing sees every norm layer.
"""

from __future__ import annotations

import torch
from torch import nn

from .layers import ColourSkip, StyleNorm


class ConvNormReLU(nn.Module):
    def __init__(self, cin, cout, kernel, stride=1, reflect_pad=0, norm="instance", num_styles=1,
                 transpose=False):
        super().__init__()
        bias = norm != "batch"  # CycleGAN: a conv before BatchNorm has no bias
        self.pad = nn.ReflectionPad2d(reflect_pad) if reflect_pad else nn.Identity()
        if transpose:
            self.conv = nn.ConvTranspose2d(cin, cout, kernel, stride, padding=1, output_padding=1, bias=bias)
        else:
            self.conv = nn.Conv2d(cin, cout, kernel, stride, padding=(kernel // 2 if stride > 1 else 0),
                                  bias=bias)
        self.norm = StyleNorm(cout, norm, num_styles)
        self.act = nn.ReLU()

    def forward(self, x, style=None):
        return self.act(self.norm(self.conv(self.pad(x)), style))


class ResnetBlock(nn.Module):
    def __init__(self, dim, norm="instance", num_styles=1, inner=None):
        super().__init__()
        bias = norm != "batch"
        inner = inner or dim  # pruning narrows the block's inside; the trunk width `dim` is shared
        self.conv1 = ConvNormReLU(dim, inner, 3, reflect_pad=1, norm=norm, num_styles=num_styles)
        self.pad2 = nn.ReflectionPad2d(1)
        self.conv2 = nn.Conv2d(inner, dim, 3, bias=bias)
        self.norm2 = StyleNorm(dim, norm, num_styles)

    def forward(self, x, style=None):
        return x + self.norm2(self.conv2(self.pad2(self.conv1(x, style))), style)


class ResnetGenerator(nn.Module):
    size_multiple = 4  # two stride-2 stages

    def __init__(self, ngf: int = 64, n_blocks: int = 9, norm: str = "instance", num_styles: int = 1,
                 residual: bool = False, colour_skip: bool = False, detail_skip: bool = False,
                 widths: dict | None = None):
        """`widths` (from `layer_widths` of a pruned model) overrides the widths `ngf` implies;
        `colour_skip` (with `residual`): the photo reaches the output through a ColourSkip, with
        `detail_skip` one that can drop the photo's fine detail."""
        super().__init__()
        self.num_styles, self.residual = num_styles, residual
        w = widths or {"stem": ngf, "down": [ngf * 2, ngf * 4], "inner": [ngf * 4] * n_blocks,
                       "up": [ngf * 2, ngf]}
        kw = dict(norm=norm, num_styles=num_styles)
        trunk = w["down"][1]  # the residual trunk: every block's input and output
        self.stem = ConvNormReLU(3, w["stem"], 7, reflect_pad=3, **kw)
        self.down = nn.ModuleList([
            ConvNormReLU(w["stem"], w["down"][0], 3, stride=2, **kw),
            ConvNormReLU(w["down"][0], trunk, 3, stride=2, **kw),
        ])
        self.blocks = nn.ModuleList([ResnetBlock(trunk, inner=c, **kw) for c in w["inner"]])
        self.up = nn.ModuleList([
            ConvNormReLU(trunk, w["up"][0], 3, stride=2, transpose=True, **kw),
            ConvNormReLU(w["up"][0], w["up"][1], 3, stride=2, transpose=True, **kw),
        ])
        self.head = nn.Sequential(nn.ReflectionPad2d(3), nn.Conv2d(w["up"][1], 3, 7), nn.Tanh())
        self.skip = ColourSkip(num_styles, detail_skip) if residual and colour_skip else None

    def layer_widths(self) -> dict:
        """The output width of every prunable layer, enough to rebuild this (pruned) generator."""
        return {"stem": self.stem.conv.out_channels, "down": [m.conv.out_channels for m in self.down],
                "inner": [b.conv1.conv.out_channels for b in self.blocks], "up": [m.conv.out_channels for m in self.up]}

    def forward(self, image: torch.Tensor, style: torch.Tensor | None = None) -> torch.Tensor:
        x = self.stem(image, style)
        for layer in self.down:
            x = layer(x, style)
        for block in self.blocks:
            x = block(x, style)
        for layer in self.up:
            x = layer(x, style)
        if self.residual:  # predict a change to the photo: colours survive the instance norms exactly
            skip = image if self.skip is None else self.skip(image, style)
            return (skip + self.head(x)).clamp(-1, 1)
        return self.head(x)
