"""Kubernetes and KServe manifests for every target: built-in kinds validate strictly against the
Kubernetes schemas (kubernetes-validate, offline; any warning fails), the InferenceService against
KServe's CRD schema kept in the project."""

import json
import subprocess
import sys
import textwrap
from pathlib import Path

import jsonschema
import pytest
import yaml

from stylepress.config import load_config
from stylepress.serving import k8s

SCHEMA = Path(k8s.__file__).parent / "schemas" / "kserve-inferenceservice-v1beta1.json"


@pytest.mark.parametrize("target", ["cpu", "onnxruntime", "tensorrt"])
def test_manifests_validate_for_each_target(tmp_path, target):
    config = tmp_path / "c.toml"
    config.write_text(textwrap.dedent(f"""\
        name = "portrait"
        [data]
        photos = "{tmp_path}"
        [serving]
        target = "{target}"
        """))
    folder = k8s.write_k8s(load_config(config), tmp_path / "run")
    triton = folder / "triton.yaml"
    result = subprocess.run([Path(sys.executable).parent / "kubernetes-validate", "--strict", "-k",
                             k8s.KUBERNETES_VERSION, str(triton)], capture_output=True, text=True)
    assert result.returncode == 0 and "WARN" not in result.stdout + result.stderr, result.stdout + result.stderr
    assert result.stdout.count(" passed for resource ") == 6, result.stdout  # + HPA, PDB, two ConfigMaps
    docs = {d["kind"]: d for d in yaml.safe_load_all(triton.read_text())}
    typo = tmp_path / "typo.yaml"  # the validator is strict: an unknown field fails
    broken = json.loads(json.dumps(docs["Deployment"]))
    broken["spec"]["template"]["spec"]["containers"][0]["readinesProbe"] = {}
    typo.write_text(yaml.safe_dump(broken))
    assert subprocess.run([Path(sys.executable).parent / "kubernetes-validate", "--strict", "-k",
                           k8s.KUBERNETES_VERSION, str(typo)], capture_output=True).returncode != 0
    pod = docs["Deployment"]["spec"]["template"]["spec"]
    triton_c = next(c for c in pod["containers"] if c["name"] == "triton")
    assert ("nvidia.com/gpu" in triton_c["resources"]["limits"]) == (target == "tensorrt")  # onnxruntime: kind cpu
    assert any("@STYLEPRESS_KEY_ADMIN_KEY@" in a for a in triton_c["args"])  # preload.c fills it in: not in ps
    assert "--http-address=127.0.0.1" in triton_c["args"]  # only the proxy sidecar reaches Triton's HTTP
    assert triton_c["readinessProbe"]["httpGet"] == {"path": "/v2/health/ready", "port": 8443, "scheme": "HTTPS"}
    assert "key" not in json.dumps(pod["volumes"][0]) and (folder / "preload.c").is_file()
    assert docs["HorizontalPodAutoscaler"]["spec"]["metrics"][0]["pods"]["metric"]["name"] == k8s.QUEUE_METRIC
    (isvc,) = yaml.safe_load_all((folder / "kserve.yaml").read_text())
    jsonschema.validate(isvc, json.loads(SCHEMA.read_text()))
    assert isvc["spec"]["predictor"]["triton"]["runtimeVersion"] == f"{k8s.TRITON_VERSION}-py3"
    bad = {**isvc, "spec": {"predictor": {**isvc["spec"]["predictor"], "minReplica": 1}}}  # a typo is caught
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.validate(bad, json.loads(SCHEMA.read_text()))
    assert ("nvcr.io/nvidia/tritonserver" in (folder / "Dockerfile").read_text()) == (target != "cpu")


def test_perf_analyzer_input_holds_real_portraits_and_styles(exported_copy):
    import base64
    import io

    from PIL import Image

    from stylepress.serving.perf_input import write_perf_input

    config, run_dir = exported_copy
    folder = write_perf_input(load_config(config), run_dir)
    rows = json.loads((folder / "input_data.json").read_text())["data"]
    assert rows  # the tiny run's val portrait(s)
    for row in rows:
        assert Image.open(io.BytesIO(base64.b64decode(row["IMAGE"]["b64"]))).size[0] > 100
        assert row["IMAGE"]["shape"] == [1] and row["STYLE"]["content"][0] in ("sketch", "oil")
    assert "--input-data input_data.json" in (folder / "README.md").read_text()


def test_deploy_cli_writes_monitoring_manifests_and_perf_input(exported_copy):
    from conftest import run_cli

    config, run_dir = exported_copy
    result = run_cli("deploy", config, "--out", run_dir)
    assert result.returncode == 0, result.stderr
    deploy = run_dir / "deploy"
    for path in ("prometheus/rules.yml", "prometheus/rules.test.yml", "grafana/dashboard.json", "k8s/triton.yaml",
                 "k8s/kserve.yaml", "k8s/Dockerfile", "perf_analyzer/input_data.json"):
        assert (deploy / path).is_file(), path
    assert "no served figures" in " ".join(result.stderr.split())  # the queue threshold's fallback, said
