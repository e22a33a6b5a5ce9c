"""Body validation that reports every problem at once, in the issue shape Nango clients see.

Each reader returns the value when it is valid and records an issue (code, message, path)
otherwise, so one request yields the complete list of offending fields.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from typing import Any

from management.errors import Issue, ValidationFailed, issue

Path = tuple[str, ...]

MAX_JSON_DEPTH = 64
"""Deepest nesting a body may have. JSON values are re-serialised by the store (orjson
refuses more than 254 levels), so a deeper tree must be refused here, as a 400."""


def type_name(value: Any) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "boolean"
    if isinstance(value, int | float):
        return "number"
    if isinstance(value, str):
        return "string"
    if isinstance(value, list):
        return "array"
    return "object"


class Checker:
    def __init__(self) -> None:
        self.issues: list[Issue] = []

    def raise_if_invalid(self, code: str = "invalid_body") -> None:
        if self.issues:
            raise ValidationFailed(code, self.issues)

    def add(self, code: str, message: str, path: Path) -> None:
        self.issues.append(issue(code, message, *path))

    def expect_object(self, value: Any, path: Path = ()) -> dict[str, Any] | None:
        if isinstance(value, dict):
            return value
        self._wrong_type("object", value, path)
        return None

    def strict(self, obj: dict[str, Any], allowed: Iterable[str], path: Path = ()) -> None:
        known = frozenset(allowed)  # once: `allowed` may be a one-shot iterator
        unknown = [key for key in obj if key not in known]
        if not unknown:
            return
        quoted = ", ".join(f'"{key}"' for key in unknown)
        noun = "key" if len(unknown) == 1 else "keys"
        self.add("unrecognized_keys", f"Unrecognized {noun}: {quoted}", path)

    def string(
        self,
        obj: dict[str, Any],
        key: str,
        path: Path = (),
        *,
        required: bool = True,
        pattern: re.Pattern[str] | None = None,
        min_length: int = 0,
        max_length: int | None = None,
    ) -> str | None:
        where = (*path, key)
        value = obj.get(key)
        if value is None and key not in obj and not required:
            return None
        if not isinstance(value, str):
            self._wrong_type("string", value if key in obj else _MISSING, where)
            return None
        if len(value) < min_length:
            self.add(
                "too_small", f"Too small: expected string to have >={min_length} characters", where
            )
        elif max_length is not None and len(value) > max_length:
            self.add(
                "too_big", f"Too big: expected string to have <={max_length} characters", where
            )
        elif pattern is not None and not pattern.fullmatch(value):
            self.add(
                "invalid_format", f"Invalid string: must match pattern /{pattern.pattern}/", where
            )
        else:
            return value
        return None

    def boolean(self, obj: dict[str, Any], key: str, path: Path = ()) -> bool | None:
        if key not in obj:
            return None
        value = obj[key]
        if isinstance(value, bool):
            return value
        self._wrong_type("boolean", value, (*path, key))
        return None

    def optional_object(
        self, obj: dict[str, Any], key: str, path: Path = ()
    ) -> dict[str, Any] | None:
        if key not in obj:
            return None
        return self.expect_object(obj[key], (*path, key))

    def string_map(
        self, obj: dict[str, Any], key: str, path: Path = (), *, max_value: int | None = None
    ) -> dict[str, str] | None:
        mapping = self.optional_object(obj, key, path)
        if mapping is None:
            return None
        result: dict[str, str] = {}
        for name in mapping:
            value = self.string(mapping, name, (*path, key), max_length=max_value)
            if value is not None:
                result[name] = value
        return result

    def json_tree(self, value: Any, path: Path = (), *, max_depth: int = MAX_JSON_DEPTH) -> None:
        """What no field rule sees: nesting beyond `max_depth`, and NUL characters in
        strings or keys (PostgreSQL text and jsonb cannot hold them)."""
        if isinstance(value, str):
            if "\x00" in value:
                self.add("invalid_format", _NUL_MESSAGE, path)
            return
        if not isinstance(value, dict | list):
            return
        if len(path) >= max_depth:
            self.add("too_big", f"Too big: expected nesting depth <={max_depth}", path)
            return
        items = value.items() if isinstance(value, dict) else enumerate(value)
        for key, child in items:
            where = (*path, str(key))
            if isinstance(key, str) and "\x00" in key:
                self.add("invalid_format", _NUL_MESSAGE, where)
            self.json_tree(child, where, max_depth=max_depth)

    def _wrong_type(self, expected: str, value: Any, path: Path) -> None:
        received = "undefined" if value is _MISSING else type_name(value)
        self.add("invalid_type", f"Invalid input: expected {expected}, received {received}", path)


_MISSING = object()
_NUL_MESSAGE = "Invalid string: must not contain NUL characters"
