"""`stylepress transfer`: adapt a trained generator to new styles or a new photo set, cheaply.

What trains (`[transfer] mode`):
  style    only the new styles' rows in every per-style norm table (conditional instance norm,
           Dumoulin et al. 2017: a style is a scale and shift per channel). Every existing weight is
           frozen and the old styles' outputs stay bit-identical: only new styles are sampled, so the
           old rows get exactly zero gradient, Adam leaves a zero-gradient entry unchanged, the EMA (a
           lerp) leaves an unchanged entry unchanged, and BatchNorm statistics are frozen (momentum 0).
  decoder  + the last `decoder_layers` convolutions, at lr * lr_scale
  full     + every generator weight, at lr * lr_scale
  lora     + rank-r adapters on the convolutions (peft), merged into the weights when saved, so the
           teacher has its original architecture
The discriminator is the teacher's (teacher/state.pt) with a head row per new style and its first
`freeze_d` layers frozen (FreezeD, for few-photo sets); an imported generator has none, so a fresh one
trains whole. The result is an ordinary teacher/ that compress, export, repo and build take unchanged,
and transfer.json with what trained, the time it took and the val figures before and after.
"""

from __future__ import annotations

import copy
import time
from pathlib import Path

import torch
from torch import nn

from stylepress.config import Config, ModelConfig
from stylepress.data import style_name, val_set
from stylepress.errors import StylepressError
from stylepress.fsutil import write_json
from stylepress.layout import RunLayout
from stylepress.models import ARCH_FILE, build_discriminator, load_generator
from stylepress.models.layers import StyleNorm
from stylepress.models.styled import add_styles

from . import trainer
from .loop import STATE_FILE, generate, saved_discriminator, style_scores

TRANSFER_FILE = "transfer.json"


def run(cfg: Config, source: str | Path, run_dir: str | Path, resume: bool = False, force: bool = False,
        show_progress: bool = True) -> dict:
    """Adapt the generator in `source` (a run directory or a teacher folder) into run_dir/teacher/;
    returns transfer.json's contents."""
    tc = cfg.transfer
    out = RunLayout(run_dir).teacher
    teacher_dir = source_folder(source, "teacher", out)
    G, old = load_generator(teacher_dir)
    reference = copy.deepcopy(G)
    new_names = tuple(style_name(s) for s in tc.add_styles)
    clash = sorted(set(new_names) & set(old.styles))
    if clash:
        raise StylepressError(f"transfer.add_styles: the model already has the style {clash[0]!r}")
    if tc.init != "mean" and tc.init not in old.styles:
        raise StylepressError(f"transfer.init {tc.init!r}: not one of the model's styles ({', '.join(old.styles)})")
    if new_names:
        G, spec = add_styles(G, old, new_names, None if tc.init == "mean" else old.styles.index(tc.init))
        data_styles, trained = tc.add_styles, list(range(old.num_styles, spec.num_styles))
    else:  # adapt existing styles to new photos: [data] styles names which
        missing = [style_name(s) for s in cfg.data.styles if style_name(s) not in old.styles]
        if missing:
            raise StylepressError(f"data.styles: the model has no style {missing[0]!r} to adapt "
                                  f"(it has {', '.join(old.styles)}); to add one, use transfer.add_styles")
        spec, data_styles = old, cfg.data.styles
        trained = [old.styles.index(style_name(s)) for s in data_styles]
    data_cfg = cfg.data.model_copy(update={"styles": data_styles, "photos": tc.photos or cfg.data.photos})
    photos, targets = val_set(data_cfg)
    refs = {style_name(s): (trained[i], targets[i]) for i, s in enumerate(data_styles) if i in targets}
    before = style_scores(G, photos, refs)  # a new style: its initial rows

    D, d_model = _discriminator(cfg, teacher_dir, old.num_styles, spec.num_styles)
    tables = train_only_rows(G, freeze_stats=tc.mode == "style")
    if not tables and tc.mode == "style":
        raise StylepressError("transfer.mode 'style': this single-style model has no per-style rows to adapt; "
                              "use mode decoder, full or lora (or add a style)")
    counts = {"norm_rows": row_count(tables, len(trained))}
    groups = [{"params": tables, "lr": tc.lr}] if tables else []
    if tc.mode in ("decoder", "full"):
        convs = [m for m in G.modules() if isinstance(m, nn.modules.conv._ConvNd)]
        shared = [p for m in (convs[-tc.decoder_layers:] if tc.mode == "decoder" else [G]) for p in m.parameters()
                  if not any(p is t for t in tables)]
        for p in shared:
            p.requires_grad_(True)
        counts["shared"] = sum(p.numel() for p in shared)
        groups.append({"params": shared, "lr": tc.lr * tc.lr_scale})
    finalize = trainer.identity
    if tc.mode == "lora":
        G, adapters = _lora(G, tc.lora_rank, tc.lora_alpha)
        counts["adapters"] = sum(p.numel() for p in adapters)
        groups.append({"params": adapters, "lr": tc.lr})
        finalize = _merged
    d_params = [p for p in D.parameters() if p.requires_grad]

    # The checkpoint records the discriminator the run really has (the source teacher's shape).
    run_cfg = cfg.model_copy(update={"data": data_cfg, "model": d_model,
                                     "train": cfg.train.model_copy(update={"steps": tc.steps, "lr": tc.lr})})
    t0 = time.perf_counter()
    result = trainer.run(run_cfg, run_dir, resume=resume, force=force, show_progress=show_progress,
                         start=trainer.Start(spec, G, D, groups, [{"params": d_params, "lr": cfg.train.lr}],
                                             trained, finalize))
    adapted, _ = load_generator(out)
    report = {
        "source": str(teacher_dir), "mode": tc.mode, "styles": list(spec.styles),
        "trained_styles": [spec.styles[i] for i in trained], "status": result.status, "signal": result.signal,
        "steps": result.step, "wall_s": round(time.perf_counter() - t0, 1),
        "params": {"trained": sum(counts.values()), **counts,
                   "total": sum(p.numel() for p in adapted.parameters())},
        "before": before, "after": style_scores(adapted, photos, refs),
        "old_styles_max_change": old_styles_change(reference, adapted, old.styles, photos),
    }
    write_json(out / TRANSFER_FILE, report)
    return report


def source_folder(source: str | Path, kind: str, out: Path) -> Path:
    """The `kind` ("teacher" | "student") folder `source` names (a run directory or the folder itself);
    refuses to be the folder the transfer writes."""
    source = Path(source)
    folder = source / kind if (source / kind / ARCH_FILE).is_file() else source
    if out.resolve() == folder.resolve():
        raise StylepressError(f"transfer would overwrite its source {folder}: give another --out")
    return folder


def train_only_rows(G: nn.Module, freeze_stats: bool) -> list[nn.Parameter]:
    """Freeze every weight of `G` but its per-style tables (returned); `freeze_stats` also keeps BatchNorm's
    running statistics as trained (momentum 0), so that styles not trained do not move."""
    G.requires_grad_(False)
    tables = [p for m in G.modules() if isinstance(m, StyleNorm) and m.has_tables for p in (m.weight, m.bias)]
    for p in tables:
        p.requires_grad_(True)
    if freeze_stats:
        for m in G.modules():
            if isinstance(m, nn.modules.batchnorm._BatchNorm):
                m.momentum = 0.0
    return tables


def row_count(tables: list[nn.Parameter], n_styles: int) -> int:
    """Entries of `n_styles` styles' rows in the per-style tables: what style mode trains."""
    return sum(p.shape[1] for p in tables) * n_styles


def old_styles_change(reference: nn.Module, adapted: nn.Module, styles, photos: torch.Tensor) -> dict[str, float]:
    """Per old style, the largest change of its output on `photos` (0.0: bit-identical)."""
    return {name: (generate(reference.eval(), photos, i, "cpu") - generate(adapted.eval(), photos, i, "cpu"))
            .abs().max().item() for i, name in enumerate(styles)}


def _merged(model: nn.Module) -> nn.Module:
    """A copy of a peft-adapted model with its adapters merged into the weights (the original modules)."""
    return copy.deepcopy(model).merge_and_unload()


def _lora(G: nn.Module, rank: int, alpha: float) -> tuple[nn.Module, list[nn.Parameter]]:
    """Rank-`rank` LoRA adapters (peft) on every 2-D convolution; peft has none for transposed ones."""
    try:
        from peft import LoraConfig, get_peft_model  # brings transformers: imported only in this mode
    except ImportError:
        raise StylepressError("transfer.mode 'lora' needs peft: pip install 'stylepress[lora]'") from None

    targets = [name for name, m in G.named_modules() if type(m) is nn.Conv2d]
    trainable = [p for p in G.parameters() if p.requires_grad]  # the norm rows: peft would freeze them
    G = get_peft_model(G, LoraConfig(r=rank, lora_alpha=alpha, target_modules=targets, lora_dropout=0.0))
    for p in trainable:
        p.requires_grad_(True)
    return G, [p for n, p in G.named_parameters() if "lora_" in n]


def _discriminator(cfg: Config, teacher_dir: Path, old_n: int, new_n: int) -> tuple[nn.Module, ModelConfig]:
    """The teacher's discriminator with rows for the new styles and its lower layers frozen, else a fresh
    one; and the [model] section that describes it."""
    state_path = teacher_dir / STATE_FILE
    if not state_path.is_file():  # an imported generator: published checkpoints ship without one
        return build_discriminator(cfg.model, new_n), cfg.model
    weights, model_cfg = saved_discriminator(state_path, cfg.model)
    D = build_discriminator(model_cfg, new_n)
    D.load_state_dict(_grown(weights, D.state_dict(), old_n, new_n))
    for layer in D.features[:cfg.transfer.freeze_d]:
        layer.requires_grad_(False)
    return D, model_cfg


def _grown(old: dict, new: dict, old_n: int, new_n: int) -> dict:
    """`old` with every per-style tensor (first dim old_n where the new one has new_n) given new rows,
    the mean of the old ones."""
    out = {}
    for key, target in new.items():
        t = old[key]
        if t.shape != target.shape:
            if t.shape[0] != old_n or target.shape[0] != new_n or t.shape[1:] != target.shape[1:]:
                raise StylepressError(f"teacher discriminator: {key} has shape {tuple(t.shape)}, "
                                      f"expected {tuple(target.shape)}")
            t = torch.cat([t, t.float().mean(0, keepdim=True).to(t.dtype).expand(new_n - old_n, *t.shape[1:])])
        out[key] = t
    return out
