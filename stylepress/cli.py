"""The `stylepress` command: a thin typer layer over the stages' Python entry points.

User mistakes (StylepressError) exit with code 2 and one line on stderr; bugs stay tracebacks.
"""

from __future__ import annotations

import logging
import sys
from pathlib import Path
from typing import Annotated

import typer
from rich.logging import RichHandler

from .config import load_config, to_toml, with_steps
from .errors import StylepressError
from .progress import console

app = typer.Typer(no_args_is_help=True, pretty_exceptions_enable=False, add_completion=False,
                  help="Portrait style-transfer GANs from training to production.")
config_app = typer.Typer(no_args_is_help=True, help="Inspect run configs.")
app.add_typer(config_app, name="config")

ConfigArg = Annotated[Path, typer.Argument(help="The run's TOML config.")]
OutOpt = Annotated[Path | None, typer.Option("--out", help="Run directory (default: runs/<name>).")]


def _run_dir(cfg, out: Path | None) -> Path:
    return out if out is not None else Path("runs") / cfg.name


@app.command()
def train(config: ConfigArg, out: OutOpt = None,
          steps: Annotated[int | None, typer.Option(help="Override train.steps.")] = None,
          resume: Annotated[bool, typer.Option("--resume", help="Continue from teacher/state.pt.")] = False,
          force: Annotated[bool, typer.Option("--force", help="Start over, replacing a checkpoint.")] = False):
    """Train the teacher generator; writes <run>/teacher/."""
    cfg = with_steps(load_config(config), steps)  # validate before importing torch: bad input fails fast
    from stylepress import train as train_stage

    result = train_stage.run(cfg, _run_dir(cfg, out), resume=resume, force=force)
    _report(result)


@app.command()
def stylize(images: Annotated[list[Path], typer.Argument(help="Input images.")],
            checkpoint: Annotated[Path, typer.Option("--checkpoint", help="A teacher/ or student/ folder.")],
            output: Annotated[Path, typer.Option("-o", "--output", help="Output file (one input) or folder.")],
            style: Annotated[str | None, typer.Option(help="Style name (default: the model's first).")] = None):
    """Stylize images offline with PyTorch, at their own size."""
    from . import stylize as stylize_mod

    for path in stylize_mod.run(checkpoint, images, output, style):
        print(path)


@config_app.command("show")
def config_show(config: ConfigArg):
    """Print the resolved config, defaults filled in."""
    print(to_toml(load_config(config)), end="")


@app.command()
def demo(out: OutOpt = None, steps: Annotated[int | None, typer.Option(help="Override train.steps.")] = None):
    """Train a small multi-style teacher on portraits shipped inside installed packages."""
    from . import demo as demo_mod

    result = demo_mod.run(out if out is not None else Path("runs") / "demo", steps)
    _report(result)


def _report(result) -> None:
    val = result.last_val
    scores = "  ".join(f"{k.removeprefix('val_')} {v:.3f}" for k, v in val.items() if k.startswith("val_"))
    console.print(f"[bold]{result.status}[/] at step {result.step}: {result.teacher_dir}")
    if scores:
        console.print(f"val: {scores}")
    console.print(f"samples: {result.teacher_dir / 'samples.png'}")
    if result.signal is not None:
        raise typer.Exit(128 + result.signal)


def main() -> None:
    logging.basicConfig(level=logging.INFO, format="%(message)s", datefmt="[%X]",
                        handlers=[RichHandler(console=console, show_path=False)])
    try:
        app()
    except StylepressError as exc:
        print(f"stylepress: error: {' '.join(str(exc).split())}", file=sys.stderr)
        sys.exit(2)


if __name__ == "__main__":
    main()
