"""Every probe the deployment files configure passes against the real, running role.

Each role the manifests, the compose file and the image run is started once as a real
`authgate` process (on SQLite, one worker); then every HTTP probe path of that role is
fetched and every health command run, as the kubelet or Docker would.
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Iterator
from pathlib import Path

import aiohttp
import pytest

from credentials.crypto import encode_key, generate_key
from tests.deploy.deploy_files import (
    Container,
    authgate_arguments,
    authgate_containers,
    compose,
    compose_argv,
    final_stage,
    image_command,
    parse_command,
    pod_template,
)
from tests.e2e.processes import (
    authgate_command,
    child_environment,
    free_port,
    start_child,
    stop_child,
    wait_for_output,
)

PROBE_TIMEOUT = 10.0


def _compose_roles() -> dict[str, str]:
    """Compose service name → the role it runs."""
    roles: dict[str, str] = {}
    for name, service in compose()["services"].items():
        argv = compose_argv(service) if "build" in service else None
        if argv is not None:
            roles[name] = parse_command(authgate_arguments(argv)).command
    return roles


def _roles() -> list[str]:
    image_default = parse_command(image_command()).command
    found = {item.role for item in authgate_containers()} | set(_compose_roles().values())
    return sorted(found | {image_default})


def _containers_of(role: str) -> list[Container]:
    return [item for item in authgate_containers() if item.role == role]


def _http_paths(role: str) -> set[str]:
    paths: set[str] = set()
    for container in _containers_of(role):
        for probe in container.probes.values():
            if "httpGet" in probe:
                paths.add(str(probe["httpGet"]["path"]))
        annotations = pod_template(container.owner)["metadata"].get("annotations", {})
        if "prometheus.io/path" in annotations:
            paths.add(str(annotations["prometheus.io/path"]))
    return paths


def _health_commands(role: str) -> Iterator[list[str]]:
    # The image's HEALTHCHECK runs whatever role the container was given.
    yield final_stage().last("HEALTHCHECK").exec_form()
    for container in _containers_of(role):
        for probe in container.probes.values():
            if "exec" in probe:
                yield list(probe["exec"]["command"])
    for name, service_role in _compose_roles().items():
        test = compose()["services"][name].get("healthcheck", {}).get("test")
        if service_role == role and test is not None:
            yield list(test[1:])


def _environment(tmp_path: Path, port: int) -> dict[str, str]:
    return child_environment(
        {
            "DATABASE_URL": f"sqlite:///{tmp_path}/authgate.db",
            "AUTHGATE_DATA_DIR": str(tmp_path / "data"),
            "AUTHGATE_ENCRYPTION_KEY": encode_key(generate_key()),
            "AUTHGATE_SECRET_KEY": str(uuid.uuid4()),
            "AUTHGATE_HOST": "127.0.0.1",
            "AUTHGATE_PORT": str(port),
            "AUTHGATE_WORKERS": "1",
        }
    )


async def _status(url: str) -> int:
    timeout = aiohttp.ClientTimeout(total=PROBE_TIMEOUT)
    async with aiohttp.ClientSession(timeout=timeout) as session, session.get(url) as answer:
        return answer.status


async def _exit_code(argv: list[str], environment: dict[str, str]) -> int:
    process = await asyncio.create_subprocess_exec(
        authgate_command(),
        *authgate_arguments(argv),
        env=environment,
        stdout=asyncio.subprocess.DEVNULL,
        stderr=asyncio.subprocess.DEVNULL,
    )
    return await asyncio.wait_for(process.wait(), PROBE_TIMEOUT)


@pytest.mark.parametrize("role", _roles())
async def test_every_probe_passes_against_the_running_role(role: str, tmp_path: Path) -> None:
    port = free_port()
    environment = _environment(tmp_path, port)
    child = start_child(
        role, [authgate_command(), role], log_dir=tmp_path / "logs", env=environment
    )
    try:
        await wait_for_output(child, f"{role} ready on http://127.0.0.1:{port}")
        for path in sorted(_http_paths(role)):
            status = await _status(f"http://127.0.0.1:{port}{path}")
            assert status == 200, f"{role}: GET {path} answered {status}\n{child.report()}"
        for argv in _health_commands(role):
            code = await _exit_code(argv, environment)
            assert code == 0, f"{role}: {argv} exited {code}\n{child.report()}"
    finally:
        await stop_child(child)
