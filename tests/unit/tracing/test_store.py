"""The local span store keeps budgetgraph's spans by thread, and each thread's first run span."""

from __future__ import annotations

import threading
from pathlib import Path

from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.trace import SpanKind

from budgetgraph.tracing.store import SpanStore, SpanStoreProcessor


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
