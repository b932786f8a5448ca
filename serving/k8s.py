"""Kubernetes and KServe manifests for the served repository: `write_k8s(cfg, run_dir)` writes
<run>/deploy/k8s/.

- triton.yaml: a Deployment (Triton with keys on its APIs, the nginx guard of proxy.py as a sidecar
  terminating TLS, probes on /v2/health/*, resources from the bench), its Service, a
  HorizontalPodAutoscaler (autoscaling/v2) on queue time per request through the Prometheus adapter,
  a PodDisruptionBudget, the proxy's ConfigMap and the adapter's rule.
- kserve.yaml: the same server as a KServe InferenceService (the kserve-tritonserver runtime,
  autoscaled by KEDA on the same Prometheus query).
- Dockerfile: the image the manifests name: NVIDIA's Triton container (GPU targets) or the CPU
  runtime this project runs locally (runtime.py), with the model repository copied in.

Keys are never written: the manifests read the Secret `stylepress-keys` (admin-key, inference-key,
inference-key.map) and the TLS Secret `stylepress-tls`, which the README says how to create.
"""

from __future__ import annotations

import json
from pathlib import Path

import yaml

from stylepress.config import Config
from stylepress.fsutil import sha256, write_text
from stylepress.layout import RunLayout

from . import proxy
from .monitoring import queue_ms_query, thresholds
from .runtime import (
    ADMIN_APIS,
    ADMIN_HEADER,
    ENV_PACKAGES,
    INFERENCE_APIS,
    INFERENCE_HEADER,
    PRELOAD,
    PYTRITON,
    key_variable,
    restriction_args,
)

KUBERNETES_VERSION = "1.30.0"  # the manifests are validated against it (kubernetes-validate --strict)
TRITON_VERSION = "24.10"  # NVIDIA's container with Triton 2.51, the version the repository targets
TRITON_IMAGE = f"nvcr.io/nvidia/tritonserver:{TRITON_VERSION}-py3"
NGINX_IMAGE = "nginx:1.27-alpine"
HTTP, GRPC, METRICS, HTTPS = 8000, 8001, 8002, 8443
QUEUE_METRIC = "stylepress_queue_ms_per_request"  # served by the Prometheus adapter to the HPA
MAX_REPLICAS = 8
TRITON_BASE_MB = 512  # tritonserver and its Python-backend stubs before any model, measured locally
CPU_TRITON = "/opt/triton/pytriton/tritonserver"
PRELOAD_SO = "/opt/stylepress/preload.so"  # built into the image from preload.c (Dockerfile)


def _resources(cfg: Config, layout: RunLayout) -> dict:
    """CPU: the bench's threads per instance; memory: the served variant's peak in the bench per instance
    plus Triton's own, doubled for the limit; one GPU for GPU targets."""
    sc = cfg.serving
    peak = 0.0
    if layout.precision_json.is_file() and layout.selection.is_file():
        served = json.loads(layout.selection.read_text())["served"]
        for v in json.loads(layout.precision_json.read_text())["variants"]:
            if (v["model"], v["precision"], v["provider"]) == (served["model"], served["precision"],
                                                                 served["provider"]):
                peak = v.get("peak_memory_mb") or 0.0
    memory = int(TRITON_BASE_MB + peak * sc.instances)
    out = {"requests": {"cpu": str(cfg.bench.threads * sc.instances), "memory": f"{memory}Mi"},
           "limits": {"memory": f"{2 * memory}Mi"}}
    if sc.target != "cpu" and (sc.target != "onnxruntime" or sc.kind == "gpu"):
        out["limits"]["nvidia.com/gpu"] = 1
    return out


def _key_args(value) -> list[str]:
    """The API restrictions, each key given as `value(header)`."""
    return [*restriction_args(ADMIN_APIS, ADMIN_HEADER, value(ADMIN_HEADER)),
            *restriction_args(INFERENCE_APIS, INFERENCE_HEADER, value(INFERENCE_HEADER))]


def _triton_args(cfg: Config) -> list[str]:
    """HTTP on loopback: only the proxy in the same pod reaches it (no pod can skip its body cap). The keys
    are preload.c's placeholders, filled in from the environment before main(): not in the pod's `ps`."""
    args = ["--model-repository=/models", "--model-control-mode=none", "--disable-auto-complete-config",
            "--strict-readiness=true", "--exit-on-error=true", "--http-address=127.0.0.1", f"--http-port={HTTP}",
            f"--grpc-port={GRPC}", f"--metrics-port={METRICS}", "--grpc-use-ssl=true",
            "--grpc-server-cert=/tls/tls.crt", "--grpc-server-key=/tls/tls.key",
            *_key_args(lambda header: f"@{key_variable(header)}@")]
    if cfg.serving.target == "cpu":
        args.append(f"--backend-directory={CPU_TRITON}/backends")
    return args


def _key_env() -> list[dict]:
    return [{"name": key_variable(header), "valueFrom": {"secretKeyRef": {"name": "stylepress-keys", "key": header}}}
            for header in (ADMIN_HEADER, INFERENCE_HEADER)]


def _probe(path: str, **timing) -> dict:
    """Through the proxy (Triton's HTTP is on loopback); health is open there without a key."""
    return {"httpGet": {"path": path, "port": HTTPS, "scheme": "HTTPS"}, "periodSeconds": 10, "timeoutSeconds": 5,
            **timing}


def manifests(cfg: Config, run_dir: Path) -> dict[str, list[dict]]:
    layout, name, sc = RunLayout(run_dir), cfg.model_name, cfg.serving
    t = thresholds(cfg, layout.root)
    tag = sha256(layout.selection)[:12] if layout.selection.is_file() else "latest"
    image = f"stylepress/{name}-triton:{tag}"  # built from the Dockerfile beside; push it to your registry
    labels = {"app.kubernetes.io/name": "stylepress", "app.kubernetes.io/instance": name}
    command = [f"{CPU_TRITON}/bin/tritonserver"] if sc.target == "cpu" else ["tritonserver"]
    triton = {
        "name": "triton", "image": image, "command": command, "args": _triton_args(cfg),
        "env": [*_key_env(), {"name": "LD_PRELOAD", "value": PRELOAD_SO}],
        "ports": [{"name": "grpc", "containerPort": GRPC}, {"name": "metrics", "containerPort": METRICS}],
        "resources": _resources(cfg, layout),
        "startupProbe": _probe("/v2/health/ready", failureThreshold=60),
        "readinessProbe": _probe("/v2/health/ready", failureThreshold=3),
        "livenessProbe": _probe("/v2/health/live", failureThreshold=3),
        "volumeMounts": [{"name": "tls", "mountPath": "/tls", "readOnly": True}],
        "securityContext": {"allowPrivilegeEscalation": False},
    }
    guard = {
        "name": "proxy", "image": NGINX_IMAGE,
        "command": ["nginx", "-p", "/var/run/proxy", "-c", "/etc/stylepress-proxy/nginx.conf", "-g", "daemon off;"],
        "ports": [{"name": "https", "containerPort": HTTPS}],
        "resources": {"requests": {"cpu": "100m", "memory": "64Mi"}, "limits": {"memory": "256Mi"}},
        "volumeMounts": [{"name": "proxy-config", "mountPath": "/etc/stylepress-proxy", "readOnly": True},
                         {"name": "keys", "mountPath": "/etc/stylepress-keys", "readOnly": True},
                         {"name": "tls", "mountPath": "/tls", "readOnly": True},
                         {"name": "proxy-run", "mountPath": "/var/run/proxy"}],
        "securityContext": {"allowPrivilegeEscalation": False},
    }
    volumes = [{"name": "tls", "secret": {"secretName": "stylepress-tls"}},
               {"name": "keys", "secret": {"secretName": "stylepress-keys",
                                           "items": [{"key": proxy.KEY_MAP, "path": proxy.KEY_MAP}]}},
               {"name": "proxy-config", "configMap": {"name": f"{name}-proxy"}},
               {"name": "proxy-run", "emptyDir": {}}]
    nginx = proxy.nginx_conf(f"127.0.0.1:{HTTP}", str(HTTPS), [name], sc.max_bytes,
                             (Path("/tls/tls.crt"), Path("/tls/tls.key")),
                             key_map=f"/etc/stylepress-keys/{proxy.KEY_MAP}").replace(
        "pid nginx.pid;", "pid /var/run/proxy/nginx.pid;")
    meta = {"name": name, "labels": labels}
    deployment = {
        "apiVersion": "apps/v1", "kind": "Deployment", "metadata": meta,
        "spec": {"replicas": 1, "selector": {"matchLabels": labels}, "template": {
            "metadata": {"labels": labels, "annotations": {  # the Prometheus convention for pod scraping
                "prometheus.io/scrape": "true", "prometheus.io/port": str(METRICS)}},
            "spec": {"containers": [triton, guard], "volumes": volumes, "terminationGracePeriodSeconds": 60}}}}
    service = {"apiVersion": "v1", "kind": "Service", "metadata": meta, "spec": {
        "selector": labels, "ports": [{"name": "https", "port": HTTPS, "targetPort": "https"},
                                      {"name": "grpc", "port": GRPC, "targetPort": "grpc"},
                                      {"name": "metrics", "port": METRICS, "targetPort": "metrics"}]}}
    # Scale out when queueing passes half of what the alert fires at (the served p50 by default).
    target = f"{max(1, round(t['queue_ms'] / 2 * 1000))}m"
    hpa = {"apiVersion": "autoscaling/v2", "kind": "HorizontalPodAutoscaler", "metadata": meta, "spec": {
        "scaleTargetRef": {"apiVersion": "apps/v1", "kind": "Deployment", "name": name},
        "minReplicas": 1, "maxReplicas": MAX_REPLICAS,
        "metrics": [{"type": "Pods", "pods": {"metric": {"name": QUEUE_METRIC},
                                              "target": {"type": "AverageValue", "averageValue": target}}}]}}
    pdb = {"apiVersion": "policy/v1", "kind": "PodDisruptionBudget", "metadata": meta,
           "spec": {"minAvailable": 1, "selector": {"matchLabels": labels}}}
    proxy_config = {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": f"{name}-proxy", "labels": labels},
                    "data": {"nginx.conf": nginx}}
    adapter_rule = {"rules": [{
        "seriesQuery": f'nv_inference_queue_duration_us{{model="{name}_generator",namespace!="",pod!=""}}',
        "resources": {"overrides": {"namespace": {"resource": "namespace"}, "pod": {"resource": "pod"}}},
        "name": {"as": QUEUE_METRIC},
        "metricsQuery": queue_ms_query(f'{{model="{name}_generator",<<.LabelMatchers>>}}', "2m", "<<.GroupBy>>")}]}
    adapter = {"apiVersion": "v1", "kind": "ConfigMap",
               "metadata": {"name": f"{name}-prometheus-adapter-rules", "labels": labels},
               "data": {"config.yaml": yaml.safe_dump(adapter_rule, sort_keys=False, width=10_000)}}
    # KServe's runtime sets the repository (/mnt/models), ports and probes; TLS is its ingress's job. Its
    # image has no preload: Kubernetes expands $(VAR) into the arguments (the pod's own `ps` shows them).
    isvc_triton = {"storageUri": f"pvc://stylepress-models/{RunLayout(Path()).repository.name}",
                   "runtimeVersion": f"{TRITON_VERSION}-py3", "protocolVersion": "v2",
                   "env": _key_env(),
                   "args": ["--strict-readiness=true", "--disable-auto-complete-config",
                            *_key_args(lambda header: f"$({key_variable(header)})")],
                   "resources": triton["resources"]}
    isvc = {"apiVersion": "serving.kserve.io/v1beta1", "kind": "InferenceService", "metadata": {
        "name": name, "labels": labels, "annotations": {"serving.kserve.io/deploymentMode": "RawDeployment",
                                                        "serving.kserve.io/autoscalerClass": "keda"}},
        "spec": {"predictor": {"minReplicas": 1, "maxReplicas": MAX_REPLICAS, "triton": isvc_triton, "autoScaling": {
            "metrics": [{"type": "External", "external": {
                "metric": {"backend": "prometheus", "serverAddress": "http://prometheus.monitoring:9090",
                           "query": queue_ms_query(f'{{model="{name}_generator"}}', "2m", "")},
                "target": {"type": "Value", "value": target}}}]}}}}
    return {"triton.yaml": [deployment, service, hpa, pdb, proxy_config, adapter], "kserve.yaml": [isvc]}


def dockerfile(cfg: Config) -> str:
    """The image: preload.c built in a first stage (keys out of `ps`), then NVIDIA's Triton (GPU targets)
    or the CPU runtime of serving/runtime.py, and the model repository. Build from the run directory."""
    head = f"""# in the run directory: docker build -f deploy/k8s/Dockerfile -t stylepress/{cfg.model_name}-triton:TAG .
FROM gcc:12 AS preload
COPY deploy/k8s/{PRELOAD.name} /src/
RUN gcc -shared -fPIC -O2 -o /preload.so /src/{PRELOAD.name}
"""
    if cfg.serving.target != "cpu":
        body = f"FROM {TRITON_IMAGE}\n"
    else:
        packages = " ".join(f'"{p}"' for p in ENV_PACKAGES)
        body = f"""FROM python:3.11-slim
RUN pip install --no-cache-dir --no-deps --target /opt/triton {PYTRITON} \\
 && cp /opt/triton/pytriton/tritonserver/python_backend_stubs/3.11/triton_python_backend_stub \\
       {CPU_TRITON}/backends/python/ \\
 && python -m venv /opt/triton-env && /opt/triton-env/bin/pip install --no-cache-dir {packages}
ENV PATH=/opt/triton-env/bin:$PATH PYTHONDONTWRITEBYTECODE=1
"""
    return head + body + f"COPY --from=preload /preload.so {PRELOAD_SO}\nCOPY model_repository /models\nUSER 1000\n"


class _Dumper(yaml.SafeDumper):
    def ignore_aliases(self, data) -> bool:  # shared label dicts are written out, not as &anchors
        return True


def write_k8s(cfg: Config, run_dir: str | Path) -> Path:
    folder = RunLayout(run_dir).deploy / "k8s"
    for file, docs in manifests(cfg, Path(run_dir)).items():
        write_text(folder / file, yaml.dump_all(docs, Dumper=_Dumper, sort_keys=False, width=10_000))
    write_text(folder / "Dockerfile", dockerfile(cfg))
    write_text(folder / PRELOAD.name, PRELOAD.read_text())
    return folder
