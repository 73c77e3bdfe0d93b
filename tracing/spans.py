"""Spans around model calls, with GenAI semantic-convention attributes.

Attribute names: OpenTelemetry GenAI semantic conventions
(``gen_ai.operation.name``, ``gen_ai.request.model``, ``gen_ai.usage.*``,
``gen_ai.agent.name``, ``gen_ai.conversation.id``); cost as
``gen_ai.usage.cost.amount`` / ``gen_ai.usage.cost.currency`` (the open
upstream proposal) and OpenInference's ``llm.cost.total``; budgetgraph's own
under ``budgetgraph.*``.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from typing import Any

from opentelemetry import trace
from opentelemetry.trace import Span, SpanKind

logger = logging.getLogger(__name__)

_tracer = trace.get_tracer("budgetgraph")


@contextmanager
def model_call_span(*, node: str, tier: str, thread_id: str | None) -> Iterator[Span]:
    """Open the span of one request through the pipeline, as the current span.

    Args:
        node: The graph node making the call (``gen_ai.agent.name``).
        tier: The tier asked for.
        thread_id: The run's thread (``gen_ai.conversation.id``).
    """
    attributes: dict[str, Any] = {
        "gen_ai.operation.name": "chat",
        "gen_ai.agent.name": node,
        "budgetgraph.tier.requested": tier,
    }
    if thread_id:
        attributes["gen_ai.conversation.id"] = thread_id
    with _tracer.start_as_current_span(f"chat {node}", kind=SpanKind.CLIENT, attributes=attributes) as span:
        yield span


def record_result(span: Span, calls: Sequence[Mapping[str, Any]]) -> None:
    """Put the usage and cost of ``calls`` (spend-table rows) on ``span``.

    Never raises: a telemetry failure is logged and the run goes on.
    """
    try:
        if not span.is_recording() or not calls:
            return
        last = calls[-1]
        micro = sum(int(c["cost_micro_usd"]) for c in calls)
        span.set_attributes(
            {
                "gen_ai.request.model": str(last["model"]),
                "gen_ai.response.model": str(last["model"]),
                "gen_ai.usage.input_tokens": sum(int(c["input_tokens"]) for c in calls),
                "gen_ai.usage.output_tokens": sum(int(c["output_tokens"]) for c in calls),
                "gen_ai.usage.cache_read.input_tokens": sum(int(c["cache_read_tokens"]) for c in calls),
                "gen_ai.usage.cost.amount": micro / 1_000_000,
                "gen_ai.usage.cost.currency": "USD",
                "llm.cost.total": micro / 1_000_000,
                "budgetgraph.tier": str(last["tier"]),
                "budgetgraph.cache_hit": bool(last["cache_hit"]),
                "budgetgraph.cost_micro_usd": micro,
            }
        )
        for call in calls:
            for decision in call["decisions"]:
                span.add_event(
                    f"budgetgraph.{decision['plugin']}.{decision['action']}", {"reason": decision["reason"]}
                )
    except Exception:  # telemetry never breaks a run
        logger.debug("Could not record span attributes", exc_info=True)
