"""The Kubernetes manifests (deploy/k8s) against the schema and against the code.

Every check compares the manifests with something authoritative: the Kubernetes schema
(kubernetes-validate), kustomize itself (kubectl), the settings and command line the
code reads, the routes the roles serve, the Dockerfile's user and port.
"""

from __future__ import annotations

import ipaddress
import math
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import urlsplit

import kubernetes_validate  # type: ignore[import-untyped]
import pytest
import yaml
from kubernetes_validate.utils import all_versions  # type: ignore[import-untyped]

from credentials.config import ConfigError, CoreSettings
from proxy.app import LOCAL_ROUTES
from tests.deploy.deploy_files import (
    DOCKERFILE,
    KUSTOMIZATION,
    Container,
    Document,
    Manifest,
    authgate_arguments,
    authgate_containers,
    check_settings,
    containers,
    dockerfile_stages,
    kustomization_dirs,
    load_documents,
    manifests,
    of_kind,
    parse_command,
    pod_template,
    relative,
    selected_workloads,
    selects,
    serving_settings,
    variables_read_by,
    workloads,
    yaml_files,
)

# The oldest release the manifests support (native sidecars are on by default from
# 1.29) and the newest the validator knows.
KUBERNETES_VERSIONS = ("1.29.0", all_versions()[-1])
# Seconds the grace period must leave beyond the drain, for the process to exit.
GRACE_MARGIN = 5.0
# Measured resident memory (loadtest, README "Sizing"; management and `authgate health`
# measured the same way): what a container needs just to idle.
IDLE_WORKER_MIB = 69
SUPERVISOR_MIB = 30
IDLE_MANAGEMENT_MIB = 71
HEALTH_COMMAND_MIB = 31
MANAGEMENT_ROUTES = ("/health", "/ready", "/metrics")
"""Served by the management role too; test_live_probes.py asks the running process."""


def _quantity_cores(value: str | int | float) -> float:
    text = str(value)
    return float(text[:-1]) / 1000 if text.endswith("m") else float(text)


_BINARY_UNITS = {"Ki": 1 / 1024, "Mi": 1.0, "Gi": 1024.0}


def _quantity_mib(value: str) -> float:
    for suffix, factor in _BINARY_UNITS.items():
        if value.endswith(suffix):
            return float(value[: -len(suffix)]) * factor
    raise AssertionError(f"use Ki, Mi or Gi for memory, got {value!r}")


# --- Files, schema, kustomize ----------------------------------------------------------


@pytest.mark.parametrize("path", yaml_files(), ids=relative)
def test_every_yaml_file_under_deploy_parses(path: Path) -> None:
    assert load_documents(path), f"{relative(path)} holds no document"


@pytest.mark.parametrize("version", KUBERNETES_VERSIONS)
@pytest.mark.parametrize("manifest", manifests(), ids=str)
def test_every_manifest_validates_against_the_kubernetes_schema(
    manifest: Manifest, version: str
) -> None:
    # Strict: a misspelt or misplaced field is an error, not silently dropped.
    kubernetes_validate.validate(manifest.document, version, strict=True)


@pytest.mark.parametrize("directory", kustomization_dirs(), ids=relative)
def test_each_kustomization_lists_exactly_the_files_beside_it(directory: Path) -> None:
    kustomization = yaml.safe_load((directory / KUSTOMIZATION).read_text())
    listed = sorted(kustomization["resources"])
    present = sorted(path.name for path in directory.glob("*.yaml") if path.name != KUSTOMIZATION)
    assert listed == present


def test_no_manifest_fixes_a_namespace() -> None:
    fixed = [str(item) for item in manifests() if "namespace" in item.document["metadata"]]
    assert fixed == [], "the base must be namespace-agnostic"


@pytest.mark.skipif(shutil.which("kubectl") is None, reason="kubectl is not installed")
@pytest.mark.parametrize("directory", kustomization_dirs(), ids=relative)
def test_kustomize_renders_every_listed_resource(directory: Path) -> None:
    rendered = subprocess.run(
        ["kubectl", "kustomize", str(directory)],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert rendered.returncode == 0, rendered.stderr
    expected = {(item.kind, item.name) for item in manifests() if item.path.parent == directory}
    documents = yaml.safe_load_all(rendered.stdout)
    assert {(item["kind"], item["metadata"]["name"]) for item in documents} == expected


# --- Containers against the code ----------------------------------------------------------


def _authgate_containers() -> list[Container]:
    found = authgate_containers()
    assert found, "no container runs the authgate image"
    return found


@pytest.mark.parametrize("container", _authgate_containers(), ids=str)
def test_container_runs_an_authgate_server_role(container: Container) -> None:
    assert container.role in ("proxy", "management", "serve")


@pytest.mark.parametrize("container", _authgate_containers(), ids=str)
def test_every_variable_a_container_sets_is_read_by_its_role(container: Container) -> None:
    names = {entry["name"] for entry in container.env_entries}
    unread = names - variables_read_by(container.role)
    assert unread == set(), f"{container} sets variables `authgate {container.role}` never reads"


@pytest.mark.parametrize("container", _authgate_containers(), ids=str)
def test_literal_values_are_valid_for_the_settings(container: Container) -> None:
    # Values from Secrets are checked by test_secret_placeholders_are_refused_by_the_code.
    check_settings(container.role, container.effective_env)


def _commands_in(container: Container) -> Iterator[list[str]]:
    yield container.argv
    for probe in container.probes.values():
        if "exec" in probe:
            yield list(probe["exec"]["command"])
    for hook in container.spec.get("lifecycle", {}).values():
        if "exec" in hook:
            yield list(hook["exec"]["command"])


@pytest.mark.parametrize("container", _authgate_containers(), ids=str)
def test_every_authgate_command_parses_with_the_cli(container: Container) -> None:
    for argv in _commands_in(container):
        parse_command(authgate_arguments(argv))


def _probe_paths(container: Container) -> list[str]:
    return [probe["httpGet"]["path"] for probe in container.probes.values() if "httpGet" in probe]


@pytest.mark.parametrize("container", _authgate_containers(), ids=str)
def test_probes_ask_routes_the_role_serves(container: Container) -> None:
    served = LOCAL_ROUTES if container.role == "proxy" else MANAGEMENT_ROUTES
    for path in _probe_paths(container):
        assert path in served, f"{container}: {path} is not one of {served}"
    annotations = pod_template(container.owner)["metadata"].get("annotations", {})
    if "prometheus.io/path" in annotations:
        assert annotations["prometheus.io/path"] in served


@pytest.mark.parametrize("container", _authgate_containers(), ids=str)
def test_liveness_checks_health_and_readiness_checks_ready(container: Container) -> None:
    probes = container.probes
    assert {"livenessProbe", "readinessProbe"} <= set(probes)
    assert _probe_target(probes["livenessProbe"]) == "/health"
    assert _probe_target(probes["readinessProbe"]) == "/ready"


def _probe_target(probe: Document) -> str:
    """The path a probe asks, whether it is an HTTP GET or `authgate health`."""
    if "httpGet" in probe:
        return str(probe["httpGet"]["path"])
    arguments = parse_command(authgate_arguments(probe["exec"]["command"]))
    assert arguments.command == "health", probe
    return "/ready" if arguments.ready else "/health"


def _listen_port(container: Container) -> int:
    return int(container.effective_env.get("AUTHGATE_PORT", "3003"))


def _listens_on_loopback(container: Container) -> bool:
    host = container.effective_env.get("AUTHGATE_HOST", "127.0.0.1")
    return host == "localhost" or ipaddress.ip_address(host).is_loopback


@pytest.mark.parametrize("container", _authgate_containers(), ids=str)
def test_ports_agree_with_the_port_the_process_listens_on(container: Container) -> None:
    port = _listen_port(container)
    for declared in container.spec.get("ports", []):
        assert declared["containerPort"] == port, f"{container}: {declared}"
    for kind, probe in container.probes.items():
        if "httpGet" in probe:
            assert container.container_port(probe["httpGet"]["port"]) == port, kind
        if "exec" in probe:
            arguments = parse_command(authgate_arguments(probe["exec"]["command"]))
            assert arguments.port in (None, port), kind
    annotations = pod_template(container.owner)["metadata"].get("annotations", {})
    if "prometheus.io/port" in annotations:
        assert int(annotations["prometheus.io/port"]) == port


@pytest.mark.parametrize("container", _authgate_containers(), ids=str)
def test_a_loopback_listener_is_probed_from_inside_the_container(container: Container) -> None:
    """The kubelet sends HTTP and TCP probes to the pod IP: a process bound to 127.0.0.1
    never sees them, so it must be probed by `authgate health` run in the container."""
    probes = container.probes
    if _listens_on_loopback(container):
        assert all("exec" in probe for probe in probes.values()), container
        assert "ports" not in container.spec, f"{container}: nothing listens on the pod IP"
    else:
        assert all("httpGet" in probe for probe in probes.values()), container


@pytest.mark.parametrize("container", _authgate_containers(), ids=str)
def test_an_init_container_running_authgate_is_a_native_sidecar(container: Container) -> None:
    # A plain init container must exit before the pod starts: a server would block it.
    if container.init:
        assert container.spec.get("restartPolicy") == "Always", container


def test_the_application_beside_a_sidecar_calls_it_on_loopback() -> None:
    sidecars = [item for item in _authgate_containers() if _listens_on_loopback(item)]
    assert sidecars, "the sidecar example is missing"
    for sidecar in sidecars:
        expected = f"http://127.0.0.1:{_listen_port(sidecar)}"
        neighbours = [item for item in containers(sidecar.owner) if not item.runs_authgate]
        assert neighbours, f"{sidecar} has no application beside it"
        values = {value for item in neighbours for value in item.literal_env.values()}
        assert expected in values, f"no container of {sidecar.owner} calls {expected}"


@pytest.mark.parametrize("workload", workloads(), ids=str)
def test_termination_grace_period_covers_the_drain(workload: Manifest) -> None:
    grace = pod_template(workload)["spec"].get("terminationGracePeriodSeconds", 30)
    for container in containers(workload):
        if container.runs_authgate:
            drain = serving_settings(container.effective_env).stop_seconds
            assert grace >= drain + GRACE_MARGIN, (
                f"{container}: grace {grace} s, drain delay + timeout {drain} s"
            )


# --- Resources and security -------------------------------------------------------------------


@pytest.mark.parametrize("container", _authgate_containers(), ids=str)
def test_resources_are_set_and_cover_the_idle_footprint(container: Container) -> None:
    resources = container.spec["resources"]
    for section in ("requests", "limits"):
        assert {"cpu", "memory"} <= set(resources[section]), f"{container}: {section}"
    request = _quantity_mib(resources["requests"]["memory"])
    assert request > _idle_mib(container), container
    assert _quantity_mib(resources["limits"]["memory"]) >= request, container


def _idle_mib(container: Container) -> float:
    if container.role == "management":
        idle = IDLE_MANAGEMENT_MIB
    else:
        workers = serving_settings(container.effective_env).workers
        idle = workers * IDLE_WORKER_MIB + (SUPERVISOR_MIB if workers > 1 else 0)
    # An exec probe runs a second Python process, charged to the same container.
    if any("exec" in probe for probe in container.probes.values()):
        idle += HEALTH_COMMAND_MIB
    return idle


@pytest.mark.parametrize(
    "container", [item for item in _authgate_containers() if item.role == "proxy"], ids=str
)
def test_proxy_workers_match_the_cpu_limit(container: Container) -> None:
    # Left unset, the worker count follows the cores the process may run on: the node's,
    # not the pod's limit, so it must be set explicitly.
    assert "AUTHGATE_WORKERS" in container.literal_env, container
    workers = serving_settings(container.effective_env).workers
    limit = _quantity_cores(container.spec["resources"]["limits"]["cpu"])
    assert workers == max(1, math.floor(limit)), f"{container}: {workers} workers, {limit} cores"


def _image_user() -> int:
    user = dockerfile_stages(DOCKERFILE.read_text())[-1].last("USER").arguments
    return int(user.split(":")[0])


@pytest.mark.parametrize("workload", workloads(), ids=str)
def test_pods_run_restricted(workload: Manifest) -> None:
    pod = pod_template(workload)["spec"]
    assert pod["securityContext"]["runAsNonRoot"] is True
    assert pod.get("automountServiceAccountToken") is False
    for container in containers(workload):
        context = container.spec["securityContext"]
        assert context["allowPrivilegeEscalation"] is False, container
        assert context["readOnlyRootFilesystem"] is True, container
        assert context["capabilities"]["drop"] == ["ALL"], container
        if container.runs_authgate:
            # The image's fixed UID, so files it owns stay readable and it is never root.
            user = context.get("runAsUser", pod["securityContext"].get("runAsUser"))
            assert user in (None, _image_user()), container


@pytest.mark.parametrize("container", _authgate_containers(), ids=str)
def test_tmp_is_a_writable_empty_dir(container: Container) -> None:
    # The supervisor creates the workers' metrics directory under /tmp.
    volumes = {volume["name"]: volume for volume in container.pod.get("volumes", [])}
    mounts = {mount["mountPath"]: mount for mount in container.spec.get("volumeMounts", [])}
    assert "/tmp" in mounts, container
    assert "emptyDir" in volumes[mounts["/tmp"]["name"]], container
    assert not mounts["/tmp"].get("readOnly", False)


# --- Secrets ---------------------------------------------------------------------------------


def _secret_data() -> dict[str, dict[str, str]]:
    secrets: dict[str, dict[str, str]] = {}
    for secret in of_kind("Secret"):
        document = secret.document
        secrets[secret.name] = {**document.get("data", {}), **document.get("stringData", {})}
    return secrets


@pytest.mark.parametrize("workload", workloads(), ids=str)
def test_every_secret_reference_names_a_key_of_the_secret(workload: Manifest) -> None:
    secrets = _secret_data()
    for container in containers(workload):
        for name, key in container.secret_refs:
            assert key in secrets.get(name, {}), f"{container}: secret {name} has no key {key}"


def test_secret_placeholders_are_refused_by_the_code() -> None:
    """A forgotten placeholder must stop the process, never run with a known value."""
    valid = {"DATABASE_URL": "sqlite:///unused.db"}
    for name, values in _secret_data().items():
        for key, value in values.items():
            with pytest.raises(ConfigError) as refused:
                CoreSettings.from_env({**valid, key: value})
            assert refused.value.variable == key, f"secret {name}"


def test_every_secret_key_is_read_by_the_code() -> None:
    for name, values in _secret_data().items():
        unread = set(values) - variables_read_by("proxy") - variables_read_by("management")
        assert unread == set(), f"secret {name}"


# --- Services, autoscaling, disruption budgets, ingress ------------------------------------------


@pytest.mark.parametrize("workload", workloads(), ids=str)
def test_a_workload_selects_its_own_pods(workload: Manifest) -> None:
    selector = workload.document["spec"]["selector"]["matchLabels"]
    assert selects(selector, pod_template(workload)["metadata"]["labels"])
    assert selected_workloads(selector) == [workload], "the selector overlaps another workload"


def _serving_roles(selector: dict[str, str]) -> set[str]:
    return {
        container.role
        for workload in selected_workloads(selector)
        for container in containers(workload)
        if container.runs_authgate
    }


@pytest.mark.parametrize("service", of_kind("Service"), ids=str)
def test_a_service_targets_the_authgate_port_of_one_workload(service: Manifest) -> None:
    selector = service.document["spec"]["selector"]
    [workload] = selected_workloads(selector)
    [container] = [item for item in containers(workload) if item.runs_authgate]
    for port in service.document["spec"]["ports"]:
        target = port.get("targetPort", port["port"])
        assert container.container_port(target) == _listen_port(container), port


@pytest.mark.parametrize("budget", of_kind("PodDisruptionBudget"), ids=str)
def test_a_disruption_budget_covers_one_workload_and_allows_a_disruption(
    budget: Manifest,
) -> None:
    spec = budget.document["spec"]
    [workload] = selected_workloads(spec["selector"]["matchLabels"])
    replicas = _minimum_replicas(workload)
    if "maxUnavailable" in spec:
        assert int(spec["maxUnavailable"]) >= 1
    else:
        # A budget that allows no disruption blocks every node drain.
        assert int(spec["minAvailable"]) < replicas


def _minimum_replicas(workload: Manifest) -> int:
    for autoscaler in of_kind("HorizontalPodAutoscaler"):
        if autoscaler.document["spec"]["scaleTargetRef"]["name"] == workload.name:
            return int(autoscaler.document["spec"].get("minReplicas", 1))
    return int(workload.document["spec"].get("replicas", 1))


@pytest.mark.parametrize("autoscaler", of_kind("HorizontalPodAutoscaler"), ids=str)
def test_the_autoscaler_scales_the_proxy_on_cpu_requests(autoscaler: Manifest) -> None:
    spec = autoscaler.document["spec"]
    target = spec["scaleTargetRef"]
    [workload] = [item for item in workloads() if item.name == target["name"]]
    assert (target["apiVersion"], target["kind"]) == ("apps/v1", workload.kind)
    assert "replicas" not in workload.document["spec"], "the autoscaler owns the replica count"
    assert spec["minReplicas"] >= 2
    cpu = [metric for metric in spec["metrics"] if metric["resource"]["name"] == "cpu"]
    assert cpu
    # Utilization is measured against the request, so every container needs one.
    for container in containers(workload):
        assert "cpu" in container.spec["resources"]["requests"], container
    assert _serving_roles(pod_template(workload)["metadata"]["labels"]) == {"proxy"}


def _ingress_routes() -> dict[str, tuple[str, Document]]:
    routes: dict[str, tuple[str, Document]] = {}
    for ingress in of_kind("Ingress"):
        for rule in ingress.document["spec"]["rules"]:
            for path in rule["http"]["paths"]:
                routes[path["path"]] = (path["pathType"], path["backend"]["service"])
    return routes


def test_the_ingress_sends_proxy_paths_to_the_proxy_and_the_rest_to_management() -> None:
    routes = _ingress_routes()
    assert routes["/proxy/"][0] == "Prefix"
    assert routes["/"][0] == "Prefix"
    services = {service.name: service for service in of_kind("Service")}
    for path, role in (("/proxy/", "proxy"), ("/", "management")):
        backend = routes[path][1]
        service = services[backend["name"]].document["spec"]
        assert _serving_roles(service["selector"]) == {role}, path
        wanted = backend["port"]
        names = {port.get("name") for port in service["ports"]}
        numbers = {port["port"] for port in service["ports"]}
        assert wanted.get("name") in names or wanted.get("number") in numbers, path


def test_the_public_url_of_management_is_the_ingress_host() -> None:
    rules = [rule for ingress in of_kind("Ingress") for rule in ingress.document["spec"]["rules"]]
    hosts = {rule.get("host") for rule in rules}
    for container in _authgate_containers():
        if container.role == "management":
            public_url = container.effective_env["AUTHGATE_PUBLIC_URL"]
            assert urlsplit(public_url).hostname in hosts, container
