"""Outbound (SSRF) policy: which addresses the proxy and the token client may connect to.

Two checks, because aiohttp has two ways to a socket:

* :func:`check_url` -- before a request: scheme http/https, a host, and, when the host
  is an IP literal, its classification. aiohttp never calls the resolver for an IP
  literal, so this is the only check such a URL gets. Older aiohttp versions hand legacy
  IPv4 spellings (``127.1``, ``2130706433``, ``0x7f.1``) to the OS, which reads them the
  way ``inet_aton`` does; so do we.
* :class:`GuardedResolver` -- for host names: resolve, and refuse if *any* address is
  blocked. aiohttp's connector connects only to the addresses its resolver returned
  (and caches exactly those), so what was checked is what is connected to: DNS pinning,
  no rebinding window.

How a refusal reaches the caller (found by test against aiohttp 3.14, see
tests/credentials/test_outbound.py): aiohttp wraps an ``OSError`` raised by a resolver in
``aiohttp.ClientConnectorDNSError`` (``__cause__`` and ``.os_error`` are the original);
any other exception propagates unchanged. :class:`OutboundBlocked` is deliberately not an
``OSError``, so::

    try:
        response = await session.get(url)
    except OutboundBlocked as blocked:        # policy: never retry; blocked.reason
        ...
    except aiohttp.ClientConnectorDNSError:   # the name did not resolve (.os_error)
        ...
    except aiohttp.ClientError:               # any other network failure
        ...

A handler that catches ``aiohttp.ClientError`` (to retry network errors, say) therefore
cannot swallow a policy refusal by accident.

Not covered here: an HTTP proxy configured for the session (``trust_env``/``proxy=``)
makes aiohttp resolve the proxy, not the target, so the guard then vets the wrong host.
"""

from __future__ import annotations

import socket
from collections.abc import Iterable
from ipaddress import IPv4Address, IPv6Address, ip_address

import aiohttp
from aiohttp.abc import AbstractResolver, ResolveResult
from aiohttp.resolver import DefaultResolver
from yarl import URL

Address = IPv4Address | IPv6Address

ALLOWED_SCHEMES = frozenset({"http", "https"})


class OutboundBlocked(Exception):
    """The outbound policy refused a destination. ``reason`` is a short identifier
    ("loopback", "private", "metadata", "bad_scheme", ...) fit for a metric label."""

    def __init__(self, host: str, reason: str) -> None:
        super().__init__(f"outbound connection to {host!r} refused by policy: {reason}")
        self.host = host
        self.reason = reason


# (network, prefix length, reason). Always blocked: nothing legitimate lives there, and
# the metadata services hand out cloud credentials.
_ALWAYS_V4 = (
    ("169.254.169.254", 32, "metadata"),  # AWS, GCP, Azure, OCI, DigitalOcean, ...
    ("169.254.170.2", 32, "metadata"),  # AWS ECS task credentials
    ("169.254.170.23", 32, "metadata"),  # AWS EKS pod identity agent
    ("100.100.100.200", 32, "metadata"),  # Alibaba Cloud
    ("0.0.0.0", 8, "unspecified"),  # "this network" (RFC 791); 0.0.0.0 reaches the host
    ("255.255.255.255", 32, "broadcast"),
    ("224.0.0.0", 4, "multicast"),
    ("240.0.0.0", 4, "reserved"),  # RFC 1112 class E
    ("192.0.0.0", 24, "reserved"),  # IETF protocol assignments (RFC 6890)
    ("192.0.2.0", 24, "reserved"),  # documentation (RFC 5737)
    ("198.51.100.0", 24, "reserved"),
    ("203.0.113.0", 24, "reserved"),
)
# Blocked unless the operator allows private upstreams (tests, sidecars).
_PRIVATE_V4 = (
    ("127.0.0.0", 8, "loopback"),
    ("10.0.0.0", 8, "private"),  # RFC 1918
    ("172.16.0.0", 12, "private"),
    ("192.168.0.0", 16, "private"),
    ("100.64.0.0", 10, "private"),  # carrier-grade NAT, shared address space (RFC 6598)
    ("198.18.0.0", 15, "private"),  # benchmarking (RFC 2544), used for internal fake-IP DNS
    ("169.254.0.0", 16, "link_local"),  # RFC 3927
)
_ALWAYS_V6 = (
    ("fd00:ec2::254", 128, "metadata"),  # AWS IMDS over IPv6
    ("fd00:ec2::23", 128, "metadata"),  # AWS EKS pod identity agent over IPv6
    ("::", 128, "unspecified"),
    ("ff00::", 8, "multicast"),
    ("100::", 64, "reserved"),  # discard-only (RFC 6666)
    ("2001:db8::", 32, "reserved"),  # documentation (RFC 3849)
    ("3fff::", 20, "reserved"),  # documentation (RFC 9637)
)
_PRIVATE_V6 = (
    ("::1", 128, "loopback"),
    ("fc00::", 7, "private"),  # unique local (RFC 4193)
    ("fec0::", 10, "private"),  # deprecated site-local (RFC 3879)
    ("64:ff9b:1::", 48, "private"),  # local-use NAT64 (RFC 8215)
    ("fe80::", 10, "link_local"),
)

_Table = tuple[tuple[int, int, str], ...]


def _compile(entries: Iterable[tuple[str, int, str]], bits: int) -> _Table:
    table = []
    for network, prefix, reason in entries:
        mask = ((1 << prefix) - 1) << (bits - prefix)
        table.append((mask, int(ip_address(network)) & mask, reason))
    return tuple(table)


_ALWAYS_V4_T = _compile(_ALWAYS_V4, 32)
_PRIVATE_V4_T = _compile(_PRIVATE_V4, 32)
_ALWAYS_V6_T = _compile(_ALWAYS_V6, 128)
_PRIVATE_V6_T = _compile(_PRIVATE_V6, 128)


def _lookup(value: int, table: _Table) -> str | None:
    for mask, network, reason in table:
        if value & mask == network:
            return reason
    return None


def blocked_reason(address: Address, *, allow_private: bool) -> str | None:
    """Why ``address`` may not be connected to, or None when it may.

    An IPv6 address that carries an IPv4 address (mapped, compatible, NAT64, 6to4,
    Teredo) is judged by the IPv4 address, since that is where the packets end up.
    """
    if isinstance(address, IPv6Address):
        embedded = _embedded_ipv4(address)
        if embedded:
            for inner in embedded:
                reason = blocked_reason(inner, allow_private=allow_private)
                if reason is not None:
                    return reason
            return None
        value = int(address)
        always, private = _ALWAYS_V6_T, _PRIVATE_V6_T
    else:
        value = int(address)
        always, private = _ALWAYS_V4_T, _PRIVATE_V4_T
    reason = _lookup(value, always)
    if reason is None and not allow_private:
        reason = _lookup(value, private)
    return reason


_V4_MAPPED = int(IPv6Address("::ffff:0:0"))  # ::ffff:0:0/96 (RFC 4291 §2.5.5.2)
_V4_TRANSLATED = int(IPv6Address("::ffff:0:0:0"))  # ::ffff:0:0:0/96 (RFC 2765 SIIT)
_NAT64 = int(IPv6Address("64:ff9b::"))  # 64:ff9b::/96 (RFC 6052)
_LOW32 = (1 << 32) - 1
_HIGH96 = ((1 << 128) - 1) ^ _LOW32


def _embedded_ipv4(address: IPv6Address) -> tuple[IPv4Address, ...]:
    value = int(address)
    high = value & _HIGH96
    if high in (_V4_MAPPED, _V4_TRANSLATED, _NAT64):
        return (IPv4Address(value & _LOW32),)
    if high == 0 and value > 1:
        # IPv4-compatible ::a.b.c.d (RFC 4291 §2.5.5.1, deprecated); :: and ::1 are not.
        return (IPv4Address(value & _LOW32),)
    if value >> 112 == 0x2002:
        # 6to4 2002:AABB:CCDD::/48 (RFC 3056).
        return (IPv4Address((value >> 80) & _LOW32),)
    teredo = address.teredo  # 2001::/32: (server, client) (RFC 4380)
    if teredo is not None:
        return (teredo[1], teredo[0])
    return ()


def check_url(url: str | URL, *, allow_private: bool) -> None:
    """Raise :class:`OutboundBlocked` unless ``url`` is an http(s) URL with a host that,
    if it is an IP literal, may be connected to. Host names are left to the resolver.

    A string is parsed with yarl exactly as aiohttp will parse it, so the host checked
    is the host connected to.
    """
    try:
        parsed = url if isinstance(url, URL) else URL(url, encoded=True)
    except ValueError:
        raise OutboundBlocked(str(url)[:100], "bad_url") from None
    try:
        host = parsed.raw_host
    except ValueError:
        raise OutboundBlocked(str(url)[:100], "bad_url") from None
    if parsed.scheme not in ALLOWED_SCHEMES:
        raise OutboundBlocked(host or "", "bad_scheme")
    if not host:
        raise OutboundBlocked("", "no_host")
    address = ip_literal(host)
    if address is None:
        if _skips_resolver(host) or not host.isprintable() or " " in host:
            # Looks like an address to aiohttp (so it would skip the resolver) but is
            # not one we can read, or holds bytes no host name has (glibc's inet_aton
            # reads "127.0.0.1 junk" as 127.0.0.1): refuse rather than guess.
            raise OutboundBlocked(host, "bad_host")
        return
    reason = blocked_reason(address, allow_private=allow_private)
    if reason is not None:
        raise OutboundBlocked(host, reason)


def _skips_resolver(host: str) -> bool:
    # aiohttp's own test for "this is an IP address, do not resolve it"
    # (aiohttp.helpers.is_ip_address).
    return ":" in host or host.replace(".", "").isdigit()


def ip_literal(host: str) -> Address | None:
    """The address ``host`` spells, or None for a name.

    Bracketless IPv6 (``::1``, with an optional ``%zone``), and IPv4 in every spelling
    ``inet_aton`` accepts: dotted quad, fewer parts (``127.1``), one number
    (``2130706433``), octal (``017700000001``) and hex (``0x7f.1``) parts. A trailing dot
    (``127.0.0.1.``) does not make it a name.
    """
    if ":" in host:
        try:
            return IPv6Address(host.replace("%25", "%", 1))
        except ValueError:
            return None
    host = host.rstrip(".")
    # Only a host whose last label is a number can be an IPv4 address (the same test
    # the WHATWG URL parser uses); real names never pay for the parse below.
    last = host.rpartition(".")[2]
    if not (last.isdigit() or last[:2].lower() == "0x") or not host.isascii():
        return None
    try:
        return IPv4Address(socket.inet_aton(host))
    except OSError:
        return None


class GuardedResolver(AbstractResolver):
    """aiohttp resolver that refuses a host if any address it resolves to is blocked.

    Wraps another resolver (aiohttp's default when none is given, created lazily on the
    running loop). Raises :class:`OutboundBlocked`; see the module docstring for how it
    reaches the caller.
    """

    def __init__(self, *, allow_private: bool, resolver: AbstractResolver | None = None) -> None:
        self._allow_private = allow_private
        self._resolver = resolver

    async def resolve(
        self, host: str, port: int = 0, family: socket.AddressFamily = socket.AF_INET
    ) -> list[ResolveResult]:
        if self._resolver is None:
            self._resolver = DefaultResolver()
        results = await self._resolver.resolve(host, port, family)
        for result in results:
            reason = blocked_reason(ip_address(result["host"]), allow_private=self._allow_private)
            if reason is not None:
                raise OutboundBlocked(host, reason)
        return results

    async def close(self) -> None:
        if self._resolver is not None:
            await self._resolver.close()


# Resolver answers are reused this long by the guarded sessions (they re-check each one).
GUARDED_DNS_CACHE_SECONDS = 30


def guarded_session(*, allow_private: bool, connect_timeout: float) -> aiohttp.ClientSession:
    """A client session for server-side calls (token endpoints, webhooks): every address
    it connects to passes the policy, no cookie is kept between calls, and only the
    connect phase is bounded here (callers bound the rest)."""
    connector = aiohttp.TCPConnector(
        resolver=GuardedResolver(allow_private=allow_private),
        ttl_dns_cache=GUARDED_DNS_CACHE_SECONDS,
    )
    return aiohttp.ClientSession(
        connector=connector,
        cookie_jar=aiohttp.DummyCookieJar(),
        timeout=aiohttp.ClientTimeout(total=None, sock_connect=connect_timeout),
    )
