"""Which bucket a request draws from: one per connection, and its Redis key."""

from __future__ import annotations

from dataclasses import dataclass
from urllib.parse import quote


@dataclass(frozen=True, slots=True)
class BucketKey:
    environment_id: int
    integration_key: str
    connection_id: str


def redis_key(prefix: str, key: BucketKey) -> str:
    """`<prefix>:rl:<env id>:<integration key>:<connection id>`.

    Both ids are percent-encoded (every byte but unreserved characters), so a `:` inside
    one can never make two connections share a key.
    """
    integration = quote(key.integration_key, safe="")
    connection = quote(key.connection_id, safe="")
    return f"{prefix}:rl:{key.environment_id}:{integration}:{connection}"
