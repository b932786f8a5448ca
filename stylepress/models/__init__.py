"""Model architectures and their safe on-disk format: `weights.safetensors` + `arch.json`.

`arch.json` holds everything needed to rebuild the module (`spec.ArchSpec`: architecture name,
constructor arguments, style names); nothing is unpickled when a model is loaded.
"""

from __future__ import annotations

from pathlib import Path

from safetensors import SafetensorError
from safetensors.torch import load_file, save_file
from torch import nn

from ..errors import StylepressError
from ..fsutil import atomic_write
from .discriminator import PatchDiscriminator
from .generator import ResnetGenerator
from .layers import StyleNorm
from .mobile import MobileResnetGenerator
from .spec import ARCH_FILE, ArchSpec, read_spec, write_spec
from .styled import StyleRouter

ARCHS = {"resnet": ResnetGenerator, "mobile": MobileResnetGenerator}  # native: per-style StyleNorm tables
WEIGHTS_FILE = "weights.safetensors"
__all__ = ["ARCH_FILE", "ARCHS", "WEIGHTS_FILE", "ArchSpec", "build_generator", "load_generator", "read_spec",
           "save_generator"]


def build_generator(spec: ArchSpec) -> nn.Module:
    if spec.arch in ARCHS:
        model = ARCHS[spec.arch](**spec.kwargs)
    else:
        from .published import build  # an imported family, or module:PKG.MOD:FACTORY

        model = build(spec.arch, spec.kwargs)
        if spec.style_tables:  # a family that gained styles by transfer
            model = StyleRouter(model, spec.style_tables, spec.num_styles)
    if spec.channels:  # a pruned imported model: its layers' recorded widths
        set_channels(model, spec.channels)
    return model


CHANNEL_ATTRS = ("in_channels", "out_channels", "groups", "num_features", "num_channels")


def layer_channels(model: nn.Module) -> dict[str, dict[str, int]]:
    """Every conv and norm layer's channel attributes, by module name (what pruning changes)."""
    return {name: {a: getattr(m, a) for a in CHANNEL_ATTRS if hasattr(m, a)} for name, m in model.named_modules()
            if isinstance(m, (nn.modules.conv._ConvNd, nn.modules.batchnorm._NormBase, nn.GroupNorm))}


def set_channels(model: nn.Module, channels: dict[str, dict[str, int]]) -> None:
    """Give layers the recorded channel counts, with parameters and buffers of matching shapes (their
    values come from the weights file)."""
    modules = dict(model.named_modules())
    for name, attrs in channels.items():
        m = modules[name]
        for a, v in attrs.items():
            setattr(m, a, v)
        if isinstance(m, nn.modules.conv._ConvNd):
            k = tuple(m.weight.shape[2:])
            shape = ((m.in_channels, m.out_channels // m.groups) if m.transposed
                     else (m.out_channels, m.in_channels // m.groups))
            m.weight = nn.Parameter(m.weight.new_zeros(*shape, *k))
            if m.bias is not None:
                m.bias = nn.Parameter(m.bias.new_zeros(m.out_channels))
        else:
            n = getattr(m, "num_features", getattr(m, "num_channels", None))
            for key, t in list(m.named_parameters(recurse=False)):
                setattr(m, key, nn.Parameter(t.new_zeros(n)))
            for key, t in list(m.named_buffers(recurse=False)):
                if t is not None and t.dim() == 1:
                    setattr(m, key, t.new_zeros(n))
    for m in model.modules():  # per-style tables follow their norm layer's width
        if isinstance(m, StyleNorm) and m.has_tables and isinstance(m.norm, (nn.modules.batchnorm._NormBase,
                                                                                 nn.GroupNorm)):
            m.channels = getattr(m.norm, "num_features", getattr(m.norm, "num_channels", m.channels))
            m.weight = nn.Parameter(m.weight.new_zeros(m.num_styles, m.channels))
            m.bias = nn.Parameter(m.bias.new_zeros(m.num_styles, m.channels))


def generator_spec(model_cfg, styles: list[str]) -> ArchSpec:
    return ArchSpec(arch=model_cfg.arch, styles=tuple(styles), size_multiple=ResnetGenerator.size_multiple,
                    kwargs={"ngf": model_cfg.ngf, "n_blocks": model_cfg.n_blocks, "norm": model_cfg.norm,
                            "num_styles": len(styles), "residual": model_cfg.residual,
                            "colour_skip": model_cfg.colour_skip, "detail_skip": model_cfg.detail_skip})


def build_discriminator(model_cfg, num_styles: int) -> nn.Module:
    return PatchDiscriminator(model_cfg.ndf, model_cfg.d_layers, num_styles, model_cfg.d_spectral_norm)


def save_weights(model: nn.Module, path: Path) -> None:
    state = {k: v.detach().contiguous().cpu() for k, v in model.state_dict().items()}
    atomic_write(path, lambda tmp: save_file(state, str(tmp)))


def save_generator(model: nn.Module, spec: ArchSpec, folder: Path, weights_name: str = WEIGHTS_FILE) -> None:
    save_weights(model, Path(folder) / weights_name)
    write_spec(spec, folder)


def load_generator(folder: str | Path, weights_name: str = WEIGHTS_FILE) -> tuple[nn.Module, ArchSpec]:
    """Rebuild a generator from a checkpoint folder; user-facing errors are one line."""
    folder = Path(folder)
    arch_path, weights_path = folder / ARCH_FILE, folder / weights_name
    spec = read_spec(folder)
    if not weights_path.is_file():
        raise StylepressError(f"not a stylepress checkpoint: {weights_path} is missing")
    try:
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
