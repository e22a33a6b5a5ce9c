"""Child processes for multi-process tests: `authgate proxy` workers and a private Redis.

Every child writes stdout and stderr to its own files, so a failing test can show what
each process said, and a chatty child can never block on a full pipe. Waiting for a child
to come up is a bounded poll of its output for the line it prints when ready; stopping
is terminate, a bounded wait, then kill.
"""

from __future__ import annotations

import asyncio
import os
import shutil
import socket
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Callable, Mapping, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path

import redis.asyncio as redis
from yarl import URL

from tests.log_scan import watch_child

READY_TIMEOUT = 30.0
STOP_GRACE = 10.0
POLL_INTERVAL = 0.05
TAIL_LINES = 40
# Variables of the surrounding shell that would silently reconfigure a child.
_INHERITED_CONFIG_PREFIXES = ("AUTHGATE_", "DATABASE_URL", "REDIS_URL")

LineFilter = Callable[[str], bool]


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port


@dataclass(frozen=True, slots=True)
class ChildProcess:
    name: str
    popen: subprocess.Popen[bytes]
    stdout_path: Path
    stderr_path: Path

    def output(self) -> str:
        return _read(self.stdout_path) + _read(self.stderr_path)

    def report(self, lines: int = TAIL_LINES, hide: LineFilter | None = None) -> str:
        """The last lines of each stream, labelled, for a failure message; lines `hide`
        accepts (routine noise) are left out."""
        parts = [f"--- {self.name} (pid {self.popen.pid}, exit {self.popen.poll()}) ---"]
        for label, path in (("stdout", self.stdout_path), ("stderr", self.stderr_path)):
            kept = [line for line in _read(path).splitlines() if hide is None or not hide(line)]
            tail = kept[-lines:]
            parts.append(f"[{label}, last {len(tail)} of {len(kept)} lines shown]")
            parts.extend(tail)
        return "\n".join(parts)


def _read(path: Path) -> str:
    try:
        return path.read_text(errors="replace")
    except OSError:
        return ""


def start_child(
    name: str, argv: Sequence[str], *, log_dir: Path, env: Mapping[str, str] | None = None
) -> ChildProcess:
    log_dir.mkdir(parents=True, exist_ok=True)
    stdout_path = log_dir / f"{name}.stdout"
    stderr_path = log_dir / f"{name}.stderr"
    with stdout_path.open("wb") as stdout, stderr_path.open("wb") as stderr:
        popen = subprocess.Popen(
            list(argv), stdout=stdout, stderr=stderr, stdin=subprocess.DEVNULL, env=env
        )
    # The suite-wide log scan reads what the child wrote, looking for its secrets too.
    watch_child(env, stdout_path, stderr_path)
    return ChildProcess(name, popen, stdout_path, stderr_path)


async def wait_for_output(child: ChildProcess, needle: str, limit: float = READY_TIMEOUT) -> None:
    """Return once the child has printed `needle`; fail with its output if it exits or
    does not print it within `limit` seconds."""
    deadline = time.monotonic() + limit
    while needle not in child.output():
        if child.popen.poll() is not None:
            raise AssertionError(
                f"{child.name} exited before printing {needle!r}\n{child.report()}"
            )
        if time.monotonic() > deadline:
            raise AssertionError(
                f"{child.name} did not print {needle!r} in {limit} s\n{child.report()}"
            )
        await asyncio.sleep(POLL_INTERVAL)


async def stop_child(child: ChildProcess, grace: float = STOP_GRACE) -> None:
    """Terminate, wait up to `grace` seconds, then kill; always reaps the process."""
    if child.popen.poll() is None:
        child.popen.terminate()
        try:
            await asyncio.to_thread(child.popen.wait, grace)
        except subprocess.TimeoutExpired:
            child.popen.kill()
    await asyncio.to_thread(child.popen.wait, grace)


# --- Redis -----------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class PrivateRedis:
    """A redis-server of this test alone, on its own port, persisting nothing."""

    child: ChildProcess
    port: int

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    @property
    def running(self) -> bool:
        return self.child.popen.poll() is None

    async def stop(self) -> None:
        await stop_child(self.child)

    async def wait_for_subscribers(
        self, channel: str, count: int, limit: float = READY_TIMEOUT
    ) -> None:
        """Until `count` clients are subscribed to `channel` (bounded poll)."""
        client = redis.from_url(self.url)
        try:
            deadline = time.monotonic() + limit
            while (found := await _subscribers(client, channel)) < count:
                if time.monotonic() > deadline:
                    raise AssertionError(
                        f"{found} of {count} processes subscribed to {channel!r} in {limit} s"
                    )
                await asyncio.sleep(POLL_INTERVAL)
        finally:
            await client.aclose()


async def _subscribers(client: redis.Redis, channel: str) -> int:
    counts = await client.pubsub_numsub(channel)
    return int(counts[0][1]) if counts else 0


@asynccontextmanager
async def private_redis(log_dir: Path) -> AsyncIterator[PrivateRedis]:
    executable = shutil.which("redis-server")
    assert executable is not None, "redis-server is not installed (apt-get install redis-server)"
    port = free_port()
    argv = [
        executable,
        "--port", str(port),
        "--bind", "127.0.0.1",
        "--save", "",
        "--appendonly", "no",
        "--dir", str(log_dir),
    ]  # fmt: skip
    child = start_child("redis", argv, log_dir=log_dir)
    try:
        await wait_for_output(child, "Ready to accept connections")
        yield PrivateRedis(child, port)
    finally:
        await stop_child(child)


# --- authgate proxy ------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class ProxyProcess:
    child: ChildProcess
    url: URL


def authgate_command() -> str:
    """The `authgate` console script of the virtualenv running the tests."""
    script = Path(sys.executable).parent / "authgate"
    assert script.is_file(), f"{script} is missing: install the project (make run)"
    return str(script)


def child_environment(overrides: Mapping[str, str]) -> dict[str, str]:
    inherited = {
        name: value
        for name, value in os.environ.items()
        if not name.startswith(_INHERITED_CONFIG_PREFIXES)
    }
    return {**inherited, **overrides}


@asynccontextmanager
async def proxy_processes(
    count: int, environ: Mapping[str, str], log_dir: Path
) -> AsyncIterator[list[ProxyProcess]]:
    """`count` `authgate proxy` processes sharing `environ`, each on its own port, all
    ready before this yields; all stopped on exit, at once (each may need its grace)."""
    started: list[ProxyProcess] = []
    children: list[ChildProcess] = []
    try:
        for index in range(count):
            # Port 0: each process binds a port the kernel picks and prints it, so no
            # other test can take the port between choosing and binding it.
            env = child_environment({**environ, "AUTHGATE_HOST": "127.0.0.1", "AUTHGATE_PORT": "0"})
            children.append(
                start_child(
                    f"proxy-{index}",
                    [authgate_command(), "proxy", "--workers", "1"],
                    log_dir=log_dir,
                    env=env,
                )
            )
        ready = "proxy ready on http://127.0.0.1:"
        await asyncio.gather(*(wait_for_output(child, ready) for child in children))
        for child in children:
            port = child.output().split(ready, 1)[1].split()[0]
            started.append(ProxyProcess(child, URL(f"http://127.0.0.1:{int(port)}")))
        yield started
    finally:
        await asyncio.gather(*(stop_child(child) for child in children))


def reports(children: Sequence[ChildProcess], hide: LineFilter | None = None) -> str:
    return "\n".join(child.report(hide=hide) for child in children)
