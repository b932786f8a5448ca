"""The compression frontier behind the README's figures: one student per MACs reduction from one
teacher (`stylepress compress --sweep`), and the feature-distillation ablation: students at one
reduction distilled with and without the feature term, the same steps. Fidelity is student vs
teacher on the val portraits at the serving size.

  student/sweep.json, sweep.png, sweep.md       the frontier
  ablation/feat<λ>/student/, ablation.json/.md  the ablation
"""

from __future__ import annotations

from pathlib import Path

import torch

from stylepress import compress
from stylepress.config import Config
from stylepress.fsutil import write_json, write_text
from stylepress.layout import RunLayout
from stylepress.machine import describe, now


def sweep(cfg: Config, run_dir: Path, factors: list[float], resume: bool = False) -> dict:
    report = compress.run(cfg, run_dir, resume=resume, sweep=factors)  # writes sweep.json and sweep.png
    write_text(RunLayout(run_dir).student / "sweep.md", markdown(report, cfg.data.styles))
    return report


def ablate(cfg: Config, run_dir: Path, feat: float = 1.0, resume: bool = False) -> dict:
    """Two students at the config's target, the same steps: feature term at weight `feat`, and none."""
    layout, points = RunLayout(run_dir), []
    for weight in (feat, 0.0):
        variant = cfg.model_copy(update={"compress": cfg.compress.model_copy(update={"lambda_feat": weight})})
        out = layout.ablation / f"feat{weight:g}"
        points.append({"lambda_feat": weight, **compress.run(variant, out, resume=resume and (out / "student").is_dir(),
                                                             teacher_dir=layout.teacher)})
    report = {"points": points, "machine": {**describe(), "torch_threads": torch.get_num_threads()},
              "torch": torch.__version__, "date": now()}
    write_json(layout.ablation / "ablation.json", report)
    write_text(layout.ablation / "ablation.md", markdown(report, cfg.data.styles))
    return report


def markdown(report: dict, styles) -> str:
    m = report["machine"]
    names = [Path(s).name for s in styles]
    head = ["MACs reduction", "GMACs", "params", *(f"{n} PSNR / SSIM" for n in names), "distill steps", "wall"]
    if "lambda_feat" in report["points"][0]:
        head.insert(0, "λ_feat")
    lines = [f"{m['cpu']}, {m['cores']} cores, torch {report['torch']} ({m['torch_threads']} threads), "
             f"{report['date'][:10]}; "
             "fidelity: student vs teacher on the val portraits", "",
             "| " + " | ".join(head) + " |", "|" + "---:|" * len(head)]
    for p in report["points"]:
        cells = [f"{p['macs_reduction']:.1f}×", f"{p['student_macs'] / 1e9:.2f}", f"{p['student_params'] / 1e6:.2f} M",
                 *(f"{p[f'val_psnr_{n}']:.2f} dB / {p[f'val_ssim_{n}']:.3f}" for n in names),
                 str(p["distill_steps"]), f"{p['wall_s'] / 60:.1f} min"]
        if "lambda_feat" in p:
            cells.insert(0, f"{p['lambda_feat']:g}")
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"
