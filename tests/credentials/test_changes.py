"""Cache invalidation: the in-process hub, and the Redis bridge between processes."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import TimeoutError as RedisTimeoutError

from credentials.changes import ChangeHub, RedisChangeBridge
from credentials.store import ChangeEvent
from tests.credentials.private_redis import PrivateRedis, SilentServer

REDIS_URL = "redis://127.0.0.1:6379/0"
EVENT = ChangeEvent("connection", 7, "github", "user-1")


class Recorder:
    def __init__(self) -> None:
        self.events: list[ChangeEvent] = []
        self.resets = 0
        self.arrived = asyncio.Event()

    def on_change(self, event: ChangeEvent) -> None:
        self.events.append(event)
        self.arrived.set()

    def reset(self) -> None:
        self.resets += 1


def test_local_changes_reach_every_listener_and_the_outbox() -> None:
    hub = ChangeHub()
    first, second = Recorder(), Recorder()
    hub.subscribe(first.on_change, reset=first.reset)
    hub.subscribe(second.on_change, reset=second.reset)
    sent: list[ChangeEvent] = []
    hub.outbox = sent.append
    hub.local(EVENT)
    assert first.events == second.events == sent == [EVENT]


def test_remote_changes_are_not_sent_back_out() -> None:
    hub = ChangeHub()
    recorder = Recorder()
    hub.subscribe(recorder.on_change, reset=recorder.reset)
    sent: list[ChangeEvent] = []
    hub.outbox = sent.append
    hub.remote(EVENT)
    assert recorder.events == [EVENT]
    assert sent == []


def test_a_failing_listener_does_not_stop_the_others() -> None:
    hub = ChangeHub()

    def broken(event: ChangeEvent) -> None:
        raise RuntimeError("boom")

    def broken_reset() -> None:
        raise RuntimeError("boom")

    recorder = Recorder()
    hub.subscribe(broken, reset=broken_reset)
    hub.subscribe(recorder.on_change, reset=recorder.reset)
    hub.local(EVENT)
    hub.reset()
    assert recorder.events == [EVENT]
    assert recorder.resets == 1


@pytest.fixture
def channel() -> str:
    return f"authgate-test:{uuid.uuid4().hex}:changes"


async def _bridge(
    channel: str, url: str = REDIS_URL
) -> tuple[ChangeHub, Recorder, RedisChangeBridge]:
    hub = ChangeHub()
    recorder = Recorder()
    hub.subscribe(recorder.on_change, reset=recorder.reset)
    bridge = RedisChangeBridge(hub, url, channel)
    await bridge.start()
    return hub, recorder, bridge


@pytest.fixture
async def two_processes(
    channel: str,
) -> AsyncIterator[tuple[tuple[ChangeHub, Recorder, RedisChangeBridge], ...]]:
    first = await _bridge(channel)
    second = await _bridge(channel)
    for _, _, bridge in (first, second):
        await asyncio.wait_for(bridge.subscribed.wait(), timeout=10)
    yield first, second
    for _, _, bridge in (first, second):
        await bridge.close()


async def test_a_change_in_one_process_reaches_the_other_once(
    two_processes: tuple[tuple[ChangeHub, Recorder, RedisChangeBridge], ...],
) -> None:
    (hub_a, seen_a, _), (_, seen_b, _) = two_processes
    hub_a.local(EVENT)
    await asyncio.wait_for(seen_b.arrived.wait(), timeout=10)
    assert seen_b.events == [EVENT]
    # The origin applied it locally and ignores its own echo from the channel.
    assert seen_a.events == [EVENT]


async def test_subscribing_resets_the_caches(
    two_processes: tuple[tuple[ChangeHub, Recorder, RedisChangeBridge], ...],
) -> None:
    for _, recorder, _ in two_processes:
        assert recorder.resets == 1


async def test_an_unreachable_redis_never_fails_a_write(channel: str) -> None:
    hub, recorder, bridge = await _bridge(channel, url="redis://127.0.0.1:1/0")
    try:
        hub.local(EVENT)
        assert recorder.events == [EVENT]
        assert not bridge.subscribed.is_set()
        with pytest.raises(RedisConnectionError):
            await bridge.ping()
    finally:
        await bridge.close()


async def test_a_bridge_started_while_redis_is_down_connects_once_it_is_up(
    channel: str, tmp_path: Path
) -> None:
    server = PrivateRedis(tmp_path)  # not started yet: nothing listens on its port
    hub, recorder, bridge = await asyncio.wait_for(_bridge(channel, server.url), timeout=1.0)
    try:
        hub.local(EVENT)  # a write while Redis is down still applies here
        assert recorder.events == [EVENT]
        await server.start()
        await asyncio.wait_for(bridge.subscribed.wait(), timeout=15)
        other_hub, _, other = await _bridge(channel, server.url)
        try:
            await asyncio.wait_for(other.subscribed.wait(), timeout=10)
            recorder.arrived.clear()
            other_hub.local(EVENT)
            await asyncio.wait_for(recorder.arrived.wait(), timeout=10)
            assert recorder.events == [EVENT, EVENT]
        finally:
            await other.close()
    finally:
        await bridge.close()
        await server.stop()


async def test_a_hanging_redis_neither_blocks_start_nor_the_readiness_probe(
    channel: str,
) -> None:
    server = SilentServer()
    await server.start()
    try:
        _, _, bridge = await asyncio.wait_for(_bridge(channel, server.url), timeout=1.0)
        try:
            # redis-py's own default would wait 5 s per call; ours gives up within a second.
            with pytest.raises(RedisTimeoutError):
                await asyncio.wait_for(bridge.ping(), timeout=2.0)
            assert not bridge.subscribed.is_set()
        finally:
            await bridge.close()
    finally:
        await server.stop()
