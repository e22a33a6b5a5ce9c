"""The terminal stage: call the provider, retry what may be retried, stream the answer back.

Retries follow the caller's `Retries`/`Retry-On` and the provider's rules, wait with
jittered backoff or as `Retry-After` says, and never pass the request deadline. A body
that was streamed through cannot be sent twice, so such a request is never retried.
"""

from __future__ import annotations

import asyncio
import contextlib
import random
import time

from credentials.outbound import OutboundBlocked, check_url
from credentials.tasks import spawn
from proxy.bodies import RequestBody, read_body
from proxy.context import ProxyContext
from proxy.errors import OutboundRefused, ProxyError, UpstreamTimeout, UpstreamUnreachable
from proxy.http.client import Response
from proxy.pipeline_types import Terminal
from proxy.redirects import MAX_REDIRECTS, REDIRECT_STATUSES, next_hop
from proxy.retry import EXHAUSTED, RetryDecision, RetryPolicy, caller_retry_after, decide
from proxy.settings import ProxySettings
from proxy.stages.freshen import Reauthorize
from proxy.stages.inject import apply_credentials
from proxy.streaming import stream_back
from proxy.upstream import Upstream, UpstreamRequest


def forward(
    upstream: Upstream,
    settings: ProxySettings,
    reauthorize: Reauthorize | None = None,
    rng: random.Random | None = None,
) -> Terminal:
    jitter = rng or random.Random()

    async def terminal(ctx: ProxyContext) -> None:
        body = await read_body(
            ctx.request,
            limit=settings.max_body_bytes,
            replay_buffer=settings.replay_buffer_bytes,
        )
        # A wait for a rate-limit token was part of this request's time.
        deadline = asyncio.get_running_loop().time() + settings.total_timeout - ctx.rate_limit_wait
        exchange = _Exchange(ctx, upstream, body, deadline, settings.allow_private_upstreams)
        policy = _policy(ctx, settings, body)
        response = await _with_retries(ctx, exchange, policy, jitter, reauthorize)
        await stream_back(ctx, response)

    return terminal


def _policy(ctx: ProxyContext, settings: ProxySettings, body: RequestBody) -> RetryPolicy:
    return RetryPolicy(
        max_retries=ctx.control.retries if body.replayable else 0,
        retry_on=ctx.control.retry_on,
        rules=ctx.resolved.retry_rules,
        max_delay=settings.retry_max_delay,
    )


async def _with_retries(
    ctx: ProxyContext,
    exchange: _Exchange,
    policy: RetryPolicy,
    rng: random.Random,
    reauthorize: Reauthorize | None,
) -> Response:
    loop = asyncio.get_running_loop()
    attempt = 0
    reauthorized = reauthorize is None
    while True:
        started = loop.time()
        response: Response | None = None
        failure: UpstreamTimeout | UpstreamUnreachable | None = None
        try:
            response = await exchange.run()
        except (UpstreamTimeout, UpstreamUnreachable) as error:
            failure = error
        ctx.outcome.upstream_seconds += loop.time() - started
        if response is not None and response.status == 401 and not reauthorized:
            # Once per request, and outside the retry budget: renew, then replay if the
            # body can be sent again. Never a loop: a second 401 goes to the policy.
            reauthorized = True
            assert reauthorize is not None
            if await _replay_after_renewal(ctx, exchange, response, reauthorize):
                continue
        decision = (
            EXHAUSTED  # no retry left: nothing to decide, no header to decode
            if attempt >= policy.max_retries
            else decide(
                policy,
                attempt,
                response.status if response is not None else None,
                response.headers if response is not None else None,
                remaining=exchange.deadline - loop.time(),
                now=time.time(),
                rng=rng,
            )
        )
        if response is not None and response.status == 429:
            ctx.outcome.rate_limit = "provider"
        if not decision.retry:
            if response is None:
                assert failure is not None
                raise failure
            _normalise_retry_after(ctx, response.status, decision)
            return response
        if response is not None:
            response.release()
        await asyncio.sleep(decision.delay)
        attempt += 1
        ctx.outcome.retries = attempt
        ctx.outcome.retry_reasons.append(decision.reason)
        if ctx.resolved.injection.signer is not None:
            apply_credentials(ctx)  # a signature carries a nonce: never send one twice


def _normalise_retry_after(ctx: ProxyContext, status: int, decision: RetryDecision) -> None:
    # The provider's wait was too long for this request: the caller gets its answer with
    # one integer Retry-After, whatever spelling the provider used.
    seconds = caller_retry_after(status, decision)
    if seconds is not None:
        ctx.response_header_overrides.append(("Retry-After", str(seconds)))


async def _replay_after_renewal(
    ctx: ProxyContext,
    exchange: _Exchange,
    response: Response,
    reauthorize: Reauthorize,
) -> bool:
    """Renew the credentials after a 401; True when the request should be sent again."""
    if not exchange.body.replayable:
        # The body is gone, so the 401 goes back as it is; the renewal still happens so
        # the caller's retry gets fresh credentials.
        spawn(_renew_quietly(ctx, reauthorize), name="renew-after-401")
        return False
    try:
        renewed = await reauthorize(ctx)
    except BaseException:
        response.release()
        raise
    if renewed:
        response.release()
        ctx.outcome.reauthorized = True
    return renewed


async def _renew_quietly(ctx: ProxyContext, reauthorize: Reauthorize) -> None:
    # The caller has its 401; a failed renewal is recorded on the connection.
    with contextlib.suppress(ProxyError):
        await reauthorize(ctx)


class _Exchange:
    """One attempt: the request plus any redirects the provider answers with."""

    def __init__(
        self,
        ctx: ProxyContext,
        upstream: Upstream,
        body: RequestBody,
        deadline: float,
        allow_private: bool,
    ) -> None:
        self.ctx = ctx
        self.upstream = upstream
        self.body = body
        self.deadline = deadline
        self.allow_private = allow_private
        self.forward_credentials = _forward_credentials(ctx)

    async def run(self) -> Response:
        request = self._first_request()
        for hops in range(MAX_REDIRECTS + 1):
            self.ctx.outcome.upstream_host = _host(request.url)
            response = await self.upstream.send(
                request, deadline=self.deadline, decompress=self.ctx.control.decompress
            )
            following = self._follow(request, response) if hops < MAX_REDIRECTS else None
            if following is None:
                return response
            response.release()
            request = following
        raise AssertionError("the loop returns on its last hop")

    def _first_request(self) -> UpstreamRequest:
        headers = self.ctx.headers
        if self.body.data is not None and self.body.length is not None:
            headers = [*headers, ("Content-Length", str(self.body.length))]
        return UpstreamRequest(self.ctx.request.method, self.ctx.url, headers, self.body.data)

    def _follow(self, request: UpstreamRequest, response: Response) -> UpstreamRequest | None:
        if response.status not in REDIRECT_STATUSES:
            return None  # the common case, decided before any header is decoded
        hop = next_hop(
            method=request.method,
            url=request.url,
            status=response.status,
            location=response.headers.get("Location"),
            headers=request.headers,
            injected=self.ctx.injected_header_names,
            forward_credentials=self.forward_credentials,
        )
        if hop is None or (hop.keep_body and not self.body.replayable):
            return None
        try:
            check_url(hop.url, allow_private=self.allow_private)
        except OutboundBlocked as blocked:
            response.release()
            raise OutboundRefused.blocked(blocked.host, blocked.reason) from None
        return UpstreamRequest(
            hop.method, hop.url, hop.headers, request.body if hop.keep_body else None
        )


def _forward_credentials(ctx: ProxyContext) -> bool:
    asked = ctx.control.forward_headers_on_redirect
    return ctx.resolved.forward_headers_on_redirect if asked is None else asked


def _host(url: str) -> str:
    authority = url.split("://", 1)[-1].split("/", 1)[0].split("?", 1)[0]
    # Userinfo can hold credentials; it never goes into a log line.
    return authority.rsplit("@", 1)[-1]
