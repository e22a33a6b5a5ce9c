"""The provider catalogue: our bundled `providers.yaml`, plus an operator's extra file.

Both files use Nango's providers.yaml format, so an operator can bring Nango's own
catalogue (or a fragment of it) unchanged. Loading validates only what authgate consumes
(auth mode, token URL, the `proxy` block, the form schemas) and keeps every other field
in `Provider.definition`, which `GET /providers` serves as written.

Aliases: an entry with `alias: other` becomes a shallow merge, the target's fields and
then its own on top, without the `alias` key. Overriding `proxy` therefore replaces the
whole block. Unlike a single pass in file order, targets are resolved first whatever their
position, so a chain works in any order; a cycle is an error.
"""

from __future__ import annotations

import re
from collections.abc import Iterator, Mapping
from importlib import resources
from pathlib import Path
from typing import Any, Final, NoReturn

import yaml

from credentials.models import AuthMode, JsonDict, Provider, ProviderProxy, RetryRules

BUNDLED_SOURCE: Final = "bundled providers.yaml"

_AUTH_MODES: Final = frozenset(mode.value for mode in AuthMode)
# `token_url` maps are keyed by auth mode; Nango spells the client-credentials key OAUTH2CC.
_TOKEN_URL_KEYS: Final = _AUTH_MODES | {"OAUTH2CC"}
_NAME = re.compile(r"[a-z0-9][a-z0-9_-]*")
_STATUS_RULE = re.compile(r"\d{3}|\dxx|\d{3}-\d{3}")

# The libyaml loader is several times faster on Nango's 28k-line file; both are "safe".
_Loader: type[Any] = getattr(yaml, "CSafeLoader", yaml.SafeLoader)


class CatalogueError(ValueError):
    """A catalogue file or entry is invalid; the message names the file, entry and field."""

    def __init__(self, source: str, problem: str, entry: str | None = None) -> None:
        where = f"{source}: provider {entry!r}" if entry is not None else source
        super().__init__(f"{where}: {problem}")
        self.source = source
        self.entry = entry


class Catalogue:
    """Resolved providers by name, in catalogue order."""

    __slots__ = ("_providers",)

    def __init__(self, providers: Mapping[str, Provider]) -> None:
        self._providers = dict(providers)

    def get(self, name: str) -> Provider | None:
        return self._providers.get(name)

    def __contains__(self, name: object) -> bool:
        return name in self._providers

    def __len__(self) -> int:
        return len(self._providers)

    def __iter__(self) -> Iterator[str]:
        return iter(self._providers)

    def names(self) -> list[str]:
        return list(self._providers)

    def all(self) -> list[Provider]:
        return list(self._providers.values())


# --- loading ------------------------------------------------------------------------


def load_catalogue(extra_file: Path | None = None) -> Catalogue:
    """The bundled catalogue, with `extra_file`'s entries merged over it by name.

    Merging happens before alias resolution, so an extra entry may alias a bundled one,
    and a bundled alias follows an extra entry that replaces its target.
    """
    entries = read_entries(bundled_text(), BUNDLED_SOURCE)
    sources = dict.fromkeys(entries, BUNDLED_SOURCE)
    if extra_file is not None:
        extra_source = str(extra_file)
        extra = read_entries(_read_file(extra_file), extra_source)
        entries.update(extra)
        sources.update(dict.fromkeys(extra, extra_source))
    return Catalogue(_build(entries, sources))


def parse_catalogue(text: str, source: str) -> dict[str, Provider]:
    """Parse and resolve one catalogue file's text; `source` names it in errors."""
    entries = read_entries(text, source)
    return _build(entries, dict.fromkeys(entries, source))


def bundled_text() -> str:
    return resources.files("credentials").joinpath("providers.yaml").read_text(encoding="utf-8")


def _read_file(path: Path) -> str:
    try:
        return path.read_text(encoding="utf-8")
    except OSError as error:
        raise CatalogueError(str(path), f"cannot read: {error.strerror or error}") from None


def read_entries(text: str, source: str) -> dict[str, JsonDict]:
    """The raw entries of one file, checked only for shape (mapping of mappings)."""
    try:
        document = yaml.load(text, Loader=_Loader)  # noqa: S506 - a safe loader (C or pure Python)
    except yaml.YAMLError as error:
        raise CatalogueError(source, f"invalid YAML: {_yaml_problem(error)}") from None
    if document is None:
        return {}
    if not isinstance(document, dict):
        raise CatalogueError(source, "the top level must be a mapping of provider names")
    entries: dict[str, JsonDict] = {}
    for name, entry in document.items():
        if not isinstance(name, str) or not _NAME.fullmatch(name):
            raise CatalogueError(source, f"invalid provider name {name!r}")
        if not isinstance(entry, dict):
            raise CatalogueError(source, "the definition must be a mapping", name)
        entries[name] = entry
    return entries


def _yaml_problem(error: yaml.YAMLError) -> str:
    mark = getattr(error, "problem_mark", None)
    problem = getattr(error, "problem", None) or type(error).__name__
    return f"{problem} at line {mark.line + 1}" if mark is not None else str(problem)


def _build(entries: Mapping[str, JsonDict], sources: Mapping[str, str]) -> dict[str, Provider]:
    resolved = resolve_aliases(entries, sources)
    return {name: to_provider(name, resolved[name], sources[name]) for name in entries}


def resolve_aliases(
    entries: Mapping[str, JsonDict], sources: Mapping[str, str]
) -> dict[str, JsonDict]:
    """Every entry with its alias chain merged in (shallow, alias key dropped)."""
    resolved: dict[str, JsonDict] = {}
    for name in entries:
        _resolve(name, entries, sources, resolved, ())
    return {name: resolved[name] for name in entries}


def _resolve(
    name: str,
    entries: Mapping[str, JsonDict],
    sources: Mapping[str, str],
    resolved: dict[str, JsonDict],
    chain: tuple[str, ...],
) -> JsonDict:
    if name in resolved:
        return resolved[name]
    entry = entries[name]
    if "alias" not in entry:
        resolved[name] = entry
        return entry
    target = entry["alias"]
    if not isinstance(target, str) or target not in entries:
        raise CatalogueError(sources[name], f"alias: unknown provider {target!r}", name)
    if target in chain or target == name:
        cycle = " -> ".join((*chain, name, target))
        raise CatalogueError(sources[name], f"alias: cycle {cycle}", name)
    base = _resolve(target, entries, sources, resolved, (*chain, name))
    merged = {**base, **{key: value for key, value in entry.items() if key != "alias"}}
    resolved[name] = merged
    return merged


# --- one entry ----------------------------------------------------------------------


def to_provider(name: str, definition: JsonDict, source: str) -> Provider:
    """Validate one resolved entry and convert what authgate consumes."""
    check = _EntryCheck(source, name)
    display_name = check.string(definition, "display_name", required=True)
    auth_mode = check.string(definition, "auth_mode", required=True)
    if auth_mode not in _AUTH_MODES:
        check.fail("auth_mode", f"unknown auth mode {auth_mode!r}")
    for key in ("docs", "authorization_url", "refresh_url"):
        check.string(definition, key)
    check.string_list(definition, "categories")
    _check_token_url(check, definition)
    for key in ("connection_config", "credentials"):
        _check_form_schema(check, definition, key)
    return Provider(
        name=name,
        auth_mode=str(auth_mode),
        display_name=str(display_name),
        proxy=_proxy(check, definition),
        definition=definition,
    )


class _EntryCheck:
    """Type checks that raise CatalogueError naming the entry and the field path."""

    __slots__ = ("entry", "prefix", "source")

    def __init__(self, source: str, entry: str, prefix: str = "") -> None:
        self.source = source
        self.entry = entry
        self.prefix = prefix

    def within(self, block: str) -> _EntryCheck:
        return _EntryCheck(self.source, self.entry, f"{self.prefix}{block}.")

    def fail(self, key: str, problem: str) -> NoReturn:
        raise CatalogueError(self.source, f"{self.prefix}{key}: {problem}", self.entry)

    def string(self, block: Mapping[str, Any], key: str, *, required: bool = False) -> str | None:
        value = block.get(key)
        if value is None and required:
            self.fail(key, "is required")
        if value is not None and not isinstance(value, str):
            self.fail(key, f"must be a string, not {_kind(value)}")
        return value

    def string_list(self, block: Mapping[str, Any], key: str) -> tuple[str, ...]:
        """A list of strings; a lone scalar counts as a one-item list."""
        value = block.get(key)
        if value is None:
            return ()
        items = value if isinstance(value, list) else [value]
        for item in items:
            if not isinstance(item, str):
                self.fail(key, f"items must be strings, not {_kind(item)}")
        return tuple(items)

    def string_map(self, block: Mapping[str, Any], key: str) -> dict[str, str]:
        value = block.get(key)
        if value is None:
            return {}
        if not isinstance(value, dict):
            self.fail(key, f"must be a mapping, not {_kind(value)}")
        for name, item in value.items():
            if not isinstance(name, str) or not isinstance(item, str):
                self.fail(f"{key}.{name}", f"must be a string, not {_kind(item)}")
        return dict(value)

    def mapping(self, block: Mapping[str, Any], key: str) -> JsonDict:
        value = block.get(key)
        if value is None:
            return {}
        if not isinstance(value, dict):
            self.fail(key, f"must be a mapping, not {_kind(value)}")
        return value

    def flag(self, block: Mapping[str, Any], key: str) -> bool:
        value = block.get(key, False)
        if not isinstance(value, bool):
            self.fail(key, f"must be true or false, not {_kind(value)}")
        return value


def _kind(value: object) -> str:
    return "null" if value is None else type(value).__name__


def _check_token_url(check: _EntryCheck, definition: JsonDict) -> None:
    if isinstance(definition.get("token_url"), str):
        return
    for mode, url in check.mapping(definition, "token_url").items():
        if mode not in _TOKEN_URL_KEYS:
            check.fail(f"token_url.{mode}", "is not an auth mode")
        if not isinstance(url, str):
            check.fail(f"token_url.{mode}", f"must be a string, not {_kind(url)}")


def _check_form_schema(check: _EntryCheck, definition: JsonDict, key: str) -> None:
    for name, schema in check.mapping(definition, key).items():
        if not isinstance(schema, dict):
            check.fail(f"{key}.{name}", f"must be a field schema mapping, not {_kind(schema)}")


def _proxy(check: _EntryCheck, definition: JsonDict) -> ProviderProxy | None:
    if definition.get("proxy") is None:
        return None
    block = check.mapping(definition, "proxy")
    inner = check.within("proxy")
    return ProviderProxy(
        base_url=inner.string(block, "base_url", required=True),
        headers=_headers(inner, block),
        query=inner.string_map(block, "query"),
        retry=_retry(inner, block),
        decompress=inner.flag(block, "decompress"),
        forward_headers_on_redirect=inner.flag(block, "forward_headers_on_redirect"),
    )


def _headers(check: _EntryCheck, block: JsonDict) -> dict[str, str]:
    # Header names are case-insensitive on the wire; lower-case them once here so the
    # injectors can override the default auth header by plain key equality.
    headers: dict[str, str] = {}
    for name, value in check.string_map(block, "headers").items():
        lowered = name.lower()
        if lowered in headers:
            check.fail(f"headers.{name}", "is declared twice (header names ignore case)")
        headers[lowered] = value
    return headers


def _retry(check: _EntryCheck, block: JsonDict) -> RetryRules:
    retry = check.mapping(block, "retry")
    if not retry:
        return RetryRules()
    inner = check.within("retry")
    remaining = inner.string_list(retry, "remaining")
    if len(remaining) > 1:
        inner.fail("remaining", "names one header")
    return RetryRules(
        error_codes=_status_rules(inner, retry),
        at_headers=inner.string_list(retry, "at"),
        after_headers=inner.string_list(retry, "after"),
        remaining_header=remaining[0] if remaining else None,
    )


def _status_rules(check: _EntryCheck, retry: JsonDict) -> tuple[str, ...]:
    """`error_code` rules ("403", "5xx", "500-502"); YAML may read a bare 403 as a number."""
    raw = retry.get("error_code")
    if raw is None:
        return ()
    items = raw if isinstance(raw, list) else [raw]
    rules: list[str] = []
    for item in items:
        rule = (
            str(item).lower() if isinstance(item, str | int) and not isinstance(item, bool) else ""
        )
        if not _STATUS_RULE.fullmatch(rule):
            check.fail("error_code", f"{item!r} is not a status, NXX or N-M range")
        rules.append(rule)
    return tuple(rules)


def token_url(provider: Provider, auth_mode: str | None = None) -> str | None:
    """The token URL for `auth_mode` (default: the provider's), from either spelling."""
    value = provider.definition.get("token_url")
    if value is None or isinstance(value, str):
        return value
    mode = auth_mode or provider.auth_mode
    keys = (mode, "OAUTH2CC") if mode == AuthMode.OAUTH2_CC else (mode,)
    for key in keys:
        if isinstance(value.get(key), str):
            return str(value[key])
    return None
