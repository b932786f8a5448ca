"""Model architectures and their safe on-disk format: `weights.safetensors` + `arch.json`.

`arch.json` holds everything needed to rebuild the module (architecture name, constructor
arguments, style names); nothing is unpickled when a model is loaded.
"""

from __future__ import annotations

import json
from pathlib import Path

from safetensors import SafetensorError
from safetensors.torch import load_file, save_file
from torch import nn

from ..errors import StylepressError
from ..fsutil import atomic_write, write_json
from .discriminator import PatchDiscriminator
from .generator import ResnetGenerator

ARCHS = {"resnet": ResnetGenerator}
ARCH_FILE = "arch.json"
WEIGHTS_FILE = "weights.safetensors"


def build_generator(spec: dict) -> nn.Module:
    if spec["arch"] in ARCHS:
        return ARCHS[spec["arch"]](**spec["kwargs"])
    from .published import build  # an imported family, or module:PKG.MOD:FACTORY

    return build(spec["arch"], spec["kwargs"])


def generator_spec(model_cfg, styles: list[str]) -> dict:
    return {
        "format": 1,
        "arch": model_cfg.arch,
        "kwargs": {"ngf": model_cfg.ngf, "n_blocks": model_cfg.n_blocks, "norm": model_cfg.norm,
                   "num_styles": len(styles), "residual": model_cfg.residual},
        "styles": list(styles),
        "size_multiple": ResnetGenerator.size_multiple,
    }


def build_discriminator(model_cfg, num_styles: int) -> nn.Module:
    return PatchDiscriminator(model_cfg.ndf, model_cfg.d_layers, num_styles, model_cfg.d_spectral_norm)


def save_weights(model: nn.Module, path: Path) -> None:
    state = {k: v.detach().contiguous().cpu() for k, v in model.state_dict().items()}
    atomic_write(path, lambda tmp: save_file(state, str(tmp)))


def save_generator(model: nn.Module, spec: dict, folder: Path, weights_name: str = WEIGHTS_FILE) -> None:
    save_weights(model, Path(folder) / weights_name)
    write_json(Path(folder) / ARCH_FILE, spec)


def load_generator(folder: str | Path, weights_name: str = WEIGHTS_FILE) -> tuple[nn.Module, dict]:
    """Rebuild a generator from a checkpoint folder; user-facing errors are one line."""
    folder = Path(folder)
    arch_path, weights_path = folder / ARCH_FILE, folder / weights_name
    for p in (arch_path, weights_path):
        if not p.is_file():
            raise StylepressError(f"not a stylepress checkpoint: {p} is missing")
    try:
        spec = json.loads(arch_path.read_text())
        model = build_generator(spec)
    except (ValueError, KeyError, TypeError) as exc:
        raise StylepressError(f"{arch_path}: invalid architecture spec ({exc})") from None
    try:
        state = load_file(str(weights_path))
    except (SafetensorError, OSError) as exc:
        raise StylepressError(f"{weights_path}: unreadable weights ({exc})") from None
    try:
        result = model.load_state_dict(state, strict=False)
    except RuntimeError as exc:  # shape mismatches
        first = str(exc).strip().splitlines()[-1].strip()
        raise StylepressError(f"{weights_path} does not match {arch_path}: {first}") from None
    if result.missing_keys or result.unexpected_keys:
        raise StylepressError(
            f"{weights_path} does not match {arch_path}: missing {result.missing_keys[:5]}, "
            f"unexpected {result.unexpected_keys[:5]}")
    return model.eval(), spec
