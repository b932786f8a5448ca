"""The load suite on the test server's repository: every response checked, RSS sampled per process."""

from conftest import copy_run

from stylepress.benchmarks import load
from stylepress.config import load_config


def test_load_suite_checks_every_response_and_samples_every_process(served, tmp_path):
    config, run_dir = copy_run(served.run_dir.parent / "tiny.toml", served.run_dir, tmp_path)
    report = load.run(load_config(config), run_dir, requests=40, concurrency=4, fmt="jpeg")
    assert report["errors"] == 0 and report["ready_after"]
    assert [r["protocol"] for r in report["protocols"]] == ["http", "grpc"]
    assert all(r["requests"] == 20 and r["throughput"] > 0 for r in report["protocols"])
    names = {p.split("[")[0] for p in report["rss_growth"]}
    assert "tritonserver" in names and "triton_python_b" in names  # the server and its stubs (comm: 15 chars)
    assert all("last_quarters_drift" in g and "growth" in g["private"] for g in report["rss_growth"].values())
    assert any(g["shared"]["first_half_mb"] > 0 for g in report["rss_growth"].values())  # the stubs' pool
    assert (run_dir / "report" / "load.md").read_text().count("| http |") == 1
