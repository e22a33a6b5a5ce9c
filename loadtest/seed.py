"""A deployment to load: the provider catalogue, the processes, the seeded connections.

    python -m loadtest.seed catalogue [PATH]     write the catalogue (stdout without PATH)
    python -m loadtest.seed connections --management-url URL --provider-port N
                                        [--api-connections 40] [--oauth-connections 10]
                                        [--token-lifetime 60]

The catalogue (``AUTHGATE_PROVIDERS_FILE``) adds two providers whose base URL and token URL
point at ``python -m loadtest.fake_provider`` through ``connectionConfig.port``, so no
``Base-Url-Override`` is needed and OAuth 2 refreshes reach the fake token endpoint:

- ``loadtest-api-key`` (API_KEY): ``Authorization: Bearer <apiKey>``;
- ``loadtest-oauth2`` (OAUTH2): token URL ``/oauth/token?expires_in=<token_lifetime>``.

Seeding creates the integrations ``lt-api`` and ``lt-oauth`` (once) and upserts the
connections ``api-000``... (API keys) and ``oauth-000``... (expired access tokens, so the
first call through each makes authgate refresh it). The secret key comes from
``AUTHGATE_SECRET_KEY``, never from the command line. Seeding again resets the tokens.

``start_fake_provider`` and ``start_authgate`` run the pieces as child processes on free
loopback ports, for ``loadtest.memory`` and the tests; the locust scenario seeds through
``seed``.
"""

from __future__ import annotations

import argparse
import base64
import http.client
import json
import os
import secrets
import shlex
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator, Mapping, Sequence
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Final
from urllib.parse import urlsplit

from loadtest.fake_provider import REFRESH_TOKEN_PREFIX, issue_access_token
from loadtest.processes import BenchError, free_port, stop_process_group, tail

API_PROVIDER: Final = "loadtest-api-key"
OAUTH_PROVIDER: Final = "loadtest-oauth2"
API_INTEGRATION: Final = "lt-api"
OAUTH_INTEGRATION: Final = "lt-oauth"
DEFAULT_API_CONNECTIONS: Final = 40
DEFAULT_OAUTH_CONNECTIONS: Final = 10
DEFAULT_TOKEN_LIFETIME: Final = 60
OAUTH_CLIENT_ID: Final = "loadtest-client"

CATALOGUE: Final = f"""\
{API_PROVIDER}:
    display_name: Load test API key
    docs: https://example.com/loadtest
    auth_mode: API_KEY
    proxy:
        base_url: http://127.0.0.1:${{connectionConfig.port}}
        headers:
            authorization: Bearer ${{apiKey}}
{OAUTH_PROVIDER}:
    display_name: Load test OAuth 2
    docs: https://example.com/loadtest
    auth_mode: OAUTH2
    authorization_url: http://127.0.0.1:${{connectionConfig.port}}/oauth/authorize
    token_url: http://127.0.0.1:${{connectionConfig.port}}/oauth/token?expires_in=${{connectionConfig.token_lifetime}}
    proxy:
        base_url: http://127.0.0.1:${{connectionConfig.port}}
"""

REPO_ROOT: Final = Path(__file__).resolve().parent.parent
READY_ATTEMPTS: Final = 300  # x 0.1 s: a cold authgate start imports a lot
STOP_GRACE: Final = 10.0


# --- the connections -----------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class SeedPlan:
    """How many connections of each kind, and where their provider listens."""

    provider_port: int
    api_connections: int = DEFAULT_API_CONNECTIONS
    oauth_connections: int = DEFAULT_OAUTH_CONNECTIONS
    token_lifetime: int = DEFAULT_TOKEN_LIFETIME


def api_connection_ids(count: int) -> list[str]:
    return [f"api-{index:03d}" for index in range(count)]


def oauth_connection_ids(count: int) -> list[str]:
    return [f"oauth-{index:03d}" for index in range(count)]


def api_key_of(connection_id: str) -> str:
    """Each API-key connection's key, derivable so the scenario can check what was injected."""
    return f"lt-key-{connection_id}"


def client_secret() -> str:
    # Only the fake token endpoint sees it, and it checks no secret; still, not a constant.
    return secrets.token_urlsafe(16)


class ManagementClient:
    """Just enough of the management API to seed, over stdlib HTTP."""

    __slots__ = ("_authorization", "_host", "_port", "_timeout")

    def __init__(self, base_url: str, secret_key: str, timeout: float = 10.0) -> None:
        parts = urlsplit(base_url)
        if parts.scheme != "http" or not parts.hostname:
            raise BenchError(f"the management URL must be http://HOST:PORT, got {base_url!r}")
        self._host = parts.hostname
        self._port = parts.port or 80
        self._authorization = f"Bearer {secret_key}"
        self._timeout = timeout

    def request(self, method: str, path: str, payload: object = None) -> tuple[int, bytes]:
        headers = {"Authorization": self._authorization}
        body = None
        if payload is not None:
            headers["Content-Type"] = "application/json"
            body = json.dumps(payload).encode()
        conn = http.client.HTTPConnection(self._host, self._port, timeout=self._timeout)
        try:
            conn.request(method, path, body=body, headers=headers)
            response = conn.getresponse()
            return response.status, response.read()
        finally:
            conn.close()

    def expect(self, method: str, path: str, payload: object, status: int) -> None:
        answered, body = self.request(method, path, payload)
        if answered != status:
            raise BenchError(
                f"management: {method} {path} answered {answered} (expected {status}): "
                f"{error_summary(body)}"
            )


def error_summary(body: bytes) -> str:
    """The error code and message of a management answer, never the rest of it."""
    try:
        error = json.loads(body).get("error")
    except (ValueError, AttributeError):
        return f"{len(body)} bytes that are not a JSON object"
    if isinstance(error, dict):
        return f"{error.get('code')}: {error.get('message')}"
    return str(error)[:200]


def ensure_integration(client: ManagementClient, payload: Mapping[str, object]) -> None:
    """Create the integration unless it exists: recreating would drop its connections."""
    status, body = client.request("GET", f"/integrations/{payload['unique_key']}")
    if status == 200:
        return
    if status != 404:
        raise BenchError(f"management: GET integration answered {status}: {error_summary(body)}")
    client.expect("POST", "/integrations", payload, 200)


def api_connection(connection_id: str, provider_port: int) -> dict[str, object]:
    return {
        "provider_config_key": API_INTEGRATION,
        "connection_id": connection_id,
        "credentials": {"type": "API_KEY", "apiKey": api_key_of(connection_id)},
        "connection_config": {"port": str(provider_port)},
    }


def expired_oauth_connection(connection_id: str, plan: SeedPlan, now: float) -> dict[str, object]:
    expired_at = int(now) - 3600
    return {
        "provider_config_key": OAUTH_INTEGRATION,
        "connection_id": connection_id,
        "credentials": {
            "type": "OAUTH2",
            "access_token": issue_access_token(expired_at),
            "refresh_token": f"{REFRESH_TOKEN_PREFIX}{secrets.token_hex(8)}",
            "expires_at": datetime.fromtimestamp(expired_at, UTC).isoformat(),
        },
        "connection_config": {
            "port": str(plan.provider_port),
            "token_lifetime": str(plan.token_lifetime),
        },
    }


def seed(client: ManagementClient, plan: SeedPlan) -> None:
    """Integrations (once) and every connection of ``plan`` (upserted)."""
    ensure_integration(client, {"provider": API_PROVIDER, "unique_key": API_INTEGRATION})
    ensure_integration(
        client,
        {
            "provider": OAUTH_PROVIDER,
            "unique_key": OAUTH_INTEGRATION,
            "credentials": {
                "type": "OAUTH2",
                "client_id": OAUTH_CLIENT_ID,
                "client_secret": client_secret(),
            },
        },
    )
    for connection_id in api_connection_ids(plan.api_connections):
        client.expect(
            "POST", "/connections", api_connection(connection_id, plan.provider_port), 201
        )
    now = time.time()
    for connection_id in oauth_connection_ids(plan.oauth_connections):
        payload = expired_oauth_connection(connection_id, plan, now)
        client.expect("POST", "/connections", payload, 201)


# --- the processes of a run ----------------------------------------------------------


@contextmanager
def running(
    command: Sequence[str], log: Path, env: Mapping[str, str], cwd: Path
) -> Iterator[subprocess.Popen[bytes]]:
    """``command`` in its own session (so its whole group can be stopped) until exit."""
    with log.open("wb") as out:
        proc = subprocess.Popen(
            command, stdout=out, stderr=subprocess.STDOUT, env=env, cwd=cwd, start_new_session=True
        )
    try:
        yield proc
    finally:
        stop_process_group(proc, STOP_GRACE)


def wait_for_http(
    name: str, proc: subprocess.Popen[bytes], port: int, path: str, log: Path
) -> None:
    """Poll ``GET path`` until it answers 200; stop early if the process died."""
    for _ in range(READY_ATTEMPTS):
        if proc.poll() is not None:
            raise BenchError(f"{name} exited with {proc.returncode}; log:\n{tail(log)}")
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=1.0)
        try:
            conn.request("GET", path)
            if conn.getresponse().status == 200:
                return
        except (OSError, http.client.HTTPException):
            pass  # not listening yet
        finally:
            conn.close()
        time.sleep(0.1)
    raise BenchError(f"{name} did not answer GET {path} with 200 in time; log:\n{tail(log)}")


def child_environment(**variables: str) -> dict[str, str]:
    """The caller's environment minus anything that would reconfigure authgate."""
    inherited = {
        name: value
        for name, value in os.environ.items()
        if not name.startswith("AUTHGATE_") and name != "DATABASE_URL"
    }
    return {**inherited, **variables}


def start_fake_provider(stack: ExitStack, workdir: Path) -> int:
    """``python -m loadtest.fake_provider`` on a free port; returns the port."""
    port = free_port()
    log = workdir / "fake_provider.log"
    command = [sys.executable, "-m", "loadtest.fake_provider", "--port", str(port)]
    # From the repository root, where the loadtest package is importable.
    proc = stack.enter_context(running(command, log, child_environment(), REPO_ROOT))
    wait_for_http("fake provider", proc, port, "/small", log)
    return port


@dataclass(frozen=True, slots=True)
class Authgate:
    """A running authgate deployment: where each API is, and its secret key."""

    proxy_port: int
    management_port: int
    proxy_pid: int
    secret_key: str
    logs: tuple[Path, ...]
    environment: Mapping[str, str]

    @property
    def proxy_url(self) -> str:
        return f"http://127.0.0.1:{self.proxy_port}"

    @property
    def management_url(self) -> str:
        return f"http://127.0.0.1:{self.management_port}"


def authgate_environment(data_dir: Path, providers_file: Path) -> dict[str, str]:
    """Settings shared by every role of one deployment (same store, same keys)."""
    return child_environment(
        AUTHGATE_HOST="127.0.0.1",
        AUTHGATE_DATA_DIR=str(data_dir),
        DATABASE_URL=f"sqlite:///{data_dir}/authgate.db",
        AUTHGATE_SECRET_KEY=str(uuid.uuid4()),
        AUTHGATE_ENCRYPTION_KEY=base64.b64encode(secrets.token_bytes(32)).decode(),
        AUTHGATE_PROVIDERS_FILE=str(providers_file),
        # The fake provider is on loopback, which the SSRF policy refuses by default.
        AUTHGATE_ALLOW_PRIVATE_UPSTREAMS="true",
        # Keeps this run's keys apart if REDIS_URL points at a shared Redis.
        AUTHGATE_REDIS_PREFIX=f"loadtest-{secrets.token_hex(4)}",
    )


def start_role(
    stack: ExitStack, command: Sequence[str], role: str, environment: Mapping[str, str]
) -> tuple[int, subprocess.Popen[bytes], Path]:
    data_dir = Path(environment["AUTHGATE_DATA_DIR"])
    port = free_port()
    log = data_dir / f"authgate-{role}.log"
    env = {**environment, "AUTHGATE_PORT": str(port)}
    # The data dir as working directory: `python -m` puts the working directory first on
    # sys.path, so from the repository root it would shadow a PYTHONPATH in `command`.
    proc = stack.enter_context(running([*command, role], log, env, data_dir))
    wait_for_http(f"authgate {role}", proc, port, "/health", log)
    return port, proc, log


def start_authgate(
    stack: ExitStack, command: Sequence[str], workdir: Path, *, split: bool
) -> Authgate:
    """authgate with the load-test catalogue: ``serve``, or ``proxy`` + ``management``
    (``split``) sharing one SQLite store. ``command`` is the prefix the role is added to."""
    data_dir = workdir / "authgate"
    data_dir.mkdir(mode=0o700)
    providers_file = data_dir / "providers.yaml"
    providers_file.write_text(CATALOGUE)
    environment = authgate_environment(data_dir, providers_file)
    if split:
        # Management first: it creates the store's tables before the proxy opens it.
        management_port, _, management_log = start_role(stack, command, "management", environment)
        proxy_port, proxy, proxy_log = start_role(stack, command, "proxy", environment)
        logs: tuple[Path, ...] = (management_log, proxy_log)
    else:
        proxy_port, proxy, serve_log = start_role(stack, command, "serve", environment)
        management_port, logs = proxy_port, (serve_log,)
    return Authgate(
        proxy_port,
        management_port,
        proxy.pid,
        environment["AUTHGATE_SECRET_KEY"],
        logs,
        environment,
    )


def authgate_prefix(command: str | None) -> list[str]:
    """Shell words of ``command`` (``--authgate-cmd``), else this Python's ``-m authgate``."""
    return shlex.split(command or "") or [sys.executable, "-m", "authgate"]


# --- command line --------------------------------------------------------------------


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m loadtest.seed",
        description="The load-test provider catalogue, and seeding connections into authgate.",
    )
    commands = parser.add_subparsers(dest="command", required=True)
    catalogue = commands.add_parser("catalogue", help="write the AUTHGATE_PROVIDERS_FILE")
    catalogue.add_argument("path", nargs="?", type=Path, help="where (default: stdout)")
    connections = commands.add_parser(
        "connections", help="create the integrations and upsert the connections"
    )
    connections.add_argument("--management-url", default="http://127.0.0.1:3003")
    connections.add_argument("--provider-port", type=int, required=True)
    connections.add_argument("--api-connections", type=int, default=DEFAULT_API_CONNECTIONS)
    connections.add_argument("--oauth-connections", type=int, default=DEFAULT_OAUTH_CONNECTIONS)
    connections.add_argument(
        "--token-lifetime",
        type=int,
        default=DEFAULT_TOKEN_LIFETIME,
        help="seconds each refreshed access token lives (authgate renews at half of it)",
    )
    return parser.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    if args.command == "catalogue":
        if args.path is None:
            sys.stdout.write(CATALOGUE)
        else:
            args.path.write_text(CATALOGUE)
        return 0
    secret_key = os.environ.get("AUTHGATE_SECRET_KEY", "")
    if not secret_key:
        print("seed: set AUTHGATE_SECRET_KEY to the environment's secret key", file=sys.stderr)
        return 2
    plan = SeedPlan(
        args.provider_port, args.api_connections, args.oauth_connections, args.token_lifetime
    )
    try:
        seed(ManagementClient(args.management_url, secret_key), plan)
    except (BenchError, OSError) as error:
        print(f"seed: {error}", file=sys.stderr)
        return 1
    print(
        f"seeded {plan.api_connections} API-key and {plan.oauth_connections} OAuth 2 "
        f"connections (integrations {API_INTEGRATION}, {OAUTH_INTEGRATION})"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
