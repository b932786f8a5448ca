"""The Triton model repository: `write_repository(cfg, run_dir)` writes run_dir/model_repository/,
serving exactly the variant selection.json names (stylepress.selection): that model, precision and
CPU provider. The ensemble's and the generator's config.pbtxt carry the variant in their parameters
(`variant`, `model`, `precision`, `provider`), so a repository says what it serves.

model_repository/
  <name>/              ensemble: IMAGE (encoded JPEG/PNG/WebP) [+ STYLE name] [+ FORMAT, QUALITY] -> STYLED
                       (PNG bytes, or the FORMAT asked: png | jpeg | webp)
  <name>_preprocess/   python: decode, EXIF-orient, limits, letterbox to the serving size
  <name>_generator/    the network: python + ONNX Runtime (target cpu) or onnxruntime_onnx
  <name>_postprocess/  python: un-letterbox, resize to the original size, encode (PNG by default)

Configs are built as `model_config_pb2.ModelConfig` messages and printed with text_format, so
they are valid protobuf by construction; `check_repository` then checks them semantically.
"""

from __future__ import annotations

import json
import logging
import math
import os
import shutil
import tempfile
from pathlib import Path

from google.protobuf import text_format
from tritonclient.grpc import model_config_pb2 as pb

import stylepress.prepost
from stylepress import selection
from stylepress.config import Config
from stylepress.errors import StylepressError
from stylepress.layout import RunLayout
from stylepress.models.spec import read_spec

from .check import check_repository

log = logging.getLogger(__name__)
BACKEND = Path(__file__).parent / "backend"
REPOSITORY = RunLayout(Path()).repository.name
WARMUP_BATCHES = 16  # batch sizes warmed up at load; the generator backend keeps as many per-shape sessions


def write_repository(cfg: Config, run_dir: str | Path, out: str | Path | None = None) -> Path:
    """Write the repository for the run's selected variant, check it, and return its path."""
    layout = RunLayout(run_dir)
    sc, name = cfg.serving, cfg.model_name
    chosen = selection.load(layout.root)
    if chosen["target"] != sc.target:
        raise StylepressError(f"{layout.selection} was made for serving.target {chosen['target']!r}, the config "
                              f"says {sc.target!r}: run `stylepress select` again")
    served = chosen["served"]
    model, precision = served["model"], served["precision"]
    model_path = layout.plan(model, precision) if sc.target == "tensorrt" else layout.onnx(model, precision)
    if not model_path.is_file():
        raise StylepressError(f"{model_path} not found: selection.json names it; run `stylepress export` first")
    log.info("serving %s (%s, chosen by %s)", served["name"], model_path.name, chosen["source"])
    styles = list(read_spec(layout.model_dir(model)).styles)
    repo = Path(out) if out is not None else layout.repository
    size, multi = cfg.serving_resolution, len(styles) > 1
    max_batch = sc.max_batch_size
    if sc.target == "tensorrt":  # the whole ensemble must fit inside the engine's profile
        max_batch = _fit_profile(model_path, size, max_batch)

    pre_n, post_n, why = prepost_instances(layout, sc, served)
    pre = _config(f"{name}_preprocess", max_batch, backend="python", instances=pre_n)
    _io(pre.input, "IMAGE", pb.TYPE_STRING, [1])
    _io(pre.output, "INPUT", pb.TYPE_FP32, [3, size, size])
    _io(pre.output, "BOX", pb.TYPE_INT64, [6])
    if multi:
        _io(pre.input, "STYLE", pb.TYPE_STRING, [1])
        _io(pre.output, "STYLE_INDEX", pb.TYPE_INT64, [1])
    _params(pre, resolution=size, styles=json.dumps(styles), max_bytes=sc.max_bytes, max_pixels=sc.max_pixels)

    gen = _generator_config(cfg, f"{name}_generator", multi, max_batch, precision, served["provider"])
    # As the export checked it and the bench timed it; only the CPU runtime's generator passes the hint
    # (the export resolves f32 for other targets, and the build reruns it when the target changes).
    from stylepress.export import float_precision  # here: `import stylepress.serving` (the Client) stays light

    fp = float_precision(layout, model, served["provider"]) if sc.target == "cpu" else "f32"

    post = _config(f"{name}_postprocess", max_batch, backend="python", instances=post_n)
    _io(post.input, "STYLED_RAW", pb.TYPE_FP32, [3, size, size])
    _io(post.input, "BOX", pb.TYPE_INT64, [6])
    _io(post.output, "STYLED", pb.TYPE_STRING, [1])
    _params(post, resolution=size, max_pixels=sc.max_pixels, output_format=sc.output_format,
            output_quality=sc.output_quality or "")
    for config in (pre, post):  # the repository says how it sized them
        _params(config, instances_from=why)

    ens = pb.ModelConfig(name=name, platform="ensemble", max_batch_size=max_batch)
    _io(ens.input, "IMAGE", pb.TYPE_STRING, [1])
    _io(ens.output, "STYLED", pb.TYPE_STRING, [1])
    step = ens.ensemble_scheduling.step.add(model_name=pre.name, model_version=-1)
    step.input_map["IMAGE"] = "IMAGE"
    step.output_map.update({"INPUT": "network_input", "BOX": "letterbox"})
    step = ens.ensemble_scheduling.step.add(model_name=gen.name, model_version=-1)
    step.input_map["image"] = "network_input"
    step.output_map["styled"] = "network_output"
    if multi:
        _io(ens.input, "STYLE", pb.TYPE_STRING, [1])
        ens.ensemble_scheduling.step[0].input_map["STYLE"] = "STYLE"
        ens.ensemble_scheduling.step[0].output_map["STYLE_INDEX"] = "style_index"
        step.input_map["style"] = "style_index"
    step = ens.ensemble_scheduling.step.add(model_name=post.name, model_version=-1)
    step.input_map.update({"STYLED_RAW": "network_output", "BOX": "letterbox"})
    step.output_map["STYLED"] = "STYLED"
    for tensor, dtype in (("FORMAT", pb.TYPE_STRING), ("QUALITY", pb.TYPE_INT32)):  # optional: png by default
        for config in (ens, post):
            _io(config.input, tensor, dtype, [1]).optional = True
        step.input_map[tensor] = tensor
    for config in (ens, gen):  # the repository says what it serves
        _params(config, variant=served["name"], model=model, precision=precision, provider=served["provider"],
                float_precision=fp)

    # Built in a temporary folder, checked, then swapped in whole: a killed run leaves the previous
    # repository intact, and no stale model from an earlier config lingers.
    repo.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{repo.name}.", dir=repo.parent))
    try:
        for config in (ens, pre, gen, post):
            (tmp / config.name / "1").mkdir(parents=True)  # Triton loads no model without a version folder
            (tmp / config.name / "config.pbtxt").write_text(text_format.MessageToString(config))
        for config, code in ((pre, "preprocess.py"), (post, "postprocess.py")):
            shutil.copyfile(BACKEND / code, tmp / config.name / "1" / "model.py")
            shutil.copyfile(stylepress.prepost.__file__, tmp / config.name / "1" / "prepost.py")
        shutil.copyfile(model_path, tmp / gen.name / "1" / ("model.plan" if sc.target == "tensorrt" else "model.onnx"))
        if sc.target == "cpu":
            shutil.copyfile(BACKEND / "generator.py", tmp / gen.name / "1" / "model.py")
        check_repository(tmp)
        tmp.chmod(0o755)  # mkdtemp makes 0700
        old = repo.with_name(f".{repo.name}.old")
        if repo.exists():
            shutil.rmtree(old, ignore_errors=True)
            repo.rename(old)
        tmp.rename(repo)
        shutil.rmtree(old, ignore_errors=True)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return repo


def prepost_instances(layout: RunLayout, sc, served: dict) -> tuple[int, int, str]:
    """Pre- and postprocess instances from the bench's costs (report/precision.json): each gets as many
    instances as its cost per image is a multiple of the generator's (batch 1 at the serving size), so
    that decoding and encoding keep up with the network, between serving.instances and the CPU count.
    Dynamic batching would not help them: their work is per image. Without bench figures:
    serving.instances."""
    if not layout.precision_json.is_file():
        return sc.instances, sc.instances, "serving.instances (no bench figures)"
    bench = json.loads(layout.precision_json.read_text())
    costs = bench.get("prepost_ms", {})
    gen = next((v["p50_ms"] for v in bench["variants"] if (v["model"], v["precision"], v["provider"]) ==
                (served["model"], served["precision"], served["provider"])), None)
    encode = costs.get(f"encode_{sc.output_format}")
    if not gen or "decode" not in costs or encode is None:
        return sc.instances, sc.instances, "serving.instances (no bench figures for them)"
    cores = os.cpu_count() or 1

    def fit(cost: float) -> int:
        return max(sc.instances, min(cores, math.ceil(cost / gen)))
    return fit(costs["decode"]), fit(encode), (f"bench: decode {costs['decode']:.1f} ms, encode {sc.output_format} "
                                               f"{encode:.1f} ms, generator {gen:.1f} ms per image; {cores} CPUs")


def _fit_profile(plan: Path, size: int, max_batch: int) -> int:
    """The max_batch_size that fits the engine's optimization profile; the serving size must fit too."""
    prof = json.loads(plan.with_name(plan.name + ".json").read_text())["profile"]
    if not prof["min_resolution"] <= size <= prof["max_resolution"]:
        raise StylepressError(f"serving resolution {size} is outside the engine's profile "
                              f"({prof['min_resolution']}..{prof['max_resolution']}): see [export.tensorrt]")
    if prof["min_batch"] > 1:
        raise StylepressError(f"{plan.name}: the engine's profile starts at batch {prof['min_batch']}; "
                              "serving needs batch 1 (export.tensorrt.min_batch = 1)")
    return min(max_batch, prof["max_batch"])


def _generator_config(cfg: Config, name: str, multi: bool, max_batch: int, precision: str,
                      provider: str) -> pb.ModelConfig:
    sc, size = cfg.serving, cfg.serving_resolution
    gpu, cpu = pb.ModelInstanceGroup.KIND_GPU, pb.ModelInstanceGroup.KIND_CPU
    if sc.target == "cpu":
        gen = _config(name, max_batch, backend="python", instances=sc.instances)
        _params(gen, model_file="model.onnx")
    elif sc.target == "tensorrt":
        gen = _config(name, max_batch, platform="tensorrt_plan", instances=sc.instances, kind=gpu)
    elif sc.target == "onnxruntime-tensorrt":
        gen = _config(name, max_batch, platform="onnxruntime_onnx", instances=sc.instances, kind=gpu)
        trt = gen.optimization.execution_accelerators.gpu_execution_accelerator.add(name="tensorrt")
        trt.parameters.update({"precision_mode": precision.upper(), "trt_engine_cache_enable": "1",
                               "trt_engine_cache_path": f"/tmp/{name}_trt_cache",
                               "max_workspace_size_bytes": str(cfg.export.tensorrt.workspace_mib << 20)})
    else:
        gen = _config(name, max_batch, platform="onnxruntime_onnx", instances=sc.instances,
                      kind=gpu if sc.kind == "gpu" else cpu)
        if sc.kind == "cpu" and provider == "openvino":
            # the same CPU runtime the selection was timed on
            gen.optimization.execution_accelerators.cpu_execution_accelerator.add(name="openvino")
    # The serving size only: tensor clients calling it directly get the ensemble's limits (Triton refuses
    # other shapes before the backend runs), and a runtime compiles no session per caller-chosen shape.
    _io(gen.input, "image", pb.TYPE_FP32, [3, size, size])
    _io(gen.output, "styled", pb.TYPE_FP32, [3, size, size])
    if multi:
        # The ONNX input is [batch]; Triton needs a non-empty shape, so [1] reshaped to [] (Triton's recipe).
        _io(gen.input, "style", pb.TYPE_INT64, [1]).reshape.SetInParent()
    # Every batch size dynamic batching can form, at the serving size: runtimes that compile per shape
    # (OpenVINO, TensorRT profiles) do it at load, not on a client's first request.
    for batch in range(1, min(max_batch, WARMUP_BATCHES) + 1):
        warmup = gen.model_warmup.add(name=f"serving_size_batch{batch}", batch_size=batch, count=1 if batch > 1 else 2)
        warmup.inputs["image"].CopyFrom(pb.ModelWarmup.Input(data_type=pb.TYPE_FP32, dims=[3, size, size],
                                                              zero_data=True))
        if multi:
            warmup.inputs["style"].CopyFrom(pb.ModelWarmup.Input(data_type=pb.TYPE_INT64, dims=[1], zero_data=True))
    gen.dynamic_batching.max_queue_delay_microseconds = sc.max_queue_delay_us
    return gen


def _config(name: str, max_batch_size: int, instances: int, kind=pb.ModelInstanceGroup.KIND_CPU,
            **backend) -> pb.ModelConfig:
    config = pb.ModelConfig(name=name, max_batch_size=max_batch_size, **backend)
    config.instance_group.add(count=instances, kind=kind)
    return config


def _io(field, name: str, dtype: int, dims: list[int]):
    return field.add(name=name, data_type=dtype, dims=dims)


def _params(config: pb.ModelConfig, **values) -> None:
    for key, value in values.items():
        config.parameters[key].string_value = str(value)
