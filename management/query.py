"""Query strings read the way Nango's routes read them.

Nango hands Express's query string to the `qs` library and validates the result with
zod. `parse_query_string` reproduces the `qs` shapes: `tags[a]=x` becomes `{"tags":
{"a": "x"}}`, a repeated key or `a[]=` becomes a list, `+` is a space, and a value whose
percent-encoding is broken is kept as written. `QueryReader` then validates the result
the way the zod schemas do (strict keys, lenient booleans, coerced numbers) and reports
every problem at once as a 400 `invalid_query_params` with issues naming the key.
"""

from __future__ import annotations

import math
import re
from collections.abc import Iterable
from itertools import islice
from typing import Any
from urllib.parse import unquote_to_bytes

from aiohttp import web

from management.end_users import tag_map
from management.validation import Checker, Path

QueryValue = str | bool | list[Any] | dict[str, Any]
"""A parsed value: a string, a list or a nested object of them. `True` appears only where
`qs` itself puts it (a plain value merged into an object, `a[b]=1&a=b`)."""

PARAMETER_LIMIT = 1000
"""`qs` reads at most this many `&`-separated parameters and ignores the rest."""
ARRAY_LIMIT = 100
"""Largest `a[n]` index that still makes a list (Nango configures `qs` with 100)."""
DEPTH_LIMIT = 5
"""Bracket segments `qs` splits a key into; the remainder stays one literal segment."""

TRUE_WORDS = ("true", "1", "yes", "on", "y", "enabled")
FALSE_WORDS = ("false", "0", "no", "off", "n", "disabled")
BOOLEAN_MESSAGE = "Invalid option: expected one of " + "|".join(
    f'"{word}"' for word in (*TRUE_WORDS, *FALSE_WORDS)
)

_MALFORMED_ESCAPE = re.compile(r"%(?![0-9a-fA-F]{2})")
_BRACKET = re.compile(r"\[[^\[\]]*\]")
# JavaScript's Number(): what String.prototype.trim strips, and the literals it accepts.
_JS_SPACE = "\t\n\v\f\r \u00a0\u1680\u2000\u2001\u2002\u2003\u2004\u2005\u2006\u2007\u2008\u2009\u200a\u2028\u2029\u202f\u205f\u3000\ufeff"  # noqa: E501
_JS_DECIMAL = re.compile(r"[+-]?(?:\d+\.?\d*|\.\d+)(?:[eE][+-]?\d+)?")
_JS_RADIX = re.compile(r"0([xX][0-9a-fA-F]+|[oO][0-7]+|[bB][01]+)")
_RADIX = {"x": 16, "o": 8, "b": 2}
# SQL offsets are signed 64-bit; a page number past this cannot select anything anyway.
MAX_OFFSET = 2**62


# --- parsing -------------------------------------------------------------------------------


def parse_query_string(raw: str) -> dict[str, QueryValue]:
    """`qs.parse(raw)` with Nango's options, for a query string without the `?`."""
    flat: dict[str, QueryValue] = {}
    for part in raw.split("&")[:PARAMETER_LIMIT]:
        if not part:
            continue
        key, value = _split_pair(part)
        if not key:
            continue  # `=x`: qs drops a parameter without a name
        if key in flat:
            flat[key] = _combine(flat[key], value)
        else:
            flat[key] = value
    result: dict[str, QueryValue] = {}
    for key, leaf in flat.items():
        nested = _nest(_key_segments(key), leaf)
        merged = _merge(result, nested)
        assert isinstance(merged, dict)  # merging two objects yields an object
        result = merged
    compacted = _compact(result)
    assert isinstance(compacted, dict)
    return compacted


def request_query(request: web.Request) -> dict[str, QueryValue]:
    # The raw form: yarl's decoded query_string has already turned `%26` into `&`.
    return parse_query_string(request.rel_url.raw_query_string)


def _split_pair(part: str) -> tuple[str, str]:
    # A `]=` ends the key even when the brackets contain `=` (qs's rule).
    bracket_end = part.find("]=")
    at = part.find("=") if bracket_end == -1 else bracket_end + 1
    if at == -1:
        return _decode(part), ""
    return _decode(part[:at]), _decode(part[at + 1 :])


def _decode(text: str) -> str:
    """decodeURIComponent after `+` → space; a malformed escape leaves the text as is."""
    plain = text.replace("+", " ")
    if "%" not in plain or _MALFORMED_ESCAPE.search(plain):
        return plain
    try:
        return unquote_to_bytes(plain).decode("utf-8")
    except UnicodeDecodeError:
        return plain


def _combine(existing: QueryValue, value: str) -> QueryValue:
    if isinstance(existing, list):
        return [*existing, value]
    return [existing, value]


def _key_segments(key: str) -> list[str]:
    """`a[b][]` → ["a", "[b]", "[]"], as qs splits keys: text between bracket groups is
    skipped, an unmatched bracket is part of the name, and whatever lies beyond
    DEPTH_LIMIT groups stays one literal segment."""
    groups = list(islice(_BRACKET.finditer(key), DEPTH_LIMIT + 1))
    if not groups:
        return [key]
    segments = [key[: groups[0].start()]] if groups[0].start() > 0 else []
    segments.extend(group.group() for group in groups[:DEPTH_LIMIT])
    if len(groups) > DEPTH_LIMIT:
        segments.append(f"[{key[groups[DEPTH_LIMIT].start() :]}]")
    return segments


def _nest(segments: list[str], leaf: QueryValue) -> dict[str, Any]:
    value: Any = leaf
    for index, segment in enumerate(reversed(segments)):
        is_root = index == len(segments) - 1
        value = _wrap(segment, value, bracketed=not is_root or segment.startswith("["))
    if isinstance(value, dict):
        return value
    return {str(index): item for index, item in enumerate(value)}  # a top-level `[]=`


def _wrap(segment: str, value: Any, *, bracketed: bool) -> Any:
    if segment == "[]":
        return value if isinstance(value, list) else [value]
    name = segment[1:-1] if bracketed and segment.startswith("[") else segment
    if bracketed and name.isdigit() and name == str(int(name)) and int(name) <= ARRAY_LIMIT:
        holes: list[Any] = [None] * int(name)
        return [*holes, value]
    return {name: value}


def _merge(target: Any, source: Any) -> Any:
    """qs's merge: objects merge key by key, lists by index, scalars accumulate."""
    if source is None:
        return target
    if not isinstance(source, dict | list):
        if isinstance(target, list):
            return [*target, source]
        if isinstance(target, dict):
            return {**target, source: True}
        return [target, source]
    if not isinstance(target, dict | list):
        return [target, *source] if isinstance(source, list) else [target, source]
    if isinstance(target, list) and isinstance(source, list):
        merged = list(target)
        for index, item in enumerate(source):
            if item is None:
                continue
            if index < len(merged):
                merged[index] = item if merged[index] is None else _merge(merged[index], item)
            else:
                merged.extend([None] * (index - len(merged)))
                merged.append(item)
        return merged
    result = _as_object(target)
    for key, item in _as_object(source).items():
        result[key] = _merge(result[key], item) if key in result else item
    return result


def _as_object(value: dict[str, Any] | list[Any]) -> dict[str, Any]:
    if isinstance(value, dict):
        return dict(value)
    return {str(index): item for index, item in enumerate(value) if item is not None}


def _compact(value: Any) -> Any:
    """Drop the holes sparse indexes left (`a[2]=x` alone is `["x"]`, as in qs)."""
    if isinstance(value, list):
        return [_compact(item) for item in value if item is not None]
    if isinstance(value, dict):
        return {key: _compact(item) for key, item in value.items()}
    return value


# --- validation ----------------------------------------------------------------------------


class QueryReader:
    """Reads a parsed query like a strict zod schema; issues accumulate until `done`."""

    def __init__(self, values: dict[str, QueryValue]) -> None:
        self.values = values
        self.check = Checker()
        # NUL cannot be stored or compared by PostgreSQL: refuse it wherever it appears.
        self.check.json_tree(values)

    @classmethod
    def of(cls, request: web.Request) -> QueryReader:
        return cls(request_query(request))

    def done(self) -> None:
        self.check.raise_if_invalid("invalid_query_params")

    def strict(self, allowed: Iterable[str] = ()) -> None:
        self.check.strict(self.values, allowed)

    def string(
        self,
        key: str,
        *,
        required: bool = False,
        pattern: re.Pattern[str] | None = None,
        min_length: int = 0,
        max_length: int | None = None,
    ) -> str | None:
        return self.check.string(
            self.values,
            key,
            required=required,
            pattern=pattern,
            min_length=min_length,
            max_length=max_length,
        )

    def boolean(self, key: str) -> bool | None:
        """true/1/yes/on/y/enabled or false/0/no/off/n/disabled, in any case."""
        if key not in self.values:
            return None
        value = self.values[key]
        word = value.lower() if isinstance(value, str) else None
        if word in TRUE_WORDS:
            return True
        if word in FALSE_WORDS:
            return False
        self.check.add("invalid_value", BOOLEAN_MESSAGE, (key,))
        return None

    def integer(self, key: str, *, minimum: int, maximum: int | None = None) -> int | None:
        """A number coerced the way JavaScript's Number() does, then range-checked."""
        if key not in self.values:
            return None
        number = js_number(self.values[key])
        path: Path = (key,)
        if math.isnan(number):
            self.check.add("invalid_type", "Invalid input: expected number, received NaN", path)
        elif math.isinf(number):
            # zod names the JavaScript type of the input, which for Infinity is "number".
            self.check.add("invalid_type", "Invalid input: expected number, received number", path)
        elif not number.is_integer():
            # Nango passes a fraction on to SQL and fails with a 500; a 400 says why.
            self.check.add("invalid_type", "Invalid input: expected int, received number", path)
        elif number < minimum:
            self.check.add("too_small", f"Too small: expected number to be >={minimum}", path)
        elif maximum is not None and number > maximum:
            self.check.add("too_big", f"Too big: expected number to be <={maximum}", path)
        else:
            return int(number)
        return None

    def tags(self, key: str) -> dict[str, str] | None:
        if key not in self.values:
            return None
        return tag_map(self.check, self.values[key], (key,))


def js_number(value: Any) -> float:
    """JavaScript's `Number(value)` for the values `qs` produces."""
    if isinstance(value, bool):
        return 1.0 if value else 0.0
    if isinstance(value, list):
        # Number([]) is 0, Number(["5"]) is 5, and longer lists stringify with commas.
        if not value:
            return 0.0
        return js_number(value[0]) if len(value) == 1 else math.nan
    if not isinstance(value, str):
        return math.nan
    text = value.strip(_JS_SPACE)
    if not text:
        return 0.0
    if text in ("Infinity", "+Infinity"):
        return math.inf
    if text == "-Infinity":
        return -math.inf
    radix = _JS_RADIX.fullmatch(text)
    if radix is not None:
        digits = radix.group(1)
        return float(int(digits[1:], _RADIX[digits[0].lower()]))
    if _JS_DECIMAL.fullmatch(text):
        return float(text)
    return math.nan
