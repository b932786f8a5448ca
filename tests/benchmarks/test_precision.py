import pytest
from conftest import tiny_run

from stylepress import export
from stylepress.benchmarks import precision
from stylepress.config import load_config
from stylepress.export.runtime import available_cpu_providers

# The whole precision bench over every variant: the e2e tier.
pytestmark = pytest.mark.e2e


def test_precision_report_covers_every_variant_and_point_with_quality_memory_and_a_profile_when_slow(tmp_path):
    config, run_dir = tiny_run(tmp_path)
    # A random network quantizes poorly: with the default fallback every layer goes back to float.
    export.run(load_config(config, ["export.int8.max_fallback=2"]), run_dir, show_progress=False)
    cfg = load_config(config, ["bench.resolutions=[32, 48]", "bench.batches=[1, 2]"])
    # An unreachable target speedup forces the per-operator profile into the report.
    report = precision.run(cfg, run_dir, repeats=3, threads=1, target_speedup=1e9)
    providers = available_cpu_providers()
    assert {(r["precision"], r["provider"]) for r in report["variants"]} == {
        (p, prov) for p in ("fp32", "fp16", "int8") for prov in providers} | {("fp32", "eager")}
    by = {(r["precision"], r["provider"]): r for r in report["variants"]}
    assert by[("fp32", "default")]["psnr_db"] is None  # the reference itself
    assert by[("fp32", "eager")]["psnr_db"] > 60  # PyTorch itself: the export's parity
    assert by[("int8", "default")]["psnr_db"] > 10 and 0 < by[("int8", "default")]["ssim"] <= 1
    size = cfg.serving_resolution
    for r in report["variants"]:
        assert 0 < r["p50_ms"] <= r["p95_ms"] and r["runs"] >= 3 and r["size_bytes"] > 0
        assert 0 < r["peak_memory_mb"] < 500  # this model alone, not the measuring process
        shapes = [(p["batch"], p["resolution"]) for p in r["points"]]
        assert shapes[0] == (1, size) and set(shapes) == {(1, size), (1, 32), (2, 32), (1, 48), (2, 48)}
        for p in r["points"]:
            assert p["p50_ms"] <= p["p99_ms"] and p["throughput"] == pytest.approx(1000 * p["batch"] / p["p50_ms"])
    profiles = report["profiles"]["teacher"]
    assert "Conv" in profiles["fp32/default"] and all(ms >= 0 for ms in profiles["fp32/default"].values())
    table = (run_dir / "report" / "precision.md").read_text()
    assert table.count("| teacher |") == len(report["variants"])
