"""Distillation fine-tuning of a pruned student against its teacher (the GAN Compression recipe).

Unlabelled portraits are enough: the teacher's output is the label. Loss per step:
  λ_l1·L1(S(x), T(x)) + λ_ssim·(1 − SSIM(S(x), T(x)))
  + λ_feat·Σ_taps MSE(A_k(S_k(x)), T_k(x))        taps: end of downsampling, and after residual
                                                   blocks n/3, 2n/3, n (3/6/9 for 9 blocks);
                                                   A_k learned 1×1 convs to the teacher's width
  + λ_adv·GAN(D(S(x)))                            D: the teacher's discriminator, fine-tuned
                                                   with T(x) as real (optional)
EMA of the student, validation (student vs teacher PSNR/SSIM on val portraits), best-by-PSNR
weights, checkpoints and `--resume`, as in training.
"""

from __future__ import annotations

import logging
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn
from torch.optim.swa_utils import AveragedModel

from stylepress.config import Config
from stylepress.data import PortraitData, to_unit
from stylepress.errors import StylepressError
from stylepress.images import grid, save_image, to_image
from stylepress.metrics import psnr, ssim
from stylepress.models import ArchSpec, build_discriminator, save_generator, save_weights
from stylepress.models.families import CycleGANResnet, CycleGANResnetBlock
from stylepress.models.generator import ResnetGenerator
from stylepress.models.mobile import MobileResnetGenerator
from stylepress.train import losses
from stylepress.train.loop import (
    LOG_FILE,
    STATE_FILE,
    Cadence,
    Progress,
    append_log,
    check_finite,
    ema_avg,
    generate,
    linear_decay,
    load_checkpoint,
    read_checkpoint,
    resolve_device,
    run_loop,
    save_checkpoint,
    saved_discriminator,
    truncate_log,
)

log = logging.getLogger(__name__)
KIND = "student"


def feature_taps(model: nn.Module) -> list[nn.Module]:
    """Where features are distilled in a ResNet generator (stylepress's, its mobile student's or CycleGAN's): the end of
    downsampling, then after blocks n/3, 2n/3 and n. Other families: none (output distillation)."""
    if isinstance(model, (ResnetGenerator, MobileResnetGenerator)):
        end_of_down, blocks = model.down[-1], list(model.blocks)
    elif isinstance(model, CycleGANResnet):
        layers = list(model.model)
        first = next(i for i, m in enumerate(layers) if isinstance(m, CycleGANResnetBlock))
        end_of_down, blocks = layers[first - 1], [m for m in layers if isinstance(m, CycleGANResnetBlock)]
    else:
        return []
    n = len(blocks)
    picks = sorted({max(1, round(n * k / 3)) for k in (1, 2, 3)}) if n else []
    return [end_of_down, *(blocks[i - 1] for i in picks)]


class _Recorder:
    """Forward hooks that keep the outputs of the tapped modules for one forward pass."""

    def __init__(self, modules: list[nn.Module]):
        self.features: list[torch.Tensor] = []
        self.handles = [m.register_forward_hook(lambda _m, _i, out: self.features.append(out)) for m in modules]

    def __call__(self, model, photo, style):
        self.features = []
        return model(photo, style), self.features

    def remove(self) -> None:
        for handle in self.handles:
            handle.remove()


def distill(cfg: Config, teacher: nn.Module, student: nn.Module, spec: ArchSpec, data: PortraitData, out: Path,
            teacher_state: Path | None, resume: bool = False, show_progress: bool = True, callbacks=(),
            styles: list[int] | None = None, params: list[nn.Parameter] | None = None) -> dict:
    """Fine-tune `student` toward `teacher`; write out/{weights,last}.safetensors, log.jsonl,
    samples.png, state.pt. Returns the last validation record (student vs teacher). `styles` and
    `params` narrow what trains (default: every style, every parameter): transfer's new rows."""
    cc = cfg.compress
    device = resolve_device(cc.device, "compress.device")
    teacher, student = teacher.to(device).eval().requires_grad_(False), student.to(device).train()
    val_photos = to_unit(torch.stack(data.val))
    teacher_val = {i: generate(teacher, val_photos, i, device) for i in range(spec.num_styles)}
    ema = AveragedModel(student, avg_fn=ema_avg(cc.ema_decay), use_buffers=True)  # copied before hooks exist
    taps = feature_taps(teacher), feature_taps(student)
    if len(taps[0]) != len(taps[1]):  # a student of another architecture: output distillation only
        taps = [], []
    t_taps, s_taps = _Recorder(taps[0]), _Recorder(taps[1])
    with torch.no_grad():  # adaptor widths from one tiny forward
        side = max(16, spec.size_multiple)
        probe = torch.zeros(1, 3, side, side, device=device), torch.zeros(1, dtype=torch.long, device=device)
        _, tf = t_taps(teacher, *probe)
        _, sf = s_taps(student, *probe)
    adaptors = nn.ModuleList([nn.Conv2d(s.shape[1], t.shape[1], 1) for s, t in zip(sf, tf, strict=True)]).to(device)
    D = None
    if cc.lambda_adv > 0:
        D = _teacher_discriminator(cfg, teacher_state, spec.num_styles).to(device)
    params = [*(student.parameters() if params is None else params), *adaptors.parameters()]
    opt = torch.optim.Adam(params, lr=cc.lr, betas=(0.5, 0.999))
    sched = torch.optim.lr_scheduler.LambdaLR(opt, linear_decay(cc.distill_steps, 0.5))
    opt_D = torch.optim.Adam(D.parameters(), lr=cc.lr, betas=(0.5, 0.999)) if D is not None else None
    modules = {"student": student, "adaptors": adaptors, "ema": ema, "opt": opt, "sched": sched}
    if D is not None:
        modules.update(D=D, opt_D=opt_D)
    gen = torch.Generator().manual_seed(cfg.seed * 1_000_003 + 17)
    prog = Progress()
    if resume:
        prog = _load(out / STATE_FILE, modules, gen)
        truncate_log(out / LOG_FILE, prog.step)
    else:
        out.mkdir(parents=True, exist_ok=True)
        (out / LOG_FILE).unlink(missing_ok=True)
    styles = list(range(spec.num_styles)) if styles is None else styles

    def step(i: int) -> dict[str, float]:
        photo = data.sample(i % len(data.styles), cc.batch_size, gen).photo.to(device)  # the teacher labels it
        s = torch.full((len(photo),), styles[i % len(styles)], device=device)
        with torch.no_grad():
            t_out, t_feats = t_taps(teacher, photo, s)
        s_out, s_feats = s_taps(student, photo, s)
        terms = {"l1": F.l1_loss(s_out, t_out), "ssim": 1 - ssim(s_out, t_out).mean(),
                 "feat": sum((F.mse_loss(a(f), t) for a, f, t in zip(adaptors, s_feats, t_feats, strict=True)),
                             torch.zeros((), device=device))}
        if D is not None:
            logits, _ = D(torch.cat([t_out, s_out.detach()]), torch.cat([s, s]))
            d_loss = losses.gan_d(*logits.chunk(2), "lsgan")
            opt_D.zero_grad(set_to_none=True)
            d_loss.backward()
            opt_D.step()
            D.requires_grad_(False)
            terms["adv"] = losses.gan_g(D(s_out, s)[0], "lsgan")
            D.requires_grad_(True)
        loss = (cc.lambda_l1 * terms["l1"] + cc.lambda_ssim * terms["ssim"] + cc.lambda_feat * terms["feat"]
                + cc.lambda_adv * terms.get("adv", 0.0))
        values = {"loss": loss.item(), **{k: float(v.detach()) for k, v in terms.items()}}
        check_finite(i + 1, out, values)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        sched.step()
        ema.update_parameters(student)
        return {**values, "lr": sched.get_last_lr()[0]}

    def save_state(p: Progress) -> None:
        save_weights(ema.module, out / "last.safetensors")
        save_checkpoint(out / STATE_FILE, KIND, modules, p, data_rng=gen.get_state())

    try:
        result = run_loop(
            prog, Cadence(cc.distill_steps, cc.log_every, cc.val_every, cc.checkpoint_every), out, "distill",
            step=step, validate=lambda i: validate(ema.module, val_photos, teacher_val, spec, device, i, out),
            save_best=lambda: save_generator(ema.module, spec, out), save_state=save_state, callbacks=callbacks,
            status_text=lambda r: f"l1 {r['l1']:.4f}", show_progress=show_progress)
    finally:
        for recorder in (t_taps, s_taps):
            recorder.remove()
    return {"step": result.step, "signal": result.signal, **result.last_val}


@torch.no_grad()
def validate(student: nn.Module, photos: torch.Tensor, teacher_out: dict, spec: ArchSpec, device, step: int,
             out: Path) -> dict:
    """PSNR/SSIM of the student against the teacher's outputs, per style and their mean."""
    was_training = student.training
    student.eval()
    record: dict = {"step": step, "kind": "val"}
    columns = [photos[:4]]
    for i, name in enumerate(spec.styles):
        output = generate(student, photos, i, device)
        record[f"val_psnr_{name}"] = psnr(output, teacher_out[i]).mean().item()
        record[f"val_ssim_{name}"] = ssim(output, teacher_out[i]).mean().item()
        columns += [teacher_out[i][:4], output[:4]]
    names = spec.styles
    record["val_psnr"] = sum(record[f"val_psnr_{n}"] for n in names) / len(names)
    record["val_ssim"] = sum(record[f"val_ssim_{n}"] for n in names) / len(names)
    append_log(out / "log.jsonl", record)
    labels = ["input", *(f"{n} {who}" for n in names for who in ("teacher", "student"))]
    save_image(grid([[to_image(c[r]) for c in columns] for r in range(len(columns[0]))], labels), out / "samples.png")
    student.train(was_training)
    return record


def _teacher_discriminator(cfg: Config, state_path: Path | None, n_styles: int) -> nn.Module:
    if state_path is None or not state_path.is_file():
        raise StylepressError("compress.lambda_adv > 0 needs the teacher's discriminator, which is in "
                              "teacher/state.pt: it is missing")
    weights, model_cfg = saved_discriminator(state_path, cfg.model)
    D = build_discriminator(model_cfg, n_styles)
    D.load_state_dict(weights)
    return D


def _load(path: Path, modules: dict, gen: torch.Generator) -> Progress:
    state = read_checkpoint(path, KIND)
    prog = load_checkpoint(path, state, modules)
    gen.set_state(state["data_rng"])
    return prog
