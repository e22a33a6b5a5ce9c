"""`GET /openapi.json`: authgate's OpenAPI 3.1 document (management/openapi.yaml) as JSON.

The YAML is parsed and serialised once, when the routes are added at start, so a
malformed document stops the process instead of failing requests, and each request
costs one write of the same bytes.
"""

from __future__ import annotations

from importlib import resources
from typing import Any

import orjson
import yaml
from aiohttp import web

DOCUMENT_PATH = "/openapi.json"

# The libyaml loader when the wheel has it, like the provider catalogue; both are safe.
_Loader: type[Any] = getattr(yaml, "CSafeLoader", yaml.SafeLoader)


def load_document() -> dict[str, Any]:
    """The OpenAPI document as shipped in the `management` package."""
    text = resources.files("management").joinpath("openapi.yaml").read_text(encoding="utf-8")
    document = yaml.load(text, Loader=_Loader)  # noqa: S506 - a safe loader (C or pure Python)
    if not isinstance(document, dict):
        raise ValueError("management/openapi.yaml: the top level must be a mapping")
    return document


def add_routes(router: web.UrlDispatcher) -> None:
    body = orjson.dumps(load_document())

    async def openapi_document(request: web.Request) -> web.Response:
        return web.Response(body=body, content_type="application/json")

    router.add_get(DOCUMENT_PATH, openapi_document)
