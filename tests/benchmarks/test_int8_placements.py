"""The INT8 placement benchmark runs on any style count (it assumed two)."""

import shutil
import textwrap

import pytest
import torch
from conftest import DEMO_PHOTOS, TINY_SPEC

from stylepress import export
from stylepress.benchmarks import int8_placements
from stylepress.config import load_config
from stylepress.models import build_generator, save_generator

# Two static quantizations and a bench: the e2e tier.
pytestmark = pytest.mark.e2e


def test_a_single_style_model_is_measured(tmp_path):
    photos = tmp_path / "photos"
    photos.mkdir()
    for name, src in DEMO_PHOTOS.items():
        shutil.copy(src, photos / name)
    spec = TINY_SPEC.model_copy(update={"styles": ("sketch",), "kwargs": {**TINY_SPEC.kwargs, "num_styles": 1}})
    torch.manual_seed(0)
    save_generator(build_generator(spec), spec, tmp_path / "run" / "teacher")
    config = tmp_path / "one.toml"
    config.write_text(textwrap.dedent(f"""\
        name = "one"
        [data]
        photos = "{photos}"
        styles = ["sketch"]
        resolution = 64
        [serving]
        resolution = 64
        [export]
        precisions = ["fp32"]
        """))
    cfg = load_config(config)
    export.run(cfg, tmp_path / "run", show_progress=False)
    rows = int8_placements.run(cfg, tmp_path / "run", "teacher", repeats=2)
    assert {r["candidate"] for r in rows} == {"fp32", "ort-qdq-default", "ort-qoperator"}
    assert all(r["p50_ms"] > 0 for r in rows)
    assert all(r["psnr_db"] >= 99 for r in rows if r["candidate"] == "fp32")  # fp32 against itself
