"""`integration_config` and `custom`: an integration's provider-specific settings.

Both end up in the integration's encrypted `custom` map (that is where the proxy reads
`baseUrl`, `keyName`, ... from). A provider that declares an `integration_config` form
schema takes its settings only through `integration_config`, checked against that schema;
every other provider takes free-form `custom` values and no `integration_config`.
A PATCH merges into what is stored; in `integration_config` an empty string unsets a field.
"""

from __future__ import annotations

import re
from typing import Any

from credentials.models import Provider
from management.errors import ApiError
from management.integration_views import config_schema


def settings_error(message: str) -> ApiError:
    return ApiError(400, "invalid_body", message)


def merged_settings(
    provider: Provider | None,
    stored: dict[str, str] | None,
    *,
    integration_config: dict[str, str] | None,
    custom: dict[str, str] | None,
) -> dict[str, str] | None:
    """The map to store after applying the request's settings to `stored`."""
    name = provider.name if provider is not None else "(unknown)"
    schema = config_schema(provider)
    result = dict(stored or {})
    if schema is None:
        if integration_config is not None:
            raise settings_error(f"integration_config is not supported by provider {name}")
        result.update(custom or {})
    else:
        if custom is not None:
            raise settings_error(
                f"custom is not supported by provider {name}; use integration_config"
            )
        _apply_config(result, schema, integration_config or {}, name)
    return result or None


def _apply_config(
    result: dict[str, str], schema: dict[str, Any], config: dict[str, str], provider: str
) -> None:
    for key, value in config.items():
        field = schema.get(key)
        if not isinstance(field, dict):
            raise settings_error(
                f'Unknown integration_config field "{key}" for provider {provider}'
            )
        if value == "":
            result.pop(key, None)
            continue
        _check_value(key, value, field)
        result[key] = value


def _check_value(key: str, value: str, field: dict[str, Any]) -> None:
    choices = field.get("enum")
    if isinstance(choices, list) and value not in choices:
        allowed = ", ".join(str(choice) for choice in choices)
        raise settings_error(f"integration_config.{key} must be one of: {allowed}")
    pattern = field.get("pattern")
    if isinstance(pattern, str) and not _matches(pattern, value):
        raise settings_error(f"integration_config.{key} does not match the pattern {pattern}")


def _matches(pattern: str, value: str) -> bool:
    """JavaScript `RegExp.test` semantics (unanchored). The patterns come from the operator's
    catalogue; one Python cannot compile (JS-only syntax) is not held against the caller."""
    try:
        return re.search(pattern, value) is not None
    except re.error:
        return True
