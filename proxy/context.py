"""What a proxied request carries through the pipeline.

The inbound `Request` is never modified; each stage fills in the part of the context it
owns (environment, params, target, outbound url and headers), the terminal stage writes
the provider's answer to `reply` and records the outcome the log line reports.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

from credentials.injectors import Injection
from credentials.models import Connection, Environment, Integration, Provider, RetryRules
from proxy.http.server import Reply, Request


@dataclass(frozen=True, slots=True)
class ProxyParams:
    """The Nango control headers, validated."""

    connection_id: str
    provider_config_key: str
    base_url_override: str | None = None
    retries: int = 0
    retry_on: frozenset[int] = frozenset()
    decompress: bool = False
    forward_headers_on_redirect: bool | None = None
    activity_log_id: str | None = None


@dataclass(frozen=True, slots=True)
class Target:
    """One connection, ready to call: computed once per cache fill, never per request.

    `base_url` is None when the provider's template could not be resolved; then
    `base_url_problem` says why, and only a `Base-Url-Override` can serve the call.
    `refresh_due_at` (epoch seconds) is when the credentials should be renewed; inf when
    they never expire or cannot be renewed. `injection_problem` says why the stored
    credentials cannot be injected (a renewable connection with no token yet, say); the
    freshen stage may still renew them, else the inject stage refuses the call.
    """

    connection: Connection
    integration: Integration
    provider: Provider
    injection: Injection
    base_url: str | None
    base_url_problem: str | None
    retry_rules: RetryRules
    forward_headers_on_redirect: bool
    refresh_due_at: float = math.inf
    injection_problem: str | None = None


@dataclass(slots=True)
class Outcome:
    """What happened, for the one log line (and the metrics) per request.

    `refresh` names what a credential renewal did for this request: `renewed`, `reused`
    (another flight or process had just renewed), or the failure reason. `retry_reasons`
    holds `RetryDecision.reason` of every retry taken. `rate_limit` says how a rate limit
    touched the request: `waited`, `rejected` (ours) or `provider` (a provider 429).
    """

    status: int = 0
    upstream_host: str = ""
    upstream_seconds: float = 0.0
    retries: int = 0
    retry_reasons: list[str] = field(default_factory=list)
    reauthorized: bool = False
    refresh: str | None = None
    rate_limit: str | None = None
    bytes_in: int = 0
    bytes_out: int = 0
    error_code: str | None = None
    responded_at: float = 0.0


@dataclass(slots=True)
class ProxyContext:
    request: Request
    reply: Reply
    request_id: str
    started: float
    environment: Environment | None = None
    params: ProxyParams | None = None
    target: Target | None = None
    endpoint_url: str = ""  # where the call goes, before credential query parameters
    url: str = ""  # the final upstream URL
    headers: list[tuple[str, str]] = field(default_factory=list)
    injected_header_names: frozenset[str] = frozenset()
    # Headers authgate sets on the provider's response (a normalised Retry-After, say);
    # each replaces every provider header of the same name.
    response_header_overrides: list[tuple[str, str]] = field(default_factory=list)
    outcome: Outcome = field(default_factory=Outcome)
    # Seconds spent waiting for a rate-limit token; the forward deadline shrinks by it.
    rate_limit_wait: float = 0.0

    # Stages run in a fixed order, so a missing value here is a pipeline bug, not input.
    @property
    def env(self) -> Environment:
        assert self.environment is not None, "authenticate runs before this stage"
        return self.environment

    @property
    def control(self) -> ProxyParams:
        assert self.params is not None, "parse runs before this stage"
        return self.params

    @property
    def resolved(self) -> Target:
        assert self.target is not None, "resolve runs before this stage"
        return self.target
