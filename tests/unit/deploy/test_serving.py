"""How the served side is wired: the gRPC Service and probes, TLS and the token, Triton, OpenTelemetry,
and that every NetworkPolicy, PodDisruptionBudget and ServiceMonitor selects the pods it is meant for."""

from __future__ import annotations

from pathlib import Path

import pytest

from twinray.services.common.health import LIVENESS
from twinray.shared.platform.config import Settings

VALUES = Path(__file__).resolve().parents[3] / "deploy" / "helm" / "values"
NS = "twinray-test"


def selects(selector: dict, labels: dict) -> bool:
    """Kubernetes label-selector semantics (matchLabels and matchExpressions)."""
    if any(labels.get(key) != value for key, value in selector.get("matchLabels", {}).items()):
        return False
    for expression in selector.get("matchExpressions", []):
        key, values = expression["key"], expression.get("values", [])
        holds = {
            "In": labels.get(key) in values,
            "NotIn": labels.get(key) not in values,
            "Exists": key in labels,
            "DoesNotExist": key not in labels,
        }
        if not holds[expression["operator"]]:
            return False
    return True


def ray_pods(manifest: dict) -> dict[str, dict]:
    """role -> pod template of a RayService / RayJob."""
    spec = manifest["spec"]
    cluster = spec.get("rayClusterConfig") or spec["rayClusterSpec"]
    pods = {"head": cluster["headGroupSpec"]["template"]}
    pods |= {f"worker:{g['groupName']}": g["template"] for g in cluster["workerGroupSpecs"]}
    if "submitterPodTemplate" in spec:
        pods["submitter"] = spec["submitterPodTemplate"]
    return pods


def env_of(container: dict) -> dict[str, dict]:
    return {env["name"]: env for env in container.get("env", [])}


def serve_containers(chart, manifests: list[dict]) -> list[dict]:
    service = chart.one(manifests, "RayService")
    return [pod["spec"]["containers"][0] for pod in ray_pods(service).values()]


def test_the_serving_service_exposes_grpc_and_http(chart):
    manifests = chart.render(VALUES / "minimal.yaml")
    service = chart.one(manifests, "RayService")
    ports = {p["name"]: p for p in service["spec"]["serveService"]["spec"]["ports"]}
    assert (ports["grpc"]["port"], ports["grpc"]["appProtocol"], ports["http"]["port"]) == (9000, "grpc", 8000)
    for container in serve_containers(chart, manifests):
        named = {p["name"]: p["containerPort"] for p in container["ports"]}
        assert named["serve"] == 8000 and named["serve-grpc"] == 9000  # KubeRay health-checks the proxy on "serve"
    head = ray_pods(service)["head"]["spec"]["containers"][0]
    assert {p["name"]: p["containerPort"] for p in head["ports"]}["dashboard"] == 8265


def test_workers_use_native_grpc_probes_and_the_head_keeps_kuberays(chart):
    """KubeRay deploys the Serve config only once the head is Ready: its readiness must not wait for Serve."""
    service = chart.one(chart.render(sets=(*chart.credentials, "--set", "probes.liveness.enabled=true")), "RayService")
    for role, pod in ray_pods(service).items():
        container = pod["spec"]["containers"][0]
        if role == "head":
            assert "readinessProbe" not in container and "livenessProbe" not in container
            continue
        assert container["readinessProbe"]["grpc"] == {"port": 9000, "service": ""}
        assert container["livenessProbe"]["grpc"] == {"port": 9000, "service": LIVENESS}


def test_tls_and_the_token_reach_every_proxy(chart):
    manifests = chart.render(VALUES / "tls.yaml")
    service = chart.one(manifests, "RayService")
    assert {p["name"]: p["port"] for p in service["spec"]["serveService"]["spec"]["ports"]}["grpc-tls"] == 9443
    for pod in ray_pods(service).values():
        container = pod["spec"]["containers"][0]
        env = env_of(container)
        (volume,) = [v for v in pod["spec"]["volumes"] if v["name"] == "tls"]
        (mount,) = [m for m in container["volumeMounts"] if m["name"] == "tls"]
        assert volume["secret"]["secretName"] == "twinray-grpc-tls" and mount["readOnly"]
        # kubernetes.io/tls Secrets hold tls.crt and tls.key
        assert env["TWINRAY_TLS_CERT_FILE"]["value"] == f"{mount['mountPath']}/tls.crt"
        assert env["TWINRAY_TLS_KEY_FILE"]["value"] == f"{mount['mountPath']}/tls.key"
        assert (
            env["TWINRAY_TLS_PORT"]["value"] == "9443" and {"name": "serve-grpc-tls", "containerPort": 9443} in container["ports"]
        )
        assert env["TWINRAY_AUTH_TOKEN"]["valueFrom"]["secretKeyRef"] == {"name": "twinray-auth", "key": "TWINRAY_AUTH_TOKEN"}
    worker = ray_pods(service)["worker:cpu"]["spec"]["containers"][0]
    assert worker["readinessProbe"]["grpc"]["port"] == 9000  # the kubelet's probe stays on the plain port


def test_without_tls_or_auth_nothing_of_them_is_rendered(chart):
    for container in serve_containers(chart, chart.render(VALUES / "minimal.yaml")):
        assert not {name for name in env_of(container) if name.startswith(("TWINRAY_TLS", "TWINRAY_AUTH", "TWINRAY_TRITON"))}


def test_triton_reads_the_store_and_the_replicas_know_where_it_is(chart):
    manifests = chart.render(VALUES / "gpu.yaml")
    deployment = chart.one(manifests, "Deployment", "twinray-triton")
    container = deployment["spec"]["template"]["spec"]["containers"][0]
    assert f"--model-repository=s3://twinray-minio.{NS}.svc:9000/twinray/triton" in container["args"]
    env = env_of(container)
    assert env["AWS_SECRET_ACCESS_KEY"]["valueFrom"]["secretKeyRef"] == {
        "name": "twinray-store",
        "key": "TWINRAY_STORE_SECRET_KEY",
    }
    service = chart.one(manifests, "Service", "twinray-triton")
    assert {p["name"]: p["port"] for p in service["spec"]["ports"]}["grpc"] == 8001
    assert selects({"matchLabels": service["spec"]["selector"]}, deployment["spec"]["template"]["metadata"]["labels"])
    for serve in serve_containers(chart, manifests):
        assert env_of(serve)["TWINRAY_TRITON_URL"]["value"] == f"twinray-triton.{NS}.svc:8001"
    hpa = chart.one(manifests, "HorizontalPodAutoscaler")
    assert hpa["spec"]["scaleTargetRef"] == {"apiVersion": "apps/v1", "kind": "Deployment", "name": "twinray-triton"}
    assert "replicas" not in deployment["spec"]  # the HPA owns it


def test_triton_on_an_external_https_store(chart):
    manifests = chart.render(VALUES / "external-minio.yaml", sets=("--set", "triton.enabled=true"))
    container = chart.one(manifests, "Deployment")["spec"]["template"]["spec"]["containers"][0]
    assert "--model-repository=s3://https://minio.storage.svc.cluster.local:9000/twinray-prod/triton" in container["args"]
    assert env_of(container)["AWS_DEFAULT_REGION"]["value"] == "us-east-1"


def test_the_pods_environment_gives_the_settings_asked_for(chart):
    """Settings.from_env reads the rendered plain values (credentials stand in for the Secret's)."""
    manifests = chart.render(VALUES / "external-minio.yaml")
    for container in serve_containers(chart, manifests):
        env = {name: e.get("value", "from-secret") for name, e in env_of(container).items()}
        settings = Settings.from_env(env)
        assert (settings.store_endpoint, settings.store_secure, settings.store_bucket) == (
            "minio.storage.svc.cluster.local:9000",
            True,
            "twinray-prod",
        )
        assert (settings.otel_exporter, settings.otel_endpoint) == (
            "otlp",
            "http://otel-collector.observability.svc.cluster.local:4317",
        )
        assert (settings.grpc_port, settings.http_port, settings.triton_url) == (9000, 8000, "")


@pytest.mark.parametrize("name", ["minimal", "gpu", "external-minio", "tls"])
def test_network_policies_select_their_pods_and_let_the_release_talk(chart, name: str):
    manifests = chart.render(VALUES / f"{name}.yaml")
    policies = {p["metadata"]["name"]: p["spec"] for p in manifests if p["kind"] == "NetworkPolicy"}
    ray = policies["twinray-ray"]
    release_peer = ray["ingress"][0]["from"][0]["podSelector"]
    for manifest in (m for m in manifests if m["apiVersion"] == "ray.io/v1"):
        for role, pod in ray_pods(manifest).items():
            labels = pod["metadata"]["labels"]
            assert selects(ray["podSelector"], labels) and selects(release_peer, labels), (manifest["metadata"]["name"], role)
    serving = [rule for rule in ray["ingress"] if {p["port"] for p in rule.get("ports", [])} >= {9000, 8000}]
    assert serving and ("from" not in serving[0]) == (name != "tls")  # tls.yaml admits only its clients' network
    stores = [m for m in manifests if m["kind"] == "StatefulSet"]
    if stores:
        (rule,) = policies["twinray-minio"]["ingress"]
        assert selects(policies["twinray-minio"]["podSelector"], stores[0]["spec"]["template"]["metadata"]["labels"])
        assert selects(rule["from"][0]["podSelector"], ray_pods(chart.one(manifests, "RayService"))["head"]["metadata"]["labels"])


def test_disruption_budgets_cover_the_serving_workers_not_the_head(chart):
    manifests = chart.render(VALUES / "gpu.yaml")
    budget = chart.one(manifests, "PodDisruptionBudget", "twinray-serve-workers")["spec"]
    pods = ray_pods(chart.one(manifests, "RayService"))
    assert not selects(budget["selector"], pods.pop("head")["metadata"]["labels"])
    assert all(selects(budget["selector"], pod["metadata"]["labels"]) for pod in pods.values()) and len(pods) == 2
    triton = chart.one(manifests, "PodDisruptionBudget", "twinray-triton")["spec"]
    assert selects(triton["selector"], chart.one(manifests, "Deployment")["spec"]["template"]["metadata"]["labels"])


def test_the_service_monitor_scrapes_every_ray_pod_and_triton(chart):
    manifests = chart.render(VALUES / "external-minio.yaml", sets=("--set", "triton.enabled=true"))
    monitor = chart.one(manifests, "ServiceMonitor")
    assert monitor["apiVersion"] == "monitoring.coreos.com/v1" and monitor["metadata"]["labels"]["release"] == "prometheus"
    scraped = [s for s in manifests if s["kind"] == "Service" and selects(monitor["spec"]["selector"], s["metadata"]["labels"])]
    assert {s["metadata"]["name"] for s in scraped} == {"twinray-ray-metrics", "twinray-triton"}
    for service in scraped:
        assert monitor["spec"]["endpoints"][0]["port"] in {p["name"] for p in service["spec"]["ports"]}
    ray_metrics = chart.one(manifests, "Service", "twinray-ray-metrics")["spec"]
    for pod in ray_pods(chart.one(manifests, "RayService")).values():
        assert selects({"matchLabels": ray_metrics["selector"]}, pod["metadata"]["labels"])
        assert {"name": "metrics", "containerPort": 8080} in pod["spec"]["containers"][0]["ports"]
