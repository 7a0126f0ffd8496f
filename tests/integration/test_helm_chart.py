"""The Helm chart in helm/crossfarm, checked offline: no helm binary and no cluster.

helm-python-sdk embeds Helm's Go SDK (lint, render, values.schema.json), and
kubernetes-validate checks each rendered object against Kubernetes' own schemas.
A missing library is a failure, never a skip.
"""

from __future__ import annotations

import base64
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import helm_python
import kubernetes_validate
import pytest
import yaml
from helm_python import Chart, HelmRenderError, HelmValuesError

from crossfarm.shared.arch import Arch
from crossfarm.worker.app import queues_for
from crossfarm.worker.settings import WorkerSettings

pytestmark = pytest.mark.integration

CHART = Path(__file__).resolve().parents[2] / "helm" / "crossfarm"
RELEASE, NAMESPACE = "farm", "builds"
#: The oldest Kubernetes the chart supports (native sidecars, for docker.mode=dind) and
#: the newest that kubernetes-validate knows.
KUBE_VERSIONS = ("1.29.0", kubernetes_validate.utils.latest_version())

TWO_POOLS: dict[str, Any] = {
    "s3": {"accessKey": "farm", "secretKey": "farm-secret"},
    "workers": [
        {"arch": "amd64", "replicas": 2, "crossArches": ["arm64"], "concurrency": 2,
         "buildCpus": 1.5, "buildMemoryBytes": 8 * 1024**3},
        {"arch": "arm64", "replicas": 1, "nodeSelector": {"pool": "graviton"},
         "env": {"RUST_BACKTRACE": "1"}},
    ],
}
DIND_WITH_REDIS: dict[str, Any] = {
    "redis": {"enabled": True},
    "docker": {"mode": "dind"},
    "builder": {"pull": True, "image": "registry.example/crossfarm/builder:1"},
    "workers": [{"arch": "arm64"}],
}
VALUE_SETS = {"defaults": {}, "two-pools": TWO_POOLS, "dind-with-redis": DIND_WITH_REDIS}


@pytest.fixture(scope="module")
def chart() -> Iterator[Chart]:
    with Chart.load(CHART) as loaded:
        yield loaded


def render(chart: Chart, values: dict[str, Any]) -> list[dict[str, Any]]:
    rendered = chart.render(values, name=RELEASE, namespace=NAMESPACE)
    return [doc for path, text in sorted(rendered.items()) if path.endswith(".yaml")
            for doc in yaml.safe_load_all(text) if doc]


def worker_deployments(objects: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [o for o in objects if o["kind"] == "Deployment"
            and o["metadata"]["labels"].get("app.kubernetes.io/component") == "worker"]


def container(deployment: dict[str, Any], name: str) -> dict[str, Any]:
    (found,) = [c for c in deployment["spec"]["template"]["spec"]["containers"]
                if c["name"] == name]
    return found


def plain_env(container_spec: dict[str, Any]) -> dict[str, str]:
    return {e["name"]: e["value"] for e in container_spec["env"] if "value" in e}


@pytest.mark.parametrize("values", VALUE_SETS.values(), ids=VALUE_SETS.keys())
def test_chart_lints_without_warnings(values):
    report = helm_python.lint(CHART, values, strict=True)

    assert report["errors"] == []
    assert [m for m in report["messages"] if m["severity"] >= 2] == []


def test_default_values_pass_the_schema(chart):
    chart.validate_schema(chart.values)


def test_default_values_render_one_amd64_pool_that_also_serves_arm64(chart):
    (worker,) = worker_deployments(render(chart, {}))

    assert worker["spec"]["template"]["spec"]["nodeSelector"] == {"kubernetes.io/arch": "amd64"}
    assert plain_env(container(worker, "worker"))["CROSSFARM_CROSS_ARCHES"] == "arm64"


def test_two_pools_render_exactly_one_worker_deployment_per_architecture(chart):
    workers = worker_deployments(render(chart, TWO_POOLS))

    by_arch = {w["spec"]["template"]["spec"]["nodeSelector"]["kubernetes.io/arch"]: w
               for w in workers}
    assert len(workers) == 2
    assert sorted(by_arch) == ["amd64", "arm64"]
    assert by_arch["amd64"]["spec"]["replicas"] == 2
    assert by_arch["arm64"]["spec"]["template"]["spec"]["nodeSelector"] == {
        "kubernetes.io/arch": "arm64", "pool": "graviton"}
    selectors = [tuple(sorted(w["spec"]["selector"]["matchLabels"].items())) for w in workers]
    assert len(set(selectors)) == 2, "the two pools' Deployments would select each other's pods"


@pytest.mark.parametrize(("arch", "queues"), [
    ("amd64", ["crossfarm.builds.amd64", "crossfarm.builds.arm64.cross"]),
    ("arm64", ["crossfarm.builds.arm64"]),
])
def test_each_pool_env_makes_the_worker_consume_its_arch_queues(chart, monkeypatch, arch, queues):
    workers = worker_deployments(render(chart, TWO_POOLS))
    (pool,) = [w for w in workers if w["metadata"]["labels"]["crossfarm/arch"] == arch]
    env = plain_env(container(pool, "worker"))
    for name in [n for n in os.environ if n.startswith("CROSSFARM_")]:
        monkeypatch.delenv(name)
    for name, value in env.items():
        monkeypatch.setenv(name, value)

    # The worker's own settings parse the rendered environment, and its own function
    # picks the queues it would consume on a node of this pool's architecture.
    settings = WorkerSettings()
    consumed = queues_for(Arch.parse(arch), settings.cross_arches)

    assert consumed == queues
    assert pool["metadata"]["annotations"]["crossfarm/queues"] == ",".join(queues)
    assert pool["spec"]["template"]["spec"]["nodeSelector"]["kubernetes.io/arch"] == arch
    assert settings.controller_url == f"http://{RELEASE}-crossfarm-controller:8700"
    assert settings.visibility_timeout_s == 8 * 3600
    if arch == "amd64":
        assert settings.concurrency == 2
        assert settings.build_cpus == 1.5
        assert settings.build_memory_bytes == 8 * 1024**3
    else:
        assert env["RUST_BACKTRACE"] == "1"


def test_controller_listens_on_all_interfaces_behind_its_service(chart):
    objects = render(chart, TWO_POOLS)
    (service,) = [o for o in objects if o["kind"] == "Service"]
    (controller,) = [o for o in objects if o["kind"] == "Deployment"
                     and o["metadata"]["labels"]["app.kubernetes.io/component"] == "controller"]
    env = plain_env(container(controller, "controller"))

    assert env["CROSSFARM_HOST"] == "0.0.0.0"
    assert env["CROSSFARM_PORT"] == "8700"
    assert service["metadata"]["name"] == f"{RELEASE}-crossfarm-controller"
    assert service["spec"]["selector"] == controller["spec"]["selector"]["matchLabels"]
    assert controller["spec"]["template"]["spec"]["securityContext"]["runAsNonRoot"] is True


@pytest.mark.parametrize("values", VALUE_SETS.values(), ids=VALUE_SETS.keys())
def test_every_secret_reference_names_a_key_the_chart_secret_holds(chart, values):
    objects = render(chart, values)
    (secret,) = [o for o in objects if o["kind"] == "Secret"]
    refs = [e["valueFrom"]["secretKeyRef"] for d in objects if d["kind"] == "Deployment"
            for c in d["spec"]["template"]["spec"]["containers"] for e in c.get("env", [])
            if "valueFrom" in e]

    assert refs
    for ref in refs:
        assert ref["name"] == secret["metadata"]["name"]
        assert ref["key"] in secret["data"]
    if values.get("redis", {}).get("enabled"):
        redis_url = base64.b64decode(secret["data"]["redis-url"]).decode()
        assert redis_url == f"redis://{RELEASE}-crossfarm-redis:6379/0"


def test_dind_mode_runs_docker_as_a_sidecar_and_pulls_the_builder_first(chart):
    (worker,) = worker_deployments(render(chart, DIND_WITH_REDIS))
    pod = worker["spec"]["template"]["spec"]
    dind, pull = pod["initContainers"]

    assert (dind["name"], dind["restartPolicy"]) == ("dind", "Always")
    assert dind["securityContext"]["privileged"] is True
    assert pull["command"][-1] == "registry.example/crossfarm/builder:1"
    assert plain_env(container(worker, "worker"))["DOCKER_HOST"] == "unix:///run/dind/docker.sock"
    assert not any("hostPath" in v for v in pod["volumes"])


@pytest.mark.parametrize("values", VALUE_SETS.values(), ids=VALUE_SETS.keys())
@pytest.mark.parametrize("kube_version", KUBE_VERSIONS)
def test_every_rendered_manifest_is_a_valid_kubernetes_object(chart, values, kube_version):
    objects = render(chart, values)

    assert objects
    for obj in objects:
        try:
            kubernetes_validate.validate(obj, kube_version, strict=True)
        except kubernetes_validate.ValidationError as exc:
            pytest.fail(f"{obj['kind']} {obj['metadata']['name']}: {exc.message}")


@pytest.mark.parametrize("bad", [
    {"workers": [{"arch": "sparc"}]},
    {"workers": [{"arch": "amd64", "crossArches": ["sparc"]}]},
    {"workers": [{"arch": "amd64", "replica": 2}]},
    {"workers": []},
    {"workers": [{"arch": "arm64", "env": {"CROSSFARM_BUILD_PIDS": 512}}]},
    {"docker": {"mode": "podman"}},
], ids=["unknown-arch", "unknown-cross-arch", "misspelt-key", "no-pools", "non-string-env",
        "unknown-docker-mode"])
def test_schema_rejects_bad_values(chart, bad):
    with pytest.raises(HelmValuesError):
        chart.validate_schema(chart.merge_values(bad))
    with pytest.raises(HelmValuesError):
        chart.render(bad, name=RELEASE, namespace=NAMESPACE)


def test_two_pools_with_the_same_name_fail_to_render(chart):
    with pytest.raises(HelmRenderError, match="already exists"):
        render(chart, {"workers": [{"arch": "amd64"}, {"arch": "amd64"}]})


def test_dind_without_pulling_the_builder_image_fails_to_render(chart):
    with pytest.raises(HelmRenderError, match=r"builder\.pull=true"):
        render(chart, {"docker": {"mode": "dind"}})


def _secret_env(objects: list[dict[str, Any]], component: str) -> dict[str, str]:
    (secret,) = [o for o in objects if o["kind"] == "Secret"]
    (deployment,) = [o for o in objects if o["kind"] == "Deployment"
                     and o["metadata"]["labels"].get("app.kubernetes.io/component") == component]
    return {e["name"]: base64.b64decode(secret["data"][e["valueFrom"]["secretKeyRef"]["key"]])
            .decode() for e in container(deployment, component)["env"] if "valueFrom" in e}


@pytest.mark.parametrize(("value", "variable"), [("operatorToken", "CROSSFARM_OPERATOR_TOKEN"),
                                                 ("clientToken", "CROSSFARM_CLIENT_TOKEN")])
def test_the_controller_gets_its_own_tokens_and_workers_never_see_them(chart, value, variable):
    generated = _secret_env(render(chart, {}), "controller")
    assert len(generated[variable]) == 40
    others = {k: v for k, v in generated.items() if k.endswith("_TOKEN") and k != variable}
    assert generated[variable] not in others.values()
    given = _secret_env(render(chart, {value: "given-secret"}), "controller")
    assert given[variable] == "given-secret"
    (worker,) = worker_deployments(render(chart, {}))
    assert variable not in {e["name"] for e in container(worker, "worker")["env"]}
