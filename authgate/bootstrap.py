"""First start on embedded defaults: a dev encryption key, the `dev` environment, its key.

With no configuration at all, authgate generates an encryption key and a secret key
into its data directory (readable by the owner only) and prints where they are, so a
newcomer can make a proxied call right away. Production sets AUTHGATE_ENCRYPTION_KEY
and AUTHGATE_SECRET_KEY; PostgreSQL deployments must.
"""

from __future__ import annotations

import base64
import contextlib
import os
import tempfile
from collections.abc import Callable
from pathlib import Path

from credentials.config import ConfigError, CoreSettings
from credentials.crypto import Keyring, encode_key, generate_key
from credentials.models import Environment
from credentials.runtime import CoreServices, open_core
from credentials.secret_keys import generate_secret_key, hash_secret_key
from credentials.store import AlreadyExists, SqlStore

BOOTSTRAP_ENVIRONMENT = "dev"
ENCRYPTION_KEY_FILE = "encryption.key"
SECRET_KEY_FILE = "secret.key"  # noqa: S105 - a file name, not a secret

Say = Callable[[str], None]


async def start_core(settings: CoreSettings, say: Say) -> CoreServices:
    keyring = Keyring(encryption_keys(settings, say))
    core = await open_core(settings, keyring)
    try:
        await ensure_bootstrap_environment(core.store, settings, say)
    except BaseException:
        await core.close()
        raise
    return core


def encryption_keys(settings: CoreSettings, say: Say) -> tuple[bytes, ...]:
    if settings.encryption_keys:
        return settings.encryption_keys
    if not settings.uses_sqlite:
        raise ConfigError(
            "AUTHGATE_ENCRYPTION_KEY",
            "is required with PostgreSQL (base64 of 32 random bytes: `openssl rand -base64 32`)",
        )
    path = settings.data_dir / ENCRYPTION_KEY_FILE
    # Workers starting together race here: exactly one key may ever be written, or rows
    # sealed under the losers' keys would be unreadable.
    if _create_private(path, encode_key(generate_key())):
        say(
            f"generated a development encryption key in {path}; "
            "production sets AUTHGATE_ENCRYPTION_KEY"
        )
    return (base64.b64decode(path.read_text().strip()),)


async def ensure_bootstrap_environment(store: SqlStore, settings: CoreSettings, say: Say) -> None:
    environment = await _dev_environment(store)
    if settings.secret_key is not None:
        await _adopt_configured_key(store, environment, settings.secret_key)
        return
    key_file = settings.data_dir / SECRET_KEY_FILE
    if await store.count_secret_keys(environment.id) == 0:
        # The file decides which key is the bootstrap key when several workers start at
        # once, and a file left from an earlier database is adopted rather than orphaned.
        created = _create_private(key_file, generate_secret_key())
        secret_key = key_file.read_text().strip()
        with contextlib.suppress(AlreadyExists):
            await store.add_secret_key(environment.id, hash_secret_key(secret_key), "generated")
        if created:
            say(
                f"environment {BOOTSTRAP_ENVIRONMENT!r} secret key: {secret_key} "
                f"(saved in {key_file})"
            )
            return
    if key_file.exists():
        say(f"environment {BOOTSTRAP_ENVIRONMENT!r} secret key is in {key_file}")


async def _dev_environment(store: SqlStore) -> Environment:
    environment = await store.get_environment(BOOTSTRAP_ENVIRONMENT)
    if environment is not None:
        return environment
    try:
        return await store.create_environment(BOOTSTRAP_ENVIRONMENT)
    except AlreadyExists:
        # Another process starting at the same moment created it first.
        found = await store.get_environment(BOOTSTRAP_ENVIRONMENT)
        assert found is not None
        return found


async def _adopt_configured_key(store: SqlStore, environment: Environment, secret_key: str) -> None:
    key_hash = hash_secret_key(secret_key)
    owner = await store.find_environment_by_key_hash(key_hash)
    if owner is None:
        try:
            await store.add_secret_key(environment.id, key_hash, "AUTHGATE_SECRET_KEY")
        except AlreadyExists:
            owner = await store.find_environment_by_key_hash(key_hash)
    if owner is not None and owner.id != environment.id:
        raise ConfigError(
            "AUTHGATE_SECRET_KEY", f"already belongs to environment {owner.name!r}, not 'dev'"
        )


def _create_private(path: Path, content: str) -> bool:
    """Creates `path` (owner-only) with `content` unless it exists; True if this call did.

    Written under a temporary name and then hard-linked into place, so another process
    never reads the file half-written, and of several creators exactly one wins."""
    path.parent.mkdir(parents=True, exist_ok=True)
    descriptor, temporary = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
    try:
        with os.fdopen(descriptor, "w") as handle:
            handle.write(content + "\n")
            handle.flush()
            os.fsync(handle.fileno())
        try:
            os.link(temporary, path)
        except FileExistsError:
            return False
        return True
    finally:
        os.unlink(temporary)
