"""The pretrained models shipped inside the package (`stylepress/pretrained/`): a manifest
(`models.json`) and one checkpoint folder per model (`weights.safetensors` + `arch.json`, the same
safe format as any checkpoint).

Every file's sha256 is in the manifest and is checked each time a model is used: a changed file is
refused, never loaded.
"""

from __future__ import annotations

import json
from importlib.resources import files
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict

from .errors import StylepressError
from .fsutil import sha256

MANIFEST = "models.json"


def root() -> Path:
    return Path(str(files("stylepress").joinpath("pretrained")))


class Entry(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    name: str
    kind: Literal["teacher", "student"]
    description: str
    styles: tuple[str, ...]
    arch: str
    macs: int  # at `resolution`², torch-pruning's counter
    params: int
    resolution: int
    files: dict[str, str]  # file name -> sha256
    size_bytes: int
    teacher: str | None = None  # a student's teacher (a bundled name)
    config: str  # the config it was trained with, as a path in the repository
    command: str  # the command that produced it
    data: str  # training data, its licence and attribution
    val: dict[str, dict[str, float]]  # style -> {"psnr", "ssim"}: against the style targets (teacher) or
    #                                   the teacher's outputs (student), val portraits at `resolution`²
    measured: str  # when and how `val` was measured


def entries(folder: Path | None = None) -> dict[str, Entry]:
    folder = folder or root()
    path = folder / MANIFEST
    if not path.is_file():
        return {}
    return {e["name"]: Entry.model_validate(e) for e in json.loads(path.read_text())["models"]}


def entry(name: str, folder: Path | None = None) -> Entry:
    known = entries(folder)
    if name not in known:
        raise StylepressError(f"no pretrained model {name!r} (bundled: {', '.join(known) or 'none'}; "
                              "`stylepress models` lists them)")
    return known[name]


def checkpoint(name: str, folder: Path | None = None) -> Path:
    """The bundled model's checkpoint folder, after checking every file against the manifest."""
    folder = folder or root()
    e = entry(name, folder)
    model_dir = folder / name
    for file, digest in e.files.items():
        path = model_dir / file
        if not path.is_file():
            raise StylepressError(f"pretrained model {name!r}: {path} is missing (reinstall stylepress)")
        if sha256(path) != digest:
            raise StylepressError(f"pretrained model {name!r}: {path} does not match its sha256 in {MANIFEST}; "
                                  "refusing to load a changed file (reinstall stylepress)")
    return model_dir
