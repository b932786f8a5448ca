import logging
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from stylepress.config import BUILTIN_STYLES, DataConfig
from stylepress.data import PortraitData, _augment, _random_jitter, load_folder, read_rgb, split_by_hash, to_unit
from stylepress.errors import StylepressError
from stylepress.metrics import psnr
from stylepress.models.layers import YIQ
from stylepress.styles import apply_style


def test_exif_orientation_is_applied(tmp_path, demo_photos):
    im = Image.open(demo_photos / "astronaut.png").convert("RGB").resize((80, 40))
    exif = Image.Exif()
    exif[0x0112] = 6  # rotate 90° clockwise on display
    im.save(tmp_path / "rotated.jpg", exif=exif)
    assert read_rgb(tmp_path / "rotated.jpg").size == (40, 80)


def test_rgba_and_greyscale_become_rgb(tmp_path):
    Image.new("RGBA", (70, 70), (10, 20, 30, 0)).save(tmp_path / "a.png")
    Image.new("L", (70, 70), 128).save(tmp_path / "g.webp")
    assert {read_rgb(p).mode for p in tmp_path.iterdir()} == {"RGB"}


def test_unreadable_and_too_small_files_are_skipped_with_a_warning(tmp_path, demo_photos, caplog):
    folder = tmp_path / "mixed"
    (folder / "nested").mkdir(parents=True)
    Image.open(demo_photos / "astronaut.png").save(folder / "nested" / "good.png")
    (folder / "broken.jpg").write_bytes(b"not a jpeg")
    Image.new("RGB", (20, 20)).save(folder / "tiny.png")
    (folder / "notes.txt").write_text("ignored: not an image suffix")
    with caplog.at_level(logging.WARNING):
        images = load_folder(folder, 64, 32, "photo")
    assert [p.name for p, _ in images] == ["good.png"]  # found recursively
    assert min(images[0][1].shape[:2]) == 64
    assert "broken.jpg" in caplog.text and "tiny.png" in caplog.text


def test_an_empty_folder_is_an_error(tmp_path):
    with pytest.raises(StylepressError, match="no usable photo images"):
        load_folder(tmp_path, 64, 32, "photo")


def test_val_split_is_a_deterministic_tenth_by_content_hash(portraits, tmp_path):
    paths = sorted(portraits.glob("*.jpg"))
    more = []
    for i in range(14):  # 20 distinct files
        p = tmp_path / f"copy{i}.jpg"
        p.write_bytes(paths[i % len(paths)].read_bytes() + bytes([i]))
        more.append(p)
    all_paths = paths + more
    train, val = split_by_hash(all_paths)
    assert len(val) == 2 and train.isdisjoint(val) and train | val == set(all_paths)
    assert split_by_hash(list(reversed(all_paths))) == (train, val)


@pytest.mark.parametrize("style", BUILTIN_STYLES)
def test_builtin_styles_transform_a_real_portrait(portraits, style):
    rgb = np.asarray(read_rgb(next(portraits.glob("*.jpg"))).resize((128, 128)))
    out = apply_style(style, rgb)
    assert out.shape == rgb.shape and out.dtype == np.uint8
    assert np.abs(out.astype(int) - rgb.astype(int)).mean() > 5  # plainly not the photo


def _data(photos: Path, styles=("sketch",), val=None) -> PortraitData:
    cfg = DataConfig.model_validate({"photos": photos, "styles": styles, "resolution": 64, "val_photos": val})
    return PortraitData(cfg, crop=32)


def test_batches_are_reproducible_from_the_generator_state(portraits):
    data = _data(portraits)
    gen = torch.Generator().manual_seed(3)
    state = gen.get_state()
    a = data.sample(0, 3, gen)
    gen.set_state(state)
    b = data.sample(0, 3, gen)
    assert torch.equal(a.photo, b.photo) and torch.equal(a.real, b.real)
    assert a.photo.shape == a.real.shape == (3, 3, 32, 32) and a.paired
    assert a.photo.min() >= -1 and a.photo.max() <= 1
    assert not torch.equal(a.photo, a.real)


def test_paired_targets_stay_aligned_with_their_crops(portraits):
    """The target of a crop is (up to resampling) the style filter of that crop."""
    data = _data(portraits)
    batch = data.sample(0, 4, torch.Generator().manual_seed(0))
    for photo, target in zip(batch.photo, batch.real, strict=True):
        # sketch is dark where the photo has edges: the two correlate negatively with shuffled pairs
        edges = (photo[:, 1:, :] - photo[:, :-1, :]).abs().mean(0)
        dark = (1 - target[0, 1:, :])
        aligned = torch.corrcoef(torch.stack([edges.flatten(), dark.flatten()]))[0, 1]
        shifted = torch.corrcoef(torch.stack([edges.flatten(), dark.roll(8, 1).flatten()]))[0, 1]
        assert aligned > shifted


def _psnr(a: np.ndarray, b: np.ndarray) -> float:
    """stylepress.metrics.psnr of two RGB uint8 images."""
    return float(psnr(*(to_unit(torch.from_numpy(x).permute(2, 0, 1))[None] for x in (a, b)))[0])


@pytest.mark.parametrize("style", BUILTIN_STYLES)
def test_colour_jitter_keeps_each_pair_consistent(portraits, style):
    """Filtering a jittered photo gives the jittered target: the colour change keeps luma, which the
    filters read. (Brightness and contrast jitter, which this replaced, broke sketch pairs to 21 dB.)"""
    gen = torch.Generator().manual_seed(1)
    for path in sorted(portraits.iterdir())[:3]:
        rgb = np.asarray(read_rgb(path).resize((256, 256)))
        for _ in range(3):
            jitter = _random_jitter(gen)

            def aug(a: np.ndarray, jitter=jitter) -> np.ndarray:
                x = _augment(torch.from_numpy(a.copy()).permute(2, 0, 1), (0, 0, 256, 256), False, jitter, 256)
                return ((x + 1) * 127.5).round().byte().permute(1, 2, 0).numpy()

            target = aug(apply_style(style, rgb))
            assert _psnr(apply_style(style, aug(rgb)), target) > 25, (style, path.name)
            if style == "sketch":
                assert np.abs(target.astype(int) - target[..., :1]).max() <= 1  # still grey pencil


def test_colour_jitter_shows_the_generator_every_hue(portraits):
    """Half the samples turn the hue anywhere on the circle and saturation varies 0.5-2x: a portrait
    set's grey backdrops and white shirts alone never show saturated colours."""
    data = _data(portraits)
    gen = torch.Generator().manual_seed(0)
    photos = torch.cat([data.sample(0, 8, gen).photo for _ in range(8)])  # 64 crops
    chroma = torch.einsum("ij,njhw->nihw", YIQ, (photos + 1) / 2)[:, 1:].mean((2, 3))
    hue = torch.atan2(chroma[:, 1], chroma[:, 0])
    assert torch.histc(hue, bins=4, min=-np.pi, max=np.pi).min() >= 4  # every quadrant of the circle


def test_style_folders_are_unpaired_domains(portraits, demo_photos):
    data = _data(portraits, styles=("sketch", str(demo_photos)), val=portraits)
    assert data.style_names == ["sketch", "demo_photos"]
    batch = data.sample(1, 2, torch.Generator().manual_seed(0))
    assert not batch.paired and batch.real.shape == (2, 3, 32, 32)
    assert 1 not in data.val_targets
