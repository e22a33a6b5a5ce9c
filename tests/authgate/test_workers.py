"""`authgate proxy --workers N`: N processes on one port, restarted when one dies,
stopped together by one SIGTERM."""

from __future__ import annotations

import asyncio
import os
import signal
import time
from collections.abc import Callable
from pathlib import Path

import aiohttp

from tests.authgate.test_cli import base_env
from tests.e2e.processes import (
    ChildProcess,
    authgate_command,
    child_environment,
    free_port,
    start_child,
    stop_child,
)

READY_TIMEOUT = 60.0
POLL_SECONDS = 0.05


async def test_workers_share_the_port_and_a_dead_one_is_replaced(tmp_path: Path) -> None:
    port = free_port()
    env = child_environment(
        {**base_env(tmp_path), "AUTHGATE_HOST": "127.0.0.1", "AUTHGATE_PORT": str(port)}
    )
    supervisor = start_child(
        "supervisor", [authgate_command(), "proxy", "--workers", "2"], log_dir=tmp_path, env=env
    )
    try:
        ready = f"proxy ready on http://127.0.0.1:{port}"
        await _until(lambda: supervisor.output().count(ready) >= 2, supervisor)
        workers = _children(supervisor.popen.pid)
        assert len(workers) == 2, supervisor.report()

        async with aiohttp.ClientSession() as session:
            for _ in range(10):
                async with session.get(f"http://127.0.0.1:{port}/health") as response:
                    assert response.status == 200

        os.kill(workers[0], signal.SIGKILL)
        await _until(lambda: supervisor.output().count(ready) >= 3, supervisor)
        replaced = _children(supervisor.popen.pid)
        assert len(replaced) == 2
        assert workers[0] not in replaced
        assert workers[1] in replaced
        assert f"worker {workers[0]} exited" in supervisor.output()

        supervisor.popen.send_signal(signal.SIGTERM)
        assert await asyncio.to_thread(supervisor.popen.wait, 30) == 0, supervisor.report()
        assert not any(_alive(pid) for pid in replaced)
    finally:
        await stop_child(supervisor)


def _alive(pid: int) -> bool:
    return Path(f"/proc/{pid}").exists()


def _children(pid: int) -> list[int]:
    text = Path(f"/proc/{pid}/task/{pid}/children").read_text()
    return sorted(int(child) for child in text.split())


async def _until(condition: Callable[[], bool], child: ChildProcess) -> None:
    deadline = time.monotonic() + READY_TIMEOUT
    while not condition():
        assert child.popen.poll() is None, child.report()
        assert time.monotonic() < deadline, child.report()
        await asyncio.sleep(POLL_SECONDS)  # a bounded poll of the child's output
