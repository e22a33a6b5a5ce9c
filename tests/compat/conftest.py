"""The official @nangohq/node client, installed from the npm registry, driving a live authgate.

`nango_installed` (session) makes sure tests/compat/node_modules holds exactly what
package-lock.json pins: `npm ci` (or `npm install` when there is no lock yet), skipped when
a stamp left by the last install still matches package.json and the lock. A failed install
fails the tests; nothing here is skipped.

`nango` runs scenarios through driver.mjs: one node process per scenario, started with
`asyncio.create_subprocess_exec` because the server under test runs in this test's event
loop, and a blocking call would stall it.

The store is SQLite only: the client tests the wire contract, which does not depend on
the backend (tests/e2e covers both).
"""

from __future__ import annotations

import asyncio
import base64
import json
import shutil
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Final

import pytest

from tests.e2e.conftest import Authgate, Factory
from tests.e2e.conftest import make_authgate as make_authgate
from tests.npm_packages import PinnedPackage
from tests.support import sqlite_database

COMPAT_DIR: Final = Path(__file__).parent
DRIVER: Final = COMPAT_DIR / "driver.mjs"
CLIENT: Final = PinnedPackage(
    COMPAT_DIR, "@nangohq/node", "0.71.10", lock_file=COMPAT_DIR / ".cache" / "install.lock"
)
SCENARIO_TIMEOUT: Final = 30.0
PUBLIC_URL: Final = "https://gate.example.com"


class _Undefined:
    """JavaScript's `undefined` as a call argument (JSON has only null)."""

    def __repr__(self) -> str:
        return "UNDEFINED"


UNDEFINED: Final = _Undefined()


def call(method: str, *args: Any, secret_key: str | None = None) -> dict[str, Any]:
    """One client call of a scenario: `nango.<method>(*args)`, optionally with another key."""
    step: dict[str, Any] = {"method": method, "args": [_encode(arg) for arg in args]}
    if secret_key is not None:
        step["secretKey"] = secret_key
    return step


_UNDEFINED_JSON: Final = {"$undefined": True}


def _encode(value: Any) -> Any:
    if value is UNDEFINED:
        return _UNDEFINED_JSON
    if isinstance(value, bytes):
        return {"$bytes": base64.b64encode(value).decode()}
    if isinstance(value, dict):
        return {key: _encode(item) for key, item in value.items()}
    if isinstance(value, list | tuple):
        return [_encode(item) for item in value]
    return value


def _decode(value: Any) -> Any:
    if isinstance(value, dict):
        if set(value) == {"$bytes"} and isinstance(value["$bytes"], str):
            return base64.b64decode(value["$bytes"])
        return {key: _decode(item) for key, item in value.items()}
    if isinstance(value, list):
        return [_decode(item) for item in value]
    return value


@dataclass(frozen=True)
class Outcome:
    """What one client call did: resolved with `value`, or threw (HTTP `status` + `data`)."""

    call: dict[str, Any]
    ok: bool
    value: Any = None
    defined: bool = False
    status: int | None = None
    data: Any = None
    headers: dict[str, str] = field(default_factory=dict)
    error: str | None = None

    @classmethod
    def parse(cls, step: dict[str, Any], line: str) -> Outcome:
        raw = json.loads(line)
        return cls(
            call=step,
            ok=raw["ok"],
            value=_decode(raw.get("value")),
            defined="value" in raw,
            status=raw.get("status"),
            data=_decode(raw.get("data")),
            headers=raw.get("headers") or {},
            error=raw.get("error"),
        )

    @property
    def result(self) -> Any:
        """The resolved value; the call must have succeeded."""
        assert self.ok, f"{self.describe()} failed: {self.status} {self.data or self.error}"
        return self.value

    def response(self, status: int) -> Any:
        """A resolved AxiosResponse, reduced by the driver: asserts its status, returns it."""
        value = self.result
        assert value["status"] == status, f"{self.describe()}: {value}"
        return value

    def failure(self, status: int) -> Any:
        """The axios error's `response.data`; the call must have failed with `status`."""
        assert not self.ok, f"{self.describe()} succeeded, expected {status}: {self.value}"
        assert self.status == status, (
            f"{self.describe()}: expected {status}, got {self.status} {self.data or self.error}"
        )
        return self.data

    def describe(self) -> str:
        args = self.call["args"]
        shown = ("undefined" if arg == _UNDEFINED_JSON else json.dumps(arg)[:120] for arg in args)
        return f"{self.call['method']}({', '.join(shown)})"

    def summary(self) -> str:
        if self.ok:
            shown = json.dumps(self.value, default=repr) if self.defined else "undefined"
            return f"ok   {self.describe()} -> {shown[:300]}"
        if self.status is None:
            return f"FAIL {self.describe()} -> threw {self.error}"
        return f"FAIL {self.describe()} -> {self.status} {json.dumps(self.data)[:300]}"


@dataclass
class NodeClient:
    """`new Nango({secretKey, host})` pointed at the authgate under test."""

    authgate: Authgate

    async def run(self, *steps: dict[str, Any]) -> list[Outcome]:
        scenario = {
            "host": str(self.authgate.url),
            "secretKey": self.authgate.secret_key,
            "calls": list(steps),
        }
        process = await asyncio.create_subprocess_exec(
            "node",
            str(DRIVER),
            "-",
            cwd=COMPAT_DIR,
            stdin=asyncio.subprocess.PIPE,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
        )
        try:
            stdout, stderr = await asyncio.wait_for(
                process.communicate(json.dumps(scenario).encode()), SCENARIO_TIMEOUT
            )
        except TimeoutError:
            process.kill()
            await process.wait()
            raise AssertionError(
                f"the node driver did not finish in {SCENARIO_TIMEOUT} s"
            ) from None
        lines = stdout.decode().splitlines()
        assert process.returncode == 0, f"node driver exited {process.returncode}: {stderr!r}"
        assert len(lines) == len(steps), f"{len(steps)} calls, output: {stdout!r} {stderr!r}"
        outcomes = [Outcome.parse(step, line) for step, line in zip(steps, lines, strict=True)]
        # Captured by pytest and shown only when the test fails: every call's fate at once,
        # not just the first failing assertion.
        for outcome in outcomes:
            print(outcome.summary())
        return outcomes


# --- fixtures --------------------------------------------------------------------------------


@pytest.fixture(scope="session")
def nango_installed() -> None:
    if shutil.which("node") is None:
        pytest.fail("`node` is not on PATH: the @nangohq/node compat tests need Node 20+")
    CLIENT.install()


@pytest.fixture
async def database_url(tmp_path: Path) -> AsyncIterator[str]:
    async with sqlite_database(tmp_path) as url:
        yield url


@pytest.fixture
async def authgate(make_authgate: Factory) -> Authgate:
    return await make_authgate(AUTHGATE_PUBLIC_URL=PUBLIC_URL)


@pytest.fixture
def nango(nango_installed: None, authgate: Authgate) -> NodeClient:
    return NodeClient(authgate)
