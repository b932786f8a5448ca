"""Structured channel pruning of a generator with torch-pruning's DepGraph.

DepGraph finds coupled channels (the residual trunk, conv -> norm -> conv chains, transposed
convs); this module adds what it cannot know: a pruner for the conditional norm's per-style
scale/shift tables, out-of-place activations before tracing (DESIGN.md: an in-place ReLU after a
norm hides that norm), the output conv kept whole, and a search for the ratio that meets a MACs
target. Every pruned model is run and rebuilt from its spec before it is accepted.
"""

from __future__ import annotations

import copy
import logging
from dataclasses import dataclass

import torch
import torch_pruning as tp
from torch import nn

from stylepress.errors import StylepressError
from stylepress.models import ArchSpec, build_generator, layer_channels
from stylepress.models.families import CycleGANResnetBlock, InvertedResBlock
from stylepress.models.generator import ResnetBlock
from stylepress.models.layers import ColourSkip, StyleNorm

log = logging.getLogger(__name__)
MACS_TOLERANCE = 0.03  # target_macs is met within 3%


class StyleNormPruner(tp.pruner.BasePruningFunc):
    """Prunes a StyleNorm's channels: the per-style tables' columns and the wrapped norm's state."""

    TARGET_MODULES = (StyleNorm,)

    def prune_out_channels(self, layer: StyleNorm, idxs) -> StyleNorm:
        keep = [i for i in range(layer.channels) if i not in set(idxs)]
        if layer.has_tables:
            layer.weight = nn.Parameter(layer.weight.data[:, keep].clone())
            layer.bias = nn.Parameter(layer.bias.data[:, keep].clone())
        if isinstance(layer.norm, nn.BatchNorm2d):
            tp.prune_batchnorm_out_channels(layer.norm, idxs)
        elif isinstance(layer.norm, nn.InstanceNorm2d):
            layer.norm.num_features = len(keep)
        elif isinstance(layer.norm, nn.GroupNorm):  # a family's layer made per-style (models.styled)
            layer.norm.num_channels = len(keep)
        layer.channels = len(keep)
        return layer

    prune_in_channels = prune_out_channels  # a norm's input and output channels are the same ones

    def get_out_channels(self, layer: StyleNorm) -> int:
        return layer.channels

    get_in_channels = get_out_channels


IMPORTANCE = {
    "l1": lambda: tp.importance.MagnitudeImportance(p=1),
    "l2": lambda: tp.importance.MagnitudeImportance(p=2),
    "taylor": lambda: tp.importance.TaylorImportance(),
}


@dataclass
class Pruned:
    model: nn.Module
    spec: ArchSpec
    ratio: float
    macs: int
    params: int
    round_to: int  # the channel multiple used: prune_to_macs may halve the one asked for


def count(model: nn.Module, spec: ArchSpec, resolution: int) -> tuple[int, int]:
    """(MACs, params) of one resolution x resolution image, torch-pruning's counter."""
    macs, params = tp.utils.count_ops_and_params(model, example_inputs(resolution))
    return int(macs), int(params)


def example_inputs(size: int) -> tuple:
    return torch.zeros(1, 3, size, size), torch.zeros(1, dtype=torch.long)


def make_activations_out_of_place(model: nn.Module) -> int:
    """Turn every `inplace=True` module off; return how many there were."""
    changed = 0
    for module in model.modules():
        if getattr(module, "inplace", False):
            module.inplace = False
            changed += 1
    return changed


def prune(model: nn.Module, spec: ArchSpec, ratio: float, importance: str = "l1", global_pruning: bool = False,
          iterative_steps: int = 1, round_to: int = 8, ignored: tuple[str, ...] = (), resolution: int = 256,
          taylor_batch: tuple | None = None, layer_ratios: dict[str, float] | None = None) -> Pruned:
    """Remove `ratio` of the prunable channels (torch-pruning's pruning_ratio) from a copy of `model`;
    `layer_ratios` sets other ratios for named layers (torch-pruning's pruning_ratio_dict)."""
    model = copy.deepcopy(model).eval().requires_grad_(True)  # DepGraph traces autograd: grads must be on
    if make_activations_out_of_place(model):
        log.debug("made in-place activations out-of-place so that pruning sees every norm layer")
    names = dict(model.named_modules())
    missing = [n for n in ignored if n not in names]
    if missing:
        raise StylepressError(f"compress.ignored: no layer named {missing[0]!r} (layers look like 'blocks.0.conv2')")
    # The output conv and the colour skip keep their 3 channels, and so does anything the user names.
    ignored_layers = [output_conv(model), *(m for m in model.modules() if isinstance(m, ColourSkip)),
                      *(names[n] for n in ignored)]
    pruner = tp.pruner.MetaPruner(
        model, example_inputs(max(64, spec.size_multiple)), importance=IMPORTANCE[importance](),
        global_pruning=global_pruning,
        pruning_ratio=ratio, iterative_steps=iterative_steps, round_to=round_to, ignored_layers=ignored_layers,
        pruning_ratio_dict={names[n]: r for n, r in (layer_ratios or {}).items()} or None,
        customized_pruners={StyleNorm: StyleNormPruner(), ColourSkip: StyleNormPruner()},
        root_module_types=[nn.Conv2d, nn.ConvTranspose2d])
    for _ in range(iterative_steps):
        if importance == "taylor":
            _taylor_gradients(model, taylor_batch)
        pruner.step()
    model.zero_grad(set_to_none=True)
    new_spec = (spec.with_kwargs(widths=model.layer_widths()) if spec.arch == "resnet"
                else spec.model_copy(update={"channels": layer_channels(model)}))  # imported: every layer's width
    check_pruned(model, new_spec)
    macs, params = count(model, new_spec, resolution)
    return Pruned(model, new_spec, ratio, macs, params, round_to)


def inner_convs(model: nn.Module) -> list[str]:
    """The convs whose output width stays inside a residual block (coupled to nothing outside it):
    prune_to_macs's finer second knob. stylepress's and CycleGAN's ResNet blocks: the first conv;
    AnimeGANv2's inverted residual blocks: the expanding 1x1 conv (its depthwise conv follows it)."""
    names = []
    for name, m in model.named_modules():
        if isinstance(m, ResnetBlock):
            names.append(f"{name}.conv1.conv")
        elif isinstance(m, CycleGANResnetBlock):
            names.append(f"{name}.conv_block.1")
        elif isinstance(m, InvertedResBlock) and len(m.layers) == 4:  # with its expansion layer
            names.append(f"{name}.layers.0.1")
    return names


def output_conv(model: nn.Module) -> nn.Module:
    """The layer that writes the 3 image channels: the last conv registered with 3 outputs."""
    convs = [m for m in model.modules() if isinstance(m, nn.modules.conv._ConvNd) and m.out_channels == 3]
    if not convs:
        raise StylepressError("no output conv with 3 channels found: this generator cannot be pruned safely")
    return convs[-1]


def _taylor_gradients(model: nn.Module, batch: tuple | None) -> None:
    """Taylor importance needs gradients: those of the L1 distance to the paired style targets."""
    if batch is None:
        raise StylepressError("importance 'taylor' needs a batch of photos with paired style targets")
    photo, style, target = batch
    model.zero_grad(set_to_none=True)
    torch.nn.functional.l1_loss(model(photo, style), target).backward()


def check_pruned(model: nn.Module, spec: ArchSpec) -> None:
    """Run the pruned model and rebuild it from its spec; refuse a model that fails either."""
    try:
        rebuilt = build_generator(spec)
        rebuilt.load_state_dict(model.state_dict(), strict=True)
        for h, w in ((64, 64), (36, 52)):  # square and not: every layer's shapes must line up
            m = spec.size_multiple
            h, w = -(-h // m) * m, -(-w // m) * m
            x, style = torch.randn(2, 3, h, w), torch.tensor([0, spec.num_styles - 1])
            with torch.no_grad():
                y = model(x, style)
            if y.shape != x.shape or not torch.allclose(y, rebuilt.eval()(x, style), atol=1e-5):
                raise RuntimeError(f"output {tuple(y.shape)} for input {tuple(x.shape)}")
    except (RuntimeError, KeyError, ValueError) as exc:
        reason = " ".join(str(exc).split())[:300]
        raise StylepressError(f"pruning produced a broken model, not saved: {reason}") from None


def prune_to_macs(model: nn.Module, spec: ArchSpec, target_macs: float, resolution: int, **options) -> Pruned:
    """Find the pruning ratio whose model lands within 3% of `target_macs`.

    With `round_to`, MACs fall in steps as the uniform ratio grows; when no uniform ratio lands
    close enough, the residual blocks' inner widths (coupled to nothing else) take a second,
    finer ratio on top of the largest uniform ratio that stays above the target. When neither
    lands, `round_to` is halved (with a warning) until one does.
    """
    base, _ = count(model, spec, resolution)
    if target_macs >= base:
        raise StylepressError(f"compress.target_macs {target_macs:.3g} is not below the teacher's {base:.3g} MACs")
    round_to = options.pop("round_to", 8)
    for step in sorted({max(1, round_to >> k) for k in range(round_to.bit_length())}, reverse=True):
        found = _land(model, spec, target_macs, resolution, {**options, "round_to": step})
        if found is not None:
            if step != round_to:
                log.warning("no model lands within 3%% of the MACs target at round_to %d: used round_to %d",
                            round_to, step)
            return found
    raise StylepressError(f"no pruning ratio lands within 3% of {target_macs:.3g} MACs even at round_to 1: "
                          "the model is too narrow for this target; try another")


def _land(model: nn.Module, spec: ArchSpec, target_macs: float, resolution: int, options: dict) -> Pruned | None:
    def search(make, low: float, high: float) -> tuple[Pruned | None, Pruned | None]:
        above = None  # the smallest model still above the target
        for _ in range(16):
            pruned = make((low + high) / 2)
            if abs(pruned.macs - target_macs) <= MACS_TOLERANCE * target_macs:
                return pruned, above
            if pruned.macs > target_macs:
                low, above = pruned.ratio, pruned
            else:
                high = pruned.ratio
        return None, above

    found, above = search(lambda r: prune(model, spec, r, resolution=resolution, **options), 0.0, 0.99)
    inner = inner_convs(model)
    if found is None and above is not None and inner:
        r0 = above.ratio

        def with_inner(r: float) -> Pruned:
            pruned = prune(model, spec, r0, resolution=resolution, layer_ratios=dict.fromkeys(inner, r), **options)
            pruned.ratio = r  # the searched variable
            return pruned
        found, _ = search(with_inner, r0, 0.99)
        if found is not None:
            found.ratio = r0
    return found
