"""Published generator families, re-implemented so that their checkpoints load with strict key
checks: parameter names and shapes follow the publishers' definitions exactly (module
attribute names and nn.Sequential indices included). Each presents stylepress's model contract:
`forward(image, style=None)` with image and output in [-1, 1] (fast-neural-style's 0–255 range is
converted inside `forward`, so the conversion is part of the exported ONNX graph).

- cyclegan-resnet: pytorch-CycleGAN-and-pix2pix `ResnetGenerator` (resnet_9blocks / resnet_6blocks)
- pix2pix-unet:    the same repository's `UnetGenerator` (unet_256: 8 downs, unet_128: 7)
- animegan2:       the widely used PyTorch port's `Generator` (bryandlee/animegan2-pytorch)
- fast-neural-style: pytorch/examples `TransformerNet`
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


def _norm(kind: str):
    if kind == "instance":  # the CycleGAN repository's default: no affine, no running stats
        return lambda c: nn.InstanceNorm2d(c, affine=False, track_running_stats=False)
    if kind == "batch":
        return lambda c: nn.BatchNorm2d(c, affine=True, track_running_stats=True)
    raise ValueError(f"norm must be instance or batch, not {kind!r}")


# -- cyclegan-resnet ---------------------------------------------------------------------------------

class CycleGANResnetBlock(nn.Module):
    def __init__(self, dim: int, norm: str, use_dropout: bool):
        super().__init__()
        bias, layer = norm == "instance", _norm(norm)
        block = [nn.ReflectionPad2d(1), nn.Conv2d(dim, dim, 3, bias=bias), layer(dim), nn.ReLU(True)]
        if use_dropout:  # shifts the second conv's index from 5 to 6, as in the published keys
            block.append(nn.Dropout(0.5))
        block += [nn.ReflectionPad2d(1), nn.Conv2d(dim, dim, 3, bias=bias), layer(dim)]
        self.conv_block = nn.Sequential(*block)

    def forward(self, x):
        return x + self.conv_block(x)


class CycleGANResnet(nn.Module):
    size_multiple = 4

    def __init__(self, ngf: int = 64, n_blocks: int = 9, norm: str = "instance", use_dropout: bool = False):
        super().__init__()
        bias, layer = norm == "instance", _norm(norm)
        model = [nn.ReflectionPad2d(3), nn.Conv2d(3, ngf, 7, bias=bias), layer(ngf), nn.ReLU(True)]
        for i in range(2):
            c = ngf * 2 ** i
            model += [nn.Conv2d(c, c * 2, 3, stride=2, padding=1, bias=bias), layer(c * 2), nn.ReLU(True)]
        model += [CycleGANResnetBlock(ngf * 4, norm, use_dropout) for _ in range(n_blocks)]
        for i in range(2):
            c = ngf * 2 ** (2 - i)
            model += [nn.ConvTranspose2d(c, c // 2, 3, stride=2, padding=1, output_padding=1, bias=bias),
                      layer(c // 2), nn.ReLU(True)]
        model += [nn.ReflectionPad2d(3), nn.Conv2d(ngf, 3, 7), nn.Tanh()]
        self.model = nn.Sequential(*model)

    def forward(self, image, style=None):
        return self.model(image)


# -- pix2pix-unet ------------------------------------------------------------------------------------

class UnetSkipConnectionBlock(nn.Module):
    def __init__(self, outer: int, inner: int, input_nc: int | None = None, submodule=None, outermost=False,
                 innermost=False, norm: str = "batch", use_dropout=False):
        super().__init__()
        self.outermost = outermost
        bias, layer = norm == "instance", _norm(norm)
        input_nc = outer if input_nc is None else input_nc
        downconv = nn.Conv2d(input_nc, inner, 4, stride=2, padding=1, bias=bias)
        downrelu, downnorm = nn.LeakyReLU(0.2, True), layer(inner)
        uprelu, upnorm = nn.ReLU(True), layer(outer)
        if outermost:
            upconv = nn.ConvTranspose2d(inner * 2, outer, 4, stride=2, padding=1)
            model = [downconv, submodule, uprelu, upconv, nn.Tanh()]
        elif innermost:
            upconv = nn.ConvTranspose2d(inner, outer, 4, stride=2, padding=1, bias=bias)
            model = [downrelu, downconv, uprelu, upconv, upnorm]
        else:
            upconv = nn.ConvTranspose2d(inner * 2, outer, 4, stride=2, padding=1, bias=bias)
            model = [downrelu, downconv, downnorm, submodule, uprelu, upconv, upnorm]
            if use_dropout:
                model.append(nn.Dropout(0.5))
        self.model = nn.Sequential(*model)

    def forward(self, x):
        if self.outermost:
            return self.model(x)
        # The publication's in-place LeakyReLU (model[0]) also rewrites the skip input: do it explicitly,
        # so the result stays the same when activations are made out of place (pruning).
        x = self.model[0](x)
        return torch.cat([x, self.model[1:](x)], 1)


class Pix2PixUnet(nn.Module):
    def __init__(self, num_downs: int = 8, ngf: int = 64, norm: str = "batch", use_dropout: bool = False):
        super().__init__()
        self.size_multiple = 2 ** num_downs
        block = UnetSkipConnectionBlock(ngf * 8, ngf * 8, norm=norm, innermost=True)
        for _ in range(num_downs - 5):
            block = UnetSkipConnectionBlock(ngf * 8, ngf * 8, submodule=block, norm=norm, use_dropout=use_dropout)
        for mult in (4, 2, 1):
            block = UnetSkipConnectionBlock(ngf * mult, ngf * mult * 2, submodule=block, norm=norm)
        self.model = UnetSkipConnectionBlock(3, ngf, input_nc=3, submodule=block, outermost=True, norm=norm)

    def forward(self, image, style=None):
        return self.model(image)


# -- animegan2 ---------------------------------------------------------------------------------------

class ConvNormLReLU(nn.Sequential):
    def __init__(self, in_ch, out_ch, kernel_size=3, stride=1, padding=1, groups=1, bias=False):
        super().__init__(nn.ReflectionPad2d(padding),
                         nn.Conv2d(in_ch, out_ch, kernel_size, stride, padding=0, groups=groups, bias=bias),
                         nn.GroupNorm(1, out_ch, affine=True), nn.LeakyReLU(0.2, inplace=True))


class InvertedResBlock(nn.Module):
    def __init__(self, in_ch, out_ch, expansion_ratio=2):
        super().__init__()
        self.use_res_connect = in_ch == out_ch
        bottleneck = int(round(in_ch * expansion_ratio))
        layers = [ConvNormLReLU(in_ch, bottleneck, kernel_size=1, padding=0)] if expansion_ratio != 1 else []
        layers += [ConvNormLReLU(bottleneck, bottleneck, groups=bottleneck, bias=True),  # depthwise
                   nn.Conv2d(bottleneck, out_ch, 1, bias=False), nn.GroupNorm(1, out_ch, affine=True)]
        self.layers = nn.Sequential(*layers)

    def forward(self, x):
        out = self.layers(x)
        return x + out if self.use_res_connect else out


class AnimeGAN2(nn.Module):
    size_multiple = 4

    def __init__(self):
        super().__init__()
        self.block_a = nn.Sequential(ConvNormLReLU(3, 32, kernel_size=7, padding=3),
                                     ConvNormLReLU(32, 64, stride=2, padding=(0, 1, 0, 1)), ConvNormLReLU(64, 64))
        self.block_b = nn.Sequential(ConvNormLReLU(64, 128, stride=2, padding=(0, 1, 0, 1)), ConvNormLReLU(128, 128))
        self.block_c = nn.Sequential(ConvNormLReLU(128, 128), InvertedResBlock(128, 256, 2),
                                     *(InvertedResBlock(256, 256, 2) for _ in range(3)), ConvNormLReLU(256, 128))
        self.block_d = nn.Sequential(ConvNormLReLU(128, 128), ConvNormLReLU(128, 128))
        self.block_e = nn.Sequential(ConvNormLReLU(128, 64), ConvNormLReLU(64, 64),
                                     ConvNormLReLU(64, 32, kernel_size=7, padding=3))
        self.out_layer = nn.Sequential(nn.Conv2d(32, 3, 1, bias=False), nn.Tanh())

    def forward(self, image, style=None):
        out = self.block_a(image)
        half = out.shape[-2:]
        out = self.block_c(self.block_b(out))
        out = self.block_d(F.interpolate(out, half, mode="bilinear", align_corners=True))
        out = self.block_e(F.interpolate(out, image.shape[-2:], mode="bilinear", align_corners=True))
        return self.out_layer(out)


# -- fast-neural-style -------------------------------------------------------------------------------

class ConvLayer(nn.Module):
    def __init__(self, in_ch, out_ch, kernel_size, stride):
        super().__init__()
        self.reflection_pad = nn.ReflectionPad2d(kernel_size // 2)
        self.conv2d = nn.Conv2d(in_ch, out_ch, kernel_size, stride)

    def forward(self, x):
        return self.conv2d(self.reflection_pad(x))


class ResidualBlock(nn.Module):
    def __init__(self, channels):
        super().__init__()
        self.conv1, self.in1 = ConvLayer(channels, channels, 3, 1), nn.InstanceNorm2d(channels, affine=True)
        self.conv2, self.in2 = ConvLayer(channels, channels, 3, 1), nn.InstanceNorm2d(channels, affine=True)
        self.relu = nn.ReLU()

    def forward(self, x):
        return x + self.in2(self.conv2(self.relu(self.in1(self.conv1(x)))))


class UpsampleConvLayer(ConvLayer):
    def __init__(self, in_ch, out_ch, kernel_size, stride, upsample=None):
        super().__init__(in_ch, out_ch, kernel_size, stride)
        self.upsample = upsample

    def forward(self, x):
        if self.upsample:
            x = F.interpolate(x, mode="nearest", scale_factor=self.upsample)
        return super().forward(x)


class TransformerNet(nn.Module):
    """Input and output in 0–255 in the publication; `forward` maps stylepress's [-1, 1] to that
    range and back (clamped, as the publisher's stylize script clamps before saving)."""
    size_multiple = 4

    def __init__(self):
        super().__init__()
        self.conv1, self.in1 = ConvLayer(3, 32, 9, 1), nn.InstanceNorm2d(32, affine=True)
        self.conv2, self.in2 = ConvLayer(32, 64, 3, 2), nn.InstanceNorm2d(64, affine=True)
        self.conv3, self.in3 = ConvLayer(64, 128, 3, 2), nn.InstanceNorm2d(128, affine=True)
        self.res1, self.res2, self.res3, self.res4, self.res5 = (ResidualBlock(128) for _ in range(5))
        self.deconv1, self.in4 = UpsampleConvLayer(128, 64, 3, 1, upsample=2), nn.InstanceNorm2d(64, affine=True)
        self.deconv2, self.in5 = UpsampleConvLayer(64, 32, 3, 1, upsample=2), nn.InstanceNorm2d(32, affine=True)
        self.deconv3 = ConvLayer(32, 3, 9, 1)
        self.relu = nn.ReLU()

    def forward(self, image, style=None):
        y = (image + 1) * 127.5
        for conv, norm in ((self.conv1, self.in1), (self.conv2, self.in2), (self.conv3, self.in3)):
            y = self.relu(norm(conv(y)))
        for block in (self.res1, self.res2, self.res3, self.res4, self.res5):
            y = block(y)
        y = self.relu(self.in5(self.deconv2(self.relu(self.in4(self.deconv1(y))))))
        return self.deconv3(y).clamp(0, 255) / 127.5 - 1
