"""management.formatters: integrations and connections in Nango's public JSON shapes."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta, timezone
from typing import Any

import pytest

from credentials.models import Connection, Integration, Provider
from management.formatters import (
    connection_json,
    connection_list_item,
    end_user_json,
    integration_json,
    iso_offset,
    iso_postgres,
    iso_z,
    without_refresh_tokens,
)

CREATED = datetime(2026, 1, 2, 3, 4, 5, 678_901, tzinfo=UTC)
UPDATED = datetime(2026, 2, 3, 4, 5, 6, tzinfo=UTC)


# --- iso_z ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("moment", "rendered"),
    [
        (datetime(2026, 1, 2, 3, 4, 5, tzinfo=UTC), "2026-01-02T03:04:05.000Z"),
        (datetime(2026, 1, 2, 3, 4, 5, 999_999, tzinfo=UTC), "2026-01-02T03:04:05.999Z"),
        (datetime(2026, 1, 2, 3, 4, 5, 1_000, tzinfo=UTC), "2026-01-02T03:04:05.001Z"),
        (datetime(2026, 1, 2, 3, 4, 5, 999, tzinfo=UTC), "2026-01-02T03:04:05.000Z"),
        # Other offsets are converted, across a date line.
        (
            datetime(2026, 1, 1, 22, 0, tzinfo=timezone(timedelta(hours=-5))),
            "2026-01-02T03:00:00.000Z",
        ),
        (
            datetime(2026, 1, 2, 1, 30, tzinfo=timezone(timedelta(hours=5, minutes=30))),
            "2026-01-01T20:00:00.000Z",
        ),
        # Four-digit years always, as JavaScript's toISOString() writes them.
        (datetime(5, 6, 7, 8, 9, 10, tzinfo=UTC), "0005-06-07T08:09:10.000Z"),
        (datetime(999, 1, 1, tzinfo=UTC), "0999-01-01T00:00:00.000Z"),
        (datetime(9999, 12, 31, 23, 59, 59, 999_999, tzinfo=UTC), "9999-12-31T23:59:59.999Z"),
    ],
)
def test_iso_z(moment: datetime, rendered: str) -> None:
    assert iso_z(moment) == rendered


def test_iso_z_of_none() -> None:
    assert iso_z(None) is None


def test_iso_z_round_trips_through_fromisoformat() -> None:
    rendered = iso_z(CREATED)
    assert rendered is not None
    parsed = datetime.fromisoformat(rendered.replace("Z", "+00:00"))
    assert parsed == CREATED.replace(microsecond=678_000)


# --- integration_json ----------------------------------------------------------------------


def _integration(**changes: Any) -> Integration:
    fields: dict[str, Any] = {
        "id": 7,
        "environment_id": 3,
        "unique_key": "github-prod",
        "provider": "github",
        "display_name": None,
        "forward_webhooks": True,
        "credentials": {"type": "OAUTH2", "client_id": "cid", "client_secret": "SECRET"},
        "custom": {"k": "v"},
        "created_at": CREATED,
        "updated_at": UPDATED,
    }
    fields.update(changes)
    return Integration(**fields)


GITHUB = Provider(
    name="github", auth_mode="OAUTH2", display_name="GitHub", proxy=None, definition={}
)


def test_integration_public_shape() -> None:
    data = integration_json(_integration(), GITHUB, "https://gate.example.com")
    assert data == {
        "unique_key": "github-prod",
        "provider": "github",
        "display_name": "GitHub",
        "logo": "https://gate.example.com/images/template-logos/github.svg",
        "forward_webhooks": True,
        "created_at": "2026-01-02T03:04:05.678Z",
        "updated_at": "2026-02-03T04:05:06.000Z",
    }


def test_integration_own_display_name_wins() -> None:
    data = integration_json(_integration(display_name="Mine"), GITHUB, "http://x")
    assert data["display_name"] == "Mine"


@pytest.mark.parametrize("display_name", [None, ""])
def test_integration_display_name_falls_back_to_the_provider_then_its_name(
    display_name: str | None,
) -> None:
    integration = _integration(display_name=display_name)
    assert integration_json(integration, GITHUB, "http://x")["display_name"] == "GitHub"
    assert integration_json(integration, None, "http://x")["display_name"] == "github"


def test_integration_never_exposes_internals_or_secrets() -> None:
    data = integration_json(_integration(forward_webhooks=False), GITHUB, "http://x")
    assert data["forward_webhooks"] is False
    assert "SECRET" not in repr(data)
    assert not {"id", "environment_id", "credentials", "custom"} & set(data)


# --- connection_json -----------------------------------------------------------------------


def _connection(**changes: Any) -> Connection:
    fields: dict[str, Any] = {
        "id": 11,
        "environment_id": 3,
        "integration_id": 7,
        "provider_config_key": "github-prod",
        "provider": "github",
        "connection_id": "user-1",
        "credentials": {"type": "OAUTH2", "access_token": "stored"},
        "connection_config": {"subdomain": "acme"},
        "metadata": {"plan": "pro"},
        "tags": {"env": "Prod"},
        "end_user": {"id": "eu-1"},
        "version": 4,
        "created_at": CREATED,
        "updated_at": UPDATED,
        "last_fetched_at": None,
    }
    fields.update(changes)
    return Connection(**fields)


def test_connection_full_shape() -> None:
    shown = {"type": "OAUTH2", "access_token": "shown"}
    data = connection_json(_connection(), credentials=shown)
    assert data == {
        "id": 11,
        "connection_id": "user-1",
        "provider_config_key": "github-prod",
        "provider": "github",
        "errors": [],
        # Stored sparse, shown with every field of the public end-user shape.
        "end_user": {
            "id": "eu-1",
            "display_name": None,
            "email": None,
            "tags": None,
            "organization": None,
        },
        "tags": {"env": "Prod"},
        "metadata": {"plan": "pro"},
        "connection_config": {"subdomain": "acme"},
        "webhook_url_override": None,
        "created_at": "2026-01-02T03:04:05.678Z",
        "updated_at": "2026-02-03T04:05:06.000Z",
        "last_fetched_at": None,
        "credentials": shown,
    }


def test_connection_credentials_are_the_callers_choice() -> None:
    """The route decides what to show (e.g. `{}` without the credentials scope); the
    stored credentials never slip through on their own."""
    data = connection_json(_connection(), credentials={})
    assert data["credentials"] == {}
    assert "stored" not in repr(data)


def test_connection_optional_values() -> None:
    fetched = datetime(2026, 3, 4, 5, 6, 7, 89_000, tzinfo=UTC)
    data = connection_json(
        _connection(
            metadata=None,
            end_user=None,
            tags={},
            connection_config={},
            last_fetched_at=fetched,
            created_at=None,
            updated_at=None,
        ),
        credentials={},
    )
    assert data["metadata"] is None
    assert data["end_user"] is None
    assert data["tags"] == {}
    assert data["connection_config"] == {}
    assert data["last_fetched_at"] == "2026-03-04T05:06:07.089Z"
    assert data["created_at"] is None
    assert data["updated_at"] is None
    assert "version" not in data
    assert "environment_id" not in data


def test_connection_shows_the_webhook_override_and_the_chosen_config() -> None:
    data = connection_json(
        _connection(webhook_url_override="https://hooks.example.com/x"),
        credentials={},
        connection_config={"shown": "instead"},
    )
    assert data["webhook_url_override"] == "https://hooks.example.com/x"
    assert data["connection_config"] == {"shown": "instead"}


def test_connection_timestamps_in_the_get_style() -> None:
    fetched = datetime(2026, 3, 4, 5, 6, 7, 89_000, tzinfo=UTC)
    data = connection_json(
        _connection(last_fetched_at=fetched), credentials={}, render_time=iso_offset
    )
    assert data["created_at"] == "2026-01-02T03:04:05.678+00:00"
    assert data["updated_at"] == "2026-02-03T04:05:06.000+00:00"
    assert data["last_fetched_at"] == "2026-03-04T05:06:07.089+00:00"


# --- timestamps ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("moment", "rendered"),
    [
        (datetime(2026, 1, 1, 10, 20, 30, 123_456, tzinfo=UTC), "2026-01-01T10:20:30.123456+00:00"),
        (datetime(2026, 1, 1, 10, 20, 30, 120_000, tzinfo=UTC), "2026-01-01T10:20:30.12+00:00"),
        (datetime(2026, 1, 1, 10, 20, 30, 1, tzinfo=UTC), "2026-01-01T10:20:30.000001+00:00"),
        (datetime(2026, 1, 1, 10, 20, 30, tzinfo=UTC), "2026-01-01T10:20:30+00:00"),
        (
            datetime(2026, 1, 1, 23, 0, tzinfo=timezone(timedelta(hours=-2))),
            "2026-01-02T01:00:00+00:00",
        ),
    ],
)
def test_iso_postgres(moment: datetime, rendered: str) -> None:
    assert iso_postgres(moment) == rendered


def test_iso_offset() -> None:
    assert iso_offset(CREATED) == "2026-01-02T03:04:05.678+00:00"
    assert iso_offset(None) is None


# --- list items and end users --------------------------------------------------------------


def test_connection_list_item_shape() -> None:
    item = connection_list_item(_connection(end_user=None))
    assert item == {
        "id": 11,
        "connection_id": "user-1",
        "provider_config_key": "github-prod",
        "provider": "github",
        "created": "2026-01-02T03:04:05.678901+00:00",
        "metadata": {"plan": "pro"},
        "tags": {"env": "Prod"},
        "errors": [],
        "end_user": None,
    }
    assert "stored" not in repr(item)  # never credentials


def test_end_user_json_fills_every_field() -> None:
    stored = {
        "id": "u1",
        "email": "a@example.com",
        "organization": {"id": "org-1", "display_name": "Acme", "extra": "hidden"},
        "internal": "hidden",
    }
    assert end_user_json(stored) == {
        "id": "u1",
        "display_name": None,
        "email": "a@example.com",
        "tags": None,
        "organization": {"id": "org-1", "display_name": "Acme"},
    }
    assert end_user_json(None) is None
    assert end_user_json({}) is None


# --- refresh-token stripping ----------------------------------------------------------------


def test_refresh_token_like_keys_are_removed_at_every_depth() -> None:
    value = {
        "type": "OAUTH2",
        "access_token": "at",
        "refresh_token": "rt",
        "refreshToken": "rt",
        "Refresh-Token": "rt",
        "REFRESH_TOKEN_": "rt",
        "refresh_token_expires_in": 3600,
        "raw": {"refresh_token": "rt", "nested": [{"refreshtoken": "rt", "keep": 1}]},
    }
    assert without_refresh_tokens(value) == {
        "type": "OAUTH2",
        "access_token": "at",
        "refresh_token_expires_in": 3600,
        "raw": {"nested": [{"keep": 1}]},
    }
    assert value["refresh_token"] == "rt"  # a copy: the input is untouched
