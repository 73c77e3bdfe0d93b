"""The decision graph served by `langgraph dev` exports one trace per thread to an OTLP receiver.

`langgraph dev` runs in a subprocess with ``OTEL_EXPORTER_OTLP_ENDPOINT``
pointing at a local :class:`OTLPReceiver`, its model tiers at a
:class:`FakeOpenAIServer`. Nothing else sets telemetry up: the served graph
does so itself on its first run, and opens a run span around each run on the
server's event loop, where `langgraph dev` refuses blocking calls.
"""

from __future__ import annotations

import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest
from langgraph_sdk import get_sync_client
from langgraph_sdk.client import SyncLangGraphClient
from langgraph_sdk.schema import Command

from tests.fakes.openai_server import FakeOpenAIServer
from tests.fakes.otlp_receiver import OTLPReceiver, ReceivedSpan
from tests.serving import (
    GRAPH_ID,
    LANGGRAPH,
    REPO_ROOT,
    TEST_TIMEOUT_S,
    ServedGraph,
    free_port,
    server_env,
    stop,
    wait_until_ready,
)

pytestmark = [pytest.mark.server, pytest.mark.timeout(TEST_TIMEOUT_S)]

TASK = (
    "Should we move our billing service from a monolith to microservices this year? "
    "We have 6 engineers and a PCI audit in 4 months."
)
NODES = {"planner", "cto", "coo", "reconcile", "review"}
EXPORT_WAIT_S = 30.0


@pytest.fixture(scope="module")
def collector() -> Iterator[OTLPReceiver]:
    with OTLPReceiver() as receiver:
        yield receiver


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory, collector: OTLPReceiver) -> Iterator[ServedGraph]:
    """`langgraph dev` (no auth) exporting spans to ``collector``, as the OTEL_* variables say."""
    workdir = tmp_path_factory.mktemp("langgraph-dev-traces")
    port, log, ledger = free_port(), workdir / "server.log", workdir / "ledger.sqlite"
    url = f"http://127.0.0.1:{port}"
    command = [str(LANGGRAPH), "dev", "--config", str(REPO_ROOT / "langgraph.json"), "--no-browser"]
    command += ["--no-reload", "--host", "127.0.0.1", "--port", str(port)]
    print(f"langgraph dev on {url}, output in {log}")
    with FakeOpenAIServer() as openai:
        env = server_env(openai.base_url, ledger=ledger)
        env.update(OTEL_EXPORTER_OTLP_ENDPOINT=collector.http_endpoint, OTEL_BSP_SCHEDULE_DELAY="100")
        with log.open("wb") as output:
            process = subprocess.Popen(
                command,
                cwd=workdir,
                env=env,
                stdin=subprocess.DEVNULL,
                stdout=output,
                stderr=subprocess.STDOUT,
            )
        try:
            wait_until_ready(process, url, log)
            yield ServedGraph(url=url, openai=openai, ledger=ledger, workdir=workdir, log=log)
        finally:
            stop(process)


@pytest.fixture
def client(served: ServedGraph) -> Iterator[SyncLangGraphClient]:
    served.openai.reset()
    with get_sync_client(url=served.url, api_key=None, timeout=60.0) as sdk:
        yield sdk


def of_thread(spans: list[ReceivedSpan], thread_id: str) -> list[ReceivedSpan]:
    return [s for s in spans if s.attributes.get("gen_ai.conversation.id") == thread_id]


def runs_of(spans: list[ReceivedSpan]) -> list[ReceivedSpan]:
    return sorted((s for s in spans if s.name == "invoke_workflow decision"), key=lambda s: s.start_ns)


def exported_runs(collector: OTLPReceiver, thread_id: str, count: int) -> list[ReceivedSpan]:
    """Wait until ``count`` run spans of the thread are exported; return the thread's spans."""

    def done(spans: list[ReceivedSpan]) -> bool:
        return len(runs_of(of_thread(spans, thread_id))) >= count

    return of_thread(collector.wait_for_spans(done, timeout=EXPORT_WAIT_S), thread_id)


def descends_from(span: ReceivedSpan, ancestor: ReceivedSpan, by_id: dict[str, ReceivedSpan]) -> bool:
    while span.parent_span_id is not None:
        if span.parent_span_id == ancestor.span_id:
            return True
        if span.parent_span_id not in by_id:
            return False
        span = by_id[span.parent_span_id]
    return False


def test_a_served_run_is_one_trace_under_one_run_span_and_its_resume_joins_it(
    served: ServedGraph, client: SyncLangGraphClient, collector: OTLPReceiver
):
    served.openai.set_fields("Reconciliation", risk_score=4)  # at the review threshold: a pause
    thread_id = str(client.threads.create()["thread_id"])

    client.runs.wait(thread_id, GRAPH_ID, input={"task": TASK})
    assert client.threads.get_state(thread_id)["next"] == ["review"]

    spans = exported_runs(collector, thread_id, 1)
    (first,) = runs_of(spans)
    trace = [s for s in collector.spans() if s.trace_id == first.trace_id]
    by_id = {s.span_id: s for s in trace}
    assert [s for s in trace if s.parent_span_id is None] == [first], "one root span: the run"
    assert {s.trace_id for s in spans} == {first.trace_id}, "no fragment of the run in another trace"
    nodes = [s for s in trace if s.name.startswith("invoke_agent ")]
    assert {s.attributes["gen_ai.agent.name"] for s in nodes} == NODES
    assert all(s.parent_span_id == first.span_id for s in nodes)
    assert all(descends_from(s, first, by_id) for s in trace if s is not first)
    assert first.attributes["budgetgraph.run.status"] == "paused"
    spent = sum(r["cost_micro_usd"] for r in served.ledger_records(thread_id))
    assert first.attributes["budgetgraph.cost_micro_usd"] == spent > 0

    parts = list(
        client.runs.stream(
            thread_id, GRAPH_ID, command=Command(resume={"action": "approve"}), stream_mode=["events"]
        )
    )
    assert "error" not in {part.event for part in parts}
    assert client.threads.get_state(thread_id)["next"] == []

    spans = exported_runs(collector, thread_id, 2)
    again, resumed = runs_of(spans)
    assert again == first and resumed.attributes["budgetgraph.run.status"] == "done"
    linked = (first.trace_id, first.span_id) in {(t, s) for t, s, _ in resumed.links}
    joined = resumed.trace_id == first.trace_id and resumed.parent_span_id == first.span_id
    assert joined or linked, "the resume is in the run's trace, or linked to it"
    (review,) = [s for s in spans if s.name == "invoke_agent review" and s.start_ns > resumed.start_ns]
    assert review.parent_span_id == resumed.span_id
    roots = [s for s in collector.spans() if s.trace_id == first.trace_id and s.parent_span_id is None]
    assert roots == [first], "across the pause and the resume, one root"
    assert "RunSpanHandler" not in Path(served.log).read_text(errors="replace"), "no callback error"
