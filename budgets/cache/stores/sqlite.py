"""The embedded default store: SQLite under ``.budgetgraph/cache/``.

One file, ``entries.sqlite``, in WAL mode, holds the entries (vectors as raw
little-endian float32 bytes, answers as JSON; nothing is pickled), the change
log each process's index follows, the namespace labels and the counters.
Several processes on one machine may share it: SQLite serialises the writes,
entry ids come from ``AUTOINCREMENT`` so they never collide, and each process
catches up with the others through the change log.
"""

from __future__ import annotations

import json
import sqlite3
import threading
import time
import uuid
from collections.abc import Callable, Collection, Sequence
from contextlib import AbstractContextManager
from pathlib import Path
from typing import Any

import numpy as np

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
from budgetgraph.budgets.sqlite_tx import immediate

_SCHEMA = """
CREATE TABLE IF NOT EXISTS entries (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    namespace TEXT NOT NULL,
    key TEXT NOT NULL,
    text TEXT NOT NULL,
    vector BLOB,
    response TEXT NOT NULL,
    model TEXT NOT NULL,
    input_tokens INTEGER NOT NULL,
    output_tokens INTEGER NOT NULL,
    cost_micro_usd INTEGER NOT NULL,
    created_at REAL NOT NULL,
    expires_at REAL,
    used_at REAL NOT NULL,
    UNIQUE (namespace, key)
);
CREATE INDEX IF NOT EXISTS entries_used_at ON entries (used_at);
CREATE INDEX IF NOT EXISTS entries_expires_at ON entries (expires_at);
CREATE TABLE IF NOT EXISTS changes (
    seq INTEGER PRIMARY KEY AUTOINCREMENT,
    namespace TEXT NOT NULL,
    op TEXT NOT NULL,
    entry_id INTEGER NOT NULL
);
CREATE INDEX IF NOT EXISTS changes_namespace ON changes (namespace, seq);
CREATE TABLE IF NOT EXISTS namespaces (key TEXT PRIMARY KEY, label TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS counts (
    namespace TEXT PRIMARY KEY,
    exact_hits INTEGER NOT NULL DEFAULT 0,
    semantic_hits INTEGER NOT NULL DEFAULT 0,
    misses INTEGER NOT NULL DEFAULT 0,
    refusals INTEGER NOT NULL DEFAULT 0,
    saved_micro_usd INTEGER NOT NULL DEFAULT 0
);
-- refusal counters by category are added by _add_count_columns (files of earlier versions lack them)
CREATE TABLE IF NOT EXISTS meta (name TEXT PRIMARY KEY, value TEXT NOT NULL);
"""

_COLUMNS = (
    "id, namespace, key, text, vector, response, model, input_tokens, output_tokens, "
    "cost_micro_usd, created_at, expires_at"
)

FILE_NAME = "entries.sqlite"
"""The store's file inside the cache folder."""


class SqliteStore(LocalRoundTrips):
    """Entries in SQLite.

    Args:
        path: The cache folder (``entries.sqlite`` is created inside it) or the
            SQLite file itself (a path ending in ``.sqlite`` or ``.db``).
        eviction: TTL and size bound.
        clock: Current Unix time (s); tests pass a fake one.

    Raises:
        sqlite3.Error: The file cannot be opened.
    """

    LOG_FACTOR = 4
    """The change log keeps about ``LOG_FACTOR * max_entries`` changes; older cursors reload fully."""

    def __init__(
        self,
        path: str | Path,
        eviction: Eviction | None = None,
        *,
        clock: Callable[[], float] = time.time,
    ) -> None:
        target = Path(path)
        if target.suffix not in (".sqlite", ".db"):
            target = target / FILE_NAME
        target.parent.mkdir(parents=True, exist_ok=True)
        self.path = target
        self.eviction = eviction or Eviction()
        self._clock = clock
        self._lock = threading.RLock()
        self._conn = sqlite3.connect(str(target), timeout=10.0, check_same_thread=False, isolation_level=None)
        self._conn.execute("PRAGMA journal_mode=WAL")
        self._conn.execute("PRAGMA synchronous=NORMAL")
        self._conn.executescript(_SCHEMA)
        self._add_count_columns()
        with self._write() as db:
            db.execute("INSERT OR IGNORE INTO meta (name, value) VALUES ('store_id', ?)", (uuid.uuid4().hex,))
            self.store_id = self._meta(db, "store_id", "")
        self._adds = 0

    def _write(self) -> AbstractContextManager[sqlite3.Connection]:
        return immediate(self._conn, self._lock)

    def find(self, namespace: str, key: str) -> Entry | None:
        """Return the live entry with exact key ``key`` in ``namespace``."""
        with self._lock:
            row = self._conn.execute(
                f"SELECT {_COLUMNS} FROM entries WHERE namespace = ? AND key = ? "
                "AND (expires_at IS NULL OR expires_at > ?)",
                (namespace, key, self._clock()),
            ).fetchone()
        return _entry(row) if row else None

    def get(self, ids: Sequence[int]) -> dict[int, Entry]:
        """Return the live entries among ``ids``."""
        if not ids:
            return {}
        marks = ",".join("?" * len(ids))
        with self._lock:
            rows = self._conn.execute(
                f"SELECT {_COLUMNS} FROM entries WHERE id IN ({marks}) "
                "AND (expires_at IS NULL OR expires_at > ?)",
                (*ids, self._clock()),
            ).fetchall()
        return {row[0]: _entry(row) for row in rows}

    def add(self, new: NewEntry) -> Entry:
        """Store ``new`` (replacing the entry with its key), log it, and evict."""
        return self.add_many([new])[0]

    def add_many(self, news: Sequence[NewEntry]) -> list[Entry]:
        """Store several entries in one transaction (as :meth:`add` each), then evict once."""
        now = self._clock()
        entries = []
        with self._write() as db:
            for new in news:
                entries.append(self._insert(db, new, now))
            self._evict(db, now)
            self._adds += len(news)
            if self._adds >= 256:
                self._adds = 0
                self._trim(db)
        return entries

    def _insert(self, db: sqlite3.Connection, new: NewEntry, now: float) -> Entry:
        ns = new.namespace.key
        vector = None if new.vector is None else np.asarray(new.vector, dtype="<f4").tobytes()
        expires_at = None if self.eviction.ttl_s is None else now + self.eviction.ttl_s
        db.execute("INSERT OR IGNORE INTO namespaces (key, label) VALUES (?, ?)", (ns, new.namespace.label))
        old = db.execute("SELECT id FROM entries WHERE namespace = ? AND key = ?", (ns, new.key)).fetchone()
        if old is not None:
            self._delete(db, [(old[0], ns)])
        cursor = db.execute(
            "INSERT INTO entries (namespace, key, text, vector, response, model, input_tokens, "
            "output_tokens, cost_micro_usd, created_at, expires_at, used_at) "
            "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
            (
                ns,
                new.key,
                new.text,
                vector,
                json.dumps(dict(new.response), separators=(",", ":")),
                new.model,
                new.input_tokens,
                new.output_tokens,
                new.cost_micro_usd,
                now,
                expires_at,
                now,
            ),
        )
        entry_id = int(cursor.lastrowid or 0)
        if vector is not None:
            db.execute("INSERT INTO changes (namespace, op, entry_id) VALUES (?, 'add', ?)", (ns, entry_id))
        return Entry.of(new, id=entry_id, created_at=now, ttl_s=self.eviction.ttl_s)

    def touch(self, ids: Sequence[int]) -> None:
        """Mark the entries as used now."""
        if not ids:
            return
        now = self._clock()
        with self._write() as db:
            db.executemany("UPDATE entries SET used_at = ? WHERE id = ?", [(now, i) for i in ids])

    def sync(self, namespace: str, cursor: str | None) -> Sync:
        """Vector changes of ``namespace`` after ``cursor``.

        A cursor is ``{store id}:{change sequence number}``. The store id is
        drawn when the file is created, so a cursor (or an index snapshot) from
        a file that was deleted and created again gets a full reload instead of
        being applied to entry ids that now mean other entries.
        """
        since = _since(cursor, self.store_id)
        with self._lock:
            db = self._conn
            db.execute("BEGIN")
            try:
                last = db.execute("SELECT COALESCE(MAX(seq), 0) FROM changes").fetchone()[0]
                trimmed = int(self._meta(db, "trimmed", "0"))
                mark = f"{self.store_id}:{last}"
                if since is None or since < trimmed or since > last:
                    rows = db.execute(
                        "SELECT id, vector FROM entries WHERE namespace = ? AND vector IS NOT NULL "
                        "AND (expires_at IS NULL OR expires_at > ?) ORDER BY id",
                        (namespace, self._clock()),
                    ).fetchall()
                    return Sync(cursor=mark, reset=True, added=[(r[0], _vector(r[1])) for r in rows])
                rows = db.execute(
                    "SELECT c.op, c.entry_id, e.vector FROM changes c "
                    "LEFT JOIN entries e ON e.id = c.entry_id "
                    "WHERE c.namespace = ? AND c.seq > ? AND c.seq <= ? ORDER BY c.seq",
                    (namespace, since, last),
                ).fetchall()
            finally:
                db.execute("COMMIT")
        sync = Sync(cursor=mark)
        for op, entry_id, blob in rows:
            if op == "clear":
                sync = Sync(cursor=sync.cursor, reset=True)
            elif op == "add":
                if blob is not None:
                    sync.added.append((entry_id, _vector(blob)))
            else:
                sync.removed.append(entry_id)
        return sync

    def _add_count_columns(self) -> None:
        """Add the refusal counters by category to a ``counts`` table written before they existed."""
        with self._lock:
            present = {row[1] for row in self._conn.execute("PRAGMA table_info(counts)")}
            for name in Counts.REFUSAL_FIELDS:
                if name not in present:
                    try:
                        self._conn.execute(f"ALTER TABLE counts ADD COLUMN {name} INTEGER NOT NULL DEFAULT 0")
                    except sqlite3.OperationalError as exc:  # another process added it first
                        if "duplicate column" not in str(exc):
                            raise

    def record(self, namespace: Namespace, counts: Counts, used: Sequence[int] = ()) -> None:
        """Add ``counts`` to the namespace's counters and mark ``used`` as just used, in one transaction."""
        values = counts.counters()
        sets = ", ".join(f"{name} = {name} + excluded.{name}" for name in values)
        with self._write() as db:
            db.execute(
                "INSERT OR IGNORE INTO namespaces (key, label) VALUES (?, ?)",
                (namespace.key, namespace.label),
            )
            names, marks = ", ".join(values), ", ".join("?" * len(values))
            db.execute(
                f"INSERT INTO counts (namespace, {names}) VALUES (?, {marks}) "
                f"ON CONFLICT (namespace) DO UPDATE SET {sets}",
                (namespace.key, *values.values()),
            )
            if used:
                now = self._clock()
                db.executemany("UPDATE entries SET used_at = ? WHERE id = ?", [(now, i) for i in used])

    def stats(self) -> list[NamespaceStats]:
        """Every namespace with entries or counters."""
        with self._lock:
            now = self._clock()
            sizes = dict(
                self._conn.execute(
                    "SELECT namespace, COUNT(*) FROM entries WHERE expires_at IS NULL OR expires_at > ? "
                    "GROUP BY namespace",
                    (now,),
                ).fetchall()
            )
            counts = {
                row[0]: Counts(*row[1:])
                for row in self._conn.execute(f"SELECT namespace, {', '.join(Counts.FIELDS)} FROM counts")
            }
            labels = dict(self._conn.execute("SELECT key, label FROM namespaces").fetchall())
        keys = sorted(set(sizes) | set(counts))
        return [
            NamespaceStats(
                key=key,
                label=labels.get(key, key),
                entries=sizes.get(key, 0),
                counts=counts.get(key, Counts()),
            )
            for key in keys
        ]

    def clear(self, namespaces: Collection[str] | None = None, *, reset_stats: bool = False) -> int:
        """Remove the entries of ``namespaces`` (all when ``None``), logging a ``clear`` for each."""
        with self._write() as db:
            if namespaces is None:
                chosen = [r[0] for r in db.execute("SELECT DISTINCT namespace FROM entries")]
            else:
                chosen = list(namespaces)
            removed = 0
            for ns in chosen:
                removed += db.execute("DELETE FROM entries WHERE namespace = ?", (ns,)).rowcount
                db.execute("INSERT INTO changes (namespace, op, entry_id) VALUES (?, 'clear', 0)", (ns,))
            if reset_stats:
                if namespaces is None:
                    db.execute("DELETE FROM counts")
                else:
                    db.executemany("DELETE FROM counts WHERE namespace = ?", [(ns,) for ns in chosen])
        return removed

    def close(self) -> None:
        """Close the connection."""
        with self._lock:
            self._conn.close()

    def _evict(self, db: sqlite3.Connection, now: float) -> None:
        expired = db.execute("SELECT id, namespace FROM entries WHERE expires_at <= ?", (now,)).fetchall()
        self._delete(db, expired)
        excess = db.execute("SELECT COUNT(*) FROM entries").fetchone()[0] - self.eviction.max_entries
        if excess > 0:
            oldest = db.execute(
                "SELECT id, namespace FROM entries ORDER BY used_at, id LIMIT ?", (excess,)
            ).fetchall()
            self._delete(db, oldest)

    @staticmethod
    def _delete(db: sqlite3.Connection, rows: Sequence[tuple[int, str]]) -> None:
        if not rows:
            return
        db.executemany("DELETE FROM entries WHERE id = ?", [(r[0],) for r in rows])
        db.executemany(
            "INSERT INTO changes (namespace, op, entry_id) VALUES (?, 'del', ?)",
            [(r[1], r[0]) for r in rows],
        )

    def _trim(self, db: sqlite3.Connection) -> None:
        keep = self.LOG_FACTOR * max(self.eviction.max_entries, 1)
        last = db.execute("SELECT COALESCE(MAX(seq), 0) FROM changes").fetchone()[0]
        cut = last - keep
        if cut > int(self._meta(db, "trimmed", "0")):
            db.execute("DELETE FROM changes WHERE seq <= ?", (cut,))
            db.execute("INSERT OR REPLACE INTO meta (name, value) VALUES ('trimmed', ?)", (str(cut),))

    @staticmethod
    def _meta(db: sqlite3.Connection, name: str, default: str) -> str:
        row = db.execute("SELECT value FROM meta WHERE name = ?", (name,)).fetchone()
        return str(row[0]) if row else default


def _since(cursor: str | None, store_id: str) -> int | None:
    """The change number in ``cursor``, or ``None`` when it belongs to another store file."""
    if cursor is None:
        return None
    owner, _, seq = cursor.rpartition(":")
    return int(seq) if owner == store_id and seq.isdigit() else None


def _vector(blob: bytes) -> np.ndarray:
    return np.frombuffer(blob, dtype="<f4").astype(np.float32)


def _entry(row: tuple[Any, ...]) -> Entry:
    return Entry(
        id=row[0],
        namespace=row[1],
        key=row[2],
        text=row[3],
        vector=None if row[4] is None else _vector(row[4]),
        response=json.loads(row[5]),
        model=row[6],
        input_tokens=row[7],
        output_tokens=row[8],
        cost_micro_usd=row[9],
        created_at=row[10],
        expires_at=row[11],
    )


__all__ = ["FILE_NAME", "SqliteStore"]
