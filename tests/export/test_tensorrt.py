"""TensorRT engines: built and run only where the tensorrt module and a CUDA GPU exist."""

import json

import numpy as np
import pytest
from conftest import run_cli, tiny_run

from stylepress.config import load_config
from stylepress.errors import StylepressError
from stylepress.export import tensorrt
from stylepress.export.runtime import feeds_for, session


def test_profile_defaults_to_the_serving_resolution_and_rejects_disorder(tmp_path):
    config, _ = tiny_run(tmp_path)
    cfg = load_config(config)
    prof = tensorrt.profile(cfg.export.tensorrt, cfg.serving_resolution)
    assert prof["opt_resolution"] == 128 and prof["min_batch"] <= prof["opt_batch"] <= prof["max_batch"]
    bad = cfg.export.tensorrt.model_copy(update={"min_resolution": 256})
    with pytest.raises(StylepressError, match="min_resolution"):
        tensorrt.profile(bad, 128)


@pytest.mark.skipif(tensorrt.unavailable() is not None, reason=f"TensorRT: {tensorrt.unavailable()}")
def test_export_builds_engines_that_match_onnx_runtime(tmp_path):
    import tensorrt as trt
    import torch

    config, run_dir = tiny_run(tmp_path)
    assert run_cli("export", config, "--out", run_dir).returncode == 0
    out = run_dir / "export"
    x = np.random.default_rng(0).uniform(-1, 1, (2, 3, 128, 128)).astype(np.float32)
    ref = session(out / "teacher.fp32.onnx")
    want = ref.run(None, feeds_for(ref, x, 1))[0]
    for precision in ("fp32", "fp16", "int8"):
        plan = out / f"teacher.{precision}.plan"
        meta = json.loads(plan.with_name(plan.name + ".json").read_text())
        assert meta["precision"] == precision and meta["tensorrt"] == trt.__version__ and meta["compute_capability"]
        engine = trt.Runtime(trt.Logger(trt.Logger.WARNING)).deserialize_cuda_engine(plan.read_bytes())
        context = engine.create_execution_context()
        tensors = {"image": torch.from_numpy(x).cuda(), "style": torch.ones(2, dtype=torch.int64).cuda()}
        tensors["styled"] = torch.empty_like(tensors["image"])
        for name, t in tensors.items():
            if name != "styled":
                context.set_input_shape(name, tuple(t.shape))
            context.set_tensor_address(name, t.data_ptr())
        assert context.execute_async_v3(torch.cuda.current_stream().cuda_stream)
        torch.cuda.synchronize()
        got = tensors["styled"].cpu().numpy()
        mse = float(np.mean((got - want) ** 2))
        assert 10 * np.log10(4 / max(mse, 1e-12)) > 30, precision  # PSNR on the [-1, 1] range
    assert (out / tensorrt.CACHE_FILE).stat().st_size > 0
