"""Transfer against training from scratch: the figures of docs/transfer.md, in one resumable run.

  python -m stylepress.benchmarks transfer CONFIG --from RUN [--style cartoon] [--steps N] [--few 10]

From the trained teacher in RUN (the config's styles), one new style is learned:
  style-N             `transfer`, style mode, N steps, all training photos
  fresh-N             a new teacher trained on all the styles + the new one, N steps
  few<k>-<mode>-N     `transfer` from the first k training photos, N steps, modes style / decoder / lora
  fresh-8N            the fresh teacher for 8N steps
Each goes to <out>/transfer/<style>/<name>/ (one folder per new style); a finished one is skipped
and an interrupted one resumed, so the suite can span sessions. Then the new style's val PSNR/SSIM
(the config's val_photos), parameters trained and wall time of each (transfer.{json,md} in that
folder) and a samples grid of val portraits (samples.png).
"""

from __future__ import annotations

import json
import time
from pathlib import Path

import torch

from stylepress.config import Config
from stylepress.data import find_images, style_name, val_set
from stylepress.errors import StylepressError
from stylepress.fsutil import write_json, write_text
from stylepress.images import grid, save_image, to_image
from stylepress.layout import RunLayout
from stylepress.machine import describe, now
from stylepress.models import WEIGHTS_FILE, load_generator
from stylepress.train import trainer, transfer
from stylepress.train.loop import STATE_FILE, generate, read_log, style_scores

FEW_MODES = ("style", "decoder", "lora")
SAMPLE_ROWS = 4


def run(cfg: Config, source: Path, run_dir: Path, style: str, steps: int, few: int) -> dict:
    if cfg.data.val_photos is None:
        raise StylepressError("the transfer suite scores every run on data.val_photos: set it in the config")
    root = RunLayout(run_dir).root / "transfer" / style_name(style)
    few_photos = _few_photos(cfg, root / f"photos-{few}", few)
    fresh = cfg.model_copy(update={"data": cfg.data.model_copy(update={"styles": (*cfg.data.styles, style)})})

    def fresh_teacher(n: int):
        return lambda out, resume: {"status": trainer.run(_steps(fresh, n), out, resume=resume).status}

    def transferred(mode: str, photos: Path | None = None):
        return lambda out, resume: transfer.run(_transfer(cfg, style, steps, mode, photos), source, out,
                                                resume=resume)

    runs = {f"style-{steps}": transferred("style"), f"fresh-{steps}": fresh_teacher(steps),
            **{f"few{few}-{mode}-{steps}": transferred(mode, few_photos) for mode in FEW_MODES},
            f"fresh-{8 * steps}": fresh_teacher(8 * steps)}
    for name, make in runs.items():
        out = root / name
        teacher = RunLayout(out).teacher
        if (teacher / "done").is_file():
            continue
        resume = (teacher / STATE_FILE).is_file()
        before = _wall(teacher) if resume else 0.0  # an earlier session's share
        t0 = time.perf_counter()
        if make(out, resume)["status"] == "interrupted":  # a signal: the next call resumes this run
            return {**_report(cfg, source, root, style, list(runs)), "interrupted": name}
        write_text(teacher / "wall_s", f"{time.perf_counter() - t0 + before:.1f}\n")
        write_text(teacher / "done", "")
    return _report(cfg, source, root, style, list(runs))


def _steps(cfg: Config, steps: int) -> Config:
    return cfg.model_copy(update={"train": cfg.train.model_copy(update={"steps": steps})})


def _transfer(cfg: Config, style: str, steps: int, mode: str, photos: Path | None = None) -> Config:
    tc = cfg.transfer.model_copy(update={"add_styles": (style,), "steps": steps, "mode": mode, "photos": photos})
    return cfg.model_copy(update={"transfer": tc})


def _few_photos(cfg: Config, folder: Path, n: int) -> Path:
    """The first `n` training photos (by name), linked into `folder`: the few-photo training set."""
    folder.mkdir(parents=True, exist_ok=True)
    for path in find_images(cfg.data.photos)[:n]:
        link = folder / path.name
        if not link.exists():
            link.symlink_to(path.resolve())
    return folder


def _wall(teacher: Path) -> float:
    """Seconds an interrupted run already spent training: each log window's seconds per step times its
    steps (validations and checkpoints not counted)."""
    total, last = 0.0, 0
    for r in read_log(teacher / "log.jsonl"):
        if "s_per_step" in r:
            total, last = total + r["s_per_step"] * (r["step"] - last), r["step"]
    return total


def _report(cfg: Config, source: Path, root: Path, style: str, names: list[str]) -> dict:
    styles = (*cfg.data.styles, style)
    photos, targets = val_set(cfg.data.model_copy(update={"styles": styles}))
    style_names = [style_name(s) for s in styles]
    *old, style = style_names
    new = len(old)

    def scores(G, spec) -> dict:
        """Every paired style the model has, old and new, on the val photos."""
        return style_scores(G, photos, {n: (spec.styles.index(n), targets[i]) for i, n in enumerate(style_names)
                                        if i in targets and n in spec.styles})

    columns, labels, rows = [photos[:SAMPLE_ROWS]], ["input"], []
    if new in targets:
        columns.append(targets[new][:SAMPLE_ROWS])
        labels.append(f"{style} target")
    for name in names:
        teacher = root / name / "teacher"
        if not (teacher / WEIGHTS_FILE).is_file():
            rows.append({"run": name, "state": "pending"})
            continue
        G, spec = load_generator(teacher)
        row = {"run": name, "state": "done" if (teacher / "done").is_file() else "running",
               "styles": list(spec.styles)}
        measured = scores(G, spec)
        row.update(measured.get(style, {}), old_styles={n: measured[n] for n in old if n in measured})
        info = json.loads(path.read_text()) if (path := teacher / transfer.TRANSFER_FILE).is_file() else {}
        total = sum(p.numel() for p in G.parameters())
        row.update(params_trained=info.get("params", {}).get("trained", total), params_total=total,
                   wall_s=float((teacher / "wall_s").read_text()) if (teacher / "wall_s").is_file() else None)
        rows.append(row)
        columns.append(generate(G, photos[:SAMPLE_ROWS], spec.styles.index(style), "cpu"))
        labels.append(name)
    save_image(grid([[to_image(c[r]) for c in columns] for r in range(len(columns[0]))], labels), root / "samples.png")
    G, spec = load_generator(transfer.source_folder(source, "teacher", root))
    report = {"source": str(source), "style": style, "date": now(), "machine": describe(),
              "torch": torch.__version__, "val_photos": len(photos), "source_styles": scores(G, spec), "runs": rows}
    write_json(root / "transfer.json", report)
    write_text(root / "transfer.md", markdown(report))
    return report


def markdown(report: dict) -> str:
    def old(scores: dict) -> str:
        return ", ".join(f"{n} {v['psnr']:.2f}" for n, v in scores.items())

    lines = [f"New style `{report['style']}` from `{report['source']}` ({old(report['source_styles'])}), "
             f"{report['val_photos']} val portraits, {report['date']}", "",
             "| run | PSNR / SSIM | old styles' PSNR | params trained | of | wall |", "|---|---:|---|---:|---:|---:|"]
    for r in report["runs"]:
        if r["state"] == "pending":
            lines.append(f"| {r['run']} | pending | | | | |")
            continue
        quality = f"{r['psnr']:.2f} / {r['ssim']:.3f}" if "psnr" in r else "(unpaired)"
        wall = f"{r['wall_s'] / 60:.1f} min" if r.get("wall_s") else r["state"]
        lines.append(f"| {r['run']} | {quality} | {old(r['old_styles'])} | {r['params_trained']:,} | "
                     f"{r['params_total']:,} | {wall} |")
    return "\n".join(lines) + "\n"
