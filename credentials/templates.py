"""The catalogue's small template language, used by base URLs, headers and query entries.

Syntax, as the provider catalogue uses it:

- `${a.b.c}` looks a dot path up in the values, falling back to flat keys that contain
  dots (`${connectionConfig.incoming_webhook.url}` finds a stored key
  `"incoming_webhook.url"`). Strings and numbers substitute; booleans, None, mappings and
  lists do not, so `${flag}` for a boolean stays in place (Nango does the same, and a
  header value of `True` is never what a provider wants).
- A placeholder that does not resolve stays in the text verbatim; callers look for a
  leftover `${` (`unresolved`) or use `interpolate_complete`, which says so directly.
- `A || B` at top level: A is used if interpolating it substituted anything, else B.
- Functions, whose argument text is interpolated first: `base64`, `sha256Hex`,
  `sha256Base64`, `hmacSha1Hex(message, key)`. A function whose arguments do not fully
  resolve stays unresolved as a whole, so a digest of literal `${...}` text never
  escapes. Functions we do not implement (`ed25519Sign`, `awsSigV4`, ...) stay unresolved.
- `${now}` (ISO-8601 UTC with milliseconds), `${now:FMT}` (a dayjs format in UTC),
  `${now+N:unit[:FMT]}` and `${random}` (a UUID v4). Within one call every `now` and
  every `random` take the same value, so a date header and a signature over it agree.

Everything here is pure: the clock and the random source are parameters.
"""

from __future__ import annotations

import base64
import calendar
import hashlib
import hmac
import re
import uuid
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from functools import lru_cache
from typing import Any, Final
from urllib.parse import parse_qsl, quote, urlsplit

from credentials.models import Connection, Integration

Clock = Callable[[], datetime]
RandomSource = Callable[[], str]

# Names the proxy only knows per request; a template that uses them (or now/random, which
# must be fresh per request) cannot be rendered once per connection.
REQUEST_VALUE_NAMES: Final = frozenset(
    {
        "method",
        "path",
        "endpoint",
        "host",
        "params",
        "urlCanonicalParams",
        "bodyCanonicalParams",
        "contentType",
    }
)

CONFIG_NAMESPACES: Final = ("connectionConfig", "connection_config")

_MISSING: Final = object()
_CALL = re.compile(r"([A-Za-z_]\w*)\((.*)\)", re.DOTALL)
_NOW = re.compile(r"now(?:([+-]\d+):([A-Za-z]+))?(?::(.*))?", re.DOTALL)
_CONFIG_REFERENCE = re.compile(r"(?:connectionConfig|connection_config)\.([\w-]+)")


def utc_now() -> datetime:
    return datetime.now(UTC)


def random_uuid() -> str:
    return str(uuid.uuid4())


class UnresolvedTemplate(ValueError):
    """A template still has placeholders after interpolation.

    `missing` holds the names as the template spells them (`connectionConfig.subdomain`);
    never a value, so the message is safe to return to a caller.
    """

    def __init__(self, missing: Sequence[str]) -> None:
        self.missing = list(missing)
        super().__init__("unresolved template values: " + ", ".join(self.missing))

    @property
    def missing_connection_config(self) -> list[str]:
        """The missing `connection_config` keys, without their namespace prefix."""
        keys: list[str] = []
        for name in self.missing:
            head, _, key = name.partition(".")
            if head in CONFIG_NAMESPACES and key:
                keys.append(key)
        return keys


# --- parsing ------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class _Placeholder:
    expression: str  # text between `${` and the matching `}`, stripped
    raw: str  # the whole `${...}`, put back verbatim when it does not resolve


_Part = str | _Placeholder


def _matching_brace(text: str, position: int) -> int:
    """Index of the `}` that closes a `${` whose body starts at `position`, or -1.

    Every `{` nests (a nested `${` starts with one), so function arguments that contain
    placeholders close correctly.
    """
    depth = 1
    for index in range(position, len(text)):
        char = text[index]
        if char == "{":
            depth += 1
        elif char == "}":
            depth -= 1
            if depth == 0:
                return index
    return -1


@lru_cache(maxsize=2048)
def _parse(text: str) -> tuple[_Part, ...]:
    parts: list[_Part] = []
    cursor = 0
    while (start := text.find("${", cursor)) >= 0:
        end = _matching_brace(text, start + 2)
        if end < 0:
            break  # an unclosed `${` is literal text
        if start > cursor:
            parts.append(text[cursor:start])
        parts.append(_Placeholder(text[start + 2 : end].strip(), text[start : end + 1]))
        cursor = end + 1
    if cursor < len(text):
        parts.append(text[cursor:])
    return tuple(parts)


@lru_cache(maxsize=2048)
def _split_top_level(text: str, separator: str) -> tuple[str, ...]:
    """Split on `separator` where it is outside every `${...}`."""
    pieces: list[str] = []
    depth = 0
    start = 0
    index = 0
    while index < len(text):
        char = text[index]
        if char == "{":
            depth += 1
        elif char == "}" and depth:
            depth -= 1
        elif depth == 0 and text.startswith(separator, index):
            pieces.append(text[start:index])
            index += len(separator)
            start = index
            continue
        index += 1
    pieces.append(text[start:])
    return tuple(pieces)


def _alternatives(template: str) -> tuple[str, ...]:
    if "||" not in template:
        return (template,)
    return tuple(piece.strip() for piece in _split_top_level(template, "||"))


# --- evaluation ---------------------------------------------------------------------


@dataclass(slots=True)
class _Scope:
    """One interpolation: the values, and `now`/`random` fixed on first use."""

    values: Mapping[str, Any]
    clock: Clock
    random_source: RandomSource
    now: datetime | None = None
    random: str | None = None

    def current_time(self) -> datetime:
        if self.now is None:
            moment = self.clock()
            # A naive clock reading is taken to be UTC, which is what the catalogue means.
            aware = moment.replace(tzinfo=UTC) if moment.tzinfo is None else moment
            self.now = aware.astimezone(UTC)
        return self.now

    def random_value(self) -> str:
        if self.random is None:
            self.random = self.random_source()
        return self.random


@dataclass(slots=True)
class _Rendered:
    text: str
    substituted: int = 0  # placeholders replaced by a value
    unresolved: int = 0  # placeholders left verbatim
    missing: list[str] = field(default_factory=list)  # value names that were not found


def _render(text: str, scope: _Scope) -> _Rendered:
    """Interpolate one alternative (no `||` handling)."""
    if "${" not in text:
        return _Rendered(text)
    out: list[str] = []
    result = _Rendered("")
    for part in _parse(text):
        if isinstance(part, str):
            out.append(part)
            continue
        value = _evaluate(part.expression, scope, result.missing)
        if value is None:
            out.append(part.raw)
            result.unresolved += 1
        else:
            out.append(value)
            result.substituted += 1
    result.text = "".join(out)
    return result


def _render_with_fallback(template: str, scope: _Scope) -> _Rendered:
    alternatives = _alternatives(template)
    for alternative in alternatives[:-1]:
        rendered = _render(alternative, scope)
        if rendered.substituted:
            return rendered
    return _render(alternatives[-1], scope)


def _evaluate(expression: str, scope: _Scope, missing: list[str]) -> str | None:
    if expression == "random":
        return scope.random_value()
    if expression.startswith("now") and (now_match := _NOW.fullmatch(expression)):
        return _now_text(scope.current_time(), now_match)
    if call := _CALL.fullmatch(expression):
        return _call(call.group(1), call.group(2), scope, missing)
    found = _lookup(scope.values, expression)
    text = _as_text(found)
    if text is None:
        missing.append(expression)
    return text


def _as_text(value: object) -> str | None:
    if isinstance(value, str):
        return value
    if isinstance(value, bool):
        return None  # bool is an int in Python; it must not render as "True"
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float):
        # JavaScript prints 2.0 as "2"; catalogue templates were written against that.
        return str(int(value)) if value.is_integer() else repr(value)
    return None


def _lookup(values: Mapping[str, Any], path: str) -> object:
    return _walk(values, path.split("."))


def _walk(node: object, parts: Sequence[str]) -> object:
    if not parts:
        return node
    if isinstance(node, Mapping):
        return _walk_mapping(node, parts)
    if isinstance(node, Sequence) and not isinstance(node, str) and parts[0].isdigit():
        index = int(parts[0])
        return _walk(node[index], parts[1:]) if index < len(node) else _MISSING
    return _MISSING


def _walk_mapping(node: Mapping[Any, Any], parts: Sequence[str]) -> object:
    # Dot path first; then flat keys that themselves contain dots, longest first.
    if parts[0] in node:
        found = _walk(node[parts[0]], parts[1:])
        if found is not _MISSING:
            return found
    for cut in range(len(parts), 1, -1):
        key = ".".join(parts[:cut])
        if key in node:
            found = _walk(node[key], parts[cut:])
            if found is not _MISSING:
                return found
    return _MISSING


# --- functions ----------------------------------------------------------------------


def _render_argument(text: str, scope: _Scope, missing: list[str]) -> str | None:
    rendered = _render(text, scope)
    missing.extend(rendered.missing)
    return None if rendered.unresolved else rendered.text


def _digest_function(
    transform: Callable[[str], str],
) -> Callable[[str, _Scope, list[str]], str | None]:
    def apply(arguments: str, scope: _Scope, missing: list[str]) -> str | None:
        inner = _render_argument(arguments, scope, missing)
        return None if inner is None else transform(inner)

    return apply


def _base64(text: str) -> str:
    return base64.b64encode(text.encode()).decode("ascii")


def _sha256_hex(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()


def _sha256_base64(text: str) -> str:
    return base64.b64encode(hashlib.sha256(text.encode()).digest()).decode("ascii")


def _hmac_sha1_hex(arguments: str, scope: _Scope, missing: list[str]) -> str | None:
    # Split the raw text on its last top-level comma, before interpolating, so a comma
    # inside a value (a date, a password) never moves the split.
    pieces = _split_top_level(arguments, ",")
    if len(pieces) < 2:
        missing.append("hmacSha1Hex(...)")  # needs a message and a key
        return None
    message = _render_argument(",".join(pieces[:-1]).strip(), scope, missing)
    key = _render_argument(pieces[-1].strip(), scope, missing)
    if message is None or key is None:
        return None
    return hmac.new(key.encode(), message.encode(), hashlib.sha1).hexdigest()


_FUNCTIONS: Final[Mapping[str, Callable[[str, _Scope, list[str]], str | None]]] = {
    "base64": _digest_function(_base64),
    "sha256Hex": _digest_function(_sha256_hex),
    "sha256Base64": _digest_function(_sha256_base64),
    "hmacSha1Hex": _hmac_sha1_hex,
}


def _call(name: str, arguments: str, scope: _Scope, missing: list[str]) -> str | None:
    function = _FUNCTIONS.get(name)
    if function is None:
        missing.append(f"{name}(...)")
        return None
    return function(arguments, scope, missing)


# --- time ---------------------------------------------------------------------------

_WEEKDAYS: Final = ("Monday", "Tuesday", "Wednesday", "Thursday", "Friday", "Saturday", "Sunday")
_MONTH_NAMES: Final = (
    "",
    "January",
    "February",
    "March",
    "April",
    "May",
    "June",
    "July",
    "August",
    "September",
    "October",
    "November",
    "December",
)
_DAYJS_TOKEN = re.compile(
    r"\[([^\]]*)\]|YYYY|YY|MMMM|MMM|MM|M|DD|D|dddd|ddd|dd|d|HH|H|hh|h|mm|m|ss|s|SSS|X|x|ZZ|Z|A|a"
)
_UNIT_SECONDS: Final[Mapping[str, float]] = {
    "ms": 0.001,
    "millisecond": 0.001,
    "s": 1,
    "second": 1,
    "m": 60,
    "minute": 60,
    "h": 3600,
    "hour": 3600,
    "d": 86400,
    "day": 86400,
    "w": 604800,
    "week": 604800,
}
_UNIT_MONTHS: Final[Mapping[str, int]] = {"M": 1, "month": 1, "y": 12, "year": 12}


def _iso(moment: datetime) -> str:
    return moment.strftime("%Y-%m-%dT%H:%M:%S.") + f"{moment.microsecond // 1000:03d}Z"


def _now_text(moment: datetime, match: re.Match[str]) -> str | None:
    amount, unit, pattern = match.groups()
    if amount is not None:
        shifted = _shift(moment, int(amount), unit)
        if shifted is None:
            return None
        moment = shifted
    return _iso(moment) if pattern is None else format_time(moment, pattern)


def _shift(moment: datetime, amount: int, unit: str) -> datetime | None:
    singular = unit if unit in _UNIT_MONTHS or len(unit) <= 2 else unit.removesuffix("s")
    if singular in _UNIT_SECONDS:
        return moment + timedelta(seconds=amount * _UNIT_SECONDS[singular])
    if singular in _UNIT_MONTHS:
        return _add_months(moment, amount * _UNIT_MONTHS[singular])
    return None


def _add_months(moment: datetime, months: int) -> datetime:
    years, month_index = divmod(moment.month - 1 + months, 12)
    year, month = moment.year + years, month_index + 1
    day = min(moment.day, calendar.monthrange(year, month)[1])
    return moment.replace(year=year, month=month, day=day)


def format_time(moment: datetime, pattern: str) -> str:
    """Format a UTC time with a dayjs pattern (`X` epoch seconds, `x` epoch ms, `[lit]`)."""
    return _DAYJS_TOKEN.sub(lambda token: _format_token(moment, token), pattern)


def _format_token(moment: datetime, token: re.Match[str]) -> str:
    if token.group(1) is not None:
        return token.group(1)
    return _TOKEN_FORMATTERS[token.group(0)](moment)


def _twelve_hour(moment: datetime) -> int:
    return moment.hour % 12 or 12


def _epoch_seconds(moment: datetime) -> int:
    return calendar.timegm(moment.utctimetuple())  # integer maths: no float rounding


def _dayjs_weekday(moment: datetime) -> int:
    return (moment.weekday() + 1) % 7  # dayjs counts from Sunday = 0


_TOKEN_FORMATTERS: Final[Mapping[str, Callable[[datetime], str]]] = {
    "YYYY": lambda t: f"{t.year:04d}",
    "YY": lambda t: f"{t.year % 100:02d}",
    "MMMM": lambda t: _MONTH_NAMES[t.month],
    "MMM": lambda t: _MONTH_NAMES[t.month][:3],
    "MM": lambda t: f"{t.month:02d}",
    "M": lambda t: str(t.month),
    "DD": lambda t: f"{t.day:02d}",
    "D": lambda t: str(t.day),
    "dddd": lambda t: _WEEKDAYS[t.weekday()],
    "ddd": lambda t: _WEEKDAYS[t.weekday()][:3],
    "dd": lambda t: _WEEKDAYS[t.weekday()][:2],
    "d": lambda t: str(_dayjs_weekday(t)),
    "HH": lambda t: f"{t.hour:02d}",
    "H": lambda t: str(t.hour),
    "hh": lambda t: f"{_twelve_hour(t):02d}",
    "h": lambda t: str(_twelve_hour(t)),
    "mm": lambda t: f"{t.minute:02d}",
    "m": lambda t: str(t.minute),
    "ss": lambda t: f"{t.second:02d}",
    "s": lambda t: str(t.second),
    "SSS": lambda t: f"{t.microsecond // 1000:03d}",
    "X": lambda t: str(_epoch_seconds(t)),
    "x": lambda t: str(_epoch_seconds(t) * 1000 + t.microsecond // 1000),
    "ZZ": lambda t: "+0000",
    "Z": lambda t: "+00:00",
    "A": lambda t: "AM" if t.hour < 12 else "PM",
    "a": lambda t: "am" if t.hour < 12 else "pm",
}


# --- public API ---------------------------------------------------------------------


def interpolate(
    template: str,
    values: Mapping[str, Any],
    *,
    clock: Clock = utc_now,
    random_source: RandomSource = random_uuid,
) -> str:
    """Substitute every placeholder that resolves; leave the others verbatim."""
    if "${" not in template:
        return template
    return _render_with_fallback(template, _Scope(values, clock, random_source)).text


def interpolate_complete(
    template: str,
    values: Mapping[str, Any],
    *,
    clock: Clock = utc_now,
    random_source: RandomSource = random_uuid,
) -> str | None:
    """The interpolated text, or None when any placeholder did not resolve.

    Safer than checking the output for `${`, which a substituted value may contain.
    """
    if "${" not in template:
        return template
    rendered = _render_with_fallback(template, _Scope(values, clock, random_source))
    return None if rendered.unresolved else rendered.text


def unresolved(text: str) -> bool:
    """True when `text` still contains a placeholder opener."""
    return "${" in text


def placeholders(template: str) -> list[str]:
    """Value names a template refers to, in order, once each (function arguments too).

    Built-ins (`now...`, `random`) and function names are not value names.
    """
    seen: dict[str, None] = {}
    for name in _names(template):
        seen.setdefault(name, None)
    return list(seen)


def _is_builtin(expression: str) -> bool:
    return expression == "random" or (
        expression.startswith("now") and _NOW.fullmatch(expression) is not None
    )


def _names(text: str) -> Iterator[str]:
    for part in _parse(text):
        if isinstance(part, str):
            continue
        expression = part.expression
        if _is_builtin(expression):
            continue
        if call := _CALL.fullmatch(expression):
            yield from _names(call.group(2))
        else:
            yield expression


def request_dependent(template: str) -> bool:
    """True when the template needs per-request values (request names, now, random)."""
    for part in _parse(template):
        if isinstance(part, str):
            continue
        expression = part.expression
        if _is_builtin(expression):
            return True
        if call := _CALL.fullmatch(expression):
            if request_dependent(call.group(2)):
                return True
        elif expression.split(".", 1)[0] in REQUEST_VALUE_NAMES:
            return True
    return False


def request_values(
    method: str, url: str, endpoint: str = "", content_type: str | None = None
) -> dict[str, str]:
    """The per-request names dynamic header templates use, from the final upstream URL.

    `params` and `urlCanonicalParams` are the query, sorted and RFC 3986-encoded with
    upper-case hex (Duo-style canonical form). Body parameters are not included: bodies
    are streamed, never buffered to be signed.
    """
    parts = urlsplit(url)
    canonical = canonical_params(parts.query)
    values = {
        "method": method.upper(),
        "endpoint": endpoint,
        "host": parts.netloc.rpartition("@")[2],  # host[:port], never userinfo
        "path": parts.path or "/",
        "params": canonical,
        "urlCanonicalParams": canonical,
    }
    if content_type:
        values["contentType"] = content_type
    return values


def canonical_params(query: str) -> str:
    pairs = sorted(parse_qsl(query, keep_blank_values=True))
    return "&".join(f"{_rfc3986(key)}={_rfc3986(value)}" for key, value in pairs)


def _rfc3986(text: str) -> str:
    return quote(text, safe="-_.~")  # quote() already emits upper-case hex


def resolve_base_url(template: str, values: Mapping[str, Any]) -> str:
    """Interpolate a provider base URL with the proxy's `||` rule.

    With both `${` and `||`, the left alternative is used iff the first
    `connectionConfig.<key>` the template mentions is truthy in the connection config;
    otherwise the right one. Raises UnresolvedTemplate naming what is still missing.
    """
    scoped = _with_config_namespaces(values)
    chosen = _choose_base_alternative(template, scoped)
    rendered = _render_with_fallback(chosen, _Scope(scoped, utc_now, random_uuid))
    if rendered.unresolved:
        raise UnresolvedTemplate(rendered.missing or placeholders(chosen) or [chosen])
    return rendered.text


def _choose_base_alternative(template: str, values: Mapping[str, Any]) -> str:
    if "${" not in template or "||" not in template:
        return template
    reference = _CONFIG_REFERENCE.search(template)
    alternatives = _alternatives(template)
    if reference is None or len(alternatives) < 2:
        return template  # no config key to decide on: the generic `||` rule applies
    config = values.get("connection_config") or {}
    if config.get(reference.group(1)):
        return alternatives[0]
    return _choose_base_alternative(" || ".join(alternatives[1:]), values)


def _with_config_namespaces(values: Mapping[str, Any]) -> Mapping[str, Any]:
    """Both spellings of the config namespace, with empty values removed."""
    raw = values.get("connection_config")
    if raw is None:
        raw = values.get("connectionConfig")
    config = clean_connection_config(raw if isinstance(raw, Mapping) else {})
    return {**values, "connection_config": config, "connectionConfig": config}


def clean_connection_config(config: Mapping[str, Any]) -> dict[str, Any]:
    """Drop empty values and a stray `connectionConfig.` key prefix.

    An empty value must count as missing, so `${connectionConfig.x}` stays unresolved and
    an optional header is dropped instead of being sent empty.
    """
    cleaned: dict[str, Any] = {}
    for key, value in config.items():
        if value is None or (isinstance(value, str | list | dict) and not value):
            continue
        cleaned[str(key).removeprefix("connectionConfig.")] = value
    return cleaned


def template_values(connection: Connection, integration: Integration | None) -> dict[str, Any]:
    """The namespaces catalogue templates see for one connection.

    Credential fields are also flattened to the top level (`${apiKey}`, `${username}`),
    but the named namespaces are written last so a credential field can never shadow
    `connectionConfig`, `metadata` or `credentials`.
    """
    credentials = connection.credentials or {}
    config = clean_connection_config(connection.connection_config or {})
    values: dict[str, Any] = dict(credentials)
    values.update(
        connection_id=connection.connection_id,
        provider_config_key=connection.provider_config_key,
        provider=connection.provider,
        credentials=credentials,
        metadata=connection.metadata or {},
        connectionConfig=config,
        connection_config=config,
    )
    access_token = _access_token(credentials)
    if access_token is not None:
        values["accessToken"] = access_token
    values.update(_integration_client(integration))
    return values


def _access_token(credentials: Mapping[str, Any]) -> str | None:
    for key in ("access_token", "token"):
        value = credentials.get(key)
        if isinstance(value, str) and value:
            return value
    return None


def _integration_client(integration: Integration | None) -> dict[str, str]:
    client = (integration.credentials if integration is not None else None) or {}
    names = {"client_id": "clientId", "client_secret": "clientSecret"}
    return {
        alias: client[key]
        for key, alias in names.items()
        if isinstance(client.get(key), str) and client[key]
    }
