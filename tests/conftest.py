"""Shared fixtures: real portraits (../shared/data when present, else the embedded demo photos),
tiny configs that train in seconds on 2 CPU cores, and a real tritonserver serving a tiny run."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import textwrap
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest

REPO = Path(__file__).resolve().parents[1]
SHARED = REPO.parent / "shared" / "data"
# Hermetic: caches go under the repository's .cache/ (git-ignored; the Triton runtime is installed
# there once and shared by later runs), never into the user's ~/.cache. Set the variables to override.
for _var, _sub in (("STYLEPRESS_CACHE", "stylepress"), ("XDG_CACHE_HOME", "xdg"), ("MPLCONFIGDIR", "matplotlib")):
    os.environ.setdefault(_var, str(REPO / ".cache" / _sub))

from stylepress.demo import DEMO_PHOTOS  # noqa: E402 (after the cache variables: it imports matplotlib)
from stylepress.models.spec import ArchSpec  # noqa: E402


def pytest_collection_modifyitems(items):
    """Tiers: serving (uses the `served` server or is marked), e2e (marked, or slow), unit (the rest)."""
    for item in items:
        if "served" in item.fixturenames:
            item.add_marker(pytest.mark.serving)
        if item.get_closest_marker("slow"):
            item.add_marker(pytest.mark.e2e)
        if not any(item.get_closest_marker(m) for m in ("serving", "e2e")):
            item.add_marker(pytest.mark.unit)


def raw_png(width: int, height: int, bit_depth: int = 8, pixels: bytes | None = None) -> bytes:
    """An RGB PNG written chunk by chunk, for what Pillow will not write: a header claiming any size,
    16-bit samples. `pixels`: the raw (unfiltered) image data; None: a token of zeros; b"": no IDAT."""
    import struct
    import zlib

    def chunk(kind: bytes, body: bytes) -> bytes:
        return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))
    data = b"\0" * 100 if pixels is None else pixels
    idat = chunk(b"IDAT", zlib.compress(data)) if data else b""
    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", width, height, bit_depth, 2, 0, 0, 0))
            + idat + chunk(b"IEND", b""))


def shared_data() -> Path:
    if not (SHARED / "portraits" / "train").is_dir():
        pytest.skip(f"needs the shared portraits at {SHARED} (absent on a user's fresh clone)")
    return SHARED


@pytest.fixture
def portraits(tmp_path) -> Path:
    """A folder of 6 real portraits: the first of the shared train split, or on a clone without
    ../shared the two embedded demo photos and mirrored copies of them (real faces either way)."""
    from PIL import Image, ImageOps

    folder = tmp_path / "photos"
    folder.mkdir()
    if (SHARED / "portraits" / "train").is_dir():
        for p in sorted((SHARED / "portraits" / "train").glob("*.jpg"))[:6]:
            shutil.copy(p, folder / p.name)
        return folder
    for i, src in enumerate(DEMO_PHOTOS.values()):
        im = Image.open(src).convert("RGB")
        for j, variant in enumerate((im, ImageOps.mirror(im), ImageOps.grayscale(im).convert("RGB"))):
            variant.save(folder / f"demo{i}_{j}.jpg", quality=92)
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


TINY_SPEC = ArchSpec(arch="resnet", styles=("sketch", "oil"), size_multiple=4,
                     kwargs={"ngf": 8, "n_blocks": 1, "norm": "instance", "num_styles": 2})


def tiny_run(folder: Path, serving: str = "") -> tuple[Path, Path]:
    """A run directory whose teacher is a small two-style generator (random weights: export and
    serving must reproduce any network exactly), with a config pointing at the demo photos.
    Returns (config path, run dir)."""
    import torch

    from stylepress.models import build_generator, save_generator

    photos = folder / "photos"
    photos.mkdir(parents=True)
    for name, src in DEMO_PHOTOS.items():
        shutil.copy(src, photos / name)
    torch.manual_seed(0)
    run_dir = folder / "run"
    save_generator(build_generator(TINY_SPEC), TINY_SPEC, run_dir / "teacher")
    config = folder / "tiny.toml"
    config.write_text(textwrap.dedent(f"""\
        name = "tiny"
        [data]
        photos = "{photos}"
        styles = ["sketch", "oil"]
        resolution = 64
        [serving]
        resolution = 128
        model = "teacher"
        """) + serving)
    return config, run_dir


def write_repo(cfg, run_dir: Path, out: Path | None = None) -> Path:
    """The repository for a run without bench figures: selection from the config's pins, then the writer."""
    from stylepress import selection, serving

    selection.run(cfg, run_dir)
    return serving.write_repository(cfg, run_dir, out)


@pytest.fixture(scope="session")
def exported(tmp_path_factory) -> tuple[Path, Path]:
    """The tiny run exported in all three precisions through the real CLI, once per session; tests
    read it and write elsewhere. Returns (config path, run dir)."""
    # A random network quantizes poorly (about 20 dB): a small fallback budget keeps Q/DQ layers in
    # the int8 model, which then misses its target and is recorded so.
    config, run_dir = tiny_run(tmp_path_factory.mktemp("exported"),
                               serving='[export]\nprecisions = ["fp32", "fp16", "int8"]\n[export.int8]\n'
                                       'max_fallback = 2\n')
    result = run_cli("export", config, "--out", run_dir)
    assert result.returncode == 0, result.stderr
    return config, run_dir


def copy_run(config: Path, run_dir: Path, dest: Path) -> tuple[Path, Path]:
    """A private copy of a session fixture's run, for a test that writes into it (selection.json, a
    repository, reports): the shared one stays as the fixture made it."""
    shutil.copytree(run_dir, dest / "run")
    shutil.copy(config, dest / config.name)
    return dest / config.name, dest / "run"


@pytest.fixture
def exported_copy(exported, tmp_path) -> tuple[Path, Path]:
    return copy_run(*exported, tmp_path / "exported")


@dataclass
class Served:
    server: object  # stylepress.serving.Server
    run_dir: Path
    repo: Path
    photos: Path
    session: object  # onnxruntime.InferenceSession
    size: int
    styles: list[str]

    def offline(self, data: bytes, style: str) -> np.ndarray:
        """The same image through the shared pre/post-processing and ONNX Runtime in this process."""
        from stylepress import prepost

        x, box = prepost.letterbox(prepost.decode(data), self.size)
        y = self.session.run(None, {"image": x[None], "style": np.array([self.styles.index(style)])})[0]
        return prepost.unletterbox(y[0], box)


@pytest.fixture(scope="session")
def served(tmp_path_factory) -> Served:
    """The managed CPU Triton runtime (installed once into the cache) serving a tiny exported run on
    free loopback ports, once per test session."""
    import onnxruntime as ort

    from stylepress import export, serving
    from stylepress.config import load_config

    # A long queue delay makes the dynamic batcher group concurrent requests reliably.
    # fp32 only, float layers in f32: the served network must equal the offline one exactly.
    config, run_dir = tiny_run(tmp_path_factory.mktemp("served"), serving="max_queue_delay_us = 200000\n"
                               'precision = "fp32"\n[export]\nprecisions = ["fp32"]\ncpu_float_precision = "f32"\n')
    cfg = load_config(config)
    onnx_path = export.run(cfg, run_dir, show_progress=False)["teacher.fp32"]
    repo = write_repo(cfg, run_dir)
    with serving.local_server(repo, run_dir / "tritonserver.log") as server:
        server.wait_ready()
        yield Served(server, run_dir, repo, config.parent / "photos",
                     ort.InferenceSession(str(onnx_path), providers=["CPUExecutionProvider"]),
                     cfg.serving_resolution, list(cfg.data.styles))
