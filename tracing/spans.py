"""Spans of model calls and tool calls, with GenAI semantic-convention attributes.

A model call's span (``chat {gen_ai.request.model}``, kind ``CLIENT``) is
opened by the gateway around one request through the plugin chain; a tool
call's (``execute_tool {gen_ai.tool.name}``, kind ``INTERNAL``) around one tool
run. Both are children of the node span current in the calling thread (see
:mod:`budgetgraph.tracing.runs`).

Attributes of a model call's span:

- ``gen_ai.operation.name`` (``chat``), ``gen_ai.provider.name``,
  ``gen_ai.request.model``, ``gen_ai.response.model``, ``gen_ai.agent.name``
  (the node), ``gen_ai.conversation.id`` (the thread);
- ``gen_ai.usage.input_tokens``, ``.output_tokens``,
  ``.cache_read.input_tokens``, ``.reasoning.output_tokens``: what the server
  reported in ``usage``;
- cost: ``gen_ai.usage.cost.amount`` + ``gen_ai.usage.cost.currency``
  (the open upstream proposal), OpenInference's ``llm.cost.total``, and the
  exact ``budgetgraph.cost_micro_usd``;
- ``budgetgraph.tier`` (and ``.tier.requested``), ``budgetgraph.cache_hit``
  (and on a hit ``budgetgraph.saved_micro_usd``), and the budget left
  (``budgetgraph.budget.{node,task}.remaining_{tokens,usd}``);
- one event per plugin decision, ``budgetgraph.{plugin}.{action}``.

Prompt and completion text (``gen_ai.input.messages``,
``gen_ai.output.messages``) and tool arguments and results are recorded
only with ``OTEL_INSTRUMENTATION_GENAI_CAPTURE_MESSAGE_CONTENT=true``.
Nothing here raises into the run: a telemetry failure is logged.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlparse

from opentelemetry.trace import Span, SpanKind, Status, StatusCode

from budgetgraph.tracing import attributes as attr
from budgetgraph.tracing.setup import capture_content_from_env, current, get_tracer
from budgetgraph.tracing.usage import current_usage, usage_attributes

logger = logging.getLogger(__name__)

DEFAULT_PROVIDER = "openai"
"""``gen_ai.provider.name`` of the tiers: every tier speaks the OpenAI API."""


@dataclass(frozen=True)
class BudgetLeft:
    """What the caps of ``budgets.yaml`` leave after a call; ``None`` where there is no cap.

    Attributes:
        node_tokens: The node's ``max_tokens`` minus its spend (tokens).
        node_micro_usd: The node's ``max_cost_usd`` minus its spend (micro-USD).
        task_tokens: The task's ``max_tokens`` minus its spend (tokens).
        task_micro_usd: The task's ``max_cost_usd`` minus its spend (micro-USD).
    """

    node_tokens: int | None = None
    node_micro_usd: int | None = None
    task_tokens: int | None = None
    task_micro_usd: int | None = None

    def attributes(self) -> dict[str, Any]:
        """``budgetgraph.budget.*`` attributes of the caps there are (USD as numbers)."""
        values: dict[str, Any] = {
            attr.NODE_LEFT_TOKENS: self.node_tokens,
            attr.NODE_LEFT_USD: None if self.node_micro_usd is None else self.node_micro_usd / 1_000_000,
            attr.TASK_LEFT_TOKENS: self.task_tokens,
            attr.TASK_LEFT_USD: None if self.task_micro_usd is None else self.task_micro_usd / 1_000_000,
        }
        return {k: v for k, v in values.items() if v is not None}


class CallSpan:
    """The span of one model call, as :func:`model_call_span` yields it.

    Attributes:
        span: The OpenTelemetry span.
        node: The node making the call.
    """

    def __init__(self, span: Span, node: str) -> None:
        self.span = span
        self.node = node
        self.started = time.perf_counter()
        self.recorded = False
        self.provider: str | None = None
        self.request_model: str | None = None

    def elapsed_s(self) -> float:
        """Seconds since the span started."""
        return time.perf_counter() - self.started


@contextmanager
def model_call_span(
    *, node: str, tier: str, thread_id: str | None, request_model: str | None = None
) -> Iterator[CallSpan]:
    """Open the span of one request through the pipeline, as the current span.

    The span is named ``chat {gen_ai.request.model}``: the model of the tier
    asked for, then the model of the tier that answered once
    :func:`record_result` knows it (the router and the limits may change the
    tier). An exception from the block marks it failed (``error.type``),
    except LangGraph's ``interrupt()``, which marks it ``budgetgraph.interrupted``.

    Args:
        node: The graph node making the call (``gen_ai.agent.name``).
        tier: The tier asked for (``budgetgraph.tier.requested``).
        thread_id: The run's thread (``gen_ai.conversation.id``).
        request_model: The model of the tier asked for, if it has one.

    Yields:
        The call's span, for :func:`record_result`.
    """
    attributes: dict[str, Any] = {
        attr.OPERATION: attr.OP_CHAT,
        attr.AGENT_NAME: node,
        attr.TIER_REQUESTED: tier,
        attr.OI_SPAN_KIND: "LLM",
    }
    if request_model:
        attributes[attr.REQUEST_MODEL] = request_model
    if thread_id:
        attributes[attr.CONVERSATION_ID] = thread_id
    with get_tracer().start_as_current_span(
        f"chat {request_model or node}",
        kind=SpanKind.CLIENT,
        attributes=attributes,
        record_exception=False,
        set_status_on_exception=False,
    ) as span:
        call = CallSpan(span, node)
        call.request_model = request_model
        try:
            yield call
        except BaseException as exc:
            error_type = mark_failed(span, exc)
            if error_type is not None and not call.recorded:
                _record_failure_metric(call, error_type)
            raise


def record_result(
    call_span: CallSpan,
    calls: Sequence[Mapping[str, Any]],
    *,
    provider: str | None = DEFAULT_PROVIDER,
    request_model: str | None = None,
    budget_left: BudgetLeft | None = None,
    server_url: str | None = None,
    messages: Sequence[Any] = (),
    output: Any = None,
) -> None:
    """Put the usage and cost of ``calls`` (spend-table rows) on the call's span.

    Also adds them to the node span's sums and records the metrics.

    Args:
        call_span: What :func:`model_call_span` yielded.
        calls: The ``budgets.request.ModelCall`` rows of the result.
        provider: ``gen_ai.provider.name`` (not set for the local tier).
        request_model: ``gen_ai.request.model``: the model the answering tier names
            (default: the row's model).
        budget_left: What the caps leave after the calls.
        server_url: The model server's base URL, for ``server.address`` and ``server.port``.
        messages: The prompt (LangChain messages), recorded only with content capture on.
        output: The model's message or structured answer, likewise.

    Never raises: a telemetry failure is logged and the run goes on.
    """
    try:
        call_span.recorded = True
        usage = current_usage()
        for call in calls:
            if usage is not None:
                usage.add_call(call)
        span = call_span.span
        if not calls:
            return
        last = calls[-1]
        local = last.get("tier") == "local"
        model = str(last.get("model", ""))
        requested = request_model or model
        provider = None if local else provider
        call_span.provider, call_span.request_model = provider, requested
        telemetry = current()
        if telemetry is not None and telemetry.instruments is not None:
            for call in calls:
                # The model round trip as the chat model timed it, not the plugins around it.
                duration = int(call.get("latency_ms", 0)) / 1000
                telemetry.instruments.record_call(
                    call, provider=provider, request_model=requested, duration_s=duration
                )
        if not span.is_recording():
            return
        span.update_name(f"chat {requested}")
        attributes: dict[str, Any] = {
            attr.REQUEST_MODEL: requested,
            attr.RESPONSE_MODEL: model,
            attr.TIER: str(last.get("tier", "")),
            attr.CACHE_HIT: bool(last.get("cache_hit", False)),
            **usage_attributes(
                input_tokens=sum(int(c.get("input_tokens", 0)) for c in calls),
                output_tokens=sum(int(c.get("output_tokens", 0)) for c in calls),
                cache_read_tokens=sum(int(c.get("cache_read_tokens", 0)) for c in calls),
                reasoning_tokens=sum(int(c.get("reasoning_tokens", 0)) for c in calls),
                cost_micro_usd=sum(int(c.get("cost_micro_usd", 0)) for c in calls),
                calls=len(calls),
                tool_calls=sum(int(c.get("tool_calls", 0)) for c in calls),
            ),
        }
        if provider:
            attributes[attr.PROVIDER] = provider
        if server_url and not local:
            attributes.update(server_attributes(server_url))
        outcome = next((str(c["cache"]) for c in calls if c.get("cache")), "")
        if outcome:
            attributes[attr.CACHE_OUTCOME] = outcome
        saved = sum(int(c.get("saved_micro_usd", 0)) for c in calls)
        if saved:
            attributes[attr.SAVED_MICRO_USD] = saved
        if budget_left is not None:
            attributes.update(budget_left.attributes())
        if _capture_content():
            if messages:
                attributes[attr.INPUT_MESSAGES] = json.dumps(input_messages(messages))
            if output is not None:
                attributes[attr.OUTPUT_MESSAGES] = json.dumps(output_messages(output))
        span.set_attributes(attributes)
        for call in calls:
            for decision in call.get("decisions", ()):
                span.add_event(
                    f"budgetgraph.{decision['plugin']}.{decision['action']}",
                    {
                        "budgetgraph.plugin": str(decision["plugin"]),
                        "budgetgraph.action": str(decision["action"]),
                        "reason": str(decision["reason"]),
                    },
                )
    except Exception:  # telemetry never breaks a run
        logger.debug("Could not record span attributes", exc_info=True)


class ToolSpan:
    """The span of one tool call, as :func:`tool_span` yields it.

    Attributes:
        span: The OpenTelemetry span.
    """

    def __init__(self, span: Span) -> None:
        self.span = span

    def result(self, value: Any) -> None:
        """Note the tool's result (its text only with content capture on)."""
        try:
            if self.span.is_recording() and _capture_content():
                self.span.set_attribute(attr.TOOL_RESULT, str(value))
        except Exception:
            logger.debug("Could not record the tool result", exc_info=True)

    def failed(self, error: BaseException) -> None:
        """Mark the call failed with ``error`` (the model is shown the error and goes on)."""
        mark_failed(self.span, error)


@contextmanager
def tool_span(
    name: str, *, call_id: str | None = None, arguments: Mapping[str, Any] | None = None
) -> Iterator[ToolSpan]:
    """Open the span of one tool call (``execute_tool {name}``), as the current span.

    Args:
        name: The tool (``gen_ai.tool.name``).
        call_id: The model's id for the call (``gen_ai.tool.call.id``).
        arguments: The call's arguments, recorded (``gen_ai.tool.call.arguments``)
            only with content capture on.

    Yields:
        The call's span; report the outcome with :meth:`ToolSpan.result` or
        :meth:`ToolSpan.failed`. An exception from the block marks it failed.
    """
    attributes: dict[str, Any] = {
        attr.OPERATION: attr.OP_EXECUTE_TOOL,
        attr.TOOL_NAME: name,
        attr.TOOL_TYPE: "function",
        attr.OI_SPAN_KIND: "TOOL",
    }
    if call_id:
        attributes[attr.TOOL_CALL_ID] = call_id
    parent = _parent_attributes()
    attributes.update(parent)
    try:
        if arguments is not None and _capture_content():
            attributes[attr.TOOL_ARGUMENTS] = json.dumps(dict(arguments), default=str)
    except Exception:
        logger.debug("Could not record the tool arguments", exc_info=True)
    with get_tracer().start_as_current_span(
        f"execute_tool {name}",
        kind=SpanKind.INTERNAL,
        attributes=attributes,
        record_exception=False,
        set_status_on_exception=False,
    ) as span:
        try:
            yield ToolSpan(span)
        except BaseException as exc:
            mark_failed(span, exc)
            raise


def server_attributes(url: str) -> dict[str, Any]:
    """``server.address`` and ``server.port`` of a base URL (the port the scheme implies if none)."""
    parsed = urlparse(url)
    if not parsed.hostname:
        return {}
    port = parsed.port or (443 if parsed.scheme == "https" else 80)
    return {attr.SERVER_ADDRESS: parsed.hostname, attr.SERVER_PORT: port}


def _parent_attributes() -> dict[str, Any]:
    """The node and thread of the node span current in this thread, for a tool span."""
    from budgetgraph.tracing.runs import current_node

    node = current_node()
    if node is None:
        return {}
    values = {attr.AGENT_NAME: node.node, attr.CONVERSATION_ID: node.thread_id}
    return {k: v for k, v in values.items() if v}


def error_type_of(error: BaseException) -> str:
    """``error.type`` of ``error``: the HTTP status of a provider error, else the class name."""
    status = getattr(error, "status_code", None)
    if isinstance(status, int):
        return str(status)
    return type(error).__qualname__


def is_interrupt(error: BaseException) -> bool:
    """Whether ``error`` is LangGraph's control flow (``interrupt()``, ``Command`` to a parent)."""
    try:
        from langgraph.errors import GraphBubbleUp
    except ImportError:  # pragma: no cover - langgraph is a dependency
        return False
    return isinstance(error, GraphBubbleUp)


def mark_failed(span: Span, error: BaseException) -> str | None:
    """Record ``error`` on ``span``: status ERROR, ``error.type`` and an exception event.

    LangGraph's ``interrupt()`` is not a failure: it sets ``budgetgraph.interrupted``.

    Returns:
        The ``error.type`` set, or ``None`` for an interrupt. Never raises.
    """
    try:
        if is_interrupt(error):
            span.set_attribute(attr.INTERRUPTED, True)
            return None
        error_type = error_type_of(error)
        if span.is_recording():
            span.set_attribute(attr.ERROR_TYPE, error_type)
            span.record_exception(error)
            span.set_status(Status(StatusCode.ERROR, f"{type(error).__name__}: {error}"[:500]))
        return error_type
    except Exception:
        logger.debug("Could not record the error on the span", exc_info=True)
        return None


def _record_failure_metric(call: CallSpan, error_type: str) -> None:
    try:
        telemetry = current()
        if telemetry is not None and telemetry.instruments is not None:
            telemetry.instruments.record_failure(
                provider=call.provider or DEFAULT_PROVIDER,
                request_model=call.request_model,
                duration_s=call.elapsed_s(),
                error_type=error_type,
            )
    except Exception:
        logger.debug("Could not record the failure metric", exc_info=True)


def _capture_content() -> bool:
    telemetry = current()
    if telemetry is not None:
        return telemetry.capture_content
    return capture_content_from_env()


_ROLES = {"human": "user", "ai": "assistant", "system": "system", "tool": "tool"}


def input_messages(messages: Sequence[Any]) -> list[dict[str, Any]]:
    """LangChain messages in the GenAI ``gen_ai.input.messages`` shape (role and parts)."""
    return [_message(m) for m in messages]


def output_messages(output: Any) -> list[dict[str, Any]]:
    """The model's message, or a structured answer, in the ``gen_ai.output.messages`` shape."""
    if hasattr(output, "type") and hasattr(output, "text"):
        message = _message(output)
        finish = (getattr(output, "response_metadata", None) or {}).get("finish_reason")
        message["finish_reason"] = str(
            finish or ("tool_call" if getattr(output, "tool_calls", None) else "stop")
        )
        return [message]
    if hasattr(output, "model_dump_json"):
        text = output.model_dump_json()
    else:
        text = str(output)
    return [{"role": "assistant", "parts": [{"type": "text", "content": text}], "finish_reason": "stop"}]


def _message(message: Any) -> dict[str, Any]:
    kind = str(getattr(message, "type", "user"))
    role = _ROLES.get(kind, kind)
    parts: list[dict[str, Any]] = []
    if kind == "tool":
        parts.append(
            {
                "type": "tool_call_response",
                "id": getattr(message, "tool_call_id", None),
                "result": getattr(message, "text", str(message)),
            }
        )
    else:
        text = getattr(message, "text", None)
        if text:
            parts.append({"type": "text", "content": str(text)})
        for call in getattr(message, "tool_calls", None) or ():
            parts.append(
                {
                    "type": "tool_call",
                    "id": call.get("id"),
                    "name": call.get("name"),
                    "arguments": call.get("args"),
                }
            )
    return {"role": role, "parts": parts}
