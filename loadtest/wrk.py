"""Running wrk and reading its report.

The parsing is pure so that it can be tested against captured wrk output
(tests/loadtest/wrk_samples/).
"""

from __future__ import annotations

import re
import subprocess
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Final

from loadtest.processes import BenchError, Headers

__all__ = [
    "WrkResult",
    "lua_string",
    "parse_latency_ms",
    "parse_wrk_output",
    "request_script",
    "run_wrk",
    "wrk_command",
]

# wrk prints durations with the unit that keeps the number short (src/units.c).
_MS_PER_UNIT: Final[Mapping[str, float]] = {
    "us": 0.001,
    "ms": 1.0,
    "s": 1000.0,
    "m": 60_000.0,
    "h": 3_600_000.0,
}
_LATENCY: Final = re.compile(r"([0-9]+(?:\.[0-9]+)?)(us|ms|s|m|h)")


@dataclass(frozen=True)
class WrkResult:
    """What one wrk run measured."""

    requests: int
    requests_per_sec: float
    p50_ms: float
    p99_ms: float
    non_2xx: int  # wrk counts every status >= 400 here, despite its label
    socket_errors: int

    @property
    def errors(self) -> int:
        return self.non_2xx + self.socket_errors


def parse_latency_ms(text: str) -> float:
    """``"512.00us"`` -> ``0.512``; raises ``ValueError`` on anything else."""
    match = _LATENCY.fullmatch(text.strip())
    if match is None:
        raise ValueError(f"not a wrk latency: {text!r}")
    return float(match[1]) * _MS_PER_UNIT[match[2]]


def _search(pattern: str, text: str) -> re.Match[str] | None:
    return re.search(pattern, text, re.MULTILINE)


def _require(pattern: str, text: str, what: str) -> re.Match[str]:
    match = _search(pattern, text)
    if match is None:
        raise ValueError(f"wrk output has no {what} (run with --latency?):\n{text}")
    return match


def _percentile_ms(text: str, percent: int) -> float:
    match = _require(rf"^\s*{percent}%\s+(\S+)\s*$", text, f"{percent}% latency")
    return parse_latency_ms(match[1])


def _socket_errors(text: str) -> int:
    match = _search(r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)", text)
    return sum(int(count) for count in match.groups()) if match else 0


def parse_wrk_output(text: str) -> WrkResult:
    """Parse the report of ``wrk --latency``; raises ``ValueError`` if a figure is missing."""
    non_2xx = _search(r"^\s*Non-2xx or 3xx responses:\s+(\d+)", text)
    return WrkResult(
        requests=int(_require(r"^\s*(\d+) requests in ", text, "request count")[1]),
        requests_per_sec=float(_require(r"^Requests/sec:\s+([0-9.]+)", text, "Requests/sec")[1]),
        p50_ms=_percentile_ms(text, 50),
        p99_ms=_percentile_ms(text, 99),
        non_2xx=int(non_2xx[1]) if non_2xx else 0,
        socket_errors=_socket_errors(text),
    )


# Lua 5.1 (LuaJIT, which wrk embeds) reads these back as the byte itself; any other byte
# outside printable ASCII becomes a three-digit decimal escape, its only numeric escape.
_LUA_ESCAPES: Final = {ord('"'): '\\"', ord("\\"): "\\\\"}
_LUA_PRINTABLE: Final = range(0x20, 0x7F)


def _lua_char(byte: int) -> str:
    if byte in _LUA_ESCAPES:
        return _LUA_ESCAPES[byte]
    return chr(byte) if byte in _LUA_PRINTABLE else f"\\{byte:03d}"


def lua_string(data: bytes) -> str:
    """``data`` as a double-quoted Lua string literal that reads back byte for byte."""
    return '"' + "".join(map(_lua_char, data)) + '"'


def request_script(method: str, body: bytes, content_type: str) -> str:
    """A wrk script sending every request with ``method`` and ``body``.

    wrk builds each request from these fields and adds ``Content-Length`` itself.
    """
    return (
        f"wrk.method = {lua_string(method.encode())}\n"
        f"wrk.body = {lua_string(body)}\n"
        f'wrk.headers["Content-Type"] = {lua_string(content_type.encode())}\n'
    )


def wrk_command(
    url: str,
    connections: int,
    duration: int,
    headers: Headers,
    pin_cpu: int | None,
    script: Path | None = None,
) -> list[str]:
    # One wrk thread: on 2 cores a second thread only steals CPU from the server under test.
    command = ["wrk", "-t1", f"-c{connections}", f"-d{duration}s", "--latency"]
    if script is not None:
        command += ["-s", str(script)]
    for name, value in headers:
        command += ["-H", f"{name}: {value}"]
    command.append(url)
    return ["taskset", "-c", str(pin_cpu), *command] if pin_cpu is not None else command


def run_wrk(
    url: str,
    connections: int,
    duration: int,
    headers: Headers,
    pin_cpu: int | None,
    script: Path | None = None,
) -> WrkResult:
    command = wrk_command(url, connections, duration, headers, pin_cpu, script)
    done = subprocess.run(
        command, capture_output=True, text=True, timeout=duration + 60, check=False
    )
    if done.returncode != 0:
        raise BenchError(f"wrk failed ({done.returncode}): {done.stderr or done.stdout}")
    try:
        return parse_wrk_output(done.stdout)
    except ValueError as error:
        raise BenchError(str(error)) from error
