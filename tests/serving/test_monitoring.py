"""Monitoring: the rules and dashboard use only metrics the real server exposes, promtool checks and
tests them, and a real Prometheus scraping the test server fires the error-ratio alert."""

import json
import re
import shutil
import subprocess
import time
import urllib.request

import pytest
from conftest import copy_run

from stylepress import serving
from stylepress.config import load_config
from stylepress.errors import StylepressError
from stylepress.serving import monitoring


def _promtool() -> str:
    path = shutil.which("promtool")
    assert path, "promtool is not installed: `make setup` as root, or install Debian's prometheus"
    return path


@pytest.fixture
def deployed(served, tmp_path):
    config, run_dir = copy_run(served.run_dir.parent / "tiny.toml", served.run_dir, tmp_path)
    with open(config, "a") as f:  # fast enough to fire within the test: 10 s window, no hold time
        f.write('[serving.alerts]\nwindow = "10s"\nhold = "0s"\nerror_ratio = 0.2\n')
    cfg = load_config(config)
    (run_dir / "report").mkdir(exist_ok=True)
    (run_dir / "report" / "serving_latency.json").write_text(json.dumps(
        {"latency_ms": {"triton_http": {"p50": 42.0}}}))  # the served figure the queue threshold derives from
    thresholds = monitoring.write_monitoring(cfg, run_dir)
    return run_dir / "deploy", thresholds


@pytest.mark.unit
def test_rules_at_the_default_thresholds_pass_promtool(tmp_path):
    import yaml

    t = {"error_ratio": 0.01, "queue_ms": 17.3, "queue_ms_from": "served p50", "pending": 16, "cpu": 0.9,
         "window": "5m", "hold": "5m"}
    (tmp_path / "rules.yml").write_text(yaml.safe_dump(monitoring.rules("demo", t)))
    (tmp_path / "rules.test.yml").write_text(yaml.safe_dump(monitoring.rules_test("demo", t)))
    for cmd in (["check", "rules", "rules.yml"], ["test", "rules", "rules.test.yml"]):
        result = subprocess.run([_promtool(), *cmd], cwd=tmp_path, capture_output=True, text=True)
        assert result.returncode == 0, result.stdout + result.stderr


def test_thresholds_derive_from_the_served_bench_and_promtool_passes(deployed):
    deploy, t = deployed
    assert t["queue_ms"] == 42.0 and t["queue_ms_from"] == "served p50" and t["pending"] == 16  # 2 x 8 x 1
    prom = deploy / "prometheus"
    for cmd in (["check", "rules", "rules.yml"], ["test", "rules", "rules.test.yml"]):
        result = subprocess.run([_promtool(), *cmd], cwd=prom, capture_output=True, text=True)
        assert result.returncode == 0, result.stdout + result.stderr
    assert "SUCCESS" in result.stdout


def test_every_metric_in_the_rules_and_dashboard_is_in_the_real_scrape(served, deployed):
    deploy, _ = deployed
    text = (deploy / "prometheus" / "rules.yml").read_text() + (deploy / "grafana" / "dashboard.json").read_text()
    used = set(re.findall(r"\bnv_[a-z_]+", text))
    scrape = urllib.request.urlopen(served.server.metrics_url, timeout=10).read().decode()
    exposed = set(re.findall(r"^(nv_[a-z_]+)[{ ]", scrape, re.M))
    assert len(used) >= 6 and used <= exposed, used - exposed


def test_a_real_prometheus_fires_the_error_ratio_alert(served, deployed, tmp_path):
    deploy, _ = deployed
    prometheus = shutil.which("prometheus")
    assert prometheus, "prometheus is not installed: `make setup` as root, or install Debian's prometheus"
    port = serving.free_port()
    target = served.server.metrics_url.removeprefix("http://").removesuffix("/metrics")
    (tmp_path / "prometheus.yml").write_text(
        "global: {scrape_interval: 1s, evaluation_interval: 1s}\n"
        f"rule_files: [{deploy / 'prometheus' / 'rules.yml'}]\n"
        f"scrape_configs: [{{job_name: {monitoring.JOB}, static_configs: [{{targets: ['{target}']}}]}}]\n")
    proc = subprocess.Popen([prometheus, f"--config.file={tmp_path / 'prometheus.yml'}",
                             f"--storage.tsdb.path={tmp_path / 'data'}", f"--web.listen-address=127.0.0.1:{port}"],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    client = serving.Client(served.server.http_url)
    try:
        deadline, state = time.monotonic() + 90, None
        while time.monotonic() < deadline and state != "firing":
            with pytest.raises(StylepressError):
                client.stylize(b"not an image", "oil")  # a failed request per round
            try:
                alerts = json.loads(urllib.request.urlopen(f"http://127.0.0.1:{port}/api/v1/alerts",
                                                           timeout=5).read())["data"]["alerts"]
            except OSError:
                alerts = []  # not up yet
            states = {a["state"] for a in alerts if a["labels"]["alertname"] == "StylepressErrorRatio"
                      and a["labels"]["model"] == "tiny"}
            state = "firing" if "firing" in states else state
            time.sleep(0.5)
        assert state == "firing"
    finally:
        proc.terminate()
        proc.wait(30)
    assert served.server.is_ready()
