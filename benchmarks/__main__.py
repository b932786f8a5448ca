"""The reproducible suites behind the README's figures; each writes JSON beside a Markdown summary.

  python -m stylepress.benchmarks compression CONFIG [--sweep 2,4,8,16,20,32,40]
  python -m stylepress.benchmarks ablation CONFIG     feature distillation on (--feat 1) / off at the target
  python -m stylepress.benchmarks latency CONFIG      every precision on every CPU provider
  python -m stylepress.benchmarks serving CONFIG      in-process against served, concurrency sweep, formats
  python -m stylepress.benchmarks load CONFIG [--requests 10000 --concurrency 16]
                                                      checked requests over HTTP and gRPC, RSS over time
  python -m stylepress.benchmarks family-teacher CONFIG --arch animegan2 --style sketch
                                                      a trained teacher in a published family's architecture
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
            repeats: Annotated[int | None, typer.Option(help="Timed runs per variant; default bench.repeats.")] = None,
            threads: Annotated[int | None, typer.Option(help="Threads per variant; default bench.threads.")] = None):
    """Every exported precision on every CPU provider: report/precision.{json,md}."""
    from . import precision

    cfg, run_dir = _setup(config, out, set_)
    print(precision.markdown(precision.run(cfg, run_dir, repeats=repeats, threads=threads)))


@app.command()
def serving(config: ConfigArg, out: OutOpt = None, set_: SetOpt = None,
            repeats: Annotated[int | None, typer.Option(help="Requests per point (default: bench.repeats).")] = None):
    """The selected variant in process against served through Triton, with the concurrency sweep and the
    quality of what the server returns: report/serving_latency.{json,md}."""
    from . import serving_latency

    cfg, run_dir = _setup(config, out, set_)
    print(serving_latency.markdown(serving_latency.run(cfg, run_dir, repeats=repeats)))


@app.command()
def load(config: ConfigArg, out: OutOpt = None, set_: SetOpt = None,
         requests: Annotated[int, typer.Option(help="Requests in all (split between HTTP and gRPC).")] = 10_000,
         concurrency: Annotated[int, typer.Option(help="Concurrent clients.")] = 16,
         fmt: Annotated[str | None, typer.Option("--format", help="png | jpeg | webp (default: "
                                                                  "serving.output_format).")] = None):
    """Load through the served repository, every response checked, RSS over time: report/load.{json,md}."""
    from . import load as suite

    if requests < 2 or concurrency < 1:
        raise StylepressError("--requests must be at least 2 and --concurrency at least 1")
    if fmt is not None and fmt not in suite.SIGNATURES:
        raise StylepressError(f"--format {fmt!r}: png, jpeg or webp")
    cfg, run_dir = _setup(config, out, set_)
    print(suite.markdown(suite.run(cfg, run_dir, requests, concurrency, fmt)))


@app.command("family-teacher")
def family_teacher(config: ConfigArg, arch: Annotated[str, typer.Option(help="A family stylepress imports.")],
                   style: Annotated[str, typer.Option(help="The teacher's style to distil.")],
                   option: Annotated[list[str] | None, typer.Option(help="Constructor option k=v.")] = None,
                   out: OutOpt = None, set_: SetOpt = None, resume: Resume = False):
    """Distil one style of the run's teacher into a fresh `arch` generator: <run>/family/<arch>-<style>/."""
    from stylepress.models.published import parse_options

    from . import family_teachers

    cfg, run_dir = _setup(config, out, set_)
    result = family_teachers.run(cfg, run_dir, arch, style, parse_options(option or []), resume=resume)
    scores = (f"PSNR to the teacher {result['val_psnr']:.2f} dB, SSIM {result['val_ssim']:.3f}"
              if "val_psnr" in result else "not validated yet")
    stopped = f" (stopped by {result['signal']})" if result["signal"] else ""
    print(f"{result['dir']}: {scores} at step {result['step']}{stopped}")


if __name__ == "__main__":
    main_with_errors(app)
