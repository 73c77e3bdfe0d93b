"""An entry store in this process's memory: for tests and ``budgetgraph cache eval``."""

from __future__ import annotations

import threading
import time
from collections import OrderedDict
from collections.abc import Callable, Collection, Sequence

from budgetgraph.budgets.cache.base import (
    Counts,
    Entry,
    Eviction,
    LocalRoundTrips,
    Namespace,
    NamespaceStats,
    NewEntry,
    Sync,
)

_Op = tuple[int, str, str, int]  # (seq, namespace, op, entry id); op: add | del | clear


class MemoryStore(LocalRoundTrips):
    """Entries in a dict, LRU order in an ``OrderedDict``, a change log per store.

    Args:
        eviction: TTL and size bound.
        clock: Current Unix time (s); tests pass a fake one.
    """

    LOG_FACTOR = 4
    """The change log keeps ``LOG_FACTOR * max_entries`` changes; older cursors get a full reload."""

    def __init__(self, eviction: Eviction | None = None, *, clock: Callable[[], float] = time.time) -> None:
        self.eviction = eviction or Eviction()
        self._clock = clock
        self._lock = threading.RLock()
        self._entries: OrderedDict[int, Entry] = OrderedDict()  # least recently used first
        self._keys: dict[tuple[str, str], int] = {}
        self._by_age: OrderedDict[int, float] = OrderedDict()  # expiry times, oldest first (one TTL)
        self._labels: dict[str, str] = {}
        self._counts: dict[str, Counts] = {}
        self._log: list[_Op] = []
        self._seq = 0
        self._trimmed = 0
        self._next_id = 1

    def find(self, namespace: str, key: str) -> Entry | None:
        """Return the live entry with exact key ``key`` in ``namespace``."""
        with self._lock:
            entry_id = self._keys.get((namespace, key))
            if entry_id is None:
                return None
            return self._live(entry_id)

    def get(self, ids: Sequence[int]) -> dict[int, Entry]:
        """Return the live entries among ``ids``."""
        with self._lock:
            found = {}
            for entry_id in ids:
                entry = self._live(entry_id)
                if entry is not None:
                    found[entry_id] = entry
            return found

    def add(self, new: NewEntry) -> Entry:
        """Store ``new``, replacing the entry with its key, and evict."""
        with self._lock:
            now = self._clock()
            self._labels.setdefault(new.namespace.key, new.namespace.label)
            old = self._keys.get((new.namespace.key, new.key))
            if old is not None:
                self._remove(old)
            entry = Entry.of(new, id=self._next_id, created_at=now, ttl_s=self.eviction.ttl_s)
            self._next_id += 1
            self._entries[entry.id] = entry
            self._keys[(entry.namespace, entry.key)] = entry.id
            if entry.expires_at is not None:
                self._by_age[entry.id] = entry.expires_at
            if entry.vector is not None:
                self._append(entry.namespace, "add", entry.id)
            self._evict(now)
            return entry

    def add_many(self, news: Sequence[NewEntry]) -> list[Entry]:
        """Store several entries (as :meth:`add` each)."""
        with self._lock:
            return [self.add(new) for new in news]

    def touch(self, ids: Sequence[int]) -> None:
        """Move the entries to the most recently used end."""
        with self._lock:
            for entry_id in ids:
                if entry_id in self._entries:
                    self._entries.move_to_end(entry_id)

    def sync(self, namespace: str, cursor: str | None) -> Sync:
        """Vector changes of ``namespace`` after ``cursor``."""
        with self._lock:
            since = int(cursor) if cursor is not None else None
            if since is None or since < self._trimmed:
                now = self._clock()
                added = [
                    (e.id, e.vector)
                    for e in self._entries.values()
                    if e.namespace == namespace and e.vector is not None and not e.expired(now)
                ]
                return Sync(cursor=str(self._seq), reset=True, added=added)
            sync = Sync(cursor=str(self._seq))
            start = since - self._trimmed
            for _, ns, op, entry_id in self._log[start:]:
                if ns != namespace:
                    continue
                if op == "clear":
                    sync = Sync(cursor=sync.cursor, reset=True)
                elif op == "add":
                    entry = self._entries.get(entry_id)
                    if entry is not None and entry.vector is not None:
                        sync.added.append((entry_id, entry.vector))
                else:
                    sync.removed.append(entry_id)
            return sync

    def record(self, namespace: Namespace, counts: Counts, used: Sequence[int] = ()) -> None:
        """Add ``counts`` to the namespace's counters and mark ``used`` as just used."""
        with self._lock:
            self._labels.setdefault(namespace.key, namespace.label)
            self._counts.setdefault(namespace.key, Counts()).add(counts)
            self.touch(used)

    def stats(self) -> list[NamespaceStats]:
        """Every namespace with entries or counters."""
        with self._lock:
            sizes: dict[str, int] = {}
            for entry in self._entries.values():
                sizes[entry.namespace] = sizes.get(entry.namespace, 0) + 1
            keys = sorted(set(sizes) | set(self._counts))
            return [
                NamespaceStats(
                    key=key,
                    label=self._labels.get(key, key),
                    entries=sizes.get(key, 0),
                    counts=Counts(**self._counts.get(key, Counts()).counters()),
                )
                for key in keys
            ]

    def clear(self, namespaces: Collection[str] | None = None, *, reset_stats: bool = False) -> int:
        """Remove the entries of ``namespaces`` (all when ``None``)."""
        with self._lock:
            chosen = set(namespaces) if namespaces is not None else None
            doomed = [e.id for e in self._entries.values() if chosen is None or e.namespace in chosen]
            touched = {self._entries[i].namespace for i in doomed}
            for entry_id in doomed:
                self._remove(entry_id, log=False)
            for ns in touched:
                self._append(ns, "clear", 0)
            if reset_stats:
                for ns in list(self._counts):
                    if chosen is None or ns in chosen:
                        del self._counts[ns]
            return len(doomed)

    def close(self) -> None:
        """Nothing to release."""

    def _live(self, entry_id: int) -> Entry | None:
        entry = self._entries.get(entry_id)
        if entry is None:
            return None
        if entry.expired(self._clock()):
            self._remove(entry_id)
            return None
        return entry

    def _remove(self, entry_id: int, *, log: bool = True) -> None:
        entry = self._entries.pop(entry_id, None)
        self._by_age.pop(entry_id, None)
        if entry is None:
            return
        if self._keys.get((entry.namespace, entry.key)) == entry_id:
            del self._keys[(entry.namespace, entry.key)]
        if log and entry.vector is not None:
            self._append(entry.namespace, "del", entry_id)

    def _evict(self, now: float) -> None:
        while self._by_age:
            entry_id, expires_at = next(iter(self._by_age.items()))
            if expires_at > now:
                break
            self._remove(entry_id)
        while len(self._entries) > self.eviction.max_entries:
            self._remove(next(iter(self._entries)))

    def _append(self, namespace: str, op: str, entry_id: int) -> None:
        self._seq += 1
        self._log.append((self._seq, namespace, op, entry_id))
        limit = self.LOG_FACTOR * max(self.eviction.max_entries, 1)
        if len(self._log) > 2 * limit:
            drop = len(self._log) - limit
            self._trimmed = self._log[drop - 1][0]
            del self._log[:drop]


__all__ = ["MemoryStore"]
