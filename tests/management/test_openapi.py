"""management/openapi.yaml describes exactly what `authgate serve` serves.

The document is compared with the routes the real serve app registers (so a new route
without documentation, or documentation of a route nobody serves, fails here), validated
against the OpenAPI 3.1 schema, and checked for the promises it makes: strict bodies,
every error an envelope, the proxy control headers that parse.py actually reads.
"""

from __future__ import annotations

import re
from collections.abc import AsyncIterator, Iterator, Mapping
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from aiohttp import hdrs, web
from openapi_spec_validator import validate

from authgate.serving import Running, start_serve
from management.routes.openapi import DOCUMENT_PATH, load_document
from management.settings import ManagementSettings
from proxy.app import LOCAL_ROUTES
from proxy.errors import InvalidHeaders
from proxy.settings import ProxySettings
from proxy.stages.parse import parse_control_headers
from tests.e2e.conftest import settings_env

HTTP_METHODS = ("get", "put", "post", "delete", "options", "head", "patch", "trace")
ROUTE_ALIASES = {
    # The deprecated per-id metadata routes take an empty id segment (the id then comes
    # from the Connection-Id header); OpenAPI path parameters cannot be empty, so the
    # document describes that case on `/connection/{connectionId}/metadata`.
    "/connection//metadata": "/connection/{}/metadata",
}
# The methods the document spells out for a route registered for any method ("*").
ANY_METHOD = frozenset({"GET", "POST", "PUT", "PATCH", "DELETE"})
# Bodies that are not strict on purpose: Nango's deprecated flat import, the bare metadata
# object of the deprecated per-id metadata routes, and whatever a caller proxies.
LOOSE_BODIES = frozenset(
    {
        ("POST", "/connection"),
        ("POST", "/connection/{connectionId}/metadata"),
        ("PATCH", "/connection/{connectionId}/metadata"),
        ("POST", "/proxy/{endpoint}"),
        ("PUT", "/proxy/{endpoint}"),
        ("PATCH", "/proxy/{endpoint}"),
        ("DELETE", "/proxy/{endpoint}"),
    }
)

Operation = tuple[str, str]  # (METHOD, path template with `{}` for each parameter)


@pytest.fixture(scope="module")
def document() -> dict[str, Any]:
    return load_document()


@pytest.fixture
async def serve_app(tmp_path: Path) -> AsyncIterator[Running]:
    environ = settings_env(tmp_path, f"sqlite:///{tmp_path / 'openapi.db'}")
    running = await start_serve(
        ProxySettings.from_env(environ), ManagementSettings.from_env(environ), port=0
    )
    try:
        yield running
    finally:
        await running.close()


def _template(path: str) -> str:
    return re.sub(r"\{[^}]*\}", "{}", path)


# Served by the data plane's own router (proxy/app.py), in front of the management app.
DATA_PLANE_OPERATIONS: set[Operation] = {
    *((method, "/proxy/{}") for method in ANY_METHOD),
    *(("GET", path) for path in LOCAL_ROUTES),
}


def served_operations(app: web.Application) -> set[Operation]:
    registered: set[Operation] = set()
    for route in app.router.routes():
        if route.method == hdrs.METH_HEAD:
            continue  # aiohttp adds HEAD beside every GET
        path = _template(route.resource.canonical if route.resource else "")
        methods = ANY_METHOD if route.method == hdrs.METH_ANY else {route.method}
        registered.update((method, path) for method in methods)
    return {
        (method, ROUTE_ALIASES.get(path, path))
        for method, path in registered
        # `/integrations/` beside `/integrations`: Nango's trailing-slash leniency.
        if not (path != "/" and path.endswith("/") and (method, path[:-1]) in registered)
    }


def documented_operations(document: Mapping[str, Any]) -> set[Operation]:
    return {
        (method.upper(), _template(path))
        for path, item in document["paths"].items()
        for method in item
        if method in HTTP_METHODS
    }


def _operations(document: Mapping[str, Any]) -> Iterator[tuple[str, str, dict[str, Any]]]:
    for path, item in document["paths"].items():
        for method, operation in item.items():
            if method in HTTP_METHODS:
                yield method.upper(), path, operation


def _resolve(document: Mapping[str, Any], node: Any) -> Any:
    while isinstance(node, dict) and "$ref" in node:
        target: Any = document
        for part in node["$ref"].removeprefix("#/").split("/"):
            target = target[part]
        node = target
    return node


async def test_every_served_route_is_documented_and_every_documented_one_served(
    serve_app: Running, document: dict[str, Any]
) -> None:
    assert serve_app.app is not None
    served = served_operations(serve_app.app) | DATA_PLANE_OPERATIONS
    documented = documented_operations(document)
    assert not served - documented, f"served but not documented: {sorted(served - documented)}"
    assert not documented - served, f"documented but not served: {sorted(documented - served)}"


def test_document_is_valid_openapi_3_1(document: dict[str, Any]) -> None:
    assert document["openapi"].startswith("3.1.")
    validate(document)  # raises OpenAPIValidationError naming the offending node


async def test_openapi_json_is_served_publicly_as_the_document(
    serve_app: Running, document: dict[str, Any]
) -> None:
    url = f"http://127.0.0.1:{serve_app.port}{DOCUMENT_PATH}"
    async with aiohttp.ClientSession() as session, session.get(url) as response:
        assert response.status == 200, await response.text()
        assert response.content_type == "application/json"
        assert await response.json() == document


def test_operation_ids_are_unique(document: dict[str, Any]) -> None:
    ids = [operation["operationId"] for _, _, operation in _operations(document)]
    assert len(ids) == len(set(ids)), sorted(i for i in ids if ids.count(i) > 1)


def test_authenticated_operations_document_401_and_public_ones_have_no_security(
    document: dict[str, Any],
) -> None:
    public = {"/health", "/ready", "/metrics", DOCUMENT_PATH}
    # The auth flows' browser side identifies its caller from the query, or serves what
    # anyone may see.
    public |= {
        "/",
        "/connect",
        "/connect/assets/{name}",
        "/oauth/connect/{providerConfigKey}",
        "/oauth/callback",
        "/app-auth/connect",
        "/api-auth/api-key/{providerConfigKey}",
        "/api-auth/basic/{providerConfigKey}",
        "/oauth2/auth/{providerConfigKey}",
        "/auth/unauthenticated/{providerConfigKey}",
    }
    for method, path, operation in _operations(document):
        security = operation.get("security", document["security"])
        if path in public:
            assert security == [], (method, path)
        else:
            assert security, (method, path)
            assert "401" in operation["responses"], (method, path)


def test_every_error_response_is_a_json_envelope(document: dict[str, Any]) -> None:
    for method, path, operation in _operations(document):
        for status, response in operation["responses"].items():
            if not status.startswith(("4", "5")) or (path, status) == ("/ready", "503"):
                continue
            if "text/html" in _resolve(document, response).get("content", {}):
                continue  # the OAuth popup's error page, for a human
            schema = _resolve(
                document, _resolve(document, response)["content"]["application/json"]["schema"]
            )
            variants = [_resolve(document, s) for s in schema.get("anyOf", [schema])]
            for variant in variants:
                error = variant["properties"]["error"]
                assert variant["required"] == ["error"], (method, path, status)
                assert "code" in error["required"], (method, path, status)


def test_strict_request_bodies_refuse_unknown_keys(document: dict[str, Any]) -> None:
    """Nango rejects unknown body keys on every current endpoint; the document says so."""
    for method, path, operation in _operations(document):
        body = _resolve(document, operation.get("requestBody"))
        if body is None or (method, path) in LOOSE_BODIES:
            continue
        schema = _resolve(document, body["content"]["application/json"]["schema"])
        assert schema.get("additionalProperties") is False, (method, path)


class _RecordingHeaders(dict[str, str]):
    """A header mapping that remembers every name the parser looks up."""

    def __init__(self) -> None:
        super().__init__()
        self.read: set[str] = set()

    def get(self, key: str, default: Any = None) -> Any:
        self.read.add(key.lower())
        return super().get(key, default)


def test_proxy_control_headers_are_those_parse_reads(document: dict[str, Any]) -> None:
    headers = _RecordingHeaders()
    with pytest.raises(InvalidHeaders) as missing:
        parse_control_headers(headers)
    required = {str(issue["path"][0]) for issue in missing.value.issues}
    parameters = [
        _resolve(document, parameter)
        for parameter in document["paths"]["/proxy/{endpoint}"]["parameters"]
    ]
    documented = {
        p["name"].lower(): p.get("required", False) for p in parameters if p["in"] == "header"
    }
    assert set(documented) == headers.read
    assert {name for name, is_required in documented.items() if is_required} == required
