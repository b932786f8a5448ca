"""`stylepress transfer --student`: a compressed student takes the styles its teacher gained by
`transfer`, distilling only the new rows of its per-style norm tables from the transferred teacher
(compress's distillation loss and settings, `[transfer] steps` and `lr`; always style mode). Its other
weights stay as they are, so its old styles' outputs stay bit-identical; its MACs do not change (a
style is a row of scales and shifts)."""

from __future__ import annotations

import copy
import time
from pathlib import Path

import torch

from stylepress.config import Config
from stylepress.data import PortraitData, to_unit
from stylepress.errors import StylepressError
from stylepress.fsutil import write_bytes, write_json
from stylepress.layout import RunLayout
from stylepress.models import load_generator
from stylepress.models.styled import add_styles
from stylepress.train.loop import STATE_FILE
from stylepress.train.transfer import TRANSFER_FILE, old_styles_change, row_count, source_folder, train_only_rows

from . import PRUNE_FILE
from .distill import distill


def run(cfg: Config, source: str | Path, run_dir: str | Path, resume: bool = False, force: bool = False,
        show_progress: bool = True) -> dict:
    """Give the student in `source` (a run directory or a student folder) the new styles of
    run_dir/teacher/; writes run_dir/student/ and its transfer.json."""
    layout = RunLayout(run_dir)
    out = layout.student
    source_dir = source_folder(source, "student", out)
    if not resume and (out / STATE_FILE).exists() and not force:
        raise StylepressError(f"{out} already holds a distillation checkpoint: pass --resume to continue it "
                              "or --force to start over")
    reference, old = load_generator(source_dir)
    teacher, tspec = load_generator(layout.teacher)
    new = tspec.styles[old.num_styles:]
    if tspec.styles[:old.num_styles] != old.styles or not new:
        raise StylepressError(f"{layout.teacher} has styles {', '.join(tspec.styles)}: the student's "
                              f"({', '.join(old.styles)}) then new ones are needed; run `stylepress transfer` "
                              "for the teacher into this --out first")
    student, spec = add_styles(copy.deepcopy(reference), old, new)
    rows = train_only_rows(student, freeze_stats=True)
    tc = cfg.transfer
    run_cfg = cfg.model_copy(update={"compress": cfg.compress.model_copy(update={"distill_steps": tc.steps,
                                                                                 "lr": tc.lr})})
    data = PortraitData(cfg.data.model_copy(update={"photos": tc.photos or cfg.data.photos}), cfg.crop)
    if (source_dir / PRUNE_FILE).is_file():  # the same pruned widths and MACs
        write_bytes(out / PRUNE_FILE, (source_dir / PRUNE_FILE).read_bytes())
    trained = list(range(old.num_styles, tspec.num_styles))
    t0 = time.perf_counter()
    last = distill(run_cfg, teacher, student, spec, data, out, layout.teacher / STATE_FILE, resume, show_progress,
                   styles=trained, params=rows)
    adapted, _ = load_generator(out)
    report = {"source": str(source_dir), "teacher": str(layout.teacher), "mode": "style",
              "styles": list(spec.styles), "trained_styles": list(new), "signal": last["signal"],
              "steps": last["step"], "wall_s": round(time.perf_counter() - t0, 1),
              "params": {"trained": row_count(rows, len(trained)),
                         "total": sum(p.numel() for p in adapted.parameters())},
              "after": {k.removeprefix("val_"): v for k, v in last.items() if k.startswith("val_")},
              "old_styles_max_change": old_styles_change(reference, adapted, old.styles,
                                                         to_unit(torch.stack(data.val)))}
    write_json(out / TRANSFER_FILE, report)
    return report
