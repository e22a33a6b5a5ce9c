"""Encryption at rest: AES-256-GCM with a key id in every ciphertext.

A token looks like `ag1.<kid>.<base64url(nonce + ciphertext + tag)>`. The key id lets a
keyring hold several keys at once: the first encrypts, any of them decrypts, and a value
written under an older key can be found and re-encrypted without guessing.

Every call takes associated data (AAD) naming the value's owner. GCM authenticates it
without storing it, so a ciphertext copied into another tenant's row fails to decrypt
instead of silently leaking across environments.

Nothing in this module ever puts key bytes or plaintext into an exception message or a
repr: errors name the key id at most, which is a one-way digest prefix.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import os
import re
from collections.abc import Sequence
from typing import Any

import orjson
from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

KEY_BYTES = 32
NONCE_BYTES = 12
TAG_BYTES = 16
TOKEN_PREFIX = "ag1"  # noqa: S105  (a format tag, not a secret)

# Domain-separates the key id digest so it can never equal a hash of the key used
# elsewhere; bump it only together with TOKEN_PREFIX.
_KID_LABEL = b"authgate key id v1\x00"
_KID_HEX_CHARS = 8
# The decoder alone would skip stray characters; a token is either exact or rejected.
_BODY = re.compile(r"[A-Za-z0-9_-]+")


class DecryptionError(Exception):
    """A token could not be decrypted: malformed, unknown key id, or failed authentication.

    The message describes the failure only; it never contains key material or plaintext.
    """


def generate_key() -> bytes:
    """A fresh random 256-bit key."""
    return os.urandom(KEY_BYTES)


def encode_key(key: bytes) -> str:
    """The form `AUTHGATE_ENCRYPTION_KEY` takes: standard base64."""
    return base64.b64encode(key).decode("ascii")


def key_id(key: bytes) -> str:
    """A short, stable, one-way id for a key; safe to log and to store next to data."""
    return hashlib.sha256(_KID_LABEL + key).hexdigest()[:_KID_HEX_CHARS]


class Keyring:
    """An ordered set of AES-256 keys: the first encrypts, any of them decrypts."""

    __slots__ = ("_ciphers", "_primary")

    def __init__(self, keys: Sequence[bytes]) -> None:
        if not keys:
            raise ValueError("a keyring needs at least one key")
        self._ciphers: dict[str, AESGCM] = {}
        for position, key in enumerate(keys, start=1):
            self._add(position, key)
        self._primary = next(iter(self._ciphers))

    def _add(self, position: int, key: bytes) -> None:
        if len(key) != KEY_BYTES:
            raise ValueError(f"key #{position} is {len(key)} bytes; AES-256 needs {KEY_BYTES}")
        kid = key_id(key)
        if kid in self._ciphers:
            # Either the same key listed twice or a digest-prefix collision; both would
            # make decryption ambiguous, so refuse rather than guess.
            raise ValueError(f"key #{position} repeats key id {kid}")
        self._ciphers[kid] = AESGCM(key)

    @property
    def key_ids(self) -> tuple[str, ...]:
        """The key ids in keyring order; the first is the one that encrypts."""
        return tuple(self._ciphers)

    @property
    def primary_key_id(self) -> str:
        return self._primary

    def __repr__(self) -> str:
        return f"Keyring(key_ids={list(self._ciphers)!r})"

    def encrypt(self, plaintext: bytes, aad: bytes) -> str:
        nonce = os.urandom(NONCE_BYTES)
        sealed = self._ciphers[self._primary].encrypt(nonce, plaintext, aad)
        body = base64.urlsafe_b64encode(nonce + sealed).rstrip(b"=").decode("ascii")
        return f"{TOKEN_PREFIX}.{self._primary}.{body}"

    def decrypt(self, token: str, aad: bytes) -> bytes:
        kid, blob = _split_token(token)
        cipher = self._ciphers.get(kid)
        if cipher is None:
            raise DecryptionError(f"no key with id {kid} in the keyring")
        try:
            return cipher.decrypt(blob[:NONCE_BYTES], blob[NONCE_BYTES:], aad)
        except InvalidTag:
            raise DecryptionError(
                f"authentication failed under key {kid}: tampered data or wrong owner"
            ) from None

    def encrypt_json(self, obj: Any, aad: bytes) -> str:
        return self.encrypt(orjson.dumps(obj), aad)

    def decrypt_json(self, token: str, aad: bytes) -> Any:
        plaintext = self.decrypt(token, aad)
        try:
            return orjson.loads(plaintext)
        except orjson.JSONDecodeError:
            raise DecryptionError("decrypted value is not JSON") from None

    def needs_reencryption(self, token: str) -> bool:
        """True when the token was written under a key other than the current primary."""
        kid, _ = _split_token(token)
        return kid != self._primary


def _split_token(token: str) -> tuple[str, bytes]:
    parts = token.split(".")
    if len(parts) != 3 or parts[0] != TOKEN_PREFIX:
        raise DecryptionError(f"not an {TOKEN_PREFIX} token")
    kid, body = parts[1], parts[2]
    if _BODY.fullmatch(body) is None:
        raise DecryptionError("token body is not base64url")
    try:
        blob = base64.urlsafe_b64decode(body + "=" * (-len(body) % 4))
    except (binascii.Error, ValueError):
        raise DecryptionError("token body is not base64url") from None
    if len(blob) < NONCE_BYTES + TAG_BYTES:
        raise DecryptionError("token body is too short")
    return kid, blob
