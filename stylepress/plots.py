"""Matplotlib for files, never a screen: the Agg backend, imported only where a plot is drawn, and PNGs
written atomically."""

from __future__ import annotations

from pathlib import Path

from .fsutil import atomic_path


def pyplot():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    return plt


def save_png(fig, path: Path, dpi: float | None = None) -> None:
    """Write `fig` to `path` (all or nothing) and free it."""
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", dpi=dpi)
    pyplot().close(fig)
