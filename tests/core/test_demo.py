from conftest import run_cli
from PIL import Image


def test_demo_trains_on_the_embedded_photos_and_prints_where_samples_are(tmp_path):
    out = tmp_path / "demo"
    result = run_cli("demo", "--out", out, "--steps", "3")
    assert result.returncode == 0, result.stderr
    samples = out / "teacher" / "samples.png"
    assert str(samples) in result.stderr.replace("\n", "")
    w, h = Image.open(samples).size
    assert w > h  # input | sketch | cartoon | oil
    assert sorted(p.name for p in (out / "photos").iterdir()) == ["astronaut.png", "grace_hopper.jpg"]
