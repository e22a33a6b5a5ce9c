from __future__ import annotations

from collections.abc import AsyncIterator

import pytest

from credentials.grants import TokenHttp
from tests.credentials.grants.fakes import TokenServer, ec_key, rsa_key


@pytest.fixture
async def server() -> AsyncIterator[TokenServer]:
    fake = TokenServer()
    await fake.start()
    try:
        yield fake
    finally:
        await fake.close()


@pytest.fixture
async def http() -> AsyncIterator[TokenHttp]:
    client = TokenHttp(allow_private=True, total_timeout=5.0)
    try:
        yield client
    finally:
        await client.close()


@pytest.fixture(scope="session")
def rsa_pair() -> tuple[str, str]:
    return rsa_key()


@pytest.fixture(scope="session")
def ec_pair() -> tuple[str, str]:
    return ec_key()
