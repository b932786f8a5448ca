"""The one deployment decision (selection.json) on hand-made bench figures."""

import pytest

from stylepress import selection
from stylepress.config import parse_config
from stylepress.errors import StylepressError
from stylepress.layout import RunLayout


def _row(name, p50, psnr, ssim, p95=None):
    model, precision, provider = name.split("-")
    return {"model": model, "precision": precision, "provider": provider, "p50_ms": p50, "p95_ms": p95 or p50 * 1.2,
            "psnr_db_vs_teacher": psnr, "ssim_vs_teacher": ssim}


ROWS = [_row("teacher-fp32-default", 100.0, None, 1.0), _row("teacher-int8-openvino", 30.0, 41.0, 0.99),
        _row("teacher-fp32-eager", 90.0, 80.0, 1.0),
        _row("student-fp32-default", 40.0, 34.0, 0.97), _row("student-int8-openvino", 10.0, 31.0, 0.95),
        _row("student-int8-default", 50.0, 31.0, 0.95)]


@pytest.fixture
def layout(tmp_path):
    """A run whose export holds every variant's file (contents are not read)."""
    layout = RunLayout(tmp_path / "run")
    layout.export.mkdir(parents=True)
    for model in ("teacher", "student"):
        for precision in ("fp32", "int8"):
            layout.onnx(model, precision).write_bytes(b"")
    (tmp_path / "p").mkdir()
    return layout


def _decide(layout, rows=ROWS, quant=None, **sections):
    cfg = parse_config({"data": {"photos": "p"}, **sections}, layout.root.parent, "test.toml")
    return selection.decide(cfg, {"variants": rows}, quant or {}, layout)


def _why(result):
    return {c["name"]: c["why"] for c in result["candidates"]}


def test_fastest_variant_meeting_the_quality_gates_is_served(layout):
    result = _decide(layout)
    assert result["served"] == {"name": "student-int8-openvino", "model": "student", "precision": "int8",
                                "provider": "openvino"}
    assert result["source"] == "objective" and not result["fallback"]
    why = _why(result)
    assert why["teacher-fp32-eager"].startswith("PyTorch eager") and why["student-int8-openvino"].startswith("served")
    result = _decide(layout, gates={"min_psnr_db": 33.0})
    assert result["served"]["name"] == "teacher-int8-openvino"  # faster than the student's fp32
    assert "gates.min_psnr_db" in _why(result)["student-int8-openvino"]
    assert _why(result)["student-fp32-default"].startswith("slower than 1.1x the fastest")


def test_a_timing_within_the_margin_never_flips_the_precision(layout):
    # int8 measured 3.7 against fp32's 4.0 ms: under the 10 % bar, so the better quality (fp32) is served.
    rows = [_row("teacher-fp32-default", 20.0, None, 1.0), _row("student-fp32-default", 4.0, 34.0, 0.97),
            _row("student-int8-default", 3.7, 31.0, 0.95)]
    result = _decide(layout, rows)
    assert result["served"]["name"] == "student-fp32-default"
    assert _why(result)["student-int8-default"] == "tie with the fastest, lower quality"
    rows[2] = _row("student-int8-default", 3.0, 31.0, 0.95)  # clearly faster: served
    assert _decide(layout, rows)["served"]["name"] == "student-int8-default"


def test_a_student_below_the_gates_leaves_the_choice_to_the_teacher(layout):
    result = _decide(layout, gates={"min_psnr_db": 42.0})
    assert result["served"]["name"] == "teacher-fp32-default"  # the reference always meets the quality gates


def test_pins_are_recorded_and_still_served_when_they_fail_the_gates(layout):
    result = _decide(layout, serving={"model": "student"}, gates={"min_psnr_db": 99.0})
    assert result["source"] == "config" and result["fallback"]
    assert result["served"]["name"] == "student-fp32-default"  # the best the pin allows; the gates then fail
    assert _why(result)["teacher-fp32-default"] == "serving.model pins student"
    result = _decide(layout, serving={"model": "teacher"})
    assert result["served"]["name"] == "teacher-int8-openvino" and result["source"] == "config"


def test_a_precision_that_missed_its_export_target_is_left_out(layout):
    quant = {"student": {"int8": {"met": False, "reason": "PSNR 20 dB short of 35"}}}
    result = _decide(layout, quant=quant)
    assert result["served"]["name"] == "teacher-int8-openvino"
    assert _why(result)["student-int8-openvino"] == "int8 missed its export target: PSNR 20 dB short of 35"


def test_a_missed_bf16_check_leaves_out_fp32_on_openvino_only(layout):
    rows = [*ROWS, _row("teacher-fp32-openvino", 60.0, 65.0, 1.0)]
    quant = {"teacher": {"fp32": {"met": False, "reason": "bf16 output is 30.0 dB from fp32"},
                         "int8": {"met": False, "reason": "short"}}}
    why = _why(_decide(layout, rows=rows, quant=quant))
    assert why["teacher-fp32-openvino"] == "fp32 missed its export target: bf16 output is 30.0 dB from fp32"
    assert "missed" not in why["teacher-fp32-default"]  # f32 there: the check does not apply


def test_quality_objective_takes_the_best_within_the_latency_gate(layout):
    result = _decide(layout, bench={"objective": "quality"}, gates={"max_p95_ms": 60.0})
    assert result["served"]["name"] == "teacher-int8-openvino"


def test_gpu_targets_follow_a_stated_rule(layout):
    result = _decide(layout, serving={"target": "onnxruntime-tensorrt"})
    assert result["served"] == {"name": "student-int8-tensorrt", "model": "student", "precision": "int8",
                                "provider": "tensorrt"}
    assert "not timed here" in result["rule"]
    with pytest.raises(StylepressError, match="TensorRT engines are built"):  # no engine in this export
        _decide(layout, serving={"target": "tensorrt"})


def test_without_bench_figures_only_a_full_pin_is_served(layout):
    cfg = parse_config({"data": {"photos": "p"}, "serving": {"model": "teacher"}}, layout.root.parent, "t.toml")
    with pytest.raises(StylepressError, match="run `stylepress bench` first"):
        selection.decide(cfg, None, {}, layout)
    cfg = parse_config({"data": {"photos": "p"}, "serving": {"model": "teacher", "precision": "int8"}},
                       layout.root.parent, "t.toml")
    result = selection.decide(cfg, None, {}, layout)
    assert result["served"]["model"] == "teacher" and result["served"]["precision"] == "int8"
    assert result["source"] == "config" and result["candidates"] == []
