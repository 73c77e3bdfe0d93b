"""The GenAI client metrics, and spend as a counter.

- ``gen_ai.client.token.usage``: histogram of tokens per model call (unit
  ``{token}``), one point per token type (``gen_ai.token.type`` = ``input``
  or ``output``); attributes ``gen_ai.operation.name``,
  ``gen_ai.provider.name``, ``gen_ai.request.model``, ``gen_ai.response.model``.
- ``gen_ai.client.operation.duration``: histogram of each model call's
  duration (unit ``s``): the round trip as the chat model timed it
  (``latency_ms`` of the spend row), same attributes, plus ``error.type``
  on failure (then the time the pipeline took to fail).
- ``budgetgraph.client.cost``: counter of spend in integer micro-dollars
  (unit ``{micro_usd}``), by ``gen_ai.agent.name`` (the node),
  ``gen_ai.response.model`` and ``budgetgraph.tier``. Integers, so that a
  backend's sum is exact.

Names, units and bucket boundaries: the GenAI metrics semantic conventions
(``gen-ai-metrics.md``). Local steps and cache hits call no model: they add
to the cost counter (zero for local steps) and to neither histogram.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from typing import Any

from opentelemetry.metrics import Meter

from budgetgraph.tracing import attributes as attr

logger = logging.getLogger(__name__)


class Instruments:
    """The three instruments, made on one meter.

    Args:
        meter: The meter of the ``budgetgraph`` scope.
    """

    def __init__(self, meter: Meter) -> None:
        self.token_usage = meter.create_histogram(
            attr.METRIC_TOKEN_USAGE,
            unit="{token}",
            description="Number of input and output tokens used.",
            explicit_bucket_boundaries_advisory=attr.TOKEN_BUCKETS,
        )
        self.duration = meter.create_histogram(
            attr.METRIC_DURATION,
            unit="s",
            description="GenAI operation duration.",
            explicit_bucket_boundaries_advisory=attr.DURATION_BUCKETS,
        )
        self.cost = meter.create_counter(
            attr.METRIC_COST,
            unit="{micro_usd}",
            description="Spend of model calls in integer micro-dollars (1 USD = 1,000,000), "
            "by node, model and tier.",
        )

    def record_call(
        self,
        call: Mapping[str, Any],
        *,
        provider: str | None,
        request_model: str | None,
        duration_s: float | None,
        error_type: str | None = None,
    ) -> None:
        """Record one spend-table row (a ``budgets.request.ModelCall``).

        Args:
            call: The row.
            provider: ``gen_ai.provider.name``.
            request_model: ``gen_ai.request.model``.
            duration_s: The call's duration (s), or ``None`` to record none.
            error_type: ``error.type`` when the call failed.
        """
        model_called = call.get("tier") != "local" and not call.get("cache_hit")
        common: dict[str, Any] = {attr.OPERATION: attr.OP_CHAT}
        if provider:
            common[attr.PROVIDER] = provider
        if request_model:
            common[attr.REQUEST_MODEL] = request_model
        common[attr.RESPONSE_MODEL] = str(call.get("model", ""))
        if model_called:
            self.token_usage.record(int(call.get("input_tokens", 0)), {**common, attr.TOKEN_TYPE: "input"})
            self.token_usage.record(int(call.get("output_tokens", 0)), {**common, attr.TOKEN_TYPE: "output"})
            if duration_s is not None:
                extra = {attr.ERROR_TYPE: error_type} if error_type else {}
                self.duration.record(duration_s, {**common, **extra})
        self.cost.add(
            int(call.get("cost_micro_usd", 0)),
            {
                attr.AGENT_NAME: str(call.get("node", "")),
                attr.RESPONSE_MODEL: str(call.get("model", "")),
                attr.TIER: str(call.get("tier", "")),
            },
        )

    def record_failure(
        self, *, provider: str | None, request_model: str | None, duration_s: float, error_type: str
    ) -> None:
        """Record the duration of a call that raised before it produced a row."""
        attributes: dict[str, Any] = {attr.OPERATION: attr.OP_CHAT, attr.ERROR_TYPE: error_type}
        if provider:
            attributes[attr.PROVIDER] = provider
        if request_model:
            attributes[attr.REQUEST_MODEL] = request_model
        self.duration.record(duration_s, attributes)
