"""A trained teacher in a published family's architecture: one style of a stylepress teacher distilled
into a fresh family generator, whose weights `stylepress import` then reads with strict keys."""

import subprocess
import sys

import pytest
import torch
from conftest import run_cli, tiny_run

from stylepress.benchmarks.family_teachers import OneStyle
from stylepress.models import load_generator

# A distillation run into a published family: the e2e tier.
pytestmark = pytest.mark.e2e


def _suite(*args):
    return subprocess.run([sys.executable, "-m", "stylepress.benchmarks", "family-teacher", *map(str, args)],
                          capture_output=True, text=True, timeout=600)


def test_family_teacher_distils_one_style_and_imports_with_strict_keys(tmp_path):
    config, run_dir = tiny_run(tmp_path)
    steps = ["--set", "compress.distill_steps=3", "--set", "compress.val_every=3", "--set", "compress.batch_size=2",
             "--set", "train.crop=32"]
    result = _suite(config, "--out", run_dir, "--arch", "animegan2", "--style", "oil", *steps)
    assert result.returncode == 0, result.stderr
    family = run_dir / "family" / "animegan2-oil"
    assert "PSNR to the teacher" in result.stdout and "at step 3" in result.stdout
    distilled, spec = load_generator(family)
    assert spec.arch == "animegan2" and spec.styles == ("oil",)

    records = [line for line in (family / "log.jsonl").read_text().splitlines() if '"kind": "val"' in line]
    assert len(records) == 1 and '"val_psnr_oil"' in records[0]

    imported = run_cli("import", family / "weights.safetensors", "--arch", "animegan2", "--style", "oil",
                       "--out", tmp_path / "imported")
    assert imported.returncode == 0, imported.stderr
    reloaded, _ = load_generator(tmp_path / "imported" / "teacher")
    x = torch.rand(1, 3, 32, 32) * 2 - 1
    with torch.no_grad():
        assert torch.equal(reloaded(x), distilled.eval()(x))

    again = _suite(config, "--out", run_dir, "--arch", "animegan2", "--style", "oil", *steps)
    assert again.returncode == 2 and "--resume" in again.stderr and "Traceback" not in again.stderr
    wrong = _suite(config, "--out", run_dir, "--arch", "animegan2", "--style", "anime", *steps)
    assert wrong.returncode == 2 and "the teacher's styles are" in wrong.stderr


def test_one_style_answers_the_chosen_style_whatever_it_is_asked():
    class StyleEcho(torch.nn.Module):
        def forward(self, image, style):
            return image + style.view(-1, 1, 1, 1)

    x = torch.zeros(2, 3, 4, 4)
    assert torch.equal(OneStyle(StyleEcho(), 1)(x, torch.tensor([0, 0])), torch.ones(2, 3, 4, 4))
