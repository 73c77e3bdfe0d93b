"""The ``cache`` plugin: serves a stored answer instead of calling the model when it safely can.

It sits after the router (the tier, and so the model, is final) and before
the limits (a hit costs nothing, so no limit needs to see it)::

    router -> cache -> limits -> model

What is cached: each model turn of a model tier that did not fail: the
structured answer, or the tool calls the model asked for (stored as
``{"$tool_calls": [{"name", "args"}], "content": ...}``). A served tool-call
turn gets fresh call ids; the tools then run for real, and the next turn,
whose request carries their results, is looked up like any other. So an
agent that calls tools is answered from the cache as a whole when its tools
return what they returned before, and calls the model again from the first
result that differs. Answers that failed the schema and the ``local`` tier
(free and deterministic) are never cached. A request is looked up in its
namespace (:func:`namespace_of`) by exact key first; only a request whose
non-system messages are all human messages gets a semantic lookup (a
conversation carrying tool results or earlier answers must match exactly).

A semantic candidate the guard passed at a similarity inside the node's
``cache: confirm: band`` is confirmed first by the cheapest model tier
(:mod:`budgetgraph.budgets.cache.confirm`): the question goes down the rest of
the chain as a call of its own (the ``limits`` plugin holds it on the ledger),
and its rows come back with those of the call it decided: before the served
row, or before the model's answer when the verdict is "no" (a refusal with
category ``confirm``, as a guard refusal is recorded).

A cache failure (Redis down, a broken file) never fails the call: it is
logged and the model is called as if the cache were not there.
"""

from __future__ import annotations

import atexit
import dataclasses
import logging
import os
import threading
import uuid
from collections.abc import Mapping, Sequence
from datetime import UTC, datetime
from functools import lru_cache
from pathlib import Path
from typing import Any

from langchain_core.messages import AIMessage, BaseMessage, HumanMessage, SystemMessage, ToolCall, ToolMessage
from langchain_core.messages.tool import tool_call
from langchain_core.utils.function_calling import convert_to_openai_tool
from pydantic import BaseModel

from budgetgraph.budgets.cache.base import Entry, Namespace, exact_key, short_hash
from budgetgraph.budgets.cache.cache import Lookup, SemanticCache
from budgetgraph.budgets.cache.config import (
    CacheSettings,
    EndpointEmbedderSettings,
    build_cache,
    load_verifier,
)
from budgetgraph.budgets.cache.confirm import (
    CATEGORY,
    Confirmation,
    Confirmer,
    refused_counts,
)
from budgetgraph.budgets.cache.text import normalize
from budgetgraph.budgets.cache.verifier import Verifier, VerifierError
from budgetgraph.budgets.config import ModelsConfig
from budgetgraph.budgets.errors import ConfigError
from budgetgraph.budgets.ledger import Ledger
from budgetgraph.budgets.plugins.base import CallNext, PluginContext, register
from budgetgraph.budgets.pricing import PriceBook
from budgetgraph.budgets.request import (
    CacheOutcome,
    CallRequest,
    CallResult,
    Decision,
    ledger_record,
    unbilled_call,
    usd,
)
from budgetgraph.tracing.attributes import (
    REFUSAL_CATEGORY,
    SIMILARITY,
    STEP_CACHE_CONFIRM,
    STEP_CACHE_LOOKUP,
    STEP_CACHE_STORE,
)
from budgetgraph.tracing.spans import step_span

logger = logging.getLogger(__name__)

TOOL_CALLS_KEY = "$tool_calls"
"""Key of a stored tool-call turn's calls (not a valid field name, so no answer schema has it)."""


class Prompt:
    """What of a request the cache keys and compares.

    Attributes:
        version: Hash of the system messages and tool schemas (the prompt version).
        key: The exact key: hash of the normalised non-system messages.
        text: The normalised text of the human messages, or ``None`` when the
            conversation holds anything else (exact match only).
    """

    def __init__(self, messages: Sequence[BaseMessage], tools: Sequence[Any]) -> None:
        system = [normalize(m.text) for m in messages if isinstance(m, SystemMessage)]
        tool_schemas = [convert_to_openai_tool(tool) for tool in tools]
        self.version = short_hash({"system": system, "tools": tool_schemas})
        rest = [m for m in messages if not isinstance(m, SystemMessage)]
        self.key = exact_key([_canonical(m) for m in rest])
        if rest and all(isinstance(m, HumanMessage) for m in rest):
            self.text: str | None = normalize("\n\n".join(m.text for m in rest))
        else:
            self.text = None


def _canonical(message: BaseMessage) -> dict[str, Any]:
    """The parts of a message that change the answer; random ids are left out."""
    data: dict[str, Any] = {"type": message.type, "text": normalize(message.text)}
    if isinstance(message, AIMessage) and message.tool_calls:
        data["tool_calls"] = [{"name": c["name"], "args": c["args"]} for c in message.tool_calls]
    if isinstance(message, ToolMessage):
        data["status"] = message.status
    return data


@lru_cache(maxsize=512)
def _schema_digest(schema: type[BaseModel]) -> str:
    """A short hash of ``schema``'s JSON schema, computed once per class."""
    return short_hash(schema.model_json_schema(), 12)


def namespace_of(request: CallRequest, prompt: Prompt, models: ModelsConfig, embedder: str) -> Namespace:
    """The namespace of ``request``.

    Tenant, node, tier and the tier's model and server (base URL and
    provider), prompt version (system messages and tool schemas), sampling
    settings (temperature and completion cap), output schema (name and a hash
    of its JSON schema) and the embedder.
    """
    endpoint = models.endpoints[request.tier]
    settings = endpoint.settings
    schema = request.schema
    return Namespace(
        tenant=request.tenant,
        node=request.node,
        tier=request.tier,
        model=settings.model,
        prompt=prompt.version,
        sampling=short_hash({"temperature": settings.temperature, "max_tokens": settings.max_output_tokens}),
        schema=f"{schema.__name__}@{_schema_digest(schema)}",
        embedder=embedder,
        endpoint=short_hash({"base_url": endpoint.base_url, "provider": settings.provider}),
    )


class CachePlugin:
    """Answers requests from the semantic cache and stores new answers.

    Args:
        settings: The ``cache:`` section.
        models: The resolved ``models.yaml`` (the model of each tier).
        env: The variables the endpoint embedder reads (its URL and key),
            captured when the plugin is built.
        cache: A ready cache (tests); otherwise one is opened on first use, so
            building a gateway touches no file and no server.
        verifier: The verifier ``settings.verifier`` names, already loaded.
        prices: To find the cheapest tier for confirmations (default: ``models.yaml``'s prices).
        ledger: Where a served row's record is kept when its confirmation's record was
            kept already as it settled (the gateway keeps a result's records all or none).
    """

    name = "cache"

    def __init__(
        self,
        settings: CacheSettings,
        models: ModelsConfig,
        *,
        env: Mapping[str, str] | None = None,
        cache: SemanticCache | None = None,
        verifier: Verifier | None = None,
        prices: PriceBook | None = None,
        ledger: Ledger | None = None,
    ) -> None:
        self.settings = settings
        self._verifier = verifier
        self._models = models
        self._ledger = ledger
        if prices is None:
            prices = PriceBook(models.file.prices, models.file.batch_discounts)
        self.confirmer = Confirmer(models, prices)
        """Asks the cheapest tier about candidates in a node's confirmation band."""
        self._env = dict(env or {})
        self._cache = cache
        self._lock = threading.Lock()

    @property
    def cache(self) -> SemanticCache:
        """The cache, opened on first use (store connection; the embedder loads later still)."""
        if self._cache is None:
            with self._lock:
                if self._cache is None:
                    self._cache = build_cache(
                        self.settings, env=self._env, cwd=Path.cwd(), verifier=self._verifier
                    )
                    atexit.register(self.close)
        return self._cache

    def close(self) -> None:
        """Flush counters and index snapshots and close the store (also run at exit)."""
        with self._lock:
            cache, self._cache = self._cache, None
        if cache is None:
            return
        atexit.unregister(self.close)
        try:
            cache.close()
        except Exception:  # at exit the store may already be gone
            logger.debug("Could not close the cache", exc_info=True)

    def wrap(self, request: CallRequest, call_next: CallNext) -> CallResult:
        """Serve ``request`` from the cache, or call on and store the answer."""
        if request.tier == "local" or not self.settings.enabled_for(request.node):
            return call_next(request)
        if request.deferred_attempt is not None:
            return self._answered_by_batch(request, call_next)
        answers: dict[int, _Answer] = {}  # the entry the lookup accepted, decoded once

        def accept(entry: Entry) -> bool:
            answer = _answer_of(request, entry)
            if answer is not None:
                answers[entry.id] = answer
            return answer is not None

        try:
            with step_span(STEP_CACHE_LOOKUP, node=request.node) as step:
                cache = self.cache
                prompt = Prompt(request.messages, request.tools)
                namespace = namespace_of(request, prompt, self._models, cache.embedder.name)
                semantic = request.semantic and self.settings.semantic_for(request.node)
                text = _semantic_text(request, prompt) if semantic else None
                lookup = cache.lookup(
                    namespace,
                    key=prompt.key,
                    text=text,
                    threshold=self.settings.threshold_for(request.node),
                    accept=accept,
                )
                step.outcome(
                    lookup.outcome if lookup.entry is not None or not lookup.refused else "refused",
                    **{SIMILARITY: lookup.similarity, REFUSAL_CATEGORY: lookup.category},
                )
        except Exception:
            logger.warning(
                "Cache lookup failed for node `%s`; calling the model", request.node, exc_info=True
            )
            return call_next(request)
        confirmed: Confirmation | None = None
        if lookup.entry is not None:
            if lookup.outcome == "semantic" and text is not None:
                confirmed = self._confirm(request, call_next, cache, namespace, lookup, text)
            if confirmed is None or confirmed.same is not False:
                served = self._serve(request, lookup, answers[lookup.entry.id], confirmed)
                return served if confirmed is None else self._joined(request, confirmed, served)
            assert lookup.similarity is not None
            request = request.decide(self.name, "refused", confirmed.refusal(lookup.similarity))
            # The question's spend counts before this call's; the ledger is read afresh.
            node_spent, task_spent = request.node_spent, request.task_spent
            for call in confirmed.calls:
                node_spent, task_spent = node_spent + call, task_spent + call
            request = request.evolve(node_spent=node_spent, task_spent=task_spent, held=None)
        elif lookup.refused:
            request = request.decide(self.name, "refused", lookup.refused[0])
        outcome: CacheOutcome = "refused" if lookup.refused or confirmed is not None else "miss"
        result = call_next(request.evolve(cache=outcome))
        for call in result.calls:
            call.setdefault("cache", outcome)
        if _cacheable(request, result):
            # Stored for semantic lookups even when this lookup was exact only
            # (`request.semantic`): a later request whose other inputs match may use it.
            self._store(
                cache, request, prompt, namespace, lookup, result, self.settings.semantic_for(request.node)
            )
        return result if confirmed is None else self._joined(request, confirmed, result)

    def _confirm(
        self,
        request: CallRequest,
        call_next: CallNext,
        cache: SemanticCache,
        namespace: Namespace,
        lookup: Lookup,
        text: str,
    ) -> Confirmation | None:
        """Confirm a semantic hit in the node's band; ``None`` when it is outside (or none is set).

        A "no" moves the lookup from the hits to the refusals in the namespace's counters.
        """
        band = self.settings.confirm_for(request.node)
        entry, similarity = lookup.entry, lookup.similarity
        assert entry is not None and similarity is not None
        if band is None or not band.asks(similarity):
            return None
        with step_span(STEP_CACHE_CONFIRM, node=request.node, **{SIMILARITY: similarity}) as step:
            confirmed = self.confirmer.confirm(
                request, call_next, entry=entry, text=text, similarity=similarity, band=band
            )
            if confirmed.same is False:
                step.outcome("refused", **{REFUSAL_CATEGORY: CATEGORY})
            else:
                step.outcome("confirmed" if confirmed.same else "unconfirmed")
        if confirmed.same is False:
            try:
                cache.store.record(namespace, refused_counts(entry))
            except Exception:  # counters are best effort, as the lookup's own are
                logger.warning("Could not count a confirmation's refusal", exc_info=True)
        return confirmed

    def _joined(self, request: CallRequest, confirmed: Confirmation, result: CallResult) -> CallResult:
        """``result`` with the question's rows first, each row's ledger record kept exactly once.

        The ``limits`` plugin keeps a one-row answer's record as it settles it, and the
        gateway keeps a result's records only when none was kept: when the question's
        record was kept and ``result``'s was not (a cache hit's), the latter is kept here.
        The gateway journals the whole result under the call's key.
        """
        if not confirmed.calls:
            return result
        kept = result.kept
        if confirmed.kept != result.kept:
            late = list(result.calls) if confirmed.kept else list(confirmed.calls)
            if self._ledger is not None:
                ts = datetime.now(UTC).isoformat()
                thread = request.thread_id or ""
                records = [ledger_record(c, tenant=request.tenant, thread_id=thread, ts=ts) for c in late]
                self._ledger.finish_call(None, None, records)
                kept = True
            else:
                logger.warning("Node `%s`: no ledger to keep a confirmed call's records", request.node)
        calls = [*confirmed.calls, *result.calls]
        return dataclasses.replace(result, calls=calls, kept=kept, journaled=False)

    def _answered_by_batch(self, request: CallRequest, call_next: CallNext) -> CallResult:
        """A deferred call asked again: it missed when it was queued; its batch answer fills the cache."""
        result = call_next(request)
        if not _cacheable(request, result):
            return result
        try:
            cache = self.cache
            prompt = Prompt(request.messages, request.tools)
            namespace = namespace_of(request, prompt, self._models, cache.embedder.name)
            semantic = self.settings.semantic_for(request.node)
            self._store(cache, request, prompt, namespace, Lookup("miss"), result, semantic)
        except Exception:
            logger.warning("Could not store a batch answer for node `%s`", request.node, exc_info=True)
        return result

    def _serve(
        self, request: CallRequest, lookup: Lookup, answer: _Answer, confirmed: Confirmation | None = None
    ) -> CallResult:
        entry = lookup.entry
        assert entry is not None
        output, tool_calls = answer
        action = "hit-exact" if lookup.outcome == "exact" else "hit-semantic"
        how = f"; {confirmed.served_note()}" if confirmed is not None else ""
        reason = f"{lookup.reason}{how}; saves {usd(entry.cost_micro_usd):f} USD ({entry.model})"
        call = unbilled_call(
            node=request.node,
            tier=request.tier,
            model=entry.model,
            latency_ms=round(lookup.elapsed_ms),
            decisions=[*request.decisions, Decision(plugin=self.name, action=action, reason=reason)],
            cache_hit=True,
        )
        call["saved_micro_usd"] = entry.cost_micro_usd
        call["cache"] = "exact" if lookup.outcome == "exact" else "semantic"
        if tool_calls:
            message = AIMessage(content=str(entry.response.get("content", "")), tool_calls=tool_calls)
            return CallResult(tool_calls=tool_calls, message=message, calls=[call])
        return CallResult(output=output, calls=[call])

    def _store(
        self,
        cache: SemanticCache,
        request: CallRequest,
        prompt: Prompt,
        namespace: Namespace,
        lookup: Lookup,
        result: CallResult,
        semantic: bool,
    ) -> None:
        if result.output is not None:
            response = result.output.model_dump(mode="json")
        else:
            calls = [{"name": c["name"], "args": c["args"]} for c in result.tool_calls]
            response = {TOOL_CALLS_KEY: calls, "content": result.message.text if result.message else ""}
        try:
            with step_span(STEP_CACHE_STORE, node=request.node) as step:
                cache.put(
                    namespace,
                    key=prompt.key,
                    text=_semantic_text(request, prompt) if semantic else None,
                    vector=lookup.vector,
                    response=response,
                    model=result.calls[-1]["model"],
                    input_tokens=sum(c["input_tokens"] for c in result.calls),
                    output_tokens=sum(c["output_tokens"] for c in result.calls),
                    cost_micro_usd=sum(c["cost_micro_usd"] for c in result.calls),
                )
                step.outcome("stored")
        except Exception:
            logger.warning("Could not store a cache entry for node `%s`", request.node, exc_info=True)


_Answer = tuple[BaseModel | None, list[ToolCall]]
"""A stored answer decoded for a request: its output, or the tool calls to run."""


def _answer_of(request: CallRequest, entry: Entry) -> _Answer | None:
    """The stored answer as the request's output or tool calls, or ``None`` when it no longer fits.

    A tool-call turn gets fresh call ids; it fits only a request that offers those tools.
    """
    try:
        if TOOL_CALLS_KEY not in entry.response:
            return request.schema.model_validate(entry.response), []
        calls = [
            tool_call(name=str(c["name"]), args=dict(c["args"]), id=f"call_{uuid.uuid4().hex[:24]}")
            for c in entry.response[TOOL_CALLS_KEY]
        ]
        if not calls or {c["name"] for c in calls} - {t.name for t in request.tools}:
            raise ValueError("the stored tool calls name tools the request does not offer")
        return None, calls
    except (ValueError, TypeError, KeyError) as exc:
        logger.warning("Cached answer %s does not fit `%s`: %s", entry.id, request.schema.__name__, exc)
        return None


def _semantic_text(request: CallRequest, prompt: Prompt) -> str | None:
    """The text a semantic lookup embeds and guards: the request's subject, else its prompt's.

    ``None`` (exact match only) when the conversation holds more than human
    messages (a tool round trip, a repair), subject or not.
    """
    if prompt.text is None or not request.subject:
        return prompt.text
    return normalize(request.subject)


def _cacheable(request: CallRequest, result: CallResult) -> bool:
    """An answer or a tool-call turn of the request's own tier, from a priced model call."""
    return (
        (result.output is not None or bool(result.tool_calls))
        and result.parse_error is None
        and bool(result.calls)
        and all(c["tier"] == request.tier and not c["cache_hit"] for c in result.calls)
    )


def _factory(context: PluginContext) -> CachePlugin:
    settings = context.budgets.section("cache", CacheSettings).with_overrides(
        enabled=context.settings.cache, store=context.settings.cache_url
    )
    names: list[str] = []
    if isinstance(settings.embedder, EndpointEmbedderSettings):
        names += [settings.embedder.base_url_env, settings.embedder.api_key_env]
    env = {name: os.environ[name] for name in names if name in os.environ}
    verifier = None
    if settings.enabled:
        try:
            verifier = load_verifier(settings, env=env)  # a bad file fails when the plugin is registered
        except VerifierError as exc:
            document = context.budgets.document
            loc = ("cache", "verifier")
            problem = document.problem(loc, str(exc)) if document else f"`cache.verifier`: {exc}"
            raise ConfigError(path=context.budgets.source, problems=[problem]) from exc
    return CachePlugin(
        settings, context.models, env=env, verifier=verifier, prices=context.prices, ledger=context.ledger
    )


register("cache", _factory)

__all__ = ["CachePlugin", "Prompt", "namespace_of"]
