import json

import pytest
import torch
from torch import nn

from stylepress.errors import StylepressError
from stylepress.models import ArchSpec, build_generator, load_generator, save_generator
from stylepress.models.discriminator import PatchDiscriminator
from stylepress.models.generator import ResnetGenerator


def _spec(**kw):
    kwargs = {"ngf": 8, "n_blocks": 2, "norm": "instance", "num_styles": 1, **kw}
    return ArchSpec(arch="resnet", kwargs=kwargs, styles=("s",) * kwargs["num_styles"], size_multiple=4)


def test_default_generator_has_cyclegan_resnet_9blocks_parameter_count():
    model = ResnetGenerator(ngf=64, n_blocks=9, norm="instance")
    assert sum(p.numel() for p in model.parameters()) == 11_378_179


@pytest.mark.parametrize("norm", ["instance", "batch", "none"])
@pytest.mark.parametrize("size", [(64, 64), (48, 80)])
def test_generator_keeps_shape_and_range(norm, size):
    model = ResnetGenerator(ngf=8, n_blocks=2, norm=norm).eval()
    x = torch.rand(2, 3, *size) * 2 - 1
    y = model(x)
    assert y.shape == x.shape and y.min() >= -1 and y.max() <= 1


def test_activations_are_out_of_place():
    model = ResnetGenerator(ngf=8, n_blocks=2)
    assert not any(getattr(m, "inplace", False) for m in model.modules())


def test_multi_style_generator_needs_a_style_and_styles_differ():
    torch.manual_seed(0)
    model = ResnetGenerator(ngf=8, n_blocks=1, num_styles=3).eval()
    with torch.no_grad():  # give each style its own affine parameters
        for m in model.modules():
            if hasattr(m, "weight") and getattr(m, "num_styles", 1) > 1:
                m.weight.normal_(1, 0.5)
    x = torch.rand(2, 3, 32, 32) * 2 - 1
    with pytest.raises(ValueError, match="style"):
        model(x)
    a, b = model(x, torch.tensor([0, 0])), model(x, torch.tensor([1, 2]))
    assert not torch.allclose(a, b)
    # per-sample styles; batch 1 and 2 take different conv kernels (1.3e-6 apart with torch 2.13)
    assert torch.allclose(model(x[:1], torch.tensor([1])), b[:1], atol=1e-5)


def test_discriminator_picks_each_samples_style_head_and_returns_features():
    disc = PatchDiscriminator(ndf=8, n_layers=3, num_styles=2, spectral=True).eval()  # fixed SN weights
    x = torch.rand(2, 3, 64, 64)
    logits, feats = disc(x, torch.tensor([0, 1]))
    assert logits.shape[:2] == (2, 1) and len(feats) == 4
    full = disc.head(feats[-1])
    assert torch.allclose(logits[0, 0], full[0, 0]) and torch.allclose(logits[1, 0], full[1, 1])
    assert any("parametrizations" in n for n, _ in disc.named_parameters())


def test_save_and_load_roundtrip_through_safetensors(tmp_path):
    model = build_generator(_spec(num_styles=2))
    save_generator(model, _spec(num_styles=2), tmp_path)
    loaded, spec = load_generator(tmp_path)
    x = torch.rand(1, 3, 32, 32)
    s = torch.tensor([1])
    assert torch.equal(model.eval()(x, s), loaded(x, s)) and spec.kwargs["num_styles"] == 2
    assert not any(p.suffix in {".pt", ".pth", ".pkl"} for p in tmp_path.iterdir())


def test_bad_checkpoint_folders_give_one_line_errors(tmp_path):
    with pytest.raises(StylepressError, match="arch.json is missing"):
        load_generator(tmp_path)
    save_generator(build_generator(_spec()), _spec(), tmp_path)
    (tmp_path / "arch.json").write_text(_spec(ngf=16).model_dump_json())
    with pytest.raises(StylepressError, match="does not match") as info:
        load_generator(tmp_path)
    assert "\n" not in str(info.value)
    spec = _spec().model_dump()
    for text, message in (("{", "not valid JSON"),
                          (json.dumps({**spec, "extra": 1}), "invalid architecture spec \\(extra"),
                          (json.dumps({**spec, "styles": []}), "invalid architecture spec \\(styles")):
        (tmp_path / "arch.json").write_text(text)
        with pytest.raises(StylepressError, match=message) as info:
            load_generator(tmp_path)
        assert "\n" not in str(info.value)
    (tmp_path / "arch.json").write_text(_spec().model_dump_json())
    (tmp_path / "weights.safetensors").write_bytes(b"garbage")
    with pytest.raises(StylepressError, match="unreadable weights"):
        load_generator(tmp_path)


def test_norm_layers_match_cyclegan_for_one_style():
    model = ResnetGenerator(ngf=8, n_blocks=1, norm="batch")
    norms = [m.norm for m in model.modules() if hasattr(m, "num_styles") and isinstance(m, nn.Module)
             and hasattr(m, "norm")]
    assert norms and all(isinstance(n, nn.BatchNorm2d) and n.affine for n in norms)


def test_saved_weights_are_ordinary_readable_files(tmp_path):
    import stat

    from stylepress.models import save_weights

    save_weights(torch.nn.Linear(2, 2), tmp_path / "w.safetensors")
    assert stat.S_IMODE((tmp_path / "w.safetensors").stat().st_mode) == 0o644


def test_colour_skip_starts_as_the_photo_and_can_drop_its_colour():
    torch.manual_seed(0)
    plain = ResnetGenerator(ngf=8, n_blocks=1, num_styles=2, residual=True).eval()
    skip = ResnetGenerator(ngf=8, n_blocks=1, num_styles=2, residual=True, colour_skip=True).eval()
    missing, _ = skip.load_state_dict(plain.state_dict(), strict=False)
    assert sorted(missing) == ["skip.bias", "skip.weight"]
    x, style = torch.rand(2, 3, 32, 32) * 2 - 1, torch.tensor([0, 1])
    assert torch.allclose(skip(x, style), plain(x, style), atol=1e-5)  # rows 1 and 0: the photo itself
    with torch.no_grad():
        skip.skip.weight[0, 1:] = 0  # style 0: no chroma
    grey = skip.skip(x, style)
    assert (grey[0] - grey[0, :1]).abs().max() < 1e-5  # R = G = B
    assert torch.allclose(grey[1], x[1], atol=1e-5)  # style 1 untouched


def test_detail_skip_starts_as_the_photo_and_can_drop_its_fine_detail():
    """With detail rows the skip passes a blur and the photo's detail separately: a style whose detail
    rows are 0 gets a smooth photo (oil's paint), which a plain colour skip cannot give."""
    torch.manual_seed(0)
    skip = ResnetGenerator(ngf=8, n_blocks=1, num_styles=2, residual=True, colour_skip=True, detail_skip=True).skip
    x, style = torch.rand(2, 3, 32, 32) * 2 - 1, torch.tensor([0, 1])
    assert skip.weight.shape == (2, 6) and torch.allclose(skip(x, style), x, atol=1e-5)
    with torch.no_grad():
        skip.weight[0, 3:] = 0  # style 0: no fine detail
    out = skip(x, style)
    roughness = [(img[:, 1:] - img[:, :-1]).abs().mean().item() for img in (x[0], out[0])]
    assert roughness[1] < roughness[0] / 3  # the noise is smoothed away
    assert (out[0].mean((1, 2)) - x[0].mean((1, 2))).abs().max() < 0.02  # the colours stay
    assert torch.allclose(out[1], x[1], atol=1e-5)  # style 1 untouched


def test_detail_skip_needs_the_colour_skip():
    from pydantic import ValidationError

    from stylepress.config import ModelConfig

    with pytest.raises(ValidationError, match="needs model.colour_skip"):
        ModelConfig(residual=True, detail_skip=True)


def test_colour_skip_rows_grow_with_added_styles_and_survive_a_save(tmp_path):
    from stylepress.models.styled import add_styles

    spec = _spec(num_styles=2, residual=True, colour_skip=True)
    model = build_generator(spec)
    with torch.no_grad():
        model.skip.weight[1, 1:] = 0
    model, spec = add_styles(model, spec, ("cartoon",))
    assert model.skip.weight.shape == (3, 3) and model.skip.weight[1, 1] == 0 and model.skip.weight[2, 1] == 0.5
    save_generator(model, spec, tmp_path / "g")
    loaded, loaded_spec = load_generator(tmp_path / "g")
    assert loaded_spec.kwargs["colour_skip"] and torch.equal(loaded.skip.weight, model.skip.weight)


def test_colour_skip_needs_the_residual_output():
    from pydantic import ValidationError

    from stylepress.config import ModelConfig

    with pytest.raises(ValidationError, match="needs model.residual"):
        ModelConfig(colour_skip=True)
