import pytest
from conftest import run_cli
from PIL import Image


@pytest.mark.slow
def test_demo_trains_exports_serves_and_stylizes_the_embedded_photos(tmp_path):
    out = tmp_path / "demo"
    result = run_cli("demo", "--out", out, "--steps", "3")
    assert result.returncode == 0, result.stderr
    samples = out / "teacher" / "samples.png"
    err = result.stderr.replace("\n", "")
    assert str(samples) in err and str(out / "served" / "grid.png") in err
    w, h = Image.open(samples).size
    assert w > h  # input | sketch | cartoon | oil
    assert sorted(p.name for p in (out / "photos").iterdir()) == ["astronaut.png", "grace_hopper.jpg"]
    assert (out / "export" / "teacher.fp32.onnx").is_file() and (out / "model_repository" / "demo").is_dir()
    for photo in out.glob("photos/*"):
        for style in ("sketch", "cartoon", "oil"):
            assert Image.open(out / "served" / f"{photo.stem}.{style}.png").size == Image.open(photo).size
