"""PatchGAN discriminator (pix2pix/CycleGAN), one output map per style.

Conditioning on style is by output heads: the network emits `num_styles` patch maps and the
loss reads the one of each sample's style (a multi-domain discriminator, as in StarGAN v2).
It also returns its intermediate features, which the Gram style term uses.
"""

from __future__ import annotations

import torch
from torch import nn
from torch.nn.utils.parametrizations import spectral_norm


class PatchDiscriminator(nn.Module):
    def __init__(self, ndf: int = 64, n_layers: int = 3, num_styles: int = 1, spectral: bool = False):
        super().__init__()
        wrap = spectral_norm if spectral else (lambda m: m)

        def norm(c):  # spectral norm already bounds each layer; instance norm otherwise
            return nn.Identity() if spectral else nn.InstanceNorm2d(c)

        layers = [nn.Sequential(wrap(nn.Conv2d(3, ndf, 4, 2, 1)), nn.LeakyReLU(0.2))]
        ch = ndf
        for i in range(1, n_layers + 1):
            out = ndf * min(2 ** i, 8)
            stride = 2 if i < n_layers else 1
            layers.append(nn.Sequential(wrap(nn.Conv2d(ch, out, 4, stride, 1)), norm(out), nn.LeakyReLU(0.2)))
            ch = out
        self.features = nn.ModuleList(layers)
        self.head = wrap(nn.Conv2d(ch, num_styles, 4, 1, 1))

    def forward(self, image: torch.Tensor, style: torch.Tensor) -> tuple[torch.Tensor, list[torch.Tensor]]:
        """Return (patch logits of each sample's style [N,1,h,w], feature maps)."""
        feats = []
        x = image
        for layer in self.features:
            x = layer(x)
            feats.append(x)
        logits = self.head(x)
        picked = logits.gather(1, style.view(-1, 1, 1, 1).expand(-1, 1, *logits.shape[2:]))
        return picked, feats
