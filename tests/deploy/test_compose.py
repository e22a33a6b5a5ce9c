"""The compose stack (deploy/compose.yaml) against the code and the image."""

from __future__ import annotations

import os
import shutil
import subprocess
import uuid
from urllib.parse import urlsplit

import pytest

from credentials.crypto import encode_key, generate_key
from tests.deploy.deploy_files import (
    COMPOSE_FILE,
    Document,
    MissingVariable,
    authgate_arguments,
    check_settings,
    compose,
    compose_argv,
    compose_duration,
    compose_environment,
    image_environment,
    interpolate,
    parse_command,
    serving_settings,
    variables_read_by,
)

AUTHGATE_SERVICES = ("proxy", "management")
BACKING_SERVICES = ("postgres", "redis")
# Values compose must take from the caller's environment, never from the file: without
# them it refuses to start.
SECRET_VARIABLES = ("AUTHGATE_ENCRYPTION_KEY", "AUTHGATE_SECRET_KEY")
REQUIRED_FROM_CALLER = ("POSTGRES_PASSWORD", *SECRET_VARIABLES)
# Docker's default stop timeout: what a drain would get without stop_grace_period.
DOCKER_STOP_TIMEOUT = 10.0
GRACE_MARGIN = 5.0


def _caller_environment() -> dict[str, str]:
    """What an operator exports before `docker compose up`, as the file's header says."""
    return {
        "POSTGRES_PASSWORD": "sample-password",
        "AUTHGATE_ENCRYPTION_KEY": encode_key(generate_key()),
        "AUTHGATE_SECRET_KEY": str(uuid.uuid4()),
    }


def _service(name: str) -> Document:
    service: Document = compose()["services"][name]
    return service


def _environment(name: str, caller: dict[str, str] | None = None) -> dict[str, str]:
    """A service's environment after compose's interpolation."""
    values = _caller_environment() if caller is None else caller
    own = compose_environment(_service(name))
    return {key: interpolate(value, values) for key, value in own.items()}


def _process_environment(name: str) -> dict[str, str]:
    """What the service's process sees: the image's variables, then the service's."""
    return {**image_environment(), **_environment(name)}


def _role(name: str) -> str:
    command: str = parse_command(authgate_arguments(compose_argv(_service(name)))).command
    return command


def _docker_compose_available() -> bool:
    if shutil.which("docker") is None:
        return False
    probe = subprocess.run(
        ["docker", "compose", "version"], capture_output=True, timeout=30, check=False
    )
    return probe.returncode == 0


@pytest.mark.skipif(not _docker_compose_available(), reason="no docker compose plugin")
def test_docker_compose_accepts_the_file() -> None:
    # `config` parses, interpolates and validates against the compose schema; no daemon.
    checked = subprocess.run(
        ["docker", "compose", "-f", str(COMPOSE_FILE), "config", "--quiet"],
        env={**os.environ, **_caller_environment()},
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert checked.returncode == 0, checked.stderr


def test_the_stack_has_proxy_management_postgres_and_redis() -> None:
    assert set(compose()["services"]) == {*AUTHGATE_SERVICES, *BACKING_SERVICES}


@pytest.mark.parametrize("name", AUTHGATE_SERVICES)
def test_each_authgate_service_runs_its_role(name: str) -> None:
    assert _role(name) == name


@pytest.mark.parametrize("name", AUTHGATE_SERVICES)
def test_authgate_services_start_once_postgres_and_redis_are_healthy(name: str) -> None:
    depends_on = _service(name)["depends_on"]
    for backing in BACKING_SERVICES:
        assert depends_on[backing]["condition"] == "service_healthy", backing
        assert "healthcheck" in _service(backing), f"{backing} never reports healthy"


@pytest.mark.parametrize("name", AUTHGATE_SERVICES)
def test_every_variable_is_read_by_the_role(name: str) -> None:
    unread = set(compose_environment(_service(name))) - variables_read_by(_role(name))
    assert unread == set()


@pytest.mark.parametrize("name", AUTHGATE_SERVICES)
def test_the_values_are_valid_for_the_settings(name: str) -> None:
    check_settings(_role(name), _process_environment(name))


def _secret_uses() -> list[tuple[str, str]]:
    """(service, variable) for every secret a service's environment takes from the caller."""
    return [
        (name, variable)
        for name in compose()["services"]
        for variable in REQUIRED_FROM_CALLER
        if any(variable in value for value in compose_environment(_service(name)).values())
    ]


@pytest.mark.parametrize(("name", "variable"), _secret_uses())
def test_compose_refuses_to_start_without_a_secret(name: str, variable: str) -> None:
    caller = {key: value for key, value in _caller_environment().items() if key != variable}
    with pytest.raises(MissingVariable, match=variable):
        _environment(name, caller)


def test_every_secret_is_used_by_the_services_that_need_it() -> None:
    uses = set(_secret_uses())
    for name in AUTHGATE_SERVICES:
        assert {(name, variable) for variable in SECRET_VARIABLES} <= uses, name
    assert ("postgres", "POSTGRES_PASSWORD") in uses


@pytest.mark.parametrize("name", AUTHGATE_SERVICES)
def test_the_store_and_redis_urls_name_the_stack_services(name: str) -> None:
    environment = _environment(name)
    database = urlsplit(environment["DATABASE_URL"])
    postgres = _environment("postgres")
    assert database.scheme == "postgresql"
    assert database.hostname == "postgres"
    assert database.username == postgres["POSTGRES_USER"]
    assert database.password == postgres["POSTGRES_PASSWORD"]
    assert database.path == f"/{postgres['POSTGRES_DB']}"
    assert urlsplit(environment["REDIS_URL"]).hostname == "redis"


@pytest.mark.parametrize("name", AUTHGATE_SERVICES)
def test_published_ports_reach_the_port_the_process_listens_on(name: str) -> None:
    environment = _process_environment(name)
    published = _service(name)["ports"]
    assert published
    for mapping in published:
        assert str(mapping).rsplit(":", 1)[1] == environment["AUTHGATE_PORT"], mapping
    assert environment["AUTHGATE_HOST"] == "0.0.0.0"


@pytest.mark.parametrize("name", AUTHGATE_SERVICES)
def test_the_stop_grace_period_covers_the_drain(name: str) -> None:
    grace = compose_duration(str(_service(name).get("stop_grace_period", "10s")))
    drain = serving_settings(_process_environment(name)).stop_seconds
    assert grace >= drain + GRACE_MARGIN
    assert grace > DOCKER_STOP_TIMEOUT


@pytest.mark.parametrize("name", AUTHGATE_SERVICES)
def test_authgate_services_run_locked_down(name: str) -> None:
    service = _service(name)
    assert service["read_only"] is True
    assert "/tmp" in service["tmpfs"], "the supervisor writes worker metrics under /tmp"
    assert service["cap_drop"] == ["ALL"]
    assert "no-new-privileges:true" in service["security_opt"]


@pytest.mark.parametrize("name", AUTHGATE_SERVICES)
def test_a_healthcheck_override_is_an_authgate_health_command(name: str) -> None:
    test = _service(name).get("healthcheck", {}).get("test")
    if test is None:
        return  # the image's HEALTHCHECK applies; test_image.py checks it
    assert test[0] in ("CMD", "CMD-SHELL")
    assert parse_command(authgate_arguments(test[1:])).command == "health"
