"""Locust scenario: a backend calling third-party APIs through authgate's proxy.

    AUTHGATE_SECRET_KEY=... CONNECTION_ID=... PROVIDER_CONFIG_KEY=... \\
    BASE_URL_OVERRIDE=http://127.0.0.1:8080 \\
    locust -f loadtest/locustfile.py --host http://127.0.0.1:3003

``BASE_URL_OVERRIDE`` should point at ``python -m loadtest.fake_provider``, which serves
``/small``, ``/big`` and ``/echo``. See loadtest/README.md for the seeding calls.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from typing import Final

from locust import HttpUser, between, task

REQUIRED: Final = (
    "AUTHGATE_SECRET_KEY",
    "CONNECTION_ID",
    "PROVIDER_CONFIG_KEY",
    "BASE_URL_OVERRIDE",
)
ECHO_BODY: Final = {"message": "hello through authgate", "items": [1, 2, 3]}


def proxy_headers(environ: Mapping[str, str]) -> dict[str, str]:
    """The Nango control headers every proxied call carries, from the environment."""
    missing = [name for name in REQUIRED if not environ.get(name)]
    if missing:
        raise RuntimeError(f"set these environment variables: {', '.join(missing)}")
    return {
        "Authorization": f"Bearer {environ['AUTHGATE_SECRET_KEY']}",
        "Connection-Id": environ["CONNECTION_ID"],
        "Provider-Config-Key": environ["PROVIDER_CONFIG_KEY"],
        "Base-Url-Override": environ["BASE_URL_OVERRIDE"],
    }


# Read once at import: a missing variable stops locust before any user starts, instead of
# failing every request.
HEADERS: Final = proxy_headers(os.environ)


# locust may or may not be installed when mypy runs; with it, these ignores are unused.
class ProxyUser(HttpUser):  # type: ignore[misc,unused-ignore]
    """Mostly small reads, some large ones, and a write whose echo is checked."""

    host = "http://127.0.0.1:3003"  # authgate's default port; --host overrides it
    wait_time = between(0.05, 0.2)

    def on_start(self) -> None:
        self.client.headers.update(HEADERS)

    @task(6)  # type: ignore[untyped-decorator,unused-ignore]
    def small(self) -> None:
        self.client.get("/proxy/small")

    @task(2)  # type: ignore[untyped-decorator,unused-ignore]
    def big(self) -> None:
        self.client.get("/proxy/big")

    @task(1)  # type: ignore[untyped-decorator,unused-ignore]
    def echo(self) -> None:
        with self.client.post("/proxy/echo", json=ECHO_BODY, catch_response=True) as response:
            if response.status_code != 200:
                response.failure(f"status {response.status_code}")
            elif response.json().get("method") != "POST":
                response.failure("the provider did not receive a POST")
