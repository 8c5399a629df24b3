"""The Helm chart and the compose file: Helm's own lint and render, Kubernetes schemas, and what
they promise about the server (probes, user, settings, Redis, secrets).

Helm runs through ``helm-python-sdk`` (Helm's Go SDK as a library, from PyPI: no ``helm`` binary
can be installed from the registries this project uses); ``lint`` is ``helm lint --strict`` and
``Chart.render`` is ``helm template``. The rendered manifests are validated against the
Kubernetes JSON schemas that ``kubernetes-validate`` ships.
"""

from __future__ import annotations

import re
from pathlib import Path

import kubernetes_validate
import pytest
import yaml

from server.access.clients import with_clients_file
from server.config.models import Config
from server.settings import Settings
from tests.conftest import ROOT
from tests.support.compose import COMPOSE, compose, compose_environment

helm = pytest.importorskip("helm_python")

CHART = ROOT / "deploy" / "helm" / "eotiler"
KUBERNETES = "1.30"  # the oldest Kubernetes the chart is checked against (autoscaling/v2, policy/v1)
S3 = {"accessKeyId": "chart-test-key-id", "secretAccessKey": "chart-test-secret"}
CLIENTS = {
    "team": {
        "api_keys": ["team-key-0123456789abcdef"],
        "instance_id": "5e1f0c2a-team-instance",
        "layers": ["TRUE_COLOR"],
        "rate_limit": 600,
    }
}


def render(values: dict) -> dict[tuple[str, str], dict]:
    """``helm template demo`` with ``values``: manifests by (kind, name)."""
    with helm.Chart.load(str(CHART)) as chart:
        files = chart.render(values, name="demo", namespace="geo", is_install=True)
    manifests: dict[tuple[str, str], dict] = {}
    for name, text in files.items():
        if not name.endswith(".yaml"):
            continue
        for document in yaml.safe_load_all(text):
            if document:
                manifests[(document["kind"], document["metadata"]["name"])] = document
    return manifests


def container_env(manifests: dict) -> dict[str, str]:
    container = manifests[("Deployment", "demo-eotiler")]["spec"]["template"]["spec"]["containers"][0]
    return {item["name"]: item["value"] for item in container["env"]}


def dockerfile_uid() -> int:
    found = re.search(r"useradd[^\n]*--uid (\d+)", (ROOT / "Dockerfile").read_text())
    assert found, "the Dockerfile creates its user with --uid"
    return int(found.group(1))


def assert_settings(env: dict[str, str]) -> None:
    """Every EOTILER_* variable names a setting, and the values parse as the server parses them."""
    fields = {f"EOTILER_{name.upper()}" for name in Settings.model_fields}
    fields |= {"EOTILER_S3_ACCESS_KEY_ID", "EOTILER_S3_SECRET_ACCESS_KEY"}
    cli = {f"EOTILER_{n}" for n in re.findall(r'_env\("([A-Z_]+)"', (ROOT / "server" / "__main__.py").read_text())}
    fields |= cli  # `eotiler serve` options read from the environment
    unknown = sorted(k for k in env if k.startswith("EOTILER_") and k not in fields)
    assert not unknown, f"not settings of the server: {unknown}"
    Settings.model_validate({k.removeprefix("EOTILER_").lower(): v for k, v in env.items() if k not in cli})


def test_chart_passes_helm_lint_strict():
    report = helm.lint(str(CHART), strict=True, kube_version=f"v{KUBERNETES}.0")
    assert report["total_charts_linted"] == 1
    problems = [m for m in report["messages"] if m["severity"] >= 2]
    assert not problems and not report["errors"], (problems, report["errors"])


@pytest.mark.parametrize(
    "values",
    [
        {},
        {"s3": S3, "clients": CLIENTS, "tokenSecret": "a-token-key-0123456789abcdef"},
        {
            "redis": {"enabled": False},
            "externalRedis": {"url": "redis://redis.example:6379/1"},
            "autoscaling": {"enabled": False},
            "replicaCount": 5,
            "cache": {"persistence": {"enabled": True, "storageClass": "fast"}},
            "s3": {"existingSecret": "cdse-keys"},
            "clientsExistingSecret": "eotiler-clients",
            "workers": 2,
        },
    ],
    ids=["defaults", "clients", "external-redis"],
)
def test_rendered_manifests_are_valid_kubernetes(values: dict):
    manifests = render(values)
    for (kind, name), manifest in manifests.items():
        kubernetes_validate.validate(manifest, KUBERNETES, strict=True)  # raises on any schema error
        assert manifest["metadata"]["name"].startswith("demo-eotiler"), (kind, name)
    kinds = {kind for kind, _ in manifests}
    assert {"Deployment", "Service", "ConfigMap", "PodDisruptionBudget"} <= kinds


def test_deployment_probes_user_volumes_and_scrape_annotations():
    manifests = render({"s3": S3, "clients": CLIENTS})
    pod = manifests[("Deployment", "demo-eotiler")]["spec"]["template"]
    spec, container = pod["spec"], pod["spec"]["containers"][0]
    assert container["livenessProbe"]["httpGet"]["path"] == "/healthz"
    assert container["startupProbe"]["httpGet"]["path"] == "/healthz"
    assert container["readinessProbe"]["httpGet"]["path"] == "/readyz"
    uid = dockerfile_uid()
    assert spec["securityContext"]["runAsUser"] == uid and spec["securityContext"]["runAsNonRoot"] is True
    assert spec["securityContext"]["fsGroup"] == uid
    assert container["securityContext"]["readOnlyRootFilesystem"] is True
    assert container["resources"]["requests"]["cpu"] and container["resources"]["limits"]["memory"]
    annotations = pod["metadata"]["annotations"]
    assert annotations["prometheus.io/scrape"] == "true" and annotations["prometheus.io/path"] == "/metrics"
    assert annotations["prometheus.io/port"] == str(container["ports"][0]["containerPort"])
    # graceful stop inside Kubernetes' grace period
    env = container_env(manifests)
    assert int(env["EOTILER_GRACEFUL_TIMEOUT"]) < spec["terminationGracePeriodSeconds"]
    assert_settings(env)
    # the caches on a volume, the configuration and the clients from their own objects
    mounts = {m["mountPath"]: m["name"] for m in container["volumeMounts"]}
    volumes = {v["name"]: v for v in spec["volumes"]}
    for variable in ("EOTILER_OVERVIEW_CACHE_DIR", "EOTILER_JP2_INDEX_DIR", "EOTILER_BLOCK_CACHE_DIR"):
        parent = str(Path(env[variable]).parent)
        assert parent in mounts and "emptyDir" in volumes[mounts[parent]], variable
    # the disk caches' budgets fit in the emptyDir together (a full one would evict the pod)
    size_limit = volumes[mounts["/var/cache/eotiler"]]["emptyDir"]["sizeLimit"]
    assert size_limit.endswith("Gi")
    budget = int(env["EOTILER_OVERVIEW_CACHE_BYTES"]) + 2**20 * (
        int(env["EOTILER_BLOCK_CACHE_DISK_MB"]) + int(env["EOTILER_S3_TILE_PART_DISK_MB"])
    )
    assert budget < int(size_limit.removesuffix("Gi")) * 2**30
    config_dir = str(Path(env["EOTILER_CONFIG"]).parent)
    assert volumes[mounts[config_dir]]["configMap"]["name"] == "demo-eotiler-config"
    clients_dir = str(Path(env["EOTILER_CLIENTS_FILE"]).parent)
    assert volumes[mounts[clients_dir]]["secret"]["secretName"] == "demo-eotiler-clients"
    s3_secret = container["envFrom"][0]["secretRef"]["name"]
    assert manifests[("Secret", s3_secret)]["stringData"]["EOTILER_S3_SECRET_ACCESS_KEY"] == S3["secretAccessKey"]
    assert "chart-test-secret" not in yaml.safe_dump(pod)  # secrets stay in the Secret


def test_config_and_clients_are_what_the_server_loads(tmp_path: Path):
    manifests = render({"clients": CLIENTS})
    text = manifests[("ConfigMap", "demo-eotiler-config")]["data"]["eotiler.yaml"]
    config = Config.model_validate(yaml.safe_load(text))
    assert {"TRUE_COLOR", "NDVI"} <= set(config.layers)
    clients_file = tmp_path / "clients.yaml"
    clients_file.write_text(manifests[("Secret", "demo-eotiler-clients")]["stringData"]["clients.yaml"])
    merged = with_clients_file(config, clients_file)
    assert merged.clients["team"].layers == ["TRUE_COLOR"] and merged.clients["team"].rate_limit == 600


def test_redis_bundled_or_external_and_scaling():
    bundled = render({})
    url = container_env(bundled)["EOTILER_REDIS_URL"]
    service = bundled[("Service", "demo-eotiler-redis")]
    assert url == f"redis://demo-eotiler-redis:{service['spec']['ports'][0]['port']}/0"
    redis_pod = bundled[("Deployment", "demo-eotiler-redis")]["spec"]["template"]
    assert service["spec"]["selector"].items() <= redis_pod["metadata"]["labels"].items()
    hpa = bundled[("HorizontalPodAutoscaler", "demo-eotiler")]["spec"]
    assert hpa["scaleTargetRef"]["name"] == "demo-eotiler" and hpa["minReplicas"] >= 2
    assert "replicas" not in bundled[("Deployment", "demo-eotiler")]["spec"]  # the autoscaler owns it
    pdb = bundled[("PodDisruptionBudget", "demo-eotiler")]["spec"]
    pod_labels = bundled[("Deployment", "demo-eotiler")]["spec"]["template"]["metadata"]["labels"]
    assert pdb["selector"]["matchLabels"].items() <= pod_labels.items()
    app_service = bundled[("Service", "demo-eotiler")]["spec"]["selector"]
    assert app_service.items() <= pod_labels.items()
    assert not app_service.items() <= redis_pod["metadata"]["labels"].items()

    external_url = {"redis": {"enabled": False}, "externalRedis": {"url": "redis://r:6379/2"}}
    external = render(external_url | {"autoscaling": {"enabled": False}})
    assert container_env(external)["EOTILER_REDIS_URL"] == "redis://r:6379/2"
    assert ("Deployment", "demo-eotiler-redis") not in external
    assert external[("Deployment", "demo-eotiler")]["spec"]["replicas"] == 3


def test_compose_runs_three_replicas_behind_a_balancer_with_redis():
    services = compose()["services"]
    assert services["eotiler"]["deploy"]["replicas"] == 3
    env = compose_environment()
    assert env["EOTILER_REDIS_URL"].startswith("redis://redis:")
    assert_settings({k: v for k, v in env.items() if not v.startswith("${")})
    assert services["eotiler"]["depends_on"]["redis"]["condition"] == "service_healthy"
    nginx = (COMPOSE.parent / "nginx.conf").read_text()
    assert re.search(r"server eotiler:8000\b", nginx) and "proxy_next_upstream error" in nginx
    assert services["nginx"]["volumes"][0].startswith("./nginx.conf:")
    # the stop grace period outlasts the server's own graceful timeout
    assert int(services["eotiler"]["stop_grace_period"].rstrip("s")) > int(env["EOTILER_GRACEFUL_TIMEOUT"])
    mounted_config = (COMPOSE.parent / services["eotiler"]["volumes"][0].split(":")[0]).resolve()
    assert mounted_config.is_file()
