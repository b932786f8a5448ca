"""`[compress] student = "mobile"`: a depthwise-separable, resize-upsampling student sized to the MACs
target, distilled, exported (parity, INT8 by TensorRT's rules) and served by the real tritonserver."""

import json
import subprocess
import sys

import numpy as np
import pytest
import torch
from conftest import DEMO_PHOTOS, TINY_SPEC, run_cli, tiny_run, write_repo
from torch import nn

from stylepress import export, prepost, serving
from stylepress.compress.mobile import mobile_student
from stylepress.compress.pruning import count
from stylepress.config import load_config
from stylepress.errors import StylepressError
from stylepress.export.runtime import cpu_has_bf16, resolve_cpu_provider, session
from stylepress.export.trt_rules import check_trt
from stylepress.layout import RunLayout
from stylepress.models import build_generator, load_generator
from stylepress.models.layers import ColourSkip

pytestmark = pytest.mark.e2e
TEACHER = TINY_SPEC.with_kwargs(ngf=16, n_blocks=3, residual=True, colour_skip=True)


def _teacher():
    torch.manual_seed(0)
    model = build_generator(TEACHER).eval()
    with torch.no_grad():
        model.skip.weight.uniform_(0.0, 1.0)  # trained-looking rows the student should start from
    return model


def test_the_mobile_student_is_the_widest_within_the_target_and_starts_from_the_teachers_skip():
    teacher = _teacher()
    base, _ = count(teacher, TEACHER, 128)
    student, taken = mobile_student(teacher, TEACHER, base / 4, 128, round_to=8)
    assert student.spec.arch == "mobile" and student.macs <= base / 4 * 1.03
    wider = build_generator(student.spec.with_kwargs(ngf=student.spec.kwargs["ngf"] + 2))
    assert count(wider, student.spec, 128)[0] > base / 4 * 1.03  # the next width would not fit
    assert student.spec.kwargs["ngf"] % 2 == 0 and student.spec.styles == TEACHER.styles
    layers = list(student.model.modules())
    assert not any(isinstance(m, nn.ConvTranspose2d) for m in layers)
    assert any(isinstance(m, nn.Conv2d) and m.groups == m.in_channels > 1 for m in layers)  # depthwise
    skip = next(m for m in layers if isinstance(m, ColourSkip))
    assert taken >= 2 and torch.equal(skip.weight, teacher.skip.weight)


def test_a_target_below_the_narrowest_mobile_student_or_a_family_teacher_is_a_one_line_error():
    teacher = _teacher()
    with pytest.raises(StylepressError, match="no mobile student fits"):
        mobile_student(teacher, TEACHER, 1e3, 128, round_to=8)
    with pytest.raises(StylepressError, match="student = 'pruned'"):
        mobile_student(teacher, TEACHER.model_copy(update={"arch": "animegan2"}), 1e9, 128, round_to=8)


@pytest.fixture(scope="module")
def mobile_run(tmp_path_factory):
    config, run_dir = tiny_run(tmp_path_factory.mktemp("mobile"), serving='precision = "int8"\n')
    config.write_text(config.read_text().replace('model = "teacher"', 'model = "student"').replace("[serving]", """\
[compress]
student = "mobile"
ratio = 0.5
distill_steps = 30
batch_size = 2
lr = 1e-3
val_every = 10
checkpoint_every = 10
[train]
crop = 32
[export]
precisions = ["fp32", "int8"]
# This student's float32 error at 384² varied from 1.3e-5 to 1.2e-4 between runs (its 30 CPU distillation
# steps are not bit-reproducible): accumulation order, as configs/portraits.toml says. A wrong graph is off by far more.
parity_tolerance = 1e-3
[export.int8]
max_fallback = 0
min_psnr_db = 0.0
min_ssim = 0.0
[serving]"""))
    result = run_cli("compress", config, "--out", run_dir)
    assert result.returncode == 0, result.stderr
    return config, run_dir


def test_a_mobile_student_distils_exports_by_the_rules_and_rebuilds_from_arch_json(mobile_run):
    config, run_dir = mobile_run
    prune = json.loads((run_dir / "student" / "prune.json").read_text())
    assert prune["student"] == "mobile" and prune["student_macs"] <= prune["teacher_macs"] / 4 * 1.03
    vals = [r for r in map(json.loads, (run_dir / "student" / "log.jsonl").read_text().splitlines())
            if r.get("kind") == "val"]
    assert vals[-1]["val_psnr"] > vals[0]["val_psnr"]  # student vs teacher, on val portraits
    _, spec = load_generator(run_dir / "student")
    assert spec.arch == "mobile"
    paths = export.run(load_config(config), run_dir, show_progress=False)
    assert json.loads((run_dir / "export" / "parity.json").read_text())["student"]["passed"]
    assert check_trt(paths["student.int8"]) == []
    import onnx

    graph = onnx.load(str(paths["student.int8"])).graph
    quantized = {n.output[0] for n in graph.node if n.op_type == "DequantizeLinear"}
    convs = [n for n in graph.node if n.op_type == "Conv"]
    assert not any(n.op_type == "ConvTranspose" for n in graph.node)
    # Every convolution but the output layer (kept float by the rules) reads quantized weights.
    assert sum(n.input[1] in quantized for n in convs) == len(convs) - 1
    coverage = json.loads((run_dir / "export" / "quant.json").read_text())["student"]["int8"]["coverage"]
    assert list(coverage["layer_types"]) == ["Conv"]
    assert coverage["layer_types"]["Conv"]["int8_layers"] == len(convs) - 1


def test_triton_serves_the_int8_mobile_student_as_onnx_runtime_runs_it(mobile_run):
    config, run_dir = mobile_run
    cfg = load_config(config)
    if not (run_dir / "export" / "student.int8.onnx").is_file():
        export.run(cfg, run_dir, show_progress=False)
    repo = write_repo(cfg, run_dir)
    provider, size = resolve_cpu_provider(None), cfg.serving_resolution
    fp = export.float_precision(RunLayout(run_dir), "student", provider)
    offline = session(run_dir / "export" / "student.int8.onnx", provider, shape=(1, size, size),
                      float_precision=fp)  # as the served generator compiles it
    data = next(iter(DEMO_PHOTOS.values())).read_bytes()
    with serving.local_server(repo, run_dir / "tritonserver.log") as server:
        server.wait_ready()
        with serving.Client(server.http_url) as client:
            got = np.asarray(prepost.decode(client.stylize(data, "oil")), dtype=np.int16)
    x, box = prepost.letterbox(prepost.decode(data), size)
    want = np.asarray(prepost.unletterbox(offline.run(None, {"image": x[None], "style": np.array([1])})[0][0], box),
                      dtype=np.int16)
    assert got.shape == want.shape and np.abs(got - want).max() <= 1


def test_the_levers_suite_times_the_student_on_every_runtime_against_the_teacher(mobile_run):
    config, run_dir = mobile_run
    if not (run_dir / "export" / "student.int8.onnx").is_file():
        export.run(load_config(config), run_dir, show_progress=False)
    args = ("-m", "stylepress.benchmarks", "levers", config, "--runs", run_dir, "--repeats", "3")
    result = subprocess.run([sys.executable, *map(str, args)], capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr
    report = json.loads((run_dir / "report" / "levers.json").read_text())
    rows = {(r["model"], r["precision"], r["runtime"]): r for r in report["variants"]}
    floats = ["f32", "bf16"] if cpu_has_bf16() else ["f32"]
    want = {("teacher", "fp32", "eager"), ("teacher", "fp32", "default"), ("student", "fp32", "default"),
            *((m, "fp32", f"openvino {f}") for m in ("teacher", "student") for f in floats),
            *(("student", "int8", f"openvino {f}") for f in floats)}
    assert set(rows) == want
    student = rows["student", "int8", "openvino f32"]
    assert student["student"] == "mobile" and student["macs"] < rows["teacher", "fp32", "eager"]["macs"]
    assert student["vs_own_fp32_default"] == rows["student", "fp32", "default"]["p50_ms"] / student["p50_ms"]
    assert rows["teacher", "fp32", "default"]["psnr_sketch"] > 99  # the reference itself
    assert 0 < student["ssim_oil"] < 1 and "| student | mobile |" in (run_dir / "report" / "levers.md").read_text()


def test_resuming_a_mobile_student_as_a_pruned_one_is_a_one_line_error(mobile_run):
    config, run_dir = mobile_run
    result = run_cli("compress", config, "--out", run_dir, "--resume", "--set", 'compress.student="pruned"')
    assert result.returncode == 2 and "holds a mobile student" in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1
