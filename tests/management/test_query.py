"""management.query: `qs`-shaped parsing and zod-shaped validation of query strings."""

from __future__ import annotations

import math
from typing import Any

import pytest

from management.errors import ValidationFailed
from management.query import (
    BOOLEAN_MESSAGE,
    PARAMETER_LIMIT,
    QueryReader,
    js_number,
    parse_query_string,
)

# --- parse_query_string ----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("raw", "parsed"),
    [
        ("", {}),
        ("a=1", {"a": "1"}),
        ("a", {"a": ""}),
        ("a=", {"a": ""}),
        ("a=1=2", {"a": "1=2"}),
        ("&&a=1&", {"a": "1"}),
        ("=x&b=2", {"b": "2"}),
        # `+` is a space; escapes decode as UTF-8, keys included.
        ("q=john+doe%2B1", {"q": "john doe+1"}),
        ("%71=%E2%82%AC", {"q": "\u20ac"}),
        ("a%5Bb%5D=c", {"a": {"b": "c"}}),
        # A broken escape leaves the text as written (decodeURIComponent would throw).
        ("a=%zz&b=%E2%82&c=100%", {"a": "%zz", "b": "%E2%82", "c": "100%"}),
        ("a=%zz%41", {"a": "%zz%41"}),
        # Repetition and brackets make lists.
        ("a=1&a=2&a=3", {"a": ["1", "2", "3"]}),
        ("a[]=1&a[]=2", {"a": ["1", "2"]}),
        ("a[1]=b&a[0]=c", {"a": ["c", "b"]}),
        ("a[5]=x", {"a": ["x"]}),
        ("a[101]=x", {"a": {"101": "x"}}),
        ("a[01]=x", {"a": {"01": "x"}}),
        # Nested objects, merged across parameters.
        ("tags[end_user_id]=x&tags[env]=prod", {"tags": {"end_user_id": "x", "env": "prod"}}),
        ("a[b][c]=1&a[b][d]=2", {"a": {"b": {"c": "1", "d": "2"}}}),
        ("a[b]=1&a[b]=2", {"a": {"b": ["1", "2"]}}),
        ("a[b=c]=d", {"a": {"b=c": "d"}}),
        ("a[b]x[c]=1", {"a": {"b": {"c": "1"}}}),
        ("a[b=1", {"a[b": "1"}),
        ("a]b=1", {"a]b": "1"}),
        ("[a]=b", {"a": "b"}),
        ("[]=x", {"0": "x"}),
        # Beyond five bracket groups the rest stays one literal key.
        (
            "a[b][c][d][e][f][g][h]=1",
            {"a": {"b": {"c": {"d": {"e": {"f": {"[g][h]": "1"}}}}}}},
        ),
        # Mixed shapes merge the way qs merges them.
        ("a=x&a[b]=y", {"a": ["x", {"b": "y"}]}),
        ("a[b]=y&a=x", {"a": {"b": "y", "x": True}}),
        ("a[0]=x&a[b]=y", {"a": {"0": "x", "b": "y"}}),
        ("a[b]=y&a[0]=x", {"a": {"b": "y", "0": "x"}}),
        ("a=1&a[]=2", {"a": ["1", "2"]}),
    ],
)
def test_parse_query_string(raw: str, parsed: dict[str, Any]) -> None:
    assert parse_query_string(raw) == parsed


def test_only_the_first_thousand_parameters_are_read() -> None:
    parsed = parse_query_string("&".join(f"k{index}=v" for index in range(PARAMETER_LIMIT + 5)))
    assert len(parsed) == PARAMETER_LIMIT
    assert "k999" in parsed
    assert "k1000" not in parsed


def test_what_the_node_client_sends() -> None:
    """URLSearchParams: brackets percent-encoded, spaces as `+`, commas encoded."""
    raw = (
        "connectionId=john+doe&endUserId=user+42&integrationId=github%2Cslack"
        "&tags%5Bend_user_display_name%5D=John+Doe&tags%5Bend_user_email%5D=j%40example.com"
        "&limit=100&page=0"
    )
    assert parse_query_string(raw) == {
        "connectionId": "john doe",
        "endUserId": "user 42",
        "integrationId": "github,slack",
        "tags": {"end_user_display_name": "John Doe", "end_user_email": "j@example.com"},
        "limit": "100",
        "page": "0",
    }
    raw = (
        "provider_config_key=github&force_refresh=false&refresh_token=false"
        "&refresh_github_app_jwt_token=false"
    )
    reader = QueryReader(parse_query_string(raw))
    reader.strict(
        ("provider_config_key", "force_refresh", "refresh_token", "refresh_github_app_jwt_token")
    )
    assert reader.string("provider_config_key", required=True) == "github"
    assert reader.boolean("force_refresh") is False
    reader.done()


# --- QueryReader -------------------------------------------------------------------------------


def issues_of(reader: QueryReader) -> list[dict[str, Any]]:
    with pytest.raises(ValidationFailed) as raised:
        reader.done()
    assert raised.value.code == "invalid_query_params"
    assert raised.value.status == 400
    return raised.value.issues


def reader(raw: str) -> QueryReader:
    return QueryReader(parse_query_string(raw))


@pytest.mark.parametrize(
    ("word", "value"),
    [
        *[(word, True) for word in ("true", "1", "yes", "on", "y", "enabled", "TRUE", "Yes")],
        *[(word, False) for word in ("false", "0", "no", "off", "n", "disabled", "OFF", "No")],
    ],
)
def test_lenient_booleans(word: str, value: bool) -> None:
    query = reader(f"flag={word}")
    assert query.boolean("flag") is value
    query.done()


@pytest.mark.parametrize(
    "raw", ["flag=", "flag=maybe", "flag=truthy", "flag=1&flag=1", "flag[x]=1"]
)
def test_bad_booleans_are_invalid_value(raw: str) -> None:
    query = reader(raw)
    assert query.boolean("flag") is None
    assert issues_of(query) == [
        {"code": "invalid_value", "message": BOOLEAN_MESSAGE, "path": ["flag"]}
    ]


def test_the_boolean_message_is_zods() -> None:
    assert BOOLEAN_MESSAGE == (
        'Invalid option: expected one of "true"|"1"|"yes"|"on"|"y"|"enabled"|"false"|"0"|"no"'
        '|"off"|"n"|"disabled"'
    )


def test_an_absent_boolean_is_none() -> None:
    query = reader("")
    assert query.boolean("flag") is None
    query.done()


@pytest.mark.parametrize(
    ("raw", "value"),
    [
        ("n=1", 1),
        ("n=2000", 2000),
        ("n=+7", 7),  # `+` decodes to a space, which Number() trims
        ("n=%207%09", 7),
        ("n=0x1f", 31),
        ("n=0b11", 3),
        ("n=0o17", 15),
        ("n=1e3", 1000),
        ("n=1.0", 1),
        ("n=.5e1", 5),
        ("n[]=9", 9),  # Number(["9"]) is 9
    ],
)
def test_integers_are_read_like_javascript_numbers(raw: str, value: int) -> None:
    query = reader(raw)
    assert query.integer("n", minimum=1, maximum=2000) == value
    query.done()


@pytest.mark.parametrize(
    ("raw", "code", "message"),
    [
        ("n=abc", "invalid_type", "Invalid input: expected number, received NaN"),
        ("n=1&n=2", "invalid_type", "Invalid input: expected number, received NaN"),
        ("n[a]=1", "invalid_type", "Invalid input: expected number, received NaN"),
        ("n=1_000", "invalid_type", "Invalid input: expected number, received NaN"),
        ("n=0x", "invalid_type", "Invalid input: expected number, received NaN"),
        ("n=Infinity", "invalid_type", "Invalid input: expected number, received number"),
        ("n=1e999", "invalid_type", "Invalid input: expected number, received number"),
        ("n=1.5", "invalid_type", "Invalid input: expected int, received number"),
        ("n=0", "too_small", "Too small: expected number to be >=1"),
        ("n=", "too_small", "Too small: expected number to be >=1"),
        ("n=-1", "too_small", "Too small: expected number to be >=1"),
        ("n=2001", "too_big", "Too big: expected number to be <=2000"),
    ],
)
def test_bad_integers(raw: str, code: str, message: str) -> None:
    query = reader(raw)
    assert query.integer("n", minimum=1, maximum=2000) is None
    assert issues_of(query) == [{"code": code, "message": message, "path": ["n"]}]


def test_integers_without_a_maximum() -> None:
    query = reader("page=100000000000")
    assert query.integer("page", minimum=0) == 100_000_000_000
    assert query.integer("absent", minimum=0) is None
    query.done()


@pytest.mark.parametrize(
    ("value", "number"),
    [
        ("", 0.0),
        ("  ", 0.0),
        ("\u00a012\ufeff", 12.0),
        ("-0", -0.0),
        ("-Infinity", -math.inf),
        ("+Infinity", math.inf),
        ("infinity", math.nan),
        ("1e", math.nan),
        ("--1", math.nan),
        ("0x-1", math.nan),
        ([], 0.0),
        (["5"], 5.0),
        (["1", "2"], math.nan),
        ({}, math.nan),
        (True, 1.0),
    ],
)
def test_js_number(value: Any, number: float) -> None:
    result = js_number(value)
    if math.isnan(number):
        assert math.isnan(result)
    else:
        assert result == number


def test_strict_names_every_unknown_key() -> None:
    query = reader("a=1&b=2&c=3")
    query.strict(("a",))
    assert issues_of(query) == [
        {"code": "unrecognized_keys", "message": 'Unrecognized keys: "b", "c"', "path": []}
    ]
    query = reader("a=1&cache_buster=2")
    query.strict(("a",))
    assert issues_of(query)[0]["message"] == 'Unrecognized key: "cache_buster"'
    query = reader("")
    query.strict()
    query.done()


def test_strings() -> None:
    query = reader("a=x&b=&c=1&c=2&d[e]=f")
    assert query.string("a", min_length=1) == "x"
    assert query.string("b", min_length=1) is None
    assert query.string("c") is None
    assert query.string("d") is None
    assert query.string("missing") is None
    assert query.string("required", required=True) is None
    assert issues_of(query) == [
        {
            "code": "too_small",
            "message": "Too small: expected string to have >=1 characters",
            "path": ["b"],
        },
        {
            "code": "invalid_type",
            "message": "Invalid input: expected string, received array",
            "path": ["c"],
        },
        {
            "code": "invalid_type",
            "message": "Invalid input: expected string, received object",
            "path": ["d"],
        },
        {
            "code": "invalid_type",
            "message": "Invalid input: expected string, received undefined",
            "path": ["required"],
        },
    ]


def test_nul_is_refused_anywhere() -> None:
    query = reader("a=x%00y&tags%5Bk%00%5D=v")
    assert query.string("a") == "x\x00y"  # the string rule itself passes ...
    paths = [issue["path"] for issue in issues_of(query)]
    assert ["a"] in paths  # ... but the query is refused
    assert ["tags", "k\x00"] in paths


def test_tags() -> None:
    query = reader("tags%5BEnv%5D=Prod&tags%5Bteam%5D=core")
    assert query.tags("tags") == {"env": "Prod", "team": "core"}
    assert query.tags("absent") is None
    query.done()
    query = reader("tags=x")
    assert query.tags("tags") is None
    assert issues_of(query)[0]["path"] == ["tags"]
    query = reader("tags%5B1a%5D=x&tags%5Bb%5D=")
    assert query.tags("tags") is None
    assert sorted(issue["path"] for issue in issues_of(query)) == [["tags", "1a"], ["tags", "b"]]


def test_issues_accumulate_across_readers() -> None:
    query = reader("limit=0&flag=maybe&extra=1")
    query.strict(("limit", "flag"))
    query.integer("limit", minimum=1)
    query.boolean("flag")
    assert [issue["path"] for issue in issues_of(query)] == [[], ["limit"], ["flag"]]
