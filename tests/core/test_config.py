from pathlib import Path

import pytest
from conftest import run_cli, write_config

from stylepress.config import load_config
from stylepress.errors import StylepressError


def test_relative_paths_resolve_against_the_config_folder_and_defaults_fill_in(tmp_path, demo_photos):
    (tmp_path / "cfg").mkdir()
    path = tmp_path / "cfg" / "run.toml"
    path.write_text('[data]\nphotos = "../demo_photos"\n')
    cfg = load_config(path)
    assert cfg.data.photos == demo_photos.resolve()
    assert cfg.name == "run" and cfg.model.ngf == 64 and cfg.model.n_blocks == 9
    assert cfg.train.lambda_style == 10.0 and cfg.data.styles == ("sketch",)
    assert cfg.crop == cfg.data.resolution == 256


@pytest.mark.parametrize(("body", "key", "why"), [
    ("[train]\nstepz = 3\n", "train.stepz", "unknown key"),
    ('[train]\nsteps = "10"\n', "train.steps", "valid integer"),
    ("[train]\nsteps = true\n", "train.steps", "valid integer"),
    ("[train]\nlr = -1.0\n", "train.lr", "greater than 0"),
    ("[data]\nresolution = 250\n", "data.resolution", "multiple of 4"),
    ('[model]\nnorm = "layer"\n', "model.norm", "instance"),
    ('[train]\ndevice = "tpu"\n', "train.device", "pattern"),
    ('[data]\nstyles = ["sketch", "pastel"]\n', "data.styles", "neither a built-in style"),
    ('[data]\nval_photos = "nowhere"\n', "data.val_photos", "folder not found"),
])
def test_bad_values_are_rejected_naming_file_and_key(tmp_path, demo_photos, body, key, why):
    path = tmp_path / "bad.toml"
    text = f'[data]\nphotos = "{demo_photos}"\n'
    # Merge the extra lines into an existing [data] table rather than repeating the header.
    text = text + body.removeprefix("[data]\n") if body.startswith("[data]") else text + body
    path.write_text(text)
    with pytest.raises(StylepressError) as info:
        load_config(path)
    msg = str(info.value)
    assert msg.startswith(f"{path}: {key}:") and why in msg and "\n" not in msg


def test_missing_photos_folder_is_rejected(tmp_path):
    path = tmp_path / "c.toml"
    path.write_text('[data]\nphotos = "missing"\n')
    with pytest.raises(StylepressError, match=r"data.photos: folder not found"):
        load_config(path)


def test_config_show_prints_the_resolved_config_which_loads_back(tmp_path, demo_photos):
    cfg_path = write_config(tmp_path, demo_photos)
    result = run_cli("config", "show", cfg_path)
    assert result.returncode == 0, result.stderr
    assert "[train]" in result.stdout and "lambda_content = 1.0" in result.stdout
    shown = tmp_path / "shown.toml"
    shown.write_text(result.stdout)
    assert load_config(shown) == load_config(cfg_path)


def test_style_folders_resolve_to_absolute_paths(tmp_path, demo_photos):
    path = tmp_path / "c.toml"
    path.write_text(f'[data]\nphotos = "{demo_photos}"\nstyles = ["oil", "demo_photos"]\n')
    assert load_config(path).data.styles == ("oil", str(Path(demo_photos).resolve()))


def test_the_readme_reference_config_is_valid():
    from conftest import shared_data

    shared_data()
    cfg = load_config(Path(__file__).resolve().parents[2] / "configs" / "portraits.toml")
    assert cfg.data.styles == ("sketch", "oil") and cfg.data.resolution == 256


def test_set_overrides_apply_before_validation(tmp_path, demo_photos):
    path = tmp_path / "c.toml"
    path.write_text(f'[data]\nphotos = "{demo_photos}"\n')
    cfg = load_config(path, ["compress.lambda_feat=0", "train.steps=7", 'model.norm="batch"', "compress.importance=l2"])
    c = cfg.compress
    assert (c.lambda_feat, cfg.train.steps, cfg.model.norm, c.importance) == (0.0, 7, "batch", "l2")
    with pytest.raises(StylepressError, match=r"train.steps: .*greater than or equal to 1"):
        load_config(path, ["train.steps=0"])
    with pytest.raises(StylepressError, match=r"--set 'steps': write section.key=value"):
        load_config(path, ["steps"])
