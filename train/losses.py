"""The training objective L = λ_style·L_style + λ_content·L_content + λ_adv·L_adv.

- L_style: L1 to the paired target when the style has one, plus `gram_weight` times a Gram-matrix
  term on the discriminator's features (the only style signal for an unpaired style folder).
- L_content: L1 between the standardised, blurred luminance of the output and of the input photo:
  the face's structure, free to change colour, brightness and texture.
- L_adv: LSGAN (least squares) or hinge.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F


def gan_g(fake_logits: torch.Tensor, kind: str) -> torch.Tensor:
    if kind == "hinge":
        return -fake_logits.mean()
    return ((fake_logits - 1) ** 2).mean()


def gan_d(real_logits: torch.Tensor, fake_logits: torch.Tensor, kind: str) -> torch.Tensor:
    if kind == "hinge":
        return F.relu(1 - real_logits).mean() + F.relu(1 + fake_logits).mean()
    return 0.5 * (((real_logits - 1) ** 2).mean() + (fake_logits ** 2).mean())


def gram(feat: torch.Tensor) -> torch.Tensor:
    n, c, h, w = feat.shape
    f = feat.float().reshape(n, c, h * w)
    return f @ f.transpose(1, 2) / (c * h * w)


def gram_loss(fake_feats: list[torch.Tensor], real_feats: list[torch.Tensor], paired: bool) -> torch.Tensor:
    """Squared difference of Gram matrices, summed over layers. Paired: each output against its own
    target; unpaired: against the mean Gram of the batch's style crops (one crop is too noisy)."""
    total = 0.0
    for f, r in zip(fake_feats, real_feats, strict=True):
        gf, gr = gram(f), gram(r).detach()
        if not paired:
            gr = gr.mean(0, keepdim=True).expand_as(gf)
        total = total + F.mse_loss(gf, gr)
    return total


def _structure(img: torch.Tensor) -> torch.Tensor:
    lum = 0.299 * img[:, 0:1] + 0.587 * img[:, 1:2] + 0.114 * img[:, 2:3]
    blurred = F.avg_pool2d(lum, 4)
    mean = blurred.mean(dim=(2, 3), keepdim=True)
    std = blurred.std(dim=(2, 3), keepdim=True)
    return (blurred - mean) / (std + 1e-3)


def content_loss(output: torch.Tensor, photo: torch.Tensor) -> torch.Tensor:
    return F.l1_loss(_structure(output), _structure(photo))


def style_loss(output, target, fake_feats, real_feats, paired: bool, gram_weight: float) -> torch.Tensor:
    loss = gram_weight * gram_loss(fake_feats, real_feats, paired)
    if paired:
        loss = loss + F.l1_loss(output, target)
    return loss
