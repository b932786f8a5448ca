"""Image-quality metrics (torchmetrics' PSNR and SSIM) on tensors in the model range [-1, 1]."""

from __future__ import annotations

import torch
from torchmetrics.functional.image import peak_signal_noise_ratio, structural_similarity_index_measure


def psnr(pred: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Per-image PSNR in dB, [N], images in [-1, 1]."""
    p, t = (pred.float().clamp(-1, 1) + 1) / 2, (target.float().clamp(-1, 1) + 1) / 2
    return peak_signal_noise_ratio(p, t, data_range=1.0, reduction="none", dim=(1, 2, 3))


def ssim(pred: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Per-image SSIM, [N], images in [-1, 1]."""
    p, t = (pred.float().clamp(-1, 1) + 1) / 2, (target.float().clamp(-1, 1) + 1) / 2
    return structural_similarity_index_measure(p, t, data_range=1.0, reduction="none")
