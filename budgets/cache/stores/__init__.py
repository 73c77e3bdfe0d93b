"""Entry stores: one module per backend, each an :class:`~budgetgraph.budgets.cache.base.EntryStore`.

* :class:`~budgetgraph.budgets.cache.stores.memory.MemoryStore`: this process only (tests, ``cache eval``).
* :class:`~budgetgraph.budgets.cache.stores.sqlite.SqliteStore`: the embedded default, on disk under
  ``.budgetgraph/cache/``.
* :class:`~budgetgraph.budgets.cache.stores.redis.RedisStore`: shared by many processes and machines.

:func:`open_store` picks one from the ``store`` setting.
"""

from __future__ import annotations

from pathlib import Path

from budgetgraph.budgets.cache.base import EntryStore, Eviction

DEFAULT_PREFIX = "budgetgraph:cache"
"""Key prefix of a Redis cache store (``cache.redis_prefix``); defined here so that naming
it does not import the Redis client."""

DISK = "disk"
"""The ``store`` value of the embedded SQLite store."""

MEMORY = "memory:"
"""The ``store`` value of the in-process store (nothing kept after exit)."""

REDIS_SCHEMES = ("redis://", "rediss://", "unix://")
"""URL prefixes of the Redis store."""


def open_store(store: str, *, path: str | Path, eviction: Eviction, prefix: str) -> EntryStore:
    """Open the store named by ``store``.

    Args:
        store: ``disk``, ``memory:`` or a Redis URL (``redis://``, ``rediss://``, ``unix://``).
        path: The cache folder of the ``disk`` store.
        eviction: TTL and size bound.
        prefix: Redis key prefix.

    Raises:
        ValueError: ``store`` is none of these.
    """
    if store == DISK:
        from budgetgraph.budgets.cache.stores.sqlite import SqliteStore

        return SqliteStore(path, eviction)
    if store == MEMORY:
        from budgetgraph.budgets.cache.stores.memory import MemoryStore

        return MemoryStore(eviction)
    if store.startswith(REDIS_SCHEMES):
        from budgetgraph.budgets.cache.stores.redis import RedisStore

        return RedisStore(store, eviction, prefix=prefix)
    raise ValueError(f"cache store `{store}`: use `disk`, `memory:` or a redis:// URL")


__all__ = ["DISK", "MEMORY", "REDIS_SCHEMES", "open_store"]
