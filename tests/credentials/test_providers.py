from __future__ import annotations

import re
import shutil
import subprocess
import tarfile
import tempfile
from pathlib import Path
from typing import Any

import pytest
import yaml

from credentials.injectors import UnsupportedAuth, build_injection
from credentials.models import AuthMode, Connection, Provider, ProviderProxy, RetryRules
from credentials.providers import (
    Catalogue,
    CatalogueError,
    load_catalogue,
    parse_catalogue,
    read_entries,
    token_url,
)
from credentials.templates import UnresolvedTemplate, placeholders, resolve_base_url, unresolved
from tests.factories import make_integration

REQUIRED_PROVIDERS = (
    "github",
    "github-app",
    "github-pat",
    "google",
    "google-calendar",
    "google-mail",
    "slack",
    "hubspot",
    "salesforce",
    "notion",
    "linear",
    "zendesk",
    "zendesk-api-key",
    "shopify",
    "shopify-api-key",
    "jira",
    "jira-basic",
    "asana",
    "airtable",
    "airtable-pat",
    "stripe",
    "stripe-api-key",
    "openai",
    "intercom",
    "gitlab",
    "gitlab-pat",
    "bitbucket",
    "dropbox",
    "box",
    "zoom",
    "microsoft",
    "outlook",
    "discord",
    "quickbooks",
    "xero",
)

# --- Nango's complete catalogue, fetched with npm once and cached (never committed) ------

NANGO_PROVIDERS_PACKAGE = "@nangohq/providers@0.71.10"
CACHE_DIR = Path(__file__).resolve().parents[1] / ".cache"
NANGO_CATALOGUE = CACHE_DIR / "nangohq-providers-0.71.10.yaml"


def _fetch_nango_catalogue(target: Path) -> None:
    npm = shutil.which("npm")
    if npm is None:
        pytest.fail("npm is required to fetch Nango's providers.yaml (CI has it)")
    CACHE_DIR.mkdir(parents=True, exist_ok=True)
    (CACHE_DIR / ".gitignore").write_text("*\n", encoding="utf-8")  # never commit the cache
    with tempfile.TemporaryDirectory(dir=CACHE_DIR) as work:
        packed = subprocess.run(
            [npm, "pack", NANGO_PROVIDERS_PACKAGE, "--pack-destination", work, "--silent"],
            capture_output=True,
            text=True,
            timeout=300,
            check=False,
        )
        if packed.returncode != 0:
            pytest.fail(f"npm pack {NANGO_PROVIDERS_PACKAGE} failed: {packed.stderr.strip()}")
        tarball = next(Path(work).glob("*.tgz"))
        with tarfile.open(tarball) as archive:
            member = archive.extractfile("package/providers.yaml")
            assert member is not None
            data = member.read()
        partial = Path(work) / "providers.yaml"
        partial.write_bytes(data)
        partial.replace(target)  # atomic: a concurrent run never sees half a file


@pytest.fixture(scope="session")
def nango_catalogue_file() -> Path:
    if not NANGO_CATALOGUE.exists():
        _fetch_nango_catalogue(NANGO_CATALOGUE)
    return NANGO_CATALOGUE


@pytest.fixture(scope="session")
def nango_raw(nango_catalogue_file: Path) -> dict[str, Any]:
    return read_entries(nango_catalogue_file.read_text(encoding="utf-8"), "nango")


@pytest.fixture(scope="session")
def merged_catalogue(nango_catalogue_file: Path) -> Catalogue:
    return load_catalogue(extra_file=nango_catalogue_file)


def test_nango_catalogue_loads_every_entry(
    merged_catalogue: Catalogue, nango_raw: dict[str, Any]
) -> None:
    assert len(nango_raw) >= 900
    assert set(nango_raw) <= set(merged_catalogue.names())
    for name in nango_raw:
        provider = merged_catalogue.get(name)
        assert provider is not None
        assert provider.auth_mode in set(AuthMode), name
        assert "alias" not in provider.definition, name


def test_nango_aliases_resolve_shallowly(
    merged_catalogue: Catalogue, nango_raw: dict[str, Any]
) -> None:
    aliases = {name: entry["alias"] for name, entry in nango_raw.items() if "alias" in entry}
    assert len(aliases) >= 50
    for name, target in aliases.items():
        resolved = merged_catalogue.get(name)
        base = merged_catalogue.get(target)
        assert resolved is not None
        assert base is not None
        own = nango_raw[name]
        for key, value in base.definition.items():
            expected = own.get(key, value)
            assert resolved.definition[key] == expected, (name, key)


def test_nango_github_app_inherits_the_github_proxy(merged_catalogue: Catalogue) -> None:
    github = merged_catalogue.get("github")
    github_app = merged_catalogue.get("github-app")
    assert github is not None
    assert github_app is not None
    assert github_app.auth_mode == AuthMode.APP
    assert github_app.proxy == github.proxy
    assert github_app.proxy is not None
    assert github_app.proxy.base_url == "https://api.github.com"
    assert github_app.definition["proxy"] is github.definition["proxy"]


def test_nango_base_urls_resolve_or_name_what_is_missing(merged_catalogue: Catalogue) -> None:
    checked = 0
    for provider in merged_catalogue.all():
        if provider.proxy is None or provider.proxy.base_url is None:
            continue
        checked += 1
        outcome = _resolve_or_error(provider.proxy.base_url)
        if isinstance(outcome, UnresolvedTemplate):
            assert outcome.missing, provider.name
        else:
            assert not unresolved(outcome), provider.name
            assert outcome.startswith(("https://", "http://")), (provider.name, outcome)
    assert checked >= 900


def _resolve_or_error(template: str) -> str | UnresolvedTemplate:
    """The URL, or the UnresolvedTemplate; any other exception fails the test."""
    try:
        return resolve_base_url(template, {"connection_config": {}})
    except UnresolvedTemplate as error:
        return error


# One plausible stored credential per auth mode, shaped as the management API stores it.
SAMPLE_CREDENTIALS: dict[str, dict[str, Any]] = {
    "OAUTH2": {"type": "OAUTH2", "access_token": "at"},
    "MCP_OAUTH2": {"type": "OAUTH2", "access_token": "at"},
    "MCP_OAUTH2_GENERIC": {"type": "OAUTH2", "access_token": "at"},
    "APP": {"type": "APP", "access_token": "at"},
    "OAUTH2_CC": {"type": "OAUTH2_CC", "token": "tk", "client_id": "c", "client_secret": "s"},
    "JWT": {"type": "JWT", "token": "tk"},
    "SIGNATURE": {"type": "SIGNATURE", "token": "tk", "username": "u", "password": "p"},
    "TWO_STEP": {"type": "TWO_STEP", "token": "tk"},
    "BASIC": {"type": "BASIC", "username": "u", "password": "p"},
    "API_KEY": {"type": "API_KEY", "apiKey": "k"},
    "NONE": {},
    "CUSTOM": {"type": "CUSTOM", "app": {}, "user": {}},
    "BILL": {"type": "BILL", "username": "u", "password": "p", "session_id": "s"},
    "OAUTH1": {"type": "OAUTH1", "oauth_token": "t", "oauth_token_secret": "ts"},
}
# OAUTH1 signs with the integration's consumer key and secret.
SAMPLE_CLIENT = make_integration({"type": "OAUTH1", "client_id": "ck", "client_secret": "cs"})


def test_nango_providers_inject_without_leaking_templates(merged_catalogue: Catalogue) -> None:
    injected = 0
    for provider in merged_catalogue.all():
        credentials = SAMPLE_CREDENTIALS.get(provider.auth_mode)
        connection = _connection(provider.name, credentials or {"type": provider.auth_mode})
        if credentials is None:
            with pytest.raises(UnsupportedAuth):
                build_injection(connection, provider, SAMPLE_CLIENT)
            continue
        injection = build_injection(connection, provider, SAMPLE_CLIENT)
        injected += 1
        for name, value in (*injection.headers, *injection.query):
            assert not unresolved(value), (provider.name, name)
            assert name == name.lower() or (name, value) in injection.query
    assert injected >= 900


def _connection(provider: str, credentials: dict[str, Any]) -> Connection:
    return Connection(
        id=1,
        environment_id=1,
        integration_id=1,
        provider_config_key=provider,
        provider=provider,
        connection_id="conn-1",
        credentials=credentials,
    )


# --- the bundled catalogue ---------------------------------------------------------------


@pytest.fixture(scope="module")
def bundled() -> Catalogue:
    return load_catalogue()


def test_bundled_catalogue_has_every_required_provider(bundled: Catalogue) -> None:
    missing = [name for name in REQUIRED_PROVIDERS if name not in bundled]
    assert missing == []
    for name in REQUIRED_PROVIDERS:
        provider = bundled.get(name)
        assert provider is not None
        assert provider.proxy is not None, name
        assert provider.proxy.base_url, name
        assert provider.definition.get("docs", "").startswith("https://"), name
        assert provider.definition.get("categories"), name


def test_bundled_oauth_entries_have_oauth_urls(bundled: Catalogue) -> None:
    for provider in bundled.all():
        if provider.auth_mode in (AuthMode.OAUTH2, AuthMode.APP):
            assert provider.definition.get("authorization_url"), provider.name
            assert token_url(provider), provider.name


def test_bundled_config_placeholders_are_declared(bundled: Catalogue) -> None:
    # Every connection_config key a base URL or header needs has a form field, so the
    # Connect UI asks for it.
    for provider in bundled.all():
        if provider.proxy is None:
            continue
        templates = [provider.proxy.base_url or "", *provider.proxy.headers.values()]
        declared = set(provider.definition.get("connection_config") or {})
        for template in templates:
            for name in placeholders(template):
                head, _, key = name.partition(".")
                if head == "connectionConfig":
                    assert key in declared, (provider.name, key)


def test_bundled_aliases(bundled: Catalogue) -> None:
    github, github_app = bundled.get("github"), bundled.get("github-app")
    assert github is not None
    assert github_app is not None
    assert github_app.auth_mode == AuthMode.APP
    assert github_app.proxy == github.proxy
    google, calendar = bundled.get("google"), bundled.get("google-calendar")
    assert google is not None
    assert calendar is not None
    assert calendar.definition["authorization_params"] == google.definition["authorization_params"]
    assert calendar.proxy is not None
    assert "in_body" not in calendar.definition["proxy"]["retry"]
    assert calendar.proxy.retry.error_codes == ("403", "5xx", "401", "429")
    outlook = bundled.get("outlook")
    assert outlook is not None
    assert outlook.proxy is not None
    assert outlook.proxy.base_url == "https://graph.microsoft.com"


def test_bundled_proxy_details(bundled: Catalogue) -> None:
    github = bundled.get("github")
    assert github is not None
    assert github.proxy is not None
    assert github.proxy.retry == RetryRules(
        error_codes=("403", "5xx", "401", "429"),
        at_headers=("x-ratelimit-reset",),
        remaining_header="x-ratelimit-remaining",
    )
    hubspot = bundled.get("hubspot")
    assert hubspot is not None
    assert hubspot.proxy is not None
    assert hubspot.proxy.decompress
    zendesk = bundled.get("zendesk")
    assert zendesk is not None
    assert zendesk.proxy is not None
    with pytest.raises(UnresolvedTemplate) as caught:
        resolve_base_url(zendesk.proxy.base_url or "", {"connection_config": {}})
    assert caught.value.missing_connection_config == ["subdomain"]
    unauthenticated = bundled.get("unauthenticated")
    assert unauthenticated is not None
    assert unauthenticated.auth_mode == AuthMode.NONE


def test_catalogue_accessors(bundled: Catalogue) -> None:
    assert len(bundled) == len(bundled.names()) == len(bundled.all())
    assert "github" in bundled
    assert "no-such-provider" not in bundled
    assert bundled.get("no-such-provider") is None
    assert list(bundled) == bundled.names()
    assert [provider.name for provider in bundled.all()] == bundled.names()


# --- parsing, aliases, errors ------------------------------------------------------------


def parse(text: str) -> dict[str, Provider]:
    return parse_catalogue(text, "test.yaml")


BASE = """
base:
    display_name: Base
    auth_mode: OAUTH2
    authorization_url: https://example.com/authorize
    token_url: https://example.com/token
    proxy:
        base_url: https://api.example.com
        headers:
            X-Version: '2'
        retry:
            after: retry-after
"""


def test_alias_is_a_shallow_merge_without_the_alias_key() -> None:
    providers = parse(
        BASE
        + """
child:
    alias: base
    display_name: Child
    auth_mode: API_KEY
    proxy:
        base_url: https://child.example.com
"""
    )
    child = providers["child"]
    assert child.auth_mode == "API_KEY"
    assert child.display_name == "Child"
    assert child.definition["token_url"] == "https://example.com/token"
    assert "alias" not in child.definition
    # The whole proxy block is replaced: no headers or retry inherited.
    assert child.proxy == ProviderProxy(base_url="https://child.example.com")
    assert providers["base"].proxy is not None
    assert providers["base"].proxy.headers == {"x-version": "2"}


def test_alias_chain_resolves_in_any_order() -> None:
    providers = parse(
        """
grandchild:
    alias: child
    display_name: Grandchild
child:
    alias: base
    display_name: Child
"""
        + BASE
    )
    assert providers["grandchild"].auth_mode == "OAUTH2"
    assert providers["grandchild"].display_name == "Grandchild"
    assert list(providers) == ["grandchild", "child", "base"]


@pytest.mark.parametrize(
    ("text", "fragment"),
    [
        ("a:\n    alias: missing\n    display_name: A\n", "alias: unknown provider 'missing'"),
        (
            "a:\n    alias: b\n    display_name: A\nb:\n    alias: a\n    display_name: B\n",
            "alias: cycle a -> b -> a",
        ),
    ],
)
def test_bad_alias_is_named(text: str, fragment: str) -> None:
    with pytest.raises(CatalogueError) as caught:
        parse(text)
    assert str(caught.value).startswith("test.yaml: provider '")
    assert fragment in str(caught.value)


def test_invalid_yaml_names_the_source() -> None:
    with pytest.raises(CatalogueError, match=r"^test\.yaml: invalid YAML: .* at line \d+"):
        parse("a:\n  b: [unclosed\n")


def proxy_with(**fields: Any) -> dict[str, Any]:
    return {"proxy": {"base_url": "https://x", **fields}}


@pytest.mark.parametrize(
    ("fields", "problem"),
    [
        (proxy_with(headers={"x-num": 2}), "proxy.headers.x-num: must be a string"),
        (proxy_with(query={"key": [1]}), "proxy.query.key: must be a string"),
        ({"proxy": {"headers": {}}}, "proxy.base_url: is required"),
        ({"proxy": {"base_url": 5}}, "proxy.base_url: must be a string"),
        ({"proxy": [1]}, "proxy: must be a mapping"),
        (proxy_with(decompress="yes"), "proxy.decompress: must be true or false"),
        (proxy_with(retry={"error_code": ["boom"]}), "proxy.retry.error_code: 'boom'"),
        (proxy_with(retry={"error_code": [True]}), "proxy.retry.error_code: True"),
        (proxy_with(retry={"at": [1]}), "proxy.retry.at: items must be strings"),
        (proxy_with(retry={"remaining": ["a", "b"]}), "proxy.retry.remaining: names one"),
        (proxy_with(retry=["after"]), "proxy.retry: must be a mapping"),
        ({"token_url": ["https://x"]}, "token_url: must be a mapping"),
        ({"token_url": {"NOPE": "https://x"}}, "token_url.NOPE: is not an auth mode"),
        ({"token_url": {"OAUTH2": 3}}, "token_url.OAUTH2: must be a string"),
        ({"connection_config": {"subdomain": "text"}}, "connection_config.subdomain"),
        ({"credentials": ["apiKey"]}, "credentials: must be a mapping"),
        ({"categories": [1]}, "categories: items must be strings"),
        ({"docs": 7}, "docs: must be a string"),
    ],
)
def test_invalid_entry_names_entry_and_field(fields: dict[str, Any], problem: str) -> None:
    document = {
        "good": {"display_name": "Good", "auth_mode": "API_KEY"},
        "bad": {"display_name": "Bad", "auth_mode": "API_KEY", **fields},
    }
    with pytest.raises(CatalogueError) as caught:
        parse(yaml.safe_dump(document))
    message = str(caught.value)
    assert message.startswith("test.yaml: provider 'bad': ")
    assert problem in message


@pytest.mark.parametrize(
    ("entry", "field"),
    [
        ("    display_name: X\n", "auth_mode: is required"),
        ("    display_name: X\n    auth_mode: MAGIC\n", "auth_mode: unknown auth mode 'MAGIC'"),
        ("    auth_mode: API_KEY\n", "display_name: is required"),
    ],
)
def test_required_fields(entry: str, field: str) -> None:
    with pytest.raises(CatalogueError, match=re.escape(f"provider 'x': {field}")):
        parse("x:\n" + entry)


@pytest.mark.parametrize(
    ("text", "fragment"),
    [
        ("- a\n- b\n", "top level must be a mapping"),
        ("Bad_Name:\n    display_name: X\n", "invalid provider name 'Bad_Name'"),
        ("x: text\n", "provider 'x': the definition must be a mapping"),
    ],
)
def test_file_shape_errors(text: str, fragment: str) -> None:
    with pytest.raises(CatalogueError, match=re.escape(fragment)):
        parse(text)


def test_duplicate_header_names_differing_in_case_are_rejected() -> None:
    entry = {"display_name": "X", "auth_mode": "API_KEY"}
    text = yaml.safe_dump({"x": entry | proxy_with(headers={"Accept": "a", "accept": "b"})})
    with pytest.raises(CatalogueError, match=r"proxy\.headers\.accept: is declared twice"):
        parse(text)


def test_empty_file_is_an_empty_catalogue() -> None:
    assert parse("") == {}
    assert parse("# only a comment\n") == {}


def test_retry_accepts_scalar_and_list_spellings() -> None:
    text = """
scalar:
    display_name: S
    auth_mode: API_KEY
    proxy:
        base_url: https://s
        retry:
            at: x-reset
            after: retry-after
            remaining: x-remaining
            error_code: 403
listed:
    display_name: L
    auth_mode: API_KEY
    proxy:
        base_url: https://l
        retry:
            at: [x-reset, x-reset-2]
            after: [retry-after]
            remaining: [x-remaining]
            error_code: ['5XX', 500-502, 429]
"""
    providers = parse(text)
    scalar, listed = providers["scalar"].proxy, providers["listed"].proxy
    assert scalar is not None
    assert listed is not None
    assert scalar.retry == RetryRules(("403",), ("x-reset",), ("retry-after",), "x-remaining")
    assert listed.retry == RetryRules(
        ("5xx", "500-502", "429"), ("x-reset", "x-reset-2"), ("retry-after",), "x-remaining"
    )


def test_token_url_by_auth_mode() -> None:
    text = """
app-oauth:
    display_name: App OAuth
    auth_mode: CUSTOM
    token_url:
        OAUTH2: https://example.com/user-token
        APP: https://example.com/installations/${connectionConfig.installation_id}
        OAUTH2CC: https://example.com/cc
plain:
    display_name: Plain
    auth_mode: OAUTH2
    token_url: https://example.com/token
"""
    providers = parse(text)
    app = providers["app-oauth"]
    assert token_url(app, "OAUTH2") == "https://example.com/user-token"
    assert (
        token_url(app, "APP")
        == "https://example.com/installations/${connectionConfig.installation_id}"
    )
    assert token_url(app, "OAUTH2_CC") == "https://example.com/cc"
    assert token_url(app) is None  # CUSTOM has no key of its own
    assert token_url(providers["plain"]) == "https://example.com/token"


def test_definition_keeps_unknown_fields_for_get_providers() -> None:
    text = BASE.replace(
        "    auth_mode: OAUTH2\n", "    auth_mode: OAUTH2\n    future_field: [1, 2]\n"
    )
    assert parse(text)["base"].definition["future_field"] == [1, 2]


# --- extra file merged over the bundled catalogue ------------------------------------------


@pytest.fixture
def extra_file(tmp_path: Path) -> Path:
    path = tmp_path / "providers.yaml"
    path.write_text(
        """
github:
    display_name: GitHub Enterprise
    auth_mode: OAUTH2
    proxy:
        base_url: https://ghe.example.com/api/v3
my-zendesk:
    alias: zendesk-api-key
    display_name: Our Zendesk
internal:
    display_name: Internal API
    auth_mode: API_KEY
    proxy:
        base_url: https://internal.example.com
        headers:
            x-api-key: ${apiKey}
""",
        encoding="utf-8",
    )
    return path


def test_extra_file_merges_over_bundled(extra_file: Path) -> None:
    bundled_count = len(load_catalogue())
    catalogue = load_catalogue(extra_file)
    assert len(catalogue) == bundled_count + 2
    github = catalogue.get("github")
    assert github is not None
    assert github.proxy is not None
    assert github.display_name == "GitHub Enterprise"
    assert github.proxy.base_url == "https://ghe.example.com/api/v3"
    # The bundled alias follows the replaced target.
    github_app = catalogue.get("github-app")
    assert github_app is not None
    assert github_app.proxy == github.proxy
    # An alias in the extra file may point at a bundled entry.
    mine = catalogue.get("my-zendesk")
    assert mine is not None
    assert mine.auth_mode == "BASIC"
    assert mine.proxy is not None
    assert mine.proxy.base_url == "https://${connectionConfig.subdomain}.zendesk.com"
    assert catalogue.names()[-1] == "internal"


def test_extra_file_errors_name_the_file(tmp_path: Path) -> None:
    path = tmp_path / "extra.yaml"
    path.write_text("broken:\n    display_name: B\n    auth_mode: NOPE\n", encoding="utf-8")
    with pytest.raises(CatalogueError, match=re.escape(f"{path}: provider 'broken'")):
        load_catalogue(path)
    with pytest.raises(CatalogueError, match="cannot read"):
        load_catalogue(tmp_path / "missing.yaml")


def test_bundled_file_is_valid_yaml_with_our_own_header() -> None:
    from credentials.providers import bundled_text

    text = bundled_text()
    assert text.startswith("# authgate's bundled provider catalogue.")
    assert isinstance(yaml.safe_load(text), dict)
