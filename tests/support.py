"""Helpers shared by test packages: throwaway databases on both store backends."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator, Callable
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from pathlib import Path

import asyncpg

POSTGRES_ADMIN_URL = "postgresql://postgres@127.0.0.1:5432/test"

DatabaseFactory = Callable[[Path], AbstractAsyncContextManager[str]]


@asynccontextmanager
async def sqlite_database(tmp_path: Path) -> AsyncIterator[str]:
    yield f"sqlite:///{tmp_path / 'authgate-test.db'}"


@asynccontextmanager
async def postgres_database(tmp_path: Path) -> AsyncIterator[str]:
    """A fresh schema in the local `test` database, dropped afterwards."""
    schema = f"t_{uuid.uuid4().hex[:16]}"
    admin = await asyncpg.connect(POSTGRES_ADMIN_URL)
    try:
        await admin.execute(f"CREATE SCHEMA {schema}")
        yield f"{POSTGRES_ADMIN_URL}?search_path={schema}"
    finally:
        await admin.execute(f"DROP SCHEMA IF EXISTS {schema} CASCADE")
        await admin.close()


def database_urls() -> list[DatabaseFactory]:
    return [sqlite_database, postgres_database]
