from conftest import copy_run

from stylepress.benchmarks import serving_latency
from stylepress.config import load_config


def test_latency_report_records_all_paths_machine_and_versions(served, tmp_path):
    config, run_dir = copy_run(served.run_dir.parent / "tiny.toml", served.run_dir, tmp_path)
    report = serving_latency.run(load_config(config), run_dir, repeats=3, warmup=1)
    assert set(report["latency_ms"]) == {"onnxruntime_network", "onnxruntime_full_path", "teacher_fp32_full_path",
                                         "triton_http"}
    for figures in report["latency_ms"].values():
        assert 0 < figures["min"] <= figures["p50"] <= figures["p95"] <= figures["p99"]
    assert report["machine"]["cores"] and report["versions"]["onnxruntime"]
    assert (run_dir / "report" / "serving_latency.json").is_file()
    points = {(p["protocol"], p["concurrency"]): p for p in report["concurrency"]}
    assert set(points) == {(proto, c) for proto in ("http", "grpc") for c in (1, 2, 4, 8)}
    for p in points.values():
        assert p["requests"] >= 4 * p["concurrency"] and 0 < p["p50_ms"] <= p["p95_ms"] <= p["p99_ms"]
        assert p["throughput"] > 0 and p["generator_compute_ms"] > 0 and p["generator_queue_ms"] >= 0
    # The tiny config's 200 ms queue delay lets the dynamic batcher group concurrent requests.
    assert points["http", 8]["generator_batches"] < points["http", 8]["requests"]
    # What the server returned is what the same variant gives in process (through the same pre/post-
    # processing): the served-path quality gate measures the selection, not something else.
    served_q, in_process = report["quality"]["served"], report["quality"]["in_process"]
    assert set(served_q["per_style"]) == {"sketch", "oil"}
    for style, q in served_q["per_style"].items():
        other = in_process["per_style"][style]
        assert (q["psnr_db"] is None) == (other["psnr_db"] is None)
        if q["psnr_db"] is not None:
            assert abs(q["psnr_db"] - other["psnr_db"]) < 0.1
        assert abs(q["ssim"] - other["ssim"]) < 1e-3
    # Every output format, served against the in-process full path with the same encoder.
    assert set(report["formats"]) == {"png", "jpeg", "webp"}
    for f in report["formats"].values():
        assert f["served_p50_ms"] > 0 and f["in_process_p50_ms"] > 0 and f["served_throughput"] > 0
        assert f["in_process_throughput"] > 0 and f["bytes"] > 0
    assert report["formats"]["jpeg"]["bytes"] < report["formats"]["png"]["bytes"]
    assert "| jpeg |" in (run_dir / "report" / "serving_latency.md").read_text()
