"""PyTorch-level compression: structured pruning (torch-pruning) + distillation. Entry point: `run`.

student/
  weights.safetensors, arch.json   the pruned, distilled student (EMA, best val PSNR to the teacher);
                                   arch.json carries the pruned widths, so it loads like a teacher
  prune.json                       MACs and params before/after at the serving resolution, widths,
                                   the student kind (pruned | mobile)
  log.jsonl, samples.png, state.pt distillation log, input | teacher | student, resumable state
  sweep/x<F>/, sweep.json, sweep.png   with --sweep: one student per MACs reduction F
"""

from __future__ import annotations

import json
import time
from pathlib import Path

import torch

from stylepress.config import Config
from stylepress.data import PortraitData
from stylepress.errors import StylepressError
from stylepress.fsutil import write_json
from stylepress.layout import RunLayout
from stylepress.machine import describe, now
from stylepress.models import ARCH_FILE, ArchSpec, build_generator, layer_channels, load_generator, read_spec
from stylepress.plots import pyplot, save_png

from .distill import STATE_FILE, distill
from .mobile import mobile_student
from .pruning import count, prune, prune_to_macs

PRUNE_FILE = "prune.json"


def run(cfg: Config, run_dir: str | Path, resume: bool = False, force: bool = False,
        sweep: list[float] | None = None, teacher_dir: Path | None = None, show_progress: bool = True,
        callbacks=()) -> dict:
    """Prune and distil the run's teacher (or `teacher_dir`) into student/ (or one student per --sweep
    factor). `callbacks` get every validation record of the distillation."""
    run_dir = Path(run_dir)
    layout = RunLayout(run_dir)
    teacher_dir = Path(teacher_dir) if teacher_dir is not None else layout.teacher
    teacher, spec = load_generator(teacher_dir)
    if cfg.crop % spec.size_multiple:
        raise StylepressError(f"train.crop {cfg.crop} (the distillation crop) must be a multiple of "
                              f"{spec.size_multiple} for this {spec.arch} generator")
    data = PortraitData(cfg.data, cfg.crop)
    teacher_count = count(teacher, spec, cfg.serving_resolution)  # (MACs, params), once for every student
    base_macs = teacher_count[0]
    if not sweep:
        return _one(cfg, teacher_dir, teacher, spec, teacher_count, data, layout.student,
                    cfg.compress.target_macs_value, resume, force, show_progress, callbacks)
    points = []
    for factor in sweep:
        out = layout.sweep / f"x{factor:g}"
        points.append({"factor": factor, **_one(cfg, teacher_dir, teacher, spec, teacher_count, data, out,
                                                base_macs / factor, resume and (out / STATE_FILE).exists(), force,
                                                show_progress, callbacks)})
    report = {"teacher_macs": base_macs, "resolution": cfg.serving_resolution, "points": points,
              "machine": {**describe(), "torch_threads": torch.get_num_threads()}, "torch": torch.__version__,
              "date": now()}
    write_json(layout.student / "sweep.json", report)
    _plot_sweep(report, spec.styles, layout.student / "sweep.png")
    return report


def _one(cfg: Config, teacher_dir: Path, teacher, spec: ArchSpec, teacher_count: tuple[int, int], data: PortraitData,
         out: Path, target_macs: float | None, resume: bool, force: bool, show_progress: bool,
         callbacks=()) -> dict:
    cc = cfg.compress
    if not resume and (out / STATE_FILE).exists() and not force:
        raise StylepressError(f"{out} already holds a distillation checkpoint: pass --resume to continue it "
                              "or --force to start over")
    start = time.monotonic()
    if resume:
        if not (out / ARCH_FILE).is_file():
            raise StylepressError(f"nothing to resume: {out / ARCH_FILE} does not exist")
        student_spec = read_spec(out)
        student = build_generator(student_spec)
        prune_report = json.loads((out / PRUNE_FILE).read_text())
        if prune_report.get("student", "pruned") != cc.student:
            raise StylepressError(f"{out} holds a {prune_report.get('student', 'pruned')} student, and "
                                  f"compress.student is {cc.student!r}: --force starts over")
    else:
        teacher_macs, teacher_params = teacher_count
        taken = None
        if cc.student == "mobile":
            if target_macs is None:  # what pruning that ratio of channels roughly leaves
                target_macs = teacher_macs * (1 - (cc.ratio or 0.5)) ** 2
            pruned, taken = mobile_student(teacher, spec, target_macs, cfg.serving_resolution, cc.round_to)
        else:
            options = dict(importance=cc.importance, global_pruning=cc.global_pruning,
                           iterative_steps=cc.iterative_steps, round_to=cc.round_to, ignored=cc.ignored,
                           taylor_batch=_taylor_batch(data, cc.batch_size) if cc.importance == "taylor" else None)
            if target_macs is not None:
                pruned = prune_to_macs(teacher, spec, target_macs, cfg.serving_resolution, **options)
            else:
                pruned = prune(teacher, spec, cc.ratio or 0.5, resolution=cfg.serving_resolution, **options)
        student, student_spec = pruned.model, pruned.spec
        prune_report = {"student": cc.student, "resolution": cfg.serving_resolution, "teacher_macs": teacher_macs,
                        "student_macs": pruned.macs, "teacher_params": teacher_params,
                        "student_params": pruned.params, "macs_reduction": teacher_macs / pruned.macs,
                        "target_macs": target_macs, "round_to": pruned.round_to,
                        "teacher_widths": _widths(teacher, spec), "student_widths": _widths(student, student_spec),
                        **({"ratio": pruned.ratio, "importance": cc.importance} if taken is None else
                           {"tensors_from_teacher": taken})}
        out.mkdir(parents=True, exist_ok=True)
        write_json(out / PRUNE_FILE, prune_report)
    result = distill(cfg, teacher, student, student_spec, data, out, teacher_dir / "state.pt", resume,
                     show_progress, callbacks)
    return {**{k: prune_report[k] for k in ("student_macs", "student_params", "macs_reduction")},
            "distill_steps": result["step"], "wall_s": time.monotonic() - start, "student_dir": str(out),
            **{k: v for k, v in result.items() if k.startswith("val_") or k == "signal"}}


def _widths(model, spec: ArchSpec) -> dict:
    """Per-layer widths: the ResNet generator's summary, or every conv's output channels."""
    if spec.arch == "resnet":
        return model.layer_widths()
    return {name: c["out_channels"] for name, c in layer_channels(model).items() if "out_channels" in c}


def _taylor_batch(data: PortraitData, batch_size: int):
    paired = [i for i in range(len(data.styles)) if data.is_paired(i)]
    if not paired:
        raise StylepressError("compress.importance = 'taylor' needs a built-in (paired) style for its gradients")
    batch = data.sample(paired[0], batch_size, torch.Generator().manual_seed(0))
    return batch.photo, batch.style, batch.real


def _plot_sweep(report: dict, styles: list[str], path: Path) -> None:
    plt = pyplot()
    points = report["points"]
    x = [p["macs_reduction"] for p in points]
    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(10, 4))
    for name in styles:
        ax1.plot(x, [p.get(f"val_psnr_{name}") for p in points], "o-", label=name)
        ax2.plot(x, [p.get(f"val_ssim_{name}") for p in points], "o-", label=name)
    for ax, label in ((ax1, "PSNR to teacher (dB)"), (ax2, "SSIM to teacher")):
        ax.set_xscale("log")
        ax.set_xticks(x, [f"{f:.0f}×" for f in x], fontsize=8, rotation=45)
        ax.minorticks_off()
        ax.set_xlabel(f"MACs reduction (teacher {report['teacher_macs'] / 1e9:.1f} GMACs at {report['resolution']}²)")
        ax.set_ylabel(label)
        ax.grid(True, alpha=0.3)
        ax.legend()
    fig.suptitle("compression frontier: val portraits, student vs teacher")
    fig.tight_layout()
    save_png(fig, path, dpi=110)
