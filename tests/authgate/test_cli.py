"""The `authgate` command as an operator runs it: real processes, real files."""

from __future__ import annotations

import asyncio
import base64
import os
import socket
import subprocess
import sys
import uuid
from collections.abc import Iterator
from pathlib import Path

import asyncpg
import pytest

from authgate.bootstrap import start_core
from credentials.config import CoreSettings
from credentials.secret_keys import parse_bearer
from tests.support import POSTGRES_ADMIN_URL


def run(
    args: list[str], env: dict[str, str], timeout: float = 60
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "authgate", *args],
        env={**os.environ, **env},
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )


def base_env(tmp_path: Path) -> dict[str, str]:
    return {"AUTHGATE_DATA_DIR": str(tmp_path / "data")}


@pytest.mark.parametrize(
    ("variable", "value"),
    [
        ("AUTHGATE_PORT", "not-a-port"),
        ("AUTHGATE_PORT", "70000"),
        ("AUTHGATE_ALLOW_PRIVATE_UPSTREAMS", "perhaps"),
        ("AUTHGATE_SECRET_KEY", "short"),
        ("AUTHGATE_ENCRYPTION_KEY", base64.b64encode(b"too short").decode()),
        ("DATABASE_URL", "mysql://nope"),
        ("REDIS_URL", "http://nope"),
        ("AUTHGATE_UPSTREAM_READ_TIMEOUT", "-1"),
        ("AUTHGATE_PROVIDERS_FILE", "/no/such/file.yaml"),
        ("AUTHGATE_WORKERS", "0"),
        ("AUTHGATE_WORKERS", "many"),
        ("AUTHGATE_KEEPALIVE_TIMEOUT", "0.5"),
        ("AUTHGATE_DRAIN_TIMEOUT", "-1"),
        ("AUTHGATE_DRAIN_DELAY", "soon"),
        ("AUTHGATE_UPSTREAM_CONNECTIONS_PER_HOST", "-3"),
    ],
)
@pytest.mark.parametrize("command", ["serve", "proxy"])
def test_invalid_configuration_stops_with_the_variable_named(
    tmp_path: Path, command: str, variable: str, value: str
) -> None:
    result = run([command], {**base_env(tmp_path), variable: value})
    assert result.returncode == 2
    assert variable in result.stderr
    assert "Traceback" not in result.stderr


def test_postgres_without_encryption_key_is_refused(tmp_path: Path) -> None:
    env = {**base_env(tmp_path), "DATABASE_URL": "postgresql://postgres@127.0.0.1:5432/test"}
    result = run(["serve"], env)
    assert result.returncode == 2
    assert "AUTHGATE_ENCRYPTION_KEY" in result.stderr


def test_env_and_key_create_print_working_keys(tmp_path: Path) -> None:
    env = base_env(tmp_path)
    created = run(["env", "create", "prod"], env)
    assert created.returncode == 0, created.stderr
    prod_key = created.stdout.strip()
    assert parse_bearer(f"Bearer {prod_key}").key == prod_key
    again = run(["env", "create", "prod"], env)
    assert again.returncode == 1
    assert "already exists" in again.stderr
    second = run(["key", "create", "prod"], env)
    assert second.returncode == 0, second.stderr
    assert second.stdout.strip() not in ("", prod_key)
    missing = run(["key", "create", "nowhere"], env)
    assert missing.returncode == 1


def test_first_start_generates_dev_keys_in_the_data_dir(tmp_path: Path) -> None:
    env = base_env(tmp_path)
    created = run(["env", "create", "staging"], env)
    assert created.returncode == 0, created.stderr
    data = tmp_path / "data"
    secret = (data / "secret.key").read_text().strip()
    assert secret in created.stderr
    assert (data / "encryption.key").stat().st_mode & 0o077 == 0
    assert (data / "secret.key").stat().st_mode & 0o077 == 0
    assert len(base64.b64decode((data / "encryption.key").read_text())) == 32


# --- operator commands on both stores --------------------------------------------------------


async def _create_schema(schema: str) -> None:
    admin = await asyncpg.connect(POSTGRES_ADMIN_URL)
    try:
        await admin.execute(f"CREATE SCHEMA {schema}")
    finally:
        await admin.close()


async def _drop_schema(schema: str) -> None:
    admin = await asyncpg.connect(POSTGRES_ADMIN_URL)
    try:
        await admin.execute(f"DROP SCHEMA IF EXISTS {schema} CASCADE")
    finally:
        await admin.close()


@pytest.fixture(params=["sqlite", "postgres"])
def store_env(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[dict[str, str]]:
    """Operator environment variables for a fresh store of either kind."""
    env = base_env(tmp_path)
    if request.param == "sqlite":
        yield env
        return
    schema = f"t_{uuid.uuid4().hex[:16]}"
    asyncio.run(_create_schema(schema))
    try:
        yield {
            **env,
            "DATABASE_URL": f"{POSTGRES_ADMIN_URL}?search_path={schema}",
            "AUTHGATE_ENCRYPTION_KEY": base64.b64encode(os.urandom(32)).decode(),
        }
    finally:
        asyncio.run(_drop_schema(schema))


async def _stored_variables(env: dict[str, str], environment: str) -> list[tuple[str, str]]:
    core = await start_core(CoreSettings.from_env({**os.environ, **env}), lambda _: None)
    try:
        found = await core.store.get_environment(environment)
        assert found is not None
        return await core.store.list_environment_variables(found.id)
    finally:
        await core.close()


def stored_variables(env: dict[str, str], environment: str = "dev") -> list[tuple[str, str]]:
    return asyncio.run(_stored_variables(env, environment))


def run_input(args: list[str], env: dict[str, str], stdin: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "authgate", *args],
        env={**os.environ, **env},
        input=stdin,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def listing(env: dict[str, str]) -> list[str]:
    result = run(["env", "list"], env)
    assert result.returncode == 0, result.stderr
    return result.stdout.splitlines()


def test_env_list_shows_each_environment_and_its_active_keys(store_env: dict[str, str]) -> None:
    assert listing(store_env) == ["dev\t1"]
    created = run(["env", "create", "prod"], store_env)
    assert created.returncode == 0, created.stderr
    assert run(["key", "create", "prod"], store_env).returncode == 0
    assert listing(store_env) == ["dev\t1", "prod\t2"]
    revoked = run(["key", "revoke", created.stdout.strip()], store_env)
    assert revoked.returncode == 0, revoked.stderr
    assert listing(store_env) == ["dev\t1", "prod\t1"]


def test_set_var_and_unset_var(store_env: dict[str, str]) -> None:
    assert run(["env", "set-var", "dev", "REGION", "eu-west-1"], store_env).returncode == 0
    piped = run_input(["env", "set-var", "dev", "TOKEN", "-"], store_env, "line one\nline two\n\n")
    assert piped.returncode == 0, piped.stderr
    assert "line one" not in piped.stdout + piped.stderr
    # Only the one line break `echo` adds is dropped from stdin.
    assert stored_variables(store_env) == [
        ("REGION", "eu-west-1"),
        ("TOKEN", "line one\nline two\n"),
    ]
    assert run(["env", "set-var", "dev", "REGION", ""], store_env).returncode == 0
    assert run(["env", "unset-var", "dev", "TOKEN"], store_env).returncode == 0
    assert stored_variables(store_env) == [("REGION", "")]
    missing = run(["env", "unset-var", "dev", "TOKEN"], store_env)
    assert missing.returncode == 1
    assert "has no variable 'TOKEN'" in missing.stderr


def test_variables_belong_to_their_environment(store_env: dict[str, str]) -> None:
    assert run(["env", "create", "prod"], store_env).returncode == 0
    assert run(["env", "set-var", "prod", "SHARED", "prod-value"], store_env).returncode == 0
    assert run(["env", "set-var", "dev", "SHARED", "dev-value"], store_env).returncode == 0
    assert stored_variables(store_env, "prod") == [("SHARED", "prod-value")]
    assert stored_variables(store_env, "dev") == [("SHARED", "dev-value")]
    assert run(["env", "unset-var", "prod", "SHARED"], store_env).returncode == 0
    assert stored_variables(store_env, "dev") == [("SHARED", "dev-value")]


@pytest.mark.parametrize(
    ("args", "stdin", "message"),
    [
        (["env", "set-var", "nowhere", "A", "b"], "", "no environment named 'nowhere'"),
        (["env", "unset-var", "nowhere", "A"], "", "no environment named 'nowhere'"),
        (["env", "set-var", "dev", "HAS SPACE", "b"], "", "variable names are"),
        (["env", "set-var", "dev", "", "b"], "", "variable names are"),
        (["env", "set-var", "dev", "N" * 256, "b"], "", "variable names are"),
        (["env", "set-var", "dev", "LINE\n", "b"], "", "variable names are"),
        (["env", "set-var", "dev", "NUL", "-"], "a\x00b", "NUL"),
        (["env", "create", "prod\n"], "", "environment names are"),
        (["key", "revoke", "not-a-key"], "", "not a secret key"),
        (["key", "revoke", "-"], "", "not a secret key"),
        (["key", "revoke", str(uuid.uuid4())], "", "no active secret key matches"),
    ],
)
def test_operator_mistakes_exit_1_with_a_reason(
    tmp_path: Path, args: list[str], stdin: str, message: str
) -> None:
    env = base_env(tmp_path)
    result = run_input(args, env, stdin)
    assert result.returncode == 1, result.stderr
    assert message in result.stderr
    assert "Traceback" not in result.stderr
    assert listing(env) == ["dev\t1"]
    assert stored_variables(env) == []


def test_key_revoke_reads_the_key_from_stdin(store_env: dict[str, str]) -> None:
    created = run(["env", "create", "prod"], store_env)
    key = created.stdout.strip()
    revoked = run_input(["key", "revoke", "-"], store_env, key + "\n")
    assert revoked.returncode == 0, revoked.stderr
    assert "revoked a secret key of environment 'prod'" in revoked.stderr
    assert key not in revoked.stderr + revoked.stdout
    assert run(["key", "revoke", key], store_env).returncode == 1
    # Revoking is by value, case-insensitively, as keys are looked up.
    second = run(["key", "create", "prod"], store_env).stdout.strip()
    assert run(["key", "revoke", second.upper()], store_env).returncode == 0
    assert listing(store_env) == ["dev\t1", "prod\t0"]


def test_health_reports_an_unreachable_server(tmp_path: Path) -> None:
    with socket.socket() as unused:
        unused.bind(("127.0.0.1", 0))
        port = unused.getsockname()[1]
    result = run(["health", "--port", str(port)], base_env(tmp_path))
    assert result.returncode == 1
    assert f"http://127.0.0.1:{port}/health unreachable" in result.stderr
    assert "Traceback" not in result.stderr
