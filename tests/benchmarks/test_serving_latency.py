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
