"""The whole client suite again, on uvloop: production's event loop.

uvloop's transports differ from asyncio's where this client leans on them (flow
control, writelines, TLS, is_reading), so every client test runs on both loops. The
default run covers asyncio; this test runs the same modules in a child pytest with
this module loaded as a plugin, whose hook makes pytest-asyncio use uvloop.
"""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Mapping
from pathlib import Path

import pytest
import uvloop

HERE = Path(__file__).resolve().parent
ROOT = HERE.parents[2]
MODULES = [
    "test_client.py",
    "test_client_decode.py",
    "test_client_failures.py",
    "test_client_flow.py",
    "test_client_pool.py",
]


def pytest_asyncio_loop_factories(
    config: pytest.Config, item: pytest.Item
) -> Mapping[str, object] | None:
    """Plugin hook (only when loaded with -p): every async test runs on uvloop."""
    return {"uvloop": uvloop.new_event_loop}


def test_the_client_suite_passes_on_uvloop() -> None:
    command = [
        sys.executable,
        "-m",
        "pytest",
        "-q",
        "-p",
        "no:cacheprovider",
        "-p",
        "tests.proxy.http.test_client_uvloop",
        *[str(HERE / module) for module in MODULES],
    ]
    done = subprocess.run(command, cwd=ROOT, capture_output=True, text=True, timeout=600)
    summary = done.stdout.strip().splitlines()[-1] if done.stdout.strip() else ""
    assert done.returncode == 0, done.stdout[-6000:] + done.stderr[-2000:]
    assert " passed" in summary
    assert "skipped" not in summary
