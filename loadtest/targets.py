"""The three ways to the same upstream bytes: direct, through nginx, through authgate."""

from __future__ import annotations

import base64
import json
import os
import secrets
import sys
import uuid
from collections.abc import Mapping, Sequence
from contextlib import ExitStack
from dataclasses import dataclass
from pathlib import Path
from typing import Final

from loadtest.fake_provider import BIG_BODY, SMALL_BODY
from loadtest.nginx import nginx_config, proxy_server, proxy_upstream, start_nginx, upstream_server
from loadtest.processes import (
    BenchError,
    Headers,
    child_process,
    free_port,
    http_request,
    wait_until_up,
)

BODIES: Final[Mapping[str, bytes]] = {"small": SMALL_BODY, "big": BIG_BODY}
AUTHGATE_API_KEY: Final = "sk-bench"
INTEGRATION: Final = "bench"
CONNECTION_ID: Final = "bench-conn"


@dataclass(frozen=True)
class Target:
    """One way to reach the upstream's files, and the process group doing the work."""

    name: str
    port: int
    prefix: str  # path prefix in front of /small, /big
    headers: Headers
    pgid: int
    authorization: str | None  # what the upstream must see, None to skip the check

    def path(self, size: str) -> str:
        return f"{self.prefix}/{size}"

    def url(self, size: str) -> str:
        return f"http://127.0.0.1:{self.port}{self.path(size)}"


def verify(target: Target) -> None:
    """One request per file before any load: a fast error is not a fast proxy."""
    for size, expected in BODIES.items():
        status, body = http_request(target.port, "GET", target.path(size), target.headers)
        if status != 200 or body != expected:
            raise BenchError(
                f"{target.name}: GET {target.url(size)} answered {status} with "
                f"{len(body)} bytes {body[:300]!r}; expected 200 and the "
                f"{len(expected)}-byte static file"
            )
    if target.authorization is not None:
        status, seen = http_request(target.port, "GET", target.path("auth"), target.headers)
        if status != 200 or seen.decode(errors="replace") != target.authorization:
            raise BenchError(
                f"{target.name}: the upstream received Authorization {seen[:100]!r} "
                f"(status {status}); expected the injected {target.authorization!r}"
            )


def write_static_files(root: Path) -> None:
    root.mkdir()
    for size, body in BODIES.items():
        (root / size).write_bytes(body)


def start_upstream(stack: ExitStack, nginx: str, workdir: Path) -> Target:
    root = workdir / "www"
    write_static_files(root)
    port = free_port()
    conf = nginx_config(workdir / "upstream", port, upstream_server(root))
    proc = start_nginx(stack, nginx, workdir / "upstream", "upstream nginx", conf, port)
    return Target("direct", port, "", (), proc.pid, None)


def start_nginx_proxy(stack: ExitStack, nginx: str, workdir: Path, upstream: Target) -> Target:
    port = free_port()
    token = secrets.token_urlsafe(16)
    server, extra = proxy_server(token), proxy_upstream(upstream.port)
    conf = nginx_config(workdir / "proxy", port, server, extra)
    proc = start_nginx(stack, nginx, workdir / "proxy", "nginx proxy", conf, port)
    return Target("nginx", port, "", (), proc.pid, f"Bearer {token}")


def default_authgate_command() -> list[str]:
    script = Path(sys.executable).with_name("authgate")
    if script.exists():
        return [str(script), "serve"]
    return [sys.executable, "-m", "authgate", "serve"]


def authgate_env(port: int, data_dir: Path, secret_key: str) -> dict[str, str]:
    return {
        **os.environ,
        "AUTHGATE_PORT": str(port),
        "AUTHGATE_HOST": "127.0.0.1",
        "AUTHGATE_DATA_DIR": str(data_dir),
        "DATABASE_URL": f"sqlite:///{data_dir}/bench.db",
        "AUTHGATE_SECRET_KEY": secret_key,
        "AUTHGATE_ENCRYPTION_KEY": base64.b64encode(secrets.token_bytes(32)).decode(),
        # The upstream is on loopback, which the SSRF policy refuses by default.
        "AUTHGATE_ALLOW_PRIVATE_UPSTREAMS": "true",
    }


def post_json(port: int, path: str, payload: object, secret_key: str, expected: int) -> None:
    headers = (("Authorization", f"Bearer {secret_key}"), ("Content-Type", "application/json"))
    status, body = http_request(port, "POST", path, headers, json.dumps(payload).encode())
    if status != expected:
        raise BenchError(f"authgate: POST {path} answered {status} (expected {expected}): {body!r}")


def seed_authgate(port: int, secret_key: str) -> None:
    # openai is an API_KEY provider in the bundled catalogue: no OAuth client needed.
    integration = {"provider": "openai", "unique_key": INTEGRATION}
    post_json(port, "/integrations", integration, secret_key, 200)
    connection = {
        "provider_config_key": INTEGRATION,
        "connection_id": CONNECTION_ID,
        "credentials": {"type": "API_KEY", "apiKey": AUTHGATE_API_KEY},
    }
    post_json(port, "/connections", connection, secret_key, 201)


def start_authgate(
    stack: ExitStack, command: Sequence[str], workdir: Path, upstream: Target
) -> Target:
    data_dir = workdir / "authgate"
    data_dir.mkdir(mode=0o700)
    port = free_port()
    secret_key = str(uuid.uuid4())
    log = data_dir / "authgate.log"
    env = authgate_env(port, data_dir, secret_key)
    proc = stack.enter_context(child_process(command, log, env))
    wait_until_up("authgate", proc, port, "/health", log, attempts=300)
    seed_authgate(port, secret_key)
    headers = (
        ("Authorization", f"Bearer {secret_key}"),
        ("Connection-Id", CONNECTION_ID),
        ("Provider-Config-Key", INTEGRATION),
        ("Base-Url-Override", f"http://127.0.0.1:{upstream.port}"),
    )
    return Target("authgate", port, "/proxy", headers, proc.pid, f"Bearer {AUTHGATE_API_KEY}")
