"""Adding styles to a trained generator: more rows in its per-style norm tables.

stylepress's ResNet has per-style tables natively (`StyleNorm`, conditional instance norm). A
published family's plain norm layers become `StyleNorm` layers (the layer without its affine, then
per-style scale/shift rows that start as that affine), and `StyleRouter` hands each forward's style
index to them, so the family's own forward stays as published. arch.json lists the converted layers
(`style_tables`) and `build_generator` repeats the conversion.
"""

from __future__ import annotations

import torch
from torch import nn

from .layers import StyleNorm
from .spec import ArchSpec

PLAIN_NORMS = (nn.InstanceNorm2d, nn.BatchNorm2d, nn.GroupNorm)


def _channels(norm: nn.Module) -> int:
    return norm.num_channels if isinstance(norm, nn.GroupNorm) else norm.num_features


def grow(layer: StyleNorm, num_styles: int, init: int | None = None) -> None:
    """Give `layer` `num_styles` rows; new rows copy row `init`, or the mean of the existing rows.
    A single-style layer's affine (if any) becomes its first row, so its output is unchanged."""
    if layer.has_tables:
        weight, bias = layer.weight.detach(), layer.bias.detach()
    else:
        inner = layer.norm
        affine = getattr(inner, "weight", None) is not None
        weight = inner.weight.detach()[None] if affine else torch.ones(1, layer.channels)
        bias = inner.bias.detach()[None] if affine else torch.zeros(1, layer.channels)
        if affine:  # the tables take over the affine
            inner.affine = False
            inner.register_parameter("weight", None)
            inner.register_parameter("bias", None)
    extra = num_styles - len(weight)
    def pick(t):
        return (t.mean(0) if init is None else t[init]).expand(extra, -1)
    layer.weight = nn.Parameter(torch.cat([weight, pick(weight)]).clone())
    layer.bias = nn.Parameter(torch.cat([bias, pick(bias)]).clone())
    layer.num_styles = num_styles


def plain_norms(model: nn.Module) -> tuple[str, ...]:
    """The names of a family's norm layers that can become per-style tables."""
    return tuple(name for name, m in model.named_modules() if isinstance(m, PLAIN_NORMS))


class StyleRouter(nn.Module):
    """A published family with its norm layers `tables` made per-style (`num_styles` rows each)."""

    def __init__(self, net: nn.Module, tables: tuple[str, ...], num_styles: int, init: int | None = None):
        super().__init__()
        modules = dict(net.named_modules())
        for name in tables:
            plain = modules[name]
            layer = StyleNorm(_channels(plain), "none", 1)
            layer.norm = plain
            grow(layer, num_styles, init)
            parent, _, attr = name.rpartition(".")
            setattr(modules[parent] if parent else net, attr, layer)
        self.net, self.num_styles = net, num_styles
        self.size_multiple = getattr(net, "size_multiple", 4)
        self.norms = [m for m in net.modules() if isinstance(m, StyleNorm)]  # a plain list: not registered twice

    def forward(self, image: torch.Tensor, style: torch.Tensor | None = None) -> torch.Tensor:
        if style is None:
            raise ValueError("this model has several styles: pass a `style` index tensor")
        for layer in self.norms:
            layer.routed = style
        try:
            return self.net(image)
        finally:
            for layer in self.norms:
                layer.routed = None


def add_styles(model: nn.Module, spec: ArchSpec, names: tuple[str, ...], init: int | None = None
               ) -> tuple[nn.Module, ArchSpec]:
    """`model` with rows for the styles `names` after its own (existing rows untouched), and its spec."""
    n = spec.num_styles + len(names)
    styles = spec.styles + tuple(names)
    from . import ARCHS

    if spec.arch in ARCHS:  # stylepress's own generators: every norm already has per-style tables
        for m in model.modules():
            if isinstance(m, StyleNorm):
                grow(m, n, init)
        model.num_styles = n
        return model, spec.model_copy(update={"styles": styles}).with_kwargs(num_styles=n)
    channels = spec.channels
    if isinstance(model, StyleRouter):
        for m in model.norms:
            grow(m, n, init)
        model.num_styles = n
    else:
        plain = plain_norms(model)
        model = StyleRouter(model, plain, n, init)
        if channels:  # a pruned family's recorded widths: its layers moved under `net.`, its norms into tables
            channels = {f"net.{k}" + (".norm" if k in plain else ""): v for k, v in channels.items()}
    tables = tuple(name.removeprefix("net.") for name, m in model.named_modules() if isinstance(m, StyleNorm))
    return model, spec.model_copy(update={"styles": styles, "style_tables": tables, "channels": channels})
