"""Running the `authgate` operator command against a running test server's database."""

from __future__ import annotations

import asyncio
import os
import sys
from dataclasses import dataclass

CLI_TIMEOUT = 60.0


@dataclass(frozen=True, slots=True)
class CliResult:
    returncode: int
    stdout: str
    stderr: str


async def run_cli(
    environ: dict[str, str], *args: str, stdin: str | None = None, limit: float = CLI_TIMEOUT
) -> CliResult:
    """`python -m authgate ARGS` in a separate process, configured like the server
    (same database, encryption key and data directory). A command that does not finish
    within `limit` seconds is killed and fails the test."""
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "authgate",
        *args,
        env={**os.environ, **environ},
        stdin=asyncio.subprocess.PIPE,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    data = None if stdin is None else stdin.encode()
    try:
        stdout, stderr = await asyncio.wait_for(process.communicate(data), limit)
    except TimeoutError:
        process.kill()
        await process.wait()
        raise AssertionError(f"`authgate {' '.join(args)}` did not exit in {limit} s") from None
    assert process.returncode is not None
    return CliResult(process.returncode, stdout.decode(), stderr.decode())
