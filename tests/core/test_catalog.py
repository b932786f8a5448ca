"""The bundled pretrained models: a manifest whose sha256 every use checks, and the reference suite."""

import json
import subprocess
import sys

import pytest
import torch
from conftest import TINY_SPEC, run_cli, shared_data

from stylepress import catalog
from stylepress.benchmarks import reference
from stylepress.errors import StylepressError
from stylepress.models import build_generator, load_generator, save_generator


@pytest.fixture
def tiny_catalog(tmp_path, demo_photos):
    torch.manual_seed(0)
    save_generator(build_generator(TINY_SPEC), TINY_SPEC, tmp_path / "trained")
    folder = tmp_path / "pretrained"
    reference.add("tiny", tmp_path / "trained", "teacher", "a test model", "tiny.toml", "stylepress train tiny.toml",
                  "the demo photos", demo_photos, 64, folder=folder)
    return folder


def test_a_bundled_model_is_loaded_only_while_its_files_match_the_manifest(tiny_catalog):
    e = catalog.entry("tiny", tiny_catalog)
    assert e.styles == ("sketch", "oil") and e.macs > 0 and set(e.val) == {"sketch", "oil"}
    model_dir = catalog.checkpoint("tiny", tiny_catalog)
    load_generator(model_dir)
    weights = model_dir / "weights.safetensors"
    data = bytearray(weights.read_bytes())
    data[-1] ^= 1  # one bit of one weight
    weights.write_bytes(bytes(data))
    with pytest.raises(StylepressError, match="does not match its sha256"):
        catalog.checkpoint("tiny", tiny_catalog)
    with pytest.raises(StylepressError, match="no pretrained model 'nope'"):
        catalog.checkpoint("nope", tiny_catalog)


def test_every_shipped_model_matches_its_manifest_and_is_listed():
    shipped = catalog.entries()
    assert shipped, "no bundled models"
    for name, e in shipped.items():
        net, spec = load_generator(catalog.checkpoint(name))
        assert spec.styles == e.styles and sum(p.numel() for p in net.parameters()) == e.params
        assert e.teacher is None or catalog.entries()[e.teacher].styles == e.styles
    result = run_cli("models")
    assert result.returncode == 0 and all(name in result.stderr + result.stdout for name in shipped)
    name = next(iter(shipped))
    shown = run_cli("models", name)
    assert shown.returncode == 0 and json.loads(shown.stdout)["files"] == shipped[name].files


@pytest.mark.e2e
def test_the_reference_suite_reproduces_the_manifest_figures(tmp_path):
    shared_data()  # skips with the reason where ../shared/data is absent
    result = subprocess.run([sys.executable, "-m", "stylepress.benchmarks", "reference", "--val-photos",
                             str(shared_data() / "portraits" / "val"), "--out", str(tmp_path)],
                            capture_output=True, text=True, timeout=900)
    assert result.returncode == 0, result.stderr
    rows = json.loads((tmp_path / "reference.json").read_text())["rows"]
    assert rows and all(r["reproduced"] for r in rows), rows


@pytest.mark.e2e
def test_the_wheel_carries_the_bundled_models(tmp_path):
    import zipfile
    from pathlib import Path

    root = Path(__file__).resolve().parents[2]
    result = subprocess.run([sys.executable, "-m", "pip", "wheel", str(root), "--no-deps", "--no-build-isolation",
                             "-q", "-w", str(tmp_path)], capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr
    (wheel,) = tmp_path.glob("stylepress-*.whl")
    names = set(zipfile.ZipFile(wheel).namelist())
    for name, e in catalog.entries().items():
        assert {f"stylepress/pretrained/{name}/{f}" for f in e.files} <= names
    assert "stylepress/pretrained/models.json" in names
