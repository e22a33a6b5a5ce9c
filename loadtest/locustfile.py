"""Locust scenario: a backend calling its customers' APIs through authgate's ``/proxy``.

    AUTHGATE_SECRET_KEY=... locust -f loadtest/locustfile.py --host http://127.0.0.1:3003 \\
        --provider-port 8080 --headless -u 50 -r 10 -t 60s

authgate must run with the load-test catalogue (``python -m loadtest.seed catalogue``
as ``AUTHGATE_PROVIDERS_FILE``) and ``AUTHGATE_ALLOW_PRIVATE_UPSTREAMS=true``; the provider
is ``python -m loadtest.fake_provider``. Before any user starts, the ``init`` event seeds
the integrations and connections over the management API (``--management-url``, default
``--host``; skip with ``--no-seed``), see loadtest/seed.py.

Every request picks a connection at random: API-key connections for the plain calls,
OAuth 2 connections (seeded with expired tokens; the fake provider issues tokens that
live ``--token-lifetime`` seconds, so authgate keeps renewing them) for ``/oauth/me``.
Each task checks the answer, not just the status, and is reported under its own name:

- ``/proxy/small``, ``/proxy/big``: 208 B and 64 KiB of JSON (big: byte count checked);
- ``/proxy/echo``: a POSTed JSON body comes back as the provider saw it: a POST, the same
  body, and this connection's injected API key;
- ``/proxy/stream [download]``: ``--download-mib`` MiB chunked (byte count checked);
- ``/proxy/oauth/me [refresh]``: the provider answers 401 to an expired or foreign token,
  so a 200 means authgate injected a token it renewed;
- ``/proxy/fail/429 [Retry-After]``: the provider answers 429 with ``Retry-After: 1``
  once, then 200; sent with ``Retries: 1``, the provider must have seen 2 attempts;
- ``/proxy/fail/5xx [Retries]``: 500, 502, 503 or 504 twice, then 200; sent with
  ``Retries: 3``, the provider must have seen 3 attempts.
"""

from __future__ import annotations

import os
import random
import uuid
from collections.abc import Mapping
from typing import Any, Final

import orjson
from locust import FastHttpUser, between, events, task
from locust.argument_parser import LocustArgumentParser
from locust.env import Environment
from locust.runners import WorkerRunner

from loadtest.seed import (
    API_INTEGRATION,
    DEFAULT_API_CONNECTIONS,
    DEFAULT_OAUTH_CONNECTIONS,
    DEFAULT_TOKEN_LIFETIME,
    OAUTH_INTEGRATION,
    ManagementClient,
    SeedPlan,
    api_connection_ids,
    api_key_of,
    oauth_connection_ids,
    seed,
)

ECHO_BODY: Final = {"message": "hello through authgate", "items": [1, 2, 3]}
RETRIED_5XX: Final = (500, 502, 503, 504)
MIB: Final = 1024 * 1024


def secret_key_from(environ: Mapping[str, str]) -> str:
    secret_key = environ.get("AUTHGATE_SECRET_KEY", "")
    if not secret_key:
        raise RuntimeError("set AUTHGATE_SECRET_KEY to the secret key of authgate's environment")
    return secret_key


# Read once at import: a missing key stops locust before any user starts, instead of
# failing every request.
SECRET_KEY: Final = secret_key_from(os.environ)


@events.init_command_line_parser.add_listener  # type: ignore[untyped-decorator,unused-ignore]
def add_options(parser: LocustArgumentParser) -> None:
    parser.add_argument(
        "--provider-port",
        type=int,
        env_var="LOADTEST_PROVIDER_PORT",
        help="port of python -m loadtest.fake_provider on 127.0.0.1 (needed to seed)",
    )
    parser.add_argument(
        "--management-url",
        env_var="LOADTEST_MANAGEMENT_URL",
        help="authgate's management API (default: --host)",
    )
    parser.add_argument("--api-connections", type=int, default=DEFAULT_API_CONNECTIONS)
    parser.add_argument("--oauth-connections", type=int, default=DEFAULT_OAUTH_CONNECTIONS)
    parser.add_argument(
        "--token-lifetime",
        type=int,
        default=DEFAULT_TOKEN_LIFETIME,
        help="seconds a refreshed OAuth token lives (authgate renews at half of it)",
    )
    parser.add_argument("--download-mib", type=int, default=4, help="size of the large download")
    parser.add_argument("--no-seed", action="store_true", help="the connections exist already")


@events.init.add_listener  # type: ignore[untyped-decorator,unused-ignore]
def seed_connections(environment: Environment, **_: Any) -> None:
    """Seed once, in the process that drives the run (never in each distributed worker)."""
    options = environment.parsed_options
    if options is None or options.no_seed or isinstance(environment.runner, WorkerRunner):
        return
    if options.provider_port is None:
        # An exception in an init listener makes locust exit 1 before any user starts.
        raise RuntimeError("--provider-port is needed to seed (or pass --no-seed)")
    plan = SeedPlan(
        options.provider_port,
        options.api_connections,
        options.oauth_connections,
        options.token_lifetime,
    )
    management_url = options.management_url or environment.host or ""
    seed(ManagementClient(management_url, SECRET_KEY), plan)


def control_headers(integration: str, connection_id: str) -> dict[str, str]:
    return {
        "Authorization": f"Bearer {SECRET_KEY}",
        "Connection-Id": connection_id,
        "Provider-Config-Key": integration,
    }


# The ignores cover mypy runs where locust's types are not installed.
class BackendUser(FastHttpUser):  # type: ignore[misc,unused-ignore]
    """One backend process: mostly small reads, some writes, downloads and refreshes, and
    the provider's occasional 429s and 5xx that authgate retries for it."""

    host = "http://127.0.0.1:3003"  # authgate's default port; --host overrides it
    wait_time = between(0.05, 0.2)

    api_connections: list[tuple[str, dict[str, str]]]
    oauth_connections: list[dict[str, str]]
    download_bytes: int

    def on_start(self) -> None:
        options = self.environment.parsed_options
        api_count = options.api_connections if options else DEFAULT_API_CONNECTIONS
        oauth_count = options.oauth_connections if options else DEFAULT_OAUTH_CONNECTIONS
        # Built once per user, so a request only picks one.
        self.api_connections = [
            (connection_id, control_headers(API_INTEGRATION, connection_id))
            for connection_id in api_connection_ids(api_count)
        ]
        self.oauth_connections = [
            control_headers(OAUTH_INTEGRATION, connection_id)
            for connection_id in oauth_connection_ids(oauth_count)
        ]
        self.download_bytes = (options.download_mib if options else 4) * MIB

    def api_headers(self) -> dict[str, str]:
        return random.choice(self.api_connections)[1]

    @task(10)  # type: ignore[untyped-decorator,unused-ignore]
    def small(self) -> None:
        self.client.get("/proxy/small", headers=self.api_headers(), name="/proxy/small")

    @task(3)  # type: ignore[untyped-decorator,unused-ignore]
    def big(self) -> None:
        with self.client.get(
            "/proxy/big", headers=self.api_headers(), name="/proxy/big", catch_response=True
        ) as response:
            if response.status_code == 200 and len(response.content or b"") != 64 * 1024:
                response.failure(f"{len(response.content or b'')} bytes, expected 65536")

    @task(3)  # type: ignore[untyped-decorator,unused-ignore]
    def echo(self) -> None:
        connection_id, headers = random.choice(self.api_connections)
        with self.client.post(
            "/proxy/echo", headers=headers, json=ECHO_BODY, name="/proxy/echo", catch_response=True
        ) as response:
            if response.status_code == 200:
                problem = echo_problem(response.content or b"", api_key_of(connection_id))
                if problem:
                    response.failure(problem)

    @task(1)  # type: ignore[untyped-decorator,unused-ignore]
    def download(self) -> None:
        with self.client.get(
            f"/proxy/stream/{self.download_bytes}",
            headers=self.api_headers(),
            name="/proxy/stream [download]",
            catch_response=True,
        ) as response:
            received = len(response.content or b"")
            if response.status_code == 200 and received != self.download_bytes:
                response.failure(f"{received} bytes, expected {self.download_bytes}")

    @task(4)  # type: ignore[untyped-decorator,unused-ignore]
    def oauth(self) -> None:
        # The provider answers 401 to a seeded (expired) or unknown token: a 200 means
        # authgate injected a token it renewed.
        headers = random.choice(self.oauth_connections)
        self.client.get("/proxy/oauth/me", headers=headers, name="/proxy/oauth/me [refresh]")

    @task(1)  # type: ignore[untyped-decorator,unused-ignore]
    def provider_429(self) -> None:
        headers = {**self.api_headers(), "Retries": "1"}
        self.expect_attempts(f"/proxy/fail/429/1?key={uuid.uuid4().hex}", headers, 2, "429")

    @task(1)  # type: ignore[untyped-decorator,unused-ignore]
    def provider_5xx(self) -> None:
        status = random.choice(RETRIED_5XX)
        headers = {**self.api_headers(), "Retries": "3"}
        self.expect_attempts(f"/proxy/fail/{status}/2?key={uuid.uuid4().hex}", headers, 3, "5xx")

    def expect_attempts(self, path: str, headers: dict[str, str], attempts: int, kind: str) -> None:
        label = "Retry-After" if kind == "429" else "Retries"
        with self.client.get(
            path, headers=headers, name=f"/proxy/fail/{kind} [{label}]", catch_response=True
        ) as response:
            if response.status_code == 200:
                seen = orjson.loads(response.content or b"{}").get("attempts")
                if seen != attempts:
                    response.failure(f"the provider saw {seen} attempts, expected {attempts}")


def echo_problem(body: bytes, api_key: str) -> str | None:
    """Why an echo answer is wrong, or None: a POST, the same body, this connection's key."""
    echoed = orjson.loads(body)
    if echoed.get("method") != "POST":
        return f"the provider received a {echoed.get('method')}"
    if orjson.loads(echoed.get("body") or "null") != ECHO_BODY:
        return "the provider received a different body"
    if echoed.get("headers", {}).get("authorization") != f"Bearer {api_key}":
        return "the provider did not receive this connection's API key"
    return None
