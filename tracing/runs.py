"""The span tree of a run: a run span, a span per node execution, the calls below.

::

    invoke_workflow decision            run span, one per process working on the thread
    ├── invoke_agent planner            node span, per node execution
    │   └── chat gpt-4.1-mini           model call (tracing.spans)
    ├── invoke_agent cto                parallel branches: sibling node spans
    │   ├── chat gpt-4.1-mini
    │   ├── execute_tool calculate      tool call (tracing.spans)
    │   └── chat gpt-4.1-mini
    ├── invoke_agent coo
    ├── invoke_agent reconcile
    └── invoke_agent review

Names and attributes follow the GenAI agent-span conventions: the graph,
which coordinates several agents, is a workflow (``invoke_workflow
{gen_ai.workflow.name}``, kind ``INTERNAL``); each node is an in-process agent
(``invoke_agent {gen_ai.agent.name}``, kind ``INTERNAL``). Every span carries
``gen_ai.conversation.id`` = the thread id. Node spans carry the sums of
their model calls (tokens and exact micro-dollars) and run spans the sums of
their node spans, so the node costs of a run add up to its run span's cost.

**Context crosses into LangGraph's worker threads explicitly.** Nodes run in
LangGraph's executor threads (parallel branches at once). :func:`run_span`
registers the run under its thread id; the node wrapper of
:func:`traced_node` looks the run up by the thread id LangGraph gives the
node (``runtime.execution_info.thread_id``, else ``config``), starts the node
span with the run span as its explicit parent, and attaches the node span
(and its usage accumulator) as the current context *in the worker thread*,
for the model and tool calls the node makes synchronously. Nothing relies on
a context variable being copied into the executor.

**A resumed run joins the original trace.** The first run span of a thread is
noted in the local span store (``threads`` table). A later run of the thread
(``budgetgraph resume``, ``edit``, in another process, hours later) starts its
run span as a child of that first run span: same trace id, so Jaeger shows
the whole thread as one trace, each process's part under its own run span
(``budgetgraph.run.resumed`` = true). Each run span sums its own nodes; the
thread's total is the sum over its run spans (what ``budgetgraph trace``
shows). Without the store (``BUDGETGRAPH_TRACE_STORE=none``) a resumed run
starts a new trace.

Without a run span (the graph served by ``langgraph dev`` or the LangGraph
server, which run the graph themselves), a node span's parent is the current
span if there is one (a host's own instrumentation), else the thread's first
run span from the store. Failing both, the node span is a root span in the
thread's own trace, whose id is derived from the thread id (the first 16
bytes of SHA-256 of ``budgetgraph:THREAD``), so that every node of every run
of a served thread lands in one trace, across server processes, with no
store; it has no run span above the nodes, though.
"""

from __future__ import annotations

import functools
import hashlib
import inspect
import logging
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any, TypeVar, cast

from opentelemetry import context as otel_context
from opentelemetry import trace
from opentelemetry.context import Context
from opentelemetry.trace import Link, NonRecordingSpan, Span, SpanContext, SpanKind, TraceFlags

from budgetgraph.tracing import attributes as attr
from budgetgraph.tracing.setup import PINNED_TRACE_ID, configure_telemetry, current, get_tracer
from budgetgraph.tracing.spans import mark_failed
from budgetgraph.tracing.usage import USAGE_KEY, Usage

logger = logging.getLogger(__name__)

DEFAULT_WORKFLOW = "decision"
"""``gen_ai.workflow.name`` of the run span: the compiled graph's name."""

F = TypeVar("F", bound=Callable[..., Any])

_NODE_KEY = otel_context.create_key("budgetgraph.node")


@dataclass
class RunSpan:
    """The span of one run (one process's part of a thread), as :func:`run_span` yields it.

    Attributes:
        span: The OpenTelemetry span.
        thread_id: The run's thread.
        usage: The sums of the run's node spans.
        resumed: True when the run continues a thread that already had a run span.
        context: The context that node spans take as their parent.
        finished: True once :meth:`finish` noted the outcome.
    """

    span: Span
    thread_id: str | None
    usage: Usage
    resumed: bool
    context: Context = field(repr=False)
    finished: bool = False

    @property
    def trace_id(self) -> str:
        """The trace id, 32 hex digits."""
        return f"{self.span.get_span_context().trace_id:032x}"

    def finish(self, status: str, error: BaseException | None = None) -> None:
        """Note how the run stopped (``done``, ``paused``, ``failed``) and its error, if any."""
        try:
            self.finished = True
            self.span.set_attribute(attr.RUN_STATUS, status)
            if error is not None:
                mark_failed(self.span, error)
        except Exception:
            logger.debug("Could not note the run's outcome", exc_info=True)


@dataclass(frozen=True)
class NodeSpan:
    """The node span current in a worker thread.

    Attributes:
        node: The node's name.
        thread_id: The run's thread.
        usage: The sums of the node's model calls.
    """

    node: str
    thread_id: str | None
    usage: Usage


_runs: dict[str, RunSpan] = {}
_runs_lock = threading.Lock()


def active_run(thread_id: str | None) -> RunSpan | None:
    """The run span open for ``thread_id`` in this process, if any."""
    with _runs_lock:
        return _runs.get(thread_id or "")


def current_node() -> NodeSpan | None:
    """The node span attached in this thread by a :func:`traced_node` wrapper, if any."""
    value = otel_context.get_value(_NODE_KEY)
    return value if isinstance(value, NodeSpan) else None


@contextmanager
def run_span(thread_id: str | None, *, workflow: str = DEFAULT_WORKFLOW) -> Iterator[RunSpan]:
    """Open the span of a run on ``thread_id``; nodes of the thread run below it.

    Wrap ``graph.invoke`` (or ``stream``, ``ainvoke`` ...) with it. The first
    run of a thread starts a trace (under the current span, if any) and notes
    it in the local span store; a later run of the thread joins that trace
    (see the module docstring). The span is current in the calling thread for
    the block.

    Args:
        thread_id: The run's thread (``gen_ai.conversation.id``).
        workflow: ``gen_ai.workflow.name``, the graph's name.

    Yields:
        The run's span; call :meth:`RunSpan.finish` with the run's status.
        An exception from the block marks it failed.
    """
    telemetry = current()
    store = telemetry.store if telemetry is not None else None
    root = None
    if store is not None and thread_id:
        try:
            root = store.thread_root(thread_id)
        except Exception:
            logger.debug("Could not read the thread's first run span", exc_info=True)
    attributes: dict[str, Any] = {
        attr.OPERATION: attr.OP_INVOKE_WORKFLOW,
        attr.WORKFLOW_NAME: workflow,
        attr.OI_SPAN_KIND: "CHAIN",
        attr.RUN_RESUMED: root is not None,
    }
    if thread_id:
        attributes[attr.CONVERSATION_ID] = thread_id
    links: list[Link] = []
    if root is not None:
        first = SpanContext(
            root.trace_id, root.span_id, is_remote=True, trace_flags=TraceFlags(root.trace_flags)
        )
        parent = trace.set_span_in_context(NonRecordingSpan(first), Context())
        caller = trace.get_current_span().get_span_context()
        if caller.is_valid:  # the caller's own span, e.g. a web request: keep the relation
            links.append(Link(caller, {"budgetgraph.link": "caller"}))
    else:
        parent = otel_context.get_current()
    span = get_tracer().start_span(
        f"{attr.OP_INVOKE_WORKFLOW} {workflow}",
        context=parent,
        kind=SpanKind.INTERNAL,
        attributes=attributes,
        links=links,
    )
    ctx = span.get_span_context()
    if root is None and store is not None and thread_id and ctx.is_valid:
        try:
            store.remember_root(thread_id, ctx.trace_id, ctx.span_id, int(ctx.trace_flags), time.time_ns())
        except Exception:
            logger.debug("Could not note the thread's first run span", exc_info=True)
    run = RunSpan(
        span=span,
        thread_id=thread_id,
        usage=Usage(),
        resumed=root is not None,
        context=trace.set_span_in_context(span, parent),
    )
    key = thread_id or ""
    with _runs_lock:
        previous = _runs.get(key)
        _runs[key] = run
    token = otel_context.attach(run.context)
    try:
        yield run
    except BaseException as exc:
        if not run.finished:  # the caller's own outcome stands (e.g. a CLI exit after it)
            mark_failed(span, exc)
        raise
    finally:
        otel_context.detach(token)
        with _runs_lock:
            if previous is None:
                _runs.pop(key, None)
            else:
                _runs[key] = previous
        try:
            span.set_attributes(run.usage.attributes())
        except Exception:
            logger.debug("Could not set the run's sums", exc_info=True)
        span.end()


def traced_node(node: str, fn: F, *, configure: bool = False) -> F:
    """Wrap a LangGraph node function so that each execution is a node span.

    The wrapper keeps ``fn``'s signature (``functools.wraps``), so LangGraph
    still injects ``runtime``, ``config`` and the rest, and still infers the
    node's input schema from its type hints. Async node functions get an
    async wrapper.

    Args:
        node: The node's name (``gen_ai.agent.name``).
        fn: The node function.
        configure: Call :func:`~budgetgraph.tracing.setup.configure_telemetry` (idempotent)
            before each execution: for a graph served by ``langgraph dev``,
            where no CLI sets telemetry up.

    Returns:
        The wrapper.
    """
    if inspect.iscoroutinefunction(fn):

        @functools.wraps(fn)
        async def async_wrapper(*args: Any, **kwargs: Any) -> Any:
            if configure:
                configure_telemetry()
            with node_span(node, _thread_of(kwargs)):
                return await fn(*args, **kwargs)

        return cast(F, async_wrapper)

    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        if configure:
            configure_telemetry()
        with node_span(node, _thread_of(kwargs)):
            return fn(*args, **kwargs)

    return cast(F, wrapper)


@contextmanager
def node_span(node: str, thread_id: str | None) -> Iterator[NodeSpan]:
    """Open the span of one execution of ``node`` and make it current in this thread.

    Its parent is the run span registered for ``thread_id`` (see the module
    docstring for the fallbacks). Model and tool calls made in the block, in
    this thread, become its children and add to its sums; at the end its sums
    are added to the run span's.

    Args:
        node: The node's name.
        thread_id: The run's thread.

    Yields:
        The node span's record.
    """
    run = active_run(thread_id)
    parent, pinned = _node_parent(run, thread_id)
    attributes: dict[str, Any] = {
        attr.OPERATION: attr.OP_INVOKE_AGENT,
        attr.AGENT_NAME: node,
        attr.OI_SPAN_KIND: "AGENT",
    }
    if thread_id:
        attributes[attr.CONVERSATION_ID] = thread_id
    pin = PINNED_TRACE_ID.set(pinned)
    try:
        span = get_tracer().start_span(
            f"{attr.OP_INVOKE_AGENT} {node}", context=parent, kind=SpanKind.INTERNAL, attributes=attributes
        )
    finally:
        PINNED_TRACE_ID.reset(pin)
    record = NodeSpan(node=node, thread_id=thread_id, usage=Usage())
    ctx = trace.set_span_in_context(span, parent)
    ctx = otel_context.set_value(USAGE_KEY, record.usage, ctx)
    ctx = otel_context.set_value(_NODE_KEY, record, ctx)
    token = otel_context.attach(ctx)
    try:
        yield record
    except BaseException as exc:
        mark_failed(span, exc)
        raise
    finally:
        otel_context.detach(token)
        try:
            span.set_attributes(record.usage.attributes())
            if run is not None:
                run.usage.add(record.usage)
        except Exception:
            logger.debug("Could not set the node's sums", exc_info=True)
        span.end()


def _node_parent(run: RunSpan | None, thread_id: str | None) -> tuple[Context, int | None]:
    """The node span's parent context, and the trace id to pin for a root node span."""
    if run is not None:
        return run.context, None
    current_ctx = otel_context.get_current()
    if trace.get_current_span(current_ctx).get_span_context().is_valid:
        return current_ctx, None
    telemetry = current()
    if telemetry is not None and telemetry.store is not None and thread_id:
        try:
            root = telemetry.store.thread_root(thread_id)
        except Exception:
            root = None
        if root is not None:
            first = SpanContext(
                root.trace_id, root.span_id, is_remote=True, trace_flags=TraceFlags(root.trace_flags)
            )
            return trace.set_span_in_context(NonRecordingSpan(first), Context()), None
    return Context(), thread_trace_id(thread_id) if thread_id else None


def thread_trace_id(thread_id: str) -> int:
    """The trace id of a thread's node spans when no run span is open (see the module docstring)."""
    digest = hashlib.sha256(f"budgetgraph:{thread_id}".encode()).digest()
    return int.from_bytes(digest[:16], "big") or 1


def _thread_of(kwargs: dict[str, Any]) -> str | None:
    """The thread id LangGraph passes the node: ``runtime.execution_info``, else ``config``."""
    try:
        runtime = kwargs.get("runtime")
        info = getattr(runtime, "execution_info", None)
        if info is not None and getattr(info, "thread_id", None):
            return str(info.thread_id)
        config = kwargs.get("config")
        if config is None:
            from langgraph.config import get_config

            config = get_config()
        thread = (config.get("configurable") or {}).get("thread_id")
        return str(thread) if thread is not None else None
    except Exception:  # outside a runnable context: no thread
        return None
