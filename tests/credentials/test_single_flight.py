from __future__ import annotations

import asyncio

import pytest

from credentials.single_flight import SingleFlight


async def test_concurrent_callers_share_one_execution() -> None:
    flight: SingleFlight[str, int] = SingleFlight()
    release = asyncio.Event()
    calls = 0

    async def work() -> int:
        nonlocal calls
        calls += 1
        await release.wait()
        return 42

    waiters = [asyncio.ensure_future(flight.do("k", work)) for _ in range(10)]
    await asyncio.sleep(0)
    assert len(flight) == 1
    release.set()
    assert await asyncio.gather(*waiters) == [42] * 10
    assert calls == 1
    assert len(flight) == 0


async def test_failure_reaches_every_caller_and_is_not_cached() -> None:
    flight: SingleFlight[str, int] = SingleFlight()
    attempts = 0

    async def failing() -> int:
        nonlocal attempts
        attempts += 1
        raise ValueError("boom")

    with pytest.raises(ValueError, match="boom"):
        await flight.do("k", failing)

    async def working() -> int:
        return 7

    assert await flight.do("k", working) == 7
    assert attempts == 1


async def test_a_cancelled_caller_does_not_cancel_the_shared_work() -> None:
    flight: SingleFlight[str, str] = SingleFlight()
    release = asyncio.Event()

    async def work() -> str:
        await release.wait()
        return "done"

    first = asyncio.ensure_future(flight.do("k", work))
    second = asyncio.ensure_future(flight.do("k", work))
    await asyncio.sleep(0)
    first.cancel()
    release.set()
    assert await second == "done"
    with pytest.raises(asyncio.CancelledError):
        await first


async def test_different_keys_run_independently() -> None:
    flight: SingleFlight[str, str] = SingleFlight()

    async def value(name: str) -> str:
        return name

    results = await asyncio.gather(
        flight.do("a", lambda: value("a")), flight.do("b", lambda: value("b"))
    )
    assert list(results) == ["a", "b"]
