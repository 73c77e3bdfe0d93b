"""The local span store: budgetgraph's finished spans in SQLite, for ``budgetgraph trace``.

One file (default ``.budgetgraph/traces.sqlite``) with two tables:

- ``spans``: one row per finished span of the ``budgetgraph`` instrumentation
  scope, keyed by trace and span id, with its thread (the span's
  ``gen_ai.conversation.id``), times in ns since the epoch, status, and its
  attributes, events and links as JSON;
- ``threads``: the first run span of each thread (trace id, span id, flags),
  so that a later process continuing the thread (``budgetgraph resume``)
  joins the same trace.

:class:`SpanStoreProcessor` writes each span as it ends, in the thread that
ends it: a few hundred microseconds per span (WAL journal, ``synchronous=NORMAL``),
and the spans of a run that crashes are kept. Failures are logged, never raised.
"""

from __future__ import annotations

import json
import logging
import sqlite3
import threading
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from opentelemetry.context import Context
from opentelemetry.sdk.trace import ReadableSpan, Span, SpanProcessor

from budgetgraph.tracing import attributes as attr

logger = logging.getLogger(__name__)

_SCHEMA = """
CREATE TABLE IF NOT EXISTS spans (
    trace_id TEXT NOT NULL,
    span_id TEXT NOT NULL,
    parent_span_id TEXT,
    thread_id TEXT,
    name TEXT NOT NULL,
    kind TEXT NOT NULL,
    start_ns INTEGER NOT NULL,
    end_ns INTEGER NOT NULL,
    status TEXT NOT NULL,
    status_message TEXT,
    attributes TEXT NOT NULL,
    events TEXT NOT NULL,
    links TEXT NOT NULL,
    PRIMARY KEY (trace_id, span_id)
);
CREATE INDEX IF NOT EXISTS spans_by_thread ON spans (thread_id, start_ns);
CREATE TABLE IF NOT EXISTS threads (
    thread_id TEXT PRIMARY KEY,
    trace_id TEXT NOT NULL,
    span_id TEXT NOT NULL,
    trace_flags INTEGER NOT NULL,
    started_ns INTEGER NOT NULL
);
"""


@dataclass(frozen=True)
class StoredSpan:
    """One span as the store keeps it.

    Attributes:
        trace_id: 32 hex digits.
        span_id: 16 hex digits.
        parent_span_id: The parent's span id, or ``None`` for a root.
        thread_id: The run's thread (``gen_ai.conversation.id``), or ``None``.
        name: The span name, e.g. ``invoke_agent cto``.
        kind: ``INTERNAL``, ``CLIENT`` ...
        start_ns: Start, ns since the epoch.
        end_ns: End, ns since the epoch.
        status: ``UNSET``, ``OK`` or ``ERROR``.
        status_message: The error's description, if any.
        attributes: The span's attributes.
        events: ``{"name", "time_ns", "attributes"}`` per event.
        links: ``{"trace_id", "span_id", "attributes"}`` per link.
    """

    trace_id: str
    span_id: str
    parent_span_id: str | None
    thread_id: str | None
    name: str
    kind: str
    start_ns: int
    end_ns: int
    status: str
    status_message: str | None
    attributes: Mapping[str, Any] = field(default_factory=dict)
    events: Sequence[Mapping[str, Any]] = ()
    links: Sequence[Mapping[str, Any]] = ()

    @property
    def duration_ns(self) -> int:
        """End minus start (ns)."""
        return max(self.end_ns - self.start_ns, 0)


@dataclass(frozen=True)
class ThreadRoot:
    """The first run span of a thread, which later runs of the thread join.

    Attributes:
        trace_id: The trace id, as an integer.
        span_id: The span id, as an integer.
        trace_flags: The W3C trace flags (1: sampled).
    """

    trace_id: int
    span_id: int
    trace_flags: int


class SpanStore:
    """Spans in one SQLite file, written by many threads (and processes).

    The file and its folder are created on the first write; reading a store
    that does not exist finds nothing.

    Args:
        path: The SQLite file.
    """

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        self._conn: sqlite3.Connection | None = None
        self._lock = threading.Lock()

    def _db(self, *, create: bool) -> sqlite3.Connection | None:
        if self._conn is None:
            if not create and not self.path.exists():
                return None
            self.path.parent.mkdir(parents=True, exist_ok=True)
            conn = sqlite3.connect(self.path, timeout=5, isolation_level=None, check_same_thread=False)
            conn.execute("PRAGMA journal_mode=WAL")
            conn.execute("PRAGMA synchronous=NORMAL")
            conn.executescript(_SCHEMA)
            self._conn = conn
        return self._conn

    def write(self, spans: Iterable[ReadableSpan]) -> None:
        """Keep ``spans`` (a span written twice keeps its last version)."""
        rows = [_row(span) for span in spans]
        if not rows:
            return
        with self._lock:
            db = self._db(create=True)
            assert db is not None
            db.executemany(
                "INSERT OR REPLACE INTO spans VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)", rows
            )

    def remember_root(
        self, thread_id: str, trace_id: int, span_id: int, trace_flags: int, started_ns: int
    ) -> None:
        """Note the first run span of ``thread_id``; a thread keeps the first one noted."""
        with self._lock:
            db = self._db(create=True)
            assert db is not None
            db.execute(
                "INSERT OR IGNORE INTO threads VALUES (?, ?, ?, ?, ?)",
                (thread_id, f"{trace_id:032x}", f"{span_id:016x}", trace_flags, started_ns),
            )

    def thread_root(self, thread_id: str) -> ThreadRoot | None:
        """The first run span of ``thread_id``, or ``None``."""
        with self._lock:
            db = self._db(create=False)
            if db is None:
                return None
            row = db.execute(
                "SELECT trace_id, span_id, trace_flags FROM threads WHERE thread_id = ?", (thread_id,)
            ).fetchone()
        if row is None:
            return None
        return ThreadRoot(trace_id=int(row[0], 16), span_id=int(row[1], 16), trace_flags=int(row[2]))

    def spans(self, thread_id: str) -> list[StoredSpan]:
        """Every span of ``thread_id``, by start time.

        Spans of the thread's traces that carry no thread (none of budgetgraph's
        own) are included too.
        """
        with self._lock:
            db = self._db(create=False)
            if db is None:
                return []
            rows = db.execute(
                "SELECT * FROM spans WHERE thread_id = ? OR trace_id IN "
                "(SELECT DISTINCT trace_id FROM spans WHERE thread_id = ?) ORDER BY start_ns, end_ns",
                (thread_id, thread_id),
            ).fetchall()
        return [_stored(row) for row in rows]

    def threads(self) -> list[str]:
        """Threads with spans, most recent first."""
        with self._lock:
            db = self._db(create=False)
            if db is None:
                return []
            rows = db.execute(
                "SELECT thread_id FROM spans WHERE thread_id IS NOT NULL "
                "GROUP BY thread_id ORDER BY MAX(end_ns) DESC"
            ).fetchall()
        return [r[0] for r in rows]

    def close(self) -> None:
        """Close the connection (a later write opens it again)."""
        with self._lock:
            if self._conn is not None:
                self._conn.close()
                self._conn = None


class SpanStoreProcessor(SpanProcessor):
    """Writes each finished span of the ``budgetgraph`` scope to a :class:`SpanStore`.

    Args:
        store: Where the spans go.
    """

    def __init__(self, store: SpanStore) -> None:
        self.store = store

    def on_start(self, span: Span, parent_context: Context | None = None) -> None:
        """Nothing: spans are written when they end."""

    def on_end(self, span: ReadableSpan) -> None:
        """Write ``span`` if it is one of budgetgraph's."""
        scope = span.instrumentation_scope
        if scope is None or scope.name != attr.SCOPE:
            return
        try:
            self.store.write([span])
        except Exception:  # telemetry never breaks a run
            logger.warning("Could not write span `%s` to %s", span.name, self.store.path, exc_info=True)

    def shutdown(self) -> None:
        """Close the store."""
        self.store.close()

    def force_flush(self, timeout_millis: int = 30000) -> bool:
        """Nothing is buffered."""
        return True


def _jsonable(value: Any) -> Any:
    if isinstance(value, tuple | list):
        return [_jsonable(v) for v in value]
    if isinstance(value, bool | int | float | str) or value is None:
        return value
    return str(value)


def _row(span: ReadableSpan) -> tuple[Any, ...]:
    ctx = span.get_span_context()
    assert ctx is not None
    attributes = {k: _jsonable(v) for k, v in (span.attributes or {}).items()}
    thread = attributes.get(attr.CONVERSATION_ID)
    events = [
        {
            "name": e.name,
            "time_ns": e.timestamp,
            "attributes": {k: _jsonable(v) for k, v in (e.attributes or {}).items()},
        }
        for e in span.events
    ]
    links = [
        {
            "trace_id": f"{link.context.trace_id:032x}",
            "span_id": f"{link.context.span_id:016x}",
            "attributes": {k: _jsonable(v) for k, v in (link.attributes or {}).items()},
        }
        for link in span.links
    ]
    return (
        f"{ctx.trace_id:032x}",
        f"{ctx.span_id:016x}",
        f"{span.parent.span_id:016x}" if span.parent is not None else None,
        str(thread) if thread is not None else None,
        span.name,
        span.kind.name,
        span.start_time or 0,
        span.end_time or span.start_time or 0,
        span.status.status_code.name,
        span.status.description,
        json.dumps(attributes),
        json.dumps(events),
        json.dumps(links),
    )


def _stored(row: Sequence[Any]) -> StoredSpan:
    return StoredSpan(
        trace_id=row[0],
        span_id=row[1],
        parent_span_id=row[2],
        thread_id=row[3],
        name=row[4],
        kind=row[5],
        start_ns=int(row[6]),
        end_ns=int(row[7]),
        status=row[8],
        status_message=row[9],
        attributes=json.loads(row[10]),
        events=json.loads(row[11]),
        links=json.loads(row[12]),
    )
