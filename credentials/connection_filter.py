"""SQL for the connection list's filters, written once for SQLite and PostgreSQL.

JSON columns are TEXT in both dialects; each dialect reads a path inside them its own way
(`json_extract` / `#>>`), and everything else is the same SQL with `$n` placeholders.
"""

from __future__ import annotations

# S608: the SQL here is assembled from constant fragments and `$n` placeholders only;
# every caller-supplied value is bound as a parameter.
# ruff: noqa: S608
from dataclasses import dataclass
from typing import Any

from credentials.database import Dialect


def _escape_like(text: str) -> str:
    return text.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")


class SqlParams:
    """Collects SQL arguments and hands out their `$n` placeholders in order."""

    def __init__(self, *initial: Any) -> None:
        self.args: list[Any] = list(initial)

    def add(self, value: Any) -> str:
        self.args.append(value)
        return f"${len(self.args)}"


def _json_text(dialect: Dialect, column: str, *path: str) -> str:
    """SQL for the text at `path` inside a JSON TEXT column (path parts are constants)."""
    if dialect == "sqlite":
        return f"json_extract({column}, '$.{'.'.join(path)}')"
    return f"({column}::jsonb #>> '{{{','.join(path)}}}')"


def _tag_condition(dialect: Dialect, params: SqlParams, key: str, value: str) -> str:
    key_ph, value_ph = params.add(key), params.add(value)
    if dialect == "sqlite":
        return (
            f"EXISTS (SELECT 1 FROM json_each(c.tags) AS t"
            f" WHERE t.key = {key_ph} AND t.value = {value_ph})"
        )
    return f"(c.tags::jsonb ->> {key_ph}::text) = {value_ph}::text"


@dataclass(frozen=True, slots=True)
class ConnectionFilter:
    """The optional filters of `SqlStore.list_connections`, as Nango's list endpoint has."""

    provider_config_keys: tuple[str, ...] | None = None
    connection_id: str | None = None
    search: str | None = None
    end_user_id: str | None = None
    end_user_organization_id: str | None = None
    tags: tuple[tuple[str, str], ...] = ()

    def where(self, dialect: Dialect, params: SqlParams) -> list[str]:
        conditions: list[str] = []
        if self.provider_config_keys is not None:
            keys = ", ".join(params.add(key) for key in self.provider_config_keys)
            conditions.append(f"i.unique_key IN ({keys})")
        if self.connection_id is not None:
            conditions.append(f"c.connection_id = {params.add(self.connection_id)}")
        if self.search is not None:
            conditions.append(self._search(dialect, params, self.search))
        if self.end_user_id is not None:
            column = _json_text(dialect, "c.end_user", "id")
            conditions.append(f"{column} = {params.add(self.end_user_id)}")
        if self.end_user_organization_id is not None:
            column = _json_text(dialect, "c.end_user", "organization", "id")
            conditions.append(f"{column} = {params.add(self.end_user_organization_id)}")
        conditions.extend(_tag_condition(dialect, params, k, v) for k, v in self.tags)
        return conditions

    @staticmethod
    def _search(dialect: Dialect, params: SqlParams, search: str) -> str:
        # Nango matches a case-insensitive substring of the id, end user name or email.
        pattern = params.add(f"%{_escape_like(search.lower())}%")
        columns = (
            "c.connection_id",
            _json_text(dialect, "c.end_user", "display_name"),
            _json_text(dialect, "c.end_user", "email"),
        )
        matches = (f"lower({column}) LIKE {pattern} ESCAPE '\\'" for column in columns)
        return "(" + " OR ".join(matches) + ")"
