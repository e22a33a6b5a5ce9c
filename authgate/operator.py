"""Operator commands: environments and their secret keys.

A new key is printed once on stdout and only its hash is stored, so it cannot be shown
again; lose it and create another.
"""

from __future__ import annotations

import re
import sys
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from authgate.bootstrap import start_core
from credentials.config import CoreSettings
from credentials.models import Environment
from credentials.runtime import CoreServices
from credentials.secret_keys import generate_secret_key, hash_secret_key
from credentials.store import AlreadyExists

ENVIRONMENT_NAME = re.compile(r"^[a-z0-9][a-z0-9_-]{0,63}$")


def _say(message: str) -> None:
    print(f"authgate: {message}", file=sys.stderr)


async def create_environment(settings: CoreSettings, name: str) -> int:
    if not ENVIRONMENT_NAME.match(name):
        _say("environment names are 1-64 lower-case letters, digits, '-' or '_'")
        return 1
    async with _core(settings) as core:
        try:
            environment = await core.store.create_environment(name)
        except AlreadyExists:
            _say(f"environment {name!r} already exists")
            return 1
        await _issue_key(core, environment)
        return 0


async def create_key(settings: CoreSettings, environment_name: str) -> int:
    async with _core(settings) as core:
        environment = await core.store.get_environment(environment_name)
        if environment is None:
            _say(f"no environment named {environment_name!r}")
            return 1
        await _issue_key(core, environment)
        return 0


async def _issue_key(core: CoreServices, environment: Environment) -> None:
    key = generate_secret_key()
    await core.store.add_secret_key(environment.id, hash_secret_key(key), "cli")
    print(key)


@asynccontextmanager
async def _core(settings: CoreSettings) -> AsyncIterator[CoreServices]:
    core = await start_core(settings, _say)
    try:
        yield core
    finally:
        await core.close()
