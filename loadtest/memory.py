"""Resident memory of one ``authgate proxy`` process while it streams, in one bounded run.

    python -m loadtest.memory [--authgate-cmd CMD] [--stream-mib 1024] [--upload-mib 1024]
                              [--slow-streams 1000] [--slow-chunks 30] [--slow-interval-ms 100]
                              [--slow-chunk-size 1024]

Starts the fake provider, ``authgate management`` and ``authgate proxy`` on loopback (one
SQLite store, the load-test catalogue of loadtest/seed.py; ``--authgate-cmd`` is the
command without its role, e.g. ``"env PYTHONPATH=/path/to/checkout python -m authgate"``),
seeds one API-key connection, then measures the proxy's RSS (VmRSS of its process and
any children it forks, sampled at 20 Hz in a thread, peak kept) in each phase:

1. idle, after start and one warm-up request;
2. one streamed download through authgate, read and discarded by the client;
3. one upload streamed from a generator, chunked and then with Content-Length;
4. many concurrent slow downloads (the provider trickles a small chunk per interval),
   all open at once.

Each phase checks its byte counts: a fast wrong answer is not a low memory figure.
Prints a table and writes ``loadtest/results/memory-<UTC time>.json``; exits 1 when a
phase misses its target or its bytes. Every phase is bounded (60 s); the default run
takes 10-20 s. Raises the open-file limit for the slow streams (children inherit it).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import resource
import signal
import sys
import tempfile
import threading
import time
from collections.abc import AsyncIterator, Iterable, Iterator, Sequence
from contextlib import ExitStack, contextmanager
from dataclasses import asdict, dataclass, replace
from datetime import UTC, datetime
from pathlib import Path
from types import FrameType
from typing import Final

import aiohttp

from loadtest.processes import BenchError
from loadtest.seed import (
    API_INTEGRATION,
    Authgate,
    ManagementClient,
    SeedPlan,
    api_connection_ids,
    authgate_prefix,
    seed,
    start_authgate,
    start_fake_provider,
)

MIB: Final = 1024 * 1024
KIB: Final = 1024
SAMPLE_INTERVAL: Final = 0.05  # 20 Hz
IDLE_WINDOW: Final = 0.5
UPLOAD_CHUNK: Final = b"u" * (64 * KIB)
IDLE_TARGET_MIB: Final = 80.0
STREAM_TARGET_MIB: Final = 50.0
PHASE_TIMEOUT: Final = 60.0
RESULTS_DIR: Final = Path(__file__).resolve().parent / "results"
SECRET_NAME_PARTS: Final = ("KEY", "SECRET", "TOKEN", "PASSWORD")
# Client sockets, upstream sockets and the fake provider's, plus headroom.
FDS_PER_SLOW_STREAM: Final = 4
FD_HEADROOM: Final = 512


# --- reading memory ----------------------------------------------------------------------


def parse_vm_rss(status_text: str) -> int:
    """Bytes of ``VmRSS`` in the text of ``/proc/<pid>/status`` (the kernel writes kB)."""
    for line in status_text.splitlines():
        if line.startswith("VmRSS:"):
            fields = line.split()
            if len(fields) == 3 and fields[2] == "kB" and fields[1].isdigit():
                return int(fields[1]) * KIB
            raise ValueError(f"unexpected VmRSS line: {line!r}")
    raise ValueError("no VmRSS line (a kernel thread or a zombie)")


def parent_pid(stat_text: str) -> int:
    """The ppid field of ``/proc/<pid>/stat``; the name before it may hold spaces and ')'."""
    return int(stat_text[stat_text.rindex(")") + 2 :].split()[1])


def process_tree(root: int) -> list[int]:
    """``root`` and every live descendant (workers a supervisor forked)."""
    children: dict[int, list[int]] = {}
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            children.setdefault(parent_pid(stat.read_text()), []).append(int(stat.parent.name))
        except (OSError, ValueError, IndexError):
            continue  # ended while we looked
    tree, pending = [], [root]
    while pending:
        pid = pending.pop()
        tree.append(pid)
        pending.extend(children.get(pid, ()))
    return tree


def tree_rss(pids: Iterable[int]) -> int:
    total = 0
    for pid in pids:
        try:
            total += parse_vm_rss(Path(f"/proc/{pid}/status").read_text())
        except (OSError, ValueError):
            continue  # a worker that exited is using no memory
    return total


class PeakSampler:
    """Samples the RSS of a set of processes in a thread until stopped; keeps the peak.

    A thread rather than a task: the event loop is busy moving bytes during a phase, and
    a late sample could miss a short peak.
    """

    __slots__ = ("_pids", "_stop", "_thread", "peak", "samples")

    def __init__(self, pids: Sequence[int]) -> None:
        self._pids = tuple(pids)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="rss-sampler", daemon=True)
        self.peak = 0
        self.samples = 0

    def _sample(self) -> None:
        self.peak = max(self.peak, tree_rss(self._pids))
        self.samples += 1

    def _run(self) -> None:
        self._sample()
        while not self._stop.wait(SAMPLE_INTERVAL):
            self._sample()

    def __enter__(self) -> PeakSampler:
        self._thread.start()
        return self

    def __exit__(self, *_: object) -> None:
        self._stop.set()
        self._thread.join()
        self._sample()  # the state at the end counts too


# --- results -----------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Phase:
    """One measured phase: its peak, the growth over idle, and whether it met its target."""

    name: str
    peak_mib: float
    delta_mib: float | None  # None for the idle phase itself
    per_stream_kib: float | None
    target: str
    correct: bool  # every byte count as expected
    passed: bool  # correct, and within the target
    detail: str


def mib(value: int) -> float:
    return value / MIB


def idle_phase(idle: int) -> Phase:
    peak = mib(idle)
    target = f"≤ {IDLE_TARGET_MIB:.0f} MiB"
    return Phase("idle", peak, None, None, target, True, peak <= IDLE_TARGET_MIB, "")


def transfer_phase(name: str, peak: int, idle: int, correct: bool, detail: str) -> Phase:
    delta = mib(peak - idle)
    passed = correct and delta < STREAM_TARGET_MIB
    target = f"Δ < {STREAM_TARGET_MIB:.0f} MiB"
    return Phase(name, mib(peak), delta, None, target, correct, passed, detail)


def streams_phase(name: str, peak: int, idle: int, in_flight: int, correct: bool) -> Phase:
    delta = peak - idle
    per_stream = delta / KIB / in_flight if in_flight else None
    detail = f"{in_flight} in flight at once"
    target = "all complete"
    return Phase(name, mib(peak), mib(delta), per_stream, target, correct, correct, detail)


def _cell(value: float | None, width: int, precision: int) -> str:
    return f"{'-':>{width}}" if value is None else f"{value:>{width}.{precision}f}"


def format_table(phases: Sequence[Phase]) -> str:
    header = (
        f"{'phase':34}{'peak RSS MiB':>13}{'delta MiB':>11}{'per-stream KiB':>16}"
        f"  {'target':16}{'result':6}"
    )
    lines = [header, "-" * len(header)]
    for phase in phases:
        lines.append(
            f"{phase.name:34}{phase.peak_mib:>13.1f}{_cell(phase.delta_mib, 11, 1)}"
            f"{_cell(phase.per_stream_kib, 16, 1)}  {phase.target:16}"
            f"{'pass' if phase.passed else 'FAIL':6}"
        )
    notes = [f"  {phase.name}: {phase.detail}" for phase in phases if phase.detail]
    return "\n".join([*lines, *notes])


# --- the client side of each phase -------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Settings:
    stream_bytes: int
    upload_bytes: int
    slow_streams: int
    slow_chunks: int
    slow_interval_ms: int
    slow_chunk_size: int

    @property
    def slow_stream_bytes(self) -> int:
        return self.slow_chunks * self.slow_chunk_size


async def download(session: aiohttp.ClientSession, url: str, headers: dict[str, str]) -> int:
    """Bytes received from a 200 answer, read and discarded."""
    received = 0
    async with session.get(url, headers=headers) as response:
        if response.status != 200:
            raise BenchError(f"GET {url} answered {response.status}: {await response.read()!r}")
        async for data in response.content.iter_any():
            received += len(data)
    return received


async def generated_body(size: int) -> AsyncIterator[bytes]:
    """``size`` bytes in 64 KiB pieces of one constant, so the client holds nothing."""
    whole, rest = divmod(size, len(UPLOAD_CHUNK))
    for _ in range(whole):
        yield UPLOAD_CHUNK
    if rest:
        yield UPLOAD_CHUNK[:rest]


async def upload(
    session: aiohttp.ClientSession, url: str, headers: dict[str, str], size: int, *, length: bool
) -> tuple[int, bool]:
    """What the provider counted, and whether it arrived chunked."""
    sent = {**headers, "Content-Type": "application/octet-stream"}
    if length:
        sent["Content-Length"] = str(size)
    async with session.post(url, headers=sent, data=generated_body(size)) as response:
        body = await response.read()
        if response.status != 200:
            raise BenchError(f"POST {url} answered {response.status}: {body[:300]!r}")
    answer = json.loads(body)
    return int(answer["bytes"]), bool(answer["chunked"])


class InFlight:
    """How many slow streams have their headers and are still reading; the maximum."""

    __slots__ = ("maximum", "now")

    def __init__(self) -> None:
        self.now = 0
        self.maximum = 0

    def opened(self) -> None:
        self.now += 1
        self.maximum = max(self.maximum, self.now)

    def closed(self) -> None:
        self.now -= 1


async def slow_stream(
    session: aiohttp.ClientSession, url: str, headers: dict[str, str], counter: InFlight
) -> int:
    received = 0
    async with session.get(url, headers=headers) as response:
        if response.status != 200:
            raise BenchError(f"slow stream answered {response.status}")
        counter.opened()
        try:
            async for data in response.content.iter_any():
                received += len(data)
        finally:
            counter.closed()
    return received


async def slow_streams(
    session: aiohttp.ClientSession, url: str, headers: dict[str, str], count: int
) -> tuple[list[int | BaseException], int]:
    """Every stream's byte count (or its error), and the most that were open at once."""
    counter = InFlight()
    results = await asyncio.gather(
        *(slow_stream(session, url, headers, counter) for _ in range(count)),
        return_exceptions=True,
    )
    return list(results), counter.maximum


# --- the run -----------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Probe:
    """How the phases reach the proxy and whose memory they watch."""

    session: aiohttp.ClientSession
    base: str
    headers: dict[str, str]
    pids: tuple[int, ...]

    def sampler(self) -> PeakSampler:
        return PeakSampler(self.pids)


def proxy_headers(authgate: Authgate) -> dict[str, str]:
    return {
        "Authorization": f"Bearer {authgate.secret_key}",
        "Connection-Id": api_connection_ids(1)[0],
        "Provider-Config-Key": API_INTEGRATION,
    }


def client_session() -> aiohttp.ClientSession:
    # limit=0: the slow-stream phase needs every connection open at once.
    connector = aiohttp.TCPConnector(limit=0, force_close=True)
    timeout = aiohttp.ClientTimeout(total=None, sock_connect=30, sock_read=30)
    return aiohttp.ClientSession(connector=connector, timeout=timeout, auto_decompress=False)


async def run_phases(authgate: Authgate, settings: Settings) -> list[Phase]:
    pids = tuple(process_tree(authgate.proxy_pid))
    async with client_session() as session:
        probe = Probe(session, authgate.proxy_url, proxy_headers(authgate), pids)
        idle = await measure_idle(probe)
        return [
            idle_phase(idle),
            await download_phase(probe, idle, settings.stream_bytes),
            await upload_phase(probe, idle, settings.upload_bytes, length=False),
            await upload_phase(probe, idle, settings.upload_bytes, length=True),
            await slow_phase(probe, idle, settings),
        ]


async def measure_idle(probe: Probe) -> int:
    if await download(probe.session, f"{probe.base}/proxy/small", probe.headers) <= 0:
        raise BenchError("the warm-up request returned no body")
    with probe.sampler() as sampler:
        await asyncio.sleep(IDLE_WINDOW)
    return sampler.peak


async def download_phase(probe: Probe, idle: int, size: int) -> Phase:
    name = f"download {mib(size):.0f} MiB"
    progress(name)
    started = time.monotonic()
    with probe.sampler() as sampler:
        async with asyncio.timeout(PHASE_TIMEOUT):
            url = f"{probe.base}/proxy/stream/{size}"
            received = await download(probe.session, url, probe.headers)
    seconds = time.monotonic() - started
    detail = f"received {received} of {size} bytes in {seconds:.1f} s"
    return transfer_phase(name, sampler.peak, idle, received == size, detail)


async def upload_phase(probe: Probe, idle: int, size: int, *, length: bool) -> Phase:
    name = f"upload {mib(size):.0f} MiB ({'Content-Length' if length else 'chunked'})"
    progress(name)
    started = time.monotonic()
    with probe.sampler() as sampler:
        async with asyncio.timeout(PHASE_TIMEOUT):
            url = f"{probe.base}/proxy/upload"
            counted, chunked = await upload(probe.session, url, probe.headers, size, length=length)
    seconds = time.monotonic() - started
    arrived = "chunked" if chunked else "with a length"
    detail = f"provider counted {counted} of {size} bytes ({arrived}) in {seconds:.1f} s"
    return transfer_phase(name, sampler.peak, idle, counted == size, detail)


async def slow_phase(probe: Probe, idle: int, settings: Settings) -> Phase:
    count, expected = settings.slow_streams, settings.slow_stream_bytes
    name = f"{count} slow streams"
    progress(f"{name} of {expected} bytes")
    query = f"size={settings.slow_chunk_size}&interval_ms={settings.slow_interval_ms}"
    url = f"{probe.base}/proxy/trickle/{settings.slow_chunks}?{query}"
    with probe.sampler() as sampler:
        async with asyncio.timeout(PHASE_TIMEOUT):
            results, in_flight = await slow_streams(probe.session, url, probe.headers, count)
    complete = sum(1 for result in results if result == expected)
    phase = streams_phase(name, sampler.peak, idle, in_flight, complete == count)
    detail = f"{phase.detail}, {complete}/{count} complete{describe_failures(results, expected)}"
    return replace(phase, detail=detail)


def describe_failures(results: Sequence[int | BaseException], expected: int) -> str:
    wrong = [result for result in results if result != expected]
    return f"; first problem: {wrong[0]!r}" if wrong else ""


def raise_fd_limit(needed: int) -> int:
    """Raise the soft open-file limit (inherited by the children) toward ``needed``."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    wanted = needed if hard == resource.RLIM_INFINITY else min(needed, hard)
    if soft != resource.RLIM_INFINITY and soft < wanted:
        resource.setrlimit(resource.RLIMIT_NOFILE, (wanted, hard))
        return wanted
    return soft


@contextmanager
def deployment(command: Sequence[str]) -> Iterator[Authgate]:
    """The fake provider, ``authgate management`` and ``authgate proxy``, one connection
    seeded; everything stopped on exit."""
    with tempfile.TemporaryDirectory(prefix="authgate-memory-") as tmp, ExitStack() as stack:
        workdir = Path(tmp)
        provider_port = start_fake_provider(stack, workdir)
        authgate = start_authgate(stack, command, workdir, split=True)
        client = ManagementClient(authgate.management_url, authgate.secret_key)
        seed(client, SeedPlan(provider_port, api_connections=1, oauth_connections=0))
        yield authgate


def measure(command: Sequence[str], settings: Settings) -> list[Phase]:
    limit = raise_fd_limit(settings.slow_streams * FDS_PER_SLOW_STREAM + FD_HEADROOM)
    if limit < settings.slow_streams * 2 + FD_HEADROOM:
        raise BenchError(f"the open-file limit ({limit}) is too low for the slow streams")
    with deployment(command) as authgate:
        return asyncio.run(run_phases(authgate, settings))


def redacted(command: Sequence[str]) -> list[str]:
    """The command for the record, minus the value of any ``NAME=value`` word whose name
    looks like a secret (an ``env AUTHGATE_SECRET_KEY=...`` prefix)."""
    words = []
    for word in command:
        name, equals, _ = word.partition("=")
        secret = any(part in name.upper() for part in SECRET_NAME_PARTS)
        words.append(f"{name}=<redacted>" if equals and secret else word)
    return words


def progress(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def write_result(
    phases: Sequence[Phase],
    settings: Settings,
    command: Sequence[str],
    directory: Path = RESULTS_DIR,
) -> Path:
    finished = datetime.now(UTC)
    document = {
        "finished_at": finished.isoformat(timespec="seconds"),
        "authgate_command": redacted(command),
        "settings": asdict(settings),
        "machine": {"cpus": os.cpu_count(), "platform": platform.platform()},
        "phases": [asdict(phase) for phase in phases],
        "passed": all(phase.passed for phase in phases),
    }
    directory.mkdir(exist_ok=True)
    path = directory / f"memory-{finished:%Y%m%dT%H%M%SZ}.json"
    path.write_text(json.dumps(document, indent=2, ensure_ascii=False) + "\n")
    return path


# --- command line ------------------------------------------------------------------------


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m loadtest.memory",
        description="RSS of one authgate proxy process: idle, big streams, many slow streams.",
    )
    parser.add_argument(
        "--authgate-cmd",
        help="how to start authgate, without the role (shell words; `proxy` and "
        "`management` are appended); default: this Python with -m authgate",
    )
    parser.add_argument("--stream-mib", type=int, default=1024, help="download size (MiB)")
    parser.add_argument("--upload-mib", type=int, default=1024, help="upload size (MiB)")
    parser.add_argument("--slow-streams", type=int, default=1000, help="concurrent slow streams")
    parser.add_argument("--slow-chunks", type=int, default=30, help="chunks per slow stream")
    parser.add_argument("--slow-interval-ms", type=int, default=100, help="ms between chunks")
    parser.add_argument("--slow-chunk-size", type=int, default=1024, help="bytes per chunk")
    args = parser.parse_args(argv)
    for name in ("stream_mib", "upload_mib", "slow_streams", "slow_chunks", "slow_chunk_size"):
        if getattr(args, name) < 1:
            parser.error(f"--{name.replace('_', '-')} must be at least 1")
    return args


def settings_from(args: argparse.Namespace) -> Settings:
    return Settings(
        args.stream_mib * MIB,
        args.upload_mib * MIB,
        args.slow_streams,
        args.slow_chunks,
        args.slow_interval_ms,
        args.slow_chunk_size,
    )


def _exit_on_sigterm(signum: int, _frame: FrameType | None) -> None:
    # SystemExit unwinds through the deployment's ExitStack, so children are stopped too.
    raise SystemExit(128 + signum)


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    command = authgate_prefix(args.authgate_cmd)
    settings = settings_from(args)
    try:
        phases = measure(command, settings)
    except (BenchError, TimeoutError) as error:
        progress(f"memory run aborted: {error or 'a phase timed out'}")
        return 1
    print(format_table(phases))
    progress(f"\nresults written to {write_result(phases, settings, command)}")
    return 0 if all(phase.passed for phase in phases) else 1


if __name__ == "__main__":
    signal.signal(signal.SIGTERM, _exit_on_sigterm)
    sys.exit(main())
