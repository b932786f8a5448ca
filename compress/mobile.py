"""`[compress] student = "mobile"`: a fresh MobileResnetGenerator (stylepress.models.mobile) as the
student, as wide as the MACs target allows, initialised from the teacher where names and shapes
match (the colour skip's rows, every norm's per-style tables of equal width), then distilled like a
pruned student."""

from __future__ import annotations

import torch
from torch import nn

from stylepress.errors import StylepressError
from stylepress.models import ArchSpec, build_generator

from .pruning import MACS_TOLERANCE, Pruned, check_pruned, count

# taken from the teacher as they are
KWARGS = ("n_blocks", "norm", "num_styles", "residual", "colour_skip", "detail_skip")


def mobile_student(teacher: nn.Module, spec: ArchSpec, target_macs: float, resolution: int,
                   round_to: int) -> tuple[Pruned, int]:
    """The widest mobile student within `target_macs` (+3%), its ngf a multiple of round_to / 4 so that
    its trunk (4 ngf) is one of round_to; returns it and how many teacher tensors it took."""
    if spec.arch != "resnet":
        raise StylepressError(f"compress.student = 'mobile' mirrors a stylepress ResNet teacher; this one is "
                              f"{spec.arch!r} (use student = 'pruned')")
    step = max(1, round_to // 4)
    mobile = ArchSpec(arch="mobile", styles=spec.styles, size_multiple=spec.size_multiple,
                      kwargs={k: spec.kwargs[k] for k in KWARGS if k in spec.kwargs})
    best, macs = None, float("nan")
    for ngf in range(step, 4 * spec.kwargs.get("ngf", 64) + 1, step):
        candidate = mobile.with_kwargs(ngf=ngf)
        model = build_generator(candidate).eval()
        macs, params = count(model, candidate, resolution)
        if macs > target_macs * (1 + MACS_TOLERANCE):
            break
        best = Pruned(model, candidate, 0.0, macs, params, round_to)
    if best is None:
        raise StylepressError(f"no mobile student fits {target_macs:.3g} MACs: the narrowest (ngf {step}) needs "
                              f"{macs:.3g}; raise compress.target_macs")
    check_pruned(best.model, best.spec)
    return best, _take_matching(best.model, teacher)


@torch.no_grad()
def _take_matching(student: nn.Module, teacher: nn.Module) -> int:
    theirs = teacher.state_dict()
    taken = 0
    for name, tensor in student.state_dict().items():
        if name in theirs and theirs[name].shape == tensor.shape:
            tensor.copy_(theirs[name])
            taken += 1
    return taken
