"""TensorRT engines from the exported ONNX (optional extra `stylepress[tensorrt]`; needs a CUDA GPU).

The network is strongly typed: the fp16 ONNX carries its own fp16 types and the INT8 ONNX its
Q/DQ nodes, so no precision flags are set. That is TensorRT 11's only mode (its precision
builder flags are gone) and an explicit flag on TensorRT 10. One optimization profile from
`[export.tensorrt]`; a persistent timing cache makes rebuilds fast.

export/<model>.<precision>.plan       the serialized engine
export/<model>.<precision>.plan.json  TensorRT version, GPU, compute capability, profile, precision
export/tensorrt.cache                 the timing cache, shared by every build on this GPU
"""

from __future__ import annotations

import importlib.util
import logging
from pathlib import Path

from stylepress.errors import StylepressError
from stylepress.fsutil import atomic_write, write_json

log = logging.getLogger(__name__)
CACHE_FILE = "tensorrt.cache"


def unavailable() -> str | None:
    """Why engines cannot be built here, or None when they can."""
    if importlib.util.find_spec("tensorrt") is None:
        return "the tensorrt module is not installed (pip install 'stylepress[tensorrt]')"
    import torch

    if not torch.cuda.is_available():
        return "no CUDA GPU"
    return None


def profile(tc, serving_resolution: int) -> dict:
    """The optimization profile: min/opt/max batch and square resolution."""
    p = {"min_batch": tc.min_batch, "opt_batch": tc.opt_batch, "max_batch": tc.max_batch,
         "min_resolution": tc.min_resolution, "opt_resolution": tc.opt_resolution or serving_resolution,
         "max_resolution": tc.max_resolution}
    if not (p["min_batch"] <= p["opt_batch"] <= p["max_batch"]):
        raise StylepressError("export.tensorrt: need min_batch <= opt_batch <= max_batch")
    if not (p["min_resolution"] <= p["opt_resolution"] <= p["max_resolution"]):
        raise StylepressError("export.tensorrt: need min_resolution <= opt_resolution (default: the serving "
                              "resolution) <= max_resolution")
    return p


def _network_flags(trt) -> int:
    if int(trt.__version__.split(".")[0]) >= 11:
        return 0  # strong typing is the only mode
    return 1 << int(trt.NetworkDefinitionCreationFlag.STRONGLY_TYPED)


def build_engine(onnx_path: Path, plan: Path, prof: dict, precision: str, workspace_mib: int) -> dict:
    """Build and write `plan` and its metadata; returns the metadata."""
    import tensorrt as trt
    import torch

    logger = trt.Logger(trt.Logger.WARNING)
    builder = trt.Builder(logger)
    network = builder.create_network(_network_flags(trt))
    parser = trt.OnnxParser(network, logger)
    if not parser.parse(Path(onnx_path).read_bytes()):
        errors = "; ".join(str(parser.get_error(i)) for i in range(parser.num_errors))
        raise StylepressError(f"TensorRT cannot parse {onnx_path.name}: {errors}")
    config = builder.create_builder_config()
    config.set_memory_pool_limit(trt.MemoryPoolType.WORKSPACE, workspace_mib << 20)
    cache_path = plan.parent / CACHE_FILE
    cache = config.create_timing_cache(cache_path.read_bytes() if cache_path.is_file() else b"")
    config.set_timing_cache(cache, ignore_mismatch=False)
    opt = builder.create_optimization_profile()
    lo, mid, hi = prof["min_resolution"], prof["opt_resolution"], prof["max_resolution"]
    opt.set_shape("image", (prof["min_batch"], 3, lo, lo), (prof["opt_batch"], 3, mid, mid),
                  (prof["max_batch"], 3, hi, hi))
    if any(network.get_input(i).name == "style" for i in range(network.num_inputs)):
        opt.set_shape("style", (prof["min_batch"],), (prof["opt_batch"],), (prof["max_batch"],))
    config.add_optimization_profile(opt)
    serialized = builder.build_serialized_network(network, config)
    if serialized is None:
        raise StylepressError(f"TensorRT could not build an engine from {onnx_path.name} (see its log above)")
    atomic_write(plan, lambda p: p.write_bytes(bytes(serialized)))
    timing = bytes(config.get_timing_cache().serialize())
    atomic_write(cache_path, lambda p: p.write_bytes(timing))
    major, minor = torch.cuda.get_device_capability()
    meta = {"tensorrt": trt.__version__, "gpu": torch.cuda.get_device_name(), "compute_capability": f"{major}.{minor}",
            "precision": precision, "onnx": onnx_path.name, "profile": prof}
    write_json(plan.with_name(plan.name + ".json"), meta)
    log.info("TensorRT engine %s (%s, %s)", plan, meta["gpu"], precision)
    return meta
