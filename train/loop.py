"""The training-loop core that teacher training (train/trainer.py) and distillation (compress/distill.py)
both run: the step cadence (JSONL log windows, validation, best-keeping, checkpoints), signals, early
stopping and non-finite losses decided once for every DDP rank, per-validation callbacks (what
`stylepress tune` reports and prunes through), and checkpoints that are validated when loaded.

A stage supplies what differs: one optimisation step, one validation, what a checkpoint holds.
"""

from __future__ import annotations

import contextlib
import json
import math
import os
import signal
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import torch
import torch.distributed as dist

from stylepress.config import ModelConfig
from stylepress.errors import StylepressError
from stylepress.fsutil import atomic_path, write_text
from stylepress.metrics import psnr, ssim
from stylepress.models import WEIGHTS_FILE
from stylepress.progress import progress_bar

LOG_FILE = "log.jsonl"
STATE_FILE = "state.pt"


@dataclass
class Progress:
    """What a checkpoint must hold besides the modules to continue exactly."""
    step: int = 0
    best: float | None = None  # best validation score so far (val_psnr)
    bad_vals: int = 0  # validations since it last improved


@dataclass
class Cadence:
    steps: int
    log_every: int
    val_every: int
    checkpoint_every: int
    patience: int = 0  # validations without improvement before stopping early; 0 = never


@dataclass
class LoopResult:
    status: str  # "done" | "early_stopped" | "interrupted"
    step: int
    signal: int | None = None
    last_val: dict = field(default_factory=dict)


@dataclass
class Ranks:
    """This process's place in a DDP group (world 1: a single process)."""
    rank: int = 0
    world: int = 1
    device: torch.device = field(default_factory=lambda: torch.device("cpu"))

    @property
    def main(self) -> bool:
        return self.rank == 0

    def max(self, *values: int) -> list[int]:
        """Each value's maximum over all ranks: every rank takes the same decision at the same step."""
        if self.world == 1:
            return list(values)
        t = torch.tensor(values, dtype=torch.long, device=self.device)
        dist.all_reduce(t, op=dist.ReduceOp.MAX)
        return t.tolist()

    def gather(self, obj) -> list:
        if self.world == 1:
            return [obj]
        objs = [None] * self.world
        dist.all_gather_object(objs, obj)
        return objs


SINGLE = Ranks()  # one process


def run_loop(prog: Progress, cadence: Cadence, out: Path, description: str, *,
             step: Callable[[int], dict[str, float]], validate: Callable[[int], dict],
             save_best: Callable[[], None], save_state: Callable[[Progress], None],
             ranks: Ranks = SINGLE, callbacks: Sequence[Callable[[dict], None]] = (),
             status_text: Callable[[dict], str] = lambda r: "", show_progress: bool = True) -> LoopResult:
    """Run `step` from prog.step to cadence.steps. `step(i)` does one optimisation step and returns its
    loss values (call `check_finite` before each backward); `validate(step)` (main rank) returns a val
    record, whose "val_psnr" decides the best weights; `callbacks` get every val record and may raise
    to end the run (a pruned tune trial). A signal on any rank stops every rank after the same step,
    with one checkpoint."""
    status, received, last_val, signum = "done", [], {}, 0
    window, window_steps = {}, 0  # loss sums since the last log record: means over all styles
    with catch_signals(received), progress_bar(cadence.steps, description,
                                                enabled=ranks.main and show_progress) as bar:
        bar.advance(prog.step)
        while prog.step < cadence.steps:
            started = time.monotonic()
            values = step(prog.step)
            values["s_per_step"] = time.monotonic() - started
            prog.step += 1
            done = prog.step == cadence.steps
            for k, v in values.items():
                window[k] = window.get(k, 0.0) + v
            window_steps += 1
            if prog.step % cadence.log_every == 0 or done:
                if ranks.main:
                    record = {"step": prog.step, **{k: v / window_steps for k, v in window.items()}}
                    append_log(out / LOG_FILE, record)
                    bar.update(status_text(record))
                window, window_steps = {}, 0
            bar.advance()

            stop_early = False
            if ranks.main and (prog.step % cadence.val_every == 0 or done):
                last_val = validate(prog.step)
                stop_early = _keep_best(last_val, prog, cadence.patience, save_best)
                for callback in callbacks:
                    callback(last_val)
            stop_early, signum = ranks.max(int(stop_early), received[0] if received else 0)
            if stop_early:
                status = "early_stopped"
            elif signum:
                status = "interrupted"
            if prog.step % cadence.checkpoint_every == 0 or done or stop_early or signum:
                save_state(prog)
            if stop_early or signum:
                break
    if ranks.main and not (out / WEIGHTS_FILE).exists():
        save_best()  # nothing was ranked (no paired style, or no validation yet): the last EMA weights
    return LoopResult(status, prog.step, signum or None, last_val)


def _keep_best(record: dict, prog: Progress, patience: int, save_best: Callable[[], None]) -> bool:
    """Save the best-by-val weights; True when `patience` validations in a row did not improve."""
    score = record.get("val_psnr")
    if score is None:
        return False
    if prog.best is None or score > prog.best:
        prog.best, prog.bad_vals = score, 0
        save_best()
        return False
    prog.bad_vals += 1
    return patience > 0 and prog.bad_vals >= patience


def check_finite(step: int, out: Path, values: dict[str, float], ranks: Ranks = SINGLE) -> None:
    """Raise on every rank when a loss is not finite on any (before backward: a rank that stopped alone
    would leave the others waiting in the gradient all-reduce)."""
    bad = {k: v for k, v in values.items() if not math.isfinite(v)}
    if ranks.max(int(bool(bad)))[0]:
        desc = ", ".join(f"{k}={v}" for k, v in bad.items()) or "on another process"
        raise StylepressError(f"non-finite loss at step {step} ({desc}); training stopped, the last "
                              f"good checkpoint in {out} is kept (try a lower learning rate)")


# -- schedules ---------------------------------------------------------------------------------------

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
        # lerp, not averaged*d + current*(1-d): an entry that does not change (a frozen weight, an
        # old style's row in transfer) then stays exactly as it is instead of drifting in the last bit.
        if not averaged.is_floating_point():  # a counter (BatchNorm's num_batches_tracked)
            return current
        return averaged.lerp(current, 1 - d)
    return avg


@torch.no_grad()
def generate(G, photos: torch.Tensor, style: int, device, batch: int = 8) -> torch.Tensor:
    outs = []
    for chunk in photos.split(batch):
        s = torch.full((len(chunk),), style, dtype=torch.long, device=device)
        outs.append(G(chunk.to(device), s).float().cpu())
    return torch.cat(outs)


def style_scores(G, photos: torch.Tensor, refs: dict[str, tuple[int, torch.Tensor]], device="cpu") -> dict:
    """{name: {"psnr", "ssim"}}: G's output (eval mode) for each named style index against its reference
    images."""
    was_training, out = G.training, {}
    G.eval()
    for name, (index, ref) in refs.items():
        y = generate(G, photos, index, device)
        out[name] = {"psnr": round(psnr(y, ref).mean().item(), 3), "ssim": round(ssim(y, ref).mean().item(), 4)}
    G.train(was_training)
    return out


# -- checkpoints -------------------------------------------------------------------------------------

def save_checkpoint(path: Path, kind: str, modules: dict, prog: Progress, **extra) -> None:
    state = {k: m.state_dict() for k, m in modules.items()}
    state.update(kind=kind, step=prog.step, best=prog.best, bad_vals=prog.bad_vals,
                 torch_rng=torch.get_rng_state(), **extra)
    with atomic_path(path) as tmp:
        torch.save(state, tmp)


def read_checkpoint(path: Path, kind: str) -> dict:
    """A checkpoint's contents, tensors only (nothing unpickled); any unreadable or foreign file is one
    line naming it."""
    if not path.is_file():
        raise StylepressError(f"nothing to resume: {path} does not exist")
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # noqa: BLE001 - any unreadable checkpoint is a user-facing error
        raise StylepressError(f"cannot resume from {path}: {str(exc).splitlines()[0]}") from None
    if not isinstance(state, dict) or state.get("kind", kind) != kind or "step" not in state:
        raise StylepressError(f"cannot resume from {path}: not a {kind} checkpoint")
    return state


D_FIELDS = ("ndf", "d_layers", "d_spectral_norm")  # the [model] keys that shape the discriminator


def saved_discriminator(state_path: Path, model: ModelConfig) -> tuple[dict, ModelConfig]:
    """A teacher's discriminator weights (its state.pt) and `model` with the discriminator settings they
    were trained with, which the config at hand need not share (a bundled teacher, another run's)."""
    state = read_checkpoint(state_path, "teacher")
    saved = ModelConfig.model_validate_json(state["model_config"])
    return state["D"], model.model_copy(update={k: getattr(saved, k) for k in D_FIELDS})


def load_checkpoint(path: Path, state: dict, modules: dict) -> Progress:
    """Load `modules` from `state`, the checkpoint `read_checkpoint` read from `path` (a stage checks its
    own extras first); a missing part or a shape that does not fit is one line (e.g. a student
    checkpoint of another pruning)."""
    for name, module in modules.items():
        if name not in state:
            raise StylepressError(f"cannot resume from {path}: it holds no {name!r} (another kind of run?)")
        try:
            module.load_state_dict(state[name])
        except (RuntimeError, ValueError, KeyError, TypeError) as exc:
            first = str(exc).strip().splitlines()[0][:200]
            raise StylepressError(f"cannot resume from {path}: its {name!r} does not fit this run ({first})") from None
    torch.set_rng_state(state["torch_rng"])
    return Progress(state["step"], state.get("best", state.get("best_psnr")), state.get("bad_vals", 0))


# -- logs --------------------------------------------------------------------------------------------

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


# -- processes and signals ---------------------------------------------------------------------------

def setup_ranks(device_cfg: str, key: str) -> Ranks:
    """Single process, or one process per device under `torchrun` (WORLD_SIZE > 1)."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    local_rank = int(os.environ.get("LOCAL_RANK", "0")) if world > 1 else None
    device = resolve_device(device_cfg, key, local_rank)
    if world > 1 and not dist.is_initialized():
        dist.init_process_group("nccl" if device.type == "cuda" else "gloo")
    return Ranks(dist.get_rank() if world > 1 else 0, world, device)


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
