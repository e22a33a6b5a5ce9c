"""Header rules of the proxy: what goes upstream, what comes back.

Pure functions over lists of ``(name, value)`` pairs. Pairs rather than a dict because a
header may legitimately repeat (``Set-Cookie``, list-valued fields) and because header
names keep the caller's or provider's spelling; every comparison is case-insensitive
(RFC 9110 §5.1).

Upstream header precedence, lowest first (the order Nango applies, and what clients rely
on)::

    credential injector defaults  (e.g. authorization: Bearer <token>)
    < provider ``proxy.headers`` templates
    < the caller's headers as built by :func:`forwarded_request_headers`

Each step is one :func:`apply_overrides` call, so a caller may override even the injected
``Authorization`` with ``Nango-Proxy-Authorization`` (Nango allows it, and it is the
caller's own request). Nango makes one exception, a provider-defined ``user-agent`` beats
the caller's; a stage that wants that applies the provider layer last for that one name.
"""

from __future__ import annotations

from collections.abc import Iterable

Header = tuple[str, str]

# RFC 9110 §7.6.1 (connection options, plus the fields it names: Proxy-Connection,
# Keep-Alive, TE, Transfer-Encoding, Upgrade) and the proxy authentication fields of
# §11.7, which belong to one hop as well. "trailer" is kept from RFC 7230's list: a
# proxy that re-frames the body cannot promise the trailers it announces.
HOP_BY_HOP: frozenset[str] = frozenset(
    {
        "connection",
        "keep-alive",
        "proxy-connection",
        "proxy-authenticate",
        "proxy-authorization",
        "te",
        "trailer",
        "transfer-encoding",
        "upgrade",
    }
)

FORWARD_PREFIX = "nango-proxy-"
_PREFIX_LEN = len(FORWARD_PREFIX)

# W3C Trace Context (https://www.w3.org/TR/trace-context/): a caller's trace continues at
# the provider. Forwarded exactly as sent, every `tracestate` line included.
TRACE_CONTEXT: frozenset[str] = frozenset({"traceparent", "tracestate"})
# Plain (unprefixed) caller headers that describe the request body or the wanted
# representation, or carry the caller's trace, and therefore travel upstream (Nango drops
# them; we forward them, see DESIGN.md "do better"). Everything else the caller sends is
# about talking to *us*.
PASS_THROUGH: frozenset[str] = (
    frozenset({"content-type", "content-encoding", "accept"}) | TRACE_CONTEXT
)
CALLER_DEFAULTS: frozenset[str] = frozenset({"accept"})

# Never sent upstream, not even through the prefix: framing and routing belong to the
# HTTP client, and letting a caller set them is request smuggling (RFC 9112 §6.3, §11.2).
NEVER_FORWARDED: frozenset[str] = HOP_BY_HOP | {"host", "content-length"}


def forwarded_request_headers(incoming: Iterable[Header]) -> list[Header]:
    """The caller's headers that go upstream, before credential injection.

    ``Content-Type``, ``Content-Encoding``, ``Accept`` and the trace context
    (``traceparent``, ``tracestate``) pass through unless empty (the Node client sends
    some headers empty; empty means absent). ``Nango-Proxy-<Name>`` is sent as ``<Name>``
    (caller's spelling kept, value verbatim, empty allowed as in Nango), replaces every
    plain header of that name, and the last one of a name wins. Anything else (control
    headers, Authorization, Host, Cookie, X-Forwarded-*, ...) is dropped.
    """
    plain, prefixed = _caller_headers(incoming)
    out = [header for lower, header in plain if lower not in prefixed]
    out.extend(prefixed.values())
    return out


def caller_header_layers(incoming: Iterable[Header]) -> tuple[list[Header], list[Header]]:
    """The caller's upstream headers as two layers around the injected ones.

    A plain ``Accept`` is only a default: clients send one on every request (curl's
    ``*/*``, axios' ``application/json, text/plain, */*``), and it must not hide a media
    type the provider requires (GitHub's ``application/vnd.github+json``). The body's own
    description (``Content-Type``, ``Content-Encoding``) and every ``Nango-Proxy-`` header
    override what is injected. Returns ``(defaults, overrides)``.
    """
    plain, prefixed = _caller_headers(incoming)
    defaults: list[Header] = []
    overrides: list[Header] = []
    for lower, header in plain:
        if lower not in prefixed:
            (defaults if lower in CALLER_DEFAULTS else overrides).append(header)
    overrides.extend(prefixed.values())
    return defaults, overrides


def _caller_headers(
    incoming: Iterable[Header],
) -> tuple[list[tuple[str, Header]], dict[str, Header]]:
    plain: list[tuple[str, Header]] = []
    prefixed: dict[str, Header] = {}
    for name, value in incoming:
        lower = name.lower()
        if lower.startswith(FORWARD_PREFIX):
            target = lower[_PREFIX_LEN:]
            if target and target not in NEVER_FORWARDED:
                # Assigning to an existing key keeps its position and takes the new value:
                # the last occurrence wins.
                prefixed[target] = (name[_PREFIX_LEN:], value)
        elif value and lower in PASS_THROUGH:
            plain.append((lower, (name, value)))
    return plain, prefixed


def apply_overrides(base: Iterable[Header], overrides: Iterable[Header]) -> list[Header]:
    """``base`` with every name present in ``overrides`` replaced by the override lines.

    Case-insensitive; all base lines of an overridden name go (not just the first), and
    the override lines are kept as given, repeated ones included, after the base lines.
    """
    layer = overrides if isinstance(overrides, list | tuple) else list(overrides)
    if not layer:
        return list(base)
    replaced = {name.lower() for name, _ in layer}
    out = [header for header in base if header[0].lower() not in replaced]
    out.extend(layer)
    return out


def response_headers(upstream: Iterable[Header], *, decoded: bool = False) -> list[Header]:
    """The upstream response headers to send to the caller.

    Drops the hop-by-hop fields and every field the upstream ``Connection`` header names
    (RFC 9110 §7.6.1). Keeps repeated fields in order. When the upstream framed the body
    with ``Transfer-Encoding`` its ``Content-Length`` is meaningless (RFC 9112 §6.3) and is
    dropped, so the caller never sees both. ``decoded=True`` says the proxy decompressed
    the body: ``Content-Encoding`` and ``Content-Length`` then describe bytes the caller
    will not get, and go too.
    """
    lines = upstream if isinstance(upstream, list | tuple) else list(upstream)
    named: set[str] = set()
    framed = decoded
    for name, value in lines:
        lower = name.lower()
        if lower == "transfer-encoding":
            framed = True
        elif lower == "connection":
            # Connection = #connection-option, case-insensitive tokens (RFC 9110 §7.6.1).
            named.update(token.strip().lower() for token in value.split(","))
    if framed:
        named.add("content-length")
    if decoded:
        named.add("content-encoding")
    if not named:
        return [header for header in lines if header[0].lower() not in HOP_BY_HOP]
    drop = HOP_BY_HOP | named
    return [header for header in lines if header[0].lower() not in drop]
