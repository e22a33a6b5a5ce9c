"""End users, organizations and tags: Nango's §4.6 / §4.8 rules, shared by every route that
accepts them.

Readers take a `Checker` and record zod-style issues, so one request reports every bad field
at once. `generated_tags` derives the tags Nango adds from a (deprecated) end user and
organization; it never fails, it trims or drops what would not be a valid tag instead.
"""

from __future__ import annotations

import re
from typing import Any

from management.validation import Checker, Path

TAG_KEY_PATTERN = re.compile(r"^[a-zA-Z][a-zA-Z0-9_\-./]*$")
# zod v4's email rule, the one Nango's schemas use.
EMAIL_PATTERN = re.compile(
    r"^(?!\.)(?!.*\.\.)[A-Za-z0-9_'+\-.]*[A-Za-z0-9_+-]@([A-Za-z0-9][A-Za-z0-9\-]*\.)+[A-Za-z]{2,}$"
)
MAX_TAGS = 10
MAX_TAG_KEY = 64
MAX_TAG_VALUE = 255
MAX_NAME = 255

_END_USER_FIELDS = ("id", "email", "display_name", "tags")
_ORGANIZATION_FIELDS = ("id", "display_name")


def tag_map(check: Checker, value: Any, path: Path) -> dict[str, str] | None:
    """A valid tag object with its keys lower-cased, or None (issues recorded)."""
    tags = check.expect_object(value, path)
    if tags is None:
        return None
    before = len(check.issues)
    if len(tags) > MAX_TAGS:
        check.add("too_big", f"Too big: expected object to have <={MAX_TAGS} keys", path)
    result: dict[str, str] = {}
    for key in tags:
        tag = _tag(check, tags, key, path)
        if tag is None:
            continue
        if key.lower() in result:
            message = f'Duplicate tag key after case normalization: "{key}"'
            check.add("custom", message, (*path, key))
            continue
        result[key.lower()] = tag
    return result if len(check.issues) == before else None


def _tag(check: Checker, tags: dict[str, Any], key: str, path: Path) -> str | None:
    where = (*path, key)
    if len(key) > MAX_TAG_KEY:
        check.add("too_big", f"Too big: expected string to have <={MAX_TAG_KEY} characters", where)
        return None
    if not TAG_KEY_PATTERN.fullmatch(key):
        message = f"Invalid string: must match pattern /{TAG_KEY_PATTERN.pattern}/"
        check.add("invalid_format", message, where)
        return None
    value = check.string(tags, key, path, min_length=1, max_length=MAX_TAG_VALUE)
    if value is not None and key.lower() == "end_user_email" and not _is_email(value):
        check.add("invalid_format", "Invalid email address", where)
        return None
    return value


def end_user(check: Checker, value: Any, path: Path) -> dict[str, Any] | None:
    """`{id, email?, display_name?, tags?}` as given (tags normalised), or None."""
    fields = check.expect_object(value, path)
    if fields is None:
        return None
    before = len(check.issues)
    check.strict(fields, _END_USER_FIELDS, path)
    result: dict[str, Any] = {
        "id": check.string(fields, "id", path, min_length=1, max_length=MAX_NAME)
    }
    email = check.string(fields, "email", path, required=False)
    if email is not None and not _is_email(email):
        check.add("invalid_format", "Invalid email address", (*path, "email"))
    elif email is not None:
        result["email"] = email
    display_name = check.string(fields, "display_name", path, required=False, max_length=MAX_NAME)
    if display_name is not None:
        result["display_name"] = display_name
    if "tags" in fields:
        result["tags"] = tag_map(check, fields["tags"], (*path, "tags"))
    return result if len(check.issues) == before else None


def organization(check: Checker, value: Any, path: Path) -> dict[str, Any] | None:
    """`{id, display_name?}`; the id may be empty (Nango allows it), or None."""
    fields = check.expect_object(value, path)
    if fields is None:
        return None
    before = len(check.issues)
    check.strict(fields, _ORGANIZATION_FIELDS, path)
    result: dict[str, Any] = {"id": check.string(fields, "id", path, max_length=MAX_NAME)}
    display_name = check.string(fields, "display_name", path, required=False, max_length=MAX_NAME)
    if display_name is not None:
        result["display_name"] = display_name
    return result if len(check.issues) == before else None


def generated_tags(user: dict[str, Any] | None, org: dict[str, Any] | None) -> dict[str, str]:
    """The tags Nango derives from an end user and organization (§4.8).

    Base tags come from the identifying fields, values cut to 255 characters and empty
    ones left out; the end user's own tags go on top, keys lower-cased and cut to 64, and
    invalid keys dropped. If the end user's tags would take the total over the limit,
    all of them are dropped rather than an arbitrary few.
    """
    base: dict[str, str] = {}
    for name, source, field in (
        ("end_user_id", user, "id"),
        ("end_user_email", user, "email"),
        ("end_user_display_name", user, "display_name"),
        ("organization_id", org, "id"),
        ("organization_display_name", org, "display_name"),
    ):
        value = (source or {}).get(field)
        if isinstance(value, str) and value:
            base[name] = value[:MAX_TAG_VALUE]
    extra = _usable_tags((user or {}).get("tags"))
    combined = {**base, **extra}
    return combined if len(combined) <= MAX_TAGS else base


def _usable_tags(tags: Any) -> dict[str, str]:
    if not isinstance(tags, dict):
        return {}
    usable: dict[str, str] = {}
    for raw_key, raw_value in tags.items():
        key = str(raw_key).lower()[:MAX_TAG_KEY]
        if isinstance(raw_value, str) and raw_value and TAG_KEY_PATTERN.fullmatch(key):
            usable[key] = raw_value[:MAX_TAG_VALUE]
    return usable


def _is_email(value: str) -> bool:
    return EMAIL_PATTERN.fullmatch(value) is not None
