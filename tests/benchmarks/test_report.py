"""Gates and the Pareto frontier on hand-made measurements (selection: tests/core/test_selection.py)."""

import pytest

from stylepress.benchmarks import report
from stylepress.config import parse_config


def _variant(name, p50, psnr, ssim, p95=None):
    model, precision, provider = name.split("-")
    return {"name": name, "model": model, "provider": provider, "precision": precision,
            "quality": {"psnr_db": psnr, "ssim": ssim},
            "points": [{"p50_ms": p50, "p95_ms": p95 or p50 * 1.2, "throughput": 1000 / p50}]}


VARIANTS = [_variant("teacher-fp32-default", 100.0, None, 1.0),
            _variant("student-fp32-default", 40.0, 34.0, 0.97),
            _variant("student-int8-openvino", 10.0, 31.0, 0.95),
            _variant("student-int8-default", 50.0, 31.0, 0.95)]


def _cfg(tmp_path, gates=None, bench=None):
    (tmp_path / "p").mkdir(exist_ok=True)
    raw = {"data": {"photos": "p"}, **({"gates": gates} if gates else {}), **({"bench": bench} if bench else {})}
    return parse_config(raw, tmp_path, "test.toml")


@pytest.mark.parametrize("gate, passing, failing", [
    ("min_psnr_db", 30.0, 32.0),
    ("min_ssim", 0.9, 0.96),
    ("max_p95_ms", 13.0, 11.0),
    ("min_speedup_vs_teacher", 9.0, 11.0),
    ("min_throughput", 90.0, 110.0),
])
def test_each_gate_passes_and_fails_on_the_served_variant(tmp_path, gate, passing, failing):
    served = VARIANTS[2]  # 10 ms p50, 12 ms p95, 31 dB, 0.95: 10x the teacher, 100 images/s
    for threshold, ok in ((passing, True), (failing, False)):
        cfg = _cfg(tmp_path, {gate: threshold})
        (result,) = [g for g in report.gates(served, 100.0, cfg, "served") if g["name"] == gate]
        assert result["passed"] is ok and result["threshold"] == threshold and result["measured"] == "served"
        assert (result["margin"] >= 0) is ok


def test_gates_fail_when_nothing_was_measured(tmp_path):
    results = report.gates(None, 100.0, _cfg(tmp_path, {"min_throughput": 1.0}), "served")
    assert results and not any(g["passed"] for g in results)


def test_pareto_front_keeps_only_undominated_variants():
    front = [v["name"] for v in report.pareto_front(VARIANTS)]
    assert front == ["student-int8-openvino", "student-fp32-default", "teacher-fp32-default"]
