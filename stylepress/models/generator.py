"""The ResNet generator of the CycleGAN family (Johnson et al. 2016; Zhu et al. 2017).

Model contract (DESIGN.md): `image` float32 NCHW in [-1, 1] -> same shape in [-1, 1]; H and W
multiples of `size_multiple`; a second input `style` (int64, [N]) when num_styles > 1.
Activations are out-of-place so that torch-pruning's tracing sees every norm layer.
"""

from __future__ import annotations

import torch
from torch import nn

from .layers import StyleNorm


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
    def __init__(self, dim, norm="instance", num_styles=1):
        super().__init__()
        bias = norm != "batch"
        self.conv1 = ConvNormReLU(dim, dim, 3, reflect_pad=1, norm=norm, num_styles=num_styles)
        self.pad2 = nn.ReflectionPad2d(1)
        self.conv2 = nn.Conv2d(dim, dim, 3, bias=bias)
        self.norm2 = StyleNorm(dim, norm, num_styles)

    def forward(self, x, style=None):
        return x + self.norm2(self.conv2(self.pad2(self.conv1(x, style))), style)


class ResnetGenerator(nn.Module):
    size_multiple = 4  # two stride-2 stages

    def __init__(self, ngf: int = 64, n_blocks: int = 9, norm: str = "instance", num_styles: int = 1,
                 residual: bool = False):
        super().__init__()
        self.num_styles, self.residual = num_styles, residual
        kw = dict(norm=norm, num_styles=num_styles)
        self.stem = ConvNormReLU(3, ngf, 7, reflect_pad=3, **kw)
        self.down = nn.ModuleList([
            ConvNormReLU(ngf, ngf * 2, 3, stride=2, **kw),
            ConvNormReLU(ngf * 2, ngf * 4, 3, stride=2, **kw),
        ])
        self.blocks = nn.ModuleList([ResnetBlock(ngf * 4, **kw) for _ in range(n_blocks)])
        self.up = nn.ModuleList([
            ConvNormReLU(ngf * 4, ngf * 2, 3, stride=2, transpose=True, **kw),
            ConvNormReLU(ngf * 2, ngf, 3, stride=2, transpose=True, **kw),
        ])
        self.head = nn.Sequential(nn.ReflectionPad2d(3), nn.Conv2d(ngf, 3, 7), nn.Tanh())

    def forward(self, image: torch.Tensor, style: torch.Tensor | None = None) -> torch.Tensor:
        x = self.stem(image, style)
        for layer in self.down:
            x = layer(x, style)
        for block in self.blocks:
            x = block(x, style)
        for layer in self.up:
            x = layer(x, style)
        if self.residual:  # predict a change to the photo: colours survive the instance norms exactly
            return (image + self.head(x)).clamp(-1, 1)
        return self.head(x)
