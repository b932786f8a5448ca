import torch
import torch.nn.functional as F

from stylepress.train import losses


def test_lsgan_and_hinge_losses_are_zero_at_their_optimum():
    ones, neg = torch.ones(2, 1, 4, 4), -torch.ones(2, 1, 4, 4)
    assert losses.gan_g(ones, "lsgan") == 0 and losses.gan_d(ones, ones * 0, "lsgan") == 0
    assert losses.gan_d(ones, neg, "hinge") == 0 and losses.gan_g(ones, "hinge") == -1


def test_gram_loss_vanishes_for_same_texture_and_not_for_different():
    torch.manual_seed(0)
    f = [torch.rand(2, 4, 8, 8)]
    assert losses.gram_loss(f, f, paired=True) == 0
    assert losses.gram_loss(f, [torch.rand(2, 4, 8, 8) * 3], paired=False) > 0


def test_content_loss_ignores_brightness_and_contrast_but_not_structure():
    torch.manual_seed(0)
    photo = F.interpolate(torch.rand(2, 3, 8, 8) * 2 - 1, size=32, mode="bilinear")  # smooth, like a face
    relit = losses.content_loss(photo * 0.5 + 0.2, photo)
    moved = losses.content_loss(photo.flip(-1), photo)
    assert moved > 0.1 and relit < 0.05 * moved


def test_style_loss_adds_l1_only_for_paired_styles():
    out, target = torch.zeros(1, 3, 8, 8), torch.ones(1, 3, 8, 8)
    feats = [torch.rand(1, 2, 4, 4)]
    assert losses.style_loss(out, target, feats, feats, paired=True, gram_weight=1.0) == 1.0
    assert losses.style_loss(out, target, feats, feats, paired=False, gram_weight=1.0) == 0.0
