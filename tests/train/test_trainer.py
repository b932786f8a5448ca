import json
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from conftest import run_cli, write_config
from safetensors.torch import load_file

from stylepress import train
from stylepress.config import load_config
from stylepress.errors import StylepressError
from stylepress.models import load_generator
from stylepress.train import trainer
from stylepress.train.loop import Progress, _keep_best, read_log

# Real training runs (seconds to minutes each): the e2e tier, not unit.
pytestmark = pytest.mark.e2e


def _state_step(teacher) -> int:
    return torch.load(teacher / "state.pt", weights_only=True)["step"]


def _start(cfg_path, out) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", "stylepress", "train", str(cfg_path), "--out", str(out)],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def _wait_for(predicate, proc, timeout=120):
    end = time.time() + timeout
    while time.time() < end:
        if predicate():
            return
        assert proc.poll() is None, proc.communicate()
        time.sleep(0.01)
    raise AssertionError("timed out")


def test_training_writes_a_loadable_teacher_with_logs_and_samples(tmp_path, portraits):
    cfg = load_config(write_config(tmp_path, portraits, styles=("sketch", "oil"), steps=6, val_every=3))
    result = train.run(cfg, tmp_path / "run", show_progress=False)
    teacher = tmp_path / "run" / "teacher"
    assert result.status == "done" and result.step == 6
    for name in ("weights.safetensors", "last.safetensors", "arch.json", "state.pt", "config.toml",
                 "samples.png", "log.jsonl"):
        assert (teacher / name).is_file(), name
    records = read_log(teacher / "log.jsonl")
    steps = [r for r in records if r.get("kind") != "val"]
    vals = [r for r in records if r.get("kind") == "val"]
    assert [r["step"] for r in steps] == [1, 2, 3, 4, 5, 6]
    assert {"g_loss", "d_loss", "l_style", "l_content", "l_adv", "lr", "s_per_step"} <= set(steps[0])
    assert all(0 < r["s_per_step"] < 60 for r in steps)  # wall seconds of a step, not a timing target
    assert [r["step"] for r in vals] == [3, 6]
    assert {"val_psnr", "val_ssim", "val_psnr_sketch", "val_psnr_oil", "baseline_psnr_oil", "val_l1_oil",
            "val_l_content_sketch"} <= set(vals[0])
    model, spec = load_generator(teacher)
    assert spec.styles == ("sketch", "oil")
    x = torch.rand(1, 3, 36, 44) * 2 - 1
    assert model(x, torch.tensor([1])).shape == x.shape


def test_a_short_run_beats_the_identity_baseline_on_real_portraits(tmp_path, portraits):
    cfg = load_config(write_config(tmp_path, portraits, steps=150, batch_size=4, val_every=150,
                                   checkpoint_every=150, log_every=50, lr=1e-3))
    result = train.run(cfg, tmp_path / "run", show_progress=False)
    val = result.last_val
    assert val["val_psnr_sketch"] > val["baseline_psnr_sketch"] + 1.0, val


@pytest.mark.slow
def test_resume_after_sigkill_matches_uninterrupted_run(tmp_path, demo_photos):
    steps = 200
    cfg_path = write_config(tmp_path, demo_photos, styles=("sketch", "cartoon"), steps=steps,
                            checkpoint_every=20, val_every=100, log_every=10)
    reference = tmp_path / "reference"
    assert run_cli("train", cfg_path, "--out", reference).returncode == 0

    killed = tmp_path / "killed"
    proc = _start(cfg_path, killed)
    _wait_for(lambda: (killed / "teacher" / "state.pt").exists(), proc)
    assert proc.poll() is None, "the run ended before it could be killed"
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert proc.returncode == -signal.SIGKILL
    interrupted_at = _state_step(killed / "teacher")
    assert 0 < interrupted_at < steps

    resumed = run_cli("train", cfg_path, "--out", killed, "--resume")
    assert resumed.returncode == 0, resumed.stderr
    for name in ("last.safetensors", "weights.safetensors"):
        a = load_file(reference / "teacher" / name)
        b = load_file(killed / "teacher" / name)
        assert a.keys() == b.keys()
        for k in a:
            assert torch.allclose(a[k], b[k], atol=1e-6, rtol=0), (name, k)
    raw_a = torch.load(reference / "teacher" / "state.pt", weights_only=True)["G"]
    raw_b = torch.load(killed / "teacher" / "state.pt", weights_only=True)["G"]
    assert all(torch.allclose(raw_a[k], raw_b[k], atol=1e-6, rtol=0) for k in raw_a)
    # The log is continuous: steps after the checkpoint appear once, as if never interrupted.
    log_a = [r["step"] for r in read_log(reference / "teacher" / "log.jsonl")]
    log_b = [r["step"] for r in read_log(killed / "teacher" / "log.jsonl")]
    assert log_a == log_b


def test_sigterm_saves_a_checkpoint_before_exiting(tmp_path, demo_photos):
    cfg_path = write_config(tmp_path, demo_photos, steps=100_000, checkpoint_every=10_000, val_every=10_000)
    proc = _start(cfg_path, tmp_path / "run")
    log = tmp_path / "run" / "teacher" / "log.jsonl"
    _wait_for(lambda: len(read_log(log)) >= 5, proc)
    proc.send_signal(signal.SIGTERM)
    proc.communicate(timeout=120)
    assert proc.returncode == 128 + signal.SIGTERM
    last_logged = max(r["step"] for r in read_log(log))
    assert _state_step(tmp_path / "run" / "teacher") == last_logged >= 5


def test_nan_loss_stops_with_a_clear_message_and_keeps_the_last_checkpoint(tmp_path, demo_photos, monkeypatch):
    cfg = load_config(write_config(tmp_path, demo_photos, steps=10, checkpoint_every=3, val_every=100))
    calls = {"n": 0}
    real = trainer.losses.content_loss

    def poisoned(output, photo):
        calls["n"] += 1
        loss = real(output, photo)
        return loss * float("nan") if calls["n"] == 5 else loss

    monkeypatch.setattr(trainer.losses, "content_loss", poisoned)
    with pytest.raises(StylepressError, match=r"non-finite loss at step 5 \(.*l_content=nan"):
        train.run(cfg, tmp_path / "run", show_progress=False)
    teacher = tmp_path / "run" / "teacher"
    assert _state_step(teacher) == 3
    assert load_generator(teacher, "last.safetensors")  # the checkpoint is intact


def test_best_checkpoint_and_early_stopping_follow_val_psnr():
    prog, saved = Progress(), []
    for step, psnr in enumerate([10.0, 12.0, 11.0, 13.0, 12.0, 12.5, 14.0], start=1):
        prog.step = step
        if _keep_best({"val_psnr": psnr}, prog, 2, lambda: saved.append(prog.step)):
            break
    assert saved == [1, 2, 4] and prog.step == 6 and prog.best == 13.0


def test_existing_checkpoint_is_not_overwritten_without_force(tmp_path, demo_photos):
    cfg = load_config(write_config(tmp_path, demo_photos, steps=2))
    train.run(cfg, tmp_path / "run", show_progress=False)
    with pytest.raises(StylepressError, match="--resume"):
        train.run(cfg, tmp_path / "run", show_progress=False)
    assert train.run(cfg, tmp_path / "run", force=True, show_progress=False).status == "done"


def test_unpaired_style_folder_trains_with_gram_and_adversarial_terms(tmp_path, portraits):
    paintings = tmp_path / "paintings"
    paintings.mkdir()
    for p in sorted(portraits.glob("*.jpg"))[:2]:
        (paintings / p.name).write_bytes(p.read_bytes())
    cfg = load_config(write_config(tmp_path, portraits, styles=("sketch", str(paintings)), steps=4))
    result = train.run(cfg, tmp_path / "run", show_progress=False)
    records = read_log(tmp_path / "run" / "teacher" / "log.jsonl")
    # Styles take turns and log_every is 1: even steps trained the unpaired style.
    unpaired = [r for r in records if r.get("kind") != "val" and r["step"] % 2 == 0]
    assert result.status == "done" and unpaired and all(r["l_style"] > 0 for r in unpaired)
    assert "val_psnr_paintings" not in result.last_val and "val_psnr_sketch" in result.last_val


def test_torchrun_ddp_on_cpu_trains_with_two_processes(tmp_path, demo_photos):
    cfg_path = write_config(tmp_path, demo_photos, steps=6, checkpoint_every=3, val_every=3)
    result = subprocess.run(
        [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
         "-m", "stylepress", "train", str(cfg_path), "--out", str(tmp_path / "run")],
        capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    state = torch.load(tmp_path / "run" / "teacher" / "state.pt", weights_only=True)
    assert state["step"] == 6 and len(state["data_rng"]) == 2
    assert not torch.equal(state["data_rng"][0], state["data_rng"][1])  # ranks draw different crops
    assert json.loads((tmp_path / "run" / "teacher" / "arch.json").read_text())["styles"] == ["sketch"]


def test_a_checkpoint_from_before_a_config_key_existed_still_resumes(tmp_path, demo_photos):
    from stylepress.train.trainer import _same_section

    cfg = load_config(write_config(tmp_path, demo_photos))
    older = {k: v for k, v in json.loads(cfg.model.model_dump_json()).items() if k not in ("weights", "options")}
    assert _same_section(json.dumps(older), cfg.model)  # keys added later, left at their defaults
    assert not _same_section(json.dumps({**older, "ngf": older["ngf"] + 1}), cfg.model)
    assert not _same_section(json.dumps({**older, "gone": 1}), cfg.model)


def _rank_pids(root: int) -> dict[int, int]:
    """RANK -> pid of the workers torchrun started (descendants of `root`)."""
    from stylepress.benchmarks.load import process_tree

    ranks = {}
    for pid in process_tree(root):
        try:
            raw = Path(f"/proc/{pid}/environ").read_bytes().decode(errors="replace").split("\0")
        except OSError:
            continue
        env = dict(e.split("=", 1) for e in raw if "=" in e)
        if "RANK" in env and "LOCAL_RANK" in env:
            ranks[int(env["RANK"])] = pid
    return ranks


def test_sigterm_on_one_ddp_rank_stops_both_ranks_at_the_same_step(tmp_path, demo_photos):
    cfg_path = write_config(tmp_path, demo_photos, steps=100_000, checkpoint_every=10_000, val_every=10_000)
    proc = subprocess.Popen(
        [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
         "-m", "stylepress", "train", str(cfg_path), "--out", str(tmp_path / "run")],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, start_new_session=True,
        env={**os.environ, "COLUMNS": "200"})
    log = tmp_path / "run" / "teacher" / "log.jsonl"
    try:
        _wait_for(lambda: len(read_log(log)) >= 5, proc, timeout=240)
        ranks = _rank_pids(proc.pid)
        assert set(ranks) == {0, 1}
        os.kill(ranks[1], signal.SIGTERM)  # one rank only, as a node's OOM killer or scheduler would
        _, err = proc.communicate(timeout=120)  # no hang: rank 0 stops too
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
    stopped = [int(s) for s in re.findall(r"interrupted at step (\d+)", err)]
    assert len(stopped) == 2 and stopped[0] == stopped[1], err[-3000:]
    assert _state_step(tmp_path / "run" / "teacher") == stopped[0]  # one checkpoint, at that step
    assert max(r["step"] for r in read_log(log)) == stopped[0]
