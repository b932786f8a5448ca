"""`stylepress build`: the whole job in one run directory, as a pipeline of declared stages,
with a manifest that makes reruns incremental and artifacts verifiable.

    train -> compress -> export -> bench -> select -> repo -> served -> report (gates)

Each stage is declared once in STAGES: its name, the config keys it reads, its inputs (files, or
digests of what it depends on), its outputs, and the function that runs it. Hashing, skipping,
`--from/--until`, `verify` and the manifest all derive from those declarations.

manifest.json, per stage: its status in the last build (ran | skipped | failed, with the one-line
error | not configured, with why), the hash of the config keys it reads, sha256 of every input and
output, library versions, wall time; the export stage also records each precision's status. A stage
whose config hash and inputs are unchanged and whose outputs still hash as recorded is skipped. A
stage is recorded only after it finished, so a killed build reruns the interrupted stage (training
and distillation resume from their last checkpoint); every file is written atomically by the stages.
"""

from __future__ import annotations

import fcntl
import hashlib
import json
import platform
import shutil
import time
from collections.abc import Callable
from dataclasses import dataclass
from importlib import metadata
from pathlib import Path

from .config import BUILTIN_STYLES, Config
from .errors import StylepressError
from .fsutil import sha256, write_json
from .layout import PRECISIONS, RunLayout

MANIFEST = RunLayout(Path()).manifest.name
SCHEMA = 2


@dataclass(frozen=True)
class Stage:
    name: str
    reads: tuple[str, ...]  # config keys: a section ("data") or a key inside one ("export.tensorrt")
    inputs: Callable[[Config, RunLayout], dict[str, str]]  # {what: sha256}
    outputs: Callable[[RunLayout], list[Path]]
    run: Callable[[Config, RunLayout, bool, Callable], int | None]  # (cfg, layout, resume, log) -> signal
    skip_why: Callable[[Config], str | None] = lambda cfg: None  # why the stage is not configured
    record: Callable[[RunLayout], dict] = lambda layout: {}  # extra fields for its manifest entry


@dataclass
class StageResult:
    stage: str
    status: str  # "ran" | "skipped" | "not configured" | "interrupted"
    wall_s: float = 0.0
    signal: int | None = None


def _hash_files(root: Path, paths: list[Path]) -> dict[str, str]:
    """{path relative to the run (or absolute outside it): sha256} for existing files."""
    out = {}
    for p in sorted(set(paths)):
        if p.is_file():
            key = str(p.relative_to(root)) if p.is_relative_to(root) else str(p)
            out[key] = sha256(p)
    return out


def _files(folder: Path) -> list[Path]:
    """The artifacts under `folder`: hidden names are temporaries (fsutil.atomic_path) and
    __pycache__ is Python's, never artifacts."""
    if not folder.is_dir():
        return []
    return [p for p in folder.rglob("*") if p.is_file() and not any(
        part.startswith(".") or part == "__pycache__" for part in p.relative_to(folder).parts)]


def _remove_leftovers(run_dir: Path) -> None:
    """Temporary files and folders a killed build left; they never count as artifacts."""
    for p in sorted(run_dir.rglob(".*"), key=lambda p: len(p.parts), reverse=True):
        if p.is_file() and p.name.endswith(".tmp"):
            p.unlink(missing_ok=True)
        elif p.is_dir() and p.parent == run_dir and p.name.startswith(".model_repository."):
            shutil.rmtree(p, ignore_errors=True)


def config_hash(cfg: Config, reads: tuple[str, ...]) -> str:
    """The config keys a stage reads (paths resolved), canonical JSON, sha256."""
    d = cfg.model_dump(mode="json")
    picked = {}
    for key in reads:
        value = d
        for part in key.split("."):
            value = value[part]
        picked[key] = value
    return hashlib.sha256(json.dumps(picked, sort_keys=True).encode()).hexdigest()


# ---- the stages: what each reads, takes, writes and runs -------------------------------------

def _outputs_of(*names: str) -> Callable[[Config, RunLayout], dict[str, str]]:
    """Inputs that are earlier stages' outputs."""
    return lambda cfg, layout: _hash_files(layout.root, [p for n in names for p in STAGE[n].outputs(layout)])


def _train_inputs(cfg: Config, layout: RunLayout) -> dict[str, str]:
    if cfg.model.pretrained is not None:  # bundled, not trained
        from .catalog import entry

        return {f"pretrained/{cfg.model.pretrained}/{f}": h for f, h in entry(cfg.model.pretrained).files.items()}
    if cfg.model.weights is not None:  # imported, not trained
        return _hash_files(layout.root, [cfg.model.weights])
    folders = [cfg.data.photos, cfg.data.val_photos, *(Path(s) for s in cfg.data.styles if s not in BUILTIN_STYLES)]
    return _hash_files(layout.root, [p for f in folders if f is not None for p in _files(f)])


def _model_files(folder: Path, *extra: str) -> list[Path]:
    from .models import ARCH_FILE, WEIGHTS_FILE

    return [folder / n for n in (WEIGHTS_FILE, ARCH_FILE, *extra)]


def _student_files(layout: RunLayout) -> list[Path]:
    from .compress import PRUNE_FILE

    return _model_files(layout.student, PRUNE_FILE)


def _export_files(layout: RunLayout) -> list[Path]:
    """parity.json is the gate's evidence, not an artifact: its errors are measured against PyTorch
    CPU eager, whose last bits differ between processes on some CPUs (seen on a Xeon with AMX), so
    hashing it would make a forced, byte-identical export look changed. The verdict gates (a failed
    parity fails the stage); everything that ships or feeds a later stage is hashed."""
    return [p for p in _files(layout.export) if p != layout.parity]


def _decision(cfg: Config, layout: RunLayout) -> dict[str, str]:
    """What deployment depends on: the selection's decision (never its timings) and the exported files."""
    from . import selection

    digest = hashlib.sha256(json.dumps(selection.decision(selection.load(layout.root)), sort_keys=True).encode())
    return {"selection.json#served": digest.hexdigest(), **_outputs_of("export")(cfg, layout)}


def _repo_inputs(cfg: Config, layout: RunLayout) -> dict[str, str]:
    """The decision, and the pre/post instance counts the bench's costs give (not the costs: they move)."""
    from . import selection
    from .serving.repository import prepost_instances

    pre, post, _ = prepost_instances(layout, cfg.serving, selection.load(layout.root)["served"])
    return {**_decision(cfg, layout), "report/precision.json#prepost_instances": f"{pre},{post}"}


def _train(cfg: Config, layout: RunLayout, resume: bool, log) -> int | None:
    from . import train
    from .train.trainer import STATE_FILE

    teacher = layout.teacher
    if cfg.model.pretrained is not None or cfg.model.weights is not None:
        shutil.rmtree(teacher, ignore_errors=True)  # a teacher trained here before (state.pt, log) is not this one
    if cfg.model.pretrained is not None:
        from .catalog import checkpoint, entry
        from .fsutil import atomic_write

        bundled, source = entry(cfg.model.pretrained), checkpoint(cfg.model.pretrained)  # files checked (sha256)
        teacher.mkdir(parents=True, exist_ok=True)
        for name in bundled.files:
            atomic_write(teacher / name, lambda tmp, name=name: shutil.copyfile(source / name, tmp))
        log(f"train: the bundled teacher {cfg.model.pretrained!r} ({', '.join(bundled.styles)})")
        return None
    if cfg.model.weights is not None:
        from .models import save_generator
        from .models.published import import_generator

        model, spec = import_generator(cfg.model.arch, cfg.model.weights, dict(cfg.model.options),
                                       Path(cfg.data.styles[0]).name)
        save_generator(model, spec, teacher)
        log(f"train: imported {cfg.model.weights} ({cfg.model.arch}) as the teacher")
        return None
    if resume and not (teacher / STATE_FILE).is_file() and all(p.is_file() for p in _model_files(teacher)):
        log("train: using the existing teacher (no training checkpoint: imported or trained elsewhere)")
        return None
    resume = resume and (teacher / STATE_FILE).is_file()
    return train.run(cfg, layout.root, resume=resume, force=not resume).signal


def _compress(cfg: Config, layout: RunLayout, resume: bool, log) -> int | None:
    from . import compress
    from .compress.distill import STATE_FILE

    resume = resume and (layout.student / STATE_FILE).is_file()
    return compress.run(cfg, layout.root, resume=resume, force=not resume).get("signal")


def _export(cfg: Config, layout: RunLayout, resume: bool, log) -> None:
    from . import export

    export.run(cfg, layout.root)


def _precision_status(layout: RunLayout) -> dict:
    """Each exported precision's status: fp32 passed parity (else export failed) and, run in bf16, its
    bf16 check; fp16 and int8 passed or missed their quality target (recorded, left out of selection)."""
    quant = json.loads(layout.quant.read_text()) if layout.quant.is_file() else {}
    out = {}
    for model, checks in quant.items():
        for precision in PRECISIONS:
            if precision in checks or precision == "fp32":
                met = checks.get(precision, {}).get("met", True)
                out[f"{model}.{precision}"] = {"status": "passed"} if met else {
                    "status": "failed", "reason": checks[precision].get("reason")}
    return {"precisions": out}


def _bench(cfg: Config, layout: RunLayout, resume: bool, log) -> None:
    from .benchmarks import precision

    precision.run(cfg, layout.root)


def _select(cfg: Config, layout: RunLayout, resume: bool, log) -> None:
    from . import selection

    chosen = selection.run(cfg, layout.root)
    log(f"select: {chosen['served']['name']} ({chosen['source']})")


def _repo(cfg: Config, layout: RunLayout, resume: bool, log) -> None:
    from . import serving

    serving.write_repository(cfg, layout.root)


def _served(cfg: Config, layout: RunLayout, resume: bool, log) -> None:
    from .benchmarks import serving_latency

    serving_latency.run(cfg, layout.root)


def _deploy(cfg: Config, layout: RunLayout, resume: bool, log) -> None:
    from .serving.k8s import write_k8s
    from .serving.monitoring import write_monitoring
    from .serving.perf_input import write_perf_input

    t = write_monitoring(cfg, layout.root)
    write_k8s(cfg, layout.root)
    write_perf_input(cfg, layout.root)
    log(f"deploy: alerts at error ratio {t['error_ratio']}, queue {t['queue_ms']} ms ({t['queue_ms_from']}), "
        f"{t['pending']} pending, CPU {t['cpu']}")


def _report(cfg: Config, layout: RunLayout, resume: bool, log) -> None:
    from .benchmarks import report

    report.run(cfg, layout.root)


STAGES = (
    Stage("train", ("seed", "data", "model", "train"), _train_inputs, lambda L: _model_files(L.teacher), _train),
    Stage("compress", ("seed", "data", "compress", "serving.resolution"), _outputs_of("train"),
          _student_files, _compress,
          skip_why=lambda cfg: None if "compress" in cfg.model_fields_set else "no [compress] section"),
    Stage("export", ("data", "export", "serving.resolution", "serving.target"), _outputs_of("train", "compress"),
          _export_files, _export, record=_precision_status),
    Stage("bench", ("data", "bench", "export.cpu_provider", "export.int8.val_images", "serving.resolution"),
          _outputs_of("train", "compress", "export"), lambda L: [L.precision_json, L.precision_md], _bench),
    Stage("select", ("serving.model", "serving.precision", "serving.target", "export.cpu_provider",
                     "bench.objective", "gates"),
          _outputs_of("export", "bench"), lambda L: [L.selection], _select),
    Stage("repo", ("name", "serving", "export.tensorrt"), _repo_inputs,
          lambda L: _files(L.repository), _repo),
    Stage("served", ("name", "data", "serving", "bench.repeats", "export.int8.val_images"),
          lambda cfg, L: {**_decision(cfg, L), **_outputs_of("repo")(cfg, L)},
          lambda L: [L.served_json, L.served_md], _served,
          skip_why=lambda cfg: None if cfg.serving.target == "cpu" else
          f"serving.target {cfg.serving.target!r} runs on a GPU host, not this machine's CPU Triton"),
    Stage("deploy", ("name", "data", "serving", "bench.threads"),  # cheap: it reruns on any input change
          lambda cfg, L: {**_outputs_of("repo", "served")(cfg, L), **_hash_files(L.root, [L.selection,
                                                                                          L.precision_json])},
          lambda L: _files(L.deploy), _deploy),
    Stage("report", ("data", "bench.objective", "gates", "serving.resolution", "export.cpu_provider"),
          _outputs_of("bench", "select", "served"),
          lambda L: [L.report_json, L.report_md, L.report_html, L.pareto, L.samples], _report),
)
STAGE = {s.name: s for s in STAGES}


def _versions() -> dict[str, str]:
    out = {"python": platform.python_version()}
    for dist in ("stylepress", "torch", "onnx", "onnxruntime-openvino", "onnxruntime", "torch-pruning"):
        try:
            out[dist] = metadata.version(dist)
        except metadata.PackageNotFoundError:
            pass
    return out


def load_manifest(run_dir: Path) -> dict:
    path = RunLayout(run_dir).manifest
    if not path.is_file():
        return {"schema": SCHEMA, "stages": {}}
    try:
        manifest = json.loads(path.read_text())
    except json.JSONDecodeError:
        raise StylepressError(f"{path}: not valid JSON (delete it to rebuild everything)") from None
    if manifest.get("schema") != SCHEMA:
        raise StylepressError(f"{path}: schema {manifest.get('schema')!r}, this stylepress writes {SCHEMA} "
                              "(delete it to rebuild everything)")
    return manifest


def _up_to_date(entry: dict | None, cfg_hash: str, inputs: dict, root: Path) -> bool:
    if not entry or entry.get("status") not in ("ran", "skipped") or entry["config_hash"] != cfg_hash \
            or entry["inputs"] != inputs:
        return False
    outputs = entry["outputs"]
    return bool(outputs) and all((root / p).is_file() and sha256(root / p) == h for p, h in outputs.items())


def run(cfg: Config, run_dir: Path, force: bool = False, from_stage: str | None = None,
        until_stage: str | None = None, log=print) -> list[StageResult]:
    """Run the pipeline; returns one result per stage. Stops at an interrupted stage; a failed stage
    is recorded in the manifest and its error raised."""
    names = [s.name for s in STAGES]
    for flag, value in (("--from", from_stage), ("--until", until_stage)):
        if value is not None and value not in names:
            raise StylepressError(f"{flag} {value!r}: not a stage ({', '.join(names)})")
    first = names.index(from_stage) if from_stage else 0
    last = names.index(until_stage) if until_stage else len(names) - 1
    if first > last:
        raise StylepressError(f"--from {from_stage} comes after --until {until_stage}")
    layout = RunLayout(run_dir)
    layout.root.mkdir(parents=True, exist_ok=True)
    with open(layout.root / ".build.lock", "w") as lock:
        try:
            fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise StylepressError(f"another build is running in {layout.root}") from None
        _remove_leftovers(layout.root)
        return _run_stages(cfg, layout, STAGES[first:last + 1], force, log)


def _run_stages(cfg: Config, layout: RunLayout, stages: tuple[Stage, ...], force: bool, log) -> list[StageResult]:
    manifest = load_manifest(layout.root)
    entries = manifest["stages"]
    results = []
    for stage in stages:
        why = stage.skip_why(cfg)
        if why is not None:
            entries[stage.name] = {"status": "not configured", "why": why}
            write_json(layout.manifest, manifest)
            results.append(StageResult(stage.name, "not configured"))
            continue
        cfg_hash, inputs = config_hash(cfg, stage.reads), stage.inputs(cfg, layout)
        if not force and _up_to_date(entries.get(stage.name), cfg_hash, inputs, layout.root):
            log(f"{stage.name}: up to date, skipped")
            if entries[stage.name]["status"] != "skipped":
                entries[stage.name]["status"] = "skipped"
                write_json(layout.manifest, manifest)
            results.append(StageResult(stage.name, "skipped"))
            continue
        log(f"{stage.name}: running")
        start = time.monotonic()
        # Continue a checkpoint only when this stage never finished (a killed build); a recorded
        # stage that is stale (config or inputs changed, outputs altered) runs from scratch.
        previous = entries.pop(stage.name, None)
        resume = not force and (previous is None or previous.get("status") == "failed")
        write_json(layout.manifest, manifest)  # a kill from here on leaves this stage unrecorded
        try:
            stop_signal = stage.run(cfg, layout, resume, log)
        except Exception as exc:
            error = " ".join(str(exc).split()) if isinstance(exc, StylepressError) else \
                f"{type(exc).__name__}: {' '.join(str(exc).split())}"
            entries[stage.name] = {"status": "failed", "error": error, "config_hash": cfg_hash,
                                   "wall_s": round(time.monotonic() - start, 3)}
            write_json(layout.manifest, manifest)
            raise
        wall = time.monotonic() - start
        if stop_signal is not None:
            results.append(StageResult(stage.name, "interrupted", wall, stop_signal))
            return results
        entries[stage.name] = {
            "status": "ran", "reads": list(stage.reads), "config_hash": cfg_hash, "inputs": inputs,
            "outputs": _hash_files(layout.root, stage.outputs(layout)),
            "versions": _versions(), "wall_s": round(wall, 3),
            "finished": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()), **stage.record(layout),
        }
        write_json(layout.manifest, manifest)
        results.append(StageResult(stage.name, "ran", wall))
    return results


def verify(run_dir: Path) -> list[str]:
    """Re-hash every recorded output; one line per file that is missing or differs."""
    layout = RunLayout(run_dir)
    if not layout.manifest.is_file():
        raise StylepressError(f"{layout.manifest} not found: nothing to verify")
    problems = []
    for stage, entry in load_manifest(layout.root)["stages"].items():
        for rel, digest in entry.get("outputs", {}).items():
            path = layout.root / rel
            if not path.is_file():
                problems.append(f"{stage}: {rel} is missing")
            elif sha256(path) != digest:
                problems.append(f"{stage}: {rel} differs from the manifest")
    return problems
