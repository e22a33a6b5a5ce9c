"""Which limit applies to a connection, and what happens when its bucket is empty.

Rate limiting is off unless configured. Configuration (read by `policy_from_env`):

- `AUTHGATE_RATE_LIMIT` (unset: off): the default limit of every connection,
  `<count>/<period>` such as `10/s`, `600/m`, `100/10s`, `5000/h`, `1/d`; `off` disables.
- `AUTHGATE_RATE_LIMIT_BURST` (default: the rate's count): tokens a full bucket holds,
  i.e. requests allowed at once; only with `AUTHGATE_RATE_LIMIT`.
- `AUTHGATE_RATE_LIMITS_FILE` (unset): YAML overrides per integration, see below.
- `AUTHGATE_RATE_LIMIT_MODE` (`reject`): `reject` answers 429 at once; `wait` waits for
  the next token, then goes on.
- `AUTHGATE_RATE_LIMIT_MAX_WAIT` (`1` second): the longest wait in `wait` mode; a wait
  never passes the request deadline either (`AUTHGATE_UPSTREAM_TOTAL_TIMEOUT`).

The overrides file maps a provider config key, or `<environment name>/<key>` for one
environment only, to a limit or to `off`:

    github: {rate: 5/s, burst: 10}
    prod/salesforce: {rate: 100/m}      # burst defaults to the count (100)
    slack: 1/s                          # shorthand: rate only
    internal-api: off                   # never limited, whatever the default

The most specific entry wins (`env/key`, then `key`, then the default). Every bucket is
per connection: each connection of an integration has its own bucket with that limit.
Invalid values raise `RateLimitConfigError` naming the variable (and the file entry).
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from enum import StrEnum
from pathlib import Path
from typing import Any

import yaml

from ratelimit.bucket import MICROS, Limit

RATE_VARIABLE = "AUTHGATE_RATE_LIMIT"
BURST_VARIABLE = "AUTHGATE_RATE_LIMIT_BURST"
FILE_VARIABLE = "AUTHGATE_RATE_LIMITS_FILE"
MODE_VARIABLE = "AUTHGATE_RATE_LIMIT_MODE"
MAX_WAIT_VARIABLE = "AUTHGATE_RATE_LIMIT_MAX_WAIT"
DEFAULT_MAX_WAIT = 1.0
MAX_COUNT = 1_000_000_000

_PERIODS = {
    **dict.fromkeys(("s", "sec", "secs", "second", "seconds"), 1),
    **dict.fromkeys(("m", "min", "mins", "minute", "minutes"), 60),
    **dict.fromkeys(("h", "hr", "hrs", "hour", "hours"), 3600),
    **dict.fromkeys(("d", "day", "days"), 86400),
}
_RATE = re.compile(r"(\d+)\s*/\s*(\d*)\s*([a-z]+)", re.IGNORECASE)
_OFF = "off"
_ENTRY_FIELDS = frozenset({"rate", "burst"})


class RateLimitConfigError(ValueError):
    """A rate-limit setting is invalid; `variable` names it, `problem` says why."""

    def __init__(self, variable: str, problem: str) -> None:
        super().__init__(f"{variable}: {problem}")
        self.variable = variable
        self.problem = problem


class Mode(StrEnum):
    REJECT = "reject"
    WAIT = "wait"


@dataclass(frozen=True, slots=True)
class RateLimitPolicy:
    """The limits in force; the default policy limits nothing."""

    default: Limit | None = None
    overrides: Mapping[str, Limit | None] = field(default_factory=dict)
    mode: Mode = Mode.REJECT
    max_wait: float = DEFAULT_MAX_WAIT

    @property
    def enabled(self) -> bool:
        """Whether any connection can be limited at all."""
        return self.default is not None or any(v is not None for v in self.overrides.values())

    def limit_for(self, environment: str, integration: str) -> Limit | None:
        """The limit of a connection of `integration` in `environment`, or None."""
        if self.overrides:
            for name in (f"{environment}/{integration}", integration):
                if name in self.overrides:
                    return self.overrides[name]
        return self.default

    def wait_budget(self) -> float:
        """The longest wait this policy allows, before the request deadline's bound."""
        return self.max_wait if self.mode is Mode.WAIT else 0.0


def parse_rate(text: str) -> tuple[int, int]:
    """`10/s`, `600/m`, `100/10s`, `5000/h`, `1/d` → (count, period in microseconds)."""
    match = _RATE.fullmatch(text.strip())
    if match is None:
        raise ValueError(f"expected <count>/<period> such as 10/s or 600/m, got {text!r}")
    count = int(match.group(1))
    multiplier = int(match.group(2) or "1")
    seconds = _PERIODS.get(match.group(3).lower())
    if seconds is None:
        raise ValueError(f"unknown period unit in {text!r}; use s, m, h or d")
    if not 1 <= count <= MAX_COUNT:
        raise ValueError(f"count must be from 1 to {MAX_COUNT}, got {count}")
    if multiplier < 1:
        raise ValueError(f"period must be positive, got {text!r}")
    return count, multiplier * seconds * MICROS


def make_limit(rate: str, burst: int | None) -> Limit:
    count, period_us = parse_rate(rate)
    if burst is not None and burst < 1:
        raise ValueError(f"burst must be at least 1, got {burst}")
    try:
        return Limit(count, period_us, count if burst is None else burst)
    except ValueError as problem:
        raise ValueError(f"{problem} ({rate}, burst {burst})") from None


def policy_from_env(environ: Mapping[str, str]) -> RateLimitPolicy:
    """The policy the variables above describe; raises `RateLimitConfigError`."""
    return RateLimitPolicy(
        default=_default_limit(environ),
        overrides=_overrides(environ),
        mode=_mode(environ),
        max_wait=_max_wait(environ),
    )


def load_overrides(path: Path) -> dict[str, Limit | None]:
    """Read an overrides file (see the module docstring)."""
    try:
        document = yaml.safe_load(path.read_text())
    except OSError as failure:
        raise RateLimitConfigError(FILE_VARIABLE, f"cannot read {path}: {failure}") from None
    except yaml.YAMLError as failure:
        raise RateLimitConfigError(FILE_VARIABLE, f"{path} is not valid YAML: {failure}") from None
    if document is None:
        return {}
    if not isinstance(document, dict):
        raise RateLimitConfigError(FILE_VARIABLE, f"{path}: expected a mapping of keys to limits")
    overrides: dict[str, Limit | None] = {}
    for key, entry in document.items():
        if not isinstance(key, str) or not key.strip():
            raise RateLimitConfigError(FILE_VARIABLE, f"{path}: key {key!r} must be a string")
        try:
            overrides[key.strip()] = _entry(entry)
        except ValueError as problem:
            raise RateLimitConfigError(FILE_VARIABLE, f"{path}: entry {key!r}: {problem}") from None
    return overrides


def _entry(entry: Any) -> Limit | None:
    # YAML 1.1 reads a bare `off` as false.
    if entry is False or (isinstance(entry, str) and entry.strip().lower() == _OFF):
        return None
    if isinstance(entry, str):
        return make_limit(entry, None)
    if not isinstance(entry, dict):
        raise ValueError("expected off, a rate such as 5/s, or {rate: 5/s, burst: 10}")
    unknown = set(entry) - _ENTRY_FIELDS
    if unknown:
        raise ValueError(f"unknown field(s) {', '.join(sorted(map(str, unknown)))}")
    rate = entry.get("rate")
    if not isinstance(rate, str):
        raise ValueError("rate is required, e.g. rate: 5/s")
    burst = entry.get("burst")
    if burst is not None and (isinstance(burst, bool) or not isinstance(burst, int)):
        raise ValueError("burst must be an integer")
    return make_limit(rate, burst)


def _read(environ: Mapping[str, str], name: str) -> str | None:
    value = environ.get(name, "").strip()
    return value or None


def _default_limit(environ: Mapping[str, str]) -> Limit | None:
    rate = _read(environ, RATE_VARIABLE)
    burst_text = _read(environ, BURST_VARIABLE)
    if rate is None or rate.lower() == _OFF:
        if burst_text is not None:
            raise RateLimitConfigError(BURST_VARIABLE, f"needs {RATE_VARIABLE}")
        return None
    burst = None
    if burst_text is not None:
        try:
            burst = int(burst_text)
        except ValueError:
            raise RateLimitConfigError(
                BURST_VARIABLE, f"expected an integer, got {burst_text!r}"
            ) from None
        if burst < 1:
            raise RateLimitConfigError(BURST_VARIABLE, f"must be at least 1, got {burst}")
    try:
        return make_limit(rate, burst)
    except ValueError as problem:
        raise RateLimitConfigError(RATE_VARIABLE, str(problem)) from None


def _overrides(environ: Mapping[str, str]) -> dict[str, Limit | None]:
    value = _read(environ, FILE_VARIABLE)
    if value is None:
        return {}
    path = Path(value)
    if not path.is_file():
        raise RateLimitConfigError(FILE_VARIABLE, f"no such file: {path}")
    return load_overrides(path)


def _mode(environ: Mapping[str, str]) -> Mode:
    value = (_read(environ, MODE_VARIABLE) or Mode.REJECT.value).lower()
    try:
        return Mode(value)
    except ValueError:
        raise RateLimitConfigError(
            MODE_VARIABLE, f"expected reject or wait, got {value!r}"
        ) from None


def _max_wait(environ: Mapping[str, str]) -> float:
    value = _read(environ, MAX_WAIT_VARIABLE)
    if value is None:
        return DEFAULT_MAX_WAIT
    try:
        seconds = float(value)
    except ValueError:
        raise RateLimitConfigError(MAX_WAIT_VARIABLE, f"expected seconds, got {value!r}") from None
    if not math.isfinite(seconds) or seconds < 0:
        raise RateLimitConfigError(
            MAX_WAIT_VARIABLE, f"expected a finite number of seconds ≥ 0, got {value!r}"
        )
    return seconds
