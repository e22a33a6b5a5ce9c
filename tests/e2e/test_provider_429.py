"""A provider's 429: every way of saying "come back later" is understood.

When the caller asked for retries, authgate waits as long as the provider said (and no
shorter) and tries again. When that wait is longer than authgate may wait, or would
pass the request deadline, the provider's 429 goes back at once with one normalised
`Retry-After: <seconds>`, whatever spelling the provider used.
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Callable
from dataclasses import dataclass
from email.utils import formatdate

import pytest
from aiohttp import web

from tests.e2e.conftest import Authgate, Factory

API_KEY = {"type": "API_KEY", "apiKey": "ak-provider-429-7d1f"}
PATH = "/api/limited"
# asyncio may wake a sleeper up to one clock tick early; HTTP-dates are whole seconds.
CLOCK_SLACK = 0.02


@dataclass(frozen=True)
class Variant:
    """One spelling: the header name, and its value for a wait of `seconds` from `now`.

    `absolute` variants name a moment (an epoch or a date) and are truncated to whole
    seconds or milliseconds, so the wait they mean is a little under `seconds`.
    """

    name: str
    value: Callable[[float, int], str]
    absolute: bool

    def __str__(self) -> str:
        return self.name


VARIANTS = [
    pytest.param(Variant("Retry-After", lambda now, s: str(s), False), id="retry-after-seconds"),
    pytest.param(
        Variant("Retry-After", lambda now, s: formatdate(math.floor(now) + s, usegmt=True), True),
        id="retry-after-http-date",
    ),
    pytest.param(
        Variant("X-RateLimit-Reset", lambda now, s: str(math.floor(now) + s), True),
        id="x-ratelimit-reset-epoch-seconds",
    ),
    pytest.param(
        Variant("X-RateLimit-Reset", lambda now, s: str(math.floor(now * 1000) + s * 1000), True),
        id="x-ratelimit-reset-epoch-ms",
    ),
    pytest.param(
        Variant("X-RateLimit-Reset", lambda now, s: str(s), False), id="x-ratelimit-reset-delta"
    ),
    pytest.param(
        Variant("RateLimit-Reset", lambda now, s: str(s), False), id="ratelimit-reset-delta"
    ),
    pytest.param(
        Variant("X-Rate-Limit-Reset", lambda now, s: str(math.floor(now) + s), True),
        id="x-rate-limit-reset-epoch-seconds",
    ),
]


class LimitedOnce:
    """The provider's script: a 429 with the variant's header for the first `limited`
    calls, then 200. Records when each call arrived (epoch seconds) and the moment the
    header promised."""

    def __init__(self, variant: Variant, seconds: int, status: int = 429, limited: int = 1):
        self.variant = variant
        self.seconds = seconds
        self.status = status
        self.limited = limited
        self.arrivals: list[float] = []
        self.promised: float = 0.0

    async def __call__(self, request: web.Request) -> web.StreamResponse:
        now = time.time()
        self.arrivals.append(now)
        if len(self.arrivals) > self.limited:
            return web.json_response({"ok": True})
        value = self.variant.value(now, self.seconds)
        self.promised = _moment(self.variant, value, now, self.seconds)
        headers = {self.variant.name: value, "X-Provider-Own": "kept"}
        return web.json_response({"limited": True}, status=self.status, headers=headers)


def _moment(variant: Variant, value: str, now: float, seconds: int) -> float:
    if not variant.absolute:
        return now + seconds
    if value.isdigit():
        number = int(value)
        return number / 1000 if number > 10**11 else number
    return math.floor(now) + seconds  # the HTTP-date was built from this


async def _ready(authgate: Authgate, script: LimitedOnce) -> None:
    await authgate.integration("api", "fake-api-key")
    await authgate.connection("api", "conn-1", API_KEY, connection_config={"tenant": "t"})
    authgate.provider.respond(PATH, script)


async def _call(authgate: Authgate, retries: int) -> tuple[int, list[tuple[str, str]], bytes]:
    response = await authgate.proxy(
        "GET",
        "/proxy/limited",
        provider_config_key="api",
        headers={"Retries": str(retries)},
    )
    body = await response.read()
    headers = [(name, value) for name, value in response.headers.items()]
    return response.status, headers, body


def _values(headers: list[tuple[str, str]], name: str) -> list[str]:
    return [value for key, value in headers if key.lower() == name.lower()]


def _access_line(caplog: pytest.LogCaptureFixture) -> dict[str, object]:
    """The fields of the one access-log line the request wrote."""
    (record,) = [record for record in caplog.records if record.name == "authgate.access"]
    return vars(record)


# --- the wait fits: wait, then succeed ----------------------------------------------------


@pytest.mark.parametrize("variant", VARIANTS)
async def test_a_429_is_retried_after_the_wait_it_names(
    make_authgate: Factory, variant: Variant, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="authgate.access")
    authgate = await make_authgate()
    script = LimitedOnce(variant, seconds=1)
    await _ready(authgate, script)

    status, _, body = await _call(authgate, retries=1)
    assert status == 200, body
    assert len(script.arrivals) == 2
    # Not a backoff (at most 250 ms here): the retry came when the header said, no earlier.
    assert script.arrivals[1] >= script.promised - CLOCK_SLACK
    line = _access_line(caplog)
    assert line["rate_limit"] == "provider"
    assert line["retry_reasons"] in (["retry_after"], ["rate_limit_reset"])


# --- the wait does not fit: the 429 goes back, normalised ---------------------------------


@pytest.mark.parametrize("variant", VARIANTS)
async def test_a_wait_longer_than_allowed_hands_back_the_429_with_retry_after(
    make_authgate: Factory, variant: Variant, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="authgate.access")
    authgate = await make_authgate(AUTHGATE_RETRY_MAX_DELAY="0.5")
    script = LimitedOnce(variant, seconds=30)
    await _ready(authgate, script)

    status, headers, body = await _call(authgate, retries=3)
    assert status == 429
    assert body == b'{"limited": true}'
    assert len(script.arrivals) == 1, "no early retry against the provider's instruction"
    # A moment truncated to the second may mean a little under 30 s.
    expected = {"29", "30"} if variant.absolute else {"30"}
    (retry_after,) = _values(headers, "Retry-After")
    assert retry_after in expected
    assert _values(headers, "X-Provider-Own") == ["kept"]
    assert not _values(headers, "X-Authgate-Error"), "the provider's answer, not ours"
    if variant.name != "Retry-After":
        assert _values(headers, variant.name), "the provider's own header still comes back"
    assert _access_line(caplog)["rate_limit"] == "provider"


async def test_a_wait_past_the_deadline_hands_back_the_429(make_authgate: Factory) -> None:
    # The wait is within the cap (2 s) but not within what is left of the 2 s deadline.
    authgate = await make_authgate(
        AUTHGATE_UPSTREAM_TOTAL_TIMEOUT="2", AUTHGATE_RETRY_MAX_DELAY="2"
    )
    script = LimitedOnce(Variant("RateLimit-Reset", lambda now, s: str(s), False), seconds=2)
    await _ready(authgate, script)
    status, headers, _ = await _call(authgate, retries=1)
    assert (status, _values(headers, "Retry-After")) == (429, ["2"])
    assert len(script.arrivals) == 1


async def test_a_503_with_a_far_retry_date_is_normalised_too(make_authgate: Factory) -> None:
    authgate = await make_authgate(AUTHGATE_RETRY_MAX_DELAY="0.5")
    date = Variant("Retry-After", lambda now, s: formatdate(math.floor(now) + s, usegmt=True), True)
    script = LimitedOnce(date, seconds=120, status=503)
    await _ready(authgate, script)
    status, headers, _ = await _call(authgate, retries=2)
    assert status == 503
    assert _values(headers, "Retry-After")[0] in ("119", "120")


async def test_without_retries_the_providers_429_passes_untouched(
    make_authgate: Factory, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="authgate.access")
    authgate = await make_authgate()
    date = Variant("Retry-After", lambda now, s: formatdate(math.floor(now) + s, usegmt=True), True)
    script = LimitedOnce(date, seconds=30)
    await _ready(authgate, script)
    status, headers, _ = await _call(authgate, retries=0)
    assert status == 429
    (retry_after,) = _values(headers, "Retry-After")
    assert retry_after.endswith("GMT"), "the caller did not ask for retries: nothing to fix"
    assert _access_line(caplog)["rate_limit"] == "provider"


async def test_no_retry_after_is_invented_when_the_provider_gave_none(
    make_authgate: Factory,
) -> None:
    # A bare 503, every time: the growing backoff soon outlives the 1 s deadline (its
    # smallest waits add up past it by the third retry). No hint, nothing to normalise.
    authgate = await make_authgate(
        AUTHGATE_UPSTREAM_TOTAL_TIMEOUT="1", AUTHGATE_RETRY_MAX_DELAY="1"
    )
    bare = Variant("X-Unrelated", lambda now, s: "x", False)
    script = LimitedOnce(bare, 1, status=503, limited=100)
    await _ready(authgate, script)
    status, headers, _ = await _call(authgate, retries=10)
    # 504 if the last attempt itself ran out of time: our answer, also without a hint.
    assert status in (503, 504)
    assert 2 <= len(script.arrivals) <= 4
    assert _values(headers, "Retry-After") == []
