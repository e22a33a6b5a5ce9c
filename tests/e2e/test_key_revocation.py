"""Revoking a secret key: at once in the process whose store revokes it (management and
proxy alike), for every process that looks the key up afterwards, and, with Redis, at once
in running servers even when the operator CLI (another process) revoked it."""

from __future__ import annotations

import asyncio
import uuid

from authgate.operator import revoke_secret_key
from credentials.secret_keys import generate_secret_key, hash_secret_key
from credentials.store import ChangeEvent
from management.request_context import CORE
from tests.e2e.conftest import Authgate, Factory
from tests.e2e.management_calls import assert_error, call
from tests.e2e.operator_cli import run_cli

REDIS_URL = "redis://127.0.0.1:6379/0"


async def extra_dev_key(authgate: Authgate) -> str:
    store = authgate.app[CORE].store
    environment = await store.get_environment("dev")
    assert environment is not None
    key = generate_secret_key()
    await store.add_secret_key(environment.id, hash_secret_key(key), "test")
    return key


async def proxy_status(authgate: Authgate, key: str) -> tuple[int, str]:
    response = await authgate.proxy(
        "GET", "/proxy/anything", connection_id="nobody", provider_config_key="none", key=key
    )
    payload = await response.json(content_type=None)
    return response.status, payload["error"]["code"]


async def test_a_revoked_key_stops_working_at_once(authgate: Authgate) -> None:
    key = await extra_dev_key(authgate)
    # Warm every cache that has seen the key.
    assert (await call(authgate, "GET", "/environment-variables", key=key))[0] == 200
    assert await proxy_status(authgate, key) == (404, "unknown_connection")

    owner = await revoke_secret_key(authgate.app[CORE].store, key)
    assert owner is not None
    assert owner.name == "dev"

    status, payload = await call(authgate, "GET", "/environment-variables", key=key)
    assert_error(status, payload, 401, "unknown_account")
    assert await proxy_status(authgate, key) == (401, "unknown_account")
    # The environment's other key is untouched.
    assert (await call(authgate, "GET", "/environment-variables"))[0] == 200
    assert await revoke_secret_key(authgate.app[CORE].store, key) is None


async def test_unknown_keys_revoke_nothing(authgate: Authgate) -> None:
    assert await revoke_secret_key(authgate.app[CORE].store, str(uuid.uuid4())) is None
    assert (await call(authgate, "GET", "/environment-variables"))[0] == 200


async def test_cli_revocation_holds_for_every_later_lookup(make_authgate: Factory) -> None:
    first = await make_authgate()
    created = await run_cli(first.environ, "env", "create", "prod")
    assert created.returncode == 0, created.stderr
    prod_key = created.stdout.strip()
    assert (await call(first, "GET", "/environment-variables", key=prod_key))[0] == 200

    revoked = await run_cli(first.environ, "key", "revoke", "-", stdin=prod_key + "\n")
    assert revoked.returncode == 0, revoked.stderr
    assert "'prod' has no active key left" in revoked.stderr
    assert prod_key not in revoked.stderr + revoked.stdout

    # A process that had not cached the key refuses it (one that had holds it for at
    # most the key cache's TTL, unless Redis carries the change).
    second = await make_authgate()
    status, payload = await call(second, "GET", "/environment-variables", key=prod_key)
    assert_error(status, payload, 401, "unknown_account")
    again = await run_cli(first.environ, "key", "revoke", prod_key)
    assert again.returncode == 1
    assert "no active secret key matches" in again.stderr


async def test_cli_revocation_reaches_a_running_server_through_redis(
    make_authgate: Factory,
) -> None:
    prefix = f"authgate-test-{uuid.uuid4().hex}"
    server = await make_authgate(REDIS_URL=REDIS_URL, AUTHGATE_REDIS_PREFIX=prefix)
    core = server.app[CORE]
    assert core.bridge is not None
    await asyncio.wait_for(core.bridge.subscribed.wait(), timeout=10)
    revocations = asyncio.Event()

    def on_change(event: ChangeEvent) -> None:
        if event.kind == "secret_key":
            revocations.set()

    core.changes.subscribe(on_change, reset=lambda: None)
    key = await extra_dev_key(server)
    assert (await call(server, "GET", "/environment-variables", key=key))[0] == 200  # cached
    revocations.clear()  # adding the key announced itself too

    revoked = await run_cli(server.environ, "key", "revoke", "-", stdin=key, limit=15)
    assert revoked.returncode == 0, revoked.stderr
    await asyncio.wait_for(revocations.wait(), timeout=10)
    status, payload = await call(server, "GET", "/environment-variables", key=key)
    assert_error(status, payload, 401, "unknown_account")
