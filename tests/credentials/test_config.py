from __future__ import annotations

import base64
import uuid
from pathlib import Path

import pytest

from credentials.config import ConfigError, CoreSettings, parse_encryption_keys


def key(size: int = 32) -> str:
    return base64.b64encode(bytes(range(size))).decode()


def test_defaults_follow_the_data_dir(tmp_path: Path) -> None:
    settings = CoreSettings.from_env({"AUTHGATE_DATA_DIR": str(tmp_path)})
    assert settings.database_url == f"sqlite:///{tmp_path / 'authgate.db'}"
    assert settings.uses_sqlite
    assert settings.encryption_keys == ()
    assert settings.secret_key is None
    assert settings.redis_url is None


def test_explicit_values() -> None:
    secret = str(uuid.uuid4())
    settings = CoreSettings.from_env(
        {
            "DATABASE_URL": "postgresql://u@h/db",
            "REDIS_URL": "redis://127.0.0.1:6379/0",
            "AUTHGATE_ENCRYPTION_KEY": f"{key()}, {key()}",
            "AUTHGATE_SECRET_KEY": secret.upper(),
        }
    )
    assert not settings.uses_sqlite
    assert len(settings.encryption_keys) == 2
    assert settings.secret_key == secret


@pytest.mark.parametrize(
    ("variable", "value"),
    [
        ("AUTHGATE_SECRET_KEY", "123"),
        ("AUTHGATE_SECRET_KEY", "bd79215a-e8e9-11f1-9b8b-02fc00000001"),  # a UUID v1
        ("AUTHGATE_ENCRYPTION_KEY", "%%%"),
        ("AUTHGATE_ENCRYPTION_KEY", key(16)),
        ("DATABASE_URL", "mysql://x"),
        ("REDIS_URL", "memcached://x"),
        ("AUTHGATE_PROVIDERS_FILE", "/definitely/not/here.yaml"),
    ],
)
def test_invalid_values_name_the_variable(variable: str, value: str) -> None:
    with pytest.raises(ConfigError) as raised:
        CoreSettings.from_env({variable: value})
    assert raised.value.variable == variable
    assert variable in str(raised.value)


def test_encryption_key_errors_never_echo_the_key() -> None:
    secretish = base64.b64encode(b"s" * 31).decode()
    with pytest.raises(ConfigError) as raised:
        parse_encryption_keys("AUTHGATE_ENCRYPTION_KEY", secretish)
    assert secretish not in str(raised.value)
