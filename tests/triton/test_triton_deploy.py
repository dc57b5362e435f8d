"""docker/: the Triton image, the compose file for a GPU host and the Kubernetes example.

What runs here: hadolint on Dockerfile.triton; the compose file against the Compose
Specification's JSON schema (the copy in the docker-compose 1.29.2 wheel, validated with
jsonschema); every Kubernetes object through the official Python client's models
(kubernetes 37.0.2), which drops unknown fields and refuses missing required ones; then the
cross-references (ports, probes, names, metric names) against ffrt's and Triton's. The
checking packages are pip-installed by the test into its cache. What does not run here: no
image is built, no container or cluster runs (no Docker daemon, no GPU, no cluster), and
neither kubectl's server-side validation nor `docker compose config` (they need a server /
the compose plugin).
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "support"))
import serveenv  # noqa: E402
import trtenv  # noqa: E402
from envskip import unavailable  # noqa: E402

ROOT = trtenv.ROOT
DOCKER = ROOT / "docker"
CHECKERS = ["kubernetes==37.0.2", "six", "python-dateutil", "durationpy", "pyyaml==6.0.2", "jsonschema==4.26.0",
            "jsonschema-specifications", "referencing", "rpds-py", "attrs", "oauthlib", "requests-oauthlib",
            "websocket-client", "google-auth", "cachetools", "pyasn1", "pyasn1-modules", "rsa", "requests",
            "charset-normalizer", "idna", "certifi", "urllib3"]


@pytest.fixture(scope="module")
def checked() -> dict:
    site = trtenv._pip_target(trtenv.cache_root() / "deploy-checkers", CHECKERS, "deployment file checkers")
    wheels = trtenv._pip_target(trtenv.cache_root() / "compose-schema", ["docker-compose==1.29.2"], "compose schema")
    schema = wheels / "compose" / "config" / "compose_spec.json"
    if not schema.is_file():  # --target installs the package's files; take the schema from them
        unavailable("docker-compose 1.29.2 installed no compose_spec.json")
    proc = subprocess.run(
        [sys.executable, str(ROOT / "tests" / "support" / "deploy_check.py"), str(DOCKER / "compose.triton.yaml"),
         str(schema), str(DOCKER / "k8s" / "ffrt-triton.yaml"), str(DOCKER / "k8s" / "prometheus-adapter-rules.yaml")],
        capture_output=True, text=True, timeout=300, env={"PYTHONPATH": str(site), "PATH": "/usr/bin:/bin"},
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    return json.loads(proc.stdout)


def test_compose_file_matches_the_compose_schema_and_ffrt(checked):
    assert checked["compose_errors"] == []
    triton = checked["compose"]["services"]["triton"]
    assert (DOCKER / triton["build"]["context"] / triton["build"]["dockerfile"]).resolve() == DOCKER / "Dockerfile.triton"
    assert sorted(triton["ports"]) == ["8000:8000", "8001:8001", "8002:8002"]
    assert "--model-repository=/models" in triton["command"] and "../models:/models:ro" in triton["volumes"]
    gpu = triton["deploy"]["resources"]["reservations"]["devices"][0]
    assert gpu["driver"] == "nvidia" and gpu["capabilities"] == ["gpu"]
    assert "http://localhost:8000/v2/health/ready" in triton["healthcheck"]["test"]


def test_kubernetes_objects_match_the_api_models(checked):
    assert checked["k8s_errors"] == []
    kinds = [d["kind"] for d in checked["k8s"]]
    assert kinds == ["Deployment", "Service", "HorizontalPodAutoscaler"]


def test_kubernetes_example_is_wired_to_tritons_endpoints_and_metrics(checked):
    deploy, service, hpa = checked["k8s"]
    pod = deploy["spec"]["template"]
    assert deploy["spec"]["selector"]["matchLabels"].items() <= pod["metadata"]["labels"].items()
    assert service["spec"]["selector"].items() <= pod["metadata"]["labels"].items()
    container = pod["spec"]["containers"][0]
    ports = {p["name"]: p["containerPort"] for p in container["ports"]}
    assert ports == {"http": 8000, "grpc": 8001, "metrics": 8002}  # Triton's defaults, as in the compose file
    assert {p["targetPort"] for p in service["spec"]["ports"]} == set(ports)
    assert container["readinessProbe"]["httpGet"] == {"path": "/v2/health/ready", "port": "http"}
    assert container["livenessProbe"]["httpGet"] == {"path": "/v2/health/live", "port": "http"}
    assert pod["metadata"]["annotations"]["prometheus.io/port"] == str(ports["metrics"])
    assert container["resources"]["limits"]["nvidia.com/gpu"] == "1"
    assert hpa["spec"]["scaleTargetRef"]["name"] == deploy["metadata"]["name"]
    metric = hpa["spec"]["metrics"][0]["pods"]["metric"]["name"]
    rule = checked["adapter"]["rules"]["custom"][0]
    assert rule["name"]["as"] == metric
    # The adapter computes it from Triton's counters; test_triton_serve checks a real server exports them.
    for name in ("nv_inference_queue_duration_us", "nv_inference_request_success"):
        assert name in serveenv.TRITON_METRICS and name in rule["metricsQuery"]
    assert 'model="ffrt_detector"' in rule["seriesQuery"]


def test_dockerfile_triton_lints_clean_and_installs_ffrt_for_the_python_backend():
    exe = trtenv.hadolint()
    proc = subprocess.run([str(exe), "--no-color", str(DOCKER / "Dockerfile.triton")], capture_output=True, text=True,
                          timeout=120)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    text = (DOCKER / "Dockerfile.triton").read_text()
    copies = lambda t: [line.split()[1] for line in t.splitlines() if line.startswith("COPY ")]  # noqa: E731
    assert copies(text) == copies((DOCKER / "Dockerfile.cpu").read_text())  # the same sources as the tested image
    assert "FROM nvcr.io/nvidia/tritonserver:" in text and 'ENTRYPOINT ["tritonserver"]' in text
    assert 'python3 -c "import ffrt.triton.python_model"' in text  # what model.py imports

