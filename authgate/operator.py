"""Operator commands: environments, their secret keys and variables, encryption keys.

A new key is printed once on stdout and only its hash is stored, so it cannot be shown
again; lose it and create another. Messages for the operator go to stderr, so stdout
carries only what a script would capture (a key, a listing, a rotation summary).
"""

from __future__ import annotations

import re
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass

from authgate.bootstrap import encryption_keys, start_core
from authgate.console import say
from credentials.config import ConfigError, CoreSettings
from credentials.crypto import TOKEN_PREFIX, Keyring
from credentials.database import Executor
from credentials.models import Environment
from credentials.runtime import CoreServices
from credentials.secret_keys import generate_secret_key, hash_secret_key, is_uuid_v4
from credentials.store import AlreadyExists, SqlStore, open_store

ENVIRONMENT_NAME = re.compile(r"^[a-z0-9][a-z0-9_-]{0,63}$")
# Printable, no whitespace: a name has to survive shells, .env files and log lines intact.
VARIABLE_NAME = re.compile(r"^[!-~]{1,255}$")
ROTATION_BATCH_SIZE = 500
# Every column that holds a keyring ciphertext (the ones `SqlStore.reencrypt_all` rewraps).
SEALED_COLUMNS = (
    ("connections", "credentials_enc"),
    ("integrations", "credentials_enc"),
    ("integrations", "custom_enc"),
    ("environment_variables", "value_enc"),
    ("environment_settings", "webhook_secret_enc"),
    ("environment_settings", "hmac_key_enc"),
    ("oauth_sessions", "secrets_enc"),
)


# --- environments --------------------------------------------------------------------------


async def create_environment(settings: CoreSettings, name: str) -> int:
    if not ENVIRONMENT_NAME.fullmatch(name):
        say("environment names are 1-64 lower-case letters, digits, '-' or '_'")
        return 1
    async with _core(settings) as core:
        try:
            environment = await core.store.create_environment(name)
        except AlreadyExists:
            say(f"environment {name!r} already exists")
            return 1
        await _issue_key(core, environment)
        return 0


async def list_environments(settings: CoreSettings) -> int:
    """One line per environment: its name, a tab, and how many active secret keys it has."""
    async with _core(settings) as core:
        for environment in await core.store.list_environments():
            print(f"{environment.name}\t{await core.store.count_secret_keys(environment.id)}")
        return 0


# --- secret keys -----------------------------------------------------------------------------


async def create_key(settings: CoreSettings, environment_name: str) -> int:
    async with _core(settings) as core:
        environment = await _environment(core, environment_name)
        if environment is None:
            return 1
        await _issue_key(core, environment)
        return 0


async def revoke_key(settings: CoreSettings, secret_key: str) -> int:
    if not is_uuid_v4(secret_key):
        say("that is not a secret key (secret keys are UUID v4)")
        return 1
    async with _core(settings) as core:
        owner = await revoke_secret_key(core.store, secret_key)
        if owner is None:
            say("no active secret key matches (unknown, or already revoked)")
            return 1
        say(f"revoked a secret key of environment {owner.name!r}")
        if await core.store.count_secret_keys(owner.id) == 0:
            say(f"{owner.name!r} has no active key left; `authgate key create {owner.name}`")
        return 0


async def revoke_secret_key(store: SqlStore, secret_key: str) -> Environment | None:
    """Revoke the key; the environment it belonged to, or None when no active key matched.

    The store announces the revocation, so the key resolver of the process that owns
    `store` forgets the key at once; other processes hold it until their cache entry
    expires (or until the change reaches them over Redis).
    """
    key_hash = hash_secret_key(secret_key)
    owner = await store.find_environment_by_key_hash(key_hash)
    if owner is None or not await store.revoke_secret_key(key_hash):
        return None
    return owner


async def _issue_key(core: CoreServices, environment: Environment) -> None:
    key = generate_secret_key()
    await core.store.add_secret_key(environment.id, hash_secret_key(key), "cli")
    print(key)


# --- environment variables -------------------------------------------------------------------


async def set_variable(settings: CoreSettings, environment_name: str, name: str, value: str) -> int:
    if not _valid_variable_name(name):
        return 1
    if "\x00" in value:
        say("variable values cannot contain NUL characters")
        return 1
    async with _core(settings) as core:
        environment = await _environment(core, environment_name)
        if environment is None:
            return 1
        await core.store.set_environment_variable(environment.id, name, value)
        say(f"set {name} in environment {environment.name!r}")
        return 0


async def unset_variable(settings: CoreSettings, environment_name: str, name: str) -> int:
    async with _core(settings) as core:
        environment = await _environment(core, environment_name)
        if environment is None:
            return 1
        if not await core.store.delete_environment_variable(environment.id, name):
            say(f"environment {environment.name!r} has no variable {name!r}")
            return 1
        say(f"removed {name} from environment {environment.name!r}")
        return 0


def _valid_variable_name(name: str) -> bool:
    if VARIABLE_NAME.fullmatch(name):
        return True
    say("variable names are 1-255 printable characters without spaces")
    return False


# --- encryption keys -------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class RotationReport:
    primary_key_id: str
    reencrypted: int
    """Values rewritten under the primary key by this run."""
    remaining: int
    """Values still under another key afterwards: undecryptable (the store logged which),
    or written meanwhile by a process whose keyring puts an older key first."""


async def rotate_keys(settings: CoreSettings, *, batch_size: int = ROTATION_BATCH_SIZE) -> int:
    """`authgate keys rotate`: re-encrypt every stored secret under the first configured key.

    Safe while servers are running (each row is rewritten with a compare-and-set on its
    old ciphertext, so a concurrent write wins) and resumable (progress is the data
    itself: a rerun rewrites only what is still under an older key). Prints a summary on
    stdout; exits 1 while anything is left under an older key, since that key is then
    still needed.
    """
    try:
        keyring = Keyring(encryption_keys(settings, say))
    except ValueError as problem:
        raise ConfigError("AUTHGATE_ENCRYPTION_KEY", str(problem)) from None
    store = await open_store(settings.database_url, keyring)
    try:
        report = await reencrypt_everything(store, batch_size=batch_size)
    finally:
        await store.close()
    print(
        f"re-encrypted {report.reencrypted} values under key {report.primary_key_id};"
        f" {report.remaining} skipped"
    )
    if report.remaining:
        say(
            f"{report.remaining} values are still under an older key: they do not decrypt"
            " with any configured key (see the warnings), or a process whose"
            " AUTHGATE_ENCRYPTION_KEY does not list the new key first wrote them."
            " Keep the old keys configured, fix that, and run this again."
        )
        return 1
    return 0


async def reencrypt_everything(store: SqlStore, *, batch_size: int) -> RotationReport:
    reencrypted = await store.reencrypt_all(batch_size=batch_size)
    primary = store.keyring.primary_key_id
    remaining = await count_under_other_keys(store.db, primary)
    return RotationReport(primary, reencrypted, remaining)


async def count_under_other_keys(db: Executor, key_id: str) -> int:
    """How many stored ciphertexts were not written under `key_id`."""
    prefix = f"{TOKEN_PREFIX}.{key_id}."
    total = 0
    for table, column in SEALED_COLUMNS:
        # substr, not LIKE: SQLite's LIKE ignores case. Names are this module's constants.
        total += int(
            await db.fetchval(
                f"SELECT COUNT(*) FROM {table} WHERE {column} IS NOT NULL"  # noqa: S608
                f" AND substr({column}, 1, {len(prefix)}) <> $1",
                prefix,
            )
        )
    return total


# --- plumbing --------------------------------------------------------------------------------


async def _environment(core: CoreServices, name: str) -> Environment | None:
    environment = await core.store.get_environment(name)
    if environment is None:
        say(f"no environment named {name!r}")
    return environment


@asynccontextmanager
async def _core(settings: CoreSettings) -> AsyncIterator[CoreServices]:
    core = await start_core(settings, say)
    try:
        yield core
    finally:
        await core.close()
