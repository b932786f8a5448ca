"""Shared fixtures: real portraits (../shared/data when present, else the embedded demo photos)
and tiny configs that train in seconds on 2 CPU cores."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from stylepress.demo import DEMO_PHOTOS

SHARED = Path(__file__).resolve().parents[1].parent / "shared" / "data"


def shared_data() -> Path:
    if not (SHARED / "portraits" / "train").is_dir():
        pytest.skip(f"needs the shared portraits at {SHARED} (absent on a user's fresh clone)")
    return SHARED


@pytest.fixture
def portraits(tmp_path) -> Path:
    """A folder of 6 real portraits (the first of the shared train split)."""
    src = sorted((shared_data() / "portraits" / "train").glob("*.jpg"))[:6]
    folder = tmp_path / "photos"
    folder.mkdir()
    for p in src:
        shutil.copy(p, folder / p.name)
    return folder


@pytest.fixture
def demo_photos(tmp_path) -> Path:
    """The embedded demo photos: real portraits available on any clone."""
    folder = tmp_path / "demo_photos"
    folder.mkdir()
    for name, src in DEMO_PHOTOS.items():
        shutil.copy(src, folder / name)
    return folder


def write_config(folder: Path, photos: Path, body: str = "", styles=("sketch",), **train) -> Path:
    """A tiny run config: 64 px, ngf 8, 2 blocks; `train` overrides [train] keys."""
    settings = dict(steps=4, batch_size=2, crop=32, val_every=2, checkpoint_every=2, log_every=1)
    settings.update(train)
    lines = "\n".join(f"{k} = {v!r}".replace("'", '"') for k, v in settings.items())
    text = textwrap.dedent(f"""\
        name = "tiny"
        seed = 0
        [data]
        photos = "{photos}"
        styles = [{", ".join(f'"{s}"' for s in styles)}]
        resolution = 64
        min_size = 32
        [model]
        ngf = 8
        n_blocks = 2
        ndf = 8
        d_layers = 2
        [train]
        """) + lines + "\n" + body
    path = folder / "tiny.toml"
    path.write_text(text)
    return path


def run_cli(*args, cwd=None, timeout=600, **kw) -> subprocess.CompletedProcess:
    env = {**os.environ, "COLUMNS": "200"}
    return subprocess.run([sys.executable, "-m", "stylepress", *map(str, args)], capture_output=True,
                          text=True, cwd=cwd, timeout=timeout, env=env, **kw)
