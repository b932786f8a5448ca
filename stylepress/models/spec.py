"""The architecture spec: one typed description of a generator, stored as its `arch.json`.

Everything needed to rebuild the module (architecture name, constructor arguments, style names,
the size multiple its inputs need, and for a pruned imported family every layer's channel counts).
Parsed once where a checkpoint is read; stages take an `ArchSpec`, never the raw dict.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from ..errors import StylepressError
from ..fsutil import write_json

ARCH_FILE = "arch.json"


class ArchSpec(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    format: int = Field(1, ge=1, le=1)
    arch: str  # "resnet", a published family, or module:PKG.MOD:FACTORY
    kwargs: dict[str, Any] = {}  # the constructor's arguments
    styles: tuple[str, ...] = Field(min_length=1)
    size_multiple: int = Field(4, ge=1)  # H and W must be multiples of it
    channels: dict[str, dict[str, int]] | None = None  # a pruned imported family: each layer's widths
    style_tables: tuple[str, ...] | None = None  # a family's norm layers made per-style (models.styled)

    @property
    def num_styles(self) -> int:
        return len(self.styles)

    def with_kwargs(self, **kwargs) -> ArchSpec:
        return self.model_copy(update={"kwargs": {**self.kwargs, **kwargs}})


def read_spec(folder: str | Path) -> ArchSpec:
    """A checkpoint folder's spec; a missing or malformed file is a one-line error."""
    path = Path(folder) / ARCH_FILE
    if not path.is_file():
        raise StylepressError(f"not a stylepress checkpoint: {path} is missing")
    try:
        return ArchSpec.model_validate(json.loads(path.read_text()))
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise StylepressError(f"{path}: not valid JSON ({exc})") from None
    except ValidationError as exc:
        err = exc.errors()[0]
        raise StylepressError(f"{path}: invalid architecture spec ({'.'.join(map(str, err['loc']))}: "
                              f"{err['msg']})") from None


def write_spec(spec: ArchSpec, folder: str | Path) -> None:
    write_json(Path(folder) / ARCH_FILE, spec.model_dump(mode="json", exclude_none=True))
