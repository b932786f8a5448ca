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
import math
import os
import signal
import time
from dataclasses import dataclass, field
from pathlib import Path

import torch
import torch.distributed as dist
from torch.nn.parallel import DistributedDataParallel
from torch.optim.swa_utils import AveragedModel

from stylepress.config import Config, to_toml
from stylepress.data import PortraitData, to_unit
from stylepress.errors import StylepressError
from stylepress.fsutil import atomic_path, write_text
from stylepress.images import grid, save_image, to_image
from stylepress.layout import RunLayout
from stylepress.metrics import psnr, ssim
from stylepress.models import (
    ArchSpec,
    build_discriminator,
    build_generator,
    generator_spec,
    save_generator,
    save_weights,
)
from stylepress.models.spec import write_spec
from stylepress.progress import progress_bar

from . import losses

log = logging.getLogger(__name__)
STATE_FILE = "state.pt"
SAMPLE_ROWS = 4


@dataclass
class TrainResult:
    status: str  # "done" | "early_stopped" | "interrupted"
    step: int
    teacher_dir: Path
    signal: int | None = None
    last_val: dict = field(default_factory=dict)


@dataclass
class _Progress:
    """What a checkpoint must hold besides the modules to continue exactly."""
    step: int = 0
    best_psnr: float | None = None
    bad_vals: int = 0


def run(cfg: Config, run_dir: str | Path, resume: bool = False, force: bool = False,
        show_progress: bool = True) -> TrainResult:
    out = RunLayout(run_dir).teacher
    if cfg.model.arch != "resnet":
        raise StylepressError(f"model.arch {cfg.model.arch!r} is imported from model.weights, not trained: "
                              "run `stylepress build` (or `stylepress import`)")
    rank, world, device = _setup_distributed(cfg.train.device)
    main = rank == 0
    tc = cfg.train
    if not resume and (out / STATE_FILE).exists() and not force:
        raise StylepressError(f"{out} already holds a training checkpoint: pass --resume to continue it "
                              "or --force to start over")
    if resume and not (out / STATE_FILE).exists():
        raise StylepressError(f"nothing to resume: {out / STATE_FILE} does not exist")

    data = PortraitData(cfg.data, cfg.crop)
    torch.manual_seed(cfg.seed)
    spec = generator_spec(cfg.model, data.style_names)
    n_styles = len(data.styles)
    G = build_generator(spec).to(device)
    D = build_discriminator(cfg.model, n_styles).to(device)
    ema = AveragedModel(G, avg_fn=ema_avg(tc.ema_decay), use_buffers=True)
    opt_G = torch.optim.Adam(G.parameters(), lr=tc.lr, betas=(tc.beta1, tc.beta2))
    opt_D = torch.optim.Adam(D.parameters(), lr=tc.lr, betas=(tc.beta1, tc.beta2))
    decay = linear_decay(tc.steps, tc.decay_from)
    sched_G = torch.optim.lr_scheduler.LambdaLR(opt_G, decay)
    sched_D = torch.optim.lr_scheduler.LambdaLR(opt_D, decay)
    gen = torch.Generator().manual_seed(cfg.seed * 1_000_003 + rank)
    prog = _Progress()
    modules = dict(G=G, D=D, ema=ema, opt_G=opt_G, opt_D=opt_D, sched_G=sched_G, sched_D=sched_D)

    if resume:
        prog = _load_state(out / STATE_FILE, cfg, modules, gen, rank, world)
        if main:
            truncate_log(out / "log.jsonl", prog.step)
            log.info("resumed %s at step %d", out, prog.step)
    elif main:
        out.mkdir(parents=True, exist_ok=True)
        for name in ("log.jsonl", "weights.safetensors", "last.safetensors", "samples.png", STATE_FILE):
            (out / name).unlink(missing_ok=True)
    if main:
        write_text(out / "config.toml", to_toml(cfg))

    G_train, D_train = G, D
    if world > 1:
        ids = [device.index] if device.type == "cuda" else None
        G_train, D_train = DistributedDataParallel(G, ids), DistributedDataParallel(D, ids)
    use_amp = device.type == "cuda" and tc.amp
    autocast = (lambda: torch.autocast("cuda", dtype=torch.bfloat16)) if use_amp else contextlib.nullcontext
    baseline = _baseline(data, tc.val_images) if main else {}
    last_val: dict = {}
    status, stop_signal = "done", []
    window, window_steps = {}, 0  # loss sums since the last log record

    with catch_signals(stop_signal), progress_bar(tc.steps, "train", enabled=main and show_progress) as bar:
        bar.advance(prog.step)
        while prog.step < tc.steps and not stop_signal:
            started = time.monotonic()
            style = prog.step % n_styles
            batch = data.sample(style, tc.batch_size, gen)
            photo, real, s = batch.photo.to(device), batch.real.to(device), batch.style.to(device)

            with autocast():
                fake = G_train(photo, s)
                # Discriminator: real and fake in one forward (per-sample norms keep them independent).
                logits, _ = D_train(torch.cat([real, fake.detach()]), torch.cat([s, s]))
                real_logits, fake_logits = logits.float().chunk(2)
                d_loss = losses.gan_d(real_logits, fake_logits, tc.gan_loss)
            d_value = d_loss.item()
            check_finite(prog.step + 1, out, {"d_loss": d_value})
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
            D.requires_grad_(True)
            values = {"g_loss": g_loss.item(), "d_loss": d_value, **{k: v.item() for k, v in terms.items()}}
            check_finite(prog.step + 1, out, values)
            opt_G.zero_grad(set_to_none=True)
            g_loss.backward()
            opt_G.step()
            sched_G.step()
            sched_D.step()
            ema.update_parameters(G)
            values["s_per_step"] = time.monotonic() - started  # logged as the window's mean, like the losses
            prog.step += 1
            done = prog.step == tc.steps

            for k, v in values.items():
                window[k] = window.get(k, 0.0) + v
            window_steps += 1
            if main and (prog.step % tc.log_every == 0 or done):
                # Means over the steps since the last record, so every style is represented.
                record = {"step": prog.step, **{k: v / window_steps for k, v in window.items()},
                          "lr": sched_G.get_last_lr()[0]}
                append_log(out / "log.jsonl", record)
                bar.update(f"g {record['g_loss']:.3f}  d {record['d_loss']:.3f}")
            if prog.step % tc.log_every == 0:
                window, window_steps = {}, 0
            bar.advance()

            stop_early = False
            if main and (prog.step % tc.val_every == 0 or done):
                last_val = _validate(ema.module, data, device, baseline, tc.val_images, prog.step, out)
                stop_early = _keep_best(last_val, prog, tc.patience, ema.module, spec, out)
            if world > 1:
                stop_early = _broadcast_flag(stop_early, device)
            if stop_early:
                status = "early_stopped"
                log.info("early stop at step %d: no val improvement in %d validations", prog.step, tc.patience)
            if stop_signal and status == "done":
                status = "interrupted"
            if prog.step % tc.checkpoint_every == 0 or done or stop_early or stop_signal:
                _save_state(out, prog, cfg, modules, gen, spec, main, world)
            if stop_early:
                break

    if main and not (out / "weights.safetensors").exists():
        save_generator(ema.module, spec, out)  # no paired style to rank by: the last EMA weights
    if world > 1:
        # Tear down together: a rank that destroys the group while another still writes can abort
        # at exit (seen once: "terminate called without an active exception", SIGABRT).
        dist.barrier()
        dist.destroy_process_group()
    return TrainResult(status, prog.step, out, stop_signal[0] if stop_signal else None, last_val)


# -- optimisation helpers ---------------------------------------------------------------------------

def linear_decay(steps: int, decay_from: float):
    start = int(steps * decay_from)

    def factor(step: int) -> float:  # constant, then linear to 0 (CycleGAN's schedule)
        return 1.0 if step < start else max(0.0, (steps - step) / max(1, steps - start))
    return factor


def ema_avg(decay: float):
    def avg(averaged: torch.Tensor, current: torch.Tensor, n: torch.Tensor) -> torch.Tensor:
        # Warm-up (as TF's ExponentialMovingAverage with num_updates): short runs are not
        # dominated by the random initialisation.
        d = min(decay, (1 + float(n)) / (10 + float(n)))
        return averaged * d + current * (1 - d)
    return avg


def check_finite(step: int, out: Path, values: dict[str, float]) -> None:
    bad = {k: v for k, v in values.items() if not math.isfinite(v)}
    if bad:
        desc = ", ".join(f"{k}={v}" for k, v in bad.items())
        raise StylepressError(f"non-finite loss at step {step} ({desc}); training stopped, the last "
                              f"good checkpoint in {out} is kept (try a lower train.lr)")


# -- validation -------------------------------------------------------------------------------------

@torch.no_grad()
def generate(G, photos: torch.Tensor, style: int, device, batch: int = 8) -> torch.Tensor:
    outs = []
    for chunk in photos.split(batch):
        s = torch.full((len(chunk),), style, dtype=torch.long, device=device)
        outs.append(G(chunk.to(device), s).float().cpu())
    return torch.cat(outs)


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


def _validate(G, data: PortraitData, device, baseline: dict, cap: int, step: int, out: Path) -> dict:
    was_training = G.training
    G.eval()
    photos, targets = _val_set(data, cap)
    record: dict = {"step": step, "kind": "val"}
    columns = [photos[:SAMPLE_ROWS]]
    psnrs, ssims = [], []
    for i, name in enumerate(data.style_names):
        output = generate(G, photos, i, device)
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


def _keep_best(record: dict, prog: _Progress, patience: int, G, spec: ArchSpec, out: Path) -> bool:
    """Save the best-by-val weights; return True when patience is exhausted."""
    score = record.get("val_psnr")
    if score is None:
        return False
    if prog.best_psnr is None or score > prog.best_psnr:
        prog.best_psnr, prog.bad_vals = score, 0
        save_generator(G, spec, out)
        return False
    prog.bad_vals += 1
    return patience > 0 and prog.bad_vals >= patience


# -- checkpoints and logs ---------------------------------------------------------------------------

def _save_state(out: Path, prog: _Progress, cfg: Config, modules: dict, gen: torch.Generator, spec: ArchSpec,
                main: bool, world: int) -> None:
    gen_states = _all_gather(gen.get_state()) if world > 1 else [gen.get_state()]
    if not main:
        return
    state = {k: m.state_dict() for k, m in modules.items()}
    state.update(step=prog.step, best_psnr=prog.best_psnr, bad_vals=prog.bad_vals,
                 torch_rng=torch.get_rng_state(), data_rng=gen_states,
                 model_config=cfg.model.model_dump_json(), data_config=cfg.data.model_dump_json())
    save_weights(modules["ema"].module, out / "last.safetensors")
    write_spec(spec, out)
    with atomic_path(out / STATE_FILE) as tmp:
        torch.save(state, tmp)


def _same_section(stored: str, section) -> bool:
    """The checkpoint's config section equals `section`; a key added to stylepress after the
    checkpoint was written counts as equal when the config leaves it at its default."""
    saved, now = json.loads(stored), json.loads(section.model_dump_json())
    fields = type(section).model_fields
    return all(saved[k] == now[k] if k in saved else now[k] == json.loads(json.dumps(fields[k].default, default=str))
               for k in now) and set(saved) <= set(now)


def _load_state(path: Path, cfg: Config, modules: dict, gen: torch.Generator, rank: int, world: int):
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # noqa: BLE001 - any unreadable checkpoint is a user-facing error
        raise StylepressError(f"cannot resume from {path}: {str(exc).splitlines()[0]}") from None
    if not (_same_section(state["model_config"], cfg.model) and _same_section(state["data_config"], cfg.data)):
        raise StylepressError(f"cannot resume from {path}: its [model] or [data] section differs from the config")
    if len(state["data_rng"]) != world:
        raise StylepressError(f"cannot resume from {path}: saved with {len(state['data_rng'])} processes, "
                              f"now {world}")
    for k, m in modules.items():
        m.load_state_dict(state[k])
    torch.set_rng_state(state["torch_rng"])
    gen.set_state(state["data_rng"][rank])
    return _Progress(state["step"], state["best_psnr"], state["bad_vals"])


def append_log(path: Path, record: dict) -> None:
    with open(path, "a") as f:
        f.write(json.dumps(record) + "\n")
        f.flush()


def read_log(path: Path) -> list[dict]:
    """Records of a log.jsonl; a line cut short by a kill is ignored."""
    records = []
    if path.exists():
        for line in path.read_text().splitlines():
            with contextlib.suppress(json.JSONDecodeError):
                records.append(json.loads(line))
    return records


def truncate_log(path: Path, step: int) -> None:
    """On resume, drop what was logged after the checkpoint: those steps are run again."""
    kept = [r for r in read_log(path) if r.get("step", 0) <= step]
    write_text(path, "".join(json.dumps(r) + "\n" for r in kept))


# -- processes and signals --------------------------------------------------------------------------

def _setup_distributed(device_cfg: str) -> tuple[int, int, torch.device]:
    """Single process, or one process per device under `torchrun` (WORLD_SIZE > 1)."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    local_rank = int(os.environ.get("LOCAL_RANK", "0")) if world > 1 else None
    device = resolve_device(device_cfg, "train.device", local_rank)
    if world > 1 and not dist.is_initialized():
        dist.init_process_group("nccl" if device.type == "cuda" else "gloo")
    return (dist.get_rank() if world > 1 else 0), world, device


def resolve_device(device_cfg: str, key: str, local_rank: int | None = None) -> torch.device:
    """Resolve "auto", "cpu", "cuda" or "cuda:N" to a device (under torchrun, cuda is this process's GPU)."""
    if device_cfg == "auto":
        device_cfg = "cuda" if torch.cuda.is_available() else "cpu"
    if not device_cfg.startswith("cuda"):
        return torch.device("cpu")
    if not torch.cuda.is_available():
        raise StylepressError(f"{key} = {device_cfg!r} but no CUDA device is available")
    device = torch.device("cuda", local_rank if local_rank is not None else (torch.device(device_cfg).index or 0))
    torch.cuda.set_device(device)
    return device


def _all_gather(obj) -> list:
    objs = [None] * dist.get_world_size()
    dist.all_gather_object(objs, obj)
    return objs


def _broadcast_flag(flag: bool, device) -> bool:
    t = torch.tensor([int(flag)], device=device)
    dist.broadcast(t, 0)
    return bool(t.item())


@contextlib.contextmanager
def catch_signals(received: list):
    """SIGINT/SIGTERM finish the current step, save a checkpoint, then return."""
    def handler(signum, _frame):
        received.append(signum)

    previous = {}
    for sig in (signal.SIGINT, signal.SIGTERM):
        with contextlib.suppress(ValueError):  # not the main thread: leave signals alone
            previous[sig] = signal.signal(sig, handler)
    try:
        yield
    finally:
        for sig, h in previous.items():
            signal.signal(sig, h)
