from __future__ import annotations

import socket
from collections.abc import Awaitable, Callable
from ipaddress import IPv4Address, IPv6Address, ip_address

import aiohttp
import pytest
from aiohttp import web
from aiohttp.abc import AbstractResolver, ResolveResult
from aiohttp.test_utils import RawTestServer
from yarl import URL

from credentials.outbound import GuardedResolver, OutboundBlocked, blocked_reason, check_url

RawServerFactory = Callable[..., Awaitable[RawTestServer]]

# (address, reason when private upstreams are refused, reason when they are allowed)
CLASSIFICATION: list[tuple[str, str | None, str | None]] = [
    # IPv4, always blocked
    ("0.0.0.0", "unspecified", "unspecified"),
    ("0.1.2.3", "unspecified", "unspecified"),
    ("169.254.169.254", "metadata", "metadata"),
    ("169.254.170.2", "metadata", "metadata"),
    ("169.254.170.23", "metadata", "metadata"),
    ("100.100.100.200", "metadata", "metadata"),
    ("224.0.0.1", "multicast", "multicast"),
    ("239.255.255.250", "multicast", "multicast"),
    ("255.255.255.255", "broadcast", "broadcast"),
    ("240.0.0.1", "reserved", "reserved"),
    ("192.0.0.192", "reserved", "reserved"),
    ("192.0.2.1", "reserved", "reserved"),
    ("198.51.100.7", "reserved", "reserved"),
    ("203.0.113.9", "reserved", "reserved"),
    # IPv4, blocked unless private upstreams are allowed
    ("127.0.0.1", "loopback", None),
    ("127.255.255.254", "loopback", None),
    ("10.0.0.1", "private", None),
    ("10.255.255.255", "private", None),
    ("172.16.0.1", "private", None),
    ("172.31.255.255", "private", None),
    ("192.168.1.1", "private", None),
    ("100.64.0.1", "private", None),
    ("100.127.255.255", "private", None),
    ("198.18.0.1", "private", None),
    ("169.254.1.1", "link_local", None),
    # IPv4, public: the edges of the ranges above included
    ("8.8.8.8", None, None),
    ("140.82.112.3", None, None),
    ("1.0.0.0", None, None),
    ("9.255.255.255", None, None),
    ("11.0.0.0", None, None),
    ("172.15.255.255", None, None),
    ("172.32.0.0", None, None),
    ("100.63.255.255", None, None),
    ("100.128.0.0", None, None),
    ("126.255.255.255", None, None),
    ("128.0.0.0", None, None),
    ("223.255.255.255", None, None),
    # IPv6
    ("::", "unspecified", "unspecified"),
    ("fd00:ec2::254", "metadata", "metadata"),
    ("fd00:ec2::23", "metadata", "metadata"),
    ("ff02::1", "multicast", "multicast"),
    ("100::1", "reserved", "reserved"),
    ("2001:db8::1", "reserved", "reserved"),
    ("3fff::1", "reserved", "reserved"),
    ("::1", "loopback", None),
    ("fc00::1", "private", None),
    ("fd12:3456::1", "private", None),
    ("fec0::1", "private", None),
    ("64:ff9b:1::1", "private", None),
    ("fe80::1", "link_local", None),
    ("febf::1", "link_local", None),
    ("2606:4700:4700::1111", None, None),
    ("2a00:1450:4001::200e", None, None),
    # IPv4 inside IPv6: judged by the IPv4 address
    ("::ffff:127.0.0.1", "loopback", None),
    ("::ffff:10.1.2.3", "private", None),
    ("::ffff:169.254.169.254", "metadata", "metadata"),
    ("::ffff:0.0.0.0", "unspecified", "unspecified"),
    ("::ffff:8.8.8.8", None, None),
    ("::ffff:0:127.0.0.1", "loopback", None),  # SIIT IPv4-translated
    ("::127.0.0.1", "loopback", None),  # IPv4-compatible
    ("::10.0.0.1", "private", None),
    ("::8.8.8.8", None, None),
    ("64:ff9b::127.0.0.1", "loopback", None),  # NAT64
    ("64:ff9b::169.254.169.254", "metadata", "metadata"),
    ("64:ff9b::8.8.8.8", None, None),
    ("2002:7f00:1::", "loopback", None),  # 6to4
    ("2002:a9fe:a9fe::1", "metadata", "metadata"),
    ("2002:c0a8:101::1", "private", None),
    ("2002:808:808::1", None, None),
    # Teredo 2001:0:<server>:<flags>:<port>:<client, inverted>
    ("2001:0:808:808::80ff:fffe", "loopback", None),  # client 127.0.0.1
    ("2001:0:a00:1::f7f7:f7f7", "private", None),  # server 10.0.0.1
    ("2001:0:808:808::5601:5601", "metadata", "metadata"),  # client 169.254.169.254
    ("2001:0:808:808::f7f7:f7f7", None, None),  # both 8.8.8.8
]


@pytest.mark.parametrize(("address", "strict", "relaxed"), CLASSIFICATION)
def test_blocked_reason(address: str, strict: str | None, relaxed: str | None) -> None:
    parsed = ip_address(address)
    assert blocked_reason(parsed, allow_private=False) == strict
    assert blocked_reason(parsed, allow_private=True) == relaxed


def test_teredo_client_address_is_the_inverted_low_word() -> None:
    # Guards the Teredo rows above: (server, client), the client stored bit-inverted.
    teredo = IPv6Address("2001:0:808:808::5601:5601").teredo
    assert teredo == (IPv4Address("8.8.8.8"), IPv4Address("169.254.169.254"))


# --- check_url ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("url", "reason"),
    [
        ("http://127.0.0.1/", "loopback"),
        ("HTTP://127.0.0.1:8080/x", "loopback"),
        ("http://127.1/", "loopback"),
        ("http://0x7f.1/", "loopback"),
        ("http://0x7F.0.0.1/", "loopback"),
        ("http://0x7f000001/", "loopback"),
        ("http://2130706433/", "loopback"),
        ("http://017700000001/", "loopback"),
        ("http://0177.0.0.1/", "loopback"),
        ("http://127.0.0.1./", "loopback"),
        ("http://127.0.0.1../", "loopback"),
        ("http://[::1]/", "loopback"),
        ("http://[::ffff:127.0.0.1]/", "loopback"),
        ("http://[::ffff:7f00:1]/", "loopback"),
        ("http://[0:0:0:0:0:ffff:127.0.0.1]/", "loopback"),
        ("http://user:pw@127.0.0.1/", "loopback"),
        ("http://a@b@10.0.0.1/", "private"),
        ("https://10.1.2.3/", "private"),
        ("http://[fe80::1%25eth0]/", "link_local"),
        ("http://0/", "unspecified"),
        ("http://0.0.0.0:8080/", "unspecified"),
        ("http://169.254.169.254/latest/meta-data/", "metadata"),
        ("http://[fd00:ec2::254]/", "metadata"),
        ("ftp://example.com/", "bad_scheme"),
        ("file:///etc/passwd", "bad_scheme"),
        ("gopher://127.0.0.1:6379/_", "bad_scheme"),
        ("javascript:alert(1)", "bad_scheme"),
        ("example.com/path", "bad_scheme"),
        ("http:///x", "no_host"),
        ("http://evil.com\\@127.0.0.1/", "bad_url"),
        ("http://4294967296/", "bad_host"),
        ("http://1.2.3.4.5/", "bad_host"),
        ("http://[1::2::3]/", "bad_host"),
        ("http://127.0.0.1 junk/", "bad_host"),
    ],
)
def test_check_url_refuses(url: str, reason: str) -> None:
    with pytest.raises(OutboundBlocked) as refused:
        check_url(url, allow_private=False)
    assert refused.value.reason == reason


@pytest.mark.parametrize(
    "url",
    [
        "https://api.github.com/users/octocat",
        "http://8.8.8.8/",
        "https://[2606:4700:4700::1111]:8443/x",
        "http://[::ffff:8.8.8.8]/",
        # Names are the resolver's business.
        "http://localhost:3003/",
        "http://0x7f.example.com/",
        "http://1.2.3.4.example/",
        "https://cafe.be/",
        "https://face.b00c/",
    ],
)
def test_check_url_allows(url: str) -> None:
    check_url(url, allow_private=False)


@pytest.mark.parametrize("url", ["http://127.1/", "http://[::1]:80/", "http://10.0.0.1/"])
def test_check_url_allows_private_literals_when_told_to(url: str) -> None:
    check_url(url, allow_private=True)


@pytest.mark.parametrize(
    ("url", "reason"),
    [
        ("http://169.254.169.254/", "metadata"),
        ("http://0.0.0.0/", "unspecified"),
        ("http://[::ffff:169.254.169.254]/", "metadata"),
    ],
)
def test_check_url_always_refuses_metadata_and_unspecified(url: str, reason: str) -> None:
    with pytest.raises(OutboundBlocked) as refused:
        check_url(url, allow_private=True)
    assert refused.value.reason == reason


def test_check_url_accepts_a_parsed_url_and_names_the_host() -> None:
    with pytest.raises(OutboundBlocked) as refused:
        check_url(URL("http://10.0.0.7:9000/x"), allow_private=False)
    assert refused.value.host == "10.0.0.7"
    assert "10.0.0.7" in str(refused.value)
    assert "private" in str(refused.value)


# --- GuardedResolver on real sockets -------------------------------------------------------


class StaticResolver(AbstractResolver):
    """A resolver with a fixed table, standing in for DNS answers we cannot make real."""

    def __init__(self, table: dict[str, list[str]]) -> None:
        self._table = table

    async def resolve(
        self, host: str, port: int = 0, family: socket.AddressFamily = socket.AF_INET
    ) -> list[ResolveResult]:
        return [
            ResolveResult(
                hostname=host,
                host=address,
                port=port,
                family=socket.AF_INET6 if ":" in address else socket.AF_INET,
                proto=0,
                flags=socket.AI_NUMERICHOST,
            )
            for address in self._table[host]
        ]

    async def close(self) -> None:
        return None


async def _local_server(aiohttp_raw_server: RawServerFactory) -> tuple[int, list[str]]:
    hosts: list[str] = []

    async def handler(request: web.BaseRequest) -> web.Response:
        hosts.append(request.headers.get("Host", ""))
        return web.Response(text="reached")

    server = await aiohttp_raw_server(handler)
    assert server.port is not None
    return server.port, hosts


def _session(resolver: AbstractResolver) -> aiohttp.ClientSession:
    return aiohttp.ClientSession(connector=aiohttp.TCPConnector(resolver=resolver))


async def test_localhost_is_refused_before_any_connection(
    aiohttp_raw_server: RawServerFactory,
) -> None:
    port, hosts = await _local_server(aiohttp_raw_server)
    async with _session(GuardedResolver(allow_private=False)) as session:
        with pytest.raises(OutboundBlocked) as refused:
            await session.get(f"http://localhost:{port}/")
    assert refused.value.reason == "loopback"
    assert refused.value.host == "localhost"
    assert hosts == []


async def test_localhost_is_reachable_when_private_upstreams_are_allowed(
    aiohttp_raw_server: RawServerFactory,
) -> None:
    port, hosts = await _local_server(aiohttp_raw_server)
    async with (
        _session(GuardedResolver(allow_private=True)) as session,
        session.get(f"http://localhost:{port}/") as response,
    ):
        assert response.status == 200
        assert await response.text() == "reached"
    assert hosts == [f"localhost:{port}"]


async def test_a_refusal_is_not_an_aiohttp_or_os_error(
    aiohttp_raw_server: RawServerFactory,
) -> None:
    # aiohttp passes a non-OSError from the resolver through unwrapped; so a handler
    # catching ClientError/OSError to retry network failures never swallows it.
    port, _ = await _local_server(aiohttp_raw_server)
    async with _session(GuardedResolver(allow_private=False)) as session:
        with pytest.raises(OutboundBlocked) as refused:
            await session.get(f"http://localhost:{port}/")
    assert not isinstance(refused.value, aiohttp.ClientError | OSError)


async def test_a_dns_failure_surfaces_as_client_connector_dns_error() -> None:
    # .invalid never resolves (RFC 6761 §6.4); aiohttp wraps the resolver's OSError.
    async with _session(GuardedResolver(allow_private=False)) as session:
        with pytest.raises(aiohttp.ClientConnectorDNSError) as failed:
            await session.get("http://authgate-test.invalid/")
    assert isinstance(failed.value.os_error, socket.gaierror)
    assert failed.value.__cause__ is failed.value.os_error
    assert not isinstance(failed.value, OutboundBlocked)


async def test_legacy_ipv4_spellings_reaching_the_resolver_are_refused(
    aiohttp_raw_server: RawServerFactory,
) -> None:
    # aiohttp does not take "0x7f.1" for an address, so it asks the resolver, and the OS
    # resolver reads it as 127.0.0.1: the guard sees the real address.
    port, hosts = await _local_server(aiohttp_raw_server)
    async with _session(GuardedResolver(allow_private=False)) as session:
        with pytest.raises(OutboundBlocked) as refused:
            await session.get(f"http://0x7f.1:{port}/")
    assert refused.value.reason == "loopback"
    assert hosts == []


async def test_aiohttp_skips_the_resolver_for_ip_literals(
    aiohttp_raw_server: RawServerFactory,
) -> None:
    # Why check_url exists: the guard never sees http://127.0.0.1/.
    port, hosts = await _local_server(aiohttp_raw_server)
    url = f"http://127.0.0.1:{port}/"
    async with _session(GuardedResolver(allow_private=False)) as session:
        async with session.get(url) as response:
            assert response.status == 200
        assert hosts == [f"127.0.0.1:{port}"]
    with pytest.raises(OutboundBlocked):
        check_url(url, allow_private=False)


async def test_a_name_is_refused_if_any_of_its_addresses_is_blocked(
    aiohttp_raw_server: RawServerFactory,
) -> None:
    # DNS rebinding: one public and one internal answer must not let a connection through.
    port, hosts = await _local_server(aiohttp_raw_server)
    inner = StaticResolver({"upstream.test": ["8.8.8.8", "127.0.0.1"]})
    async with _session(GuardedResolver(allow_private=False, resolver=inner)) as session:
        with pytest.raises(OutboundBlocked) as refused:
            await session.get(f"http://upstream.test:{port}/")
    assert refused.value.reason == "loopback"
    assert hosts == []


async def test_the_connection_goes_to_the_vetted_address(
    aiohttp_raw_server: RawServerFactory,
) -> None:
    port, hosts = await _local_server(aiohttp_raw_server)
    inner = StaticResolver({"upstream.test": ["127.0.0.1"]})
    async with (
        _session(GuardedResolver(allow_private=True, resolver=inner)) as session,
        session.get(f"http://upstream.test:{port}/") as response,
    ):
        assert await response.text() == "reached"
    assert hosts == [f"upstream.test:{port}"]


async def test_metadata_stays_refused_when_private_upstreams_are_allowed() -> None:
    inner = StaticResolver({"metadata.google.internal": ["169.254.169.254"]})
    async with _session(GuardedResolver(allow_private=True, resolver=inner)) as session:
        with pytest.raises(OutboundBlocked) as refused:
            await session.get("http://metadata.google.internal/computeMetadata/v1/")
    assert refused.value.reason == "metadata"


async def test_ipv6_mapped_answers_are_judged_by_their_ipv4_address() -> None:
    inner = StaticResolver({"mapped.test": ["::ffff:10.0.0.5"]})
    async with _session(GuardedResolver(allow_private=False, resolver=inner)) as session:
        with pytest.raises(OutboundBlocked) as refused:
            await session.get("http://mapped.test/")
    assert refused.value.reason == "private"


async def test_close_closes_the_wrapped_resolver() -> None:
    closed: list[bool] = []

    class Closing(StaticResolver):
        async def close(self) -> None:
            closed.append(True)

    guard = GuardedResolver(allow_private=False, resolver=Closing({}))
    await guard.close()
    assert closed == [True]
