"""Validate any Triton model repository before a server sees it: `check_repository(path)`.

Each config.pbtxt is parsed with tritonclient's `model_config_pb2` + text_format, then checked the
way Triton would reject it at load time: files present, ensemble maps resolving to real inputs and
outputs, producer and consumer dims and types agreeing, batch sizes within the composing models'.
"""

from __future__ import annotations

from pathlib import Path

from google.protobuf import text_format
from tritonclient.grpc import model_config_pb2 as pb

from stylepress.errors import StylepressError

# What each kind of model must have in its version folder, unless default_model_filename says otherwise.
MODEL_FILES = {"python": "model.py", "onnxruntime_onnx": "model.onnx", "onnxruntime": "model.onnx",
               "tensorrt_plan": "model.plan", "tensorrt": "model.plan"}


def check_repository(repo: str | Path) -> dict[str, pb.ModelConfig]:
    """Return the parsed configs by model name; raise StylepressError listing every problem found."""
    repo = Path(repo)
    if not repo.is_dir():
        raise StylepressError(f"not a model repository: {repo} is not a folder")
    problems: list[str] = []
    configs: dict[str, pb.ModelConfig] = {}
    for folder in sorted(p for p in repo.iterdir() if p.is_dir() and not p.name.startswith(".")):
        config = _parse(folder, problems)
        if config is not None:
            configs[folder.name] = config
            _check_model(folder, config, problems)
    if not configs and not problems:
        problems.append("no models")
    for name, config in configs.items():
        if config.platform == "ensemble":
            _check_ensemble(name, config, configs, problems)
    if problems:
        more = f" (and {len(problems) - 3} more)" if len(problems) > 3 else ""
        raise StylepressError(f"invalid model repository {repo}: {'; '.join(problems[:3])}{more}")
    return configs


def _parse(folder: Path, problems: list[str]) -> pb.ModelConfig | None:
    path = folder / "config.pbtxt"
    if not path.is_file():
        problems.append(f"{folder.name}: config.pbtxt missing")
        return None
    try:
        config = text_format.Parse(path.read_text(), pb.ModelConfig())
    except (text_format.ParseError, UnicodeDecodeError) as exc:
        problems.append(f"{folder.name}/config.pbtxt: {' '.join(str(exc).split())}")
        return None
    if config.name and config.name != folder.name:
        problems.append(f"{folder.name}: config names the model {config.name!r}")
    return config


def _check_model(folder: Path, config: pb.ModelConfig, problems: list[str]) -> None:
    name, kind = folder.name, config.platform or config.backend
    if config.max_batch_size < 0:
        problems.append(f"{name}: negative max_batch_size")
    for io in (*config.input, *config.output):
        if not io.dims:
            problems.append(f"{name}: {io.name} has no dims")
        if io.data_type == pb.TYPE_INVALID:
            problems.append(f"{name}: {io.name} has no data_type")
    for what, ios in (("input", config.input), ("output", config.output)):
        names = [io.name for io in ios]
        if len(set(names)) != len(names):
            problems.append(f"{name}: duplicate {what} names")
    versions = [p for p in folder.iterdir() if p.is_dir() and p.name.isdigit()]
    if not versions:
        problems.append(f"{name}: no version folder (e.g. {name}/1/)")
    if kind == "ensemble":
        if config.instance_group or config.model_warmup:
            problems.append(f"{name}: an ensemble takes no instance_group or model_warmup")
        if not config.ensemble_scheduling.step:
            problems.append(f"{name}: ensemble has no steps")
        return
    if kind not in MODEL_FILES:
        problems.append(f"{name}: unknown platform/backend {kind!r}")
        return
    model_file = config.default_model_filename or MODEL_FILES[kind]
    for version in versions:
        if not (version / model_file).is_file():
            problems.append(f"{name}: {version.name}/{model_file} missing")
        for key, param in config.parameters.items():
            if key.endswith("_file") and not (version / param.string_value).is_file():
                problems.append(f"{name}: {version.name}/{param.string_value} (parameter {key}) missing")
    inputs = {io.name: io for io in config.input}
    for warmup in config.model_warmup:
        for key, value in warmup.inputs.items():
            if key not in inputs:
                problems.append(f"{name}: warmup input {key!r} is not an input")
            elif value.data_type != inputs[key].data_type or not _dims_agree(value.dims, inputs[key].dims):
                problems.append(f"{name}: warmup input {key!r} does not match its type or dims")
        if warmup.batch_size > max(config.max_batch_size, 1):
            problems.append(f"{name}: warmup batch_size over max_batch_size")


def _check_ensemble(name: str, config: pb.ModelConfig, configs: dict[str, pb.ModelConfig],
                    problems: list[str]) -> None:
    # tensor name -> (data_type, dims) as produced so far: the ensemble's inputs, then each step's outputs
    available = {io.name: (io.data_type, list(io.dims)) for io in config.input}
    consumed = set()
    for i, step in enumerate(config.ensemble_scheduling.step):
        where = f"{name} step {i + 1} ({step.model_name})"
        target = configs.get(step.model_name)
        if target is None:
            problems.append(f"{where}: no such model in the repository")
            continue
        if target.platform == "ensemble":
            problems.append(f"{where}: nested ensembles are not supported here")
        if config.max_batch_size > target.max_batch_size or (config.max_batch_size and not target.max_batch_size):
            problems.append(f"{where}: max_batch_size {target.max_batch_size} is below the ensemble's "
                            f"{config.max_batch_size}")
        inputs = {io.name: io for io in target.input}
        outputs = {io.name: io for io in target.output}
        for key, tensor in step.input_map.items():
            if key not in inputs:
                problems.append(f"{where}: {key!r} is not an input of {step.model_name}")
            elif tensor not in available:
                problems.append(f"{where}: {tensor!r} is not produced before this step")
            else:
                _agree(where, tensor, available[tensor], inputs[key], problems)
                consumed.add(tensor)
        missing = [k for k, io in inputs.items() if k not in step.input_map and not io.optional]
        if missing:
            problems.append(f"{where}: inputs {missing} are not mapped")
        for key, tensor in step.output_map.items():
            if key not in outputs:
                problems.append(f"{where}: {key!r} is not an output of {step.model_name}")
                continue
            if tensor in available:
                problems.append(f"{where}: {tensor!r} is produced twice")
            available[tensor] = (outputs[key].data_type, list(outputs[key].dims))
    for io in config.input:
        if io.name not in consumed:
            problems.append(f"{name}: input {io.name!r} is never used")
    for io in config.output:
        if io.name not in available:
            problems.append(f"{name}: output {io.name!r} is never produced")
        else:
            _agree(name, io.name, available[io.name], io, problems)


def _agree(where: str, tensor: str, produced: tuple[int, list[int]], io, problems: list[str]) -> None:
    dtype, dims = produced
    if dtype != io.data_type:
        problems.append(f"{where}: {tensor!r} is {pb.DataType.Name(dtype)} but {io.name} wants "
                        f"{pb.DataType.Name(io.data_type)}")
    elif not _dims_agree(dims, io.dims):
        problems.append(f"{where}: {tensor!r} has dims {list(dims)} but {io.name} wants {list(io.dims)}")


def _dims_agree(a, b) -> bool:
    """Same rank, and every dimension equal or variable (-1)."""
    return len(a) == len(b) and all(x == y or -1 in (x, y) for x, y in zip(a, b, strict=True))
