"""The proxy benchmark: direct upstream vs nginx reverse proxy vs authgate, in one run.

    python -m loadtest.bench [--duration 15] [--connections 32] [--quick] [--rounds R]
                             [--skip-authgate] [--authgate-cmd CMD] [--pin [CPU]]

One nginx instance serves two static JSON files (``/small``, ~200 B, and ``/big``,
64 KiB) on 127.0.0.1. wrk loads three paths to those same bytes:

1. ``direct``   wrk -> upstream nginx
2. ``nginx``    wrk -> a second nginx (reverse proxy adding ``Authorization``) -> upstream
3. ``authgate`` wrk -> ``authgate serve`` (``/proxy/...``, a seeded API_KEY connection)
                -> upstream

Absolute numbers drift between runs and machines; the ratios from one run are what to
compare (see loadtest/README.md).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shlex
import signal
import statistics
import sys
import tempfile
from collections.abc import Mapping, Sequence
from contextlib import ExitStack
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from pathlib import Path
from types import FrameType
from typing import Final

from loadtest.processes import BenchError, find_tool, group_cpu_seconds, tool_version
from loadtest.targets import (
    BODIES,
    Target,
    default_authgate_command,
    start_authgate,
    start_nginx_proxy,
    start_upstream,
    verify,
)
from loadtest.wrk import run_wrk

SIZES: Final = tuple(BODIES)  # small, big
PROXIES: Final = ("nginx", "authgate")
RATIOS: Final = (("authgate", "direct"), ("authgate", "nginx"), ("nginx", "direct"))
RESULTS_DIR: Final = Path(__file__).resolve().parent / "results"


@dataclass(frozen=True)
class Settings:
    """How long and how hard each path is loaded."""

    duration: int
    warmup: int
    connections: int
    rounds: int
    pin_cpu: int | None


@dataclass(frozen=True)
class Row:
    """One path and body size: the figures the report shows."""

    path: str
    size: str
    requests_per_sec: float
    p50_ms: float
    p99_ms: float
    p50_1conn_ms: float
    cpu_us_per_request: float | None
    errors: int


def measure(target: Target, size: str, settings: Settings) -> Row:
    url, headers, pin = target.url(size), target.headers, settings.pin_cpu
    run_wrk(url, settings.connections, settings.warmup, headers, pin)
    cpu_before = group_cpu_seconds(target.pgid)
    loaded = run_wrk(url, settings.connections, settings.duration, headers, pin)
    cpu_used = group_cpu_seconds(target.pgid) - cpu_before
    single = run_wrk(url, 1, settings.duration, headers, pin)
    cpu_us = cpu_used * 1e6 / loaded.requests if loaded.requests else None
    row = Row(
        target.name,
        size,
        loaded.requests_per_sec,
        loaded.p50_ms,
        loaded.p99_ms,
        single.p50_ms,
        cpu_us,
        loaded.errors + single.errors,
    )
    progress(f"  {size:5} {target.name:8} {row.requests_per_sec:>10,.0f} req/s")
    return row


def _median(values: Sequence[float | None]) -> float | None:
    present = [value for value in values if value is not None]
    return statistics.median(present) if present else None


def combine(rows: Sequence[Row]) -> Row:
    """Median of every figure over the rounds; errors add up."""
    first = rows[0]
    return Row(
        first.path,
        first.size,
        statistics.median(row.requests_per_sec for row in rows),
        statistics.median(row.p50_ms for row in rows),
        statistics.median(row.p99_ms for row in rows),
        statistics.median(row.p50_1conn_ms for row in rows),
        _median([row.cpu_us_per_request for row in rows]),
        sum(row.errors for row in rows),
    )


def measure_all(targets: Sequence[Target], settings: Settings) -> list[Row]:
    # Interleaved (size, then path, per round) so that drift hits every path alike.
    runs: dict[tuple[str, str], list[Row]] = {}
    for round_number in range(1, settings.rounds + 1):
        progress(f"round {round_number}/{settings.rounds}")
        for size in SIZES:
            for target in targets:
                runs.setdefault((size, target.name), []).append(measure(target, size, settings))
    return [combine(rows) for rows in runs.values()]


def ratios(rows: Sequence[Row]) -> dict[str, dict[str, float]]:
    """``{"small": {"authgate/direct": 0.07, ...}, ...}`` from req/s at N connections."""
    rps = {(row.size, row.path): row.requests_per_sec for row in rows}
    result: dict[str, dict[str, float]] = {}
    for size in SIZES:
        for top, bottom in RATIOS:
            if (size, top) in rps and rps.get((size, bottom)):
                result.setdefault(size, {})[f"{top}/{bottom}"] = (
                    rps[(size, top)] / rps[(size, bottom)]
                )
    return result


def added_latency_us(rows: Sequence[Row]) -> dict[str, dict[str, float]]:
    """p50 at one connection minus the direct path's: what a proxy adds to one request."""
    direct = {row.size: row.p50_1conn_ms for row in rows if row.path == "direct"}
    result: dict[str, dict[str, float]] = {}
    for row in rows:
        if row.path != "direct" and row.size in direct:
            added = (row.p50_1conn_ms - direct[row.size]) * 1000
            result.setdefault(row.size, {})[row.path] = added
    return result


def warnings(rows: Sequence[Row]) -> list[str]:
    return [
        f"warning: {row.size}/{row.path} had {row.errors} errors (status >= 400 or socket "
        "errors); its figures do not measure successful proxying"
        for row in rows
        if row.errors
    ]


# --- reporting ---------------------------------------------------------------------------


def progress(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def _cell(value: float | None, width: int, precision: int) -> str:
    return f"{'-':>{width}}" if value is None else f"{value:>{width}.{precision}f}"


def format_table(rows: Sequence[Row], connections: int) -> str:
    c = connections
    header = (
        f"{'size':6}{'path':10}{f'req/s c{c}':>12}{f'p50 c{c}':>11}{f'p99 c{c}':>11}"
        f"{'p50 c1':>11}{'CPU µs/req':>12}{'errors':>8}"
    )
    lines = [header, "-" * len(header)]
    for row in rows:
        lines.append(
            f"{row.size:6}{row.path:10}{row.requests_per_sec:>12,.0f}"
            f"{row.p50_ms:>9.3f}ms{row.p99_ms:>9.3f}ms{row.p50_1conn_ms:>9.3f}ms"
            f"{_cell(row.cpu_us_per_request, 12, 0)}{row.errors:>8}"
        )
    return "\n".join(lines)


def format_ratios(table: Mapping[str, Mapping[str, float]]) -> str:
    names = [f"{top}/{bottom}" for top, bottom in RATIOS]
    lines = [f"{'req/s ratio':12}" + "".join(f"{name:>18}" for name in names)]
    for size, values in table.items():
        lines.append(f"{size:12}" + "".join(_cell(values.get(name), 18, 3) for name in names))
    return "\n".join(lines)


def format_added(table: Mapping[str, Mapping[str, float]]) -> str:
    lines = [f"{'added µs':12}" + "".join(f"{path:>18}" for path in PROXIES)]
    for size, values in table.items():
        lines.append(f"{size:12}" + "".join(_cell(values.get(path), 18, 0) for path in PROXIES))
    return "\n".join(lines)


def format_report(rows: Sequence[Row], connections: int) -> str:
    parts = [
        format_table(rows, connections),
        format_ratios(ratios(rows)),
        format_added(added_latency_us(rows)),
        *warnings(rows),
    ]
    return "\n\n".join(parts)


def write_result(rows: Sequence[Row], settings: Settings, tools: Mapping[str, str]) -> Path:
    finished = datetime.now(UTC)
    document = {
        "finished_at": finished.isoformat(timespec="seconds"),
        "settings": asdict(settings),
        "machine": {"cpus": os.cpu_count(), "platform": platform.platform()},
        "tools": dict(tools),
        "rows": [asdict(row) for row in rows],
        "ratios": ratios(rows),
        "added_p50_1conn_us": added_latency_us(rows),
        "warnings": warnings(rows),
    }
    RESULTS_DIR.mkdir(exist_ok=True)
    path = RESULTS_DIR / f"bench-{finished:%Y%m%dT%H%M%SZ}.json"
    path.write_text(json.dumps(document, indent=2) + "\n")
    return path


# --- command line ------------------------------------------------------------------------


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m loadtest.bench",
        description="wrk benchmark: direct upstream vs nginx proxy vs authgate.",
    )
    parser.add_argument("--duration", type=int, default=15, help="seconds per wrk run")
    parser.add_argument("--connections", type=int, default=32, help="wrk connections")
    parser.add_argument("--quick", action="store_true", help="3 s runs, for smoke tests")
    parser.add_argument("--rounds", type=int, default=1, help="interleaved rounds (median)")
    parser.add_argument("--authgate-cmd", help="how to start authgate (shell words)")
    parser.add_argument("--skip-authgate", action="store_true", help="paths 1 and 2 only")
    parser.add_argument(
        "--pin",
        type=int,
        nargs="?",
        const=(os.cpu_count() or 1) - 1,
        metavar="CPU",
        help="pin wrk to CPU (default: the last one) with taskset",
    )
    args = parser.parse_args(argv)
    if args.duration < 1 or args.connections < 1 or args.rounds < 1:
        parser.error("--duration, --connections and --rounds must be at least 1")
    return args


def settings_from(args: argparse.Namespace) -> Settings:
    duration = 3 if args.quick else args.duration
    return Settings(duration, 1 if args.quick else 2, args.connections, args.rounds, args.pin)


def start_targets(stack: ExitStack, args: argparse.Namespace, workdir: Path) -> list[Target]:
    nginx = find_tool("nginx", "nginx-light")
    upstream = start_upstream(stack, nginx, workdir)
    targets = [upstream, start_nginx_proxy(stack, nginx, workdir, upstream)]
    if not args.skip_authgate:
        command = shlex.split(args.authgate_cmd or "") or default_authgate_command()
        targets.append(start_authgate(stack, command, workdir, upstream))
    for target in targets:
        verify(target)
    return targets


def run(args: argparse.Namespace) -> Path:
    settings = settings_from(args)
    tools = {
        "wrk": tool_version([find_tool("wrk", "wrk"), "--version"]),
        "nginx": tool_version([find_tool("nginx", "nginx-light"), "-v"]),
    }
    with tempfile.TemporaryDirectory(prefix="authgate-bench-") as tmp, ExitStack() as stack:
        workdir = Path(tmp)
        # nginx workers run as an unprivileged user when started by root: they must be
        # able to read the static files. authgate's data dir stays private (0700).
        workdir.chmod(0o755)
        targets = start_targets(stack, args, workdir)
        rows = measure_all(targets, settings)
    print(format_report(rows, settings.connections))
    return write_result(rows, settings, tools)


def _exit_on_sigterm(signum: int, _frame: FrameType | None) -> None:
    # SystemExit unwinds through the ExitStack, so children are stopped on kill too.
    raise SystemExit(128 + signum)


def install_signal_handlers() -> None:
    signal.signal(signal.SIGTERM, _exit_on_sigterm)
    # Explicitly, because a shell starts background jobs with SIGINT ignored, and Python
    # then installs no KeyboardInterrupt handler.
    signal.signal(signal.SIGINT, signal.default_int_handler)


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    try:
        path = run(args)
    except BenchError as error:
        progress(f"bench aborted: {error}")
        return 1
    except KeyboardInterrupt:
        progress("bench interrupted; child processes stopped")
        return 130
    except SystemExit:
        progress("bench terminated; child processes stopped")
        raise
    progress(f"\nresults written to {path}")
    return 0


if __name__ == "__main__":
    install_signal_handlers()
    sys.exit(main())
