"""`stylepress tune`: search training or compression settings with Optuna.

Each trial samples [tune.space.<stage>], builds a fresh model with its own seed and runs the real
`train` or `compress` code for [tune] steps; every validation reports the worst style's val PSNR
(train: against the style targets; compress: against the teacher, at the configured MACs target) to
the pruner. The best trial is the highest worst-style PSNR; SSIM (worst style) breaks ties within
0.01 dB.

run_dir/tune/
  study.journal         the study (Optuna's journal file) unless --storage names an RDB URL
  trials/NNNN/          each trial's run directory (weights, log.jsonl, samples; no optimizer state)
  study.json            every trial: params, curve, state, value, wall time, worker
  best.toml             the config with the best trial's settings, ready for `stylepress build`
  report.md, history.png, importance.png, front.png (compress: PSNR against MACs)

Killed runs resume: the same command continues the study to --trials; a trial that was running in a
dead process of this machine is retried with the same settings at once (an RDB study also has
Optuna's heartbeat, so a trial of a dead process on another machine is retried after its grace period).
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
import warnings
from pathlib import Path

import optuna
import torch

from . import compress, train
from .config import BUILTIN_STYLES, Config, ParamRange, parse_config, to_toml
from .errors import StylepressError
from .fsutil import write_json, write_text
from .layout import RunLayout
from .machine import describe, now
from .models import WEIGHTS_FILE
from .plots import pyplot, save_png
from .progress import console, progress_bar
from .train.loop import STATE_FILE

STAGES = ("train", "compress")
TIE_DB = 0.01  # PSNR differences below this are a tie, decided by SSIM
HEARTBEAT_S, GRACE_S = 30, 120  # RDB storages: a trial silent for GRACE_S is failed and retried
COUNTED = (optuna.trial.TrialState.COMPLETE, optuna.trial.TrialState.PRUNED)
RUNNING = (optuna.trial.TrialState.RUNNING, optuna.trial.TrialState.WAITING)


class _Surplus(Exception):
    """Other workers already run or finished the requested number of trials."""


class _Interrupted(Exception):
    """The trial stopped on a signal: the study stops; the trial is retried when the tune resumes."""


def storage_for(storage: str | None, tune_dir: Path):
    """An Optuna RDB URL (sqlite:///, postgresql://, mysql://) or a journal file path; default the
    journal file in the run directory."""
    if storage and "://" in storage:
        kwargs = {"connect_args": {"timeout": 60}} if storage.startswith("sqlite") else {}
        try:
            with warnings.catch_warnings():  # the heartbeat is "experimental" since Optuna 2.8
                warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
                return optuna.storages.RDBStorage(
                    storage, engine_kwargs=kwargs, heartbeat_interval=HEARTBEAT_S, grace_period=GRACE_S,
                    heartbeat_stale_trial_callback=optuna.storages.RetryHeartbeatStaleTrialCallback(max_retry=3))
        except Exception as exc:  # noqa: BLE001 - a driver missing or a server down: one line
            raise StylepressError(f"--storage {_redact(storage)}: {str(exc).splitlines()[0][:200]}") from None
    from optuna.storages.journal import JournalFileBackend

    path = Path(storage) if storage else tune_dir / "study.journal"
    path.parent.mkdir(parents=True, exist_ok=True)
    return optuna.storages.JournalStorage(JournalFileBackend(str(path)))


def _redact(url: str) -> str:
    """A storage URL without its password (it never goes to a log)."""
    scheme, _, rest = url.partition("://")
    if "@" in rest:
        rest = "***@" + rest.split("@", 1)[1]
    return f"{scheme}://{rest}"


def score(record: dict, styles: list[str]) -> tuple[float, float] | None:
    """(worst style's val PSNR, worst style's val SSIM) of a validation record; None without targets."""
    psnrs = [record[f"val_psnr_{s}"] for s in styles if f"val_psnr_{s}" in record]
    ssims = [record[f"val_ssim_{s}"] for s in styles if f"val_ssim_{s}" in record]
    return (min(psnrs), min(ssims)) if psnrs else None


def suggest(trial: optuna.Trial, name: str, rng: ParamRange):
    if rng.choices is not None:
        return trial.suggest_categorical(name, list(rng.choices))
    if isinstance(rng.low, int) and isinstance(rng.high, int):
        return trial.suggest_int(name, rng.low, rng.high, log=rng.log)
    return trial.suggest_float(name, float(rng.low), float(rng.high), log=rng.log)


def with_params(cfg: Config, stage: str, params: dict, **extra) -> Config:
    """The config with `params` (and `extra`) in the stage's section, validated like a config file."""
    raw = cfg.model_dump(mode="json", exclude_none=True)
    raw[stage] = {**raw[stage], **params, **extra}
    return parse_config(raw, Path("/"), f"tune {stage} settings")


def _trial_config(cfg: Config, stage: str, params: dict, number: int) -> Config:
    tc = cfg.tune
    budget = {"steps": tc.steps} if stage == "train" else {"distill_steps": tc.steps}
    cadence = {"val_every": tc.val_every, "checkpoint_every": tc.steps}
    trial_cfg = with_params(cfg, stage, params, **budget, **cadence)
    return trial_cfg.model_copy(update={"seed": cfg.seed + number})  # its own seed: a fresh model


def trial_path(tune_dir: Path, number: int) -> Path:
    """Where trial `number` trains: its own run directory under tune/trials."""
    return tune_dir / "trials" / f"{number:04d}"


def _counts(t: optuna.trial.FrozenTrial) -> bool:
    """A trial that counts toward --trials: finished, failed on its own (not killed), or in flight."""
    return t.state in COUNTED or t.state in RUNNING or (
        t.state == optuna.trial.TrialState.FAIL and "error" in t.user_attrs)


def _alive(worker: str) -> bool:
    host, _, pid = worker.rpartition(":")
    if host != socket.gethostname():
        return True  # another machine's: its heartbeat (RDB) decides
    try:
        os.kill(int(pid), 0)
    except ProcessLookupError:
        return False
    except (PermissionError, ValueError):
        return True
    return True


def retry_dead_trials(study: optuna.Study, storage) -> int:
    """Fail every running trial whose process on this machine is gone and queue its settings again."""
    n = 0
    for t in study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.RUNNING,)):
        worker = t.user_attrs.get("worker")
        if worker and not _alive(worker):
            study.tell(t.number, state=optuna.trial.TrialState.FAIL)
            study.enqueue_trial(t.params, user_attrs={"retry_of": t.number})
            n += 1
    if isinstance(storage, optuna.storages.RDBStorage):  # other machines' dead trials: the heartbeat
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
            optuna.storages.fail_stale_trials(study)
    return n


class Tuner:
    def __init__(self, cfg: Config, stage: str, run_dir: Path, trials: int, teacher_dir: Path | None,
                 show_progress: bool):
        if stage not in STAGES:
            raise StylepressError(f"--stage must be one of {', '.join(STAGES)}, got {stage!r}")
        self.cfg, self.stage, self.trials, self.show_progress = cfg, stage, trials, show_progress
        self.layout = RunLayout(run_dir)
        self.space = getattr(cfg.tune.space, stage)
        self.teacher_dir = teacher_dir or self.layout.teacher
        if stage == "compress" and not (self.teacher_dir / WEIGHTS_FILE).is_file():
            raise StylepressError(f"tune --stage compress needs a teacher: {self.teacher_dir} has none "
                                  "(train one, or pass --teacher DIR or --pretrained NAME)")
        if stage == "train" and not any(s in BUILTIN_STYLES for s in cfg.data.styles):
            raise StylepressError("tune --stage train scores val PSNR against a built-in (paired) style: "
                                  "data.styles has none")
        self.current, self.signal = None, None

    def objective(self, study: optuna.Study, trial: optuna.Trial) -> float:
        ahead = [t for t in study.get_trials(deepcopy=False) if t.number < trial.number and _counts(t)]
        if len(ahead) >= self.trials:
            trial.set_user_attr("surplus", True)
            raise _Surplus
        self.current = trial.number
        trial.set_user_attr("worker", f"{socket.gethostname()}:{os.getpid()}")
        params = {name: suggest(trial, name, rng) for name, rng in self.space.items()}
        cfg = _trial_config(self.cfg, self.stage, params, trial.number)
        trial_dir = trial_path(self.layout.tune, trial.number)
        styles = list(_style_names(cfg))
        curve = []

        def report(record: dict) -> None:
            scored = score(record, styles)
            if scored is None:
                return
            curve.append([record["step"], *scored])
            trial.set_user_attr("curve", curve)
            trial.report(scored[0], record["step"])
            if trial.should_prune():
                raise optuna.TrialPruned(f"pruned at step {record['step']}")

        start = time.monotonic()
        try:
            if self.stage == "train":
                result = train.run(cfg, trial_dir, force=True, show_progress=self.show_progress,
                                   callbacks=[report])
                self.signal = result.signal
            else:
                result = compress.run(cfg, trial_dir, force=True, teacher_dir=self.teacher_dir,
                                      show_progress=self.show_progress, callbacks=[report])
                trial.set_user_attr("macs", result["student_macs"])
                trial.set_user_attr("params_count", result["student_params"])
                self.signal = result.get("signal")
        except StylepressError as exc:
            trial.set_user_attr("error", str(exc))
            raise
        finally:
            trial.set_user_attr("wall_s", time.monotonic() - start)
            _drop_optimizer_state(trial_dir)
        if self.signal is not None:
            study.enqueue_trial(trial.params, user_attrs={"retry_of": trial.number})
            raise _Interrupted
        if not curve:
            raise StylepressError("no validation scored this trial (is [tune] val_every above [tune] steps?)")
        best = max(curve, key=lambda c: (c[1], c[2]))
        trial.set_user_attr("ssim", best[2])
        return best[1]

    def run_worker(self, study: optuna.Study, storage) -> bool:
        """Run trials until the study has `trials`; False when a signal stopped it (self.signal)."""
        retried = retry_dead_trials(study, storage)
        if retried:
            console.print(f"tune: {retried} trial(s) of a killed run queued again with the same settings")
        with progress_bar(self.trials, f"tune {self.stage}", enabled=self.show_progress) as bar:
            bar.advance(sum(t.state in COUNTED or "error" in t.user_attrs for t in study.trials))
            while True:
                self.current = None
                try:
                    study.optimize(lambda t: self.objective(study, t), n_trials=1,
                                   catch=(StylepressError, _Surplus))
                except _Interrupted:
                    return False
                except KeyboardInterrupt:  # between two trials' own signal handling
                    self.signal = 2
                    return False
                last = next((t for t in study.get_trials(deepcopy=False) if t.number == self.current), None)
                if last is None:
                    return True  # the surplus check ended it
                bar.advance()
                bar.update(_describe(last))


class PatientMedian(optuna.pruners.BasePruner):
    """Optuna's MedianPruner, consulted only for a trial that has stalled: whose last patience + 1
    validations did not beat its earlier best by more than min_delta. Hand-written because Optuna's
    PatientPruner counts a flat curve (a learning rate too small or too large to move anything) as
    improving and never lets it be pruned."""

    def __init__(self, median: optuna.pruners.BasePruner, patience: int, min_delta: float):
        self.median, self.patience, self.min_delta = median, patience, min_delta

    def prune(self, study: optuna.Study, trial: optuna.trial.FrozenTrial) -> bool:
        values = [v for _, v in sorted(trial.intermediate_values.items())]
        if len(values) <= self.patience + 1:
            return False
        earlier, recent = values[:-self.patience - 1], values[-self.patience - 1:]
        stalled = max(recent) <= max(earlier) + self.min_delta
        return stalled and self.median.prune(study, trial)


def pruner(cfg: Config) -> optuna.pruners.BasePruner:
    """Median pruning (below the median of earlier trials at the same step) after prune_warmup
    validations, made patient: a trial that beat its own best within its last patience + 1
    validations is never cut (GAN curves are noisy; a slow starter that keeps improving is not bad)."""
    tc = cfg.tune
    median = optuna.pruners.MedianPruner(n_startup_trials=tc.startup_trials,
                                         n_warmup_steps=tc.prune_warmup * tc.val_every)
    return PatientMedian(median, tc.patience, tc.min_delta_db) if tc.patience else median


def _style_names(cfg: Config) -> list[str]:
    return [Path(s).name for s in cfg.data.styles]


def _describe(t: optuna.trial.FrozenTrial) -> str:
    if t.state == optuna.trial.TrialState.COMPLETE:
        return f"trial {t.number}: {t.value:.2f} dB"
    if t.state == optuna.trial.TrialState.PRUNED:
        return f"trial {t.number}: pruned at step {t.last_step}"
    return f"trial {t.number}: {t.state.name.lower()} {t.user_attrs.get('error', '')[:80]}"


def _drop_optimizer_state(trial_dir: Path) -> None:
    """A finished trial keeps its weights, log and samples; optimizer state is most of its bytes."""
    for state in trial_dir.glob(f"*/{STATE_FILE}"):
        state.unlink(missing_ok=True)


def run(cfg: Config, stage: str, run_dir: str | Path, trials: int | None = None,
        storage: str | None = None, workers: int = 1, teacher_dir: Path | None = None,
        show_progress: bool = True, worker_index: int = 0) -> dict | None:
    """Tune `stage`; with workers > 1, workers - 1 more processes share the study. Returns the summary;
    {"signal": N} when a signal stopped the study (the same command resumes it); None in a helper."""
    trials = trials or cfg.tune.trials
    tuner = Tuner(cfg, stage, Path(run_dir), trials, teacher_dir, show_progress and worker_index == 0)
    tune_dir = tuner.layout.tune
    tune_dir.mkdir(parents=True, exist_ok=True)
    storage_obj = storage_for(storage, tune_dir)
    optuna.logging.set_verbosity(optuna.logging.ERROR)  # the study bar says how each trial ended
    torch.set_num_threads(max(1, (os.cpu_count() or 1) // workers))
    study_name = f"{cfg.name}-{stage}"
    helpers = []
    if worker_index == 0 and workers > 1:
        store = storage or str(tune_dir / "study.journal")
        resolved = tune_dir / f"{stage}.config.toml"  # with the --set overrides: every worker tunes the same
        write_text(resolved, to_toml(cfg))
        for i in range(1, workers):
            cmd = [sys.executable, "-m", "stylepress", "tune", str(resolved), "--stage", stage, "--out",
                   str(run_dir), "--trials", str(trials), "--workers", str(workers), "--worker-index", str(i),
                   *(["--teacher", str(teacher_dir)] if teacher_dir else [])]
            env = {**os.environ, "STYLEPRESS_TUNE_STORAGE": store}  # a URL's password stays out of argv
            helpers.append(subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL))
    study = optuna.create_study(study_name=study_name, storage=storage_obj, direction="maximize",
                                pruner=pruner(cfg), load_if_exists=True)
    # Seeded per worker and per resume, so that neither repeats another's first random trials.
    seed = cfg.seed * 7919 + worker_index + 104_729 * len(study.trials)
    study.sampler = (optuna.samplers.TPESampler(seed=seed, n_startup_trials=cfg.tune.startup_trials)
                     if cfg.tune.sampler == "tpe" else optuna.samplers.RandomSampler(seed=seed))
    try:
        finished = tuner.run_worker(study, storage_obj)
    finally:
        for helper in helpers:
            if helper.wait() != 0:
                console.print(f"tune: a helper worker exited with code {helper.returncode}")
    if not finished:
        return {"signal": tuner.signal}
    if worker_index:
        return None
    return write_outputs(cfg, stage, optuna.load_study(study_name=study_name, storage=storage_obj), tune_dir)


# -- outputs -----------------------------------------------------------------------------------------

def trial_record(t: optuna.trial.FrozenTrial) -> dict:
    return {"number": t.number, "state": t.state.name.lower(), "value": t.value,
            "ssim": t.user_attrs.get("ssim"), "params": t.params, "curve": t.user_attrs.get("curve", []),
            "wall_s": t.user_attrs.get("wall_s"), "worker": t.user_attrs.get("worker"),
            "macs": t.user_attrs.get("macs"), "retry_of": t.user_attrs.get("retry_of"),
            "error": t.user_attrs.get("error")}


def best_trial(trials: list[optuna.trial.FrozenTrial]) -> optuna.trial.FrozenTrial | None:
    """Highest worst-style PSNR; within TIE_DB of it, the highest worst-style SSIM."""
    done = [t for t in trials if t.state == optuna.trial.TrialState.COMPLETE]
    if not done:
        return None
    top = max(t.value for t in done)
    return max((t for t in done if t.value >= top - TIE_DB), key=lambda t: t.user_attrs.get("ssim", 0.0))


def write_outputs(cfg: Config, stage: str, study: optuna.Study, tune_dir: Path) -> dict:
    trials = [t for t in study.trials if not t.user_attrs.get("surplus")]
    best = best_trial(trials)
    if best is None:
        raise StylepressError(f"no trial of the {stage} study completed: see {tune_dir / 'study.json'} for why")
    best_cfg = with_params(cfg, stage, best.params)
    write_text(tune_dir / "best.toml", f"# stylepress tune --stage {stage}: trial {best.number}, worst-style val "
               f"PSNR {best.value:.2f} dB at {cfg.tune.steps} steps\n" + to_toml(best_cfg))
    states = {s: sum(t.state.name.lower() == s for t in trials) for s in ("complete", "pruned", "fail")}
    summary = {"stage": stage, "study": study.study_name, "date": now(), "machine": describe(),
               "objective": "worst style's val PSNR (dB); worst style's SSIM breaks ties within "
                            f"{TIE_DB} dB", "steps_per_trial": cfg.tune.steps, "states": states,
               "best": trial_record(best), "space": {k: v.model_dump(exclude_none=True)
                                                       for k, v in getattr(cfg.tune.space, stage).items()},
               "trials": [trial_record(t) for t in trials]}
    importance = _importance(study)
    summary["importance"] = importance
    write_json(tune_dir / "study.json", summary)
    _plot_history(trials, tune_dir / "history.png")
    if importance:
        _plot_bars(importance, "parameter importance (PED-ANOVA)", tune_dir / "importance.png")
    if stage == "compress":
        _plot_front(trials, tune_dir / "front.png")
    write_text(tune_dir / "report.md", report_md(summary, stage))
    return summary


def _importance(study: optuna.Study) -> dict[str, float]:
    done = [t for t in study.trials if t.state == optuna.trial.TrialState.COMPLETE]
    if len(done) < 2 or len({str(t.params) for t in done}) < 2:
        return {}
    try:
        return dict(optuna.importance.get_param_importances(study))
    except (ValueError, RuntimeError, ZeroDivisionError):
        return {}  # too few distinct trials to rank by


def report_md(summary: dict, stage: str) -> str:
    best = summary["best"]
    lines = [f"# Tune: {stage}", "", f"{summary['date'][:10]}, {summary['machine']['cpu']}; "
             f"{summary['steps_per_trial']} steps per trial; objective: {summary['objective']}.", "",
             f"Trials: {summary['states']['complete']} complete, {summary['states']['pruned']} pruned, "
             f"{summary['states']['fail']} failed. Best: trial {best['number']}, {best['value']:.2f} dB "
             f"(SSIM {best['ssim']:.3f}); its config is `best.toml`.", "",
             "| setting | best |", "|---|---|",
             *(f"| {k} | {v:.4g} |" if isinstance(v, float) else f"| {k} | {v} |" for k, v in best["params"].items()),
             "", "| trial | state | worst-style PSNR dB | SSIM | wall s |", "|---:|---|---:|---:|---:|",
             *(f"| {t['number']} | {t['state']} | {_fmt(t['value'], '.2f')} | {_fmt(t['ssim'], '.3f')} | "
               f"{_fmt(t['wall_s'], '.0f')} |" for t in summary["trials"]), "",
             "![history](history.png)"]
    if summary["importance"]:
        lines += ["", "![importance](importance.png)"]
    if stage == "compress":
        lines += ["", "![front](front.png)"]
    return "\n".join(lines) + "\n"


def _fmt(value, spec: str) -> str:
    return "" if value is None else format(value, spec)


def _plot_history(trials: list, path: Path) -> None:
    plt = pyplot()
    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(11, 4))
    done = [t for t in trials if t.state == optuna.trial.TrialState.COMPLETE]
    ax1.plot([t.number for t in done], [t.value for t in done], "o", label="trial")
    running, best_so_far = None, []
    for t in done:
        running = t.value if running is None else max(running, t.value)
        best_so_far.append(running)
    ax1.step([t.number for t in done], best_so_far, where="post", label="best so far")
    ax1.set(xlabel="trial", ylabel="worst-style val PSNR (dB)", title="optimization history")
    for t in trials:
        curve = t.user_attrs.get("curve") or []
        if curve:
            style = "-" if t.state == optuna.trial.TrialState.COMPLETE else ":"
            ax2.plot([c[0] for c in curve], [c[1] for c in curve], style, alpha=0.7)
    ax2.set(xlabel="step", ylabel="worst-style val PSNR (dB)", title="curves (dotted: pruned)")
    for ax in (ax1, ax2):
        ax.grid(True, alpha=0.3)
    ax1.legend()
    fig.tight_layout()
    save_png(fig, path, dpi=110)


def _plot_bars(values: dict[str, float], title: str, path: Path) -> None:
    plt = pyplot()
    fig, ax = plt.subplots(figsize=(6, 0.4 * len(values) + 1.2))
    names = list(values)[::-1]
    ax.barh(names, [values[n] for n in names])
    ax.set(title=title, xlabel="importance (normalized to sum to 1)")
    fig.tight_layout()
    save_png(fig, path, dpi=110)


def pareto(points: list[tuple[float, float]]) -> list[tuple[float, float]]:
    """(MACs, PSNR) points no other point beats on both (fewer MACs and more PSNR), by MACs."""
    front, best = [], float("-inf")
    for macs, value in sorted(points, key=lambda p: (p[0], -p[1])):
        if value > best:
            front.append((macs, value))
            best = value
    return front


def _plot_front(trials: list, path: Path) -> None:
    plt = pyplot()
    points = [(t.user_attrs["macs"], t.value) for t in trials
              if t.state == optuna.trial.TrialState.COMPLETE and "macs" in t.user_attrs]
    fig, ax = plt.subplots(figsize=(6, 4))
    if points:
        ax.plot([p[0] / 1e9 for p in points], [p[1] for p in points], "o", alpha=0.5, label="trial")
        front = pareto(points)
        ax.plot([p[0] / 1e9 for p in front], [p[1] for p in front], "-o", label="Pareto front")
        ax.legend()
    ax.set(xlabel="student GMACs", ylabel="worst-style PSNR to teacher (dB)", title="PSNR against MACs")
    ax.grid(True, alpha=0.3)
    fig.tight_layout()
    save_png(fig, path, dpi=110)
