"""The records that travel through the pipeline: request, result, spend.

A :class:`CallRequest` goes in, a :class:`CallResult` comes out, and each
model round trip (or local step) inside it is one :class:`ModelCall` - the
row of the spend table. Money is integer micro-dollars (1 USD = 1,000,000),
never a summed float.
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field, replace
from decimal import Decimal
from typing import Any, Literal, NotRequired

from langchain_core.messages import AIMessage, BaseMessage, ToolCall
from langchain_core.tools import BaseTool
from langchain_core.utils.function_calling import convert_to_openai_tool
from pydantic import BaseModel
from typing_extensions import TypedDict

from budgetgraph.budgets.config import Tier

MICRO = 1_000_000
"""Micro-dollars per dollar."""

CHARS_PER_TOKEN = 3
"""Characters per token for input estimates (an upper bound; see ``estimate_input_tokens``)."""

MESSAGE_OVERHEAD_TOKENS = 4
"""Tokens the chat format adds per message (role and separators)."""


def usd(micro_usd: int) -> Decimal:
    """Convert integer micro-dollars to a ``Decimal`` amount of USD."""
    return Decimal(micro_usd) / MICRO


CacheOutcome = Literal["exact", "semantic", "miss", "refused"]
"""What the cache did for a call: an exact or semantic hit, a miss, or a miss
because the guard refused the nearest candidate."""


class Decision(TypedDict):
    """One plugin decision, kept in the spend table and shown to the user."""

    plugin: str
    action: str
    reason: str


class ModelCall(TypedDict):
    """One model round trip or local step: a row of the spend table.

    Token counts are what the server reported in ``usage``; ``cost_micro_usd``
    is their price in integer micro-dollars.
    """

    node: str
    tier: Tier
    model: str
    input_tokens: int
    output_tokens: int
    cache_read_tokens: int
    reasoning_tokens: int
    cost_micro_usd: int
    priced: bool
    latency_ms: int
    cache_hit: bool
    tool_calls: int
    decisions: list[Decision]
    saved_micro_usd: NotRequired[int]
    """On a cache hit: what the answer cost when it was first made (micro-USD)."""
    cache: NotRequired[CacheOutcome]
    """What the cache did, when the call went through it."""


def unbilled_call(
    *,
    node: str,
    tier: Tier,
    model: str,
    latency_ms: int,
    decisions: list[Decision],
    cache_hit: bool = False,
) -> ModelCall:
    """A spend-table row for an answer no server billed: a local step or a cache hit.

    Tokens, tool calls and cost are 0; the row counts as priced.
    """
    return ModelCall(
        node=node,
        tier=tier,
        model=model,
        input_tokens=0,
        output_tokens=0,
        cache_read_tokens=0,
        reasoning_tokens=0,
        cost_micro_usd=0,
        priced=True,
        latency_ms=latency_ms,
        cache_hit=cache_hit,
        tool_calls=0,
        decisions=decisions,
    )


@dataclass(frozen=True)
class Totals:
    """Spend summed over some calls.

    Attributes:
        tokens: Input plus output tokens.
        cost_micro_usd: Cost (micro-USD).
        latency_ms: Time spent in calls (ms).
        tool_calls: Tool calls made.
    """

    tokens: int = 0
    cost_micro_usd: int = 0
    latency_ms: int = 0
    tool_calls: int = 0

    @classmethod
    def of(cls, calls: Iterable[ModelCall]) -> Totals:
        """Sum ``calls``."""
        total = cls()
        for call in calls:
            total = total + call
        return total

    def __add__(self, call: ModelCall) -> Totals:
        return Totals(
            tokens=self.tokens + call["input_tokens"] + call["output_tokens"],
            cost_micro_usd=self.cost_micro_usd + call["cost_micro_usd"],
            latency_ms=self.latency_ms + call["latency_ms"],
            tool_calls=self.tool_calls + call["tool_calls"],
        )


@dataclass(frozen=True, kw_only=True)
class CallRequest:
    """One structured model call asked for by a node.

    Plugins change it with :func:`dataclasses.replace` (see :meth:`evolve`).

    Attributes:
        node: The graph node asking.
        messages: The prompt.
        schema: The pydantic model the answer must validate as.
        tier: The tier wanted; the router may change it.
        tools: Tools the model may call before answering.
        local: The deterministic no-model answer, used on the ``local`` tier.
        max_output_tokens: Cap on completion tokens per round trip, or ``None``
            for the tier's own.
        max_tool_calls: Tool calls this request may still make, or ``None``.
        timeout_s: Time this request may still wait on the model (s), or ``None``.
        node_spent: What the node had spent before this request.
        task_spent: What the whole task had spent before this request.
        thread_id: The run's thread, for records and spans.
        tenant: Who pays.
        decisions: Plugin decisions taken so far.
        call_id: Names this call within its run (the journal key), or ``None``.
        recover: The call was sent before and its process died before the answer
            was kept: fetch the answer back from the server if it stored it.
    """

    node: str
    messages: Sequence[BaseMessage]
    schema: type[BaseModel]
    tier: Tier
    local: Callable[[], BaseModel]
    tools: Sequence[BaseTool] = ()
    max_output_tokens: int | None = None
    max_tool_calls: int | None = None
    timeout_s: float | None = None
    node_spent: Totals = Totals()
    task_spent: Totals = Totals()
    thread_id: str | None = None
    tenant: str = "default"
    decisions: tuple[Decision, ...] = ()
    call_id: str | None = None
    recover: bool = False

    def evolve(self, **changes: Any) -> CallRequest:
        """Return a copy with ``changes`` applied."""
        return replace(self, **changes)

    def decide(self, plugin: str, action: str, reason: str) -> CallRequest:
        """Return a copy with one more decision recorded."""
        decision = Decision(plugin=plugin, action=action, reason=reason)
        return replace(self, decisions=(*self.decisions, decision))

    def prompt_chars(self) -> int:
        """Characters in the prompt's text (for estimates)."""
        return sum(len(m.text) for m in self.messages)

    def estimate_input_tokens(self) -> int:
        """An upper bound of the request's input tokens: prompt, output schema and tools.

        Three characters a token, against OpenAI's rule of thumb of four for
        English text, so that it bounds JSON and short words too; plus four
        tokens of chat formatting per message. No tokenizer is downloaded at run time.

        Returns:
            Tokens, rounded up.
        """
        chars = self.prompt_chars() + len(json.dumps(self.schema.model_json_schema()))
        for tool in self.tools:
            chars += len(json.dumps(convert_to_openai_tool(tool)))
        return math.ceil(chars / CHARS_PER_TOKEN) + MESSAGE_OVERHEAD_TOKENS * len(self.messages)


@dataclass(kw_only=True)
class CallResult:
    """What one round trip through the pipeline produced.

    Exactly one of ``output``, ``tool_calls`` or ``parse_error`` says what the
    model answered: the structured answer, tools to run before it answers, or
    an answer that failed the schema.

    Attributes:
        output: The answer, an instance of the request's schema, or ``None``.
        tool_calls: Tool calls the model asked for (LangChain ``ToolCall`` dicts).
        message: The model's raw message, ``None`` on the local tier.
        parse_error: Why the answer failed the schema, or ``None``.
        calls: One record per model round trip or local step, in order.
    """

    output: BaseModel | None = None
    tool_calls: list[ToolCall] = field(default_factory=list)
    message: AIMessage | None = None
    parse_error: str | None = None
    calls: list[ModelCall] = field(default_factory=list)

    @property
    def totals(self) -> Totals:
        """The spend of all :attr:`calls`."""
        return Totals.of(self.calls)
