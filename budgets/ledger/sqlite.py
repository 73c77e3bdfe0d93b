"""The SQLite ledger: the embedded default, and ``memory:`` in-process.

Each reservation runs in one ``BEGIN IMMEDIATE`` transaction, which takes
SQLite's write lock, so reservations from many threads and processes on one
file are serialised: the check and the update cannot interleave.

Clocks: one file is one machine's (SQLite's locking does not hold across a
network filesystem), so every process that opens it reads the same host clock.
Reservations expire by that clock (``time.time()``) and the ``limits`` plugin
names the calendar windows by it, so no process can be ahead of another. A step
of the host's clock still moves every expiry at once: set forward past
:data:`~budgetgraph.budgets.ledger.base.RESERVATION_TTL_S`, it reclaims live
reservations. Processes on several machines need the Redis ledger, which keeps
time by the Redis server's clock.
"""

from __future__ import annotations

import json
import sqlite3
import threading
import time
import uuid
from collections.abc import Iterator, Sequence
from contextlib import AbstractContextManager, contextmanager
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from budgetgraph.budgets.ledger.base import (
    HISTORY_KEPT,
    RESERVATION_TTL_S,
    AlertCheck,
    Attempt,
    CallStart,
    Cap,
    Charge,
    Ledger,
    LedgerRecord,
    NotedAlert,
    Refusal,
    Reservation,
    ScopeTotals,
    in_usage_history,
)
from budgetgraph.budgets.sqlite_tx import connect, immediate

RECLAIM_EVERY_S = 1.0
"""Least time (s) between two scans for expired reservations by one ledger object."""

_SCHEMA = """
CREATE TABLE IF NOT EXISTS scopes (
    scope TEXT PRIMARY KEY,
    tokens INTEGER NOT NULL DEFAULT 0, micro_usd INTEGER NOT NULL DEFAULT 0,
    r_tokens INTEGER NOT NULL DEFAULT 0, r_micro_usd INTEGER NOT NULL DEFAULT 0,
    g_tokens INTEGER NOT NULL DEFAULT 0, g_micro_usd INTEGER NOT NULL DEFAULT 0
);
CREATE TABLE IF NOT EXISTS reservations (
    id TEXT PRIMARY KEY, scopes TEXT NOT NULL,
    tokens INTEGER NOT NULL, micro_usd INTEGER NOT NULL, expires REAL NOT NULL
);
CREATE TABLE IF NOT EXISTS records (
    id INTEGER PRIMARY KEY AUTOINCREMENT, ts TEXT NOT NULL, tenant TEXT NOT NULL, data TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS records_ts ON records (ts);
CREATE TABLE IF NOT EXISTS journal (key TEXT PRIMARY KEY, data TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS attempts (key TEXT PRIMARY KEY, ts TEXT NOT NULL, data TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS unsettled (
    id INTEGER PRIMARY KEY AUTOINCREMENT, ts TEXT NOT NULL, tenant TEXT NOT NULL, data TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS usage (
    id INTEGER PRIMARY KEY AUTOINCREMENT, ts TEXT NOT NULL, node TEXT NOT NULL, tier TEXT NOT NULL,
    model TEXT NOT NULL, input_tokens INTEGER NOT NULL, output_tokens INTEGER NOT NULL
);
CREATE INDEX IF NOT EXISTS usage_latest ON usage (node, tier, model, id);
CREATE TABLE IF NOT EXISTS alerts (
    scope TEXT NOT NULL, "limit" TEXT NOT NULL, threshold REAL NOT NULL, ts TEXT NOT NULL,
    PRIMARY KEY (scope, "limit", threshold)
);
"""


class SqliteLedger(Ledger):
    """A ledger in one SQLite file (or ``:memory:``).

    Args:
        path: The database file, created with its folder if missing; ``":memory:"``
            for an in-process ledger.
    """

    def __init__(self, path: str | Path) -> None:
        self.path = str(path)
        self._db: sqlite3.Connection | None = None
        self._lock = threading.RLock()
        self._read_db: sqlite3.Connection | None = None
        self._read_lock = threading.RLock()
        self._reclaimed_at = float("-inf")

    @property
    def _conn(self) -> sqlite3.Connection:
        """The connection, opened (and the file and schema created) on first use.

        Opening a ledger writes nothing, so a command refused before its first
        model call leaves no file behind.
        """
        if self._db is None:
            with self._lock:
                if self._db is None:
                    self._db = connect(self.path, _SCHEMA)
        return self._db

    def _tx(self) -> AbstractContextManager[sqlite3.Connection]:
        return immediate(self._conn, self._lock)

    @contextmanager
    def _read(self) -> Iterator[sqlite3.Connection]:
        """A connection for reads, held under its own lock.

        A file gets a second, query-only connection: under WAL its reads never wait
        for the writer's transactions (a parallel branch's reservation or settlement)
        and see every committed one. ``:memory:`` has one connection, so reads share
        the writer's.
        """
        if self.path == ":memory:":
            with self._lock:
                yield self._conn
            return
        with self._read_lock:
            if self._read_db is None:
                self._conn  # noqa: B018 - creates the file and its schema first
                self._read_db = sqlite3.connect(
                    self.path, timeout=60, isolation_level=None, check_same_thread=False
                )
                self._read_db.execute("PRAGMA query_only=1")
            yield self._read_db

    def reserve(
        self,
        charge: Charge,
        scopes: Sequence[str],
        caps: Sequence[Cap],
        *,
        attempt: tuple[str, LedgerRecord] | None = None,
        ttl_s: float | None = None,
    ) -> Reservation | Refusal:
        """See :meth:`Ledger.reserve`."""
        scopes = tuple(dict.fromkeys([*scopes, *(c.scope for c in caps)]))
        with self._tx() as db:
            self._reclaim(db)
            held = _totals_of(db, [cap.scope for cap in caps])
            for cap in caps:
                totals = held[cap.scope]
                spent, reserved, granted = (
                    totals.spent.of(cap.unit),
                    totals.reserved.of(cap.unit),
                    totals.granted.of(cap.unit),
                )
                if spent + reserved + charge.of(cap.unit) > cap.cap + granted:
                    return Refusal(cap, spent, reserved, granted, charge.of(cap.unit))
            rid = uuid.uuid4().hex
            key = None if attempt is None else f"{attempt[0]}#{rid}"
            reservation = Reservation(id=rid, scopes=scopes, charge=charge, attempt=key)
            db.executemany(
                "INSERT INTO scopes (scope, r_tokens, r_micro_usd) VALUES (?, ?, ?) ON CONFLICT (scope)"
                " DO UPDATE SET r_tokens = r_tokens + excluded.r_tokens,"
                " r_micro_usd = r_micro_usd + excluded.r_micro_usd",
                [(scope, charge.tokens, charge.micro_usd) for scope in scopes],
            )
            db.execute(
                "INSERT INTO reservations VALUES (?, ?, ?, ?, ?)",
                (
                    rid,
                    json.dumps(scopes),
                    charge.tokens,
                    charge.micro_usd,
                    time.time() + (RESERVATION_TTL_S if ttl_s is None else ttl_s),
                ),
            )
            if attempt is not None and key is not None:
                opened = Attempt(key=key, reservation=reservation, record=attempt[1])
                db.execute(
                    "INSERT OR REPLACE INTO attempts VALUES (?, ?, ?)",
                    (key, _now(), json.dumps(opened.to_json())),
                )
            return reservation

    def settle(
        self,
        reservation: Reservation,
        actual: Charge,
        record: LedgerRecord | None,
        *,
        alerts: Sequence[AlertCheck] = (),
        journal: tuple[str, dict[str, Any]] | None = None,
    ) -> list[NotedAlert]:
        """See :meth:`Ledger.settle`."""
        with self._tx() as db:
            self._drop(db, reservation.id)
            _add_spend(db, reservation.scopes, actual)
            if reservation.attempt is not None:
                db.execute("DELETE FROM attempts WHERE key = ?", (reservation.attempt,))
            noted = _note_alerts(db, alerts)
            if record is not None:
                kept: LedgerRecord = {**record, "alerts": [*record["alerts"], *(a.reason for a in noted)]}
                _insert_record(db, kept)
            if journal is not None and not noted:
                db.execute(
                    "INSERT OR REPLACE INTO journal VALUES (?, ?)", (journal[0], json.dumps(journal[1]))
                )
            return noted

    def release(self, reservation: Reservation) -> None:
        """See :meth:`Ledger.release`."""
        with self._tx() as db:
            self._drop(db, reservation.id)

    def record(self, scopes: Sequence[str], actual: Charge, record: LedgerRecord) -> None:
        """See :meth:`Ledger.record`."""
        with self._tx() as db:
            _add_spend(db, scopes, actual)
            _insert_record(db, record)

    def totals(self, scope: str) -> ScopeTotals:
        """See :meth:`Ledger.totals`."""
        return self.totals_of([scope])[scope]

    def totals_of(self, scopes: Sequence[str]) -> dict[str, ScopeTotals]:
        """See :meth:`Ledger.totals_of`: one query."""
        with self._read() as db:
            return _totals_of(db, scopes)

    def open_call(self, journal_key: str | None, scopes: Sequence[str]) -> CallStart:
        """See :meth:`Ledger.open_call`: three reads.

        Not one transaction: the journal entry and the attempts are this call's own
        (nobody else writes them while it runs), and the totals guide the router;
        the reservation reads them again in its write transaction.
        """
        with self._read() as db:
            journal = attempts = None
            if journal_key is not None:
                row = db.execute("SELECT data FROM journal WHERE key = ?", (journal_key,)).fetchone()
                journal = json.loads(row[0]) if row else None
                attempts = _open_attempts(db, journal_key + "#")
            totals = _totals_of(db, scopes)
        return CallStart(journal, attempts or [], totals)

    def finish_call(
        self, journal_key: str | None, entry: dict[str, Any] | None, records: Sequence[LedgerRecord]
    ) -> None:
        """See :meth:`Ledger.finish_call`: one write transaction."""
        if (journal_key is None or entry is None) and not records:
            return
        with self._tx() as db:
            if journal_key is not None and entry is not None:
                db.execute("INSERT OR REPLACE INTO journal VALUES (?, ?)", (journal_key, json.dumps(entry)))
            for record in records:
                _insert_record(db, record)

    def recent_usage(
        self, node: str, tier: str, model: str, *, limit: int, since: datetime | None = None
    ) -> list[tuple[int, int]]:
        """See :meth:`Ledger.recent_usage`: one indexed query."""
        query = "SELECT input_tokens, output_tokens FROM usage WHERE node = ? AND tier = ? AND model = ?"
        args: list[Any] = [node, tier, model]
        if since is not None:
            query += " AND ts >= ?"
            args.append(since.astimezone(UTC).isoformat())
        args.append(max(0, min(limit, HISTORY_KEPT)))
        with self._read() as db:
            rows = db.execute(query + " ORDER BY id DESC LIMIT ?", args).fetchall()
        return [(int(a), int(b)) for a, b in rows]

    def recent_usage_of(
        self, keys: Sequence[tuple[str, str, str]], *, limit: int, since: datetime | None = None
    ) -> dict[tuple[str, str, str], list[tuple[int, int]]]:
        """See :meth:`Ledger.recent_usage_of`: one query, each key's part read through the index."""
        unique = list(dict.fromkeys(keys))
        if not unique:
            return {}
        window = max(0, min(limit, HISTORY_KEPT))
        after = "" if since is None else " AND ts >= ?"
        part = (
            "SELECT * FROM (SELECT ? AS k, id, input_tokens, output_tokens FROM usage"
            f" WHERE node = ? AND tier = ? AND model = ?{after} ORDER BY id DESC LIMIT ?)"
        )
        bound = [] if since is None else [since.astimezone(UTC).isoformat()]
        args: list[Any] = []
        for index, key in enumerate(unique):
            args += [index, *key, *bound, window]
        with self._read() as db:
            rows = db.execute(" UNION ALL ".join([part] * len(unique)), args).fetchall()
        out: dict[tuple[str, str, str], list[tuple[int, int, int]]] = {key: [] for key in unique}
        for index, row_id, inp, outp in rows:
            out[unique[index]].append((int(row_id), int(inp), int(outp)))
        return {key: [(a, b) for _, a, b in sorted(found, reverse=True)] for key, found in out.items()}

    def prune_journal(self, thread_prefix: str) -> int:
        """See :meth:`Ledger.prune_journal`."""
        if not thread_prefix:
            return 0
        with self._tx() as db:
            cursor = db.execute(
                "DELETE FROM journal WHERE key >= ? AND key < ?",
                (thread_prefix, thread_prefix + "\U0010ffff"),
            )
            return cursor.rowcount

    def grant(self, scope: str, extra: Charge) -> None:
        """See :meth:`Ledger.grant`."""
        with self._tx() as db:
            db.execute("INSERT OR IGNORE INTO scopes (scope) VALUES (?)", (scope,))
            db.execute(
                "UPDATE scopes SET g_tokens = g_tokens + ?, g_micro_usd = g_micro_usd + ? WHERE scope = ?",
                (extra.tokens, extra.micro_usd, scope),
            )

    def note_alert(self, scope: str, limit: str, threshold: float) -> bool:
        """See :meth:`Ledger.note_alert`."""
        with self._tx() as db:
            cursor = db.execute(
                'INSERT OR IGNORE INTO alerts (scope, "limit", threshold, ts) VALUES (?, ?, ?, ?)',
                (scope, limit, threshold, _now()),
            )
            return cursor.rowcount == 1

    def records(self, *, since: datetime | None = None, tenant: str | None = None) -> list[LedgerRecord]:
        """See :meth:`Ledger.records`."""
        return self._select("records", since=since, tenant=tenant)

    def alerts(self, *, since: datetime | None = None) -> list[dict[str, Any]]:
        """See :meth:`Ledger.alerts`."""
        query, args = 'SELECT scope, "limit", threshold, ts FROM alerts', []
        if since is not None:
            query += " WHERE ts >= ?"
            args.append(since.astimezone(UTC).isoformat())
        with self._read() as db:
            rows = db.execute(query + " ORDER BY ts", args).fetchall()
        return [{"scope": r[0], "limit": r[1], "threshold": r[2], "ts": r[3]} for r in rows]

    def journal_get(self, key: str) -> dict[str, Any] | None:
        """See :meth:`Ledger.journal_get`."""
        with self._read() as db:
            row = db.execute("SELECT data FROM journal WHERE key = ?", (key,)).fetchone()
        return json.loads(row[0]) if row else None

    def journal_put(self, key: str, entry: dict[str, Any]) -> None:
        """See :meth:`Ledger.journal_put`."""
        with self._tx() as db:
            db.execute("INSERT OR REPLACE INTO journal VALUES (?, ?)", (key, json.dumps(entry)))

    def begin_attempt(self, attempt: Attempt) -> None:
        """See :meth:`Ledger.begin_attempt`."""
        with self._tx() as db:
            db.execute(
                "INSERT OR REPLACE INTO attempts VALUES (?, ?, ?)",
                (attempt.key, _now(), json.dumps(attempt.to_json())),
            )

    def end_attempt(self, key: str) -> bool:
        """See :meth:`Ledger.end_attempt`."""
        with self._tx() as db:
            return db.execute("DELETE FROM attempts WHERE key = ?", (key,)).rowcount == 1

    def open_attempts(self, prefix: str = "") -> list[Attempt]:
        """See :meth:`Ledger.open_attempts`."""
        with self._read() as db:
            return _open_attempts(db, prefix)

    def keep_unsettled(self, record: LedgerRecord, charge: Charge, scopes: Sequence[str]) -> None:
        """See :meth:`Ledger.keep_unsettled`."""
        with self._tx() as db:
            _add_spend(db, scopes, charge)
            db.execute(
                "INSERT INTO unsettled (ts, tenant, data) VALUES (?, ?, ?)",
                (record["ts"], record["tenant"], json.dumps(record)),
            )

    def unsettled(self, *, since: datetime | None = None, tenant: str | None = None) -> list[LedgerRecord]:
        """See :meth:`Ledger.unsettled`."""
        return self._select("unsettled", since=since, tenant=tenant)

    def _select(self, table: str, *, since: datetime | None, tenant: str | None) -> list[LedgerRecord]:
        """The records of ``table`` (``records`` or ``unsettled``), oldest first, filtered."""
        query, args = f"SELECT data FROM {table} WHERE 1=1", []  # noqa: S608 - table is ours
        if since is not None:
            query += " AND ts >= ?"
            args.append(since.astimezone(UTC).isoformat())
        if tenant is not None:
            query += " AND tenant = ?"
            args.append(tenant)
        with self._read() as db:
            rows = db.execute(query + " ORDER BY id", args).fetchall()
        return [json.loads(row[0]) for row in rows]

    def close(self) -> None:
        """Close the connections."""
        with self._read_lock:
            if self._read_db is not None:
                self._read_db.close()
                self._read_db = None
        with self._lock:
            if self._db is not None:
                self._db.close()
                self._db = None

    @staticmethod
    def _drop(db: sqlite3.Connection, reservation_id: str) -> bool:
        rows = db.execute(
            "DELETE FROM reservations WHERE id = ? RETURNING scopes, tokens, micro_usd", (reservation_id,)
        ).fetchall()  # all of them: a RETURNING statement is done once its rows are read
        if not rows:  # already reclaimed as expired
            return False
        row = rows[0]
        db.executemany(
            "UPDATE scopes SET r_tokens = r_tokens - ?, r_micro_usd = r_micro_usd - ? WHERE scope = ?",
            [(row[1], row[2], scope) for scope in json.loads(row[0])],
        )
        return True

    def _reclaim(self, db: sqlite3.Connection) -> None:
        """Drop expired reservations, at most once every :data:`RECLAIM_EVERY_S` (in a write transaction).

        A reservation expires after :data:`RESERVATION_TTL_S` (15 minutes): a second
        more before its room comes back changes nothing, and a reservation that
        finds none expired still pays a scan of the table.
        """
        now = time.monotonic()
        if now - self._reclaimed_at < RECLAIM_EVERY_S:
            return
        self._reclaimed_at = now
        for (rid,) in db.execute("SELECT id FROM reservations WHERE expires < ?", (time.time(),)).fetchall():
            self._drop(db, rid)


def _add_spend(db: sqlite3.Connection, scopes: Sequence[str], actual: Charge) -> None:
    unique = list(dict.fromkeys(scopes))
    db.executemany(
        "INSERT INTO scopes (scope, tokens, micro_usd) VALUES (?, ?, ?) ON CONFLICT (scope)"
        " DO UPDATE SET tokens = tokens + excluded.tokens, micro_usd = micro_usd + excluded.micro_usd",
        [(scope, actual.tokens, actual.micro_usd) for scope in unique],
    )


def _totals_of(db: sqlite3.Connection, scopes: Sequence[str]) -> dict[str, ScopeTotals]:
    """What each scope holds, in one query (a scope never written holds nothing)."""
    unique = list(dict.fromkeys(scopes))
    out = dict.fromkeys(unique, ScopeTotals())
    if not unique:
        return out
    marks = ",".join("?" * len(unique))
    rows = db.execute(
        "SELECT scope, tokens, micro_usd, r_tokens, r_micro_usd, g_tokens, g_micro_usd"
        f" FROM scopes WHERE scope IN ({marks})",  # noqa: S608 - placeholders only
        unique,
    ).fetchall()
    for row in rows:
        out[row[0]] = ScopeTotals(Charge(row[1], row[2]), Charge(row[3], row[4]), Charge(row[5], row[6]))
    return out


def _open_attempts(db: sqlite3.Connection, prefix: str) -> list[Attempt]:
    rows = db.execute(
        "SELECT data FROM attempts WHERE substr(key, 1, ?) = ? ORDER BY ts, key", (len(prefix), prefix)
    ).fetchall()
    return [Attempt.from_json(json.loads(row[0])) for row in rows]


def _note_alerts(db: sqlite3.Connection, checks: Sequence[AlertCheck]) -> list[NotedAlert]:
    """Note each threshold of ``checks`` that its scope's spend reaches, once ever; return the new ones."""
    noted: list[NotedAlert] = []
    if not checks:
        return noted
    held = _totals_of(db, [check.cap.scope for check in checks])
    for check in checks:
        cap, totals = check.cap, held[check.cap.scope]
        room = cap.cap + totals.granted.of(cap.unit)
        if room <= 0:
            continue
        used = totals.spent.of(cap.unit) / room
        for threshold in check.thresholds:
            if used < threshold:
                continue
            cursor = db.execute(
                'INSERT OR IGNORE INTO alerts (scope, "limit", threshold, ts) VALUES (?, ?, ?, ?)',
                (cap.scope, cap.limit, threshold, _now()),
            )
            if cursor.rowcount == 1:
                noted.append(NotedAlert(cap.scope, cap.limit, threshold, used))
    return noted


def _insert_record(db: sqlite3.Connection, record: LedgerRecord) -> None:
    db.execute(
        "INSERT INTO records (ts, tenant, data) VALUES (?, ?, ?)",
        (record["ts"], record["tenant"], json.dumps(record)),
    )
    if in_usage_history(record):
        db.execute(
            "INSERT INTO usage (ts, node, tier, model, input_tokens, output_tokens)"
            " VALUES (?, ?, ?, ?, ?, ?)",
            (
                record["ts"],
                record["node"],
                record["tier"],
                record["model"],
                record["input_tokens"],
                record["output_tokens"],
            ),
        )


def _now() -> str:
    return datetime.now(UTC).isoformat()
