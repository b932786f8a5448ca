import pytest
from conftest import run_cli
from PIL import Image

from stylepress.models import ArchSpec, build_generator, save_generator


@pytest.fixture
def checkpoint(tmp_path):
    spec = ArchSpec(arch="resnet", styles=("sketch", "oil"), kwargs={"ngf": 8, "n_blocks": 1, "norm": "instance",
                                                                      "num_styles": 2})
    save_generator(build_generator(spec), spec, tmp_path / "teacher")
    return tmp_path / "teacher"


def test_one_image_to_a_file_keeps_any_size(tmp_path, checkpoint, demo_photos):
    src = tmp_path / "odd.jpg"
    Image.open(demo_photos / "grace_hopper.jpg").convert("RGB").resize((53, 38)).save(src)
    out = tmp_path / "styled.png"
    result = run_cli("stylize", "--checkpoint", checkpoint, src, "-o", out, "--style", "oil")
    assert result.returncode == 0, result.stderr
    assert Image.open(out).size == (53, 38)


def test_several_images_go_to_a_created_folder_as_png(tmp_path, checkpoint, demo_photos):
    out = tmp_path / "styled"
    images = sorted(demo_photos.iterdir())
    result = run_cli("stylize", "--checkpoint", checkpoint, *images, "-o", out)
    assert result.returncode == 0, result.stderr
    assert sorted(p.name for p in out.iterdir()) == ["astronaut.png", "grace_hopper.png"]
    for src in images:
        assert Image.open(out / f"{src.stem}.png").size == Image.open(src).size


def test_one_image_to_a_name_without_image_extension_is_a_folder(tmp_path, checkpoint, demo_photos):
    result = run_cli("stylize", "--checkpoint", checkpoint, demo_photos / "astronaut.png", "-o", tmp_path / "o")
    assert result.returncode == 0, result.stderr
    assert (tmp_path / "o" / "astronaut.png").is_file()
