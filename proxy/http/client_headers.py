"""Read-only, case-insensitive view of a response's headers.

Built from the raw ``(name, value)`` byte pairs only when someone asks for it: the
proxy's forwarding path works on the raw pairs and never pays for the decoding.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping


class ResponseHeaders(Mapping[str, str]):
    """Headers as latin-1 ``str``; repeated names kept in order.

    As a Mapping, a name maps to its first value and iterating yields each distinct
    name once (first spelling seen); ``items()`` and ``getall()`` give every occurrence.
    """

    __slots__ = ("_by_name", "_items", "_names")

    def __init__(self, raw_headers: list[tuple[bytes, bytes]]) -> None:
        items = [(name.decode("latin-1"), value.decode("latin-1")) for name, value in raw_headers]
        by_name: dict[str, list[str]] = {}
        names: list[str] = []
        for name, value in items:
            key = name.lower()
            values = by_name.get(key)
            if values is None:
                by_name[key] = [value]
                names.append(name)
            else:
                values.append(value)
        self._items = items
        self._by_name = by_name
        self._names = names

    def get(self, name: str, default: str | None = None) -> str | None:  # type: ignore[override]
        # Mapping.get is generic over the default's type; the brief fixes it to str | None.
        values = self._by_name.get(name.lower())
        return default if values is None else values[0]

    def getall(self, name: str) -> list[str]:
        return list(self._by_name.get(name.lower(), ()))

    def items(self) -> list[tuple[str, str]]:  # type: ignore[override]
        # Every occurrence in order (a Mapping's ItemsView could only show the first).
        return list(self._items)

    def __getitem__(self, name: str) -> str:
        values = self._by_name.get(name.lower())
        if values is None:
            raise KeyError(name)
        return values[0]

    def __contains__(self, name: object) -> bool:
        return isinstance(name, str) and name.lower() in self._by_name

    def __iter__(self) -> Iterator[str]:
        return iter(self._names)

    def __len__(self) -> int:
        return len(self._names)

    def __repr__(self) -> str:
        # Names only: values may be credentials (Set-Cookie, tokens echoed back).
        return f"<ResponseHeaders {self._names!r}>"
