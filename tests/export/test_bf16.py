"""OpenVINO's bf16 inference precision for float layers ([export] cpu_float_precision): where it
applies, that it reaches the runtime, and its quality gate."""

import json

import numpy as np
import pytest
from conftest import copy_run, run_cli

from stylepress import build, export
from stylepress.errors import StylepressError
from stylepress.export.quantize import compare
from stylepress.export.runtime import available_cpu_providers, cpu_has_bf16, resolve_float_precision, session
from stylepress.layout import RunLayout

CPUINFO = "processor\t: 0\nvendor_id\t: GenuineIntel\nflags\t\t: fpu sse2 avx2 avx512f avx512_vnni {}\n"
needs_bf16 = pytest.mark.skipif(not cpu_has_bf16() or "openvino" not in available_cpu_providers(),
                                reason="this CPU has no native bf16 (avx512_bf16 / amx_bf16) or onnxruntime has no "
                                       "OpenVINO EP: the hint stays off here")


def test_native_bf16_is_read_from_the_cpu_flags():
    assert not cpu_has_bf16(CPUINFO.format(""))
    assert cpu_has_bf16(CPUINFO.format("avx512_bf16")) and cpu_has_bf16(CPUINFO.format("amx_tile amx_bf16"))
    assert not cpu_has_bf16("")


def test_auto_is_f32_where_the_cpu_lacks_bf16_and_a_required_bf16_is_a_one_line_error():
    assert resolve_float_precision("auto", "openvino", has_bf16=False) == "f32"
    assert resolve_float_precision("auto", "openvino", has_bf16=True) == "bf16"
    assert resolve_float_precision("auto", "default", has_bf16=True) == "f32"  # no bf16 kernels there
    assert resolve_float_precision("auto", "openvino", "onnxruntime", has_bf16=True) == "f32"  # no hint there
    assert resolve_float_precision("f32", "openvino", has_bf16=True) == "f32"
    with pytest.raises(StylepressError, match="none of avx512_bf16, amx_bf16"):
        resolve_float_precision("bf16", "openvino", has_bf16=False)
    with pytest.raises(StylepressError, match="cpu_provider = 'openvino'"):
        resolve_float_precision("bf16", "default", has_bf16=True)
    with pytest.raises(StylepressError, match="only the CPU Triton runtime"):
        resolve_float_precision("bf16", "openvino", "onnxruntime", has_bf16=True)


@needs_bf16
def test_auto_runs_openvino_float_layers_in_bf16_checked_against_fp32(exported):
    _, run_dir = exported
    quant = json.loads((run_dir / "export" / "quant.json").read_text())["teacher"]
    assert quant["float_precision"] == "bf16"
    assert export.float_precision(RunLayout(run_dir), "teacher", "openvino") == "bf16"
    assert export.float_precision(RunLayout(run_dir), "teacher", "default") == "f32"
    check = quant["fp32"]  # fp32's own bf16 output against fp32 in f32
    assert check["met"] and check["min_psnr_db"] == 40.0 and 40.0 <= check["psnr_db"] < 200
    # The hint reaches the runtime: the same model answers differently, and closely.
    path = run_dir / "export" / "teacher.fp32.onnx"
    x = np.random.default_rng(0).uniform(-1, 1, (1, 3, 64, 64)).astype(np.float32)
    feeds = {"image": x, "style": np.zeros(1, np.int64)}
    f32, bf16 = (session(path, "openvino", float_precision=fp).run(None, feeds)[0] for fp in ("f32", "bf16"))
    assert np.abs(f32 - bf16).max() > 1e-4 and compare(f32, bf16)["psnr_db"] > 30


@needs_bf16
def test_a_bf16_output_under_its_target_fails_the_precision_like_a_missed_int8(exported, tmp_path):
    config, run_dir = copy_run(*exported, tmp_path)
    result = run_cli("export", config, "--out", run_dir, "--set", "export.bf16_min_psnr_db=200.0")
    assert result.returncode == 0, result.stderr  # recorded, not fatal
    check = json.loads((run_dir / "export" / "quant.json").read_text())["teacher"]["fp32"]
    assert check["met"] is False and "export.bf16_min_psnr_db = 200" in check["reason"]
    assert "cpu_float_precision = 'f32'" in check["reason"]
    status = build._precision_status(RunLayout(run_dir))["precisions"]["teacher.fp32"]
    assert status == {"status": "failed", "reason": check["reason"]}
    # In f32 the check does not apply: fp32 passes again.
    result = run_cli("export", config, "--out", run_dir, "--set", "export.bf16_min_psnr_db=200.0",
                     "--set", 'export.cpu_float_precision="f32"')
    assert result.returncode == 0, result.stderr
    quant = json.loads((run_dir / "export" / "quant.json").read_text())["teacher"]
    assert quant["float_precision"] == "f32" and "fp32" not in quant
    assert build._precision_status(RunLayout(run_dir))["precisions"]["teacher.fp32"] == {"status": "passed"}


def test_an_fp32_only_export_still_records_its_float_precision(served):
    quant = json.loads((served.run_dir / "export" / "quant.json").read_text())["teacher"]
    assert quant["float_precision"] == "f32" and "fp32" not in quant  # the fixture pins f32
