"""The local span store keeps budgetgraph's spans by thread, and each thread's first run span.

Spans reach it off the run's threads, a batch per transaction, behind the SDK's batch processor.
"""

from __future__ import annotations

import sqlite3
import threading
import time
from pathlib import Path

from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor, SpanExportResult
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import SpanKind

from budgetgraph.tracing.store import (
    SpanStore,
    SpanStoreBatchProcessor,
    SpanStoreExporter,
    SpanStoreProcessor,
)


def provider_with(store: SpanStore) -> TracerProvider:
    provider = TracerProvider()
    provider.add_span_processor(SpanStoreProcessor(store))
    return provider


def test_spans_are_kept_with_their_parents_attributes_and_events(tmp_path: Path):
    store = SpanStore(tmp_path / "deep" / "traces.sqlite")
    tracer = provider_with(store).get_tracer("budgetgraph")

    with tracer.start_as_current_span(
        "invoke_workflow decision", attributes={"gen_ai.conversation.id": "t1"}
    ):
        with tracer.start_as_current_span(
            "chat gpt-4.1-mini",
            kind=SpanKind.CLIENT,
            attributes={"gen_ai.conversation.id": "t1", "budgetgraph.cost_micro_usd": 42, "tags": ("a", "b")},
        ) as chat:
            chat.add_event("budgetgraph.router.route", {"reason": "simple"})

    run, call = store.spans("t1")
    assert (run.name, run.parent_span_id, run.kind) == ("invoke_workflow decision", None, "INTERNAL")
    assert call.parent_span_id == run.span_id and call.trace_id == run.trace_id and call.kind == "CLIENT"
    assert call.attributes["budgetgraph.cost_micro_usd"] == 42 and call.attributes["tags"] == ["a", "b"]
    assert call.events[0]["name"] == "budgetgraph.router.route"
    assert call.events[0]["attributes"] == {"reason": "simple"}
    assert run.start_ns <= call.start_ns <= call.end_ns <= run.end_ns
    assert store.threads() == ["t1"] and store.spans("t2") == []


def test_spans_of_other_instrumentation_are_not_kept(tmp_path: Path):
    store = SpanStore(tmp_path / "traces.sqlite")
    provider = provider_with(store)

    with provider.get_tracer("httpx").start_as_current_span(
        "GET", attributes={"gen_ai.conversation.id": "t"}
    ):
        pass

    assert store.spans("t") == []


def test_a_thread_keeps_its_first_run_span(tmp_path: Path):
    store = SpanStore(tmp_path / "traces.sqlite")

    store.remember_root("t1", trace_id=0xABC, span_id=0x12, trace_flags=1, started_ns=1)
    store.remember_root("t1", trace_id=0xDEF, span_id=0x34, trace_flags=1, started_ns=2)

    root = store.thread_root("t1")
    assert root is not None and (root.trace_id, root.span_id, root.trace_flags) == (0xABC, 0x12, 1)
    assert store.thread_root("t2") is None


def test_reading_a_store_that_does_not_exist_creates_nothing(tmp_path: Path):
    store = SpanStore(tmp_path / "none" / "traces.sqlite")

    assert store.spans("t") == [] and store.thread_root("t") is None and store.threads() == []
    assert not (tmp_path / "none").exists()


def test_many_threads_write_at_once_and_a_closed_store_reopens(tmp_path: Path):
    store = SpanStore(tmp_path / "traces.sqlite")
    tracer = provider_with(store).get_tracer("budgetgraph")

    def work(n: int) -> None:
        for i in range(20):
            with tracer.start_as_current_span(f"s{n}-{i}", attributes={"gen_ai.conversation.id": "t"}):
                pass

    workers = [threading.Thread(target=work, args=(n,)) for n in range(4)]
    for w in workers:
        w.start()
    for w in workers:
        w.join()
    store.close()
    with tracer.start_as_current_span("after close", attributes={"gen_ai.conversation.id": "t"}):
        pass

    assert len(store.spans("t")) == 81


def test_the_batch_processor_queues_a_span_in_the_ending_thread_and_writes_it_at_flush(
    tmp_path: Path, monkeypatch
):
    store = SpanStore(tmp_path / "traces.sqlite")
    writers: list[str] = []
    write = store.write
    monkeypatch.setattr(
        store, "write", lambda spans: (writers.append(threading.current_thread().name), write(spans))
    )
    processor = SpanStoreBatchProcessor(store, schedule_delay_millis=60_000)
    provider = TracerProvider()
    provider.add_span_processor(processor)
    tracer = provider.get_tracer("budgetgraph")

    def node() -> None:
        with tracer.start_as_current_span("invoke_agent cto", attributes={"gen_ai.conversation.id": "t"}):
            pass

    worker = threading.Thread(target=node, name="node")
    worker.start()
    worker.join()

    assert writers == [] and not store.path.exists(), "on_end wrote to SQLite in the node's thread"
    assert processor.force_flush()
    assert [s.name for s in store.spans("t")] == ["invoke_agent cto"] and "node" not in writers
    provider.shutdown()


def test_the_batch_processor_writes_within_its_schedule_delay_from_its_own_thread(
    tmp_path: Path, monkeypatch
):
    store = SpanStore(tmp_path / "traces.sqlite")
    writers: list[str] = []
    write = store.write
    monkeypatch.setattr(
        store, "write", lambda spans: (writers.append(threading.current_thread().name), write(spans))
    )
    provider = TracerProvider()
    provider.add_span_processor(SpanStoreBatchProcessor(store, schedule_delay_millis=50))

    with provider.get_tracer("budgetgraph").start_as_current_span(
        "s", attributes={"gen_ai.conversation.id": "t"}
    ):
        pass
    deadline = time.monotonic() + 5
    while not store.spans("t") and time.monotonic() < deadline:
        time.sleep(0.01)

    assert [s.name for s in store.spans("t")] == ["s"]
    assert writers and all(name.startswith("OtelBatchSpan") for name in writers)
    provider.shutdown()


def test_the_batch_processor_queues_only_budgetgraphs_spans(tmp_path: Path):
    store = SpanStore(tmp_path / "traces.sqlite")
    processor = SpanStoreBatchProcessor(store, schedule_delay_millis=60_000)
    provider = TracerProvider()
    provider.add_span_processor(processor)

    with provider.get_tracer("httpx").start_as_current_span(
        "GET", attributes={"gen_ai.conversation.id": "t"}
    ):
        pass

    assert len(processor._batch_processor._queue) == 0
    provider.shutdown()
    assert store.spans("t") == []


def ended_spans(n: int, *, poison: int | None = None) -> list[ReadableSpan]:
    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    tracer = provider.get_tracer("budgetgraph")
    for i in range(n):
        with tracer.start_as_current_span(
            "poison" if i == poison else f"s{i}", attributes={"gen_ai.conversation.id": "t"}
        ):
            pass
    return list(exporter.get_finished_spans())


def test_a_batch_is_written_in_one_transaction(tmp_path: Path, caplog):
    store = SpanStore(tmp_path / "traces.sqlite")
    store.remember_root("t0", trace_id=1, span_id=1, trace_flags=1, started_ns=1)  # creates the schema
    with sqlite3.connect(store.path) as db:  # a row that SQLite refuses, in the middle of the batch
        db.execute(
            "CREATE TRIGGER refuse BEFORE INSERT ON spans WHEN NEW.name = 'poison' "
            "BEGIN SELECT RAISE(ABORT, 'refused'); END"
        )
    exporter = SpanStoreExporter(store)

    refused = exporter.export(ended_spans(50, poison=30))
    written = exporter.export(ended_spans(50))

    assert refused is SpanExportResult.FAILURE and "Could not write 50 spans" in caplog.text
    assert written is SpanExportResult.SUCCESS
    assert len(store.spans("t")) == 50, "the refused batch left none of its 49 other spans behind"


def test_a_write_that_fails_is_logged_and_returns_failure_never_raises(tmp_path: Path, caplog):
    (tmp_path / "file").write_text("")
    exporter = SpanStoreExporter(SpanStore(tmp_path / "file" / "traces.sqlite"))

    assert exporter.export(ended_spans(2)) is SpanExportResult.FAILURE
    assert "Could not write 2 spans" in caplog.text
