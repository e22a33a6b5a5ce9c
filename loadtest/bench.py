"""The proxy benchmark: authgate next to direct, nginx and a minimal aiohttp proxy, in one run.

    python -m loadtest.bench [--duration 10] [--connections 32] [--quick] [--rounds R]
                             [--workers 1[,2...]] [--pin [CPU]] [--skip-authgate]
                             [--skip-yardstick] [--authgate-cmd CMD] [--management-cmd CMD]

One nginx instance on 127.0.0.1 is the upstream: ``GET /small`` (~200 B of JSON),
``GET /big`` (64 KiB) and ``POST /upload`` (a 64 KiB JSON body in, a small JSON answer
out). wrk loads every path to it with each of those three workloads:

1. ``direct``       wrk -> upstream nginx
2. ``nginx``        wrk -> a second nginx (reverse proxy adding ``Authorization``) -> upstream
3. ``yardstick``    wrk -> loadtest/yardstick.py (aiohttp + uvloop, one process) -> upstream
4. ``authgate``     wrk -> ``authgate proxy`` (``/proxy/...``, a connection seeded through
                    ``authgate management`` on the same SQLite file) -> upstream;
                    ``authgate-wN`` for ``authgate proxy --workers N``

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

from loadtest.processes import (
    BenchError,
    find_tool,
    group_cpu_seconds,
    group_rss_bytes,
    tail,
    tool_version,
)
from loadtest.targets import (
    AUTHGATE,
    JSON,
    KINDS,
    WORKLOADS,
    Target,
    default_proxy_command,
    management_command,
    start_authgate_proxy,
    start_management,
    start_nginx_proxy,
    start_upstream,
    start_yardstick,
    verify,
)
from loadtest.wrk import request_script, run_wrk

BASELINES: Final = ("direct", "nginx", "yardstick")
# Ratios between the baselines themselves, when both are measured.
BASELINE_RATIOS: Final = (("nginx", "direct"), ("yardstick", "nginx"))
RESULTS_DIR: Final = Path(__file__).resolve().parent / "results"
MIB: Final = 1024 * 1024


@dataclass(frozen=True)
class Settings:
    """How long and how hard each path is loaded."""

    duration: int  # the loaded run
    warmup: int
    single_duration: int  # the one-connection run
    connections: int
    rounds: int
    pin_cpu: int | None


@dataclass(frozen=True)
class Row:
    """One path and workload: the figures the report shows."""

    path: str
    kind: str
    requests_per_sec: float
    p50_ms: float
    p99_ms: float
    p50_1conn_ms: float
    cpu_us_per_request: float | None
    errors: int
    rss_idle_mib: float  # the front process group before this row's warm-up
    rss_peak_mib: float  # ... right after its loaded run


def measure(target: Target, kind: str, settings: Settings, script: Path | None) -> Row:
    try:
        return _measure(target, kind, settings, script)
    except BenchError as error:
        # Most often the server under test has died: its own words say why.
        raise BenchError(
            f"{target.name}/{kind}: {error}\n{target.name} log:\n{tail(target.log)}"
        ) from None


def _measure(target: Target, kind: str, settings: Settings, script: Path | None) -> Row:
    url, headers, pin = target.url(kind), target.headers, settings.pin_cpu
    rss_idle = group_rss_bytes(target.pgid)
    run_wrk(url, settings.connections, settings.warmup, headers, pin, script)
    cpu_before = group_cpu_seconds(target.pgid)
    loaded = run_wrk(url, settings.connections, settings.duration, headers, pin, script)
    cpu_used = group_cpu_seconds(target.pgid) - cpu_before
    rss_peak = group_rss_bytes(target.pgid)
    single = run_wrk(url, 1, settings.single_duration, headers, pin, script)
    cpu_us = cpu_used * 1e6 / loaded.requests if loaded.requests else None
    row = Row(
        target.name,
        kind,
        loaded.requests_per_sec,
        loaded.p50_ms,
        loaded.p99_ms,
        single.p50_ms,
        cpu_us,
        loaded.errors + single.errors,
        rss_idle / MIB,
        rss_peak / MIB,
    )
    progress(
        f"  {kind:6} {target.name:12} {row.requests_per_sec:>10,.0f} req/s "
        f"{row.rss_peak_mib:>7.1f} MiB"
    )
    return row


def _median(values: Sequence[float | None]) -> float | None:
    present = [value for value in values if value is not None]
    return statistics.median(present) if present else None


def combine(rows: Sequence[Row]) -> Row:
    """Median of every figure over the rounds; errors add up."""
    first = rows[0]
    return Row(
        first.path,
        first.kind,
        statistics.median(row.requests_per_sec for row in rows),
        statistics.median(row.p50_ms for row in rows),
        statistics.median(row.p99_ms for row in rows),
        statistics.median(row.p50_1conn_ms for row in rows),
        _median([row.cpu_us_per_request for row in rows]),
        sum(row.errors for row in rows),
        statistics.median(row.rss_idle_mib for row in rows),
        statistics.median(row.rss_peak_mib for row in rows),
    )


def measure_all(
    targets: Sequence[Target], settings: Settings, scripts: Mapping[str, Path]
) -> list[Row]:
    # Interleaved (workload, then path, per round) so that drift hits every path alike.
    runs: dict[tuple[str, str], list[Row]] = {}
    for round_number in range(1, settings.rounds + 1):
        progress(f"round {round_number}/{settings.rounds}")
        for kind in KINDS:
            for target in targets:
                row = measure(target, kind, settings, scripts.get(kind))
                runs.setdefault((kind, target.name), []).append(row)
    return [combine(rows) for rows in runs.values()]


def path_names(rows: Sequence[Row]) -> list[str]:
    return list(dict.fromkeys(row.path for row in rows))


def is_authgate(path: str) -> bool:
    return path == AUTHGATE or path.startswith(f"{AUTHGATE}-")


def ratio_pairs(paths: Sequence[str]) -> list[tuple[str, str]]:
    """Each authgate path over each baseline (and over one worker), then the baselines."""
    present = set(paths)
    pairs: list[tuple[str, str]] = []
    for path in filter(is_authgate, paths):
        pairs += [(path, base) for base in BASELINES if base in present]
        if path != AUTHGATE and AUTHGATE in present:
            pairs.append((path, AUTHGATE))
    pairs += [pair for pair in BASELINE_RATIOS if present.issuperset(pair)]
    return pairs


def ratios(rows: Sequence[Row]) -> dict[str, dict[str, float]]:
    """``{"small": {"authgate/nginx": 0.2, ...}, ...}`` from req/s at N connections."""
    rps = {(row.kind, row.path): row.requests_per_sec for row in rows}
    result: dict[str, dict[str, float]] = {}
    for kind in KINDS:
        for top, bottom in ratio_pairs(path_names(rows)):
            if (kind, top) in rps and rps.get((kind, bottom)):
                result.setdefault(kind, {})[f"{top}/{bottom}"] = (
                    rps[(kind, top)] / rps[(kind, bottom)]
                )
    return result


def added_latency_us(rows: Sequence[Row]) -> dict[str, dict[str, float]]:
    """p50 at one connection minus the direct path's: what a proxy adds to one request."""
    direct = {row.kind: row.p50_1conn_ms for row in rows if row.path == "direct"}
    result: dict[str, dict[str, float]] = {}
    for row in rows:
        if row.path != "direct" and row.kind in direct:
            added = (row.p50_1conn_ms - direct[row.kind]) * 1000
            result.setdefault(row.kind, {})[row.path] = added
    return result


def warnings(rows: Sequence[Row]) -> list[str]:
    return [
        f"warning: {row.kind}/{row.path} had {row.errors} errors (status >= 400 or socket "
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
        f"{'kind':7}{'path':12}{f'req/s c{c}':>11}{f'p50 c{c}':>11}{f'p99 c{c}':>11}"
        f"{'p50 c1':>11}{'CPU µs/req':>11}{'errors':>7}{'idle MiB':>9}{'peak MiB':>9}"
    )
    lines = [header, "-" * len(header)]
    for row in rows:
        lines.append(
            f"{row.kind:7}{row.path:12}{row.requests_per_sec:>11,.0f}"
            f"{row.p50_ms:>9.3f}ms{row.p99_ms:>9.3f}ms{row.p50_1conn_ms:>9.3f}ms"
            f"{_cell(row.cpu_us_per_request, 11, 0)}{row.errors:>7}"
            f"{row.rss_idle_mib:>9.1f}{row.rss_peak_mib:>9.1f}"
        )
    return "\n".join(lines)


def _kinds(rows: Sequence[Row]) -> list[str]:
    present = {row.kind for row in rows}
    return [kind for kind in KINDS if kind in present]


def _by_kind(
    title: str,
    names: Sequence[str],
    kinds: Sequence[str],
    table: Mapping[str, Mapping[str, float]],
    precision: int,
) -> str:
    # One line per figure, one column per workload: stays narrow however many paths run.
    lines = [f"{title:24}" + "".join(f"{kind:>10}" for kind in kinds)]
    for name in names:
        cells = (_cell(table.get(kind, {}).get(name), 10, precision) for kind in kinds)
        lines.append(f"{name:24}" + "".join(cells))
    return "\n".join(lines)


def format_ratios(rows: Sequence[Row]) -> str:
    names = [f"{top}/{bottom}" for top, bottom in ratio_pairs(path_names(rows))]
    return _by_kind("req/s ratio", names, _kinds(rows), ratios(rows), 3)


def format_added(rows: Sequence[Row]) -> str:
    names = [path for path in path_names(rows) if path != "direct"]
    return _by_kind("added µs at p50 c1", names, _kinds(rows), added_latency_us(rows), 0)


def format_report(rows: Sequence[Row], connections: int) -> str:
    parts = [
        format_table(rows, connections),
        format_ratios(rows),
        format_added(rows),
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
        "paths": path_names(rows),
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


def worker_counts(text: str) -> tuple[int, ...]:
    """``"1,2"`` -> ``(1, 2)``: each count is measured as its own path."""
    try:
        counts = tuple(dict.fromkeys(int(word) for word in text.split(",")))
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected counts like 1 or 1,2, not {text!r}") from None
    if min(counts) < 1:
        raise argparse.ArgumentTypeError("worker counts must be at least 1")
    return counts


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m loadtest.bench",
        description="wrk benchmark: authgate next to direct, nginx and a minimal aiohttp proxy.",
    )
    parser.add_argument("--duration", type=int, default=10, help="seconds per loaded wrk run")
    parser.add_argument("--connections", type=int, default=32, help="wrk connections")
    parser.add_argument("--quick", action="store_true", help="3 s runs, for smoke tests")
    parser.add_argument("--rounds", type=int, default=1, help="interleaved rounds (median)")
    parser.add_argument(
        "--workers",
        type=worker_counts,
        default=(1,),
        metavar="N[,N...]",
        help="authgate proxy worker counts, each measured as its own path (default 1)",
    )
    parser.add_argument("--authgate-cmd", help="how to start `authgate proxy` (shell words)")
    parser.add_argument(
        "--management-cmd",
        help="how to start `authgate management` (default: --authgate-cmd with its word "
        "'proxy' replaced by 'management')",
    )
    parser.add_argument("--skip-authgate", action="store_true", help="measure no authgate")
    parser.add_argument("--skip-yardstick", action="store_true", help="measure no yardstick")
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
    # Half as long at one connection: its median settles after a few thousand requests.
    single = max(1, duration // 2)
    warmup = 1 if args.quick else 2
    return Settings(duration, warmup, single, args.connections, args.rounds, args.pin)


def authgate_commands(args: argparse.Namespace) -> tuple[list[str], list[str]]:
    """The proxy and management commands, from the options or their defaults."""
    proxy = shlex.split(args.authgate_cmd or "") or default_proxy_command()
    management = shlex.split(args.management_cmd or "") or management_command(proxy)
    return proxy, management


def start_authgate(
    stack: ExitStack,
    commands: tuple[list[str], list[str]],
    workers: Sequence[int],
    workdir: Path,
    upstream: Target,
) -> list[Target]:
    proxy, management = commands
    control = start_management(stack, management, workdir)
    return [start_authgate_proxy(stack, proxy, count, control, upstream) for count in workers]


def start_targets(
    stack: ExitStack,
    args: argparse.Namespace,
    workdir: Path,
    commands: tuple[list[str], list[str]] | None,
) -> list[Target]:
    # Installed from Debian's packages when missing (as root), as the README says.
    nginx = find_tool("nginx", "nginx-light", install=True)
    find_tool("wrk", "wrk", install=True)
    upstream = start_upstream(stack, nginx, workdir)
    targets = [upstream, start_nginx_proxy(stack, nginx, workdir, upstream)]
    if not args.skip_yardstick:
        targets.append(start_yardstick(stack, workdir, upstream))
    if commands is not None:
        targets += start_authgate(stack, commands, args.workers, workdir, upstream)
    for target in targets:
        verify(target)
    return targets


def write_scripts(workdir: Path) -> dict[str, Path]:
    """A wrk script per workload that sends a body; GETs need none."""
    scripts: dict[str, Path] = {}
    for workload in WORKLOADS.values():
        if workload.request_body is not None:
            path = workdir / f"{workload.kind}.lua"
            path.write_text(request_script(workload.method, workload.request_body, JSON))
            scripts[workload.kind] = path
    return scripts


def run(args: argparse.Namespace) -> Path:
    settings = settings_from(args)
    # Before anything is looked for or started: a command that cannot be derived is a
    # usage error.
    commands = None if args.skip_authgate else authgate_commands(args)
    tools = {
        "wrk": tool_version([find_tool("wrk", "wrk"), "--version"]),
        "nginx": tool_version([find_tool("nginx", "nginx-light"), "-v"]),
    }
    with tempfile.TemporaryDirectory(prefix="authgate-bench-") as tmp, ExitStack() as stack:
        workdir = Path(tmp)
        # nginx workers run as an unprivileged user when started by root: they must be
        # able to read the static files. authgate's data dir stays private (0700).
        workdir.chmod(0o755)
        targets = start_targets(stack, args, workdir, commands)
        rows = measure_all(targets, settings, write_scripts(workdir))
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
