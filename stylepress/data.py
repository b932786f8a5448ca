"""Portrait and style datasets: loading, the val split, augmentation, built-in style targets.

Everything is held in memory as uint8 tensors at the working scale (short side = resolution),
so a training batch is a few crops and resizes, drawn from the trainer's own torch.Generator:
that makes `--resume` exact without DataLoader worker state.
"""

from __future__ import annotations

import hashlib
import logging
import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image, ImageOps, UnidentifiedImageError

from .config import BUILTIN_STYLES, DataConfig
from .errors import StylepressError
from .models.layers import YIQ, YIQ_INV
from .styles import apply_style

log = logging.getLogger(__name__)
IMAGE_SUFFIXES = {".jpg", ".jpeg", ".png", ".webp"}


def find_images(folder: Path) -> list[Path]:
    return sorted(p for p in Path(folder).rglob("*") if p.suffix.lower() in IMAGE_SUFFIXES and p.is_file())


def val_image_paths(cfg: DataConfig) -> list[Path]:
    """The held-out portraits: `val_photos`, else the hash-selected share of `photos`."""
    if cfg.val_photos is not None:
        return find_images(cfg.val_photos)
    return sorted(split_by_hash(find_images(cfg.photos))[1])


def read_rgb(path: Path) -> Image.Image:
    """Decode an image with EXIF orientation applied, as RGB; one-line error if it can't be."""
    try:
        with Image.open(path) as im:
            im = ImageOps.exif_transpose(im)
            return im.convert("RGB")
    except (UnidentifiedImageError, OSError, Image.DecompressionBombError, SyntaxError, ValueError) as exc:
        raise StylepressError(f"cannot read image {path}: {exc}") from None


def resize_short_side(im: Image.Image, size: int) -> Image.Image:
    w, h = im.size
    scale = size / min(w, h)
    return im.resize((max(size, round(w * scale)), max(size, round(h * scale))), Image.BICUBIC)


def style_name(style: str) -> str:
    """Built-in styles keep their name; a style folder is named after the folder."""
    return style if style in BUILTIN_STYLES else Path(style).name


def load_folder(folder: Path, size: int, min_size: int, what: str) -> list[tuple[Path, np.ndarray]]:
    """Load every image in `folder` at short side `size`; skip unreadable/small ones with a warning."""
    images = []
    for path in find_images(folder):
        try:
            im = read_rgb(path)
        except StylepressError as exc:
            log.warning("skipped: %s", exc)
            continue
        if min(im.size) < min_size:
            log.warning("skipped: %s is smaller than %d px (%dx%d)", path, min_size, *im.size)
            continue
        images.append((path, np.asarray(resize_short_side(im, size))))
    if not images:
        raise StylepressError(f"no usable {what} images in {folder}")
    return images


def split_by_hash(paths: list[Path], fraction: float = 0.1) -> tuple[set[Path], set[Path]]:
    """A deterministic split: the files whose content hash sorts first go to val."""
    if len(paths) < 2:
        return set(paths), set(paths)  # one photo: validate on it rather than on nothing
    ranked = sorted(paths, key=lambda p: hashlib.sha256(p.read_bytes()).hexdigest())
    n_val = max(1, round(len(paths) * fraction))
    return set(ranked[n_val:]), set(ranked[:n_val])


def val_crops(val: list[tuple[Path, np.ndarray]], styles, res: int
              ) -> tuple[list[torch.Tensor], dict[int, list[torch.Tensor]]]:
    """Validation: deterministic square centre crops at the working resolution, and each built-in
    style's target of them (by style index)."""
    crops = [center_crop(to_tensor(a), res) for _, a in val]
    targets = {i: [center_crop(to_tensor(apply_style(s, a)), res) for _, a in val]
               for i, s in enumerate(styles) if s in BUILTIN_STYLES}
    return crops, targets


def val_set(cfg: DataConfig) -> tuple[torch.Tensor, dict[int, torch.Tensor]]:
    """The val photos exactly as training validates on them ([-1, 1], NCHW) and each built-in style's
    targets, without computing the training photos' targets."""
    if cfg.val_photos is not None:
        val = load_folder(cfg.val_photos, cfg.resolution, cfg.min_size, "val photo")
    else:
        photos = load_folder(cfg.photos, cfg.resolution, cfg.min_size, "photo")
        held_out = split_by_hash([p for p, _ in photos])[1]
        val = [(p, a) for p, a in photos if p in held_out]
    crops, targets = val_crops(val, cfg.styles, cfg.resolution)
    return to_unit(torch.stack(crops)), {i: to_unit(torch.stack(t)) for i, t in targets.items()}


def to_tensor(rgb: np.ndarray) -> torch.Tensor:
    return torch.from_numpy(np.array(rgb, dtype=np.uint8, copy=True)).permute(2, 0, 1).contiguous()


def center_crop(t: torch.Tensor, size: int) -> torch.Tensor:
    h, w = t.shape[-2:]
    top, left = (h - size) // 2, (w - size) // 2
    return t[..., top:top + size, left:left + size]


def to_unit(t: torch.Tensor) -> torch.Tensor:
    """uint8 [0, 255] -> float [-1, 1]."""
    return t.float() / 127.5 - 1.0


@dataclass
class Batch:
    photo: torch.Tensor  # [N,3,H,W] in [-1, 1]
    style: torch.Tensor  # [N] int64
    real: torch.Tensor  # the paired target, or a crop of a style image
    paired: bool


class PortraitData:
    """Train/val portraits and, per style, paired targets (built-in) or style images (folders)."""

    def __init__(self, cfg: DataConfig, crop: int):
        self.cfg, self.crop, res = cfg, crop, cfg.resolution
        photos = load_folder(cfg.photos, res, cfg.min_size, "photo")
        if cfg.val_photos is not None:
            val = load_folder(cfg.val_photos, res, cfg.min_size, "val photo")
            train = photos
        else:  # the same split as val_image_paths, on the photos that loaded
            train_set, val_set = split_by_hash([p for p, _ in photos])
            train = [(p, a) for p, a in photos if p in train_set]
            val = [(p, a) for p, a in photos if p in val_set]
        self.styles = list(cfg.styles)
        self.style_names = [style_name(s) for s in self.styles]
        self.train_paths = [p for p, _ in train]
        self.val_paths = [p for p, _ in val]
        self.train = [to_tensor(a) for _, a in train]
        # Paired targets are computed once per photo at the working scale, then cropped with it.
        self.targets: dict[int, list[torch.Tensor]] = {}
        self.style_images: dict[int, list[torch.Tensor]] = {}
        for i, s in enumerate(self.styles):
            if s in BUILTIN_STYLES:
                self.targets[i] = [to_tensor(apply_style(s, a)) for _, a in train]
            else:
                self.style_images[i] = [to_tensor(a) for _, a in load_folder(Path(s), res, cfg.min_size,
                                                                                 f"style ({s})")]
        self.val, self.val_targets = val_crops(val, self.styles, res)

    def is_paired(self, style: int) -> bool:
        return style in self.targets

    def sample(self, style: int, batch_size: int, gen: torch.Generator) -> Batch:
        photos, reals = [], []
        for _ in range(batch_size):
            idx = int(torch.randint(len(self.train), (1,), generator=gen))
            # Paired targets crop at the working scale: a filter's strokes have a size in pixels,
            # and rescaling a target would teach the generator strokes of the wrong size.
            box = _random_box(self.train[idx].shape[-2:], self.crop, gen, rescale=not self.is_paired(style))
            flip = bool(torch.rand((), generator=gen) < 0.5)
            jitter = _random_jitter(gen)
            photos.append(_augment(self.train[idx], box, flip, jitter, self.crop))
            if self.is_paired(style):
                reals.append(_augment(self.targets[style][idx], box, flip, jitter, self.crop))
            else:
                pool = self.style_images[style]
                img = pool[int(torch.randint(len(pool), (1,), generator=gen))]
                sbox = _random_box(img.shape[-2:], self.crop, gen)
                reals.append(_augment(img, sbox, bool(torch.rand((), generator=gen) < 0.5), None, self.crop))
        return Batch(torch.stack(photos), torch.full((batch_size,), style, dtype=torch.long),
                     torch.stack(reals), self.is_paired(style))


def _random_box(hw, crop: int, gen: torch.Generator, rescale: bool = True) -> tuple[int, int, int, int]:
    """Random crop at the working scale; with `rescale`, a resized crop: side crop*[0.8, 1.25],
    aspect 3/4..4/3."""
    h, w = int(hw[0]), int(hw[1])
    bh = bw = crop
    if rescale:
        scale = math.exp(float(torch.empty(()).uniform_(math.log(0.8), math.log(1.25), generator=gen)))
        aspect = math.exp(float(torch.empty(()).uniform_(math.log(3 / 4), math.log(4 / 3), generator=gen)))
        bh = max(8, round(crop * scale / math.sqrt(aspect)))
        bw = max(8, round(crop * scale * math.sqrt(aspect)))
    bh, bw = min(h, bh), min(w, bw)
    top = int(torch.randint(h - bh + 1, (1,), generator=gen))
    left = int(torch.randint(w - bw + 1, (1,), generator=gen))
    return top, left, bh, bw


def _random_jitter(gen: torch.Generator) -> torch.Tensor:
    """A 3x3 colour matrix on RGB: saturation x[0.5, 2] (log-uniform) and, half the time, a hue
    rotation anywhere on the circle, both keeping luma (YIQ's Y). The built-in filters read luma to
    place their strokes and patches and average colour linearly, so the filtered jittered photo is
    the jittered target (median PSNR on training portraits: sketch 53 dB, watercolor 40, oil 39,
    cartoon 34): each pair stays consistent while the generator sees saturated colours of every hue,
    which a portrait set's grey backdrops and white shirts never show it. Brightness and contrast are
    not jittered: they change luma, and the same factors on photo and target broke the pairs (median
    sketch 33 dB, worst 21; oil 28.8 dB, about the oil teacher's own val PSNR)."""
    saturation = math.exp(float(torch.empty(()).uniform_(math.log(0.5), math.log(2.0), generator=gen)))
    hue = float(torch.empty(()).uniform_(-math.pi, math.pi, generator=gen))
    if torch.rand((), generator=gen) < 0.5:
        hue = 0.0
    c, s = math.cos(hue) * saturation, math.sin(hue) * saturation
    chroma = torch.tensor([[1.0, 0.0, 0.0], [0.0, c, -s], [0.0, s, c]])
    return YIQ_INV @ chroma @ YIQ


def _augment(img: torch.Tensor, box, flip: bool, jitter: torch.Tensor | None, crop: int) -> torch.Tensor:
    top, left, bh, bw = box
    x = img[:, top:top + bh, left:left + bw].float().unsqueeze(0) / 255.0
    if (bh, bw) != (crop, crop):
        x = F.interpolate(x, size=(crop, crop), mode="bilinear", antialias=True, align_corners=False)
    x = x[0]
    if flip:
        x = x.flip(-1)
    if jitter is not None:
        x = torch.einsum("ij,jhw->ihw", jitter, x)  # the same matrix on a photo and its paired target
    return x.clamp(0, 1) * 2 - 1
