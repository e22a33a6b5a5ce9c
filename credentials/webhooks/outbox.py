"""The webhook outbox: webhooks written to the store first, delivered by a sender later.

A row is a webhook to one URL: the exact body that will be signed and sent, how many
times delivery was attempted, and when it may next be tried. Senders in any number of
processes share the table without a coordinator:

* `claim_due` takes due rows for a lease in one statement (PostgreSQL: `FOR UPDATE SKIP
  LOCKED`, so concurrent claimers pass each other's rows by instead of waiting; SQLite:
  a single `UPDATE ... RETURNING`, which holds the database's write lock). A claimed row
  is invisible to other claimers until its lease ends, so it is not sent twice at once.
* Claiming counts the attempt. The attempt number is also the claim's identity: the
  `mark_*` writes apply only while the row still carries it, so a sender whose lease ran
  out (and whose row someone else has since claimed) cannot overwrite the newer outcome.
* A sender that dies mid-delivery leaves its rows claimed; they become due again when the
  lease ends, so nothing is lost on a crash or restart (delivery is at least once).
"""

# S608: the SQL assembled here joins constants of this module and generated `$n`
# placeholders; values are always bound.
# ruff: noqa: S608

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

from credentials.database import Row
from credentials.store import SqlStore

Listener = Callable[[], None]

_RETURNED_COLUMNS = ("id", "environment_id", "url", "body", "attempts", "created_at")
_RETURNED = ", ".join(_RETURNED_COLUMNS)
# Qualified: in PostgreSQL's UPDATE ... FROM, `id` would also name the CTE's column.
_RETURNED_QUALIFIED = ", ".join(f"webhook_outbox.{column}" for column in _RETURNED_COLUMNS)
_DUE = (
    "delivered_at IS NULL AND failed_at IS NULL AND next_attempt_at <= $1"
    " AND (claimed_until IS NULL OR claimed_until <= $1)"
)
_CLAIM = {
    # The CTE locks the chosen rows; rows another transaction holds are skipped, and a
    # row changed since this statement's snapshot is re-checked against _DUE when locked.
    "postgres": (
        "WITH due AS ("
        f" SELECT id FROM webhook_outbox WHERE {_DUE}"
        " ORDER BY next_attempt_at, id LIMIT $3 FOR UPDATE SKIP LOCKED)"
        " UPDATE webhook_outbox SET claimed_until = $2, attempts = attempts + 1"
        f" FROM due WHERE webhook_outbox.id = due.id RETURNING {_RETURNED_QUALIFIED}"
    ),
    "sqlite": (
        "UPDATE webhook_outbox SET claimed_until = $2, attempts = attempts + 1"
        f" WHERE id IN (SELECT id FROM webhook_outbox WHERE {_DUE}"
        f" ORDER BY next_attempt_at, id LIMIT $3) RETURNING {_RETURNED}"
    ),
}
# Only the claim identified by (id, attempts) may settle its row.
_OURS = " WHERE id = $1 AND attempts = $2 AND delivered_at IS NULL AND failed_at IS NULL"
_FINISHED_BEFORE = (
    "(delivered_at IS NOT NULL AND delivered_at < $1) OR (failed_at IS NOT NULL AND failed_at < $1)"
)


@dataclass(frozen=True, slots=True)
class OutboxRow:
    """One claimed webhook. `attempts` includes the attempt this claim is for."""

    id: int
    environment_id: int
    url: str = field(repr=False)  # a query string may carry a token
    body: bytes = field(repr=False)
    attempts: int
    created_at: int


class WebhookOutbox:
    """The `webhook_outbox` table (migration 5). Times are the store's epoch ms."""

    def __init__(self, store: SqlStore) -> None:
        self._store = store
        self._listeners: list[Listener] = []

    # --- this process's senders hear of new rows at once -------------------------------

    def subscribe(self, listener: Listener) -> None:
        self._listeners.append(listener)

    def unsubscribe(self, listener: Listener) -> None:
        if listener in self._listeners:
            self._listeners.remove(listener)

    # --- writes --------------------------------------------------------------------------

    async def enqueue(self, environment_id: int, urls: Sequence[str], body: bytes) -> list[int]:
        """One row per URL, all carrying `body`, due now; in one statement. Returns ids."""
        if not urls:
            return []
        now = self._store.clock()
        rows = ", ".join(f"($1, ${index + 4}, $2, $3, $3)" for index in range(len(urls)))
        inserted = await self._store.db.fetch(
            "INSERT INTO webhook_outbox (environment_id, url, body, next_attempt_at, created_at)"
            f" VALUES {rows} RETURNING id",
            environment_id,
            body.decode("utf-8"),
            now,
            *urls,
        )
        for listener in list(self._listeners):
            listener()
        return sorted(int(row["id"]) for row in inserted)

    async def claim_due(self, limit: int, lease_ms: int) -> list[OutboxRow]:
        """Take up to `limit` due rows for `lease_ms`, oldest due first."""
        now = self._store.clock()
        db = self._store.db
        rows = await db.fetch(_CLAIM[db.dialect], now, now + lease_ms, limit)
        claimed = [_outbox_row(row) for row in rows]
        return sorted(claimed, key=lambda row: row.id)

    async def mark_delivered(self, row: OutboxRow) -> bool:
        """False when the claim was lost (the lease ran out and another sender took it)."""
        changed = await self._store.db.execute(
            "UPDATE webhook_outbox SET delivered_at = $3, claimed_until = NULL,"
            " last_error = NULL" + _OURS,
            row.id,
            row.attempts,
            self._store.clock(),
        )
        return changed > 0

    async def mark_retry(self, row: OutboxRow, next_attempt_at: int, error: str) -> bool:
        changed = await self._store.db.execute(
            "UPDATE webhook_outbox SET next_attempt_at = $3, last_error = $4,"
            " claimed_until = NULL" + _OURS,
            row.id,
            row.attempts,
            next_attempt_at,
            error,
        )
        return changed > 0

    async def mark_failed(self, row: OutboxRow, error: str) -> bool:
        """Given up: not retried again; kept (with the error) until purged."""
        changed = await self._store.db.execute(
            "UPDATE webhook_outbox SET failed_at = $3, last_error = $4, claimed_until = NULL"
            + _OURS,
            row.id,
            row.attempts,
            self._store.clock(),
            error,
        )
        return changed > 0

    async def purge(self, older_than_ms: int, *, batch_size: int = 1000) -> int:
        """Delete delivered and failed rows finished more than `older_than_ms` ago, in
        batches so no statement holds locks for long. Pending rows are never purged."""
        before = self._store.clock() - older_than_ms
        total = 0
        while True:
            deleted = await self._store.db.execute(
                "DELETE FROM webhook_outbox WHERE id IN (SELECT id FROM webhook_outbox"
                f" WHERE {_FINISHED_BEFORE} LIMIT $2)",
                before,
                batch_size,
            )
            total += deleted
            if deleted < batch_size:
                return total


def _outbox_row(row: Row) -> OutboxRow:
    return OutboxRow(
        id=int(row["id"]),
        environment_id=int(row["environment_id"]),
        url=row["url"],
        body=str(row["body"]).encode("utf-8"),
        attempts=int(row["attempts"]),
        created_at=int(row["created_at"]),
    )
