from stylepress.benchmarks import serving_latency
from stylepress.config import load_config


def test_latency_report_records_all_paths_machine_and_versions(served):
    cfg = load_config(served.run_dir.parent / "tiny.toml")
    report = serving_latency.run(cfg, served.run_dir, repeats=3, warmup=1)
    assert set(report["latency_ms"]) == {"onnxruntime_network", "onnxruntime_full_path", "triton_http"}
    for figures in report["latency_ms"].values():
        assert 0 < figures["min"] <= figures["p50"] <= figures["p95"] <= figures["p99"]
    assert report["machine"]["cores"] and report["versions"]["onnxruntime"]
    assert (served.run_dir / "report" / "serving_latency.json").is_file()
    points = {(p["protocol"], p["concurrency"]): p for p in report["concurrency"]}
    assert set(points) == {(proto, c) for proto in ("http", "grpc") for c in (1, 2, 4, 8)}
    for p in points.values():
        assert p["requests"] >= 4 * p["concurrency"] and 0 < p["p50_ms"] <= p["p95_ms"] <= p["p99_ms"]
        assert p["throughput"] > 0 and p["generator_compute_ms"] > 0 and p["generator_queue_ms"] >= 0
    # The tiny config's 200 ms queue delay lets the dynamic batcher group concurrent requests.
    assert points["http", 8]["generator_batches"] < points["http", 8]["requests"]
