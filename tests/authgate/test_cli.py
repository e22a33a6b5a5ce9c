"""The `authgate` command as an operator runs it: real processes, real files."""

from __future__ import annotations

import base64
import os
import subprocess
import sys
from pathlib import Path

import pytest

from credentials.secret_keys import parse_bearer


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
