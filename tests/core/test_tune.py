"""`stylepress tune`: real trials of the tiny config through Optuna, pruning, resume after SIGKILL, two
workers on one SQLite study; the patient median pruner on synthetic curves."""

import json
import signal
import subprocess
import sys
import time

import optuna
import pytest
from conftest import run_cli, tiny_run, write_config

from compress import PRUNE_FILE
from stylepress import tune
from stylepress.config import load_config
from stylepress.errors import StylepressError
from stylepress.layout import RunLayout

TUNE = """
[tune]
trials = {trials}
steps = 12
val_every = 3
startup_trials = 1
sampler = "random"
[tune.space.train]
{space}
"""
# lr 0.5 wrecks a GAN in a few steps; 2e-3 trains the tiny model: a space with an obviously bad half.
BAD_SPACE = 'lr = {choices = [2e-3, 0.5]}\nlambda_adv = {low = 0.01, high = 0.1, log = true}'


def _config(tmp_path, photos, trials=4, space=BAD_SPACE):
    return write_config(tmp_path, photos, TUNE.format(trials=trials, space=space), styles=("sketch", "cartoon"))


def _study(run_dir, name="tiny-train"):
    return optuna.load_study(study_name=name, storage=tune.storage_for(None, run_dir / "tune"))


@pytest.mark.e2e
def test_a_four_trial_tune_prunes_the_bad_half_and_writes_a_valid_best_config(tmp_path, demo_photos):
    cfg_path = _config(tmp_path, demo_photos)
    result = run_cli("tune", cfg_path, "--out", tmp_path / "run")
    assert result.returncode == 0, result.stderr[-2000:]
    out = tmp_path / "run" / "tune"
    study = json.loads((out / "study.json").read_text())
    states = [t["state"] for t in study["trials"]]
    assert len(states) == 4 and states.count("pruned") >= 1 and "complete" in states
    pruned = [t for t in study["trials"] if t["state"] == "pruned"]
    assert all(t["params"]["lr"] == 0.5 for t in pruned)  # only the bad half is cut
    assert all(t["curve"] and t["wall_s"] > 0 for t in study["trials"])
    best = load_config(out / "best.toml")  # validates like any config
    assert best.train.lr == study["best"]["params"]["lr"] == 2e-3
    assert best.train.steps == load_config(cfg_path).train.steps  # the user's budget, not the trial's
    for name in ("report.md", "history.png"):
        assert (out / name).stat().st_size > 0
    assert not list(out.glob("trials/*/teacher/state.pt"))  # optimizer state dropped after each trial
    assert list(out.glob("trials/*/teacher/weights.safetensors"))


@pytest.mark.e2e
def test_a_sigkilled_tune_resumes_to_the_requested_count_and_retries_the_running_trial(tmp_path, demo_photos):
    cfg_path = _config(tmp_path, demo_photos, trials=3, space='lr = {low = 1e-4, high = 2e-3, log = true}')
    # Long trials, so that the kill lands inside one.
    cfg_path.write_text(cfg_path.read_text().replace("steps = 12", "steps = 400").replace("val_every = 3",
                                                                                          "val_every = 100"))
    run_dir = tmp_path / "run"
    proc = subprocess.Popen([sys.executable, "-m", "stylepress", "tune", str(cfg_path), "--out", str(run_dir)],
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    deadline = time.time() + 240
    while time.time() < deadline and not (tune.trial_path(run_dir / "tune", 1) / "teacher" / "log.jsonl").exists():
        assert proc.poll() is None, proc.communicate()[1][-2000:]
        time.sleep(0.2)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    killed = _study(run_dir)
    running = [t for t in killed.trials if t.state == optuna.trial.TrialState.RUNNING]
    assert len(running) == 1 and running[0].number == 1

    cfg_path.write_text(cfg_path.read_text().replace("steps = 400", "steps = 12").replace("val_every = 100",
                                                                                          "val_every = 3"))
    result = run_cli("tune", cfg_path, "--out", run_dir)
    assert result.returncode == 0, result.stderr[-2000:]
    trials = _study(run_dir).trials
    numbers = [t.number for t in trials]
    assert len(numbers) == len(set(numbers))
    finished = [t for t in trials if t.state in tune.COUNTED]
    assert len(finished) == 3
    retry = next(t for t in trials if t.user_attrs.get("retry_of") == 1)
    assert retry.params == running[0].params and retry.state in tune.COUNTED
    assert trials[1].state == optuna.trial.TrialState.FAIL


@pytest.mark.e2e
def test_two_workers_share_one_sqlite_study(tmp_path, demo_photos):
    cfg_path = _config(tmp_path, demo_photos, space='lr = {low = 1e-4, high = 2e-3, log = true}')
    cfg_path.write_text(cfg_path.read_text().replace("val_every = 3", "val_every = 30"))
    url = f"sqlite:///{tmp_path / 'study.db'}"
    # Trials of a few seconds, so that the second worker (a new process, importing torch) gets its
    # share; given with --set, which must reach that worker too (the file says 12 steps).
    result = run_cli("tune", cfg_path, "--out", tmp_path / "run", "--storage", url, "--workers", "2",
                     "--set", "tune.steps=90")
    assert result.returncode == 0, result.stderr[-2000:]
    study = optuna.load_study(study_name="tiny-train", storage=url)
    counted = [t for t in study.trials if t.state in tune.COUNTED]
    assert len(counted) == 4
    workers = {t.user_attrs["worker"] for t in counted}
    assert len(workers) == 2  # both processes ran trials
    assert all(t.user_attrs["curve"][-1][0] == 90 for t in counted if t.state == tune.COUNTED[0])
    assert json.loads((tmp_path / "run" / "tune" / "study.json").read_text())["states"]["complete"] >= 1


def test_the_patient_median_pruner_spares_a_trial_that_still_improves(tmp_path, demo_photos):
    cfg = load_config(_config(tmp_path, demo_photos))
    study = optuna.create_study(direction="maximize", pruner=tune.pruner(cfg))
    for curve in ([20, 22, 24, 26], [20, 22, 24, 26]):  # two earlier trials: the medians
        trial = study.ask()
        for step, value in zip((3, 6, 9, 12), curve, strict=True):
            trial.report(value, step)
        study.tell(trial, curve[-1])

    def prunes(curve):
        trial = study.ask()
        for step, value in zip((3, 6, 9, 12), curve, strict=True):
            trial.report(value, step)
        verdict = trial.should_prune()
        study.tell(trial, state=optuna.trial.TrialState.PRUNED)
        return verdict

    assert not prunes([10, 11, 12, 13])  # below the median but setting new bests: spared
    assert prunes([10, 12, 11, 11.5])  # below the median and stalled for two validations: cut
    assert prunes([10, 10, 10, 10])  # flat counts as stalled (Optuna's PatientPruner would spare it)
    assert not prunes([30, 31, 29, 28])  # stalled but above the median


def test_the_search_space_is_validated_like_any_config_key(tmp_path, demo_photos):
    for space, message in (("bogus = {choices = [1]}", "bogus: unknown key"),
                           ("steps = {low = 1, high = 9}", "steps: unknown key"),
                           ("lambda_adv = {low = 0.0, high = 0.1}", "floor"),
                           ("gan_loss = {choices = [\"lsgan\", \"wgan\"]}", "wgan"),
                           ("lr = {low = 0.1, high = 0.01}", "low must be below high"),
                           ("lr = {low = 0.0, high = 0.01, log = true}", "log range")):
        with pytest.raises(StylepressError, match=message):
            load_config(_config(tmp_path, demo_photos, space=space))


def test_the_best_trial_breaks_psnr_ties_by_ssim_and_the_front_keeps_undominated_points():
    def done(value, ssim):
        return optuna.trial.create_trial(value=value, user_attrs={"ssim": ssim})

    assert tune.best_trial([done(24.0, 0.80), done(24.005, 0.70), done(23.0, 0.99)]).user_attrs["ssim"] == 0.80
    assert tune.pareto([(3e9, 25.0), (2e9, 24.0), (2.5e9, 23.0), (1e9, 20.0)]) == [(1e9, 20.0), (2e9, 24.0),
                                                                                   (3e9, 25.0)]


@pytest.mark.e2e
def test_a_compress_tune_scores_students_against_the_teacher_and_plots_psnr_against_macs(tmp_path):
    config, run_dir = tiny_run(tmp_path, serving="")
    config.write_text(config.read_text().replace("[serving]", """[compress]
ratio = 0.5
batch_size = 2
[train]
crop = 32
[tune]
trials = 4
steps = 10
val_every = 5
startup_trials = 1
sampler = "random"
[tune.space.compress]
student = {choices = ["pruned", "mobile"]}
round_to = {choices = [2, 4]}
lr = {low = 1e-4, high = 2e-3, log = true}
[serving]"""))
    result = run_cli("tune", config, "--stage", "compress", "--out", run_dir)
    assert result.returncode == 0, result.stderr[-2000:]
    out = run_dir / "tune"
    study = json.loads((out / "study.json").read_text())
    assert len(study["trials"]) == 4 and all(t["macs"] for t in study["trials"])
    assert {t["params"]["round_to"] for t in study["trials"]} <= {2, 4}
    kinds = {t["number"]: t["params"]["student"] for t in study["trials"]}
    assert set(kinds.values()) == {"pruned", "mobile"}  # the student's kind is searchable like any key
    for number, kind in kinds.items():
        prune_json = RunLayout(tune.trial_path(out, number)).student / PRUNE_FILE
        assert json.loads(prune_json.read_text())["student"] == kind
    assert load_config(out / "best.toml").compress.round_to == study["best"]["params"]["round_to"]
    assert (out / "front.png").stat().st_size > 0 and "front.png" in (out / "report.md").read_text()
