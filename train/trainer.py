"""Teacher training: `run(cfg, run_dir)` trains a style GAN and writes `run_dir/teacher/`.

teacher/
  weights.safetensors  EMA generator weights, best by validation (what later stages use)
  last.safetensors     EMA generator weights at the last checkpoint
  arch.json            everything needed to rebuild the generator
  state.pt             optimizers, schedulers, EMA, RNG and step: `--resume` continues exactly
  config.toml          the resolved config this teacher was trained with
  log.jsonl            one JSON object per logged step and per validation
  samples.png          val photos: input | output per style, refreshed at each validation
"""

from __future__ import annotations

import contextlib
import json
import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import torch
import torch.distributed as dist
from torch import nn
from torch.nn.parallel import DistributedDataParallel
from torch.optim.swa_utils import AveragedModel

from stylepress.config import Config, to_toml
from stylepress.data import PortraitData, to_unit
from stylepress.errors import StylepressError
from stylepress.fsutil import write_text
from stylepress.images import grid, save_image, to_image
from stylepress.layout import RunLayout
from stylepress.metrics import psnr, ssim
from stylepress.models import (
    WEIGHTS_FILE,
    ArchSpec,
    build_discriminator,
    build_generator,
    generator_spec,
    save_generator,
    save_weights,
)
from stylepress.models.layers import ColourSkip
from stylepress.models.spec import write_spec

from . import losses
from .loop import (
    LOG_FILE,
    STATE_FILE,
    Cadence,
    Progress,
    Ranks,
    append_log,
    check_finite,
    ema_avg,
    generate,
    linear_decay,
    load_checkpoint,
    read_checkpoint,
    run_loop,
    save_checkpoint,
    setup_ranks,
    truncate_log,
)

log = logging.getLogger(__name__)
SAMPLE_ROWS = 4
KIND = "teacher"


def identity(model: nn.Module) -> nn.Module:
    return model


@dataclass
class Start:
    """A trained generator to continue from (`transfer`) instead of fresh models."""
    spec: ArchSpec
    G: nn.Module
    D: nn.Module
    g_groups: list[dict]  # optimizer parameter groups: what trains, at which learning rate
    d_groups: list[dict]
    styles: list[int]  # the generator's style index of each data style
    finalize: Callable[[nn.Module], nn.Module] = identity  # what is saved (LoRA: merged)


@dataclass
class TrainResult:
    status: str  # "done" | "early_stopped" | "interrupted"
    step: int
    teacher_dir: Path
    signal: int | None = None
    last_val: dict = field(default_factory=dict)


def generator_groups(G: nn.Module, lr: float) -> list[dict]:
    """One Adam group, and the colour skip's rows in their own at lr x ColourSkip.lr_mul."""
    skip = {id(p) for m in G.modules() if isinstance(m, ColourSkip) for p in m.parameters()}
    groups = [{"params": [p for p in G.parameters() if id(p) not in skip]}]
    if skip:
        groups.append({"params": [p for p in G.parameters() if id(p) in skip], "lr": lr * ColourSkip.lr_mul})
    return groups


def run(cfg: Config, run_dir: str | Path, resume: bool = False, force: bool = False,
        show_progress: bool = True, callbacks=(), start: Start | None = None) -> TrainResult:
    """Train the teacher into run_dir/teacher/. `callbacks` get every validation record (main rank)."""
    out = RunLayout(run_dir).teacher
    if cfg.model.pretrained is not None and start is None:
        raise StylepressError(f"model.pretrained {cfg.model.pretrained!r}: the teacher is bundled, not trained: run "
                              "`stylepress build`, or `compress`/`transfer` with --pretrained")
    if cfg.model.arch != "resnet" and start is None:
        raise StylepressError(f"model.arch {cfg.model.arch!r} is imported from model.weights, not trained: "
                              "run `stylepress build` (or `stylepress import`)")
    ranks = setup_ranks(cfg.train.device, "train.device")
    device, main = ranks.device, ranks.main
    tc = cfg.train
    if not resume and (out / STATE_FILE).exists() and not force:
        raise StylepressError(f"{out} already holds a training checkpoint: pass --resume to continue it "
                              "or --force to start over")

    data = PortraitData(cfg.data, cfg.crop)
    torch.manual_seed(cfg.seed)
    n_styles = len(data.styles)
    if start is None:
        spec = generator_spec(cfg.model, data.style_names)
        G, D = build_generator(spec), build_discriminator(cfg.model, n_styles)
        start = Start(spec, G, D, generator_groups(G, tc.lr), [{"params": D.parameters()}], list(range(n_styles)))
    spec, G, D = start.spec, start.G.to(device).train(), start.D.to(device).train()  # a loaded model comes in eval
    style_index = torch.tensor(start.styles)
    ema = AveragedModel(G, avg_fn=ema_avg(tc.ema_decay), use_buffers=True)
    opt_G = torch.optim.Adam(start.g_groups, lr=tc.lr, betas=(tc.beta1, tc.beta2))
    opt_D = torch.optim.Adam(start.d_groups, lr=tc.lr, betas=(tc.beta1, tc.beta2))
    decay = linear_decay(tc.steps, tc.decay_from)
    sched_G = torch.optim.lr_scheduler.LambdaLR(opt_G, decay)
    sched_D = torch.optim.lr_scheduler.LambdaLR(opt_D, decay)
    gen = torch.Generator().manual_seed(cfg.seed * 1_000_003 + ranks.rank)
    prog = Progress()
    modules = dict(G=G, D=D, ema=ema, opt_G=opt_G, opt_D=opt_D, sched_G=sched_G, sched_D=sched_D)

    if resume:
        prog = _load_state(out / STATE_FILE, cfg, modules, gen, ranks)
        if main:
            truncate_log(out / LOG_FILE, prog.step)
            log.info("resumed %s at step %d", out, prog.step)
    elif main:
        out.mkdir(parents=True, exist_ok=True)
        for name in (LOG_FILE, WEIGHTS_FILE, "last.safetensors", "samples.png", STATE_FILE):
            (out / name).unlink(missing_ok=True)
    if main:
        write_text(out / "config.toml", to_toml(cfg))

    G_train, D_train = G, D
    if ranks.world > 1:
        ids = [device.index] if device.type == "cuda" else None
        G_train, D_train = DistributedDataParallel(G, ids), DistributedDataParallel(D, ids)
    use_amp = device.type == "cuda" and tc.amp
    autocast = (lambda: torch.autocast("cuda", dtype=torch.bfloat16)) if use_amp else contextlib.nullcontext
    baseline = _baseline(data, tc.val_images) if main else {}

    d_trained = [p for g in opt_D.param_groups for p in g["params"]]

    def step(i: int) -> dict[str, float]:
        style = i % n_styles
        batch = data.sample(style, tc.batch_size, gen)
        photo, real, s = batch.photo.to(device), batch.real.to(device), style_index[batch.style].to(device)
        with autocast():
            fake = G_train(photo, s)
            # Discriminator: real and fake in one forward (per-sample norms keep them independent).
            logits, _ = D_train(torch.cat([real, fake.detach()]), torch.cat([s, s]))
            real_logits, fake_logits = logits.float().chunk(2)
            d_loss = losses.gan_d(real_logits, fake_logits, tc.gan_loss)
        d_value = d_loss.item()
        check_finite(i + 1, out, {"d_loss": d_value}, ranks)
        opt_D.zero_grad(set_to_none=True)
        d_loss.backward()
        opt_D.step()

        D.requires_grad_(False)  # the generator step reads D without training it
        with autocast():
            fake_logits, fake_feats = D(fake, s)
            with torch.no_grad():
                _, real_feats = D(real, s)
            terms = {
                "l_style": losses.style_loss(fake.float(), real, fake_feats, real_feats, batch.paired,
                                             tc.gram_weight),
                "l_content": losses.content_loss(fake.float(), photo),
                "l_adv": losses.gan_g(fake_logits.float(), tc.gan_loss),
            }
            g_loss = (tc.lambda_style * terms["l_style"] + tc.lambda_content * terms["l_content"]
                      + tc.lambda_adv * terms["l_adv"])
        for p in d_trained:  # only these: FreezeD's frozen layers stay frozen
            p.requires_grad_(True)
        values = {"g_loss": g_loss.item(), "d_loss": d_value, **{k: v.item() for k, v in terms.items()}}
        check_finite(i + 1, out, values, ranks)
        opt_G.zero_grad(set_to_none=True)
        g_loss.backward()
        opt_G.step()
        sched_G.step()
        sched_D.step()
        ema.update_parameters(G)
        return {**values, "lr": sched_G.get_last_lr()[0]}

    def save_state(p: Progress) -> None:
        gen_states = ranks.gather(gen.get_state())
        if main:
            save_weights(start.finalize(ema.module), out / "last.safetensors")
            write_spec(spec, out)
            save_checkpoint(out / STATE_FILE, KIND, modules, p, data_rng=gen_states,
                            model_config=cfg.model.model_dump_json(), data_config=cfg.data.model_dump_json())

    result = run_loop(
        prog, Cadence(tc.steps, tc.log_every, tc.val_every, tc.checkpoint_every, tc.patience), out, "train",
        step=step,
        validate=lambda i: _validate(ema.module, data, start.styles, device, baseline, tc.val_images, i, out),
        save_best=lambda: save_generator(start.finalize(ema.module), spec, out), save_state=save_state, ranks=ranks,
        callbacks=callbacks, status_text=lambda r: f"g {r['g_loss']:.3f}  d {r['d_loss']:.3f}",
        show_progress=show_progress)
    if result.status == "early_stopped":
        log.info("early stop at step %d: no val improvement in %d validations", result.step, tc.patience)
    if ranks.world > 1:
        # Tear down together: a rank that destroys the group while another still writes can abort
        # at exit (seen once: "terminate called without an active exception", SIGABRT).
        dist.barrier()
        dist.destroy_process_group()
    return TrainResult(result.status, result.step, out, result.signal, result.last_val)


# -- validation -------------------------------------------------------------------------------------

def _val_set(data: PortraitData, cap: int):
    n = len(data.val) if cap == 0 else min(cap, len(data.val))
    photos = to_unit(torch.stack(data.val[:n]))
    targets = {i: to_unit(torch.stack(t[:n])) for i, t in data.val_targets.items()}
    return photos, targets


def _baseline(data: PortraitData, cap: int) -> dict:
    """The identity baseline: the input photo scored against each paired target."""
    photos, targets = _val_set(data, cap)
    out = {}
    for i, target in targets.items():
        name = data.style_names[i]
        out[f"baseline_psnr_{name}"] = psnr(photos, target).mean().item()
        out[f"baseline_ssim_{name}"] = ssim(photos, target).mean().item()
    return out


def _validate(G, data: PortraitData, styles: list[int], device, baseline: dict, cap: int, step: int,
              out: Path) -> dict:
    was_training = G.training
    G.eval()
    photos, targets = _val_set(data, cap)
    record: dict = {"step": step, "kind": "val"}
    columns = [photos[:SAMPLE_ROWS]]
    psnrs, ssims = [], []
    for i, name in enumerate(data.style_names):
        output = generate(G, photos, styles[i], device)
        columns.append(output[:SAMPLE_ROWS])
        # Val losses: the terms that need no discriminator (its features drift as it trains).
        record[f"val_l_content_{name}"] = losses.content_loss(output, photos).item()
        if i in targets:
            record[f"val_l1_{name}"] = torch.nn.functional.l1_loss(output, targets[i]).item()
            p, s = psnr(output, targets[i]).mean().item(), ssim(output, targets[i]).mean().item()
            record[f"val_psnr_{name}"], record[f"val_ssim_{name}"] = p, s
            psnrs.append(p)
            ssims.append(s)
    if psnrs:
        record["val_psnr"], record["val_ssim"] = sum(psnrs) / len(psnrs), sum(ssims) / len(ssims)
    record.update(baseline)
    append_log(out / "log.jsonl", record)
    rows = [[to_image(col[r]) for col in columns] for r in range(len(columns[0]))]
    save_image(grid(rows, ["input", *data.style_names]), out / "samples.png")
    G.train(was_training)
    return record


# -- checkpoints ------------------------------------------------------------------------------------

def _same_section(stored: str, section) -> bool:
    """The checkpoint's config section equals `section`; a key added to stylepress after the
    checkpoint was written counts as equal when the config leaves it at its default."""
    saved, now = json.loads(stored), json.loads(section.model_dump_json())
    fields = type(section).model_fields
    return all(saved[k] == now[k] if k in saved else now[k] == json.loads(json.dumps(fields[k].default, default=str))
               for k in now) and set(saved) <= set(now)


def _load_state(path: Path, cfg: Config, modules: dict, gen: torch.Generator, ranks: Ranks) -> Progress:
    state = read_checkpoint(path, KIND)
    if not (_same_section(state["model_config"], cfg.model) and _same_section(state["data_config"], cfg.data)):
        raise StylepressError(f"cannot resume from {path}: its [model] or [data] section differs from the config")
    if len(state["data_rng"]) != ranks.world:
        raise StylepressError(f"cannot resume from {path}: saved with {len(state['data_rng'])} processes, "
                              f"now {ranks.world}")
    prog = load_checkpoint(path, state, modules)
    gen.set_state(state["data_rng"][ranks.rank])
    return prog
