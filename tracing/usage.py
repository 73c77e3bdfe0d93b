"""Usage summed up the span tree: model calls into their node, nodes into their run.

A node span and a run span carry the sum of their children's tokens and cost.
The sums are kept in a :class:`Usage` accumulator, exact integers (cost in
micro-dollars, 1 USD = 1,000,000), and not read back from finished spans:
the node's accumulator travels in the OpenTelemetry context that the node
wrapper attaches in the node's own worker thread, and each model call adds
its spend-table rows to the accumulator it finds there.
"""

from __future__ import annotations

import threading
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from opentelemetry import context as otel_context

from budgetgraph.tracing import attributes as attr

USAGE_KEY = otel_context.create_key("budgetgraph.usage")
"""Context key of the :class:`Usage` that model calls below a node add to."""


@dataclass
class Usage:
    """Tokens and cost summed over model calls; safe to add to from many threads.

    Attributes:
        input_tokens: Input tokens, cached ones included (tokens).
        output_tokens: Output tokens, reasoning ones included (tokens).
        cache_read_tokens: Input tokens served from the provider's cache (tokens).
        reasoning_tokens: Output tokens spent on reasoning (tokens).
        cost_micro_usd: Cost (integer micro-USD).
        calls: Model round trips and local steps.
        tool_calls: Tool calls the model asked for.
    """

    input_tokens: int = 0
    output_tokens: int = 0
    cache_read_tokens: int = 0
    reasoning_tokens: int = 0
    cost_micro_usd: int = 0
    calls: int = 0
    tool_calls: int = 0
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False, compare=False)

    def add_call(self, call: Mapping[str, Any]) -> None:
        """Add one spend-table row (a ``budgets.request.ModelCall``)."""
        with self._lock:
            self.input_tokens += int(call.get("input_tokens", 0))
            self.output_tokens += int(call.get("output_tokens", 0))
            self.cache_read_tokens += int(call.get("cache_read_tokens", 0))
            self.reasoning_tokens += int(call.get("reasoning_tokens", 0))
            self.cost_micro_usd += int(call.get("cost_micro_usd", 0))
            self.calls += 1
            self.tool_calls += int(call.get("tool_calls", 0))

    def add(self, other: Usage) -> None:
        """Add everything ``other`` holds."""
        with other._lock:
            values = (
                other.input_tokens,
                other.output_tokens,
                other.cache_read_tokens,
                other.reasoning_tokens,
                other.cost_micro_usd,
                other.calls,
                other.tool_calls,
            )
        with self._lock:
            self.input_tokens += values[0]
            self.output_tokens += values[1]
            self.cache_read_tokens += values[2]
            self.reasoning_tokens += values[3]
            self.cost_micro_usd += values[4]
            self.calls += values[5]
            self.tool_calls += values[6]

    def attributes(self) -> dict[str, Any]:
        """The span attributes of the sums (GenAI, OpenInference and ``budgetgraph.*`` names)."""
        with self._lock:
            return usage_attributes(
                input_tokens=self.input_tokens,
                output_tokens=self.output_tokens,
                cache_read_tokens=self.cache_read_tokens,
                reasoning_tokens=self.reasoning_tokens,
                cost_micro_usd=self.cost_micro_usd,
                calls=self.calls,
                tool_calls=self.tool_calls,
            )


def usage_attributes(
    *,
    input_tokens: int,
    output_tokens: int,
    cache_read_tokens: int,
    reasoning_tokens: int,
    cost_micro_usd: int,
    calls: int,
    tool_calls: int,
) -> dict[str, Any]:
    """Span attributes for tokens and cost.

    Cost goes three ways: ``gen_ai.usage.cost.amount`` with
    ``gen_ai.usage.cost.currency`` = ``USD`` (the open upstream proposal),
    OpenInference's ``llm.cost.total`` (USD), and the exact integer
    ``budgetgraph.cost_micro_usd`` that sums without rounding.
    """
    usd = cost_micro_usd / 1_000_000
    return {
        attr.INPUT_TOKENS: input_tokens,
        attr.OUTPUT_TOKENS: output_tokens,
        attr.CACHE_READ_TOKENS: cache_read_tokens,
        attr.REASONING_TOKENS: reasoning_tokens,
        attr.OI_PROMPT_TOKENS: input_tokens,
        attr.OI_COMPLETION_TOKENS: output_tokens,
        attr.OI_TOTAL_TOKENS: input_tokens + output_tokens,
        attr.COST_AMOUNT: usd,
        attr.COST_CURRENCY: "USD",
        attr.OI_COST_TOTAL: usd,
        attr.COST_MICRO_USD: cost_micro_usd,
        attr.CALLS: calls,
        attr.TOOL_CALLS: tool_calls,
    }


def current_usage() -> Usage | None:
    """The accumulator of the node whose context is current in this thread, if any."""
    value = otel_context.get_value(USAGE_KEY)
    return value if isinstance(value, Usage) else None
