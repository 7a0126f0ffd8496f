"""The Helm chart in helm/crossfarm, checked offline: no helm binary and no cluster.

helm-python-sdk embeds Helm's Go SDK (lint, render, values.schema.json), and
kubernetes-validate checks each rendered object against Kubernetes' own schemas; the
KEDA kinds, which those schemas lack, against tests/fixtures/keda/. The values files
the chart is rendered with are its own ci/ files. A missing library is a failure,
never a skip.
"""

from __future__ import annotations

import base64
import json
import os
import shutil
import sqlite3
import subprocess
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import helm_python
import jsonschema
import kubernetes_validate
import psycopg
import pytest
import yaml
from farm import free_port  # deploy/local, on the path via conftest
from helm_python import Chart, HelmRenderError, HelmValuesError

from crossfarm.controller.settings import ControllerSettings
from crossfarm.controller.store import Store
from crossfarm.controller.store.builds import NewBuild, NewJob
from crossfarm.controller.store.jobs import Outcome
from crossfarm.shared.arch import Arch
from crossfarm.shared.ids import new_build_id, new_job_id
from crossfarm.shared.keys import QueueKey
from crossfarm.shared.states import BuildState
from crossfarm.shared.wire import CargoSpec
from crossfarm.worker.app import queues_for
from crossfarm.worker.settings import WorkerSettings

pytestmark = pytest.mark.integration

REPO = Path(__file__).resolve().parents[2]
CHART = REPO / "helm" / "crossfarm"
KEDA_SCHEMAS = {
    kind: json.loads((REPO / "tests" / "fixtures" / "keda" / f"{kind.lower()}.schema.json")
                     .read_text())
    for kind in ("ScaledObject", "TriggerAuthentication")}
RELEASE, NAMESPACE = "farm", "builds"
#: The oldest Kubernetes the chart supports (native sidecars, for the dind engines) and
#: the newest that kubernetes-validate knows.
KUBE_VERSIONS = ("1.29.0", kubernetes_validate.utils.latest_version())
CI_FILES = {path.name.removesuffix("-values.yaml"): yaml.safe_load(path.read_text())
            for path in sorted((CHART / "ci").glob("*-values.yaml"))}
DEFAULTS = CI_FILES["defaults"]
KEDA = CI_FILES["keda-two-pools"]
HOST_SOCKET = CI_FILES["host-socket"]
EXTERNAL_PG = CI_FILES["external-postgresql"]


@pytest.fixture(scope="module")
def postgres() -> Iterator[dict[str, str]]:
    """A real PostgreSQL (Debian's) on a free loopback port, with password logins only
    over TCP and a role `crossfarm` whose password is `pg-password`, as the chart's
    values name them."""
    binaries = sorted(Path("/usr/lib/postgresql").glob("*/bin/pg_ctl"))
    assert binaries, "PostgreSQL is missing: apt-get install postgresql (make install does)"
    bin_dir = binaries[-1].parent
    # initdb refuses root: the cluster then runs as the package's own user, in a
    # directory it can reach (pytest's tmp dirs are root's alone)
    root = Path(tempfile.mkdtemp(prefix="crossfarm-helm-pg-"))
    as_user = ["runuser", "-u", "postgres", "--"] if os.geteuid() == 0 else []
    if as_user:
        shutil.chown(root, "postgres")
    port = str(free_port())

    def run(*argv: str | Path) -> None:
        done = subprocess.run([*as_user, *map(str, argv)], capture_output=True, text=True,
                              timeout=120)
        assert done.returncode == 0, f"{argv[0]}: {done.stdout}{done.stderr}"

    run(bin_dir / "initdb", "-D", root / "data", "-U", "admin", "--auth-local=trust",
        "--auth-host=scram-sha-256")
    run(bin_dir / "pg_ctl", "-D", root / "data", "-l", root / "log", "-w", "-o",
        f"-p {port} -k {root} -c listen_addresses=127.0.0.1", "start")
    try:
        for sql in ("CREATE ROLE crossfarm LOGIN PASSWORD 'pg-password'",
                    "CREATE DATABASE crossfarm OWNER crossfarm"):
            run(bin_dir / "psql", "-h", root, "-p", port, "-U", "admin", "-d", "postgres",
                "-v", "ON_ERROR_STOP=1", "-c", sql)
        yield {"host": "127.0.0.1", "port": port}
    finally:
        run(bin_dir / "pg_ctl", "-D", root / "data", "-m", "fast", "-w", "stop")
        shutil.rmtree(root, ignore_errors=True)


@pytest.fixture(scope="module")
def chart() -> Iterator[Chart]:
    with Chart.load(CHART) as loaded:
        yield loaded


def render_files(chart: Chart, values: dict[str, Any]) -> dict[str, str]:
    return chart.render(values, name=RELEASE, namespace=NAMESPACE)


def render(chart: Chart, values: dict[str, Any]) -> list[dict[str, Any]]:
    return [doc for path, text in sorted(render_files(chart, values).items())
            if path.endswith(".yaml") for doc in yaml.safe_load_all(text) if doc]


def with_values(base: dict[str, Any], **changes: Any) -> dict[str, Any]:
    return {**json.loads(json.dumps(base)), **changes}


def of_kind(objects: list[dict[str, Any]], kind: str) -> list[dict[str, Any]]:
    return [o for o in objects if o["kind"] == kind]


def component(obj: dict[str, Any]) -> str | None:
    return obj["metadata"]["labels"].get("app.kubernetes.io/component")


def worker_deployments(objects: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [o for o in of_kind(objects, "Deployment") if component(o) == "worker"]


def controller_deployment(objects: list[dict[str, Any]]) -> dict[str, Any]:
    (found,) = [o for o in of_kind(objects, "Deployment") if component(o) == "controller"]
    return found


def container(deployment: dict[str, Any], name: str) -> dict[str, Any]:
    (found,) = [c for c in deployment["spec"]["template"]["spec"]["containers"]
                if c["name"] == name]
    return found


def init_containers(deployment: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {c["name"]: c for c in deployment["spec"]["template"]["spec"].get("initContainers", [])}


def plain_env(container_spec: dict[str, Any]) -> dict[str, str]:
    return {e["name"]: e["value"] for e in container_spec.get("env", []) if "value" in e}


def secret_refs(container_spec: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {e["name"]: e["valueFrom"]["secretKeyRef"] for e in container_spec.get("env", [])
            if "valueFrom" in e}


def pools_of(values: dict[str, Any]) -> list[dict[str, Any]]:
    return values.get("workers", {}).get("pools") or [{"arch": "amd64", "crossArches": ["arm64"]}]


# --- lint, schema, validity -----------------------------------------------------------

def test_the_chart_is_checked_with_the_four_values_files_it_ships():
    assert sorted(CI_FILES) == ["defaults", "external-postgresql", "host-socket",
                                "keda-two-pools"]


@pytest.mark.parametrize("values", CI_FILES.values(), ids=CI_FILES.keys())
def test_chart_lints_without_warnings(values):
    report = helm_python.lint(CHART, values, strict=True)

    assert report["errors"] == []
    assert [m for m in report["messages"] if m["severity"] >= 2] == []


@pytest.mark.parametrize("values", CI_FILES.values(), ids=CI_FILES.keys())
def test_values_files_pass_the_schema(chart, values):
    chart.validate_schema(chart.merge_values(values))


def test_default_values_pass_the_schema(chart):
    chart.validate_schema(chart.values)


@pytest.mark.parametrize("values", CI_FILES.values(), ids=CI_FILES.keys())
@pytest.mark.parametrize("kube_version", KUBE_VERSIONS)
def test_every_rendered_object_is_valid(chart, values, kube_version):
    objects = render(chart, values)

    assert objects
    for obj in objects:
        where = f"{obj['kind']} {obj['metadata']['name']}"
        if obj["apiVersion"] == "keda.sh/v1alpha1":
            # Not in kubernetes-validate's schemas: checked against KEDA's, as written
            # down in tests/fixtures/keda/ from its CRDs and scaler docs.
            try:
                jsonschema.validate(obj, KEDA_SCHEMAS[obj["kind"]])
            except jsonschema.ValidationError as exc:
                pytest.fail(f"{where}: {exc.message} at {list(exc.absolute_path)}")
            continue
        try:
            kubernetes_validate.validate(obj, kube_version, strict=True)
        except kubernetes_validate.ValidationError as exc:
            pytest.fail(f"{where}: {exc.message}")


@pytest.mark.parametrize("values", CI_FILES.values(), ids=CI_FILES.keys())
def test_no_container_gets_an_environment_variable_twice(chart, values):
    for deployment in of_kind(render(chart, values), "Deployment"):
        for spec in deployment["spec"]["template"]["spec"]["containers"]:
            names = [e["name"] for e in spec.get("env", [])]
            assert len(names) == len(set(names)), (deployment["metadata"]["name"], names)


# --- per pool: placement, probes, grace period, engine ---------------------------------

def _pool_cases() -> list[tuple[str, dict[str, Any], dict[str, Any]]]:
    return [(name, values, pool) for name, values in CI_FILES.items() for pool in pools_of(values)]


@pytest.mark.parametrize(("values", "pool"), [(v, p) for _, v, p in _pool_cases()],
                         ids=[f"{n}-{p['arch']}" for n, _, p in _pool_cases()])
def test_each_pool_runs_on_its_arch_with_probes_and_a_grace_period_above_the_build_timeout(
        chart, values, pool):
    objects = render(chart, values)
    (worker,) = [w for w in worker_deployments(objects)
                 if w["metadata"]["labels"]["crossfarm/pool"] == pool.get("name", pool["arch"])]
    spec = worker["spec"]["template"]["spec"]
    main = container(worker, "worker")
    env = plain_env(main)
    controller_env = plain_env(container(controller_deployment(objects), "controller"))

    assert spec["nodeSelector"] == {"kubernetes.io/arch": pool["arch"],
                                    **pool.get("nodeSelector", {})}
    # the worker's health server, as common-contracts.md fixes it
    assert (env["CROSSFARM_HEALTH_PORT"], env["CROSSFARM_HEALTH_HOST"]) == ("8701", "0.0.0.0")
    assert main["ports"] == [{"name": "health", "containerPort": 8701, "protocol": "TCP"}]
    assert main["livenessProbe"]["httpGet"] == {"path": "/healthz", "port": "health"}
    assert main["startupProbe"]["httpGet"] == {"path": "/healthz", "port": "health"}
    assert main["readinessProbe"]["httpGet"] == {"path": "/readyz", "port": "health"}
    assert main["resources"]["requests"]
    assert main["resources"]["limits"]
    # a build may start just before SIGTERM and run for the longest timeout allowed
    max_timeout = int(controller_env["CROSSFARM_MAX_TIMEOUT_S"])
    assert spec["terminationGracePeriodSeconds"] > max_timeout
    assert spec["terminationGracePeriodSeconds"] == max_timeout + 600
    assert spec["serviceAccountName"] == f"{RELEASE}-crossfarm"
    assert spec["automountServiceAccountToken"] is False


@pytest.mark.parametrize(("values", "pool"), [(v, p) for _, v, p in _pool_cases()],
                         ids=[f"{n}-{p['arch']}" for n, _, p in _pool_cases()])
def test_each_pool_has_the_security_context_of_its_engine(chart, values, pool):
    (worker,) = [w for w in worker_deployments(render(chart, values))
                 if w["metadata"]["labels"]["crossfarm/pool"] == pool.get("name", pool["arch"])]
    engine = pool.get("engine", values.get("engine", "dind"))
    spec = worker["spec"]["template"]["spec"]
    main = container(worker, "worker")
    inits = init_containers(worker)
    docker_host = plain_env(main)["DOCKER_HOST"]

    assert worker["metadata"]["labels"]["crossfarm/engine"] == engine
    assert main["securityContext"]["capabilities"] == {"drop": ["ALL"]}
    assert main["securityContext"]["allowPrivilegeEscalation"] is False
    if engine == "host-socket":
        assert "dind" not in inits
        assert docker_host == "unix:///var/run/docker.sock"
        sockets = [v for v in spec["volumes"] if v["name"] == "docker-socket"]
        assert sockets == [{"name": "docker-socket",
                            "hostPath": {"path": "/var/run/docker.sock", "type": "Socket"}}]
        assert main["securityContext"]["runAsUser"] == 0
        return
    dind = inits["dind"]
    # a native sidecar: started before the worker, stopped after it
    assert dind["restartPolicy"] == "Always"
    assert next(iter(inits)) == "dind"
    assert dind["securityContext"]["privileged"] is True
    assert dind["args"] == ["dockerd", f"--host={docker_host}"]
    assert docker_host == "unix:///crossfarm/dind/docker.sock"
    assert not any("hostPath" in v for v in spec["volumes"])
    storage = next(v for v in spec["volumes"] if v["name"] == "docker-storage")
    assert "emptyDir" in storage or "ephemeral" in storage
    assert "ports" not in dind  # the engine answers on the shared socket only
    if engine == "dind-rootless":
        assert (dind["securityContext"]["runAsUser"], dind["securityContext"]["runAsNonRoot"]) \
            == (1000, True)
        assert dind["image"].endswith("-dind-rootless")
        assert main["securityContext"]["runAsUser"] == 1000
        assert main["securityContext"]["runAsNonRoot"] is True
        assert spec["securityContext"]["fsGroup"] == 1000
    else:
        assert "runAsUser" not in dind["securityContext"]
        assert main["securityContext"]["runAsUser"] == 0
    # each pod's engine starts empty: the builder (and fetcher) images are pulled first
    builder = plain_env(main)["CROSSFARM_BUILDER_IMAGE"]
    assert inits["pull-builder"]["command"] == ["docker", f"--host={docker_host}", "pull", builder]
    assert inits["pull-fetcher"]["command"][-1] == plain_env(main)["CROSSFARM_FETCHER_IMAGE"]


@pytest.mark.parametrize(("arch", "queues"), [
    ("amd64", ["crossfarm.builds.amd64", "crossfarm.builds.arm64.cross"]),
    ("arm64", ["crossfarm.builds.arm64"]),
])
def test_each_pool_env_makes_the_worker_consume_its_arch_queues(chart, monkeypatch, arch, queues):
    (pool,) = [w for w in worker_deployments(render(chart, KEDA))
               if w["metadata"]["labels"]["crossfarm/arch"] == arch]
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
    assert settings.controller_url == f"http://{RELEASE}-crossfarm-controller:8700"
    assert settings.visibility_timeout_s == 8 * 3600
    if arch == "amd64":
        assert settings.concurrency == 2
        assert settings.build_cpus == 1.5
        assert settings.build_memory_bytes == 8 * 1024**3
    else:
        assert env["RUST_BACKTRACE"] == "1"
        assert settings.builder_image == "registry.example.com/crossfarm/builder-arm64:1"


@pytest.mark.parametrize(("stall", "expected"), [({}, 600), ({"stallSeconds": 120}, 120),
                                                ({"stallSeconds": 0}, 0)])
def test_a_pools_stall_limit_reaches_its_workers_settings_zero_included(
        chart, monkeypatch, stall, expected):
    values = with_values(DEFAULTS, workers={"pools": [{"arch": "amd64", **stall}]})
    (pool,) = worker_deployments(render(chart, values))
    env = plain_env(container(pool, "worker"))
    assert ("CROSSFARM_STALL_S" in env) == bool(stall)
    for name in [n for n in os.environ if n.startswith("CROSSFARM_")]:
        monkeypatch.delenv(name)
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    assert WorkerSettings().stall_s == expected


@pytest.mark.parametrize(("given", "expected"), [({}, "auto"), ({"imageVolumes": "on"}, "on"),
                                                ({"imageVolumes": "off"}, "off")])
def test_a_pools_image_volumes_setting_reaches_its_workers_settings(
        chart, monkeypatch, given, expected):
    values = with_values(DEFAULTS, workers={"pools": [{"arch": "amd64", **given}]})
    (pool,) = worker_deployments(render(chart, values))
    env = plain_env(container(pool, "worker"))
    for name in [n for n in os.environ if n.startswith("CROSSFARM_")]:
        monkeypatch.delenv(name)
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    assert WorkerSettings().image_volumes == expected


@pytest.mark.parametrize("values", CI_FILES.values(), ids=CI_FILES.keys())
def test_each_pool_has_a_disruption_budget_that_selects_its_pods_only(chart, values):
    objects = render(chart, values)
    workers = worker_deployments(objects)
    budgets = [b for b in of_kind(objects, "PodDisruptionBudget") if component(b) == "worker"]

    assert len(budgets) == len(workers)
    for budget in budgets:
        selector = budget["spec"]["selector"]["matchLabels"]
        chosen = [w for w in workers
                  if selector.items() <= w["spec"]["template"]["metadata"]["labels"].items()]
        assert len(chosen) == 1
        assert budget["spec"]["maxUnavailable"] == 1


def test_two_pools_render_exactly_one_worker_deployment_per_architecture(chart):
    workers = worker_deployments(render(chart, KEDA))

    by_arch = {w["spec"]["template"]["spec"]["nodeSelector"]["kubernetes.io/arch"]: w
               for w in workers}
    assert sorted(by_arch) == ["amd64", "arm64"]
    assert by_arch["arm64"]["spec"]["template"]["spec"]["nodeSelector"] == {
        "kubernetes.io/arch": "arm64", "pool": "graviton"}
    selectors = [tuple(sorted(w["spec"]["selector"]["matchLabels"].items())) for w in workers]
    assert len(set(selectors)) == 2, "the two pools' Deployments would select each other's pods"


# --- KEDA -----------------------------------------------------------------------------

def test_keda_scales_each_pool_and_leaves_its_replicas_to_keda(chart):
    objects = render(chart, KEDA)
    scaled = {s["spec"]["scaleTargetRef"]["name"]: s for s in of_kind(objects, "ScaledObject")}
    workers = {w["metadata"]["name"]: w for w in worker_deployments(objects)}
    (auth,) = of_kind(objects, "TriggerAuthentication")
    (secret,) = of_kind(objects, "Secret")

    assert sorted(scaled) == sorted(workers)
    for name, deployment in workers.items():
        assert "replicas" not in deployment["spec"], "helm upgrade would undo KEDA's scaling"
        (trigger,) = scaled[name]["spec"]["triggers"]
        assert trigger["type"] == "postgresql"
        assert trigger["authenticationRef"]["name"] == auth["metadata"]["name"]
        env = plain_env(container(deployment, "worker"))
        assert trigger["metadata"]["targetQueryValue"] == env["CROSSFARM_CONCURRENCY"]
    assert (scaled[f"{RELEASE}-crossfarm-worker-arm64"]["spec"]["minReplicaCount"],
            scaled[f"{RELEASE}-crossfarm-worker-arm64"]["spec"]["maxReplicaCount"]) == (0, 3)
    (ref,) = auth["spec"]["secretTargetRef"]
    assert (ref["parameter"], ref["name"]) == ("password", secret["metadata"]["name"])
    assert base64.b64decode(secret["data"][ref["key"]]).decode() == "pg-password"


def _sqlite_store(tmp_path: Path, _postgres: Callable[[], dict[str, str]]
                  ) -> tuple[Store, Callable[[str], int]]:
    database = tmp_path / "crossfarm.db"

    def count(query: str) -> int:
        with sqlite3.connect(database) as db:
            return int(db.execute(query).fetchone()[0])

    return Store(f"sqlite:///{database}"), count


def _postgres_store(tmp_path: Path, postgres: Callable[[], dict[str, str]]
                    ) -> tuple[Store, Callable[[str], int]]:
    server = postgres()
    conninfo = (f"host={server['host']} port={server['port']} dbname=crossfarm "
                "user=crossfarm password=pg-password")
    with psycopg.connect(conninfo, autocommit=True) as db:  # a fresh schema per test
        db.execute("DROP SCHEMA public CASCADE")
        db.execute("CREATE SCHEMA public")

    def count(query: str) -> int:
        with psycopg.connect(conninfo) as db:
            row = db.execute(query).fetchone()
            assert row is not None
            return int(row[0])

    url = (f"postgresql+psycopg://crossfarm:pg-password@{server['host']}:{server['port']}"
           "/crossfarm")
    return Store(url, KEDA["secretsKey"]), count


@pytest.mark.parametrize("make_store", [_sqlite_store, _postgres_store],
                         ids=["sqlite", "postgresql"])
def test_keda_query_counts_the_waiting_and_running_jobs_of_exactly_the_pools_queues(
        chart, tmp_path, request, make_store):
    objects = render(chart, KEDA)
    queries = {s["metadata"]["labels"]["crossfarm/pool"]: s["spec"]["triggers"][0]["metadata"]
               ["query"] for s in of_kind(objects, "ScaledObject")}
    # The controller's own store makes the table and records the jobs, as submits and
    # workers would; the rendered query then runs on it as KEDA runs it.
    store, count = make_store(tmp_path, lambda: request.getfixturevalue("postgres"))
    amd64, arm64 = QueueKey(Arch.AMD64), QueueKey(Arch.ARM64)
    arm64_cross = QueueKey.parse("crossfarm.builds.arm64.cross")
    jobs = {queue: [new_job_id() for _ in range(count)]
            for queue, count in ((amd64, 3), (arm64, 2), (arm64_cross, 4))}
    for queue, ids in jobs.items():
        store.builds.add(NewBuild(
            build_id=new_build_id(), source="0123456789abcdef" * 4, cargo=CargoSpec(),
            timeout_s=60, env={}, submitter=None,
            jobs=[NewJob(job_id=job, target="x", arch=queue.arch, queue=queue,
                         placement="native", placed="test", waiting=None, wait_limit_s=None)
                  for job in ids]))
    first = jobs[amd64][0]
    attempt = store.jobs.get(first).view.attempt
    store.jobs.start(jobs[amd64][1], attempt, worker="w")  # running: still demand
    store.jobs.finish(first, attempt, Outcome(BuildState.CANCELLED, reason="test"))  # not
    counts = {pool: count(query) for pool, query in queries.items()}

    assert counts == {"amd64": 2 + 4, "arm64": 2}


def test_keda_without_postgresql_fails_to_render_and_says_why(chart):
    values = with_values(DEFAULTS, workers={"keda": {"enabled": True},
                                            "pools": [{"arch": "amd64"}]})
    with pytest.raises(HelmRenderError, match=r"needs database\.type=postgresql"):
        render(chart, values)


# --- secrets --------------------------------------------------------------------------

@pytest.mark.parametrize("values", CI_FILES.values(), ids=CI_FILES.keys())
def test_two_offline_renders_of_the_same_values_are_identical(chart, values):
    # `helm template` (Argo CD) cannot look the cluster up: a token invented per render
    # would change on every sync.
    assert render_files(chart, values) == render_files(chart, values)


@pytest.mark.parametrize("missing", ["workerToken", "clientToken", "operatorToken"])
def test_a_missing_token_fails_the_render_naming_the_value_to_set(chart, missing):
    values = {k: v for k, v in DEFAULTS.items() if k != missing}
    with pytest.raises(HelmRenderError, match=rf"{missing} is empty .* existingSecret"):
        render(chart, values)


def test_postgresql_without_a_secrets_key_fails_to_render(chart):
    values = {k: v for k, v in KEDA.items() if k != "secretsKey"}
    with pytest.raises(HelmRenderError, match="secretsKey is empty"):
        render(chart, values)


@pytest.mark.parametrize("values", CI_FILES.values(), ids=CI_FILES.keys())
def test_the_controller_upgrades_an_older_schema_as_it_starts_unless_told_not_to(chart, values):
    # Without it, a `helm upgrade` to an image with a newer schema revision leaves the
    # controller refusing its database (and with SQLite no other pod could migrate it).
    env = plain_env(container(controller_deployment(render(chart, values)), "controller"))
    assert env["CROSSFARM_MIGRATE_ON_START"] == "true"
    off = with_values(values, database={**values.get("database", {}), "migrateOnStart": False})
    env = plain_env(container(controller_deployment(render(chart, off)), "controller"))
    assert env["CROSSFARM_MIGRATE_ON_START"] == "false"


def test_an_existing_secret_is_referenced_and_no_secret_is_rendered(chart):
    objects = render(chart, EXTERNAL_PG)
    controller = container(controller_deployment(objects), "controller")
    refs = secret_refs(controller)

    assert of_kind(objects, "Secret") == []
    assert {ref["name"] for ref in refs.values()} == {"crossfarm-secrets"}
    assert refs["PGPASSWORD"]["key"] == "database-password"
    assert refs["CROSSFARM_SECRETS_KEY"]["key"] == "secrets-key"
    for worker in worker_deployments(objects):
        assert {r["name"] for r in secret_refs(container(worker, "worker")).values()} == {
            "crossfarm-secrets"}


@pytest.mark.parametrize("values", [v for k, v in CI_FILES.items() if k != "external-postgresql"],
                         ids=[k for k in CI_FILES if k != "external-postgresql"])
def test_every_secret_reference_names_a_key_the_chart_secret_holds(chart, values):
    objects = render(chart, values)
    (secret,) = of_kind(objects, "Secret")
    refs = [ref for d in of_kind(objects, "Deployment")
            for c in d["spec"]["template"]["spec"]["containers"]
            for ref in secret_refs(c).values()]

    assert refs
    for ref in refs:
        assert ref["name"] == secret["metadata"]["name"]
        assert ref["key"] in secret["data"] or ref.get("optional") is True
    if values.get("redis", {}).get("enabled"):
        redis_url = base64.b64decode(secret["data"]["redis-url"]).decode()
        assert redis_url == f"redis://{RELEASE}-crossfarm-redis:6379/0"


def _secret_env(objects: list[dict[str, Any]], deployment: dict[str, Any], name: str
                ) -> dict[str, str]:
    (secret,) = of_kind(objects, "Secret")
    return {variable: base64.b64decode(secret["data"][ref["key"]]).decode()
            for variable, ref in secret_refs(container(deployment, name)).items()
            if ref["key"] in secret["data"]}


def test_the_controller_gets_its_tokens_and_workers_only_theirs(chart):
    objects = render(chart, DEFAULTS)
    controller = _secret_env(objects, controller_deployment(objects), "controller")
    (worker_deployment,) = worker_deployments(objects)
    worker = _secret_env(objects, worker_deployment, "worker")

    assert controller["CROSSFARM_CLIENT_TOKEN"] == DEFAULTS["clientToken"]
    assert controller["CROSSFARM_OPERATOR_TOKEN"] == DEFAULTS["operatorToken"]
    assert worker["CROSSFARM_WORKER_TOKEN"] == controller["CROSSFARM_WORKER_TOKEN"]
    assert not {"CROSSFARM_CLIENT_TOKEN", "CROSSFARM_OPERATOR_TOKEN", "PGPASSWORD",
                "CROSSFARM_SECRETS_KEY"} & set(worker)


# --- the controller, PostgreSQL -------------------------------------------------------

def test_postgresql_settings_reach_the_controller_once_and_the_password_only_from_the_secret(
        chart, monkeypatch):
    objects = render(chart, KEDA)
    deployment = controller_deployment(objects)
    controller = container(deployment, "controller")
    env = plain_env(controller)

    assert env["CROSSFARM_DATABASE_URL"] == (
        "postgresql+psycopg://crossfarm@postgres.databases.svc.cluster.local:5432/crossfarm"
        "?sslmode=require")
    assert "pg-password" not in json.dumps(deployment)
    assert _secret_env(objects, deployment, "controller")["PGPASSWORD"] == "pg-password"
    assert deployment["spec"]["replicas"] == 2
    assert deployment["spec"]["strategy"]["type"] == "RollingUpdate"
    (budget,) = [b for b in of_kind(objects, "PodDisruptionBudget")
                 if component(b) == "controller"]
    assert budget["spec"]["selector"] == deployment["spec"]["selector"]
    assert not [o for o in of_kind(objects, "PersistentVolumeClaim")]
    # the controller's own settings read what the chart renders
    for name in [n for n in os.environ if n.startswith("CROSSFARM_")]:
        monkeypatch.delenv(name)
    for name, value in {**env, **_secret_env(objects, deployment, "controller")}.items():
        monkeypatch.setenv(name, value)
    settings = ControllerSettings()
    assert settings.database_url == env["CROSSFARM_DATABASE_URL"]
    assert settings.max_timeout_s == 21600
    assert settings.secrets_key is not None
    assert settings.secrets_key.get_secret_value() == KEDA["secretsKey"]


def test_the_rendered_database_url_reaches_postgresql_with_the_secrets_password(
        chart, postgres, monkeypatch):
    values = with_values(KEDA, database={"type": "postgresql", "postgresql": {
        "host": postgres["host"], "port": int(postgres["port"]), "sslmode": "disable",
        "password": "pg-password"}})
    objects = render(chart, values)
    deployment = controller_deployment(objects)
    environment = {**plain_env(container(deployment, "controller")),
                   **_secret_env(objects, deployment, "controller")}
    for name in [n for n in os.environ if n.startswith("CROSSFARM_")]:
        monkeypatch.delenv(name)
    for name, value in environment.items():
        monkeypatch.setenv(name, value)
    settings = ControllerSettings()
    key = settings.secrets_key.get_secret_value() if settings.secrets_key else None

    # The controller's own store opens what the chart renders: libpq takes the password
    # from PGPASSWORD, as it would in the pod; a wrong one is refused, so it is that one.
    Store(settings.database_url, key)
    monkeypatch.setenv("PGPASSWORD", "not-the-password")
    with pytest.raises(Exception, match="password authentication failed"):
        Store(settings.database_url, key)


def test_sqlite_keeps_one_controller_on_its_volume(chart):
    objects = render(chart, DEFAULTS)
    deployment = controller_deployment(objects)
    controller = container(deployment, "controller")

    assert deployment["spec"]["replicas"] == 1
    assert deployment["spec"]["strategy"]["type"] == "Recreate"
    assert plain_env(controller)["CROSSFARM_DATABASE_URL"] == "sqlite:////data/crossfarm.db"
    (claim,) = of_kind(objects, "PersistentVolumeClaim")
    assert claim["metadata"]["name"] == f"{RELEASE}-crossfarm-controller"


def test_controller_probes_its_health_endpoints_and_listens_behind_its_service(chart):
    objects = render(chart, DEFAULTS)
    (service,) = [o for o in of_kind(objects, "Service") if component(o) == "controller"]
    deployment = controller_deployment(objects)
    controller = container(deployment, "controller")
    env = plain_env(controller)

    assert controller["livenessProbe"]["httpGet"] == {"path": "/healthz", "port": "http"}
    assert controller["readinessProbe"]["httpGet"] == {"path": "/readyz", "port": "http"}
    assert (env["CROSSFARM_HOST"], env["CROSSFARM_PORT"]) == ("0.0.0.0", "8700")
    assert service["spec"]["selector"] == deployment["spec"]["selector"]["matchLabels"]
    assert deployment["spec"]["template"]["spec"]["securityContext"]["runAsNonRoot"] is True


def test_ingress_routes_to_the_controller_service(chart):
    objects = render(chart, KEDA)
    (ingress,) = of_kind(objects, "Ingress")
    (service,) = [o for o in of_kind(objects, "Service") if component(o) == "controller"]
    (rule,) = ingress["spec"]["rules"]
    (path,) = rule["http"]["paths"]

    assert rule["host"] == "builds.example.com"
    assert path["backend"]["service"] == {"name": service["metadata"]["name"],
                                          "port": {"name": "http"}}
    assert ingress["spec"]["tls"][0]["secretName"] == "builds-tls"


def test_extra_volumes_annotations_and_the_service_account_reach_the_pods(chart):
    objects = render(chart, HOST_SOCKET)
    (worker,) = worker_deployments(objects)
    pod = worker["spec"]["template"]["spec"]
    (account,) = of_kind(objects, "ServiceAccount")
    external = render(chart, EXTERNAL_PG)

    assert {"name": "ca", "configMap": {"name": "corporate-ca"}} in pod["volumes"]
    assert {"name": "ca", "mountPath": "/etc/crossfarm-ca", "readOnly": True} in container(
        worker, "worker")["volumeMounts"]
    assert account["automountServiceAccountToken"] is False
    assert pod["serviceAccountName"] == account["metadata"]["name"]
    (external_account,) = of_kind(external, "ServiceAccount")
    assert external_account["metadata"]["annotations"] == {
        "eks.amazonaws.com/role-arn": "arn:aws:iam::123456789012:role/crossfarm"}
    for deployment in of_kind(external, "Deployment"):
        annotations = deployment["spec"]["template"]["metadata"]["annotations"]
        assert annotations["prometheus.io/scrape"] == "true"


def test_notes_lead_to_a_first_build_with_the_client_token(chart):
    notes = render_files(chart, DEFAULTS)["crossfarm/templates/NOTES.txt"]

    assert (f"kubectl -n {NAMESPACE} get secret {RELEASE}-crossfarm-secrets "
            "-o jsonpath='{.data.client-token}' | base64 -d") in notes
    assert "export CROSSFARM_TOKEN=" in notes
    assert f"port-forward svc/{RELEASE}-crossfarm-controller 8700:8700" in notes
    assert "crossfarm build --target" in notes
    assert "pip install dist/crossfarm-0.1.0-py3-none-any.whl" in notes


# --- refusals -------------------------------------------------------------------------

@pytest.mark.parametrize("bad", [
    {"workers": {"pools": [{"arch": "sparc"}]}},
    {"workers": {"pools": [{"arch": "amd64", "crossArches": ["sparc"]}]}},
    {"workers": {"pools": [{"arch": "amd64", "replica": 2}]}},
    {"workers": {"pools": []}},
    {"workers": {"pools": [{"arch": "arm64", "env": {"CROSSFARM_BUILD_PIDS": 512}}]}},
    {"workers": {"pools": [{"arch": "amd64", "stallSeconds": 2}]}},
    {"workers": {"pools": [{"arch": "amd64", "imageVolumes": "always"}]}},
    {"engine": "podman"},
    {"clientToken": "has a space"},
    {"secretsKey": "not-a-fernet-key"},
    {"database": {"type": "mysql"}},
], ids=["unknown-arch", "unknown-cross-arch", "misspelt-key", "no-pools", "non-string-env",
        "stall-too-short", "unknown-image-volumes", "unknown-engine", "token-with-space",
        "bad-secrets-key", "unknown-database"])
def test_schema_rejects_bad_values(chart, bad):
    values = with_values(DEFAULTS, **bad)
    with pytest.raises(HelmValuesError):
        chart.validate_schema(chart.merge_values(values))
    with pytest.raises(HelmValuesError):
        chart.render(values, name=RELEASE, namespace=NAMESPACE)


@pytest.mark.parametrize(("change", "message"), [
    ({"workers": {"pools": [{"arch": "amd64"}, {"arch": "amd64"}]}}, "already exists"),
    ({"builder": {"pull": False}}, r"set builder\.pull=true"),
    ({"controller": {"replicas": 2}}, r"needs database\.type=postgresql"),
    ({"farm": {"visibilityTimeoutSeconds": 3600}}, "must exceed controller.maxTimeoutSeconds"),
    ({"controller": {"env": {"CROSSFARM_DATABASE_URL": "sqlite:////x.db"}}},
     r"controller\.env\.CROSSFARM_DATABASE_URL: the chart sets"),
    ({"workers": {"pools": [{"arch": "arm64", "env": {"DOCKER_HOST": "tcp://x:2375"}}]}},
     r"workers\.pools\[0\]\.env\.DOCKER_HOST: the chart sets"),
], ids=["same-pool-name", "dind-without-pull", "sqlite-replicas", "short-visibility",
        "controller-env-twice", "worker-env-twice"])
def test_values_that_cannot_work_fail_to_render_and_say_what_to_change(chart, change, message):
    with pytest.raises(HelmRenderError, match=message):
        render(chart, with_values(DEFAULTS, **change))
