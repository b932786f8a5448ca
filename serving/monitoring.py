"""Monitoring for a served repository: Prometheus alert rules, their `promtool test rules` file and a
Grafana dashboard, written to <run>/deploy/ by `write_monitoring(cfg, run_dir)`.

Metric names are the real server's (DESIGN.md; checked against a live scrape in the tests): counters
have no `_total` suffix, durations are cumulative microsecond counters, nv_cpu_utilization is 0-1, and
failures carry a `reason` label. Thresholds come from `[serving.alerts]`; the two left unset there
derive from what was measured or configured:
- queue_ms: the served p50 at concurrency 1 (report/serving_latency.json): a request that waits in a
  queue longer than a whole served request takes means the server is saturated;
- pending: two full batches per generator instance (2 x max_batch_size x instances) waiting.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

import yaml

from stylepress.config import Config
from stylepress.fsutil import write_json, write_text
from stylepress.layout import RunLayout

JOB = "stylepress-triton"  # the scrape job the rules and the dashboard select
FALLBACK_QUEUE_MS = 100.0  # without served figures (a GPU target measured elsewhere)


def thresholds(cfg: Config, run_dir: Path) -> dict:
    alerts, sc = cfg.serving.alerts, cfg.serving
    queue_ms, source = alerts.queue_ms, "config"
    served = RunLayout(run_dir).served_json
    if queue_ms is None and served.is_file():
        queue_ms, source = json.loads(served.read_text())["latency_ms"]["triton_http"]["p50"], "served p50"
    elif queue_ms is None:
        queue_ms, source = FALLBACK_QUEUE_MS, "default (no served figures)"
    pending = alerts.pending if alerts.pending is not None else 2 * sc.max_batch_size * sc.instances
    return {"error_ratio": alerts.error_ratio, "queue_ms": round(float(queue_ms), 1), "queue_ms_from": source,
            "pending": pending, "cpu": alerts.cpu, "window": alerts.window, "hold": alerts.hold}


def _selector(name: str) -> str:
    return f'{{job="{JOB}",model=~"{name}|{name}_.+"}}'  # the ensemble and its composing models


def queue_ms_query(selector: str, window: str, by: str = "model") -> str:
    """Queue time per request in ms: cumulative queue microseconds over successful requests (also what
    the Kubernetes autoscaler scales on, serving/k8s.py)."""
    return (f"sum by ({by}) (rate(nv_inference_queue_duration_us{selector}[{window}])) / "
            f"sum by ({by}) (rate(nv_inference_request_success{selector}[{window}])) / 1000")


def exprs(name: str, window: str) -> dict[str, str]:
    """The PromQL of each alert's measured quantity (also the dashboard's panels)."""
    sel = _selector(name)
    requests = (f"(sum by (model) (rate(nv_inference_request_success{sel}[{window}])) + "
                f"sum by (model) (rate(nv_inference_request_failure{sel}[{window}])))")
    return {
        "error_ratio": f"sum by (model, reason) (rate(nv_inference_request_failure{sel}[{window}])) "
                       f"/ ignoring (reason) group_left() {requests}",
        "queue_ms": queue_ms_query(sel, window),
        "compute_ms": f"sum by (model) (rate(nv_inference_compute_infer_duration_us{sel}[{window}])) / "
                      f"sum by (model) (rate(nv_inference_request_success{sel}[{window}])) / 1000",
        "requests_per_s": f"sum by (model) (rate(nv_inference_request_success{sel}[{window}]))",
        "pending": f"sum by (model) (nv_inference_pending_request_count{sel})",
        "cpu": f'max by (instance) (nv_cpu_utilization{{job="{JOB}"}})',
        "up": f'up{{job="{JOB}"}}',
    }


def _alerts(name: str, t: dict) -> list[tuple[str, str, str, str]]:
    """(alert, expression, hold, summary template) of each alert."""
    q = exprs(name, t["window"])
    return [
        ("StylepressErrorRatio", f"({q['error_ratio']}) > {t['error_ratio']}", t["hold"],
         f"{{{{ $labels.model }}}}: more than {t['error_ratio']:.1%} of requests fail ({{{{ $labels.reason }}}})"),
        ("StylepressQueueTime", f"({q['queue_ms']}) > {t['queue_ms']}", t["hold"],
         f"{{{{ $labels.model }}}}: requests wait over {t['queue_ms']} ms in the queue ({t['queue_ms_from']})"),
        ("StylepressPendingRequests", f"({q['pending']}) > {t['pending']}", t["hold"],
         f"{{{{ $labels.model }}}}: over {t['pending']} requests pending"),
        ("StylepressCPUSaturated", f"({q['cpu']}) > {t['cpu']}", t["hold"],
         f"{{{{ $labels.instance }}}}: CPU utilization over {t['cpu']:.0%}"),
        ("StylepressTritonDown", f"{q['up']} == 0", "1m", "{{ $labels.instance }}: Triton's metrics endpoint is down"),
    ]


def rules(name: str, t: dict) -> dict:
    return {"groups": [{"name": f"stylepress-{name}", "rules": [
        {"alert": a, "expr": e, "for": hold, "labels": {"severity": "page"}, "annotations": {"summary": s}}
        for a, e, hold, s in _alerts(name, t)]}]}


def rules_test(name: str, t: dict) -> dict:
    """`promtool test rules` cases: each alert fires on a synthetic breach and stays quiet when healthy."""
    base = f'job="{JOB}",instance="triton:8002",version="1"'
    window, hold = _seconds(t["window"]), _seconds(t["hold"])
    step = max(1, window // 5)  # samples per rate() window: enough for rate() at any window
    n = (window + max(hold, 60)) // step + 10  # samples: past the window and both hold times
    at = f"{(n - 2) * step}s"
    r = t["error_ratio"]
    ok, bad = 100, int(100 * 2 * r / (1 - r)) + 1  # per step: a failure ratio of about 2r / (1 + r) > r
    queue_us = int(t["queue_ms"] * 1000 * ok * 2)  # twice the threshold per request

    def series(metric: str, labels: str, values: str) -> dict:
        return {"series": f"{metric}{{{base},{labels}}}", "values": values}

    healthy = [series("nv_inference_request_success", f'model="{name}"', f"0+{ok}x{n}"),
               series("nv_inference_request_failure", f'model="{name}",reason="BACKEND"', f"0+0x{n}"),
               series("nv_inference_queue_duration_us", f'model="{name}"', f"0+10x{n}"),
               series("nv_inference_pending_request_count", f'model="{name}"', f"0x{n}"),
               series("nv_cpu_utilization", "", f"0.1x{n}"), {"series": f'up{{job="{JOB}",instance="triton:8002"}}',
                                                             "values": f"1x{n}"}]
    breach = [series("nv_inference_request_success", f'model="{name}_generator"', f"0+{ok}x{n}"),
              series("nv_inference_request_failure", f'model="{name}_generator",reason="BACKEND"', f"0+{bad}x{n}"),
              series("nv_inference_queue_duration_us", f'model="{name}_generator"', f"0+{queue_us}x{n}"),
              series("nv_inference_pending_request_count", f'model="{name}_generator"', f"{t['pending'] + 5}x{n}")]
    fired = {"StylepressErrorRatio": {"model": f"{name}_generator", "reason": "BACKEND"},
             "StylepressQueueTime": {"model": f"{name}_generator"},
             "StylepressPendingRequests": {"model": f"{name}_generator"}}
    summary = {a: s for a, _, _, s in _alerts(name, t)}

    def expected(alert: str, labels: dict) -> dict:  # promtool compares the expanded annotations too
        text = re.sub(r"\{\{ \$labels\.(\w+) \}\}", lambda m: labels[m.group(1)], summary[alert])
        return {"exp_labels": {"severity": "page", **labels}, "exp_annotations": {"summary": text}}
    alerts = [{"eval_time": at, "alertname": a, "exp_alerts": [expected(a, labels)]} for a, labels in fired.items()]
    alerts += [{"eval_time": at, "alertname": a, "exp_alerts": []} for a in ("StylepressCPUSaturated",
                                                                              "StylepressTritonDown")]
    down = [{"series": f'up{{job="{JOB}",instance="triton:8002"}}', "values": f"1 1 0x{n}"},
            series("nv_cpu_utilization", "", f"0.99x{n}")]
    return {"rule_files": ["rules.yml"], "evaluation_interval": f"{step}s", "tests": [
        {"interval": f"{step}s", "input_series": healthy + breach, "alert_rule_test": alerts},
        {"interval": f"{step}s", "input_series": healthy, "alert_rule_test": [
            {"eval_time": at, "alertname": a, "exp_alerts": []} for a in fired]},
        {"interval": f"{step}s", "input_series": down, "alert_rule_test": [
            {"eval_time": at, "alertname": "StylepressTritonDown",
             "exp_alerts": [expected("StylepressTritonDown", {"job": JOB, "instance": "triton:8002"})]},
            {"eval_time": at, "alertname": "StylepressCPUSaturated",
             "exp_alerts": [expected("StylepressCPUSaturated", {"instance": "triton:8002"})]}]},
    ]}


def dashboard(name: str, t: dict) -> dict:
    """A Grafana dashboard (JSON model) of the same quantities, with the alert thresholds drawn."""
    q = exprs(name, "$__rate_interval")
    panels = [("Requests/s by model", q["requests_per_s"], None), ("Error ratio by model and reason",
                                                                   q["error_ratio"], t["error_ratio"]),
              ("Queue time per request (ms)", q["queue_ms"], t["queue_ms"]),
              ("Compute time per request (ms)", q["compute_ms"], None),
              ("Pending requests", q["pending"], t["pending"]), ("CPU utilization", q["cpu"], t["cpu"]),
              ("Triton up", q["up"], None)]
    out = []
    for i, (title, expr, threshold) in enumerate(panels):
        steps = [{"color": "green", "value": None}] + ([{"color": "red", "value": threshold}] if threshold else [])
        out.append({"id": i + 1, "type": "timeseries", "title": title,
                    "gridPos": {"x": 12 * (i % 2), "y": 8 * (i // 2), "w": 12, "h": 8},
                    "datasource": {"type": "prometheus", "uid": "${datasource}"},
                    "targets": [{"refId": "A", "expr": expr, "legendFormat": "__auto"}],
                    "fieldConfig": {"defaults": {"thresholds": {"mode": "absolute", "steps": steps},
                                                 "custom": {"thresholdsStyle": {"mode": "line"}}}, "overrides": []}})
    return {"title": f"stylepress: {name}", "uid": f"stylepress-{name}"[:40], "schemaVersion": 39,
            "time": {"from": "now-1h", "to": "now"}, "refresh": "30s", "panels": out,
            "templating": {"list": [{"name": "datasource", "type": "datasource", "query": "prometheus"}]}}


def _seconds(duration: str) -> int:
    return int(duration[:-1]) * {"s": 1, "m": 60, "h": 3600}[duration[-1]]


def write_monitoring(cfg: Config, run_dir: str | Path) -> dict:
    """deploy/prometheus/{rules.yml,rules.test.yml} and deploy/grafana/dashboard.json; returns the thresholds."""
    layout = RunLayout(run_dir)
    t = thresholds(cfg, layout.root)
    name = cfg.model_name
    prom = layout.deploy / "prometheus"
    write_text(prom / "rules.yml", yaml.safe_dump(rules(name, t), sort_keys=False, width=10_000))
    write_text(prom / "rules.test.yml", yaml.safe_dump(rules_test(name, t), sort_keys=False, width=10_000))
    write_json(layout.deploy / "grafana" / "dashboard.json", dashboard(name, t))
    return t
