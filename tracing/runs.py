"""The span tree of a run: a run span, a span per node execution, the calls below.

::

    invoke_workflow decision            run span, one per invocation of the graph
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

**The graph opens its own run span.** :func:`traced_graph` (which
``build_graph`` applies) binds a :class:`RunSpanHandler` to the compiled graph
as a LangChain callback (``graph.with_config(callbacks=[...])``; the LangGraph
server keeps a graph's config when it copies the graph for a run). When an
invocation of the graph starts (``invoke``, ``stream``, ``ainvoke``,
``astream``, ``astream_events``; from Python, the CLI, ``langgraph dev`` or
the LangGraph server) the handler opens the run span under the caller's
current span, if any, and registers it under the thread id; when the
invocation ends it notes the status (``done``; ``paused`` when LangGraph
reports an interrupt, the review's question; ``failed`` on an error, or when
the caller stops reading a stream) and ends it. Where a run span is already
open for the thread (:func:`run_span`, which the CLI puts around
``graph.invoke`` to note the report's status), the handler leaves it be.
LangGraph's server runs the graph on its event loop: the store look-up and
the first set-up happen in a helper thread then (a blocking call on the loop
is an error under ``langgraph dev``).

**Context crosses into LangGraph's worker threads explicitly.** Nodes run in
LangGraph's executor threads (parallel branches at once). The node wrapper of
:func:`traced_node` looks the run up by the thread id LangGraph gives the
node (``runtime.execution_info.thread_id``, else ``config``), starts the node
span with the run span as its explicit parent, and attaches the node span
(and its usage accumulator) as the current context *in the worker thread*,
for the model and tool calls the node makes synchronously. Nothing relies on
a context variable being copied into the executor.

**A resumed run joins the original trace.** Each invocation is a run span of
its own: a run paused for review and its resume are two. The first run span
of a thread is noted in the local span store (``threads`` table). A later run
of the thread (a resume, an edit, in another process, hours later) starts its
run span as a child of that first run span: same trace id, so Jaeger shows
the whole thread as one trace with one root, each invocation under its own
run span (``budgetgraph.run.resumed`` = true). Each run span sums its own
nodes; the thread's total is the sum over its run spans (what ``budgetgraph
trace`` shows). Without the store (``BUDGETGRAPH_TRACE_STORE=off``) a resumed
run starts a new trace, with a span link (``budgetgraph.link`` =
``previous_run``) to the thread's previous run span when this process ran it.

Nodes wrapped by :func:`traced_node` in a graph without a run span (one not
built by :func:`traced_graph`) take as parent the current span if there is
one (a host's own instrumentation), else the thread's first run span from the
store. Failing both, the node span is a root span in the thread's own trace,
whose id is derived from the thread id (the first 16 bytes of SHA-256 of
``budgetgraph:THREAD``), so that the nodes of a thread land in one trace,
across processes, with no store; it has no run span above the nodes, though.
"""

from __future__ import annotations

import asyncio
import functools
import hashlib
import inspect
import logging
import threading
import time
import weakref
from collections import OrderedDict
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, TypeVar, cast
from uuid import UUID

from langgraph.callbacks import GraphCallbackHandler, GraphInterruptEvent
from opentelemetry import context as otel_context
from opentelemetry import trace
from opentelemetry.context import Context
from opentelemetry.trace import Link, NonRecordingSpan, Span, SpanContext, SpanKind, TraceFlags

from budgetgraph.tracing import attributes as attr
from budgetgraph.tracing.setup import PINNED_TRACE_ID, configure_telemetry, current, get_tracer
from budgetgraph.tracing.spans import is_interrupt, mark_failed
from budgetgraph.tracing.usage import USAGE_KEY, Usage

if TYPE_CHECKING:
    from langgraph.pregel import Pregel

logger = logging.getLogger(__name__)

DEFAULT_WORKFLOW = "decision"
"""``gen_ai.workflow.name`` of the run span: the compiled graph's name."""

REMEMBERED_RUNS = 4096
"""Threads whose last run span a process keeps without the store, to link a resume to it."""

F = TypeVar("F", bound=Callable[..., Any])
G = TypeVar("G", bound="Pregel[Any, Any, Any, Any]")
T = TypeVar("T")

_NODE_KEY = otel_context.create_key("budgetgraph.node")


@dataclass
class RunSpan:
    """The span of one run (one invocation of the graph on a thread).

    Opened by :func:`run_span` or by a graph's :class:`RunSpanHandler`.

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
_last_runs: weakref.WeakKeyDictionary[object, OrderedDict[str, SpanContext]] = weakref.WeakKeyDictionary()
"""Per telemetry set-up, the last run span of each thread (at most :data:`REMEMBERED_RUNS`)."""


class _Unconfigured:
    """The key of :data:`_last_runs` before any set-up (spans go to a host's own SDK provider)."""


_UNCONFIGURED = _Unconfigured()


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

    Wrap ``graph.invoke`` (or ``stream``, ``ainvoke`` ...) with it to note the
    run's status yourself, as the CLI does; a graph built by :func:`traced_graph`
    opens its run span itself otherwise. The first run of a thread starts a
    trace (under the current span, if any) and notes it in the local span
    store; a later run of the thread joins that trace (see the module
    docstring). The span is current in the calling thread for the block.

    Args:
        thread_id: The run's thread (``gen_ai.conversation.id``).
        workflow: ``gen_ai.workflow.name``, the graph's name.

    Yields:
        The run's span; call :meth:`RunSpan.finish` with the run's status.
        An exception from the block marks it failed.
    """
    run = _start_run(thread_id, workflow, otel_context.get_current())
    previous = _register(run)
    token = otel_context.attach(run.context)
    try:
        yield run
    except BaseException as exc:
        if not run.finished:  # the caller's own outcome stands (e.g. a CLI exit after it)
            mark_failed(run.span, exc)
        raise
    finally:
        otel_context.detach(token)
        _unregister(run, previous)
        _end_run(run)


class RunSpanHandler(GraphCallbackHandler):
    """Opens a run span when an invocation of the graph starts and ends it when it ends.

    A LangChain callback handler for a compiled graph's config (see
    :func:`traced_graph`), so that the graph traces its runs wherever it
    runs. It acts on the graph's own start (a chain start with no parent, or
    whose metadata names no LangGraph node) and ignores the rest: nodes,
    model calls, subgraphs. Telemetry never raises into the run.

    Args:
        workflow: ``gen_ai.workflow.name``, the graph's name.
        configure: Call :func:`~budgetgraph.tracing.setup.configure_telemetry`
            (idempotent; ``OTEL_SDK_DISABLED=true`` turns it off) when a run starts.
    """

    run_inline = True  # in the invoking thread or event loop, before any node starts
    ignore_llm = True
    ignore_chat_model = True
    ignore_retry = True
    ignore_agent = True
    ignore_retriever = True
    ignore_custom_event = True

    def __init__(self, workflow: str = DEFAULT_WORKFLOW, *, configure: bool = False) -> None:
        self.workflow = workflow
        self.configure = configure
        self._open: dict[UUID, RunSpan] = {}
        self._paused: set[UUID] = set()
        self._lock = threading.Lock()

    def on_chain_start(
        self,
        serialized: dict[str, Any] | None,
        inputs: Any,
        *,
        run_id: UUID,
        parent_run_id: UUID | None = None,
        metadata: dict[str, Any] | None = None,
        **kwargs: Any,
    ) -> None:
        """Open the run span when ``run_id`` is an invocation of the graph itself."""
        metadata = metadata or {}
        if parent_run_id is not None and "langgraph_node" in metadata:
            return  # a node, or a chain inside one
        try:
            thread = metadata.get("thread_id")
            thread_id = str(thread) if thread not in (None, "") else None
            if active_run(thread_id) is not None:  # the caller's run_span (the CLI's)
                return
            parent = otel_context.get_current()  # the caller's span, e.g. a server's request
            run = _off_loop(lambda: self._start(thread_id, parent))
            _register(run)
            with self._lock:
                self._open[run_id] = run
        except Exception:  # telemetry never breaks a run
            logger.debug("Could not open the run span", exc_info=True)

    def _start(self, thread_id: str | None, parent: Context) -> RunSpan:
        if self.configure:
            configure_telemetry()
        return _start_run(thread_id, self.workflow, parent)

    def on_interrupt(self, event: GraphInterruptEvent) -> None:
        """Note that the run paused (``interrupt()`` or a static breakpoint)."""
        if event.run_id is not None and not event.checkpoint_ns:
            with self._lock:
                if event.run_id in self._open:
                    self._paused.add(event.run_id)

    def on_chain_end(self, outputs: Any, *, run_id: UUID, **kwargs: Any) -> None:
        """End the run span of ``run_id``, done or paused."""
        run, paused = self._pop(run_id)
        if run is not None:
            self._end(run, "paused" if paused else "done")

    def on_chain_error(self, error: BaseException, *, run_id: UUID, **kwargs: Any) -> None:
        """End the run span of ``run_id``, failed (or paused, for LangGraph's own interrupt)."""
        run, paused = self._pop(run_id)
        if run is not None:
            self._end(run, "paused" if paused or is_interrupt(error) else "failed", error)

    def _pop(self, run_id: UUID) -> tuple[RunSpan | None, bool]:
        with self._lock:
            paused = run_id in self._paused
            self._paused.discard(run_id)
            return self._open.pop(run_id, None), paused

    @staticmethod
    def _end(run: RunSpan, status: str, error: BaseException | None = None) -> None:
        try:
            run.finish(status, error)
            _unregister(run, None)
            _off_loop(lambda: _end_run(run))
        except Exception:
            logger.debug("Could not end the run span", exc_info=True)


def traced_graph(graph: G, *, configure: bool = False) -> G:
    """Make every invocation of ``graph`` a run span, with its node spans below.

    Binds a :class:`RunSpanHandler` to the graph's config; the graph's nodes
    should be wrapped by :func:`traced_node` for node spans.

    Args:
        graph: A compiled graph.
        configure: Set telemetry up from the ``OTEL_*`` variables when a run starts
            (see :class:`RunSpanHandler`).

    Returns:
        A copy of ``graph`` (same class and name) with the handler among its callbacks.
    """
    handler = RunSpanHandler(graph.name or DEFAULT_WORKFLOW, configure=configure)
    return graph.with_config(callbacks=[handler])


def _start_run(thread_id: str | None, workflow: str, caller: Context) -> RunSpan:
    """Start a run span (not yet registered); ``caller`` is the caller's context."""
    telemetry = current()
    store = telemetry.store if telemetry is not None else None
    root = None
    if store is not None and thread_id:
        try:
            root = store.thread_root(thread_id)
        except Exception:
            logger.debug("Could not read the thread's first run span", exc_info=True)
    previous: SpanContext | None = None
    if store is None and thread_id:
        with _runs_lock:
            last = _last_runs.get(telemetry or _UNCONFIGURED)
            previous = last.get(thread_id) if last is not None else None
    attributes: dict[str, Any] = {
        attr.OPERATION: attr.OP_INVOKE_WORKFLOW,
        attr.WORKFLOW_NAME: workflow,
        attr.OI_SPAN_KIND: "CHAIN",
        attr.RUN_RESUMED: root is not None or previous is not None,
    }
    if thread_id:
        attributes[attr.CONVERSATION_ID] = thread_id
    links: list[Link] = []
    if root is not None:
        first = SpanContext(
            root.trace_id, root.span_id, is_remote=True, trace_flags=TraceFlags(root.trace_flags)
        )
        parent = trace.set_span_in_context(NonRecordingSpan(first), Context())
        calling = trace.get_current_span(caller).get_span_context()
        if calling.is_valid:  # the caller's own span, e.g. a web request: keep the relation
            links.append(Link(calling, {"budgetgraph.link": "caller"}))
    else:
        parent = caller
        if previous is not None:  # no store: a new trace, linked to the thread's last run
            links.append(Link(previous, {"budgetgraph.link": "previous_run"}))
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
    if store is None and thread_id and ctx.is_valid:
        with _runs_lock:
            last = _last_runs.setdefault(telemetry or _UNCONFIGURED, OrderedDict())
            last[thread_id] = ctx
            last.move_to_end(thread_id)
            while len(last) > REMEMBERED_RUNS:
                last.popitem(last=False)
    return RunSpan(
        span=span,
        thread_id=thread_id,
        usage=Usage(),
        resumed=root is not None or previous is not None,
        context=trace.set_span_in_context(span, parent),
    )


def _register(run: RunSpan) -> RunSpan | None:
    """Make ``run`` the open run of its thread; return the one it replaces."""
    with _runs_lock:
        previous = _runs.get(run.thread_id or "")
        _runs[run.thread_id or ""] = run
        return previous


def _unregister(run: RunSpan, previous: RunSpan | None) -> None:
    """Put ``previous`` back as its thread's open run, if ``run`` still is."""
    key = run.thread_id or ""
    with _runs_lock:
        if _runs.get(key) is run:
            if previous is None:
                del _runs[key]
            else:
                _runs[key] = previous


def _end_run(run: RunSpan) -> None:
    """Set the run's sums and end its span."""
    try:
        run.span.set_attributes(run.usage.attributes())
    except Exception:
        logger.debug("Could not set the run's sums", exc_info=True)
    run.span.end()


def _off_loop(work: Callable[[], T]) -> T:
    """``work()``, in a helper thread when this thread runs an event loop.

    The store's SQLite calls and the first telemetry set-up would block the
    loop (``langgraph dev`` refuses blocking calls on it). The loop waits for
    them all the same, as the run must not start before its span: about a
    millisecond per run, and the set-up's imports once per process.
    """
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        return work()
    box: list[Any] = []

    def target() -> None:
        try:
            box.append((True, work()))
        except BaseException as exc:
            box.append((False, exc))

    helper = threading.Thread(target=target, name="budgetgraph-run-span", daemon=True)
    helper.start()
    helper.join()
    ok, value = box[0]
    if not ok:
        raise value
    return cast(T, value)


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
            before each execution, where nothing else sets telemetry up (the
            graph's :class:`RunSpanHandler` does so before its first node).

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
