"""The pure rules behind connect sessions: generated tags (§4.8), webhook URLs, the
connect link, and the Connect UI URL setting."""

from __future__ import annotations

from typing import Any

import pytest

from credentials.config import ConfigError
from management.end_users import generated_tags, tag_map
from management.routes.connect import connect_link
from management.settings import ManagementSettings
from management.validation import Checker
from management.webhook_urls import INVALID_URL, NANGO_DOMAIN, PRIVATE_ADDRESS, webhook_url_problem

TOKEN = "nango_connect_session_" + "ab" * 32


# --- generated tags ------------------------------------------------------------------------


def test_nothing_generates_nothing() -> None:
    assert generated_tags(None, None) == {}


def test_identifying_fields_become_tags() -> None:
    user = {"id": "u", "email": "a@example.com", "display_name": "Ann"}
    org = {"id": "o", "display_name": "Org"}
    assert generated_tags(user, org) == {
        "end_user_id": "u",
        "end_user_email": "a@example.com",
        "end_user_display_name": "Ann",
        "organization_id": "o",
        "organization_display_name": "Org",
    }


def test_organization_alone_generates_its_tags() -> None:
    assert generated_tags(None, {"id": "o"}) == {"organization_id": "o"}


def test_empty_values_are_left_out_and_long_ones_cut() -> None:
    user = {"id": "u" * 300, "display_name": ""}
    assert generated_tags(user, {"id": ""}) == {"end_user_id": "u" * 255}


def test_end_user_tags_go_on_top_lower_cased() -> None:
    user = {"id": "u", "tags": {"Plan": "pro", "END_USER_ID": "override"}}
    assert generated_tags(user, None) == {"end_user_id": "override", "plan": "pro"}


def test_end_user_tags_are_trimmed_and_invalid_keys_dropped() -> None:
    user = {"id": "u", "tags": {"k" * 70: "v" * 300, "1bad": "x", "ok": "", "n": 5}}
    assert generated_tags(user, None) == {"end_user_id": "u", "k" * 64: "v" * 255}


def test_end_user_tags_that_overflow_are_all_dropped() -> None:
    tags = {f"t{index}": "v" for index in range(9)}  # 1 generated + 9 = 10: fits
    assert len(generated_tags({"id": "u", "tags": tags}, None)) == 10
    tags["t9"] = "v"  # 11: none of them
    assert generated_tags({"id": "u", "tags": tags}, None) == {"end_user_id": "u"}


# --- tag maps --------------------------------------------------------------------------------


def _tags(value: Any) -> tuple[dict[str, str] | None, list[dict[str, Any]]]:
    check = Checker()
    result = tag_map(check, value, ("tags",))
    return result, check.issues


def test_a_valid_tag_map_is_lower_cased() -> None:
    assert _tags({"Plan": "Pro", "a.b/c-d_e": "x"}) == ({"plan": "Pro", "a.b/c-d_e": "x"}, [])


def test_ten_tags_fit_and_eleven_do_not() -> None:
    ten = {f"k{index}": "v" for index in range(10)}
    assert _tags(ten)[0] == ten
    result, found = _tags({**ten, "k10": "v"})
    assert result is None
    assert found == [
        {
            "code": "too_big",
            "message": "Too big: expected object to have <=10 keys",
            "path": ["tags"],
        }
    ]


@pytest.mark.parametrize(
    ("tags", "code", "message"),
    [
        ({"k" * 65: "v"}, "too_big", "Too big: expected string to have <=64 characters"),
        (
            {"_x": "v"},
            "invalid_format",
            "Invalid string: must match pattern /^[a-zA-Z][a-zA-Z0-9_\\-./]*$/",
        ),
        ({"x": ""}, "too_small", "Too small: expected string to have >=1 characters"),
        ({"x": "v" * 256}, "too_big", "Too big: expected string to have <=255 characters"),
        ({"x": None}, "invalid_type", "Invalid input: expected string, received null"),
        ({"end_user_email": "nope"}, "invalid_format", "Invalid email address"),
    ],
)
def test_tag_issues(tags: dict[str, Any], code: str, message: str) -> None:
    result, found = _tags(tags)
    assert result is None
    assert found == [{"code": code, "message": message, "path": ["tags", next(iter(tags))]}]


def test_a_64_character_key_and_255_character_value_fit() -> None:
    assert _tags({"k" * 64: "v" * 255})[0] == {"k" * 64: "v" * 255}


# --- webhook URLs ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    "url",
    [
        "",
        "https://hooks.example.com/in?x=1",
        "http://8.8.8.8:8080/h",
        "https://[2001:4860:4860::8888]/",
        "https://notnango.dev/",
        "https://nango.dev.example.com/",
        "https://deadbeef/",
    ],
)
def test_acceptable_webhook_urls(url: str) -> None:
    assert webhook_url_problem(url) is None


@pytest.mark.parametrize(
    ("url", "problem"),
    [
        ("http://localhost/", PRIVATE_ADDRESS),
        ("http://LOCALHOST./", PRIVATE_ADDRESS),
        ("http://app.localhost/", PRIVATE_ADDRESS),
        ("http://127.0.0.1/", PRIVATE_ADDRESS),
        ("http://127.1/", PRIVATE_ADDRESS),
        ("http://0x7f.1/", PRIVATE_ADDRESS),
        ("http://2130706433/", PRIVATE_ADDRESS),
        ("http://0/", PRIVATE_ADDRESS),
        ("http://[::1]/", PRIVATE_ADDRESS),
        ("http://[::]/", PRIVATE_ADDRESS),
        ("http://[::ffff:127.0.0.1]/", PRIVATE_ADDRESS),
        ("http://[fc00::1]/", PRIVATE_ADDRESS),
        ("http://[fe80::1%25eth0]/", PRIVATE_ADDRESS),
        ("http://10.0.0.1/", PRIVATE_ADDRESS),
        ("http://10.0.0.1./", PRIVATE_ADDRESS),
        ("http://172.31.255.255/", PRIVATE_ADDRESS),
        ("http://192.168.1.1/", PRIVATE_ADDRESS),
        ("http://169.254.169.254/", PRIVATE_ADDRESS),
        ("https://nango.dev/", NANGO_DOMAIN),
        ("https://api.nango.dev/webhook", NANGO_DOMAIN),
        ("ftp://example.com/", INVALID_URL),
        ("mailto:a@example.com", INVALID_URL),
        ("//example.com/", INVALID_URL),
        ("https://", INVALID_URL),
        ("http://example.com:99999/", INVALID_URL),
        ("http://exa mple.com/", INVALID_URL),
        ("http://example.com/\n", INVALID_URL),
        ("http://[zz]/", INVALID_URL),
        ("http://[::1/", INVALID_URL),
        ("http://256.1.1.1/", INVALID_URL),
    ],
)
def test_refused_webhook_urls(url: str, problem: str) -> None:
    assert webhook_url_problem(url) == problem


# --- the connect link and its setting -----------------------------------------------------


@pytest.mark.parametrize(
    ("base", "link"),
    [
        ("http://localhost:3009", f"http://localhost:3009/?session_token={TOKEN}"),
        ("https://c.example.com/", f"https://c.example.com/?session_token={TOKEN}"),
        ("https://x.example.com/connect", f"https://x.example.com/connect?session_token={TOKEN}"),
    ],
)
def test_connect_link(base: str, link: str) -> None:
    assert connect_link(base, TOKEN) == link


def test_the_connect_ui_defaults_to_the_public_url() -> None:
    settings = ManagementSettings.from_env({"AUTHGATE_PUBLIC_URL": "https://gate.example.com/"})
    assert settings.connect_ui_url == "https://gate.example.com/connect"
    settings = ManagementSettings.from_env({"AUTHGATE_PORT": "4000"})
    assert settings.connect_ui_url == "http://127.0.0.1:4000/connect"
    assert ManagementSettings().connect_ui_url == "http://127.0.0.1:3003/connect"


def test_the_connect_ui_url_can_be_set() -> None:
    environ = {"AUTHGATE_CONNECT_UI_URL": " https://connect.example.com "}
    assert ManagementSettings.from_env(environ).connect_ui_url == "https://connect.example.com"


@pytest.mark.parametrize(
    "value",
    [
        "connect.example.com",
        "ftp://connect.example.com",
        "https://",
        "https://connect.example.com:70000",
        "https://conn ect.example.com",
        "https://connect.example.com/?a=1",
        "https://connect.example.com/#x",
        "https://connect.example.com/?",
    ],
)
def test_a_bad_connect_ui_url_names_the_variable(value: str) -> None:
    with pytest.raises(ConfigError) as raised:
        ManagementSettings.from_env({"AUTHGATE_CONNECT_UI_URL": value})
    assert raised.value.variable == "AUTHGATE_CONNECT_UI_URL"
    assert str(raised.value).startswith("AUTHGATE_CONNECT_UI_URL: ")
