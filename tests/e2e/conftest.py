"""A running authgate (serve: proxy + management on one port) and a fake provider,
both on real sockets, with a store on SQLite or PostgreSQL."""

from __future__ import annotations

import base64
import os
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from aiohttp import web
from aiohttp.test_utils import TestServer
from yarl import URL

from authgate.serving import Running, start_serve
from credentials.runtime import CoreServices
from management.settings import ManagementSettings
from proxy.app import DataPlane
from proxy.settings import ProxySettings
from tests.e2e.fake_provider import FakeProvider
from tests.support import database_urls

TEST_PROVIDERS = """
fake-oauth:
    display_name: Fake OAuth
    categories: [dev-tools]
    docs: https://docs.example.com/fake-oauth
    auth_mode: OAUTH2
    authorization_url: https://auth.example.com/authorize
    token_url: https://auth.example.com/token
    proxy:
        base_url: http://127.0.0.1:${connectionConfig.port}
fake-api-key:
    display_name: Fake API key
    docs: https://docs.example.com/fake-api-key
    auth_mode: API_KEY
    proxy:
        base_url: http://127.0.0.1:${connectionConfig.port}/api
        headers:
            x-api-key: ${apiKey}
            x-tenant: ${connectionConfig.tenant}
            accept: application/vnd.fake+json
        query:
            key: ${apiKey}
fake-basic:
    display_name: Fake Basic
    docs: https://docs.example.com/fake-basic
    auth_mode: BASIC
    proxy:
        base_url: http://127.0.0.1:${connectionConfig.port}
fake-nobase:
    display_name: Fake without base URL
    docs: https://docs.example.com/fake-nobase
    auth_mode: API_KEY
"""

Factory = Callable[..., Awaitable["Authgate"]]


@dataclass
class Authgate:
    url: URL
    secret_key: str
    session: aiohttp.ClientSession
    provider: FakeProvider
    provider_port: int
    data_dir: Path
    environ: dict[str, str]
    running: Running

    @property
    def app(self) -> web.Application:
        assert self.running.app is not None
        return self.running.app

    @property
    def core(self) -> CoreServices:
        return self.running.core

    @property
    def plane(self) -> DataPlane:
        assert self.running.plane is not None
        return self.running.plane

    def auth(self, key: str | None = None) -> dict[str, str]:
        return {"Authorization": f"Bearer {key or self.secret_key}"}

    async def post_json(
        self, path: str, body: Any, key: str | None = None
    ) -> aiohttp.ClientResponse:
        response = await self.session.post(
            self.url.with_path(path), json=body, headers=self.auth(key)
        )
        await response.read()
        return response

    async def integration(self, unique_key: str, provider: str, **extra: Any) -> None:
        body = {"unique_key": unique_key, "provider": provider, **extra}
        if provider == "fake-oauth" and "credentials" not in extra:
            body["credentials"] = {"type": "OAUTH2", "client_id": "cid", "client_secret": "csecret"}
        response = await self.post_json("/integrations", body)
        assert response.status == 200, await response.text()

    async def connection(
        self, unique_key: str, connection_id: str, credentials: dict[str, Any], **extra: Any
    ) -> None:
        config = {"port": str(self.provider_port), **extra.pop("connection_config", {})}
        body = {
            "provider_config_key": unique_key,
            "connection_id": connection_id,
            "credentials": credentials,
            "connection_config": config,
            **extra,
        }
        response = await self.post_json("/connections", body)
        assert response.status == 201, await response.text()

    async def proxy(
        self,
        method: str,
        raw_target: str,
        *,
        connection_id: str = "conn-1",
        provider_config_key: str = "oauth",
        headers: dict[str, str] | None = None,
        data: Any = None,
        key: str | None = None,
    ) -> aiohttp.ClientResponse:
        sent = {
            **self.auth(key),
            "Connection-Id": connection_id,
            "Provider-Config-Key": provider_config_key,
            **(headers or {}),
        }
        target = URL(str(self.url).rstrip("/") + raw_target, encoded=True)
        return await self.session.request(method, target, headers=sent, data=data)


def settings_env(data_dir: Path, database_url: str, **overrides: str) -> dict[str, str]:
    providers = data_dir / "providers.yaml"
    providers.write_text(TEST_PROVIDERS)
    return {
        "AUTHGATE_DATA_DIR": str(data_dir),
        "DATABASE_URL": database_url,
        "AUTHGATE_SECRET_KEY": str(uuid.uuid4()),
        "AUTHGATE_ENCRYPTION_KEY": base64.b64encode(os.urandom(32)).decode(),
        "AUTHGATE_PROVIDERS_FILE": str(providers),
        "AUTHGATE_ALLOW_PRIVATE_UPSTREAMS": "true",
        **overrides,
    }


@pytest.fixture(params=database_urls(), ids=["sqlite", "postgres"])
async def database_url(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[str]:
    async with request.param(tmp_path) as url:
        yield url


@pytest.fixture
async def make_authgate(tmp_path: Path, database_url: str) -> AsyncIterator[Factory]:
    servers: list[TestServer] = []
    gates: list[Running] = []
    sessions: list[aiohttp.ClientSession] = []

    async def start(share: Authgate | None = None, **overrides: str) -> Authgate:
        """A new authgate; with `share`, another process of that one (same store, keys)."""
        provider = FakeProvider()
        provider_server = TestServer(provider.app, host="127.0.0.1")
        await provider_server.start_server()
        servers.append(provider_server)
        environ = (
            {**share.environ, **overrides}
            if share is not None
            else settings_env(tmp_path, database_url, **overrides)
        )
        running = await start_serve(
            ProxySettings.from_env(environ), ManagementSettings.from_env(environ), port=0
        )
        gates.append(running)
        session = aiohttp.ClientSession(auto_decompress=False)
        sessions.append(session)
        assert provider_server.port is not None
        return Authgate(
            url=URL(f"http://127.0.0.1:{running.port}/"),
            secret_key=environ["AUTHGATE_SECRET_KEY"],
            session=session,
            provider=provider,
            provider_port=provider_server.port,
            data_dir=tmp_path,
            environ=environ,
            running=running,
        )

    yield start
    for session in sessions:
        await session.close()
    for gate in reversed(gates):
        await gate.close()
    for server in reversed(servers):
        await server.close()


@pytest.fixture
async def authgate(make_authgate: Factory) -> Authgate:
    return await make_authgate()


async def json_of(response: aiohttp.ClientResponse) -> Any:
    return await response.json(content_type=None)


def ok_handler(
    status: int = 200, body: bytes = b"{}", headers: dict[str, str] | None = None
) -> Callable[[web.Request], Awaitable[web.StreamResponse]]:
    async def handler(request: web.Request) -> web.StreamResponse:
        return web.Response(status=status, body=body, headers=headers or {})

    return handler
