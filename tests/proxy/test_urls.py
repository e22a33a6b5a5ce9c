from __future__ import annotations

from collections.abc import Awaitable, Callable

import aiohttp
import pytest
from aiohttp import web
from aiohttp.test_utils import RawTestServer

from proxy.urls import add_query, endpoint_from_target, join_url, path_for_log, request_url

RawServerFactory = Callable[..., Awaitable[RawTestServer]]

# --- endpoint_from_target ----------------------------------------------------------------


@pytest.mark.parametrize(
    ("target", "endpoint"),
    [
        ("/proxy/users/octocat?per_page=5", "/users/octocat?per_page=5"),
        ("/proxy", "/"),
        ("/proxy/", "/"),
        ("/proxy?x=1", "/?x=1"),
        ("/proxy/?x=1", "/?x=1"),
        ("/proxy//a", "//a"),
        ("/proxy/a%2Fb/c%20d?q=a%2Cb&q=c+d", "/a%2Fb/c%20d?q=a%2Cb&q=c+d"),
        ("/proxy/a/../b/./c/", "/a/../b/./c/"),
        ("/proxy/repos?", "/repos?"),
        ("/proxy/proxy/x", "/proxy/x"),
        ("http://127.0.0.1:3003/proxy/x?y=1", "/x?y=1"),
        ("http://127.0.0.1:3003/proxy?y=1", "/?y=1"),
        ("http://127.0.0.1:3003?y=1", None),
    ],
)
def test_endpoint_from_target(target: str, endpoint: str | None) -> None:
    if endpoint is None:
        with pytest.raises(ValueError, match="not under /proxy"):
            endpoint_from_target(target)
    else:
        assert endpoint_from_target(target) == endpoint


@pytest.mark.parametrize("target", ["/proxyx", "/other/proxy", "/", "*", "proxy/x", "/PROXY/x"])
def test_endpoint_from_target_rejects_targets_outside_proxy(target: str) -> None:
    with pytest.raises(ValueError, match=r"/proxy|origin"):
        endpoint_from_target(target)


# --- join_url ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("base", "endpoint", "url"),
    [
        ("https://api.github.com", "/users/octocat", "https://api.github.com/users/octocat"),
        ("https://api.github.com/", "/users/octocat", "https://api.github.com/users/octocat"),
        ("https://api.github.com//", "/x", "https://api.github.com//x"),
        ("https://x.io/v1", "///users", "https://x.io/v1/users"),
        ("https://x.io/v1", "/users/", "https://x.io/v1/users/"),
        ("https://x.io/v1", "/a//b", "https://x.io/v1/a//b"),
        ("https://x.io/v1", "/", "https://x.io/v1"),
        ("https://x.io/v1/", "", "https://x.io/v1"),
        ("https://x.io/v1", "/?x=1", "https://x.io/v1/?x=1"),
        ("https://x.io", "/s?a=1&a=2&b=%20+&c=&d", "https://x.io/s?a=1&a=2&b=%20+&c=&d"),
        ("https://x.io", "/p?", "https://x.io/p?"),
        ("https://x.io", "/a%2Fb?q=%E2%9C%93", "https://x.io/a%2Fb?q=%E2%9C%93"),
        # A caller may pass an absolute URL under the base.
        ("https://x.io/v1", "/https://x.io/v1/users", "https://x.io/v1/users"),
        ("https://x.io/v1", "https://x.io/v1", "https://x.io/v1"),
        ("https://x.io/v1", "https://x.io/v1?x=1", "https://x.io/v1/?x=1"),
        ("https://x.io/v1", "https://x.io/v1#f", "https://x.io/v1/#f"),
        # ...but only when the base ends there: not a longer host or path.
        ("https://x.io/v1", "https://x.io/v10/a", "https://x.io/v1/https://x.io/v10/a"),
        ("https://x.io", "https://x.io.evil.com/a", "https://x.io/https://x.io.evil.com/a"),
        ("https://x.io", "https://x.io@evil.com/", "https://x.io/https://x.io@evil.com/"),
    ],
)
def test_join_url(base: str, endpoint: str, url: str) -> None:
    assert join_url(base, endpoint) == url


# --- add_query ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("url", "params", "result"),
    [
        ("https://x.io/a", [("key", "v")], "https://x.io/a?key=v"),
        ("https://x.io/a?", [("key", "v")], "https://x.io/a?key=v"),
        ("https://x.io/a?b=%20+,:&b=2", [("key", "v")], "https://x.io/a?b=%20+,:&b=2&key=v"),
        ("https://x.io/a?key=old&b=1", [("key", "new")], "https://x.io/a?key=new&b=1"),
        ("https://x.io/a?key=1&b=1&key=2", [("key", "n")], "https://x.io/a?key=n&b=1"),
        ("https://x.io/a?api%5Fkey=1", [("api_key", "n")], "https://x.io/a?api_key=n"),
        ("https://x.io/a?my+key=1", [("my key", "n")], "https://x.io/a?my%20key=n"),
        ("https://x.io/a?keyx=1&key", [("key", "n")], "https://x.io/a?keyx=1&key=n"),
        ("https://x.io/a?x=1#frag", [("k", "v")], "https://x.io/a?x=1&k=v#frag"),
        ("https://x.io/a", [("a b", "c&d=e/f?")], "https://x.io/a?a%20b=c%26d%3De%2Ff%3F"),
        ("https://x.io/a", [("k", "✓")], "https://x.io/a?k=%E2%9C%93"),
        ("https://x.io/a", [("k", "1"), ("k", "2")], "https://x.io/a?k=2"),
        ("https://x.io/a", [("k", "1"), ("j", "2")], "https://x.io/a?k=1&j=2"),
        ("https://x.io/a?x=1&&y=2", [("k", "")], "https://x.io/a?x=1&&y=2&k="),
        ("https://x.io/a?x=1", [], "https://x.io/a?x=1"),
    ],
)
def test_add_query(url: str, params: list[tuple[str, str]], result: str) -> None:
    assert add_query(url, params) == result


# --- path_for_log ------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("endpoint", "path"),
    [
        ("/users?api_key=secret", "/users"),
        ("/users", "/users"),
        ("/a#b?c", "/a"),
        ("/a?b#c", "/a"),
        ("?only=query", ""),
    ],
)
def test_path_for_log_drops_query_and_fragment(endpoint: str, path: str) -> None:
    assert path_for_log(endpoint) == path


# --- request_url -------------------------------------------------------------------------


def test_request_url_keeps_a_clean_url_as_is() -> None:
    url = "https://x.io/a%2Fb/../c?x=1&x=2&y=%20+"
    assert str(request_url(url)) == url


@pytest.mark.parametrize(
    ("url", "expected"),
    [
        ("http://x.io/a b?q=c d", "http://x.io/a%20b?q=c%20d"),
        ("http://x.io/caf\u00e9?q=\u2713", "http://x.io/caf%C3%A9?q=%E2%9C%93"),
        ("http://x.io/a\r\nX-Injected: 1", "http://x.io/a%0D%0AX-Injected:%201"),
        ("http://x.io/a\tb\x00\x7f", "http://x.io/a%09b%00%7F"),
        ("http://ex\u00e4mple.com/a b", "http://xn--exmple-cua.com/a%20b"),
        ("http://x.io?a b", "http://x.io/?a%20b"),
    ],
)
def test_request_url_escapes_only_what_a_request_line_cannot_carry(url: str, expected: str) -> None:
    assert str(request_url(url)) == expected


async def _record_targets(
    aiohttp_raw_server: RawServerFactory, urls: list[str]
) -> list[tuple[str, str]]:
    """Send each URL (rooted at a real local server) and return (sent, received) targets."""
    seen: list[str] = []

    async def handler(request: web.BaseRequest) -> web.Response:
        seen.append(request.raw_path)
        return web.Response(text="ok")

    server = await aiohttp_raw_server(handler)
    root = f"http://127.0.0.1:{server.port}"
    async with aiohttp.ClientSession() as session:
        for url in urls:
            async with session.get(request_url(root + url)) as response:
                assert response.status == 200
    return list(zip(urls, seen, strict=True))


RAW_TARGETS = [
    "/a%2Fb//c/?x=1&x=2&y=%20+&z=&x=3",
    "/a/../b/./c/%2e%2e/d",
    "/repos/o/r/contents/dir%20name/file%2Bplus.txt",
    "/search?q=a%2Cb,c:d/e@f&filter[status]=open&sort=-created",
    '/weird|chars{x}"y"?j={"a":1}&p=\'q\'',
    "/%7Euser;params?a=%zz&b=%",
    "/?",
    "/p?&&",
]


async def test_aiohttp_sends_path_and_query_byte_for_byte(
    aiohttp_raw_server: RawServerFactory,
) -> None:
    sent_and_received = await _record_targets(aiohttp_raw_server, RAW_TARGETS[:-2])
    for sent, received in sent_and_received:
        assert received == sent


async def test_aiohttp_sends_escaped_bytes_for_unsendable_characters(
    aiohttp_raw_server: RawServerFactory,
) -> None:
    [(_, received)] = await _record_targets(aiohttp_raw_server, ["/caf\u00e9 x?q=\r\n"])
    assert received == "/caf%C3%A9%20x?q=%0D%0A"


async def test_known_limit_an_empty_query_is_not_sent(
    aiohttp_raw_server: RawServerFactory,
) -> None:
    # yarl has no empty query: "/?" leaves as "/". Everything after a non-empty "?" stays.
    received = [r for _, r in await _record_targets(aiohttp_raw_server, RAW_TARGETS[-2:])]
    assert received == ["/", "/p?&&"]
