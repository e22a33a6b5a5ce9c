"""Retry decisions for upstream calls: whether to try again, and how long to wait first.

Pure: the clock (``now``, wall-clock epoch seconds, for HTTP-dates and epoch resets), the
time left before the request deadline (``remaining``) and the random source are passed
in, so every decision is reproducible in a test.

What is retried: network errors (no response), 5xx and 429 by default. A provider's
``proxy.retry.error_code`` rules replace those default statuses; the caller's
``Retry-On`` statuses are retryable on top; so is any response whose provider
``proxy.retry.remaining`` header is exactly ``"0"`` (GitHub's 403 with
``x-ratelimit-remaining: 0``). A status below 400 is never retried.

How long: the longest wait any hint in the response asks for -- ``Retry-After``
(RFC 9110 §10.2.3), the provider's ``proxy.retry.at`` / ``after`` headers, and the
common rate-limit reset headers when the response says the limit is used up -- else
exponential backoff with jitter. We never wait longer than ``max_delay``: when the
server asks for more than that, or the wait would outlive the request deadline, we stop
and hand the response to the caller instead of retrying early against the server's
instruction (``delay`` then says how long the server wanted, and
``caller_retry_after`` turns it into the normalised ``Retry-After`` the caller gets).

Reasons are short stable identifiers, usable as metric labels.
"""

from __future__ import annotations

import math
import random
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC
from email.utils import parsedate_to_datetime
from functools import lru_cache

from credentials.models import RetryRules

MAX_RETRIES = 10

# Reset headers that name a point in time or a delay until the limit window resets.
# GitHub, Twitter/X and many others: epoch seconds; the IETF RateLimit draft and some
# APIs: delta seconds; a few (Exact Online): epoch milliseconds. See _reset_wait.
_RESET_HEADERS = ("ratelimit-reset", "x-ratelimit-reset", "x-rate-limit-reset")
_REMAINING_HEADERS = ("ratelimit-remaining", "x-ratelimit-remaining", "x-rate-limit-remaining")

_NORMALISED_STATUSES = frozenset({429, 503})
_TOO_LONG = frozenset({"wait_too_long", "deadline"})

# A delta above this is really an epoch timestamp (1e9 s is 2001-09-09; no window lasts
# 30 years), and an epoch above _EPOCH_MS is in milliseconds (1e11 s is the year 5138,
# 1e11 ms is 1973).
_EPOCH_S = 1e9
_EPOCH_MS = 1e11


@dataclass(frozen=True, slots=True)
class RetryPolicy:
    """Retry settings of one proxied request.

    ``max_retries`` counts retries after the first attempt; ``retry_on`` comes from the
    caller's ``Retry-On``; ``rules`` from the provider catalogue; ``max_delay`` caps
    every single wait (seconds).
    """

    max_retries: int
    retry_on: frozenset[int]
    rules: RetryRules
    base_delay: float = 0.25
    max_delay: float = 10.0


@dataclass(frozen=True, slots=True)
class RetryDecision:
    """``hinted``: ``delay`` is what the response asked for (a header), not a backoff."""

    retry: bool
    delay: float
    reason: str
    hinted: bool = False


EXHAUSTED = RetryDecision(False, 0.0, "exhausted")
"""No retry left: the answer stands."""


def decide(
    policy: RetryPolicy,
    attempt: int,
    status: int | None,
    headers: Mapping[str, str] | None,
    *,
    remaining: float,
    now: float,
    rng: random.Random,
) -> RetryDecision:
    """Whether to retry after attempt number ``attempt`` (0 = the first) failed.

    ``status`` None means no response (a network error). ``headers`` are the response
    headers, looked up by lower-case name: pass a case-insensitive mapping (aiohttp's
    ``resp.headers``) or one with lower-case keys.

    Refusals: ``exhausted`` (no retries left), ``not_retryable``, ``wait_too_long`` (the
    server asked for more than ``max_delay``), ``deadline`` (the wait would outlive
    ``remaining``). Retries say why they wait as long as they do: ``retry_after``,
    ``rate_limit_reset``, ``provider_header``, else the trigger: ``network`` or
    ``status_<code>``.
    """
    if attempt >= policy.max_retries:
        return EXHAUSTED
    if status is not None and not is_retryable_status(policy, status, headers):
        return RetryDecision(False, 0.0, "not_retryable")

    hinted = None
    if status is not None and headers is not None:
        hinted = hinted_wait(policy, status, headers, now)
    if hinted is not None:
        delay, reason = hinted
        if delay > policy.max_delay:
            return RetryDecision(False, delay, "wait_too_long", hinted=True)
    else:
        delay = backoff(policy, attempt, rng)
        reason = "network" if status is None else f"status_{status}"
    if delay > remaining:
        return RetryDecision(False, delay, "deadline", hinted=hinted is not None)
    return RetryDecision(True, delay, reason, hinted=hinted is not None)


def caller_retry_after(status: int, decision: RetryDecision) -> int | None:
    """The ``Retry-After`` (whole seconds, rounded up) for a 429 or 503 handed back
    because the wait it asked for was too long or would pass the deadline; None for
    any other answer (nothing to normalise: the provider's headers pass as they are).

    Whatever spelling the provider used (an HTTP-date, an epoch reset in seconds or
    milliseconds, a delta), the caller gets one integer it can act on.
    """
    if status not in _NORMALISED_STATUSES or not decision.hinted:
        return None
    if decision.reason not in _TOO_LONG:
        return None
    return math.ceil(max(decision.delay, 0.0))


def is_retryable_status(
    policy: RetryPolicy, status: int, headers: Mapping[str, str] | None
) -> bool:
    """Whether a response with this status may be retried under ``policy``."""
    if status < 400:
        return False
    if status in policy.retry_on:
        return True
    if policy.rules.error_codes:
        if status in status_rules(policy.rules.error_codes):
            return True
    elif status >= 500 or status == 429:
        return True
    header = policy.rules.remaining_header
    return header is not None and headers is not None and headers.get(header.lower()) == "0"


def hinted_wait(
    policy: RetryPolicy, status: int, headers: Mapping[str, str], now: float
) -> tuple[float, str] | None:
    """The longest wait the response asks for, and which kind of header asked, or None."""
    found: list[tuple[float | None, str]] = []
    value = headers.get("retry-after")
    if value is not None:
        found.append((_retry_after_wait(value, now), "retry_after"))
    for name in policy.rules.after_headers:
        value = headers.get(name.lower())
        if value is not None:
            found.append((_number(value), "provider_header"))
    for name in policy.rules.at_headers:
        value = headers.get(name.lower())
        if value is not None:
            found.append((_at_wait(value, now), "provider_header"))
    # Reset headers ride along on every response (GitHub sends them on 200s and 502s);
    # they only say when to come back if the limit is what failed.
    if status == 429 or _limit_used_up(headers):
        for name in _RESET_HEADERS:
            value = headers.get(name)
            if value is not None:
                found.append((_reset_wait(value, now), "rate_limit_reset"))
    best: tuple[float, str] | None = None
    for wait, reason in found:
        if wait is not None and (best is None or wait > best[0]):
            best = (wait, reason)
    # A reset time already past (clock skew, a stale header) means: go now.
    return None if best is None else (max(best[0], 0.0), best[1])


def backoff(policy: RetryPolicy, attempt: int, rng: random.Random) -> float:
    """Exponential backoff with "equal jitter": a random point in the upper half of
    ``base_delay * 2**attempt`` (capped), so waits grow yet concurrent retries spread."""
    ceiling = min(policy.max_delay, policy.base_delay * 2.0 ** min(attempt, 62))
    half = ceiling / 2.0
    return half + rng.uniform(0.0, half)


def _limit_used_up(headers: Mapping[str, str]) -> bool:
    return any(headers.get(name) == "0" for name in _REMAINING_HEADERS)


def _number(value: str) -> float | None:
    try:
        number = float(value.strip())
    except ValueError:
        return None
    # float() also reads "nan" and "inf"; neither is a wait.
    return number if math.isfinite(number) else None


def _http_date(value: str) -> float | None:
    try:
        when = parsedate_to_datetime(value)
    except (TypeError, ValueError, IndexError, OverflowError):
        return None
    # HTTP-dates are always GMT (RFC 9110 §5.6.7); a zone-less spelling means UTC too.
    if when.tzinfo is None:
        when = when.replace(tzinfo=UTC)
    return when.timestamp()


def _retry_after_wait(value: str, now: float) -> float | None:
    # delay-seconds or HTTP-date (RFC 9110 §10.2.3); a fractional delay is tolerated.
    seconds = _number(value)
    if seconds is not None:
        return seconds
    when = _http_date(value)
    return None if when is None else when - now


def _at_wait(value: str, now: float) -> float | None:
    number = _number(value)
    if number is None:
        when = _http_date(value)
        return None if when is None else when - now
    return _epoch(number) - now


def _reset_wait(value: str, now: float) -> float | None:
    number = _number(value)
    if number is None:
        return None
    return number if number < _EPOCH_S else _epoch(number) - now


def _epoch(number: float) -> float:
    return number / 1000.0 if number >= _EPOCH_MS else number


@lru_cache(maxsize=512)
def status_rules(rules: tuple[str, ...]) -> frozenset[int]:
    """The statuses matched by catalogue rules such as ``"403"``, ``"5xx"``, ``"500-502"``.

    Raises ValueError on a rule it cannot read; the catalogue loader should call this at
    load time so a bad entry fails start-up rather than a request. Cached: the rule
    tuples come from a fixed catalogue.
    """
    statuses: set[int] = set()
    for rule in rules:
        text = rule.strip().lower()
        if len(text) == 3 and text[0].isdigit() and text.endswith("xx"):
            first = int(text[0]) * 100
            statuses.update(range(first, first + 100))
        elif "-" in text:
            low, _, high = text.partition("-")
            start, end = _status(low, rule), _status(high, rule)
            if start > end:
                raise ValueError(f"retry error_code rule {rule!r}: empty range")
            statuses.update(range(start, end + 1))
        else:
            statuses.add(_status(text, rule))
    return frozenset(statuses)


def _status(text: str, rule: str) -> int:
    text = text.strip()
    if not (text.isascii() and text.isdigit() and len(text) == 3):
        raise ValueError(f"retry error_code rule {rule!r}: expected 403, 5xx or 500-502 style")
    return int(text)


def parse_retries(value: str) -> int:
    """The ``Retries`` header: an integer from 0 to 10."""
    text = value.strip()
    if not (text.isascii() and text.isdigit()) or len(text) > 4 or int(text) > MAX_RETRIES:
        raise ValueError(f"Retries must be an integer from 0 to {MAX_RETRIES}")
    return int(text)


def parse_retry_on(value: str) -> frozenset[int]:
    """The ``Retry-On`` header: comma-separated status codes from 100 to 599, e.g.
    ``429,503`` (spaces around commas accepted)."""
    codes: set[int] = set()
    for item in value.split(","):
        text = item.strip()
        if not (text.isascii() and text.isdigit() and len(text) == 3) or not (
            100 <= int(text) <= 599
        ):
            raise ValueError(
                "Retry-On must be a comma-separated list of HTTP status codes from 100 to 599"
            )
        codes.add(int(text))
    return frozenset(codes)
