"""Keyring: AES-256-GCM tokens with key ids, owner binding through AAD, and rotation."""

from __future__ import annotations

import base64

import pytest

from credentials.crypto import (
    KEY_BYTES,
    DecryptionError,
    Keyring,
    encode_key,
    generate_key,
    key_id,
)

AAD = b"connection:1:2:user-42"
SECRET = b"ghp_super-secret-token"


def _flip_last_body_char(token: str) -> str:
    head, body = token.rsplit(".", 1)
    replacement = "A" if body[-2] != "A" else "B"
    # Change the second-to-last char: the last one may carry only padding bits.
    return f"{head}.{body[:-2]}{replacement}{body[-1]}"


def test_round_trip() -> None:
    ring = Keyring([generate_key()])
    token = ring.encrypt(SECRET, AAD)
    assert ring.decrypt(token, AAD) == SECRET


def test_token_is_self_describing_ascii() -> None:
    key = generate_key()
    token = Keyring([key]).encrypt(SECRET, AAD)
    prefix, kid, body = token.split(".")
    assert (prefix, kid) == ("ag1", key_id(key))
    assert token.isascii()
    assert SECRET not in base64.urlsafe_b64decode(body + "==")


def test_each_encryption_uses_a_fresh_nonce() -> None:
    ring = Keyring([generate_key()])
    assert ring.encrypt(SECRET, AAD) != ring.encrypt(SECRET, AAD)


def test_json_round_trip_keeps_unicode_nesting_and_64_bit_ints() -> None:
    ring = Keyring([generate_key()])
    value = {
        "name": "Zoë 🔑",
        "nested": {"list": [1, None, True]},
        "big": 2**63 - 1,
        "neg": -(2**63),
    }
    assert ring.decrypt_json(ring.encrypt_json(value, AAD), AAD) == value


def test_other_owner_cannot_decrypt() -> None:
    ring = Keyring([generate_key()])
    token = ring.encrypt(SECRET, AAD)
    with pytest.raises(DecryptionError, match="authentication failed"):
        ring.decrypt(token, b"connection:2:2:user-42")


def test_tampered_ciphertext_is_rejected() -> None:
    ring = Keyring([generate_key()])
    token = ring.encrypt(SECRET, AAD)
    with pytest.raises(DecryptionError):
        ring.decrypt(_flip_last_body_char(token), AAD)


@pytest.mark.parametrize(
    "token",
    [
        "",
        "ag1",
        "ag2.00000000.AAAA",
        "ag1.abc",
        "ag1.kid.body.extra",
        "ag1.{kid}.not base64!",
        "ag1.{kid}.AAAA",  # shorter than nonce + tag
    ],
)
def test_malformed_tokens_are_rejected(token: str) -> None:
    key = generate_key()
    ring = Keyring([key])
    with pytest.raises(DecryptionError):
        ring.decrypt(token.replace("{kid}", key_id(key)), AAD)


def test_unknown_key_id_is_rejected() -> None:
    token = Keyring([generate_key()]).encrypt(SECRET, AAD)
    with pytest.raises(DecryptionError, match="no key with id"):
        Keyring([generate_key()]).decrypt(token, AAD)


def test_rotation_old_tokens_still_decrypt_and_are_flagged() -> None:
    old, new = generate_key(), generate_key()
    token = Keyring([old]).encrypt(SECRET, AAD)
    rotated = Keyring([new, old])
    assert rotated.decrypt(token, AAD) == SECRET
    assert rotated.needs_reencryption(token)
    fresh = rotated.encrypt(SECRET, AAD)
    assert not rotated.needs_reencryption(fresh)
    assert fresh.split(".")[1] == key_id(new)
    assert rotated.key_ids == (key_id(new), key_id(old))


def test_errors_and_repr_never_contain_key_material_or_plaintext() -> None:
    key = generate_key()
    ring = Keyring([key])
    token = ring.encrypt(SECRET, AAD)
    forbidden = [key.hex(), encode_key(key), base64.urlsafe_b64encode(key).decode(), "super-secret"]
    messages = [repr(ring)]
    for bad_token, aad in [(token, b"other"), (_flip_last_body_char(token), AAD), ("x", AAD)]:
        with pytest.raises(DecryptionError) as caught:
            ring.decrypt(bad_token, aad)
        messages.append(str(caught.value))
    for message in messages:
        for needle in forbidden:
            assert needle not in message


@pytest.mark.parametrize("length", [0, 16, 31, 33])
def test_keys_must_be_32_bytes(length: int) -> None:
    with pytest.raises(ValueError, match="32"):
        Keyring([b"k" * length])


def test_keyring_refuses_no_keys_and_duplicate_keys() -> None:
    key = generate_key()
    with pytest.raises(ValueError, match="at least one"):
        Keyring([])
    with pytest.raises(ValueError, match="repeats key id"):
        Keyring([key, key])


def test_generated_keys_are_random_and_encode_as_standard_base64() -> None:
    first, second = generate_key(), generate_key()
    assert len(first) == KEY_BYTES
    assert first != second
    assert base64.b64decode(encode_key(first), validate=True) == first
