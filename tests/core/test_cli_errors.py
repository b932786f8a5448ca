"""Every bad input exits with code 2 and one line on stderr, never a traceback."""

import pytest
from conftest import run_cli, write_config

from stylepress.models import ArchSpec, build_generator, save_generator


def assert_one_line_error(result, *fragments):
    assert result.returncode == 2, (result.stdout, result.stderr)
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("stylepress: error: ") and "Traceback" not in result.stderr
    for fragment in fragments:
        assert fragment in lines[0]


@pytest.fixture
def checkpoint(tmp_path):
    spec = ArchSpec(arch="resnet", styles=("sketch",), kwargs={"ngf": 8, "n_blocks": 1, "norm": "instance",
                                                                "num_styles": 1})
    save_generator(build_generator(spec), spec, tmp_path / "ckpt")
    return tmp_path / "ckpt"


def test_missing_config_file(tmp_path):
    assert_one_line_error(run_cli("train", tmp_path / "nope.toml"), "config file not found")


def test_config_that_is_not_toml(tmp_path):
    (tmp_path / "c.toml").write_text("name = \n")
    assert_one_line_error(run_cli("config", "show", tmp_path / "c.toml"), "not valid TOML")


def test_config_with_unknown_key(tmp_path, demo_photos):
    path = write_config(tmp_path, demo_photos, body="bogus = 1\n")
    assert_one_line_error(run_cli("train", path), "tiny.toml", "train.bogus", "unknown key")


def test_config_with_out_of_range_value(tmp_path, demo_photos):
    path = write_config(tmp_path, demo_photos, batch_size=0)
    assert_one_line_error(run_cli("train", path), "train.batch_size", "greater than or equal to 1")


def test_missing_photo_folder(tmp_path):
    path = write_config(tmp_path, tmp_path / "gone")
    assert_one_line_error(run_cli("train", path), "data.photos", "folder not found")


def test_empty_photo_folder(tmp_path):
    (tmp_path / "empty").mkdir()
    path = write_config(tmp_path, tmp_path / "empty")
    assert_one_line_error(run_cli("train", path, "--out", tmp_path / "run"), "no usable photo images")


def test_unknown_style_in_config(tmp_path, demo_photos):
    path = write_config(tmp_path, demo_photos, styles=("sketch", "anime"))
    assert_one_line_error(run_cli("train", path), "data.styles", "'anime'")


def test_resume_without_checkpoint(tmp_path, demo_photos):
    path = write_config(tmp_path, demo_photos)
    assert_one_line_error(run_cli("train", path, "--out", tmp_path / "run", "--resume"), "nothing to resume")


def test_unreadable_image_to_stylize(tmp_path, checkpoint):
    bad = tmp_path / "bad.jpg"
    bad.write_bytes(b"\xff\xd8 truncated")
    assert_one_line_error(run_cli("stylize", "--checkpoint", checkpoint, bad, "-o", tmp_path / "o.png"),
                          "cannot read image", "bad.jpg")


def test_missing_image_to_stylize(tmp_path, checkpoint):
    assert_one_line_error(run_cli("stylize", "--checkpoint", checkpoint, tmp_path / "x.jpg", "-o", tmp_path / "o"),
                          "image not found")


def test_unknown_style_to_stylize(tmp_path, checkpoint, demo_photos):
    result = run_cli("stylize", "--checkpoint", checkpoint, demo_photos / "astronaut.png", "-o", tmp_path / "o",
                     "--style", "oil")
    assert_one_line_error(result, "unknown style 'oil'", "sketch")


def test_bad_checkpoint_folder(tmp_path, demo_photos):
    (tmp_path / "ckpt").mkdir()
    result = run_cli("stylize", "--checkpoint", tmp_path / "ckpt", demo_photos / "astronaut.png", "-o", tmp_path / "o")
    assert_one_line_error(result, "not a stylepress checkpoint", "arch.json")


def test_corrupt_checkpoint_weights(tmp_path, checkpoint, demo_photos):
    (checkpoint / "weights.safetensors").write_bytes(b"\x00" * 16)
    result = run_cli("stylize", "--checkpoint", checkpoint, demo_photos / "astronaut.png", "-o", tmp_path / "o")
    assert_one_line_error(result, "unreadable weights")


def test_tune_mistakes(tmp_path, demo_photos):
    from stylepress import tune
    from stylepress.config import load_config
    from stylepress.errors import StylepressError

    path = write_config(tmp_path, demo_photos, body="[tune.space.train]\nlr = {low = 1e-4}\n")
    assert_one_line_error(run_cli("tune", path), "tune.space.train.lr", "give low and high, or choices")
    path = write_config(tmp_path, demo_photos)
    url = "postgresql://user:s3cret@127.0.0.1:1/study"  # nothing listens on port 1 (or no driver)
    result = run_cli("tune", path, "--out", tmp_path / "run", "--storage", url)
    assert_one_line_error(result, "--storage postgresql://***@127.0.0.1:1/study")
    assert "s3cret" not in result.stderr
    cfg = load_config(path)
    with pytest.raises(StylepressError, match="--stage must be one of train, compress"):
        tune.run(cfg, "export", tmp_path / "run")
    with pytest.raises(StylepressError, match="needs a teacher"):
        tune.run(cfg, "compress", tmp_path / "run")
    compress = ("tune", path, "--stage", "compress", "--out", tmp_path / "run")
    assert_one_line_error(run_cli(*compress, "--pretrained", "nope"), "no pretrained model 'nope'")
    assert_one_line_error(run_cli(*compress, "--pretrained", "portraits", "--teacher", tmp_path),
                          "give --teacher or --pretrained, not both")


def test_help_shows_config_section_names():
    """Help texts name config sections in brackets ([compress]); Rich markup would swallow them."""
    result = run_cli("build", "--help")
    assert result.returncode == 0 and "[compress]" in result.stdout
