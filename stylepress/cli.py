"""The `stylepress` command: a thin typer layer over the stages' Python entry points.

User mistakes (StylepressError) exit with code 2 and one line on stderr; bugs stay tracebacks.
"""

from __future__ import annotations

import json
import logging
import os
import signal
import sys
import time
from pathlib import Path
from typing import Annotated

import typer
from rich.logging import RichHandler

from .config import load_config, to_toml, with_steps
from .errors import StylepressError
from .layout import RunLayout
from .progress import console

app = typer.Typer(no_args_is_help=True, rich_markup_mode=None, pretty_exceptions_enable=False, add_completion=False,
                  help="Portrait style-transfer GANs from training to production.")
config_app = typer.Typer(no_args_is_help=True, rich_markup_mode=None, help="Inspect run configs.")
app.add_typer(config_app, name="config")
triton_app = typer.Typer(no_args_is_help=True, rich_markup_mode=None, help="Manage the local Triton runtime.")
app.add_typer(triton_app, name="triton")

ConfigArg = Annotated[Path, typer.Argument(help="The run's TOML config.")]
OutOpt = Annotated[Path | None, typer.Option("--out", help="Run directory (default: runs/<name>).")]
SetOpt = Annotated[list[str] | None, typer.Option(
    "--set", help="Override a config value: section.key=value (TOML value), repeatable.")]
PretrainedOpt = Annotated[str | None, typer.Option(
    "--pretrained", help="A bundled model (`stylepress models`), checked against its sha256.")]
TrustOpt = Annotated[bool, typer.Option("--trust-code", help="Allow a module:PKG.MOD:FACTORY architecture (from "
                                                             "the config or a checkpoint) to import and run code.")]


def _trust(enabled: bool) -> None:
    if enabled:
        from .models.published import trust_code

        trust_code()


def _checkpoint(folder: Path | None, pretrained: str | None, flag: str) -> Path | None:
    """A checkpoint folder given as a path or as a bundled model's name (verified), not both."""
    if pretrained is None:
        return folder
    if folder is not None:
        raise StylepressError(f"give {flag} or --pretrained, not both")
    from .catalog import checkpoint

    return checkpoint(pretrained)


def _run_dir(cfg, out: Path | None) -> Path:
    return out if out is not None else Path("runs") / cfg.name


@app.command()
def train(config: ConfigArg, out: OutOpt = None,
          steps: Annotated[int | None, typer.Option(help="Override train.steps.")] = None,
          resume: Annotated[bool, typer.Option("--resume", help="Continue from teacher/state.pt.")] = False,
          force: Annotated[bool, typer.Option("--force", help="Start over, replacing a checkpoint.")] = False,
          set_: SetOpt = None,
          trust_code: TrustOpt = False):
    """Train the teacher generator; writes <run>/teacher/."""
    _trust(trust_code)
    cfg = with_steps(load_config(config, set_ or ()), steps)  # validate before importing torch: bad input fails fast
    from stylepress import train as train_stage

    result = train_stage.run(cfg, _run_dir(cfg, out), resume=resume, force=force)
    _report(result)


@app.command()
def transfer(config: ConfigArg,
             source: Annotated[Path | None, typer.Option(
                 "--from", help="The trained model: a run directory or a teacher folder (trained or imported).")
             ] = None,
             pretrained: PretrainedOpt = None, out: OutOpt = None,
             steps: Annotated[int | None, typer.Option(help="Override transfer.steps.")] = None,
             resume: Annotated[bool, typer.Option("--resume", help="Continue from teacher/state.pt.")] = False,
             force: Annotated[bool, typer.Option("--force", help="Start over, replacing a checkpoint.")] = False,
             student: Annotated[bool, typer.Option("--student", help="Give the student in --from the new "
                                                                     "styles of <out>/teacher (transferred first), "
                                                                     "distilling only their rows.")] = False,
             set_: SetOpt = None, trust_code: TrustOpt = False):
    """Add styles to a trained generator, or adapt it to new photos ([transfer]); writes <run>/teacher/
    (an ordinary teacher), or with --student <run>/student/, and its transfer.json."""
    _trust(trust_code)
    overrides = [*(set_ or ()), *([f"transfer.steps={steps}"] if steps is not None else [])]
    cfg = load_config(config, overrides)
    if student:
        from stylepress.compress import transfer as stage
    else:
        from stylepress.train import transfer as stage
    source = _checkpoint(source, pretrained, "--from")
    if source is None:
        raise StylepressError("give the model to start from: --from DIR or --pretrained NAME")
    report = stage.run(cfg, source, _run_dir(cfg, out), resume=resume, force=force)
    params = report["params"]
    console.print(f"{report['mode']} mode: trained {params['trained']:,} of {params['total']:,} parameters "
                  f"in {report['wall_s']:.0f} s; styles {', '.join(report['styles'])}")
    console.print(f"val after: {report['after']}")
    if report.get("signal") is not None:
        raise typer.Exit(128 + report["signal"])


@app.command()
def models(name: Annotated[str | None, typer.Argument(help="One model: its manifest entry, files checked.")] = None):
    """The pretrained models bundled with stylepress: name, styles, cost, val figures, size."""
    from . import catalog

    if name is not None:
        catalog.checkpoint(name)  # the files match the manifest
        entry = catalog.entry(name)
        print(json.dumps({**entry.model_dump(mode="json"), "path": str(catalog.root() / name)}, indent=2))
        return
    from rich.table import Table

    table = Table("name", "kind", "styles", "GMACs", "params", "size",
                  "val PSNR / SSIM (teacher: to the style targets; student: to its teacher)")
    for e in catalog.entries().values():
        figures = ", ".join(f"{s} {e.val[s]['psnr']:.2f} / {e.val[s]['ssim']:.3f}" for s in e.styles if s in e.val)
        table.add_row(e.name, e.kind + (f" of {e.teacher}" if e.teacher else ""), ", ".join(e.styles),
                      f"{e.macs / 1e9:.2f}", f"{e.params:,}", f"{e.size_bytes / 1e6:.1f} MB", figures)
    console.print(table)


@app.command("import")
def import_(weights: Annotated[Path, typer.Argument(help="The checkpoint: .safetensors, or a plain state dict.")],
            arch: Annotated[str, typer.Option(help="cyclegan-resnet | pix2pix-unet | animegan2 | fast-neural-style "
                                                   "| module:PKG.MOD:FACTORY")],
            out: Annotated[Path | None, typer.Option(
                "--out", help="Run directory (default: runs/<weights stem>).")] = None,
            option: Annotated[list[str] | None, typer.Option(
                help="Constructor option k=v, repeatable (variant=resnet_6blocks, ngf=64, norm=batch, "
                     "use_dropout=true).")] = None,
            style: Annotated[str, typer.Option(help="The style's name in the model's outputs.")] = "style",
            force: Annotated[bool, typer.Option("--force", help="Replace an existing teacher.")] = False,
            trust_code: TrustOpt = False):
    """Import a published generator's checkpoint as the run's teacher/ (safe loading, strict keys)."""
    _trust(trust_code)
    from .models import WEIGHTS_FILE, save_generator
    from .models.published import import_generator, parse_options

    run_dir = out if out is not None else Path("runs") / weights.stem
    teacher = RunLayout(run_dir).teacher
    if (teacher / WEIGHTS_FILE).exists() and not force:
        raise StylepressError(f"{teacher} already holds a teacher: pass --force to replace it")
    model, spec = import_generator(arch, weights, parse_options(option or []), style)
    save_generator(model, spec, teacher)
    params = sum(p.numel() for p in model.parameters())
    console.print(f"{arch}: {params:,} parameters -> {teacher}")


@app.command()
def stylize(images: Annotated[list[Path], typer.Argument(help="Input images (JPEG, PNG, WebP).")],
            output: Annotated[Path, typer.Option("-o", "--output", help="Output file (one input) or folder.")],
            checkpoint: Annotated[Path | None, typer.Option(
                "--checkpoint", help="Offline: a teacher/ or student/ folder.")] = None,
            pretrained: PretrainedOpt = None,
            url: Annotated[str | None, typer.Option(help="Through Triton: the server's HTTP (or gRPC) URL.")] = None,
            grpc: Annotated[bool, typer.Option("--grpc", help="Use gRPC with --url.")] = False,
            model: Annotated[str | None, typer.Option(help="Ensemble to call (default: the only one).")] = None,
            style: Annotated[str | None, typer.Option(help="Style name (default: the model's first).")] = None,
            size: Annotated[int, typer.Option(help="Offline: the serving size images are letterboxed to.")] = 256,
            fmt: Annotated[str | None, typer.Option("--format", help="png | jpeg | webp (default: the output "
                                                                     "file's suffix, else png).")] = None,
            quality: Annotated[int | None, typer.Option(help="JPEG/WebP quality, 1-100 (default 92 / 90).")] = None,
            key_file: Annotated[Path | None, typer.Option(
                help="With --url: the server's inference key (sent as its header for the protocol).")] = None,
            tls_ca: Annotated[Path | None, typer.Option(
                help="With an https:// or grpcs:// --url: the CA to verify the server by (default: the "
                     "system's).")] = None,
            trust_code: TrustOpt = False):
    """Stylize images offline (--checkpoint) or through a Triton server (--url); outputs keep the input size."""
    from . import stylize as stylize_mod

    _trust(trust_code)
    key = None
    if key_file is not None:
        from stylepress.serving import read_key

        key = read_key(key_file)
    checkpoint = _checkpoint(checkpoint, pretrained, "--checkpoint")
    for path in stylize_mod.run(images, output, style, checkpoint=checkpoint, size=size, url=url, grpc=grpc,
                                model=model, key=key, tls_ca=tls_ca, fmt=fmt, quality=quality):
        print(path)


def sweep_factors(text: str) -> list[float]:
    try:
        factors = [float(f) for f in text.split(",")]
    except ValueError:
        raise StylepressError(f"--sweep {text!r}: give MACs reductions like 2,4,8,20") from None
    if any(f <= 1 for f in factors):
        raise StylepressError(f"--sweep {text!r}: every reduction must be above 1")
    return factors


@app.command()
def tune(config: ConfigArg, out: OutOpt = None,
         stage: Annotated[str, typer.Option(help="What to search: train | compress.")] = "train",
         trials: Annotated[int | None, typer.Option(min=1, help="Trials in the study (default [tune] trials).")] = None,
         storage: Annotated[str | None, typer.Option(
             help="An Optuna RDB URL (sqlite:///f.db, postgresql://...) shared by several machines, or a journal "
                  "file; default <run>/tune/study.journal. Or set STYLEPRESS_TUNE_STORAGE (keeps a password out "
                  "of argv).")] = None,
         workers: Annotated[int, typer.Option(min=1, help="Processes on this machine sharing the study.")] = 1,
         teacher: Annotated[Path | None, typer.Option(
             help="--stage compress: the teacher/ folder to compress (default <run>/teacher).")] = None,
         pretrained: PretrainedOpt = None,
         worker_index: Annotated[int, typer.Option(hidden=True)] = 0,
         set_: SetOpt = None,
         trust_code: TrustOpt = False):
    """Search [tune.space.<stage>] with Optuna; writes <run>/tune/ (study.json, best.toml, report.md)."""
    _trust(trust_code)
    cfg = load_config(config, set_ or ())
    from stylepress import tune as tune_stage

    result = tune_stage.run(cfg, stage, _run_dir(cfg, out), trials,
                            storage or os.environ.get("STYLEPRESS_TUNE_STORAGE"), workers,
                            _checkpoint(teacher, pretrained, "--teacher"),
                            worker_index=worker_index)
    if result is None:
        return
    if "signal" in result:
        console.print("tune stopped by a signal: the same command resumes the study")
        raise typer.Exit(128 + (result["signal"] or 2))
    best, states = result["best"], result["states"]
    console.print(f"{states['complete']} complete, {states['pruned']} pruned, {states['fail']} failed; best trial "
                  f"{best['number']}: {best['value']:.2f} dB worst-style val PSNR (SSIM {best['ssim']:.3f})")
    console.print(f"best config: {RunLayout(_run_dir(cfg, out)).tune / 'best.toml'}")


@app.command()
def compress(config: ConfigArg, out: OutOpt = None,
             resume: Annotated[bool, typer.Option("--resume", help="Continue from student/state.pt.")] = False,
             force: Annotated[bool, typer.Option("--force", help="Start over, replacing a checkpoint.")] = False,
             sweep: Annotated[str | None, typer.Option(
                 help="MACs reductions, e.g. 2,4,8,16,20: one student each, plus sweep.json/png.")] = None,
             teacher: Annotated[Path | None, typer.Option(
                 help="A teacher/ folder to compress instead of <run>/teacher.")] = None,
             pretrained: PretrainedOpt = None, set_: SetOpt = None,
             trust_code: TrustOpt = False):
    """Prune the run's teacher (torch-pruning) and distil it into student/."""
    _trust(trust_code)
    cfg = load_config(config, set_ or ())
    factors = sweep_factors(sweep) if sweep is not None else None
    from stylepress import compress as compress_stage

    result = compress_stage.run(cfg, _run_dir(cfg, out), resume=resume, force=force, sweep=factors,
                                teacher_dir=_checkpoint(teacher, pretrained, "--teacher"))
    for point in result.get("points", [result]):
        scores = "  ".join(f"{k.removeprefix('val_')} {v:.3f}" for k, v in point.items()
                           if k.startswith("val_") and isinstance(v, float))
        console.print(f"{point['macs_reduction']:.1f}x fewer MACs ({point['student_macs'] / 1e9:.2f} G): "
                      f"{point['student_dir']}  {scores}")


@app.command()
def export(config: Annotated[Path | None, typer.Argument(help="The run's TOML config.")] = None, out: OutOpt = None,
           check_trt: Annotated[Path | None, typer.Option(
               "--check-trt", help="Only scan this Q/DQ ONNX model for TensorRT's quantization rules.")] = None,
           set_: SetOpt = None,
           trust_code: TrustOpt = False):
    """Export the run's teacher (and student) to ONNX in each configured precision (parity-gated fp32,
    checked fp16, TensorRT-compatible INT8); writes <run>/export/. Or scan a model with --check-trt."""
    _trust(trust_code)
    if check_trt is not None:
        from stylepress.export.trt_rules import check_trt as scan

        if not check_trt.is_file():
            raise StylepressError(f"--check-trt {check_trt}: file not found")
        try:
            problems = scan(check_trt)
        except Exception as exc:  # a file onnx cannot parse
            raise StylepressError(f"--check-trt {check_trt}: not an ONNX model ({type(exc).__name__})") from None
        for problem in problems:
            console.print(problem)
        if problems:
            raise StylepressError(f"{check_trt}: {len(problems)} TensorRT quantization rule(s) broken; "
                                  f"first: {problems[0]}")
        console.print(f"{check_trt}: follows TensorRT's explicit-quantization rules")
        return
    if config is None:
        raise StylepressError("give a CONFIG to export a run, or --check-trt MODEL.onnx to scan a model")
    cfg = load_config(config, set_ or ())
    from stylepress import export as export_stage

    for name, path in export_stage.run(cfg, _run_dir(cfg, out)).items():
        console.print(f"{name}: {path}")


@app.command()
def repo(config: Annotated[Path | None, typer.Argument(help="The run's TOML config.")] = None, out: OutOpt = None,
         check: Annotated[Path | None, typer.Option("--check", help="Only validate this repository.")] = None,
         set_: SetOpt = None):
    """Write the Triton model repository (<run>/model_repository/), or validate one with --check DIR."""
    from stylepress import serving

    if check is not None:
        configs = serving.check_repository(check)
        console.print(f"{check}: valid ({', '.join(sorted(configs))})")
        return
    if config is None:
        raise StylepressError("give a CONFIG to write a repository, or --check DIR to validate one")
    cfg = load_config(config, set_ or ())
    console.print(f"repository: {serving.write_repository(cfg, _run_dir(cfg, out))} (checked)")


@triton_app.command("install")
def triton_install():
    """Provision the CPU Triton runtime (tritonserver + a numpy<2 Python-backend env) in the cache."""
    from stylepress import serving

    runtime = serving.install(log=console.print)
    console.print(f"tritonserver: {runtime.server}")


def _catch_stop_signals() -> list[int]:
    """SIGINT/SIGTERM recorded instead of raised: a foreground server is then stopped gracefully."""
    stop: list[int] = []
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda signum, _: stop.append(signum))
    return stop


def _require_files(*paths: Path | None) -> None:
    for path in paths:
        if path is not None and not path.is_file():
            raise StylepressError(f"{path}: no such file")


def _wait(process, stop: list[int]) -> None:
    while not stop and process.poll() is None:
        time.sleep(0.2)


@app.command()
def serve(repository: Annotated[Path, typer.Argument(help="A Triton model repository.")],
          http_port: Annotated[int, typer.Option(help="HTTP port.")] = 8000,
          grpc_port: Annotated[int, typer.Option(help="gRPC port.")] = 8001,
          metrics_port: Annotated[int, typer.Option(help="Prometheus metrics port.")] = 8002,
          address: Annotated[str, typer.Option(help="Address to bind (0.0.0.0 to expose).")] = "127.0.0.1",
          grpc_address: Annotated[str | None, typer.Option(help="gRPC's own address (default: --address), e.g. "
                                                                "exposed over TLS while HTTP stays behind the "
                                                                "proxy.")] = None,
          admin_key_file: Annotated[Path | None, typer.Option(
              help="Restrict model-repository, model-config, shared-memory, statistics, trace and logging to "
                   "callers sending this key (HTTP header admin-key).")] = None,
          inference_key_file: Annotated[Path | None, typer.Option(
              help="Restrict inference and metadata too (HTTP header inference-key).")] = None,
          insecure: Annotated[bool, typer.Option("--insecure", help="Allow a non-loopback address without an "
                                                                    "inference key.")] = False,
          grpc_tls_cert: Annotated[Path | None, typer.Option(help="gRPC TLS: the server certificate.")] = None,
          grpc_tls_key: Annotated[Path | None, typer.Option(help="gRPC TLS: its private key.")] = None,
          grpc_tls_ca: Annotated[Path | None, typer.Option(help="gRPC mutual TLS: the CA clients' certificates "
                                                                "must be signed by.")] = None,
          tritonserver: Annotated[Path | None, typer.Option(help="The tritonserver binary to use.")] = None):
    """Serve a model repository with a real tritonserver until Ctrl-C. Health stays open for probes;
    shared-memory registration is always behind the admin key (a random one if none is given)."""
    from stylepress import serving

    _require_files(grpc_tls_cert, grpc_tls_key, grpc_tls_ca)
    exposed = [a for a in {address, grpc_address or address} if not serving.is_loopback(a)]
    access = serving.Access(admin_key=serving.read_key(admin_key_file) if admin_key_file else None,
                            inference_key=serving.read_key(inference_key_file) if inference_key_file else None,
                            admin_open=not exposed,  # exposed without an admin key: every admin API closed
                            grpc_cert=grpc_tls_cert, grpc_key=grpc_tls_key, grpc_ca=grpc_tls_ca)
    if exposed and access.inference_key is None:
        if not insecure:
            raise StylepressError(f"--address {exposed[0]} exposes inference to the network without a key: pass "
                                  "--inference-key-file (or keep HTTP on loopback behind `stylepress proxy`), or "
                                  "--insecure")
        logging.getLogger("stylepress").warning("serving on %s with no inference key (--insecure)", exposed[0])
    serving.check_repository(repository)
    runtime = serving.find_runtime(tritonserver, log=console.print)
    log_path = repository.resolve().parent / "tritonserver.log"
    server = serving.Server(runtime, repository, log_path, address, http_port, grpc_port, metrics_port, access,
                            grpc_address)
    stop = _catch_stop_signals()
    with server:
        if server.wait_ready(stop=stop):  # Ctrl-C while models load stops it too
            console.print(f"ready: HTTP {server.http_url}  gRPC {server.grpc_url}  metrics {server.metrics_url}")
            console.print(f"log: {log_path}; Ctrl-C stops the server gracefully")
            _wait(server.process, stop)
    if not stop:
        raise StylepressError(f"tritonserver {server.exit_reason()}")
    console.print(f"stopped (tritonserver exit code {server.process.returncode})")


@app.command()
def proxy(repository: Annotated[Path, typer.Argument(help="The model repository Triton serves (gives the "
                                                            "ensemble names and the upload limit).")],
          upstream: Annotated[str, typer.Option(help="Triton's HTTP address.")] = "http://127.0.0.1:8000",
          listen: Annotated[str, typer.Option(help="ADDRESS:PORT the proxy listens on.")] = "127.0.0.1:8443",
          key_file: Annotated[Path | None, typer.Option(help="The inference key callers must send (header "
                                                              "inference-key).")] = None,
          tls_cert: Annotated[Path | None, typer.Option(help="TLS certificate (PEM).")] = None,
          tls_key: Annotated[Path | None, typer.Option(help="Its private key (PEM).")] = None,
          insecure: Annotated[bool, typer.Option("--insecure", help="Allow a non-loopback address without "
                                                                    "TLS or a key.")] = False,
          write: Annotated[Path | None, typer.Option(help="Only write nginx.conf (and the key map, 0600) into "
                                                          "this folder, for your own nginx.")] = None):
    """The guard in front of Triton's HTTP port (nginx): TLS, the inference key, only the v2 inference,
    health and metadata routes of the repository's ensembles, the body capped at the upload limit."""
    import json

    from stylepress import serving
    from stylepress.serving import proxy as proxy_mod

    if (tls_cert is None) != (tls_key is None):
        raise StylepressError("give both --tls-cert and --tls-key, or neither")
    _require_files(tls_cert, tls_key)
    key = serving.read_key(key_file) if key_file is not None else None
    address = listen.rpartition(":")[0].strip("[]")
    if not serving.is_loopback(address) and (key is None or tls_cert is None) and not insecure:
        raise StylepressError(f"--listen {listen} exposes the server without TLS and a key: pass --tls-cert, "
                              "--tls-key and --key-file, or --insecure")
    configs = serving.check_repository(repository)
    models = sorted(n for n, c in configs.items() if c.platform == "ensemble")
    limits = [int(c.parameters["max_bytes"].string_value) for c in configs.values() if "max_bytes" in c.parameters]
    if not models or not limits:
        raise StylepressError(f"{repository}: not a stylepress repository (no ensemble with an upload limit) "
                              "for the proxy to guard")
    max_bytes = max(limits)
    tls = (tls_cert.resolve(), tls_key.resolve()) if tls_cert is not None else None
    if write is not None:
        console.print(proxy_mod.write_config(write, upstream, listen, models, max_bytes, tls, key))
        return
    stop = _catch_stop_signals()
    with proxy_mod.Proxy(upstream, listen, models, max_bytes, key, tls) as guard:
        console.print(f"proxy on {'https' if tls else 'http'}://{listen} -> {upstream} for {json.dumps(models)}; "
                      "Ctrl-C stops it")
        _wait(guard.process, stop)
    if not stop:
        raise StylepressError(f"nginx exited with code {guard.process.returncode}")


@app.command()
def deploy(config: ConfigArg, out: OutOpt = None, set_: SetOpt = None):
    """Write what a deployment needs beside the repository: deploy/prometheus/rules.yml (+ rules.test.yml
    for `promtool test rules`), deploy/grafana/dashboard.json (thresholds from [serving.alerts] and the
    served bench), deploy/k8s/ (Deployment with the proxy sidecar, Service, HPA, PDB, KServe
    InferenceService, Dockerfile) and deploy/perf_analyzer/ (real portraits as perf_analyzer input)."""
    cfg = load_config(config, set_ or ())
    from stylepress.serving.k8s import write_k8s
    from stylepress.serving.monitoring import write_monitoring
    from stylepress.serving.perf_input import write_perf_input

    run_dir = _run_dir(cfg, out)
    t = write_monitoring(cfg, run_dir)
    console.print(write_k8s(cfg, run_dir))
    console.print(write_perf_input(cfg, run_dir))
    console.print(f"{RunLayout(run_dir).deploy}: error ratio > {t['error_ratio']}, queue > {t['queue_ms']} ms "
                  f"({t['queue_ms_from']}), pending > {t['pending']}, CPU > {t['cpu']}; window {t['window']}, "
                  f"hold {t['hold']}")


@app.command()
def bench(config: ConfigArg, out: OutOpt = None,
          repeats: Annotated[int | None, typer.Option(help="Timed runs per variant, after warm-up (default: "
                                                           "bench.repeats).")] = None,
          suite: Annotated[str, typer.Option(help="serving | precision | all")] = "all",
          threads: Annotated[int | None, typer.Option(help="Threads per in-process variant (default: "
                                                           "bench.threads).")] = None,
          set_: SetOpt = None,
          trust_code: TrustOpt = False):
    """Latency benchmarks: every exported precision on every CPU provider against quality
    (report/precision.{json,md}); the selected variant in process vs through Triton, with the quality
    of what the server returns (report/serving_latency.{json,md})."""
    _trust(trust_code)
    if suite not in ("serving", "precision", "all"):
        raise StylepressError(f"--suite must be serving, precision or all, not {suite!r}")
    cfg = load_config(config, set_ or ())
    from stylepress.benchmarks import precision, serving_latency

    run_dir = _run_dir(cfg, out)
    if suite in ("precision", "all"):
        print(precision.markdown(precision.run(cfg, run_dir, repeats=repeats, threads=threads)))
    if suite in ("serving", "all"):
        report = serving_latency.run(cfg, run_dir, repeats=repeats)
        for name, figures in report["latency_ms"].items():
            console.print(f"{name:24s} p50 {figures['p50']:8.1f} ms   p95 {figures['p95']:8.1f} ms")


@app.command()
def select(config: ConfigArg, out: OutOpt = None, set_: SetOpt = None):
    """Decide what the repository serves, from the bench's figures (or the config's pins); writes
    <run>/selection.json with every candidate and why it was or was not chosen."""
    cfg = load_config(config, set_ or ())
    from . import selection

    chosen = selection.run(cfg, _run_dir(cfg, out))
    for c in chosen["candidates"]:
        console.print(f"{c['name']:28s} {c['why']}")
    console.print(f"served: {chosen['served']['name']} ({chosen['source']}: {chosen['rule']})")


@app.command()
def build(config: ConfigArg, out: OutOpt = None,
          force: Annotated[bool, typer.Option("--force", help="Rerun every selected stage.")] = False,
          from_stage: Annotated[str | None, typer.Option("--from", help="First stage to run.")] = None,
          until_stage: Annotated[str | None, typer.Option("--until", help="Last stage to run.")] = None,
          set_: SetOpt = None,
          trust_code: TrustOpt = False):
    """The whole job: train -> compress (when [compress] is set) -> export -> bench -> select -> repo ->
    served -> report, skipping stages whose config and inputs are unchanged; provenance in
    <run>/manifest.json. Exit 3 when a gate fails on the served variant."""
    _trust(trust_code)
    cfg = load_config(config, set_ or ())
    from . import build as build_mod

    layout = RunLayout(_run_dir(cfg, out))
    results = build_mod.run(cfg, layout.root, force=force, from_stage=from_stage, until_stage=until_stage,
                            log=console.print)
    for r in results:
        console.print(f"{r.stage:9s} {r.status}" + (f" ({r.wall_s:.1f} s)" if r.status == "ran" else ""))
    if results and results[-1].signal is not None:
        console.print(f"interrupted during {results[-1].stage}: rerun the same command to continue")
        raise typer.Exit(128 + results[-1].signal)
    console.print(f"manifest: {layout.manifest}")
    if any(r.stage == "report" and r.status in ("ran", "skipped") for r in results) and layout.report_json.is_file():
        import json

        from .benchmarks.report import gate_cells

        report = json.loads(layout.report_json.read_text())
        gated = report["served"] or report["selected"]
        console.print(f"report: {layout.report_md}  served: {report['selected']} (gated {report['gated']})")
        for g in report["gates"]:
            value, margin = gate_cells(g)
            console.print(f"gate {g['name']:24s} threshold {g['threshold']:<10g} measured {value:>10s} "
                          f"margin {margin:>9s}  {'pass' if g['passed'] else 'FAIL'}")
        failed = [g["name"] for g in report["gates"] if not g["passed"]]
        if failed:
            console.print(f"gates failed on the served variant {gated}: {', '.join(failed)}")
            raise typer.Exit(3)


@app.command()
def verify(run_dir: Annotated[Path, typer.Argument(help="A run directory with manifest.json.")]):
    """Re-hash every artifact a build recorded; exit 2 listing any that is missing or changed."""
    from . import build as build_mod

    problems = build_mod.verify(run_dir)
    for problem in problems:
        console.print(problem)
    if problems:
        raise StylepressError(f"{run_dir}: {len(problems)} artifact(s) do not match the manifest")
    console.print(f"{run_dir}: every artifact matches {build_mod.MANIFEST}")


@config_app.command("show")
def config_show(config: ConfigArg, set_: SetOpt = None):
    """Print the resolved config, defaults filled in (and --set overrides applied)."""
    cfg = load_config(config, set_ or ())
    print(to_toml(cfg), end="")
    if cfg.model.arch.startswith("module:"):  # on stderr: stdout stays a valid config
        console.print(f"note: [model] arch = {cfg.model.arch!r} imports and runs that code; the commands that "
                      "build it need --trust-code")


@app.command()
def demo(out: OutOpt = None,
         train: Annotated[bool, typer.Option("--train", help="Train a small teacher on the two photos instead "
                                                             "of using the bundled one.")] = False,
         steps: Annotated[int | None, typer.Option(help="Override the distillation steps (with --train: the "
                                                        "teacher's training steps).")] = None):
    """The whole job on portraits shipped inside installed packages: the build (the bundled teacher, compress,
    export, repository, benchmarks, report), then serve with Triton and stylize through it."""
    from . import demo as demo_mod

    result = demo_mod.run(out if out is not None else Path("runs") / "demo", steps, train, log=console.print)
    for r in result.stages:
        console.print(f"{r.stage:9s} {r.status}" + (f" ({r.wall_s:.1f} s)" if r.status == "ran" else ""))
    if result.signal is not None:
        raise typer.Exit(128 + result.signal)
    samples = result.run_dir / ("teacher" if train else "student") / "samples.png"
    console.print(f"{'teacher' if train else 'student'} samples: {samples}")
    console.print(f"report: {result.run_dir / 'report' / 'report.html'}")
    console.print(result.summary)
    console.print(f"Triton repository: {result.repository}")
    console.print(f"stylized through Triton: {result.grid.parent}/ (overview: {result.grid})")


def _report(result) -> None:
    val = result.last_val
    scores = "  ".join(f"{k.removeprefix('val_')} {v:.3f}" for k, v in val.items() if k.startswith("val_"))
    console.print(f"[bold]{result.status}[/] at step {result.step}: {result.teacher_dir}")
    if scores:
        console.print(f"val: {scores}")
    console.print(f"samples: {result.teacher_dir / 'samples.png'}")
    if result.signal is not None:
        raise typer.Exit(128 + result.signal)


def main_with_errors(typer_app: typer.Typer) -> None:
    """Run a typer app with logging; a StylepressError exits 2 with one line on stderr."""
    logging.basicConfig(level=logging.INFO, format="%(message)s", datefmt="[%X]",
                        handlers=[RichHandler(console=console, show_path=False)])
    try:
        typer_app()
    except StylepressError as exc:
        print(f"stylepress: error: {' '.join(str(exc).split())}", file=sys.stderr)
        sys.exit(2)


def main() -> None:
    main_with_errors(app)


if __name__ == "__main__":
    main()
