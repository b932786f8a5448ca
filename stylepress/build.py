"""`stylepress build`: train → compress → export → repo → bench in one run directory, with a
manifest that makes reruns incremental and artifacts verifiable.

manifest.json, per finished stage: the hash of the config sections it reads, sha256 of every input
and output file, library versions, wall time. A stage whose config hash and inputs are unchanged
and whose outputs still hash as recorded is skipped. A stage is recorded only after it finished, so
a killed build reruns the interrupted stage (training and distillation resume from their last
checkpoint); every file is written atomically by the stages themselves.
"""

from __future__ import annotations

import fcntl
import hashlib
import json
import platform
import shutil
import time
from dataclasses import dataclass
from importlib import metadata
from pathlib import Path

from .config import BUILTIN_STYLES, Config
from .errors import StylepressError
from .fsutil import write_json

STAGES = ("train", "compress", "export", "repo", "bench")
MANIFEST = "manifest.json"
SCHEMA = 1


@dataclass
class StageResult:
    stage: str
    status: str  # "ran" | "skipped" | "not configured" | "interrupted"
    wall_s: float = 0.0
    signal: int | None = None


def sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def _hash_files(run_dir: Path, paths: list[Path]) -> dict[str, str]:
    """{path relative to the run (or absolute outside it): sha256} for existing files."""
    out = {}
    for p in sorted(set(paths)):
        if p.is_file():
            key = str(p.relative_to(run_dir)) if p.is_relative_to(run_dir) else str(p)
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


def _config_hash(cfg: Config, stage: str) -> str:
    """The sections a stage reads (paths resolved), canonical JSON, sha256."""
    d = cfg.model_dump(mode="json")
    sections = {
        "train": {k: d[k] for k in ("seed", "data", "model", "train")},
        "compress": {k: d[k] for k in ("seed", "data", "compress")} | {"resolution": cfg.serving_resolution},
        "export": {k: d[k] for k in ("data", "export")} | {"resolution": cfg.serving_resolution},
        "repo": {k: d[k] for k in ("name", "serving")} | {"cpu_provider": d["export"]["cpu_provider"]},
        "bench": {k: d[k] for k in ("data", "serving", "bench", "gates")},
    }[stage]
    return hashlib.sha256(json.dumps(sections, sort_keys=True).encode()).hexdigest()


def _inputs(cfg: Config, run_dir: Path, stage: str) -> list[Path]:
    if stage == "train":
        if cfg.model.weights is not None:  # imported, not trained
            return [cfg.model.weights]
        folders = [cfg.data.photos, cfg.data.val_photos, *(Path(s) for s in cfg.data.styles if s not in BUILTIN_STYLES)]
        return [p for f in folders if f is not None for p in _files(f)]
    if stage == "compress":
        return _outputs(run_dir, "train")
    if stage == "export":
        return _outputs(run_dir, "train") + _outputs(run_dir, "compress")
    if stage == "repo":
        return _outputs(run_dir, "export")
    return _outputs(run_dir, "export") + _outputs(run_dir, "repo")


def _outputs(run_dir: Path, stage: str) -> list[Path]:
    if stage == "train":
        return [run_dir / "teacher" / n for n in ("weights.safetensors", "arch.json")]
    if stage == "compress":
        return [run_dir / "student" / n for n in ("weights.safetensors", "arch.json", "prune.json")]
    if stage == "export":
        return _files(run_dir / "export")
    if stage == "repo":
        return _files(run_dir / "model_repository")
    return _files(run_dir / "report")


def _versions() -> dict[str, str]:
    out = {"python": platform.python_version()}
    for dist in ("stylepress", "torch", "onnx", "onnxruntime-openvino", "onnxruntime", "torch-pruning"):
        try:
            out[dist] = metadata.version(dist)
        except metadata.PackageNotFoundError:
            pass
    return out


def load_manifest(run_dir: Path) -> dict:
    path = run_dir / MANIFEST
    if not path.is_file():
        return {"schema": SCHEMA, "stages": {}}
    try:
        manifest = json.loads(path.read_text())
    except json.JSONDecodeError:
        raise StylepressError(f"{path}: not valid JSON (delete it to rebuild everything)") from None
    if manifest.get("schema") != SCHEMA:
        raise StylepressError(f"{path}: schema {manifest.get('schema')!r}, this stylepress writes {SCHEMA}")
    return manifest


def _configured(cfg: Config, stage: str) -> bool:
    # Compression runs only when the config asks for it ([compress] present); the others always.
    return stage != "compress" or "compress" in cfg.model_fields_set


def _up_to_date(entry: dict | None, cfg_hash: str, inputs: dict, run_dir: Path) -> bool:
    if not entry or entry["config_hash"] != cfg_hash or entry["inputs"] != inputs:
        return False
    outputs = entry["outputs"]
    return bool(outputs) and all((run_dir / p).is_file() and sha256(run_dir / p) == h for p, h in outputs.items())


def run(cfg: Config, run_dir: Path, force: bool = False, from_stage: str | None = None,
        until_stage: str | None = None, log=print) -> list[StageResult]:
    """Run the pipeline; returns one result per stage. Stops at an interrupted stage."""
    for name, value in (("--from", from_stage), ("--until", until_stage)):
        if value is not None and value not in STAGES:
            raise StylepressError(f"{name} {value!r}: not a stage ({', '.join(STAGES)})")
    first = STAGES.index(from_stage) if from_stage else 0
    last = STAGES.index(until_stage) if until_stage else len(STAGES) - 1
    if first > last:
        raise StylepressError(f"--from {from_stage} comes after --until {until_stage}")
    run_dir = Path(run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    with open(run_dir / ".build.lock", "w") as lock:
        try:
            fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise StylepressError(f"another build is running in {run_dir}") from None
        _remove_leftovers(run_dir)
        return _run_stages(cfg, run_dir, STAGES[first:last + 1], force, log)


def _run_stages(cfg: Config, run_dir: Path, stages: tuple[str, ...], force: bool, log) -> list[StageResult]:
    manifest = load_manifest(run_dir)
    results = []
    for stage in stages:
        if not _configured(cfg, stage):
            manifest["stages"].pop(stage, None)
            results.append(StageResult(stage, "not configured"))
            continue
        cfg_hash, inputs = _config_hash(cfg, stage), _hash_files(run_dir, _inputs(cfg, run_dir, stage))
        if not force and _up_to_date(manifest["stages"].get(stage), cfg_hash, inputs, run_dir):
            log(f"{stage}: up to date, skipped")
            results.append(StageResult(stage, "skipped"))
            continue
        log(f"{stage}: running")
        start = time.monotonic()
        # Continue a checkpoint only when this stage never finished (a killed build); a recorded
        # stage that is stale (config or inputs changed, outputs altered) runs from scratch.
        resume = not force and stage not in manifest["stages"]
        manifest["stages"].pop(stage, None)
        write_json(run_dir / MANIFEST, manifest)  # a kill from here on leaves this stage unrecorded
        stop_signal = _run_stage(cfg, run_dir, stage, resume, log)
        wall = time.monotonic() - start
        if stop_signal is not None:
            results.append(StageResult(stage, "interrupted", wall, stop_signal))
            return results
        manifest["stages"][stage] = {
            "config_hash": cfg_hash, "inputs": inputs,
            "outputs": _hash_files(run_dir, _outputs(run_dir, stage)),
            "versions": _versions(), "wall_s": round(wall, 3),
            "finished": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        }
        write_json(run_dir / MANIFEST, manifest)
        results.append(StageResult(stage, "ran", wall))
    return results


def _run_stage(cfg: Config, run_dir: Path, stage: str, resume: bool, log) -> int | None:
    """Run one stage; returns the signal number if it was interrupted."""
    from . import compress, export, serving, train  # the core composes the stages
    from .benchmarks import precision, report, serving_latency
    from .compress.distill import STATE_FILE as STUDENT_STATE
    from .train.trainer import STATE_FILE

    if stage == "train":
        teacher = run_dir / "teacher"
        if cfg.model.weights is not None:
            from .models import save_generator
            from .models.published import import_generator

            model, spec = import_generator(cfg.model.arch, cfg.model.weights, dict(cfg.model.options),
                                           Path(cfg.data.styles[0]).name)
            save_generator(model, spec, teacher)
            log(f"train: imported {cfg.model.weights} ({cfg.model.arch}) as the teacher")
            return None
        if resume and not (teacher / STATE_FILE).is_file() and all(
                (teacher / n).is_file() for n in ("weights.safetensors", "arch.json")):
            log("train: using the existing teacher (no training checkpoint: imported or trained elsewhere)")
            return None
        resume = resume and (teacher / STATE_FILE).is_file()
        return train.run(cfg, run_dir, resume=resume, force=not resume).signal
    if stage == "compress":
        resume = resume and (run_dir / "student" / STUDENT_STATE).is_file()
        return compress.run(cfg, run_dir, resume=resume, force=not resume).get("signal")
    if stage == "export":
        export.run(cfg, run_dir)
    elif stage == "repo":
        serving.write_repository(cfg, run_dir)
    else:
        precision.run(cfg, run_dir, repeats=cfg.bench.repeats, threads=cfg.bench.threads)
        serving_latency.run(cfg, run_dir, repeats=cfg.bench.repeats)
        report.run(cfg, run_dir)
    return None


def verify(run_dir: Path) -> list[str]:
    """Re-hash every recorded output; one line per file that is missing or differs."""
    run_dir = Path(run_dir)
    if not (run_dir / MANIFEST).is_file():
        raise StylepressError(f"{run_dir / MANIFEST} not found: nothing to verify")
    problems = []
    for stage, entry in load_manifest(run_dir)["stages"].items():
        for rel, digest in entry["outputs"].items():
            path = run_dir / rel
            if not path.is_file():
                problems.append(f"{stage}: {rel} is missing")
            elif sha256(path) != digest:
                problems.append(f"{stage}: {rel} differs from the manifest")
    return problems
