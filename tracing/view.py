"""A thread's spans from the local store as a tree with times, tokens and cost, and totals.

What ``budgetgraph trace THREAD`` shows (``graph/cli_trace.py`` renders it).
The totals are summed over the call spans (``budgetgraph.step`` = ``call``:
one per model call through the gateway, whose ``chat`` spans below are its
requests to model servers; a cache hit or local step has none); they equal
the sum of the thread's run spans, the ledger's spend for the thread and the
``spend.total`` of ``budgetgraph run/resume --json``. Traces stored before
call spans existed are summed over their ``chat`` spans.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any, Literal

from budgetgraph.tracing import attributes as attr
from budgetgraph.tracing.store import StoredSpan

SpanKindName = Literal["run", "node", "call", "chat", "step", "tool", "other"]

_KINDS: dict[str, SpanKindName] = {
    attr.OP_INVOKE_WORKFLOW: "run",
    attr.OP_INVOKE_AGENT: "node",
    attr.OP_CHAT: "chat",
    attr.OP_EXECUTE_TOOL: "tool",
}


@dataclass(frozen=True)
class SpanRow:
    """One span in tree order.

    Attributes:
        span: The stored span.
        depth: 0 for a root, 1 for its children, ...
        kind: ``run``, ``node``, ``call``, ``chat``, ``step`` (a pipeline step), ``tool`` or ``other``.
        offset_ms: Start, from the start of the thread's first span (ms).
        duration_ms: Duration (ms).
    """

    span: StoredSpan
    depth: int
    kind: SpanKindName
    offset_ms: float
    duration_ms: float

    def number(self, key: str) -> int | None:
        """The integer attribute ``key``, or ``None``."""
        value = self.span.attributes.get(key)
        return int(value) if isinstance(value, int | float) and not isinstance(value, bool) else None

    @property
    def input_tokens(self) -> int | None:
        """Input tokens: as reported (``gen_ai.usage.input_tokens``), else as counted."""
        reported = self.number(attr.INPUT_TOKENS)
        return reported if reported is not None else self.number(attr.COUNTED_INPUT_TOKENS)

    @property
    def output_tokens(self) -> int | None:
        """Output tokens: as reported (``gen_ai.usage.output_tokens``), else as counted."""
        reported = self.number(attr.OUTPUT_TOKENS)
        return reported if reported is not None else self.number(attr.COUNTED_OUTPUT_TOKENS)

    @property
    def cost_micro_usd(self) -> int | None:
        """``budgetgraph.cost_micro_usd`` (micro-USD)."""
        return self.number(attr.COST_MICRO_USD)

    def to_json(self) -> dict[str, Any]:
        """The row as a JSON-ready dict (ids, parent id, times, tokens, cost, attributes, events)."""
        a = self.span.attributes
        micro = self.cost_micro_usd
        return {
            "trace_id": self.span.trace_id,
            "span_id": self.span.span_id,
            "parent_span_id": self.span.parent_span_id,
            "name": self.span.name,
            "kind": self.kind,
            "depth": self.depth,
            "node": a.get(attr.AGENT_NAME),
            "start": datetime.fromtimestamp(self.span.start_ns / 1e9, UTC).isoformat(),
            "offset_ms": round(self.offset_ms, 3),
            "duration_ms": round(self.duration_ms, 3),
            "status": self.span.status,
            "input_tokens": self.input_tokens,
            "output_tokens": self.output_tokens,
            "cache_read_tokens": self.number(attr.CACHE_READ_TOKENS),
            "cost_micro_usd": micro,
            "cost_usd": None if micro is None else usd(micro),
            "model": a.get(attr.RESPONSE_MODEL),
            "tier": a.get(attr.TIER),
            "cache_hit": a.get(attr.CACHE_HIT),
            "attributes": dict(a),
            "events": [dict(e) for e in self.span.events],
        }


@dataclass(frozen=True)
class TraceTotals:
    """A thread's totals, over its model-call spans.

    Attributes:
        input_tokens: Input tokens (tokens).
        output_tokens: Output tokens (tokens).
        cache_read_tokens: Input tokens served from the provider's cache (tokens).
        cost_micro_usd: Cost (integer micro-USD).
        calls: Model calls and local steps (chat spans' ``budgetgraph.calls``).
        tool_calls: Tool calls run (tool spans).
        runs: Run spans (one per process that worked on the thread).
        spans: Spans.
        duration_ms: From the first span's start to the last span's end (ms).
    """

    input_tokens: int
    output_tokens: int
    cache_read_tokens: int
    cost_micro_usd: int
    calls: int
    tool_calls: int
    runs: int
    spans: int
    duration_ms: float

    def to_json(self) -> dict[str, Any]:
        """The totals as a JSON-ready dict, ``cost_usd`` included."""
        return {
            "input_tokens": self.input_tokens,
            "output_tokens": self.output_tokens,
            "cache_read_tokens": self.cache_read_tokens,
            "cost_usd": usd(self.cost_micro_usd),
            "cost_micro_usd": self.cost_micro_usd,
            "calls": self.calls,
            "tool_calls": self.tool_calls,
            "runs": self.runs,
            "spans": self.spans,
            "duration_ms": round(self.duration_ms, 3),
        }


@dataclass(frozen=True)
class TraceView:
    """A thread's spans in tree order, and totals.

    Attributes:
        thread_id: The thread.
        trace_ids: Its traces (one, unless runs were made without the store's help).
        rows: The spans, parents before children, siblings by start time.
        totals: The totals.
    """

    thread_id: str
    trace_ids: list[str]
    rows: list[SpanRow]
    totals: TraceTotals

    def to_json(self) -> dict[str, Any]:
        """``thread_id``, ``trace_ids``, ``spans`` (with parent ids) and ``totals``."""
        return {
            "thread_id": self.thread_id,
            "trace_ids": self.trace_ids,
            "spans": [row.to_json() for row in self.rows],
            "totals": self.totals.to_json(),
        }


def usd(micro_usd: int) -> float:
    """Integer micro-dollars as a number of USD (converted exactly, then to a float once)."""
    return float(Decimal(micro_usd) / 1_000_000)


def kind_of(span: StoredSpan) -> SpanKindName:
    """The span's kind, from ``budgetgraph.step`` or else ``gen_ai.operation.name``."""
    step = span.attributes.get(attr.STEP)
    if step is not None:
        return "call" if step == attr.STEP_CALL else "step"
    return _KINDS.get(str(span.attributes.get(attr.OPERATION, "")), "other")


def build_view(thread_id: str, spans: Sequence[StoredSpan]) -> TraceView:
    """Arrange ``spans`` as a tree and sum them.

    A span whose parent is not among ``spans`` (a root, or a child of a span
    that was never stored) is shown as a root.
    """
    by_id = {s.span_id: s for s in spans}
    children: dict[str | None, list[StoredSpan]] = defaultdict(list)
    for s in spans:
        parent = s.parent_span_id if s.parent_span_id in by_id else None
        children[parent].append(s)
    for siblings in children.values():
        siblings.sort(key=lambda s: (s.start_ns, s.end_ns))
    start = min((s.start_ns for s in spans), default=0)
    end = max((s.end_ns for s in spans), default=0)
    rows: list[SpanRow] = []

    def visit(span: StoredSpan, depth: int) -> None:
        rows.append(
            SpanRow(
                span=span,
                depth=depth,
                kind=kind_of(span),
                offset_ms=(span.start_ns - start) / 1e6,
                duration_ms=span.duration_ns / 1e6,
            )
        )
        for child in children.get(span.span_id, []):
            visit(child, depth + 1)

    for root in children.get(None, []):
        visit(root, 0)
    chats = [r for r in rows if r.kind == "chat"]
    calls = [r for r in rows if r.kind == "call"] or chats

    def total(key: str, over: Sequence[SpanRow] = calls) -> int:
        return sum(r.number(key) or 0 for r in over)

    totals = TraceTotals(
        input_tokens=sum(r.input_tokens or 0 for r in calls),
        output_tokens=sum(r.output_tokens or 0 for r in calls),
        cache_read_tokens=total(attr.CACHE_READ_TOKENS, chats),
        cost_micro_usd=total(attr.COST_MICRO_USD),
        calls=sum(r.number(attr.CALLS) or 1 for r in calls),
        tool_calls=sum(1 for r in rows if r.kind == "tool"),
        runs=sum(1 for r in rows if r.kind == "run"),
        spans=len(rows),
        duration_ms=(end - start) / 1e6,
    )
    trace_ids = list(dict.fromkeys(s.trace_id for s in sorted(spans, key=lambda s: s.start_ns)))
    return TraceView(thread_id=thread_id, trace_ids=trace_ids, rows=rows, totals=totals)
