from __future__ import annotations

from credentials.cache import LocalCache


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def test_entries_expire_after_the_ttl() -> None:
    clock = Clock()
    cache: LocalCache[str, int] = LocalCache(10.0, clock=clock)
    cache.put("a", 1)
    assert cache.get("a") == 1
    clock.now += 10.5
    assert cache.get("a") is None
    assert cache.stale("a") == 1  # kept as the last known value for outages


def test_a_discarded_entry_is_not_even_stale() -> None:
    cache: LocalCache[str, int] = LocalCache(10.0)
    cache.put("a", 1)
    cache.discard("a")
    assert cache.stale("a") is None
    assert len(cache) == 0


def test_size_bound_evicts_the_oldest() -> None:
    cache: LocalCache[int, int] = LocalCache(60.0, max_entries=3)
    for key in range(5):
        cache.put(key, key)
    assert len(cache) == 3
    assert cache.get(0) is None
    assert cache.get(1) is None
    assert cache.get(4) == 4


def test_overwrite_does_not_evict() -> None:
    cache: LocalCache[int, int] = LocalCache(60.0, max_entries=2)
    cache.put(1, 1)
    cache.put(2, 2)
    cache.put(2, 20)
    assert (cache.get(1), cache.get(2)) == (1, 20)


def test_discard_and_discard_matching() -> None:
    cache: LocalCache[tuple[int, str], str] = LocalCache(60.0)
    cache.put((1, "a"), "x")
    cache.put((1, "b"), "y")
    cache.put((2, "a"), "z")
    cache.discard((1, "a"))
    assert cache.get((1, "a")) is None
    assert cache.discard_matching(lambda key: key[0] == 1) == 1
    assert len(cache) == 1
    cache.clear()
    assert len(cache) == 0
