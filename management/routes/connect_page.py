"""The Connect page: what a connect session's `connect_link` opens, and what
`openConnectUI({baseURL})` of `@nangohq/frontend` puts in its iframe.

Three files from `management/connect_ui/`, read once. The page is rendered with asset URLs
that carry a hash of their content, so the assets can be cached for good while a new
release is picked up at once; the page itself is never cached (its URL holds a session
token). Every route is public: the page only acts with the session token it is handed,
and fetches everything else with it.

Security headers, and why:
- CSP without `unsafe-inline` anywhere; `connect-src` names this server (`'self'`, the
  public URL, and the WebSocket origins of both), so a crafted `apiURL` cannot send the
  token or the credentials a user types anywhere else.
- `frame-ancestors *`: any application may frame the page, as Nango's Connect UI allows.
  Framing gains a site nothing: the page does nothing until the framing page hands it a
  session token, which that site then already has, and the OAuth consent itself happens
  in a top-level window on the provider's own origin.
- `Referrer-Policy: no-referrer`, so the token in the link never leaves in a Referer.
"""

from __future__ import annotations

import gzip
import hashlib
import re
from dataclasses import dataclass
from functools import cache
from importlib import resources
from urllib.parse import urlsplit

from aiohttp import web

from management.auth import public
from management.errors import ApiError
from management.request_context import SETTINGS

PAGE_FILE = "index.html"
ASSET_FILES = {"connect.js": "text/javascript", "connect.css": "text/css"}
HASH_LENGTH = 16
IMMUTABLE = "public, max-age=31536000, immutable"
REVALIDATE = "no-cache"
# What may follow `Host:` to be repeated in the CSP: a name or an address, and a port.
_HOST = re.compile(r"^(?:[A-Za-z0-9.-]+|\[[0-9A-Fa-f:.]+\])(?::[0-9]{1,5})?$")


@dataclass(frozen=True, slots=True)
class Asset:
    body: bytes
    gzipped: bytes
    content_type: str
    etag: str
    gzip_etag: str
    hashed_name: str


@dataclass(frozen=True, slots=True)
class Bundle:
    """The page, as served at `/connect/` and at `/connect`, and the assets by name (both
    the plain and the hashed name)."""

    page_with_slash: bytes
    page_without_slash: bytes
    assets: dict[str, Asset]


def add_routes(router: web.UrlDispatcher) -> None:
    router.add_get("/connect", connect_page)
    router.add_get("/connect/", connect_page)
    router.add_get("/connect/assets/{name}", connect_asset)


@public
async def connect_page(request: web.Request) -> web.Response:
    bundle = load_bundle()
    page = bundle.page_with_slash if request.path.endswith("/") else bundle.page_without_slash
    headers = {
        "Cache-Control": "no-store",
        "Content-Security-Policy": content_security_policy(
            request.app[SETTINGS].public_url, request.host
        ),
        "Referrer-Policy": "no-referrer",
        "X-Content-Type-Options": "nosniff",
    }
    return web.Response(body=page, content_type="text/html", charset="utf-8", headers=headers)


@public
async def connect_asset(request: web.Request) -> web.Response:
    name = request.match_info["name"]
    asset = load_bundle().assets.get(name)
    if asset is None:
        raise ApiError(404, "not_found", "No such file")
    zipped = _accepts_gzip(request.headers.get("Accept-Encoding", ""))
    # Each encoding is its own representation, so each has its own validator.
    etag = asset.gzip_etag if zipped else asset.etag
    headers = {
        "Cache-Control": IMMUTABLE if name == asset.hashed_name else REVALIDATE,
        "ETag": etag,
        "Vary": "Accept-Encoding",
        "X-Content-Type-Options": "nosniff",
        "Cross-Origin-Resource-Policy": "same-origin",
    }
    if _etag_matches(request.headers.get("If-None-Match"), etag):
        return web.Response(status=304, headers=headers)
    if zipped:
        headers["Content-Encoding"] = "gzip"
    body = asset.gzipped if zipped else asset.body
    return web.Response(
        body=body, content_type=asset.content_type, charset="utf-8", headers=headers
    )


def content_security_policy(public_url: str, host: str | None) -> str:
    origins = _own_origins(public_url, host)
    directives = (
        "default-src 'none'",
        "script-src 'self'",
        "style-src 'self'",
        f"img-src 'self' data: {' '.join(origins['http'])}",
        f"connect-src 'self' {' '.join(origins['http'] + origins['ws'])}",
        "form-action 'none'",
        "base-uri 'none'",
        "frame-ancestors *",
    )
    return "; ".join(directives)


def _own_origins(public_url: str, host: str | None) -> dict[str, list[str]]:
    """This server's origins besides `'self'`: the public URL (the API may be reached there
    rather than where the page was loaded) and the WebSocket origins of both, which
    not every browser counts as `'self'`."""
    parts = urlsplit(public_url)
    public_origin = f"{parts.scheme}://{parts.netloc}"
    sockets = [("wss" if parts.scheme == "https" else "ws") + f"://{parts.netloc}"]
    if host and _HOST.fullmatch(host):
        # Behind a TLS-terminating proxy the page may be https while this hop is http.
        sockets += [f"ws://{host}", f"wss://{host}"]
    return {"http": [public_origin], "ws": list(dict.fromkeys(sockets))}


def _etag_matches(header: str | None, etag: str) -> bool:
    if not header:
        return False
    candidates = {candidate.strip().removeprefix("W/") for candidate in header.split(",")}
    return "*" in candidates or etag in candidates


def _accepts_gzip(header: str) -> bool:
    for item in header.split(","):
        coding, _, parameters = item.strip().partition(";")
        if coding.strip().lower() == "gzip":
            return parameters.replace(" ", "").lower() not in ("q=0", "q=0.0", "q=0.00", "q=0.000")
    return False


@cache
def load_bundle() -> Bundle:
    directory = resources.files("management") / "connect_ui"
    assets: dict[str, Asset] = {}
    page = (directory / PAGE_FILE).read_text(encoding="utf-8")
    for name, content_type in ASSET_FILES.items():
        asset = _asset(name, (directory / name).read_bytes(), content_type)
        assets[name] = assets[asset.hashed_name] = asset
        reference = f'"assets/{name}"'
        if reference not in page:
            raise RuntimeError(f"{PAGE_FILE} does not reference {reference}")
        page = page.replace(reference, f'"assets/{asset.hashed_name}"')
    # Relative URLs keep working behind a proxy that mounts the page under another prefix;
    # without the trailing slash they must name the page's own path segment.
    without_slash = page.replace('"assets/', '"connect/assets/')
    return Bundle(page.encode(), without_slash.encode(), assets)


def _asset(name: str, body: bytes, content_type: str) -> Asset:
    digest = hashlib.sha256(body).hexdigest()[:HASH_LENGTH]
    stem, _, extension = name.rpartition(".")
    return Asset(
        body=body,
        # mtime=0: the same bytes on every replica, so any of them answers the same ETag.
        gzipped=gzip.compress(body, compresslevel=9, mtime=0),
        content_type=content_type,
        etag=f'"{digest}"',
        gzip_etag=f'"{digest}-gzip"',
        hashed_name=f"{stem}.{digest}.{extension}",
    )
