"""Offline checks of the deployment files: Dockerfile, deploy/compose, deploy/k8s, the
Temporal Helm values, deploy/prometheus and the scripts CI runs.

Nothing here needs Docker, a cluster or the network. The files cannot be run on the CI machine,
so these tests check what would otherwise only fail at deploy time: every reference resolves
(services, volumes, files, ports, Secrets, ConfigMaps, selectors), every dealflow process is
started with a real `dealflow` subcommand, and every probe points at /healthz or /readyz.
"""

from __future__ import annotations

import json
import re
import shlex
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[2]
DEPLOY = ROOT / "deploy"
COMPOSE_DIR = DEPLOY / "compose"
COMPOSE_FILE = COMPOSE_DIR / "docker-compose.yml"
K8S = DEPLOY / "k8s"
PROMETHEUS_FILE = DEPLOY / "prometheus" / "prometheus.yml"
TEMPORAL_VALUES = K8S / "temporal-values.yaml"
DOCKERFILE = ROOT / "Dockerfile"

# `dealflow` subcommands (first one or two words) the deployment may run. Keep in step with
# dealflow/cli.py; test_cli_accepts_deploy_command_lines checks the flags against the real CLI.
KNOWN_SUBCOMMANDS = {"serve", "worker", "projections run", "dev", "demo"}
# Every process role the topology must have.
REQUIRED_ROLES = {"serve", "worker", "projections run"}
REQUIRED_ENV = {
    "DATABASE_URL",
    "TEMPORAL_ADDRESS",
    "TEMPORAL_NAMESPACE",
    "DEALFLOW_BOOTSTRAP_TOKEN",
}
# The v1 Temporal chart fails on these (sub-charts were removed).
TEMPORAL_CHART_REMOVED_KEYS = {
    "cassandra",
    "elasticsearch",
    "mysql",
    "postgresql",
    "prometheus",
    "grafana",
}


# --------------------------------------------------------------------------------------------
# helpers


def load_all(path: Path) -> list[Any]:
    with path.open(encoding="utf-8") as fh:
        return [doc for doc in yaml.safe_load_all(fh) if doc is not None]


def load_one(path: Path) -> Any:
    docs = load_all(path)
    assert len(docs) == 1, f"{path.relative_to(ROOT)}: expected one YAML document, got {len(docs)}"
    return docs[0]


def as_argv(command: Any) -> list[str]:
    if command is None:
        return []
    if isinstance(command, str):
        return shlex.split(command)
    assert isinstance(command, list) and all(isinstance(a, str) for a in command), command
    return list(command)


def dealflow_subcommand(argv: list[str]) -> str | None:
    """'serve' for [dealflow, serve, --host, ...], 'projections run' for [dealflow, projections, run]."""
    if not argv or Path(argv[0]).name != "dealflow":
        return None
    words = []
    for arg in argv[1:]:
        if arg.startswith("-"):
            break
        words.append(arg)
    for n in (2, 1):
        candidate = " ".join(words[:n])
        if candidate in KNOWN_SUBCOMMANDS:
            return candidate
    return " ".join(words[:2]) or "(none)"


def depends_on_names(service: dict[str, Any]) -> list[str]:
    deps = service.get("depends_on") or []
    return list(deps.keys()) if isinstance(deps, dict) else list(deps)


def env_dict(service: dict[str, Any]) -> dict[str, str]:
    env = service.get("environment") or {}
    if isinstance(env, list):
        return dict(item.split("=", 1) if "=" in item else (item, "") for item in env)
    return {k: "" if v is None else str(v) for k, v in env.items()}


def interpolate_defaults(value: str) -> str:
    """Resolve ${VAR:-default}/${VAR-default} to the default, ${VAR}/${VAR:?msg} to 'VAR'."""

    def repl(m: re.Match[str]) -> str:
        name, op, arg = m.group(1), m.group(2), m.group(3)
        if op in (":-", "-"):
            return arg or ""
        return name

    return re.sub(r"\$\{([A-Za-z_][A-Za-z0-9_]*)(?:(:?[-?])([^}]*))?\}", repl, value)


# --------------------------------------------------------------------------------------------
# every YAML file


ALL_YAML = sorted(p for p in DEPLOY.rglob("*") if p.suffix in {".yml", ".yaml"} and p.is_file())


def test_deploy_tree_has_the_expected_files() -> None:
    for path in (
        DOCKERFILE,
        ROOT / ".dockerignore",
        COMPOSE_FILE,
        PROMETHEUS_FILE,
        K8S / "kustomization.yaml",
        TEMPORAL_VALUES,
        K8S / "secret.example.yaml",
        DEPLOY / "README.md",
    ):
        assert path.is_file(), f"missing {path.relative_to(ROOT)}"
    assert len(ALL_YAML) >= 8


@pytest.mark.parametrize("path", ALL_YAML, ids=lambda p: str(p.relative_to(ROOT)))
def test_yaml_parses(path: Path) -> None:
    docs = load_all(path)
    assert docs, f"{path.relative_to(ROOT)} holds no YAML document"
    for doc in docs:
        assert isinstance(doc, dict), f"{path.relative_to(ROOT)}: top level must be a mapping"


# --------------------------------------------------------------------------------------------
# docker compose


@pytest.fixture(scope="module")
def compose() -> dict[str, Any]:
    return load_one(COMPOSE_FILE)


def dealflow_services(compose: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {
        name: svc
        for name, svc in compose["services"].items()
        if "build" in svc
        or str(svc.get("image", "")).split("/")[-1].startswith(("dealflow:", "${DEALFLOW_IMAGE"))
    }


def test_compose_references_resolve(compose: dict[str, Any]) -> None:
    services = compose["services"]
    volumes = set((compose.get("volumes") or {}).keys())
    assert services, "no services"
    for name, svc in services.items():
        assert "image" in svc or "build" in svc, f"service {name} has neither image nor build"
        for dep in depends_on_names(svc):
            assert dep in services, f"service {name} depends on undefined service {dep!r}"
            assert dep != name, f"service {name} depends on itself"
        for link in svc.get("links") or []:
            assert link.split(":")[0] in services, f"service {name} links undefined {link!r}"
        for vol in svc.get("volumes") or []:
            source = vol.split(":")[0] if isinstance(vol, str) else vol.get("source", "")
            if isinstance(vol, str) and ":" not in vol:
                continue  # anonymous volume
            if source.startswith((".", "/", "~")):
                if source.startswith("."):
                    assert (COMPOSE_DIR / source).exists(), (
                        f"service {name}: bind mount {source} does not exist"
                    )
            else:
                assert source in volumes, f"service {name} uses undeclared volume {source!r}"
        build = svc.get("build")
        if build is not None:
            context = build if isinstance(build, str) else build.get("context", ".")
            dockerfile = (
                "Dockerfile" if isinstance(build, str) else build.get("dockerfile", "Dockerfile")
            )
            assert (COMPOSE_DIR / context / dockerfile).is_file(), (
                f"service {name}: no {dockerfile} in {context}"
            )


def test_compose_dependency_graph_is_acyclic(compose: dict[str, Any]) -> None:
    services = compose["services"]
    state: dict[str, int] = {}

    def visit(name: str, path: list[str]) -> None:
        if state.get(name) == 1:
            raise AssertionError(f"depends_on cycle: {' -> '.join(path + [name])}")
        if state.get(name) == 2:
            return
        state[name] = 1
        for dep in depends_on_names(services[name]):
            if dep in services:  # undefined ones are test_compose_references_resolve's business
                visit(dep, path + [name])
        state[name] = 2

    for name in services:
        visit(name, [])


def test_compose_dealflow_services_run_known_subcommands(compose: dict[str, Any]) -> None:
    services = dealflow_services(compose)
    roles = {}
    for name, svc in services.items():
        argv = as_argv(svc.get("command"))
        assert svc.get("entrypoint") == [] or argv[:1] != ["dealflow"], (
            f"service {name}: a full `dealflow ...` command needs `entrypoint: []` "
            "(the image's ENTRYPOINT is already dealflow)"
        )
        sub = dealflow_subcommand(argv)
        assert sub in KNOWN_SUBCOMMANDS, (
            f"service {name} runs {argv!r}: not a known dealflow subcommand"
        )
        roles[name] = sub
    missing_roles = REQUIRED_ROLES - set(roles.values())
    assert not missing_roles, f"missing roles: {sorted(missing_roles)}"
    api = [n for n, r in roles.items() if r == "serve"]
    for name in api:
        assert "--no-projections" in as_argv(services[name]["command"]), (
            f"{name}: API replicas must not run projections (that is the projections service's job)"
        )


def test_compose_replicas(compose: dict[str, Any]) -> None:
    services = dealflow_services(compose)
    for name, svc in services.items():
        sub = dealflow_subcommand(as_argv(svc.get("command")))
        replicas = (svc.get("deploy") or {}).get("replicas", 1)
        if sub == "serve":
            assert replicas >= 2, f"{name}: the API should run at least 2 replicas"
        if sub == "projections run":
            assert replicas == 1, f"{name}: exactly one projection runner"
        if replicas > 1:
            for port in svc.get("ports") or []:
                published = str(port).rsplit(":", 1)[0] if ":" in str(port) else ""
                assert not re.fullmatch(r"(\$\{[^}]*\}|\d+)", published), (
                    f"{name}: {replicas} replicas cannot all publish host port {port!r}"
                )


def test_compose_dealflow_environment(compose: dict[str, Any]) -> None:
    services = compose["services"]
    for name, svc in dealflow_services(compose).items():
        env = env_dict(svc)
        missing = REQUIRED_ENV - env.keys()
        assert not missing, f"service {name} lacks {sorted(missing)}"
        temporal_host = interpolate_defaults(env["TEMPORAL_ADDRESS"]).rsplit(":", 1)[0]
        assert temporal_host in services, (
            f"{name}: TEMPORAL_ADDRESS host {temporal_host!r} is not a service"
        )
        db_host = re.search(r"@([^:/]+)", interpolate_defaults(env["DATABASE_URL"]))
        assert db_host and db_host.group(1) in services, (
            f"{name}: DATABASE_URL host is not a service"
        )
        assert env["DATABASE_URL"].startswith("postgresql://"), (
            f"{name}: production runs on PostgreSQL"
        )
        sub = dealflow_subcommand(as_argv(svc.get("command")))
        if sub in {"worker", "projections run"}:
            assert "DEALFLOW_METRICS_PORT" in env, (
                f"{name}: needs DEALFLOW_METRICS_PORT for metrics/probes"
            )
            # The ops port listens on loopback by default; Prometheus is another container.
            assert env.get("DEALFLOW_METRICS_HOST") == "0.0.0.0", (
                f"{name}: set DEALFLOW_METRICS_HOST=0.0.0.0 so Prometheus reaches the ops port"
            )


def test_compose_healthchecks_hit_health_endpoints(compose: dict[str, Any]) -> None:
    for name, svc in dealflow_services(compose).items():
        test = " ".join(as_argv((svc.get("healthcheck") or {}).get("test")))
        assert "/healthz" in test and "/readyz" in test, (
            f"{name}: healthcheck must check /healthz and /readyz"
        )
        env = env_dict(svc)
        port = env.get("DEALFLOW_METRICS_PORT") or "8000"
        assert f":{port}" in test, f"{name}: healthcheck does not target port {port}"


def test_compose_temporal_runs_on_postgres(compose: dict[str, Any]) -> None:
    services = compose["services"]
    temporal = services["temporal"]
    assert str(temporal["image"]).startswith("temporalio/auto-setup:")
    env = env_dict(temporal)
    assert env.get("DB") == "postgres12"
    assert env.get("POSTGRES_SEEDS") in services, "POSTGRES_SEEDS must name the postgres service"
    assert "temporal-ui" in services
    assert env_dict(services["temporal-ui"]).get("TEMPORAL_ADDRESS", "").split(":")[0] in services


def test_compose_variables_have_defaults_or_are_in_env_example(compose: dict[str, Any]) -> None:
    text = COMPOSE_FILE.read_text(encoding="utf-8")
    example = COMPOSE_DIR / ".env.example"
    assert example.is_file()
    documented = {
        line.split("=", 1)[0].strip()
        for line in example.read_text(encoding="utf-8").splitlines()
        if "=" in line and not line.lstrip().startswith("#")
    }
    text = text.replace("$$", "")  # escaped dollars are for the container's shell
    for m in re.finditer(r"\$\{([A-Za-z_][A-Za-z0-9_]*)(:?[-?])?", text):
        name, op = m.group(1), m.group(2)
        if op in (":-", "-"):
            continue
        assert name in documented, f"${{{name}}} has no default and is not in .env.example"


def test_nginx_gateway_proxies_to_a_service(compose: dict[str, Any]) -> None:
    conf = (COMPOSE_DIR / "nginx.conf").read_text(encoding="utf-8")
    targets = re.findall(r"http://([a-z0-9_-]+):(\d+)", conf)
    assert targets, "nginx.conf proxies nowhere"
    for host, _port in targets:
        assert host in compose["services"], f"nginx.conf proxies to unknown service {host!r}"


def test_prometheus_scrapes_every_dealflow_process(compose: dict[str, Any]) -> None:
    prom = load_one(PROMETHEUS_FILE)
    services = compose["services"]
    scraped: dict[str, int] = {}
    for job in prom["scrape_configs"]:
        assert job.get("job_name")
        for sd in job.get("dns_sd_configs") or []:
            for name in sd["names"]:
                assert name in services, f"job {job['job_name']}: {name!r} is not a compose service"
                scraped[name] = int(sd["port"])
                assert job.get("metrics_path", "/metrics") == "/metrics"
        for sc in job.get("static_configs") or []:
            for target in sc["targets"]:
                host = target.rsplit(":", 1)[0]
                assert host == "localhost" or host in services, f"unknown scrape target {target}"
    # /metrics of dealflow wants a `read` token: every dealflow job sends one, from a file
    # mounted into the prometheus container.
    mounted = {str(c.get("target")) for c in services["prometheus"].get("configs") or []} | {
        str(v).split(":")[1] for v in services["prometheus"].get("volumes") or []
    }
    dealflow = set(dealflow_services(compose))
    for job in prom["scrape_configs"]:
        names = {n for sd in job.get("dns_sd_configs") or [] for n in sd["names"]}
        if names & dealflow:
            auth = job.get("authorization") or {}
            assert auth.get("type", "Bearer") == "Bearer", job["job_name"]
            assert auth.get("credentials_file") in mounted, (
                f"job {job['job_name']}: no bearer token file mounted into prometheus"
            )
    for name, svc in dealflow_services(compose).items():
        assert name in scraped, f"prometheus does not scrape {name}"
        expected = int(env_dict(svc).get("DEALFLOW_METRICS_PORT") or 8000)
        assert scraped[name] == expected, (
            f"{name} is scraped on {scraped[name]}, serves metrics on {expected}"
        )
    mounts = " ".join(map(str, services["prometheus"].get("volumes", [])))
    assert "prometheus.yml" in mounts


# --------------------------------------------------------------------------------------------
# kubernetes


@pytest.fixture(scope="module")
def kustomization() -> dict[str, Any]:
    return load_one(K8S / "kustomization.yaml")


@pytest.fixture(scope="module")
def k8s_objects(kustomization: dict[str, Any]) -> list[dict[str, Any]]:
    objects = []
    for resource in kustomization.get("resources", []):
        objects.extend(load_all(K8S / resource))
    return objects


def objects_of(objects: list[dict[str, Any]], kind: str) -> dict[str, dict[str, Any]]:
    return {o["metadata"]["name"]: o for o in objects if o.get("kind") == kind}


def matches(selector: dict[str, str], labels: dict[str, str]) -> bool:
    return all(labels.get(k) == v for k, v in selector.items())


def test_kustomization_lists_only_existing_files(kustomization: dict[str, Any]) -> None:
    resources = kustomization.get("resources") or []
    assert resources, "kustomization lists no resources"
    for resource in resources:
        assert (K8S / resource).is_file(), f"kustomization.yaml lists missing file {resource}"
    assert len(set(resources)) == len(resources), "duplicate entries in kustomization resources"


def test_every_manifest_is_in_kustomization(kustomization: dict[str, Any]) -> None:
    listed = set(kustomization.get("resources") or [])
    not_applied = {"kustomization.yaml", "temporal-values.yaml", "secret.example.yaml"}
    for path in sorted(K8S.glob("*.yaml")):
        if path.name not in not_applied:
            assert path.name in listed, f"{path.name} is not listed in kustomization.yaml"
    assert "secret.example.yaml" not in listed, "the example Secret must not be applied"


def test_k8s_objects_are_well_formed(k8s_objects: list[dict[str, Any]]) -> None:
    assert k8s_objects
    seen = set()
    for obj in k8s_objects:
        assert obj.get("apiVersion"), f"object without apiVersion: {obj}"
        assert obj.get("kind"), f"object without kind: {obj}"
        name = (obj.get("metadata") or {}).get("name")
        assert name, f"{obj['kind']} without metadata.name"
        assert re.fullmatch(r"[a-z0-9]([-a-z0-9.]*[a-z0-9])?", name), f"invalid name {name!r}"
        key = (obj["kind"], name)
        assert key not in seen, f"duplicate {key}"
        seen.add(key)
    kinds = {o["kind"] for o in k8s_objects}
    assert {
        "Namespace",
        "ConfigMap",
        "Deployment",
        "Service",
        "HorizontalPodAutoscaler",
        "PodDisruptionBudget",
    } <= kinds


def test_deployments(k8s_objects: list[dict[str, Any]]) -> None:
    deployments = objects_of(k8s_objects, "Deployment")
    configmaps = objects_of(k8s_objects, "ConfigMap")
    secret = load_one(K8S / "secret.example.yaml")
    secret_keys = set((secret.get("stringData") or {}).keys()) | set(
        (secret.get("data") or {}).keys()
    )
    roles = {}
    for name, dep in deployments.items():
        spec = dep["spec"]
        pod_labels = spec["template"]["metadata"]["labels"]
        assert matches(spec["selector"]["matchLabels"], pod_labels), (
            f"{name}: selector does not match pod labels"
        )
        containers = spec["template"]["spec"]["containers"]
        assert containers
        for c in containers:
            argv = as_argv(c.get("command")) + as_argv(c.get("args"))
            sub = dealflow_subcommand(argv)
            assert sub in KNOWN_SUBCOMMANDS, (
                f"{name}/{c['name']} runs {argv!r}: not a known dealflow subcommand"
            )
            roles[name] = sub
            ports = {p.get("name"): p["containerPort"] for p in c.get("ports") or []}

            def resolve(
                port: Any, ports: dict[str | None, int] = ports, where: str = f"{name}/{c['name']}"
            ) -> int:
                if isinstance(port, int):
                    assert port in ports.values(), f"{where}: port {port} is not a containerPort"
                    return port
                assert port in ports, f"{where}: no container port named {port!r}"
                return ports[port]

            live, ready = c.get("livenessProbe") or {}, c.get("readinessProbe") or {}
            assert (live.get("httpGet") or {}).get("path") == "/healthz", (
                f"{name}: livenessProbe must GET /healthz"
            )
            assert (ready.get("httpGet") or {}).get("path") == "/readyz", (
                f"{name}: readinessProbe must GET /readyz"
            )
            probe_ports = {resolve(live["httpGet"]["port"]), resolve(ready["httpGet"]["port"])}
            if c.get("startupProbe"):
                assert c["startupProbe"]["httpGet"]["path"] in {"/healthz", "/readyz"}
                probe_ports.add(resolve(c["startupProbe"]["httpGet"]["port"]))
            annotations = spec["template"]["metadata"].get("annotations") or {}
            assert annotations.get("prometheus.io/scrape") == "true", (
                f"{name}: no prometheus.io/scrape"
            )
            assert annotations.get("prometheus.io/path") == "/metrics"
            metrics_port = int(annotations["prometheus.io/port"])
            assert metrics_port in ports.values(), (
                f"{name}: prometheus.io/port {metrics_port} is not a containerPort"
            )

            env_keys = {e["name"] for e in c.get("env") or []}
            for src in c.get("envFrom") or []:
                if "configMapRef" in src:
                    cm = src["configMapRef"]["name"]
                    assert cm in configmaps, f"{name}: envFrom unknown ConfigMap {cm!r}"
                    env_keys |= set(configmaps[cm]["data"])
                if "secretRef" in src:
                    assert src["secretRef"]["name"] == secret["metadata"]["name"], (
                        f"{name}: Secret {src['secretRef']['name']!r} is not the one secret.example.yaml documents"
                    )
                    env_keys |= secret_keys
            missing = REQUIRED_ENV - env_keys
            assert not missing, f"{name}: environment lacks {sorted(missing)}"
            if sub in {"worker", "projections run"}:
                assert "DEALFLOW_METRICS_PORT" in env_keys
                port = int(configmaps["dealflow-config"]["data"]["DEALFLOW_METRICS_PORT"])
                # Probes come from the kubelet, scrapes from Prometheus: not loopback.
                assert configmaps["dealflow-config"]["data"].get("DEALFLOW_METRICS_HOST") == (
                    "0.0.0.0"
                ), f"{name}: the ops port must listen beyond loopback"
                assert probe_ports == {port} and metrics_port == port, (
                    f"{name}: probes/metrics must use DEALFLOW_METRICS_PORT ({port})"
                )
            if sub == "serve":
                assert "--no-projections" in argv, f"{name}: API pods must not run projections"
    missing_roles = REQUIRED_ROLES - set(roles.values())
    assert not missing_roles, f"missing roles: {sorted(missing_roles)}"
    for name, sub in roles.items():
        spec = deployments[name]["spec"]
        if sub == "serve":
            assert spec["replicas"] >= 2
        if sub == "projections run":
            assert spec["replicas"] == 1, "exactly one projection runner"
            assert spec["strategy"]["type"] == "Recreate", (
                "a rolling update would briefly run two runners"
            )


def test_services_hpa_and_pdb_target_real_pods(k8s_objects: list[dict[str, Any]]) -> None:
    deployments = objects_of(k8s_objects, "Deployment")
    pod_labels = {n: d["spec"]["template"]["metadata"]["labels"] for n, d in deployments.items()}
    for name, svc in objects_of(k8s_objects, "Service").items():
        targets = [
            d for d, labels in pod_labels.items() if matches(svc["spec"]["selector"], labels)
        ]
        assert targets, f"Service {name} selects no Deployment's pods"
        for port in svc["spec"]["ports"]:
            target = port.get("targetPort", port["port"])
            for d in targets:
                cports = [
                    p
                    for c in deployments[d]["spec"]["template"]["spec"]["containers"]
                    for p in c.get("ports", [])
                ]
                assert any(target in (p.get("name"), p["containerPort"]) for p in cports), (
                    f"Service {name}: targetPort {target!r} not exposed by {d}"
                )
    hpas = objects_of(k8s_objects, "HorizontalPodAutoscaler")
    assert hpas
    for name, hpa in hpas.items():
        ref = hpa["spec"]["scaleTargetRef"]
        assert ref["kind"] == "Deployment" and ref["name"] in deployments, (
            f"HPA {name} targets {ref}"
        )
        assert hpa["spec"]["minReplicas"] <= hpa["spec"]["maxReplicas"]
        assert hpa["spec"]["minReplicas"] >= 2
    pdbs = objects_of(k8s_objects, "PodDisruptionBudget")
    assert pdbs
    for name, pdb in pdbs.items():
        selector = pdb["spec"]["selector"]["matchLabels"]
        assert any(matches(selector, labels) for labels in pod_labels.values()), (
            f"PDB {name} selects nothing"
        )


def test_configmap_points_at_the_temporal_release() -> None:
    cm = load_one(K8S / "configmap.yaml")
    address = cm["data"]["TEMPORAL_ADDRESS"]
    host, port = address.rsplit(":", 1)
    assert port == "7233"
    # helm release `temporal` in namespace `temporal` => Service temporal-frontend.temporal
    assert host.startswith("temporal-frontend.temporal"), address
    assert cm["data"]["TEMPORAL_NAMESPACE"]
    values = load_one(TEMPORAL_VALUES)
    created = [n["name"] for n in values["server"]["config"]["namespaces"]["namespace"]]
    assert cm["data"]["TEMPORAL_NAMESPACE"] in created, (
        "the chart must create dealflow's Temporal namespace"
    )


def test_kubectl_kustomize_renders() -> None:
    kubectl = shutil.which("kubectl")
    if kubectl is None:
        pytest.skip("kubectl not installed")
    proc = subprocess.run(
        [kubectl, "kustomize", str(K8S)], capture_output=True, text=True, timeout=60, check=False
    )
    assert proc.returncode == 0, proc.stderr
    rendered = [d for d in yaml.safe_load_all(proc.stdout) if d]
    assert all(
        d["metadata"].get("namespace") == "dealflow" for d in rendered if d["kind"] != "Namespace"
    )


# --------------------------------------------------------------------------------------------
# temporal helm values


def test_temporal_values_use_external_postgres() -> None:
    values = load_one(TEMPORAL_VALUES)
    removed = TEMPORAL_CHART_REMOVED_KEYS & values.keys()
    assert not removed, f"the temporal chart (v1) rejects top-level keys {sorted(removed)}"
    persistence = values["server"]["config"]["persistence"]
    assert "default" not in persistence and "visibility" not in persistence, (
        "legacy (pre-1.0) layout"
    )
    stores = persistence["datastores"]
    for role in ("defaultStore", "visibilityStore"):
        name = persistence[role]
        assert name in stores, f"{role} names undefined datastore {name!r}"
        sql = stores[name]["sql"]
        assert sql["pluginName"] == "postgres12" and sql["driverName"] == "postgres12", name
        assert sql["databaseName"] and sql["connectAddr"].rsplit(":", 1)[1].isdigit()
        assert sql.get("existingSecret") or sql.get("password"), f"{name}: no credentials"
    databases = {
        stores[persistence[r]]["sql"]["databaseName"] for r in ("defaultStore", "visibilityStore")
    }
    assert len(databases) == 2, "history and visibility need separate databases"
    assert isinstance(persistence["numHistoryShards"], int)


# --------------------------------------------------------------------------------------------
# Dockerfile and .dockerignore


def dockerfile_instructions() -> list[tuple[str, str]]:
    text = DOCKERFILE.read_text(encoding="utf-8")
    logical, buf = [], ""
    for line in text.splitlines():
        stripped = line.strip()
        if not buf and (not stripped or stripped.startswith("#")):
            continue
        if buf and stripped.startswith("#"):
            continue
        if stripped.endswith("\\"):
            buf += stripped[:-1] + " "
            continue
        logical.append(buf + stripped)
        buf = ""
    assert not buf, "Dockerfile ends with a line continuation"
    out = []
    for line in logical:
        keyword, _, rest = line.partition(" ")
        out.append((keyword.upper(), rest.strip()))
    return out


def exec_form(rest: str) -> list[str]:
    try:
        value = json.loads(rest)
    except json.JSONDecodeError:
        raise AssertionError(f"use the exec (JSON) form, not {rest!r}") from None
    assert isinstance(value, list) and all(isinstance(v, str) for v in value)
    return value


def test_dockerfile_runs_dealflow_as_non_root() -> None:
    instructions = dockerfile_instructions()
    froms = [rest for kw, rest in instructions if kw == "FROM"]
    assert froms and all(f.split()[0].startswith("python:3.11-slim") for f in froms), froms
    final_stage = max(i for i, (kw, _) in enumerate(instructions) if kw == "FROM")
    final = instructions[final_stage:]
    entrypoint = [exec_form(r) for kw, r in final if kw == "ENTRYPOINT"]
    cmd = [exec_form(r) for kw, r in final if kw == "CMD"]
    argv = (entrypoint[-1] if entrypoint else []) + (cmd[-1] if cmd else [])
    assert argv and Path(argv[0]).name == "dealflow", f"image runs {argv!r}"
    assert dealflow_subcommand(argv) == "serve"
    users = [r for kw, r in final if kw == "USER"]
    assert users and users[-1].split(":")[0] not in {"root", "0"}, "the image must not run as root"
    assert any(kw == "RUN" and "pip install" in r for kw, r in instructions)


def dockerignore_excludes(path: str, patterns: list[str]) -> bool:
    """Docker's rule: the last matching pattern wins; `!` re-includes; a pattern matching a
    parent directory matches everything below it."""
    excluded = False
    parts = path.split("/")
    candidates = ["/".join(parts[: i + 1]) for i in range(len(parts))]
    for pattern in patterns:
        negate = pattern.startswith("!")
        pat = pattern[1:] if negate else pattern
        regex = glob_to_regex(pat.strip("/"))
        if any(regex.fullmatch(c) for c in candidates):
            excluded = not negate
    return excluded


def glob_to_regex(pattern: str) -> re.Pattern[str]:
    """Go filepath.Match syntax as Docker uses it, plus '**' for any number of directories."""
    out, i = [], 0
    while i < len(pattern):
        if pattern.startswith("**/", i):
            out.append("(?:.*/)?")
            i += 3
        elif pattern.startswith("**", i):
            out.append(".*")
            i += 2
        elif pattern[i] == "*":
            out.append("[^/]*")
            i += 1
        elif pattern[i] == "?":
            out.append("[^/]")
            i += 1
        elif pattern[i] == "[":
            end = pattern.index("]", i + 1)
            out.append(pattern[i : end + 1])
            i = end + 1
        else:
            out.append(re.escape(pattern[i]))
            i += 1
    return re.compile("".join(out))


def test_docker_build_context_has_what_the_dockerfile_copies() -> None:
    patterns = [
        line.strip()
        for line in (ROOT / ".dockerignore").read_text(encoding="utf-8").splitlines()
        if line.strip() and not line.strip().startswith("#")
    ]
    for kw, rest in dockerfile_instructions():
        if kw not in {"COPY", "ADD"} or "--from=" in rest:
            continue
        args = [a for a in shlex.split(rest) if not a.startswith("--")]
        for src in args[:-1]:
            src = src.rstrip("/")
            assert (ROOT / src).exists(), f"Dockerfile copies {src}, which does not exist"
            assert not dockerignore_excludes(src, patterns), (
                f".dockerignore excludes {src}, which the Dockerfile copies"
            )
            assert not dockerignore_excludes(f"{src}/x.py", patterns) or not (ROOT / src).is_dir()
    for junk in (".venv/bin/python", ".git/HEAD", "tests/unit/test_x.py", ".dealflow/store.sqlite"):
        assert dockerignore_excludes(junk, patterns), (
            f".dockerignore lets {junk} into the build context"
        )


def test_dockerignore_matcher_semantics() -> None:
    assert dockerignore_excludes("a/b.py", ["**"])
    assert not dockerignore_excludes("engine/x.py", ["**", "!engine/"])
    assert dockerignore_excludes("engine/__pycache__/x.pyc", ["**", "!engine/", "**/__pycache__"])
    assert not dockerignore_excludes("engine/x.py", [".venv"])
    assert dockerignore_excludes("__pycache__/x.pyc", ["**/__pycache__"])
    assert dockerignore_excludes("engine/a/b.pyc", ["**/*.py[cod]"])
    assert not dockerignore_excludes("engine/a/b.py", ["**/*.py[cod]"])


# --------------------------------------------------------------------------------------------
# scripts and CI


@pytest.mark.parametrize("script", ["scripts/bootstrap", "scripts/demo", "scripts/test", ".ci/run"])
def test_scripts_are_executable_bash(script: str) -> None:
    path = ROOT / script
    assert path.is_file(), f"missing {script}"
    if not script.startswith(".ci/"):
        assert path.stat().st_mode & 0o111, f"{script} is not executable"
    assert path.read_text(encoding="utf-8").startswith("#!/usr/bin/env bash")
    bash = shutil.which("bash")
    if bash:
        proc = subprocess.run([bash, "-n", str(path)], capture_output=True, text=True, check=False)
        assert proc.returncode == 0, proc.stderr


def test_ci_runs_the_readme_test_command_and_rejects_no_tests() -> None:
    ci = (ROOT / ".ci" / "run").read_text(encoding="utf-8")
    assert "set -euo pipefail" in ci
    calls = [
        line
        for line in ci.splitlines()
        if "scripts/test" in line and not line.lstrip().startswith("#") and "echo" not in line
    ]
    assert calls, ".ci/run must call scripts/test (the README's test command)"
    no_tests = re.search(r"^\s*5\)[^\n]*", ci, re.M)
    assert no_tests and "status=1" in no_tests.group(0), (
        ".ci/run must turn pytest's exit 5 (no tests) into a failure"
    )
    test = (ROOT / "scripts" / "test").read_text(encoding="utf-8")
    assert "-p tests.conftest_exit" in test


# --------------------------------------------------------------------------------------------
# the real CLI accepts the command lines the deployment uses


def deploy_command_lines() -> list[list[str]]:
    lines = []
    compose = load_one(COMPOSE_FILE)
    for svc in dealflow_services(compose).values():
        lines.append(as_argv(svc.get("command")))
    kustomization = load_one(K8S / "kustomization.yaml")
    for resource in kustomization["resources"]:
        for obj in load_all(K8S / resource):
            if obj.get("kind") == "Deployment":
                for c in obj["spec"]["template"]["spec"]["containers"]:
                    lines.append(as_argv(c.get("command")) + as_argv(c.get("args")))
    unique = []
    for argv in lines:
        if argv not in unique:
            unique.append(argv)
    return unique


def test_cli_accepts_deploy_command_lines() -> None:
    probe = subprocess.run(
        [sys.executable, "-c", "import dealflow.cli"],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    # A CLI that cannot be imported is a failure, not a reason to skip: the deploy files
    # would start processes that die at once.
    assert probe.returncode == 0, f"dealflow.cli does not import:\n{probe.stderr}"
    runner = "import sys; from dealflow.cli import main; sys.argv[0] = 'dealflow'; sys.exit(main())"
    for argv in deploy_command_lines():
        sub = dealflow_subcommand(argv)
        assert sub is not None
        sub_words = sub.split()
        proc = subprocess.run(
            [sys.executable, "-c", runner, *sub_words, "--help"],
            capture_output=True,
            text=True,
            timeout=120,
            check=False,
        )
        out = proc.stdout + proc.stderr
        assert proc.returncode == 0, f"`dealflow {sub} --help` failed ({proc.returncode}):\n{out}"
        for flag in (a.split("=", 1)[0] for a in argv if a.startswith("--")):
            assert flag in out, (
                f"`dealflow {sub}` does not document {flag} (used by the deployment)"
            )


def test_dockerfile_copies_every_package_the_wheel_builds() -> None:
    """A package missing from the image (say, the composition root) breaks every process."""
    import tomllib

    project = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))
    packages = [p.rstrip("*") for p in project["tool"]["setuptools"]["packages"]["find"]["include"]]
    copied = {
        shlex.split(rest)[0].rstrip("/")
        for kw, rest in dockerfile_instructions()
        if kw == "COPY" and "--from=" not in rest
    }
    assert set(packages) <= copied, f"the Dockerfile does not copy {set(packages) - copied}"
