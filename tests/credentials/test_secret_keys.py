"""Secret keys: Nango's Authorization header rules, hashing and comparison."""

from __future__ import annotations

import hashlib
import uuid

import pytest

from credentials.secret_keys import (
    BearerParse,
    generate_secret_key,
    hash_secret_key,
    keys_equal,
    parse_bearer,
)

KEY = "0b9f3a52-6c1e-4d7a-9b2f-3e8c5d1a7f60"
UUID_V1 = "bd79215a-e8e9-11f1-9b8b-02fc00000001"


@pytest.mark.parametrize(
    ("header", "expected"),
    [
        (None, BearerParse(error="missing_auth_header")),
        ("", BearerParse(error="missing_auth_header")),
        ("Bearer ", BearerParse(error="malformed_auth_header")),
        ("Bearer Bearer ", BearerParse(error="malformed_auth_header")),
        (f"Bearer {KEY}", BearerParse(key=KEY)),
        (f"Bearer  Bearer {KEY}", BearerParse(key=KEY)),
        (f"Bearer nonsense Bearer {KEY}", BearerParse(key=KEY)),
        (KEY, BearerParse(key=KEY)),  # no "Bearer " at all: the whole value is the token
        (f"Bearer {KEY.upper()}", BearerParse(key=KEY.upper())),
        (f"Bearer {KEY} ", BearerParse(error="invalid_secret_key_format")),
        (f"bearer {KEY}", BearerParse(error="invalid_secret_key_format")),  # case-sensitive
        (f"Bearer {KEY}\n", BearerParse(error="invalid_secret_key_format")),
        ("Bearer not-a-uuid", BearerParse(error="invalid_secret_key_format")),
        (f"Bearer {KEY.replace('-', '')}", BearerParse(error="invalid_secret_key_format")),
        (f"Bearer {UUID_V1}", BearerParse(error="invalid_secret_key_format")),
        # version nibble 4 but variant nibble c: not RFC 4122
        (
            "Bearer 0b9f3a52-6c1e-4d7a-cb2f-3e8c5d1a7f60",
            BearerParse(error="invalid_secret_key_format"),
        ),
    ],
)
def test_parse_bearer_follows_nango_rules(header: str | None, expected: BearerParse) -> None:
    assert parse_bearer(header) == expected


@pytest.mark.parametrize("variant", "89abAB")
def test_every_rfc4122_variant_is_accepted(variant: str) -> None:
    key = f"0b9f3a52-6c1e-4d7a-{variant}b2f-3e8c5d1a7f60"
    assert parse_bearer(f"Bearer {key}").ok


def test_generated_keys_are_canonical_v4_and_parse() -> None:
    key = generate_secret_key()
    assert str(uuid.UUID(key)) == key
    assert uuid.UUID(key).version == 4
    assert parse_bearer(f"Bearer {key}") == BearerParse(key=key)
    assert generate_secret_key() != key


def test_hash_is_sha256_of_the_lower_cased_key() -> None:
    assert hash_secret_key(KEY.upper()) == hash_secret_key(KEY)
    assert hash_secret_key(KEY) == hashlib.sha256(KEY.encode()).digest()
    assert hash_secret_key(KEY) != hash_secret_key(generate_secret_key())


def test_keys_equal() -> None:
    assert keys_equal(hash_secret_key(KEY), hash_secret_key(KEY.upper()))
    assert not keys_equal(hash_secret_key(KEY), hash_secret_key(generate_secret_key()))
