"""The bundled models' val figures, re-measured from the shipped weights (and how a model is bundled).

  python -m stylepress.benchmarks reference [--val-photos ../shared/data/portraits/val] [--out DIR]

For every model in stylepress/pretrained/models.json: load it through the verified path
(catalog.checkpoint), score it on the val portraits at its resolution (a teacher against each style's
target, a student against its bundled teacher's outputs: 256² centre crops, as validation in training)
and compare with the manifest: within 0.1 dB is reproduced. Writes reference.{json,md}.

`add(...)` (`--add NAME --from DIR ...`) copies a trained checkpoint into the package, measures it the
same way and records it in the manifest: how the bundled models were made.
"""

from __future__ import annotations

import json
from pathlib import Path

import torch

from stylepress import catalog
from stylepress.config import DataConfig
from stylepress.data import val_set
from stylepress.errors import StylepressError
from stylepress.fsutil import sha256, write_bytes, write_json, write_text
from stylepress.machine import describe, now
from stylepress.models import ARCH_FILE, WEIGHTS_FILE, load_generator
from stylepress.train.loop import generate, style_scores

TOLERANCE_DB = 0.1
SHARED_PORTRAITS = ("Face Research Lab London Set (DeBruine & Jones 2017, doi:10.6084/m9.figshare.5047666), "
                    "CC BY 4.0: 164 training portraits of 82 people, resized to 512 px; val: 40 portraits of "
                    "20 other people")


def measure(model_dir: Path, styles: tuple[str, ...], resolution: int, val_photos: Path,
            teacher_dir: Path | None = None) -> dict[str, dict[str, float]]:
    """Per style, val PSNR/SSIM against the style's target, or against `teacher_dir`'s outputs."""
    G, spec = load_generator(model_dir)
    photos, targets = val_set(DataConfig(photos=val_photos, val_photos=val_photos, styles=styles,
                                         resolution=resolution))
    if teacher_dir is not None:
        teacher = load_generator(teacher_dir)[0]
        targets = {i: generate(teacher, photos, i, "cpu") for i in range(spec.num_styles)}
    return style_scores(G, photos, {name: (i, targets[i]) for i, name in enumerate(spec.styles) if i in targets})


def run(val_photos: Path, out: Path) -> dict:
    rows = []
    for name, e in catalog.entries().items():
        model_dir = catalog.checkpoint(name)
        teacher = catalog.checkpoint(e.teacher) if e.teacher else None
        got = measure(model_dir, e.styles, e.resolution, val_photos, teacher)
        for style, figures in e.val.items():
            delta = got[style]["psnr"] - figures["psnr"]
            rows.append({"model": name, "style": style, "manifest": figures, "measured": got[style],
                         "delta_db": round(delta, 3), "reproduced": abs(delta) <= TOLERANCE_DB})
    report = {"date": now(), "machine": describe(), "torch": torch.__version__, "val_photos": str(val_photos),
              "tolerance_db": TOLERANCE_DB, "rows": rows}
    write_json(out / "reference.json", report)
    write_text(out / "reference.md", markdown(report))
    return report


def markdown(report: dict) -> str:
    lines = [f"Bundled models re-measured from the shipped weights, {report['date']} ({report['val_photos']})", "",
             "| model | style | manifest PSNR / SSIM | measured PSNR / SSIM | Δ dB | reproduced |",
             "|---|---|---:|---:|---:|---|"]
    for r in report["rows"]:
        m, g = r["manifest"], r["measured"]
        lines.append(f"| {r['model']} | {r['style']} | {m['psnr']:.2f} / {m['ssim']:.3f} | "
                     f"{g['psnr']:.2f} / {g['ssim']:.3f} | {r['delta_db']:+.3f} | "
                     f"{'yes' if r['reproduced'] else 'NO'} |")
    return "\n".join(lines) + "\n"


def add(name: str, source: Path, kind: str, description: str, config: str, command: str, data: str,
        val_photos: Path, resolution: int, teacher: str | None = None, folder: Path | None = None) -> catalog.Entry:
    """Bundle the checkpoint in `source` as `name`: its files, sha256, MACs/params and val figures."""
    from stylepress.compress.pruning import count

    missing = [f for f in (WEIGHTS_FILE, ARCH_FILE) if not (source / f).is_file()]
    if missing:
        raise StylepressError(f"--from {source}: not a checkpoint folder ({missing[0]} is missing)")
    if (kind == "student") != (teacher is not None):
        raise StylepressError("a student is scored against its bundled teacher: give --teacher with --kind student, "
                              "and only then")
    folder = folder or catalog.root()
    dest = folder / name
    for file in (WEIGHTS_FILE, ARCH_FILE):
        write_bytes(dest / file, (source / file).read_bytes())
    G, spec = load_generator(dest)
    macs, params = count(G, spec, resolution)
    val = measure(dest, spec.styles, resolution, val_photos, catalog.checkpoint(teacher, folder) if teacher else None)
    entry = catalog.Entry(
        name=name, kind=kind, description=description, styles=spec.styles, arch=spec.arch, macs=macs,
        params=params, resolution=resolution,
        files={f: sha256(dest / f) for f in (WEIGHTS_FILE, ARCH_FILE)},
        size_bytes=sum((dest / f).stat().st_size for f in (WEIGHTS_FILE, ARCH_FILE)), teacher=teacher,
        config=config, command=command, data=data,
        val=val,
        measured=f"{now()}, {describe()['cpu']}: val portraits {val_photos.name}/ at {resolution}² centre crops")
    manifest = folder / catalog.MANIFEST
    models = json.loads(manifest.read_text())["models"] if manifest.is_file() else []
    models = [e for e in models if e["name"] != name]
    write_json(manifest, {"models": [*models, entry.model_dump(mode="json")]})
    return entry
