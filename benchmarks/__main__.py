"""The reproducible suites behind the README's figures; each writes JSON beside a Markdown summary.

  python -m stylepress.benchmarks compression CONFIG [--sweep 2,4,8,16,20,32,40]
  python -m stylepress.benchmarks ablation CONFIG     feature distillation on (--feat 1) / off at the target
  python -m stylepress.benchmarks latency CONFIG      every precision on every CPU provider
  python -m stylepress.benchmarks levers CONFIG --runs RUN1,RUN2,...
                                                      each run's student: int8, bf16 float layers, on/off
  python -m stylepress.benchmarks serving CONFIG      in-process against served, concurrency sweep, formats
  python -m stylepress.benchmarks load CONFIG [--requests 10000 --concurrency 16]
                                                      checked requests over HTTP and gRPC, RSS over time
  python -m stylepress.benchmarks family-teacher CONFIG --arch animegan2 --style sketch
                                                      a trained teacher in a published family's architecture
  python -m stylepress.benchmarks transfer CONFIG --from RUN [--style cartoon --steps 300 --few 10]
                                                      a new style by transfer against training from scratch
  python -m stylepress.benchmarks reference [--val-photos DIR]
                                                      the bundled models' val figures from the shipped weights
"""

from __future__ import annotations

import json
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
def levers(config: ConfigArg, runs: Annotated[str, typer.Option(help="Run directories, comma-separated; the "
                                                                    "first one's teacher is the reference.")],
           set_: SetOpt = None,
           repeats: Annotated[int | None, typer.Option(help="Timed runs; default bench.repeats.")] = None,
           threads: Annotated[int | None, typer.Option(help="Threads; default bench.threads.")] = None):
    """Each run's student in fp32 and int8, on OpenVINO with float layers in f32 and bf16 and on the
    default provider, against the teacher (eager and ONNX), interleaved: <first run>/report/levers.{json,md}."""
    from . import levers as suite

    cfg = load_config(config, set_ or ())
    dirs = [Path(d) for d in runs.split(",") if d]
    missing = [d for d in dirs if not d.is_dir()]
    if not dirs or missing:
        raise StylepressError(f"--runs: {missing[0] if missing else 'nothing given'}: not a run directory")
    print(suite.markdown(suite.run(cfg, dirs, repeats=repeats, threads=threads)))


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


@app.command("transfer")
def transfer_suite(config: ConfigArg,
                   source: Annotated[Path, typer.Option("--from", help="The run whose teacher learns the style.")],
                   style: Annotated[str, typer.Option(help="The new style: built-in or a folder.")] = "cartoon",
                   steps: Annotated[int, typer.Option(min=1, help="N: transfer and the short fresh teacher.")] = 300,
                   few: Annotated[int, typer.Option(min=1, help="Training photos of the few-photo runs.")] = 10,
                   out: OutOpt = None, set_: SetOpt = None):
    """A new style by transfer (style mode, N steps; few photos: style, decoder, lora) against a teacher
    trained from scratch on every style for N and 8N steps: <run>/transfer/<style>/transfer.{json,md}, samples.png.
    Finished runs are skipped and interrupted ones resumed."""
    from . import transfer

    if Path(style).is_dir():  # a folder named on the command line is relative to here, not to the config
        style = str(Path(style).resolve())
    cfg, run_dir = _setup(config, out, [*(set_ or ()), f"transfer.add_styles=[{json.dumps(style)}]"])
    report = transfer.run(cfg, source, run_dir, cfg.transfer.add_styles[0], steps, few)
    print(transfer.markdown(report))
    if "interrupted" in report:
        raise typer.Exit(130)


@app.command()
def reference(val_photos: Annotated[Path, typer.Option(help="The held-out portraits.")] = Path(
                  "../shared/data/portraits/val"),
              out: Annotated[Path, typer.Option(help="Where reference.{json,md} go.")] = Path("runs/reference-check"),
              add: Annotated[str | None, typer.Option(
                  help="Maintainers: bundle the checkpoint --from as this name.")] = None,
              source: Annotated[Path | None, typer.Option("--from", help="With --add: the checkpoint folder.")] = None,
              kind: Annotated[str, typer.Option(help="With --add: teacher | student.")] = "teacher",
              teacher: Annotated[str | None, typer.Option(help="With --add, a student: its bundled teacher.")] = None,
              description: Annotated[str, typer.Option(help="With --add.")] = "",
              config: Annotated[str, typer.Option(help="With --add: the config it was trained with.")] = "",
              command: Annotated[str, typer.Option(help="With --add: the command that produced it.")] = "",
              resolution: Annotated[int, typer.Option(help="With --add: the val resolution.")] = 256):
    """Re-measure every bundled model's val figures from the shipped weights against the manifest
    (reference.{json,md}); with --add, bundle a checkpoint first."""
    from . import reference as suite

    if not val_photos.is_dir():
        raise StylepressError(f"--val-photos {val_photos}: folder not found")
    if add is not None:
        if source is None:
            raise StylepressError("--add needs --from (the checkpoint folder to bundle)")
        suite.add(add, source, kind, description, config, command, suite.SHARED_PORTRAITS, val_photos, resolution,
                  teacher)
    print(suite.markdown(suite.run(val_photos, out)))


if __name__ == "__main__":
    main_with_errors(app)
