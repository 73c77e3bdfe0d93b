"""Spans of model calls, pipeline steps and tool calls, with GenAI semantic-convention attributes.

A node's model call through the gateway is three levels::

    budgetgraph.call cto              INTERNAL: the call through the plugin chain
    ├── budgetgraph.cache.lookup      INTERNAL: embedding and guard as events
    ├── budgetgraph.reserve           INTERNAL: the limits plugin's reservation
    ├── chat gpt-4.1-mini             CLIENT: one request to a model server
    └── budgetgraph.settle            INTERNAL

- :func:`model_call_span` (``budgetgraph.call {node}``, kind ``INTERNAL``,
  ``budgetgraph.step`` = ``call``) is opened by the gateway around the chain.
  It carries the call's spend-table rows summed (exact
  ``budgetgraph.cost_micro_usd``, ``budgetgraph.calls``), the tier asked for and
  the tier that answered, the cache outcome, the budget left, and one event
  per plugin decision (``budgetgraph.{plugin}.{action}``). A cache hit or a
  local step is such a call with no ``chat`` span below it.
- :func:`chat_span` (``chat {gen_ai.request.model}``, kind ``CLIENT``) covers
  exactly one HTTP request to a model server, and its duration is the spend
  row's ``latency_ms``. Its attributes are those of
  ``opentelemetry-instrumentation-openai-v2`` for the same request, attribute
  for attribute (``gen_ai.operation.name``, ``gen_ai.provider.name``,
  ``gen_ai.request.model``, ``.max_tokens``, ``.temperature``,
  ``gen_ai.output.type``, ``gen_ai.response.id``, ``.model``,
  ``.finish_reasons``, ``gen_ai.usage.input_tokens``, ``.output_tokens``,
  ``openai.response.service_tier``, ``.system_fingerprint``,
  ``server.address``, ``server.port``), plus ``gen_ai.agent.name``,
  ``gen_ai.conversation.id`` and the cost: ``gen_ai.usage.cost.amount`` with
  ``gen_ai.usage.cost.currency`` (semantic-conventions-genai PR #443),
  OpenInference's ``llm.cost.total`` and ``llm.token_count.*`` (so Arize Phoenix
  shows it) and the exact ``budgetgraph.cost_micro_usd``. Usage attributes
  (``gen_ai.usage.*``, ``.cache_read.input_tokens``,
  ``.reasoning.output_tokens``) are set only when the server reported them; a
  response without usable usage says ``budgetgraph.usage.source``
  (``estimated`` or ``refused``) and the tokens counted instead.
- :func:`step_span` (``budgetgraph.{step}``, kind ``INTERNAL``) is a pipeline
  step: the cache lookup, the reservation and settlement, the local rules.
  Each has ``budgetgraph.outcome``; the embedding and the guard are events
  of the lookup with their duration (``budgetgraph.duration_ms``).
- :func:`tool_span` (``execute_tool {gen_ai.tool.name}``, kind ``INTERNAL``)
  covers one tool run.

All are children of the node span current in the calling thread (see
:mod:`budgetgraph.tracing.runs`).

The conventions' stability opt-in is followed: with
``OTEL_SEMCONV_STABILITY_OPT_IN=gen_ai_latest_experimental`` only the current
names are emitted; without it the names the conventions renamed in 1.37
(``gen_ai.system``, ``gen_ai.openai.response.*``) are emitted beside them,
for backends that still read those.

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

from opentelemetry import trace
from opentelemetry.trace import Span, SpanKind, Status, StatusCode

from budgetgraph.tracing import attributes as attr
from budgetgraph.tracing.setup import capture_content_from_env, current, genai_semconv_latest, get_tracer
from budgetgraph.tracing.usage import current_usage

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
    """The span of one model call through the plugin chain, as :func:`model_call_span` yields it.

    Attributes:
        span: The OpenTelemetry span.
        node: The node making the call.
    """

    def __init__(self, span: Span, node: str) -> None:
        self.span = span
        self.node = node


@contextmanager
def model_call_span(
    *, node: str, tier: str, thread_id: str | None, request_model: str | None = None
) -> Iterator[CallSpan]:
    """Open the span of one model call through the plugin chain, as the current span.

    The span (``budgetgraph.call {node}``, kind ``INTERNAL``) holds the call's
    pipeline steps and its requests (:func:`chat_span`); a cache hit or a local
    step has no request below it. An exception from the block marks it failed
    (``error.type``), except LangGraph's ``interrupt()``, which marks it
    ``budgetgraph.interrupted``.

    Args:
        node: The graph node making the call (``gen_ai.agent.name``).
        tier: The tier asked for (``budgetgraph.tier.requested``).
        thread_id: The run's thread (``gen_ai.conversation.id``).
        request_model: The model of the tier asked for, if it has one
            (``budgetgraph.model.requested``).

    Yields:
        The call's span, for :func:`record_result`.
    """
    attributes: dict[str, Any] = {
        attr.STEP: attr.STEP_CALL,
        attr.AGENT_NAME: node,
        attr.TIER_REQUESTED: tier,
        attr.OI_SPAN_KIND: "CHAIN",
    }
    if request_model:
        attributes[attr.MODEL_REQUESTED] = request_model
    if thread_id:
        attributes[attr.CONVERSATION_ID] = thread_id
    with get_tracer().start_as_current_span(
        f"budgetgraph.call {node}",
        kind=SpanKind.INTERNAL,
        attributes=attributes,
        record_exception=False,
        set_status_on_exception=False,
    ) as span:
        call = CallSpan(span, node)
        try:
            yield call
        except BaseException as exc:
            mark_failed(span, exc)
            raise


def record_result(
    call_span: CallSpan,
    calls: Sequence[Mapping[str, Any]],
    *,
    provider: str | None = DEFAULT_PROVIDER,
    request_model: str | None = None,
    budget_left: BudgetLeft | None = None,
) -> None:
    """Put the sums of ``calls`` (spend-table rows) and their decisions on the call's span.

    Also adds them to the node span's sums and records the metrics.

    Args:
        call_span: What :func:`model_call_span` yielded.
        calls: The ``budgets.request.ModelCall`` rows of the result.
        provider: ``gen_ai.provider.name`` of the metrics (not set for the local tier).
        request_model: ``gen_ai.request.model`` of the metrics (default: the row's model).
        budget_left: What the caps leave after the calls.

    Never raises: a telemetry failure is logged and the run goes on.
    """
    try:
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
        telemetry = current()
        if telemetry is not None and telemetry.instruments is not None:
            for call in calls:
                # The model round trip as the chat model timed it, not the plugins around it.
                duration = int(call.get("latency_ms", 0)) / 1000
                telemetry.instruments.record_call(
                    call, provider=None if local else provider, request_model=requested, duration_s=duration
                )
        if not span.is_recording():
            return
        attributes: dict[str, Any] = {
            attr.TIER: str(last.get("tier", "")),
            attr.MODEL: model,
            attr.CACHE_HIT: bool(last.get("cache_hit", False)),
            attr.COST_MICRO_USD: sum(int(c.get("cost_micro_usd", 0)) for c in calls),
            attr.CALLS: len(calls),
            attr.TOOL_CALLS: sum(int(c.get("tool_calls", 0)) for c in calls),
            attr.COUNTED_INPUT_TOKENS: sum(int(c.get("input_tokens", 0)) for c in calls),
            attr.COUNTED_OUTPUT_TOKENS: sum(int(c.get("output_tokens", 0)) for c in calls),
        }
        outcome = next((str(c["cache"]) for c in calls if c.get("cache")), "")
        if outcome:
            attributes[attr.CACHE_OUTCOME] = outcome
        saved = sum(int(c.get("saved_micro_usd", 0)) for c in calls)
        if saved:
            attributes[attr.SAVED_MICRO_USD] = saved
        if budget_left is not None:
            attributes.update(budget_left.attributes())
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


@dataclass(frozen=True)
class ChatRequest:
    """What a ``chat`` span knows before the request is sent.

    Attributes:
        node: The graph node (``gen_ai.agent.name``).
        thread_id: The run's thread (``gen_ai.conversation.id``).
        model: The model asked for (``gen_ai.request.model``).
        provider: ``gen_ai.provider.name``.
        server_url: The server's base URL (``server.address``, ``server.port``).
        max_tokens: The completion cap sent (``gen_ai.request.max_tokens``), if any.
        temperature: The temperature sent (``gen_ai.request.temperature``), if any.
        output_type: ``json`` for a structured answer, ``text`` otherwise (``gen_ai.output.type``).
        tier: The tier (``budgetgraph.tier``).
        messages: The prompt (LangChain messages), recorded only with content capture on.
    """

    node: str
    thread_id: str | None
    model: str
    provider: str
    server_url: str | None
    max_tokens: int | None
    temperature: float | None
    output_type: str
    tier: str
    messages: Sequence[Any] = ()


class ChatSpan:
    """The ``chat`` span of one request, as :func:`chat_span` yields it.

    Attributes:
        span: The OpenTelemetry span.
        request: What the request asked for.
    """

    def __init__(self, span: Span, request: ChatRequest) -> None:
        self.span = span
        self.request = request
        self.started = time.perf_counter()
        self.started_ns = time.time_ns()
        self.ended: float | None = None
        self.ended_ns: int | None = None

    def elapsed_ms(self) -> int:
        """Milliseconds from the span's start to :meth:`stop` (or to now), rounded."""
        end = self.ended if self.ended is not None else time.perf_counter()
        return round((end - self.started) * 1000)

    def stop(self, *, at: float | None = None, batch_id: str | None = None) -> int:
        """Note that the response is in (the span ends then); return the request's duration (ms).

        That duration is the spend row's ``latency_ms``: the span and the row agree.

        Args:
            at: When the response came (Unix time, s), for a deferred call whose
                batch answered earlier; default now.
            batch_id: The batch that answered a deferred call (``budgetgraph.batch.id``).
        """
        if at is None:
            self.ended, self.ended_ns = time.perf_counter(), time.time_ns()
        else:
            self.ended_ns = int(at * 1e9)
            self.ended = self.started + (self.ended_ns - self.started_ns) / 1e9
        if batch_id is not None:
            try:
                self.span.set_attribute(attr.BATCH_ID, batch_id)
            except Exception:
                logger.debug("Could not record the batch id", exc_info=True)
        return self.elapsed_ms()

    def answered(self, message: Any, call: Mapping[str, Any]) -> None:
        """Record the response (a LangChain ``AIMessage``) and its spend-table row ``call``.

        Never raises.
        """
        try:
            if not self.span.is_recording():
                return
            self.span.set_attributes(response_attributes(message, call))
            if _capture_content():
                self.span.set_attribute(attr.OUTPUT_MESSAGES, json.dumps(output_messages(message)))
        except Exception:
            logger.debug("Could not record the chat response", exc_info=True)


@contextmanager
def chat_span(request: ChatRequest, *, start_time: float | None = None) -> Iterator[ChatSpan]:
    """Open the ``CLIENT`` span of exactly one request to a model server, as the current span.

    The span ends when :meth:`ChatSpan.stop` notes the response (else when
    the block ends), so that it lasts as long as the request. An exception from the block
    marks the span failed (``error.type``: the HTTP status, or the exception's
    class) and records ``gen_ai.client.operation.duration`` with it.

    Args:
        request: What the request asks for.
        start_time: When the request was made (Unix time, s), for a deferred call
            queued earlier: its span runs from queueing to the batch's answer.

    Yields:
        The span; give it the answer with :meth:`ChatSpan.answered`.
    """
    latest = _latest()
    attributes: dict[str, Any] = {
        attr.OPERATION: attr.OP_CHAT,
        attr.PROVIDER: request.provider,
        attr.REQUEST_MODEL: request.model,
        attr.OUTPUT_TYPE: request.output_type,
        attr.AGENT_NAME: request.node,
        attr.TIER: request.tier,
        attr.OI_SPAN_KIND: "LLM",
        attr.OI_MODEL_NAME: request.model,
    }
    if not latest:
        attributes[attr.SYSTEM_DEPRECATED] = request.provider
    if request.thread_id:
        attributes[attr.CONVERSATION_ID] = request.thread_id
    if request.max_tokens is not None:
        attributes[attr.REQUEST_MAX_TOKENS] = request.max_tokens
    if request.temperature is not None:
        attributes[attr.REQUEST_TEMPERATURE] = request.temperature
    if request.server_url:
        attributes.update(server_attributes(request.server_url))
    try:
        if request.messages and _capture_content():
            attributes[attr.INPUT_MESSAGES] = json.dumps(input_messages(request.messages))
    except Exception:
        logger.debug("Could not record the prompt", exc_info=True)
    with get_tracer().start_as_current_span(
        f"{attr.OP_CHAT} {request.model}",
        kind=SpanKind.CLIENT,
        attributes=attributes,
        record_exception=False,
        set_status_on_exception=False,
        end_on_exit=False,
        start_time=None if start_time is None else int(start_time * 1e9),
    ) as span:
        chat = ChatSpan(span, request)
        if start_time is not None:
            chat.started_ns = int(start_time * 1e9)
            chat.started = time.perf_counter() - (time.time_ns() - chat.started_ns) / 1e9
        try:
            yield chat
        except BaseException as exc:
            if chat.ended_ns is None:  # the request failed now: the span ends before the error is described
                chat.stop()
            error_type = mark_failed(span, exc)
            if error_type is not None:
                _record_failure_metric(request, chat.elapsed_ms() / 1000, error_type)
            raise
        finally:
            span.end(end_time=chat.ended_ns)


def response_attributes(message: Any, call: Mapping[str, Any]) -> dict[str, Any]:
    """The response attributes of a ``chat`` span: openai-v2's, usage only as reported, and cost."""
    latest = _latest()
    metadata: Mapping[str, Any] = getattr(message, "response_metadata", None) or {}
    finish = metadata.get("finish_reason")
    values: dict[str, Any] = {
        attr.RESPONSE_MODEL: str(metadata.get("model_name") or call.get("model", "")),
        attr.RESPONSE_ID: metadata.get("id"),
        attr.RESPONSE_FINISH_REASONS: [str(finish)] if finish else None,
        attr.OPENAI_SERVICE_TIER: metadata.get("service_tier"),
        attr.OPENAI_SYSTEM_FINGERPRINT: metadata.get("system_fingerprint"),
    }
    if not latest:
        values[attr.OPENAI_SERVICE_TIER_DEPRECATED] = values[attr.OPENAI_SERVICE_TIER]
        values[attr.OPENAI_SYSTEM_FINGERPRINT_DEPRECATED] = values[attr.OPENAI_SYSTEM_FINGERPRINT]
    source = call.get("usage")
    usage: Mapping[str, Any] = getattr(message, "usage_metadata", None) or {}
    if source is None and usage:
        values[attr.INPUT_TOKENS] = int(usage.get("input_tokens", 0))
        values[attr.OUTPUT_TOKENS] = int(usage.get("output_tokens", 0))
        values[attr.OI_PROMPT_TOKENS] = values[attr.INPUT_TOKENS]
        values[attr.OI_COMPLETION_TOKENS] = values[attr.OUTPUT_TOKENS]
        values[attr.OI_TOTAL_TOKENS] = values[attr.INPUT_TOKENS] + values[attr.OUTPUT_TOKENS]
        cache_read = (usage.get("input_token_details") or {}).get("cache_read")
        if cache_read is not None:
            values[attr.CACHE_READ_TOKENS] = int(cache_read)
        reasoning = (usage.get("output_token_details") or {}).get("reasoning")
        if reasoning is not None:
            values[attr.REASONING_TOKENS] = int(reasoning)
    else:
        values[attr.USAGE_SOURCE] = str(source or "estimated")
        values[attr.COUNTED_INPUT_TOKENS] = int(call.get("input_tokens", 0))
        values[attr.COUNTED_OUTPUT_TOKENS] = int(call.get("output_tokens", 0))
    micro_usd = int(call.get("cost_micro_usd", 0))
    values.update(
        {
            attr.COST_AMOUNT: micro_usd / 1_000_000,
            attr.COST_CURRENCY: "USD",
            attr.OI_COST_TOTAL: micro_usd / 1_000_000,
            attr.COST_MICRO_USD: micro_usd,
        }
    )
    return {k: v for k, v in values.items() if v is not None}


class StepSpan:
    """A pipeline step's span, as :func:`step_span` yields it.

    Attributes:
        span: The OpenTelemetry span.
    """

    def __init__(self, span: Span) -> None:
        self.span = span

    def outcome(self, outcome: str, **attributes: Any) -> None:
        """Note how the step ended (``budgetgraph.outcome``) and any other attributes. Never raises."""
        try:
            if self.span.is_recording():
                self.span.set_attribute(attr.OUTCOME, outcome)
                self.span.set_attributes({k: v for k, v in attributes.items() if v is not None})
        except Exception:
            logger.debug("Could not record the step's outcome", exc_info=True)


@contextmanager
def step_span(step: str, *, node: str | None = None, **attributes: Any) -> Iterator[StepSpan]:
    """Open the ``INTERNAL`` span of one pipeline step (``budgetgraph.{step}``), as the current span.

    Args:
        step: One of the ``attributes.STEP_*`` values: ``cache.lookup``, ``reserve``,
            ``settle``, ``local`` ...
        node: The node the step works for (``gen_ai.agent.name``).
        **attributes: More attributes (``None`` values are left out).

    Yields:
        The span; note the outcome with :meth:`StepSpan.outcome`. An exception
        from the block marks it failed.
    """
    values: dict[str, Any] = {attr.STEP: step, attr.OI_SPAN_KIND: "CHAIN", attr.AGENT_NAME: node}
    values.update(attributes)
    with get_tracer().start_as_current_span(
        f"budgetgraph.{step}",
        kind=SpanKind.INTERNAL,
        attributes={k: v for k, v in values.items() if v is not None},
        record_exception=False,
        set_status_on_exception=False,
    ) as span:
        try:
            yield StepSpan(span)
        except BaseException as exc:
            mark_failed(span, exc)
            raise


def step_event(step: str, *, duration_ms: float, **attributes: Any) -> None:
    """Add a sub-step that has no span of its own (an embedding, a guard verdict) to the current span.

    The event is ``budgetgraph.{step}`` with ``budgetgraph.duration_ms`` and
    ``attributes`` as ``budgetgraph.{key}`` (``None`` values left out). Never raises.
    """
    try:
        span = trace.get_current_span()
        if span.is_recording():
            values: dict[str, Any] = {attr.DURATION_MS: round(duration_ms, 3)}
            values.update({f"budgetgraph.{k}": v for k, v in attributes.items() if v is not None})
            span.add_event(f"budgetgraph.{step}", values)
    except Exception:
        logger.debug("Could not record the step's event", exc_info=True)


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

    LangGraph's ``interrupt()`` is not a failure, nor a deferred call waiting for its
    batch (an error with ``waits_for_batch``): they set ``budgetgraph.interrupted``.

    Returns:
        The ``error.type`` set, or ``None`` for an interrupt. Never raises.
    """
    try:
        if is_interrupt(error) or getattr(error, "waits_for_batch", False):
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


def _record_failure_metric(request: ChatRequest, duration_s: float, error_type: str) -> None:
    try:
        telemetry = current()
        if telemetry is not None and telemetry.instruments is not None:
            telemetry.instruments.record_failure(
                provider=request.provider,
                request_model=request.model,
                duration_s=duration_s,
                error_type=error_type,
            )
    except Exception:
        logger.debug("Could not record the failure metric", exc_info=True)


def _latest() -> bool:
    """Whether only the latest GenAI conventions are asked for (``setup.genai_semconv_latest``)."""
    telemetry = current()
    if telemetry is not None:
        return telemetry.genai_latest
    return genai_semconv_latest()


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
