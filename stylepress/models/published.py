"""`stylepress import`: a published generator's checkpoint into a teacher/ folder (safetensors +
arch.json), after which every later stage works unchanged.

Loading is safe: safetensors, or `torch.load(weights_only=True)`, which refuses any pickle that
would construct arbitrary objects (run code). Keys are checked strictly; a mismatch is reported as
the missing and unexpected key lists.
"""

from __future__ import annotations

import importlib
import math
import os
import pickle
import re
import warnings
from pathlib import Path

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file
from torch import nn

from ..errors import StylepressError
from . import families
from .spec import ArchSpec

FAMILIES = {"cyclegan-resnet": families.CycleGANResnet, "pix2pix-unet": families.Pix2PixUnet,
            "animegan2": families.AnimeGAN2, "fast-neural-style": families.TransformerNet}
# Named variants, as the publishers' option strings spell them.
VARIANTS = {"resnet_9blocks": {"n_blocks": 9}, "resnet_6blocks": {"n_blocks": 6},
            "unet_256": {"num_downs": 8}, "unet_128": {"num_downs": 7}}
# Keys old PyTorch versions wrote for InstanceNorm layers without running stats: the publishers'
# own loaders delete them too.
STALE = re.compile(r"(^|\.)(running_mean|running_var|num_batches_tracked)$")
# A `module:PKG.MOD:FACTORY` architecture imports and runs code, so it is built only when the user opted
# in on the command line (`--trust-code`, which sets this for the process and its children), never
# because a checkpoint's arch.json or a config names it.
TRUST_CODE_ENV = "STYLEPRESS_TRUST_CODE"


def trust_code(enabled: bool = True) -> None:
    if enabled:
        os.environ[TRUST_CODE_ENV] = "1"


def code_trusted() -> bool:
    return os.environ.get(TRUST_CODE_ENV) == "1"


def parse_options(items: list[str]) -> dict:
    """`--option k=v`: ints, floats, booleans and words; `variant=resnet_6blocks` expands to its options."""
    options: dict = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise StylepressError(f"--option {item!r}: write key=value, e.g. ngf=64")
        if value in VARIANTS and key == "variant":
            options.update(VARIANTS[value])
            continue
        options[key] = _option_value(value)
    return options


def _option_value(text: str):
    """`--option` values: int, float, true/false, else the word itself."""
    for kind in (int, float):
        try:
            value = kind(text)
        except ValueError:
            continue
        if math.isfinite(value):  # "nan", "inf" stay words
            return value
    return {"true": True, "false": False}.get(text.lower(), text)


def build(arch: str, options: dict) -> nn.Module:
    if arch.startswith("module:"):
        target = arch.removeprefix("module:")
        module_name, _, attr = target.partition(":")
        if not code_trusted():
            raise StylepressError(f"architecture {arch!r} would import and run {module_name}.{attr}: code runs only "
                                  "with --trust-code on the command line (a checkpoint or config cannot ask for it)")
        try:
            factory = getattr(importlib.import_module(module_name), attr)
        except (ImportError, AttributeError, ValueError) as exc:
            raise StylepressError(f"--arch {arch}: cannot import {target!r} ({exc})") from None
        try:
            model = factory(**options)
        except TypeError as exc:
            raise StylepressError(f"--arch {arch}: bad --option ({exc})") from None
        if not isinstance(model, nn.Module):
            raise StylepressError(f"--arch {arch}: the factory returned {type(model).__name__}, not an nn.Module")
        return model
    if arch not in FAMILIES:
        raise StylepressError(f"--arch {arch!r}: not a known family ({', '.join(FAMILIES)}, or module:PKG.MOD:FACTORY)")
    try:
        return FAMILIES[arch](**options)
    except (TypeError, ValueError) as exc:
        raise StylepressError(f"--arch {arch}: bad --option ({exc})") from None


def read_state_dict(path: Path) -> dict[str, torch.Tensor]:
    """Tensors from a safetensors file or a plain (weights-only) PyTorch checkpoint."""
    if not path.is_file():
        raise StylepressError(f"weights file not found: {path}")
    if path.suffix == ".safetensors":
        try:
            return load_file(str(path))
        except (SafetensorError, OSError) as exc:
            raise StylepressError(f"{path}: unreadable safetensors ({exc})") from None
    try:
        with warnings.catch_warnings():  # torch warns about old pickle protocols before refusing
            warnings.simplefilter("ignore")
            state = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as exc:
        found = re.search(r"GLOBAL ([\w.]+)", str(exc))
        what = f"it calls {found.group(1)}" if found else "it holds more than plain tensors"
        raise StylepressError(f"{path}: refused: unpickling it could run code ({what}); save the state dict "
                              "as safetensors (or plain tensors) instead") from None
    except (RuntimeError, OSError, EOFError) as exc:
        raise StylepressError(f"{path}: not a PyTorch checkpoint ({type(exc).__name__})") from None
    for key in ("state_dict", "model", "generator", "netG"):  # common wrappers around the state dict
        if isinstance(state, dict) and isinstance(state.get(key), dict):
            state = state[key]
    if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise StylepressError(f"{path}: not a state dict of tensors")
    return {k.removeprefix("module."): v for k, v in state.items()}  # DataParallel's prefix


def load_published(model: nn.Module, state: dict[str, torch.Tensor], path: Path) -> None:
    expected = model.state_dict()
    state = {k: v for k, v in state.items() if k in expected or not STALE.search(k)}
    missing, unexpected = sorted(set(expected) - set(state)), sorted(set(state) - set(expected))
    if missing or unexpected:
        raise StylepressError(f"{path} does not fit this architecture: missing keys {missing[:8]}"
                              f"{' …' if len(missing) > 8 else ''}, unexpected keys {unexpected[:8]}"
                              f"{' …' if len(unexpected) > 8 else ''}")
    wrong = [f"{k} {tuple(v.shape)} (expected {tuple(expected[k].shape)})" for k, v in state.items()
             if v.shape != expected[k].shape]
    if wrong:
        raise StylepressError(f"{path}: shapes differ: {', '.join(wrong[:4])}")
    model.load_state_dict(state, strict=True)


def new_generator(arch: str, options: dict, style: str) -> tuple[nn.Module, ArchSpec]:
    """A freshly initialised `arch` generator and its arch.json spec (one style)."""
    model = build(arch, options)
    return model, ArchSpec(arch=arch, kwargs=options, styles=(style,),
                           size_multiple=int(getattr(model, "size_multiple", 4)))


def import_generator(arch: str, weights: Path, options: dict, style: str) -> tuple[nn.Module, ArchSpec]:
    model, spec = new_generator(arch, options, style)
    load_published(model, read_state_dict(Path(weights)), Path(weights))
    return model.eval(), spec
