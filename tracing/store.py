"""The local span store: budgetgraph's finished spans in SQLite, for ``budgetgraph trace``.

One file (default ``.budgetgraph/traces.sqlite``) with two tables:

- ``spans``: one row per finished span of the ``budgetgraph`` instrumentation
  scope, keyed by trace and span id, with its thread (the span's
  ``gen_ai.conversation.id``), times in ns since the epoch, status, and its
  attributes, events and links as JSON;
- ``threads``: the first run span of each thread (trace id, span id, flags),
  so that a later process continuing the thread (``budgetgraph resume``)
  joins the same trace. It is written directly (:meth:`SpanStore.remember_root`),
  once per thread, not through a span processor.

Spans reach the store the way they reach an OTLP collector: :class:`SpanStoreExporter`
is a ``SpanExporter`` that writes a batch in one transaction, behind the SDK's
``BatchSpanProcessor`` (:class:`SpanStoreBatchProcessor`, which
:func:`~budgetgraph.tracing.setup.configure_telemetry` installs). The thread that
ends a span only queues it (a few microseconds); the processor's worker thread
writes every :data:`STORE_SCHEDULE_DELAY_MS` (or ``OTEL_BSP_SCHEDULE_DELAY``), and
``force_flush`` / ``shutdown_telemetry`` write what is queued at once. A process
that exits through ``atexit`` keeps all its spans; one that is killed loses at
most the last schedule delay's. :class:`SpanStoreProcessor` writes each span in
the ending thread instead, for tests and tools that read the store right away.
Failures are logged, never raised.
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

from opentelemetry.sdk.trace import ReadableSpan
from opentelemetry.sdk.trace.export import (
    BatchSpanProcessor,
    SimpleSpanProcessor,
    SpanExporter,
    SpanExportResult,
)

from budgetgraph.tracing import attributes as attr

logger = logging.getLogger(__name__)

STORE_SCHEDULE_DELAY_MS = 500
"""How long the store's batch processor waits between writes (ms) when
``OTEL_BSP_SCHEDULE_DELAY`` is unset. The SDK's default, 5,000 ms, suits a
collector across a network; the store is a local file that the dashboard and
``budgetgraph trace`` read while a server runs, so it is written sooner. A
write of a run's ~10 spans takes about a millisecond."""

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
        """Keep ``spans`` in one transaction (a span written twice keeps its last version).

        Raises:
            sqlite3.Error: The file cannot be written (nothing of the batch is kept).
        """
        rows = [_row(span) for span in spans]
        if not rows:
            return
        with self._lock:
            db = self._db(create=True)
            assert db is not None
            db.execute("BEGIN IMMEDIATE")
            try:
                db.executemany(
                    "INSERT OR REPLACE INTO spans VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)", rows
                )
            except BaseException:
                db.execute("ROLLBACK")
                raise
            db.execute("COMMIT")

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


def _ours(span: ReadableSpan) -> bool:
    """Whether ``span`` is of the ``budgetgraph`` instrumentation scope (the only ones kept)."""
    scope = span.instrumentation_scope
    return scope is not None and scope.name == attr.SCOPE


class SpanStoreExporter(SpanExporter):
    """Writes each batch of budgetgraph's spans to a :class:`SpanStore` in one transaction.

    Spans of other instrumentation scopes are skipped. Never raises: a failed
    write is logged and returns ``FAILURE`` (the batch is not kept).

    Args:
        store: Where the spans go.
    """

    def __init__(self, store: SpanStore) -> None:
        self.store = store
        self._shut = False

    def export(self, spans: Sequence[ReadableSpan]) -> SpanExportResult:
        """Write ``spans`` (those of the ``budgetgraph`` scope) in one transaction."""
        if self._shut:
            return SpanExportResult.FAILURE
        try:
            self.store.write(span for span in spans if _ours(span))
        except Exception:  # telemetry never breaks a run
            logger.warning("Could not write %d spans to %s", len(spans), self.store.path, exc_info=True)
            return SpanExportResult.FAILURE
        return SpanExportResult.SUCCESS

    def shutdown(self) -> None:
        """Close the store; later exports fail."""
        self._shut = True
        try:
            self.store.close()
        except Exception:
            logger.debug("Could not close %s", self.store.path, exc_info=True)

    def force_flush(self, timeout_millis: int = 30000) -> bool:
        """Nothing is buffered here (the processor in front buffers)."""
        return True


class SpanStoreBatchProcessor(BatchSpanProcessor):
    """The SDK's ``BatchSpanProcessor`` in front of a :class:`SpanStoreExporter`.

    ``on_end`` queues the span (only those of the ``budgetgraph`` scope) and
    returns; the processor's worker thread writes the queue. The queue size,
    batch size and export timeout are the SDK's (``OTEL_BSP_MAX_QUEUE_SIZE``,
    ``OTEL_BSP_MAX_EXPORT_BATCH_SIZE``, ``OTEL_BSP_EXPORT_TIMEOUT``).

    Args:
        store: Where the spans go.
        schedule_delay_millis: The wait between writes (ms); ``None``: the SDK
            reads ``OTEL_BSP_SCHEDULE_DELAY`` (default 5,000 ms).
    """

    def __init__(self, store: SpanStore, *, schedule_delay_millis: float | None = None) -> None:
        super().__init__(SpanStoreExporter(store), schedule_delay_millis=schedule_delay_millis)
        self.store = store

    def on_end(self, span: ReadableSpan) -> None:
        """Queue ``span`` if it is one of budgetgraph's."""
        if _ours(span):
            super().on_end(span)


class SpanStoreProcessor(SimpleSpanProcessor):
    """Writes each span of the ``budgetgraph`` scope as it ends, in the thread that ends it.

    For tests and tools that read the store right after the span ends; the
    configured telemetry uses :class:`SpanStoreBatchProcessor`, which keeps
    the write off the run's threads.

    Args:
        store: Where the spans go.
    """

    def __init__(self, store: SpanStore) -> None:
        super().__init__(SpanStoreExporter(store))
        self.store = store

    def on_end(self, span: ReadableSpan) -> None:
        """Write ``span`` if it is one of budgetgraph's."""
        if _ours(span):
            super().on_end(span)


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
