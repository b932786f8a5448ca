"""Pruning (torch-pruning) and distillation on small real models, CPU."""

import json
import subprocess
import sys

import pytest
import torch
import torch_pruning as tp
from conftest import TINY_SPEC, run_cli, tiny_run, write_config
from torch import nn

from stylepress import export
from stylepress.compress.pruning import count, make_activations_out_of_place, prune, prune_to_macs
from stylepress.config import load_config
from stylepress.errors import StylepressError
from stylepress.models import ArchSpec, build_generator, load_generator, save_generator
from stylepress.models.layers import StyleNorm

# Real pruning and distillation runs: the e2e tier, not unit.
pytestmark = pytest.mark.e2e

SMALL = TINY_SPEC.model_copy(update={"kwargs": {"ngf": 16, "n_blocks": 3, "norm": "instance", "num_styles": 2}})


def _model(spec=SMALL, seed=0):
    torch.manual_seed(seed)
    model = build_generator(spec)
    with torch.no_grad():  # trained-looking tables: each style scales channels differently
        for m in model.modules():
            if isinstance(m, StyleNorm) and m.num_styles > 1:
                m.weight.uniform_(0.5, 1.5)
                m.bias.uniform_(-0.2, 0.2)
    return model.eval()


def _inputs(h=48, w=64):
    return torch.randn(2, 3, h, w), torch.tensor([0, 1])


def test_cyclegan_teacher_is_56_8_gmacs_at_256():
    spec = TINY_SPEC.model_copy(update={"kwargs": {"ngf": 64, "n_blocks": 9, "norm": "instance", "num_styles": 2}})
    macs, params = count(build_generator(spec), spec, 256)
    assert round(macs / 1e9, 1) in (56.8, 56.9) and 11.3e6 < params < 11.5e6


@pytest.mark.parametrize("factor", [4, 10])
def test_pruning_hits_target_macs_within_3_percent(factor):
    model = _model()
    base, _ = count(model, SMALL, 128)
    pruned = prune_to_macs(model, SMALL, base / factor, 128, round_to=2)
    assert abs(pruned.macs - base / factor) <= 0.03 * base / factor
    assert count(pruned.model, pruned.spec, 128)[0] == pruned.macs
    assert pruned.model(*_inputs()).shape == (2, 3, 48, 64)


def test_unreachable_target_is_a_one_line_error():
    model = _model()
    base, _ = count(model, SMALL, 128)
    with pytest.raises(StylepressError, match="not below the teacher"):
        prune_to_macs(model, SMALL, base * 2, 128)


def test_conditional_norm_tables_are_pruned_with_their_conv_channels():
    model = _model()
    conv, norm = model.stem.conv, model.stem.norm
    with torch.no_grad():
        conv.weight[1::2].mul_(1e-3)  # odd output channels: the least important by L1
    weight, bias = norm.weight.detach().clone(), norm.bias.detach().clone()
    pruned = prune(model, SMALL, 0.5, round_to=1, resolution=64).model
    assert pruned.stem.conv.out_channels == 8 == pruned.stem.norm.channels
    assert torch.equal(pruned.stem.norm.weight, weight[:, 0::2])  # the even channels' tables, per style
    assert torch.equal(pruned.stem.norm.bias, bias[:, 0::2])
    for m in pruned.modules():  # every table matches its layer's width
        if isinstance(m, StyleNorm):
            assert m.weight.shape == m.bias.shape == (2, m.channels)


def test_output_conv_and_trunk_stay_consistent():
    pruned = prune(_model(), SMALL, 0.6, round_to=1, resolution=64)
    w = pruned.spec.kwargs["widths"]
    assert pruned.model.head[1].out_channels == 3
    assert all(b.conv2.out_channels == w["down"][1] for b in pruned.model.blocks)  # coupled residual trunk


@pytest.mark.parametrize("detail", [False, True])
def test_the_colour_skip_is_kept_whole_by_pruning(tmp_path, detail):
    spec = SMALL.with_kwargs(residual=True, colour_skip=True, detail_skip=detail)
    model = _model(spec)
    rows = model.skip.weight.detach().clone(), model.skip.bias.detach().clone()
    pruned = prune(model, spec, 0.5, round_to=1, resolution=64)
    assert pruned.spec.kwargs["colour_skip"] and pruned.model.skip.channels == (6 if detail else 3)
    assert torch.equal(pruned.model.skip.weight, rows[0]) and torch.equal(pruned.model.skip.bias, rows[1])
    save_generator(pruned.model, pruned.spec, tmp_path / "student")
    loaded, _ = load_generator(tmp_path / "student")
    x = _inputs()
    with torch.no_grad():
        assert torch.equal(loaded(*x), pruned.model(*x))


def _cyclegan_like(inplace: bool) -> nn.Sequential:
    """Conv -> InstanceNorm(affine) -> ReLU(inplace=True), as in published generators."""
    return nn.Sequential(
        nn.ReflectionPad2d(3), nn.Conv2d(3, 16, 7), nn.InstanceNorm2d(16, affine=True), nn.ReLU(inplace),
        nn.Conv2d(16, 32, 3, 2, 1), nn.InstanceNorm2d(32, affine=True), nn.ReLU(inplace),
        nn.ConvTranspose2d(32, 16, 3, 2, 1, output_padding=1), nn.InstanceNorm2d(16, affine=True), nn.ReLU(inplace),
        nn.Conv2d(16, 3, 7, padding=3), nn.Tanh()).eval()


def _torch_prune(model: nn.Module) -> nn.Module:
    x = torch.randn(2, 3, 32, 32)
    tp.pruner.MetaPruner(model, x, importance=tp.importance.MagnitudeImportance(p=1), pruning_ratio=0.5,
                         ignored_layers=[model[10]]).step()
    return model(x)


def test_in_place_activations_no_longer_break_pruning():
    # The unfixed behaviour: traced through an in-place ReLU, the norm before it keeps its width.
    with pytest.raises(ValueError, match="num_features"):
        _torch_prune(_cyclegan_like(inplace=True))
    # The fix stylepress applies before tracing makes the very same model prune cleanly.
    model = _cyclegan_like(inplace=True)
    assert make_activations_out_of_place(model) == 3
    assert _torch_prune(model).shape == (2, 3, 32, 32)
    # ... and `prune` applies it: an in-place generator comes out pruned, runnable, out-of-place.
    generator = _model()
    for m in generator.modules():
        if isinstance(m, nn.ReLU):
            m.inplace = True
    pruned = prune(generator, SMALL, 0.5, resolution=64).model
    assert pruned(*_inputs()).shape == (2, 3, 48, 64)
    assert not any(getattr(m, "inplace", False) for m in pruned.modules())


def test_save_then_load_of_a_pruned_student_gives_identical_outputs(tmp_path):
    pruned = prune(_model(), SMALL, 0.5, round_to=1, resolution=64)
    save_generator(pruned.model, pruned.spec, tmp_path / "student")
    loaded, spec = load_generator(tmp_path / "student")
    x = _inputs()
    with torch.no_grad():
        assert torch.equal(loaded(*x), pruned.model(*x))
    assert spec.kwargs["widths"] == pruned.spec.kwargs["widths"]


@pytest.fixture(scope="module")
def compressed(tmp_path_factory):
    folder = tmp_path_factory.mktemp("compress")
    config, run_dir = tiny_run(folder, serving="")
    config.write_text(config.read_text().replace("[serving]", """[compress]
ratio = 0.5
round_to = 2
distill_steps = 40
batch_size = 2
lr = 1e-3
val_every = 10
checkpoint_every = 10
[train]
crop = 32
[serving]"""))
    result = run_cli("compress", config, "--out", run_dir)
    assert result.returncode == 0, result.stderr
    return config, run_dir


def test_compress_writes_prune_json_and_distillation_improves_fidelity(compressed):
    _, run_dir = compressed
    student = run_dir / "student"
    prune_json = json.loads((student / "prune.json").read_text())
    for key in ("teacher_macs", "student_macs", "teacher_params", "student_params", "resolution"):
        assert isinstance(prune_json[key], int)
    assert prune_json["student_macs"] < prune_json["teacher_macs"] and prune_json["resolution"] == 128
    vals = [r for r in map(json.loads, (student / "log.jsonl").read_text().splitlines()) if r.get("kind") == "val"]
    losses = [r["l1"] for r in map(json.loads, (student / "log.jsonl").read_text().splitlines()) if "l1" in r]
    assert vals[-1]["val_psnr"] > vals[0]["val_psnr"]  # student vs teacher, on val portraits
    assert sum(losses[-2:]) < sum(losses[:2])  # L1 to the teacher falls
    for name in ("weights.safetensors", "arch.json", "samples.png", "state.pt"):
        assert (student / name).is_file()


def test_pruned_student_stylizes_and_exports_through_the_parity_gate(compressed, tmp_path):
    config, run_dir = compressed
    photo = sorted((config.parent / "photos").iterdir())[0]
    result = run_cli("stylize", "--checkpoint", run_dir / "student", photo, "-o", tmp_path / "s.png", "--size", "64")
    assert result.returncode == 0, result.stderr
    paths = export.run(load_config(config), run_dir, show_progress=False)
    assert {"teacher.fp32", "student.fp32", "student.int8"} <= set(paths)
    parity = json.loads((run_dir / "export" / "parity.json").read_text())
    assert parity["student"]["passed"]


def test_compress_resume_continues_and_refuses_to_overwrite(compressed):
    config, run_dir = compressed
    result = run_cli("compress", config, "--out", run_dir)
    assert result.returncode == 2 and "--resume" in result.stderr
    text = config.read_text().replace("distill_steps = 40", "distill_steps = 50")
    config.write_text(text)
    result = run_cli("compress", config, "--out", run_dir, "--resume")
    assert result.returncode == 0, result.stderr
    steps = [json.loads(line)["step"] for line in (run_dir / "student" / "log.jsonl").read_text().splitlines()]
    assert steps == sorted(steps) and steps[-1] == 50


def test_compress_sweep_writes_one_student_per_factor_and_the_frontier(tmp_path):
    config, run_dir = tiny_run(tmp_path, serving="")
    save_generator(_model(), SMALL, tmp_path / "elsewhere" / "teacher")  # --teacher: not the run's own
    config.write_text(config.read_text().replace("[serving]", "[compress]\nround_to = 1\ndistill_steps = 400\n"
                                                 "batch_size = 2\nval_every = 2\n[train]\ncrop = 32\n[serving]"))
    result = run_cli("compress", config, "--out", run_dir, "--sweep", "2,4",
                     "--teacher", tmp_path / "elsewhere" / "teacher", "--set", "compress.distill_steps=4")
    assert result.returncode == 0, result.stderr
    sweep = json.loads((run_dir / "student" / "sweep.json").read_text())
    assert [(p["factor"], p["distill_steps"]) for p in sweep["points"]] == [(2, 4), (4, 4)]
    for p in sweep["points"]:
        assert abs(p["macs_reduction"] - p["factor"]) <= 0.03 * p["factor"] * 1.1
    assert (run_dir / "student" / "sweep.png").stat().st_size > 0
    assert (run_dir / "student" / "sweep" / "x4" / "weights.safetensors").is_file()


def test_bad_sweep_is_a_one_line_error(tmp_path):
    config, run_dir = tiny_run(tmp_path)
    result = run_cli("compress", config, "--out", run_dir, "--sweep", "2,x")
    assert result.returncode == 2 and result.stderr.count("\n") == 1 and "--sweep" in result.stderr


@pytest.mark.parametrize("importance", ["l2", "taylor"])
def test_other_importances_prune_to_a_runnable_model(importance):
    photo, style = _inputs(64, 64)
    batch = (photo, style, torch.tanh(photo * 2)) if importance == "taylor" else None
    pruned = prune(_model(), SMALL, 0.5, importance=importance, resolution=64, taylor_batch=batch)
    assert pruned.model(*_inputs()).shape == (2, 3, 48, 64) and pruned.macs < count(_model(), SMALL, 64)[0]


def test_adversarial_term_uses_the_trained_teachers_discriminator(tmp_path, demo_photos):
    config = write_config(tmp_path, demo_photos, styles=("sketch", "oil"), steps=2,
                          body="[compress]\nratio = 0.5\nround_to = 1\ndistill_steps = 3\nbatch_size = 2\n"
                               "val_every = 3\nlambda_adv = 0.1\n")
    assert run_cli("train", config, "--out", tmp_path / "run").returncode == 0
    # The discriminator is rebuilt as the teacher trained it, whatever the config at hand says of its shape.
    result = run_cli("compress", config, "--out", tmp_path / "run", "--set", "model.ndf=12")
    assert result.returncode == 0, result.stderr
    records = [json.loads(line) for line in (tmp_path / "run" / "student" / "log.jsonl").read_text().splitlines()]
    assert all("adv" in r for r in records if "loss" in r)
    (tmp_path / "run" / "teacher" / "state.pt").unlink()
    result = run_cli("compress", config, "--out", tmp_path / "run", "--force")
    assert result.returncode == 2 and "teacher's discriminator" in result.stderr


def test_ablation_suite_distils_with_and_without_the_feature_term(tmp_path):
    config, run_dir = tiny_run(tmp_path, serving="")
    save_generator(_model(), SMALL, run_dir / "teacher")
    config.write_text(config.read_text().replace("[serving]", "[compress]\nratio = 0.5\nround_to = 1\n"
                                                 "distill_steps = 4\nbatch_size = 2\nval_every = 2\nlog_every = 1\n"
                                                 "[train]\ncrop = 32\n[serving]"))
    result = subprocess.run([sys.executable, "-m", "stylepress.benchmarks", "ablation", str(config),
                             "--out", str(run_dir), "--feat", "0.5"],
                            capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr
    report = json.loads((run_dir / "ablation" / "ablation.json").read_text())
    assert [p["lambda_feat"] for p in report["points"]] == [0.5, 0.0]
    for weight in (0.5, 0):
        log = [json.loads(line) for line in (run_dir / "ablation" / f"feat{weight:g}" / "student" / "log.jsonl")
               .read_text().splitlines()]
        r = next(r for r in log if "feat" in r)  # the loss adds λ_feat·feat to L1 + (1 - SSIM)
        assert r["loss"] == pytest.approx(r["l1"] + r["ssim"] + weight * r["feat"], rel=1e-5) and r["feat"] > 0
    assert "| λ_feat |" in (run_dir / "ablation" / "ablation.md").read_text() and "| 0 |" in result.stdout


@pytest.mark.parametrize(("arch", "options"), [
    ("cyclegan-resnet", {"ngf": 16, "n_blocks": 3}), ("cyclegan-resnet", {"ngf": 16, "n_blocks": 2, "norm": "batch",
                                                                        "use_dropout": True}),
    ("pix2pix-unet", {"num_downs": 6, "ngf": 8}), ("animegan2", {}), ("fast-neural-style", {})])
def test_every_imported_family_prunes_saves_and_reloads_identically(tmp_path, arch, options):
    from stylepress.models.published import build

    torch.manual_seed(0)
    teacher = build(arch, options).eval()
    spec = ArchSpec(arch=arch, kwargs=options, styles=("s",), size_multiple=teacher.size_multiple)
    pruned = prune(teacher, spec, 0.5, round_to=1, resolution=64)
    assert pruned.macs < count(teacher, spec, 64)[0]
    save_generator(pruned.model, pruned.spec, tmp_path / "student")
    loaded, loaded_spec = load_generator(tmp_path / "student")
    x = torch.rand(1, 3, 64, 64) * 2 - 1
    with torch.no_grad():
        assert torch.equal(loaded(x), pruned.model.eval()(x)) and loaded(x).shape == x.shape


@pytest.mark.parametrize(("arch", "options", "factor", "round_to"), [
    ("cyclegan-resnet", {}, 20, 8), ("animegan2", {}, 8, 8), ("cyclegan-resnet", {"n_blocks": 6}, 20, 4)])
def test_published_families_meet_a_macs_target(arch, options, factor, round_to, caplog):
    # At round_to 8 a uniform ratio alone misses each of these targets by more than 3% (the search
    # once gave up on all three): the blocks' inner widths are the finer second knob, and where that
    # is not enough either (resnet_6blocks at 20x), round_to is halved with a warning.
    from stylepress.models.published import new_generator

    torch.manual_seed(0)
    teacher, spec = new_generator(arch, options, "s")
    base, _ = count(teacher, spec, 64)
    pruned = prune_to_macs(teacher, spec, base / factor, 64, round_to=8)
    assert abs(pruned.macs - base / factor) <= 0.03 * base / factor
    widths = [c["out_channels"] for c in pruned.spec.channels.values() if "out_channels" in c]
    assert all(w % round_to == 0 or w == 3 for w in widths) and any(w % 8 for w in widths if w != 3) == (round_to < 8)
    assert ("used round_to 4" in caplog.text) == (round_to == 4) and pruned.round_to == round_to


def test_an_imported_family_compresses_with_output_distillation(tmp_path):
    config, run_dir = tiny_run(tmp_path, serving="")
    torch.manual_seed(0)
    from stylepress.models.published import build

    net = build("animegan2", {})
    save_generator(net, ArchSpec(arch="animegan2", styles=("anime",)), run_dir / "teacher")
    config.write_text(config.read_text().replace("[serving]", "[compress]\nratio = 0.5\nround_to = 1\n"
                                                 "distill_steps = 3\nbatch_size = 2\nval_every = 3\n"
                                                 "[train]\ncrop = 32\n[serving]"))
    result = run_cli("compress", config, "--out", run_dir)
    assert result.returncode == 0, result.stderr
    log = [json.loads(line) for line in (run_dir / "student" / "log.jsonl").read_text().splitlines()]
    assert log[-1]["kind"] == "val" and all(r["feat"] == 0 for r in log if "feat" in r)  # no taps: output only
    student, spec = load_generator(run_dir / "student")
    assert spec.arch == "animegan2" and spec.channels
    prune_json = json.loads((run_dir / "student" / "prune.json").read_text())
    assert prune_json["student_macs"] < prune_json["teacher_macs"]


def test_a_bad_student_checkpoint_is_a_one_line_error(compressed, tmp_path):
    import shutil

    config, run_dir = compressed
    run = tmp_path / "run"
    shutil.copytree(run_dir, run)
    state_path = run / "student" / "state.pt"
    good = torch.load(state_path, weights_only=True)
    wrong_shapes = {**good, "student": {k: v[..., :1] if v.ndim else v for k, v in good["student"].items()}}
    for content, message in ((b"not a checkpoint", "cannot resume from"),
                             ({"kind": "teacher", "step": 3}, "not a student checkpoint"),
                             (wrong_shapes, "'student' does not fit this run")):
        if isinstance(content, bytes):
            state_path.write_bytes(content)
        else:
            torch.save(content, state_path)
        result = run_cli("compress", config, "--out", run, "--resume")
        assert result.returncode == 2 and message in result.stderr, result.stderr[-2000:]
        assert len(result.stderr.strip().splitlines()) == 1 and "Traceback" not in result.stderr
