"""Which URLs may receive an environment's or a connection's webhooks (Nango's rule).

A webhook URL is where authgate will later send requests on the caller's behalf, so it
must not aim at this machine, the private network, link-local addresses (cloud metadata
among them) or Nango's own domain. `""` is allowed: it clears an override. Hosts are
checked as written; a name that resolves to a private address is the sender's concern
(the outbound SSRF policy), since DNS can change between now and the first delivery.
"""

from __future__ import annotations

import ipaddress
import re
import socket
from urllib.parse import urlsplit

INVALID_URL = "Invalid URL"
NANGO_DOMAIN = "Webhook URL cannot point to nango.dev"
PRIVATE_ADDRESS = "Webhook URL cannot point to a loopback, private or link-local address"

# A host whose last label is a number is an IPv4 address in a URL, even in the legacy
# shorthand forms (`127.1`, `2130706433`, `0x7f.1`) that browsers and fetch still accept.
_NUMERIC_HOST = re.compile(r"(?:[0-9a-fx]+\.)*(?:0x[0-9a-f]*|[0-9]+)\.?", re.IGNORECASE)

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address


def webhook_url_problem(url: str) -> str | None:
    """Why `url` may not receive webhooks, or None when it may."""
    if url == "":
        return None
    host = _host(url)
    if host is None:
        return INVALID_URL
    if host == "nango.dev" or host.endswith(".nango.dev"):
        return NANGO_DOMAIN
    if host == "localhost" or host.endswith(".localhost"):
        return PRIVATE_ADDRESS
    try:
        address = _address(host)
    except ValueError:
        return INVALID_URL
    if address is not None and _is_internal(address):
        return PRIVATE_ADDRESS
    return None


def _host(url: str) -> str | None:
    """The lower-cased host of an absolute http(s) URL, or None if it is not one."""
    if any(character.isspace() or ord(character) < 0x20 for character in url):
        return None
    try:
        parts = urlsplit(url)
        _ = parts.port  # raises on a port that is not a number in range
    except ValueError:
        return None
    host = (parts.hostname or "").rstrip(".")
    if parts.scheme.lower() not in ("http", "https") or not host:
        return None
    return host.lower()


def _address(host: str) -> IPAddress | None:
    """The IP address the host spells, None for a name; ValueError for a bad number."""
    try:
        return ipaddress.ip_address(host)
    except ValueError:
        pass
    if ":" in host:  # only an IPv6 literal may hold a colon, and it did not parse
        raise ValueError(host)
    if not _NUMERIC_HOST.fullmatch(host):
        return None
    try:
        return ipaddress.IPv4Address(socket.inet_aton(host))
    except OSError:
        raise ValueError(host) from None


def _is_internal(address: IPAddress) -> bool:
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        address = address.ipv4_mapped
    return (
        address.is_loopback or address.is_private or address.is_link_local or address.is_unspecified
    )
