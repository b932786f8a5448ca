import pytest
from conftest import run_cli
from PIL import Image

from stylepress import demo
from stylepress.config import load_config


@pytest.mark.slow
def test_demo_serves_the_bundled_teacher_compressed_and_stylizes_the_embedded_photos(tmp_path):
    out = tmp_path / "demo"
    result = run_cli("demo", "--out", out, "--steps", "20")
    assert result.returncode == 0, result.stderr
    samples = out / "student" / "samples.png"
    err = result.stderr.replace("\n", "")
    assert str(samples) in err and str(out / "served" / "grid.png") in err
    assert "the bundled teacher 'portraits'" in err and "served " in err and "gates" in err
    assert sorted(p.name for p in (out / "photos").iterdir()) == ["astronaut.png", "grace_hopper.jpg"]
    assert (out / "export" / "teacher.fp32.onnx").is_file() and (out / "model_repository" / "demo").is_dir()
    for photo in out.glob("photos/*"):
        for style in ("sketch", "oil"):
            assert Image.open(out / "served" / f"{photo.stem}.{style}.png").size == Image.open(photo).size


def test_demo_train_uses_the_small_teacher_config(tmp_path):
    bundled = load_config(demo.prepare(tmp_path / "bundled"))
    trained = load_config(demo.prepare(tmp_path / "trained", train=True))
    assert bundled.model.pretrained == "portraits" and bundled.data.styles == ("sketch", "oil")
    assert trained.model.pretrained is None and trained.data.styles == ("sketch", "cartoon", "oil")
