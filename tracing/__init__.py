"""Telemetry: OpenTelemetry spans and metrics that carry each run's tokens and dollars.

One trace per thread: a run span per invocation of the graph (the graph opens
it itself, see :func:`traced_graph`), a span per node execution, and below
them a span per model call and per tool call, with the OpenTelemetry GenAI semantic
conventions' attributes and the cost of each call (see :mod:`budgetgraph.tracing.runs`
and :mod:`budgetgraph.tracing.spans`). Node and run spans carry the sums of their
children. Spans are exported over OTLP as the standard ``OTEL_*`` variables
say (:mod:`budgetgraph.tracing.setup`) and kept in a local SQLite span store for
``budgetgraph trace`` (:mod:`budgetgraph.tracing.store`, :mod:`budgetgraph.tracing.view`).

A graph built by ``build_graph`` sets telemetry up from the ``OTEL_*``
variables when its first run starts, and exports what is pending at exit;
``OTEL_SDK_DISABLED=true`` turns it all off. Before :func:`configure_telemetry`
the OpenTelemetry API is a no-op (unless the host program installed an SDK
provider), so tracing costs nothing until it is set up. Telemetry never
raises into a run.
"""

from __future__ import annotations

from budgetgraph.tracing.runs import RunSpan, RunSpanHandler, node_span, run_span, traced_graph, traced_node
from budgetgraph.tracing.setup import (
    Telemetry,
    TelemetrySettings,
    configure_telemetry,
    current,
    force_flush,
    get_tracer,
    shutdown_telemetry,
)
from budgetgraph.tracing.spans import (
    BudgetLeft,
    CallSpan,
    ToolSpan,
    model_call_span,
    record_result,
    tool_span,
)

__all__ = [
    "BudgetLeft",
    "CallSpan",
    "RunSpan",
    "RunSpanHandler",
    "Telemetry",
    "TelemetrySettings",
    "ToolSpan",
    "configure_telemetry",
    "current",
    "force_flush",
    "get_tracer",
    "model_call_span",
    "node_span",
    "record_result",
    "run_span",
    "shutdown_telemetry",
    "tool_span",
    "traced_graph",
    "traced_node",
]
