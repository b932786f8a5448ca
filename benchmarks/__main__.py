"""The reproducible suites behind the README's figures; each writes JSON beside a Markdown summary.

  python -m stylepress.benchmarks compression CONFIG [--sweep 2,4,8,16,20,32,40]
  python -m stylepress.benchmarks ablation CONFIG     feature distillation on (--feat 1) / off at the target
  python -m stylepress.benchmarks latency CONFIG      every precision on every CPU provider
  python -m stylepress.benchmarks serving CONFIG      in-process against served, concurrency sweep
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from stylepress.cli import ConfigArg, OutOpt, SetOpt, _run_dir, main_with_errors, sweep_factors
from stylepress.config import load_config
from stylepress.errors import StylepressError

app = typer.Typer(no_args_is_help=True, pretty_exceptions_enable=False, add_completion=False,
                  help="stylepress benchmark suites.")
Resume = Annotated[bool, typer.Option("--resume", help="Continue interrupted students.")]


def _setup(config: Path, out: Path | None, set_: list[str] | None):
    cfg = load_config(config, set_ or ())
    return cfg, _run_dir(cfg, out)


@app.command()
def compression(config: ConfigArg, out: OutOpt = None, set_: SetOpt = None, resume: Resume = False,
                sweep: Annotated[str, typer.Option(help="MACs reductions.")] = "2,4,8,16,20,32,40"):
    """The compression frontier: student/sweep.{json,md,png}."""
    from . import compression as suite

    cfg, run_dir = _setup(config, out, set_)
    print(suite.markdown(suite.sweep(cfg, run_dir, sweep_factors(sweep), resume), cfg.data.styles))


@app.command()
def ablation(config: ConfigArg, out: OutOpt = None, set_: SetOpt = None, resume: Resume = False,
             feat: Annotated[float, typer.Option(help="The feature weight compared with none.")] = 1.0):
    """Distillation with and without the feature term, same target and steps: ablation/ablation.{json,md}."""
    from . import compression as suite

    if feat <= 0:
        raise StylepressError("--feat must be above 0 (it is compared with no feature term)")
    cfg, run_dir = _setup(config, out, set_)
    print(suite.markdown(suite.ablate(cfg, run_dir, feat, resume), cfg.data.styles))


@app.command()
def latency(config: ConfigArg, out: OutOpt = None, set_: SetOpt = None,
            repeats: Annotated[int, typer.Option(help="Timed runs per variant.")] = 50,
            threads: Annotated[int, typer.Option(help="Threads per variant.")] = 2):
    """Every exported precision on every CPU provider: report/precision.{json,md}."""
    from . import precision

    cfg, run_dir = _setup(config, out, set_)
    print(precision.markdown(precision.run(cfg, run_dir, repeats=repeats, threads=threads)))


@app.command()
def serving(config: ConfigArg, out: OutOpt = None, set_: SetOpt = None,
            repeats: Annotated[int, typer.Option(help="Requests per point.")] = 50):
    """In-process against served through Triton, with the concurrency sweep: report/serving_latency.{json,md}."""
    from . import serving_latency

    cfg, run_dir = _setup(config, out, set_)
    print(serving_latency.markdown(serving_latency.run(cfg, run_dir, repeats=repeats)))


if __name__ == "__main__":
    main_with_errors(app)
