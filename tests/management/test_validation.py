"""management.validation: the Checker that collects zod-style issues `{code, message, path}`."""

from __future__ import annotations

import re
from typing import Any

import pytest

from management.errors import ValidationFailed
from management.validation import MAX_JSON_DEPTH, Checker, type_name

MISSING: Any = object()


@pytest.mark.parametrize(
    ("value", "name"),
    [
        (None, "null"),
        (True, "boolean"),
        (False, "boolean"),
        (0, "number"),
        (1.5, "number"),
        ("", "string"),
        ([], "array"),
        ({}, "object"),
    ],
)
def test_type_name(value: Any, name: str) -> None:
    assert type_name(value) == name


# --- expect_object / optional_object ----------------------------------------------------


def test_expect_object_returns_the_dict_itself() -> None:
    check = Checker()
    body = {"a": 1}
    assert check.expect_object(body) is body
    assert check.issues == []


@pytest.mark.parametrize(
    ("value", "received"),
    [(None, "null"), ([], "array"), ("s", "string"), (3, "number"), (False, "boolean")],
)
def test_expect_object_reports_what_it_received(value: Any, received: str) -> None:
    check = Checker()
    assert check.expect_object(value, ("a", "b")) is None
    assert check.issues == [
        {
            "code": "invalid_type",
            "message": f"Invalid input: expected object, received {received}",
            "path": ["a", "b"],
        }
    ]


def test_optional_object() -> None:
    check = Checker()
    assert check.optional_object({}, "meta") is None
    assert check.optional_object({"meta": {"k": 1}}, "meta") == {"k": 1}
    assert check.issues == []
    assert check.optional_object({"meta": None}, "meta", ("outer",)) is None
    assert check.issues[0]["path"] == ["outer", "meta"]
    assert check.issues[0]["message"].endswith("received null")


# --- strict ------------------------------------------------------------------------------


def test_strict_accepts_known_keys_only() -> None:
    check = Checker()
    check.strict({"a": 1, "b": 2}, ("a", "b", "c"))
    assert check.issues == []


def test_strict_singular_and_plural_messages_in_body_order() -> None:
    check = Checker()
    check.strict({"a": 1, "zeta": 2}, ("a",))
    check.strict({"y": 1, "a": 2, "x": 3}, ("a",), ("credentials",))
    assert check.issues == [
        {"code": "unrecognized_keys", "message": 'Unrecognized key: "zeta"', "path": []},
        {
            "code": "unrecognized_keys",
            "message": 'Unrecognized keys: "y", "x"',
            "path": ["credentials"],
        },
    ]


def test_strict_accepts_any_iterable_of_names() -> None:
    check = Checker()
    check.strict({"a": 1, "b": 2}, iter(["a", "b"]))
    assert check.issues == []


# --- string --------------------------------------------------------------------------------


def _string(value: Any, **rules: Any) -> tuple[str | None, list[dict[str, Any]]]:
    check = Checker()
    obj = {} if value is MISSING else {"field": value}
    result = check.string(obj, "field", ("parent",), **rules)
    return result, check.issues


def test_string_valid_value_is_returned() -> None:
    assert _string("hello") == ("hello", [])


def test_required_string_missing_is_undefined() -> None:
    result, issues = _string(MISSING)
    assert result is None
    assert issues == [
        {
            "code": "invalid_type",
            "message": "Invalid input: expected string, received undefined",
            "path": ["parent", "field"],
        }
    ]


def test_optional_string_missing_is_fine_but_null_is_not() -> None:
    assert _string(MISSING, required=False) == (None, [])
    result, issues = _string(None, required=False)
    assert result is None
    assert [issue["message"] for issue in issues] == [
        "Invalid input: expected string, received null"
    ]


@pytest.mark.parametrize(("value", "received"), [(1, "number"), ([], "array"), ({}, "object")])
def test_string_wrong_type(value: Any, received: str) -> None:
    _, issues = _string(value)
    assert issues[0]["message"] == f"Invalid input: expected string, received {received}"


@pytest.mark.parametrize(
    ("value", "code", "message"),
    [
        ("", "too_small", "Too small: expected string to have >=1 characters"),
        ("abcd", "too_big", "Too big: expected string to have <=3 characters"),
    ],
)
def test_string_length_bounds(value: str, code: str, message: str) -> None:
    result, issues = _string(value, min_length=1, max_length=3)
    assert result is None
    assert issues == [{"code": code, "message": message, "path": ["parent", "field"]}]


@pytest.mark.parametrize("value", ["a", "abc"])
def test_string_length_bounds_are_inclusive(value: str) -> None:
    assert _string(value, min_length=1, max_length=3) == (value, [])


def test_length_counts_characters_not_bytes() -> None:
    assert _string("ééé", max_length=3) == ("ééé", [])


PATTERN = re.compile(r"^[a-z]+$")


@pytest.mark.parametrize("value", ["abc\n", "abc\r", "ab c", "ABC", "\nabc"])
def test_pattern_must_match_the_whole_string(value: str) -> None:
    result, issues = _string(value, pattern=PATTERN)
    assert result is None
    assert issues == [
        {
            "code": "invalid_format",
            "message": "Invalid string: must match pattern /^[a-z]+$/",
            "path": ["parent", "field"],
        }
    ]


def test_only_the_first_failing_rule_is_reported() -> None:
    _, issues = _string("", min_length=1, pattern=PATTERN)
    assert [issue["code"] for issue in issues] == ["too_small"]
    _, issues = _string("TOO-LONG", max_length=3, pattern=PATTERN)
    assert [issue["code"] for issue in issues] == ["too_big"]


# --- boolean, string_map ----------------------------------------------------------------


def test_boolean() -> None:
    check = Checker()
    assert check.boolean({}, "flag") is None
    assert check.boolean({"flag": True}, "flag") is True
    assert check.boolean({"flag": False}, "flag") is False
    assert check.issues == []
    for value in ("true", 1, 0, None):
        assert check.boolean({"flag": value}, "flag", ("x",)) is None
    assert [issue["message"] for issue in check.issues] == [
        "Invalid input: expected boolean, received string",
        "Invalid input: expected boolean, received number",
        "Invalid input: expected boolean, received number",
        "Invalid input: expected boolean, received null",
    ]
    assert {tuple(issue["path"]) for issue in check.issues} == {("x", "flag")}


def test_string_map_keeps_valid_entries_and_reports_each_bad_one() -> None:
    check = Checker()
    mapping = {"ok": "v", "num": 1, "long": "x" * 6, "empty": ""}
    result = check.string_map({"tags": mapping}, "tags", ("body",), max_value=5)
    assert result == {"ok": "v", "empty": ""}
    assert [(issue["code"], issue["path"]) for issue in check.issues] == [
        ("invalid_type", ["body", "tags", "num"]),
        ("too_big", ["body", "tags", "long"]),
    ]


def test_string_map_absent_or_not_an_object() -> None:
    check = Checker()
    assert check.string_map({}, "tags") is None
    assert check.issues == []
    assert check.string_map({"tags": ["a"]}, "tags") is None
    assert check.issues[0]["path"] == ["tags"]
    assert check.issues[0]["code"] == "invalid_type"


# --- json_tree ------------------------------------------------------------------------------


def _nested(depth: int) -> Any:
    """`depth` levels of containers: 1 is `{}`."""
    value: Any = {}
    for level in range(depth - 1):
        value = {"d": value} if level % 2 else [value]
    return value


def test_json_tree_accepts_the_maximum_depth() -> None:
    check = Checker()
    check.json_tree(_nested(MAX_JSON_DEPTH))
    assert check.issues == []


def test_json_tree_refuses_one_level_more_once() -> None:
    check = Checker()
    check.json_tree(_nested(MAX_JSON_DEPTH + 1))
    assert len(check.issues) == 1
    issue = check.issues[0]
    assert issue["code"] == "too_big"
    assert issue["message"] == f"Too big: expected nesting depth <={MAX_JSON_DEPTH}"
    assert len(issue["path"]) == MAX_JSON_DEPTH
    assert all(isinstance(part, str) for part in issue["path"])


def test_json_tree_stops_descending_at_the_limit() -> None:
    check = Checker()
    check.json_tree(_nested(5000))  # would overflow the stack if it descended
    assert len(check.issues) == 1


def test_json_tree_depth_counts_from_the_given_path() -> None:
    check = Checker()
    check.json_tree({"a": {"b": {}}}, max_depth=2)
    assert [issue["path"] for issue in check.issues] == [["a", "b"]]


@pytest.mark.parametrize(
    ("value", "path"),
    [
        ("a\x00b", []),
        ({"k": "\x00"}, ["k"]),
        ({"k\x00": "v"}, ["k\x00"]),
        ({"list": ["ok", "bad\x00"]}, ["list", "1"]),
    ],
)
def test_json_tree_refuses_nul_characters(value: Any, path: list[str]) -> None:
    check = Checker()
    check.json_tree(value)
    assert check.issues == [
        {
            "code": "invalid_format",
            "message": "Invalid string: must not contain NUL characters",
            "path": path,
        }
    ]


@pytest.mark.parametrize(
    "value", [None, True, 0, -1.5, "", "\u2028\ud7ff\x01", {"a": [1, None, {"b": "c"}]}]
)
def test_json_tree_accepts_ordinary_values(value: Any) -> None:
    check = Checker()
    check.json_tree(value)
    assert check.issues == []


# --- raise_if_invalid --------------------------------------------------------------------


def test_raise_if_invalid_without_issues_does_nothing() -> None:
    Checker().raise_if_invalid()


def test_raise_if_invalid_carries_every_issue() -> None:
    check = Checker()
    check.string({}, "provider")
    check.strict({"x": 1}, ())
    check.boolean({"flag": "no"}, "flag", ("nested", "deeper"))
    with pytest.raises(ValidationFailed) as raised:
        check.raise_if_invalid("invalid_query_params")
    error = raised.value
    assert error.status == 400
    assert error.code == "invalid_query_params"
    assert error.issues == check.issues
    assert error.body() == {
        "error": {
            "code": "invalid_query_params",
            "message": "Invalid fields: (body), nested.deeper.flag, provider",
            "errors": check.issues,
        }
    }


def test_default_code_is_invalid_body() -> None:
    check = Checker()
    check.add("custom", "nope", ("a",))
    with pytest.raises(ValidationFailed) as raised:
        check.raise_if_invalid()
    assert raised.value.code == "invalid_body"
    assert raised.value.issues == [{"code": "custom", "message": "nope", "path": ["a"]}]
