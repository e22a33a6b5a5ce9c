"""The server tests again on uvloop, the loop production runs on (the suite's default loop
is asyncio's own). Every argument-free async test of the server modules is replayed."""

from __future__ import annotations

import inspect
from collections.abc import Callable, Coroutine
from typing import Any

import pytest
import uvloop

from tests.proxy.http import (
    test_server,
    test_server_body,
    test_server_errors,
    test_server_lifecycle,
)

Scenario = Callable[[], Coroutine[Any, Any, None]]


def scenarios() -> list[tuple[str, Scenario]]:
    found = []
    for module in (test_server, test_server_body, test_server_errors, test_server_lifecycle):
        for name, function in vars(module).items():
            if (
                name.startswith("test_")
                and inspect.iscoroutinefunction(function)
                and not inspect.signature(function).parameters
            ):
                found.append((f"{module.__name__.rsplit('.', 1)[1]}.{name}", function))
    return found


SCENARIOS = scenarios()


def test_there_is_something_to_replay() -> None:
    assert len(SCENARIOS) > 30


@pytest.mark.parametrize("scenario", [s for _, s in SCENARIOS], ids=[n for n, _ in SCENARIOS])
def test_on_uvloop(scenario: Scenario) -> None:
    uvloop.run(scenario())
