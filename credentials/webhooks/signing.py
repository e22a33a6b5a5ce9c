"""How a webhook proves it came from authgate: Nango's two signature headers.

The body is serialised once, with sorted keys, and those exact bytes are both stored in
the outbox and signed, so what a receiver hashes is byte for byte what was signed.

* `X-Nango-Hmac-Sha256`: hex HMAC-SHA256 of the body, keyed with the environment's
  webhook secret. Receivers should check this one (with a constant-time comparison).
* `X-Nango-Signature`: hex SHA-256 of secret + body, Nango's legacy header, kept for
  receivers written against it.

The secret is the environment's `webhook_secret` (environment settings); an environment
that has none gets one the first time a webhook is queued for it, so every webhook is
signed.
"""

from __future__ import annotations

import hashlib
import hmac
from collections.abc import Mapping
from typing import Any

import orjson

from credentials.environment_settings import EnvironmentSettingsStore, generate_secret

HMAC_HEADER = "X-Nango-Hmac-Sha256"
LEGACY_SIGNATURE_HEADER = "X-Nango-Signature"


def serialise(payload: Mapping[str, Any]) -> bytes:
    """The one serialisation of a webhook body: compact JSON, keys sorted at every level."""
    return orjson.dumps(payload, option=orjson.OPT_SORT_KEYS)


def hmac_signature(secret: str, body: bytes) -> str:
    return hmac.new(secret.encode("utf-8"), body, hashlib.sha256).hexdigest()


def legacy_signature(secret: str, body: bytes) -> str:
    return hashlib.sha256(secret.encode("utf-8") + body).hexdigest()


def signature_headers(secret: str, body: bytes) -> dict[str, str]:
    return {
        LEGACY_SIGNATURE_HEADER: legacy_signature(secret, body),
        HMAC_HEADER: hmac_signature(secret, body),
    }


async def signing_secret(settings: EnvironmentSettingsStore, environment_id: int) -> str:
    """The environment's webhook secret, generated and stored if it has none yet.

    Two processes generating at the same moment both store one and the last write wins;
    both then return the survivor. Webhooks are signed when they are sent, with the
    secret stored at that moment, so no row is signed with a secret that lost the race.
    """
    current = await settings.get(environment_id)
    if current.webhook_secret is not None:
        return current.webhook_secret
    generated = generate_secret()
    await settings.update(environment_id, webhook_secret=generated)
    # Re-read: if another process stored its own meanwhile, the survivor is the secret.
    stored = (await settings.get(environment_id)).webhook_secret
    return stored if stored is not None else generated
