"""The ``limits`` plugin: per-node and per-task caps on tokens, USD, latency and tool calls.

Before a call it estimates the call's input tokens from the prompt (about four
characters a token, the rule of thumb OpenAI documents for English; no
tokenizer is downloaded at run time) and refuses it with
:class:`~budgets.errors.BudgetExceededError` when even the smallest answer
would not fit what is left. Otherwise it narrows the call to fit: the
completion-token cap shrinks to what the token and USD budgets leave, the
timeout to what the latency budget leaves, and the tool calls to what the
tool-call budget leaves. After the call it refuses tool calls past the cap.
"""

from __future__ import annotations

import json
import math
from collections.abc import Iterator
from dataclasses import dataclass
from decimal import Decimal

import openai
from langchain_core.utils.function_calling import convert_to_openai_tool

from budgets.config import BudgetsConfig, ModelsConfig
from budgets.errors import BudgetExceededError
from budgets.plugins.base import CallNext, PluginContext, register
from budgets.pricing import PriceBook
from budgets.request import MICRO, CallRequest, CallResult, usd

CHARS_PER_TOKEN = 4
"""Characters per token for estimates (OpenAI's rule of thumb for English text)."""

MESSAGE_OVERHEAD_TOKENS = 4
"""Tokens the chat format adds per message (role and separators)."""

MIN_OUTPUT_TOKENS = 64
"""The smallest completion worth asking for; below it the call is refused."""


def estimate_input_tokens(request: CallRequest) -> int:
    """Estimate a request's input tokens: prompt, output schema and tool schemas.

    Returns:
        Tokens, rounded up.
    """
    chars = request.prompt_chars()
    chars += len(json.dumps(request.schema.model_json_schema()))
    for tool in request.tools:
        chars += len(json.dumps(convert_to_openai_tool(tool)))
    return math.ceil(chars / CHARS_PER_TOKEN) + MESSAGE_OVERHEAD_TOKENS * len(request.messages)


@dataclass(frozen=True)
class _Cap:
    limit: str
    cap: int
    spent: int


class LimitsPlugin:
    """Enforces ``budgets.yaml`` caps around each call."""

    name = "limits"

    def __init__(self, models: ModelsConfig, budgets: BudgetsConfig, prices: PriceBook) -> None:
        self._models = models
        self._budgets = budgets
        self._prices = prices

    def wrap(self, request: CallRequest, call_next: CallNext) -> CallResult:
        """Refuse or narrow ``request`` to fit its node's and task's budgets."""
        if request.tier == "local":
            return call_next(request)
        node_budget = self._budgets.node(request.node)
        est_in = estimate_input_tokens(request)
        endpoint = self._models.endpoints[request.tier]
        max_out = request.max_output_tokens or endpoint.settings.max_output_tokens

        for cap in self._token_caps(request):
            room = cap.cap - cap.spent - est_in
            if room < MIN_OUTPUT_TOKENS:
                raise BudgetExceededError(
                    node=request.node,
                    limit=cap.limit,
                    spent=cap.spent,
                    cap=cap.cap,
                    requested=est_in + MIN_OUTPUT_TOKENS,
                )
            max_out = min(max_out, room)

        rates = self._prices.rates(endpoint.settings.model, endpoint.settings.provider)
        if rates is not None:
            in_rate, out_rate = (r / 1_000_000 for r in rates)  # USD per token
            for cap in self._cost_caps(request):
                left = usd(cap.cap - cap.spent) - est_in * in_rate
                affordable = int(left / out_rate) if out_rate > 0 else max_out
                if left < 0 or affordable < MIN_OUTPUT_TOKENS:
                    need = est_in * in_rate + MIN_OUTPUT_TOKENS * out_rate
                    raise BudgetExceededError(
                        node=request.node,
                        limit=cap.limit,
                        spent=usd(cap.spent),
                        cap=usd(cap.cap),
                        requested=need.quantize(Decimal("0.000001")),
                    )
                max_out = min(max_out, affordable)

        timeout_s = request.timeout_s
        budget_timeout_s: float | None = None
        if node_budget.max_latency_ms is not None:
            left_ms = node_budget.max_latency_ms - request.node_spent.latency_ms
            if left_ms <= 0:
                raise BudgetExceededError(
                    node=request.node,
                    limit="max_latency_ms",
                    spent=request.node_spent.latency_ms,
                    cap=node_budget.max_latency_ms,
                )
            budget_timeout_s = left_ms / 1000
            if budget_timeout_s < endpoint.settings.timeout_s:
                timeout_s = min(timeout_s or math.inf, budget_timeout_s)

        max_tool_calls = request.max_tool_calls
        if node_budget.max_tool_calls is not None:
            left_tools = node_budget.max_tool_calls - request.node_spent.tool_calls
            max_tool_calls = max(
                0, min(max_tool_calls if max_tool_calls is not None else left_tools, left_tools)
            )

        narrowed = request.evolve(
            max_output_tokens=max_out, timeout_s=timeout_s, max_tool_calls=max_tool_calls
        )
        try:
            result = call_next(narrowed)
        except openai.APITimeoutError as exc:
            if budget_timeout_s is None or timeout_s != budget_timeout_s:
                raise  # the tier's own timeout, not the budget's
            raise BudgetExceededError(
                node=request.node,
                limit="max_latency_ms",
                spent=request.node_spent.latency_ms,
                cap=node_budget.max_latency_ms or 0,
                requested=round(budget_timeout_s * 1000),
            ) from exc
        asked = len(result.tool_calls)
        if asked and node_budget.max_tool_calls is not None and asked > (max_tool_calls or 0):
            raise BudgetExceededError(
                node=request.node,
                limit="max_tool_calls",
                spent=request.node_spent.tool_calls,
                cap=node_budget.max_tool_calls,
                requested=asked,
            )
        return result

    def _token_caps(self, request: CallRequest) -> Iterator[_Cap]:
        node_cap = self._budgets.node(request.node).max_tokens
        if node_cap is not None:
            yield _Cap("max_tokens", node_cap, request.node_spent.tokens)
        task_cap = self._budgets.task.max_tokens
        if task_cap is not None:
            yield _Cap("total_task_budget.max_tokens", task_cap, request.task_spent.tokens)

    def _cost_caps(self, request: CallRequest) -> Iterator[_Cap]:
        node_cap = self._budgets.node(request.node).max_cost_usd
        if node_cap is not None:
            yield _Cap("max_cost_usd", int(node_cap * MICRO), request.node_spent.cost_micro_usd)
        task_cap = self._budgets.task.max_cost_usd
        if task_cap is not None:
            yield _Cap(
                "total_task_budget.max_cost_usd", int(task_cap * MICRO), request.task_spent.cost_micro_usd
            )


def _factory(context: PluginContext) -> LimitsPlugin:
    return LimitsPlugin(context.models, context.budgets, context.prices)


register("limits", _factory)
