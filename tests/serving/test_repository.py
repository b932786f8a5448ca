"""The repository writer and `repo --check`: every repository the tool writes passes the check;
each kind of breakage is rejected with a one-line error naming the problem."""

import json
import shutil

import pytest
from conftest import TINY_SPEC, run_cli, tiny_run, write_repo
from google.protobuf import text_format
from tritonclient.grpc import model_config_pb2 as pb

from stylepress import export, serving
from stylepress.config import load_config
from stylepress.errors import StylepressError


@pytest.fixture(scope="module")
def exported_copy(tmp_path_factory):
    config, run_dir = tiny_run(tmp_path_factory.mktemp("repo"))
    export.run(load_config(config), run_dir, show_progress=False)
    return config, run_dir


def _write(exported_copy, tmp_path, serving_body: str = ""):
    """The repository for the tiny run, serving the pinned precision (fp32 unless the body pins one)."""
    config, run_dir = exported_copy
    tmp_path.mkdir(parents=True, exist_ok=True)
    cfg_path = tmp_path / "cfg.toml"
    pin = "" if "precision" in serving_body else 'precision = "fp32"\n'
    cfg_path.write_text(config.read_text() + pin + serving_body)
    return write_repo(load_config(cfg_path), run_dir, tmp_path / "repo")


@pytest.mark.parametrize("body", ["", 'target = "onnxruntime"\n', 'target = "onnxruntime"\nkind = "gpu"\n',
                                  "max_batch_size = 1\ninstances = 3\n"],
                         ids=["cpu", "onnxruntime-cpu", "onnxruntime-gpu", "batch1"])
def test_every_written_repository_passes_the_check(exported_copy, tmp_path, body):
    repo = _write(exported_copy, tmp_path, body)
    configs = serving.check_repository(repo)
    assert sorted(configs) == ["tiny", "tiny_generator", "tiny_postprocess", "tiny_preprocess"]
    gen = configs["tiny_generator"]
    assert gen.dynamic_batching.max_queue_delay_microseconds == 2000
    # every batch size dynamic batching can form is compiled at load (OpenVINO compiles per shape)
    assert [w.batch_size for w in gen.model_warmup] == list(range(1, gen.max_batch_size + 1))
    assert not configs["tiny"].instance_group and not configs["tiny"].model_warmup
    result = run_cli("repo", "--check", repo)
    assert result.returncode == 0, result.stderr
    if "onnxruntime" in body:
        assert gen.platform == "onnxruntime_onnx" and not (repo / "tiny_generator" / "1" / "model.py").exists()
        kind = pb.ModelInstanceGroup.KIND_GPU if "gpu" in body else pb.ModelInstanceGroup.KIND_CPU
        assert gen.instance_group[0].kind == kind


def test_cpu_targets_run_the_configured_cpu_provider(exported_copy, tmp_path):
    configs = serving.check_repository(_write(exported_copy, tmp_path, 'target = "onnxruntime"\n'))
    accelerators = configs["tiny_generator"].optimization.execution_accelerators.cpu_execution_accelerator
    assert [a.name for a in accelerators] == ["openvino"]
    configs = serving.check_repository(_write(exported_copy, tmp_path / "b", '[export]\ncpu_provider = "default"\n'))
    assert configs["tiny_generator"].parameters["provider"].string_value == "default"


def _served_bytes(repo):
    return (repo / "tiny_generator" / "1" / "model.onnx").read_bytes()


def test_the_repository_serves_exactly_the_selection_and_says_so(exported_copy, tmp_path):
    _, run_dir = exported_copy
    for precision in ("int8", "fp16"):
        repo = _write(exported_copy, tmp_path / precision, f'precision = "{precision}"\n')
        assert _served_bytes(repo) == (run_dir / "export" / f"teacher.{precision}.onnx").read_bytes()
        configs = serving.check_repository(repo)
        for name in ("tiny", "tiny_generator"):
            params = {k: v.string_value for k, v in configs[name].parameters.items()}
            assert params["variant"] == f"teacher-{precision}-{params['provider']}"
            assert (params["model"], params["precision"]) == ("teacher", precision)
    # A selection made for another target is refused, not silently re-decided.
    cfg = load_config(tmp_path / "fp16" / "cfg.toml", ['serving.target="onnxruntime"'])
    with pytest.raises(StylepressError, match="run `stylepress select` again"):
        serving.write_repository(cfg, run_dir, tmp_path / "other")


def test_onnxruntime_tensorrt_target_writes_a_gpu_accelerator_config(exported_copy, tmp_path):
    repo = _write(exported_copy, tmp_path, 'target = "onnxruntime-tensorrt"\nprecision = "int8"\n')
    gen = serving.check_repository(repo)["tiny_generator"]
    assert gen.platform == "onnxruntime_onnx" and gen.instance_group[0].kind == pb.ModelInstanceGroup.KIND_GPU
    (trt,) = gen.optimization.execution_accelerators.gpu_execution_accelerator
    assert trt.name == "tensorrt" and trt.parameters["precision_mode"] == "INT8"
    assert trt.parameters["trt_engine_cache_enable"] == "1"
    assert run_cli("repo", "--check", repo).returncode == 0


def _fake_engine(run_dir, max_batch=4, resolutions=(64, 128, 256)):
    """A stand-in plan + metadata as `export` writes them on a GPU host (no GPU here)."""
    import json

    plan = run_dir / "export" / "teacher.int8.plan"
    plan.write_bytes(b"engine bytes")
    lo, mid, hi = resolutions
    profile = {"min_batch": 1, "opt_batch": 1, "max_batch": max_batch, "min_resolution": lo,
               "opt_resolution": mid, "max_resolution": hi}
    (run_dir / "export" / "teacher.int8.plan.json").write_text(json.dumps({"precision": "int8", "profile": profile}))
    return plan


def test_tensorrt_target_needs_an_engine(exported_copy, tmp_path):
    with pytest.raises(StylepressError, match="TensorRT engines are built"):
        _write(exported_copy, tmp_path, 'target = "tensorrt"\n')


def test_tensorrt_target_fits_the_engine_profile_and_passes_the_check(exported_copy, tmp_path):
    _, run_dir = exported_copy
    plan = _fake_engine(run_dir, max_batch=4)
    try:
        repo = _write(exported_copy, tmp_path, 'target = "tensorrt"\nprecision = "int8"\n')  # batch 8 asked, profile 4
        configs = serving.check_repository(repo)
        gen = configs["tiny_generator"]
        assert gen.platform == "tensorrt_plan" and gen.instance_group[0].kind == pb.ModelInstanceGroup.KIND_GPU
        assert {c.max_batch_size for c in configs.values()} == {4}
        assert (repo / "tiny_generator" / "1" / "model.plan").read_bytes() == b"engine bytes"
        assert run_cli("repo", "--check", repo).returncode == 0
        _fake_engine(run_dir, resolutions=(32, 48, 64))  # serving at 128: outside the profile
        with pytest.raises(StylepressError, match="outside the engine's profile"):
            _write(exported_copy, tmp_path / "b", 'target = "tensorrt"\nprecision = "int8"\n')
    finally:
        plan.unlink()
        plan.with_name(plan.name + ".json").unlink()


def _edit(repo, model, change):
    path = repo / model / "config.pbtxt"
    config = text_format.Parse(path.read_text(), pb.ModelConfig())
    change(config)
    path.write_text(text_format.MessageToString(config))


def _dims(config, name, dims):
    io = next(i for i in [*config.input, *config.output] if i.name == name)
    del io.dims[:]
    io.dims.extend(dims)


BREAKAGES = {
    "missing config": (lambda r: (r / "tiny_postprocess" / "config.pbtxt").unlink(), "config.pbtxt missing"),
    "unparsable config": (lambda r: (r / "tiny" / "config.pbtxt").write_text("name: tiny\nplatform {"),
                          "tiny/config.pbtxt"),
    "unknown field": (lambda r: (r / "tiny_generator" / "config.pbtxt").write_text("max_batch: 4"),
                      "tiny_generator/config.pbtxt"),
    "missing model file": (lambda r: (r / "tiny_generator" / "1" / "model.onnx").unlink(), "model.onnx"),
    "missing version folder": (lambda r: shutil.rmtree(r / "tiny_preprocess" / "1"), "no version folder"),
    "step to a missing model": (lambda r: shutil.rmtree(r / "tiny_postprocess"), "no such model"),
    "dims disagree": (lambda r: _edit(r, "tiny_preprocess", lambda c: _dims(c, "INPUT", [3, 64, 64, 1])),
                      "has dims"),
    "type disagrees": (lambda r: _edit(r, "tiny_postprocess", lambda c: setattr(c.input[1], "data_type",
                                                                                  pb.TYPE_INT32)),
                       "TYPE_INT64 but BOX wants TYPE_INT32"),
    "unmapped input": (lambda r: _edit(r, "tiny", lambda c: c.ensemble_scheduling.step[2].input_map.pop("BOX")),
                       "are not mapped"),
    "wrong output name": (lambda r: _edit(r, "tiny", lambda c: c.ensemble_scheduling.step[1].output_map.update(
        {"out": "x"})), "'out' is not an output"),
    "instance group on ensemble": (lambda r: _edit(r, "tiny", lambda c: c.instance_group.add(count=1)),
                                   "no instance_group"),
    "batch over a step's": (lambda r: _edit(r, "tiny", lambda c: setattr(c, "max_batch_size", 64)),
                            "below the ensemble's 64"),
    "name mismatch": (lambda r: _edit(r, "tiny_generator", lambda c: setattr(c, "name", "other")),
                      "names the model 'other'"),
}


@pytest.mark.parametrize("name", BREAKAGES)
def test_check_rejects_a_broken_repository(exported_copy, tmp_path, name):
    repo = _write(exported_copy, tmp_path)
    breaks, message = BREAKAGES[name]
    breaks(repo)
    with pytest.raises(StylepressError, match=message):
        serving.check_repository(repo)


def test_repo_check_cli_rejects_a_broken_repository_in_one_line(exported_copy, tmp_path):
    repo = _write(exported_copy, tmp_path)
    (repo / "tiny_generator" / "1" / "model.onnx").unlink()
    (repo / "tiny" / "config.pbtxt").write_text("platform {")
    result = run_cli("repo", "--check", repo)
    assert result.returncode == 2 and result.stderr.count("\n") == 1
    assert "tiny/config.pbtxt" in result.stderr and "1/model.onnx (parameter model_file) missing" in result.stderr


def test_repo_cli_writes_and_checks(exported_copy):
    config, run_dir = exported_copy
    assert run_cli("select", config, "--out", run_dir, "--set", "serving.precision=fp32").returncode == 0
    result = run_cli("repo", config, "--out", run_dir, "--set", "serving.precision=fp32")
    assert result.returncode == 0, result.stderr
    assert "checked" in result.stderr and (run_dir / "model_repository" / "tiny" / "1").is_dir()


def test_single_style_model_has_no_style_input(tmp_path):
    from stylepress.models import build_generator, save_generator

    config, run_dir = tiny_run(tmp_path)
    spec = TINY_SPEC.model_copy(update={"styles": ("sketch",), "kwargs": {**TINY_SPEC.kwargs, "num_styles": 1}})
    save_generator(build_generator(spec), spec, run_dir / "teacher")
    cfg = load_config(config, ["serving.precision=fp32"])
    export.run(cfg, run_dir, show_progress=False)
    configs = serving.check_repository(write_repo(cfg, run_dir))
    assert [(i.name, i.optional) for i in configs["tiny"].input] == [("IMAGE", False), ("FORMAT", True),
                                                                      ("QUALITY", True)]  # no STYLE
    assert [i.name for i in configs["tiny_generator"].input] == ["image"]
    assert "STYLE_INDEX" not in [o.name for o in configs["tiny_preprocess"].output]


def test_pre_and_postprocess_instances_follow_the_benchs_costs(exported_copy, tmp_path, monkeypatch):
    """Encoding at 2.5x the generator's time per image gets ceil(2.5) = 3 postprocess instances (up to the
    CPU count); decoding at half of it keeps serving.instances."""
    import os

    config, run_dir = exported_copy
    monkeypatch.setattr(os, "cpu_count", lambda: 8)
    (run_dir / "report").mkdir(exist_ok=True)
    (run_dir / "report" / "precision.json").write_text(json.dumps({
        "variants": [{"model": "teacher", "precision": "fp32", "provider": p, "p50_ms": 20.0, "p95_ms": 21.0,
                      "psnr_db_vs_teacher": 99.0, "ssim_vs_teacher": 1.0} for p in ("default", "openvino", "eager")],
        "prepost_ms": {"decode": 10.0, "encode_png": 50.0, "encode_jpeg": 5.0, "encode_webp": 30.0}}))
    configs = serving.check_repository(_write((config, run_dir), tmp_path))
    pre, post = configs["tiny_preprocess"], configs["tiny_postprocess"]
    assert (pre.instance_group[0].count, post.instance_group[0].count) == (1, 3)
    assert "encode png 50.0 ms" in post.parameters["instances_from"].string_value
    configs = serving.check_repository(_write((config, run_dir), tmp_path / "j", 'output_format = "jpeg"\n'))
    assert configs["tiny_postprocess"].instance_group[0].count == 1
