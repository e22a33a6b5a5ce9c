from __future__ import annotations

import random
from email.utils import formatdate

import pytest
from multidict import CIMultiDict

from credentials.models import RetryRules
from proxy.retry import (
    RetryDecision,
    RetryPolicy,
    backoff,
    caller_retry_after,
    decide,
    parse_retries,
    parse_retry_on,
    status_rules,
)

NOW = 1_700_000_000.0  # 2023-11-14T22:13:20Z


def policy(
    max_retries: int = 3,
    retry_on: frozenset[int] = frozenset(),
    rules: RetryRules | None = None,
    max_delay: float = 10.0,
) -> RetryPolicy:
    return RetryPolicy(
        max_retries=max_retries,
        retry_on=retry_on,
        rules=rules or RetryRules(),
        base_delay=0.25,
        max_delay=max_delay,
    )


def run(
    p: RetryPolicy,
    status: int | None,
    headers: dict[str, str] | None = None,
    *,
    attempt: int = 0,
    remaining: float = 60.0,
    seed: int = 1,
) -> RetryDecision:
    return decide(
        p,
        attempt,
        status,
        CIMultiDict(headers) if headers is not None else None,
        remaining=remaining,
        now=NOW,
        rng=random.Random(seed),
    )


# --- what is retryable -------------------------------------------------------------------


@pytest.mark.parametrize("status", [None, 429, 500, 502, 503, 504, 599])
def test_network_errors_5xx_and_429_are_retried_by_default(status: int | None) -> None:
    decision = run(policy(), status, {} if status else None)
    assert decision.retry
    assert decision.reason == ("network" if status is None else f"status_{status}")


@pytest.mark.parametrize("status", [200, 201, 204, 301, 304, 400, 401, 403, 404, 409, 422])
def test_other_statuses_are_not_retried_by_default(status: int) -> None:
    assert run(policy(), status, {}) == RetryDecision(False, 0.0, "not_retryable")


@pytest.mark.parametrize(
    ("rules", "retried", "not_retried"),
    [
        (("403",), [403], [429, 500, 503]),
        (("5xx",), [500, 503, 599], [429, 403]),
        (("500-502",), [500, 501, 502], [503, 429]),
        (("429", "4xx"), [400, 429, 499], [500]),
        ((" 503 ", "5XX"), [500, 503], [429]),
    ],
)
def test_provider_error_codes_replace_the_default_statuses(
    rules: tuple[str, ...], retried: list[int], not_retried: list[int]
) -> None:
    p = policy(rules=RetryRules(error_codes=rules))
    for status in retried:
        assert run(p, status, {}).retry, status
    for status in not_retried:
        assert run(p, status, {}).reason == "not_retryable", status


def test_network_errors_stay_retryable_with_provider_rules() -> None:
    assert run(policy(rules=RetryRules(error_codes=("403",))), None).reason == "network"


def test_retry_on_statuses_are_always_retryable() -> None:
    p = policy(retry_on=frozenset({404, 409}), rules=RetryRules(error_codes=("403",)))
    assert run(p, 404, {}).reason == "status_404"
    assert run(p, 409, {}).retry
    assert run(p, 403, {}).retry
    assert not run(p, 410, {}).retry


def test_a_success_is_never_retried_even_when_listed() -> None:
    p = policy(retry_on=frozenset({200, 302}), rules=RetryRules(error_codes=("2xx",)))
    assert run(p, 200, {}).reason == "not_retryable"
    assert run(p, 302, {}).reason == "not_retryable"


@pytest.mark.parametrize(("value", "retried"), [("0", True), ("1", False), ("00", False)])
def test_provider_remaining_header_at_zero_makes_a_response_retryable(
    value: str, retried: bool
) -> None:
    p = policy(rules=RetryRules(remaining_header="X-RateLimit-Remaining"))
    assert run(p, 403, {"x-ratelimit-remaining": value}).retry is retried


# --- attempts, deadline ------------------------------------------------------------------


def test_attempts_are_counted_from_zero_and_exhaust_at_max_retries() -> None:
    p = policy(max_retries=2)
    assert run(p, 503, {}, attempt=0).retry
    assert run(p, 503, {}, attempt=1).retry
    assert run(p, 503, {}, attempt=2) == RetryDecision(False, 0.0, "exhausted")


def test_zero_retries_means_no_retry() -> None:
    assert run(policy(max_retries=0), None).reason == "exhausted"


def test_a_wait_past_the_deadline_is_refused_and_reports_the_wait() -> None:
    decision = run(policy(), 429, {"Retry-After": "5"}, remaining=4.0)
    assert decision == RetryDecision(False, 5.0, "deadline", hinted=True)
    assert run(policy(), 429, {"Retry-After": "5"}, remaining=5.0).retry


def test_backoff_past_the_deadline_is_refused() -> None:
    decision = run(policy(), 503, {}, attempt=2, remaining=0.1)
    assert not decision.retry
    assert decision.reason == "deadline"
    assert decision.delay > 0.1


# --- how long: response hints ------------------------------------------------------------


@pytest.mark.parametrize(
    ("value", "delay"),
    [("3", 3.0), ("0", 0.0), ("1.5", 1.5), (" 7 ", 7.0), ("-4", 0.0)],
)
def test_retry_after_seconds(value: str, delay: float) -> None:
    assert run(policy(), 503, {"Retry-After": value}) == RetryDecision(
        True, delay, "retry_after", hinted=True
    )


def test_retry_after_http_date() -> None:
    headers = {"Retry-After": formatdate(NOW + 8, usegmt=True)}
    assert run(policy(), 429, headers) == RetryDecision(True, 8.0, "retry_after", hinted=True)


def test_retry_after_http_date_in_the_past_means_now() -> None:
    headers = {"Retry-After": formatdate(NOW - 100, usegmt=True)}
    assert run(policy(), 429, headers) == RetryDecision(True, 0.0, "retry_after", hinted=True)


@pytest.mark.parametrize("value", ["soon", "", "nan", "inf", "Thu, 99 Foo 2023"])
def test_unreadable_retry_after_falls_back_to_backoff(value: str) -> None:
    assert run(policy(), 429, {"Retry-After": value}).reason == "status_429"


def test_a_wait_longer_than_max_delay_is_not_shortened_but_refused() -> None:
    # Retrying before the server's time only earns another 429; the caller gets the
    # response and decides (delay carries the server's wait).
    decision = run(policy(max_delay=10.0), 429, {"Retry-After": "3600"})
    assert decision == RetryDecision(False, 3600.0, "wait_too_long", hinted=True)
    assert run(policy(max_delay=10.0), 429, {"Retry-After": "10"}).retry


@pytest.mark.parametrize(
    ("name", "value", "delay"),
    [
        ("X-RateLimit-Reset", str(int(NOW) + 7), 7.0),  # GitHub: epoch seconds
        ("x-rate-limit-reset", str(int(NOW) + 4), 4.0),  # Twitter/X: epoch seconds
        ("X-RateLimit-Reset", str(int(NOW * 1000) + 2500), 2.5),  # epoch milliseconds
        ("RateLimit-Reset", "6", 6.0),  # IETF draft: delta seconds
        ("X-RateLimit-Reset", "1.25", 1.25),  # delta seconds
        ("X-RateLimit-Reset", str(int(NOW) - 30), 0.0),  # already past
    ],
)
def test_rate_limit_reset_headers_on_429(name: str, value: str, delay: float) -> None:
    assert run(policy(), 429, {name: value}) == RetryDecision(
        True, delay, "rate_limit_reset", hinted=True
    )


def test_reset_headers_count_when_the_remaining_quota_is_zero() -> None:
    p = policy(retry_on=frozenset({403}))
    headers = {"X-RateLimit-Remaining": "0", "X-RateLimit-Reset": str(int(NOW) + 3)}
    assert run(p, 403, headers) == RetryDecision(True, 3.0, "rate_limit_reset", hinted=True)


def test_reset_headers_are_ignored_when_the_limit_is_not_what_failed() -> None:
    # GitHub sends its reset time on every response, a 502 included.
    headers = {"X-RateLimit-Remaining": "4999", "X-RateLimit-Reset": str(int(NOW) + 3000)}
    decision = run(policy(), 502, headers)
    assert decision.retry
    assert decision.reason == "status_502"
    assert decision.delay <= 0.25


@pytest.mark.parametrize(
    ("rules", "headers", "delay"),
    [
        (RetryRules(after_headers=("X-Wait",)), {"x-wait": "2"}, 2.0),
        (RetryRules(at_headers=("X-Reset-At",)), {"X-Reset-At": str(int(NOW) + 5)}, 5.0),
        (RetryRules(at_headers=("X-Reset-At",)), {"X-Reset-At": str(int(NOW * 1000) + 1500)}, 1.5),
        (
            RetryRules(at_headers=("X-Reset-At",)),
            {"X-Reset-At": formatdate(NOW + 9, usegmt=True)},
            9.0,
        ),
    ],
)
def test_provider_wait_headers(rules: RetryRules, headers: dict[str, str], delay: float) -> None:
    assert run(policy(rules=rules), 503, headers) == RetryDecision(
        True, delay, "provider_header", hinted=True
    )


def test_the_longest_hinted_wait_wins() -> None:
    rules = RetryRules(after_headers=("X-A", "X-B"), at_headers=("X-At",))
    headers = {
        "Retry-After": "2",
        "X-A": "3",
        "X-B": "1",
        "X-At": str(int(NOW) + 4),
        "X-RateLimit-Reset": "6",
    }
    assert run(policy(rules=rules), 503, headers) == RetryDecision(
        True, 4.0, "provider_header", hinted=True
    )
    assert run(policy(rules=rules), 429, headers) == RetryDecision(
        True, 6.0, "rate_limit_reset", hinted=True
    )


def test_hints_are_looked_up_case_insensitively_through_a_lower_case_mapping() -> None:
    # A plain dict works when its keys are lower case.
    decision = decide(
        policy(rules=RetryRules(after_headers=("X-Wait",))),
        0,
        503,
        {"x-wait": "2"},
        remaining=60.0,
        now=NOW,
        rng=random.Random(0),
    )
    assert decision == RetryDecision(True, 2.0, "provider_header", hinted=True)


# --- how long: backoff -------------------------------------------------------------------


def test_backoff_doubles_with_equal_jitter() -> None:
    p = policy(max_delay=100.0)
    for attempt in range(6):
        ceiling = 0.25 * 2**attempt
        for seed in range(20):
            delay = backoff(p, attempt, random.Random(seed))
            assert ceiling / 2 <= delay <= ceiling


def test_backoff_is_capped_by_max_delay_even_for_huge_attempts() -> None:
    p = policy(max_delay=10.0)
    for attempt in (6, 10, 64, 10_000):
        assert 5.0 <= backoff(p, attempt, random.Random(attempt)) <= 10.0


def test_backoff_jitter_comes_from_the_injected_rng() -> None:
    p = policy()
    assert backoff(p, 3, random.Random(42)) == backoff(p, 3, random.Random(42))
    delays = {backoff(p, 3, random.Random(seed)) for seed in range(10)}
    assert len(delays) == 10


def test_network_error_backoff_delay() -> None:
    decision = run(policy(), None, attempt=1, seed=7)
    assert decision.retry
    assert decision.delay == backoff(policy(), 1, random.Random(7))


# --- the Retry-After handed back when a wait is refused ------------------------------------


def test_a_backoff_is_not_a_hint() -> None:
    assert not run(policy(), 503, {}).hinted
    assert not run(policy(), None).hinted
    refused = run(policy(), 503, {}, attempt=2, remaining=0.1)
    assert (refused.reason, refused.hinted) == ("deadline", False)


@pytest.mark.parametrize(
    ("headers", "remaining", "seconds"),
    [
        ({"Retry-After": "120"}, 60.0, 120),  # wait_too_long (max_delay 10)
        ({"Retry-After": "7"}, 3.0, 7),  # deadline
        ({"Retry-After": "2.2"}, 1.0, 3),  # rounded up, never down
        ({"Retry-After": formatdate(NOW + 30, usegmt=True)}, 60.0, 30),
        ({"X-RateLimit-Reset": str(int(NOW) + 45)}, 60.0, 45),  # epoch seconds
        ({"X-RateLimit-Reset": str(int(NOW * 1000) + 12_500)}, 60.0, 13),  # epoch ms
        ({"X-RateLimit-Reset": "8"}, 5.0, 8),  # delta
        ({"RateLimit-Reset": "9"}, 5.0, 9),
        ({"X-Rate-Limit-Reset": str(int(NOW) + 6)}, 5.0, 6),
    ],
)
def test_a_refused_429_gets_one_integer_retry_after(
    headers: dict[str, str], remaining: float, seconds: int
) -> None:
    decision = run(policy(max_delay=10.0), 429, headers, remaining=remaining)
    assert not decision.retry
    assert caller_retry_after(429, decision) == seconds


def test_a_refused_503_is_normalised_too() -> None:
    decision = run(policy(), 503, {"Retry-After": "99"})
    assert caller_retry_after(503, decision) == 99


@pytest.mark.parametrize(
    ("status", "decision"),
    [
        (429, RetryDecision(False, 0.0, "exhausted")),  # the caller asked for no retries
        (429, RetryDecision(False, 0.9, "deadline")),  # a backoff, not the server's word
        (502, RetryDecision(False, 30.0, "wait_too_long", hinted=True)),
        (429, RetryDecision(True, 3.0, "retry_after", hinted=True)),
        (404, RetryDecision(False, 0.0, "not_retryable")),
    ],
)
def test_nothing_is_normalised_otherwise(status: int, decision: RetryDecision) -> None:
    assert caller_retry_after(status, decision) is None


# --- status_rules ------------------------------------------------------------------------


def test_status_rules() -> None:
    assert status_rules(("403", "500-502", "3xx")) == frozenset(
        {403, 500, 501, 502, *range(300, 400)}
    )
    assert status_rules(()) == frozenset()


@pytest.mark.parametrize("rule", ["abc", "40", "4000", "5xy", "502-500", "x5x", "500-", "-"])
def test_unreadable_status_rules_are_an_error(rule: str) -> None:
    with pytest.raises(ValueError, match="error_code rule"):
        status_rules((rule,))


# --- header parsers ----------------------------------------------------------------------


@pytest.mark.parametrize(("value", "retries"), [("0", 0), ("3", 3), ("10", 10), (" 2 ", 2)])
def test_parse_retries(value: str, retries: int) -> None:
    assert parse_retries(value) == retries


@pytest.mark.parametrize("value", ["", "11", "-1", "+1", "1.5", "abc", "1e1", "\u0663", "99999"])
def test_parse_retries_rejects(value: str) -> None:
    with pytest.raises(ValueError, match="Retries must be an integer from 0 to 10"):
        parse_retries(value)


@pytest.mark.parametrize(
    ("value", "codes"),
    [
        ("429", {429}),
        ("429,503", {429, 503}),
        ("429 , 503,504", {429, 503, 504}),
        ("100,599", {100, 599}),
    ],
)
def test_parse_retry_on(value: str, codes: set[int]) -> None:
    assert parse_retry_on(value) == frozenset(codes)


@pytest.mark.parametrize(
    "value", ["", ",", "429,", ",429", "429,,503", "99", "600", "4290", "abc", "429;503", "5xx"]
)
def test_parse_retry_on_rejects(value: str) -> None:
    with pytest.raises(ValueError, match="Retry-On must be a comma-separated list"):
        parse_retry_on(value)
